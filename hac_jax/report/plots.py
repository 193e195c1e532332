"""Figures of unlearning results, written as PNG files atomically.

Concept x concept alignment matrices before and after unlearning, distances to the origin of
forget vs retain embeddings (where the audit measured them: hyperbolic models), and FA/RA
against the number of forgotten concepts ``k``. :func:`figures_for_results` draws the
before/after figures of one results file from its runs' audit arrays.

Plots use matplotlib's object API (``matplotlib.figure.Figure``), which renders with Agg without
touching pyplot's global backend.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from hac_jax.files import atomic_path
from hac_jax.report.results import read_run_arrays
from hac_jax.report.styles import model_style
from hac_jax.report.tables import accuracy_by_k, forget_label

__all__ = [
    "figures_for_results",
    "plot_accuracy_vs_k",
    "plot_alignment_matrices",
    "plot_norm_histograms",
]


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
                linestyle=model_style(model).line_style,
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
# The before/after figures of a results file
# ----------------------------------------------------------------------------------------------


def _alignment_problem(arrays: Mapping[str, np.ndarray], classes: Sequence[str]) -> str:
    shape = np.shape(arrays["alignment_matrix"])
    c = len(classes)
    return f"alignment_matrix is {shape}, not ({c}, {c})" if shape != (c, c) else ""


def _distances_problem(arrays: Mapping[str, np.ndarray], classes: Sequence[str]) -> str:
    try:
        _dist_arrays("arrays", arrays)
    except ValueError as e:
        return str(e)
    return ""


def _draw_alignment(
    before: dict, after: dict[str, dict], classes: Sequence[str], path: str, label: str
) -> str:
    matrices = {name: a["alignment_matrix"] for name, a in after.items()}
    plot_alignment_matrices(
        before["alignment_matrix"], matrices, classes, path, f"Alignment matrix, {label}"
    )
    return f"Alignment matrices, {label}"


def _draw_distances(
    before: dict, after: dict[str, dict], classes: Sequence[str], path: str, label: str
) -> str:
    plot_norm_histograms(before, after, path, f"Distance to origin, {label}")
    return f"Distances to the origin, {label}"


@dataclasses.dataclass(frozen=True)
class _BeforeAfter:
    """A figure of the original model against each row, drawn from the runs' audit arrays."""

    name: str
    """File-name prefix, and the figure's name in notes."""
    required: tuple[str, ...]
    """The array keys it reads."""
    always: bool
    """Whether a model without these arrays gets a note. Distances to the origin exist only
    where the geometry has them: their absence from the original run means "not this model"."""
    problem: Callable[[Mapping[str, np.ndarray], Sequence[str]], str]
    """Why arrays that hold the keys still cannot be drawn ("" when they can)."""
    draw: Callable[[dict, dict[str, dict], Sequence[str], str, str], str]
    """Draws (before, after, class names, path, label) and returns the caption."""


_BEFORE_AFTER = (
    _BeforeAfter("align", ("alignment_matrix",), True, _alignment_problem, _draw_alignment),
    _BeforeAfter(
        "norms", ("dist_origin_image", "is_forget"), False, _distances_problem, _draw_distances
    ),
)


def _slug(names: Sequence[str]) -> str:
    return "+".join(re.sub(r"[^A-Za-z0-9_-]+", "_", n).strip("_") or "x" for n in names)


def _pick_arrays(
    res: dict, runs: list[dict], required: Sequence[str]
) -> tuple[int | None, dict | None, str]:
    """The lowest seed whose npz loads and holds ``required`` keys -> (seed, arrays, "") or
    (None, None, why none did)."""
    reasons = []
    for run in sorted(runs, key=lambda r: r["seed"]):
        arrays, why = read_run_arrays(res, run)
        if arrays is not None:
            missing = [k for k in required if k not in arrays]
            if not missing:
                return run["seed"], arrays, ""
            why = f"{run['arrays']} lacks {', '.join(missing)}"
        reasons.append(f"seed {run['seed']}: {why}")
    return None, None, "; ".join(reasons)


def figures_for_results(
    res: dict, index: int, out_dir: str
) -> tuple[list[tuple[str, str]], list[str]]:
    """The before/after figures of one results file (``index``: its position among the report's
    inputs, for unique file names), one per forget set: alignment matrices, and distances to the
    origin where the original run's arrays hold them. Each row uses its lowest seed with
    readable arrays; rows without are left out and noted. Returns ``([(caption, png path)],
    [notes on what was left out])``."""
    model, classes = res["model"], res["class_names"]
    by_forget: dict[tuple[str, ...], dict[str, list[dict]]] = {}
    for run in res["runs"]:
        by_forget.setdefault(tuple(run["forget"]), {}).setdefault(run["row"], []).append(run)
    figures, notes = [], []
    for j, (forget, rows) in enumerate(by_forget.items()):
        label = f"{model}, forget {forget_label(forget)}"
        stem = f"{index}_{model}_f{j}_{_slug(forget)}"
        names = sorted(rows, key=lambda r: r != "original")  # stable: original first
        if "original" not in rows:
            notes.append(f"{label}: no original run, so no before/after figures")
            continue
        for figure in _BEFORE_AFTER:
            seed0, before, why = _pick_arrays(res, rows["original"], figure.required)
            if before is None:
                if figure.always:
                    notes.append(
                        f"{label}: no {figure.name} figure, the original run's arrays fail ({why})"
                    )
                continue
            after = {}
            for row in names[1:]:
                seed, arrays, why = _pick_arrays(res, rows[row], figure.required)
                if arrays is not None:
                    why = figure.problem(arrays, classes)
                if why:
                    notes.append(
                        f"{label}: row {row!r} left out of the {figure.name} figure ({why})"
                    )
                    continue
                after[f"{row} (seed {seed})"] = arrays
            why = figure.problem(before, classes)
            if why:
                notes.append(
                    f"{label}: no {figure.name} figure, the original run's arrays fail ({why})"
                )
                continue
            path = os.path.join(out_dir, f"{figure.name}_{stem}.png")
            caption = figure.draw(before, after, classes, path, label)
            versus = f"original seed {seed0} vs {', '.join(after) or 'no other row'}"
            figures.append((f"{caption}: {versus}", path))
    return figures, notes
