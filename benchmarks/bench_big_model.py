"""The big-model path end to end: a MERU checkpoint in the released layout -> the converter ->
the unlearning runner on 224-px images, audited, with the unlearning step's time.

    python -m benchmarks.bench_big_model [--arch=vit_s] [--kind=meru] [--method=hac] \\
        [--steps=3] [--batch-size=8] [--images-per-class=8] [--time-steps=3] [--workdir=DIR] \\
        [--pth=FILE] [--out=bench.json]

1. ``--pth`` (default: written here) is a ``torch.save`` archive ``{"model": state_dict}`` of a
   randomly initialised model of ``--arch`` (``vit_s``, ``vit_b``, ``vit_l``: the released MERU /
   CLIP shapes), its keys, shapes and dtypes checked against the fixtures' manifest of that
   release (``tests/fixtures/meru_torch/manifest_<kind>_<arch>.json``) before it is written;
2. ``python -m checkpoints_convert`` converts it (``torch.load(weights_only=True)``);
3. a generated image folder (two groups of two classes, ``--images-per-class`` noisy colour
   images each, 224 x 224) is the data (``--config.data.name=image_folder``, stored at the
   model's input size);
4. ``python -m experiments.unlearn`` forgets one class with ``--method`` for ``--steps`` steps and
   audits the original and the unlearned model (``results.json`` in the workdir);
5. the unlearning step is timed on its own: one run of the loop from the converted model for
   ``1 + --time-steps`` steps, logging every step; ``step_s`` = the median wall time between
   consecutive log points after the first step (which holds the compilation); 0 skips it.

The last lines are ``key=value`` figures (``step_s=...``, ``img_per_s=...``, ``fa_original=...``,
``fa_unlearned=...``). The default ViT-S run takes a few minutes on 2 CPU cores; the test suite
runs the same path with the fixtures' tiny MERU file (tests/test_big_model_path.py).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MANIFESTS = os.path.join(REPO, "tests", "fixtures", "meru_torch")

# group -> class -> RGB colour of its generated images
CLASSES = {
    "animals": {"cat": (200, 60, 60), "dog": (60, 200, 60)},
    "vehicles": {"car": (60, 60, 200), "bus": (200, 200, 60)},
}
FORGET = "cat"


def random_release_state_dict(
    arch: str, kind: str, seed: int = 0, manifest: str | None = None
) -> dict[str, np.ndarray]:
    """The ``model.state_dict()`` of a randomly initialised ``kind`` model of the released
    ``arch`` (numpy arrays, torch layout), checked against the release's manifest (default
    ``MANIFESTS/manifest_<kind>_<arch>.json``; no check where there is none).

    Raises ``ValueError`` naming the first differing key when the layout differs from the
    manifest's (keys, shapes or dtypes)."""
    from hac_jax import models
    from hac_jax.models.torch_mapping import params_to_state_dict

    cfg = models.get_arch(arch, kind)
    state = params_to_state_dict(models.init_params(cfg, seed), cfg)
    path = manifest or os.path.join(MANIFESTS, f"manifest_{kind}_{arch}.json")
    if os.path.isfile(path):
        with open(path) as f:
            manifest = {e["key"]: e for e in json.load(f)["state_dict"]}
        if set(manifest) != set(state):
            diff = sorted(set(manifest) ^ set(state))
            raise ValueError(f"{kind} {arch}: keys differ from the release's manifest: {diff[:5]}")
        for key, entry in manifest.items():
            got = (list(np.shape(state[key])), str(np.asarray(state[key]).dtype))
            if got != (list(entry["shape"]), entry["dtype"]):
                raise ValueError(f"{kind} {arch}: {key} is {got}, the release has {entry}")
    return state


def write_pth(path: str, state: dict[str, np.ndarray]) -> str:
    """``torch.save({"model": OrderedDict(state)}, path)``, written whole or not at all."""
    import torch

    model = collections.OrderedDict((k, torch.from_numpy(np.array(v))) for k, v in state.items())
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp_", suffix=".pth")
    os.close(fd)
    try:
        torch.save({"model": model}, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def write_image_folder(root: str, size: int, images_per_class: int, seed: int = 0) -> str:
    """``root/<group>/<class>/<i>.png`` (:data:`CLASSES`), ``size`` x ``size`` noisy colours."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for group, classes in CLASSES.items():
        for name, colour in classes.items():
            folder = os.path.join(root, group, name)
            os.makedirs(folder, exist_ok=True)
            for i in range(images_per_class):
                noise = rng.integers(-40, 40, (size, size, 3))
                pixels = np.clip(np.asarray(colour) + noise, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(os.path.join(folder, f"{i}.png"))
    return root


def _unlearn_argv(
    args: argparse.Namespace, converted: str, root: str, size: int, work: str
) -> list[str]:
    return [
        f"--config=experiments/configs/unlearn.py:{args.kind},smoke",
        "--config.data.name=image_folder",
        f"--config.data.root={root}",
        f"--config.data.image_size={size}",
        f"--config.data.data_dir={os.path.join(work, 'tfds')}",
        f"--config.pretrained={converted}",
        f"--config.forget={FORGET}",
        f"--config.methods={args.method}",
        f"--config.steps={args.steps}",
        f"--config.method_overrides.{args.method}.steps={args.steps}",
        f"--config.batch_size={args.batch_size}",
        f"--config.eval.batch_size={args.batch_size}",
        "--config.report=false",
        f"--workdir={os.path.join(work, 'unlearn')}",
    ]


def time_step(argv: Sequence[str], method: str, steps: int) -> float:
    """Seconds per unlearning step of the runner's config ``argv`` (module docstring, 5.):
    the median of ``steps`` timed steps."""
    from hac_jax import data as hdata
    from hac_jax.config_utils import parse_command_line
    from hac_jax.models.pretrained import load_pretrained
    from hac_jax.unlearning.loop import unlearn

    config, _ = parse_command_line(list(argv), required=("workdir",))
    data = hdata.load_data(config.data)
    pre = load_pretrained(config.pretrained)
    forget = hdata.ForgetSet.of(data.hierarchy, [FORGET])
    result = unlearn(
        pre.params,
        pre.config,
        data,
        method=method,
        forget_classes=forget,
        steps=1 + steps,
        batch_size=int(config.batch_size),
        lr=1e-5,
        seed=0,
        log_every=1,
    )
    # The loop's own throughput records: the time between consecutive log points, so every
    # record after the first (which holds the compilation) is one step's wall time.
    times = [float(r["s_per_step"]) for r in result.history[1:]]
    if len(times) != steps:
        raise RuntimeError(f"expected {steps} timed records, got {len(times)}")
    return float(np.median(times))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_big_model")
    parser.add_argument("--arch", default="vit_s", help="released architecture (vit_s/b/l)")
    parser.add_argument("--kind", default="meru", choices=("meru", "clip"))
    parser.add_argument("--method", default=None, help="default: hac (MERU), ac (CLIP)")
    parser.add_argument("--steps", type=int, default=3, help="unlearning steps of the run")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--images-per-class", type=int, default=8)
    parser.add_argument("--time-steps", type=int, default=3, help="timed steps (0: no timing)")
    parser.add_argument("--pth", default=None, help="use this .pth instead of a random one")
    parser.add_argument("--workdir", default=None, help="default: a temporary directory")
    parser.add_argument("--out", default="", help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    args.method = args.method or ("hac" if args.kind == "meru" else "ac")
    for name in ("steps", "batch_size", "images_per_class"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if args.time_steps < 0:
        parser.error("--time-steps must be >= 0")
    if args.pth is not None and not os.path.isfile(args.pth):
        parser.error(f"--pth {args.pth!r} is not a file")

    from checkpoints_convert import cli as convert_cli
    from experiments import unlearn as unlearn_cli
    from hac_jax.models.pretrained import load_pretrained

    work = os.path.abspath(args.workdir or tempfile.mkdtemp(prefix="bench_big_model_"))
    os.makedirs(work, exist_ok=True)
    source = args.pth or f"random {args.kind} {args.arch} in the released layout"
    figures: dict[str, object] = {"checkpoint": source, "method": args.method}
    t = time.perf_counter()
    pth = args.pth
    if pth is None:
        pth = write_pth(
            os.path.join(work, f"{args.kind}_{args.arch}_random.pth"),
            random_release_state_dict(args.arch, args.kind),
        )
    figures["write_pth_s"] = time.perf_counter() - t

    t = time.perf_counter()
    converted = os.path.join(work, "converted")
    if convert_cli.main(["-i", pth, "-o", converted, "--overwrite", "-q"]) != 0:
        return 1
    figures["convert_s"] = time.perf_counter() - t
    import jax

    pre = load_pretrained(converted)
    size = pre.config.vision.image_size
    params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(pre.params))
    figures.update(image_size=size, params=params)
    del pre

    root = write_image_folder(os.path.join(work, "images"), size, args.images_per_class)
    run_argv = _unlearn_argv(args, converted, root, size, work)
    t = time.perf_counter()
    if unlearn_cli.main(run_argv) != 0:
        return 1
    figures["unlearn_run_s"] = time.perf_counter() - t
    with open(os.path.join(work, "unlearn", "results.json")) as f:
        results = json.load(f)
    runs = {r["row"]: r for r in results["runs"]}
    figures["fa_original"] = runs["original"]["metrics"]["FA"]
    figures["fa_unlearned"] = runs[args.method]["metrics"]["FA"]
    figures["ra_unlearned"] = runs[args.method]["metrics"]["RA"]
    if args.time_steps:
        step_s = time_step(run_argv, args.method, args.time_steps)
        figures.update(step_s=step_s, img_per_s=args.batch_size / step_s)
    figures["workdir"] = work
    if args.out:
        from hac_jax.files import write_text

        write_text(args.out, json.dumps(figures, indent=2) + "\n")
    for key, value in figures.items():
        print(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
