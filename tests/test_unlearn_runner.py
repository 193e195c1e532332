"""The unlearning experiment runner: bad input fails before compute; a tiny run writes results."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from experiments import unlearn as runner
from hac_jax import models
from hac_jax.models.pretrained import save_pretrained

CONFIG = "experiments/configs/unlearn.py:{kind},smoke,data=shapes"


def _cfg(kind):
    return models.model_config(
        kind, "fmnist_xs", image_size=16, patch_size=8, vision_depth=1, embed_dim=16
    )


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    cfg = _cfg("meru")
    return str(
        save_pretrained(tmp_path_factory.mktemp("pre") / "meru", models.init_params(cfg, 7), cfg)
    )


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


def _argv(model_dir, data_dir, workdir, kind="meru", **over):
    flags = {"forget": "circle", "methods": "ft,ga", "steps": "2", "pretrained": model_dir}
    flags.update(over)
    return [
        f"--config={CONFIG.format(kind=kind)}",
        f"--workdir={workdir}",
        f"--config.data.data_dir={data_dir}",
        *(f"--config.{k}={v}" for k, v in flags.items()),
    ]


@pytest.mark.parametrize(
    ("over", "kind", "needle"),
    [
        ({"forget": "hexagon"}, "meru", "unknown concept"),
        ({"forget": ""}, "meru", "forget set is empty"),
        ({"forget": "drawings"}, "meru", "covers all"),
        ({"forget": "shapes,patterns"}, "meru", "covers all"),
        ({"methods": "ft,nosuch"}, "meru", "unknown method"),
        ({"methods": ""}, "meru", "no methods"),
        ({"pretrained": "/nonexistent/model"}, "meru", "does not exist"),
        ({}, "clip", "config says"),
    ],
)
def test_bad_input_fails_before_compute(
    pretrained, data_dir, tmp_path, capsys, monkeypatch, over, kind, needle
):
    def no_compute(*a, **k):
        raise AssertionError("compute started")

    monkeypatch.setattr(runner, "run", no_compute)
    workdir = tmp_path / "w"
    rc = runner.main(_argv(pretrained, data_dir, workdir, kind=kind, **over))
    # data preparation may draw progress bars on stderr; the error itself is one line
    errors = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert rc == 2
    assert len(errors) == 1, errors
    assert needle in errors[0], errors
    assert not workdir.exists()


def test_run_writes_results(pretrained, data_dir, tmp_path, capsys):
    workdir = tmp_path / "w"
    assert runner.main(_argv(pretrained, data_dir, workdir)) == 0
    out = capsys.readouterr().out
    with open(workdir / "results.json") as f:
        res = json.load(f)
    assert list(res["rows"]) == ["original", "ft", "ga"]
    assert res["forget_class_ids"] == [0]
    for name, row in res["rows"].items():
        for key in ("FA", "UA", "RA", "TA"):
            assert 0.0 <= row[key] <= 1.0, (name, key, row[key])
        for key in (
            "align_gap_forget",
            "align_gap_retain",
            "dist_origin_image_forget",
            "dist_origin_image_retain",
        ):
            assert isinstance(row[key], float), (name, key)
        assert row["dist_origin_image_forget"] >= 0.0
    for name in ("ft", "ga"):
        assert res["rows"][name]["steps"] == 2
        assert res["rows"][name]["seconds"] > 0
    # GA pushes the forget pairs apart, so its parameters (and audit) must differ from the original
    assert res["rows"]["ga"]["align_gap_forget"] != res["rows"]["original"]["align_gap_forget"]
    md = (workdir / "results.md").read_text()
    assert md in out
    assert md.count("\n") == 2 + 3
    ta = res["rows"]["ft"]["TA"]
    assert f"{ta:.3f}" in md.splitlines()[3]
    assert not [p for p in os.listdir(workdir) if p.startswith(".tmp_")]


def test_cross_alignment_gaps_matches_brute_force():
    from hac_jax.geometry import get_geometry
    from hac_jax.unlearning_audit import cross_alignment_gaps

    rng = np.random.default_rng(0)
    u = rng.normal(size=(9, 4)).astype(np.float32)
    v = rng.normal(size=(9, 4)).astype(np.float32)
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    labels = np.array([0, 0, 1, 1, 2, 2, 2, 3, 3])
    is_forget = labels == 0  # a single forgotten class: mismatches come from other concepts
    got = cross_alignment_gaps(u, v, labels, is_forget, get_geometry("clip"), 1.0, chunk=4)
    sim = u.astype(np.float64) @ v.T.astype(np.float64)
    for part, sel in (("forget", is_forget), ("retain", ~is_forget)):
        rows = np.flatnonzero(sel)
        matched = np.mean([sim[i, i] for i in rows])
        mism = np.mean([sim[i, j] for i in rows for j in range(9) if labels[j] != labels[i]])
        np.testing.assert_allclose(got[f"align_matched_{part}"], matched, rtol=1e-5)
        np.testing.assert_allclose(got[f"align_mismatched_{part}"], mism, rtol=1e-5)
        np.testing.assert_allclose(got[f"align_gap_{part}"], matched - mism, rtol=1e-4, atol=1e-6)
