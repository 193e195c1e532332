"""Device mesh, parameter-sharding rules and batch placement.

The mesh comes from the config as a list of ``(axis_name, size)`` pairs (one size may be -1 = all
remaining devices), e.g. ``[("data", -1)]`` or ``[("data", -1), ("model", 2)]``. Parameters are
replicated unless a rule ``(regex, spec)`` fully matches their ``/``-joined name; ``spec`` is a
tuple of mesh-axis names / ``None`` per array dimension (a ``PartitionSpec``), as in big_vision.
Batches are sharded along their leading dimension on the ``data`` axis.

The mesh axes are ``AxisType.Auto``: under the Explicit axes that ``jax.make_mesh`` now defaults
to, ordinary Flax modules fail with sharding-type errors.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from hac_jax.training.optim import tree_from_rules

__all__ = [
    "DATA_AXIS",
    "batch_sharding",
    "global_batch",
    "make_mesh",
    "maybe_initialize_distributed",
    "param_shardings",
    "replicated",
]

DATA_AXIS = "data"

# Environment variables that mean "this process is one of several" (jax.distributed.initialize()
# reads the cluster set-up from them itself).
_MULTI_PROCESS_ENV = ("JAX_COORDINATOR_ADDRESS", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE")

_initialized = False


def maybe_initialize_distributed(mode: bool | str = "auto") -> bool:
    """Calls ``jax.distributed.initialize()`` once, before any other JAX call.

    ``mode``: ``True`` always, ``False`` never, ``"auto"`` when the environment shows a
    multi-process launch (``JAX_COORDINATOR_ADDRESS`` set, or SLURM/Open MPI with more than one
    task). Returns whether it initialised.
    """
    global _initialized
    if mode not in (True, False, "auto"):
        raise ValueError(f"distributed must be True, False or 'auto', got {mode!r}")
    if _initialized or mode is False:
        return _initialized
    if mode == "auto":
        env = os.environ
        multi = bool(env.get("JAX_COORDINATOR_ADDRESS")) or any(
            int(env.get(v, "1") or "1") > 1 for v in _MULTI_PROCESS_ENV[1:]
        )
        if not multi:
            return False
    jax.distributed.initialize()
    _initialized = True
    logging.info("jax.distributed: process %d of %d", jax.process_index(), jax.process_count())
    return True


def make_mesh(axes: Sequence[tuple[str, int]], devices: Sequence[Any] | None = None) -> Mesh:
    """A ``Mesh`` with the named axes; one size may be -1 (the devices left over).

    Raises ``ValueError`` when the sizes do not multiply to the device count, or when there is no
    ``data`` axis.
    """
    devices = list(jax.devices() if devices is None else devices)
    names = tuple(str(a) for a, _ in axes)
    sizes = [int(s) for _, s in axes]
    if DATA_AXIS not in names or len(set(names)) != len(names):
        raise ValueError(f"mesh axes must be unique and include {DATA_AXIS!r}, got {names}")
    if sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
        raise ValueError(f"mesh sizes must be positive, with at most one -1, got {sizes}")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if len(devices) % known:
            raise ValueError(f"{len(devices)} devices cannot fill a mesh of sizes {sizes}")
        sizes[sizes.index(-1)] = len(devices) // known
    if math.prod(sizes) != len(devices):
        raise ValueError(
            f"mesh {dict(zip(names, sizes, strict=True))} needs {math.prod(sizes)} devices, "
            f"have {len(devices)}"
        )
    axis_types = (jax.sharding.AxisType.Auto,) * len(names)
    return jax.make_mesh(tuple(sizes), names, axis_types=axis_types, devices=devices)


def replicated(mesh: Mesh) -> NamedSharding:
    """Fully replicated placement."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension split over the ``data`` axis."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def param_shardings(
    params: Mapping[str, Any], mesh: Mesh, rules: Sequence[tuple[str, Sequence[str | None]]] = ()
) -> Any:
    """``NamedSharding`` for every parameter: the first rule whose regex fully matches the
    parameter name gives its ``PartitionSpec``; no match = replicated.

    ``params`` may hold arrays or ``jax.ShapeDtypeStruct``. Raises ``ValueError`` (listing every
    offender) when a spec names an unknown axis, has more entries than the array has dimensions, or
    splits a dimension that the axis size does not divide.
    """
    specs = tree_from_rules(
        params, [(r, tuple(s)) for r, s in rules], default=(), what="sharding rule"
    )
    errors = []

    def to_sharding(path, x, spec):
        name = "/".join(str(getattr(k, "key", k)) for k in path)
        shape = np.shape(x)
        if len(spec) > len(shape):
            errors.append(f"{name}: spec {spec} longer than shape {shape}")
            return None
        for dim, axis in zip(shape, spec, strict=False):
            for a in (axis,) if isinstance(axis, str) or axis is None else tuple(axis):
                if a is not None and a not in mesh.shape:
                    errors.append(f"{name}: unknown mesh axis {a!r} (mesh has {tuple(mesh.shape)})")
                elif a is not None and dim % mesh.shape[a]:
                    errors.append(f"{name}: dim {dim} not divisible by {a}={mesh.shape[a]}")
        return PartitionSpec(*spec)

    out = jax.tree_util.tree_map_with_path(
        to_sharding, params, specs, is_leaf=lambda x: isinstance(x, tuple)
    )
    if errors:
        raise ValueError("bad sharding rules:\n  " + "\n  ".join(errors))
    return jax.tree.map(
        lambda spec: NamedSharding(mesh, spec), out, is_leaf=lambda x: isinstance(x, PartitionSpec)
    )


def global_batch(batch: Mapping[str, Any], mesh: Mesh) -> dict[str, jax.Array]:
    """Process-local batch (numpy, leading dim = local batch) -> global arrays sharded on ``data``.

    With one process this is a ``device_put``; with several, each process passes its own slice
    (``jax.make_array_from_process_local_data``).
    """
    sharding = batch_sharding(mesh)
    return {
        k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in batch.items()
    }
