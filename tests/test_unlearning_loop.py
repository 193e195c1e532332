"""The unlearning loop: checks before compute, AC/HAC runs, theta_0 untouched, resume, Retrain."""

from __future__ import annotations

import logging

import jax
import numpy as np
import pytest
from conftest import module_compilation_cache

from hac_jax import data as hdata
from hac_jax import models
from hac_jax.training import sharding
from hac_jax.unlearning import loop

STEPS = 4
BATCH = 8


@pytest.fixture(scope="module", autouse=True)
def _compilation_cache(tmp_path_factory):
    """A persistent compilation cache for this module only: the interrupted and resumed runs
    reuse the step compiled for the uninterrupted one."""
    with module_compilation_cache(tmp_path_factory.mktemp("jax_cache")):
        yield


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return hdata.prepare_shapes(
        str(tmp_path_factory.mktemp("tfds")), image_size=16, train_per_class=16, test_per_class=2
    )


def _cfg(kind):
    return models.model_config(
        kind, "fmnist_xs", image_size=16, patch_size=8, vision_depth=1, embed_dim=16
    )


@pytest.fixture(scope="module")
def meru():
    cfg = _cfg("meru")
    return cfg, models.init_params(cfg, 123)


@pytest.fixture(scope="module")
def mesh():
    return sharding.make_mesh([("data", -1)], jax.devices()[:2])


def _host(tree):
    return jax.tree.map(lambda x: np.array(x), jax.device_get(tree))


def _max_diff(a, b):
    return max(
        float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
        for x, y in zip(jax.tree.leaves(_host(a)), jax.tree.leaves(_host(b)), strict=True)
    )


def _run(params0, cfg, data, mesh, **kw):
    args = dict(
        method="hac",
        forget_classes=["circle"],
        steps=STEPS,
        batch_size=BATCH,
        lr=1e-3,
        mesh=mesh,
        log_every=1,
    )
    args.update(kw)
    return loop.unlearn(params0, cfg, data, **args)


_RUNS = {}


_COMPILES = {}


class _CompileLog(logging.Handler):
    def __init__(self):
        super().__init__()
        self.names = []

    def emit(self, record):
        msg = record.getMessage()
        if msg.startswith("Compiling "):
            self.names.append(msg.split(" ")[1])


def _cached(name, params0, cfg, data, mesh, **kw):
    """One run per method, shared by the tests below (also counts its compilations)."""
    if name not in _RUNS:
        before = _host(params0)
        handler = _CompileLog()
        jax_logger = logging.getLogger("jax")
        jax_logger.addHandler(handler)
        try:
            with jax.log_compiles(True):
                result = _run(params0, cfg, data, mesh, **kw)
        finally:
            jax_logger.removeHandler(handler)
        _RUNS[name] = (before, result)
        _COMPILES[name] = handler.names
    return _RUNS[name]


# ------------------------------------------------------------------------------------------------
# bad inputs: each raises before any compute
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def no_compute(monkeypatch):
    """Fails the test if the loop gets as far as building its training state."""
    import hac_jax.training.driver

    def boom(*a, **k):
        raise AssertionError("compute started before the input was rejected")

    monkeypatch.setattr(hac_jax.training.driver, "create_train_state", boom)


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(method="hca"), r"unknown unlearning method 'hca'.*Did you mean"),
        (dict(forget_classes=[]), r"forget set is empty"),
        (dict(forget_classes=["drawings"]), r"covers all 5 classes"),
        (dict(forget_classes=["shapes", "patterns"]), r"covers all 5 classes"),
        (dict(forget_classes=["hexagon"]), r"unknown concept 'hexagon'"),
        (dict(method="ac", forget_fraction=0.0), r"needs forget pairs"),
        (dict(batch_size=7), r"not divisible by the data axis"),
        (dict(steps=0), r"steps must be a positive integer"),
        (dict(method_cfg={"alpah": 1.0}), r"has no option"),
    ],
)
def test_bad_inputs_raise_before_compute(kw, match, data, meru, mesh, no_compute):
    cfg, params0 = meru
    with pytest.raises(ValueError, match=match) as info:
        _run(params0, cfg, data, mesh, **kw)
    assert "\n" not in str(info.value)


def test_hac_on_a_clip_model_is_rejected_before_compute(data, mesh, no_compute):
    cfg = _cfg("clip")
    abstract = models.param_shapes(cfg)
    with pytest.raises(ValueError, match=r"'hac' is defined for geometries \['lorentz'\]"):
        _run(abstract, cfg, data, mesh)


def test_default_forget_fraction_from_flags():
    from hac_jax.unlearning import get_method

    assert loop.default_forget_fraction(get_method("ft")) == 0.0
    assert loop.default_forget_fraction(get_method("ga")) == 1.0
    assert loop.default_forget_fraction(get_method("ac")) == 0.5
    assert loop.default_forget_fraction(get_method("hac")) == 0.5


# ------------------------------------------------------------------------------------------------
# runs
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["ac", "hac"])
def test_run_is_finite_changes_params_and_keeps_theta0(method, data, meru, mesh):
    cfg, params0 = meru
    before, result = _cached(method, params0, cfg, data, mesh, method=method)
    assert result.steps == STEPS
    assert [r["step"] for r in result.history] == list(range(1, STEPS + 1))
    losses = [r["loss"] for r in result.history]
    assert all(np.isfinite(v) for v in losses), losses
    assert result.seconds > 0
    # theta_0 is still readable and bit-identical (not donated, not updated).
    after = _host(params0)
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after), strict=True):
        np.testing.assert_array_equal(a, b)
    # The unlearned parameters moved, and they respect the scalar clamps.
    assert _max_diff(result.params, params0) > 1e-4
    clamped = models.clamp_scalars(result.params, cfg)
    assert _max_diff(clamped, result.params) == 0.0


@pytest.mark.parametrize("method", ["ac", "hac"])
def test_the_step_compiles_once_per_run(method, data, meru, mesh):
    cfg, params0 = meru
    _cached(method, params0, cfg, data, mesh, method=method)
    assert _COMPILES[method].count("jit(step)") == 1, _COMPILES[method]


def test_hac_metrics_include_its_terms(data, meru, mesh):
    cfg, params0 = meru
    _, result = _cached("hac", params0, cfg, data, mesh)
    rec = result.history[-1]
    assert {"loss", "lr", "grad_norm"} <= set(rec)
    assert rec["lr"] == pytest.approx(1e-3)
    assert rec["grad_norm"] > 0


def test_resume_matches_an_uninterrupted_run(data, meru, mesh, tmp_path):
    cfg, params0 = meru
    _, full = _cached("hac", params0, cfg, data, mesh)
    first = _run(params0, cfg, data, mesh, workdir=tmp_path, stop_after=2)
    assert first.steps == 2
    assert _max_diff(first.params, full.params) > 1e-6  # stopped early: not yet the end point
    resumed = _run(params0, cfg, data, mesh, workdir=tmp_path)
    assert resumed.steps == STEPS
    assert [r["step"] for r in resumed.history] == list(range(3, STEPS + 1))
    assert _max_diff(resumed.params, full.params) < 1e-6
    # A different run in the same workdir is refused rather than mixed in.
    with pytest.raises(ValueError, match="different unlearning run"):
        _run(params0, cfg, data, mesh, workdir=tmp_path, lr=2e-3)


def test_retrain_starts_from_a_fresh_initialisation(data, meru, mesh):
    cfg, params0 = meru
    seed = 7
    # A negligible step size: the result is (to 1e-6) the point the loop started from.
    result = _run(params0, cfg, data, mesh, method="retrain", steps=1, lr=1e-9, seed=seed)
    fresh = models.init_params(cfg, jax.random.PRNGKey(seed))
    assert _max_diff(result.params, fresh) < 1e-6
    assert _max_diff(result.params, params0) > 1e-2


def test_fsdp_sharded_unlearning_equals_the_replicated_run(data, meru, mesh):
    """HAC with its state (and the frozen original) sharded by the FSDP rules on a 2-device mesh
    follows the replicated run's losses."""
    from hac_jax.models.sharding_rules import get_rules

    cfg, params0 = meru
    _, replicated = _cached("hac", params0, cfg, data, mesh, method="hac")
    sharded = _run(params0, cfg, data, mesh, method="hac", sharding_rules=get_rules("fsdp"))
    specs = {tuple(leaf.sharding.spec) for leaf in jax.tree.leaves(sharded.params)}
    assert any("data" in spec for spec in specs)  # some parameters really are split
    # the same trajectory (AdamW turns float reassociation in near-zero gradients into
    # lr-sized parameter differences, so the losses are the measure)
    np.testing.assert_allclose(
        [r["loss"] for r in sharded.history], [r["loss"] for r in replicated.history], rtol=1e-5
    )
