"""Model configurations: frozen dataclasses (hashable, JSON round-trippable), named architectures.

``ModelConfig`` describes a whole two-tower model (``kind="clip"`` or ``"meru"``); ``VisionConfig``
and ``TextConfig`` its towers. The released MERU / CLIP-baseline architectures (Desai et al.,
"Hyperbolic Image-Text Representations", ICML 2023) are available by name through
:func:`get_arch`, next to small architectures for Fashion-MNIST experiments and the ``tiny``
architecture of the PyTorch reference fixtures.

Configs only hold plain values (ints, floats, strings, tuples, ``None``), so
``dataclasses.asdict`` gives JSON and ``hac_jax.models.saved.config_from_dict`` reads it back.

Accelerator switches of :class:`ModelConfig` (none changes the float32 results beyond the
tolerances stated with it; tests/test_models_switches.py checks each):

* ``dtype="bfloat16"`` (with ``param_dtype="float32"``): parameters stay float32, matmuls and
  activations run in bfloat16, softmax, LayerNorm statistics and the geometry in float32;
* ``attention="xla"`` / ``"cudnn"``: the towers' attention through
  ``jax.nn.dot_product_attention`` (``"cudnn"``: its fused GPU kernel, bfloat16/float16 only);
* ``remat="full"`` / ``"dots"``: every transformer block under ``nn.remat`` (recomputed in the
  backward pass; ``"dots"`` keeps the weight matmuls' outputs);
* ``gelu="erfc"``: the blocks' exact GELU as Flax writes it, ``x erfc(-x / sqrt 2) / 2``,
  instead of PyTorch's ``x (1 + erf(x / sqrt 2)) / 2`` (the default: XLA:CPU evaluates erf
  several times faster than erfc; BENCHMARKS.md, "Against PyTorch MERU").

The switches added after the first releases (``attention``, ``remat``, ``gelu``) default to
``None``, which is the first releases' computation for ``attention`` and ``remat`` and the erf
form of GELU (the first releases used the erfc form; runs are keyed by their compiled programs,
so cached runs of the old form are not reused for the new); ``None`` fields are left out of a
config's ``repr`` as they are out of the settings fingerprints.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from hac_jax.geometry import Geometry, get_geometry

__all__ = [
    "ARCH_NAMES",
    "ATTENTION_IMPLS",
    "GELU_FORMS",
    "IMAGENET_PIXEL_MEAN",
    "IMAGENET_PIXEL_STD",
    "KINDS",
    "KIND_GEOMETRY",
    "LOGIT_SCALE_MAX",
    "ModelConfig",
    "REMAT_POLICIES",
    "TextConfig",
    "VisionConfig",
    "arch_name",
    "get_arch",
    "model_config",
]

# The embedding geometry of each model kind: the one place that ties a kind to a geometry
# (hac_jax.geometry holds every rule in which the geometries differ).
KIND_GEOMETRY = {"clip": "sphere", "meru": "lorentz"}
KINDS = tuple(KIND_GEOMETRY)
# MERU's default pixel statistics (ImageNet), also stored in every checkpoint's buffers.
IMAGENET_PIXEL_MEAN = (0.485, 0.456, 0.406)
IMAGENET_PIXEL_STD = (0.229, 0.224, 0.225)
# MERU clamps the log temperature at this literal (not ln 100 = 4.60517...), so do we.
LOGIT_SCALE_MAX = 4.6052
_PRECISIONS = ("default", "high", "highest")
_DTYPES = ("float32", "float64", "bfloat16", "float16")
# ModelConfig.attention: None = Flax's einsum attention (nn.dot_product_attention); the others
# are `implementation` values of jax.nn.dot_product_attention.
ATTENTION_IMPLS = ("xla", "cudnn")
# ModelConfig.remat: the rematerialisation policy of every transformer block (jax.checkpoint
# policy names; "full" saves nothing, "dots" the outputs of matmuls without batch dimensions,
# i.e. of the weight matmuls, and recomputes attention, LayerNorm and GELU).
REMAT_POLICIES = ("full", "dots")
# ModelConfig.gelu: None = the exact GELU as PyTorch writes it, x * (1 + erf(x / sqrt(2))) / 2;
# "erfc" = the same function as Flax writes it, x * erfc(-x / sqrt(2)) / 2 (equal to float32
# rounding; erfc keeps relative accuracy where GELU(x) < 1e-7 |x|, i.e. x < -5).
GELU_FORMS = ("erfc",)


@dataclasses.dataclass(frozen=True)
class VisionConfig:
    """A timm-style ViT image tower (patch conv, cls token, fixed 2-D sin-cos positions, pre-LN).

    Attributes:
      image_size: square input side in pixels; must be a multiple of ``patch_size``.
      patch_size: square patch side (conv kernel and stride).
      width: token width ``D`` (a multiple of 4, for the sin-cos table, and of ``heads``).
      depth: number of transformer blocks.
      heads: attention heads (head dim ``width / heads``).
      mlp_dim: hidden width of the block MLPs; ``None`` means ``4 * width`` (timm's default).
    """

    image_size: int = 224
    patch_size: int = 16
    width: int = 768
    depth: int = 12
    heads: int = 12
    mlp_dim: int | None = None

    def __post_init__(self) -> None:
        _positive(self, "image_size", "patch_size", "width", "depth", "heads")
        if self.image_size % self.patch_size:
            raise ValueError(
                f"vision image_size {self.image_size} is not a multiple of patch_size "
                f"{self.patch_size}"
            )
        if self.width % 4:
            raise ValueError(
                f"vision width {self.width} must be a multiple of 4 (2-D sin-cos position table)"
            )
        if self.width % self.heads:
            raise ValueError(f"vision width {self.width} is not divisible by heads {self.heads}")
        if self.mlp_dim is not None and self.mlp_dim <= 0:
            raise ValueError(f"vision mlp_dim must be positive or None, got {self.mlp_dim}")

    @property
    def grid_size(self) -> int:
        """Patches per side."""
        return self.image_size // self.patch_size

    @property
    def num_tokens(self) -> int:
        """Sequence length: cls token + ``grid_size ** 2`` patches."""
        return 1 + self.grid_size**2

    @property
    def hidden_dim(self) -> int:
        """MLP hidden width."""
        return 4 * self.width if self.mlp_dim is None else self.mlp_dim


@dataclasses.dataclass(frozen=True)
class TextConfig:
    """MERU's causal text transformer (``TransformerTextEncoder``).

    Attributes:
      vocab_size: token vocabulary (49408 for the OpenAI-CLIP BPE used by MERU).
      context_length: maximum tokens per caption (77 for the released models).
      width: token width ``W`` (a multiple of ``heads``).
      depth: number of residual attention blocks.
      heads: attention heads (MERU's default when unspecified: ``width // 64``).
      mlp_dim: MLP hidden width; ``None`` means ``4 * width`` (MERU's value).
    """

    vocab_size: int = 49408
    context_length: int = 77
    width: int = 512
    depth: int = 12
    heads: int = 8
    mlp_dim: int | None = None

    def __post_init__(self) -> None:
        _positive(self, "vocab_size", "context_length", "width", "depth", "heads")
        if self.width % self.heads:
            raise ValueError(f"text width {self.width} is not divisible by heads {self.heads}")
        if self.mlp_dim is not None and self.mlp_dim <= 0:
            raise ValueError(f"text mlp_dim must be positive or None, got {self.mlp_dim}")

    @property
    def hidden_dim(self) -> int:
        """MLP hidden width."""
        return 4 * self.width if self.mlp_dim is None else self.mlp_dim


@dataclasses.dataclass(frozen=True, repr=False)
class ModelConfig:
    """A CLIP or MERU two-tower model.

    Attributes:
      kind: ``"clip"`` (unit-sphere embeddings) or ``"meru"`` (Lorentz hyperboloid).
      vision, text: tower configs.
      embed_dim: joint embedding width ``E`` (both projections map to it).
      curv_init: MERU's initial curvature ``c``; the learnable ``log c`` is clamped to
        ``[ln(curv_init / 10), ln(curv_init * 10)]``.
      learn_curv: whether ``curv`` receives gradients (MERU).
      entail_weight: weight of MERU's entailment loss.
      pixel_mean, pixel_std: per-channel RGB normalisation of the [0, 1] images (inside the
        model).
      dtype: computation dtype name (``"float32"``; ``"float64"`` needs ``jax_enable_x64``;
        ``"bfloat16"`` with float32 ``param_dtype`` is mixed precision: float32 parameters cast
        to bfloat16 where used, bfloat16 matmuls and activations, float32 softmax and LayerNorm
        statistics; with ``attention=None`` Flax multiplies the float32 softmax weights with the
        values in float32, with ``"xla"`` in bfloat16). Projections onto the sphere/hyperboloid
        always run in at least float32. Tested tolerance of bfloat16 against float32 (a
        random-initialised two-block model, tests/test_models_switches.py): embeddings within
        2e-2 absolute, the loss within 1e-2 relative, the gradient within 0.1 relative (of its
        global norm).
      param_dtype: dtype of freshly initialised parameters.
      precision: matmul precision, ``"default"`` | ``"high"`` | ``"highest"`` (accelerators may
        use reduced-precision float32 matmuls unless ``"highest"``).
      attention: ``None`` (Flax's einsum attention) or an implementation of
        ``jax.nn.dot_product_attention``: ``"xla"`` (any device) or ``"cudnn"`` (NVIDIA GPUs'
        fused kernel; needs ``dtype`` bfloat16 or float16). In float32 ``"xla"`` agrees with
        ``None`` to float32 rounding (the scale is applied to the logits, not to the queries).
      remat: ``None`` (activations kept for the backward pass) or a policy of
        :data:`REMAT_POLICIES`: every transformer block of both towers under ``nn.remat``, which
        trades recomputation for activation memory (same outputs and gradients; parameter
        names unchanged).
      gelu: ``None`` (PyTorch's ``x (1 + erf(x / sqrt 2)) / 2``) or ``"erfc"`` (Flax's ``x
        erfc(-x / sqrt 2) / 2``): the exact GELU of every block MLP, the same function to float32
        rounding; XLA:CPU evaluates the erf form faster (BENCHMARKS.md).
    """

    kind: str = "meru"
    vision: VisionConfig = dataclasses.field(default_factory=VisionConfig)
    text: TextConfig = dataclasses.field(default_factory=TextConfig)
    embed_dim: int = 512
    curv_init: float = 1.0
    learn_curv: bool = True
    entail_weight: float = 0.2
    pixel_mean: tuple[float, float, float] = IMAGENET_PIXEL_MEAN
    pixel_std: tuple[float, float, float] = IMAGENET_PIXEL_STD
    dtype: str = "float32"
    param_dtype: str = "float32"
    precision: str = "default"
    attention: str | None = None
    remat: str | None = None
    gelu: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown model kind {self.kind!r}; expected one of {list(KINDS)}")
        if not isinstance(self.vision, VisionConfig) or not isinstance(self.text, TextConfig):
            raise TypeError("ModelConfig.vision/text must be VisionConfig/TextConfig instances")
        _positive(self, "embed_dim")
        if not self.curv_init > 0:
            raise ValueError(f"curv_init must be > 0, got {self.curv_init}")
        # Tuples keep the config hashable (and equal after a JSON round trip).
        object.__setattr__(self, "pixel_mean", tuple(float(v) for v in self.pixel_mean))
        object.__setattr__(self, "pixel_std", tuple(float(v) for v in self.pixel_std))
        if len(self.pixel_mean) != 3 or len(self.pixel_std) != 3:
            raise ValueError("pixel_mean and pixel_std need 3 values (RGB)")
        if not all(s > 0 for s in self.pixel_std):
            raise ValueError(f"pixel_std values must be > 0, got {self.pixel_std}")
        for name in ("dtype", "param_dtype"):
            if getattr(self, name) not in _DTYPES:
                raise ValueError(f"{name} {getattr(self, name)!r} is not one of {list(_DTYPES)}")
        if self.precision not in _PRECISIONS:
            raise ValueError(f"precision {self.precision!r} is not one of {list(_PRECISIONS)}")
        if self.attention is not None and self.attention not in ATTENTION_IMPLS:
            raise ValueError(
                f"attention {self.attention!r} is not None or one of {list(ATTENTION_IMPLS)}"
            )
        if self.attention == "cudnn" and self.dtype not in ("bfloat16", "float16"):
            raise ValueError(
                f"attention 'cudnn' needs dtype bfloat16 or float16 (cuDNN's fused attention has "
                f"no {self.dtype} kernel); use attention='xla' for {self.dtype}"
            )
        if self.remat is not None and self.remat not in REMAT_POLICIES:
            raise ValueError(f"remat {self.remat!r} is not None or one of {list(REMAT_POLICIES)}")
        if self.gelu is not None and self.gelu not in GELU_FORMS:
            raise ValueError(f"gelu {self.gelu!r} is not None or one of {list(GELU_FORMS)}")

    def __repr__(self) -> str:
        # The dataclass repr without the fields that are None (unset switches), so a config that
        # leaves the switches unset has the repr it had before they existed (run caches key on it).
        fields = (
            f"{f.name}={getattr(self, f.name)!r}"
            for f in dataclasses.fields(self)
            if f.repr and getattr(self, f.name) is not None
        )
        return f"{type(self).__name__}({', '.join(fields)})"

    # -- derived values used by the modules ---------------------------------------------------

    @property
    def geometry(self) -> Geometry:
        """The embedding geometry of this kind (:data:`KIND_GEOMETRY`): ``LORENTZ`` for MERU,
        ``SPHERE`` for CLIP."""
        return get_geometry(KIND_GEOMETRY[self.kind])

    @property
    def jnp_dtype(self) -> jnp.dtype:
        return jnp.dtype(self.dtype)

    @property
    def jnp_param_dtype(self) -> jnp.dtype:
        return jnp.dtype(self.param_dtype)

    @property
    def lax_precision(self) -> jax.lax.Precision:
        return jax.lax.Precision(self.precision)

    @property
    def curv_bounds(self) -> tuple[float, float]:
        """MERU's clamp range of the stored ``log c``."""
        return math.log(self.curv_init / 10.0), math.log(self.curv_init * 10.0)


def _positive(obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{type(obj).__name__}.{name} must be a positive int, got {value!r}")


# ----------------------------------------------------------------------------------------------
# Named architectures
# ----------------------------------------------------------------------------------------------

_RELEASED_TEXT = TextConfig(vocab_size=49408, context_length=77, width=512, depth=12, heads=8)

# name -> (vision, text, embed_dim). The released ones follow MERU's configs: ViT-S is timm's
# MoCo-v3 small variant (12 heads of width 32), ViT-B/L are timm's standard archs; all image 224
# patch 16, text L12_W512 (8 heads), embed 512.
_ARCHS: dict[str, tuple[VisionConfig, TextConfig, int]] = {
    "vit_s": (VisionConfig(224, 16, width=384, depth=12, heads=12), _RELEASED_TEXT, 512),
    "vit_b": (VisionConfig(224, 16, width=768, depth=12, heads=12), _RELEASED_TEXT, 512),
    "vit_l": (VisionConfig(224, 16, width=1024, depth=24, heads=16), _RELEASED_TEXT, 512),
    # The PyTorch reference fixtures' model (tests/fixtures/meru_torch/tiny_config.json).
    "tiny": (
        VisionConfig(224, 16, width=96, depth=2, heads=4),
        TextConfig(context_length=77, width=64, depth=2, heads=4),
        48,
    ),
    # Fashion-MNIST (28x28): a 4x4 grid of 7x7-pixel patches -> 17 tokens.
    "fmnist_s": (
        VisionConfig(28, 7, width=128, depth=3, heads=4),
        TextConfig(context_length=16, width=128, depth=2, heads=2),
        64,
    ),
    # Smoke-test size: seconds-long runs and unit tests.
    "fmnist_xs": (
        VisionConfig(28, 7, width=64, depth=1, heads=2),
        TextConfig(context_length=16, width=64, depth=1, heads=2),
        32,
    ),
}
_ALIASES = {"fmnist_vit": "fmnist_s", "tiny_smoke": "fmnist_xs"}
ARCH_NAMES = tuple(_ARCHS)


def get_arch(name: str, kind: str = "meru", **overrides: Any) -> ModelConfig:
    """The named architecture as a :class:`ModelConfig` of ``kind`` ("clip" or "meru").

    Names: ``vit_s``, ``vit_b``, ``vit_l`` (released MERU/CLIP models), ``tiny`` (the reference
    fixtures), ``fmnist_s`` (Fashion-MNIST, 28x28, 7.4M parameters of which 6.3M are the token
    embedding) and ``fmnist_xs`` (smoke tests, 28x28, 3.3M parameters); ``fmnist_vit`` and
    ``tiny_smoke`` are aliases of the last two. ``overrides`` as in :func:`model_config`.
    """
    return model_config(kind=kind, arch=name, **overrides)


def _resolve(name: str) -> tuple[VisionConfig, TextConfig, int]:
    key = _ALIASES.get(name, name)
    if key not in _ARCHS:
        raise ValueError(
            f"unknown architecture {name!r}; expected one of {list(_ARCHS) + list(_ALIASES)}"
        )
    return _ARCHS[key]


_VISION_FIELDS = {f.name for f in dataclasses.fields(VisionConfig)}
_TEXT_FIELDS = {f.name for f in dataclasses.fields(TextConfig)}
_TOP_FIELDS = {f.name for f in dataclasses.fields(ModelConfig)} - {"vision", "text"}
# Field names that identify one tower without a prefix.
_SHORTCUTS = {
    "image_size": "vision",
    "patch_size": "vision",
    "context_length": "text",
    "vocab_size": "text",
}


def model_config(kind: str = "meru", arch: str = "fmnist_s", **overrides: Any) -> ModelConfig:
    """A named architecture with field overrides (the entry point for experiment configs).

    ``overrides`` may be top-level :class:`ModelConfig` fields (``embed_dim``, ``entail_weight``,
    ``precision``, ...), tower fields with a ``vision_`` / ``text_`` prefix (``vision_depth=4``,
    ``text_width=256``), the unambiguous tower fields ``image_size``, ``patch_size``,
    ``context_length`` and ``vocab_size``, or ``vision=`` / ``text=`` dicts of tower fields.
    An override whose value is ``None`` is not set (the field keeps the architecture's value), so
    experiment configs can list switches as unset placeholders.

    Example: ``model_config("meru", "fmnist_s", context_length=24, vision_depth=4)``.
    """
    vision, text, embed_dim = _resolve(arch)
    vision_kw: dict[str, Any] = {}
    text_kw: dict[str, Any] = {}
    top: dict[str, Any] = {"kind": kind, "embed_dim": embed_dim}
    unknown = []
    for key, value in overrides.items():
        if value is None:
            continue
        if key in ("vision", "text") and isinstance(value, Mapping):
            tower_kw = vision_kw if key == "vision" else text_kw
            tower_kw.update({k: v for k, v in value.items() if v is not None})
        elif key in _TOP_FIELDS:
            top[key] = value
        elif key in _SHORTCUTS:
            (vision_kw if _SHORTCUTS[key] == "vision" else text_kw)[key] = value
        elif key.startswith("vision_") and key[7:] in _VISION_FIELDS:
            vision_kw[key[7:]] = value
        elif key.startswith("text_") and key[5:] in _TEXT_FIELDS:
            text_kw[key[5:]] = value
        else:
            unknown.append(key)
    bad = [k for k in vision_kw if k not in _VISION_FIELDS] + [
        k for k in text_kw if k not in _TEXT_FIELDS
    ]
    if unknown or bad:
        raise ValueError(
            f"unknown model config overrides {sorted(unknown + bad)}; use ModelConfig fields "
            f"{sorted(_TOP_FIELDS)}, 'vision_'/'text_' + tower fields, or {sorted(_SHORTCUTS)}"
        )
    if "pixel_mean" in top:
        top["pixel_mean"] = tuple(top["pixel_mean"])
    if "pixel_std" in top:
        top["pixel_std"] = tuple(top["pixel_std"])
    return ModelConfig(
        vision=dataclasses.replace(vision, **vision_kw),
        text=dataclasses.replace(text, **text_kw),
        **top,
    )


def arch_name(cfg: ModelConfig) -> str | None:
    """The name of the architecture ``cfg`` has (towers and ``embed_dim``), or ``None``."""
    for name, (vision, text, embed_dim) in _ARCHS.items():
        if (cfg.vision, cfg.text, cfg.embed_dim) == (vision, text, embed_dim):
            return name
    return None
