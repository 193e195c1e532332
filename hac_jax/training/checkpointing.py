"""Training checkpoints with orbax: periodic, keep-N, atomic, resumable.

A checkpoint holds two items: ``state`` (a pytree of arrays: params, optimizer state, step, rng)
saved with orbax's pytree handler and restored onto the shardings of a template, and ``meta``
(JSON: the data iterator position and anything else small). Orbax writes each step to a
temporary directory and renames it when complete, so a crash never leaves a half-written step
behind; the temporary directories of saves that a killed run left unfinished are removed when
the next run opens the directory.

With several JAX processes every process saves and restores (each writes the shards it holds;
process 0 writes ``meta``, which must be the same on every process) and the directory must be
one that all of them see.
"""

from __future__ import annotations

import base64
import logging
import os
from collections.abc import Mapping
from typing import Any

import jax
import orbax.checkpoint as ocp

__all__ = ["Checkpointer", "decode_iterator_state", "encode_iterator_state"]


def encode_iterator_state(state: Any) -> Any:
    """A data-iterator state (``bytes`` from grain's ``DataLoaderIterator.get_state()`` or a dict
    from a dataset iterator) -> something JSON can hold."""
    if isinstance(state, bytes):
        return {"__bytes_b64__": base64.b64encode(state).decode("ascii")}
    return state


def decode_iterator_state(state: Any) -> Any:
    """Inverse of :func:`encode_iterator_state`."""
    if isinstance(state, Mapping) and set(state) == {"__bytes_b64__"}:
        return base64.b64decode(state["__bytes_b64__"])
    return state


class Checkpointer:
    """Thin wrapper over ``ocp.CheckpointManager`` for one training run.

    Args:
      directory: where step directories go (created).
      save_every: save when ``step % save_every == 0`` (``save(..., force=True)`` always saves).
      keep: how many recent checkpoints to keep (``None``: all).
      async_save: write in a background thread (call :meth:`wait` before reading the files).
      replica_parallel: split the writing of each replicated array between its replicas (orbax's
        default on CPU and TPU). It compiles a slicing program per array shape at a process's
        first save (seconds of CPU for a small model) and pays only for large replicated state
        saved from several hosts; off, each shard is written by its first replica.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        save_every: int,
        keep: int | None = 3,
        async_save: bool = True,
        replica_parallel: bool = False,
    ):
        if save_every <= 0:
            raise ValueError(f"save_every must be positive, got {save_every}")
        self.directory = os.path.abspath(os.fspath(directory))
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            save_interval_steps=save_every,
            create=True,
            cleanup_tmp_directories=True,
            enable_async_checkpointing=async_save,
        )
        arrays = ocp.type_handlers.ArrayHandler(use_replica_parallel=replica_parallel)
        registry = ocp.type_handlers.create_type_handler_registry((jax.Array, arrays))
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=options,
            item_names=("state", "meta"),
            item_handlers={
                "state": ocp.PyTreeCheckpointHandler(type_handler_registry=registry),
                "meta": ocp.JsonCheckpointHandler(),
            },
        )

    def latest_step(self) -> int | None:
        """The newest complete step, or ``None``."""
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        """All complete steps kept on disk, oldest first."""
        return sorted(self._manager.all_steps())

    def save(
        self, step: int, state: Any, meta: Mapping[str, Any] | None = None, *, force: bool = False
    ) -> bool:
        """Saves ``state`` (pytree of arrays) and ``meta`` (JSON-able dict) at ``step`` when the
        interval says so (or ``force``). Returns whether a save started."""
        args = ocp.args.Composite(
            state=ocp.args.PyTreeSave(state),
            meta=ocp.args.JsonSave(dict(meta or {})),
        )
        saved = self._manager.save(step, args=args, force=force)
        if saved:
            logging.info("checkpoint: saving step %d to %s", step, self.directory)
        return saved

    def restore(self, step: int | None, template: Any) -> tuple[Any, dict[str, Any]]:
        """Restores ``(state, meta)`` of ``step`` (``None``: the latest). ``template`` is a pytree
        of arrays or ``jax.ShapeDtypeStruct`` (with ``.sharding``) giving structure, dtypes and the
        placement of the restored arrays."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
        state_args = ocp.args.PyTreeRestore(
            abstract, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract)
        )
        restored = self._manager.restore(
            step, args=ocp.args.Composite(state=state_args, meta=ocp.args.JsonRestore())
        )
        return restored.state, dict(restored.meta or {})

    def wait(self) -> None:
        """Blocks until background saves are on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Waits for pending saves and releases the manager."""
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
