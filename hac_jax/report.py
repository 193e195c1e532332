"""Report writer for unlearning experiments: tables, JSON and plots from ``results.json`` files.

Reads one or more ``results.json`` written by ``experiments/unlearn.py`` (layout in
docs/DESIGN.md "Unlearning results": one file per pretrained model, one run per forget set x row
x seed),
aggregates the runs over seeds and writes ``report.md`` (mean ± std tables, one per forget set),
``report.json`` (the aggregate) and PNG figures: concept x concept alignment matrices before and
after unlearning, MERU distances to the origin of forget vs retain embeddings, and FA/RA against
the number of forgotten concepts ``k``.

Command line::

    python -m hac_jax.report runs/unlearn_clip/results.json runs/unlearn_meru/results.json \\
        --out runs/report --title "Fashion-MNIST unlearning"

Every output file is written atomically (a temporary file in the same directory, then
``os.replace``), so a failed run never leaves a half-written file behind. Plots use matplotlib's
object API (``matplotlib.figure.Figure``), which renders with Agg without touching pyplot's global
backend.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hac_jax.eval.names import GLOSSARY, is_fraction
from hac_jax.files import atomic_path, write_text

__all__ = [
    "DEFAULT_COLUMNS",
    "accuracy_by_k",
    "aggregate",
    "is_fraction",
    "load_results",
    "main",
    "markdown_tables",
    "plot_accuracy_vs_k",
    "plot_alignment_matrices",
    "plot_norm_histograms",
    "write_report",
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

# Keys the report reads; other keys of the schema (pretrained, config, method, ...) are optional.
REQUIRED_TOP: tuple[str, ...] = ("model", "class_names", "runs")
REQUIRED_RUN: tuple[str, ...] = ("forget", "row", "seed", "metrics", "steps", "seconds", "examples")

_MODEL_ORDER = {"clip": 0, "meru": 1}
_COST_KEYS = ("steps", "seconds", "examples")

# ----------------------------------------------------------------------------------------------
# Loading and validation
# ----------------------------------------------------------------------------------------------


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _validate(data: Any, path: str) -> None:
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object at the top level")
    for key in REQUIRED_TOP:
        if key not in data:
            raise ValueError(f"{path}: missing key {key!r}; is this a results.json of unlearn.py?")
    if not isinstance(data["model"], str) or not data["model"]:
        raise ValueError(f"{path}: 'model' must be a non-empty string, got {data['model']!r}")
    names = data["class_names"]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{path}: 'class_names' must be a list of strings")
    runs = data["runs"]
    if not isinstance(runs, list) or not runs:
        raise ValueError(f"{path}: 'runs' must be a non-empty list of runs")
    seen: set[tuple] = set()
    for i, run in enumerate(runs):
        where = f"{path}: runs[{i}]"
        if not isinstance(run, dict):
            raise ValueError(f"{where} must be an object")
        for key in REQUIRED_RUN:
            if key not in run:
                raise ValueError(f"{where}: missing key {key!r}")
        forget = run["forget"]
        if (
            not isinstance(forget, list)
            or not forget
            or not all(isinstance(f, str) for f in forget)
        ):
            raise ValueError(f"{where}: 'forget' must be a non-empty list of concept names")
        if not isinstance(run["row"], str) or not run["row"]:
            raise ValueError(f"{where}: 'row' must be a non-empty string")
        if not isinstance(run["seed"], int) or isinstance(run["seed"], bool):
            raise ValueError(f"{where}: 'seed' must be an integer, got {run['seed']!r}")
        if not isinstance(run["metrics"], dict):
            raise ValueError(f"{where}: 'metrics' must be an object of name -> number")
        for name, value in run["metrics"].items():
            if value is not None and not _is_number(value):
                raise ValueError(
                    f"{where}: metric {name!r} is {value!r}, expected a number or null"
                )
        for key in _COST_KEYS:
            if run[key] is not None and not _is_number(run[key]):
                raise ValueError(f"{where}: {key!r} is {run[key]!r}, expected a number or null")
        arrays = run.get("arrays")
        if arrays is not None and not isinstance(arrays, str):
            raise ValueError(f"{where}: 'arrays' must be a relative path string or null")
        key = (tuple(forget), run["row"], run["seed"])
        if key in seen:
            raise ValueError(
                f"{where}: a second run for forget={forget} row={run['row']!r} seed={run['seed']}"
            )
        seen.add(key)


def load_results(paths: Sequence[str]) -> list[dict]:
    """Reads and validates ``results.json`` files (docs/DESIGN.md "Unlearning results"), in the
    order given.

    Each returned dict is the file's content plus ``"_source"``: its absolute path (array files
    are relative to its directory). Required: ``model``, ``class_names``, ``runs`` and, per run,
    ``forget``, ``row``, ``seed``, ``metrics``, ``steps``, ``seconds``, ``examples``. Raises
    ``FileNotFoundError`` for a missing file and a one-line ``ValueError`` naming the file (and the
    missing key) for anything malformed, for no paths, and for a file given twice.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if not paths:
        raise ValueError("no results.json given; pass at least one path")
    out, seen = [], set()
    for p in paths:
        path = os.path.abspath(os.fspath(p))
        if not os.path.isfile(path):
            raise FileNotFoundError(f"results file {os.fspath(p)!r} does not exist")
        real = os.path.realpath(path)
        if real in seen:
            raise ValueError(f"{path}: given twice; its runs would be counted twice")
        seen.add(real)
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ValueError(f"{path}: not valid JSON ({msg})") from None
        _validate(data, path)
        data["_source"] = path
        out.append(data)
    return out


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


def _model_key(model: str) -> tuple[int, str]:
    return (_MODEL_ORDER.get(model, len(_MODEL_ORDER)), model)


def aggregate(results: list[dict], metrics: Sequence[str] | None = None) -> list[dict]:
    """Groups runs by (model, forget set, row) over seeds.

    Returns one dict per group, ordered by model (clip, meru, then others by name), forget set
    (first appearance), row (``original`` first, then first appearance)::

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
    """
    forget_order: dict[tuple[str, ...], int] = {}
    row_order: dict[str, int] = {}
    groups: dict[tuple[str, tuple[str, ...], str], list[dict]] = {}
    seen: dict[tuple, dict] = {}
    for res in results:
        for run in res["runs"]:
            forget = tuple(run["forget"])
            # Experiments share runs (E4's rows are E1's): the same run in two files counts once.
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
        return (_model_key(model), forget_order[forget], (row != "original", row_order[row]))

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
        for cost in _COST_KEYS:
            entry[cost] = _stats([r[cost] for r in runs])["mean"]
        out.append(entry)

    retrain = {
        (e["model"], tuple(e["forget"])): e["examples"] for e in out if e["row"] == "retrain"
    }
    for e in out:
        ref = retrain.get((e["model"], tuple(e["forget"])))
        ok = ref is not None and math.isfinite(ref) and ref > 0 and math.isfinite(e["examples"])
        e["compute_vs_retrain"] = e["examples"] / ref if ok else None
    return out


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


# ----------------------------------------------------------------------------------------------
# Markdown
# ----------------------------------------------------------------------------------------------


def _metric_cell(stats: Mapping[str, Any] | None, metric: str) -> str | None:
    if stats is None or stats["n"] == 0 or not math.isfinite(stats["mean"]):
        return None
    scale, digits = (100.0, 1) if is_fraction(metric) else (1.0, 3)
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
    return f"{metric} (%)" if is_fraction(metric) else metric


def _forget_label(forget: Sequence[str]) -> str:
    return f"{', '.join(forget)} (k={len(forget)})"


def markdown_tables(agg: list[dict], columns: Sequence[str] = DEFAULT_COLUMNS) -> str:
    """One markdown table per forget set (first-appearance order), one line per "model / row".

    Fractions are shown in percent with one decimal, other metrics raw with three; a cell is
    "mean ± std" over seeds, just "mean" for a single run, "n/a" where missing. After the metric
    columns come ``n`` (runs), ``steps``, ``seconds`` and ``compute vs retrain`` (examples as a
    percentage of the same model's retrain row). Columns missing in every line of a table are
    dropped.
    """
    forgets = list(dict.fromkeys(tuple(e["forget"]) for e in agg))
    blocks = []
    for forget in forgets:
        entries = [e for e in agg if tuple(e["forget"]) == forget]
        cols: list[tuple[str, list[str | None]]] = []
        for m in columns:
            cols.append((_header(m), [_metric_cell(e["metrics"].get(m), m) for e in entries]))
        cols.append(("n", [str(e["n"]) for e in entries]))
        cols.append(("steps", [_number_cell(e["steps"], 0) for e in entries]))
        cols.append(("seconds", [_number_cell(e["seconds"], 1) for e in entries]))
        compute = [
            None if e["compute_vs_retrain"] is None else f"{100 * e['compute_vs_retrain']:.1f}%"
            for e in entries
        ]
        cols.append(("compute vs retrain", compute))
        cols = [(h, cells) for h, cells in cols if any(c is not None for c in cells)]
        lines = [
            f"### Forget set: {_forget_label(forget)}",
            "",
            "| model / row | " + " | ".join(h for h, _ in cols) + " |",
            "|---" + "|---:" * len(cols) + "|",
        ]
        for i, e in enumerate(entries):
            cells = [c[i] if c[i] is not None else "n/a" for _, c in cols]
            lines.append(f"| {e['model']} / {e['row']} | " + " | ".join(cells) + " |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def _write_text(path: str, text: str) -> str:
    return write_text(path, text)


def _save_figure(fig: Any, path: str) -> str:
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise FileNotFoundError(f"directory {parent!r} for the plot does not exist")
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path


def _new_figure(width: float, height: float) -> Any:
    # The object API renders with Agg and leaves pyplot's global backend alone.
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (str, bool)) or obj is None:
        return obj
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    value = float(obj)
    return value if math.isfinite(value) else None


# ----------------------------------------------------------------------------------------------
# Plots
# ----------------------------------------------------------------------------------------------


def plot_alignment_matrices(
    before: np.ndarray,
    after: dict[str, np.ndarray],
    class_names: Sequence[str],
    path: str,
    title: str,
) -> str:
    """Heatmaps of the (C, C) alignment matrix (mean sim(image of class i, caption of class j))
    of the original model and of each entry of ``after``, side by side with one shared colour
    scale and class names on both axes. Writes a PNG atomically; returns ``path``."""
    before = np.asarray(before, dtype=np.float64)
    c = len(class_names)
    mats = {"original": before}
    for name, m in after.items():
        mats[name] = np.asarray(m, dtype=np.float64)
    for name, m in mats.items():
        if m.shape != (c, c):
            raise ValueError(
                f"alignment matrix {name!r} has shape {m.shape}, expected ({c}, {c}) "
                "(one row and column per class name)"
            )
    finite = np.concatenate([m[np.isfinite(m)] for m in mats.values()])
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (None, None)
    size = 1.2 + 0.28 * c
    fig = _new_figure(size * len(mats) + 1.0, size + 0.9)
    axes = fig.subplots(1, len(mats), squeeze=False)[0]
    image = None
    for ax, (name, m) in zip(axes, mats.items(), strict=True):
        image = ax.imshow(m, vmin=vmin, vmax=vmax, cmap="viridis")
        ax.set_title(name, fontsize=9)
        ax.set_xticks(range(c), labels=list(class_names), rotation=90, fontsize=7)
        ax.set_yticks(range(c), labels=list(class_names), fontsize=7)
        ax.tick_params(axis="y", labelleft=ax is axes[0])
        ax.set_xlabel("caption concept", fontsize=8)
    axes[0].set_ylabel("image concept", fontsize=8)
    fig.colorbar(image, ax=list(axes), shrink=0.8, label="mean similarity")
    fig.suptitle(title, fontsize=10)
    return _save_figure(fig, path)


def _dist_arrays(name: str, d: Mapping[str, Any]) -> dict[str, np.ndarray]:
    for key in ("dist_origin_image", "is_forget"):
        if key not in d:
            raise ValueError(f"norm histogram input {name!r} has no {key!r} array")
    out = {"is_forget": np.asarray(d["is_forget"], dtype=bool)}
    for key in ("dist_origin_image", "dist_origin_text"):
        if key in d:
            arr = np.asarray(d[key], dtype=np.float64)
            if arr.shape != out["is_forget"].shape:
                raise ValueError(
                    f"norm histogram input {name!r}: {key} has shape {arr.shape} but is_forget "
                    f"has {out['is_forget'].shape}"
                )
            out[key] = arr
    return out


def plot_norm_histograms(
    before: dict,
    after: dict[str, dict],
    path: str,
    title: str,
) -> str:
    """Histograms of distances to the origin (MERU) of forget vs retain test images (top row) and
    their captions (bottom row, where every input has ``dist_origin_text``), for the original
    model and each entry of ``after``. Inputs hold ``(N,)`` arrays ``dist_origin_image``,
    ``is_forget`` and optionally ``dist_origin_text``. Densities, shared bins per row. Writes a
    PNG atomically; returns ``path``."""
    panels = {"original": _dist_arrays("original", before)}
    for name, d in after.items():
        panels[name] = _dist_arrays(name, d)
    kinds = ["image"]
    if all("dist_origin_text" in p for p in panels.values()):
        kinds.append("text")
    fig = _new_figure(3.0 * len(panels) + 0.5, 2.5 * len(kinds) + 0.6)
    axes = fig.subplots(len(kinds), len(panels), squeeze=False)
    for r, kind in enumerate(kinds):
        key = f"dist_origin_{kind}"
        values = np.concatenate([p[key] for p in panels.values()])
        values = values[np.isfinite(values)]
        bins = np.histogram_bin_edges(values, bins=30) if values.size else 30
        for col, (name, p) in enumerate(panels.items()):
            ax = axes[r, col]
            d, forget = p[key], p["is_forget"]
            for part, sel, colour in (
                ("retain", ~forget, "tab:blue"),
                ("forget", forget, "tab:red"),
            ):
                x = d[sel]
                x = x[np.isfinite(x)]
                if x.size:
                    ax.hist(
                        x,
                        bins=bins,
                        density=True,
                        histtype="stepfilled",
                        alpha=0.55,
                        color=colour,
                        label=f"{part} (n={x.size})",
                    )
            ax.set_title(f"{name}: {kind}s", fontsize=9)
            ax.set_xlabel("distance to origin", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.legend(fontsize=7)
        axes[r, 0].set_ylabel("density", fontsize=8)
    fig.suptitle(title, fontsize=10)
    return _save_figure(fig, path)


def plot_accuracy_vs_k(agg: list[dict], path: str) -> str:
    """FA and RA (percent, mean ± std error bars) against the number of forgotten concepts k, one
    line per (model, row) measured at >= 2 distinct k (:func:`accuracy_by_k`). Raises
    ``ValueError`` when no (model, row) qualifies. Writes a PNG atomically; returns ``path``."""
    series = {m: accuracy_by_k(agg, m) for m in ("FA", "RA")}
    if not any(series.values()):
        raise ValueError("no (model, row) has FA or RA at two or more forget-set sizes k")
    fig = _new_figure(9.0, 3.6)
    axes = fig.subplots(1, 2, squeeze=False)[0]
    ks: set[int] = set()
    # one colour per row, one line style per model, so a method reads the same in both panels
    rows = list(dict.fromkeys(row for lines in series.values() for _, row in lines))
    colours = {row: f"C{i % 10}" for i, row in enumerate(rows)}
    for ax, (metric, lines) in zip(axes, series.items(), strict=True):
        for (model, row), pts in lines.items():
            k = [p["k"] for p in pts]
            ks.update(k)
            ax.errorbar(
                k,
                [100 * p["mean"] for p in pts],
                yerr=[100 * p["std"] for p in pts],
                marker="o",
                capsize=3,
                color=colours[row],
                linestyle="--" if model == "clip" else "-",
                label=f"{model} / {row}",
            )
        ax.set_title(f"{metric} vs k", fontsize=10)
        ax.set_xlabel("forgotten concepts k", fontsize=9)
        ax.set_ylabel(f"{metric} (%)", fontsize=9)
        if lines:
            ax.legend(fontsize=7)
    for ax in axes:
        ax.set_xticks(sorted(ks))
    return _save_figure(fig, path)


# ----------------------------------------------------------------------------------------------
# The report
# ----------------------------------------------------------------------------------------------


def _slug(names: Sequence[str]) -> str:
    return "+".join(re.sub(r"[^A-Za-z0-9_-]+", "_", n).strip("_") or "x" for n in names)


def _load_npz(res: dict, run: dict) -> tuple[dict[str, np.ndarray] | None, str]:
    """The run's audit arrays, or (None, reason)."""
    rel = run.get("arrays")
    if not rel:
        return None, "no arrays path"
    path = os.path.join(os.path.dirname(res["_source"]), rel)
    if not os.path.isfile(path):
        return None, f"{rel} is missing"
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}, ""
    except (OSError, ValueError) as e:
        msg = str(e).splitlines()[0] if str(e) else repr(e)
        return None, f"{rel} is unreadable ({msg})"


def _pick_arrays(
    res: dict, runs: list[dict], required: Sequence[str]
) -> tuple[int | None, dict | None, str]:
    """The lowest seed whose npz loads and holds ``required`` keys -> (seed, arrays, "") or
    (None, None, why none did)."""
    reasons = []
    for run in sorted(runs, key=lambda r: r["seed"]):
        arrays, why = _load_npz(res, run)
        if arrays is not None:
            missing = [k for k in required if k not in arrays]
            if not missing:
                return run["seed"], arrays, ""
            why = f"{run['arrays']} lacks {', '.join(missing)}"
        reasons.append(f"seed {run['seed']}: {why}")
    return None, None, "; ".join(reasons)


def _check_arrays(kind: str, arrays: Mapping[str, np.ndarray], num_classes: int) -> str:
    """Why ``arrays`` cannot go into a ``kind`` figure ("" when they can)."""
    if kind == "align":
        shape = np.shape(arrays["alignment_matrix"])
        if shape != (num_classes, num_classes):
            return f"alignment_matrix is {shape}, not ({num_classes}, {num_classes})"
        return ""
    try:
        _dist_arrays("arrays", arrays)
    except ValueError as e:
        return str(e)
    return ""


def _figures_for(res: dict, index: int, out_dir: str) -> tuple[list[tuple[str, str]], list[str]]:
    """Alignment (and, for MERU, norm-histogram) figures of one results file, one per forget set.
    Returns ([(caption, png path)], [notes on skipped rows])."""
    model, classes = res["model"], res["class_names"]
    by_forget: dict[tuple[str, ...], dict[str, list[dict]]] = {}
    for run in res["runs"]:
        by_forget.setdefault(tuple(run["forget"]), {}).setdefault(run["row"], []).append(run)
    figures, notes = [], []
    for j, (forget, rows) in enumerate(by_forget.items()):
        label = f"{model}, forget {_forget_label(forget)}"
        stem = f"{index}_{model}_f{j}_{_slug(forget)}"
        names = sorted(rows, key=lambda r: r != "original")  # stable: original first
        if "original" not in rows:
            notes.append(f"{label}: no original run, so no before/after figures")
            continue
        specs = [("align", ("alignment_matrix",))]
        if model == "meru":
            specs.append(("norms", ("dist_origin_image", "is_forget")))
        for kind, required in specs:
            seed0, before, why = _pick_arrays(res, rows["original"], required)
            if before is None:
                notes.append(f"{label}: no {kind} figure, the original run's arrays fail ({why})")
                continue
            after = {}
            for row in names[1:]:
                seed, arrays, why = _pick_arrays(res, rows[row], required)
                if arrays is not None:
                    why = _check_arrays(kind, arrays, len(classes))
                if why:
                    notes.append(f"{label}: row {row!r} left out of the {kind} figure ({why})")
                    continue
                after[f"{row} (seed {seed})"] = arrays
            why = _check_arrays(kind, before, len(classes))
            if why:
                notes.append(f"{label}: no {kind} figure, the original run's arrays fail ({why})")
                continue
            versus = f"original seed {seed0} vs {', '.join(after) or 'no other row'}"
            if kind == "align":
                path = os.path.join(out_dir, f"align_{stem}.png")
                plot_alignment_matrices(
                    before["alignment_matrix"],
                    {n: a["alignment_matrix"] for n, a in after.items()},
                    classes,
                    path,
                    f"Alignment matrix, {label}",
                )
                caption = f"Alignment matrices, {label}: {versus}"
            else:
                path = os.path.join(out_dir, f"norms_{stem}.png")
                plot_norm_histograms(before, after, path, f"Distance to origin, {label}")
                caption = f"Distances to the origin, {label}: {versus}"
            figures.append((caption, path))
    return figures, notes


def _glossary(columns: Sequence[str]) -> list[str]:
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


def write_report(
    result_paths: Sequence[str],
    out_dir: str,
    *,
    title: str = "Unlearning report",
    columns: Sequence[str] = DEFAULT_COLUMNS,
) -> dict:
    """Loads, aggregates and writes ``report.md``, ``report.json`` and the PNG figures to
    ``out_dir`` (created; every file written atomically).

    Figures: per results file and forget set, the alignment matrices of the original model vs
    each row (the lowest seed whose npz is readable; rows without one are left out and listed in
    report.md), for MERU the distance-to-origin histograms likewise, and FA/RA vs k when some
    (model, row) was run at >= 2 forget-set sizes. Returns ``{"markdown": path, "json": path,
    "plots": [paths]}``. Bad input raises (one line) before anything is written.
    """
    results = load_results(result_paths)
    agg = aggregate(results)
    out_dir = os.path.abspath(out_dir)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise NotADirectoryError(f"--out {out_dir!r} is a file; pass a directory")
    os.makedirs(out_dir, exist_ok=True)

    figures: list[tuple[str, str]] = []
    notes: list[str] = []
    for i, res in enumerate(results):
        f, n = _figures_for(res, i, out_dir)
        figures += f
        notes += n
    if any(accuracy_by_k(agg, m) for m in ("FA", "RA")):
        path = plot_accuracy_vs_k(agg, os.path.join(out_dir, "accuracy_vs_k.png"))
        figures.append(("FA and RA vs the number of forgotten concepts k (mean ± std)", path))

    md = [f"# {title}", "", "## Inputs", ""]
    for res in results:
        seeds = res.get("seeds") or sorted({r["seed"] for r in res["runs"]})
        forgets = list(dict.fromkeys(_forget_label(r["forget"]) for r in res["runs"]))
        md.append(
            f"- `{res['_source']}`: model {res['model']}, seeds {list(seeds)}, "
            f"forget sets: {'; '.join(forgets)}"
        )
    md += [
        "",
        "Cells are mean ± sample std over seeds (a single run, e.g. `original`, shows its value "
        "alone); `n/a` = not measured or not finite.",
        "",
        "## Results",
        "",
        markdown_tables(agg, columns),
    ]
    if figures:
        md += ["## Figures", ""]
        for caption, path in figures:
            md += [f"**{caption}**", "", f"![{caption}]({os.path.basename(path)})", ""]
    if notes:
        md += ["## Skipped", ""] + [f"- {n}" for n in notes] + [""]
    md += ["## Columns", ""] + _glossary(columns) + [""]
    markdown = "\n".join(md)

    json_path = _write_text(
        os.path.join(out_dir, "report.json"),
        json.dumps(
            _jsonable(
                {
                    "title": title,
                    "results": [r["_source"] for r in results],
                    "aggregate": agg,
                    "plots": [os.path.basename(p) for _, p in figures],
                    "skipped": notes,
                }
            ),
            indent=2,
            allow_nan=False,
        )
        + "\n",
    )
    md_path = _write_text(os.path.join(out_dir, "report.md"), markdown)
    return {"markdown": md_path, "json": json_path, "plots": [p for _, p in figures]}


def _section(markdown: str, heading: str) -> str:
    """The part of ``markdown`` under ``heading`` up to the next heading of the same level."""
    lines = markdown.splitlines()
    if heading not in lines:
        return markdown
    start = lines.index(heading) + 1
    level = heading.split(" ")[0] + " "
    end = next((i for i in range(start, len(lines)) if lines[i].startswith(level)), len(lines))
    return "\n".join(lines[start:end]).strip() + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m hac_jax.report RESULTS.json [...] --out DIR [--title T]``; returns the exit
    status (2 with a one-line error on bad input)."""
    parser = argparse.ArgumentParser(
        prog="python -m hac_jax.report", description="Write an unlearning report."
    )
    parser.add_argument("results", nargs="+", help="results.json files of experiments/unlearn.py")
    parser.add_argument("--out", required=True, help="output directory (created)")
    parser.add_argument("--title", default="Unlearning report")
    parser.add_argument(
        "--columns",
        default="",
        help="comma-separated metrics for the tables ('hierarchy': the E4 set; default: the "
        "standard set)",
    )
    parser.add_argument(
        "--tables-only",
        action="store_true",
        help="print only the result tables (the files are written in full)",
    )
    args = parser.parse_args(argv)
    try:
        if args.columns == "hierarchy":
            columns = HIERARCHY_COLUMNS
        elif args.columns:
            columns = tuple(c.strip() for c in args.columns.split(",") if c.strip())
        else:
            columns = DEFAULT_COLUMNS
        paths = write_report(args.results, args.out, title=args.title, columns=columns)
    except (ValueError, FileNotFoundError, NotADirectoryError) as e:
        msg = str(e).splitlines()[0] if str(e) else repr(e)
        print(f"error: {msg}", file=sys.stderr)
        return 2
    with open(paths["markdown"], encoding="utf-8") as f:
        text = f.read()
    if args.tables_only:
        text = _section(text, "## Results")
    print(text)
    print(f"[report] markdown: {paths['markdown']}")
    print(f"[report] json: {paths['json']}")
    for p in paths["plots"]:
        print(f"[report] plot: {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
