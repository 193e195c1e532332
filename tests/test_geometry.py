"""Tests for hac_jax.geometry: the Lorentz and sphere geometries behind one interface."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hac_jax import geometry
from hac_jax.geometry import LORENTZ, SPHERE, get_geometry, lorentz


@pytest.mark.parametrize(
    "name, expected",
    [
        ("lorentz", LORENTZ),
        ("meru", LORENTZ),
        ("MERU", LORENTZ),
        ("sphere", SPHERE),
        ("clip", SPHERE),
        ("euclidean", SPHERE),
        ("Clip", SPHERE),
    ],
)
def test_get_geometry_names(name, expected):
    assert get_geometry(name) is expected
    assert get_geometry(expected) is expected


@pytest.mark.parametrize("bad", ["hyperboloid", "", "poincare", 3, None])
def test_get_geometry_rejects_unknown_names(bad):
    with pytest.raises(ValueError, match="unknown geometry"):
        get_geometry(bad)


def test_geometries_are_frozen_hashable_and_static_jit_args():
    assert LORENTZ.name == "lorentz" and SPHERE.name == "sphere"
    with pytest.raises(dataclasses.FrozenInstanceError):
        LORENTZ.name = "x"
    assert len({LORENTZ, SPHERE, geometry.LorentzGeometry()}) == 2

    def sims(geom, x, y, curv):
        return geom.pairwise_sim(geom.project(x, curv), geom.project(y, curv), curv)

    f = jax.jit(sims, static_argnums=0)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((3, 4)), jnp.float32)
    y = jnp.asarray(rng.standard_normal((2, 4)), jnp.float32)
    for geom in (LORENTZ, SPHERE):
        np.testing.assert_allclose(f(geom, x, y, 0.8), sims(geom, x, y, 0.8), rtol=1e-6)


def test_lorentz_geometry_delegates_to_lorentz_ops():
    rng = np.random.default_rng(1)
    v = jnp.asarray(rng.standard_normal((5, 6)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((5, 6)), jnp.float32)
    c = jnp.float32(0.6)
    x, y = LORENTZ.project(v, c), LORENTZ.project(w, c)
    np.testing.assert_array_equal(x, lorentz.exp_map0(v, c))
    np.testing.assert_array_equal(LORENTZ.pairwise_sim(x, y, c), -lorentz.pairwise_dist(x, y, c))
    np.testing.assert_array_equal(LORENTZ.sim(x, y, c), -lorentz.dist(x, y, c))
    np.testing.assert_array_equal(LORENTZ.dist_to_origin(x, c), lorentz.dist_to_origin(x, c))
    # row-wise and pairwise similarities agree on the diagonal
    np.testing.assert_allclose(
        np.diag(LORENTZ.pairwise_sim(x, y, c)), LORENTZ.sim(x, y, c), rtol=1e-4, atol=1e-5
    )
    # the curvature matters for the Lorentz geometry
    assert not np.allclose(LORENTZ.pairwise_sim(x, y, c), LORENTZ.pairwise_sim(x, y, 2.0 * c))


def test_sphere_geometry_is_cosine_and_ignores_curv():
    rng = np.random.default_rng(2)
    v = rng.standard_normal((5, 6)) * rng.uniform(0.1, 10, (5, 1))
    w = rng.standard_normal((3, 6))
    x, y = SPHERE.project(jnp.asarray(v), 1.0), SPHERE.project(jnp.asarray(w), 7.0)
    np.testing.assert_allclose(np.linalg.norm(x, axis=-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(x, v / np.linalg.norm(v, axis=-1, keepdims=True), rtol=1e-6)
    cos = (v / np.linalg.norm(v, axis=-1, keepdims=True)) @ (
        w / np.linalg.norm(w, axis=-1, keepdims=True)
    ).T
    np.testing.assert_allclose(SPHERE.pairwise_sim(x, y, 1.0), cos, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(SPHERE.pairwise_sim(x, y, 3.0), SPHERE.pairwise_sim(x, y, 1.0))
    np.testing.assert_allclose(SPHERE.sim(x[:3], y, 1.0), np.diag(cos[:3]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        SPHERE.dist_to_origin(jnp.asarray(v), 1.0), np.linalg.norm(v, axis=-1), rtol=1e-6
    )


def test_sphere_project_is_safe_at_zero():
    v = jnp.zeros((2, 4), jnp.float32).at[1].set(jnp.asarray([3.0, 0.0, 4.0, 0.0]))
    out = SPHERE.project(v, 1.0)
    np.testing.assert_array_equal(out[0], 0.0)
    np.testing.assert_allclose(out[1], [0.6, 0.0, 0.8, 0.0], rtol=1e-6)
    g = jax.grad(lambda a: jnp.sum(SPHERE.project(a, 1.0) * jnp.arange(4.0)))(v)
    assert np.all(np.isfinite(g))
    # d/dv of v/|v| at v = (3,0,4,0): (I - u u^T)/|v| applied to the cotangent (0,1,2,3)
    u = np.array([0.6, 0.0, 0.8, 0.0])
    expected = (np.eye(4) - np.outer(u, u)) @ np.arange(4.0) / 5.0
    np.testing.assert_allclose(g[1], expected, rtol=1e-5, atol=1e-7)
    gd = jax.grad(lambda a: jnp.sum(SPHERE.dist_to_origin(a, 1.0)))(v)
    np.testing.assert_array_equal(gd[0], 0.0)


def test_both_geometries_share_shapes():
    rng = np.random.default_rng(3)
    v = jnp.asarray(rng.standard_normal((4, 5)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((3, 5)), jnp.float32)
    for geom in (LORENTZ, SPHERE):
        x, y = geom.project(v, 1.0), geom.project(w, 1.0)
        assert x.shape == (4, 5)
        assert geom.pairwise_sim(x, y, 1.0).shape == (4, 3)
        assert geom.sim(x[:3], y, 1.0).shape == (3,)
        assert geom.dist_to_origin(x, 1.0).shape == (4,)
        # the most similar item to itself is itself (similarity is a proper similarity)
        s = np.asarray(geom.pairwise_sim(x, x, 1.0))
        assert np.all(np.argmax(s, axis=1) == np.arange(4))


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="same D"):
        SPHERE.pairwise_sim(jnp.ones((2, 3)), jnp.ones((2, 4)))
    with pytest.raises(ValueError, match="same D"):
        LORENTZ.pairwise_sim(jnp.ones((2, 3)), jnp.ones((2, 4)), 1.0)
    with pytest.raises(ValueError, match="last dimension"):
        SPHERE.sim(jnp.ones((2, 3)), jnp.ones((2, 4)))
    with pytest.raises(ValueError, match="scalar"):
        SPHERE.project(jnp.float32(2.0))
