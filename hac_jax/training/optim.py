"""The optimizer recipe: AdamW, linear warm-up + cosine decay, rule-based decay/freeze masks.

Which parameters are decayed and which are frozen is data: lists of ``(regex, rule)`` applied to
the flattened parameter names (``"visual/blocks_0/norm1/scale"``), first full match wins (as in
big_vision). The defaults follow MERU's training recipe (Desai et al., ICML 2023, arXiv
2304.09172, ``configs/train_meru_*.py``): AdamW (lr 5e-4, betas (0.9, 0.98), weight decay 0.2),
linear warm-up then cosine decay to 0, no weight decay on gains, biases and the learnable scalars
(logit_scale, curv, alphas); here also none on the cls/position embeddings, and the fixed sin-cos
``visual/pos_embed`` is frozen.

The scalar clamps are not part of the optax chain: they are a projection applied to the parameters
after ``optax.apply_updates`` (:func:`apply_updates`), as MERU clamps in place before each forward.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import ml_collections
import optax
from flax import traverse_util

__all__ = [
    "apply_updates",
    "describe_rules",
    "flat_names",
    "make_optimizer",
    "make_schedule",
    "meru_optim_config",
    "tree_from_rules",
]

_NO_MATCH = object()


def meru_optim_config(**overrides: Any) -> ml_collections.ConfigDict:
    """MERU's optimizer settings as a ``ConfigDict`` (fields documented inline); ``overrides``
    replace fields."""
    cfg = ml_collections.ConfigDict(
        dict(
            lr=5e-4,  # peak learning rate
            warmup_steps=4000,  # linear warm-up from 0
            end_lr=0.0,  # cosine decay end value
            b1=0.9,
            b2=0.98,
            eps=1e-8,
            weight_decay=0.2,  # decoupled (AdamW), multiplied by the lr schedule as in torch
            grad_clip_norm=ml_collections.config_dict.placeholder(float),  # None: no clipping
            # (regex over "a/b/c" names, weight-decay multiplier); first full match wins.
            wd_mults=[
                (r"logit_scale|curv|visual_alpha|textual_alpha", 0.0),  # learnable scalars
                (r".*/bias", 0.0),
                (r".*/scale", 0.0),  # LayerNorm gains
                (r"visual/(cls_token|pos_embed)", 0.0),
                (r"textual/posit_embed", 0.0),
                (r".*", 1.0),
            ],
            # regexes of parameters that never change (the fixed sin-cos table).
            frozen=[r"visual/pos_embed"],
        )
    )
    cfg.update(overrides)
    return cfg


def flat_names(tree: Mapping[str, Any]) -> dict[str, Any]:
    """``{"a": {"b": x}} -> {"a/b": x}`` (the names the rules match)."""
    return traverse_util.flatten_dict(dict(tree), sep="/")


def tree_from_rules(
    tree: Mapping[str, Any],
    rules: Sequence[tuple[str, Any]],
    *,
    default: Any = _NO_MATCH,
    what: str = "rule",
) -> Any:
    """Maps every leaf of a nested dict to the value of the first rule whose regex fully matches
    its ``/``-joined name. A leaf no rule matches gets ``default`` (an error without one).

    Returns a nested dict with the structure of ``tree``.
    """
    compiled = []
    for pattern, value in rules:
        try:
            compiled.append((re.compile(pattern), value))
        except re.error as e:
            raise ValueError(f"bad regex {pattern!r} in {what}s: {e}") from None
    out, unmatched = {}, []
    for name in flat_names(tree):
        for regex, value in compiled:
            if regex.fullmatch(name):
                out[name] = value
                break
        else:
            if default is _NO_MATCH:
                unmatched.append(name)
            out[name] = default
    if unmatched:
        raise ValueError(
            f"no {what} matches parameters {unmatched[:5]}{'...' if len(unmatched) > 5 else ''}; "
            "end the list with a catch-all ('.*', value)"
        )
    return traverse_util.unflatten_dict(out, sep="/")


def make_schedule(cfg: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
    """Linear warm-up from 0 to ``cfg.lr`` over ``cfg.warmup_steps``, then cosine decay to
    ``cfg.end_lr`` at ``total_steps``."""
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    if not 0 <= cfg.warmup_steps < total_steps:
        raise ValueError(
            f"warmup_steps ({cfg.warmup_steps}) must be in [0, total_steps={total_steps})"
        )
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=cfg.lr,
        warmup_steps=cfg.warmup_steps,
        decay_steps=total_steps,
        end_value=cfg.end_lr,
    )


def describe_rules(params: Mapping[str, Any], cfg: ml_collections.ConfigDict) -> dict[str, str]:
    """``{name: "frozen" | "wd x<mult>"}`` for every parameter (for logs and tests)."""
    frozen = flat_names(_frozen_tree(params, cfg))
    mults = flat_names(tree_from_rules(params, cfg.wd_mults, what="wd_mults rule"))
    return {n: "frozen" if frozen[n] else f"wd x{mults[n]:g}" for n in frozen}


def _frozen_tree(params: Mapping[str, Any], cfg: ml_collections.ConfigDict) -> Any:
    return tree_from_rules(params, [(p, True) for p in cfg.frozen], default=False)


def make_optimizer(
    cfg: ml_collections.ConfigDict, params: Mapping[str, Any], total_steps: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """AdamW with per-parameter weight-decay multipliers and frozen parameters.

    Args:
      cfg: optimizer config (see :func:`meru_optim_config`).
      params: the parameter tree (arrays or shape structs); only its names are used.
      total_steps: length of the schedule.

    Returns:
      ``(tx, schedule)``. Frozen parameters get zero updates and no optimizer state.
    """
    schedule = make_schedule(cfg, total_steps)
    mults = tree_from_rules(params, cfg.wd_mults, what="wd_mults rule")
    chain = []
    if cfg.get("grad_clip_norm") is not None:
        chain.append(optax.clip_by_global_norm(cfg.grad_clip_norm))
    chain.append(optax.scale_by_adam(b1=cfg.b1, b2=cfg.b2, eps=cfg.eps))
    # One masked decay per distinct multiplier: decoupled decay as in AdamW (added after Adam's
    # scaling, before the learning rate).
    for mult in sorted({m for m in flat_names(mults).values() if m != 0.0}):
        mask = jax.tree.map(lambda m, mult=mult: m == mult, mults)
        chain.append(optax.masked(optax.add_decayed_weights(cfg.weight_decay * mult), mask))
    chain.append(optax.scale_by_learning_rate(schedule))
    labels = jax.tree.map(lambda f: "frozen" if f else "train", _frozen_tree(params, cfg))
    tx = optax.multi_transform(
        {"train": optax.chain(*chain), "frozen": optax.set_to_zero()}, labels
    )
    return tx, schedule


def apply_updates(params: Any, updates: Any, project: Callable[[Any], Any] | None = None) -> Any:
    """``optax.apply_updates`` followed by the projection (e.g. ``clamp_scalars``) onto the
    feasible set of the parameters."""
    params = optax.apply_updates(params, updates)
    return project(params) if project is not None else params


def gradient_update(
    state: Mapping[str, Any],
    grads: Any,
    tx: optax.GradientTransformation,
    schedule: Callable[[Any], Any],
    project: Callable[[Any], Any] | None = None,
) -> tuple[Any, Any, dict[str, Any]]:
    """One optimizer update of ``state = {"step", "params", "opt_state", ...}`` from ``grads``,
    followed by the projection; the shared core of the pretraining and unlearning steps.

    Returns ``(params, opt_state, metrics)`` with ``metrics = {"lr", "grad_norm"}`` (the learning
    rate used at ``state["step"]`` and the global gradient norm).
    """
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = apply_updates(state["params"], updates, project)
    return params, opt_state, {"lr": schedule(state["step"]), "grad_norm": optax.tree.norm(grads)}
