"""Tables of unlearning results: runs aggregated over seeds, and markdown tables of them.

:func:`aggregate` groups the runs of results files by (model, forget set, row) and takes mean,
sample std and count of every metric over seeds. The tables read the aggregate:

* :func:`markdown_tables`: the main table, one per forget set, one line per "model / row";
* :func:`targets_table`: a row's metric against a bound, a number or Retrain's mean plus a
  margin (:class:`Target`, e.g. ``FA<=retrain+2``);
* :func:`delta_table`: a row's metric minus a reference row's (``original``: ΔRA);
* :func:`distance_table`: how far each row is from Retrain, metric by metric.

Cells: fractions (:func:`hac_jax.eval.names.is_fraction`) in percent with one decimal, other
metrics raw with three; "mean ± std" over seeds, the mean alone for one run, ``n/a`` where not
measured or not finite. Differences and bounds are in the same units (percentage points for
fractions) and compare means.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hac_jax.data.forget import forget_slug
from hac_jax.eval.names import DESTINATIONS, GLOSSARY, is_fraction
from hac_jax.report.styles import model_order

__all__ = [
    "COLUMN_SETS",
    "COMPUTE",
    "DEFAULT_COLUMNS",
    "DESTINATION_TV",
    "DISTANCE_COLUMNS",
    "HIERARCHY_COLUMNS",
    "Target",
    "accuracy_by_k",
    "aggregate",
    "choose_columns",
    "column_glossary",
    "delta_table",
    "distance_table",
    "point_label",
    "sweep_table",
    "forget_label",
    "markdown_tables",
    "metric_names",
    "select_entries",
    "targets_table",
]

DEFAULT_COLUMNS: tuple[str, ...] = (
    "FA",
    "UA",
    "RA",
    "TA",
    "ret_i2t_R@1",
    "mia_forget_nonmember",
    "align_gap_forget",
    "align_gap_retain",
    "dist_origin_image_forget",
    "cone_own_forget",
    "cone_parent_forget",
    "dest_sibling",
)

# The hierarchy audit (E4): distances to the origin, cone membership, where forgotten images go.
HIERARCHY_COLUMNS: tuple[str, ...] = (
    "FA",
    "RA",
    "dist_origin_image_forget",
    "dist_origin_text_forget",
    "dist_origin_image_retain",
    "cone_own_forget",
    "cone_parent_forget",
    "cone_own_retain",
    "cone_parent_retain",
    "dest_own_class",
    "dest_sibling",
    "dest_parent",
    "dest_root",
    "dest_other",
)

COLUMN_SETS: dict[str, tuple[str, ...]] = {
    "default": DEFAULT_COLUMNS,
    "hierarchy": HIERARCHY_COLUMNS,
}
"""Named column sets of the main table (``--columns hierarchy``, ``columns=hierarchy``)."""

DESTINATION_TV = "destination_tv"
"""Distance-table column: total-variation distance between the row's and Retrain's mean
destination shares (``dest_*``, :data:`hac_jax.eval.names.DESTINATIONS`)."""

COMPUTE = "compute"
"""Target name of ``compute vs retrain``: examples processed, in percent of Retrain's."""

KS_FORGET = "ks_forget_score"
"""Distance-table column: two-sample KS distance of the per-pair forget scores to those of
Retrain with the same seed (each run's ``vs_retrain``), mean over seeds, beside the Retrain
seed-to-seed yardstick (the results' ``retrain_yardstick``)."""

KS_RANK = "ks_forget_rank"
"""Distance-table column: KS distance of the ranks of the true class among all classes for the
forget-train images (a scale-free forget score), to Retrain with the same seed."""

VERSUS_RETRAIN = (KS_FORGET, KS_RANK, "tv_destination")
"""Per-run distances to Retrain recorded by the runner (a run's ``vs_retrain``)."""

DISTANCE_COLUMNS: tuple[str, ...] = (
    "FA",
    "RA",
    "mia_forget_nonmember",
    KS_FORGET,
    KS_RANK,
    "align_gap_forget",
    "cone_own_retain",
    DESTINATION_TV,
)

COST_KEYS = ("steps", "seconds", "examples")
# Rows that are references, not unlearning methods: left out of the derived tables by default.
REFERENCE_ROWS = ("original", "retrain")


def choose_columns(text: str) -> tuple[str, ...]:
    """The main table's columns from their text: empty -> :data:`DEFAULT_COLUMNS`, a name of
    :data:`COLUMN_SETS`, or comma-separated metric names."""
    text = text.strip()
    if not text:
        return DEFAULT_COLUMNS
    if text in COLUMN_SETS:
        return COLUMN_SETS[text]
    return tuple(c.strip() for c in text.split(",") if c.strip())


# ----------------------------------------------------------------------------------------------
# Aggregation
# ----------------------------------------------------------------------------------------------


def _finite(values: Sequence[Any]) -> np.ndarray:
    arr = np.asarray([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    return arr[np.isfinite(arr)]


def _stats(values: Sequence[Any]) -> dict[str, Any]:
    """mean, sample std (ddof=1 for n >= 2, 0.0 for n = 1, NaN for n = 0) and n of finite values."""
    v = _finite(values)
    n = int(v.size)
    mean = float(v.mean()) if n else math.nan
    std = float(v.std(ddof=1)) if n >= 2 else (0.0 if n == 1 else math.nan)
    return {"mean": mean, "std": std, "n": n}


def aggregate(results: list[dict], metrics: Sequence[str] | None = None) -> list[dict]:
    """Groups runs by (model, forget set, row) over seeds.

    Returns one dict per group, ordered by model (:func:`hac_jax.report.styles.model_order`),
    forget set (first appearance), row (``original`` first, then first appearance)::

        {"model", "forget": [names], "k": len(forget), "row", "method", "n": runs, "seeds": [...],
         "metrics": {name: {"mean", "std", "n"}}, "steps", "seconds", "examples",
         "compute_vs_retrain"}

    ``std`` is the sample std (ddof=1) for n >= 2, 0.0 for n = 1; NaN/None values are ignored per
    metric (``n`` counts the finite ones; a metric present but never finite has mean/std NaN and
    n = 0); a metric absent from every run of a group is left out of that group. ``metrics``
    restricts and orders the metric names (default: all, in order of first appearance).
    ``steps``/``seconds``/``examples`` are means over the group's finite values (NaN if none);
    ``compute_vs_retrain`` = examples / examples of the same model's ``retrain`` row for that
    forget set (a fraction; None without a retrain row or when its examples are 0 or missing).
    The same run in two files (experiments share runs) counts once; a run that differs between
    files raises ``ValueError``.
    """
    forget_order: dict[tuple[str, ...], int] = {}
    row_order: dict[str, int] = {}
    groups: dict[tuple[str, tuple[str, ...], str], list[dict]] = {}
    seen: dict[tuple, dict] = {}
    yardsticks: dict[tuple[str, tuple[str, ...]], dict] = {}
    for res in results:
        by_slug = res.get("retrain_yardstick") or {}
        for run in res["runs"]:
            stick = by_slug.get(forget_slug(run["forget"]))
            if stick:
                yardsticks[(res["model"], tuple(run["forget"]))] = stick
            forget = tuple(run["forget"])
            ident = (res["model"], forget, run["row"], run["seed"])
            if ident in seen:
                if seen[ident]["metrics"] != run["metrics"]:
                    raise ValueError(
                        f"{res.get('_source', 'results')}: {run['row']} on {list(forget)} seed "
                        f"{run['seed']} differs from the same run in another file"
                    )
                continue
            seen[ident] = run
            forget_order.setdefault(forget, len(forget_order))
            row_order.setdefault(run["row"], len(row_order))
            groups.setdefault((res["model"], forget, run["row"]), []).append(run)

    def order(key: tuple[str, tuple[str, ...], str]) -> tuple:
        model, forget, row = key
        return (model_order(model), forget_order[forget], (row != "original", row_order[row]))

    out = []
    for key in sorted(groups, key=order):
        model, forget, row = key
        runs = groups[key]
        if metrics is None:
            names = list(dict.fromkeys(m for r in runs for m in r["metrics"]))
        else:
            names = [m for m in metrics if any(m in r["metrics"] for r in runs)]
        entry: dict[str, Any] = {
            "model": model,
            "forget": list(forget),
            "k": len(forget),
            "row": row,
            "method": runs[0].get("method", row),
            "n": len(runs),
            "seeds": sorted(r["seed"] for r in runs),
            "metrics": {m: _stats([r["metrics"].get(m) for r in runs]) for m in names},
        }
        for cost in COST_KEYS:
            entry[cost] = _stats([r[cost] for r in runs])["mean"]
        entry["pass_examples"] = _stats([_pass_examples(r) for r in runs])["mean"]
        entry["vs_retrain"] = {
            name: _stats([(r.get("vs_retrain") or {}).get(name) for r in runs])
            for name in VERSUS_RETRAIN
        }
        entry["yardstick"] = yardsticks.get((model, forget), {})
        out.append(entry)

    retrain = {
        (e["model"], tuple(e["forget"])): e["pass_examples"] for e in out if e["row"] == "retrain"
    }
    for e in out:
        ref, own = retrain.get((e["model"], tuple(e["forget"]))), e["pass_examples"]
        ok = ref is not None and math.isfinite(ref) and ref > 0 and math.isfinite(own)
        e["compute_vs_retrain"] = own / ref if ok else None
    return out


def _pass_examples(run: Mapping[str, Any]) -> float | None:
    """Examples over every forward and backward pass of a run (``passes``: the trained model's
    forward and backward, the frozen model's forward); ``examples`` where a run has no count."""
    passes = run.get("passes") or {}
    if "forward_examples" in passes and "backward_examples" in passes:
        return float(passes["forward_examples"]) + float(passes["backward_examples"])
    return run.get("examples")


def accuracy_by_k(agg: list[dict], metric: str) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """``metric`` against the number of forgotten concepts, per (model, row).

    Groups with the same k (different forget sets of one size) are pooled over all their runs:
    the pooled mean is the n-weighted mean and the std the sample std of the union (exact from
    the group means/stds/ns). Returns ``{(model, row): [{"k", "mean", "std", "n"}, ...]}`` sorted
    by k, keeping only (model, row) pairs measured at >= 2 distinct k.
    """
    pooled: dict[tuple[str, str], dict[int, list[dict]]] = {}
    for e in agg:
        s = e["metrics"].get(metric)
        if s is None or s["n"] == 0:
            continue
        pooled.setdefault((e["model"], e["row"]), {}).setdefault(e["k"], []).append(s)
    out = {}
    for key, by_k in pooled.items():
        if len(by_k) < 2:
            continue
        points = []
        for k in sorted(by_k):
            parts = by_k[k]
            n = np.array([p["n"] for p in parts], dtype=np.float64)
            m = np.array([p["mean"] for p in parts])
            s = np.array([p["std"] for p in parts])
            total = n.sum()
            mean = float((n * m).sum() / total)
            if total >= 2:
                ss = ((n - 1) * s**2).sum() + (n * (m - mean) ** 2).sum()
                std = float(math.sqrt(ss / (total - 1)))
            else:
                std = 0.0
            points.append({"k": k, "mean": mean, "std": std, "n": int(total)})
        out[key] = points
    return out


def metric_names(agg: Sequence[Mapping[str, Any]]) -> set[str]:
    """Every metric some group of the aggregate holds."""
    return {m for e in agg for m in e["metrics"]}


def select_entries(
    agg: Sequence[dict], rows: Sequence[str] | None, *, exclude: Sequence[str] = ()
) -> list[dict]:
    """The aggregate's groups of the rows named ``MODEL/ROW`` (one model's row) or ``ROW`` (that
    row of every model), ordered by forget set, then as named; ``rows=None``: every row except
    ``exclude``, in aggregate order. Raises ``ValueError`` for a name that matches no group."""

    def matches(entry: Mapping[str, Any], name: str) -> bool:
        return name in (entry["row"], f"{entry['model']}/{entry['row']}")

    forget_order = {f: i for i, f in enumerate(dict.fromkeys(tuple(e["forget"]) for e in agg))}
    if rows is None:
        chosen = [(i, e) for i, e in enumerate(agg) if e["row"] not in exclude]
    else:
        known = list(dict.fromkeys(f"{e['model']}/{e['row']}" for e in agg))
        for name in rows:
            if not any(matches(e, name) for e in agg):
                raise ValueError(
                    f"row {name!r} is in none of the results (rows: {', '.join(known)})"
                )
        chosen = [
            (min(i for i, name in enumerate(rows) if matches(e, name)), e)
            for e in agg
            if any(matches(e, name) for name in rows)
        ]
    chosen.sort(key=lambda pair: (forget_order[tuple(pair[1]["forget"])], pair[0]))
    return [e for _, e in chosen]


# ----------------------------------------------------------------------------------------------
# Cells
# ----------------------------------------------------------------------------------------------


def _scale_and_digits(metric: str) -> tuple[float, int]:
    """Fractions in percent with one decimal, the compute share likewise, the rest raw with
    three decimals."""
    if metric == COMPUTE or is_fraction(metric):
        return 100.0, 1
    return 1.0, 3


def _metric_cell(stats: Mapping[str, Any] | None, metric: str) -> str | None:
    if stats is None or stats["n"] == 0 or not math.isfinite(stats["mean"]):
        return None
    scale, digits = _scale_and_digits(metric)
    mean = f"{scale * stats['mean']:.{digits}f}"
    if stats["n"] < 2:
        return mean
    return f"{mean} ± {scale * stats['std']:.{digits}f}"


def _number_cell(value: Any, digits: int) -> str | None:
    if value is None or not math.isfinite(value):
        return None
    if digits == 0 and float(value).is_integer():
        return str(int(value))
    return f"{value:.{max(digits, 1)}f}"


def _header(metric: str) -> str:
    if metric == COMPUTE:
        return "compute vs retrain (%)"
    return f"{metric} (%)" if is_fraction(metric) else metric


def _mean(entry: Mapping[str, Any] | None, metric: str) -> float | None:
    """The group's mean of ``metric`` in display units (percent for fractions), None when not
    measured or not finite."""
    if entry is None:
        return None
    if metric == COMPUTE:
        value = entry["compute_vs_retrain"]
    else:
        stats = entry["metrics"].get(metric)
        value = None if stats is None or stats["n"] == 0 else stats["mean"]
    if value is None or not math.isfinite(value):
        return None
    return _scale_and_digits(metric)[0] * value


def _value_cell(entry: Mapping[str, Any], metric: str) -> str | None:
    if metric == COMPUTE:
        value = _mean(entry, COMPUTE)
        return None if value is None else f"{value:.1f}"
    return _metric_cell(entry["metrics"].get(metric), metric)


def forget_label(forget: Sequence[str]) -> str:
    return f"{', '.join(forget)} (k={len(forget)})"


def _row_label(entry: Mapping[str, Any]) -> str:
    return f"{entry['model']} / {entry['row']}"


def _markdown(header: Sequence[str], lines: Sequence[Sequence[str | None]], labels: int) -> str:
    """A markdown table: the first ``labels`` columns left-aligned, the others right-aligned;
    ``None`` cells read ``n/a``."""
    rule = "|" + "---|" * labels + "---:|" * (len(header) - labels)
    out = ["| " + " | ".join(header) + " |", rule]
    for cells in lines:
        out.append("| " + " | ".join("n/a" if c is None else c for c in cells) + " |")
    return "\n".join(out) + "\n"


def _drop_empty_columns(
    header: list[str], lines: list[list[str | None]], labels: int
) -> tuple[list[str], list[list[str | None]]]:
    keep = [
        i for i in range(len(header)) if i < labels or any(line[i] is not None for line in lines)
    ]
    return [header[i] for i in keep], [[line[i] for i in keep] for line in lines]


def _by_group(agg: Sequence[dict]) -> dict[tuple[str, tuple[str, ...], str], dict]:
    return {(e["model"], tuple(e["forget"]), e["row"]): e for e in agg}


# ----------------------------------------------------------------------------------------------
# The main table
# ----------------------------------------------------------------------------------------------


def markdown_tables(agg: list[dict], columns: Sequence[str] = DEFAULT_COLUMNS) -> str:
    """One markdown table per forget set (first-appearance order), one line per "model / row".

    After the metric columns come ``n`` (runs), ``steps``, ``seconds`` and ``compute vs
    retrain`` (examples as a percentage of the same model's retrain row). Columns missing in
    every line of a table are dropped.
    """
    forgets = list(dict.fromkeys(tuple(e["forget"]) for e in agg))
    blocks = []
    for forget in forgets:
        entries = [e for e in agg if tuple(e["forget"]) == forget]
        header = ["model / row", *(_header(m) for m in columns)]
        header += ["n", "steps", "seconds", "compute vs retrain"]
        lines: list[list[str | None]] = []
        for e in entries:
            compute = e["compute_vs_retrain"]
            lines.append(
                [
                    _row_label(e),
                    *(_metric_cell(e["metrics"].get(m), m) for m in columns),
                    str(e["n"]),
                    _number_cell(e["steps"], 0),
                    _number_cell(e["seconds"], 1),
                    None if compute is None else f"{100 * compute:.1f}%",
                ]
            )
        header, lines = _drop_empty_columns(header, lines, labels=1)
        blocks.append(f"### Forget set: {forget_label(forget)}\n\n" + _markdown(header, lines, 1))
    return "\n".join(blocks)


# ----------------------------------------------------------------------------------------------
# Derived tables
# ----------------------------------------------------------------------------------------------

_TARGET = re.compile(r"^(?P<metric>[A-Za-z][\w@.]*)(?P<op><=|>=|=)(?P<bound>.+)$")
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_RETRAIN_BOUND = re.compile(rf"^retrain(?:(?P<sign>\+-|[+-])(?P<margin>{_NUMBER}))?$")
_PLAIN_BOUND = re.compile(rf"^[+-]?{_NUMBER}$")


@dataclasses.dataclass(frozen=True)
class Target:
    """A bound on a row's mean ``metric`` in display units (percentage points for fractions).

    Written ``METRIC<=NUMBER``, ``METRIC>=NUMBER`` (a fixed bound), ``METRIC<=retrain+M``,
    ``METRIC>=retrain-M`` (Retrain's mean of the same model and forget set plus or minus a
    margin) or ``METRIC=retrain+-M`` (within M of Retrain's). ``METRIC`` may be ``compute``:
    examples processed in percent of Retrain's (``compute<=2``).
    """

    metric: str
    relation: str  # "<=", ">=" or "within"
    bound: float  # the number, or the signed margin to Retrain's mean
    vs_retrain: bool

    @classmethod
    def parse(cls, text: str) -> Target:
        match = _TARGET.match(text)
        if not match:
            raise ValueError(
                f"target {text!r} is not METRIC<=BOUND, METRIC>=BOUND or METRIC=retrain+-M"
            )
        metric, op, bound = match["metric"], match["op"], match["bound"]
        retrain = _RETRAIN_BOUND.match(bound)
        if retrain:
            sign, margin = retrain["sign"] or "+", float(retrain["margin"] or 0.0)
            if (op == "=") != (sign == "+-"):
                raise ValueError(
                    f"target {text!r}: '=' takes retrain+-M; '<=' and '>=' take "
                    "retrain+M or retrain-M"
                )
            if op == "=":
                return cls(metric, "within", margin, True)
            return cls(metric, op, -margin if sign == "-" else margin, True)
        if op != "=" and _PLAIN_BOUND.match(bound):
            return cls(metric, op, float(bound), False)
        raise ValueError(f"target {text!r}: the bound must be a number or retrain[+M|-M|+-M]")

    def header(self) -> str:
        metric = self.metric if self.vs_retrain else _header(self.metric)
        if self.relation == "within":
            return f"{metric} = Retrain ± {self.bound:g}"
        sign = "≤" if self.relation == "<=" else "≥"
        if not self.vs_retrain:
            return f"{metric} {sign} {self.bound:g}"
        return f"{metric} {sign} Retrain {'-' if self.bound < 0 else '+'} {abs(self.bound):g}"

    def met(self, value: float, retrain: float | None) -> bool | None:
        """Whether ``value`` (display units) meets the bound; None without Retrain's mean."""
        if not self.vs_retrain:
            return value <= self.bound if self.relation == "<=" else value >= self.bound
        if retrain is None:
            return None
        if self.relation == "within":
            return abs(value - retrain) <= self.bound
        limit = retrain + self.bound
        return value <= limit if self.relation == "<=" else value >= limit


def _signed(value: float, metric: str) -> str:
    return f"{value:+.{_scale_and_digits(metric)[1]}f}"


def targets_table(
    agg: list[dict], targets: Sequence[Target], rows: Sequence[str] | None = None
) -> str:
    """One line per (forget set, row) of ``rows`` (:func:`select_entries`; default every row but
    original and retrain). Per metric its mean ± std, per target the row's difference to
    Retrain's mean (or its value, for a fixed bound) and whether the target is met; the last
    column counts the targets met. ``n/a`` where the row or its Retrain lacks the metric."""
    groups = _by_group(agg)
    # each metric's value column comes before its first target's column
    plan: list[str | Target] = []
    for target in targets:
        if target.metric not in plan:
            plan.append(target.metric)
        plan.append(target)
    header = ["forget set", "model / row"]
    header += [c.header() if isinstance(c, Target) else _header(c) for c in plan]
    header.append("targets met")
    lines = []
    for e in select_entries(agg, rows, exclude=REFERENCE_ROWS):
        retrain = groups.get((e["model"], tuple(e["forget"]), "retrain"))
        cells: list[str | None] = [forget_label(e["forget"]), _row_label(e)]
        met = 0
        for column in plan:
            if not isinstance(column, Target):
                cells.append(_value_cell(e, column))
                continue
            cell, verdict = _target_cell(
                column, _mean(e, column.metric), _mean(retrain, column.metric)
            )
            cells.append(cell)
            met += bool(verdict)
        cells.append(f"{met}/{len(targets)}")
        lines.append(cells)
    return _markdown(header, lines, labels=2)


def _target_cell(
    target: Target, value: float | None, retrain: float | None
) -> tuple[str | None, bool | None]:
    """The cell of one target: the difference to Retrain's mean (or the value, for a fixed
    bound) and the verdict; (None, None) where either mean is missing."""
    verdict = None if value is None else target.met(value, retrain)
    if verdict is None:
        return None, None
    digits = _scale_and_digits(target.metric)[1]
    number = f"{value - retrain:+.{digits}f}" if target.vs_retrain else f"{value:.{digits}f}"
    return f"{number} ({'met' if verdict else 'missed'})", verdict


def delta_table(
    agg: list[dict],
    metrics: Sequence[str],
    *,
    reference: str = "original",
    rows: Sequence[str] | None = None,
    values: Sequence[str] = (),
) -> str:
    """One line per forget set; per row of ``rows`` (:func:`select_entries`; default every row
    but ``reference``) its mean of each of ``values``, then each of ``metrics`` minus the same
    model's ``reference`` row on that forget set (signed). Raises ``ValueError`` when no group
    is a ``reference`` row."""
    if not any(e["row"] == reference for e in agg):
        raise ValueError(f"reference row {reference!r} is in none of the results")
    groups = _by_group(agg)
    columns = list(
        dict.fromkeys(
            (e["model"], e["row"]) for e in select_entries(agg, rows, exclude=[reference])
        )
    )
    forgets = list(dict.fromkeys(tuple(e["forget"]) for e in agg))
    header = ["forget set"]
    for model, row in columns:
        header += [f"{model} / {row}: {_header(m)}" for m in values]
        header += [f"{model} / {row}: Δ{m} vs {reference}" for m in metrics]
    lines = []
    for forget in forgets:
        cells: list[str | None] = [forget_label(forget)]
        for model, row in columns:
            entry = groups.get((model, forget, row))
            ref = groups.get((model, forget, reference))
            cells += [None if entry is None else _value_cell(entry, m) for m in values]
            for m in metrics:
                value, base = _mean(entry, m), _mean(ref, m)
                cells.append(None if value is None or base is None else _signed(value - base, m))
        lines.append(cells)
    return _markdown(header, lines, labels=1)


def _destination_shares(entry: Mapping[str, Any] | None) -> np.ndarray | None:
    shares = [_mean(entry, f"dest_{d}") for d in DESTINATIONS]
    if any(s is None for s in shares):
        return None
    return np.asarray(shares) / 100.0


def _distance(
    entry: Mapping[str, Any], retrain: Mapping[str, Any] | None, metric: str
) -> float | None:
    if metric in VERSUS_RETRAIN:
        stats = entry["vs_retrain"].get(metric)
        return None if stats is None or stats["n"] == 0 else stats["mean"]
    if metric == DESTINATION_TV:
        stats = entry["vs_retrain"].get("tv_destination")
        if stats is not None and stats["n"] > 0:  # per run against its own seed's Retrain
            return stats["mean"]
        p, q = _destination_shares(entry), _destination_shares(retrain)
        return None if p is None or q is None else 0.5 * float(np.abs(p - q).sum())
    value, reference = _mean(entry, metric), _mean(retrain, metric)
    return None if value is None or reference is None else abs(value - reference)


def distance_table(
    agg: list[dict], metrics: Sequence[str] = DISTANCE_COLUMNS, rows: Sequence[str] | None = None
) -> str:
    """One line per (forget set, row) of ``rows`` (:func:`select_entries`; default every row but
    original and retrain): per metric the absolute difference of its mean to the mean of the
    same model's Retrain on that forget set, and for :data:`DESTINATION_TV` the total-variation
    distance of the destination shares. Columns without any value are dropped."""
    groups = _by_group(agg)
    header = ["forget set", "model / row"]
    for m in metrics:
        if m == DESTINATION_TV:
            header.append("destination TV")
        elif m == KS_FORGET:
            header += ["forget-score KS", "KS Retrain seeds"]
        elif m == KS_RANK:
            header += ["forget-rank KS", "rank KS Retrain seeds"]
        else:
            header.append(f"{m} vs Retrain (pts)" if is_fraction(m) else f"{m} vs Retrain")
    lines = []
    for e in select_entries(agg, rows, exclude=REFERENCE_ROWS):
        retrain = groups.get((e["model"], tuple(e["forget"]), "retrain"))
        cells: list[str | None] = [forget_label(e["forget"]), _row_label(e)]
        for m in metrics:
            distance = _distance(e, retrain, m)
            digits = 3 if m in (DESTINATION_TV, *VERSUS_RETRAIN) else _scale_and_digits(m)[1]
            cells.append(None if distance is None else f"{distance:.{digits}f}")
            if m in (KS_FORGET, KS_RANK):
                stick = e["yardstick"].get(m)
                cells.append(None if stick is None else f"{stick:.3f}")
        lines.append(cells)
    header, lines = _drop_empty_columns(header, lines, labels=2)
    return _markdown(header, lines, labels=2)


def column_glossary(columns: Sequence[str]) -> list[str]:
    """Markdown bullet lines saying what each column of the main table holds and its unit."""
    lines = []
    for c in columns:
        if c in GLOSSARY:
            text = GLOSSARY[c]
        elif c.startswith("ret_"):
            text = "retrieval recall on retain test captions (i2t: image->text, t2i: text->image)"
        elif c.startswith(("align_", "dist_")):
            text = "raw similarity / distance units"
        else:
            text = "share in [0, 1]" if is_fraction(c) else "raw value"
        unit = "percent" if is_fraction(c) else "raw, 3 decimals"
        lines.append(f"- **{c}** ({unit}): {text}")
    for c in ("n", "steps", "seconds", "compute"):
        name = "compute vs retrain" if c == "compute" else c
        lines.append(f"- **{name}**: {GLOSSARY[c]}")
    return lines


# ----------------------------------------------------------------------------------------------
# Sweeps (experiments/sweep.py's sweep.json)
# ----------------------------------------------------------------------------------------------


def point_label(point: Mapping[str, Any]) -> str:
    """A sweep grid point as text: ``{"lr": 1e-4, "pool": "retain"}`` ->
    ``"lr=0.0001, pool=retain"``."""
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in point.items())


def _pct(value: Any) -> str:
    return "n/a" if value is None or value != value else f"{100 * value:.2f}"


def sweep_table(summary: Mapping[str, Any]) -> str:
    """The sweep as a markdown table (validation figures, fractions in percent), chosen row
    marked, with the original's and Retrain's figures on the same images."""
    chosen = summary["chosen"]
    ref = summary.get("retrain") or {}

    def figures(m):
        return ", ".join(f"{k} {_pct(m.get(k))}%" for k in ("FA", "RA", "mia_forget_nonmember"))

    lines = [
        f"Sweep of `{summary['method']}` on {summary['model']} forgetting "
        f"{', '.join(summary['forget'])} (seed {summary['seed']}), validation split. Original: "
        f"{figures(summary['original'])}; Retrain: {figures(ref) if ref else 'not given'}.",
        "",
        f"Chosen: {point_label(chosen['point'])}, steps={chosen['steps']} "
        f"(FA {_pct(chosen['FA'])}%, RA {_pct(chosen['RA'])}%). Rule: {summary['reason']}.",
        "",
        "| point | steps | FA % | RA % | MIA non-member % | MIA strength % | cone retain % "
        "| forget-score KS | forget-rank KS | destination TV | seconds |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def distance(p, key):
        value = p.get(key)
        return "n/a" if value is None else f"{value:.3f}"

    for p in summary["points"]:
        mark = " **(chosen)**" if p == chosen else ""
        lines.append(
            f"| {point_label(p['point'])}{mark} | {p['steps']} | {_pct(p['FA'])} | "
            f"{_pct(p['RA'])} | {_pct(p.get('mia_forget_nonmember'))} | "
            f"{_pct(p.get('mia_fit_balanced_acc'))} | {_pct(p.get('cone_own_retain'))} | "
            f"{distance(p, 'ks_forget_score')} | {distance(p, 'ks_forget_rank')} | "
            f"{distance(p, 'tv_destination')} | {p['seconds']:.1f} |"
        )
    return "\n".join(lines) + "\n"
