"""Generated blocks of markdown documents (hac_jax/report/generated.py): rendered from a results
file, checked against it, and bad specs refused in one line naming the block's line."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from hac_jax import report

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = "table=main results=results/e1.json columns=FA,RA"
# the opening marker is on line 5
DOCUMENT = """# Results

Text outside the blocks, 1.5 ± 0.2, is left alone.

<!-- generated: {spec} -->
<!-- /generated -->

After the block.
"""
MAIN_TABLE = """
### Forget set: sneaker (k=1)

| model / row | FA (%) | RA (%) | n | steps | seconds | compute vs retrain |
|---|---:|---:|---:|---:|---:|---:|
| clip / original | 90.0 | 80.0 | 1 | 0 | 0.0 | 0.0% |
| clip / retrain | 0.0 ± 0.0 | 85.0 ± 1.4 | 2 | 1500 | 600.0 | 100.0% |
| clip / ac | 20.0 ± 10.0 | 82.0 ± 0.0 | 3 | 50 | 2.0 | 0.8% |
"""


@pytest.fixture
def folder(tmp_path):
    """A document folder with ``results/e1.json``: original, Retrain (2 seeds), AC (3 seeds)."""
    runs = [report.make_run(**_run("original", 0, 0.9, 0.80, 0, 0, 0.0))]
    runs += [
        report.make_run(**_run("retrain", s, 0.0, ra, 1500, 384000, 600.0))
        for s, ra in ((0, 0.84), (1, 0.86))
    ]
    runs += [
        report.make_run(**_run("ac", s, fa, 0.82, 50, 3200, 2.0))
        for s, fa in ((0, 0.1), (1, 0.2), (2, 0.3))
    ]
    (tmp_path / "results").mkdir()
    data = report.make_results(model="clip", class_names=["sneaker", "bag", "coat"], runs=runs)
    report.write_results(tmp_path / "results" / "e1.json", data)
    return tmp_path


def _run(row, seed, fa, ra, steps, examples, seconds):
    return dict(
        forget=["sneaker"],
        row=row,
        seed=seed,
        metrics={"FA": fa, "RA": ra},
        steps=steps,
        seconds=seconds,
        examples=examples,
    )


def _document(folder, *specs):
    path = folder / "RESULTS.md"
    blocks = "\n\n".join(f"<!-- generated: {s} -->\n<!-- /generated -->" for s in specs)
    path.write_text(DOCUMENT.replace("<!-- generated: {spec} -->\n<!-- /generated -->", blocks))
    return path


def test_render_fills_a_block_from_its_results(folder, capsys):
    path = _document(folder, SPEC)
    assert report.main(["render", str(path)]) == 0
    assert capsys.readouterr().out == f"[report] {path}: 1 generated block, 1 rewritten\n"
    want = DOCUMENT.format(spec=SPEC).replace(
        "-->\n<!-- /gen", "-->\n" + MAIN_TABLE + "\n<!-- /gen"
    )
    assert path.read_text() == want
    assert report.main(["render", str(path)]) == 0  # rendering again changes nothing
    assert capsys.readouterr().out.endswith("1 generated block, 0 rewritten\n")
    assert not [p for p in os.listdir(folder) if p.startswith(".tmp_")]


def test_check_passes_when_rendered_and_fails_on_an_edited_number(folder, capsys):
    path = _document(folder, SPEC)
    report.main(["render", str(path)])
    capsys.readouterr()
    assert report.main(["check", str(path)]) == 0
    assert capsys.readouterr().out == f"[report] {path}: 1 generated block match\n"

    # text outside a block is not the check's business
    path.write_text(path.read_text().replace("1.5 ± 0.2", "1.6 ± 0.2"))
    assert report.main(["check", str(path)]) == 0
    capsys.readouterr()

    edited = path.read_text().replace("| 20.0 ± 10.0 |", "| 20.0 ± 11.0 |")
    path.write_text(edited)
    assert report.main(["check", str(path)]) == 1
    out = capsys.readouterr().out
    assert f"--- {path} (as committed)\n+++ {path} (regenerated)\n" in out
    assert "\n-| clip / ac | 20.0 ± 11.0 | 82.0 ± 0.0 |" in out
    assert "\n+| clip / ac | 20.0 ± 10.0 | 82.0 ± 0.0 |" in out
    assert out.endswith(
        f"[report] {path}: 1 of 1 generated block differ (opened at lines 5); "
        f"regenerate with: python -m hac_jax.report render {path}\n"
    )
    assert path.read_text() == edited  # check writes nothing


def test_derived_tables_render_and_check(folder, capsys):
    path = _document(
        folder,
        "table=targets results=results/e1.json targets=FA<=retrain+2,RA>=retrain-2,compute<=2",
        "table=delta results=results/e1.json metrics=RA values=FA rows=ac",
        "table=distance results=results/e1.json metrics=FA,RA",
    )
    assert report.main(["render", str(path)]) == 0
    assert "3 generated blocks, 3 rewritten" in capsys.readouterr().out
    text = path.read_text()
    # FA 20.0 vs Retrain 0.0; RA 82.0 vs 85.0 (bound 83.0); compute 3200 / 384000 = 0.83%
    assert (
        "| sneaker (k=1) | clip / ac | 20.0 ± 10.0 | +20.0 (missed) | 82.0 ± 0.0 | -3.0 (missed) "
        "| 0.8 | 0.8 (met) | 1/3 |" in text
    )
    assert "| sneaker (k=1) | 20.0 ± 10.0 | +2.0 |" in text  # ΔRA of AC against the original
    assert "| sneaker (k=1) | clip / ac | 20.0 | 3.0 |" in text  # distances to Retrain
    assert report.main(["check", str(path)]) == 0
    assert capsys.readouterr().out == f"[report] {path}: 3 generated blocks match\n"


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("table=nosuch results=results/e1.json", "table='nosuch' is unknown"),
        ("results=results/e1.json", "no table=KIND"),
        ("table=main", "table=main needs results="),
        ("table=main results", "'results' is not KEY=VALUE"),
        ("table=main results=results/e1.json table=main", "'table' is given twice"),
        ("table=main results=results/e1.json columns=FA,XX", "columns: metric 'XX' is in none"),
        ("table=main results=results/e1.json columns=FA,,RA", "has an empty item"),
        ("table=main results=results/nope.json", "nope.json' does not exist"),
        ("table=main results=results/e1.json targets=FA<=2", "targets= does not apply"),
        ("table=targets results=results/e1.json targets=FA<2", "target 'FA<2'"),
        ("table=delta results=results/e1.json", "table=delta needs metrics="),
        ("table=delta results=results/e1.json metrics=RA reference=ft", "reference row 'ft'"),
        ("table=main results=results/e1.json rows=ft", "row 'ft' is in none of the results"),
    ],
)
def test_a_bad_spec_is_one_line_naming_the_block_line(folder, capsys, spec, needle):
    path = _document(folder, SPEC, spec)  # the bad block opens on line 8
    before = path.read_text()
    for command in ("render", "check"):
        assert report.main([command, str(path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {path}:8: generated block: ") and err.count("\n") == 1
        assert needle in err
    assert path.read_text() == before


def test_broken_markers_name_their_line(folder, capsys):
    path = folder / "doc.md"
    for text, line, needle in [
        ("a\n<!-- generated: table=main results=results/e1.json -->\nb\n", 2, "no '<!-- /gen"),
        ("a\n\n<!-- /generated -->\n", 3, "a closing marker without an opening one"),
        ("<!-- generated table=main -->\n<!-- /generated -->\n", 1, "a malformed marker"),
        (f"<!-- generated: {SPEC} -->\n<!-- generated: {SPEC} -->\n", 2, "a marker inside"),
    ]:
        path.write_text(text)
        assert report.main(["check", str(path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {path}:{line}: ") and needle in err, err


def test_check_from_the_command_line(folder):
    path = _document(folder, SPEC)
    result = subprocess.run(
        [sys.executable, "-m", "hac_jax.report", "check", str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    assert "\n+| clip / ac | 20.0 ± 10.0 | 82.0 ± 0.0 | 3 | 50 | 2.0 | 0.8% |" in result.stdout
    assert result.stderr == ""


def test_a_sweep_table_renders_from_its_sweep_json(folder, capsys):
    import json

    point = {
        "point": {"beta": 3.0},
        "steps": 25,
        "FA": 0.1,
        "RA": 0.8,
        "seconds": 4.0,
        "mia_forget_nonmember": 0.7,
        "mia_fit_balanced_acc": 0.55,
        "cone_own_retain": 0.9,
        "ks_forget_score": 0.125,
        "tv_destination": 0.25,
    }
    summary = {
        "method": "hac",
        "model": "meru",
        "forget": ["sandal"],
        "seed": 0,
        "original": {"FA": 0.9, "RA": 0.85},
        "retrain": {"FA": 0.05, "RA": 0.84},
        "points": [point],
        "chosen": point,
        "reason": "the one point",
    }
    (folder / "sweep.json").write_text(json.dumps(summary))
    path = folder / "SWEEP.md"
    path.write_text(
        "# Sweep\n\n<!-- generated: table=sweep results=sweep.json -->\n<!-- /generated -->\n"
    )
    assert report.main(["render", str(path)]) == 0
    text = path.read_text()
    assert (
        "| beta=3 **(chosen)** | 25 | 10.00 | 80.00 | 70.00 | 55.00 | 90.00 | 0.125 | n/a | 0.250 "
        "| 4.0 |" in text
    )
    assert report.main(["check", str(path)]) == 0
    path.write_text(text.replace("| 0.125 |", "| 0.120 |"))
    assert report.main(["check", str(path)]) == 1
    capsys.readouterr()
