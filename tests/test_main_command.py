"""The README main command end to end, shrunk (SMOKE=1: generated data, tiny models)."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _main(runs: pathlib.Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "SMOKE": "1", "RUNS": str(runs)}
    return subprocess.run(
        ["bash", "scripts/main.sh"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_main_command_smoke_runs_the_comparison(tmp_path):
    # Reuse of finished runs is tested where it lives: tests/test_unlearn_runner.py (cached
    # unlearning runs) and tests/test_train.py (a finished pretraining run is left as it is).
    runs = tmp_path / "runs"
    first = _main(runs)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    out = first.stdout
    for row in ("clip / original", "clip / retrain", "clip / ac", "meru / retrain", "meru / hac"):
        # (SMOKE runs Retrain and AC / HAC only; the full command adds FT, GA and AC on MERU)
        assert f"| {row} |" in out, out[-3000:]
    # the distance of each method to Retrain, with the forget-score KS distance
    distance = out[out.index("### Distance to Retrain") :]
    assert "forget-score KS" in distance, distance
    assert "| circle (k=1) | clip / ac | 0.0 |" in distance, distance
    report = runs / "main_report" / "report.md"
    assert report.is_file() and f"report (tables, plots): {report}" in out.replace("//", "/")
    for model in ("clip", "meru"):
        res = json.loads((runs / f"main_{model}" / "results.json").read_text())
        assert res["model"] == model and res["forget_sets"] == [["circle"]]
        rows = {r["row"] for r in res["runs"]}
        assert rows == {"original", "retrain", "hac" if model == "meru" else "ac"}
    # Retrain is the pretraining recipe without the forgotten class
    # (the Retrain directory name ends in the run's fingerprint key)
    (retrain_dir,) = (runs / "retrain").glob("meru_circle_s0_*")
    cfg = json.loads((retrain_dir / "config.json").read_text())
    assert cfg["data"]["exclude_classes"] == "circle"
