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

from hac_jax import lorentz
from hac_jax.geometry import LORENTZ, SPHERE, Geometry

__all__ = [
    "clip_loss",
    "contrastive_loss",
    "entailment_loss",
    "meru_loss",
    "model_loss",
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
    """MERU's entailment loss ``mean(relu(oxy_angle(text, image) - half_aperture(text)))``.

    Zero for a pair when the image lies inside the cone of its caption. Shapes: hyperboloid
    space components ``(B, E), (B, E), () -> ()``.
    """
    angle = lorentz.oxy_angle(text, image, curv)
    aperture = lorentz.half_aperture(text, curv)
    return jnp.mean(jax.nn.relu(angle - aperture))


def _contrastive(out: Mapping[str, Array], geometry: Geometry) -> Array:
    logits = out["logit_scale"] * geometry.pairwise_sim(out["image"], out["text"], out["curv"])
    return contrastive_loss(logits)


def clip_loss(out: Mapping[str, Array]) -> tuple[Array, dict[str, Array]]:
    """CLIP's loss: the contrastive loss of ``s * image @ text.T`` (unit vectors).

    Returns ``(loss, {"contrastive_loss", "logit_scale"})`` (MERU's logged values).
    """
    loss = _contrastive(out, SPHERE)
    return loss, {"contrastive_loss": loss, "logit_scale": out["logit_scale"]}


def meru_loss(
    out: Mapping[str, Array], entail_weight: float = 0.2
) -> tuple[Array, dict[str, Array]]:
    """MERU's loss: contrastive loss of ``-s * d(image, text)`` + ``entail_weight`` x entailment.

    Returns ``(loss, {"contrastive_loss", "entailment_loss", "logit_scale", "curv"})``.
    """
    contrastive = _contrastive(out, LORENTZ)
    entail = entailment_loss(out["text"], out["image"], out["curv"])
    loss = contrastive + entail_weight * entail
    return loss, {
        "contrastive_loss": contrastive,
        "entailment_loss": entail,
        "logit_scale": out["logit_scale"],
        "curv": out["curv"],
    }


def model_loss(cfg: Any) -> LossFn:
    """The training loss of a ``ModelConfig``: ``clip_loss`` or ``meru_loss`` with
    ``cfg.entail_weight``; the returned function maps the model output dict to
    ``(loss, metrics)``."""
    if cfg.kind == "clip":
        return clip_loss
    if cfg.kind == "meru":
        return functools.partial(meru_loss, entail_weight=cfg.entail_weight)
    raise ValueError(f"unknown model kind {cfg.kind!r}; expected 'clip' or 'meru'")
