"""Embedding geometries: pure Lorentz-model ops (:mod:`~hac_jax.geometry.lorentz`, MERU's
convention), unit-sphere ops (:mod:`~hac_jax.geometry.sphere`), and the :class:`Geometry`
strategy (:mod:`~hac_jax.geometry.strategy`) that holds every rule in which CLIP and MERU differ.

    from hac_jax.geometry import LORENTZ, lorentz
    d = lorentz.pairwise_dist(x, y, curv)        # (B1, D), (B2, D) -> (B1, B2)
    s = LORENTZ.pairwise_sim(x, y, curv)         # -d; SPHERE: cosine
"""

from hac_jax.geometry import lorentz, sphere
from hac_jax.geometry.strategy import (
    LORENTZ,
    SPHERE,
    Geometry,
    LorentzGeometry,
    SphereGeometry,
    get_geometry,
)

__all__ = [
    "LORENTZ",
    "SPHERE",
    "Geometry",
    "LorentzGeometry",
    "SphereGeometry",
    "get_geometry",
    "lorentz",
    "sphere",
]
