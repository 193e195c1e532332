"""Benchmarks for ``hac_jax.geometry.lorentz``: speed of ``pairwise_dist`` and float32 accuracy by
distance.

Speed (default): ``pairwise_dist`` on (N, D) x (N, D) float32 inputs, jitted, against the bare
matmul ``x @ y.T`` of the same shape and precision, measured in the same run (interleaved repeats,
median).
The ratio is throughput(pairwise_dist) / throughput(matmul) = t_matmul / t_pairwise_dist.

    .venv/bin/python benchmarks/bench_lorentz.py speed [--n 4096] [--d 512] [--repeats 9]

Accuracy: float32 results against a float64 reference, binned by distance and by angle (the figures
in the numerics note of ``hac_jax/lorentz.py``). Pairs are built with known distance and exterior
angle (a point, a unit tangent at a chosen angle to the radial direction, a geodesic step).

    .venv/bin/python benchmarks/bench_lorentz.py accuracy
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from hac_jax.geometry import lorentz


def _time_once(fn, *args) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - start


def bench_speed(n: int, d: int, repeats: int, curv: float, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    # Typical MERU embeddings: exp_map0 of moderate tangent vectors.
    x = lorentz.exp_map0(jnp.asarray(rng.standard_normal((n, d)) / np.sqrt(d), jnp.float32), curv)
    y = lorentz.exp_map0(jnp.asarray(rng.standard_normal((n, d)) / np.sqrt(d), jnp.float32), curv)
    c = jnp.float32(curv)
    dist_fn = jax.jit(lorentz.pairwise_dist)
    meru_fn = jax.jit(_meru_pairwise_dist)
    matmul_fn = jax.jit(lambda a, b: jnp.matmul(a, b.T, precision=jax.lax.Precision.HIGHEST))
    for _ in range(2):  # compile + warm-up
        jax.block_until_ready(dist_fn(x, y, c))
        jax.block_until_ready(meru_fn(x, y, c))
        jax.block_until_ready(matmul_fn(x, y))
    t_dist, t_meru, t_mm = [], [], []
    for _ in range(repeats):  # interleaved, so background load hits all alike
        t_mm.append(_time_once(matmul_fn, x, y))
        t_dist.append(_time_once(dist_fn, x, y, c))
        t_meru.append(_time_once(meru_fn, x, y, c))
    med_dist, med_meru, med_mm = (statistics.median(t) for t in (t_dist, t_meru, t_mm))
    flops = 2.0 * n * n * d
    return {
        "n": n,
        "d": d,
        "device": str(jax.devices()[0]),
        "t_pairwise_dist_ms": 1e3 * med_dist,
        "t_meru_formula_ms": 1e3 * med_meru,
        "t_matmul_ms": 1e3 * med_mm,
        "matmul_gflops": flops / med_mm / 1e9,
        "ratio": med_mm / med_dist,
        "ratio_meru_formula": med_mm / med_meru,
    }


def _meru_pairwise_dist(x, y, curv):
    """MERU's formula, ``acosh(max(-c <x, y>_L, 1 + 1e-8)) / sqrt(c)``, for comparison only."""
    inner = lorentz.pairwise_inner(x, y, curv)
    return jnp.arccosh(jnp.maximum(-curv * inner, 1 + 1e-8)) / jnp.sqrt(curv)


def _meru_oxy_angle(x, y, curv):
    """MERU's oxy_angle formula (acos with its clamps), for comparison only."""
    t_x = lorentz.time_component(x, curv)
    t_y = lorentz.time_component(y, curv)
    q = curv * (jnp.sum(x * y, -1) - t_x * t_y)
    num = t_y + q * t_x
    den = jnp.sqrt(jnp.maximum(q * q - 1, 1e-8))
    cos = num / (jnp.linalg.norm(x, axis=-1) * den + 1e-8)
    return jnp.arccos(jnp.clip(cos, -1 + 1e-8, 1 - 1e-8))


def _geodesic_pairs(rng, n, d, curv, s0, theta, s):
    """Float64 pairs with known geometry: x at distance s0 from the origin, y = Exp_x(s V) for the
    unit tangent V at angle theta from the outward radial direction; d(x, y) = s and
    oxy_angle(x, y) = theta (up to MERU's 1e-8 eps)."""
    sqrt_c = np.sqrt(curv)
    u = rng.standard_normal((n, d))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    w = rng.standard_normal((n, d))
    w -= np.sum(w * u, axis=1, keepdims=True) * u
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    x = (np.sinh(sqrt_c * s0) / sqrt_c)[:, None] * u
    v = np.cos(theta)[:, None] * np.cosh(sqrt_c * s0)[:, None] * u + np.sin(theta)[:, None] * w
    y = np.cosh(sqrt_c * s)[:, None] * x + (np.sinh(sqrt_c * s) / sqrt_c)[:, None] * v
    return x, y


def _float32_and_reference(fn, x, y, curv):
    """fn in float32 and, as reference, fn in float64 on the same float32-rounded inputs (this
    module's float64 ops are accurate to ~1e-15, so the difference is the float32 error)."""
    x32, y32 = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
    got = np.asarray(fn(x32, y32, jnp.float32(curv)), np.float64)
    with jax.enable_x64(True):
        ref = np.asarray(
            fn(np.asarray(x32, np.float64), np.asarray(y32, np.float64), np.float64(curv))
        )
    return got, ref


def _diag(pairwise_fn):
    return lambda x, y, c: jnp.diagonal(pairwise_fn(x, y, c))


def bench_accuracy(curv: float, seed: int, d: int = 64, per_bin: int = 2000) -> dict:
    """Float32 errors vs float64. Points lie at distance 0.05 .. 5 / sqrt(c) from the origin
    (sqrt(c)|x| up to 74), directions uniform in angle."""
    rng = np.random.default_rng(seed)
    s0 = rng.uniform(0.05, 5.0, per_bin) / np.sqrt(curv)
    dist_rows, angle_rows = [], []
    for lo, hi in [(1e-6, 1e-4), (1e-4, 1e-2), (1e-2, 1e-1), (1e-1, 1.0), (1.0, 10.0)]:
        s = np.exp(rng.uniform(np.log(lo), np.log(hi), per_bin)) / np.sqrt(curv)
        theta = rng.uniform(0, np.pi, per_bin)
        x, y = _geodesic_pairs(rng, per_bin, d, curv, s0, theta, s)
        row = {"range": f"sqrt(c) d in [{lo:.0e}, {hi:.0e})"}
        ref = None
        for name, fn in [
            ("dist", lorentz.dist),
            ("pairwise_dist", _diag(lorentz.pairwise_dist)),
            ("meru_acosh", _diag(_meru_pairwise_dist)),
        ]:
            got, r = _float32_and_reference(fn, x, y, curv)
            ref = r if ref is None else ref  # the accurate row-wise float64 value
            rel = np.abs(got - ref) / ref
            row[name] = (float(np.median(rel)), float(np.max(rel)))
        dist_rows.append(row)
    angle_bins = [
        ("[1e-6, 1e-3)", 1e-6, 1e-3),
        ("[1e-3, 0.1)", 1e-3, 0.1),
        ("[0.1, pi - 0.1)", 0.1, np.pi - 0.1),
        ("pi - [1e-3, 0.1)", np.pi - 0.1, np.pi - 1e-3),
        ("pi - [1e-6, 1e-3)", np.pi - 1e-3, np.pi - 1e-6),
    ]
    for label, lo, hi in angle_bins:
        theta = rng.uniform(lo, hi, per_bin)
        s = np.exp(rng.uniform(np.log(1e-3), np.log(5.0), per_bin)) / np.sqrt(curv)
        x, y = _geodesic_pairs(rng, per_bin, d, curv, s0, theta, s)
        row = {"range": f"angle in {label}"}
        _, ref = _float32_and_reference(lorentz.oxy_angle, x, y, curv)
        for name, fn in [
            ("oxy_angle", lorentz.oxy_angle),
            ("pairwise_oxy_angle", _diag(lorentz.pairwise_oxy_angle)),
            ("meru_acos", _meru_oxy_angle),
        ]:
            got, _ = _float32_and_reference(fn, x, y, curv)
            err = np.abs(got - ref)
            row[name] = (float(np.median(err)), float(np.max(err)))
        angle_rows.append(row)
    return {"dist": dist_rows, "angle": angle_rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["speed", "accuracy"], nargs="?", default="speed")
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--d", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--curv", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.what == "speed":
        r = bench_speed(args.n, args.d, args.repeats, args.curv, args.seed)
        print(
            f"pairwise_dist {r['n']}x{r['n']} D={r['d']} float32 on {r['device']}: "
            f"{r['t_pairwise_dist_ms']:.1f} ms | matmul x @ y.T {r['t_matmul_ms']:.1f} ms "
            f"({r['matmul_gflops']:.0f} GFLOP/s) | throughput ratio {r['ratio']:.3f} "
            f"(MERU's acosh formula: {r['t_meru_formula_ms']:.1f} ms, "
            f"ratio {r['ratio_meru_formula']:.3f})"
        )
    else:
        res = bench_accuracy(args.curv, args.seed)
        print(
            f"float32 vs float64, curv={args.curv}, D=64, sqrt(c)|x| in [0.05, 74], "
            "2000 pairs per row; median / max"
        )
        print(
            f"{'relative error of':>32} | {'dist':>17} | {'pairwise_dist':>17} | {'MERU acosh':>17}"
        )
        for r in res["dist"]:
            print(
                f"{r['range']:>32} | "
                + " | ".join(
                    f"{r[k][0]:8.1e} {r[k][1]:8.1e}"
                    for k in ("dist", "pairwise_dist", "meru_acosh")
                )
            )
        print(
            f"{'abs. error (rad) of':>32} | {'oxy_angle':>17} | {'pairwise_oxy_angle':>17} | "
            f"{'MERU acos':>17}"
        )
        for r in res["angle"]:
            print(
                f"{r['range']:>32} | "
                + " | ".join(
                    f"{r[k][0]:8.1e} {r[k][1]:8.1e}"
                    for k in ("oxy_angle", "pairwise_oxy_angle", "meru_acos")
                )
            )


if __name__ == "__main__":
    main()
