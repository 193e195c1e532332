"""Unlearn concepts from a pretrained model with several methods and seeds, audit, report.

Example::

    python -m experiments.unlearn --config=experiments/configs/unlearn.py:meru \\
        --config.pretrained=runs/meru_fmnist/pretrained --config.forget=sneaker \\
        --config.methods=retrain,hac,ac,ft --config.seeds=0,1,2 --workdir=runs/unlearn_meru

``config.forget`` is one forget set (``sneaker,trouser``) or several separated by ``;`` (E2).
Every row of ``config.methods`` is a registered method, a variant of one (``config.variants``,
E3's ablations), or ``retrain``: the pretraining recipe of the original model run from scratch
on the retain classes (``config.retrain``; trained once and cached, then reused). Every row
starts from the same pretrained parameters and runs once per seed (the same seeds for every
row); ``original`` (no unlearning) is audited once per forget set.

Each finished (forget set, row, seed) run is stored at once in the run cache
(``config.cache_dir``, keyed by everything that determines it), so an interrupted command loses
nothing and other experiments that need the same run reuse it. At the end ``results.json`` (the
schema read by :mod:`hac_jax.report`), ``arrays/*.npz`` and a report (``report/report.md``,
``report.json``, plots) are written atomically to the workdir and the table is printed.

Bad input (unknown concept or method, empty forget set, one covering every class, a missing
model, a method not defined on the model's geometry, retrain without a pretraining config) is
reported in one line with exit status 2 before any unlearning step runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import time
from collections.abc import Sequence
from typing import Any

from hac_jax.config_utils import enable_compilation_cache, parse_command_line
from hac_jax.files import atomic_path, write_text

# Row settings that are arguments of the unlearning loop; all others configure the method.
LOOP_KEYS = ("lr", "steps", "batch_size", "forget_fraction")
# Bump when the audit's metrics change, so cached runs are recomputed.
AUDIT_VERSION = 2


@dataclasses.dataclass(frozen=True)
class Row:
    """One row of the results: a method with its settings (``method == "retrain"``: see module
    docstring; ``"original"``: no unlearning)."""

    name: str
    method: str
    method_cfg: dict[str, Any]
    loop: dict[str, Any]


@dataclasses.dataclass
class Job:
    """Everything checked and loaded before compute."""

    config: Any
    workdir: str
    pretrained: Any
    data: Any
    forget_sets: list[list[str]]
    forget_ids: list[tuple[int, ...]]
    rows: list[Row]
    seeds: list[int]
    retrain_config: Any
    model_hash: str = ""


def split_list(text: Any, sep: str = ",") -> list[str]:
    """``"a, b,,c" -> ["a", "b", "c"]``."""
    return [t.strip() for t in str(text or "").split(sep) if t.strip()]


def slug(names: Sequence[str]) -> str:
    """A file-name-safe name of a forget set: ``["t-shirt/top", "bag"] -> "t-shirt-top+bag"``."""
    return "+".join(re.sub(r"[^a-z0-9]+", "-", n.lower()).strip("-") for n in names)


def _plain(value: Any) -> Any:
    return value.to_dict() if hasattr(value, "to_dict") else value


def build_rows(config: Any) -> list[Row]:
    """The rows of ``config.methods`` with their method settings and loop arguments.

    Loop arguments default to ``config.steps/lr/batch_size``; ``config.method_overrides[name]``
    (keyed by the registered method) and a variant's own entries override them and the
    method's registry defaults, in that order.
    """
    from hac_jax.unlearning import get_method, list_methods

    names = split_list(config.methods)
    if not names:
        raise ValueError("no methods given; set --config.methods=NAME[,NAME...]")
    if len(set(names)) != len(names):
        raise ValueError(f"--config.methods names a row twice: {names}")
    variants = _plain(config.get("variants")) or {}
    overrides = _plain(config.get("method_overrides")) or {}
    known = sorted(set(list_methods()) | set(variants))
    rows = []
    for name in names:
        spec = dict(variants.get(name, {}))
        method = spec.pop("method", name)
        if method not in list_methods():
            raise ValueError(f"unknown method {name!r}; choose from {known}")
        settings = {**dict(overrides.get(method, {})), **spec}
        loop = {
            "lr": float(config.lr),
            "steps": int(config.steps),
            "batch_size": int(config.batch_size),
            "forget_fraction": None,
        }
        loop.update({k: v for k, v in settings.items() if k in LOOP_KEYS})
        method_cfg = {k: v for k, v in settings.items() if k not in LOOP_KEYS}
        if method != "retrain":
            get_method(method).config(**method_cfg)  # unknown keys / bad values: one line
            for key in ("steps", "batch_size"):
                if int(loop[key]) <= 0:
                    raise ValueError(f"{name}: {key} must be positive, got {loop[key]!r}")
            if not float(loop["lr"]) > 0:
                raise ValueError(f"{name}: lr must be positive, got {loop['lr']}")
        rows.append(Row(name, method, method_cfg, loop))
    return rows


def _retrain_base_config(config: Any) -> Any:
    """The pretraining config Retrain repeats: ``config.retrain.config`` or the
    ``config.json`` beside the pretrained export (what ``experiments.pretrain`` writes)."""
    import ml_collections

    path = config.retrain.config or os.path.join(
        os.path.dirname(os.path.abspath(str(config.pretrained).rstrip("/"))), "config.json"
    )
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"retrain needs the pretraining config of the model; {path!r} does not exist "
            "(set --config.retrain.config=CONFIG.json)"
        )
    with open(path) as f:
        base = ml_collections.ConfigDict(json.load(f))
    with base.unlocked():
        base.data.exclude_classes = ""
    return base


def prepare(config: Any, workdir: str) -> Job:
    """Checks the config, loads the model and data; raises a one-line error on bad input."""
    from hac_jax.unlearning import get_method

    rows = build_rows(config)
    forget_sets = [split_list(s) for s in str(config.forget or "").split(";")]
    forget_sets = [s for s in forget_sets if s]
    if not forget_sets:
        raise ValueError("the forget set is empty; set --config.forget=CONCEPT[,CONCEPT...]")
    try:
        seeds = [int(s) for s in split_list(config.seeds)]
    except ValueError:
        raise ValueError(f"seeds must be integers, got {config.seeds!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct integers, got {config.seeds!r}")
    if not config.pretrained:
        raise ValueError("no pretrained model; set --config.pretrained=DIR_OR_PTH")
    if not os.path.exists(config.pretrained):
        raise FileNotFoundError(f"pretrained model {config.pretrained!r} does not exist")
    workdir = os.path.abspath(workdir)
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise NotADirectoryError(f"workdir {workdir!r} is a file")
    retrain_config = None
    if any(r.method == "retrain" for r in rows):
        retrain_config = _retrain_base_config(config)

    from hac_jax import data as hdata

    data = hdata.load_data(config.data)
    hierarchy = data.hierarchy
    forget_ids = []
    for names in forget_sets:
        for name in names:
            hierarchy.lookup(name)  # a one-line ValueError naming the known concepts
        ids = tuple(sorted(hierarchy.class_ids(names)))
        if len(ids) == hierarchy.num_classes:
            raise ValueError(
                f"the forget set {names} covers all {hierarchy.num_classes} classes; "
                "nothing would be retained"
            )
        forget_ids.append(ids)

    from hac_jax.models import build_model
    from hac_jax.models.pretrained import load_pretrained

    pre = load_pretrained(config.pretrained)
    if pre.config.kind != config.model:
        raise ValueError(
            f"the pretrained model is {pre.config.kind!r} but the config says {config.model!r}; "
            f"use unlearn.py:{pre.config.kind}"
        )
    geometry = pre.config.geometry
    model = build_model(pre.config)
    for row in rows:
        if row.method != "retrain":
            m = get_method(row.method)
            m.bind(model=model, geometry=geometry, cfg=m.config(**row.method_cfg))
    if retrain_config is not None and retrain_config.model.kind != pre.config.kind:
        raise ValueError(
            f"the retrain config trains a {retrain_config.model.kind!r} model, not "
            f"{pre.config.kind!r}; set --config.retrain.config"
        )
    return Job(
        config,
        workdir,
        pre,
        data,
        forget_sets,
        forget_ids,
        rows,
        seeds,
        retrain_config,
        model_fingerprint(pre.params, pre.config),
    )


# ----------------------------------------------------------------------------------------------
# Runs and their cache
# ----------------------------------------------------------------------------------------------


def model_fingerprint(params: Any, model_cfg: Any) -> str:
    """SHA-256 over a model's config and parameter values (names, dtypes, shapes, bytes): the
    same model keeps its cached runs however its files were written; a changed one gets new
    runs."""
    import jax
    import numpy as np

    h = hashlib.sha256(repr(model_cfg).encode())
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    for path, leaf in sorted(leaves, key=lambda kv: jax.tree_util.keystr(kv[0])):
        arr = np.ascontiguousarray(np.asarray(leaf))
        h.update(f"{jax.tree_util.keystr(path)}|{arr.dtype}|{arr.shape}".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def run_key(job: Job, row: Row, forget_ids: Sequence[int], seed: int) -> str:
    """Hash of everything that determines one run's results."""
    spec = {
        "audit": AUDIT_VERSION,
        "model": job.model_hash,
        "data": _plain(job.config.data),
        "eval": _plain(job.config.eval),
        "forget": list(forget_ids),
        "method": row.method,
        "method_cfg": row.method_cfg,
        "loop": row.loop if row.method not in ("original", "retrain") else None,
        "retrain": _plain(job.retrain_config) if row.method == "retrain" else None,
        "seed": seed if row.method != "original" else 0,
    }
    text = json.dumps(spec, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _cache_dir(job: Job) -> str:
    d = job.config.cache_dir
    return os.path.abspath(d) if d else os.path.join(job.workdir, "cache")


def _retrain(job: Job, names: Sequence[str], seed: int) -> tuple[Any, dict[str, Any]]:
    """Retrain on the retain classes with the pretraining recipe; returns the parameters and
    their cost. The run lives in ``<retrain.dir>/<kind>_<forget>_s<seed>_<key>``, ``key`` the
    fingerprint of everything that determines it (:func:`hac_jax.training.pretrain.run_fingerprint`:
    settings, classes, data, compiled step), so a finished Retrain is reused exactly when it is
    the same computation, and an interrupted one resumes from its checkpoints."""
    from hac_jax.models.pretrained import load_pretrained
    from hac_jax.training import pretrain

    cfg = job.retrain_config.copy_and_resolve_references()
    with cfg.unlocked():
        cfg.seed = int(seed)
        cfg.data.exclude_classes = ",".join(names)
        cfg.eval.zero_shot = False  # the audit evaluates it
    kind = job.pretrained.config.kind
    root = os.path.abspath(job.config.retrain.dir or os.path.join(job.workdir, "retrain"))
    tjob = pretrain.prepare(cfg, os.path.join(root, "_pending"))
    key = pretrain.run_fingerprint(tjob)["key"]
    workdir = os.path.join(root, f"{kind}_{slug(names)}_s{seed}_{key[:12]}")
    tjob.workdir = workdir
    export = os.path.join(workdir, "pretrained")
    cost_path = os.path.join(workdir, "cost.json")
    if not os.path.exists(cost_path):
        print(f"[unlearn] retrain {kind} without {names}, seed {seed}: {workdir}", flush=True)
        t0 = time.perf_counter()
        pretrain.run(tjob)
        examples = int(cfg.total_steps) * int(cfg.batch_size)
        cost = {
            "steps": int(cfg.total_steps),
            "examples": examples,
            "forward_examples": examples,
            "backward_examples": examples,
            "seconds": time.perf_counter() - t0,
        }
        write_text(cost_path, json.dumps(cost) + "\n")
    with open(cost_path) as f:
        cost = json.load(f)
    return load_pretrained(export).params, cost


def run_one(job: Job, row: Row, k: int, seed: int) -> dict[str, Any]:
    """One (forget set, row, seed) run, from the cache or computed and then cached."""
    import numpy as np

    from hac_jax.eval.audit import audit_model
    from hac_jax.eval.metrics import to_jsonable
    from hac_jax.unlearning.loop import unlearn

    names, ids = job.forget_sets[k], job.forget_ids[k]
    key = run_key(job, row, ids, seed)
    cache = _cache_dir(job)
    rec_path, arr_path = os.path.join(cache, f"{key}.json"), os.path.join(cache, f"{key}.npz")
    if os.path.exists(rec_path) and os.path.exists(arr_path):
        with open(rec_path) as f:
            rec = json.load(f)
        print(f"[unlearn] cached: {row.name} on {names}, seed {seed}", flush=True)
        return {**rec, "row": row.name, "_arrays": arr_path}
    pre = job.pretrained
    print(f"[unlearn] {row.name} on {names}, seed {seed}", flush=True)
    if row.method == "original":
        params, cost = pre.params, {"steps": 0, "examples": 0, "seconds": 0.0}
    elif row.method == "retrain":
        params, cost = _retrain(job, names, seed)
    else:
        res = unlearn(
            pre.params,
            pre.config,
            job.data,
            method=row.method,
            forget_classes=ids,
            method_cfg=row.method_cfg,
            steps=int(row.loop["steps"]),
            batch_size=int(row.loop["batch_size"]),
            lr=float(row.loop["lr"]),
            forget_fraction=row.loop["forget_fraction"],
            seed=seed,
            log_every=max(1, int(row.loop["steps"]) // 4),
        )
        params = res.params
        cost = {
            "steps": int(res.steps),
            "examples": int(res.steps) * int(row.loop["batch_size"]),
            "seconds": float(res.seconds),
        }
    t0 = time.perf_counter()
    result = audit_model(
        pre.model,
        params,
        pre.config,
        job.data,
        ids,
        batch_size=int(job.config.eval.batch_size),
        seed=0,
    )
    rec = {
        "forget": list(names),
        "forget_class_ids": list(ids),
        "method": row.method,
        "method_cfg": row.method_cfg,
        "loop": row.loop if row.method not in ("original", "retrain") else None,
        "seed": seed if row.method != "original" else 0,
        "metrics": to_jsonable(result.metrics),
        **cost,
        "audit_seconds": time.perf_counter() - t0,
    }
    os.makedirs(cache, exist_ok=True)
    with atomic_path(arr_path, suffix=".npz") as tmp:
        np.savez_compressed(tmp, **result.arrays)
    write_text(rec_path, json.dumps(rec, indent=1) + "\n")
    return {**rec, "row": row.name, "_arrays": arr_path}


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "n/a"
    return str(value) if isinstance(value, int) else f"{value:.3f}"


def run(job: Job) -> dict[str, Any]:
    """Every (forget set, row, seed) run, then ``results.json``, arrays and the report."""
    from hac_jax import report

    original = Row("original", "original", {}, {})
    runs = []
    for k in range(len(job.forget_sets)):
        runs.append(run_one(job, original, k, 0))
        for row in job.rows:
            for seed in job.seeds:
                runs.append(run_one(job, row, k, seed))
    arrays_dir = os.path.join(job.workdir, "arrays")
    os.makedirs(arrays_dir, exist_ok=True)
    out_runs = []
    for r in runs:
        name = f"{r['row']}__{slug(r['forget'])}__s{r['seed']}.npz"
        shutil.copyfile(r["_arrays"], os.path.join(arrays_dir, name))
        recorded = {k: v for k, v in r.items() if k != "_arrays"}
        out_runs.append(report.make_run(**(recorded | {"arrays": f"arrays/{name}"})))
    results = report.make_results(
        model=job.pretrained.config.kind,
        class_names=list(job.data.hierarchy.classes),
        runs=out_runs,
        pretrained=os.path.abspath(str(job.config.pretrained)),
        config=job.config.to_dict(),
        seeds=job.seeds,
        forget_sets=job.forget_sets,
    )
    path = os.path.join(job.workdir, "results.json")
    report.write_results(path, results)
    if job.config.report:
        columns = split_list(job.config.get("report_columns")) or report.DEFAULT_COLUMNS
        paths = report.write_report(
            [path],
            os.path.join(job.workdir, "report"),
            title=str(job.config.title),
            columns=tuple(columns),
        )
        with open(paths["markdown"]) as f:
            print(f.read(), flush=True)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    enable_compilation_cache()
    try:
        config, flags = parse_command_line(argv, required=("workdir",))
        job = prepare(config, flags["workdir"])
    except (ValueError, FileNotFoundError, NotADirectoryError) as e:
        msg = str(e).splitlines()[0] if str(e) else repr(e)
        print(f"error: {msg}", file=sys.stderr)
        return 2
    run(job)
    print(f"[unlearn] results: {os.path.join(job.workdir, 'results.json')}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
