"""Pretrain CLIP or MERU: ``python -m experiments.pretrain --config=PATH.py:ARG --workdir=DIR``.

Examples::

    python -m experiments.pretrain --config=experiments/configs/pretrain.py:meru --workdir=runs/meru
    python -m experiments.pretrain --config=experiments/configs/pretrain.py:clip,smoke \\
        --workdir=/tmp/clip_smoke --config.total_steps=10 --config.optim.lr=3e-4

Running it again with the same ``--workdir`` resumes from the newest checkpoint, also after the
run was killed (SIGKILL included) at any moment. Configuration errors (unknown key or model,
missing data directory, inconsistent process settings, ...) are reported in one line, with exit
status 2, before anything is trained. Several JAX processes run the same command (README "Many
hosts"); only process 0 prints and writes logs, reports and the export.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from hac_jax.config_utils import enable_compilation_cache, parse_command_line


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    enable_compilation_cache()
    from hac_jax.training import pretrain, sharding

    try:
        config, flags = parse_command_line(argv, required=("workdir",), stop_after=0)
        job = pretrain.prepare(config, flags["workdir"])
    except (ValueError, FileNotFoundError, NotADirectoryError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    result = pretrain.run(job, stop_after=flags["stop_after"] or None)
    if sharding.is_main_process():
        print(f"[train] done: step {result.step}, workdir {job.workdir}", flush=True)
        if result.export_dir:
            print(f"[train] pretrained model: {result.export_dir}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
