"""Lorentz (hyperboloid) model operations in the MERU convention.

Convention (every function in this module)
------------------------------------------
* A point of the hyperboloid ``{X in R^{D+1} : <X, X>_L = -1/c, X_0 > 0}`` is passed and
  returned as its **space components** ``x`` of shape ``(..., D)``. The time component is
  implicit: ``t(x) = sqrt(1/c + |x|^2)`` (see :func:`time_component`). The origin is ``x = 0``.
* ``curv = c > 0`` is the *negative* curvature (the manifold has curvature ``-c``). It is an
  ordinary traced argument (a Python float or a 0-d array, never static), so it can be learned:
  every function is differentiable w.r.t. its inputs *and* ``curv`` under ``jit``/``vmap``/``grad``.
* The Lorentzian inner product is ``<x, y>_L = x . y - t(x) t(y)``.

Names and semantics follow MERU (Desai et al., "Hyperbolic Image-Text Representations", ICML 2023,
``meru/lorentz.py``). Values equal MERU's outside its clamp regions (to ~1e-13 in float64 on the
reference fixtures). Inside them, where MERU's ``1 +- 1e-8`` clamps either distort the float64
value or do nothing in float32 (``1 + 1e-8 == 1``), this module returns the mathematically right
value; each function's docstring says where and how it differs. MERU's *additive* ``+ 1e-8`` in the
denominators of ``half_aperture`` and ``oxy_angle`` is kept: it is part of the function everywhere.
No value or gradient is NaN or Inf for zero vectors, identical points, norms up to ~1e3 and
curvatures 0.1 to 10 (float32 and float64): singular points use the double-``where`` pattern.

Numerics note
-------------
Measured with ``benchmarks/bench_lorentz.py accuracy`` (float32 vs a float64 evaluation of the same
float32 inputs; D = 64, ``sqrt(c)|x|`` from 0.05 to 74, c = 1 and 10 alike; see BENCHMARKS.md):

* :func:`dist` (row-wise) builds the squared Lorentzian chord ``|X - Y|_L^2`` from ``y - x`` and
  non-negative terms only, and returns ``(2/sqrt(c)) asinh(sqrt(c) |X - Y|_L / 2)``. Relative error
  ~5e-8 median and < 8e-7 max at every distance from 1e-6 to 10 (in units of ``1/sqrt(c)``);
  the tested bound is ``4 eps (1 + sqrt(c) max(|x|, |y|))``. MERU's ``acosh(-c <x, y>_L)`` loses
  everything below ``sqrt(c) d ~ 1e-3`` in float32 (``1 + z`` rounds to 1).
* :func:`pairwise_dist` must stay one matmul, so it works from the Gram entry ``x . y``, whose
  rounding noise ``~(0.5 sqrt(D) + 3) eps c |x||y|`` in ``cosh(sqrt(c) d) - 1`` sets its accuracy:
  relative error (median) 2.5e-3 for ``sqrt(c) d`` in [1e-2, 1e-1), 3e-5 in [0.1, 1), 5e-7 in
  [1, 10) -- the same as MERU's formula, without its noise-driven outliers. Pairs within
  ``(sqrt(D) + 6) eps c |x||y|`` of ``cosh = 1`` (``sqrt(c) d <~ 2e-3 sqrt(c |x||y|)`` for D = 64)
  are returned as exactly 0 (so self-distances are 0); use :func:`dist` where small distances
  matter. Far-apart pairs have no cancellation (law-of-cosines form).
* :func:`oxy_angle` and :func:`pairwise_oxy_angle` (same formula): absolute error ~5e-8 rad median
  and < 7e-6 rad max for all angles, including within 1e-6 of 0 and pi (atan2 instead of acos);
  tested bound ``4 eps (1 + sqrt(c) max(|x|, |y|))`` rad. MERU's acos formula in float32 errs by
  3e-4 to 9e-3 rad (median) and up to 1.5 rad for close pairs.
* :func:`exp_map0`, :func:`log_map0`, :func:`half_aperture`, :func:`dist_to_origin` have no
  cancellation-prone step (Taylor series below ``sqrt(c)|x| = 1e-2``, ``asinh`` instead of
  ``acosh(sqrt(1 + r^2))``, ``atan2`` instead of ``asin`` near the cone boundary); they are
  checked against MERU's float32 values (rtol 1e-4) and float64 identities in the tests.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import Array
from jax.typing import ArrayLike

__all__ = [
    "time_component",
    "inner",
    "pairwise_inner",
    "dist",
    "pairwise_dist",
    "dist_to_origin",
    "exp_map0",
    "log_map0",
    "half_aperture",
    "oxy_angle",
    "pairwise_oxy_angle",
]

# MERU clips sqrt(c)|v| at asinh(2^15) inside exp_map0 so that sinh cannot overflow.
_EXP_MAP0_MAX_RADIUS = math.asinh(2.0**15)
# MERU's additive eps in the denominators of half_aperture and oxy_angle. It shifts values by ~1e-8
# relative everywhere (not only near singular points), so it is kept for float64 parity with MERU.
_MERU_EPS = 1e-8
# Below this scaled radius sinh(r)/r and asinh(r)/r are evaluated by their Taylor series (error
# < r^6/5000 < 2e-16): the direct quotient is 0/0 at r = 0 and suffers from flushed denormals.
_SERIES_RADIUS = 1e-2
# Pairwise ops default to full-precision matmuls: reduced-precision (e.g. TF32) products would
# swamp the distance of close pairs.
_DEFAULT_PRECISION = jax.lax.Precision.HIGHEST
# Elements of the (rows, B2, D) intermediates that pairwise_oxy_angle evaluates at once.
_PAIRWISE_CHUNK_ELEMENTS = 1 << 22


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _float_dtype(*args: ArrayLike) -> jnp.dtype:
    # The trailing Python float is weakly typed: integer inputs become the default float type,
    # float inputs keep their own precision.
    return jnp.result_type(*args, 1.0)


def _prep(curv: ArrayLike, *arrays: ArrayLike) -> tuple[Array, ...]:
    """Casts arrays and curvature to one floating dtype; rejects a concrete non-positive curv."""
    if not isinstance(curv, jax.core.Tracer):
        try:
            bad = bool(jnp.any(jnp.asarray(curv) <= 0))
        except jax.errors.ConcretizationTypeError:
            bad = False
        if bad:
            raise ValueError(f"curv must be > 0 (it is the negative curvature c), got {curv!r}")
    dtype = _float_dtype(*arrays, curv)
    out = tuple(jnp.asarray(a, dtype) for a in arrays)
    return (jnp.asarray(curv, dtype), *out)


def _check_last_dim(name: str, x: Array, y: Array) -> None:
    if x.ndim == 0 or y.ndim == 0 or x.shape[-1] != y.shape[-1]:
        raise ValueError(
            f"{name}: x and y need the same last (feature) dimension, got {x.shape} and {y.shape}"
        )


def _check_pairwise(name: str, x: Array, y: Array) -> None:
    if x.ndim != 2 or y.ndim != 2 or x.shape[-1] != y.shape[-1]:
        raise ValueError(
            f"{name}: expected x (B1, D) and y (B2, D) with the same D, got {x.shape} and {y.shape}"
        )


def _check_vector(name: str, x: Array) -> None:
    if x.ndim == 0:
        raise ValueError(f"{name}: expected x of shape (..., D), got a scalar")


def _safe_sqrt(a: Array) -> Array:
    """sqrt(max(a, 0)) with a zero (not NaN/Inf) gradient where a <= 0 (double-where pattern)."""
    pos = a > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, a, 1.0)), 0.0)


def _sq_norm(x: Array) -> Array:
    return jnp.sum(x * x, axis=-1)


def _norm(x: Array) -> Array:
    """Euclidean norm over the last axis; its gradient at the zero vector is 0 (as in torch)."""
    return _safe_sqrt(_sq_norm(x))


def _time(sq_norm: Array, c: Array) -> Array:
    # 1/c + |x|^2 >= 1/c > 0, so a plain sqrt is safe (value and gradient).
    return jnp.sqrt(1.0 / c + sq_norm)


def _dist_from_sq_chord(sq_chord: Array, floor: Array | float, c: Array) -> Array:
    """Geodesic distance from the squared Lorentzian chord ``|X - Y|_L^2``.

    On the hyperboloid ``|X - Y|_L^2 = (4/c) sinh^2(sqrt(c) d / 2)``, hence
    ``d = (2/sqrt(c)) asinh(sqrt(c) |X - Y|_L / 2)``: accurate for small ``d`` (no ``acosh`` near
    1). Squared chords at or below ``floor`` give distance 0 with zero gradient.
    """
    ok = sq_chord > floor
    chord = jnp.sqrt(jnp.where(ok, sq_chord, 1.0))
    sqrt_c = jnp.sqrt(c)
    d = (2.0 / sqrt_c) * jnp.arcsinh(0.5 * sqrt_c * chord)
    return jnp.where(ok, d, 0.0)


def _meru_angle(sin_r: Array, cos_r: Array, scale: Array, degenerate: Array) -> Array:
    """MERU's ``acos(num / (|x| den + 1e-8))`` evaluated as an ``atan2``.

    The angle's sine and cosine times ``h = |x| den`` are ``scale * sin_r`` and
    ``scale * cos_r`` (``sin_r >= 0``; ``scale = |x| |y - x| > 0`` is factored out so that both
    are O(1) and never underflow). With ``eta = eps / (h + eps)``, MERU's value is
    ``acos(cos (1 - eta))`` = ``atan2(sqrt(sin^2 + cos^2 eta (2 - eta)), cos (1 - eta))``: exact,
    and accurate near 0 and pi where acos is ill-conditioned. Where ``degenerate`` the angle is
    undefined and pi/2 (the limit of MERU's formula as ``h -> 0``) is returned, gradient 0.
    """
    sin_r = jnp.where(degenerate, 1.0, sin_r)
    cos_r = jnp.where(degenerate, 0.0, cos_r)
    # sin_r and cos_r never vanish together for distinct points with x != 0 (cos_r != 0 when
    # y - x is parallel to x), so h_r > 0 away from degenerate points.
    h_r = jnp.sqrt(sin_r * sin_r + cos_r * cos_r)
    sin_n = sin_r / h_r
    cos_n = cos_r / h_r
    eta = _MERU_EPS / (jnp.where(degenerate, 1.0, scale) * h_r + _MERU_EPS)
    sin_eff = _safe_sqrt(sin_n * sin_n + cos_n * cos_n * eta * (2.0 - eta))
    angle = jnp.arctan2(sin_eff, cos_n * (1.0 - eta))
    return jnp.where(degenerate, jnp.pi / 2, angle)


def _safe_inverse(a: Array, ok: Array) -> Array:
    return 1.0 / jnp.where(ok, a, 1.0)


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------


def time_component(x: ArrayLike, curv: ArrayLike) -> Array:
    """Time component ``t(x) = sqrt(1/c + |x|^2)`` of hyperboloid points.

    Shapes: ``(..., D) -> (...)``.
    """
    c, x = _prep(curv, x)
    _check_vector("time_component", x)
    return _time(_sq_norm(x), c)


def inner(x: ArrayLike, y: ArrayLike, curv: ArrayLike) -> Array:
    """Row-wise Lorentzian inner product ``x . y - t(x) t(y)``.

    Shapes: ``(..., D), (..., D) -> (...)`` (leading dims broadcast).
    """
    c, x, y = _prep(curv, x, y)
    _check_last_dim("inner", x, y)
    return jnp.sum(x * y, axis=-1) - _time(_sq_norm(x), c) * _time(_sq_norm(y), c)


def pairwise_inner(
    x: ArrayLike, y: ArrayLike, curv: ArrayLike, *, precision=_DEFAULT_PRECISION
) -> Array:
    """Lorentzian inner product of every pair: ``x @ y.T - t(x) t(y)^T`` (MERU ``pairwise_inner``).

    Shapes: ``(B1, D), (B2, D) -> (B1, B2)``. ``precision`` is passed to the matmul (full float32 by
    default; accelerators may otherwise use reduced-precision matmuls).
    """
    c, x, y = _prep(curv, x, y)
    _check_pairwise("pairwise_inner", x, y)
    xy = jnp.matmul(x, y.T, precision=precision)
    return xy - _time(_sq_norm(x), c)[:, None] * _time(_sq_norm(y), c)[None, :]


def dist(x: ArrayLike, y: ArrayLike, curv: ArrayLike) -> Array:
    """Row-wise geodesic distance ``d(x_i, y_i)``.

    Shapes: ``(..., D), (..., D) -> (...)`` (leading dims broadcast). Relative error below
    ``4 eps (1 + sqrt(c) max(|x|, |y|))`` at every distance, and ``dist(x, x) == 0`` exactly
    (gradient 0 there): the squared Lorentzian chord ``|X - Y|_L^2 = (4/c) sinh^2(sqrt(c) d / 2)``
    is assembled from non-negative terms only (see the numerics note). Difference from MERU (its
    clamp region ``sqrt(c) d < 1.414e-4``): MERU's ``acosh(max(., 1 + 1e-8))`` floors float64
    distances at ``1.414e-4 / sqrt(c)`` (and is noise there in float32).
    """
    c, x, y = _prep(curv, x, y)
    _check_last_dim("dist", x, y)
    x, y = jnp.broadcast_arrays(x, y)
    norm_x, norm_y = _norm(x), _norm(y)
    t_x, t_y = _time(norm_x * norm_x, c), _time(norm_y * norm_y, c)
    delta = y - x
    w = x + y
    norm_w = _norm(w)
    # |X - Y|_L^2 = |delta|^2 - (t(y) - t(x))^2 with t(y) - t(x) = (delta . w) / (t(x) + t(y)).
    # Split delta along m = w / |w|:  = |delta_perp|^2 + (delta . m)^2 (T - |w|)(T + |w|) / T^2,
    # T = t(x) + t(y), and T - |w| = (t(x) - |x|) + (t(y) - |y|) + (|x| + |y| - |w|), all >= 0:
    # t - |x| = (1/c) / (t + |x|),  |x| + |y| - |w| = |x| |y| |x/|x| - y/|y||^2 / (|x| + |y| + |w|).
    m = w * _safe_inverse(norm_w, norm_w > 0)[..., None]
    delta_m = jnp.sum(delta * m, axis=-1)
    delta_perp = delta - delta_m[..., None] * m
    x_hat = x * _safe_inverse(norm_x, norm_x > 0)[..., None]
    y_hat = y * _safe_inverse(norm_y, norm_y > 0)[..., None]
    norm_sum = norm_x + norm_y + norm_w
    gap = (
        (1.0 / c) / (t_x + norm_x)
        + (1.0 / c) / (t_y + norm_y)
        + norm_x * norm_y * _sq_norm(x_hat - y_hat) * _safe_inverse(norm_sum, norm_sum > 0)
    )
    big_t = t_x + t_y
    sq_chord = _sq_norm(delta_perp) + delta_m * delta_m * (gap * (big_t + norm_w) / (big_t * big_t))
    return _dist_from_sq_chord(sq_chord, 0.0, c)


def _pairwise_cosh_minus_one(x: Array, y: Array, c: Array, precision) -> tuple[Array, Array]:
    """``z = cosh(sqrt(c) d) - 1`` for every pair and its rounding-noise floor.

    Hyperbolic law of cosines at the origin, with ``a = sqrt(c)|x| = sinh(R_x)``:
    ``cosh(D) - 1 = (cosh(R_x - R_y) - 1) + (a b - c x.y)``. Both terms are >= 0, so for far-apart
    points nothing cancels; the first is ``(a - b)^2 k^2 / (2 e^{R_x} e^{R_y})`` with
    ``k = 1 + (a + b) / (sqrt(1 + a^2) + sqrt(1 + b^2))`` and ``e^R = sqrt(1 + a^2) + a``.
    The second carries the matmul's rounding noise: for identical points ``|z|`` reached
    2.2 / 3.6 / 11.5 / 18.4 ``eps a b`` for D = 1 / 8 / 512 / 2048 (max over 6k random float32
    vectors of mixed scales on CPU), about ``0.5 sqrt(D) + 3``. Values within
    ``(sqrt(D) + 6) eps a b`` are indistinguishable from 0.
    """
    sqrt_c = jnp.sqrt(c)
    a = sqrt_c * _norm(x)
    b = sqrt_c * _norm(y)
    ta = jnp.sqrt(1.0 + a * a)
    tb = jnp.sqrt(1.0 + b * b)
    inv_ea = 1.0 / (ta + a)
    inv_eb = 1.0 / (tb + b)
    xy = jnp.matmul(x, y.T, precision=precision)
    a_, b_ = a[:, None], b[None, :]
    k = 1.0 + (a_ + b_) / (ta[:, None] + tb[None, :])
    diff = (a_ - b_) * k
    ab = a_ * b_
    z = 0.5 * diff * diff * (inv_ea[:, None] * inv_eb[None, :]) + (ab - c * xy)
    floor = ((math.sqrt(x.shape[-1]) + 6.0) * jnp.finfo(z.dtype).eps) * ab
    return z, floor


def pairwise_dist(
    x: ArrayLike, y: ArrayLike, curv: ArrayLike, *, precision=_DEFAULT_PRECISION
) -> Array:
    """Geodesic distance of every pair (MERU ``pairwise_dist``).

    Shapes: ``(B1, D), (B2, D) -> (B1, B2)``. One matmul plus O(B1 B2) elementwise work. MERU's
    ``acosh(-c <x, y>_L) / sqrt(c)`` is evaluated as ``2 asinh(sqrt(z / 2)) / sqrt(c)`` with
    ``z = -c <x, y>_L - 1`` assembled from non-negative terms (hyperbolic law of cosines), which
    avoids ``acosh`` near 1 and cancellation for far-apart points.

    Differences from MERU (its clamp region): pairs whose ``z`` is within the matmul's rounding
    noise (``<= (sqrt(D) + 6) eps c |x| |y|``) get exactly 0 with zero gradient, so
    ``pairwise_dist(x, x)`` has a zero diagonal. MERU's ``acosh(max(., 1 + 1e-8))`` gives
    ``1.414e-4 / sqrt(c)`` there in float64 and 0 in float32 (where ``1 + 1e-8 == 1``).
    ``precision`` is passed to the matmul (full float32 by default; accelerators may otherwise use
    reduced-precision matmuls).
    """
    c, x, y = _prep(curv, x, y)
    _check_pairwise("pairwise_dist", x, y)
    z, floor = _pairwise_cosh_minus_one(x, y, c, precision)
    ok = z > floor
    z = jnp.where(ok, z, 1.0)
    # acosh(1 + z), accurate for small z (no 1 + z is formed); sqrt(z) sqrt(z + 2) cannot overflow.
    return jnp.where(ok, jnp.log1p(z + jnp.sqrt(z) * jnp.sqrt(z + 2.0)) / jnp.sqrt(c), 0.0)


def dist_to_origin(x: ArrayLike, curv: ArrayLike) -> Array:
    """Geodesic distance from the origin, ``asinh(sqrt(c) |x|) / sqrt(c)``.

    Shapes: ``(..., D) -> (...)``. Gradient 0 at ``x = 0`` (where it is not differentiable).
    """
    c, x = _prep(curv, x)
    _check_vector("dist_to_origin", x)
    sqrt_c = jnp.sqrt(c)
    return jnp.arcsinh(sqrt_c * _norm(x)) / sqrt_c


def exp_map0(v: ArrayLike, curv: ArrayLike) -> Array:
    """Exponential map at the origin (MERU ``exp_map0``): tangent vector -> hyperboloid point.

    Shapes: ``(..., D) -> (..., D)``. ``sinh(r) / r * v`` with ``r = sqrt(c) |v|``; like MERU, the
    ``sinh`` argument is clipped at ``asinh(2^15)``, so output norms saturate at ``2^15 / sqrt(c)``
    (gradient through the radius is 0 beyond it, as with torch's clamp). Near ``v = 0`` the Taylor
    series of ``sinh(r) / r`` is used; the value and gradient (identity) equal MERU's there too.
    """
    c, v = _prep(curv, v)
    _check_vector("exp_map0", v)
    r = jnp.sqrt(c) * _norm(v)
    small = r < _SERIES_RADIUS
    r_safe = jnp.where(small, 1.0, r)
    r2 = r * r
    factor = jnp.where(
        small,
        1.0 + r2 / 6.0 + r2 * r2 / 120.0,
        jnp.sinh(jnp.minimum(r_safe, _EXP_MAP0_MAX_RADIUS)) / r_safe,
    )
    return factor[..., None] * v


def log_map0(x: ArrayLike, curv: ArrayLike) -> Array:
    """Logarithmic map at the origin (MERU ``log_map0``): hyperboloid point -> tangent vector.

    Shapes: ``(..., D) -> (..., D)``. ``asinh(r) / r * x`` with ``r = sqrt(c) |x|``, the same
    function as MERU's ``acosh(sqrt(1 + r^2)) / r * x`` but accurate near the origin. Difference
    from MERU (its clamp region ``r < 1.414e-4``): MERU's float64
    ``acosh(max(., 1 + 1e-8)) / max(r, 1e-8)`` scales such points by up to ``1.4e4`` (and float32
    MERU maps them to 0); here ``log_map0(x) -> x`` as ``x -> 0`` with identity Jacobian, the
    mathematically right limit.
    """
    c, x = _prep(curv, x)
    _check_vector("log_map0", x)
    r = jnp.sqrt(c) * _norm(x)
    small = r < _SERIES_RADIUS
    r_safe = jnp.where(small, 1.0, r)
    r2 = r * r
    factor = jnp.where(
        small,
        1.0 - r2 / 6.0 + 3.0 * r2 * r2 / 40.0,
        jnp.arcsinh(r_safe) / r_safe,
    )
    return factor[..., None] * x


def half_aperture(x: ArrayLike, curv: ArrayLike, min_radius: float = 0.1) -> Array:
    """Half-aperture of the entailment cone at ``x`` (MERU ``half_aperture``).

    Shapes: ``(..., D) -> (...)``. ``asin(2K / (sqrt(c)|x| + 1e-8))`` with ``K = min_radius``
    (MERU's eps is kept: it shifts values by ~1e-8 relative). Computed as
    ``atan2(2K, sqrt((r - 2K)(r + 2K)))`` with ``r = sqrt(c)|x| + 1e-8``, accurate up to the
    cone's boundary. Where ``r <= 2K`` the asin argument would be >= 1: the aperture is pi/2 with
    zero gradient. Difference from MERU (its clamp region): MERU clips the asin argument at
    ``1 - 1e-8``, giving ``pi/2 - 1.414e-4`` in float64 (pi/2 in float32, where
    ``1 - 1e-8 == 1``).
    """
    if not min_radius > 0:
        raise ValueError(f"min_radius must be > 0, got {min_radius!r}")
    c, x = _prep(curv, x)
    _check_vector("half_aperture", x)
    r = jnp.sqrt(c) * _norm(x) + _MERU_EPS
    two_k = 2.0 * min_radius
    outside = r > two_k
    root = jnp.sqrt(jnp.where(outside, (r - two_k) * (r + two_k), 1.0))
    return jnp.where(outside, jnp.arctan2(two_k, root), jnp.pi / 2)


def oxy_angle(x: ArrayLike, y: ArrayLike, curv: ArrayLike) -> Array:
    """Exterior angle at ``x`` of the triangle (origin, x, y), row-wise (MERU ``oxy_angle``).

    Shapes: ``(..., D), (..., D) -> (...)``, angle in ``[0, pi]``. It is the angle between the
    geodesic ray origin -> x extended beyond ``x`` and the geodesic from ``x`` to ``y``; ``y`` lies
    in the entailment cone of ``x`` when it is ``<= half_aperture(x)``.

    MERU computes ``acos(clip(num / (h + 1e-8), -1 + 1e-8, 1 - 1e-8))`` with
    ``num = t(y) + c <x,y>_L t(x)``, ``h = |x| den`` and
    ``den = sqrt(max((c <x,y>_L)^2 - 1, 1e-8))``. Here ``acos(num / (h + 1e-8))`` with the exact
    ``den = sinh(sqrt(c) d(x, y))`` is evaluated as an ``atan2`` of ``num`` (rewritten without
    cancellation, from ``y - x``) and, by the hyperbolic law
    of sines, ``sqrt(h^2 - num^2) = sqrt(c) |x| |y_perp|``: accurate for close points and near 0 and
    pi. MERU's additive eps is kept (it moves angles by ``~1e-8 cot(angle) / h``, up to
    ``sqrt(2e-8 / h)`` next to 0 and pi, and makes the angle tend to pi/2 as ``h -> 0``).
    Differences from MERU (its clamp regions): where ``sqrt(c) d(x, y) < 1e-4`` MERU floors ``den``
    at 1e-4 (pushing the angle toward pi/2), and it clips the acos argument (angles within 1.414e-4
    of 0 or pi in float64); neither clamp is applied here. The angle is undefined for ``x = y`` and
    ``x = 0``; both give pi/2 (MERU's value there) with zero gradient.
    """
    c, x, y = _prep(curv, x, y)
    _check_last_dim("oxy_angle", x, y)
    return _oxy_angle(x, y, c)


def _oxy_angle(x: Array, y: Array, c: Array) -> Array:
    x, y = jnp.broadcast_arrays(x, y)
    sq_x = _sq_norm(x)
    t_x = _time(sq_x, c)
    t_y = _time(_sq_norm(y), c)
    delta = y - x
    norm_x = _norm(x)
    norm_d = _norm(delta)
    degenerate = ~(norm_x > 0) | ~(norm_d > 0)
    # Work with unit vectors: num and sqrt(c)|x ^ y| both carry the factor |x| |y - x|.
    x_hat = x * _safe_inverse(norm_x, ~degenerate)[..., None]
    d_hat = delta * _safe_inverse(norm_d, ~degenerate)[..., None]
    cos_xd = jnp.sum(x_hat * d_hat, axis=-1)
    d_perp = d_hat - cos_xd[..., None] * x_hat  # part of (y - x) / |y - x| orthogonal to x
    sq_d_perp = _sq_norm(d_perp)
    # |x ^ y| = |x| |y - x| |d_perp|
    sin_r = jnp.sqrt(c) * _safe_sqrt(sq_d_perp)
    # num / (|x| |y - x|) = c (t(x) alpha - |x| t(y)) / |y - x| with alpha = x_hat . y. For
    # alpha > 0 the difference cancels; multiplying out by (t(x) alpha + |x| t(y)) gives
    # (alpha^2 - |x|^2) / c - |x|^2 |y_perp|^2 with alpha - |x| = x_hat . (y - x): no cancellation
    # beyond the geometric one at cos(angle) = 0.
    alpha = jnp.sum(x_hat * y, axis=-1)
    pos = alpha > 0
    cos_pos = (cos_xd * (alpha + norm_x) - c * sq_x * norm_d * sq_d_perp) / jnp.where(
        pos, t_x * alpha + norm_x * t_y, 1.0
    )
    cos_neg = c * (t_x * alpha - norm_x * t_y) * _safe_inverse(norm_d, ~degenerate)
    cos_r = jnp.where(pos, cos_pos, cos_neg)
    return _meru_angle(sin_r, cos_r, norm_x * norm_d, degenerate)


def pairwise_oxy_angle(x: ArrayLike, y: ArrayLike, curv: ArrayLike) -> Array:
    """Exterior angle :func:`oxy_angle` for every pair ``(x_i, y_j)``.

    Shapes: ``(B1, D), (B2, D) -> (B1, B2)``; entry ``[i, j]`` is ``oxy_angle(x[i], y[j])``,
    computed by the same formula (so it has the same accuracy, and equals ``oxy_angle`` on paired
    rows up to rounding). The angle's direction needs ``y_j - x_i`` itself: a Gram-matrix
    (matmul) version would lose ``~sqrt(eps) |y| / |y - x|`` radians for close pairs. The cost is
    ``O(B1 B2 D)`` elementwise, evaluated over chunks of rows of ``x`` (about 4M elements each) so
    memory stays ``O(B2 D)``; the backward pass recomputes each chunk.
    """
    c, x, y = _prep(curv, x, y)
    _check_pairwise("pairwise_oxy_angle", x, y)
    if x.shape[0] * y.shape[0] * y.shape[1] <= _PAIRWISE_CHUNK_ELEMENTS:
        return _oxy_angle(x[:, None, :], y[None, :, :], c)
    rows = max(1, _PAIRWISE_CHUNK_ELEMENTS // max(1, y.shape[0] * y.shape[1]))
    per_row = jax.checkpoint(lambda x_i: _oxy_angle(x_i[None, :], y, c))
    return jax.lax.map(per_row, x, batch_size=min(rows, max(1, x.shape[0])))
