"""Reading PyTorch MERU/CLIP checkpoints safely, and writing/reading converted directories.

Reading a ``.pth`` never executes pickled code: files are opened with
``torch.load(path, map_location="cpu", weights_only=True)``, whose restricted unpickler accepts only
tensors and plain containers and refuses everything else (a pickle that would call ``os.system``
is an error, not a side effect).

Top-level layout rule (MERU's own loader reads ``ckpt["model"]`` and ignores the rest):

* a mapping with a ``"model"`` key is a *training checkpoint*: ``ckpt["model"]`` is the state dict,
  ``ckpt["root"]`` (CLIP baseline files only) is the ``[ROOT]`` embedding, and every other
  top-level key (``optimizer``, ``scheduler``, ``scaler``, ``iteration``, ...) is ignored;
* a mapping without a ``"model"`` key whose values are all tensors is a *bare state dict*;
* anything else is an error.

A converted directory holds::

    DIR/config.json         the ModelConfig as JSON (``config_to_dict`` / ``config_from_dict``)
    DIR/params/             orbax checkpoint of the Flax parameter tree (float32 numpy leaves)
    DIR/root.npy            CLIP's ROOT vector, (embed_dim,) float32 (only when the source had one)
    DIR/convert_info.json   provenance: source file, sha256, detected kind/arch, parameter count

It is written into a temporary directory beside the target and renamed into place when complete,
so a failure never leaves a partial directory behind.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
import re
import secrets
import shutil
import types
import typing
import warnings
import zipfile
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
    "TorchCheckpoint",
    "check_output_dir",
    "config_from_dict",
    "config_to_dict",
    "file_sha256",
    "is_converted_dir",
    "read_converted",
    "read_torch_checkpoint",
    "write_converted",
]

CONFIG_FILE = "config.json"
INFO_FILE = "convert_info.json"
PARAMS_DIR = "params"
ROOT_FILE = "root.npy"
FORMAT_NAME = "hac_jax.converted"
FORMAT_VERSION = 1
# torch.save writes a zip archive; files from torch < 1.6 are a bare pickle (protocol 2 opcode).
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_MAGIC = b"\x80"


class CheckpointError(ValueError):
    """A checkpoint file or converted directory is unusable; the message says why in one line."""


# --------------------------------------------------------------------------------------------
# PyTorch checkpoints
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TorchCheckpoint:
    """What a ``.pth`` file holds, as numpy.

    Attributes:
      path: the file read.
      state_dict: flat ``{torch key: array}`` in file order (float tensors keep their dtype
        except bfloat16, which becomes float32 since numpy has no bfloat16).
      root: CLIP's ``[ROOT]`` embedding ``(embed_dim,)`` if the file had ``root``, else ``None``.
      layout: ``"training"`` (top-level ``model`` key) or ``"bare"`` (top-level tensors).
      ignored_keys: top-level keys that were not read (``optimizer``, ``iteration``, ...).
    """

    path: Path
    state_dict: dict[str, np.ndarray]
    root: np.ndarray | None
    layout: str
    ignored_keys: tuple[str, ...]


def _import_torch():
    try:
        import torch
    except ImportError:
        raise CheckpointError(
            "reading .pth checkpoints needs PyTorch; install the CPU build with "
            "`pip install 'hac-jax[convert]'` (torch==2.13.0)"
        ) from None
    return torch


def _to_numpy(tensor: Any) -> np.ndarray:
    torch = _import_torch()
    tensor = tensor.detach().cpu()
    if tensor.dtype == torch.bfloat16:
        tensor = tensor.float()
    # A view: the array keeps the tensor's storage alive, and a ViT-L is not held twice.
    return tensor.numpy()


def read_torch_checkpoint(path: str | os.PathLike) -> TorchCheckpoint:
    """Reads a MERU/CLIP ``.pth`` file without executing any pickled code.

    Raises:
      FileNotFoundError: ``path`` does not exist.
      CheckpointError: not a regular file, not a torch archive, truncated/corrupt, a pickle that
        carries code or non-tensor objects (refused), or a layout that is neither a training
        checkpoint nor a bare state dict (see the module docstring).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint path is not a file: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint file is empty: {path}")
    torch = _import_torch()
    with open(path, "rb") as f:
        header = f.read(8)
    if not header.startswith((_ZIP_MAGIC, _PICKLE_MAGIC)):
        raise CheckpointError(
            f"{path} is not a torch checkpoint: expected a torch.save archive, the file starts "
            f"with {header!r}"
        )
    try:
        with warnings.catch_warnings():
            # torch warns about pickle protocols before refusing; the refusal is reported below.
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        message = str(e)
        if "Weights only load failed" in message:
            culprit = re.search(r"GLOBAL ([\w.]+)", message)
            what = f" (it references {culprit.group(1)})" if culprit else ""
            if culprit and culprit.group(1).startswith("torch."):
                # A cut-off legacy pickle shows up as a truncated torch name, not as code.
                raise CheckpointError(
                    f"refused to load {path}: unsupported pickle content{what}; the file is "
                    "truncated/corrupt or holds torch objects other than tensors"
                ) from None
            raise CheckpointError(
                f"refused to load {path}: the pickle carries code or objects other than tensors"
                f"{what}; only plain tensor checkpoints are read (weights_only=True), nothing was "
                "executed"
            ) from None
        raise CheckpointError(f"{path} is a corrupt torch checkpoint ({_first_line(e)})") from None
    except (RuntimeError, EOFError, KeyError, ValueError, zipfile.BadZipFile, OSError) as e:
        detail = _first_line(e)
        if header.startswith(_ZIP_MAGIC) and not zipfile.is_zipfile(path):
            detail = "the zip directory at its end is missing"
        raise CheckpointError(
            f"{path} is a truncated or corrupt torch checkpoint ({detail or type(e).__name__})"
        ) from None
    return _split_checkpoint(path, ckpt, torch)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else ""


def _split_checkpoint(path: Path, ckpt: Any, torch) -> TorchCheckpoint:
    if not isinstance(ckpt, Mapping):
        raise CheckpointError(
            f"{path} holds a {type(ckpt).__name__}, expected a dict with a 'model' state dict "
            "or a bare state dict of tensors"
        )
    if "model" in ckpt:
        state = ckpt["model"]
        if not isinstance(state, Mapping):
            raise CheckpointError(
                f"{path}: ckpt['model'] is a {type(state).__name__}, expected a state dict"
            )
        layout = "training"
        root = ckpt.get("root")
        if root is not None and not isinstance(root, torch.Tensor):
            raise CheckpointError(
                f"{path}: ckpt['root'] is a {type(root).__name__}, expected a tensor"
            )
        ignored = tuple(str(k) for k in ckpt if k not in ("model", "root"))
    else:
        state, root, layout, ignored = ckpt, None, "bare", ()
    bad = [
        str(k)
        for k, v in state.items()
        if not isinstance(k, str) or not isinstance(v, torch.Tensor)
    ]
    if bad:
        shown = ", ".join(bad[:5]) + (f" (+{len(bad) - 5} more)" if len(bad) > 5 else "")
        hint = (
            ""
            if layout == "training"
            else "; a training checkpoint keeps its state dict under the top-level key 'model'"
        )
        raise CheckpointError(f"{path}: state dict entries that are not tensors: {shown}{hint}")
    if not state:
        raise CheckpointError(f"{path}: the state dict is empty")
    return TorchCheckpoint(
        path=path,
        state_dict={k: _to_numpy(v) for k, v in state.items()},
        root=None if root is None else _to_numpy(root),
        layout=layout,
        ignored_keys=ignored,
    )


def file_sha256(path: str | os.PathLike, chunk_bytes: int = 1 << 24) -> str:
    """Hex SHA-256 of a file (to compare with published checksums)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------
# Config <-> JSON
# --------------------------------------------------------------------------------------------


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
        raise CheckpointError(f"invalid {cls.__name__} config: {_first_line(e)}") from None


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


# --------------------------------------------------------------------------------------------
# Converted directories
# --------------------------------------------------------------------------------------------


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
    import orbax.checkpoint as ocp

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
        checkpointer = ocp.StandardCheckpointer()
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
    import orbax.checkpoint as ocp

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
    checkpointer = ocp.StandardCheckpointer()
    try:
        params = checkpointer.restore(path / PARAMS_DIR)
    except Exception as e:  # orbax/tensorstore raise many types for damaged files
        raise CheckpointError(
            f"{path / PARAMS_DIR}: cannot restore params ({_first_line(e)})"
        ) from None
    finally:
        checkpointer.close()
    root = None
    if (path / ROOT_FILE).exists():
        try:
            root = np.load(path / ROOT_FILE, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{path / ROOT_FILE}: unreadable ({_first_line(e)})") from None
    return ConvertedCheckpoint(path=path, params=params, config=config, root=root, info=info)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({_first_line(e)})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data
