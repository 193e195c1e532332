"""Hyper-parameter sweep of one unlearning method: how the defaults of AC and HAC were chosen.

Example (the sweeps behind the registry defaults, see ``docs/SWEEP.md``)::

    python -m experiments.sweep --config=experiments/configs/sweep.py:hac_meru \\
        --config.pretrained=runs/meru_fmnist/pretrained \\
        --config.retrain=runs/retrain/meru_sandal_s0_<key>/pretrained --workdir=runs/sweep_hac

Every point of the grid (the product of ``config.grid``'s value lists) is one unlearning run of
``max(config.eval_steps)`` steps from the same pretrained model, audited after each count in
``config.eval_steps`` (with the constant learning rate of the unlearning loop the parameters
after ``k`` steps are those of a ``k``-step run). Every measurement reads the **validation**
split carved from train (``config.data.val_fraction``), never the test split: the audit
(:func:`hac_jax.eval.audit.audit_model` with ``test_split="val"``) gives FA and RA on validation
images and the membership figures, and the per-pair forget scores are compared with those of
Retrain on the same concept and seed (``config.retrain``) by their KS distance. Each measured
point is appended to ``points.jsonl`` as soon as it exists, so an interrupted sweep resumes where
it stopped. At the end :func:`select` applies the documented rule and ``sweep.json`` /
``sweep.md`` are written atomically.

The sweep concepts (``config.forget``, default ``sandal``; ``coat`` and ``sandal,coat`` for
checks off the tuning point) are never reported: the reported lists are fixed in
``experiments/configs/unlearn.py`` (``E1_FORGET``, ``E2_FORGET``).
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from hac_jax.config_utils import enable_compilation_cache, parse_command_line
from hac_jax.report.tables import point_label

# Keys of a grid point that are arguments of the unlearning loop; all others configure the method.
LOOP_KEYS = ("lr", "batch_size", "forget_fraction")


def grid_points(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """The product of the value lists, in order: ``{"a": [1, 2], "b": [3]} -> [{a:1,b:3}, ...]``."""
    keys = list(grid)
    for k in keys:
        if isinstance(grid[k], (str, bytes)) or not len(grid[k]):
            raise ValueError(f"grid.{k} must be a non-empty list of values, got {grid[k]!r}")
    return [
        dict(zip(keys, values, strict=True))
        for values in itertools.product(*(grid[k] for k in keys))
    ]


def point_key(point: Mapping[str, Any]) -> str:
    """A stable text key of a grid point (used to resume)."""
    return json.dumps(dict(point), sort_keys=True)


# What step 2 of :func:`select` can minimise: a distance to Retrain and its name in the reason.
SELECT_BY = {
    "ks_forget_score": "forget-score KS",
    "ks_forget_rank": "forget-rank KS",
    "tv_destination": "destination TV",
}


def select(
    points: Sequence[Mapping[str, Any]],
    *,
    reference: Mapping[str, float],
    ra_tolerance: float,
    fa_tolerance: float,
    ks_tolerance: float,
    select_by: str = "ks_forget_score",
) -> tuple[dict[str, Any], str]:
    """The documented choice among measured points (each ``{"point", "steps", "FA", "RA",
    [distances to Retrain]}``, validation figures), against ``reference`` (Retrain's ``FA`` and
    ``RA`` on the same validation images; the original's RA and ``FA = 0`` without a Retrain):

    1. Admissible: ``RA >= RA_ref - ra_tolerance`` and ``FA <= FA_ref + fa_tolerance`` (what is
       retained stays, what is forgotten is forgotten at least as well as Retrain forgets it).
    2. Among them, the smallest distance to Retrain named by ``select_by`` (:data:`SELECT_BY`:
       the KS distance of the forget scores or of their ranks, or the TV distance of where the
       forgotten images go; the result looks like Retrain, not more forgotten); without
       Retrain figures, the smallest ``|FA - FA_ref|``.
    3. Among those within ``ks_tolerance`` (or ``fa_tolerance``) of that best: the fewest
       steps, then the smallest learning rate, then the highest RA.

    If no point is admissible the one with the highest RA is returned, and the reason says so.
    Returns ``(the chosen measured point, a one-line reason)``.
    """
    if not points:
        raise ValueError("no measured points to select from")
    if select_by not in SELECT_BY:
        raise ValueError(f"select_by must be one of {SELECT_BY}, got {select_by!r}")
    ra_min = reference["RA"] - ra_tolerance
    fa_max = reference["FA"] + fa_tolerance
    ok = [p for p in points if p["RA"] >= ra_min and p["FA"] <= fa_max]
    if not ok:
        best = max(points, key=lambda p: p["RA"])
        return dict(best), (
            f"no point keeps RA >= {ra_min:.3f} with FA <= {fa_max:.3f}; took the highest RA"
        )
    with_ks = all(p.get(select_by) is not None for p in ok)
    if with_ks:

        def distance(p):
            return p[select_by]

        what, tolerance = f"{SELECT_BY[select_by]} to Retrain", ks_tolerance
    else:

        def distance(p):
            return abs(p["FA"] - reference["FA"])

        what, tolerance = f"|FA - {reference['FA']:.3f}|", fa_tolerance
    gap = min(distance(p) for p in ok)
    near = [p for p in ok if distance(p) <= gap + tolerance]
    best = min(near, key=lambda p: (p["steps"], p["point"].get("lr", 0.0), -p["RA"]))
    return dict(best), (
        f"{len(ok)}/{len(points)} points keep RA >= {ra_min:.3f} with FA <= {fa_max:.3f}; best "
        f"{what} = {gap:.3f}; {len(near)} within {tolerance:.3f} of it; fewest steps, then "
        "smallest lr, then highest RA"
    )


# The validation figures of every measured point (sweep.json; the table is
# hac_jax.report.sweep_table).
MEASURED = ("FA", "RA", "mia_forget_nonmember", "mia_fit_balanced_acc", "cone_own_retain")


def _validation_audit(pre: Any, params: Any, data: Any, forget: Any, eval_bs: int) -> dict:
    """The audit of ``params`` on the validation split: :data:`MEASURED` figures and the arrays
    that are compared with Retrain's (``hac_jax.eval.metrics.REFERENCE_ARRAYS``)."""
    from hac_jax.eval.audit import audit_model

    audit = audit_model(
        pre.model,
        params,
        pre.config,
        data,
        forget.class_ids,
        batch_size=eval_bs,
        test_split="val",
    )
    from hac_jax.eval.metrics import REFERENCE_ARRAYS

    return {
        **{k: audit.metrics[k] for k in MEASURED},
        **{k: audit.arrays[k] for k in REFERENCE_ARRAYS},
    }


def run(config: Any, workdir: str) -> dict[str, Any]:
    """Runs (or resumes) the sweep; returns the summary written to ``sweep.json``."""
    from experiments.unlearn import split_list
    from hac_jax import data as hdata
    from hac_jax.eval.metrics import distances_to_reference
    from hac_jax.files import write_text
    from hac_jax.models.pretrained import load_pretrained
    from hac_jax.unlearning import get_method
    from hac_jax.unlearning.loop import unlearn

    # ---- checks before compute ----
    method = get_method(config.method)
    points = grid_points(config.grid.to_dict())
    base = dict(config.get("base") or {})  # the earlier stages' settings, under every point
    defaults = method.config()
    for key in [*points[0], *base]:
        if key not in LOOP_KEYS and key not in defaults:
            raise ValueError(
                f"grid or base key {key!r} is neither a loop argument {LOOP_KEYS} nor an "
                f"option of {config.method!r} ({sorted(defaults)})"
            )
    for point in points:  # every value checked by the method's own validation, up front
        method.config(**{k: v for k, v in {**base, **point}.items() if k not in LOOP_KEYS})
    select_by = str(config.get("select_by", "ks_forget_score"))
    if select_by not in SELECT_BY:
        raise ValueError(f"select_by must be one of {list(SELECT_BY)}, got {select_by!r}")
    eval_steps = sorted({int(s) for s in config.eval_steps})
    if not eval_steps or eval_steps[0] <= 0:
        raise ValueError(f"eval_steps must be positive step counts, got {config.eval_steps}")
    forget_names = split_list(config.forget)
    if not forget_names:
        raise ValueError("the forget set is empty; set --config.forget=CONCEPT")
    if not config.pretrained or not os.path.exists(config.pretrained):
        raise FileNotFoundError(f"pretrained model {config.pretrained!r} does not exist")
    if config.retrain and not os.path.exists(config.retrain):
        raise FileNotFoundError(f"retrain model {config.retrain!r} does not exist")
    if not float(config.data.val_fraction or 0) > 0:
        raise ValueError("the sweep reads the validation split: set config.data.val_fraction > 0")
    data = hdata.load_data(config.data)
    forget = hdata.ForgetSet.of(data.hierarchy, forget_names)
    pre = load_pretrained(config.pretrained)
    method.bind(model=pre.model, geometry=pre.config.geometry, cfg=defaults)
    retrain = load_pretrained(config.retrain) if config.retrain else None
    if retrain is not None and retrain.config.kind != pre.config.kind:
        raise ValueError(
            f"the retrain model is {retrain.config.kind!r}, the pretrained one {pre.config.kind!r}"
        )
    os.makedirs(workdir, exist_ok=True)

    eval_bs = int(config.eval_batch_size)
    original = _validation_audit(pre, pre.params, data, forget, eval_bs)
    reference = None
    if retrain is not None:
        reference = _validation_audit(retrain, retrain.params, data, forget, eval_bs)

    def measured(audit: dict, **extra: Any) -> dict:
        rec = {k: float(audit[k]) for k in MEASURED}
        if reference is not None:
            rec.update(distances_to_reference(audit, reference))
        return {**extra, **rec}

    log_path = os.path.join(workdir, "points.jsonl")
    done: dict[tuple[str, int], dict[str, Any]] = {}
    if os.path.exists(log_path):
        with open(log_path) as f:
            for line in f:
                if line.strip():
                    rec = json.loads(line)
                    done[(point_key(rec["point"]), rec["steps"])] = rec
    for i, point in enumerate(points):
        key = point_key(point)
        if all((key, s) in done for s in eval_steps):
            continue
        settings = {**base, **point}
        loop_args = {k: v for k, v in settings.items() if k in LOOP_KEYS}
        method_cfg = {k: v for k, v in settings.items() if k not in LOOP_KEYS}
        t0 = time.perf_counter()
        records: list[dict[str, Any]] = []

        def measure(step: int, params: Any, point=point, records=records, t0=t0) -> None:
            audit = _validation_audit(pre, params, data, forget, eval_bs)
            records.append(
                measured(audit, point=point, steps=step) | {"seconds": time.perf_counter() - t0}
            )

        print(f"[sweep] point {i + 1}/{len(points)}: {point_label(point)}", flush=True)
        unlearn(
            pre.params,
            pre.config,
            data,
            method=config.method,
            forget_classes=forget,
            method_cfg=method_cfg,
            steps=eval_steps[-1],
            batch_size=int(loop_args.get("batch_size", config.batch_size)),
            lr=float(loop_args.get("lr", config.lr)),
            forget_fraction=loop_args.get("forget_fraction"),
            group_captions=str(config.group_captions),
            seed=int(config.seed),
            log_every=eval_steps[-1],
            callback=measure,
            callback_steps=eval_steps,
        )
        with open(log_path, "a") as f:
            for rec in records:
                f.write(json.dumps(rec) + "\n")
                done[(key, rec["steps"])] = rec
        for rec in records:
            print(
                f"[sweep]   steps {rec['steps']:>4}: FA {100 * rec['FA']:.2f}%  "
                f"RA {100 * rec['RA']:.2f}%  KS {rec.get('ks_forget_score', math.nan):.3f}  "
                f"rank KS {rec.get('ks_forget_rank', math.nan):.3f}  "
                f"TV {rec.get('tv_destination', math.nan):.3f}",
                flush=True,
            )
    points_measured = [done[(point_key(p), s)] for p in points for s in eval_steps]
    original_figures = measured(original)
    retrain_figures = None if reference is None else measured(reference)
    chosen, reason = select(
        points_measured,
        reference=retrain_figures or {"FA": 0.0, "RA": original_figures["RA"]},
        ra_tolerance=float(config.ra_tolerance),
        fa_tolerance=float(config.fa_tolerance),
        ks_tolerance=float(config.ks_tolerance),
        select_by=select_by,
    )
    summary = {
        "method": config.method,
        "model": pre.config.kind,
        "pretrained": os.path.abspath(config.pretrained),
        "retrain_model": os.path.abspath(config.retrain) if config.retrain else None,
        "forget": list(forget.names),
        "seed": int(config.seed),
        "split": "val",
        "original": original_figures,
        "retrain": retrain_figures,
        "config": config.to_dict(),
        "points": points_measured,
        "chosen": chosen,
        "reason": reason,
    }
    write_text(os.path.join(workdir, "sweep.json"), json.dumps(summary, indent=2) + "\n")
    from hac_jax.report import sweep_table

    md = sweep_table(summary)
    write_text(os.path.join(workdir, "sweep.md"), md)
    print(md, flush=True)
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    enable_compilation_cache()
    try:
        config, flags = parse_command_line(argv, required=("workdir",))
        summary = run(config, os.path.abspath(flags["workdir"]))
    except (ValueError, FileNotFoundError, NotADirectoryError) as e:
        msg = str(e).splitlines()[0] if str(e) else repr(e)
        print(f"error: {msg}", file=sys.stderr)
        return 2
    print(
        f"[sweep] chosen: {point_label(summary['chosen']['point'])}, "
        f"steps={summary['chosen']['steps']}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
