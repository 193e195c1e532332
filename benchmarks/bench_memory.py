"""Per-device memory of the pretraining and HAC unlearning steps at real model sizes.

    python -m benchmarks.bench_memory [--arch vit_l vit_b] [--devices 8] [--batch 64] \\
        [--rules fsdp] [--model remat=full ...] [--check]

Nothing is allocated: the parameters, the optimizer state and the batch are shape structs
(``jax.eval_shape``), and each step is compiled for a mesh of ``--devices`` fake CPU devices
(``--xla_force_host_platform_device_count``, set before JAX starts). For every architecture and
step the script compiles the step twice, with every parameter replicated and with the named
sharding rule set ``--rules`` (:mod:`hac_jax.models.sharding_rules`), and reads XLA's per-device
buffer sizes (``.lower(...).compile().memory_analysis()``):

* ``state``: the step's argument bytes less the batch's, i.e. the parameters, the AdamW state,
  the step counter and the rng, and for HAC also the frozen original model (less what the step
  never reads, which XLA drops from its arguments: the frozen ``logit_scale``); it is checked
  against the shard sizes of the compiled step's input shardings;
* ``temp``: XLA's scratch buffers of the step (activations, gradients, gathered weights).

The steps are the project's own: ``hac_jax.training.pretrain.jit_train_step`` of a job built by
``pretrain.prepare`` (the pretraining config with the model set to ``--arch``, the rules
installed as ``config.sharding_rules`` and the ``--model`` fields, e.g. the accelerator switches
``remat=full`` or ``dtype=bfloat16``, added to ``config.model``), and
``hac_jax.unlearning.loop.make_unlearn_step`` over the registered ``hac`` loss with its defaults,
jitted with the shardings the unlearning loop uses (``driver.state_shardings``; the frozen
original on the parameters' shardings).

The last lines are ``ratio=X arch=A step=S``: per-device ``state`` bytes with the rules divided by
replicated. ``--check`` exits with status 1 when a ratio exceeds ``--target`` (default 1/6).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time


def _set_device_count(argv: list[str]) -> None:
    # The fake devices must be configured before JAX initialises its CPU backend.
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--devices", type=int, default=8)
    count = parser.parse_known_args(argv)[0].devices
    flags = os.environ.get("XLA_FLAGS", "")
    os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={count}".strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")


_set_device_count(sys.argv[1:])

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

STEPS = ("pretrain", "hac")
GIB = 2.0**30


def _bytes_per_device(tree, shardings) -> int:
    """Bytes of one device's shards of the shape structs ``tree`` placed on ``shardings`` (a
    tree of the same structure; a ``None`` sharding marks an argument the compiled step does not
    take, because it does not read it, and counts nothing)."""
    leaves = jax.tree.leaves(tree)
    placed = jax.tree.leaves(shardings, is_leaf=lambda x: x is None)
    if len(leaves) != len(placed):
        raise ValueError(f"{len(leaves)} leaves but {len(placed)} shardings")
    return sum(
        math.prod(sh.shard_shape(leaf.shape)) * jnp.dtype(leaf.dtype).itemsize
        for leaf, sh in zip(leaves, placed, strict=True)
        if sh is not None
    )


def _abstract_state(init_params, tx, seed: int) -> dict:
    """``{"step", "params", "opt_state", "rng"}`` as shape structs (what the driver creates)."""
    rng = jax.random.PRNGKey(seed)
    init_rng, _ = jax.random.split(rng)
    params = jax.eval_shape(init_params, init_rng)
    return {
        "step": jax.ShapeDtypeStruct((), jnp.int32),
        "params": params,
        "opt_state": jax.eval_shape(tx.init, params),
        "rng": jax.eval_shape(lambda r: jax.random.split(r)[1], rng),
    }


def _batch_struct(keys, batch: int, image_size: int, context_length: int) -> dict:
    """Shape structs of the batch entries ``keys`` (the entries the step's loop places)."""
    per_key = {
        "image": ((batch, image_size, image_size, 3), jnp.float32),
        "tokens": ((batch, context_length), jnp.int32),
        "parent_tokens": ((batch, context_length), jnp.int32),
        "label": ((batch,), jnp.int32),
        "group": ((batch,), jnp.int32),
        "parent": ((batch,), jnp.int32),
        "is_forget": ((batch,), jnp.bool_),
        "is_retain": ((batch,), jnp.bool_),
    }
    unknown = [k for k in keys if k not in per_key]
    if unknown:
        raise KeyError(f"no shape known for batch entries {unknown}; add them to _batch_struct")
    return {k: jax.ShapeDtypeStruct(*per_key[k]) for k in keys}


def _pretrain_job(arch: str, batch: int, rules: list, model_fields: dict, workdir: str):
    """A pretraining job (``pretrain.prepare``) for MERU ``arch`` with ``rules`` and the model
    fields ``model_fields``; the small generated data set only serves ``prepare``'s checks (no
    batch is read)."""
    from experiments.configs.pretrain import get_config
    from hac_jax.models import get_arch
    from hac_jax.training import pretrain

    config = get_config("meru,data=shapes")
    # The architecture's own image size, not the generated data's.
    image_size = get_arch(arch).vision.image_size
    config.model = {"kind": "meru", "arch": arch, "image_size": image_size, **model_fields}
    config.batch_size = batch
    config.sharding_rules = rules
    return pretrain.prepare(config, workdir)


def compile_pretrain(job, rules: list):
    """``(compiled train step, its arguments as shape structs: (state, batch))``."""
    from hac_jax.training import driver, pretrain

    init_params, _ = driver.init_fns(job.model, job.model_cfg, job.tx)
    state = _abstract_state(init_params, job.tx, job.config.seed)
    shardings = driver.state_shardings(state["params"], job.tx, job.mesh, rules)
    cfg = job.model_cfg
    batch = _batch_struct(
        pretrain._BATCH_KEYS, job.config.batch_size, cfg.vision.image_size, cfg.text.context_length
    )
    compiled = pretrain.jit_train_step(job, shardings).lower(state, batch).compile()
    return compiled, (state, batch)


def _parent_prompt_tokens(hierarchy, model_cfg):
    """``(R, P, L)`` int32 tokens of the parent concepts' prompt ensembles (a constant of the
    step, so its size does not count among the arguments)."""
    import numpy as np

    from hac_jax.data.captions import parent_prompts
    from hac_jax.tokenizer import tokenize

    prompts, _ = parent_prompts(hierarchy)
    flat = [p for ensemble in prompts for p in ensemble]
    tokens = np.asarray(tokenize(flat, model_cfg.text.context_length), np.int32)
    return tokens.reshape(len(prompts), -1, tokens.shape[-1])


def compile_hac(job, rules: list):
    """Like :func:`compile_pretrain` for the HAC unlearning step of the same model: arguments
    ``(state, frozen original parameters, batch)``, the frozen model on the parameters'
    shardings."""
    from hac_jax.models import param_shapes
    from hac_jax.training import driver, optim, sharding
    from hac_jax.unlearning import get_method, loop

    cfg = job.model_cfg
    method = get_method("hac")
    extra = {}
    if getattr(method, "needs_parent_prompts", False):
        extra["parent_prompt_tokens"] = _parent_prompt_tokens(job.data.hierarchy, cfg)
    loss = method.bind(model=job.model, geometry=cfg.geometry, **extra)
    lr = 1e-5
    # The unlearning loop's optimizer: AdamW at a constant rate, no decay.
    opt_cfg = optim.meru_optim_config(lr=lr, warmup_steps=0, end_lr=lr, weight_decay=0.0)
    tx, schedule = optim.make_optimizer(opt_cfg, param_shapes(cfg), 100)
    init_params, _ = driver.init_fns(job.model, cfg, tx)
    state = _abstract_state(init_params, tx, job.config.seed)
    shardings = driver.state_shardings(state["params"], tx, job.mesh, rules)
    batch = _batch_struct(
        loop._BATCH_KEYS, job.config.batch_size, cfg.vision.image_size, cfg.text.context_length
    )
    step = jax.jit(
        loop.make_unlearn_step(loss, cfg, tx, schedule),
        in_shardings=(shardings, shardings["params"], sharding.batch_sharding(job.mesh)),
        out_shardings=(shardings, sharding.replicated(job.mesh)),
        donate_argnums=0,
    )
    compiled = step.lower(state, state["params"], batch).compile()
    return compiled, (state, state["params"], batch)


def measure(step: str, job, rules: list) -> dict:
    """Per-device bytes of ``step`` compiled with ``rules`` (module docstring)."""
    t = time.perf_counter()
    compile_fn = compile_pretrain if step == "pretrain" else compile_hac
    compiled, args = compile_fn(job, rules)
    seconds = time.perf_counter() - t
    stats = compiled.memory_analysis()
    # The shardings the compiled step takes its arguments on (the batch is the last argument).
    arg_shardings = compiled.input_shardings[0]
    per_arg = [_bytes_per_device(arg, sh) for arg, sh in zip(args, arg_shardings, strict=True)]
    batch_bytes = per_arg[-1]
    state_bytes = stats.argument_size_in_bytes - batch_bytes
    if state_bytes != sum(per_arg[:-1]):
        raise AssertionError(
            f"{step}: XLA's argument bytes less the batch ({state_bytes}) differ from the shard "
            f"sizes of the step's input shardings ({sum(per_arg[:-1])})"
        )
    return {
        "state": state_bytes,
        "temp": stats.temp_size_in_bytes,
        "batch": batch_bytes,
        "compile_s": seconds,
    }


def main(argv: list[str] | None = None) -> int:
    from hac_jax.models import param_shapes, sharding_rules

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", nargs="+", default=["vit_l", "vit_b"])
    parser.add_argument("--steps", nargs="+", default=list(STEPS), choices=STEPS)
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--batch", type=int, default=64, help="global batch (all devices)")
    parser.add_argument("--rules", default="fsdp", choices=sharding_rules.RULE_SET_NAMES)
    parser.add_argument(
        "--model",
        nargs="*",
        default=[],
        metavar="FIELD=VALUE",
        help="string-valued ModelConfig fields for both compilations, e.g. remat=full",
    )
    parser.add_argument("--check", action="store_true", help="fail when a ratio > --target")
    parser.add_argument("--target", type=float, default=1 / 6)
    args = parser.parse_args(argv)
    model_fields = dict(field.split("=", 1) for field in args.model)
    if jax.device_count() != args.devices:
        raise SystemExit(f"expected {args.devices} devices, JAX has {jax.device_count()}")
    print(
        f"jax {jax.__version__}, {jax.device_count()} x {jax.devices()[0].platform} devices, "
        f"global batch {args.batch}, rules {args.rules!r} vs replicated, model fields "
        f"{model_fields or 'default'}"
    )
    rules = sharding_rules.get_rules(args.rules)
    ratios = []
    for arch in args.arch:
        with tempfile.TemporaryDirectory() as workdir:
            jobs = {
                "replicated": _pretrain_job(arch, args.batch, [], model_fields, workdir),
                args.rules: _pretrain_job(arch, args.batch, rules, model_fields, workdir),
            }
        shapes = param_shapes(jobs["replicated"].model_cfg)
        n_params = sum(math.prod(x.shape) for x in jax.tree.leaves(shapes))
        print(f"\n{arch}: {n_params / 1e6:.1f}M parameters (MERU)")
        for step in args.steps:
            rows = {
                name: measure(step, job, rules if name == args.rules else [])
                for name, job in jobs.items()
            }
            what = "params + AdamW state" + (" + frozen original" if step == "hac" else "")
            for name, r in rows.items():
                print(
                    f"  {step:8s} {name:10s} state {r['state'] / GIB:7.3f} GiB/device ({what}), "
                    f"temp {r['temp'] / GIB:6.3f} GiB, batch {r['batch'] / 2**20:6.2f} MiB, "
                    f"compiled in {r['compile_s']:.0f} s"
                )
            ratios.append((arch, step, rows[args.rules]["state"] / rows["replicated"]["state"]))
    print()
    for arch, step, ratio in ratios:
        print(f"ratio={ratio:.4f} arch={arch} step={step}")
    failed = [r for r in ratios if r[2] > args.target]
    if args.check and failed:
        print(f"ratios above the target {args.target:.4f}: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
