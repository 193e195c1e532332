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
        ({"forget": " ; "}, "meru", "forget set is empty"),
        ({"forget": "drawings"}, "meru", "covers all"),
        ({"forget": "circle;shapes,patterns"}, "meru", "covers all"),
        ({"methods": "ft,nosuch"}, "meru", "unknown method"),
        ({"methods": ""}, "meru", "no methods"),
        ({"methods": "ft,ft"}, "meru", "twice"),
        ({"methods": "hac"}, "clip", "config says"),
        ({"seeds": "0,x"}, "meru", "seeds must be integers"),
        ({"seeds": "1,1"}, "meru", "distinct"),
        ({"methods": "retrain"}, "meru", "pretraining config"),
        ({"method_overrides.ac.alpha": "-1", "methods": "ac"}, "meru", "alpha"),
        ({"pretrained": "/nonexistent/model"}, "meru", "does not exist"),
        ({"model_switches.attention": "fast"}, "meru", "attention 'fast'"),
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


def test_run_writes_results_and_reuses_cached_runs(
    pretrained, data_dir, tmp_path, capsys, monkeypatch
):
    workdir = tmp_path / "w"
    argv = _argv(
        pretrained, data_dir, workdir, forget="circle;circle,square", seeds="0,1", methods="ga"
    )
    assert runner.main(argv) == 0
    capsys.readouterr()
    res = json.loads((workdir / "results.json").read_text())
    assert res["forget_sets"] == [["circle"], ["circle", "square"]]
    assert res["seeds"] == [0, 1]
    rows = [(tuple(r["forget"]), r["row"], r["seed"]) for r in res["runs"]]
    expected = []
    for f in (("circle",), ("circle", "square")):
        expected.append((f, "original", 0))
        expected += [(f, "ga", s) for s in (0, 1)]
    assert rows == expected
    for r in res["runs"]:
        m = r["metrics"]
        for key in ("FA", "UA", "RA", "TA"):
            assert 0.0 <= m[key] <= 1.0, (r["row"], key, m[key])
        assert m["dist_origin_image_forget"] >= 0.0
        assert (workdir / r["arrays"]).is_file()
        if r["row"] != "original":
            assert r["steps"] == 2 and r["examples"] == 2 * 8 and r["seconds"] > 0
    by = {(tuple(r["forget"]), r["row"], r["seed"]): r for r in res["runs"]}
    # GA pushes the forget pairs apart, so its parameters (and audit) must differ from the original
    ga, orig = by[(("circle",), "ga", 0)], by[(("circle",), "original", 0)]
    assert ga["metrics"]["align_gap_forget"] != orig["metrics"]["align_gap_forget"]
    # the seed changes the data order, hence the result
    assert by[(("circle",), "ga", 1)]["metrics"] != ga["metrics"]
    assert (workdir / "report" / "report.md").is_file()
    assert not [p for p in os.listdir(workdir) if p.startswith(".tmp_")]

    # a second command needing the same runs computes nothing and writes the same results
    def no_unlearning(*a, **k):
        raise AssertionError("a cached run was recomputed")

    monkeypatch.setattr("hac_jax.unlearning.loop.unlearn", no_unlearning)
    work2 = tmp_path / "w2"
    argv2 = _argv(pretrained, data_dir, work2, forget="circle", seeds="1", methods="ga")
    argv2.append(f"--config.cache_dir={workdir / 'cache'}")
    assert runner.main(argv2) == 0
    res2 = json.loads((work2 / "results.json").read_text())
    assert [r["row"] for r in res2["runs"]] == ["original", "ga"]
    assert res2["runs"][1]["metrics"] == by[(("circle",), "ga", 1)]["metrics"]


def test_retrain_runs_the_pretraining_recipe_on_the_retain_classes(data_dir, tmp_path, capsys):
    from experiments import pretrain

    pre_dir = tmp_path / "pre"
    assert (
        pretrain.main(
            [
                "--config=experiments/configs/pretrain.py:meru,smoke,data=shapes",
                f"--workdir={pre_dir}",
                f"--config.data.data_dir={data_dir}",
                "--config.data.shapes.train_per_class=16",
                "--config.data.shapes.test_per_class=4",
            ]
        )
        == 0
    )
    workdir = tmp_path / "w"
    argv = _argv(str(pre_dir / "pretrained"), data_dir, workdir, methods="retrain")
    assert runner.main(argv) == 0
    capsys.readouterr()
    res = json.loads((workdir / "results.json").read_text())
    retrain = [r for r in res["runs"] if r["row"] == "retrain"]
    assert len(retrain) == 1
    (run_dir,) = (workdir / "retrain").glob("meru_circle_s0_*")  # named by its fingerprint
    fingerprint = json.loads((run_dir / "fingerprint.json").read_text())
    assert run_dir.name.endswith(fingerprint["key"][:12])
    cfg = json.loads((run_dir / "config.json").read_text())
    base = json.loads((pre_dir / "config.json").read_text())
    assert cfg["data"]["exclude_classes"] == "circle"
    assert cfg["total_steps"] == base["total_steps"] and cfg["optim"] == base["optim"]
    assert retrain[0]["steps"] == base["total_steps"]
    assert retrain[0]["examples"] == base["total_steps"] * base["batch_size"]
    # the retrained model is a fresh one: it differs from the original
    orig = [r for r in res["runs"] if r["row"] == "original"][0]
    assert retrain[0]["metrics"] != orig["metrics"]
    # a compute switch of the run reaches Retrain's model as well as the loaded one
    job = runner.prepare(
        runner.parse_command_line([*argv, "--config.model_switches.attention=xla"])[0], workdir
    )
    assert job.pretrained.config.attention == "xla"
    assert job.retrain_config.model.attention == "xla"


def test_cross_alignment_gaps_matches_brute_force():
    from hac_jax.eval.audit import cross_alignment_gaps
    from hac_jax.geometry import get_geometry

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


def test_pretraining_can_leave_classes_out(data_dir, tmp_path):
    from experiments.configs.pretrain import get_config
    from hac_jax.training import pretrain

    cfg = get_config("meru,smoke,data=shapes")
    cfg.data.data_dir = data_dir
    cfg.data.shapes.test_per_class = 4
    cfg.data.exclude_classes = "circle,patterns"
    job = pretrain.prepare(cfg, tmp_path / "w")
    it = iter(job.loader)
    labels = np.concatenate([next(it)["label"] for _ in range(6)])  # more than one epoch
    names = job.data.hierarchy.classes
    assert sorted({names[i] for i in labels}) == ["square", "triangle"]
    cfg.data.exclude_classes = "shapes,patterns"
    with pytest.raises(ValueError, match="no class to retain"):
        pretrain.prepare(cfg, tmp_path / "w2")


def test_cache_key_follows_what_determines_a_run(pretrained, data_dir, tmp_path, monkeypatch):
    """The unlearned model's cache key changes with a registry default, an override, the seed and
    the code; an unset placeholder option changes nothing."""
    import dataclasses
    from types import MappingProxyType

    from hac_jax.unlearning import registry

    def key_of(argv, seed=0, code=None, edit=None):
        config, flags = runner.parse_command_line(argv, required=("workdir",))
        if edit is not None:
            with config.unlocked():
                edit(config)
        job = runner.prepare(config, flags["workdir"])
        if code is not None:
            job.code = {**job.code, "unlearn": code}
        (row,) = job.rows
        settings = runner.resolved_settings(job, row, job.forget_ids[0], seed)
        return runner.model_key(job, settings), settings

    argv = _argv(pretrained, data_dir, tmp_path / "w", methods="ac")
    base, settings = key_of(argv)
    # the record holds every resolved setting, registry defaults included
    assert settings["method_cfg"] == dict(registry.get_method("ac").defaults)
    assert settings["group_captions"] == "exclude" and settings["loop"]["forget_fraction"] == 0.5
    assert key_of(argv)[0] == base  # deterministic
    # an unset placeholder (a new option nobody set) is no part of the key
    from ml_collections.config_dict import placeholder

    def add_option(config):
        config.data.new_option = placeholder(int)
        config.new_option = placeholder(str)

    assert key_of(argv, edit=add_option)[0] == base
    assert key_of(argv, seed=1)[0] != base
    assert key_of([*argv, "--config.method_overrides.ac.steps=3"])[0] != base
    assert key_of([*argv, "--config.group_captions=retain"])[0] != base
    # a compute switch changes the program, so the run (the model's fingerprint holds it)
    assert key_of([*argv, "--config.model_switches.attention=xla"])[0] != base
    assert key_of(argv, code="0" * 64)[0] != base
    # editing a registry default re-runs: the key holds the resolved value, not the overrides
    method = registry.get_method("ac")
    edited = dataclasses.replace(
        method, defaults=MappingProxyType({**method.defaults, "beta": 9.0})
    )
    monkeypatch.setitem(registry._REGISTRY, "ac", edited)
    assert key_of(argv)[0] != base


def test_rows_take_the_tuned_defaults_from_the_registry():
    from experiments.configs import unlearn as unlearn_config
    from hac_jax.unlearning import registry

    config = unlearn_config.get_config("meru,exp=e1")
    rows = {row.name: row for row in runner.build_rows(config)}
    for name in ("hac", "ac"):
        method = registry.get_method(name)
        assert rows[name].method_cfg == dict(method.defaults)
        assert {k: rows[name].loop[k] for k in ("lr", "steps")} == dict(method.loop)
    # ac-matched: AC with HAC's shared settings and budget, the rest AC's own
    hac, matched = rows["hac"], rows["ac-matched"]
    assert matched.method == "ac" and matched.loop == hac.loop
    for key in ("pos_target", "pos_margin", "forget_negatives"):
        assert matched.method_cfg[key] == hac.method_cfg[key]
    assert matched.method_cfg["beta"] == registry.get_method("ac").defaults["beta"]
    # untuned baselines run with the common loop settings
    assert rows["ft"].loop["steps"] == config.steps and rows["ft"].loop["lr"] == config.lr
    # every option of a tuned method can be set from the command line
    config.method_overrides.hac.lambda_n = 5.0
    config.method_overrides.hac.steps = 7
    rows = {row.name: row for row in runner.build_rows(config)}
    assert rows["hac"].method_cfg["lambda_n"] == 5.0 and rows["hac"].loop["steps"] == 7
    assert rows["ac-matched"].loop["steps"] == hac.loop["steps"]  # a variant keeps its own
