"""Generated blocks: the tables of a markdown document, regenerated from committed results files.

A block is the text between two marker lines; the opening marker's spec names what produces it::

    <!-- generated: table=main results=results/e1_clip_012.json columns=FA,RA -->

    ### Forget set: sneaker (k=1)
    ...
    <!-- /generated -->

``python -m hac_jax.report render FILE`` rewrites every block of FILE from its spec (the file is
replaced atomically); ``python -m hac_jax.report check FILE`` regenerates every block and exits 1
with a unified diff when any differs from the file, 0 when all match. The rendered text sits
between one blank line after the opening marker and one before the closing marker; everything
outside the blocks is left as it is.

Spec grammar (``KEY=VALUE`` items separated by spaces, each key at most once; a list is
comma-separated, with no spaces inside a value)::

    spec  := item { " " item }
    item  := "table=" KIND | "results=" list | "rows=" list | "columns=" list
           | "targets=" list | "metrics=" list | "values=" list | "reference=" ROW

* ``table`` (required): ``main``, ``targets``, ``delta``, ``distance`` or ``sweep`` (below).
* ``results`` (required): results files (:mod:`hac_jax.report.results`), relative to the
  document's folder; runs are aggregated over seeds across all of them. ``table=sweep`` reads
  one ``sweep.json`` of ``experiments/sweep.py`` instead.
* ``rows``: which lines, in this order: ``MODEL/ROW`` (one model's row, e.g. ``meru/hac``) or
  ``ROW`` (that row of every model). Default: every row; the derived tables leave out
  ``original`` and ``retrain``.
* ``columns`` (``main``): metric names, or a column set: ``default`` or ``hierarchy``
  (:data:`hac_jax.report.tables.COLUMN_SETS`). Default: ``default``.
* ``targets`` (``targets``, required): ``METRIC<=retrain+M``, ``METRIC>=retrain-M`` (Retrain's
  mean of the same model and forget set, plus or minus a margin), ``METRIC=retrain+-M`` (within M
  of it), ``METRIC<=N`` / ``METRIC>=N`` (a fixed bound); in display units, percentage points for
  fractions. ``compute`` is the examples processed in percent of Retrain's (``compute<=2``).
* ``metrics``: ``delta`` (required): the metrics to difference; ``distance``: the metrics to
  measure (default :data:`hac_jax.report.tables.DISTANCE_COLUMNS`; ``destination_tv`` is the
  total-variation distance of the destination shares).
* ``values`` (``delta``): metrics shown as they are, before the differences.
* ``reference`` (``delta``): the row subtracted, of the same model and forget set. Default
  ``original``.

Tables (:mod:`hac_jax.report.tables`): ``main``: mean ± std, one table per forget set
(:func:`~hac_jax.report.tables.markdown_tables`); ``targets``: per (forget set, row) each
target's metric, its difference to Retrain and whether it is met
(:func:`~hac_jax.report.tables.targets_table`); ``delta``: per forget set each row's metric minus
the reference row's, e.g. ΔRA (:func:`~hac_jax.report.tables.delta_table`); ``distance``: per
(forget set, row) the distance of each metric to Retrain's
(:func:`~hac_jax.report.tables.distance_table`); ``sweep``: every measured point of a sweep and
the chosen one (:func:`~hac_jax.report.tables.sweep_table`).

A spec that does not parse, names a metric or row that none of its results hold, or a results
file that is missing or malformed, is refused with a one-line error naming the block's line
(``FILE:LINE: ...``); so are an unclosed block and a closing marker without an opening one.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence

from hac_jax.files import write_text
from hac_jax.report.results import load_results
from hac_jax.report.tables import (
    COLUMN_SETS,
    COMPUTE,
    DESTINATION_TV,
    DISTANCE_COLUMNS,
    VERSUS_RETRAIN,
    Target,
    aggregate,
    delta_table,
    distance_table,
    markdown_tables,
    metric_names,
    select_entries,
    sweep_table,
    targets_table,
)

__all__ = ["BlockError", "Regenerated", "check_file", "regenerate", "render_file", "render_spec"]

_OPEN = re.compile(r"^\s*<!--\s*generated:(?P<spec>.*?)-->\s*$")
_CLOSE = re.compile(r"^\s*<!--\s*/generated\s*-->\s*$")
_MARKER_LIKE = re.compile(r"^\s*<!--\s*/?generated\b")


class BlockError(ValueError):
    """A generated block that cannot be rendered; the message is one line, ``FILE:LINE: why``."""


def _items(value: str, key: str) -> list[str]:
    items = value.split(",")
    if not all(items):
        raise ValueError(f"{key}={value!r} has an empty item")
    return items


def _known_metrics(
    names: Sequence[str], agg: Sequence[dict], key: str, extra: Sequence[str] = ()
) -> None:
    known = metric_names(agg) | set(extra)
    for name in names:
        if name not in known:
            raise ValueError(f"{key}: metric {name!r} is in none of the results")


def _needs_retrain(agg: Sequence[dict], table: str) -> None:
    if not any(e["row"] == "retrain" for e in agg):
        raise ValueError(
            f"table={table} compares with Retrain, but the results hold no retrain row"
        )


def _render_main(spec: Mapping[str, str], agg: list[dict]) -> str:
    named = spec.get("columns", "default")
    if named in COLUMN_SETS:
        columns = COLUMN_SETS[named]
    else:
        columns = _items(named, "columns")
        _known_metrics(columns, agg, "columns")
    rows = _items(spec["rows"], "rows") if "rows" in spec else None
    return markdown_tables(agg if rows is None else select_entries(agg, rows), columns)


def _render_targets(spec: Mapping[str, str], agg: list[dict]) -> str:
    targets = [Target.parse(text) for text in _items(spec["targets"], "targets")]
    _known_metrics([t.metric for t in targets], agg, "targets", extra=[COMPUTE])
    if any(t.vs_retrain or t.metric == COMPUTE for t in targets):
        _needs_retrain(agg, "targets")
    rows = _items(spec["rows"], "rows") if "rows" in spec else None
    return targets_table(agg, targets, rows)


def _render_delta(spec: Mapping[str, str], agg: list[dict]) -> str:
    metrics = _items(spec["metrics"], "metrics")
    values = _items(spec["values"], "values") if "values" in spec else []
    _known_metrics(metrics, agg, "metrics")
    _known_metrics(values, agg, "values")
    rows = _items(spec["rows"], "rows") if "rows" in spec else None
    reference = spec.get("reference", "original")
    return delta_table(agg, metrics, reference=reference, rows=rows, values=values)


def _render_distance(spec: Mapping[str, str], agg: list[dict]) -> str:
    metrics = _items(spec["metrics"], "metrics") if "metrics" in spec else list(DISTANCE_COLUMNS)
    if "metrics" in spec:
        _known_metrics(metrics, agg, "metrics", extra=[DESTINATION_TV, *VERSUS_RETRAIN])
    _needs_retrain(agg, "distance")
    rows = _items(spec["rows"], "rows") if "rows" in spec else None
    return distance_table(agg, metrics, rows)


@dataclasses.dataclass(frozen=True)
class _Table:
    """A ``table=`` kind: the keys its spec must and may hold, and how it renders."""

    required: frozenset[str]
    optional: frozenset[str]
    render: Callable[[Mapping[str, str], list[dict]], str]
    reads_sweep: bool = False  # renders one sweep.json, not aggregated results files


_TABLES: dict[str, _Table] = {
    "main": _Table(frozenset(), frozenset({"columns", "rows"}), _render_main),
    "targets": _Table(frozenset({"targets"}), frozenset({"rows"}), _render_targets),
    "delta": _Table(
        frozenset({"metrics"}), frozenset({"values", "reference", "rows"}), _render_delta
    ),
    "distance": _Table(frozenset(), frozenset({"metrics", "rows"}), _render_distance),
    "sweep": _Table(frozenset(), frozenset(), lambda spec, summary: sweep_table(summary), True),
}
_COMMON_KEYS = frozenset({"table", "results"})


def _parse_spec(text: str) -> dict[str, str]:
    spec: dict[str, str] = {}
    for item in text.split():
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise ValueError(f"{item!r} is not KEY=VALUE")
        if key in spec:
            raise ValueError(f"{key!r} is given twice")
        spec[key] = value
    if "table" not in spec:
        raise ValueError(f"no table=KIND (one of {', '.join(_TABLES)}) in {text.strip()!r}")
    table = _TABLES.get(spec["table"])
    if table is None:
        raise ValueError(f"table={spec['table']!r} is unknown; choose from {', '.join(_TABLES)}")
    missing = sorted((_COMMON_KEYS | table.required) - set(spec))
    if missing:
        raise ValueError(f"table={spec['table']} needs {missing[0]}=")
    for key in spec:
        if key not in _COMMON_KEYS | table.required | table.optional:
            allowed = sorted(_COMMON_KEYS | table.required | table.optional)
            raise ValueError(
                f"{key}= does not apply to table={spec['table']} ({', '.join(allowed)})"
            )
    return spec


def render_spec(text: str, base_dir: str) -> str:
    """The markdown a block's spec produces; ``results`` paths are relative to ``base_dir``.
    Raises a one-line ``ValueError`` or ``FileNotFoundError`` for a spec that cannot render."""
    spec = _parse_spec(text)
    paths = [os.path.join(base_dir, p) for p in _items(spec["results"], "results")]
    table = _TABLES[spec["table"]]
    if table.reads_sweep:
        if len(paths) != 1:
            raise ValueError("table=sweep reads one sweep.json")
        if not os.path.isfile(paths[0]):
            raise FileNotFoundError(f"sweep file {paths[0]!r} does not exist")
        with open(paths[0]) as f:
            summary = json.load(f)
        if not isinstance(summary, dict) or "points" not in summary or "chosen" not in summary:
            raise ValueError(f"{paths[0]}: not a sweep.json of experiments/sweep.py")
        return table.render(spec, summary)
    agg = aggregate(load_results(paths))
    return table.render(spec, agg)


@dataclasses.dataclass(frozen=True)
class Regenerated:
    """A document with every generated block rendered anew."""

    text: str
    blocks: int
    changed_lines: tuple[int, ...]
    """The opening-marker line (1-based) of each block whose text changed."""


def regenerate(text: str, base_dir: str, name: str) -> Regenerated:
    """Renders every block of the document ``text`` (``name`` is used in errors, ``base_dir``
    resolves the specs' paths). Raises :class:`BlockError`."""
    lines = text.split("\n")
    out: list[str] = []
    blocks = 0
    changed: list[int] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        opening = _OPEN.match(line)
        if not opening:
            if _MARKER_LIKE.match(line):
                what = "a closing marker without an opening one"
                if not _CLOSE.match(line):
                    what = "a malformed marker (expected '<!-- generated: SPEC -->')"
                raise BlockError(f"{name}:{i + 1}: {what}")
            out.append(line)
            i += 1
            continue
        start = i + 1
        end = start
        while end < len(lines) and not _CLOSE.match(lines[end]):
            if _MARKER_LIKE.match(lines[end]):
                raise BlockError(
                    f"{name}:{end + 1}: a marker inside the block opened at line {i + 1}"
                )
            end += 1
        if end == len(lines):
            raise BlockError(f"{name}:{i + 1}: generated block has no '<!-- /generated -->'")
        try:
            rendered = render_spec(opening["spec"], base_dir)
        except (ValueError, FileNotFoundError) as e:
            msg = str(e).splitlines()[0] if str(e) else repr(e)
            raise BlockError(f"{name}:{i + 1}: generated block: {msg}") from None
        body = ["", *rendered.rstrip("\n").split("\n"), ""]
        if body != lines[start:end]:
            changed.append(i + 1)
        out += [line, *body, lines[end]]
        blocks += 1
        i = end + 1
    return Regenerated("\n".join(out), blocks, tuple(changed))


def _read(path: str | os.PathLike) -> tuple[str, Regenerated]:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"document {path!r} does not exist")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    return text, regenerate(text, os.path.dirname(os.path.abspath(path)), path)


def render_file(path: str | os.PathLike) -> Regenerated:
    """Rewrites every generated block of the document at ``path`` (atomically, only when some
    block changed)."""
    text, result = _read(path)
    if result.text != text:
        write_text(path, result.text)
    return result


def check_file(path: str | os.PathLike) -> tuple[Regenerated, str]:
    """Regenerates the document's blocks without writing; returns the result and a unified diff
    of the file against it ("" when every block matches)."""
    text, result = _read(path)
    diff = difflib.unified_diff(
        text.splitlines(keepends=True),
        result.text.splitlines(keepends=True),
        fromfile=f"{os.fspath(path)} (as committed)",
        tofile=f"{os.fspath(path)} (regenerated)",
    )
    return result, "".join(diff)
