"""The method registry, and every registered method wired to a (tiny, linear) two-tower model."""

from __future__ import annotations

import functools
import math
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import hac_jax.unlearning as unlearning
from hac_jax.geometry import LORENTZ, SPHERE, get_geometry
from hac_jax.unlearning import ac, common, hac, registry
from hac_jax.unlearning.baselines import l1_norm

BUILTIN = ("ac", "ft", "ga", "hac", "l1_sparse", "negrad", "retrain")


class LinearTwoTower:
    """A stand-in with the model interface of docs/DESIGN.md: ``apply({"params": p}, images,
    tokens)`` -> ``{"image","text","logit_scale","curv"}``, ``method="encode_text"`` and
    ``method="encode_prompt_ensembles"``."""

    def __init__(self, kind: str):
        self.geometry = get_geometry(kind)

    def init(self, key, pixels: int, vocab: int, dim: int):
        k1, k2 = jax.random.split(key)
        return {
            "visual_proj": {"kernel": 0.3 * jax.random.normal(k1, (pixels, dim))},
            "token_embed": {"embedding": 0.5 * jax.random.normal(k2, (vocab, dim))},
            "logit_scale": jnp.asarray(math.log(10.0)),
            "curv": jnp.asarray(math.log(0.8)),
        }

    def _curv(self, p):
        return jnp.exp(p["curv"]) if self.geometry is LORENTZ else jnp.asarray(1.0)

    def _text(self, p, tokens):
        raw = p["token_embed"]["embedding"][tokens].mean(axis=1)
        return self.geometry.project(raw, self._curv(p))

    def _prompt_ensembles(self, p, tokens):
        raw = p["token_embed"]["embedding"][tokens].mean(axis=2)  # (C, P, E)
        return self.geometry.pool_prompts(raw, 1.0, self._curv(p))

    def apply(self, variables, *args, project=True, method=None):
        p = variables["params"]
        if method == "encode_text":
            return self._text(p, args[0])
        if method == "encode_prompt_ensembles":
            return self._prompt_ensembles(p, args[0])
        images, tokens = args
        raw = images.reshape(images.shape[0], -1) @ p["visual_proj"]["kernel"]
        return {
            "image": self.geometry.project(raw, self._curv(p)),
            "text": self._text(p, tokens),
            "logit_scale": jnp.exp(jnp.minimum(p["logit_scale"], math.log(100.0))),
            "curv": self._curv(p),
        }


def make_batch(is_forget, seed=0):
    rng = np.random.default_rng(seed)
    n = len(is_forget)
    return {
        "image": jnp.asarray(rng.random((n, 4, 4, 3)), jnp.float32),
        "tokens": jnp.asarray(rng.integers(1, 15, size=(n, 5)), jnp.int32),
        "is_forget": jnp.asarray(is_forget, bool),
        "label": jnp.arange(n, dtype=jnp.int32),
        "group": jnp.asarray(np.arange(n) % 3, jnp.int32),
        "parent": jnp.asarray(rng.integers(0, len(PARENT_PROMPTS), size=n), jnp.int32),
    }


# Tokens of two parent concepts' prompt ensembles (R=2, P=3, L=5); ids 15-19 appear only here.
PARENT_PROMPTS = np.random.default_rng(7).integers(15, 20, size=(2, 3, 5)).astype(np.int32)


@pytest.fixture(scope="module", params=["clip", "meru"])
def setup(request):
    model = LinearTwoTower(request.param)
    params = model.init(jax.random.key(0), 48, 20, 6)
    return model, params, get_geometry(request.param)


MIXED = [True, False, False, True, False, True, False, False]
# Test-only: compile without XLA's backend optimisations (same computation, much faster compile).
FAST = {"xla_backend_optimization_level": 0}


# ------------------------------------------------------------------------------------------------
# the registry itself
# ------------------------------------------------------------------------------------------------


def test_builtin_methods_are_registered_on_import():
    assert set(BUILTIN) <= set(unlearning.list_methods())
    for mod in ("ac", "hac", "baselines", "common"):
        assert f"hac_jax.unlearning.{mod}" in sys.modules


def test_unknown_method_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown unlearning method 'hca'.*Did you mean.*'hac'"):
        unlearning.get_method("hca")
    with pytest.raises(ValueError, match="Known methods: .*'negrad'.*'retrain'"):
        unlearning.get_method("nonsense")


def test_flags_of_the_builtin_methods():
    m = {name: unlearning.get_method(name) for name in BUILTIN}
    assert m["hac"].needs_frozen_model and not m["ac"].needs_frozen_model
    assert m["retrain"].reinit and not any(m[n].reinit for n in BUILTIN if n != "retrain")
    assert not m["ft"].needs_forget and not m["retrain"].needs_forget
    assert not m["l1_sparse"].needs_forget
    assert m["ga"].needs_forget and not m["ga"].needs_retain
    assert m["ac"].needs_forget and m["negrad"].needs_forget and m["hac"].needs_forget
    assert m["hac"].geometries == ("lorentz",)
    assert set(m["ac"].geometries) == {"lorentz", "sphere"}


def test_tuned_methods_register_their_loop_settings():
    m = {name: unlearning.get_method(name) for name in unlearning.list_methods()}
    assert dict(m["hac"].loop) == {"lr": 1e-4, "steps": 100}
    assert dict(m["ac"].loop) == {"lr": 1e-4, "steps": 25}
    assert not m["ft"].loop and not m["ga"].loop  # untuned baselines
    with pytest.raises(ValueError, match="loop settings of 'bad' may be"):
        registry.register("bad", loop=dict(batch_size=8))(lambda *a, **k: None)
    with pytest.raises(ValueError, match="loop steps of 'bad' must be a positive int"):
        registry.register("bad", loop=dict(steps=0))(lambda *a, **k: None)
    with pytest.raises(ValueError, match="loop lr of 'bad' must be positive"):
        registry.register("bad", loop=dict(lr=-1.0))(lambda *a, **k: None)
    assert "bad" not in unlearning.list_methods()


def test_config_defaults_overrides_and_errors():
    cfg = unlearning.get_config("hac")
    assert isinstance(cfg, ml_collections.ConfigDict)
    # HAC's default is the sweep's stage 4 (docs/SWEEP.md)
    assert cfg.parent_policy == "ignore" and cfg.lambda_ent0 == 0.2
    assert cfg.pos_target == "relative" and cfg.pos_margin == 0.25 and not cfg.forget_negatives
    cfg2 = unlearning.get_config("hac", alpha=2, forget_negatives=True, parent_policy="push")
    assert cfg2.alpha == 2.0 and isinstance(cfg2.alpha, float) and cfg2.parent_policy == "push"
    assert unlearning.get_config("hac").alpha == cfg.alpha  # defaults are not mutated
    with pytest.raises(ValueError, match=r"no option\(s\) \['alhpa'\]"):
        unlearning.get_config("hac", alhpa=1.0)
    with pytest.raises(ValueError, match="parent_policy"):
        unlearning.get_config("hac", parent_policy="drop")
    with pytest.raises(ValueError, match="derangement"):
        unlearning.get_config("ac", derangement="cyclic")
    with pytest.raises(ValueError, match="index_shift"):
        unlearning.get_config("ac", derangement="shift", index_shift=0)
    with pytest.raises(ValueError, match="pos_reduction"):
        unlearning.get_config("ac", pos_reduction="sum")
    with pytest.raises(ValueError, match="pos_target"):
        unlearning.get_config("ac", pos_target="bounded")  # HAC's name, not AC's
    with pytest.raises(ValueError, match="pos_target"):
        unlearning.get_config("hac", pos_target="absolute")
    with pytest.raises(ValueError, match="pos_margin"):
        unlearning.get_config("hac", pos_target="relative", pos_margin=-0.1)
    with pytest.raises(ValueError, match="pos_reference"):
        unlearning.get_config("hac", pos_target="relative", pos_reference="median")
    with pytest.raises(ValueError, match="pos_quantile"):
        unlearning.get_config("ac", pos_target="relative", pos_quantile=-0.5)
    with pytest.raises(ValueError, match="forget_negatives=False needs alpha=0"):
        unlearning.get_config("hac", forget_negatives=False, alpha=1.0)
    with pytest.raises(ValueError, match="total_steps"):
        unlearning.get_config("l1_sparse", l1_schedule="linear")
    with pytest.raises(AttributeError):
        cfg.new_key = 1  # locked: typos cannot add fields
    with pytest.raises(TypeError):
        unlearning.get_config("ac", alpha="big")


def test_register_a_new_method_and_its_errors():
    name = "test_only_scaled_ft"
    try:

        @unlearning.register(name, defaults=dict(scale=3.0), needs_forget=False)
        def scaled(params, frozen_params, batch, rng, *, model, cfg, geometry, step=0):
            loss = cfg.scale * jnp.sum(params["w"] ** 2)
            return loss, {"loss": loss}

        method = unlearning.get_method(name)
        assert name in unlearning.list_methods()
        assert method.loss_fn is scaled and method.config().scale == 3.0
        assert not method.needs_forget and not method.reinit and not method.needs_frozen_model
        loss_fn = method.bind(model=None, geometry="clip", cfg=method.config(scale=0.5))
        value, _ = loss_fn({"w": jnp.array([1.0, 2.0])}, None, {}, None)
        assert float(value) == pytest.approx(2.5)
        with pytest.raises(ValueError, match="already registered"):
            unlearning.register(name)(scaled)
        unlearning.register(name, defaults=dict(scale=1.0), replace=True)(scaled)
        assert unlearning.get_config(name).scale == 1.0
    finally:
        registry._REGISTRY.pop(name, None)
    assert name not in unlearning.list_methods()
    with pytest.raises(ValueError, match="lower-case identifiers"):
        unlearning.register("Bad Name")
    with pytest.raises(ValueError, match="geometries"):
        unlearning.register("x_method", geometries=("poincare",))
    with pytest.raises(ValueError, match="forget or the retain"):
        unlearning.register("x_method", needs_forget=False, needs_retain=False)


def test_bind_checks_geometry_and_config():
    with pytest.raises(ValueError, match="defined for geometries \\['lorentz'\\]"):
        unlearning.get_method("hac").bind(model=None, geometry="clip")
    bad = unlearning.get_config("ac").unlock()
    bad.derangement = "cyclic"
    with pytest.raises(ValueError, match="derangement"):
        unlearning.get_method("ac").bind(model=None, geometry="meru", cfg=bad)
    with pytest.raises(ValueError, match="unknown geometry"):
        unlearning.get_method("ac").bind(model=None, geometry="poincare")


# ------------------------------------------------------------------------------------------------
# methods on a model
# ------------------------------------------------------------------------------------------------


def _subset(model, params, batch, geometry, which, entail_weight=0.2):
    out = model.apply({"params": params}, batch["image"], batch["tokens"])
    mask = np.asarray(batch["is_forget"])
    mask = mask if which == "forget" else ~mask
    return common.subset_model_loss(
        out["image"],
        out["text"],
        out["logit_scale"],
        out["curv"],
        geometry,
        mask,
        entail_weight=entail_weight,
    )[0]


def test_baselines_are_the_model_loss_on_the_right_subset(setup):
    model, params, geometry = setup
    batch = make_batch(MIXED)
    retain = _subset(model, params, batch, geometry, "retain")
    forget = _subset(model, params, batch, geometry, "forget")
    assert float(forget) > 0 and float(retain) > 0

    def run(name, **overrides):
        method = unlearning.get_method(name)
        fn = method.bind(model=model, geometry=geometry, cfg=method.config(**overrides))
        return fn(params, None, batch, None)[0]

    np.testing.assert_allclose(run("ft"), retain, rtol=1e-6)
    np.testing.assert_allclose(run("retrain"), retain, rtol=1e-6)
    np.testing.assert_allclose(run("ga"), -forget, rtol=1e-6)
    np.testing.assert_allclose(run("negrad"), retain - forget, rtol=1e-6)
    np.testing.assert_allclose(run("negrad", forget_weight=0.25), retain - 0.25 * forget, rtol=1e-6)
    # the forget pairs are invisible to FT: changing them leaves its loss unchanged
    other = dict(batch)
    other["tokens"] = batch["tokens"].at[0].set(7)
    fn = unlearning.get_method("ft").bind(model=model, geometry=geometry)
    np.testing.assert_allclose(fn(params, None, other, None)[0], retain, rtol=1e-6)


def test_l1_sparse_adds_the_scheduled_l1_norm(setup):
    model, params, geometry = setup
    batch = make_batch(MIXED)
    retain = _subset(model, params, batch, geometry, "retain")
    weights_l1 = float(
        jnp.abs(params["visual_proj"]["kernel"]).sum()
        + jnp.abs(params["token_embed"]["embedding"]).sum()
    )
    rules = unlearning.get_config("l1_sparse").l1_rules
    assert float(l1_norm(params, rules)) == pytest.approx(weights_l1, rel=1e-6)  # scalars excluded
    method = unlearning.get_method("l1_sparse")
    const = method.bind(model=model, geometry=geometry, cfg=method.config(l1=1e-3))
    loss, m = const(params, None, batch, None, step=123)
    np.testing.assert_allclose(loss, retain + 1e-3 * weights_l1, rtol=1e-6)
    assert float(m["l1_norm"]) == pytest.approx(weights_l1, rel=1e-6)
    linear = method.bind(
        model=model,
        geometry=geometry,
        cfg=method.config(l1=1e-3, l1_schedule="linear", total_steps=100),
    )
    for step, factor in ((0, 1.0), (25, 0.75), (100, 0.0), (150, 0.0)):
        loss, m = linear(params, None, batch, None, step=step)
        np.testing.assert_allclose(loss, retain + factor * 1e-3 * weights_l1, rtol=1e-6)
        assert float(m["l1_weight"]) == pytest.approx(factor * 1e-3, rel=1e-6, abs=1e-12)


def test_ac_on_a_model_matches_the_embedding_function(setup):
    model, params, geometry = setup
    batch = make_batch(MIXED)
    method = unlearning.get_method("ac")
    cfg = method.config(alpha=1.5, beta=0.5, derangement="shift", index_shift=2)
    loss, metrics = method.bind(model=model, geometry=geometry, cfg=cfg)(params, None, batch, None)
    out = model.apply({"params": params}, batch["image"], batch["tokens"])
    perm, valid = common.forget_derangement(batch["is_forget"], shift=2)
    ref, _ = ac.ac_loss_from_embeddings(
        out["image"],
        out["text"],
        batch["is_forget"],
        out["logit_scale"],
        out["curv"],
        geometry,
        1.5,
        0.5,
        perm,
        valid=valid,
    )
    np.testing.assert_allclose(loss, ref, rtol=1e-6)
    assert int(metrics["num_forget"]) == 3
    with pytest.raises(ValueError, match="needs an rng"):
        method.bind(model=model, geometry=geometry)(params, None, batch, None)


def test_ac_without_forget_pairs_equals_fine_tuning(setup):
    model, params, geometry = setup
    batch = make_batch([False] * 8)
    ac_fn = unlearning.get_method("ac").bind(model=model, geometry=geometry)
    ft = unlearning.get_method("ft")
    ft_fn = ft.bind(model=model, geometry=geometry, cfg=ft.config(entail_weight=0.0))
    np.testing.assert_allclose(
        ac_fn(params, None, batch, jax.random.key(0))[0],
        ft_fn(params, None, batch, None)[0],
        rtol=1e-6,
    )


def test_hac_on_a_model_uses_parents_and_the_frozen_model():
    model = LinearTwoTower("meru")
    params = model.init(jax.random.key(0), 48, 20, 6)
    frozen = model.init(jax.random.key(1), 48, 20, 6)
    batch = make_batch(MIXED)
    method = unlearning.get_method("hac")
    fn = method.bind(
        model=model,
        geometry="meru",
        cfg=method.config(derangement="shift", parent_policy="keep", delta=0.1),
        parent_prompt_tokens=PARENT_PROMPTS,
    )
    # only the parent term, with and without a gradient into the parent texts
    parent_only = dict(
        derangement="shift",
        parent_policy="keep",
        alpha=0.0,
        beta=0.0,
        lambda_ent0=0.0,
        lambda_ec=0.0,
        lambda_n=0.0,
    )
    fixed, moving = (
        method.bind(
            model=model,
            geometry="meru",
            cfg=method.config(parent_stop_gradient=stop, **parent_only),
            parent_prompt_tokens=PARENT_PROMPTS,
        )
        for stop in (True, False)
    )

    @functools.partial(jax.jit, compiler_options=FAST)
    def run(params, frozen, batch):
        out = model.apply({"params": params}, batch["image"], batch["tokens"])
        out0 = model.apply({"params": frozen}, batch["image"], batch["tokens"])
        ensembles = model.apply(
            {"params": params}, PARENT_PROMPTS, method="encode_prompt_ensembles"
        )
        parent = ensembles[batch["parent"]]
        f = batch["is_forget"]
        refs = {
            "parent_cone": hac.parent_cone_loss(out["image"], parent, f, out["curv"], "keep", 0.1),
            "norm_reg": hac.norm_regularization(
                out["image"], out["text"], out0["image"], out0["text"], f
            ),
        }
        grads = [
            jax.grad(lambda p, g=g: g(p, None, batch, None)[0])(params) for g in (fixed, moving)
        ]
        return fn(params, frozen, batch, None)[1], fn(params, params, batch, None)[1], refs, grads

    metrics, self_metrics, refs, (g_fixed, g_moving) = run(params, frozen, batch)
    for name, ref in refs.items():
        np.testing.assert_allclose(metrics[name], ref, rtol=1e-6)
    assert float(metrics["norm_reg"]) > 0 and float(metrics["parent_cone"]) > 0
    assert float(self_metrics["norm_reg"]) == 0.0  # against itself the norm term vanishes
    # By default the parent text is a fixed reference: tokens used only by the parents get no
    # gradient (they do when parent_stop_gradient is off).
    only_parent = np.setdiff1d(PARENT_PROMPTS, np.asarray(batch["tokens"]))
    assert only_parent.size > 0
    assert np.all(np.asarray(g_fixed["token_embed"]["embedding"])[only_parent] == 0.0)
    assert np.any(np.asarray(g_moving["token_embed"]["embedding"])[only_parent] != 0.0)
    with pytest.raises(ValueError, match="parent prompts"):
        fn(params, frozen, {k: v for k, v in batch.items() if k != "parent"}, None)
    unbound = method.bind(model=model, geometry="meru", cfg=method.config(parent_policy="keep"))
    with pytest.raises(ValueError, match="parent prompts"):
        unbound(params, frozen, batch, None)
    with pytest.raises(ValueError, match="frozen_params"):
        fn(params, None, batch, None)


def test_every_method_jits_and_gives_finite_gradients():
    """All methods in one jitted step on MERU, for batches with no, one, some and only forget pairs.

    One compilation, without XLA's backend optimisations: they cost most of the compile time here
    and do not change what is computed."""
    model = LinearTwoTower("meru")
    params = model.init(jax.random.key(0), 48, 20, 6)
    fns = {}
    for name in BUILTIN:
        method = unlearning.get_method(name)
        overrides = {"l1_schedule": "linear", "total_steps": 10} if name == "l1_sparse" else {}
        fns[name] = method.bind(
            model=model,
            geometry="meru",
            cfg=method.config(**overrides),
            parent_prompt_tokens=PARENT_PROMPTS,
        )

    @functools.partial(jax.jit, compiler_options=FAST)
    def step(params, batch, key, i):
        return {
            name: jax.value_and_grad(fn, has_aux=True)(params, params, batch, key, i)
            for name, fn in fns.items()
        }

    for i, mask in enumerate(([False] * 8, [True] + [False] * 7, MIXED, [True] * 8)):
        results = step(params, make_batch(mask, i), jax.random.key(i), i)
        for name, ((loss, metrics), grads) in results.items():
            assert np.isfinite(float(loss)), (name, mask)
            assert float(metrics["loss"]) == pytest.approx(float(loss), rel=1e-6)
            leaves = jax.tree_util.tree_leaves(grads)
            assert all(np.all(np.isfinite(np.asarray(g))) for g in leaves), (name, mask)
            if mask is MIXED:  # every method trains something on a mixed batch
                assert any(np.any(np.asarray(g) != 0) for g in leaves), name


def test_sphere_geometry_object_is_accepted_by_bind():
    model = LinearTwoTower("clip")
    params = model.init(jax.random.key(0), 48, 20, 6)
    a = unlearning.get_method("ft").bind(model=model, geometry=SPHERE)(
        params, None, make_batch(MIXED), None
    )
    b = unlearning.get_method("ft").bind(model=model, geometry="clip")(
        params, None, make_batch(MIXED), None
    )
    np.testing.assert_allclose(a[0], b[0], rtol=1e-7)


def test_methods_on_the_real_meru_model():
    """The registry signature against the Flax MERU (smallest architecture)."""
    from hac_jax import models

    cfg = models.get_arch("fmnist_xs", "meru")
    model = models.build_model(cfg)
    # jit: an eager Flax init compiles every op on its own (slow on a small CPU)
    init = jax.jit(
        lambda key: model.init(key, *models.dummy_inputs(cfg))["params"], compiler_options=FAST
    )
    params, frozen = init(jax.random.key(0)), init(jax.random.key(1))
    rng = np.random.default_rng(0)
    n, size, length = 4, cfg.vision.image_size, cfg.text.context_length
    tokens = rng.integers(1, 400, size=(n, length)).astype(np.int32)
    tokens[:, 6] = 49407  # EOS
    tokens[:, 7:] = 0
    parents = np.stack([tokens[:3], tokens[1:]])  # two parent concepts, three prompts each
    parents[:, :, 1] = 500
    batch = {
        "image": jnp.asarray(rng.random((n, size, size, 3)), jnp.float32),
        "tokens": jnp.asarray(tokens),
        "is_forget": jnp.asarray([True, False, True, False]),
        "label": jnp.arange(n, dtype=jnp.int32),
        "group": jnp.asarray([0, 0, 1, 1], jnp.int32),
        "parent": jnp.asarray([0, 0, 1, 1], jnp.int32),
    }
    # l1 rules name real parameters: the scalars and the fixed position table are excluded
    rules = unlearning.get_config("l1_sparse").l1_rules
    flat = jax.tree_util.tree_leaves_with_path(params)
    expected = sum(
        float(np.abs(np.asarray(leaf, np.float64)).sum())
        for path, leaf in flat
        if jax.tree_util.keystr(path, simple=True, separator="/")
        not in ("logit_scale", "curv", "visual_alpha", "textual_alpha", "visual/pos_embed")
    )
    assert float(jax.jit(lambda p: l1_norm(p, rules))(params)) == pytest.approx(expected, rel=1e-5)
    # HAC end to end: pooled parent prompt ensembles (the "keep" policy; the default leaves the
    # parent cone to the data), the frozen model for the norm term
    hac_fn = unlearning.get_method("hac").bind(
        model=model,
        geometry=cfg.kind,
        cfg=unlearning.get_config("hac", parent_policy="keep"),
        parent_prompt_tokens=parents,
    )
    step = jax.jit(jax.value_and_grad(hac_fn, has_aux=True), compiler_options=FAST)
    (loss, metrics), grads = step(params, frozen, batch, jax.random.key(0), 0)
    assert np.isfinite(float(loss)) and float(metrics["norm_reg"]) > 0
    for name in ("ctr", "entail_retain", "pos_calib", "entail_calib", "parent_cone"):
        assert np.isfinite(float(metrics[name])), name
    leaves = jax.tree_util.tree_leaves(grads)
    assert all(np.all(np.isfinite(np.asarray(g))) for g in leaves)
    assert float(jnp.abs(grads["visual_proj"]["kernel"]).sum()) > 0


def test_run_passes_count_only_what_the_config_computes():
    from hac_jax.unlearning.loop import run_passes

    hac_method = unlearning.get_method("hac")
    default = run_passes(hac_method, hac_method.config(), 10, 8, num_prompts=6)
    # the frozen original's forward every step; the parent prompts are not encoded under the
    # default "ignore" policy
    assert default == {
        "forward_examples": 160,
        "backward_examples": 80,
        "frozen_forward_examples": 80,
        "prompt_text_forwards": 0,
    }
    keep = run_passes(hac_method, hac_method.config(parent_policy="keep"), 10, 8, 6)
    assert keep["prompt_text_forwards"] == 60 and keep["frozen_forward_examples"] == 80
    no_norm = run_passes(hac_method, hac_method.config(lambda_n=0.0), 10, 8, 6)
    assert no_norm["frozen_forward_examples"] == 0 and no_norm["forward_examples"] == 80
    ac_method = unlearning.get_method("ac")
    assert run_passes(ac_method, ac_method.config(), 10, 8, 6) == {
        "forward_examples": 80,
        "backward_examples": 80,
        "frozen_forward_examples": 0,
        "prompt_text_forwards": 0,
    }
