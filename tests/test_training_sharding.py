"""Mesh construction, sharding rules and batch placement on 8 fake CPU devices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from hac_jax.training import sharding


def test_eight_fake_devices():
    assert len(jax.devices()) == 8


def test_make_mesh_fills_minus_one_and_uses_auto_axes():
    mesh = sharding.make_mesh([("data", -1), ("model", 2)])
    assert dict(mesh.shape) == {"data": 4, "model": 2}
    assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)
    assert dict(sharding.make_mesh([("data", -1)]).shape) == {"data": 8}


@pytest.mark.parametrize(
    "axes,match",
    [
        ([("model", -1)], "include 'data'"),
        ([("data", 3)], "needs 3 devices"),
        ([("data", -1), ("model", 3)], "cannot fill"),
        ([("data", -1), ("model", -1)], "at most one -1"),
    ],
)
def test_make_mesh_errors(axes, match):
    with pytest.raises(ValueError, match=match):
        sharding.make_mesh(axes)


def test_param_shardings_rules_first_match_and_replicated_default():
    mesh = sharding.make_mesh([("data", -1), ("model", 2)])
    params = {
        "mlp": {"fc1": {"kernel": jnp.ones((4, 8)), "bias": jnp.ones(8)}},
        "proj": {"kernel": jnp.ones((6, 4))},
    }
    rules = [(r".*/fc1/kernel", (None, "model")), (r".*/kernel", ("model", None))]
    sh = sharding.param_shardings(params, mesh, rules)
    assert sh["mlp"]["fc1"]["kernel"].spec == P(None, "model")
    assert sh["proj"]["kernel"].spec == P("model", None)
    assert sh["mlp"]["fc1"]["bias"].spec == P()
    placed = jax.device_put(params, sh)
    shard_shapes = {s.data.shape for s in placed["mlp"]["fc1"]["kernel"].addressable_shards}
    assert shard_shapes == {(4, 4)}


def test_param_shardings_reports_every_bad_rule():
    mesh = sharding.make_mesh([("data", -1), ("model", 2)])
    params = {"a": jnp.ones((3, 4)), "b": jnp.ones(4)}
    with pytest.raises(ValueError) as e:
        sharding.param_shardings(params, mesh, [("a", ("model", None)), ("b", ("expert",))])
    assert "a: dim 3 not divisible by model=2" in str(e.value)
    assert "b: unknown mesh axis 'expert'" in str(e.value)


def test_global_batch_is_split_on_data():
    mesh = sharding.make_mesh([("data", -1)])
    batch = {"image": np.arange(16 * 3, dtype=np.float32).reshape(16, 3), "label": np.arange(16)}
    g = sharding.global_batch(batch, mesh)
    assert g["image"].sharding.spec == P("data")
    assert {s.data.shape for s in g["image"].addressable_shards} == {(2, 3)}
    np.testing.assert_array_equal(np.asarray(g["label"]), batch["label"])


def test_sharded_grad_equals_single_device():
    """A loss/grad jitted over a data x model mesh equals the single-device result."""
    rng = np.random.default_rng(0)
    params = {
        "w1": jnp.asarray(rng.normal(size=(6, 8)), jnp.float32),
        "w2": jnp.asarray(rng.normal(size=(8, 3)), jnp.float32),
    }
    x = rng.normal(size=(16, 6)).astype(np.float32)

    def loss(p, x):
        return jnp.mean(jnp.tanh(x @ p["w1"]) @ p["w2"] ** 2)

    ref = jax.jit(jax.value_and_grad(loss))(params, jnp.asarray(x))
    mesh = sharding.make_mesh([("data", -1), ("model", 2)])
    psh = sharding.param_shardings(params, mesh, [("w1", (None, "model"))])
    f = jax.jit(
        jax.value_and_grad(loss),
        in_shardings=(psh, sharding.batch_sharding(mesh)),
        out_shardings=(sharding.replicated(mesh), psh),
    )
    got = f(jax.device_put(params, psh), sharding.global_batch({"x": x}, mesh)["x"])
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-6)
    for k in params:
        np.testing.assert_allclose(got[1][k], ref[1][k], rtol=1e-5, atol=1e-7)


def test_distributed_auto_stays_single_process(monkeypatch):
    for var in ("JAX_COORDINATOR_ADDRESS", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    assert sharding.maybe_initialize_distributed("auto") is False
    assert sharding.maybe_initialize_distributed(False) is False
    with pytest.raises(ValueError, match="distributed must be"):
        sharding.maybe_initialize_distributed("yes")
