"""Atomic file output: a reader (or a run killed half-way) never sees a half-written file.

Every file the project writes goes through :func:`atomic_path`: the content is written to a
temporary file in the target's folder and renamed onto the target only when complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from typing import Any

__all__ = ["atomic_path", "write_json", "write_text"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[str]:
    """Yields a temporary path next to ``path``; renamed onto ``path`` when the block succeeds,
    removed when it fails."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp_", suffix=suffix)
    os.close(fd)
    try:
        yield tmp
        # mkstemp makes the file private (0600); give it the mode a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path: str | os.PathLike, text: str | bytes) -> str:
    """Writes ``text`` (str or bytes) to ``path`` atomically; returns ``path``."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb" if isinstance(text, bytes) else "w", encoding=None) as f:
            f.write(text)
    return os.fspath(path)


def write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 1) -> str:
    """Writes ``obj`` as JSON (sorted keys kept as given, ``default=str``) atomically."""
    return write_text(path, json.dumps(obj, indent=indent, default=str) + "\n")
