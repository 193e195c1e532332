"""Optimizer recipe: rule-based masks, frozen leaves, schedule, AdamW semantics, projection."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hac_jax.training import optim


def _design_like_params():
    """A parameter tree with the names of docs/DESIGN.md (tiny shapes)."""
    d, w, e = 4, 6, 3
    ln = lambda n: {"scale": jnp.ones(n), "bias": jnp.zeros(n)}
    dense = lambda i, o: {"kernel": jnp.full((i, o), 0.5), "bias": jnp.full((o,), 0.1)}
    return {
        "logit_scale": jnp.asarray(2.0),
        "curv": jnp.asarray(0.0),
        "visual_alpha": jnp.asarray(-1.0),
        "textual_alpha": jnp.asarray(-1.0),
        "visual": {
            "cls_token": jnp.ones((1, 1, d)),
            "pos_embed": jnp.ones((1, 5, d)),
            "patch_embed": {"proj": {"kernel": jnp.ones((2, 2, 3, d)), "bias": jnp.ones(d)}},
            "blocks_0": {
                "norm1": ln(d),
                "norm2": ln(d),
                "attn": {"qkv": dense(d, 3 * d), "proj": dense(d, d)},
                "mlp": {"fc1": dense(d, 4 * d), "fc2": dense(4 * d, d)},
            },
            "norm": ln(d),
        },
        "textual": {
            "token_embed": {"embedding": jnp.ones((10, w))},
            "posit_embed": jnp.ones((7, w)),
            "resblocks_0": {
                "ln_1": ln(w),
                "ln_2": ln(w),
                "attn": {"in_proj": dense(w, 3 * w), "out_proj": dense(w, w)},
                "mlp": {"c_fc": dense(w, 4 * w), "c_proj": dense(4 * w, w)},
            },
            "ln_final": ln(w),
        },
        "visual_proj": {"kernel": jnp.ones((d, e))},
        "textual_proj": {"kernel": jnp.ones((w, e))},
    }


def _step(tx, grads, state, params):
    updates, state = tx.update(grads, state, params)
    return optim.apply_updates(params, updates), state


def test_default_rules_decay_kernels_and_token_embedding_only():
    desc = optim.describe_rules(_design_like_params(), optim.meru_optim_config())
    assert desc["visual/pos_embed"] == "frozen"
    no_decay = [n for n, r in desc.items() if r == "wd x0"]
    decay = sorted(n for n, r in desc.items() if r == "wd x1")
    assert decay == sorted(
        [n for n in desc if n.endswith("/kernel")] + ["textual/token_embed/embedding"]
    )
    for name in [
        "logit_scale",
        "curv",
        "visual_alpha",
        "textual_alpha",
        "visual/cls_token",
        "textual/posit_embed",
        "visual/blocks_0/norm1/scale",
        "textual/ln_final/bias",
        "visual/blocks_0/mlp/fc1/bias",
        "visual/patch_embed/proj/bias",
    ]:
        assert name in no_decay, name
    assert len(decay) + len(no_decay) + 1 == len(desc)


def test_one_step_zero_grads_decays_only_masked_leaves_and_frozen_never_moves():
    params = _design_like_params()
    cfg = optim.meru_optim_config(lr=0.1, warmup_steps=0, weight_decay=0.5)
    tx, _ = optim.make_optimizer(cfg, params, total_steps=10)
    state = tx.init(params)
    grads = jax.tree.map(jnp.zeros_like, params)
    # A large gradient on the frozen table must not move it.
    grads["visual"]["pos_embed"] = jnp.full_like(params["visual"]["pos_embed"], 100.0)
    # jit: op-by-op dispatch over ~60 leaves is slow on a busy CPU.
    new, _ = jax.jit(lambda g, s, p: _step(tx, g, s, p))(grads, state, params)
    desc = optim.describe_rules(params, cfg)
    flat_old, flat_new = optim.flat_names(params), optim.flat_names(new)
    for name, rule in desc.items():
        if rule == "wd x1":  # step 0 of the schedule is the peak (no warm-up): p *= 1 - lr * wd
            np.testing.assert_allclose(flat_new[name], flat_old[name] * (1 - 0.1 * 0.5), rtol=1e-6)
        else:
            np.testing.assert_array_equal(flat_new[name], flat_old[name], err_msg=name)


def test_frozen_leaves_hold_no_optimizer_moments():
    params = _design_like_params()
    tx, _ = optim.make_optimizer(optim.meru_optim_config(warmup_steps=0), params, 10)
    state = tx.init(params)
    n_state = sum(x.size for x in jax.tree.leaves(state))
    n_trainable = sum(x.size for x in jax.tree.leaves(params)) - params["visual"]["pos_embed"].size
    # mu + nu for every trainable leaf, plus a few counters.
    assert 2 * n_trainable <= n_state <= 2 * n_trainable + 8


def test_matches_torch_adamw_with_decoupled_decay():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(5, 4)).astype(np.float32)
    b0 = rng.normal(size=(4,)).astype(np.float32)
    grads = [(rng.normal(size=w0.shape), rng.normal(size=b0.shape)) for _ in range(5)]
    cfg = optim.meru_optim_config(
        lr=1e-2,
        warmup_steps=2,
        weight_decay=0.2,
        wd_mults=[(".*/bias", 0.0), (".*", 1.0)],
        frozen=[],
    )
    total = 5
    params = {"l": {"kernel": jnp.asarray(w0), "bias": jnp.asarray(b0)}}
    tx, schedule = optim.make_optimizer(cfg, params, total)
    state = tx.init(params)

    tw, tb = torch.nn.Parameter(torch.tensor(w0)), torch.nn.Parameter(torch.tensor(b0))
    topt = torch.optim.AdamW(
        [{"params": [tw], "weight_decay": 0.2}, {"params": [tb], "weight_decay": 0.0}],
        lr=1e-2,
        betas=(0.9, 0.98),
        eps=1e-8,
    )
    for step, (gw, gb) in enumerate(grads):
        g = {"l": {"kernel": jnp.asarray(gw, jnp.float32), "bias": jnp.asarray(gb, jnp.float32)}}
        updates, state = tx.update(g, state, params)
        params = optim.apply_updates(params, updates)
        for group in topt.param_groups:
            group["lr"] = float(schedule(step))
        tw.grad, tb.grad = (
            torch.tensor(gw, dtype=torch.float32),
            torch.tensor(gb, dtype=torch.float32),
        )
        topt.step()
    np.testing.assert_allclose(params["l"]["kernel"], tw.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(params["l"]["bias"], tb.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_schedule_warmup_then_cosine():
    cfg = optim.meru_optim_config(lr=1.0, warmup_steps=10, end_lr=0.1)
    sched = optim.make_schedule(cfg, total_steps=110)
    assert float(sched(0)) == 0.0
    assert float(sched(5)) == pytest.approx(0.5)
    assert float(sched(10)) == pytest.approx(1.0)
    for t in (35, 60, 99):
        want = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (t - 10) / 100))
        assert float(sched(t)) == pytest.approx(want, rel=1e-5)
    assert float(sched(110)) == pytest.approx(0.1)


def test_projection_runs_after_the_update():
    params = {"curv": jnp.asarray(2.0), "w": jnp.ones(3)}
    cfg = optim.meru_optim_config(lr=1.0, warmup_steps=0, weight_decay=0.0, frozen=[])
    tx, _ = optim.make_optimizer(cfg, params, 10)
    state = tx.init(params)
    grads = {"curv": jnp.asarray(-1.0), "w": jnp.zeros(3)}  # pushes curv up by ~lr
    updates, _ = tx.update(grads, state, params)
    clamp = lambda p: {**p, "curv": jnp.clip(p["curv"], -2.3, 2.3)}
    assert float(optim.apply_updates(params, updates)["curv"]) > 2.9
    assert float(optim.apply_updates(params, updates, clamp)["curv"]) == pytest.approx(2.3)


@pytest.mark.parametrize(
    "overrides,match",
    [
        (dict(wd_mults=[(".*/kernel", 1.0)]), "no wd_mults rule matches"),
        (dict(wd_mults=[("(", 1.0)]), "bad regex"),
        (dict(warmup_steps=10), "warmup_steps"),
    ],
)
def test_bad_rules_are_clear_errors(overrides, match):
    with pytest.raises(ValueError, match=match):
        optim.make_optimizer(
            optim.meru_optim_config(**{"warmup_steps": 0, **overrides}), _design_like_params(), 10
        )
