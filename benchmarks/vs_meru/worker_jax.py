"""JAX side of ``benchmarks/bench_vs_meru.py``: the project's own model, optimizer recipe, train
step (``hac_jax.training.pretrain.jit_train_step``), image encoder and ``pairwise_dist``.

Run with the project's environment; ``BENCH_JAX_MODEL`` (JSON) holds model-config overrides of
the ViT-S architecture (e.g. ``{"attention": "xla"}``) to compare the model's switches.
"""

from __future__ import annotations

import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(os.path.dirname(HERE))]  # proto; the repository root
import proto  # noqa: E402

proto.pin(int(os.environ.get("BENCH_THREADS", "2")))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.bench_train import _flops, matmul_flops_per_s  # noqa: E402
from hac_jax import models  # noqa: E402
from hac_jax.eval import encode  # noqa: E402
from hac_jax.geometry import lorentz  # noqa: E402
from hac_jax.training import driver, optim, pretrain, sharding  # noqa: E402

REG = proto.Registry()
MODEL_OVERRIDES = json.loads(os.environ.get("BENCH_JAX_MODEL") or "{}")


def info() -> dict:
    import flax
    import jaxlib

    return {
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "flax": flax.__version__,
        "devices": [str(d) for d in jax.devices()],
        "affinity": sorted(os.sched_getaffinity(0)),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "model_overrides": MODEL_OVERRIDES,
    }


def setup_pairwise(x_path: str, y_path: str, curv: float, warmup: int) -> dict:
    # As benchmarks/bench_lorentz.py: the jitted pairwise_dist against the bare matmul.
    x, y = jax.device_put(np.load(x_path)), jax.device_put(np.load(y_path))
    c = jnp.float32(curv)
    dist_fn = jax.jit(lorentz.pairwise_dist)
    matmul_fn = jax.jit(lambda a, b: jnp.matmul(a, b.T, precision=jax.lax.Precision.HIGHEST))

    def dist():
        return jax.block_until_ready(dist_fn(x, y, c))

    def matmul():
        return jax.block_until_ready(matmul_fn(x, y))

    REG.fns.update({"pairwise/dist": dist, "pairwise/matmul": matmul})
    start = time.perf_counter()
    dist(), matmul()
    compile_s = time.perf_counter() - start
    for _ in range(max(warmup - 1, 0)):
        dist(), matmul()
    return {"compile_and_first_s": compile_s}


def dump_pairwise(path: str) -> dict:
    np.save(path, np.asarray(REG.fns["pairwise/dist"]()))
    return {}


def peak_matmul() -> dict:
    """The best float32 matmul FLOP/s here: the practical roofline of dense compute."""
    return {"flops_per_s": matmul_flops_per_s()}


def _cfg(kind: str, depth: int | None) -> models.ModelConfig:
    over = dict(MODEL_OVERRIDES)
    if depth is not None:
        over.update(vision_depth=depth, text_depth=depth)
    return models.get_arch("vit_s", kind=kind, **over)


def setup_train(kind: str, images_path: str, tokens_path: str, warmup: int, depth=None) -> dict:
    cfg = _cfg(kind, depth)
    model = models.build_model(cfg)
    # MERU's AdamW recipe (lr 5e-4, betas (0.9, 0.98), wd 0.2, 4000 warm-up steps), as data.
    tx, schedule = optim.make_optimizer(optim.meru_optim_config(), models.param_shapes(cfg), 120000)
    mesh = sharding.make_mesh([("data", -1)])
    state, shardings = driver.create_train_state(model, cfg, tx, jax.random.PRNGKey(0), mesh)
    job = pretrain.Job(  # jit_train_step reads the model, optimizer, schedule, mesh and donate
        config=ml_collections.ConfigDict({"donate": True}),
        workdir="",
        data=None,
        model_cfg=cfg,
        model=model,
        mesh=mesh,
        loader=None,
        tx=tx,
        schedule=schedule,
    )
    host = {"image": np.load(images_path), "tokens": np.load(tokens_path).astype(np.int32)}
    batch = sharding.global_batch(host, mesh)
    start = time.perf_counter()
    compiled = pretrain.jit_train_step(job, shardings).lower(state, batch).compile()
    compile_s = time.perf_counter() - start
    holder = {"state": state, "metrics": None}

    def step():
        holder["state"], holder["metrics"] = compiled(holder["state"], batch)
        jax.block_until_ready(holder)

    REG.fns[f"train/{kind}"] = step
    REG.keep[f"train/{kind}"] = (holder, batch, compiled)
    start = time.perf_counter()
    for _ in range(warmup):
        step()
    params = holder["state"]["params"]
    return {
        "compile_s": compile_s,
        "warmup_s": time.perf_counter() - start,
        "loss": float(holder["metrics"]["loss"]),
        "params": sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params)),
        "step_flops": _flops(compiled),
    }


def parity_check(kind: str, path: str, images_path: str, tokens_path: str, n: int, depth=None):
    """The loss of MERU's weights (converted by the project's converter) on the first ``n``
    examples: the train step's forward pass without the update."""
    from hac_jax.models.losses import model_loss
    from hac_jax.models.torch_mapping import convert_state_dict

    cfg = _cfg(kind, depth)
    with np.load(path) as z:
        params = convert_state_dict({k: z[k] for k in z.files}, cfg)
    model = models.build_model(cfg)
    images = np.load(images_path)[:n]
    tokens = np.load(tokens_path).astype(np.int32)[:n]
    loss, metrics = model_loss(cfg)(model.apply({"params": params}, images, tokens))
    return {"loss": float(loss), **{k: float(v) for k, v in metrics.items()}}


def setup_infer(kind: str, images_path: str, warmup: int, depth=None) -> dict:
    cfg = _cfg(kind, depth)
    model = models.build_model(cfg)
    params = models.init_params(cfg, 0)
    fn = encode._encoder(model, "encode_image", True)  # the project's jitted image encoder
    images = jax.device_put(np.load(images_path))

    def infer():
        return jax.block_until_ready(fn(params, images))

    REG.fns[f"infer/{kind}"] = infer
    REG.keep[f"infer/{kind}"] = (model, params, images)
    start = time.perf_counter()
    infer()
    compile_s = time.perf_counter() - start
    for _ in range(max(warmup - 1, 0)):
        infer()
    return {"compile_and_first_s": compile_s}


if __name__ == "__main__":
    proto.serve(
        {
            "info": info,
            "setup_pairwise": setup_pairwise,
            "dump_pairwise": dump_pairwise,
            "setup_train": setup_train,
            "setup_infer": setup_infer,
            "parity_check": parity_check,
            "peak_matmul": peak_matmul,
            "time": REG.time,
            "free": REG.free,
        }
    )
