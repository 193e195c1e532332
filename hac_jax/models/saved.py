"""The library's saved-model format: a directory that :func:`hac_jax.models.load_pretrained` reads.

Written by :func:`hac_jax.models.save_pretrained` (pretraining exports) and by the converter
(``python -m checkpoints_convert``)::

    DIR/config.json         the ModelConfig as JSON (config_to_dict / config_from_dict)
    DIR/params/             orbax checkpoint of the Flax parameter tree (float32 numpy leaves)
    DIR/root.npy            CLIP's ROOT vector, (embed_dim,) float32 (only when the source had one)
    DIR/convert_info.json   provenance: source file, sha256, detected kind/arch, parameter count

It is written into a temporary directory beside the target and renamed into place when complete,
so a failure never leaves a partial directory behind.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import shutil
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CONFIG_FILE",
    "INFO_FILE",
    "PARAMS_DIR",
    "ROOT_FILE",
    "CheckpointError",
    "ConvertedCheckpoint",
    "check_output_dir",
    "config_from_dict",
    "config_to_dict",
    "is_converted_dir",
    "read_converted",
    "write_converted",
]


CONFIG_FILE = "config.json"


INFO_FILE = "convert_info.json"


PARAMS_DIR = "params"


ROOT_FILE = "root.npy"


FORMAT_NAME = "hac_jax.converted"


FORMAT_VERSION = 1


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else ""


class CheckpointError(ValueError):
    """A checkpoint file or converted directory is unusable; the message says why in one line."""


def config_to_dict(config: Any) -> dict[str, Any]:
    """A (nested) config dataclass -> JSON-able dict (tuples become lists)."""
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"expected a config dataclass instance, got {type(config).__name__}")
    return json.loads(json.dumps(dataclasses.asdict(config)))


def config_from_dict(data: Mapping[str, Any], cls: type | None = None) -> Any:
    """Inverse of :func:`config_to_dict`: a JSON dict -> config dataclass ``cls`` (default
    :class:`hac_jax.models.config.ModelConfig`). Nested dataclass fields are rebuilt from their
    dicts and tuple fields from lists. Unknown keys are an error (a config written by a newer
    version must not be silently truncated); missing keys take the defaults.

    Raises:
      CheckpointError: not an object, unknown fields, or values the config rejects.
    """
    if cls is None:
        from hac_jax.models.config import ModelConfig as cls
    if not isinstance(data, Mapping):
        raise CheckpointError(
            f"{cls.__name__} config must be a JSON object, got {type(data).__name__}"
        )
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise CheckpointError(f"unknown {cls.__name__} fields in config: {', '.join(unknown)}")
    kwargs = {name: _from_json(hints.get(name, Any), value) for name, value in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"invalid {cls.__name__} config: {first_line(e)}") from None


def _from_json(hint: Any, value: Any) -> Any:
    """Rebuilds ``value`` according to the field type ``hint`` (dataclass, tuple, or union)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        for arm in typing.get_args(hint):
            if arm is not type(None) and (
                dataclasses.is_dataclass(arm) or typing.get_origin(arm) is tuple or arm is tuple
            ):
                return _from_json(arm, value)
        return value
    if dataclasses.is_dataclass(hint) and isinstance(value, Mapping):
        return config_from_dict(value, hint)
    if (hint is tuple or origin is tuple) and isinstance(value, list):
        args = typing.get_args(hint)
        if args and args[-1] is not Ellipsis and len(args) == len(value):
            return tuple(_from_json(a, v) for a, v in zip(args, value, strict=True))
        inner = args[0] if args else Any
        return tuple(_from_json(inner, v) for v in value)
    return value


@dataclasses.dataclass(frozen=True)
class ConvertedCheckpoint:
    """A converted directory as read back: ``params`` (nested dict of numpy arrays), ``config``
    (the JSON dict; turn it into a ModelConfig with :func:`config_from_dict`), ``root``
    (``(embed_dim,)`` or ``None``) and ``info`` (provenance dict)."""

    path: Path
    params: dict[str, Any]
    config: dict[str, Any]
    root: np.ndarray | None
    info: dict[str, Any]


def is_converted_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` looks like a directory written by :func:`write_converted`."""
    path = Path(path)
    return (
        path.is_dir()
        and (path / CONFIG_FILE).is_file()
        and (path / INFO_FILE).is_file()
        and (path / PARAMS_DIR).is_dir()
    )


def check_output_dir(output: str | os.PathLike, overwrite: bool = False) -> Path:
    """Validates a target for :func:`write_converted` before any work is done; returns it
    absolute. An existing target is refused unless ``overwrite``, and even then only an empty
    directory or a previous converted directory is replaced (never an unrelated directory)."""
    target = Path(output).absolute()
    if target.exists() or target.is_symlink():
        if not overwrite:
            raise FileExistsError(
                f"output {target} already exists; choose another path or pass --overwrite"
            )
        if not target.is_dir() or target.is_symlink():
            raise FileExistsError(
                f"output {target} exists and is not a directory; not replacing it"
            )
        if any(target.iterdir()) and not is_converted_dir(target):
            raise FileExistsError(
                f"output {target} is a non-empty directory that is not a converted checkpoint; "
                "not replacing it even with --overwrite"
            )
    if target.parent.exists() and not target.parent.is_dir():
        raise NotADirectoryError(f"parent of output {target} is not a directory")
    return target


def write_converted(
    output: str | os.PathLike,
    params: Mapping[str, Any],
    config: Any,
    *,
    root: np.ndarray | None = None,
    info: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Writes a converted directory atomically (see the module docstring for its layout).

    Args:
      output: target directory (must not exist unless ``overwrite``; see :func:`check_output_dir`).
        Missing parent directories are created (and removed again if writing fails).
      params: Flax parameter tree (nested dict of arrays).
      config: the ModelConfig dataclass (or an already JSON-able dict).
      root: CLIP's ``(embed_dim,)`` ROOT vector, or ``None``.
      info: extra JSON-able provenance stored in ``convert_info.json``.
      overwrite: replace an existing converted (or empty) directory.

    Returns:
      The absolute path written.
    """
    import jax

    target = check_output_dir(output, overwrite)
    config_dict = config if isinstance(config, Mapping) else config_to_dict(config)
    created: list[Path] = []
    try:
        _make_parents(target.parent, created)
        # Not mkdtemp: its 0700 mode would outlive the rename; mkdir honours the umask.
        tmp = target.parent / f".{target.name}.tmp-{secrets.token_hex(6)}"
        tmp.mkdir()
    except BaseException:
        for directory in reversed(created):
            _rmdir_if_empty(directory)
        raise
    try:
        host_params = jax.tree.map(np.asarray, jax.device_get(dict(params)))
        # Host arrays written by this process alone: in a multi-process run (where only process 0
        # exports) orbax would otherwise wait for the other processes to join the save.
        checkpointer = _this_process_checkpointer()
        try:
            checkpointer.save(tmp / PARAMS_DIR, host_params)
            checkpointer.wait_until_finished()
        finally:
            checkpointer.close()
        (tmp / CONFIG_FILE).write_text(json.dumps(config_dict, indent=2) + "\n")
        if root is not None:
            np.save(tmp / ROOT_FILE, np.asarray(root, np.float32))
        meta = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **dict(info or {})}
        (tmp / INFO_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        _replace_dir(tmp, target, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for directory in reversed(created):
            _rmdir_if_empty(directory)
        raise
    return target


def _this_process_checkpointer() -> Any:
    """An orbax checkpointer that reads and writes host arrays in this process alone, without
    the cross-process synchronisation orbax does by default in a multi-process run (where a
    process may save or load an export the others never touch)."""
    import jax
    import orbax.checkpoint as ocp

    this_process = jax.process_index()
    return ocp.StandardCheckpointer(
        multiprocessing_options=ocp.options.MultiprocessingOptions(
            primary_host=this_process, active_processes={this_process}
        )
    )


def _make_parents(parent: Path, created: list[Path]) -> None:
    """``mkdir -p parent``, appending each directory it creates to ``created`` (outermost
    first) as it goes, so a failure part-way can still be undone."""
    missing = []
    probe = parent
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        directory.mkdir()
        created.append(directory)


def _rmdir_if_empty(directory: Path) -> None:
    try:
        directory.rmdir()
    except OSError:
        pass


def _replace_dir(tmp: Path, target: Path, overwrite: bool) -> None:
    """Moves the finished ``tmp`` to ``target``. ``os.rename`` onto an existing empty directory
    would silently succeed, so existence is checked (again) right before the rename."""
    if not (target.exists() or target.is_symlink()):
        os.rename(tmp, target)
        return
    check_output_dir(target, overwrite)
    backup = target.parent / f".{target.name}.old-{secrets.token_hex(6)}"
    os.rename(target, backup)
    try:
        os.rename(tmp, target)
    except BaseException:
        os.rename(backup, target)
        raise
    shutil.rmtree(backup, ignore_errors=True)


def read_converted(path: str | os.PathLike) -> ConvertedCheckpoint:
    """Reads a directory written by :func:`write_converted` (params as numpy arrays).

    Raises:
      FileNotFoundError: ``path`` does not exist.
      CheckpointError: not a converted directory, or one of its files is unreadable.
    """

    path = Path(path).absolute()
    if not path.exists():
        raise FileNotFoundError(f"converted checkpoint not found: {path}")
    if not is_converted_dir(path):
        raise CheckpointError(
            f"{path} is not a converted checkpoint directory (expected {CONFIG_FILE}, "
            f"{INFO_FILE} and {PARAMS_DIR}/); convert a .pth with `python -m checkpoints_convert`"
        )
    config = _read_json(path / CONFIG_FILE)
    info = _read_json(path / INFO_FILE)
    if info.get("format") != FORMAT_NAME or info.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: unsupported format {info.get('format')!r} version "
            f"{info.get('format_version')!r}; expected {FORMAT_NAME!r} version {FORMAT_VERSION}"
        )
    checkpointer = _this_process_checkpointer()
    try:
        params = checkpointer.restore(path / PARAMS_DIR)
    except Exception as e:  # orbax/tensorstore raise many types for damaged files
        raise CheckpointError(
            f"{path / PARAMS_DIR}: cannot restore params ({first_line(e)})"
        ) from None
    finally:
        checkpointer.close()
    root = None
    if (path / ROOT_FILE).exists():
        try:
            root = np.load(path / ROOT_FILE, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{path / ROOT_FILE}: unreadable ({first_line(e)})") from None
    return ConvertedCheckpoint(path=path, params=params, config=config, root=root, info=info)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({first_line(e)})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data
