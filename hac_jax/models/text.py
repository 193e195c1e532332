"""MERU's causal text transformer (``TransformerTextEncoder``) in Flax linen.

``x = token_embed[ids] + posit_embed[:L]``, then pre-LN residual blocks ``x + MHA(ln_1(x))``,
``x + MLP(ln_2(x))`` with causal attention (position i attends to j <= i), then ``ln_final``; the
caption feature is the one at the EOS position, ``argmax(ids)`` (EOT 49407 is the largest id).
Token ids are right-padded with 0; padding cannot influence the EOS feature because attention is
causal, so any padded length up to ``context_length`` gives the same features. LayerNorm eps 1e-5,
exact GELU, no dropout. Parameter names mirror MERU's state-dict keys.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from jax import Array

from hac_jax.models.config import TextConfig
from hac_jax.models.vit import FusedSelfAttention, Mlp, _layer_norm, remat_block

__all__ = ["ResidualAttentionBlock", "TextTransformer"]


class ResidualAttentionBlock(nn.Module):
    """One pre-LN causal block (``attn``: ``in_proj``/``out_proj``; ``mlp``: ``c_fc``/``c_proj``).

    Shapes: ``(B, L, W)``, mask ``(B, 1, L, L)`` bool (True = attend) ``-> (B, L, W)``. With
    ``attention`` set (:class:`~hac_jax.models.vit.FusedSelfAttention`) the mask is ``None`` and
    the attention itself is causal.
    """

    heads: int
    hidden_dim: int
    attn_std: float
    proj_std: float
    fc_std: float
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    precision: Any = None
    attention: str | None = None
    gelu: str | None = None

    @nn.compact
    def __call__(self, x: Array, mask: Array | None) -> Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, precision=self.precision)
        x = x + FusedSelfAttention(
            self.heads,
            "in_proj",
            "out_proj",
            in_std=self.attn_std,
            out_std=self.proj_std,
            attention=self.attention,
            causal=self.attention is not None,
            name="attn",
            **kw,
        )(_layer_norm("ln_1", self.dtype, self.param_dtype)(x), mask)
        return x + Mlp(
            self.hidden_dim,
            "c_fc",
            "c_proj",
            fc1_std=self.fc_std,
            fc2_std=self.proj_std,
            gelu=self.gelu,
            name="mlp",
            **kw,
        )(_layer_norm("ln_2", self.dtype, self.param_dtype)(x))


class TextTransformer(nn.Module):
    """Text tower. Shapes: int ids ``(B, L)``, ``L <= context_length`` -> EOS features ``(B, W)``.

    Sows (collection ``"intermediates"``): ``text_tokens_in`` (token + position embeddings),
    ``text_block_N`` and ``text_ln_final``, all ``(B, L, W)`` (every position, padding included).

    ``attention``, ``remat`` and ``gelu``: ``ModelConfig.attention`` / ``.remat`` / ``.gelu``
    (the blocks' attention implementation, rematerialisation policy and GELU form).
    """

    config: TextConfig
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    precision: Any = None
    attention: str | None = None
    remat: str | None = None
    gelu: str | None = None

    @nn.compact
    def __call__(self, tokens: Array) -> Array:
        cfg = self.config
        if tokens.ndim != 2:
            raise ValueError(f"expected int token ids of shape (B, L), got {tokens.shape}")
        if not jnp.issubdtype(tokens.dtype, jnp.integer):
            raise ValueError(f"token ids must be integers, got dtype {tokens.dtype}")
        length = tokens.shape[1]
        if length > cfg.context_length:
            raise ValueError(
                f"token sequences have length {length} > context_length {cfg.context_length}; "
                "truncate them when tokenizing (MERU keeps the first ids and sets the last to EOT)"
            )
        width = cfg.width
        # MERU's initialisation (after OpenAI CLIP): std 0.02 / 0.01 for token / position
        # embeddings, W^-1/2 for attention inputs, scaled by (2 depth)^-1/2 for residual outputs.
        attn_std = width**-0.5
        proj_std = attn_std * (2 * cfg.depth) ** -0.5
        fc_std = (2 * width) ** -0.5
        embed = nn.Embed(
            cfg.vocab_size,
            width,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            embedding_init=nn.initializers.normal(0.02),
            name="token_embed",
        )
        posit = self.param(
            "posit_embed",
            nn.initializers.normal(0.01),
            (cfg.context_length, width),
            self.param_dtype,
        )
        x = embed(tokens) + posit[:length].astype(self.dtype)
        self.sow("intermediates", "text_tokens_in", x)
        # jax.nn.dot_product_attention applies the causal mask itself (is_causal).
        mask = nn.make_causal_mask(tokens, dtype=jnp.bool_) if self.attention is None else None
        block_cls = remat_block(ResidualAttentionBlock, self.remat)
        for i in range(cfg.depth):
            x = block_cls(
                cfg.heads,
                cfg.hidden_dim,
                attn_std,
                proj_std,
                fc_std,
                self.dtype,
                self.param_dtype,
                self.precision,
                self.attention,
                gelu=self.gelu,
                name=f"resblocks_{i}",
            )(x, mask)
            self.sow("intermediates", f"text_block_{i}", x)
        x = _layer_norm("ln_final", self.dtype, self.param_dtype)(x)
        self.sow("intermediates", "text_ln_final", x)
        eos = jnp.argmax(tokens, axis=-1)
        return jnp.take_along_axis(x, eos[:, None, None], axis=1)[:, 0]
