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


_PROCESS_ENV = (
    "JAX_COORDINATOR_ADDRESS",
    "JAX_NUM_PROCESSES",
    "JAX_PROCESS_ID",
    "SLURM_NTASKS",
    "OMPI_COMM_WORLD_SIZE",
)
_TWO = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:8476", "JAX_NUM_PROCESSES": "2"}


def test_distributed_auto_stays_single_process(monkeypatch):
    for var in _PROCESS_ENV:
        monkeypatch.delenv(var, raising=False)
    assert sharding.maybe_initialize_distributed("auto") is False
    assert sharding.maybe_initialize_distributed(False) is False
    assert sharding.maybe_initialize_distributed("off", num_processes=4, process_id=9) is False
    with pytest.raises(ValueError, match="distributed mode must be"):
        sharding.maybe_initialize_distributed("yes")


def test_process_layout_from_the_environment_and_the_config():
    layout = sharding.process_layout(environ={**_TWO, "JAX_PROCESS_ID": "1"})
    assert layout == sharding.ProcessLayout("10.0.0.1:8476", 2, 1)
    # Config values win over the environment.
    assert sharding.process_layout(
        environ={**_TWO, "JAX_PROCESS_ID": "1"}, process_id=0, coordinator_address="h:1"
    ) == sharding.ProcessLayout("h:1", 2, 0)
    assert sharding.process_layout(
        "on", coordinator_address="h:1", num_processes=1, environ={}
    ) == sharding.ProcessLayout("h:1", 1, 0)
    # Single process: nothing set, or explicitly off.
    assert sharding.process_layout(environ={}) is None
    assert sharding.process_layout("off", environ={**_TWO, "JAX_PROCESS_ID": "1"}) is None
    # SLURM / Open MPI launches and "on" without settings: JAX's cluster detection fills in.
    for environ in ({"SLURM_NTASKS": "4"}, {"OMPI_COMM_WORLD_SIZE": "2"}):
        assert sharding.process_layout(environ=environ) == sharding.ProcessLayout(None, None, None)
    assert sharding.process_layout("on", environ={}) == sharding.ProcessLayout(None, None, None)


@pytest.mark.parametrize(
    "environ,config,message",
    [
        (
            {**_TWO, "JAX_PROCESS_ID": "2"},
            {},
            "the process id must be in [0, 2) (JAX_NUM_PROCESSES=2), got JAX_PROCESS_ID=2",
        ),
        (
            _TWO,
            {"process_id": -1},
            "the process id must be in [0, 2) (JAX_NUM_PROCESSES=2), got distributed.process_id=-1",
        ),
        (
            {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:8476"},
            {},
            "JAX_COORDINATOR_ADDRESS=10.0.0.1:8476 but no process count: set JAX_NUM_PROCESSES",
        ),
        (
            {"JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "0"},
            {},
            "JAX_NUM_PROCESSES=2 but no coordinator address: set JAX_COORDINATOR_ADDRESS",
        ),
        (_TWO, {}, "JAX_NUM_PROCESSES=2 but no process id: set JAX_PROCESS_ID"),
        ({"JAX_PROCESS_ID": "1"}, {}, "JAX_PROCESS_ID=1 but no process count"),
        ({**_TWO, "JAX_NUM_PROCESSES": "two"}, {}, "JAX_NUM_PROCESSES='two' is not an integer"),
        (
            {**_TWO, "JAX_NUM_PROCESSES": "0"},
            {},
            "the process count must be at least 1, got JAX_NUM_PROCESSES=0",
        ),
        (
            {**_TWO, "JAX_COORDINATOR_ADDRESS": "10.0.0.1", "JAX_PROCESS_ID": "0"},
            {},
            "the coordinator address must be host:port, got JAX_COORDINATOR_ADDRESS=10.0.0.1",
        ),
    ],
)
def test_inconsistent_process_settings_are_one_line_errors(environ, config, message):
    with pytest.raises(ValueError) as e:
        sharding.process_layout(environ=environ, **config)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_joining_after_the_first_computation_is_refused():
    """JAX has computed in this process (the tests above); joining others now cannot work."""
    jax.numpy.zeros(1).block_until_ready()
    with pytest.raises(RuntimeError, match="before JAX's first computation"):
        sharding.maybe_initialize_distributed(
            "on", coordinator_address="127.0.0.1:1", num_processes=2, process_id=0
        )
