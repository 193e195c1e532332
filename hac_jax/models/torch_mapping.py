"""PyTorch MERU / CLIP-baseline state dicts <-> Flax parameter trees (pure numpy; no torch).

The mapping is a table generated from a :class:`~hac_jax.models.ModelConfig`: one row per
state-dict key, in state-dict order, naming the Flax parameter it becomes and how
(``copy``; ``dense``: Dense kernel = torch ``[out, in]`` weight transposed; ``conv``: OIHW -> HWIO;
or a ``buffer`` that is checked and not stored: ``pixel_mean``/``pixel_std`` (in the config) and
``textual.attn_mask`` (must be the causal mask)). The fused ``qkv`` / ``in_proj`` weights need no
reordering: the Flax attention splits its fused projection exactly as timm and
``nn.MultiheadAttention`` do (q | k | v, then contiguous head chunks).

Entry points:

* :func:`infer_config` reads the kind (MERU has ``curv`` and the alphas) and the architecture
  from the keys and shapes. Head counts are not in the shapes; see :func:`infer_config` for the
  rule and the ``heads=`` / ``text_heads=`` overrides.
* :func:`convert_state_dict` checks everything (every key consumed exactly once, every shape
  against ``jax.eval_shape`` of the model's ``init``, the causal mask, the pixel statistics,
  finite values) and reports *all* problems in one :class:`ConversionError`.
* :func:`check_shapes` runs the key/shape checks on ``{key: shape}`` alone (e.g. a manifest of a
  300M-parameter model, with nothing allocated).
* :func:`params_to_state_dict` is the inverse (for round trips and exporting back).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from flax import traverse_util

from hac_jax.models.config import ModelConfig, TextConfig, VisionConfig
from hac_jax.models.two_tower import param_shapes

__all__ = [
    "RELEASED_TEXT_HEADS",
    "RELEASED_VISION_HEADS",
    "ConversionError",
    "HeadCountWarning",
    "check_shapes",
    "convert_state_dict",
    "heads_from_metadata",
    "infer_config",
    "key_map",
    "params_to_state_dict",
]

# Head counts of the released MERU / CLIP-baseline towers, by width: ViT-S is timm's MoCo-v3
# small (12 heads of width 32), ViT-B 12, ViT-L 16; the text encoder L12_W512 has 8.
RELEASED_VISION_HEADS = {384: 12, 768: 12, 1024: 16}
RELEASED_TEXT_HEADS = {512: 8}
# Otherwise: heads = width / 64 (MERU's TransformerTextEncoder default when its arch string has
# no "_A<heads>", and the head width of timm's standard ViTs).
DEFAULT_HEAD_DIM = 64

_BUFFERS = ("pixel_mean", "pixel_std", "textual.attn_mask")
_MAX_LISTED = 20


class ConversionError(ValueError):
    """A state dict does not fit the target model. Lists every problem found.

    Attributes:
      missing: expected keys absent from the state dict.
      unexpected: keys that no parameter or buffer consumes.
      mismatched: ``(key, expected_shape, got_shape)`` triples.
      invalid: other problems (non-causal mask, pixel statistics, dtypes, non-finite values).
    """

    def __init__(
        self,
        summary: str,
        missing: Sequence[str] = (),
        unexpected: Sequence[str] = (),
        mismatched: Sequence[tuple[str, tuple[int, ...], tuple[int, ...]]] = (),
        invalid: Sequence[str] = (),
    ):
        self.missing = list(missing)
        self.unexpected = list(unexpected)
        self.mismatched = list(mismatched)
        self.invalid = list(invalid)
        parts = []
        if self.missing:
            parts.append(f"missing keys ({len(self.missing)}): {_listing(self.missing)}")
        if self.unexpected:
            parts.append(f"unexpected keys ({len(self.unexpected)}): {_listing(self.unexpected)}")
        if self.mismatched:
            shown = [f"{k} expected {tuple(e)} got {tuple(g)}" for k, e, g in self.mismatched]
            parts.append(f"shape mismatches ({len(shown)}): {_listing(shown)}")
        if self.invalid:
            parts.append(f"invalid values ({len(self.invalid)}): {_listing(self.invalid)}")
        super().__init__(summary + (": " + "; ".join(parts) if parts else ""))


class HeadCountWarning(UserWarning):
    """An attention head count was guessed by the ``width / 64`` rule (pass it explicitly)."""


def _listing(items: Sequence[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    return shown + (f" (+{len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else "")


# ----------------------------------------------------------------------------------------------
# The key table
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Row:
    torch_key: str
    path: tuple[str, ...] | None  # None: a buffer (not a Flax parameter)
    how: str  # "copy" | "dense" | "conv" | "buffer"


def _rows(cfg: ModelConfig) -> list[_Row]:
    """Every state-dict key of a ``cfg`` model, in MERU's state-dict order."""
    rows = [_Row("logit_scale", ("logit_scale",), "copy")]
    if cfg.kind == "meru":
        rows += [_Row(k, (k,), "copy") for k in ("curv", "visual_alpha", "textual_alpha")]
    rows += [_Row("pixel_mean", None, "buffer"), _Row("pixel_std", None, "buffer")]

    def linear(prefix: str, path: tuple[str, ...], bias: bool = True) -> list[_Row]:
        out = [_Row(f"{prefix}.weight", (*path, "kernel"), "dense")]
        return out + ([_Row(f"{prefix}.bias", (*path, "bias"), "copy")] if bias else [])

    def norm(prefix: str, path: tuple[str, ...]) -> list[_Row]:
        return [
            _Row(f"{prefix}.weight", (*path, "scale"), "copy"),
            _Row(f"{prefix}.bias", (*path, "bias"), "copy"),
        ]

    v = ("visual",)
    rows += [
        _Row("visual.cls_token", (*v, "cls_token"), "copy"),
        _Row("visual.pos_embed", (*v, "pos_embed"), "copy"),
        _Row("visual.patch_embed.proj.weight", (*v, "patch_embed", "proj", "kernel"), "conv"),
        _Row("visual.patch_embed.proj.bias", (*v, "patch_embed", "proj", "bias"), "copy"),
    ]
    for i in range(cfg.vision.depth):
        t, p = f"visual.blocks.{i}", (*v, f"blocks_{i}")
        rows += norm(f"{t}.norm1", (*p, "norm1"))
        rows += linear(f"{t}.attn.qkv", (*p, "attn", "qkv"))
        rows += linear(f"{t}.attn.proj", (*p, "attn", "proj"))
        rows += norm(f"{t}.norm2", (*p, "norm2"))
        rows += linear(f"{t}.mlp.fc1", (*p, "mlp", "fc1"))
        rows += linear(f"{t}.mlp.fc2", (*p, "mlp", "fc2"))
    rows += norm("visual.norm", (*v, "norm"))

    x = ("textual",)
    rows += [
        _Row("textual.posit_embed", (*x, "posit_embed"), "copy"),
        _Row("textual.attn_mask", None, "buffer"),
        _Row("textual.token_embed.weight", (*x, "token_embed", "embedding"), "copy"),
    ]
    for i in range(cfg.text.depth):
        t, p = f"textual.resblocks.{i}", (*x, f"resblocks_{i}")
        rows += [
            _Row(f"{t}.attn.in_proj_weight", (*p, "attn", "in_proj", "kernel"), "dense"),
            _Row(f"{t}.attn.in_proj_bias", (*p, "attn", "in_proj", "bias"), "copy"),
        ]
        rows += linear(f"{t}.attn.out_proj", (*p, "attn", "out_proj"))
        rows += norm(f"{t}.ln_1", (*p, "ln_1"))
        rows += linear(f"{t}.mlp.c_fc", (*p, "mlp", "c_fc"))
        rows += linear(f"{t}.mlp.c_proj", (*p, "mlp", "c_proj"))
        rows += norm(f"{t}.ln_2", (*p, "ln_2"))
    rows += norm("textual.ln_final", (*x, "ln_final"))
    rows += linear("visual_proj", ("visual_proj",), bias=False)
    rows += linear("textual_proj", ("textual_proj",), bias=False)
    return rows


def key_map(cfg: ModelConfig) -> dict[str, str | None]:
    """``{torch key: "flax/param/path"}`` in state-dict order (``None`` for buffers)."""
    return {r.torch_key: None if r.path is None else "/".join(r.path) for r in _rows(cfg)}


def _to_torch_shape(shape: tuple[int, ...], how: str) -> tuple[int, ...]:
    if how == "dense":
        return shape[::-1]
    if how == "conv":  # Flax HWIO -> torch OIHW
        h, w, i, o = shape
        return (o, i, h, w)
    return shape


def _from_torch(array: np.ndarray, how: str) -> np.ndarray:
    if how == "dense":
        return array.T
    if how == "conv":
        return array.transpose(2, 3, 1, 0)
    return array


def _to_torch(array: np.ndarray, how: str) -> np.ndarray:
    if how == "dense":
        return array.T
    if how == "conv":
        return array.transpose(3, 2, 0, 1)
    return array


@functools.lru_cache(maxsize=16)
def _expected_shapes(cfg: ModelConfig) -> tuple[tuple[_Row, ...], dict[str, tuple[int, ...]]]:
    """The rows and the torch shape of every key, from ``jax.eval_shape`` of the model's init
    (cached per config: tracing a ViT-L takes seconds; treat the result as read-only)."""
    rows = tuple(_rows(cfg))
    flat = traverse_util.flatten_dict(param_shapes(cfg))
    table_paths = {r.path for r in rows if r.path is not None}
    if table_paths != set(flat):
        # The table and the modules disagree: a bug here, not a problem of the input.
        raise RuntimeError(
            "checkpoints_convert key table out of sync with the Flax model: "
            f"{sorted('/'.join(p) for p in table_paths ^ set(flat))}"
        )
    t = cfg.text.context_length
    shapes = {"pixel_mean": (3, 1, 1), "pixel_std": (3, 1, 1), "textual.attn_mask": (t, t)}
    for r in rows:
        if r.path is not None:
            shapes[r.torch_key] = _to_torch_shape(tuple(flat[r.path].shape), r.how)
    return rows, shapes


def _describe(cfg: ModelConfig) -> str:
    v, t = cfg.vision, cfg.text
    return (
        f"{cfg.kind} model (ViT {v.image_size}/{v.patch_size} width {v.width} depth {v.depth}; "
        f"text width {t.width} depth {t.depth} context {t.context_length}; embed {cfg.embed_dim})"
    )


def _shape_problems(
    shapes: Mapping[str, tuple[int, ...]], cfg: ModelConfig
) -> tuple[list[str], list[str], list[tuple[str, tuple[int, ...], tuple[int, ...]]]]:
    _, expected = _expected_shapes(cfg)
    missing = [k for k in expected if k not in shapes]
    unexpected = [k for k in shapes if k not in expected]
    mismatched = [
        (k, expected[k], tuple(shapes[k]))
        for k in expected
        if k in shapes and tuple(shapes[k]) != expected[k]
    ]
    return missing, unexpected, mismatched


def check_shapes(shapes: Mapping[str, Sequence[int]], cfg: ModelConfig) -> None:
    """Checks ``{torch key: shape}`` against ``cfg`` without touching any values.

    Raises:
      ConversionError: listing every missing key, unexpected key and shape mismatch.
    """
    shapes = {k: tuple(int(d) for d in s) for k, s in shapes.items()}
    missing, unexpected, mismatched = _shape_problems(shapes, cfg)
    if missing or unexpected or mismatched:
        raise ConversionError(
            f"state dict does not match the {_describe(cfg)}", missing, unexpected, mismatched
        )


# ----------------------------------------------------------------------------------------------
# Conversion
# ----------------------------------------------------------------------------------------------


def _value_problems(state_dict: Mapping[str, Any], cfg: ModelConfig) -> list[str]:
    """Checks of buffer values, dtypes and finiteness (keys with a wrong shape are skipped)."""
    problems = []
    t = cfg.text.context_length
    mask = state_dict.get("textual.attn_mask")
    if mask is not None and np.shape(mask) == (t, t):
        # MERU stores a bool mask with True (= masked) strictly above the diagonal; OpenAI-style
        # float masks (-inf above the diagonal, 0 elsewhere) mean the same.
        if not np.array_equal(np.asarray(mask) != 0, np.triu(np.ones((t, t), bool), k=1)):
            problems.append(
                "textual.attn_mask is not the causal mask (True strictly above the diagonal)"
            )
    for name in ("pixel_mean", "pixel_std"):
        value = state_dict.get(name)
        if value is not None and np.shape(value) == (3, 1, 1):
            got = np.asarray(value, np.float64).reshape(3)
            want = np.asarray(getattr(cfg, name), np.float64)
            if not np.allclose(got, want, rtol=0, atol=1e-6):
                problems.append(
                    f"{name} is {got.round(6).tolist()} but the config has {want.tolist()} "
                    "(infer_config reads it from the state dict)"
                )
    for key, value in state_dict.items():
        if key in _BUFFERS:
            continue
        array = np.asarray(value)
        if not np.issubdtype(array.dtype, np.floating):
            problems.append(f"{key} has dtype {array.dtype}, expected a float")
        elif array.size and not (np.isfinite(array.min()) and np.isfinite(array.max())):
            # min/max propagate NaN and inf without allocating a full-size temporary.
            problems.append(f"{key} has non-finite values")
    return problems


def convert_state_dict(state_dict: Mapping[str, Any], cfg: ModelConfig) -> dict[str, Any]:
    """A MERU / CLIP-baseline ``model.state_dict()`` (numpy arrays) -> Flax ``params`` of ``cfg``.

    Every key must be consumed exactly once: parameters are renamed and transposed into the
    tree (``jax.eval_shape`` of ``build_model(cfg).init`` gives every target shape); the
    buffers are checked (``pixel_mean``/``pixel_std`` must equal the config's,
    ``textual.attn_mask`` must be causal). Float leaves are cast to ``cfg.param_dtype``; arrays may
    be views of the inputs (no copies are made when dtypes already match).

    Args:
      state_dict: ``{torch key: array}`` (``TorchCheckpoint.state_dict``), e.g. ``ckpt["model"]``.
      cfg: the target config, usually ``infer_config(state_dict)``.

    Returns:
      The nested parameter dict (``{"logit_scale": ..., "visual": {...}, ...}``).

    Raises:
      ConversionError: listing every missing/unexpected key, shape mismatch and invalid value.
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a mapping, got {type(state_dict).__name__}")
    shapes = {k: tuple(np.shape(v)) for k, v in state_dict.items()}
    missing, unexpected, mismatched = _shape_problems(shapes, cfg)
    invalid = _value_problems(state_dict, cfg)
    if missing or unexpected or mismatched or invalid:
        raise ConversionError(
            f"cannot convert the state dict to the {_describe(cfg)}",
            missing,
            unexpected,
            mismatched,
            invalid,
        )
    dtype = np.dtype(cfg.param_dtype)
    flat = {}
    for row in _rows(cfg):
        if row.path is not None:
            flat[row.path] = _from_torch(np.asarray(state_dict[row.torch_key], dtype), row.how)
    return traverse_util.unflatten_dict(flat)


def params_to_state_dict(params: Mapping[str, Any], cfg: ModelConfig) -> dict[str, np.ndarray]:
    """Inverse of :func:`convert_state_dict`: Flax ``params`` (or a same-structured tree such as
    gradients) -> ``{torch key: numpy array}`` in MERU's state-dict order, buffers included
    (``pixel_mean``/``pixel_std`` from the config, the bool causal ``textual.attn_mask``).

    Raises:
      KeyError: a parameter of the ``cfg`` model is missing from ``params``.
    """
    flat = traverse_util.flatten_dict(dict(params))
    out: dict[str, np.ndarray] = {}
    t = cfg.text.context_length
    for row in _rows(cfg):
        if row.torch_key in ("pixel_mean", "pixel_std"):
            out[row.torch_key] = np.asarray(getattr(cfg, row.torch_key), np.float32).reshape(
                3, 1, 1
            )
        elif row.torch_key == "textual.attn_mask":
            out[row.torch_key] = np.triu(np.ones((t, t), bool), k=1)
        else:
            if row.path not in flat:
                raise KeyError(
                    f"parameter {'/'.join(row.path)} (for {row.torch_key}) missing from params"
                )
            out[row.torch_key] = _to_torch(np.asarray(flat[row.path]), row.how)
    return out


# ----------------------------------------------------------------------------------------------
# Architecture inference
# ----------------------------------------------------------------------------------------------


def _block_count(keys: Sequence[str], prefix: str) -> tuple[int, list[str]]:
    pattern = re.compile(re.escape(prefix) + r"\.(\d+)\.")
    found = {int(m.group(1)) for k in keys if (m := pattern.match(k))}
    depth = len(found)
    problems = []
    if found and found != set(range(depth)):
        problems.append(f"{prefix} indices are not 0..N-1: {sorted(found)}")
    return depth, problems


def _heads(
    width: int, override: int | None, released: Mapping[int, int], tower: str, flag: str
) -> int:
    if override is not None:
        if not isinstance(override, int) or override <= 0 or width % override:
            raise ConversionError(f"{flag}={override!r} does not divide the {tower} width {width}")
        return override
    if width in released:
        return released[width]
    if width % DEFAULT_HEAD_DIM == 0:
        heads = width // DEFAULT_HEAD_DIM
        warnings.warn(
            f"{tower} width {width} is not a released MERU width; assuming {heads} attention "
            f"heads (head width {DEFAULT_HEAD_DIM}); pass {flag}=N if the checkpoint used another "
            "count (outputs are wrong otherwise)",
            HeadCountWarning,
            stacklevel=3,
        )
        return heads
    raise ConversionError(
        f"cannot infer the number of {tower} attention heads: width {width} is not a released "
        f"MERU width ({sorted(released)}) nor a multiple of {DEFAULT_HEAD_DIM}; pass {flag}=N "
        f"(command line: --{flag.replace('_', '-')} N)"
    )


def heads_from_metadata(meta: Mapping[str, Any]) -> dict[str, int]:
    """Head counts recorded next to a checkpoint, as ``infer_config`` keyword arguments.

    Understands the layouts that carry them: a ``ModelConfig`` JSON (``vision.heads``,
    ``text.heads``; e.g. a converted directory's ``config.json``), the fixtures' manifests
    (``constructor.visual_resolved.num_heads``, ``constructor.textual.heads``) and their
    ``tiny_config.json`` (``visual.timm_kwargs.num_heads``, ``textual.heads``), and MERU text arch
    strings such as ``"L12_W512_A8"``. Returns ``{"heads": .., "text_heads": ..}`` with the counts
    found (possibly none).
    """

    def get(*path: str) -> Any:
        node: Any = meta
        for key in path:
            if not isinstance(node, Mapping) or key not in node:
                return None
            node = node[key]
        return node

    vision = (
        get("vision", "heads")
        or get("constructor", "visual_resolved", "num_heads")
        or get("visual", "timm_kwargs", "num_heads")
    )
    text = get("text", "heads") or get("constructor", "textual", "heads") or get("textual", "heads")
    if text is None:
        arch = get("constructor", "textual", "arch") or get("textual", "arch")
        match = re.search(r"_A(\d+)", arch) if isinstance(arch, str) else None
        text = int(match.group(1)) if match else None
    out = {}
    if isinstance(vision, int):
        out["heads"] = vision
    if isinstance(text, int):
        out["text_heads"] = text
    return out


def infer_config(
    state_dict: Mapping[str, Any],
    *,
    heads: int | None = None,
    text_heads: int | None = None,
    **overrides: Any,
) -> ModelConfig:
    """The :class:`ModelConfig` of a MERU / CLIP-baseline state dict, from its keys and shapes.

    Read from the state dict: the kind (``curv``/``visual_alpha``/``textual_alpha`` present ->
    MERU, else CLIP), ViT width, depth, patch size, image size (from the ``pos_embed`` grid), MLP
    widths, text width/depth/vocabulary/context length, ``embed_dim``, and the ``pixel_mean`` /
    ``pixel_std`` buffer values. Only these shapes and the two 3-value buffers are read, so
    zero-stride stand-ins (``np.broadcast_to``) work for shape-only checks.

    Attention head counts are not stored in any shape. Rule, in order:

    1. ``heads`` (ViT) / ``text_heads`` (text) when given (:func:`heads_from_metadata` reads them
       from a config file kept next to a checkpoint);
    2. the released models' counts for their widths: ViT 384 -> 12 (MoCo-v3 ViT-S, head width 32),
       768 -> 12, 1024 -> 16; text 512 -> 8;
    3. ``width / 64`` when the width is a multiple of 64 (MERU's text default, timm's ViT head
       width), with a :class:`HeadCountWarning`;
    4. otherwise a :class:`ConversionError` asking for the flag.

    Args:
      state_dict: ``{torch key: array}``.
      heads, text_heads: explicit head counts.
      **overrides: other :class:`ModelConfig` fields (``curv_init``, ``learn_curv``,
        ``entail_weight``, ``dtype``, ``precision``, ...); not stored in MERU checkpoints.

    Raises:
      ConversionError: required keys are missing or have unusable shapes, or a head count cannot
        be determined.
    """
    keys = list(state_dict)
    if keys and all(k.startswith("module.") for k in keys):
        raise ConversionError(
            "state dict keys carry a 'module.' prefix (a DistributedDataParallel wrapper); "
            "strip it before converting"
        )
    required = [
        "logit_scale",
        "visual.cls_token",
        "visual.pos_embed",
        "visual.patch_embed.proj.weight",
        "visual.blocks.0.mlp.fc1.weight",
        "textual.token_embed.weight",
        "textual.posit_embed",
        "textual.resblocks.0.mlp.c_fc.weight",
        "visual_proj.weight",
        "textual_proj.weight",
    ]
    missing = [k for k in required if k not in state_dict]
    if missing:
        raise ConversionError(
            "not a MERU / CLIP-baseline state dict (a training checkpoint keeps it under "
            "ckpt['model'])",
            missing=missing,
        )
    shape = {k: tuple(np.shape(state_dict[k])) for k in keys}
    problems = []
    kind = (
        "meru"
        if any(k in state_dict for k in ("curv", "visual_alpha", "textual_alpha"))
        else ("clip")
    )

    width = shape["visual.cls_token"][-1]
    patch_w = shape["visual.patch_embed.proj.weight"]
    if len(patch_w) != 4 or patch_w[1] != 3 or patch_w[2] != patch_w[3] or patch_w[0] != width:
        problems.append(
            f"visual.patch_embed.proj.weight {patch_w} is not [{width}, 3, p, p] (square RGB "
            "patches)"
        )
    patch = patch_w[-1] if len(patch_w) == 4 else 1
    pos = shape["visual.pos_embed"]
    grid = math.isqrt(max(pos[1] - 1, 0)) if len(pos) == 3 else 0
    if len(pos) != 3 or grid * grid != pos[1] - 1 or grid == 0:
        problems.append(f"visual.pos_embed {pos} is not [1, 1 + G*G, D] (a square patch grid)")
    depth, msgs = _block_count(keys, "visual.blocks")
    problems += msgs
    vision_mlp = shape["visual.blocks.0.mlp.fc1.weight"][0]

    vocab, text_width = (shape["textual.token_embed.weight"] + (0, 0))[:2]
    context = shape["textual.posit_embed"][0]
    text_depth, msgs = _block_count(keys, "textual.resblocks")
    problems += msgs
    text_mlp = shape["textual.resblocks.0.mlp.c_fc.weight"][0]
    embed_dim = shape["visual_proj.weight"][0]
    if problems:
        raise ConversionError("cannot read the architecture", invalid=problems)

    vision_heads = _heads(width, heads, RELEASED_VISION_HEADS, "vision", "heads")
    txt_heads = _heads(text_width, text_heads, RELEASED_TEXT_HEADS, "text", "text_heads")
    pixel = {}
    for name in ("pixel_mean", "pixel_std"):
        if name in state_dict and np.size(state_dict[name]) == 3:
            pixel[name] = tuple(float(x) for x in np.asarray(state_dict[name]).reshape(3))
    try:
        return ModelConfig(
            kind=kind,
            vision=VisionConfig(
                image_size=grid * patch,
                patch_size=patch,
                width=width,
                depth=depth,
                heads=vision_heads,
                mlp_dim=None if vision_mlp == 4 * width else vision_mlp,
            ),
            text=TextConfig(
                vocab_size=vocab,
                context_length=context,
                width=text_width,
                depth=text_depth,
                heads=txt_heads,
                mlp_dim=None if text_mlp == 4 * text_width else text_mlp,
            ),
            embed_dim=embed_dim,
            **{**pixel, **overrides},
        )
    except (TypeError, ValueError) as e:
        raise ConversionError(f"the state dict describes an unusable model: {e}") from None
