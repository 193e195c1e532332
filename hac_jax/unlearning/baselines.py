"""Baseline unlearning methods, on either geometry (docs/METHOD.md).

``L(S)`` is the model's own training loss on the pairs of subset ``S`` of the batch (CLIP's
contrastive loss; MERU's contrastive + ``entail_weight`` x entailment loss), computed as if the
batch held only those pairs (:func:`hac_jax.unlearning.common.subset_model_loss`).

* ``retrain``: ``L(R)`` from a re-initialised model (the runner re-initialises: flag ``reinit``).
* ``ft``: fine-tune on the retain set, ``L(R)``.
* ``ga``: gradient ascent on the forget set, ``-L(F)``.
* ``negrad``: ``L(R) - forget_weight * L(F)``.
* ``l1_sparse``: ``L(R) + lambda_t * |theta|_1`` ("l1-sparse" unlearning, Jia et al., "Model
  Sparsity Can Simplify Machine Unlearning", NeurIPS 2023), with ``lambda_t = l1`` (constant) or
  ``l1 * (1 - step / total_steps)`` (linear decay, as in that paper).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import Array

from hac_jax.geometry import Geometry
from hac_jax.training.optim import tree_from_rules
from hac_jax.unlearning import common
from hac_jax.unlearning.ac import model_outputs
from hac_jax.unlearning.registry import register

__all__ = [
    "L1_SCHEDULES",
    "ft_loss",
    "ga_loss",
    "l1_norm",
    "l1_sparse_loss",
    "l1_weight",
    "negrad_loss",
    "retrain_loss",
    "subset_loss",
]

# MERU's default entailment weight (Desai et al., ICML 2023); ignored on the sphere.
_ENTAIL_WEIGHT = 0.2
L1_SCHEDULES = ("constant", "linear")


def subset_loss(
    model: Any, params: Any, batch: Any, geometry: Geometry, cfg: Any, which: str
) -> tuple[Array, dict[str, Array]]:
    """``L(R)`` (``which="retain"``) or ``L(F)`` (``"forget"``) of a batch, with metrics."""
    out = model_outputs(model, params, batch)
    is_forget, is_retain = common.pair_masks(batch)
    mask = is_forget if which == "forget" else is_retain
    loss, metrics = common.subset_model_loss(
        out["image"],
        out["text"],
        out["logit_scale"],
        out["curv"],
        geometry,
        mask,
        entail_weight=cfg.entail_weight,
    )
    metrics = {f"{which}_{k}": v for k, v in metrics.items()}
    metrics["num_forget"] = jnp.sum(is_forget.astype(jnp.int32))
    metrics["logit_scale"] = out["logit_scale"]
    metrics["curv"] = out["curv"]
    return loss, metrics


def _retain_only(params, batch, *, model, cfg, geometry):
    loss, metrics = subset_loss(model, params, batch, geometry, cfg, "retain")
    metrics["loss"] = loss
    return loss, metrics


@register(
    "retrain",
    defaults=dict(entail_weight=_ENTAIL_WEIGHT),
    needs_forget=False,
    reinit=True,
    description="Retrain from scratch on the retain set (the gold standard)",
)
def retrain_loss(params, frozen_params, batch, rng, *, model, cfg, geometry, step=0):
    """``L(R)``; the runner starts from a re-initialised model (``reinit``)."""
    del frozen_params, rng, step
    return _retain_only(params, batch, model=model, cfg=cfg, geometry=geometry)


@register(
    "ft",
    defaults=dict(entail_weight=_ENTAIL_WEIGHT),
    needs_forget=False,
    description="Fine-tune on the retain set",
)
def ft_loss(params, frozen_params, batch, rng, *, model, cfg, geometry, step=0):
    """``L(R)`` from the original model."""
    del frozen_params, rng, step
    return _retain_only(params, batch, model=model, cfg=cfg, geometry=geometry)


@register(
    "ga",
    defaults=dict(entail_weight=_ENTAIL_WEIGHT),
    needs_forget=True,
    needs_retain=False,
    description="Gradient ascent on the forget set",
)
def ga_loss(params, frozen_params, batch, rng, *, model, cfg, geometry, step=0):
    """``-L(F)``."""
    del frozen_params, rng, step
    forget, metrics = subset_loss(model, params, batch, geometry, cfg, "forget")
    metrics["loss"] = -forget
    return -forget, metrics


@register(
    "negrad",
    defaults=dict(entail_weight=_ENTAIL_WEIGHT, forget_weight=1.0),
    needs_forget=True,
    description="NegGrad: descent on the retain set, ascent on the forget set",
)
def negrad_loss(params, frozen_params, batch, rng, *, model, cfg, geometry, step=0):
    """``L(R) - forget_weight * L(F)``."""
    del frozen_params, rng, step
    retain, m_r = subset_loss(model, params, batch, geometry, cfg, "retain")
    forget, m_f = subset_loss(model, params, batch, geometry, cfg, "forget")
    loss = common.add_term(retain, -cfg.forget_weight, forget)
    metrics = {**m_r, **m_f, "loss": loss}
    return loss, metrics


def l1_norm(params: Any, rules: Any) -> Array:
    """``sum_k mult_k * |theta_k|_1`` over the parameter tree, ``mult`` from ``(regex, mult)`` rules
    over ``/``-joined names (first full match wins; see
    :func:`hac_jax.training.optim.tree_from_rules`)."""
    mults = tree_from_rules(params, [tuple(r) for r in rules], what="l1 rule")
    terms = jax.tree_util.tree_map(lambda p, m: m * jnp.sum(jnp.abs(p)), params, mults)
    return sum(jax.tree_util.tree_leaves(terms), jnp.zeros(()))


def l1_weight(l1: float, schedule: str, step: Any, total_steps: int) -> Array:
    """The l1 coefficient at ``step``: ``l1`` (``"constant"``) or ``l1 * max(0, 1 - step /
    total_steps)`` (``"linear"``)."""
    if schedule == "constant":
        return jnp.asarray(l1, jnp.float32)
    if schedule == "linear":
        if not total_steps or total_steps <= 0:
            raise ValueError("l1 schedule 'linear' needs total_steps > 0 in the method config")
        frac = jnp.asarray(step, jnp.float32) / float(total_steps)
        return l1 * jnp.clip(1.0 - frac, 0.0, 1.0)
    raise ValueError(f"l1_schedule must be one of {L1_SCHEDULES}, got {schedule!r}")


def _validate_l1(cfg: Any) -> None:
    if cfg.l1_schedule not in L1_SCHEDULES:
        raise ValueError(f"l1_schedule must be one of {L1_SCHEDULES}, got {cfg.l1_schedule!r}")
    if cfg.l1_schedule == "linear" and cfg.total_steps <= 0:
        raise ValueError("l1 schedule 'linear' needs total_steps > 0 in the method config")


@register(
    "l1_sparse",
    defaults=dict(
        entail_weight=_ENTAIL_WEIGHT,
        l1=5e-5,
        l1_schedule="constant",
        total_steps=0,
        # (regex over "a/b/c" parameter names, multiplier); first full match wins. The log-scalars
        # and the fixed sin-cos table are not weights to sparsify.
        l1_rules=[
            (r"logit_scale|curv|visual_alpha|textual_alpha", 0.0),
            (r"visual/pos_embed", 0.0),
            (r".*", 1.0),
        ],
    ),
    needs_forget=False,
    validate=_validate_l1,
    description="l1-sparse fine-tuning on the retain set (Jia et al., NeurIPS 2023)",
)
def l1_sparse_loss(params, frozen_params, batch, rng, *, model, cfg, geometry, step=0):
    """``L(R) + lambda_t * |theta|_1``."""
    del frozen_params, rng
    retain, metrics = subset_loss(model, params, batch, geometry, cfg, "retain")
    norm = l1_norm(params, cfg.l1_rules)
    weight = l1_weight(cfg.l1, cfg.l1_schedule, step, cfg.total_steps)
    loss = retain + weight * norm
    metrics.update(loss=loss, l1_norm=norm, l1_weight=weight)
    return loss, metrics
