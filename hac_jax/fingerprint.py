"""Fingerprints of what determines a run's result, for caches and for the records of every run.

A run is determined by its resolved settings, the parameter values it starts from, the data it
reads and the code that computes it. Each has a fingerprint here (a SHA-256 hex digest):

* :func:`settings_fingerprint`: canonical JSON of resolved settings (sorted keys; ``None`` values,
  i.e. unset placeholders, dropped, so adding an unused option changes nothing);
* :func:`tree_fingerprint`: names, dtypes, shapes and bytes of every leaf of a parameter tree
  (the same model keeps its key however its files were written);
* :func:`data_fingerprint`: the hierarchy, the splits' sizes and labels, and the image bytes;
* :func:`program_fingerprint`: the lowered StableHLO of a jitted computation with symbol names
  normalised, i.e. the computation itself: a change of the maths, of a default that reaches the
  step, or of the sharding changes it; renaming or moving the Python code that builds it does not;
* :func:`source_fingerprint`: the source text of Python functions whose logic is not traced
  (e.g. a stopping rule), independent of the file they live in;
* :func:`code_fingerprint`: the code of whole modules or packages, as their syntax trees without
  docstrings (editing a docstring or a comment changes nothing; any change of what runs does);
* :func:`batch_fingerprint`: the arrays of a batch (what the input pipeline produces).

:func:`combine` hashes a mapping of such parts into one key.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import inspect
import json
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

__all__ = [
    "batch_fingerprint",
    "canonical",
    "code_fingerprint",
    "combine",
    "data_fingerprint",
    "program_fingerprint",
    "settings_fingerprint",
    "source_fingerprint",
    "tree_fingerprint",
]


def canonical(obj: Any) -> Any:
    """Settings -> plain JSON values: ConfigDicts and mappings to dicts without ``None`` values,
    tuples to lists, numpy scalars to Python numbers (floats kept as floats)."""
    if hasattr(obj, "to_dict") and not isinstance(obj, np.ndarray):
        obj = obj.to_dict()
    if isinstance(obj, Mapping):
        items = sorted(obj.items(), key=lambda kv: str(kv[0]))
        return {str(k): canonical(v) for k, v in items if v is not None}
    if isinstance(obj, (list, tuple)):
        return [canonical(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return canonical(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (str, bool, int, float)) or obj is None:
        return obj
    return repr(obj)


def _digest(text: str | bytes) -> str:
    return hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()


def settings_fingerprint(settings: Any) -> str:
    """SHA-256 of the canonical JSON of ``settings`` (:func:`canonical`)."""
    return _digest(json.dumps(canonical(settings), sort_keys=True))


def combine(parts: Mapping[str, Any]) -> str:
    """One key for a mapping of fingerprints and settings."""
    return settings_fingerprint(parts)


def tree_fingerprint(tree: Any) -> str:
    """SHA-256 over every leaf of a pytree: its path, dtype, shape and bytes (sorted by path)."""
    import jax

    h = hashlib.sha256()
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    for path, leaf in sorted(leaves, key=lambda kv: jax.tree_util.keystr(kv[0])):
        arr = np.ascontiguousarray(np.asarray(leaf))
        h.update(f"{jax.tree_util.keystr(path)}|{arr.dtype}|{arr.shape}".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def batch_fingerprint(batch: Mapping[str, Any]) -> str:
    """SHA-256 of a batch's arrays (sorted by key): what the input pipeline produced."""
    return tree_fingerprint({k: np.asarray(v) for k, v in batch.items()})


# Symbol names (@main, @jit_step, @_where, ...) depend on Python names only.
_SYMBOL = re.compile(r"@[A-Za-z_][\w.$-]*")
_LOCATION = re.compile(r"\s*loc\([^)]*\)")


def program_fingerprint(lowered: Any) -> str:
    """SHA-256 of a lowered computation (``jax.jit(f).lower(...)``) as StableHLO text without
    debug locations, with function symbol names normalised."""
    text = lowered.as_text()
    text = _LOCATION.sub("", text)
    return _digest(_SYMBOL.sub("@f", text))


def source_fingerprint(*functions: Callable[..., Any]) -> str:
    """SHA-256 of the source text of ``functions`` (in order)."""
    return _digest("\n".join(inspect.getsource(f) for f in functions))


def _without_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(getattr(body[0], "value", None), ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return tree


def _module_files(name: str) -> list[str]:
    module = importlib.import_module(name)
    path = getattr(module, "__file__", None)
    if path is not None and os.path.basename(path) != "__init__.py":
        return [path]
    roots = list(getattr(module, "__path__", []))
    if len(roots) != 1:
        raise ValueError(f"module {name!r} has no single source location: {roots}")
    root = roots[0]
    return sorted(
        os.path.join(d, f) for d, _, files in os.walk(root) for f in files if f.endswith(".py")
    )


def code_fingerprint(*modules: str) -> str:
    """SHA-256 of the code of ``modules`` (dotted names; a package stands for every ``.py``
    file under it): each file's syntax tree without docstrings, named by its path relative to
    its top-level package, so the fingerprint is the same in any checkout."""
    h = hashlib.sha256()
    for name in sorted(set(modules)):
        top = importlib.import_module(name.split(".")[0])
        above_top = os.path.dirname(os.path.dirname(os.path.abspath(top.__file__)))
        for path in _module_files(name):
            with open(path, encoding="utf-8") as f:
                tree = _without_docstrings(ast.parse(f.read(), filename=path))
            h.update(os.path.relpath(os.path.abspath(path), above_top).encode())
            h.update(ast.dump(tree, annotate_fields=False).encode())
    return h.hexdigest()


def data_fingerprint(data: Any, *, sample: int = 512) -> str:
    """SHA-256 of a prepared data set's content: ``data.fingerprint(sample=...)`` (see
    :meth:`hac_jax.data.HierDataset.fingerprint`: the hierarchy, every split's size and labels,
    and its images)."""
    return data.fingerprint(sample=sample)
