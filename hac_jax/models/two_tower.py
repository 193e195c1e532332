"""The CLIP and MERU two-tower models (Flax linen), their learnable scalars and clamps.

Both models share the towers (:class:`~hac_jax.models.vit.VisionTransformer`,
:class:`~hac_jax.models.text.TextTransformer`) and the bias-free projections ``visual_proj`` /
``textual_proj`` to the joint width ``E``; they differ in the embedding geometry
(:mod:`hac_jax.geometry`) and in their learnable scalars:

* CLIP (MERU's ``CLIPBaseline``): ``logit_scale``; ``project=True`` L2-normalises.
* MERU (Desai et al., ICML 2023): also ``curv`` and ``visual_alpha`` / ``textual_alpha``;
  ``project=True`` maps ``raw * exp(alpha)`` onto the hyperboloid with ``exp_map0`` at curvature
  ``exp(curv)`` (space components only, see :mod:`hac_jax.geometry.lorentz`).

Scalars are stored as logs. MERU clamps them in place at the start of ``forward``; here they are
clamped *at use* (value clamped, gradient passed straight through, which is the gradient MERU's
in-place clamp gives), and :func:`clamp_scalars` is the projection training applies after each
optimizer update so the stored values stay in range too:

* ``logit_scale <= 4.6052`` (MERU's literal for ln 100),
* ``ln(curv_init / 10) <= curv <= ln(curv_init * 10)``,
* ``visual_alpha, textual_alpha <= 0``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import Array

from hac_jax.geometry import LORENTZ, SPHERE, Geometry
from hac_jax.models.config import LOGIT_SCALE_MAX, ModelConfig
from hac_jax.models.text import TextTransformer
from hac_jax.models.vit import VisionTransformer

__all__ = [
    "CLIP",
    "MERU",
    "build_model",
    "clamp_scalars",
    "dummy_inputs",
    "init_params",
    "intermediates_dict",
    "param_shapes",
    "scalar_bounds",
]


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2))
def _clamp_at_use(x: Array, lo: float | None, hi: float | None) -> Array:
    """``clip(x, lo, hi)`` whose derivative is 1 everywhere (straight-through).

    MERU clamps ``param.data`` in place before the forward pass, so its gradient is the loss
    gradient at the clamped value, passed to the parameter unchanged; ``jnp.clip`` would instead
    zero (or, at the bound, halve) it.
    """
    return jnp.clip(x, lo, hi)


@_clamp_at_use.defjvp
def _clamp_at_use_jvp(lo, hi, primals, tangents):
    (x,), (dx,) = primals, tangents
    return _clamp_at_use(x, lo, hi), dx


def scalar_bounds(cfg: ModelConfig) -> dict[str, tuple[float | None, float | None]]:
    """``{name: (lo, hi)}`` clamp ranges of the stored log scalars of a ``cfg.kind`` model."""
    bounds: dict[str, tuple[float | None, float | None]] = {"logit_scale": (None, LOGIT_SCALE_MAX)}
    if cfg.kind == "meru":
        bounds["curv"] = cfg.curv_bounds
        bounds["visual_alpha"] = (None, 0.0)
        bounds["textual_alpha"] = (None, 0.0)
    return bounds


def clamp_scalars(params: Mapping[str, Any], cfg: ModelConfig) -> dict[str, Any]:
    """The projection applied after each optimizer update: the log scalars clamped to MERU's ranges.

    Args:
      params: the model's parameter tree (``variables["params"]``).
      cfg: its config (the kind decides which scalars exist).

    Returns:
      A new tree (same structure, other leaves shared) with ``logit_scale`` (and for MERU ``curv``,
      ``visual_alpha``, ``textual_alpha``) clamped. Works under ``jit``.
    """
    out = dict(params)
    for name, (lo, hi) in scalar_bounds(cfg).items():
        if name not in out:
            raise KeyError(f"clamp_scalars: parameter {name!r} missing from a {cfg.kind} model")
        out[name] = jnp.clip(out[name], lo, hi)
    return out


SCALAR_NAMES = ("logit_scale", "curv", "visual_alpha", "textual_alpha")


def scalars_at_use(
    params: Mapping[str, Any], cfg: ModelConfig, *, fill: bool = False
) -> dict[str, Array]:
    """The model's scalars at use: ``exp`` of the clamped stored logs (:func:`clamp_scalars`):
    the logit scale ``s``, and for MERU the curvature ``c`` and the feature scales
    ``visual_alpha`` / ``textual_alpha``. With ``fill``, the scalars a model does not have are
    1.0 (CLIP's curvature and alphas), so every model gives all of :data:`SCALAR_NAMES`."""
    clamped = clamp_scalars(params, cfg)
    out = {k: jnp.exp(clamped[k]) for k in SCALAR_NAMES if k in clamped}
    if fill:
        out = {k: out.get(k, jnp.asarray(1.0, jnp.float32)) for k in SCALAR_NAMES}
    return out


def _constant(value: float) -> Any:
    def init(key: Array, shape: tuple[int, ...] = (), dtype: Any = jnp.float32) -> Array:
        del key
        return jnp.full(shape, value, dtype)

    return init


class _TwoTower(nn.Module):
    """Shared towers, projections and ``logit_scale``; subclasses define the geometry."""

    cfg: ModelConfig

    def setup(self) -> None:
        cfg = self.cfg
        kw = dict(dtype=cfg.jnp_dtype, param_dtype=cfg.jnp_param_dtype, precision=cfg.lax_precision)
        switches = dict(attention=cfg.attention, remat=cfg.remat, gelu=cfg.gelu)
        self.visual = VisionTransformer(cfg.vision, **kw, **switches)
        self.textual = TextTransformer(cfg.text, **kw, **switches)
        # MERU initialises the projections with std = input width ** -0.5.
        self.visual_proj = nn.Dense(
            cfg.embed_dim,
            use_bias=False,
            kernel_init=nn.initializers.normal(cfg.vision.width**-0.5),
            **kw,
        )
        self.textual_proj = nn.Dense(
            cfg.embed_dim,
            use_bias=False,
            kernel_init=nn.initializers.normal(cfg.text.width**-0.5),
            **kw,
        )
        # CLIP's initial temperature 0.07, stored as log(1 / T).
        self.logit_scale = self.param(
            "logit_scale", _constant(math.log(1 / 0.07)), (), cfg.jnp_param_dtype
        )

    # -- subclass hooks -------------------------------------------------------------------------

    @property
    def geometry(self) -> Geometry:
        raise NotImplementedError

    def _curv(self) -> Array:
        """Curvature ``c`` at use (clamped, exponentiated)."""
        raise NotImplementedError

    def _feature_scale(self, tower: str) -> Array | float:
        """Multiplier of the raw features before projection (MERU's ``exp(alpha)``)."""
        raise NotImplementedError

    # -- public API -----------------------------------------------------------------------------

    def _proj_dtype(self) -> jnp.dtype:
        # Geometry ops in half precision lose the hyperboloid constraint; keep >= float32.
        return jnp.promote_types(self.cfg.jnp_dtype, jnp.float32)

    def _project(self, raw: Array, tower: str) -> Array:
        raw = raw.astype(self._proj_dtype())
        return self.geometry.project(raw * self._feature_scale(tower), self._curv())

    def encode_image(self, images: Array, project: bool = True) -> Array:
        """Images ``(B, H, W, 3)`` float NHWC in [0, 1] -> features ``(B, E)``.

        ``project=False``: the raw ``visual_proj`` output. ``project=True``: unit vectors (CLIP)
        or hyperboloid space components (MERU).
        """
        cfg = self.cfg
        images = jnp.asarray(images)
        if not jnp.issubdtype(images.dtype, jnp.floating):
            raise ValueError(
                f"images must be float in [0, 1] (NHWC), got dtype {images.dtype}; "
                "divide uint8 images by 255"
            )
        mean = jnp.asarray(cfg.pixel_mean, cfg.jnp_dtype)
        std = jnp.asarray(cfg.pixel_std, cfg.jnp_dtype)
        x = (images.astype(cfg.jnp_dtype) - mean) / std
        raw = self.visual_proj(self.visual(x))
        return self._project(raw, "visual") if project else raw

    def encode_text(self, tokens: Array, project: bool = True) -> Array:
        """Token ids ``(B, L)`` int, right-padded with 0, ``L <= context_length`` -> ``(B, E)``.

        ``project`` as in :meth:`encode_image`.
        """
        raw = self.textual_proj(self.textual(jnp.asarray(tokens)))
        return self._project(raw, "textual") if project else raw

    def encode_prompt_ensembles(self, tokens: Array) -> Array:
        """Prompt ensembles ``(C, P, L)`` tokens -> ``(C, E)`` embeddings, pooled as zero-shot
        classifiers pool them (:meth:`hac_jax.geometry.Geometry.pool_prompts`); one text pass
        over the ``C * P`` prompts."""
        tokens = jnp.asarray(tokens)
        if tokens.ndim != 3:
            raise ValueError(f"prompt tokens must be (concepts, prompts, L), got {tokens.shape}")
        concepts, prompts, length = tokens.shape
        raw = self.encode_text(tokens.reshape(concepts * prompts, length), project=False)
        raw = raw.astype(self._proj_dtype()).reshape(concepts, prompts, -1)
        return self.geometry.pool_prompts(raw, self._feature_scale("textual"), self._curv())

    def logit_scale_value(self) -> Array:
        """``s = exp(min(logit_scale, 4.6052))``."""
        return jnp.exp(_clamp_at_use(self.logit_scale, None, LOGIT_SCALE_MAX))

    def __call__(self, images: Array, tokens: Array) -> dict[str, Array]:
        """Both towers, projected. Shapes: ``(B, H, W, 3), (B, L) ->``
        ``{"image": (B, E), "text": (B, E), "logit_scale": (), "curv": ()}``
        (``logit_scale`` and ``curv`` are the values at use: clamped and exponentiated; CLIP's
        ``curv`` is 1.0 and unused)."""
        return {
            "image": self.encode_image(images, project=True),
            "text": self.encode_text(tokens, project=True),
            "logit_scale": self.logit_scale_value(),
            "curv": self._curv(),
        }


class CLIP(_TwoTower):
    """MERU's CLIP baseline: unit-sphere embeddings, similarity = cosine."""

    @property
    def geometry(self) -> Geometry:
        return SPHERE

    def _curv(self) -> Array:
        return jnp.asarray(1.0, self._proj_dtype())

    def _feature_scale(self, tower: str) -> float:
        return 1.0


class MERU(_TwoTower):
    """MERU: Lorentz-hyperboloid embeddings with learnable curvature and feature scales."""

    def setup(self) -> None:
        super().setup()
        cfg = self.cfg
        pd = cfg.jnp_param_dtype
        self.curv = self.param("curv", _constant(math.log(cfg.curv_init)), (), pd)
        # MERU initialises both alphas to embed_dim ** -0.5 (stored as logs).
        alpha = math.log(cfg.embed_dim**-0.5)
        self.visual_alpha = self.param("visual_alpha", _constant(alpha), (), pd)
        self.textual_alpha = self.param("textual_alpha", _constant(alpha), (), pd)

    @property
    def geometry(self) -> Geometry:
        return LORENTZ

    def _curv(self) -> Array:
        lo, hi = self.cfg.curv_bounds
        log_c = _clamp_at_use(self.curv, lo, hi)
        if not self.cfg.learn_curv:
            log_c = jax.lax.stop_gradient(log_c)
        return jnp.exp(log_c).astype(self._proj_dtype())

    def _feature_scale(self, tower: str) -> Array:
        alpha = self.visual_alpha if tower == "visual" else self.textual_alpha
        return jnp.exp(_clamp_at_use(alpha, None, 0.0)).astype(self._proj_dtype())


_MODELS = {"clip": CLIP, "meru": MERU}


def build_model(cfg: ModelConfig) -> CLIP | MERU:
    """The linen module for ``cfg`` (``cfg.kind`` picks :class:`CLIP` or :class:`MERU`)."""
    if not isinstance(cfg, ModelConfig):
        raise TypeError(f"build_model expects a ModelConfig, got {type(cfg).__name__}")
    return _MODELS[cfg.kind](cfg)


def dummy_inputs(cfg: ModelConfig, batch: int = 1) -> tuple[Array, Array]:
    """Zero images ``(batch, S, S, 3)`` and tokens ``(batch, context_length)`` for ``init``."""
    size = cfg.vision.image_size
    return (
        jnp.zeros((batch, size, size, 3), cfg.jnp_dtype),
        jnp.zeros((batch, cfg.text.context_length), jnp.int32),
    )


def init_params(cfg: ModelConfig, rng: Array | int = 0) -> dict[str, Any]:
    """Freshly initialised parameters of ``build_model(cfg)`` (``rng``: a key or an int seed).

    The initialisation is jitted (op-by-op initialisation of a ViT is many times slower)."""
    if isinstance(rng, int):
        rng = jax.random.PRNGKey(rng)
    return _jitted_init(cfg)(rng)


@functools.lru_cache(maxsize=8)
def _jitted_init(cfg: ModelConfig) -> Any:
    # Cached per config: compiling the initialisers costs seconds on CPU; seeds reuse it.
    model = build_model(cfg)
    return jax.jit(lambda rng: model.init(rng, *dummy_inputs(cfg))["params"])


def param_shapes(cfg: ModelConfig) -> dict[str, Any]:
    """The parameter tree of ``cfg`` as ``jax.ShapeDtypeStruct`` leaves (nothing is allocated)."""
    model = build_model(cfg)
    images, tokens = jax.eval_shape(lambda: dummy_inputs(cfg))
    return jax.eval_shape(
        lambda r, i, t: model.init(r, i, t)["params"], jax.random.PRNGKey(0), images, tokens
    )


def intermediates_dict(intermediates: Mapping[str, Any]) -> dict[str, Array]:
    """Flattens the ``"intermediates"`` collection to ``{sown name: array}``.

    The sown names are unique across the model (``visual_block_0``, ``text_ln_final``, ...);
    each was sown once per call, so the single element of each sow tuple is returned.
    """
    flat: dict[str, Array] = {}

    def visit(tree: Mapping[str, Any]) -> None:
        for key, value in tree.items():
            if isinstance(value, tuple):
                if key in flat:
                    raise ValueError(f"intermediate {key!r} sown in more than one module")
                flat[key] = value[-1]
            elif isinstance(value, Mapping):
                visit(value)

    visit(intermediates)
    return flat
