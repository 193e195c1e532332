"""Unit-sphere ops (CLIP's embedding space): embeddings are unit vectors, similarity the cosine.

The counterpart of :mod:`hac_jax.geometry.lorentz` for the Euclidean model; every function is
differentiable everywhere, including at the zero vector (double ``where``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import Array
from jax.typing import ArrayLike

__all__ = ["normalize", "norm", "pairwise_cosine", "cosine"]


def norm(x: ArrayLike, *, keepdims: bool = False) -> Array:
    """Euclidean norm over the last axis, ``(..., D) -> (...)`` (``(..., 1)`` with
    ``keepdims``), with gradient 0 at the zero vector (``sqrt``'s derivative is infinite at 0)."""
    x = jnp.asarray(x)
    if x.ndim == 0:
        raise ValueError("norm: expected x of shape (..., D), got a scalar")
    sq = jnp.sum(x * x, axis=-1, keepdims=keepdims)
    pos = sq > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, sq, 1.0)), 0.0)


def normalize(v: ArrayLike) -> Array:
    """L2-normalise, ``(..., D) -> (..., D)``; the zero vector maps to 0 with a zero gradient."""
    v = jnp.asarray(v)
    if v.ndim == 0:
        raise ValueError("project: expected v of shape (..., D), got a scalar")
    n = norm(v, keepdims=True)
    return v / jnp.where(n > 0, n, 1.0)


def pairwise_cosine(x: ArrayLike, y: ArrayLike) -> Array:
    """``x @ y.T`` of unit vectors: ``(B1, D), (B2, D) -> (B1, B2)``, at full matmul precision
    (as :func:`hac_jax.geometry.lorentz.pairwise_dist`; accelerators may default lower)."""
    x, y = jnp.asarray(x), jnp.asarray(y)
    if x.ndim != 2 or y.ndim != 2 or x.shape[-1] != y.shape[-1]:
        raise ValueError(
            f"pairwise_sim: expected x (B1, D) and y (B2, D) with the same D, "
            f"got {x.shape} and {y.shape}"
        )
    return jnp.matmul(x, y.T, precision=jax.lax.Precision.HIGHEST)


def cosine(x: ArrayLike, y: ArrayLike) -> Array:
    """Row-wise dot product of unit vectors: ``(..., D), (..., D) -> (...)``."""
    x, y = jnp.asarray(x), jnp.asarray(y)
    if x.ndim == 0 or y.ndim == 0 or x.shape[-1] != y.shape[-1]:
        raise ValueError(f"sim: x and y need the same last dimension, got {x.shape} and {y.shape}")
    return jnp.sum(x * y, axis=-1)
