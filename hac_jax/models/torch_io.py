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

Converted parameters are saved in the library's own format (:mod:`hac_jax.models.saved`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pickle
import re
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from hac_jax.models.saved import CheckpointError, first_line

__all__ = ["CheckpointError", "TorchCheckpoint", "file_sha256", "read_torch_checkpoint"]

# torch.save writes a zip archive; files from torch < 1.6 are a bare pickle (protocol 2 opcode).
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_MAGIC = b"\x80"


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
        raise CheckpointError(f"{path} is a corrupt torch checkpoint ({first_line(e)})") from None
    except (RuntimeError, EOFError, KeyError, ValueError, zipfile.BadZipFile, OSError) as e:
        detail = first_line(e)
        if header.startswith(_ZIP_MAGIC) and not zipfile.is_zipfile(path):
            detail = "the zip directory at its end is missing"
        raise CheckpointError(
            f"{path} is a truncated or corrupt torch checkpoint ({detail or type(e).__name__})"
        ) from None
    return _split_checkpoint(path, ckpt, torch)


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


# --------------------------------------------------------------------------------------------
# Converted directories
# --------------------------------------------------------------------------------------------
