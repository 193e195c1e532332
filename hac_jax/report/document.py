"""The report of a set of results files: ``report.md``, ``report.json`` and the figures.

Every output file is written atomically (:mod:`hac_jax.files`), so a failed run never leaves a
half-written file behind; bad input raises (one line) before anything is written.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from hac_jax.eval.metrics import to_jsonable
from hac_jax.files import write_text
from hac_jax.report.plots import figures_for_results, plot_accuracy_vs_k
from hac_jax.report.results import load_results
from hac_jax.report.tables import (
    DEFAULT_COLUMNS,
    DISTANCE_COLUMNS,
    accuracy_by_k,
    aggregate,
    column_glossary,
    distance_table,
    forget_label,
    markdown_tables,
)

__all__ = ["write_report"]


def _has_rows_to_compare(agg: Sequence[Mapping[str, Any]]) -> bool:
    """Whether some unlearning row shares a model and forget set with a Retrain row."""
    retrained = {(e["model"], tuple(e["forget"])) for e in agg if e["row"] == "retrain"}
    return any(
        (e["model"], tuple(e["forget"])) in retrained
        for e in agg
        if e["row"] not in ("original", "retrain")
    )


def write_report(
    result_paths: Sequence[str],
    out_dir: str,
    *,
    title: str = "Unlearning report",
    columns: Sequence[str] = DEFAULT_COLUMNS,
) -> dict:
    """Loads, aggregates and writes ``report.md``, ``report.json`` and the PNG figures to
    ``out_dir`` (created).

    report.md: the inputs, the mean ± std tables (one per forget set), the distances to Retrain
    (where some row has a Retrain to compare with), the figures, what was left out of them, and
    a glossary of the columns. Figures: per results file and forget set the before/after figures
    of :func:`hac_jax.report.plots.figures_for_results`, and FA/RA vs k when some (model, row)
    was run at >= 2 forget-set sizes. Returns ``{"markdown": path, "json": path, "plots":
    [paths]}``.
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
        f, n = figures_for_results(res, i, out_dir)
        figures += f
        notes += n
    if any(accuracy_by_k(agg, m) for m in ("FA", "RA")):
        path = plot_accuracy_vs_k(agg, os.path.join(out_dir, "accuracy_vs_k.png"))
        figures.append(("FA and RA vs the number of forgotten concepts k (mean ± std)", path))

    md = [f"# {title}", "", "## Inputs", ""]
    for res in results:
        seeds = res.get("seeds") or sorted({r["seed"] for r in res["runs"]})
        forgets = list(dict.fromkeys(forget_label(r["forget"]) for r in res["runs"]))
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
    if _has_rows_to_compare(agg):
        md += [
            "### Distance to Retrain",
            "",
            "How far each row's mean is from the same model's Retrain on that forget set: "
            "absolute differences (percentage points for fractions) and the total-variation "
            "distance of where the forgotten images go (`dest_*` shares).",
            "",
            distance_table(agg, DISTANCE_COLUMNS),
        ]
    if figures:
        md += ["## Figures", ""]
        for caption, path in figures:
            md += [f"**{caption}**", "", f"![{caption}]({os.path.basename(path)})", ""]
    if notes:
        md += ["## Skipped", ""] + [f"- {n}" for n in notes] + [""]
    md += ["## Columns", ""] + column_glossary(columns) + [""]
    markdown = "\n".join(md)

    json_path = write_text(
        os.path.join(out_dir, "report.json"),
        json.dumps(
            to_jsonable(
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
    md_path = write_text(os.path.join(out_dir, "report.md"), markdown)
    return {"markdown": md_path, "json": json_path, "plots": [p for _, p in figures]}
