"""The big-model path on a small model: a MERU checkpoint in the released file layout (the
fixtures' tiny MERU, 224-px ViT) -> the converter -> the unlearning runner on a generated 224-px
image folder, audited (``benchmarks/bench_big_model.py`` runs the same path at ViT-S)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from benchmarks import bench_big_model


def test_a_released_layout_checkpoint_is_converted_unlearned_and_audited(tmp_path, fixtures_dir):
    work = tmp_path / "work"
    argv = [
        f"--pth={fixtures_dir / 'tiny_meru.pth'}",
        "--steps=2",
        "--time-steps=0",
        "--batch-size=8",
        "--images-per-class=6",
        f"--workdir={work}",
        f"--out={tmp_path / 'figures.json'}",
    ]
    assert bench_big_model.main(argv) == 0
    converted = json.loads((work / "converted" / "config.json").read_text())
    assert converted["kind"] == "meru" and converted["vision"]["image_size"] == 224
    results = json.loads((work / "unlearn" / "results.json").read_text())
    rows = {r["row"]: r for r in results["runs"]}
    assert set(rows) == {"original", "hac"}
    assert rows["hac"]["steps"] == 2 and rows["hac"]["forget"] == ["cat"]
    for row in rows.values():
        for key in ("FA", "RA", "mia_forget_nonmember", "cone_own_retain"):
            assert math.isfinite(row["metrics"][key]), (row["row"], key)
    # the unlearned model differs from the converted one it started from
    fps = {r: rows[r]["fingerprints"] for r in rows}
    assert fps["hac"] != fps["original"]
    figures = json.loads((tmp_path / "figures.json").read_text())
    assert figures["image_size"] == 224 and figures["fa_unlearned"] == rows["hac"]["metrics"]["FA"]
    assert "step_s" not in figures  # timing switched off


def test_bad_arguments_fail_before_any_work(tmp_path, capsys):
    with pytest.raises(SystemExit):
        bench_big_model.main(["--steps=0", f"--workdir={tmp_path / 'w'}"])
    assert "--steps must be positive" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


def test_random_checkpoint_layout_is_checked_against_the_manifest(fixtures_dir):
    # the tiny architecture measured against ViT-S's manifest: a layout error, named
    with pytest.raises(ValueError, match="keys differ from the release's manifest"):
        bench_big_model.random_release_state_dict(
            "tiny", "meru", manifest=str(fixtures_dir / "manifest_meru_vit_s.json")
        )
    state = bench_big_model.random_release_state_dict("tiny", "meru")  # no manifest: unchecked
    assert state["textual.attn_mask"].dtype == np.bool_
