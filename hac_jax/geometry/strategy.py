"""The embedding geometry as a strategy object: every rule that differs between CLIP's sphere
and MERU's hyperboloid lives here, so losses, evaluators and audits never branch on the model.

* :data:`LORENTZ` (MERU): embeddings are hyperboloid space components
  (:mod:`hac_jax.geometry.lorentz`); similarity is the negative geodesic distance; a text has an
  entailment cone; prompt ensembles are averaged as raw features and lifted once.
* :data:`SPHERE` (CLIP): embeddings are unit vectors (:mod:`hac_jax.geometry.sphere`);
  similarity is the cosine; no cones; each prompt is normalised before averaging. ``curv`` is
  accepted and ignored (callers may pass 1.0).

Geometries are frozen dataclasses, hence hashable and usable as ``jax.jit`` static arguments.
A model's geometry is ``ModelConfig.geometry`` (:mod:`hac_jax.models.config`).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
from jax import Array
from jax.typing import ArrayLike

from hac_jax.geometry import lorentz, sphere

__all__ = ["Geometry", "LORENTZ", "LorentzGeometry", "SPHERE", "SphereGeometry", "get_geometry"]


class Geometry:
    """Interface shared by :class:`LorentzGeometry` and :class:`SphereGeometry`.

    Attributes:
      name: ``"lorentz"`` or ``"sphere"``.
      has_cones: whether texts have entailment cones (:meth:`cone_violation` is defined).
      pool_projected_prompts: the prompt-ensemble rule of :meth:`pool_prompts`.
    """

    name: str
    has_cones: bool
    pool_projected_prompts: bool

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

    def cone_violation(self, apex: ArrayLike, x: ArrayLike, curv: ArrayLike) -> Array:
        """How far ``x`` lies outside the entailment cone of ``apex``: ``ext(apex, x) -
        aper(apex)`` in radians (<= 0 inside). Shapes: ``(B, D), (B, D) -> (B,)``. Only where
        :attr:`has_cones`."""
        raise ValueError(f"the {self.name} geometry has no entailment cones")

    def pool_prompts(self, raw: ArrayLike, alpha: ArrayLike, curv: ArrayLike) -> Array:
        """Prompt-ensemble pooling: ``(C, P, E)`` raw text features of ``P`` prompts per concept
        -> ``(C, E)`` embeddings, in the space of ``encode_text(project=True)``.

        ``raw * alpha`` is averaged over the prompts and projected; with
        :attr:`pool_projected_prompts` every prompt is projected before averaging (CLIP,
        Radford et al., 2021); without, the raw features are averaged in the tangent space at the
        origin and lifted once (MERU's zero-shot evaluator, Desai et al., ICML 2023)."""
        feats = jnp.asarray(raw)
        if feats.ndim != 3:
            raise ValueError(
                f"prompt_features must be (classes, prompts, dim), got shape {feats.shape}"
            )
        feats = feats * alpha
        if self.pool_projected_prompts:
            feats = self.project(feats, curv)
        return self.project(feats.mean(axis=1), curv)


@dataclasses.dataclass(frozen=True)
class LorentzGeometry(Geometry):
    """MERU's hyperboloid: ``project`` = ``exp_map0``, similarity = ``-distance``, cones."""

    name: str = "lorentz"
    has_cones: bool = True
    pool_projected_prompts: bool = False

    def project(self, v: ArrayLike, curv: ArrayLike) -> Array:
        return lorentz.exp_map0(v, curv)

    def pairwise_sim(self, x: ArrayLike, y: ArrayLike, curv: ArrayLike) -> Array:
        return -lorentz.pairwise_dist(x, y, curv)

    def sim(self, x: ArrayLike, y: ArrayLike, curv: ArrayLike) -> Array:
        return -lorentz.dist(x, y, curv)

    def dist_to_origin(self, x: ArrayLike, curv: ArrayLike) -> Array:
        return lorentz.dist_to_origin(x, curv)

    def cone_violation(self, apex: ArrayLike, x: ArrayLike, curv: ArrayLike) -> Array:
        return lorentz.oxy_angle(apex, x, curv) - lorentz.half_aperture(apex, curv)


@dataclasses.dataclass(frozen=True)
class SphereGeometry(Geometry):
    """CLIP's unit sphere: ``project`` = L2 normalisation, similarity = cosine (dot product)."""

    name: str = "sphere"
    has_cones: bool = False
    pool_projected_prompts: bool = True

    def project(self, v: ArrayLike, curv: ArrayLike = 1.0) -> Array:
        """L2-normalise; the zero vector maps to 0 with a finite (zero) gradient."""
        return sphere.normalize(v)

    def pairwise_sim(self, x: ArrayLike, y: ArrayLike, curv: ArrayLike = 1.0) -> Array:
        return sphere.pairwise_cosine(x, y)

    def sim(self, x: ArrayLike, y: ArrayLike, curv: ArrayLike = 1.0) -> Array:
        return sphere.cosine(x, y)

    def dist_to_origin(self, x: ArrayLike, curv: ArrayLike = 1.0) -> Array:
        x = jnp.asarray(x)
        if x.ndim == 0:
            raise ValueError("dist_to_origin: expected x of shape (..., D), got a scalar")
        return sphere.norm(x, keepdims=True)[..., 0]


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
