"""Your own images from the command line: pretraining and then unlearning on a generated image
folder (``--config.data.name=image_folder --config.data.root=DIR``), the folder prepared once;
bad folders and sizes fail in one line before anything is prepared or trained."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from experiments import pretrain as pretrain_cli
from experiments import unlearn as unlearn_cli

# group -> class -> RGB colour of its images
CLASSES = {
    "animals": {"cat": (200, 60, 60), "dog": (60, 200, 60)},
    "vehicles": {"car": (60, 60, 200), "bus": (200, 200, 60)},
}
IMAGES_PER_CLASS = 8
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write_folder(root, *, image_shape=(12, 16)):
    """``root/<group>/<class>/<i>.png``: small noisy images, one colour per class."""
    rng = np.random.default_rng(0)
    for group, classes in CLASSES.items():
        for name, colour in classes.items():
            os.makedirs(root / group / name)
            for i in range(IMAGES_PER_CLASS):
                noise = rng.integers(-30, 30, (*image_shape, 3))
                pixels = np.clip(np.asarray(colour) + noise, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(root / group / name / f"{i}.png")
    return root


def _prepared_files(data_dir):
    """``{path: mtime_ns}`` of every file of every prepared data set under ``data_dir``."""
    out = {}
    for top, _, files in os.walk(data_dir):
        for name in files:
            path = os.path.join(top, name)
            out[path] = os.stat(path).st_mtime_ns
    return out


def _prepared_dirs(data_dir):
    return sorted(d for d, _, files in os.walk(data_dir) if "dataset_info.json" in files)


def _pretrain_argv(root, data_dir, workdir, *extra):
    return [
        "--config=experiments/configs/pretrain.py:clip,smoke",
        "--config.data.name=image_folder",
        f"--config.data.root={root}",
        f"--config.data.data_dir={data_dir}",
        f"--workdir={workdir}",
        *extra,
    ]


def _command(module, argv):
    """Runs ``python -m module argv`` as a user would, on one CPU device (the suite's eight fake
    devices would only slow the compiles down), sharing the suite's compilation cache."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
    done = subprocess.run(
        [sys.executable, "-m", module, *argv],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_pretrain_then_unlearn_on_an_image_folder(tmp_path):
    root = _write_folder(tmp_path / "zoo")
    data_dir, pre_dir, unlearn_dir = tmp_path / "tfds", tmp_path / "pre", tmp_path / "unlearn"
    steps = ["--config.total_steps=3", "--config.ckpt.every=3", "--config.eval.zero_shot=false"]
    _command("experiments.pretrain", _pretrain_argv(root, data_dir, pre_dir, *steps))
    with open(pre_dir / "metrics.jsonl") as f:
        assert [r["step"] for r in map(json.loads, f) if r["kind"] == "train"] == [1, 2, 3]
    export = pre_dir / "pretrained"
    with open(export / "config.json") as f:
        model_cfg = json.load(f)
    # The 12x16 images are stored at the default 28 px, and the model's input follows them.
    assert model_cfg["vision"]["image_size"] == 28
    assert (pre_dir / "fingerprint.json").is_file()
    (prepared,) = _prepared_dirs(data_dir)
    with open(os.path.join(prepared, "dataset_info.json")) as f:
        assert json.load(f)["name"] == "hier_image_folder"
    files_after_pretraining = _prepared_files(data_dir)

    argv = [
        "--config=experiments/configs/unlearn.py:clip,smoke",
        "--config.data.name=image_folder",
        f"--config.data.root={root}",
        f"--config.data.data_dir={data_dir}",
        f"--config.pretrained={export}",
        "--config.forget=cat",
        "--config.methods=ft",
        "--config.steps=2",
        "--config.report=false",
        f"--workdir={unlearn_dir}",
    ]
    _command("experiments.unlearn", argv)
    with open(unlearn_dir / "results.json") as f:
        results = json.load(f)
    assert results["class_names"] == ["cat", "dog", "bus", "car"]
    assert ("ft", ["cat"]) in [(r["row"], r["forget"]) for r in results["runs"]]
    # The unlearning run read the copy that pretraining prepared: nothing new, nothing rewritten.
    assert _prepared_files(data_dir) == files_after_pretraining


@pytest.mark.parametrize(
    ("extra", "stored", "model_input"),
    [
        (["--config.data.image_size=14"], 14, 14),
        (["--config.data.image_size=14", "--config.model.image_size=28"], 14, 28),
    ],
    ids=["follows_the_data", "set"],
)
def test_the_model_input_follows_the_stored_images_unless_set(tmp_path, extra, stored, model_input):
    from hac_jax.config_utils import parse_command_line
    from hac_jax.training import pretrain

    root = _write_folder(tmp_path / "zoo")
    argv = _pretrain_argv(root, tmp_path / "tfds", tmp_path / "work", *extra)
    config, flags = parse_command_line(argv, required=("workdir",))
    job = pretrain.prepare(config, flags["workdir"])  # no parameter initialised, nothing trained
    assert job.data.image_shape == (stored, stored, 3)
    assert job.model_cfg.vision.image_size == model_input
    assert job.loader[0]["image"].shape[1:3] == (model_input, model_input)


def _empty(root):
    os.makedirs(root)


def _loose_images(root):
    os.makedirs(root)
    Image.new("RGB", (8, 8)).save(root / "0.png")


def _class_and_group_side_by_side(root):
    _write_folder(root)
    os.rename(root / "animals" / "cat", root / "cat")


@pytest.mark.parametrize(
    ("make_root", "extra", "needle"),
    [
        (None, [], "data.root is not set"),
        (lambda root: None, [], "is not a directory; point --config.data.root"),
        (_empty, [], "no classes in"),
        (_loose_images, [], "holds image files directly"),
        (_class_and_group_side_by_side, [], "mixes class folders"),
        (_write_folder, ["--config.data.image_size=30"], "30 is not a multiple of patch_size 7"),
        (_write_folder, ["--config.data.image_size=0"], "data.image_size must be a positive"),
    ],
    ids=["root_unset", "root_missing", "empty", "loose_images", "mixed_layout", "patch", "size"],
)
def test_bad_folders_fail_in_one_line_before_anything_is_prepared(
    tmp_path, capsys, make_root, extra, needle
):
    root = tmp_path / "images"
    if make_root is not None:
        make_root(root)
    argv = _pretrain_argv(root, tmp_path / "tfds", tmp_path / "work", *extra)
    if make_root is None:
        argv = [a for a in argv if not a.startswith("--config.data.root=")]
    assert pretrain_cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err
    assert not (tmp_path / "work").exists()
    assert _prepared_dirs(tmp_path / "tfds") == []


def test_unlearning_reports_a_bad_folder_in_one_line(tmp_path, capsys):
    model_dir = tmp_path / "model"  # only its existence is checked before the data
    model_dir.mkdir()
    argv = [
        "--config=experiments/configs/unlearn.py:clip,smoke",
        "--config.data.name=image_folder",
        f"--config.data.root={tmp_path / 'missing'}",
        f"--config.pretrained={model_dir}",
        "--config.forget=cat",
        "--config.methods=ft",
        f"--workdir={tmp_path / 'work'}",
    ]
    assert unlearn_cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"error: data.root {str(tmp_path / 'missing')!r} is not a directory; "
        "point --config.data.root at the data"
    ]
