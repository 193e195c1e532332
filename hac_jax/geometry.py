"""Embedding geometries behind one small interface, so losses and evaluators never branch on the
model type.

* :data:`LORENTZ` (MERU): embeddings are hyperboloid space components (see :mod:`hac_jax.lorentz`);
  similarity is the negative geodesic distance.
* :data:`SPHERE` (CLIP): embeddings are unit vectors; similarity is the cosine. ``curv`` is accepted
  and ignored (callers may pass 1.0).

Geometries are frozen dataclasses, hence hashable and usable as ``jax.jit`` static arguments.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax import Array
from jax.typing import ArrayLike

from hac_jax import lorentz

__all__ = ["Geometry", "LorentzGeometry", "SphereGeometry", "LORENTZ", "SPHERE", "get_geometry"]


class Geometry:
    """Interface shared by :class:`LorentzGeometry` and :class:`SphereGeometry`."""

    name: str

    def project(self, v: ArrayLike, curv: ArrayLike) -> Array:
        """Raw (alpha-scaled) features -> embeddings. Shapes: ``(..., D) -> (..., D)``."""
        raise NotImplementedError

    def pairwise_sim(self, x: ArrayLike, y: ArrayLike, curv: ArrayLike) -> Array:
        """Similarity of every pair. Shapes: ``(B1, D), (B2, D) -> (B1, B2)``."""
        raise NotImplementedError

    def sim(self, x: ArrayLike, y: ArrayLike, curv: ArrayLike) -> Array:
        """Row-wise similarity. Shapes: ``(..., D), (..., D) -> (...)``."""
        raise NotImplementedError

    def dist_to_origin(self, x: ArrayLike, curv: ArrayLike) -> Array:
        """Distance of embeddings from the origin (generality). Shapes: ``(..., D) -> (...)``."""
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class LorentzGeometry(Geometry):
    """MERU's hyperboloid: ``project`` = ``exp_map0``, similarity = ``-distance``."""

    name: str = "lorentz"

    def project(self, v: ArrayLike, curv: ArrayLike) -> Array:
        return lorentz.exp_map0(v, curv)

    def pairwise_sim(self, x: ArrayLike, y: ArrayLike, curv: ArrayLike) -> Array:
        return -lorentz.pairwise_dist(x, y, curv)

    def sim(self, x: ArrayLike, y: ArrayLike, curv: ArrayLike) -> Array:
        return -lorentz.dist(x, y, curv)

    def dist_to_origin(self, x: ArrayLike, curv: ArrayLike) -> Array:
        return lorentz.dist_to_origin(x, curv)


def _safe_norm(x: Array) -> Array:
    # Double-where: the gradient of |x| at x = 0 is 0 instead of NaN.
    sq = jnp.sum(x * x, axis=-1, keepdims=True)
    pos = sq > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, sq, 1.0)), 0.0)


@dataclasses.dataclass(frozen=True)
class SphereGeometry(Geometry):
    """CLIP's unit sphere: ``project`` = L2 normalisation, similarity = cosine (dot product)."""

    name: str = "sphere"

    def project(self, v: ArrayLike, curv: ArrayLike = 1.0) -> Array:
        """L2-normalise; the zero vector maps to 0 with a finite (zero) gradient."""
        v = jnp.asarray(v)
        if v.ndim == 0:
            raise ValueError("project: expected v of shape (..., D), got a scalar")
        n = _safe_norm(v)
        return v / jnp.where(n > 0, n, 1.0)

    def pairwise_sim(self, x: ArrayLike, y: ArrayLike, curv: ArrayLike = 1.0) -> Array:
        x, y = jnp.asarray(x), jnp.asarray(y)
        if x.ndim != 2 or y.ndim != 2 or x.shape[-1] != y.shape[-1]:
            raise ValueError(
                f"pairwise_sim: expected x (B1, D) and y (B2, D) with the same D, "
                f"got {x.shape} and {y.shape}"
            )
        # Full-precision matmul, as in lorentz.pairwise_dist (accelerators may default lower).
        return jnp.matmul(x, y.T, precision=jax.lax.Precision.HIGHEST)

    def sim(self, x: ArrayLike, y: ArrayLike, curv: ArrayLike = 1.0) -> Array:
        x, y = jnp.asarray(x), jnp.asarray(y)
        if x.ndim == 0 or y.ndim == 0 or x.shape[-1] != y.shape[-1]:
            raise ValueError(
                f"sim: x and y need the same last dimension, got {x.shape} and {y.shape}"
            )
        return jnp.sum(x * y, axis=-1)

    def dist_to_origin(self, x: ArrayLike, curv: ArrayLike = 1.0) -> Array:
        x = jnp.asarray(x)
        if x.ndim == 0:
            raise ValueError("dist_to_origin: expected x of shape (..., D), got a scalar")
        return _safe_norm(x)[..., 0]


LORENTZ = LorentzGeometry()
SPHERE = SphereGeometry()

_BY_NAME = {
    "lorentz": LORENTZ,
    "meru": LORENTZ,
    "sphere": SPHERE,
    "clip": SPHERE,
    "euclidean": SPHERE,
}


def get_geometry(name: str | Geometry) -> Geometry:
    """Geometry for a name or model kind (case-insensitive): "lorentz"/"meru" -> LORENTZ,
    "sphere"/"clip"/"euclidean" -> SPHERE. A Geometry instance is returned unchanged."""
    if isinstance(name, Geometry):
        return name
    key = name.lower() if isinstance(name, str) else None
    if key not in _BY_NAME:
        raise ValueError(
            f"unknown geometry {name!r}; expected one of {sorted(_BY_NAME)} "
            "(or a Geometry instance)"
        )
    return _BY_NAME[key]
