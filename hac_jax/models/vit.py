"""The ViT image tower: timm's ``VisionTransformer`` as MERU builds it, in Flax linen.

Structure (MERU's ``build_timm_vit`` with ``global_pool="token"`` and fixed sin-cos positions):
patch conv (kernel = stride = patch, no padding) -> patches flattened row-major -> ``cls_token``
prepended -> ``pos_embed`` added (row 0 included; it is zero) -> pre-LN blocks
``x + Attn(LN1(x))``, ``x + MLP(LN2(x))`` -> final ``norm`` -> token 0. LayerNorm eps is 1e-5
(torch's default, which MERU's timm models use), GELU is the exact erf form, there is no dropout.
Parameter names mirror timm's state-dict keys (``blocks_N/attn/qkv`` ...), so conversion is a
rename plus transpose.

Two accelerator switches reach the blocks (``ModelConfig.attention`` / ``ModelConfig.remat``):
the attention implementation (:class:`FusedSelfAttention`) and rematerialisation of every block
(:func:`remat_block`); their default ``None`` is the plain Flax computation.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from hac_jax.models.config import REMAT_POLICIES, VisionConfig

__all__ = [
    "Block",
    "FusedSelfAttention",
    "Mlp",
    "VisionTransformer",
    "remat_block",
    "sincos_pos_embed",
]

LN_EPS = 1e-5


def sincos_pos_embed(grid_size: int, width: int, temperature: float = 10000.0) -> np.ndarray:
    """MERU's fixed 2-D sin-cos position table, with a zero row for the cls token.

    With ``pd = width / 4`` and ``w_k = 1 / temperature^(k / pd)``, the row of the patch at
    (row ``r``, column ``c``) is ``[sin(r w), cos(r w), sin(c w), cos(c w)]``. Computed in float32
    as MERU does (``build_2d_sincos_position_embedding`` in MERU's image encoders); entries agree
    with MERU's stored tables to 1 float32 ulp (torch's float32 ``sin`` is not correctly rounded).

    Shapes: ``-> (1, 1 + grid_size**2, width)`` float32.
    """
    if width % 4:
        raise ValueError(f"width {width} must be a multiple of 4 for the 2-D sin-cos table")
    pos_dim = width // 4
    # float32 steps as in MERU, with the power computed in float64 and rounded once (what a
    # correctly rounded powf gives): numpy's own float32 ``**`` takes SIMD paths that differ
    # between CPUs (AVX-512 vs AVX2) by an ulp, which made the table depend on the machine.
    omega = np.arange(pos_dim, dtype=np.float32) / np.float32(pos_dim)
    power = (np.float64(temperature) ** omega.astype(np.float64)).astype(np.float32)
    omega = np.float32(1.0) / power
    rows, cols = np.meshgrid(
        np.arange(grid_size, dtype=np.float32),
        np.arange(grid_size, dtype=np.float32),
        indexing="ij",
    )
    # The angles are rounded to float32 as in MERU; sin/cos are then evaluated in float64 and
    # rounded, which lands within 1 ulp of torch's float32 kernels.
    out_r = (rows.reshape(-1)[:, None] * omega[None, :]).astype(np.float64)
    out_c = (cols.reshape(-1)[:, None] * omega[None, :]).astype(np.float64)
    table = np.concatenate([np.sin(out_r), np.cos(out_r), np.sin(out_c), np.cos(out_c)], axis=1)
    cls_row = np.zeros((1, width), np.float32)
    return np.concatenate([cls_row, table.astype(np.float32)], axis=0)[None]


def _dense(
    features: int,
    name: str,
    dtype,
    param_dtype,
    precision,
    std: float = 0.02,
    use_bias: bool = True,
) -> nn.Dense:
    return nn.Dense(
        features,
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=param_dtype,
        precision=precision,
        kernel_init=nn.initializers.truncated_normal(std),
        bias_init=nn.initializers.zeros,
        name=name,
    )


def _layer_norm(name: str, dtype, param_dtype) -> nn.LayerNorm:
    # The two-pass variance: E[x^2] - E[x]^2 loses digits in float32 when |mean| >> std.
    return nn.LayerNorm(
        epsilon=LN_EPS, dtype=dtype, param_dtype=param_dtype, use_fast_variance=False, name=name
    )


def remat_block(block_cls: type[nn.Module], policy: str | None) -> type[nn.Module]:
    """``block_cls`` under ``nn.remat`` with the named policy (``ModelConfig.remat``:
    ``"full"`` saves nothing of the block for the backward pass, ``"dots"`` the outputs of its
    weight matmuls), or ``block_cls`` itself for ``None``. Parameter names do not change."""
    if policy is None:
        return block_cls
    if policy not in REMAT_POLICIES:
        raise ValueError(f"remat {policy!r} is not None or one of {list(REMAT_POLICIES)}")
    saveable = {"full": None, "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable}
    return nn.remat(block_cls, policy=saveable[policy])


def _jax_attention(
    q: Array,
    k: Array,
    v: Array,
    mask: Array | None,
    causal: bool,
    implementation: str,
    precision: jax.lax.Precision | None,
) -> Array:
    """``jax.nn.dot_product_attention`` with the module's matmul precision (it takes none of its
    own, so a non-default one is set for the trace). Shapes: ``(B, N, heads, head_dim)`` q, k, v
    (+ mask as in :class:`FusedSelfAttention`) ``-> (B, N, heads, head_dim)``."""
    precision = None if precision is None else jax.lax.Precision(precision)
    if precision is None or precision == jax.lax.Precision.DEFAULT:
        context = contextlib.nullcontext()
    else:
        context = jax.default_matmul_precision(precision.name.lower())
    with context:
        return jax.nn.dot_product_attention(
            q, k, v, mask=mask, is_causal=causal, implementation=implementation
        )


class FusedSelfAttention(nn.Module):
    """Multi-head self-attention with one fused ``in`` projection (q | k | v along the last dim).

    The torch layouts (timm ``attn.qkv``, ``nn.MultiheadAttention.in_proj``) split the ``3W``
    outputs into q, k, v, then each into contiguous head chunks of ``W / heads``; this module
    does the same, so the fused kernel is the transposed torch weight.

    ``attention``: ``None`` computes softmax(q k^T / sqrt(d)) v with Flax's
    ``nn.dot_product_attention``; ``"xla"`` / ``"cudnn"`` with ``jax.nn.dot_product_attention``
    of that implementation. ``causal``: each position attends only to itself and earlier ones
    (``jax.nn.dot_product_attention``'s ``is_causal``, which lets cuDNN use its causal kernel);
    it needs ``attention`` set (the Flax path takes a causal mask as ``mask`` instead).

    Shapes: ``(B, N, W)`` (+ optional boolean mask broadcastable to ``(B, heads, N, N)``, True =
    attend) ``-> (B, N, W)``.
    """

    heads: int
    in_name: str = "qkv"
    out_name: str = "proj"
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    precision: Any = None
    in_std: float = 0.02
    out_std: float = 0.02
    attention: str | None = None
    causal: bool = False

    @nn.compact
    def __call__(self, x: Array, mask: Array | None = None) -> Array:
        b, n, width = x.shape
        head_dim = width // self.heads
        qkv = _dense(
            3 * width, self.in_name, self.dtype, self.param_dtype, self.precision, self.in_std
        )(x)
        qkv = qkv.reshape(b, n, 3, self.heads, head_dim)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        if self.attention is None:
            if self.causal:
                raise ValueError("causal=True needs attention set; pass a causal mask instead")
            out = nn.dot_product_attention(
                q,
                k,
                v,
                mask=mask,
                dtype=self.dtype,
                precision=self.precision,
                deterministic=True,
                # Softmax in float32 for half-precision compute (never a downcast of float64).
                force_fp32_for_softmax=jnp.dtype(self.dtype).itemsize < 4,
            )
        else:
            # jax.nn.dot_product_attention computes its logits and softmax in at least float32.
            out = _jax_attention(q, k, v, mask, self.causal, self.attention, self.precision)
        out = out.reshape(b, n, width)
        return _dense(
            width, self.out_name, self.dtype, self.param_dtype, self.precision, self.out_std
        )(out)


def gelu(x: Array, form: str | None = None) -> Array:
    """Exact GELU ``x Phi(x)`` in the form named by ``ModelConfig.gelu``: ``None`` PyTorch's
    ``x (1 + erf(x / sqrt 2)) / 2``, ``"erfc"`` Flax's ``x erfc(-x / sqrt 2) / 2``."""
    if form == "erfc":
        return nn.gelu(x, approximate=False)
    if form is not None:
        raise ValueError(f"unknown GELU form {form!r}")
    return 0.5 * x * (1.0 + jax.lax.erf(x * np.asarray(1.0 / np.sqrt(2.0), x.dtype)))


class Mlp(nn.Module):
    """``fc2(GELU(fc1(x)))`` with exact GELU (``gelu``: its form, see :func:`gelu`); layer names
    are configurable to mirror torch keys."""

    hidden_dim: int
    fc1_name: str = "fc1"
    fc2_name: str = "fc2"
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    precision: Any = None
    fc1_std: float = 0.02
    fc2_std: float = 0.02
    gelu: str | None = None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        width = x.shape[-1]
        h = _dense(
            self.hidden_dim,
            self.fc1_name,
            self.dtype,
            self.param_dtype,
            self.precision,
            self.fc1_std,
        )(x)
        h = gelu(h, self.gelu)
        return _dense(
            width, self.fc2_name, self.dtype, self.param_dtype, self.precision, self.fc2_std
        )(h)


class Block(nn.Module):
    """timm's pre-LN ViT block: ``x + attn(norm1(x))`` then ``x + mlp(norm2(x))``.

    ``attention``: the implementation of :class:`FusedSelfAttention`; ``gelu``: the form of the
    MLP's GELU (:func:`gelu`). Shapes: ``(B, N, D) -> (B, N, D)``.
    """

    heads: int
    hidden_dim: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    precision: Any = None
    attention: str | None = None
    gelu: str | None = None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, precision=self.precision)
        x = x + FusedSelfAttention(
            self.heads, "qkv", "proj", attention=self.attention, name="attn", **kw
        )(_layer_norm("norm1", self.dtype, self.param_dtype)(x))
        return x + Mlp(self.hidden_dim, "fc1", "fc2", gelu=self.gelu, name="mlp", **kw)(
            _layer_norm("norm2", self.dtype, self.param_dtype)(x)
        )


def _constant_init(table: np.ndarray) -> Callable[..., Array]:
    def init(key: Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> Array:
        del key
        if tuple(shape) != table.shape:
            raise ValueError(f"pos_embed shape {shape} != table shape {table.shape}")
        return jnp.asarray(table, dtype)

    return init


class VisionTransformer(nn.Module):
    """ViT image tower. Shapes: normalised images ``(B, H, W, 3)`` -> cls features ``(B, D)``.

    Sows (collection ``"intermediates"``): ``visual_tokens_in`` (input of block 0),
    ``visual_block_N`` (output of block N), ``visual_norm`` (after the final norm), all
    ``(B, 1 + G*G, D)``, and ``visual_pooled`` ``(B, D)``.

    ``attention``, ``remat`` and ``gelu``: ``ModelConfig.attention`` / ``.remat`` / ``.gelu``
    (the blocks' attention implementation, rematerialisation policy and GELU form).
    """

    config: VisionConfig
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    precision: Any = None
    attention: str | None = None
    remat: str | None = None
    gelu: str | None = None

    @nn.compact
    def __call__(self, images: Array) -> Array:
        cfg = self.config
        if images.ndim != 4 or images.shape[1:] != (cfg.image_size, cfg.image_size, 3):
            raise ValueError(
                f"expected images of shape (B, {cfg.image_size}, {cfg.image_size}, 3) NHWC, got "
                f"{images.shape}; the model config's vision.image_size must match the data"
            )
        width = cfg.width
        x = _PatchEmbed(
            cfg.patch_size, width, self.dtype, self.param_dtype, self.precision, name="patch_embed"
        )(images)
        b = x.shape[0]
        # Row-major flattening: token 1 + r * G + c is patch (r, c), as in timm.
        x = x.reshape(b, -1, width)
        cls = self.param("cls_token", nn.initializers.normal(1e-6), (1, 1, width), self.param_dtype)
        pos = self.param(
            "pos_embed",
            _constant_init(sincos_pos_embed(cfg.grid_size, width)),
            (1, cfg.num_tokens, width),
            self.param_dtype,
        )
        x = jnp.concatenate([jnp.broadcast_to(cls.astype(x.dtype), (b, 1, width)), x], axis=1)
        x = x + pos.astype(x.dtype)
        self.sow("intermediates", "visual_tokens_in", x)
        block_cls = remat_block(Block, self.remat)
        for i in range(cfg.depth):
            x = block_cls(
                cfg.heads,
                cfg.hidden_dim,
                self.dtype,
                self.param_dtype,
                self.precision,
                self.attention,
                gelu=self.gelu,
                name=f"blocks_{i}",
            )(x)
            self.sow("intermediates", f"visual_block_{i}", x)
        x = _layer_norm("norm", self.dtype, self.param_dtype)(x)
        self.sow("intermediates", "visual_norm", x)
        pooled = x[:, 0]
        self.sow("intermediates", "visual_pooled", pooled)
        return pooled


class _PatchEmbed(nn.Module):
    """timm's ``patch_embed``: a conv with kernel = stride = patch (params ``proj/{kernel,bias}``).

    Shapes: ``(B, H, W, 3) -> (B, H/p, W/p, D)``.
    """

    patch_size: int
    width: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, images: Array) -> Array:
        p = self.patch_size
        return nn.Conv(
            self.width,
            (p, p),
            strides=(p, p),
            padding="VALID",
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            precision=self.precision,
            # MoCo-v3 / MAE initialise the patch projection like a linear layer (xavier uniform).
            kernel_init=nn.initializers.xavier_uniform(in_axis=(0, 1, 2), out_axis=3),
            bias_init=nn.initializers.zeros,
            name="proj",
        )(images)
