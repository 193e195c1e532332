"""Progress bar and metric logging for training loops.

A tqdm bar when stderr is a terminal (and ``CI`` is unset); log lines to stdout every
``log_every`` steps in all cases; every logged record also appended as one JSON object per line to
``<workdir>/metrics.jsonl``. Only the main process (``jax.process_index() == 0``) writes.
Throughput (images/s) is measured between log points, so compile time only affects the first one.

A run that resumes from the checkpoint of step ``s`` (``initial_step=s``) starts by cutting
``metrics.jsonl`` back to the records of steps up to ``s``: what an interrupted run logged after
its last checkpoint (and its evaluation records, or a line cut short by a kill) is logged again
by the resumed run, so the file ends as an uninterrupted run's would.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

import numpy as np

from hac_jax.files import write_text

__all__ = ["Progress", "read_metrics"]


def _use_bar(stream: TextIO) -> bool:
    return bool(getattr(stream, "isatty", lambda: False)()) and not os.environ.get("CI")


def _to_float(value: Any) -> Any:
    value = np.asarray(value)
    if value.ndim == 0:
        return float(value)
    return value.tolist()


def _fmt(name: str, value: Any) -> str:
    if isinstance(value, float):
        return f"{name}={value:.4g}"
    return f"{name}={value}"


class Progress:
    """Tracks one training run.

    Args:
      total_steps: the last step number.
      workdir: where ``metrics.jsonl`` goes (``None``: no file).
      initial_step: the step the run starts from (resumed runs); ``metrics.jsonl`` keeps only
        the records of steps up to it.
      log_every: log a line every this many steps (and at the last step).
      images_per_step: global batch size, for throughput.
      is_main: only the main process prints and writes.
      bar: force the bar on/off (default: only on a terminal outside CI).
      stream: where log lines go (default stdout).
    """

    def __init__(
        self,
        total_steps: int,
        *,
        workdir: str | os.PathLike | None = None,
        initial_step: int = 0,
        log_every: int = 50,
        images_per_step: int = 0,
        is_main: bool = True,
        bar: bool | None = None,
        stream: TextIO | None = None,
    ):
        self.total_steps, self.log_every = total_steps, max(1, log_every)
        self.images_per_step, self.is_main = images_per_step, is_main
        self.stream = stream or sys.stdout
        self.path = os.path.join(os.fspath(workdir), "metrics.jsonl") if workdir else None
        if self.path and is_main:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            _cut_back(self.path, initial_step)
        self._last_time = time.perf_counter()
        self._last_step = initial_step
        self._bar = None
        if is_main and (bar if bar is not None else _use_bar(sys.stderr)):
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total_steps, initial=initial_step, dynamic_ncols=True)

    def should_log(self, step: int) -> bool:
        """Whether ``step`` is a logging step (pull metrics off the device only then)."""
        return step % self.log_every == 0 or step == self.total_steps

    def step(self, step: int, metrics: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
        """Marks ``step`` done; on logging steps ``metrics`` (device or host scalars) are logged
        with throughput and the record is returned."""
        if self._bar is not None:
            self._bar.update(step - self._bar.n)
        if metrics is None or not self.should_log(step):
            return None
        now = time.perf_counter()
        record: dict[str, Any] = {"step": step}
        record.update({k: _to_float(v) for k, v in metrics.items()})
        steps = step - self._last_step
        if steps > 0 and self.images_per_step:
            dt = now - self._last_time
            record["img_per_s"] = steps * self.images_per_step / dt if dt > 0 else math.inf
            record["s_per_step"] = dt / steps
        self._last_time, self._last_step = now, step
        self.log(record, kind="train")
        if self._bar is not None:
            self._bar.set_postfix(
                {k: f"{v:.4g}" for k, v in record.items() if k in ("loss", "curv", "img_per_s")}
            )
        return record

    def log(self, record: Mapping[str, Any], kind: str = "train") -> None:
        """Prints a line and appends ``{"kind": kind, **record}`` to ``metrics.jsonl``."""
        if not self.is_main:
            return
        record = {
            "kind": kind,
            **{k: _to_float(v) if not isinstance(v, str) else v for k, v in record.items()},
        }
        line = f"[{kind}] " + " ".join(
            _fmt(k, v) for k, v in record.items() if k != "kind" and np.ndim(v) == 0
        )
        if self._bar is not None:
            self._bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)
        if self.path:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")

    def reset_timer(self, step: int) -> None:
        """Restarts throughput timing at ``step`` (e.g. after an evaluation pause)."""
        self._last_time, self._last_step = time.perf_counter(), step

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _cut_back(path: str, step: int) -> None:
    """Rewrites the JSON lines file ``path`` (atomically) with only its complete records whose
    ``step`` is at most ``step``; records without a step (evaluations) are dropped too."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        lines = f.readlines()
    kept = []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # the last line of a run killed while writing it
            continue
        if isinstance(record, dict) and record.get("step", math.inf) <= step:
            kept.append(line if line.endswith("\n") else line + "\n")
    if kept != lines:
        write_text(path, "".join(kept))


def read_metrics(workdir: str | os.PathLike, kind: str | None = None) -> list[dict[str, Any]]:
    """The records of ``<workdir>/metrics.jsonl`` (optionally only one ``kind``)."""
    path = os.path.join(os.fspath(workdir), "metrics.jsonl")
    with open(path) as f:
        records = [json.loads(line) for line in f if line.strip()]
    return [r for r in records if kind is None or r.get("kind") == kind]
