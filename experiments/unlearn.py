"""Unlearn concepts from a pretrained model with several methods and audit each result.

Example::

    python -m experiments.unlearn --config=experiments/configs/unlearn.py:meru \\
        --config.pretrained=runs/meru/pretrained --config.forget=sneaker \\
        --config.methods=ac,ft,ga --workdir=runs/unlearn_meru

Every method starts from the same pretrained parameters. The original model and each unlearned
one are audited (FA, UA, RA, TA, alignment gaps, MERU distances to the origin); ``results.json``
and ``results.md`` are written atomically to the workdir and the table is printed. Bad input
(unknown concept or method, empty forget set, one covering every class, a missing model, a
method not defined on the model's geometry) is reported in one line with exit status 2 before
any unlearning step runs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

from hac_jax.config_utils import parse_command_line

_COLUMNS = ("FA", "UA", "RA", "TA", "align_gap_forget", "align_gap_retain")
_MERU_COLUMNS = ("dist_origin_image_forget", "dist_origin_image_retain")
_ACCURACIES = ("FA", "UA", "RA", "TA")


@dataclasses.dataclass
class Job:
    """Everything checked and loaded before compute."""

    config: Any
    workdir: str
    pretrained: Any
    data: Any
    forget_names: list[str]
    forget_ids: tuple[int, ...]
    methods: list[str]


def _split_list(text: Any) -> list[str]:
    return [t.strip() for t in str(text or "").split(",") if t.strip()]


def _load_data(cfg: Any) -> Any:
    from hac_jax import data as hdata

    if cfg.name == "fashion_mnist":
        return hdata.prepare_fashion_mnist(
            cfg.source_dir, cfg.data_dir, max_examples=cfg.max_examples
        )
    if cfg.name == "shapes":
        s = cfg.shapes
        return hdata.prepare_shapes(
            cfg.data_dir,
            image_size=s.image_size,
            train_per_class=s.train_per_class,
            test_per_class=s.test_per_class,
            seed=s.seed,
        )
    raise ValueError(f"unknown data set {cfg.name!r}; choose fashion_mnist or shapes")


def prepare(config: Any, workdir: str) -> Job:
    """Checks the config, loads the model and data; raises a one-line error on bad input."""
    from hac_jax.geometry import get_geometry
    from hac_jax.unlearning import get_method, list_methods

    methods = _split_list(config.methods)
    if not methods:
        raise ValueError("no methods given; set --config.methods=NAME[,NAME...]")
    unknown = [m for m in methods if m not in list_methods()]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {list(list_methods())}")
    if len(set(methods)) != len(methods):
        raise ValueError(f"--config.methods names a method twice: {methods}")
    forget = _split_list(config.forget)
    if not forget:
        raise ValueError("the forget set is empty; set --config.forget=CONCEPT[,CONCEPT...]")
    if not config.pretrained:
        raise ValueError("no pretrained model; set --config.pretrained=DIR_OR_PTH")
    if not os.path.exists(config.pretrained):
        raise FileNotFoundError(f"pretrained model {config.pretrained!r} does not exist")
    workdir = os.path.abspath(workdir)
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise NotADirectoryError(f"workdir {workdir!r} is a file")
    for name in ("steps", "batch_size"):
        if int(config[name]) <= 0:
            raise ValueError(f"{name} must be a positive integer, got {config[name]!r}")
    if not config.lr > 0:
        raise ValueError(f"lr must be positive, got {config.lr}")

    data = _load_data(config.data)
    hierarchy = data.hierarchy
    for name in forget:
        hierarchy.lookup(name)  # a one-line ValueError naming the known concepts
    ids = tuple(sorted(hierarchy.class_ids(forget)))
    if len(ids) == hierarchy.num_classes:
        raise ValueError(
            f"the forget set {forget} covers all {hierarchy.num_classes} classes; "
            "nothing would be retained"
        )

    from hac_jax.models import build_model
    from hac_jax.models.pretrained import load_pretrained

    pre = load_pretrained(config.pretrained)
    if pre.config.kind != config.model:
        raise ValueError(
            f"the pretrained model is {pre.config.kind!r} but the config says {config.model!r}; "
            f"use unlearn.py:{pre.config.kind}"
        )
    geometry = get_geometry(pre.config.kind)
    model = build_model(pre.config)
    for name in methods:
        m = get_method(name)
        m.bind(model=model, geometry=geometry, cfg=m.config())  # raises on a foreign geometry
    return Job(config, workdir, pre, data, forget, ids, methods)


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, int):
        return str(value)
    return f"{value:.3f}"


def results_table(results: dict[str, Any], kind: str) -> str:
    """Markdown table of the audited rows (``original`` first, then each method)."""
    cols = list(_COLUMNS) + (list(_MERU_COLUMNS) if kind == "meru" else []) + ["steps", "seconds"]
    lines = ["| model | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, row in results["rows"].items():
        lines.append(f"| {name} | " + " | ".join(_fmt(row.get(c)) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def _write_atomic(path: str, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp_")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def run(job: Job) -> dict[str, Any]:
    """Unlearns with every method, audits, writes ``results.json`` / ``results.md``."""
    from hac_jax import audit
    from hac_jax.unlearning.loop import unlearn
    from hac_jax.unlearning_audit import audit_model

    cfg, pre = job.config, job.pretrained
    eval_bs = int(cfg.eval.batch_size)
    rows: dict[str, dict[str, Any]] = {}
    rows["original"] = {
        **audit_model(
            pre.model, pre.params, pre.config, job.data, job.forget_ids, batch_size=eval_bs
        ),
        "steps": 0,
        "seconds": 0.0,
    }
    for name in job.methods:
        res = unlearn(
            pre.params,
            pre.config,
            job.data,
            method=name,
            forget_classes=job.forget_ids,
            steps=int(cfg.steps),
            batch_size=int(cfg.batch_size),
            lr=float(cfg.lr),
            seed=int(cfg.seed),
            log_every=max(1, int(cfg.steps)),
        )
        metrics = audit_model(
            pre.model, res.params, pre.config, job.data, job.forget_ids, batch_size=eval_bs
        )
        rows[name] = {**metrics, "steps": int(res.steps), "seconds": float(res.seconds)}
    results = {
        "model": pre.config.kind,
        "pretrained": os.path.abspath(str(cfg.pretrained)),
        "forget": job.forget_names,
        "forget_class_ids": list(job.forget_ids),
        "methods": job.methods,
        "config": cfg.to_dict(),
        "rows": rows,
    }
    table = results_table(results, pre.config.kind)
    os.makedirs(job.workdir, exist_ok=True)
    _write_atomic(
        os.path.join(job.workdir, "results.json"),
        json.dumps(audit.to_jsonable(results), indent=2) + "\n",
    )
    _write_atomic(os.path.join(job.workdir, "results.md"), table)
    print(table, flush=True)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        config, flags = parse_command_line(argv, required=("workdir",))
        job = prepare(config, flags["workdir"])
    except (ValueError, FileNotFoundError, NotADirectoryError) as e:
        print(f"error: {str(e).splitlines()[0] if str(e) else e!r}", file=sys.stderr)
        return 2
    run(job)
    print(f"[unlearn] results: {os.path.join(job.workdir, 'results.json')}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
