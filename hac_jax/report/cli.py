"""The report's command line (``python -m hac_jax.report``).

Write a report of results files::

    python -m hac_jax.report runs/unlearn_clip/results.json runs/unlearn_meru/results.json \\
        --out runs/report --title "Fashion-MNIST unlearning" [--columns hierarchy] [--tables-only]

Regenerate the generated blocks of documents (:mod:`hac_jax.report.generated`)::

    python -m hac_jax.report render RESULTS.md docs/SWEEP.md   # rewrite them in place
    python -m hac_jax.report check RESULTS.md docs/SWEEP.md    # exit 1 with a diff if any differs

Exit status 2 with a one-line error on bad input.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from hac_jax.report.document import write_report
from hac_jax.report.generated import check_file, render_file
from hac_jax.report.tables import choose_columns

__all__ = ["main"]

_DOCUMENT_COMMANDS = ("render", "check")


def _error(e: BaseException) -> int:
    msg = str(e).splitlines()[0] if str(e) else repr(e)
    print(f"error: {msg}", file=sys.stderr)
    return 2


def _blocks(count: int) -> str:
    return f"{count} generated block{'' if count == 1 else 's'}"


def _section(markdown: str, heading: str) -> str:
    """The part of ``markdown`` under ``heading`` up to the next heading of the same level."""
    lines = markdown.splitlines()
    if heading not in lines:
        return markdown
    start = lines.index(heading) + 1
    level = heading.split(" ")[0] + " "
    end = next((i for i in range(start, len(lines)) if lines[i].startswith(level)), len(lines))
    return "\n".join(lines[start:end]).strip() + "\n"


def _documents(command: str, argv: Sequence[str]) -> int:
    """``render FILE...`` / ``check FILE...``: 0 when rendered / all blocks match, 1 when a
    checked block differs (its diff is printed), 2 on bad input."""
    parser = argparse.ArgumentParser(
        prog=f"python -m hac_jax.report {command}",
        description="Rewrite the generated blocks of markdown documents from their results files."
        if command == "render"
        else "Regenerate the generated blocks of markdown documents and show any that differ.",
    )
    parser.add_argument("documents", nargs="+", help="markdown files with generated blocks")
    args = parser.parse_args(argv)
    status = 0
    for path in args.documents:
        try:
            if command == "render":
                result = render_file(path)
                print(
                    f"[report] {path}: {_blocks(result.blocks)}, "
                    f"{len(result.changed_lines)} rewritten"
                )
                continue
            result, diff = check_file(path)
        except (ValueError, FileNotFoundError) as e:
            return _error(e)
        if not diff:
            print(f"[report] {path}: {_blocks(result.blocks)} match")
            continue
        lines = ", ".join(map(str, result.changed_lines))
        print(diff, end="" if diff.endswith("\n") else "\n")
        print(
            f"[report] {path}: {len(result.changed_lines)} of {_blocks(result.blocks)} differ "
            f"(opened at lines {lines}); regenerate with: python -m hac_jax.report render {path}"
        )
        status = 1
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m hac_jax.report RESULTS.json [...] --out DIR [--title T]``, or ``render`` /
    ``check`` DOCUMENT...; returns the exit status (2 with a one-line error on bad input)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in _DOCUMENT_COMMANDS:
        return _documents(argv[0], argv[1:])
    parser = argparse.ArgumentParser(
        prog="python -m hac_jax.report",
        description="Write an unlearning report.",
        epilog="Generated blocks of documents: python -m hac_jax.report render|check FILE...",
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
        columns = choose_columns(args.columns)
        paths = write_report(args.results, args.out, title=args.title, columns=columns)
    except (ValueError, FileNotFoundError, NotADirectoryError) as e:
        return _error(e)
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
