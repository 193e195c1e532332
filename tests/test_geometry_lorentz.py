"""Tests for hac_jax.geometry.lorentz: MERU parity (fixtures), closed-form references, float32
accuracy, edge cases, transforms, and a property-based no-NaN/Inf check of values and gradients."""

import functools
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hac_jax.geometry import lorentz as L

GOLDEN = pathlib.Path(__file__).parent / "fixtures" / "meru_torch" / "golden_lorentz.npz"
CURVS = {"curv1.0": 1.0, "curv0.37": 0.37}
# op -> fixture input keys; two-input ops take (x, y, curv), the others (x, curv).
FIXTURE_OPS = {
    "pairwise_inner": ("pairwise_x", "pairwise_y"),
    "pairwise_dist": ("pairwise_x", "pairwise_y"),
    "exp_map0": ("exp_map0_x",),
    "log_map0": ("log_map0_x",),
    "half_aperture": ("half_aperture_x",),
    "oxy_angle": ("oxy_x", "oxy_y"),
}
ROWWISE2 = ["inner", "dist", "oxy_angle"]
PAIRWISE = ["pairwise_inner", "pairwise_dist", "pairwise_oxy_angle"]
UNARY = ["exp_map0", "log_map0", "half_aperture", "dist_to_origin", "time_component"]
F32_EPS = float(np.finfo(np.float32).eps)
# MERU's float64 clamp values (1 +- 1e-8 inside acosh / asin / acos).
MERU_ACOSH_FLOOR = math.acosh(1 + 1e-8)  # 1.414e-4
MERU_ASIN_CEIL = math.asin(1 - 1e-8)  # pi/2 - 1.414e-4
# For the big property / gradient-check graphs: LLVM backend optimisation off makes their compile
# ~3x cheaper. The tests' subjects (the `where` guards, the formulas) are the same graph either way;
# the MERU-parity and accuracy tests run with the default compile.
_FAST_COMPILE = {"xla_backend_optimization_level": 0}


@pytest.fixture(scope="module")
def golden():
    with np.load(GOLDEN) as f:
        return {k: f[k] for k in f.files}


@functools.cache
def _jit_op(name):
    static = ("min_radius",) if name == "half_aperture" else ()
    return jax.jit(getattr(L, name), static_argnames=static)


class _Jitted:
    """Jitted versions of the ops: one compile per (op, shapes, dtype), shared by all tests (much
    cheaper than op-by-op execution of the same graphs)."""

    def __getattr__(self, name):
        return _jit_op(name)


J = _Jitted()


@functools.cache
def _jit_value_and_grads(name):
    fn = getattr(L, name)

    def value_and_grads(args, curv):
        grads = jax.grad(lambda a, k: jnp.sum(fn(*a, k)), argnums=(0, 1))(args, curv)
        return fn(*args, curv), grads

    return jax.jit(value_and_grads)


def _value_and_grads(name, args, curv):
    """Output and gradients of out.sum() w.r.t. every input and the curvature (as the fixture)."""
    out, (grad_args, grad_curv) = _jit_value_and_grads(name)(tuple(args), curv)
    names = ["grad_x", "grad_y"][: len(args)]
    return {"out": out, **dict(zip(names, grad_args, strict=True)), "grad_curv": grad_curv}


# ----------------------------------------------------------------------------------------------
# MERU parity (golden_lorentz.npz)
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cname", list(CURVS))
@pytest.mark.parametrize("op", list(FIXTURE_OPS))
def test_matches_meru_float64(golden, op, cname):
    keys = FIXTURE_OPS[op]
    with jax.enable_x64(True):
        args = [jnp.asarray(golden[f"inputs/{k}"]) for k in keys]
        res = _value_and_grads(op, args, jnp.float64(CURVS[cname]))
        res = {k: np.asarray(v) for k, v in res.items()}
    for key, value in res.items():
        ref = golden[f"f64/{cname}/{op}/{key}"]
        if op == "half_aperture" and key == "out":
            # Rows with sqrt(c)|x| + 1e-8 <= 0.2 are MERU's asin clamp region (see module docs).
            norms = np.linalg.norm(golden["inputs/half_aperture_x"], axis=-1)
            clamp = np.sqrt(CURVS[cname]) * norms + 1e-8 <= 0.2
            assert clamp.any() and not clamp.all()
            np.testing.assert_allclose(ref[clamp], MERU_ASIN_CEIL, rtol=0, atol=1e-12)
            np.testing.assert_array_equal(value[clamp], np.pi / 2)
            value, ref = value[~clamp], ref[~clamp]
        np.testing.assert_allclose(value, ref, rtol=1e-10, atol=1e-10, err_msg=f"{op} {key}")


@pytest.mark.parametrize("cname", list(CURVS))
@pytest.mark.parametrize("op", list(FIXTURE_OPS))
def test_matches_meru_float32(golden, op, cname):
    keys = FIXTURE_OPS[op]
    args = [jnp.asarray(golden[f"inputs/{k}"], jnp.float32) for k in keys]
    res = _value_and_grads(op, args, jnp.float32(CURVS[cname]))
    for key, value in res.items():
        value = np.asarray(value)
        assert value.dtype == np.float32
        ref = golden[f"f32/{cname}/{op}/{key}"]
        # README tolerance: rtol ~1e-4 (1e-3 for scalar gradients); the atol covers entries that are
        # small compared with the array's scale.
        rtol = 1e-3 if key == "grad_curv" else 1e-4
        atol = 1e-5 * max(1.0, float(np.max(np.abs(ref))))
        np.testing.assert_allclose(value, ref, rtol=rtol, atol=atol, err_msg=f"{op} {key}")


@pytest.mark.parametrize("cname", list(CURVS))
def test_edge_cases_against_meru(golden, cname):
    """edge_x rows have norms 0, 1e-12, 3, 20. Where MERU's f64 clamps are active the mathematically
    right value is asserted instead, and the fixture is checked to hold MERU's clamp value."""
    c = CURVS[cname]
    ex = golden["inputs/edge_x"]
    norms = np.linalg.norm(ex, axis=-1)
    np.testing.assert_allclose(norms, [0, 1e-12, 3, 20], rtol=1e-12)
    tiny = norms < 1e-6
    sqrt_c_norm = np.sqrt(c) * norms
    with jax.enable_x64(True):
        c64 = jnp.float64(c)
        res = {
            op: _value_and_grads(op, [jnp.asarray(ex)], c64)
            for op in ("exp_map0", "log_map0", "half_aperture")
        }
        out = {op: np.asarray(r["out"]) for op, r in res.items()}
        grad = {op: np.asarray(r["grad_x"]) for op, r in res.items()}
        self_dist = np.asarray(
            J.pairwise_dist(golden["inputs/pairwise_x"], golden["inputs/pairwise_x"], c64)
        )
    ref = lambda op, k: golden[f"edge/{cname}/{op}/{k}"]  # noqa: E731

    # exp_map0: MERU's clamps at 1e-8 are effective; saturation at asinh(2^15) for norm 20.
    np.testing.assert_allclose(out["exp_map0"], ref("exp_map0", "out"), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(grad["exp_map0"], ref("exp_map0", "grad_x"), rtol=1e-10, atol=1e-10)
    assert sqrt_c_norm[3] > math.asinh(2**15)
    np.testing.assert_allclose(np.linalg.norm(out["exp_map0"][3]), 2**15 / np.sqrt(c), rtol=1e-12)

    # log_map0: rows 2-3 are regular; rows 0-1 lie in MERU's clamp region, where MERU scales by
    # acosh(1 + 1e-8) / max(sqrt(c)|x|, 1e-8) (up to 1.4e4); the right limit is log_map0(x) = x.
    np.testing.assert_allclose(out["log_map0"][~tiny], ref("log_map0", "out")[~tiny], rtol=1e-10)
    np.testing.assert_allclose(
        grad["log_map0"][~tiny], ref("log_map0", "grad_x")[~tiny], rtol=1e-10, atol=1e-12
    )
    meru_scale = MERU_ACOSH_FLOOR / np.maximum(sqrt_c_norm[tiny], 1e-8)
    np.testing.assert_allclose(
        ref("log_map0", "out")[tiny], meru_scale[:, None] * ex[tiny], rtol=1e-6, atol=1e-300
    )
    np.testing.assert_allclose(out["log_map0"][tiny], ex[tiny], rtol=1e-15, atol=0)
    np.testing.assert_allclose(grad["log_map0"][tiny], 1.0, rtol=1e-12)

    # half_aperture: rows 0-1 are inside the cone-radius clamp: MERU pi/2 - 1.414e-4, right: pi/2.
    np.testing.assert_allclose(
        out["half_aperture"][~tiny], ref("half_aperture", "out")[~tiny], rtol=1e-10
    )
    np.testing.assert_allclose(ref("half_aperture", "out")[tiny], MERU_ASIN_CEIL, atol=1e-12)
    np.testing.assert_array_equal(out["half_aperture"][tiny], np.pi / 2)
    np.testing.assert_allclose(
        grad["half_aperture"], ref("half_aperture", "grad_x"), rtol=1e-10, atol=1e-14
    )

    # pairwise_dist(x, x): off-diagonal regular; MERU's diagonal is its clamp acosh(1+1e-8)/sqrt(c).
    ref_self = ref("pairwise_dist_self", "out")
    off = ~np.eye(len(ref_self), dtype=bool)
    np.testing.assert_allclose(self_dist[off], ref_self[off], rtol=1e-10)
    np.testing.assert_allclose(np.diag(ref_self), MERU_ACOSH_FLOOR / np.sqrt(c), rtol=1e-6)
    np.testing.assert_array_equal(np.diag(self_dist), 0.0)


def test_float32_self_distance_and_small_norm_aperture_match_meru_float32(golden):
    """In float32 MERU's clamps sit at exactly 1, which coincides with the right values."""
    x = jnp.asarray(golden["inputs/pairwise_x"], jnp.float32)
    np.testing.assert_array_equal(np.diag(np.asarray(J.pairwise_dist(x, x, 1.0))), 0.0)
    np.testing.assert_array_equal(np.asarray(J.dist(x, x, 1.0)), 0.0)
    small = jnp.asarray(golden["inputs/half_aperture_x"][:1], jnp.float32)
    np.testing.assert_array_equal(
        np.asarray(J.half_aperture(small, 1.0)), golden["f32/curv1.0/half_aperture/out"][:1]
    )


# ----------------------------------------------------------------------------------------------
# closed-form float64 references
# ----------------------------------------------------------------------------------------------


def _unit(rng, n, d):
    u = rng.standard_normal((n, d))
    return u / np.linalg.norm(u, axis=-1, keepdims=True)


def _ambient(x, c):
    """Full (D+1)-dim hyperboloid coordinates (time first)."""
    return np.concatenate([np.sqrt(1 / c + np.sum(x * x, -1, keepdims=True)), x], axis=-1)


def _lorentz_inner_np(xa, ya):
    return -np.outer(xa[:, 0], ya[:, 0]) + xa[:, 1:] @ ya[:, 1:].T


def _geodesic_pairs(rng, n, d, c, s0, theta, s):
    """x at distance s0 from the origin; y = Exp_x(s V) for the unit tangent V making the angle
    theta with the outward radial direction, so that d(x, y) = s and oxy_angle(x, y) = theta."""
    sqrt_c = np.sqrt(c)
    u = _unit(rng, n, d)
    w = rng.standard_normal((n, d))
    w -= np.sum(w * u, -1, keepdims=True) * u
    w /= np.linalg.norm(w, axis=-1, keepdims=True)
    x = (np.sinh(sqrt_c * s0) / sqrt_c)[:, None] * u
    # Space parts of the radial unit tangent (sinh, cosh(sqrt(c) s0) u) and of W = (0, w).
    v = np.cos(theta)[:, None] * np.cosh(sqrt_c * s0)[:, None] * u + np.sin(theta)[:, None] * w
    y = np.cosh(sqrt_c * s)[:, None] * x + (np.sinh(sqrt_c * s) / sqrt_c)[:, None] * v
    return x, y


@pytest.mark.parametrize("c", [0.1, 1.0, 2.5, 10.0])
def test_reference_identities_float64(c):
    rng = np.random.default_rng(0)
    n, d = 256, 16
    with jax.enable_x64(True):
        c64 = jnp.float64(c)
        # tangent vectors with sqrt(c)|v| from 1e-6 to 10 (below the asinh(2^15) saturation)
        radius = 10 ** rng.uniform(-6, 1, n) / np.sqrt(c)
        v = radius[:, None] * _unit(rng, n, d)
        x = np.asarray(J.exp_map0(v, c64))
        # d(origin, exp_map0(v)) = |v|, three ways
        np.testing.assert_allclose(J.dist_to_origin(x, c64), radius, rtol=1e-13)
        np.testing.assert_allclose(J.dist(x, np.zeros_like(x), c64), radius, rtol=1e-13)
        np.testing.assert_allclose(
            J.pairwise_dist(x, np.zeros((1, d)), c64)[:, 0], radius, rtol=1e-13
        )
        # log_map0 inverts exp_map0, and vice versa
        np.testing.assert_allclose(J.log_map0(x, c64), v, rtol=1e-12, atol=1e-300)
        np.testing.assert_allclose(J.exp_map0(J.log_map0(x, c64), c64), x, rtol=1e-12)
        # time component and inner products against explicit ambient coordinates
        y = np.asarray(J.exp_map0(rng.standard_normal((n, d)) / np.sqrt(c), c64))
        xa, ya = _ambient(x, c), _ambient(y, c)
        np.testing.assert_allclose(J.time_component(x, c64), xa[:, 0], rtol=1e-15)
        ref_inner = _lorentz_inner_np(xa, ya)
        np.testing.assert_allclose(J.pairwise_inner(x, y, c64), ref_inner, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(J.inner(x, y, c64), np.diag(ref_inner), rtol=1e-12, atol=1e-12)
        # distances: MERU's acosh formula is accurate in float64 for well-separated points
        ref_dist = np.arccosh(-c * ref_inner) / np.sqrt(c)
        far = ref_dist > 0.1
        assert far.mean() > 0.9
        pd = np.asarray(J.pairwise_dist(x, y, c64))
        np.testing.assert_allclose(pd[far], ref_dist[far], rtol=1e-11)
        np.testing.assert_allclose(
            J.dist(x, y, c64)[np.diag(far)], np.diag(ref_dist)[np.diag(far)], rtol=1e-11
        )
        # symmetry and the triangle inequality
        np.testing.assert_allclose(J.pairwise_dist(y, x, c64), pd.T, rtol=1e-13, atol=1e-15)
        dxx = np.asarray(J.pairwise_dist(x, x, c64))
        # d(i, k) <= d(i, j) + d(j, k) for all i, j, k
        assert np.all(dxx[:, None, :] <= dxx[:, :, None] + dxx[None, :, :] + 1e-12)


@pytest.mark.parametrize("c", [0.1, 1.0, 10.0])
def test_distances_along_a_geodesic_float64_and_float32(c):
    """On one geodesic ray from the origin, d(exp_map0(s1 u), exp_map0(s2 u)) = |s1 - s2|, including
    distances down to 1e-6 / sqrt(c) and points far from the origin (norms up to ~1e3)."""
    rng = np.random.default_rng(1)
    n, d = 256, 16
    u = _unit(rng, n, d)
    s1 = rng.uniform(0.0, 7.0, n) / np.sqrt(c)
    gap = 10 ** rng.uniform(-6, 0.5, n) / np.sqrt(c)
    v1, v2 = s1[:, None] * u, (s1 + gap)[:, None] * u
    with jax.enable_x64(True):
        x, y = J.exp_map0(v1, c), J.exp_map0(v2, c)
        # (rtol covers the float64 rounding of the constructed points, not of dist)
        np.testing.assert_allclose(J.dist(x, y, c), gap, rtol=1e-8)
        x64, y64 = np.asarray(x), np.asarray(y)
    # float32: the row-wise distance of the float32-rounded points stays accurate to ~1e-6 relative
    x32, y32 = jnp.asarray(x64, jnp.float32), jnp.asarray(y64, jnp.float32)
    with jax.enable_x64(True):
        ref = np.asarray(J.dist(np.asarray(x32, np.float64), np.asarray(y32, np.float64), c))
    got = np.asarray(J.dist(x32, y32, np.float32(c)))
    assert np.all(np.abs(got - ref) <= _rowwise_dist_bound(x64, y64, c) * ref)


def _rowwise_dist_bound(x, y, c):
    """Documented float32 error bounds: 4 eps (1 + sqrt(c) max(|x|, |y|)), relative for L.dist and
    absolute (radians) for L.oxy_angle."""
    big = np.maximum(np.linalg.norm(x, axis=-1), np.linalg.norm(y, axis=-1))
    return 4 * F32_EPS * (1 + np.sqrt(c) * big)


def test_float32_accuracy_row_wise_and_pairwise_distance():
    """Row-wise dist: ~eps relative at all distances. pairwise_dist: error bounded by the matmul
    noise model |dz| <= (sqrt(D) + 6) eps a b, i.e. |dD| <= that / sinh(D) (D = sqrt(c) d)."""
    rng = np.random.default_rng(2)
    n, d, c = 256, 16, 2.5
    s0 = rng.uniform(0.05, 5.0, n) / np.sqrt(c)  # norms up to ~30 for c = 2.5
    theta = rng.uniform(0, np.pi, n)
    s = 10 ** rng.uniform(-6, 1, n) / np.sqrt(c)
    x, y = _geodesic_pairs(rng, n, d, c, s0, theta, s)
    x32, y32 = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
    with jax.enable_x64(True):
        ref = np.asarray(J.dist(np.asarray(x32, np.float64), np.asarray(y32, np.float64), c))
        np.testing.assert_allclose(J.dist(x, y, c), s, rtol=1e-7)  # construction check
    rowwise = np.asarray(J.dist(x32, y32, np.float32(c)))
    assert np.all(np.abs(rowwise - ref) <= _rowwise_dist_bound(x, y, c) * ref)
    pairwise = np.diag(np.asarray(J.pairwise_dist(x32, y32, np.float32(c))))
    a_b = c * np.linalg.norm(x, axis=-1) * np.linalg.norm(y, axis=-1)
    big_d = np.sqrt(c) * ref
    bound = 2 * (np.sqrt(d) + 6) * F32_EPS * a_b / np.sinh(big_d) / np.sqrt(c) + 1e-6 * ref
    zeroed = pairwise == 0
    assert np.all(np.abs(pairwise - ref)[~zeroed] <= bound[~zeroed])
    # zeroed pairs are exactly those within the noise floor
    z_ref = np.cosh(big_d) - 1
    assert np.all(z_ref[zeroed] <= 2 * (np.sqrt(d) + 6) * F32_EPS * a_b[zeroed])


@jax.jit
def _self_distances(x, c):
    pairwise_diag = jnp.diag(J.pairwise_dist(x, x, c))
    grad = jax.grad(lambda a: jnp.sum(jnp.diag(J.pairwise_dist(a, a, c))))(x)
    return pairwise_diag, J.dist(x, x, c), grad


@pytest.mark.parametrize("d", [512])  # small D: covered by the property test's identical rows
def test_self_distance_is_exactly_zero(d):
    """Identical points (norms 0 and 1e-6 to 1e3) are at distance exactly 0 with finite gradients,
    also through the matmul-based pairwise_dist (its noise floor), under jit."""
    rng = np.random.default_rng(d)
    x = rng.standard_normal((128, d)) * 10 ** rng.uniform(-6, 3, (128, 1))
    x[:3] = 0.0
    for dtype in (np.float32, np.float64):
        with jax.enable_x64(dtype == np.float64):
            for c in (0.1, 1.0, 10.0):
                diag, row, grad = _self_distances(jnp.asarray(x, dtype), jnp.asarray(c, dtype))
                np.testing.assert_array_equal(np.asarray(diag), 0)
                np.testing.assert_array_equal(np.asarray(row), 0)
                assert np.all(np.isfinite(np.asarray(grad)))


@pytest.mark.parametrize("c", [0.1, 1.0, 2.5, 10.0])
def test_oxy_angle_on_constructed_geodesics(c):
    """oxy_angle(x, Exp_x(s V)) equals the angle between V and the outward radial direction, up to
    MERU's eps: exactly acos(cos(theta) h / (h + 1e-8)) with h = |x| sinh(sqrt(c) s)."""
    rng = np.random.default_rng(3)
    n, d = 256, 16
    s0 = rng.uniform(0.05, 5.0, n) / np.sqrt(c)
    theta = np.concatenate([rng.uniform(1e-3, np.pi - 1e-3, n - 4), [1e-3, 0.5, 2.0, np.pi - 1e-3]])
    theta[: n // 4] = 10 ** rng.uniform(-3, -1, n // 4)  # near 0 and near pi as well
    theta[n // 4 : n // 2] = np.pi - 10 ** rng.uniform(-3, -1, n // 4)
    s = 10 ** rng.uniform(-3, 1, n) / np.sqrt(c)
    x, y = _geodesic_pairs(rng, n, d, c, s0, theta, s)
    h = np.linalg.norm(x, axis=-1) * np.sinh(np.sqrt(c) * s)
    expected = np.arccos(np.cos(theta) * h / (h + 1e-8))
    with jax.enable_x64(True):
        got = np.asarray(J.oxy_angle(x, y, c))
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-10)
        pw = np.asarray(J.pairwise_oxy_angle(x[:64], y[:64], c))
        rw = np.asarray(J.oxy_angle(np.repeat(x[:64], 64, 0), np.tile(y[:64], (64, 1)), c))
        np.testing.assert_allclose(pw, rw.reshape(64, 64), rtol=0, atol=1e-13)
    # float32: accurate even near 0 and pi (atan2 form), on the float32-rounded points
    x32, y32 = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
    with jax.enable_x64(True):
        ref = np.asarray(J.oxy_angle(np.asarray(x32, np.float64), np.asarray(y32, np.float64), c))
    err = np.abs(np.asarray(J.oxy_angle(x32, y32, np.float32(c))) - ref)
    assert np.all(err <= _rowwise_dist_bound(x, y, c))  # radians; same bound as for dist


@pytest.mark.parametrize("c", [0.37, 1.0, 10.0])
def test_cone_boundary_matches_half_aperture(c):
    """A point reached from x in the direction at angle half_aperture(x) from the outward radial
    direction lies on the entailment cone's boundary; slightly inside/outside directions fall
    inside/outside the cone."""
    rng = np.random.default_rng(4)
    n, d = 256, 16
    s0 = np.arcsinh(rng.uniform(0.25, 30, n) * np.sqrt(c)) / np.sqrt(c)  # sqrt(c)|x| > 0.2
    s = rng.uniform(0.05, 3.0, n) / np.sqrt(c)
    with jax.enable_x64(True):
        x0, _ = _geodesic_pairs(np.random.default_rng(5), n, d, c, s0, np.zeros(n), s)
        aperture = np.asarray(J.half_aperture(x0, c))
        assert np.all((aperture > 0) & (aperture < np.pi / 2))
        for delta, relation in [(0.0, "eq"), (-1e-3, "inside"), (1e-3, "outside")]:
            x, y = _geodesic_pairs(np.random.default_rng(5), n, d, c, s0, aperture + delta, s)
            np.testing.assert_allclose(x, x0)
            angle = np.asarray(J.oxy_angle(x, y, c))
            if relation == "eq":
                # equal up to MERU's eps in oxy_angle (h = |x| sinh(sqrt(c) d(x, y)))
                h = np.linalg.norm(x, axis=-1) * np.sinh(np.sqrt(c) * s)
                np.testing.assert_allclose(angle, aperture, atol=1e-5)
                np.testing.assert_allclose(
                    angle, np.arccos(np.cos(aperture) * h / (h + 1e-8)), rtol=0, atol=1e-10
                )
            elif relation == "inside":
                assert np.all(angle < aperture)
            else:
                assert np.all(angle > aperture)
        # closed form of the half-aperture outside the clamp
        r = np.sqrt(c) * np.linalg.norm(x0, axis=-1) + 1e-8
        np.testing.assert_allclose(aperture, np.arcsin(0.2 / r), rtol=1e-13)
        np.testing.assert_allclose(
            J.half_aperture(x0, c, min_radius=0.05), np.arcsin(0.1 / r), rtol=1e-13
        )


def test_oxy_angle_degenerate_and_collinear_cases():
    x = np.array(
        [[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.5, 0.5, 0.0], [2.0, 0.0, 0.0], [2.0, 0.0, 0.0]]
    )
    y = np.array(
        [[1.0, 0.0, 0.0], [0.3, 0.1, 0.0], [0.5, 0.5, 0.0], [3.0, 0.0, 0.0], [1.0, 0.0, 0.0]]
    )
    for dtype in (np.float32, np.float64):
        with jax.enable_x64(dtype == np.float64):
            a = np.asarray(J.oxy_angle(jnp.asarray(x, dtype), jnp.asarray(y, dtype), 1.0))
            # x = y and x = 0: undefined -> pi/2 (MERU's value there)
            np.testing.assert_allclose(a[:3], np.pi / 2, rtol=1e-6)
            # y further out on x's ray: 0; y between the origin and x: pi (MERU's eps shifts these
            # by sqrt(2e-8 / h) ~ 1e-4 with h = |x| sinh(sqrt(c) d))
            assert a[3] < 2e-4 and a[4] > np.pi - 2e-4
            pw = np.asarray(J.pairwise_oxy_angle(jnp.asarray(x, dtype), jnp.asarray(y, dtype), 1.0))
            np.testing.assert_allclose(np.diag(pw), a, rtol=1e-6)


def test_exp_map0_saturates_like_meru_and_stays_finite():
    rng = np.random.default_rng(6)
    v = _unit(rng, 6, 4) * np.array([1e-30, 1e-6, 1.0, 11.0, 12.0, 1e3])[:, None]
    for c in (0.1, 1.0, 10.0):
        out = np.asarray(J.exp_map0(jnp.asarray(v, jnp.float32), c))
        assert np.all(np.isfinite(out))
        norms = np.linalg.norm(out, axis=-1)
        sat = np.sqrt(c) * np.linalg.norm(v, axis=-1) > math.asinh(2**15)
        np.testing.assert_allclose(norms[sat], 2**15 / np.sqrt(c), rtol=1e-6)
        g = jax.jacfwd(lambda a, c=c: J.exp_map0(a, c))(jnp.asarray(v[0], jnp.float32))
        np.testing.assert_allclose(np.asarray(g), np.eye(4), atol=1e-6)


# ----------------------------------------------------------------------------------------------
# transforms, gradients (finite differences), errors
# ----------------------------------------------------------------------------------------------


def _call(name, x, y, c):
    fn = getattr(J, name)
    return fn(x, y, c) if name in ROWWISE2 + PAIRWISE else fn(x, c)


@functools.cache
def _gradient_and_vmap_check(name):
    """One compiled function per op: vmapped value-and-grad (inputs and curvature) over two slices,
    an unbatched call on the second slice, and central differences along random directions."""
    fn = getattr(L, name)
    two_inputs = name in ROWWISE2 + PAIRWISE

    def loss(k, a, b):
        return jnp.sum(fn(a, b, k) if two_inputs else fn(a, k))

    value_and_grads = jax.value_and_grad(loss, argnums=(0, 1, 2))

    def run(cs, xs, ys, directions, h):
        batched = jax.vmap(value_and_grads)(cs, xs, ys)
        single = value_and_grads(cs[1], xs[1], ys[1])

        def central_difference(d):
            dc, dx, dy = d
            f = lambda t: loss(cs[0] + t * dc, xs[0] + t * dx, ys[0] + t * dy)  # noqa: E731
            return (f(h) - f(-h)) / (2 * h)

        return batched, single, jax.vmap(central_difference)(directions)

    return jax.jit(run, compiler_options=_FAST_COMPILE)


@pytest.mark.parametrize("name", ROWWISE2 + PAIRWISE + UNARY)
def test_gradients_and_vmap_float64(name):
    """Gradients w.r.t. inputs and curvature match central differences; vmap over a leading axis and
    over the curvature matches unbatched calls. (jit with a traced curvature is exercised for every
    op here and in the property test below.)"""
    rng = np.random.default_rng(7)
    with jax.enable_x64(True):
        xs = jnp.asarray(rng.standard_normal((2, 4, 5)))
        ys = jnp.asarray(rng.standard_normal((2, 4, 5)) * 2)
        cs = jnp.asarray([0.7, 2.5])
        directions = (
            jnp.asarray(rng.standard_normal(3)),
            jnp.asarray(rng.standard_normal((3, 4, 5))),
            jnp.asarray(rng.standard_normal((3, 4, 5))),
        )
        (values, grads), (value1, grads1), fd = _gradient_and_vmap_check(name)(
            cs, xs, ys, directions, 1e-6
        )
        g_c, g_x, g_y = (np.asarray(g[0]) for g in grads)
        analytic = (
            np.asarray(directions[0]) * g_c
            + np.einsum("nij,ij->n", np.asarray(directions[1]), g_x)
            + np.einsum("nij,ij->n", np.asarray(directions[2]), g_y)
        )
        np.testing.assert_allclose(np.asarray(fd), analytic, rtol=1e-6, atol=1e-8)
        assert np.any(np.abs(analytic) > 1e-3)
        if name not in ROWWISE2 + PAIRWISE:
            np.testing.assert_array_equal(g_y, 0.0)
        np.testing.assert_allclose(float(values[1]), float(value1), rtol=1e-12)
        for g_batched, g_single in zip(grads, grads1, strict=True):
            np.testing.assert_allclose(
                np.asarray(g_batched[1]), np.asarray(g_single), rtol=1e-10, atol=1e-12
            )


def test_rowwise_ops_broadcast_and_agree_with_pairwise():
    rng = np.random.default_rng(9)
    with jax.enable_x64(True):
        x = rng.standard_normal((4, 5))
        y = rng.standard_normal((4, 5)) * 3
        xb, yb = x[:, None, :], y[None, :, :]
        np.testing.assert_allclose(J.inner(xb, yb, 0.5), J.pairwise_inner(x, y, 0.5), rtol=1e-12)
        np.testing.assert_allclose(J.dist(xb, yb, 0.5), J.pairwise_dist(x, y, 0.5), rtol=1e-12)
        np.testing.assert_allclose(
            J.oxy_angle(xb, yb, 0.5), J.pairwise_oxy_angle(x, y, 0.5), rtol=1e-10
        )


def test_pairwise_oxy_angle_chunked_path_matches(monkeypatch):
    """Large inputs are evaluated in row chunks (lax.map, recomputed in the backward pass); force
    that path with a tiny chunk budget (3 rows per chunk, 7 rows: a remainder chunk too)."""
    rng = np.random.default_rng(10)
    with jax.enable_x64(True):
        x = jnp.asarray(rng.standard_normal((7, 3)))
        y = jnp.asarray(rng.standard_normal((5, 3)) * 2)

        def evaluate():
            # The chunk budget is read when tracing, and jax caches traces per function object:
            # build fresh functions for each setting.
            f = lambda a, b, k: L.pairwise_oxy_angle(a, b, k)  # noqa: E731
            loss = lambda a, b, k: jnp.sum(jnp.sin(f(a, b, k)))  # noqa: E731
            uses_scan = "scan" in str(jax.make_jaxpr(f)(x, y, 0.8))
            value_and_grads = jax.jit(
                lambda a, b, k: (f(a, b, k), jax.grad(loss, (0, 1, 2))(a, b, k))
            )
            return uses_scan, value_and_grads(x, y, 0.8)

        scan_direct, direct = evaluate()
        monkeypatch.setattr(L, "_PAIRWISE_CHUNK_ELEMENTS", 3 * 5 * 3)
        scan_chunked, chunked = evaluate()
    assert not scan_direct and scan_chunked
    for a, b in zip(jax.tree.leaves(direct), jax.tree.leaves(chunked), strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-12, atol=1e-14)


def test_bad_inputs_raise_clear_errors():
    x = jnp.ones((3, 4))
    with pytest.raises(ValueError, match="same D"):
        L.pairwise_dist(x, jnp.ones((3, 5)), 1.0)
    with pytest.raises(ValueError, match=r"\(B1, D\)"):
        L.pairwise_oxy_angle(jnp.ones((2, 3, 4)), x, 1.0)
    with pytest.raises(ValueError, match="last"):
        L.dist(x, jnp.ones((3, 5)), 1.0)
    with pytest.raises(ValueError, match="curv must be > 0"):
        L.exp_map0(x, 0.0)
    with pytest.raises(ValueError, match="curv must be > 0"):
        L.pairwise_dist(x, x, jnp.asarray(-1.0))
    with pytest.raises(ValueError, match="min_radius"):
        L.half_aperture(x, 1.0, min_radius=0.0)
    with pytest.raises(ValueError, match="scalar"):
        L.log_map0(jnp.float32(1.0), 1.0)


# ----------------------------------------------------------------------------------------------
# property-based: no NaN / Inf anywhere in the domain, for values and gradients of every op
# ----------------------------------------------------------------------------------------------

_B, _D = 32, 24


def _all_ops_with_vjps(x, y, c, key):
    """Values and input/curvature cotangent-gradients of every public op (one compiled function)."""
    res = {}
    for name in ROWWISE2 + PAIRWISE + UNARY:
        out, vjp = jax.vjp(lambda a, b, k, name=name: _call(name, a, b, k), x, y, c)
        key, sub = jax.random.split(key)
        res[name] = (out, *vjp(jax.random.normal(sub, out.shape, out.dtype)))
    return res


# One compiled function per dtype.
_ALL_OPS = jax.jit(_all_ops_with_vjps, compiler_options=_FAST_COMPILE)


def _domain_batch(seed, lo, hi, dim):
    """Points with norms log-uniform in [10^lo, 10^hi], plus zeros, identical, opposite, parallel,
    nearly identical and tiny rows; only the first `dim` coordinates are non-zero."""
    rng = np.random.default_rng(seed)
    scale = lambda n: 10 ** rng.uniform(lo, hi, (n, 1))  # noqa: E731
    x = _unit(rng, _B, dim) * scale(_B)
    y = _unit(rng, _B, dim) * scale(_B)
    x[0] = 0
    y[1] = 0
    x[2] = y[2] = 0
    y[3] = x[3]
    y[4] = -x[4]
    y[5] = 3 * x[5]
    y[6] = 0.3 * x[6]
    y[7] = x[7] * (1 + 1e-7)
    y[8] = x[8] + 1e-6 * rng.standard_normal(dim)
    x[9] = 1e-12 * x[9] / np.linalg.norm(x[9])
    y[10] = x[10] + 1e-3 * np.linalg.norm(x[10]) * rng.standard_normal(dim)
    pad = np.zeros((_B, _D - dim))
    return np.concatenate([x, pad], 1), np.concatenate([y, pad], 1)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31 - 1),
    lo=st.floats(-8, 3),
    width=st.floats(0, 4),
    log_curv=st.floats(-1, 1),
    dim=st.sampled_from([1, 2, 3, 8, 24]),
    double=st.booleans(),
)
def test_property_all_ops_finite_values_and_gradients(seed, lo, width, log_curv, dim, double):
    hi = min(lo + width, 3.0)
    dtype = np.float64 if double else np.float32
    x, y = _domain_batch(seed, lo, hi, dim)
    c = 10.0**log_curv
    with jax.enable_x64(double):
        res = _ALL_OPS(
            jnp.asarray(x, dtype),
            jnp.asarray(y, dtype),
            jnp.asarray(c, dtype),
            jax.random.key(seed),
        )
        res = jax.tree.map(np.asarray, res)
    for name, arrays in res.items():
        for label, a in zip(["value", "grad_x", "grad_y", "grad_curv"], arrays, strict=True):
            assert a.dtype == dtype, (name, label)
            assert np.all(np.isfinite(a)), f"{name} {label} not finite ({dtype.__name__})"
    # value ranges and basic properties
    assert np.all(res["dist"][0] >= 0) and np.all(res["pairwise_dist"][0] >= 0)
    for name in ("oxy_angle", "pairwise_oxy_angle"):
        assert np.all((res[name][0] >= 0) & (res[name][0] <= np.pi + 1e-6))
    ha = res["half_aperture"][0]
    assert np.all((ha > 0) & (ha <= np.pi / 2 + 1e-6))
    assert res["dist"][0][2] == 0 and res["dist"][0][3] == 0  # zero pair, identical pair
    assert res["pairwise_dist"][0][3, 3] == 0
