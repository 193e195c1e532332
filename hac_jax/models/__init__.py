"""Flax CLIP and MERU image-text models (see ``docs/DESIGN.md`` for the interface).

Typical use::

    from hac_jax import models
    cfg = models.get_arch("fmnist_s", "meru")          # or models.model_config(...)
    model = models.build_model(cfg)
    params = models.init_params(cfg, 0)
    out = model.apply({"params": params}, images, tokens)  # image, text, logit_scale, curv
    feats = model.apply({"params": params}, images, project=False, method="encode_image")
    params = models.clamp_scalars(params, cfg)          # after each optimizer update

``load_pretrained`` / ``save_pretrained`` come from :mod:`hac_jax.models.pretrained`.
"""

from hac_jax.models.config import (
    ARCH_NAMES,
    KINDS,
    LOGIT_SCALE_MAX,
    ModelConfig,
    TextConfig,
    VisionConfig,
    arch_name,
    get_arch,
    model_config,
)
from hac_jax.models.text import TextTransformer
from hac_jax.models.two_tower import (
    CLIP,
    MERU,
    SCALAR_NAMES,
    build_model,
    clamp_scalars,
    dummy_inputs,
    init_params,
    intermediates_dict,
    param_shapes,
    scalar_bounds,
    scalars_at_use,
)
from hac_jax.models.vit import VisionTransformer, sincos_pos_embed

__all__ = [
    "ARCH_NAMES",
    "CLIP",
    "KINDS",
    "LOGIT_SCALE_MAX",
    "MERU",
    "ModelConfig",
    "TextConfig",
    "TextTransformer",
    "VisionConfig",
    "VisionTransformer",
    "arch_name",
    "build_model",
    "clamp_scalars",
    "dummy_inputs",
    "get_arch",
    "init_params",
    "intermediates_dict",
    "model_config",
    "param_shapes",
    "SCALAR_NAMES",
    "scalar_bounds",
    "scalars_at_use",
    "sincos_pos_embed",
]

_PRETRAINED = ("load_pretrained", "save_pretrained")


def __getattr__(name: str):
    # The pretrained-checkpoint helpers pull in orbax; import them only when asked for.
    if name in _PRETRAINED:
        from hac_jax.models import pretrained

        return getattr(pretrained, name)
    raise AttributeError(f"module 'hac_jax.models' has no attribute {name!r}")
