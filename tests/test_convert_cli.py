"""The checkpoint converter CLI, safe .pth reading, converted directories and load_pretrained.

Goldens come from the PyTorch reference models (tests/fixtures/meru_torch); the tiny models' head
counts are read from tiny_config.json (head counts are in no tensor shape, so the CLI needs
``--heads``/``--text-heads`` for non-released widths).
"""

import contextlib
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from io import StringIO
from pathlib import Path

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from checkpoints_convert import cli  # noqa: E402
from hac_jax.models import (  # noqa: E402  # noqa: E402
    ModelConfig,
    TextConfig,
    VisionConfig,
    build_model,
    get_arch,
    param_shapes,
    saved,
    torch_io,
)
from hac_jax.models.pretrained import load_pretrained, save_pretrained  # noqa: E402
from hac_jax.models.torch_mapping import ConversionError, params_to_state_dict  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------
# fixtures
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(fixtures_dir):
    with open(fixtures_dir / "tiny_config.json") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def head_flags(tiny):
    return [
        "--heads",
        str(tiny["visual"]["timm_kwargs"]["num_heads"]),
        "--text-heads",
        str(tiny["textual"]["heads"]),
    ]


@pytest.fixture(scope="module")
def head_kwargs(tiny):
    return {
        "heads": tiny["visual"]["timm_kwargs"]["num_heads"],
        "text_heads": tiny["textual"]["heads"],
    }


@pytest.fixture(scope="module")
def inputs(fixtures_dir):
    with np.load(fixtures_dir / "inputs.npz") as data:
        return {
            "images": data["images"].transpose(0, 2, 3, 1),  # BCHW -> NHWC
            "tokens": data["tokens_padded77"],
        }


@pytest.fixture(scope="module")
def meru_state(fixtures_dir):
    return torch.load(fixtures_dir / "tiny_meru.pth", map_location="cpu", weights_only=True)[
        "model"
    ]


def _run(argv, capsys):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def converted(fixtures_dir, head_flags, tmp_path_factory):
    """Both fixture checkpoints converted once through the CLI: ``{kind: (dir, stdout)}``."""
    out = {}
    for kind in ("meru", "clip"):
        target = tmp_path_factory.mktemp("converted") / f"tiny_{kind}"
        buf = StringIO()
        with contextlib.redirect_stdout(buf):
            code = cli.main(
                ["--input", str(fixtures_dir / f"tiny_{kind}.pth"), "--output", str(target)]
                + head_flags
            )
        assert code == 0
        out[kind] = (target, buf.getvalue())
    return out


def _expected_config(tiny, kind):
    vis, txt, top = tiny["visual"]["timm_kwargs"], tiny["textual"], tiny[kind]
    return ModelConfig(
        kind=kind,
        vision=VisionConfig(
            image_size=vis["img_size"],
            patch_size=vis["patch_size"],
            width=vis["embed_dim"],
            depth=vis["depth"],
            heads=vis["num_heads"],
        ),
        text=TextConfig(
            vocab_size=txt["vocab_size"],
            context_length=txt["context_length"],
            width=txt["width"],
            depth=txt["layers"],
            heads=txt["heads"],
        ),
        embed_dim=top["embed_dim"],
        pixel_mean=tuple(top["pixel_mean"]),
        pixel_std=tuple(top["pixel_std"]),
        **(
            {"curv_init": top["curv_init"], "learn_curv": top["learn_curv"]}
            if kind == "meru"
            else {}
        ),
    )


def _assert_same_config(got: ModelConfig, want: ModelConfig) -> None:
    """Equal configs; pixel statistics come from float32 buffers, so they need only be equal
    as float32 (0.485 and 0.48500001430511475 are the same buffer value)."""
    for name in ("pixel_mean", "pixel_std"):
        np.testing.assert_array_equal(
            np.float32(getattr(got, name)), np.float32(getattr(want, name)), err_msg=name
        )
    same_pixels = dict(pixel_mean=want.pixel_mean, pixel_std=want.pixel_std)
    assert dataclasses.replace(got, **same_pixels) == want


def _leftovers(parent: Path, name: str) -> list[str]:
    return [p.name for p in parent.iterdir() if p.name.startswith(f".{name}.")]


def _assert_one_error_line(code, out, err, *phrases):
    assert code == 2, (code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for phrase in phrases:
        assert phrase in lines[0], (phrase, lines[0])


# ------------------------------------------------------------------------------------------------
# happy paths
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["meru", "clip"])
def test_cli_writes_converted_dir(kind, converted, tiny, fixtures_dir):
    target, stdout = converted[kind]
    assert (target / saved.CONFIG_FILE).is_file() and (target / saved.PARAMS_DIR).is_dir()
    assert saved.is_converted_dir(target)
    assert _leftovers(target.parent, target.name) == []
    config = saved.config_from_dict(json.loads((target / saved.CONFIG_FILE).read_text()))
    _assert_same_config(config, _expected_config(tiny, kind))

    # Parameter count: every torch *parameter* (buffers excluded) of the reference model.
    entries = tiny["state_dict_keys"][kind]
    n_params = sum(int(np.prod(e["shape"])) for e in entries if e["kind"] == "parameter")
    info = json.loads((target / saved.INFO_FILE).read_text())
    assert info["num_params"] == n_params and info["kind"] == kind and info["arch"] == "tiny"
    assert info["source_sha256"] == torch_io.file_sha256(fixtures_dir / f"tiny_{kind}.pth")

    assert kind.upper() in stdout and "tiny" in stdout and str(target) in stdout
    assert f"{n_params:,}" in stdout
    for name, value in tiny["scalar_parameters_exp"][kind].items():
        assert re.search(rf"\b{name}\s+{value:.6g}\n", stdout), (name, stdout)
    if kind == "clip":
        root = torch.load(fixtures_dir / "tiny_clip.pth", weights_only=True)["root"].numpy()
        np.testing.assert_array_equal(np.load(target / saved.ROOT_FILE), root)
        assert "root" in stdout
    else:
        assert not (target / saved.ROOT_FILE).exists()
        assert "curv" in stdout


@pytest.mark.parametrize("source", ["dir", "pth"])
@pytest.mark.parametrize("kind", ["meru", "clip"])
def test_load_pretrained_matches_goldens(
    kind, source, converted, fixtures_dir, inputs, head_kwargs, tiny
):
    if source == "dir":
        pre = load_pretrained(converted[kind][0])
    else:
        pre = load_pretrained(fixtures_dir / f"tiny_{kind}.pth", **head_kwargs)
    assert pre.config.kind == kind and pre.kind == kind
    with np.load(fixtures_dir / f"golden_tiny_{kind}.npz") as golden:
        for project, suffix in ((True, "proj"), (False, "raw")):
            image = pre.encode_image(inputs["images"], project=project)
            text = pre.encode_text(inputs["tokens"], project=project)
            assert image.dtype == np.float32 and image.shape == golden[f"f32/image_{suffix}"].shape
            np.testing.assert_allclose(image, golden[f"f32/image_{suffix}"], rtol=1e-4, atol=1e-6)
            np.testing.assert_allclose(text, golden[f"f32/text_{suffix}"], rtol=1e-4, atol=1e-6)
        # The apply-style alternative gives the same numbers.
        applied = pre.model.apply(
            {"params": pre.params}, inputs["images"], project=True, method="encode_image"
        )
        np.testing.assert_allclose(applied, golden["f32/image_proj"], rtol=1e-4, atol=1e-6)
    if kind == "clip":
        root = torch.load(fixtures_dir / "tiny_clip.pth", weights_only=True)["root"].numpy()
        np.testing.assert_array_equal(np.asarray(pre.root), root)
    else:
        assert pre.root is None
        assert pre.curv == pytest.approx(tiny["scalar_parameters_exp"]["meru"]["curv"], rel=1e-6)


def test_encode_text_accepts_captions(converted, inputs, fixtures_dir):
    pre = load_pretrained(converted["meru"][0])
    with open(fixtures_dir / "tokenizer_cases.json") as f:
        captions = json.load(f)["captions"]
    np.testing.assert_array_equal(pre.tokenize(captions), inputs["tokens"])
    np.testing.assert_allclose(
        pre.encode_text(captions), pre.encode_text(inputs["tokens"]), rtol=1e-6, atol=1e-7
    )


def test_encode_input_errors(converted, inputs):
    pre = load_pretrained(converted["clip"][0])
    with pytest.raises(ValueError, match="transpose"):
        pre.encode_image(inputs["images"].transpose(0, 3, 1, 2))
    with pytest.raises(ValueError, match="context is 77"):
        pre.encode_text(np.zeros((2, 80), np.int32))
    with pytest.raises(ValueError, match="integer ids"):
        pre.encode_text(np.zeros((2, 5), np.float32))


@pytest.mark.slow
def test_subprocess_entry_point(fixtures_dir, head_flags, tmp_path):
    target = tmp_path / "sub" / "tiny_meru"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "checkpoints_convert",
            "--input",
            str(fixtures_dir / "tiny_meru.pth"),
            "--output",
            str(target),
            *head_flags,
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "MERU" in done.stdout and str(target) in done.stdout
    assert saved.is_converted_dir(target)
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "checkpoints_convert",
            "--input",
            str(tmp_path / "nope.pth"),
            "--output",
            str(tmp_path / "x"),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    _assert_one_error_line(bad.returncode, bad.stdout, bad.stderr, "not found", "nope.pth")
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------------------------
# checkpoint layouts
# ------------------------------------------------------------------------------------------------


def test_training_checkpoint_extra_top_level_keys_ignored(meru_state, tmp_path, capsys, head_flags):
    src = tmp_path / "train.pth"
    torch.save(
        {
            "model": meru_state,
            "optimizer": {"state": {}, "lr": 1e-3},
            "iteration": 7,
            "scheduler": {"last_epoch": 3},
        },
        src,
    )
    ckpt = torch_io.read_torch_checkpoint(src)
    assert ckpt.layout == "training" and ckpt.root is None
    assert set(ckpt.ignored_keys) == {"optimizer", "iteration", "scheduler"}
    assert list(ckpt.state_dict) == list(meru_state)
    code, out, err = _run(["-i", src, "-o", tmp_path / "out", *head_flags], capsys)
    assert code == 0, err
    assert "ignored top-level keys" in out and "optimizer" in out


def test_bare_state_dict(meru_state, tmp_path, capsys, head_flags):
    src = tmp_path / "bare.pth"
    torch.save(dict(meru_state), src)
    ckpt = torch_io.read_torch_checkpoint(src)
    assert ckpt.layout == "bare" and ckpt.ignored_keys == ()
    for key, value in meru_state.items():
        np.testing.assert_array_equal(ckpt.state_dict[key], value.numpy())
    code, out, err = _run(["-i", src, "-o", tmp_path / "out", *head_flags], capsys)
    assert code == 0, err
    assert "bare state dict" in out


def test_bare_dict_with_non_tensor_is_refused(meru_state, tmp_path, capsys):
    src = tmp_path / "mixed.pth"
    torch.save({**meru_state, "iteration": 5}, src)
    with pytest.raises(saved.CheckpointError, match="not tensors: iteration.*under the top-level"):
        torch_io.read_torch_checkpoint(src)
    code, out, err = _run(["-i", src, "-o", tmp_path / "out"], capsys)
    _assert_one_error_line(code, out, err, "iteration")
    assert not (tmp_path / "out").exists()


def test_model_entry_not_a_state_dict(tmp_path):
    src = tmp_path / "odd.pth"
    torch.save({"model": torch.zeros(3)}, src)
    with pytest.raises(saved.CheckpointError, match=r"ckpt\['model'\] is a Tensor"):
        torch_io.read_torch_checkpoint(src)


# ------------------------------------------------------------------------------------------------
# bad inputs: one error line, exit 2, nothing written
# ------------------------------------------------------------------------------------------------


class _RunsCode:
    """Unpickling this calls ``os.system`` (a stand-in for a malicious checkpoint)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_pickle_with_code_is_refused(tmp_path, capsys, zip_format):
    marker = tmp_path / "MARKER"
    src = tmp_path / "evil.pth"
    torch.save(
        {"model": {"logit_scale": torch.zeros(())}, "payload": _RunsCode(marker)},
        src,
        _use_new_zipfile_serialization=zip_format,
    )
    code, out, err = _run(["--input", src, "--output", tmp_path / "out"], capsys)
    _assert_one_error_line(code, out, err, "refused", "posix.system", "nothing was executed")
    assert not marker.exists()
    assert not (tmp_path / "out").exists()
    # Control: an unrestricted load really would run the payload, so the check above can fail.
    torch.load(src, weights_only=False)
    assert marker.exists()


def test_missing_file(tmp_path, capsys):
    code, out, err = _run(["-i", tmp_path / "absent.pth", "-o", tmp_path / "out"], capsys)
    _assert_one_error_line(code, out, err, "not found", "absent.pth")
    assert not (tmp_path / "out").exists()


def test_directory_as_input(tmp_path, capsys):
    code, out, err = _run(["-i", tmp_path, "-o", tmp_path / "out"], capsys)
    _assert_one_error_line(code, out, err, "not a file")


def test_not_a_torch_archive(tmp_path, capsys):
    src = tmp_path / "notes.pth"
    src.write_text("these are not weights\n")
    code, out, err = _run(["-i", src, "-o", tmp_path / "out"], capsys)
    _assert_one_error_line(code, out, err, "not a torch checkpoint")
    assert not (tmp_path / "out").exists()


def test_empty_file(tmp_path, capsys):
    src = tmp_path / "empty.pth"
    src.write_bytes(b"")
    code, out, err = _run(["-i", src, "-o", tmp_path / "out"], capsys)
    _assert_one_error_line(code, out, err, "empty")


def test_truncated_file(fixtures_dir, tmp_path, capsys):
    data = (fixtures_dir / "tiny_meru.pth").read_bytes()
    src = tmp_path / "cut.pth"
    src.write_bytes(data[: len(data) // 2])
    code, out, err = _run(["-i", src, "-o", tmp_path / "out"], capsys)
    _assert_one_error_line(code, out, err, "truncated or corrupt")
    assert not (tmp_path / "out").exists()


def _save_variant(meru_state, path, drop=(), add=None, replace=None):
    state = {k: v for k, v in meru_state.items() if k not in drop}
    state.update(add or {})
    state.update(replace or {})
    torch.save({"model": state}, path)
    return path


@pytest.mark.parametrize(
    "change, phrases",
    [
        ({"drop": ["visual.norm.bias"]}, ["missing keys (1)", "visual.norm.bias"]),
        (
            {"add": {"visual.head.weight": torch.zeros(10, 96)}},
            ["unexpected keys (1)", "visual.head.weight"],
        ),
        (
            {"replace": {"textual_proj.weight": torch.zeros(64, 48)}},
            ["shape mismatches (1)", "textual_proj.weight expected (48, 64) got (64, 48)"],
        ),
        (
            {
                "drop": ["visual.blocks.1.attn.qkv.bias", "textual.ln_final.weight"],
                "add": {"extra": torch.zeros(2)},
            },
            ["missing keys (2)", "unexpected keys (1)"],
        ),
    ],
    ids=["missing", "extra", "shape", "several"],
)
def test_key_and_shape_problems(meru_state, tmp_path, capsys, head_flags, change, phrases):
    src = _save_variant(meru_state, tmp_path / "bad.pth", **change)
    code, out, err = _run(["-i", src, "-o", tmp_path / "out", *head_flags], capsys)
    _assert_one_error_line(code, out, err, *phrases)
    assert not (tmp_path / "out").exists()
    assert _leftovers(tmp_path, "out") == []
    with pytest.raises(ConversionError):
        load_pretrained(src, heads=4, text_heads=4)


def test_unknown_architecture(tmp_path, capsys):
    src = tmp_path / "resnet.pth"
    torch.save({"model": {"conv1.weight": torch.zeros(8, 3, 3, 3), "fc.bias": torch.zeros(4)}}, src)
    code, out, err = _run(["-i", src, "-o", tmp_path / "out"], capsys)
    _assert_one_error_line(code, out, err, "not a MERU / CLIP-baseline state dict")
    assert not (tmp_path / "out").exists()


def test_head_count_needed_for_unreleased_width(fixtures_dir, tmp_path, capsys):
    # Width 96 has no released head count and is not a multiple of 64. The copy has no metadata
    # JSON beside it (the fixture folder's tiny_config.json would supply the counts).
    src = tmp_path / "tiny_meru.pth"
    shutil.copyfile(fixtures_dir / "tiny_meru.pth", src)
    code, out, err = _run(["-i", src, "-o", tmp_path / "out"], capsys)
    _assert_one_error_line(code, out, err, "--heads")
    code, out, err = _run(["-i", src, "-o", tmp_path / "out", "--heads", "5"], capsys)
    _assert_one_error_line(code, out, err, "does not divide")
    assert not (tmp_path / "out").exists()


def test_kind_override_mismatch(fixtures_dir, tmp_path, capsys, head_flags):
    code, out, err = _run(
        [
            "-i",
            fixtures_dir / "tiny_meru.pth",
            "-o",
            tmp_path / "out",
            "--kind",
            "clip",
            *head_flags,
        ],
        capsys,
    )
    _assert_one_error_line(code, out, err, "unexpected keys (3)", "curv")


def test_bad_command_line(capsys):
    assert cli.main(["--input", "x.pth"]) == 2
    assert "--output" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------
# output directory handling
# ------------------------------------------------------------------------------------------------


def test_existing_output_refused_then_overwritten(fixtures_dir, tmp_path, capsys, head_flags):
    target = tmp_path / "out"
    code, _, err = _run(["-i", fixtures_dir / "tiny_meru.pth", "-o", target, *head_flags], capsys)
    assert code == 0, err
    before = (target / saved.CONFIG_FILE).read_text()

    args = ["-i", fixtures_dir / "tiny_clip.pth", "-o", target, *head_flags]
    code, out, err = _run(args, capsys)
    _assert_one_error_line(code, out, err, "already exists", "--overwrite")
    assert (target / saved.CONFIG_FILE).read_text() == before

    code, out, err = _run([*args, "--overwrite"], capsys)
    assert code == 0, err
    assert json.loads((target / saved.CONFIG_FILE).read_text())["kind"] == "clip"
    assert (target / saved.ROOT_FILE).exists()
    assert _leftovers(tmp_path, "out") == []


def test_overwrite_never_replaces_unrelated_dir(fixtures_dir, tmp_path, capsys, head_flags):
    target = tmp_path / "precious"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    code, out, err = _run(
        ["-i", fixtures_dir / "tiny_meru.pth", "-o", target, "--overwrite", *head_flags], capsys
    )
    _assert_one_error_line(code, out, err, "not a converted checkpoint")
    assert (target / "notes.txt").read_text() == "keep me"
    existing_file = tmp_path / "file"
    existing_file.write_text("x")
    code, out, err = _run(
        ["-i", fixtures_dir / "tiny_meru.pth", "-o", existing_file, "--overwrite"], capsys
    )
    _assert_one_error_line(code, out, err, "not a directory")


def test_failure_while_writing_leaves_nothing(
    fixtures_dir, tmp_path, capsys, head_flags, monkeypatch
):
    def broken_save(*args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(saved.np, "save", broken_save)
    target = tmp_path / "new_parent" / "deeper" / "out"
    code, out, err = _run(["-i", fixtures_dir / "tiny_clip.pth", "-o", target, *head_flags], capsys)
    _assert_one_error_line(code, out, err, "disk full")
    # Neither the target, nor its temp dir, nor the parents created for it remain.
    assert list(tmp_path.iterdir()) == []


def test_existing_output_checked_before_reading(tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "f").write_text("x")
    code, out, err = _run(["-i", tmp_path / "missing.pth", "-o", tmp_path / "out"], capsys)
    _assert_one_error_line(code, out, err, "already exists")


# ------------------------------------------------------------------------------------------------
# load_pretrained / save_pretrained on other sizes and bad directories
# ------------------------------------------------------------------------------------------------


def _random_params(cfg: ModelConfig, seed: int) -> dict:
    """Random parameters of the ``cfg`` model's shapes (cheaper than tracing ``init`` eagerly)."""
    rng = np.random.default_rng(seed)
    params = jax.tree.map(
        lambda s: (0.2 * rng.standard_normal(s.shape)).astype(np.float32), param_shapes(cfg)
    )
    # Scalars inside MERU's clamp ranges, so the projections see them unchanged.
    scalars = {"logit_scale": 2.5, "curv": -0.3, "visual_alpha": -1.2, "textual_alpha": -0.9}
    return {**params, **{k: np.float32(v) for k, v in scalars.items() if k in params}}


def _other_size(kind: str) -> ModelConfig:
    return ModelConfig(
        kind=kind,
        vision=VisionConfig(image_size=32, patch_size=8, width=40, depth=3, heads=5, mlp_dim=56),
        text=TextConfig(vocab_size=49408, context_length=20, width=24, depth=1, heads=3),
        embed_dim=12,
    )


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["meru", "clip"])
def test_other_sizes_through_cli_and_load_pretrained(kind, tmp_path, capsys, inputs):
    """Nothing may assume the fixture's sizes: a model of another shape round-trips."""
    cfg = _other_size(kind)
    params = _random_params(cfg, 3)
    state = {k: torch.from_numpy(np.array(v)) for k, v in params_to_state_dict(params, cfg).items()}
    src = tmp_path / f"other_{kind}.pth"
    torch.save({"model": state}, src)

    flags = ["--heads", "5", "--text-heads", "3"]
    code, out, err = _run(["-i", src, "-o", tmp_path / "out", *flags], capsys)
    assert code == 0, err
    assert "custom" in out and "width 40, depth 3, heads 5, mlp 56" in out

    images = np.random.default_rng(0).random((3, 32, 32, 3), dtype=np.float32)
    tokens = inputs["tokens"][:3, :20]  # captions of 7, 5 and 12 ids: none is cut
    apply = jax.jit(build_model(cfg).apply, static_argnames=("project", "method"))
    want_img = apply({"params": params}, images, project=True, method="encode_image")
    want_txt = apply({"params": params}, tokens, project=False, method="encode_text")
    for pre in (load_pretrained(tmp_path / "out"), load_pretrained(src, heads=5, text_heads=3)):
        _assert_same_config(pre.config, cfg)
        np.testing.assert_allclose(pre.encode_image(images), want_img, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(
            pre.encode_text(tokens, project=False), want_txt, rtol=1e-5, atol=1e-6
        )


def test_save_pretrained_round_trip(tmp_path):
    cfg = get_arch("fmnist_xs", "meru")
    params = _random_params(cfg, 1)
    path = save_pretrained(tmp_path / "mine", params, cfg)
    pre = load_pretrained(path)
    assert pre.config == cfg
    for a, b in zip(jax.tree.leaves(pre.params), jax.tree.leaves(params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(FileExistsError):
        save_pretrained(tmp_path / "mine", params, cfg)
    wrong = dataclasses.replace(cfg, embed_dim=cfg.embed_dim + 1)
    with pytest.raises(ValueError, match="do not fit"):
        save_pretrained(tmp_path / "other", params, wrong)
    assert not (tmp_path / "other").exists()


def test_load_pretrained_bad_paths(tmp_path, converted):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_pretrained(tmp_path / "nothing")
    (tmp_path / "plain").mkdir()
    with pytest.raises(saved.CheckpointError, match="not a converted checkpoint directory"):
        load_pretrained(tmp_path / "plain")
    with pytest.raises(ValueError, match="only to .pth"):
        load_pretrained(converted["meru"][0], heads=4)
    with pytest.raises(ValueError, match="unknown ModelConfig overrides"):
        load_pretrained(converted["meru"][0], colour="blue")


def test_load_pretrained_dir_with_mismatched_config(converted, tmp_path):
    copy = tmp_path / "edited"
    shutil.copytree(converted["meru"][0], copy)
    config = json.loads((copy / saved.CONFIG_FILE).read_text())
    config["embed_dim"] += 2
    (copy / saved.CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(saved.CheckpointError, match="do not match its config.json.*visual_proj"):
        load_pretrained(copy)
    config["colour"] = "blue"
    (copy / saved.CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(saved.CheckpointError, match="unknown ModelConfig fields in config: colour"):
        load_pretrained(copy)


@pytest.mark.parametrize("name", ["tiny", "vit_s", "vit_l", "fmnist_s", "fmnist_xs"])
@pytest.mark.parametrize("kind", ["meru", "clip"])
def test_config_json_round_trip(name, kind):
    cfg = get_arch(name, kind)
    assert saved.config_from_dict(json.loads(json.dumps(saved.config_to_dict(cfg)))) == cfg


@pytest.mark.parametrize("name", ["vit_s", "vit_b", "vit_l"])
@pytest.mark.parametrize("kind", ["meru", "clip"])
def test_released_layouts_need_no_flags(name, kind, fixtures_dir):
    """The released files' keys and shapes (manifests) give their architecture without flags.

    Zero-stride stand-ins carry the shapes, so nothing of ViT-L's size is allocated.
    """
    from hac_jax.models import arch_name
    from hac_jax.models.pretrained import convert_config
    from hac_jax.models.torch_mapping import check_shapes

    with open(fixtures_dir / f"manifest_{kind}_{name}.json") as f:
        manifest = json.load(f)
    state = {
        e["key"]: np.broadcast_to(np.zeros((), np.dtype(e["dtype"])), e["shape"])
        for e in manifest["state_dict"]
    }
    state["pixel_mean"] = np.float32([0.485, 0.456, 0.406]).reshape(3, 1, 1)
    state["pixel_std"] = np.float32([0.229, 0.224, 0.225]).reshape(3, 1, 1)
    cfg = convert_config(state)
    assert cfg.kind == kind and arch_name(cfg) == name
    check_shapes({k: v.shape for k, v in state.items()}, cfg)


def test_head_counts_from_metadata_json_beside_checkpoint(fixtures_dir, tmp_path, capsys):
    from hac_jax.models.pretrained import sidecar_heads

    # The fixture folder's tiny_config.json lists tiny_meru.pth in "files": no flags needed.
    assert sidecar_heads(fixtures_dir / "tiny_meru.pth") == {"heads": 4, "text_heads": 4}
    code, out, err = _run(["-i", fixtures_dir / "tiny_meru.pth", "-o", tmp_path / "out"], capsys)
    assert code == 0, err
    assert "heads 4" in out
    golden = np.load(fixtures_dir / "golden_tiny_meru.npz")
    inputs = np.load(fixtures_dir / "inputs.npz")
    pre = load_pretrained(fixtures_dir / "tiny_meru.pth")
    np.testing.assert_allclose(
        np.asarray(pre.encode_text(inputs["tokens_padded77"], project=True)),
        golden["f32/text_proj"],
        rtol=1e-4,
        atol=1e-6,
    )
    # <stem>.json in ModelConfig layout; explicit arguments still win over it.
    src = tmp_path / "model.pth"
    shutil.copyfile(fixtures_dir / "tiny_meru.pth", src)
    (tmp_path / "model.json").write_text(json.dumps({"vision": {"heads": 4}, "text": {"heads": 4}}))
    assert sidecar_heads(src) == {"heads": 4, "text_heads": 4}
    with pytest.raises(Exception, match="divide"):
        load_pretrained(src, heads=5)
    # A JSON that does not name the checkpoint is ignored.
    other = tmp_path / "elsewhere"
    other.mkdir()
    shutil.copyfile(fixtures_dir / "tiny_meru.pth", other / "a.pth")
    (other / "notes.json").write_text(json.dumps({"files": ["b.pth"], "textual": {"heads": 4}}))
    assert sidecar_heads(other / "a.pth") == {}
