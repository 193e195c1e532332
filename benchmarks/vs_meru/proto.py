"""The JSON-lines request/reply loop of the two benchmark workers (standard library only, so
that the PyTorch side needs nothing of the project).

A request is ``{"op": NAME, "args": {...}}``; the reply ``{"ok": true, ...}`` or ``{"ok": false,
"error": TRACEBACK}``. Replies go to the worker's real stdout; whatever libraries print goes to
stderr (the worker's log file).
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from collections.abc import Callable


def pin(threads: int) -> None:
    """Limits this process to ``threads`` threads on cores ``0 .. threads - 1`` (call before
    importing torch or jax: both size their thread pools at import)."""
    os.environ.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    cores = sorted(os.sched_getaffinity(0))[:threads]
    os.sched_setaffinity(0, cores)


def serve(handlers: dict[str, Callable[..., dict | None]]) -> None:
    """Answers requests from stdin until ``quit`` (or end of input)."""
    reply_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    out = os.fdopen(reply_fd, "w", buffering=1)
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        if request["op"] == "quit":
            out.write(json.dumps({"ok": True}) + "\n")
            break
        try:
            reply = {"ok": True, **(handlers[request["op"]](**request.get("args", {})) or {})}
        except Exception:  # reported to the driver, which stops the run
            reply = {"ok": False, "error": traceback.format_exc()}
        out.write(json.dumps(reply) + "\n")
    out.flush()


class Registry:
    """Named zero-argument callables, each one complete, synchronised repeat of a benchmark."""

    def __init__(self) -> None:
        self.fns: dict[str, Callable[[], object]] = {}
        self.keep: dict[str, object] = {}  # what must outlive the set-up (models, states)

    def time(self, name: str) -> dict:
        fn = self.fns[name]
        start = time.perf_counter()
        fn()
        return {"s": time.perf_counter() - start}

    def free(self, prefix: str = "") -> dict:
        import gc

        for table in (self.fns, self.keep):
            for key in [k for k in table if k.startswith(prefix)]:
                del table[key]
        gc.collect()
        return {}
