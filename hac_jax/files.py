"""Atomic file output: a reader (or a run killed half-way) never sees a half-written file.

Every file the project writes goes through :func:`atomic_path`: the content is written to a
temporary file in the target's folder, flushed to disk, and renamed onto the target only when
complete. A process killed while writing leaves the temporary file (``.tmp_*``) behind, never a
half-written target; :func:`remove_leftovers` clears such files when the run starts again.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

__all__ = ["TEMPORARY_PREFIX", "atomic_path", "remove_leftovers", "write_json", "write_text"]

TEMPORARY_PREFIX = ".tmp_"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[str]:
    """Yields a temporary path next to ``path``; renamed onto ``path`` when the block succeeds,
    removed when it fails."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=TEMPORARY_PREFIX, suffix=suffix)
    os.close(fd)
    try:
        yield tmp
        # On disk before the rename: after a machine crash the target is old or new, not empty.
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
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


def remove_leftovers(
    directory: str | os.PathLike, patterns: tuple[str, ...] = (TEMPORARY_PREFIX + "*",)
) -> list[str]:
    """Removes the files and folders directly in ``directory`` whose names match ``patterns``
    (shell-style): what interrupted atomic writes left behind. Only call it where nothing else is
    writing at the time. Returns the paths removed."""
    removed = []
    with os.scandir(directory) as entries:
        for entry in entries:
            if not any(fnmatch.fnmatchcase(entry.name, p) for p in patterns):
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
            removed.append(entry.path)
    return sorted(removed)
