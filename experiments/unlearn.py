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

The same command runs as several JAX processes (``config.distributed``, README "Many hosts"):
every unlearning and Retrain run is computed by all of them together (each reads its share of
every batch), process 0 decides which runs are cached and alone audits, writes the cache, the
results and the report, and prints.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Sequence
from typing import Any

from hac_jax.config_utils import enable_compilation_cache, parse_command_line
from hac_jax.data.forget import forget_slug as slug
from hac_jax.files import atomic_path, write_json, write_text

# Row settings that are arguments of the unlearning loop; all others configure the method.
LOOP_KEYS = ("lr", "steps", "batch_size", "forget_fraction")
# The code that computes an unlearned model and the code that audits one (packages or modules):
# their fingerprints (hac_jax.fingerprint.code_fingerprint) are part of the cache keys, so a
# change of what runs recomputes what it affects, and every run records them.
CODE = {
    "unlearn": (
        "hac_jax.unlearning",
        "hac_jax.models",
        "hac_jax.geometry",
        "hac_jax.training",
        "hac_jax.data.base",
        "hac_jax.data.captions",
        "hac_jax.data.forget",
        "hac_jax.data.loader",
        "hac_jax.tokenizer",
    ),
    "audit": (
        "hac_jax.eval",
        "hac_jax.models",
        "hac_jax.geometry",
        "hac_jax.data.base",
        "hac_jax.data.captions",
        "hac_jax.data.forget",
        "hac_jax.data.loader",
        "hac_jax.tokenizer",
    ),
}


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
    forget: list[Any] = dataclasses.field(default_factory=list)  # hac_jax.data.ForgetSet each
    data_hash: str = ""
    code: dict[str, str] = dataclasses.field(default_factory=dict)  # CODE part -> fingerprint


def split_list(value: Any, sep: str = ",") -> list[Any]:
    """A config list as a list: a list or tuple as it is (empty text items dropped), text split
    at ``sep``: ``"a, b,,c" -> ["a", "b", "c"]``."""
    if isinstance(value, (list, tuple)):
        return [v.strip() if isinstance(v, str) else v for v in value if v != ""]
    return [t.strip() for t in str(value or "").split(sep) if t.strip()]


def forget_sets_of(value: Any) -> list[list[str]]:
    """``config.forget`` as forget sets: a list of lists of concepts, or text with ``;`` between
    sets and ``,`` between concepts; empty sets dropped."""
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        sets = [split_list(value)]  # one set given as a flat list of concepts
    elif isinstance(value, (list, tuple)):
        sets = [split_list(s) for s in value]
    else:
        sets = [split_list(s) for s in str(value or "").split(";")]
    return [[str(c) for c in s] for s in sets if s]


def _plain(value: Any) -> Any:
    return value.to_dict() if hasattr(value, "to_dict") else value


def build_rows(config: Any) -> list[Row]:
    """The rows of ``config.methods`` with their method settings and loop arguments.

    Loop arguments default to ``config.steps/lr/batch_size``, then to the method's registered
    loop settings (a tuned method's ``lr`` and ``steps``); ``config.method_overrides[name]``
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
        loop.update(get_method(method).loop)  # a tuned method's lr and steps (Retrain: none)
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
    forget_sets = forget_sets_of(config.forget)
    if not forget_sets:
        raise ValueError("the forget set is empty; set --config.forget=CONCEPT[,CONCEPT...]")
    seeds = split_list(config.seeds)
    if not all(isinstance(s, int) and not isinstance(s, bool) or str(s).isdigit() for s in seeds):
        raise ValueError(f"seeds must be integers, got {config.seeds!r}")
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct integers, got {config.seeds!r}")
    if not config.pretrained:
        raise ValueError("no pretrained model; set --config.pretrained=DIR_OR_PTH")
    if not os.path.exists(config.pretrained):
        raise FileNotFoundError(f"pretrained model {config.pretrained!r} does not exist")
    workdir = os.path.abspath(workdir)
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise NotADirectoryError(f"workdir {workdir!r} is a file")
    from experiments.configs.common import set_switches

    switches = set_switches(config.get("model_switches"))  # the model's compute switches
    retrain_config = None
    if any(r.method == "retrain" for r in rows):
        retrain_config = _retrain_base_config(config)
        with retrain_config.unlocked():  # Retrain computes as the unlearned models do
            retrain_config.model.update(switches)

    from hac_jax import data as hdata
    from hac_jax.training import sharding

    group_captions = str(config.get("group_captions", "exclude"))
    if group_captions not in hdata.GROUP_CAPTION_POLICIES:
        raise ValueError(
            f"group_captions must be one of {hdata.GROUP_CAPTION_POLICIES}, got {group_captions!r}"
        )
    sharding.maybe_initialize_distributed(**sharding.distributed_options(config))
    data = sharding.main_process_first(
        "unlearn: data prepared", lambda: hdata.load_data(config.data)
    )
    # built and checked once: known names, at least one class, not every class
    forget = [hdata.ForgetSet.of(data.hierarchy, names) for names in forget_sets]
    forget_ids = [fs.class_ids for fs in forget]

    from hac_jax.models import build_model
    from hac_jax.models.pretrained import load_pretrained

    pre = load_pretrained(config.pretrained, **switches)
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
    from hac_jax import fingerprint

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
        forget=forget,
        data_hash=fingerprint.data_fingerprint(data),
        code={part: fingerprint.code_fingerprint(*mods) for part, mods in CODE.items()},
    )


# ----------------------------------------------------------------------------------------------
# Runs and their cache
# ----------------------------------------------------------------------------------------------


def model_fingerprint(params: Any, model_cfg: Any) -> str:
    """A model's fingerprint: its config and parameter values
    (:func:`hac_jax.fingerprint.tree_fingerprint`), so the same model keeps its cached runs
    however its files were written, and a changed one gets new runs."""
    from hac_jax import fingerprint

    return fingerprint.combine(
        {"config": repr(model_cfg), "params": fingerprint.tree_fingerprint(params)}
    )


def resolved_settings(job: Job, row: Row, forget_ids: Sequence[int], seed: int) -> dict:
    """What determines an unlearned model besides the model, the data and the code: the method
    with every setting resolved (registry defaults included), the loop's settings, the caption
    policy, the forget set and the seed (``original``: nothing; ``retrain``: the pretraining
    recipe, keyed by :func:`hac_jax.training.pretrain.run_fingerprint` in its own cache)."""
    from hac_jax.unlearning import get_method
    from hac_jax.unlearning.loop import default_forget_fraction

    out: dict[str, Any] = {"method": row.method, "forget_class_ids": list(forget_ids)}
    if row.method == "original":
        return out
    out["seed"] = int(seed)
    if row.method == "retrain":
        return out
    method = get_method(row.method)
    loop = dict(row.loop)
    if loop.get("forget_fraction") is None:
        loop["forget_fraction"] = default_forget_fraction(method)
    out.update(
        method_cfg=method.config(**row.method_cfg).to_dict(),
        loop=loop,
        group_captions=str(job.config.get("group_captions", "exclude")),
    )
    return out


def audit_settings(job: Job) -> dict[str, Any]:
    """The audit's own settings (part of the audit's cache key)."""
    return {"batch_size": int(job.config.eval.batch_size), "seed": 0}


def model_key(job: Job, settings: dict[str, Any]) -> str:
    """Key of an unlearned model: its resolved settings, the starting parameters, the data's
    content and the code that computes it (:data:`CODE` ``["unlearn"]``)."""
    from hac_jax import fingerprint

    return fingerprint.combine(
        {
            "settings": settings,
            "model": job.model_hash,
            "data": job.data_hash,
            "code": job.code["unlearn"],
        }
    )


def audit_key(job: Job, params_hash: str, forget_ids: Sequence[int]) -> str:
    """Key of an audit: the audited parameters, the forget set, the data, the audit's settings
    and code (:data:`CODE` ``["audit"]``)."""
    from hac_jax import fingerprint

    return fingerprint.combine(
        {
            "params": params_hash,
            "model_config": repr(job.pretrained.config),
            "forget_class_ids": list(forget_ids),
            "data": job.data_hash,
            "audit": audit_settings(job),
            "code": job.code["audit"],
        }
    )


def _cache_dir(job: Job) -> str:
    d = job.config.cache_dir
    return os.path.abspath(d) if d else os.path.join(job.workdir, "cache")


def _cached_by_main(name: str, record_path: str) -> bool:
    """Whether a finished run's record exists, as process 0 sees it; every process gets the
    same answer (:func:`hac_jax.training.sharding.main_decides`), so all compute or none."""
    from hac_jax.training import sharding

    found = sharding.main_decides(name, lambda: str(os.path.exists(record_path)))
    return found == "True"


def _retrain(job: Job, names: Sequence[str], seed: int) -> tuple[Any, dict[str, Any]] | None:
    """Retrain on the retain classes with the pretraining recipe; returns the parameters and
    their cost (in process 0; ``None`` in the others, which only take part in training). The
    run lives in ``<retrain.dir>/<kind>_<forget>_s<seed>_<key>``, ``key`` the
    fingerprint of everything that determines it (:func:`hac_jax.training.pretrain.run_fingerprint`:
    settings, classes, data, compiled step), so a finished Retrain is reused exactly when it is
    the same computation, and an interrupted one resumes from its checkpoints."""
    from hac_jax.models.pretrained import load_pretrained
    from hac_jax.training import pretrain, sharding

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
    main = sharding.is_main_process()
    if not _cached_by_main(f"unlearn: {workdir}", cost_path):
        if main:
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
        if main:
            write_text(cost_path, json.dumps(cost) + "\n")
    if not main:
        return None
    with open(cost_path) as f:
        cost = json.load(f)
    return load_pretrained(export).params, cost


def _unlearned_model(
    job: Job, row: Row, k: int, seed: int, settings: dict[str, Any]
) -> tuple[Any, dict[str, Any]] | None:
    """The parameters of one (forget set, row, seed) and their cost record, from the model cache
    (``<cache_dir>/models/<...>_<key>``, a directory ``load_pretrained`` reads) or computed (by
    every process; ``None`` in all but process 0)."""
    from hac_jax.models.pretrained import load_pretrained, save_pretrained
    from hac_jax.training import sharding
    from hac_jax.unlearning.loop import unlearn

    names, pre = job.forget_sets[k], job.pretrained
    if row.method == "original":
        if not sharding.is_main_process():
            return None
        return pre.params, {"steps": 0, "examples": 0, "seconds": 0.0, "passes": {}}
    if row.method == "retrain":
        retrained = _retrain(job, names, seed)
        if retrained is None:
            return None
        params, cost = retrained
        examples = int(cost.get("examples", 0))
        passes = {"forward_examples": examples, "backward_examples": examples}
        return params, {**cost, "passes": cost.get("passes", passes)}
    key = model_key(job, settings)
    model_dir = os.path.join(
        _cache_dir(job), "models", f"{pre.config.kind}_{slug(names)}_{row.name}_s{seed}_{key[:16]}"
    )
    record_path = os.path.join(model_dir, "run.json")
    main = sharding.is_main_process()
    if _cached_by_main(f"unlearn: {key}", record_path):
        if not main:
            return None
        with open(record_path) as f:
            cost = json.load(f)["cost"]
        print(f"[unlearn] cached model: {row.name} on {names}, seed {seed}", flush=True)
        return load_pretrained(model_dir).params, cost
    if main:
        print(f"[unlearn] {row.name} on {names}, seed {seed}", flush=True)
    res = unlearn(
        pre.params,
        pre.config,
        job.data,
        method=row.method,
        forget_classes=job.forget[k],
        method_cfg=settings["method_cfg"],
        steps=int(row.loop["steps"]),
        batch_size=int(row.loop["batch_size"]),
        lr=float(row.loop["lr"]),
        forget_fraction=settings["loop"]["forget_fraction"],
        group_captions=settings["group_captions"],
        seed=seed,
        log_every=max(1, int(row.loop["steps"]) // 4),
    )
    cost = {
        "steps": int(res.steps),
        "examples": int(res.steps) * int(row.loop["batch_size"]),
        "seconds": float(res.seconds),
        "passes": res.passes,
    }
    params = sharding.host_values(res.params)  # a collective with several processes
    if not main:
        return None
    save_pretrained(model_dir, params, pre.config, overwrite=True, info={"key": key})
    write_json(record_path, {"key": key, "settings": settings, "cost": cost})
    return params, cost


def run_one(job: Job, row: Row, k: int, seed: int) -> dict[str, Any] | None:
    """One (forget set, row, seed) run: the unlearned model (cached by :func:`model_key`), then
    its audit (cached by :func:`audit_key`); returns the run's record (``None`` in processes
    other than 0: they take part in computing the model only)."""
    import numpy as np

    from hac_jax import fingerprint
    from hac_jax.eval.audit import audit_model
    from hac_jax.eval.metrics import to_jsonable

    names, ids = job.forget_sets[k], job.forget_ids[k]
    seed = seed if row.method != "original" else 0
    settings = resolved_settings(job, row, ids, seed)
    model = _unlearned_model(job, row, k, seed, settings)
    if model is None:
        return None
    params, cost = model
    params_hash = fingerprint.tree_fingerprint(params)
    key = audit_key(job, params_hash, ids)
    audits = os.path.join(_cache_dir(job), "audits")
    rec_path, arr_path = os.path.join(audits, f"{key}.json"), os.path.join(audits, f"{key}.npz")
    if os.path.exists(rec_path) and os.path.exists(arr_path):
        with open(rec_path) as f:
            audit = json.load(f)
    else:
        t0 = time.perf_counter()
        result = audit_model(
            job.pretrained.model,
            params,
            job.pretrained.config,
            job.data,
            job.forget[k].class_ids,
            batch_size=audit_settings(job)["batch_size"],
            seed=audit_settings(job)["seed"],
        )
        audit = {
            "metrics": to_jsonable(result.metrics),
            "audit_seconds": time.perf_counter() - t0,
        }
        os.makedirs(audits, exist_ok=True)
        with atomic_path(arr_path, suffix=".npz") as tmp:
            np.savez_compressed(tmp, **result.arrays)
        write_json(rec_path, audit)
    rec = {
        "forget": list(names),
        "forget_class_ids": list(ids),
        "row": row.name,
        "method": row.method,
        "seed": seed,
        "metrics": audit["metrics"],
        "steps": cost["steps"],
        "seconds": cost["seconds"],
        "examples": cost["examples"],
        "passes": cost.get("passes", {}),
        "method_cfg": settings.get("method_cfg", {}),
        "loop": settings.get("loop"),
        "settings": settings,
        "fingerprints": {
            "model": job.model_hash,
            "params": params_hash,
            "data": job.data_hash,
            **{f"{part}_code": value for part, value in job.code.items()},
            "audit": key,
        },
        "audit_seconds": audit["audit_seconds"],
    }
    return {**rec, "_arrays": arr_path}


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "n/a"
    return str(value) if isinstance(value, int) else f"{value:.3f}"


def code_revision() -> str:
    """The checkout's git commit (``+dirty`` when tracked files differ from it), or
    ``"unknown"`` outside a git checkout."""
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(
            ["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def versus_retrain(runs: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Forget quality against Retrain (docs/METHOD.md, Metrics), added to each run as
    ``vs_retrain`` where a Retrain run of the same forget set and seed exists: the KS distance
    of the per-pair forget scores (``ks_forget_score``: raw similarities, on each model's own
    scale) and of the ranks of the true class (``ks_forget_rank``: the same scale for every
    model), the total-variation distance of where
    the forgotten test images go (``tv_destination``). Returns the yardstick per forget set
    (``slug -> {"ks_forget_score", "tv_destination", "pairs"}``): the same distances between
    Retrain runs of different seeds, averaged over seed pairs (absent with one Retrain seed)."""
    import itertools

    import numpy as np

    from hac_jax.eval.metrics import REFERENCE_ARRAYS
    from hac_jax.eval.metrics import distances_to_reference as distances

    def arrays(run):
        with np.load(run["_arrays"]) as z:
            return {k: z[k] for k in REFERENCE_ARRAYS}

    retrain = {(tuple(r["forget"]), r["seed"]): r for r in runs if r["method"] == "retrain"}
    loaded = {key: arrays(r) for key, r in retrain.items()}
    for r in runs:
        ref = (tuple(r["forget"]), r["seed"])
        if r["method"] != "retrain" and ref in loaded and r["method"] != "original":
            r["vs_retrain"] = distances(arrays(r), loaded[ref])
    yardstick = {}
    for forget in sorted({f for f, _ in loaded}):
        seeds = sorted(s for f, s in loaded if f == forget)
        pairs = [
            distances(loaded[(forget, a)], loaded[(forget, b)])
            for a, b in itertools.combinations(seeds, 2)
        ]
        if pairs:
            yardstick[slug(forget)] = {
                name: float(np.mean([p[name] for p in pairs])) for name in pairs[0]
            } | {"pairs": len(pairs)}
    return yardstick


def run(job: Job) -> dict[str, Any]:
    """Every (forget set, row, seed) run, then ``results.json``, arrays and the report (process
    0; the others return ``{}`` once it has written them)."""
    from hac_jax import report
    from hac_jax.training import sharding

    original = Row("original", "original", {}, {})
    runs = []
    for k in range(len(job.forget_sets)):
        runs.append(run_one(job, original, k, 0))
        for row in job.rows:
            for seed in job.seeds:
                runs.append(run_one(job, row, k, seed))
    if not sharding.is_main_process():
        sharding.sync_processes("unlearn: results written")
        return {}
    yardstick = versus_retrain(runs)
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
        code_revision=code_revision(),
        data_settings=_plain(job.config.data),
        retrain_yardstick=yardstick,
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
    sharding.sync_processes("unlearn: results written")
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
    if run(job):
        print(f"[unlearn] results: {os.path.join(job.workdir, 'results.json')}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
