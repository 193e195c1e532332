"""Training losses of CLIP and MERU, on the model output dict.

Both use the symmetric contrastive (InfoNCE) loss over the batch, with logits
``s * geometry.pairwise_sim(image, text)``: cosine similarity on the sphere (CLIP), negative
geodesic distance on the hyperboloid (MERU). MERU adds ``entail_weight`` times the entailment loss
``mean(relu(oxy_angle(text, image) - half_aperture(text)))``, which pulls each image into the
entailment cone of its caption (Desai et al., "Hyperbolic Image-Text Representations", ICML 2023,
Sec. 3.3). The model output dict is ``{"image": (B, E), "text": (B, E), "logit_scale": s,
"curv": c}`` as returned by ``model.apply(params, images, tokens)`` (scalars already clamped and
exponentiated). With one process the contrastive targets are ``arange(B)``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax import Array
from jax.typing import ArrayLike

from hac_jax.geometry import LORENTZ, SPHERE, Geometry
from hac_jax.models.config import KIND_GEOMETRY

__all__ = [
    "clip_loss",
    "contrastive_loss",
    "entailment_loss",
    "meru_loss",
    "model_loss",
    "two_tower_loss",
]

LossFn = Callable[[Mapping[str, Array]], tuple[Array, dict[str, Array]]]


def contrastive_loss(logits: ArrayLike) -> Array:
    """Symmetric cross-entropy of square logits with the diagonal as targets.

    ``0.5 * (CE(logits, arange(B)) + CE(logits.T, arange(B)))``, each CE a batch mean; row ``i``
    of ``logits`` scores image ``i`` against every caption. Shapes: ``(B, B) -> ()``.
    """
    logits = jnp.asarray(logits)
    if logits.ndim != 2 or logits.shape[0] != logits.shape[1]:
        raise ValueError(f"contrastive_loss expects square (B, B) logits, got {logits.shape}")
    targets = jnp.arange(logits.shape[0])
    image_ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()
    text_ce = optax.softmax_cross_entropy_with_integer_labels(logits.T, targets).mean()
    return 0.5 * (image_ce + text_ce)


def entailment_loss(text: ArrayLike, image: ArrayLike, curv: ArrayLike) -> Array:
    """MERU's entailment loss ``mean(relu(oxy_angle(text, image) - half_aperture(text)))``
    (:meth:`~hac_jax.geometry.Geometry.cone_violation` of the hyperboloid).

    Zero for a pair when the image lies inside the cone of its caption. Shapes: hyperboloid
    space components ``(B, E), (B, E), () -> ()``.
    """
    return jnp.mean(jax.nn.relu(LORENTZ.cone_violation(text, image, curv)))


def two_tower_loss(
    out: Mapping[str, Array], geometry: Geometry, entail_weight: float = 0.0
) -> tuple[Array, dict[str, Array]]:
    """The training loss of a CLIP/MERU model on its output dict: the contrastive loss of
    ``s * geometry.pairwise_sim(image, text)``, plus ``entail_weight`` x the entailment loss
    where the geometry has cones.

    Returns ``(loss, metrics)``: ``contrastive_loss`` and ``logit_scale``, and with cones
    ``entailment_loss`` and ``curv`` (MERU's logged values).
    """
    logits = out["logit_scale"] * geometry.pairwise_sim(out["image"], out["text"], out["curv"])
    contrastive = contrastive_loss(logits)
    metrics = {"contrastive_loss": contrastive, "logit_scale": out["logit_scale"]}
    if not geometry.has_cones:
        return contrastive, metrics
    entail = jnp.mean(jax.nn.relu(geometry.cone_violation(out["text"], out["image"], out["curv"])))
    metrics.update(entailment_loss=entail, curv=out["curv"])
    return contrastive + entail_weight * entail, metrics


def clip_loss(out: Mapping[str, Array]) -> tuple[Array, dict[str, Array]]:
    """CLIP's loss: the contrastive loss of ``s * image @ text.T`` (unit vectors).

    Returns ``(loss, {"contrastive_loss", "logit_scale"})``.
    """
    return two_tower_loss(out, SPHERE)


def meru_loss(
    out: Mapping[str, Array], entail_weight: float = 0.2
) -> tuple[Array, dict[str, Array]]:
    """MERU's loss: contrastive loss of ``-s * d(image, text)`` + ``entail_weight`` x entailment.

    Returns ``(loss, {"contrastive_loss", "entailment_loss", "logit_scale", "curv"})``.
    """
    return two_tower_loss(out, LORENTZ, entail_weight)


def model_loss(cfg: Any) -> LossFn:
    """The training loss of a ``ModelConfig``: :func:`two_tower_loss` on ``cfg.geometry``, with
    ``cfg.entail_weight`` where the geometry has cones (:func:`clip_loss` / :func:`meru_loss`);
    maps the model output dict to ``(loss, metrics)``."""
    kind = getattr(cfg, "kind", None)
    if kind not in KIND_GEOMETRY:
        raise ValueError(f"unknown model kind {kind!r}; expected one of {list(KIND_GEOMETRY)}")
    if not cfg.geometry.has_cones:
        return clip_loss
    return functools.partial(meru_loss, entail_weight=cfg.entail_weight)
