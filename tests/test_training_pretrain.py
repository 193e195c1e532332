"""Pretraining: config handling, bad inputs, smoke runs, resume equality, metrics logging."""

import io
import json
import os

import jax
import numpy as np
import pytest
from conftest import module_compilation_cache

from hac_jax import config_utils
from hac_jax.training import progress

CONFIG = os.path.join(os.path.dirname(__file__), "..", "experiments", "configs", "pretrain.py")
EVALUATE_CONFIG = os.path.join(os.path.dirname(CONFIG), "evaluate.py")


# ----------------------------------------------------------------------------------------------
# Config loading and overrides
# ----------------------------------------------------------------------------------------------


def test_load_config_with_arg_and_typed_overrides():
    config = config_utils.load_config(f"{CONFIG}:clip,smoke")
    assert config.model.kind == "clip"
    assert config.total_steps < 20  # smoke switch
    config_utils.apply_overrides(
        config,
        {"total_steps": "7", "optim.lr": "3e-4", "data.caption_levels.group": "0", "seed": "5"},
    )
    assert config.total_steps == 7 and isinstance(config.total_steps, int)
    assert config.optim.lr == pytest.approx(3e-4)
    assert config.data.caption_levels["group"] == 0.0
    assert config_utils.load_config(f"{CONFIG}:meru").model.kind == "meru"


@pytest.mark.parametrize(
    "overrides,match",
    [
        ({"optim.lrr": "1"}, "unknown config key 'optim.lrr'; did you mean optim.lr"),
        ({"nope": "1"}, "unknown config key 'nope'"),
        ({"total_steps": "ten"}, "cannot parse 'ten' as int"),
        ({"optim": "1"}, "is a group"),
    ],
)
def test_bad_overrides_are_clear_errors(overrides, match):
    config = config_utils.load_config(f"{CONFIG}:meru")
    with pytest.raises(ValueError, match=match):
        config_utils.apply_overrides(config, overrides)


def test_unknown_model_name_in_config_arg():
    with pytest.raises(ValueError, match="unknown model 'siglip'"):
        config_utils.load_config(f"{CONFIG}:siglip")
    with pytest.raises(ValueError, match="unknown config word 'smok'"):
        config_utils.load_config(f"{CONFIG}:meru,smok")


def test_parse_command_line_forms_and_errors(tmp_path):
    config, flags = config_utils.parse_command_line(
        [f"--config={CONFIG}:clip,smoke", "--config.total_steps", "9", "--workdir", str(tmp_path)]
    )
    assert config.total_steps == 9 and flags["workdir"] == str(tmp_path)
    with pytest.raises(ValueError, match="missing required flag"):
        config_utils.parse_command_line([f"--config={CONFIG}:clip"])
    with pytest.raises(ValueError, match="unknown flag --workdri"):
        config_utils.parse_command_line([f"--config={CONFIG}:clip", "--workdri=x"])
    with pytest.raises(FileNotFoundError, match="config file"):
        config_utils.parse_command_line(["--config=nope.py:clip", "--workdir=x"])


# ----------------------------------------------------------------------------------------------
# Progress / metrics logging
# ----------------------------------------------------------------------------------------------


def test_progress_logs_lines_and_jsonl_without_a_tty(tmp_path):
    out = io.StringIO()
    p = progress.Progress(10, workdir=tmp_path, log_every=5, images_per_step=32, stream=out)
    for step in range(1, 11):
        p.step(step, {"loss": np.float32(10 - step), "curv": 0.5})
    p.log({"macro_acc": 0.5}, kind="eval")
    p.close()
    lines = out.getvalue().strip().splitlines()
    assert len(lines) == 3 and lines[0].startswith("[train] step=5 loss=5")
    records = progress.read_metrics(tmp_path)
    assert [r["step"] for r in records if r["kind"] == "train"] == [5, 10]
    assert records[1]["loss"] == 0.0 and records[1]["curv"] == 0.5
    assert records[1]["img_per_s"] > 0
    assert progress.read_metrics(tmp_path, "eval") == [{"kind": "eval", "macro_acc": 0.5}]
    json.dumps(records)  # plain JSON types only


def test_progress_non_main_process_writes_nothing(tmp_path):
    out = io.StringIO()
    p = progress.Progress(2, workdir=tmp_path / "w", log_every=1, is_main=False, stream=out)
    p.step(1, {"loss": 1.0})
    assert out.getvalue() == "" and not (tmp_path / "w").exists()


def test_jax_has_eight_devices():
    assert jax.device_count() == 8


# ----------------------------------------------------------------------------------------------
# Training runs (tiny model, generated data, a few steps)
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def _compilation_cache(tmp_path_factory):
    """A persistent compilation cache for this module only: repeated runs of one configuration
    (resume, command line) then reuse the compiled step instead of compiling it again."""
    with module_compilation_cache(tmp_path_factory.mktemp("jax_cache")):
        yield


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


def _smoke_config(kind, data_dir, **overrides):
    config = config_utils.load_config(f"{CONFIG}:{kind},smoke,data=shapes")
    config.data.data_dir = data_dir
    config.num_devices = 2  # a real (sharded) mesh, cheap to checkpoint
    config.total_steps = 4
    config.ckpt.every = 2
    config.log_every = 1
    config_utils.apply_overrides(config, {k: str(v) for k, v in overrides.items()})
    return config


_RUNS = {}


def _smoke_run(kind, data_dir, tmp_path_factory):
    """One full smoke run per model kind, shared by the tests below."""
    from hac_jax.training import pretrain

    if kind not in _RUNS:
        workdir = tmp_path_factory.mktemp(f"run_{kind}")
        result = pretrain.train(_smoke_config(kind, data_dir), workdir)
        _RUNS[kind] = (workdir, result)
    return _RUNS[kind]


@pytest.mark.parametrize("kind", ["clip", "meru"])
def test_smoke_pretraining_run(kind, data_dir, tmp_path_factory):
    from hac_jax import models
    from hac_jax.models import load_pretrained

    workdir, result = _smoke_run(kind, data_dir, tmp_path_factory)
    records = progress.read_metrics(workdir, "train")
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    want = {"loss", "contrastive_loss", "logit_scale", "lr", "grad_norm", "img_per_s"}
    if kind == "meru":
        want |= {"entailment_loss", "curv", "visual_alpha", "textual_alpha"}
    for r in records:
        assert want <= set(r), want - set(r)
        assert all(np.isfinite(r[k]) for k in want)
    assert records[0]["lr"] == 0.0 and records[2]["lr"] > 0  # linear warm-up from 0
    if kind == "meru":
        np.testing.assert_allclose(
            [r["loss"] for r in records],
            [r["contrastive_loss"] + 0.2 * r["entailment_loss"] for r in records],
            rtol=1e-5,
        )

    # Final export: loadable by load_pretrained, same params and config.
    pre = load_pretrained(result.export_dir)
    assert pre.config == result.model_cfg
    for a, b in zip(jax.tree.leaves(pre.params), jax.tree.leaves(result.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # pos_embed is frozen: still the sin-cos table of a fresh init; trained weights moved.
    fresh = models.init_params(result.model_cfg, 123)
    np.testing.assert_array_equal(pre.params["visual"]["pos_embed"], fresh["visual"]["pos_embed"])
    assert not np.allclose(pre.params["visual_proj"]["kernel"], fresh["visual_proj"]["kernel"])

    # Zero-shot report: logged, over the 5 classes of the generated set.
    zs = result.zero_shot
    assert zs.per_class_acc.shape == (5,) and zs.per_class_count.sum() == 40
    assert zs.metrics["macro_acc"] == pytest.approx(np.mean(zs.per_class_acc))
    (ev,) = progress.read_metrics(workdir, "eval")
    assert ev["macro_acc"] == pytest.approx(zs.metrics["macro_acc"])
    assert json.loads((workdir / "config.json").read_text())["model"]["kind"] == kind


def test_a_finished_run_is_left_as_it_is(data_dir, tmp_path_factory, capsys):
    from hac_jax.training import pretrain

    workdir, _ = _smoke_run("clip", data_dir, tmp_path_factory)
    export = workdir / "pretrained"
    before = {p: p.stat().st_mtime_ns for p in export.rglob("*") if p.is_file()}
    n_eval = len(progress.read_metrics(workdir, "eval"))
    again = pretrain.train(_smoke_config("clip", data_dir), workdir)
    assert "complete at step 4" in capsys.readouterr().out
    assert again.export_dir == str(export) and again.zero_shot is None
    # not re-exported (the files identify the model downstream) and not re-evaluated
    assert {p: p.stat().st_mtime_ns for p in export.rglob("*") if p.is_file()} == before
    assert len(progress.read_metrics(workdir, "eval")) == n_eval


def test_resume_after_interruption_matches_uninterrupted_run(data_dir, tmp_path_factory, tmp_path):
    from hac_jax.training import pretrain

    _, full = _smoke_run("meru", data_dir, tmp_path_factory)
    full_losses = [r["loss"] for r in full.history]
    config = _smoke_config("meru", data_dir)
    config.eval.zero_shot = False
    part = pretrain.train(config, tmp_path, stop_after=3)
    assert part.step == 3 and part.export_dir is None
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2", "3"]
    # A crash after step 3 but before its checkpoint: resume from step 2 and redo step 3.
    import shutil

    shutil.rmtree(tmp_path / "checkpoints" / "3")
    resumed = pretrain.train(config, tmp_path)
    assert [r["step"] for r in resumed.history] == [3, 4]
    by_step = {r["step"]: r["loss"] for r in progress.read_metrics(tmp_path, "train")}
    np.testing.assert_allclose([by_step[s] for s in range(1, 5)], full_losses, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(resumed.params), jax.tree.leaves(full.params), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


def test_sharded_steps_equal_single_device(data_dir):
    """The first steps on 8 devices (a 4 x 2 data x model mesh with sharded MLP kernels) give the
    losses and gradient norms of a 1-device run."""
    from hac_jax.training import driver, pretrain, sharding

    base = _smoke_config("clip", data_dir)
    rules = [
        (r".*/mlp/(fc1|c_fc)/kernel", (None, "model")),
        (r".*/mlp/(fc2|c_proj)/kernel", ("model", None)),
    ]
    runs = {}
    for name, mesh, n_dev, mesh_rules in [
        ("1 device", [("data", -1)], 1, []),
        ("4 data x 2 model", [("data", -1), ("model", 2)], 8, rules),
    ]:
        config = base.copy_and_resolve_references()
        config.mesh, config.num_devices, config.sharding_rules = mesh, n_dev, mesh_rules
        job = pretrain.prepare(config, "/nonexistent-unused")
        assert job.mesh.devices.size == n_dev
        state, shardings = driver.create_train_state(
            job.model, job.model_cfg, job.tx, jax.random.PRNGKey(0), job.mesh, mesh_rules
        )
        if mesh_rules:
            kernel = state["params"]["visual"]["blocks_0"]["mlp"]["fc1"]["kernel"]
            assert kernel.sharding.spec == jax.sharding.PartitionSpec(None, "model")
            assert {s.data.shape for s in kernel.addressable_shards} == {
                (kernel.shape[0], kernel.shape[1] // 2)
            }
            # Adam's moments of the kernel are placed like the kernel.
            moments = [
                x.sharding.spec
                for x in jax.tree.leaves(state["opt_state"])
                if x.shape == kernel.shape
            ]
            assert len(moments) >= 2 and set(moments) == {kernel.sharding.spec}
        step = pretrain.jit_train_step(job, shardings)
        history = []
        for i in range(3):
            batch = {k: job.loader[i][k] for k in ("image", "tokens")}
            state, metrics = step(state, sharding.global_batch(batch, job.mesh))
            history.append([float(metrics["loss"]), float(metrics["grad_norm"])])
        runs[name] = np.array(history)
    np.testing.assert_allclose(runs["4 data x 2 model"], runs["1 device"], rtol=1e-5)


def _lowered_step_text(job):
    """StableHLO of ``job``'s train step on abstract state and batch (no compile)."""
    from hac_jax.training import driver, pretrain

    init_params, _ = driver.init_fns(job.model, job.model_cfg, job.tx)
    params = jax.eval_shape(init_params, jax.random.PRNGKey(0))
    shardings = driver.state_shardings(params, job.tx, job.mesh)
    state = {
        "step": jax.ShapeDtypeStruct((), np.int32),
        "params": params,
        "opt_state": jax.eval_shape(job.tx.init, params),
        "rng": jax.eval_shape(lambda r: jax.random.split(r)[1], jax.random.PRNGKey(0)),
    }
    first = job.loader[0]
    batch = {
        k: jax.ShapeDtypeStruct((job.config.batch_size, *first[k].shape[1:]), first[k].dtype)
        for k in ("image", "tokens")
    }
    return pretrain.jit_train_step(job, shardings).lower(state, batch).as_text()


def test_donate_switch_reuses_the_state_buffers_only(data_dir):
    """``config.donate`` (default on) donates every state leaf to the step, which then deletes
    the state passed in; off, nothing is donated. The computation is the same either way, and the
    switch is not part of the settings fingerprint."""
    import re

    from hac_jax.training import driver, pretrain, sharding

    config = _smoke_config("meru", data_dir)
    assert config.donate is True
    job = pretrain.prepare(config, "/nonexistent-unused")
    donated = _lowered_step_text(job)
    kept_config = config.copy_and_resolve_references()
    kept_config.donate = False
    kept = _lowered_step_text(pretrain.prepare(kept_config, "/nonexistent-unused"))
    aliasing = re.compile(r", tf\.aliasing_output = \d+ : i32")
    state, shardings = driver.create_train_state(
        job.model, job.model_cfg, job.tx, jax.random.PRNGKey(0), job.mesh
    )
    assert len(aliasing.findall(donated)) == len(jax.tree.leaves(state))
    assert not aliasing.findall(kept)
    assert aliasing.sub("", donated) == kept
    from hac_jax.fingerprint import settings_fingerprint

    settings = [
        settings_fingerprint(pretrain._without(c.to_dict(), pretrain.NON_DETERMINING_KEYS))
        for c in (config, kept_config)
    ]
    assert settings[0] == settings[1]

    batch = {k: job.loader[0][k] for k in ("image", "tokens")}
    new_state, _ = pretrain.jit_train_step(job, shardings)(
        state, sharding.global_batch(batch, job.mesh)
    )
    assert all(x.is_deleted() for x in jax.tree.leaves(state))
    assert not any(x.is_deleted() for x in jax.tree.leaves(new_state))


def test_clamp_projection_inside_the_train_step(data_dir):
    """Scalars pushed outside MERU's ranges come back exactly to the bounds after one step."""
    from hac_jax.models import scalar_bounds
    from hac_jax.training import driver, pretrain, sharding

    # The smoke run's configuration, so the compiled step comes from the compilation cache.
    job = pretrain.prepare(_smoke_config("meru", data_dir), "/nonexistent-unused")
    state, shardings = driver.create_train_state(
        job.model, job.model_cfg, job.tx, jax.random.PRNGKey(0), job.mesh
    )
    bounds = scalar_bounds(job.model_cfg)
    outside = {"logit_scale": 6.0, "curv": 3.5, "visual_alpha": 0.7, "textual_alpha": 0.4}
    params = dict(state["params"])
    for name, value in outside.items():
        params[name] = jax.numpy.asarray(value, params[name].dtype)
    state = jax.device_put({**state, "params": params}, shardings)
    step = pretrain.jit_train_step(job, shardings)
    batch = {k: job.loader[0][k] for k in ("image", "tokens")}
    new_state, metrics = step(state, sharding.global_batch(batch, job.mesh))
    for name in outside:
        assert float(new_state["params"][name]) == pytest.approx(bounds[name][1]), name
    assert float(metrics["curv"]) == pytest.approx(10.0, rel=1e-5)  # exp(ln 10)


# ----------------------------------------------------------------------------------------------
# Bad inputs: clear errors before training starts, nothing written
# ----------------------------------------------------------------------------------------------


def test_unknown_model_name_is_rejected_before_anything_is_built(data_dir, tmp_path):
    from hac_jax.training import pretrain

    config = _smoke_config("clip", data_dir)
    config.model.kind = "siglip"
    with pytest.raises(ValueError, match="unknown model 'siglip'"):
        pretrain.prepare(config, tmp_path / "w")
    config = _smoke_config("clip", data_dir)
    config.model.arch = "vit_xxl"
    with pytest.raises(ValueError, match="unknown architecture 'vit_xxl'"):
        pretrain.prepare(config, tmp_path / "w")
    assert not (tmp_path / "w").exists()


def test_missing_data_directory(tmp_path):
    from hac_jax.training import pretrain

    config = config_utils.load_config(f"{CONFIG}:meru,smoke")
    config.data.source_dir = str(tmp_path / "no-such-dir")
    config.data.data_dir = str(tmp_path / "prepared")
    with pytest.raises(FileNotFoundError, match="no-such-dir"):
        pretrain.prepare(config, tmp_path / "w")
    config.data.name, config.data.path = "prepared", str(tmp_path / "nothing-here")
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        pretrain.prepare(config, tmp_path / "w")
    assert not (tmp_path / "w").exists()


def test_command_line_errors_and_a_short_run(data_dir, tmp_path, capsys):
    from experiments import pretrain

    args = [f"--config={CONFIG}:meru,smoke,data=shapes", f"--workdir={tmp_path / 'w'}"]
    assert pretrain.main([*args, "--config.optim.lrate=1"]) == 2
    assert "unknown config key 'optim.lrate'; did you mean optim.lr" in capsys.readouterr().err
    assert pretrain.main([*args, "--config.model.kind=siglip"]) == 2
    assert "unknown model 'siglip'" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()
    overrides = {
        "data.data_dir": data_dir,
        "num_devices": 2,
        "total_steps": 4,
        "ckpt.every": 2,
        "log_every": 1,
    }
    assert (
        pretrain.main(
            [*args, *(f"--config.{k}={v}" for k, v in overrides.items()), "--stop_after=2"]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "[train] step=2" in out and "done: step 2" in out
    assert os.listdir(tmp_path / "w" / "checkpoints") == ["2"]


def test_evaluate_command_on_the_exported_model(data_dir, tmp_path_factory, tmp_path, capsys):
    from experiments import evaluate as evaluate_cli

    _, result = _smoke_run("meru", data_dir, tmp_path_factory)
    out = tmp_path / "results.json"
    args = [
        f"--config={EVALUATE_CONFIG}:data=shapes,smoke",
        f"--config.pretrained={result.export_dir}",
        f"--config.data.data_dir={data_dir}",
        "--config.batch_size=40",
        "--config.retrieval.images=20",
        f"--out={out}",
    ]
    # The smoke data set is the 16-pixel variant.
    assert evaluate_cli.main(args) == 0
    printed = capsys.readouterr().out
    assert "zero-shot hier_shapes/test | macro_acc,top1:" in printed
    assert "retrieval (pairs) hier_shapes/test (20 images) | i2t_R@1," in printed
    assert "retrieval (concept) hier_shapes/test (20 images) | i2t_R@1," in printed
    results = json.loads(out.read_text())
    assert results["zero_shot"]["macro_acc"] == pytest.approx(result.zero_shot.metrics["macro_acc"])
    pairs, concept = results["retrieval"]["pairs"], results["retrieval"]["concept"]
    assert set(pairs) == set(concept) == {f"{d}_R@{k}" for d in ("i2t", "t2i") for k in (1, 5, 10)}
    # More captions count as correct by concept, so no recall can drop.
    assert all(concept[k] >= pairs[k] for k in pairs)
    assert (
        evaluate_cli.main([f"--config={EVALUATE_CONFIG}", "--config.pretrained=/no/such/dir"]) == 2
    )
    assert "not found" in capsys.readouterr().err
    # Inputs found wrong only once the model and the data are open: still one line, no results.
    out.unlink()
    for bad, message in [
        ("--config.split=validation", "has no split 'validation'; splits: ['train', 'test']"),
        ("--config.data.name=imagenet", "unknown data set 'imagenet'"),
    ]:
        assert evaluate_cli.main([*args, bad]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not out.exists()


def test_evaluate_command_help_shows_the_command_line(capsys):
    from experiments import evaluate as evaluate_cli

    assert evaluate_cli.main(["--help"]) == 0
    assert "--config=experiments/configs/evaluate.py" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv,message",
    [
        ([], "missing required flag(s) --config"),
        ([f"--config={EVALUATE_CONFIG}"], "config.pretrained is not set"),
        ([f"--config={EVALUATE_CONFIG}:data=shapes,smok"], "unknown config word 'smok'"),
        (["--config.retrieval.image=5"], "unknown config key 'retrieval.image'; did you mean"),
        (["--config.batch_size=0"], "config.batch_size must be positive, got 0"),
        (["--config.retrieval.images=-1"], "config.retrieval.images must be >= 0"),
        (["--config.retrieval.captions_per_image=0"], "captions_per_image must be positive"),
        (["--out=/no/such/dir/results.json"], "the folder of --out=/no/such/dir/results.json"),
        (["--workdir=/tmp/x"], "unknown flag --workdir"),
    ],
)
def test_evaluate_command_refuses_bad_input_before_loading_anything(argv, message, capsys):
    from experiments import evaluate as evaluate_cli

    if argv and not argv[0].startswith("--config="):
        # A well-formed command up to the one bad setting; the model path is never opened.
        argv = [f"--config={EVALUATE_CONFIG}", "--config.pretrained=/no/such/model", *argv]
    assert evaluate_cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert "/no/such/model" not in err


def test_model_switches_are_set_from_the_command_line(tmp_path, capsys):
    """The compute switches of ``ModelConfig`` are config keys (unset: the default model and the
    same run fingerprint); a bad value is a one-line error before anything runs."""
    from experiments import pretrain as cli
    from hac_jax.config_utils import parse_command_line
    from hac_jax.fingerprint import settings_fingerprint
    from hac_jax.models import model_config
    from hac_jax.training import pretrain

    args = [f"--config={CONFIG}:meru,smoke,data=shapes", f"--workdir={tmp_path / 'w'}"]
    switches = {"dtype": "bfloat16", "attention": "xla", "remat": "dots", "gelu": "erfc"}
    config, _ = parse_command_line(
        [*args, *(f"--config.model.{k}={v}" for k, v in switches.items())]
    )
    config.model.image_size = 28  # as the data would say; nothing is prepared here
    built = pretrain.build_model_config(config)
    assert {k: getattr(built, k) for k in switches} == switches
    default, _ = parse_command_line(args)
    default.model.image_size = 28
    assert pretrain.build_model_config(default) == model_config(
        **{k: v for k, v in default.model.to_dict().items() if k not in switches}
    )

    def key(c):
        return settings_fingerprint(pretrain._without(c.to_dict(), pretrain.NON_DETERMINING_KEYS))

    assert key(default) != key(config)
    unset = default.copy_and_resolve_references()
    with unset.unlocked():
        for k in switches:
            del unset.model[k]
    assert key(unset) == key(default)

    assert cli.main([*args, "--config.model.attention=flash"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: attention 'flash' is not None or one of") and err.count("\n") == 1
    assert not (tmp_path / "w").exists()
