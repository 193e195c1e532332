"""Device mesh, parameter-sharding rules, batch placement, and joining several JAX processes.

The mesh comes from the config as a list of ``(axis_name, size)`` pairs (one size may be -1 = all
remaining devices), e.g. ``[("data", -1)]`` or ``[("data", -1), ("model", 2)]``. Parameters are
replicated unless a rule ``(regex, spec)`` fully matches their ``/``-joined name; ``spec`` is a
tuple of mesh-axis names / ``None`` per array dimension (a ``PartitionSpec``), as in big_vision.
Batches are sharded along their leading dimension on the ``data`` axis; with several processes
each passes its own rows (:func:`global_batch`).

The mesh axes are ``AxisType.Auto``: under the Explicit axes that ``jax.make_mesh`` now defaults
to, ordinary Flax modules fail with sharding-type errors.

Several processes (one per host, or several on one machine) join with
:func:`maybe_initialize_distributed` before JAX's first computation; the coordinator address,
process count and process id come from the arguments (the config) or from
``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID``, and are left to JAX's
cluster detection on SLURM, Open MPI and TPU pod slices. On CPU the processes' collectives run
over gloo. Work that one process does for all (preparing data, deciding whether a cached result
exists) goes through :func:`main_process_first` and :func:`main_decides`, which wait on the
coordination service rather than in a device collective.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import importlib.util
import logging
import math
import os
import pkgutil
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from hac_jax.training.optim import tree_from_rules

__all__ = [
    "DATA_AXIS",
    "ProcessLayout",
    "batch_sharding",
    "distributed_options",
    "global_batch",
    "host_values",
    "is_main_process",
    "main_decides",
    "main_process_first",
    "make_mesh",
    "maybe_initialize_distributed",
    "param_shardings",
    "process_layout",
    "replicated",
    "sync_processes",
]

DATA_AXIS = "data"

# Environment variables of cluster managers whose launches JAX's own cluster detection reads
# (coordinator address, process count and id all come from them).
_CLUSTER_SIZE_ENV = ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE")
_MODES = {
    True: "on",
    False: "off",
    "on": "on",
    "off": "off",
    "auto": "auto",
    "true": "on",
    "false": "off",
}


@dataclasses.dataclass(frozen=True)
class ProcessLayout:
    """How this process joins the others; ``None`` fields are left to JAX's cluster detection
    (SLURM, Open MPI, TPU pod slices)."""

    coordinator_address: str | None  # "host:port" of process 0's coordinator service
    num_processes: int | None
    process_id: int | None


def _env_str(environ: Mapping[str, str], name: str) -> str | None:
    return environ.get(name, "").strip() or None


def _env_int(environ: Mapping[str, str], name: str) -> int | None:
    text = _env_str(environ, name)
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{name}={text!r} is not an integer") from None


def _setting(value: Any, config_name: str, environ: Mapping[str, str], env_name: str, read: Any):
    """``(value, "where=value")`` of one setting: the config's when set, else the environment's."""
    if value is not None:
        return value, f"distributed.{config_name}={value}"
    value = read(environ, env_name)
    return value, f"{env_name}={value}"


def process_layout(
    mode: bool | str = "auto",
    *,
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> ProcessLayout | None:
    """This process's place among several, or ``None`` for a single-process run.

    Args:
      mode: ``"on"`` / ``True`` always join, ``"off"`` / ``False`` never, ``"auto"`` when the
        settings or the environment show a launch of several processes (a coordinator address,
        a process count above one, or a SLURM / Open MPI launch of more than one task).
      coordinator_address, num_processes, process_id: override ``JAX_COORDINATOR_ADDRESS``,
        ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``.
      environ: the environment (default ``os.environ``).

    Raises:
      ValueError: one line naming the inconsistent setting: an unknown mode, a count below one,
        an id outside ``[0, count)``, an id or address without a count, a count without an
        address or id (outside SLURM / Open MPI), an address that is not ``host:port``.
    """
    key = mode.strip().lower() if isinstance(mode, str) else mode
    if key not in _MODES:
        raise ValueError(f"distributed mode must be 'auto', 'on' or 'off', got {mode!r}")
    mode = _MODES[key]
    if mode == "off":
        return None
    env = os.environ if environ is None else environ
    address, address_from = _setting(
        coordinator_address, "coordinator_address", env, "JAX_COORDINATOR_ADDRESS", _env_str
    )
    count, count_from = _setting(num_processes, "num_processes", env, "JAX_NUM_PROCESSES", _env_int)
    pid, pid_from = _setting(process_id, "process_id", env, "JAX_PROCESS_ID", _env_int)
    managed = any((_env_int(env, v) or 1) > 1 for v in _CLUSTER_SIZE_ENV)
    if mode == "auto" and not (address or (count or 1) > 1 or managed):
        if pid not in (None, 0):
            raise ValueError(f"{pid_from} but no process count: set JAX_NUM_PROCESSES")
        return None

    if count is not None and count < 1:
        raise ValueError(f"the process count must be at least 1, got {count_from}")
    if pid is not None and count is not None and not 0 <= pid < count:
        raise ValueError(f"the process id must be in [0, {count}) ({count_from}), got {pid_from}")
    if address is not None:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"the coordinator address must be host:port, got {address_from}")
    if not managed:
        if count is None and (address is not None or pid is not None):
            given = address_from if address is not None else pid_from
            raise ValueError(
                f"{given} but no process count: set JAX_NUM_PROCESSES (and JAX_PROCESS_ID)"
            )
        if count is not None and address is None:
            raise ValueError(
                f"{count_from} but no coordinator address: set JAX_COORDINATOR_ADDRESS=host:port "
                "(process 0's host and a free port)"
            )
        if count is not None and count > 1 and pid is None:
            raise ValueError(f"{count_from} but no process id: set JAX_PROCESS_ID")
    if count == 1 and pid is None:
        pid = 0
    return ProcessLayout(address, count, pid)


def _cpu_only() -> bool:
    """Whether JAX will compute on CPU: ``jax_platforms`` names CPU first, or none is named and
    no GPU/TPU plug-in is installed (asked without starting a backend)."""
    platforms = (jax.config.jax_platforms or "").strip()
    if platforms:
        return platforms.split(",")[0].strip().lower() == "cpu"
    if importlib.util.find_spec("libtpu") is not None:
        return False
    if importlib.metadata.entry_points(group="jax_plugins"):
        return False
    try:
        import jax_plugins
    except ImportError:
        return True
    return not any(pkgutil.iter_modules(jax_plugins.__path__))


def maybe_initialize_distributed(
    mode: bool | str = "auto",
    *,
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> bool:
    """Joins this process to the others with ``jax.distributed.initialize`` (once, before any
    other JAX computation) when :func:`process_layout` says it is one of several; on CPU the
    cross-process collectives are set to gloo first. Returns whether JAX runs distributed.

    Raises ``ValueError`` (one line) for an inconsistent set-up and ``RuntimeError`` when JAX has
    already computed something in this process.
    """
    layout = process_layout(
        mode,
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
    )
    if jax.distributed.is_initialized():
        return True
    if layout is None:
        return False
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        raise RuntimeError(
            "jax.distributed must be initialised before JAX's first computation in this process; "
            "call maybe_initialize_distributed (or prepare the run) first"
        )
    if _cpu_only():
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=layout.coordinator_address,
        num_processes=layout.num_processes,
        process_id=layout.process_id,
    )
    logging.info("jax.distributed: process %d of %d", jax.process_index(), jax.process_count())
    return True


def distributed_options(config: Any) -> dict[str, Any]:
    """Keyword arguments of :func:`maybe_initialize_distributed` from a run config's
    ``distributed`` entry (a group of mode / coordinator_address / num_processes / process_id,
    or a mode alone; absent: ``"auto"``)."""
    block = config.get("distributed", "auto")
    if hasattr(block, "to_dict"):
        return block.to_dict()
    if isinstance(block, Mapping):
        return dict(block)
    return {"mode": block}


def is_main_process() -> bool:
    """Whether this is process 0, the one that writes logs, reports and exports."""
    return jax.process_index() == 0


def sync_processes(name: str, timeout_s: int = 3600) -> None:
    """Waits until every process reaches the point called ``name`` (nothing with one process).

    A barrier of the coordination service, not a device collective: a process may wait longer
    than gloo's 30-second rendezvous (e.g. while process 0 prepares a data set). Raises when
    ``timeout_s`` passes first.
    """
    if jax.process_count() == 1:
        return
    from jax._src import distributed

    distributed.global_state.client.wait_at_barrier(_unique(name), timeout_in_ms=timeout_s * 1000)


_NAME_USES: dict[str, int] = {}


def _unique(name: str) -> str:
    """``name`` with the count of its earlier uses in this process (``"a"``, ``"a#1"``, ...):
    the coordination service's barriers and keys are single-use, and every process passes the
    same points in the same order, so the counts agree."""
    uses = _NAME_USES.get(name, 0)
    _NAME_USES[name] = uses + 1
    return name if uses == 0 else f"{name}#{uses}"


def main_process_first(name: str, fn: Any) -> Any:
    """``fn()`` in every process, process 0 first: the others start once it has returned (e.g.
    process 0 prepares a data set on the shared disk, the others then read it). ``name`` names
    the barrier."""
    if jax.process_count() == 1:
        return fn()
    if is_main_process():
        value = fn()
        sync_processes(name)
        return value
    sync_processes(name)
    return fn()


def main_decides(name: str, fn: Any, timeout_s: int = 3600) -> str:
    """``fn()`` (a string) as process 0 computes it, in every process: process 0 publishes it
    under ``name`` in the coordination service and the others wait for it (up to ``timeout_s``,
    e.g. while process 0 audits a model). Every process then takes the same branch, e.g. "this
    run is cached" or "compute it together", whatever its own view of the disk. ``name`` is
    the same in every process (repeated names are counted, as in :func:`sync_processes`)."""
    if jax.process_count() == 1:
        return fn()
    from jax._src import distributed

    client, key = distributed.global_state.client, f"hac_jax/{_unique(name)}"
    if is_main_process():
        value = str(fn())
        client.key_value_set(key, value)
        return value
    return client.blocking_key_value_get(key, timeout_s * 1000)


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


def host_values(tree: Any) -> Any:
    """``tree`` with every array as a whole numpy array on this host, also where its shards live
    on other processes (then a collective: every process must call it)."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(tree, tiled=True)
