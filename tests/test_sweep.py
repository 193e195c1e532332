"""The hyper-parameter sweep: grid, the documented selection rule, a resumable tiny sweep."""

from __future__ import annotations

import json

import pytest

from experiments import sweep
from hac_jax import models
from hac_jax.models.pretrained import save_pretrained


def _p(lr, steps, fa, ra, ks=None):
    point = {"point": {"lr": lr}, "steps": steps, "FA": fa, "RA": ra}
    return point if ks is None else {**point, "ks_forget_score": ks}


def test_grid_points_is_the_product_in_order():
    pts = sweep.grid_points({"a": [1, 2], "b": ["x"], "c": [0.5, 1.5]})
    assert pts == [
        {"a": 1, "b": "x", "c": 0.5},
        {"a": 1, "b": "x", "c": 1.5},
        {"a": 2, "b": "x", "c": 0.5},
        {"a": 2, "b": "x", "c": 1.5},
    ]
    with pytest.raises(ValueError, match="non-empty list"):
        sweep.grid_points({"a": []})


def test_select_follows_the_documented_rule():
    retrain = {"FA": 0.10, "RA": 0.85}
    tol = dict(ra_tolerance=0.02, fa_tolerance=0.02, ks_tolerance=0.01)
    pts = [
        _p(1e-3, 50, 0.00, 0.70, ks=0.05),  # forgets but loses the retain classes: inadmissible
        _p(1e-4, 300, 0.02, 0.84, ks=0.40),  # more forgotten than Retrain: far in KS
        _p(3e-4, 100, 0.09, 0.83, ks=0.105),  # within ks_tolerance of the best, fewer steps
        _p(1e-4, 200, 0.11, 0.85, ks=0.10),  # closest to Retrain's forget scores
        _p(1e-5, 100, 0.50, 0.85, ks=0.02),  # forgets too little: inadmissible (FA > 0.12)
    ]
    best, reason = sweep.select(pts, reference=retrain, **tol)
    assert best == pts[2]
    assert "3/5 points" in reason and "KS" in reason
    # a tighter tolerance keeps only the closest scores
    best, _ = sweep.select(pts, reference=retrain, **{**tol, "ks_tolerance": 0.001})
    assert best == pts[3]
    # without Retrain's scores: FA closest to the reference FA, not the lowest
    no_ks = [{k: v for k, v in p.items() if k != "ks_forget_score"} for p in pts]
    best, reason = sweep.select(no_ks, reference=retrain, **{**tol, "fa_tolerance": 0.02})
    assert best == no_ks[2] and "|FA - 0.100|" in reason
    # nothing admissible: the highest RA, said so
    best, reason = sweep.select(pts, reference={"FA": 0.0, "RA": 0.99}, **tol)
    assert best["RA"] == 0.85 and "no point" in reason
    # another distance to Retrain: the destination TV decides instead of the score KS
    tv = [dict(p, tv_destination=t) for p, t in zip(pts, (0.0, 0.1, 0.5, 0.3, 0.0), strict=True)]
    best, reason = sweep.select(tv, reference=retrain, **tol, select_by="tv_destination")
    assert best == tv[1] and "destination TV" in reason
    with pytest.raises(ValueError, match="select_by"):
        sweep.select(pts, reference=retrain, **tol, select_by="FA")


def test_tiny_sweep_writes_summary_and_resumes(tmp_path, capsys, monkeypatch):
    cfg = models.model_config(
        "clip", "fmnist_xs", image_size=16, patch_size=8, vision_depth=1, embed_dim=16
    )
    pre = str(save_pretrained(tmp_path / "pre", models.init_params(cfg, 3), cfg))
    argv = [
        "--config=experiments/configs/sweep.py:ac_clip,smoke,data=shapes",
        f"--workdir={tmp_path / 'sw'}",
        f"--config.pretrained={pre}",
        f"--config.data.data_dir={tmp_path / 'tfds'}",
    ]
    assert sweep.main(argv) == 0
    summary = json.loads((tmp_path / "sw" / "sweep.json").read_text())
    assert [(p["point"]["alpha"], p["steps"]) for p in summary["points"]] == [(1.0, 2), (1.0, 4)]
    for p in summary["points"]:
        assert 0.0 <= p["FA"] <= 1.0 and 0.0 <= p["RA"] <= 1.0
    assert summary["chosen"] in summary["points"]
    assert "(chosen)" in (tmp_path / "sw" / "sweep.md").read_text()
    lines = (tmp_path / "sw" / "points.jsonl").read_text().splitlines()
    assert len(lines) == 2

    # every point is measured already: a second call trains nothing and chooses the same
    def no_unlearning(*a, **k):
        raise AssertionError("a measured point was recomputed")

    monkeypatch.setattr("hac_jax.unlearning.loop.unlearn", no_unlearning)
    assert sweep.main(argv) == 0
    again = json.loads((tmp_path / "sw" / "sweep.json").read_text())
    assert again["chosen"] == summary["chosen"]
    assert len((tmp_path / "sw" / "points.jsonl").read_text().splitlines()) == 2


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("--config.grid.alpha=[-1.0]", "error: alpha must be a finite weight >= 0"),
        ("--config.eval_steps=[0]", "error: eval_steps must be positive"),
        ("--config.select_by=FA", "error: select_by must be one of"),
    ],
)
def test_bad_sweep_fails_before_compute(tmp_path, capsys, override, needle):
    argv = [
        "--config=experiments/configs/sweep.py:ac_clip,smoke,data=shapes",
        f"--workdir={tmp_path / 'sw'}",
        "--config.pretrained=/nonexistent",
        override,
    ]
    assert sweep.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(needle), err
    assert not (tmp_path / "sw").exists()


def test_unknown_grid_key_is_named(tmp_path):
    from experiments.configs.sweep import get_config

    config = get_config("hac_meru,smoke,data=shapes")
    with config.grid.unlocked():
        config.grid.nosuch = [1]
    with pytest.raises(ValueError, match="grid or base key 'nosuch' is neither"):
        sweep.run(config, str(tmp_path / "sw"))
    assert not (tmp_path / "sw").exists()
