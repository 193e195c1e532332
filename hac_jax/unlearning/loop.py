"""The one unlearning loop: any registered method, either model kind, optax + orbax.

``unlearn(params0, model_cfg, data, method="hac", forget_classes=["bag"], steps=..., ...)``:

1. checks everything that can be checked before compute (method name, forget set, concept
   names, method/geometry compatibility, sizes) and raises a one-line ``ValueError``;
2. starts from ``params0`` (or from a fresh initialisation for methods flagged ``reinit``, i.e.
   Retrain), placed on the mesh; ``params0`` itself is never updated and is passed to the loss as
   the frozen original model when the method's config uses it (``Method.uses_frozen_model``);
3. draws mixed forget/retain images (``make_mixed_loader``; the forget share defaults from the
   method's flags) and gives each pair its role from its caption's level
   (:func:`hac_jax.data.forget.pair_roles`: ``is_forget`` for captions that name a forgotten
   concept, ``is_retain``; group-level captions of forget images are left out by default) and
   its row in the parent prompts (``parent``; methods flagged ``needs_parent_prompts`` get the
   prompts' tokens bound once);
4. runs a jitted AdamW step (:mod:`hac_jax.training.optim`) with the shared step driver
   (:mod:`hac_jax.training.driver`), projecting the scalars with ``clamp_scalars`` after every
   update;
5. with a ``workdir``, checkpoints params, optimizer state, step, rng and the data-iterator
   position with orbax, and resumes from the newest checkpoint there.

This module only defines the loop; it registers no method.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from hac_jax.files import write_text
from hac_jax.training import optim, progress, sharding
from hac_jax.unlearning.registry import Method, get_method

__all__ = [
    "UnlearnResult",
    "default_forget_fraction",
    "make_unlearn_step",
    "run_passes",
    "unlearn",
]

_BATCH_KEYS = ("image", "tokens", "label", "group", "parent", "is_forget", "is_retain")
_CONFIG_FILE = "unlearn_config.json"


@dataclasses.dataclass
class UnlearnResult:
    """Final parameters, the last step reached, wall seconds of this call (set-up, compile and
    steps), the logged records of this call and the passes the run made (:func:`run_passes`)."""

    params: Any
    steps: int
    seconds: float
    history: list[dict[str, Any]]
    passes: dict[str, int] = dataclasses.field(default_factory=dict)


def run_passes(
    method: Method,
    cfg: ml_collections.ConfigDict,
    steps: int,
    batch_size: int,
    num_prompts: int,
) -> dict[str, int]:
    """Every forward and backward pass of ``steps`` steps, counted in examples: the trained
    model's forward and backward over each batch, the frozen original's forward over each batch
    (when the loss under ``cfg`` runs it, :meth:`Method.uses_frozen_model`), and the parent
    prompts' text-only forward (``num_prompts`` a step, when it encodes them).
    ``forward_examples`` sums the image-text forwards."""
    frozen = steps * batch_size if method.uses_frozen_model(cfg) else 0
    return {
        "forward_examples": steps * batch_size + frozen,
        "backward_examples": steps * batch_size,
        "frozen_forward_examples": frozen,
        "prompt_text_forwards": steps * num_prompts if method.uses_parent_prompts(cfg) else 0,
    }


def default_forget_fraction(method: Method) -> float:
    """Share of forget pairs per batch a method needs: 0 without forget pairs, 1 without retain
    pairs, else 0.5."""
    if not method.needs_forget:
        return 0.0
    if not method.needs_retain:
        return 1.0
    return 0.5


def _method_cfg(method: Method, method_cfg: Any) -> ml_collections.ConfigDict:
    if method_cfg is None:
        return method.config()
    if isinstance(method_cfg, ml_collections.ConfigDict):
        method.check_config(method_cfg)
        return method_cfg
    if isinstance(method_cfg, Mapping):
        return method.config(**dict(method_cfg))
    raise ValueError(
        f"method_cfg must be None, a ConfigDict or a mapping of overrides, got {type(method_cfg)}"
    )


def _parent_prompt_tokens(hierarchy: Any, context_length: int) -> tuple[np.ndarray, np.ndarray]:
    """``(R, P, L)`` int32 tokens of the parent prompt ensembles and ``(num_classes,)`` each
    class's row (:func:`hac_jax.data.captions.parent_prompts`)."""
    from hac_jax.data.captions import parent_prompts
    from hac_jax.tokenizer import tokenize

    prompts, rows = parent_prompts(hierarchy)
    flat = [t for ensemble in prompts for t in ensemble]
    tokens = np.asarray(tokenize(flat, context_length), dtype=np.int32)
    return tokens.reshape(len(prompts), len(prompts[0]), -1), rows.astype(np.int32)


def make_unlearn_step(loss: Any, model_cfg: Any, tx: optax.GradientTransformation, schedule: Any):
    """``step(state, frozen_params, batch) -> (state, metrics)`` (not jitted).

    ``state = {"step", "params", "opt_state", "rng"}``; ``loss`` is a bound method loss
    (``Method.bind``). The step's rng is ``fold_in(state["rng"], step)`` (so a resumed run draws
    the same keys); the update is followed by ``clamp_scalars``. ``metrics`` holds the method's
    metrics on the batch (before the update), the learning rate and the gradient norm.
    """
    from hac_jax.models import clamp_scalars

    def step(state, frozen_params, batch):
        rng = jax.random.fold_in(state["rng"], state["step"])
        (value, metrics), grads = jax.value_and_grad(loss, has_aux=True)(
            state["params"], frozen_params, batch, rng, state["step"]
        )
        params, opt_state, update_metrics = optim.gradient_update(
            state, grads, tx, schedule, lambda p: clamp_scalars(p, model_cfg)
        )
        metrics = {**metrics, "loss": value, **update_metrics}
        new_state = {**state, "step": state["step"] + 1, "params": params, "opt_state": opt_state}
        return new_state, metrics

    return step


def _copy_onto(tree: Any, shardings: Any) -> Any:
    # A fresh buffer per leaf with strong dtypes: the state is donated to the step, so it must not
    # alias the caller's params0; weak-typed scalars would make the step compile again.
    return jax.jit(
        lambda t: jax.tree.map(lambda x: jnp.array(x, dtype=jnp.asarray(x).dtype, copy=True), t),
        out_shardings=shardings,
    )(tree)


def unlearn(
    params0: Any,
    model_cfg: Any,
    data: Any,
    *,
    method: str,
    forget_classes: Iterable[int | str] | int | str,
    method_cfg: ml_collections.ConfigDict | Mapping[str, Any] | None = None,
    steps: int | None = None,
    batch_size: int,
    lr: float | None = None,
    forget_fraction: float | None = None,
    group_captions: str = "exclude",
    seed: int = 0,
    workdir: str | os.PathLike | None = None,
    mesh: jax.sharding.Mesh | None = None,
    sharding_rules: Iterable[tuple[str, Any]] = (),
    log_every: int = 50,
    split: str = "train",
    optim_overrides: Mapping[str, Any] | None = None,
    ckpt_every: int | None = None,
    stop_after: int | None = None,
    callback: Callable[[int, Any], None] | None = None,
    callback_steps: Collection[int] = (),
) -> UnlearnResult:
    """Unlearns ``forget_classes`` from a trained CLIP/MERU model with a registered method.

    Args:
      params0: the trained parameters (the tree under ``"params"``); never modified.
      model_cfg: their ``ModelConfig`` (its kind picks the geometry).
      data: a prepared ``HierDataset``.
      method: a registered method name (``hac_jax.unlearning.list_methods()``).
      forget_classes: concepts to forget (a :class:`hac_jax.data.ForgetSet`, class/group names
        or class ids).
      method_cfg: the method's ``ConfigDict``, or a mapping of overrides of its defaults.
      steps: total unlearning steps (the learning-rate schedule spans them); ``None``: the
        method's tuned default (its registration's ``loop``, e.g. HAC's 100).
      batch_size: global batch size (divisible by the mesh's ``data`` axis).
      lr: peak learning rate of AdamW (constant by default, no weight decay); ``None``: the
        method's tuned default.
      forget_fraction: share of forget pairs per batch (default from the method's flags, see
        :func:`default_forget_fraction`).
      group_captions: what group- and root-level captions of forget images are
        (:data:`hac_jax.data.GROUP_CAPTION_POLICIES`): ``"exclude"`` (in no loss term),
        ``"retain"`` or ``"forget"``.
      seed: data order, the rng of the method and the re-initialisation (``reinit`` methods).
      workdir: checkpoint to / resume from ``<workdir>/checkpoints`` and log ``metrics.jsonl``
        (``None``: neither).
      mesh: device mesh with a ``data`` axis (default: all devices on ``data``).
      sharding_rules: ``(regex over "a/b/c" parameter names, PartitionSpec tuple)`` pairs for
        the parameters and optimizer state (e.g. ``hac_jax.models.sharding_rules.get_rules(
        "fsdp")``); the frozen original follows the parameters' shardings. Default: replicated.
      log_every: log a record every this many steps (and at the last).
      split: training split of ``data``.
      optim_overrides: fields of ``hac_jax.training.optim.meru_optim_config`` to override (e.g.
        ``end_lr=0.0`` for cosine decay, ``weight_decay``).
      ckpt_every: checkpoint interval in steps (default: only at the end).
      stop_after: stop (with a checkpoint) once this step is reached, as if interrupted.
      callback: ``callback(step, params)`` after each step in ``callback_steps`` (e.g. to audit
        several step counts of one run: with the default constant learning rate the parameters
        after ``k`` steps equal those of a ``k``-step run). The parameters are donated to the next
        step: copy what you keep. Its time counts in ``seconds``.
      callback_steps: the steps (1-based counts) at which ``callback`` is called.

    Returns:
      :class:`UnlearnResult` (``steps`` = the last step reached).

    Raises:
      ValueError: before any compute, for an unknown method, an empty forget set, one covering
        every class, unknown concept names, a method not defined on the model's geometry, or bad
        sizes.
    """
    t0 = time.perf_counter()
    m = get_method(method)
    steps, lr = (m.loop.get(k) if v is None else v for k, v in (("steps", steps), ("lr", lr)))
    for name, value in (("steps", steps), ("lr", lr)):
        if value is None:
            raise ValueError(f"method {m.name!r} has no tuned default {name}; pass {name}=...")
    cfg = _method_cfg(m, method_cfg)
    geometry = model_cfg.geometry
    from hac_jax import data as hdata
    from hac_jax.models import build_model, init_params

    model = build_model(model_cfg)
    forget = hdata.ForgetSet.of(data.hierarchy, forget_classes)
    if group_captions not in hdata.GROUP_CAPTION_POLICIES:
        raise ValueError(
            f"group_captions must be one of {hdata.GROUP_CAPTION_POLICIES}, got {group_captions!r}"
        )
    parent_tokens, parent_rows = _parent_prompt_tokens(
        data.hierarchy, model_cfg.text.context_length
    )
    loss = m.bind(  # raises on a foreign geometry
        model=model, geometry=geometry, cfg=cfg, parent_prompt_tokens=parent_tokens
    )
    for name, value in (("steps", steps), ("batch_size", batch_size)):
        if not isinstance(value, (int, np.integer)) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr}")
    if stop_after is not None and stop_after <= 0:
        raise ValueError(f"stop_after must be positive, got {stop_after}")
    ckpt_every = steps if ckpt_every is None else ckpt_every
    if ckpt_every <= 0:
        raise ValueError(f"ckpt_every must be positive, got {ckpt_every}")
    if forget_fraction is None:
        forget_fraction = default_forget_fraction(m)
    if m.needs_forget and forget_fraction == 0 or m.needs_retain and forget_fraction == 1:
        raise ValueError(
            f"method {m.name!r} needs {'forget' if m.needs_forget else 'retain'} pairs; "
            f"forget_fraction={forget_fraction} gives none"
        )
    mesh = sharding.make_mesh([(sharding.DATA_AXIS, -1)]) if mesh is None else mesh
    if batch_size % mesh.shape[sharding.DATA_AXIS]:
        raise ValueError(
            f"batch_size {batch_size} is not divisible by the data axis "
            f"({mesh.shape[sharding.DATA_AXIS]} devices)"
        )
    loader = hdata.make_mixed_loader(
        data,
        split,
        forget_classes=forget.class_ids,
        batch_size=batch_size,
        forget_fraction=forget_fraction,
        seed=seed,
        context_length=model_cfg.text.context_length,
        image_size=model_cfg.vision.image_size,
    )
    opt_cfg = optim.meru_optim_config(lr=lr, warmup_steps=0, end_lr=lr, weight_decay=0.0)
    opt_cfg.update(dict(optim_overrides or {}))
    tx, schedule = optim.make_optimizer(opt_cfg, params0, steps)
    run_config = {
        "method": m.name,
        "method_cfg": cfg.to_dict(),
        "forget_classes": list(forget.class_ids),
        "forget_fraction": float(forget_fraction),
        "group_captions": group_captions,
        "steps": int(steps),
        "batch_size": int(batch_size),
        "lr": float(lr),
        "seed": int(seed),
        "split": split,
        "optim": opt_cfg.to_dict(),
    }
    run_json = json.dumps(run_config, sort_keys=True, default=str)
    is_main = jax.process_index() == 0
    if workdir is not None:
        workdir = os.path.abspath(os.fspath(workdir))
        if os.path.exists(workdir) and not os.path.isdir(workdir):
            raise NotADirectoryError(f"workdir {workdir!r} is a file")
        path = os.path.join(workdir, _CONFIG_FILE)
        if os.path.exists(path):
            with open(path) as f:
                old = f.read()
            if json.loads(old) != json.loads(run_json):
                raise ValueError(
                    f"workdir {workdir!r} holds a different unlearning run ({_CONFIG_FILE}); "
                    "use a fresh workdir"
                )

    # ---- compute starts here ----
    # orbax is imported here: the package imports this module with every method registration.
    from hac_jax.training import checkpointing, driver

    state, shardings = driver.create_train_state(
        model, model_cfg, tx, jax.random.PRNGKey(seed), mesh, tuple(sharding_rules)
    )
    start_params = init_params(model_cfg, jax.random.PRNGKey(seed)) if m.reinit else params0
    state["params"] = _copy_onto(start_params, shardings["params"])
    frozen = _copy_onto(params0, shardings["params"]) if m.uses_frozen_model(cfg) else None
    data_iter = iter(loader)
    ckpt = None
    if workdir is not None:
        if is_main:
            os.makedirs(workdir, exist_ok=True)
            write_text(os.path.join(workdir, _CONFIG_FILE), run_json)
        ckpt = checkpointing.Checkpointer(
            os.path.join(workdir, "checkpoints"), save_every=ckpt_every, keep=2
        )
    state, start = driver.resume(ckpt, state, data_iter)
    if is_main and start > 0:
        print(f"[unlearn] resumed from step {start} in {workdir}", flush=True)

    rep = sharding.replicated(mesh)
    jitted = jax.jit(
        make_unlearn_step(loss, model_cfg, tx, schedule),
        in_shardings=(
            shardings,
            shardings["params"] if frozen is not None else None,
            sharding.batch_sharding(mesh),
        ),
        out_shardings=(shardings, rep),
        donate_argnums=0,
    )

    def add_roles(batch):
        batch["is_forget"], batch["is_retain"] = hdata.pair_roles(
            batch["is_forget"], batch["caption_level"], group_captions
        )
        batch["parent"] = parent_rows[batch["label"]]
        return batch

    def after_step(done, state):
        if callback is not None and done in callback_steps:
            callback(done, state["params"])

    end = steps if stop_after is None else min(stop_after, steps)
    state, history = driver.run_steps(
        lambda state, batch: jitted(state, frozen, batch),
        state,
        data_iter,
        mesh=mesh,
        start=start,
        end=end,
        batch_keys=_BATCH_KEYS,
        progress=progress.Progress(
            steps,
            workdir=workdir,
            initial_step=start,
            log_every=log_every,
            images_per_step=batch_size,
            is_main=is_main,
        ),
        ckpt=ckpt,
        ckpt_every=ckpt_every,
        prepare=add_roles,
        after_step=after_step,
    )
    done = max(start, end)
    return UnlearnResult(
        params=state["params"],
        steps=done,
        seconds=time.perf_counter() - t0,
        history=history,
        passes=run_passes(
            m, cfg, done, batch_size, int(parent_tokens.shape[0] * parent_tokens.shape[1])
        ),
    )
