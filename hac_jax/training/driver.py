"""The step driver shared by pretraining and unlearning: the train state on its shardings, and
the loop that steps it with logging, a NaN check, checkpoints and resumption.

* :func:`create_train_state` initialises ``{"step", "params", "opt_state", "rng"}`` directly on
  its shardings (:func:`state_shardings`: parameters by ``(regex, PartitionSpec)`` rules, the
  optimizer state like its parameters, everything else replicated);
* :func:`resume` restores the newest checkpoint (state and data-iterator position) if any;
* :func:`run_steps` runs steps ``start .. end``: each batch is placed on the mesh and stepped,
  a record is logged every ``log_every`` steps (non-finite values stop the run with the step
  number), and the state with the iterator position is checkpointed every ``ckpt_every`` steps
  and at the end. A run stopped at any point and started again continues exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from hac_jax.training import checkpointing, sharding
from hac_jax.training.progress import Progress

__all__ = ["create_train_state", "init_fns", "resume", "run_steps", "state_shardings"]


def _strong_types(tree: Any) -> Any:
    # Scalars created from Python floats are weakly typed; after one update they are not, and
    # the changed input types would make the jitted step compile a second and third time.
    return jax.tree.map(lambda x: x.astype(x.dtype), tree)


def init_fns(model: Any, model_cfg: Any, tx: optax.GradientTransformation):
    """``(init_params(rng) -> params, init_opt(params) -> opt_state)``, strongly typed."""
    from hac_jax.models import dummy_inputs

    images, tokens = dummy_inputs(model_cfg)

    def init_params(r):
        return _strong_types(model.init(r, images, tokens)["params"])

    def init_opt(p):
        return _strong_types(tx.init(p))

    return init_params, init_opt


def state_shardings(
    abstract_params: Any, tx: optax.GradientTransformation, mesh: jax.sharding.Mesh, rules: Any = ()
) -> dict[str, Any]:
    """Shardings of ``{"step", "params", "opt_state", "rng"}``: parameters by the
    ``(regex, PartitionSpec)`` ``rules``, the optimizer state like its parameters, everything
    else replicated."""
    params_sh = sharding.param_shardings(abstract_params, mesh, rules)
    rep = sharding.replicated(mesh)
    abstract_opt = jax.eval_shape(tx.init, abstract_params)
    opt_sh = optax.tree_map_params(
        tx,
        lambda _, s: s,
        abstract_opt,
        params_sh,
        transform_non_params=lambda _: rep,
        is_leaf=lambda x: isinstance(x, optax.MaskedNode),
    )
    opt_sh = jax.tree.map(
        lambda s: s if isinstance(s, jax.sharding.Sharding) else rep,
        opt_sh,
        is_leaf=lambda x: isinstance(x, (jax.sharding.Sharding, optax.MaskedNode)),
    )
    return {"step": rep, "params": params_sh, "opt_state": opt_sh, "rng": rep}


def create_train_state(
    model: Any,
    model_cfg: Any,
    tx: optax.GradientTransformation,
    rng: jax.Array,
    mesh: jax.sharding.Mesh,
    rules: Any = (),
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Initialises ``{"step", "params", "opt_state", "rng"}`` directly on its shardings
    (:func:`state_shardings`).

    Returns ``(state, shardings)`` with the same structure.
    """
    init_rng, state_rng = jax.random.split(rng)
    init_params, init_opt = init_fns(model, model_cfg, tx)
    abstract = jax.eval_shape(init_params, init_rng)
    shardings = state_shardings(abstract, tx, mesh, rules)
    params = jax.jit(init_params, out_shardings=shardings["params"])(init_rng)
    opt_state = jax.jit(init_opt, out_shardings=shardings["opt_state"])(params)
    rep = shardings["step"]
    state = {
        "step": jax.device_put(jnp.asarray(0, jnp.int32), rep),
        "params": params,
        "opt_state": opt_state,
        "rng": jax.device_put(state_rng, rep),
    }
    return state, shardings


def resume(ckpt: checkpointing.Checkpointer | None, state: Any, data_iter: Any) -> tuple[Any, int]:
    """``(state, start step)``: the newest checkpoint of ``ckpt`` restored into ``state``'s
    structure and shardings, with ``data_iter`` moved to the position saved with it; ``(state,
    0)`` when there is none."""
    if ckpt is None or ckpt.latest_step() is None:
        return state, 0
    state, meta = ckpt.restore(None, state)
    data_iter.set_state(checkpointing.decode_iterator_state(meta["data_iterator"]))
    return state, int(state["step"])


def run_steps(
    step_fn: Callable[[Any, Mapping[str, jax.Array]], tuple[Any, Mapping[str, Any]]],
    state: Any,
    data_iter: Iterator[Mapping[str, np.ndarray]],
    *,
    mesh: jax.sharding.Mesh,
    start: int,
    end: int,
    batch_keys: Sequence[str],
    progress: Progress,
    ckpt: checkpointing.Checkpointer | None = None,
    ckpt_every: int | None = None,
    prepare: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] | None = None,
    after_step: Callable[[int, Any], None] | None = None,
) -> tuple[Any, list[dict[str, Any]]]:
    """Steps ``state`` from step ``start`` to ``end`` (module docstring).

    Args:
      step_fn: ``(state, batch) -> (state, metrics)``, jitted, the batch sharded on ``data``.
      data_iter: process-local numpy batches (a checkpointable grain iterator with ``ckpt``).
      batch_keys: the batch entries ``step_fn`` reads (placed on the mesh; others dropped).
      progress: the run's :class:`~hac_jax.training.progress.Progress` (closed at the end).
      ckpt, ckpt_every: checkpoint every ``ckpt_every`` steps and at ``end`` (``None``: never).
      prepare: adds derived entries to a batch before it is placed.
      after_step: ``after_step(done, state)`` after every step (``done`` = steps completed).

    Returns:
      ``(state, history)``: the final state and the logged records of this call.

    Raises:
      FloatingPointError: a logged scalar is not finite (the message names it and the step).
    """
    history: list[dict[str, Any]] = []
    try:
        for step in range(start, end):
            batch = next(data_iter)
            if prepare is not None:
                batch = prepare(batch)
            state, metrics = step_fn(
                state, sharding.global_batch({k: batch[k] for k in batch_keys}, mesh)
            )
            done = step + 1
            if progress.should_log(done):
                record = progress.step(done, jax.device_get(metrics))
                bad = [k for k, v in record.items() if np.ndim(v) == 0 and not np.isfinite(v)]
                if bad:
                    raise FloatingPointError(f"non-finite {bad} at step {done}: {record}")
                history.append(record)
            else:
                progress.step(done)
            if after_step is not None:
                after_step(done, state)
            if ckpt is not None and (done == end or done % ckpt_every == 0):
                meta = {
                    "data_iterator": checkpointing.encode_iterator_state(data_iter.get_state()),
                    "step": done,
                }
                if ckpt.save(done, state, meta, force=done == end):
                    progress.reset_timer(done)  # throughput counts training steps only
    finally:
        progress.close()
        if ckpt is not None:
            ckpt.close()
    return state, history
