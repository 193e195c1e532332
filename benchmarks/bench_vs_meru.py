"""hac-jax against PyTorch MERU on the same CPU cores, measured side by side in one run.

    python -m benchmarks.bench_vs_meru --meru-dir DIR --torch-python PY [pairwise] [train] [infer]
        [--threads 2] [--repeats N] [--models meru,clip] [--smoke] [--out FILE]

``DIR`` is a checkout of facebookresearch/meru kept outside this repository (its code is
CC-BY-NC: it is imported by the PyTorch worker, never copied in); ``PY`` the Python of an
environment with torch 2.14.1, torchvision 0.29.1, timm and loguru (torch 2.13 with timm fails
on a torchvision mismatch). BENCHMARKS.md ("Against PyTorch MERU") has the set-up commands.

Benchmarks (default: all three):

* ``pairwise``: Lorentz ``pairwise_dist`` of two (4096, 512) float32 arrays, MERU's
  ``meru.lorentz.pairwise_dist`` against ours, and each framework's bare matmul
  ``x @ y.T``; the two distance matrices are compared with a float64 reference first;
* ``train``: one full train step (forward, backward, AdamW, schedule) of MERU and CLIP ViT-S
  (MERU's released configs), batch 32 of 224-px images and 77-token captions, float32: MERU's
  own model, optimizer and loop body in eager PyTorch against the project's jitted
  ``pretrain.jit_train_step``. Before timing, MERU's weights are converted with the project's
  converter and both sides must compute the same loss on the same inputs;
* ``infer``: ``encode_image`` (projected) of MERU ViT-S, batch 64.

Method: one long-lived worker process per framework (``benchmarks/vs_meru/``), each limited to
``--threads`` threads on the same cores; after warm-up (and, for JAX, compilation, reported
apart) the driver asks the two workers for one timed repeat each in turn, the order flipped
every repeat, so background load and drift hit both alike. Figures are medians of the repeats.

The last lines are ``key=value`` ratios (higher is better for hac-jax)::

    train_<kind>_speed_ratio  = hac-jax images/s / PyTorch MERU images/s
    train_<kind>_roofline     = (XLA's FLOPs of the step / step time) / best f32 matmul FLOP/s
    infer_<kind>_speed_ratio  = hac-jax images/s / PyTorch MERU images/s
    pairwise_vs_meru_ratio    = MERU's pairwise_dist time / ours
    pairwise_vs_matmul_ratio  = our bare matmul's time / our pairwise_dist's time
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence

import numpy as np

WORKERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vs_meru")
SOT, EOT, CONTEXT = 49406, 49407, 77  # CLIP's tokenizer: start / end of text, context length
KINDS = ("meru", "clip")
REPEATS = {"pairwise": 9, "train": 5, "infer": 7}  # timed repeats unless --repeats is given


class Worker:
    """One benchmark worker process (``benchmarks/vs_meru/worker_<side>.py``, ``side`` torch or
    jax) called ``name``."""

    def __init__(self, name: str, side: str, python: str, env: dict[str, str], log_path: str):
        self.name = name
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(
            [python, "-u", os.path.join(WORKERS, f"worker_{side}.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            bufsize=1,
            env=env,
        )

    def call(self, op: str, **args):
        self.proc.stdin.write(json.dumps({"op": op, "args": args}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.name} worker died; its log: {self.log.name}")
        reply = json.loads(line)
        if not reply.pop("ok"):
            raise RuntimeError(f"the {self.name} worker failed in {op}:\n{reply['error']}")
        return reply

    def close(self) -> None:
        try:
            self.call("quit")
            self.proc.wait(timeout=30)
        except Exception:
            self.proc.kill()
        self.log.close()


def _stats(times: list[float]) -> dict:
    return {"median_s": statistics.median(times), "min_s": min(times), "all_s": times}


def alternate(
    entries: Sequence[tuple[str, Worker, str]], repeats: int, label: str, settle: float = 0.0
) -> dict:
    """Times ``entries`` = ``[(key, worker, registered name)]`` ``repeats`` times each, in turn,
    the order reversed every other repeat, with ``settle`` idle seconds before each call."""
    times: dict[str, list[float]] = {key: [] for key, _, _ in entries}
    for i in range(repeats):
        for key, worker, name in entries if i % 2 == 0 else entries[::-1]:
            time.sleep(settle)
            times[key].append(worker.call("time", name=name)["s"])
        done = ", ".join(f"{k} {times[k][-1]:.3f} s" for k, _, _ in entries)
        print(f"  [{label}] repeat {i + 1}/{repeats}: {done}", flush=True)
    return {key: _stats(v) for key, v in times.items()}


class Run:
    """The workers, the settings and a scratch folder of one benchmark run."""

    def __init__(
        self,
        args: argparse.Namespace,
        workdir: str,
        torch: Worker,
        jax: Worker,
        variants: Sequence[tuple[str, Worker]] = (),
    ):
        self.args, self.workdir, self.torch, self.jax = args, workdir, torch, jax
        self.variants = list(variants)  # (label, worker) of further model settings of ours

    @property
    def ours(self) -> list[tuple[str, Worker]]:
        """``("ours", worker)``, then ``("ours[label]", worker)`` of each variant."""
        return [("ours", self.jax)] + [(f"ours[{label}]", w) for label, w in self.variants]

    @property
    def workers(self) -> list[Worker]:
        return [self.torch] + [w for _, w in self.ours]

    def time_each(self, bench: str, kind: str) -> dict:
        """Times ``<bench>/<kind>`` on MERU's worker (key ``"meru"``) and each of ours
        (:attr:`ours`) with :func:`alternate`, then frees what the set-up of ``bench`` held."""
        name = f"{bench}/{kind}"
        timing = alternate(
            [("meru", self.torch, name)] + [(key, w, name) for key, w in self.ours],
            self.args.repeats or REPEATS[bench],
            f"{bench} {kind}",
            self.args.settle,
        )
        for w in self.workers:
            w.call("free", prefix=f"{bench}/")
        return timing

    def path(self, name: str) -> str:
        return os.path.join(self.workdir, name)


def _exp_map0(v: np.ndarray, curv: float) -> np.ndarray:
    r = np.sqrt(curv) * np.linalg.norm(v, axis=-1, keepdims=True)
    return np.sinh(r) * v / r


def bench_pairwise(run: Run) -> dict:
    a = run.args
    n, d, curv = a.n, 512, 1.0
    rng = np.random.default_rng(0)
    # Typical embeddings (as benchmarks/bench_lorentz.py): exp_map0 of N(0, 1/D) vectors.
    x = _exp_map0(rng.standard_normal((n, d)) / np.sqrt(d), curv).astype(np.float32)
    y = _exp_map0(rng.standard_normal((n, d)) / np.sqrt(d), curv).astype(np.float32)
    np.save(run.path("x.npy"), x)
    np.save(run.path("y.npy"), y)
    outs = {}
    for w in (run.torch, run.jax):
        w.call(
            "setup_pairwise",
            x_path=run.path("x.npy"),
            y_path=run.path("y.npy"),
            curv=curv,
            warmup=a.warmup,
        )
        w.call("dump_pairwise", path=run.path(f"dist_{w.name}.npy"))
        outs[w.name] = np.load(run.path(f"dist_{w.name}.npy")).astype(np.float64)
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    time_x = np.sqrt(1 / curv + (x64**2).sum(-1))
    time_y = np.sqrt(1 / curv + (y64**2).sum(-1))
    inner = x64 @ y64.T - time_x[:, None] * time_y[None, :]
    ref = np.arccosh(np.maximum(-curv * inner, 1.0)) / np.sqrt(curv)
    agreement = {
        "max_abs_meru_minus_ours": float(np.max(np.abs(outs["torch"] - outs["jax"]))),
        "max_abs_meru_vs_float64": float(np.max(np.abs(outs["torch"] - ref))),
        "max_abs_ours_vs_float64": float(np.max(np.abs(outs["jax"] - ref))),
    }
    print(f"  [pairwise] agreement: {json.dumps(agreement)}", flush=True)
    timing = alternate(
        [
            ("meru.matmul", run.torch, "pairwise/matmul"),
            ("meru.pairwise_dist", run.torch, "pairwise/dist"),
            ("ours.matmul", run.jax, "pairwise/matmul"),
            ("ours.pairwise_dist", run.jax, "pairwise/dist"),
        ],
        a.repeats or REPEATS["pairwise"],
        "pairwise",
        a.settle,
    )
    for w in (run.torch, run.jax):
        w.call("free", prefix="pairwise/")
    med = {k: v["median_s"] for k, v in timing.items()}
    return {
        "n": n,
        "d": d,
        "agreement": agreement,
        "timing": timing,
        "ratios": {
            "pairwise_vs_meru_ratio": med["meru.pairwise_dist"] / med["ours.pairwise_dist"],
            "pairwise_vs_matmul_ratio": med["ours.matmul"] / med["ours.pairwise_dist"],
        },
        "matmul_flops_per_s": {
            "meru": 2 * n * n * d / med["meru.matmul"],
            "ours": 2 * n * n * d / med["ours.matmul"],
        },
    }


def _write_batch(run: Run, size: int, tag: str, tokens: bool) -> tuple[str, str | None]:
    rng = np.random.default_rng(1)
    np.save(run.path(f"{tag}_images.npy"), rng.random((size, 224, 224, 3), dtype=np.float32))
    if not tokens:
        return run.path(f"{tag}_images.npy"), None
    # 77-token captions: start, random ids, end (the end token is the largest id, found by argmax)
    tok = rng.integers(1, SOT, size=(size, CONTEXT)).astype(np.int32)
    tok[:, 0], tok[:, -1] = SOT, EOT
    np.save(run.path(f"{tag}_tokens.npy"), tok)
    return run.path(f"{tag}_images.npy"), run.path(f"{tag}_tokens.npy")


def bench_train(run: Run) -> dict:
    a = run.args
    images, tokens = _write_batch(run, a.train_batch, "train", tokens=True)
    peak = run.jax.call("peak_matmul")["flops_per_s"]
    out: dict = {"batch": a.train_batch, "depth": a.depth or 12, "peak_matmul_flops_per_s": peak}
    for kind in a.models:
        setup = {
            w.name: w.call(
                "setup_train",
                kind=kind,
                images_path=images,
                tokens_path=tokens,
                warmup=a.warmup,
                depth=a.depth,
            )
            for w in run.workers
        }
        print(f"  [train {kind}] ready: {json.dumps(setup)}", flush=True)
        # Same weights (MERU's, after its warm-up steps) and inputs: the same loss, or stop.
        n = min(a.train_batch, 4)
        weights = run.path(f"weights_{kind}.npz")
        theirs = run.torch.call("parity_dump", kind=kind, path=weights, n=n)
        parity = {"n": n, "meru": theirs}
        for key, w in run.ours:
            ours = w.call(
                "parity_check",
                kind=kind,
                path=weights,
                images_path=images,
                tokens_path=tokens,
                n=n,
                depth=a.depth,
            )
            diff = abs(theirs["loss"] - ours["loss"])
            print(
                f"  [train {kind}] loss on the same weights: MERU {theirs['loss']:.7f}, "
                f"{key} {ours['loss']:.7f}",
                flush=True,
            )
            if diff > 1e-4 * max(1.0, abs(theirs["loss"])):
                raise RuntimeError(f"{kind}: MERU and {key} compute different losses ({diff:.2e})")
            parity[key] = {**ours, "loss_diff": diff}
        os.remove(weights)
        timing = run.time_each("train", kind)
        ratios = {}
        for key, w in run.ours:
            tag = key[len("ours") :]
            step_s = timing[key]["median_s"]
            flops = setup[w.name]["step_flops"]
            ratios[f"train_{kind}_speed_ratio{tag}"] = timing["meru"]["median_s"] / step_s
            ratios[f"train_{kind}_roofline{tag}"] = flops / step_s / peak if flops else math.nan
        out[kind] = {"setup": setup, "parity": parity, "timing": timing, "ratios": ratios}
    return out


def bench_infer(run: Run) -> dict:
    a = run.args
    images, _ = _write_batch(run, a.infer_batch, "infer", tokens=False)
    out: dict = {"batch": a.infer_batch, "depth": a.depth or 12}
    for kind in a.infer_models:
        setup = {
            w.name: w.call(
                "setup_infer", kind=kind, images_path=images, warmup=a.warmup, depth=a.depth
            )
            for w in run.workers
        }
        timing = run.time_each("infer", kind)
        meru_s = timing["meru"]["median_s"]
        out[kind] = {
            "setup": setup,
            "timing": timing,
            "ratios": {
                f"infer_{kind}_speed_ratio{key[len('ours') :]}": meru_s / timing[key]["median_s"]
                for key, _ in run.ours
            },
        }
    return out


BENCHES: dict[str, Callable[[Run], dict]] = {
    "pairwise": bench_pairwise,
    "train": bench_train,
    "infer": bench_infer,
}


def ratios(results: dict) -> dict[str, float]:
    """Every ``*_ratio`` / ``*_roofline`` figure of ``results``, in benchmark order."""
    out: dict[str, float] = {}
    for bench in BENCHES:
        part = results.get(bench) or {}
        out.update(part.get("ratios", {}))
        for kind in KINDS:
            out.update((part.get(kind) or {}).get("ratios", {}))
    return out


def table(results: dict) -> str:
    """A plain-text table of the medians and ratios."""
    rows = [("benchmark", "PyTorch MERU", "hac-jax", "hac-jax speed-up")]
    if "pairwise" in results:
        r = results["pairwise"]
        for op in ("pairwise_dist", "matmul"):
            t, j = r["timing"][f"meru.{op}"]["median_s"], r["timing"][f"ours.{op}"]["median_s"]
            rows.append(
                (
                    f"{op} {r['n']}x{r['n']} D={r['d']}",
                    f"{t * 1e3:.1f} ms",
                    f"{j * 1e3:.1f} ms",
                    f"{t / j:.2f}x",
                )
            )
    for bench, what in (("train", "train step"), ("infer", "encode_image")):
        r = results.get(bench)
        for kind in KINDS if r else ():
            if kind not in r:
                continue
            b, t = r["batch"], r[kind]["timing"]["meru"]["median_s"]
            for key, timing in r[kind]["timing"].items():
                if key == "meru":
                    continue
                j = timing["median_s"]
                rows.append(
                    (
                        f"{what} {kind.upper()} ViT-S B={b} depth={r['depth']} img/s "
                        f"{key[len('ours') :]}".rstrip(),
                        f"{b / t:.2f}",
                        f"{b / j:.2f}",
                        f"{t / j:.2f}x",
                    )
                )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def _overrides(p: argparse.ArgumentParser, text: str) -> dict[str, str]:
    pairs = [kv for kv in text.split(",") if kv]
    bad = [kv for kv in pairs if "=" not in kv]
    if bad:
        p.error(f"model overrides are k=v pairs, got {bad[0]!r}")
    return dict(kv.split("=", 1) for kv in pairs)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_vs_meru", description=__doc__.splitlines()[0]
    )
    p.add_argument("benches", nargs="*", help="pairwise, train, infer (default: all)")
    p.add_argument("--meru-dir", required=True, help="a facebookresearch/meru checkout")
    p.add_argument("--torch-python", required=True, help="Python with torch, timm, loguru")
    p.add_argument("--threads", type=int, default=2, help="threads (and cores) per framework")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats (default 9/5/7)")
    p.add_argument("--warmup", type=int, default=2, help="untimed repeats after set-up")
    p.add_argument("--settle", type=float, default=0.0, help="idle seconds before each repeat")
    p.add_argument("--models", default="meru,clip", help="train: meru and/or clip")
    p.add_argument("--n", type=int, default=4096, help="pairwise: points per side")
    p.add_argument("--train-batch", type=int, default=32)
    p.add_argument("--infer-batch", type=int, default=64)
    p.add_argument("--depth", type=int, default=None, help="blocks per tower (default: 12)")
    p.add_argument("--jax-model", default="", help="model overrides of our side, k=v,k=v")
    p.add_argument(
        "--jax-variant",
        action="append",
        default=[],
        metavar="K=V[,K=V]",
        help="also time our model with these overrides (train, infer); repeatable",
    )
    p.add_argument("--smoke", action="store_true", help="tiny sizes, to check the set-up")
    p.add_argument("--out", default="", help="write the results JSON here")
    a = p.parse_args(argv)
    unknown = [b for b in a.benches if b not in BENCHES]
    if unknown:
        p.error(f"unknown benchmark {unknown[0]!r}; choose from {', '.join(BENCHES)}")
    a.benches = list(dict.fromkeys(a.benches)) or list(BENCHES)
    if not os.path.isfile(os.path.join(a.meru_dir, "meru", "lorentz.py")):
        p.error(f"--meru-dir {a.meru_dir!r} is not a MERU checkout (no meru/lorentz.py)")
    if not (os.path.isfile(a.torch_python) and os.access(a.torch_python, os.X_OK)):
        p.error(f"--torch-python {a.torch_python!r} is not an executable file")
    a.models = [m for m in a.models.split(",") if m]
    bad = [m for m in a.models if m not in KINDS]
    if bad or not a.models:
        p.error(f"--models takes meru and/or clip, got {a.models}")
    a.infer_models = ["meru"]
    a.jax_model = _overrides(p, a.jax_model)
    a.jax_variant = [(v, {**a.jax_model, **_overrides(p, v)}) for v in a.jax_variant]
    if a.threads < 1 or a.threads > len(os.sched_getaffinity(0)):
        p.error(f"--threads must be in [1, {len(os.sched_getaffinity(0))}], got {a.threads}")
    if a.smoke:
        a.n, a.train_batch, a.infer_batch, a.depth = 256, 2, 2, a.depth or 1
        a.warmup, a.repeats = 1, a.repeats or 1
    elif a.depth == 12:
        a.depth = None
    return a


def main(argv: Sequence[str] | None = None) -> int:
    a = _parse(argv)
    from hac_jax.files import write_text

    workdir = tempfile.mkdtemp(prefix="bench_vs_meru_")
    env = dict(
        os.environ,
        BENCH_THREADS=str(a.threads),
        BENCH_WORKDIR=workdir,
        MERU_DIR=os.path.abspath(a.meru_dir),
        JAX_PLATFORMS="cpu",
        CUDA_VISIBLE_DEVICES="",
        HF_HUB_OFFLINE="1",
        TF_CPP_MIN_LOG_LEVEL="2",
        PYTHONWARNINGS="ignore",
        BENCH_JAX_MODEL=json.dumps(a.jax_model),
    )
    start = time.perf_counter()
    torch = Worker("torch", "torch", a.torch_python, env, os.path.join(workdir, "torch.log"))
    jax = Worker("jax", "jax", sys.executable, env, os.path.join(workdir, "jax.log"))
    variants = []
    for i, (label, overrides) in enumerate(a.jax_variant, start=1):
        variant_env = dict(env, BENCH_JAX_MODEL=json.dumps(overrides))
        log = os.path.join(workdir, f"jax{i}.log")
        variants.append((label, Worker(f"jax[{label}]", "jax", sys.executable, variant_env, log)))
    run = Run(a, workdir, torch, jax, variants)
    results: dict = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "argv": list(sys.argv[1:] if argv is None else argv),
        "settings": {k: v for k, v in vars(a).items() if k not in ("meru_dir", "torch_python")},
        "variants": {f"ours[{label}]": overrides for label, overrides in a.jax_variant},
    }
    try:
        results["info"] = {w.name: w.call("info") for w in run.workers}
        print(f"[bench] workers: {json.dumps(results['info'])}", flush=True)
        for name in a.benches:
            t = time.perf_counter()
            print(f"[bench] {name}", flush=True)
            results[name] = BENCHES[name](run)
            results[name]["wall_s"] = time.perf_counter() - t
    finally:
        for w in run.workers:
            w.close()
    results["wall_s"] = time.perf_counter() - start
    results["ratios"] = ratios(results)
    if a.out:
        write_text(a.out, json.dumps(results, indent=1) + "\n")
    print()
    print(table(results))
    print(f"\n[bench] {results['wall_s']:.0f} s; worker logs in {workdir}")
    for key, value in results["ratios"].items():
        print(f"{key}={value:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
