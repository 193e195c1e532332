"""Train-step throughput and its ratio to this machine's matmul roofline.

    python -m benchmarks.bench_train [--config=experiments/configs/pretrain.py:meru] \\
        [--config.batch_size=256] [--steps=20] [--out=bench.json]

Measures, for the configured model and batch:

* ``step_s``: seconds per jitted train step on a fixed, already-placed batch (data loading
  excluded), the median over 5 blocks of ``--steps / 5`` steps after compile and warm-up;
* ``loop_img_per_s``: images/s of the same steps fed by the real data loader and placed on the
  mesh as the training loop does (loading included), in blocks alternating with the step-only
  ones; ``loop_ratio`` = loop throughput / step-only throughput;
* ``step_flops``: FLOPs of one step from XLA's cost analysis of the compiled step;
* ``matmul_flops_per_s``: the best float32 FLOP/s of a large square matmul on the same devices
  (the practical roofline of dense compute here);
* ``roofline_ratio`` = ``step_flops / step_s / matmul_flops_per_s``.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

DEFAULT_CONFIG = os.path.join(
    os.path.dirname(__file__), "..", "experiments", "configs", "pretrain.py"
)


def matmul_flops_per_s(n: int = 2048, repeats: int = 5) -> float:
    """Best FLOP/s of an ``(n, n) @ (n, n)`` float32 matmul (``2 n^3`` FLOPs) on device 0."""
    key_a, key_b = jax.random.split(jax.random.PRNGKey(0))
    a = jax.random.normal(key_a, (n, n), jnp.float32)
    b = jax.random.normal(key_b, (n, n), jnp.float32)
    f = jax.jit(lambda x, y: x @ y)
    f(a, b).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        f(a, b).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def _flops(compiled) -> float | None:
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    return float(cost["flops"]) if cost and "flops" in cost else None


def bench(config, steps: int = 20, warmup: int = 3, rounds: int = 5) -> dict:
    """Runs the measurements for ``config`` (a pretraining ConfigDict) in a scratch workdir."""
    import tempfile

    from hac_jax.training import driver, pretrain, sharding

    with tempfile.TemporaryDirectory() as workdir:
        job = pretrain.prepare(config, workdir)
    state, shardings = driver.create_train_state(
        job.model,
        job.model_cfg,
        job.tx,
        jax.random.PRNGKey(0),
        job.mesh,
        pretrain._sharding_rules(config),
    )
    step_fn = pretrain.jit_train_step(job, shardings)
    it = iter(job.loader)
    host_batch = {k: next(it)[k] for k in pretrain._BATCH_KEYS}
    batch = sharding.global_batch(host_batch, job.mesh)
    t = time.perf_counter()
    compiled = step_fn.lower(state, batch).compile()
    compile_s = time.perf_counter() - t
    step_flops = _flops(compiled)
    for _ in range(warmup):
        state, m = compiled(state, batch)
    jax.block_until_ready(m)

    def fixed_batch(state):
        """Seconds per step on the placed batch (the step alone)."""
        t = time.perf_counter()
        for _ in range(block):
            state, m = compiled(state, batch)
        jax.block_until_ready(m)
        return state, (time.perf_counter() - t) / block

    def loader_fed(state):
        """Seconds per step as the training loop runs it: the next batch from the loader,
        placed on the mesh, then the step."""
        t = time.perf_counter()
        for _ in range(block):
            b = next(it)
            placed = sharding.global_batch({k: b[k] for k in pretrain._BATCH_KEYS}, job.mesh)
            state, m = compiled(state, placed)
        jax.block_until_ready(m)
        return state, (time.perf_counter() - t) / block

    # Blocks of `block` steps of each kind, alternating, so that background load hits both.
    block = max(1, steps // rounds)
    step_times, loop_times = [], []
    for _ in range(rounds):
        state, s = fixed_batch(state)
        step_times.append(s)
        state, s = loader_fed(state)
        loop_times.append(s)
    step_s = statistics.median(step_times)
    loop_s = statistics.median(loop_times)

    peak = matmul_flops_per_s()
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state["params"]))
    return {
        "model": config.model.kind,
        "arch": config.model.arch,
        "batch_size": config.batch_size,
        "image_size": job.model_cfg.vision.image_size,
        "context_length": job.model_cfg.text.context_length,
        "params": n_params,
        "devices": f"{jax.device_count()} x {jax.devices()[0].device_kind}",
        "compile_s": compile_s,
        "step_s": step_s,
        "img_per_s": config.batch_size / step_s,
        "loop_img_per_s": config.batch_size / loop_s,
        "loop_ratio": step_s / loop_s,
        "step_flops": step_flops,
        "step_flops_per_s": step_flops / step_s if step_flops else None,
        "matmul_flops_per_s": peak,
        "roofline_ratio": step_flops / step_s / peak if step_flops else None,
    }


def main(argv: Sequence[str] | None = None) -> int:
    from hac_jax.config_utils import parse_command_line

    argv = list(sys.argv[1:] if argv is None else argv)
    if not any(a.startswith("--config=") or a == "--config" for a in argv):
        argv.insert(0, f"--config={DEFAULT_CONFIG}:meru")
    config, flags = parse_command_line(argv, required=(), steps=20, out="")
    result = bench(config, steps=flags["steps"])
    text = json.dumps(result, indent=2)
    print(text)
    if flags["out"]:
        with open(flags["out"], "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
