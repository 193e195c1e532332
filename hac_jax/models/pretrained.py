"""Pretrained MERU / CLIP models: load a converted directory or a PyTorch ``.pth`` directly.

Two ways to use the weights::

    from hac_jax.models import load_pretrained
    from hac_jax.tokenizer import tokenize

    pre = load_pretrained("converted/meru_vit_s")        # or "meru_vit_s.pth"
    img = pre.encode_image(images)                        # (B, H, W, 3) float in [0, 1] -> (B, E)
    txt = pre.encode_text(tokenize(captions))             # (B, L) int32 -> (B, E)

    # the same computation, apply-style:
    img = pre.model.apply({"params": pre.params}, images, project=True, method="encode_image")

Directories are written by ``python -m checkpoints_convert`` or :func:`save_pretrained` (layout in
:mod:`hac_jax.models.saved`). A ``.pth`` is read with ``torch.load(weights_only=True)`` (never
running pickled code) and converted in memory, which needs PyTorch installed.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from hac_jax.geometry import Geometry
from hac_jax.models.config import ModelConfig, arch_name
from hac_jax.models.two_tower import CLIP, MERU, build_model, param_shapes

__all__ = ["Pretrained", "load_pretrained", "save_pretrained", "scalar_summary"]


@functools.partial(jax.jit, static_argnames=("model", "method", "project"))
def _encode(model: CLIP | MERU, params: Any, inputs: jax.Array, *, method: str, project: bool):
    # ``model`` is a hashable linen module, so one compilation serves every equal config.
    return model.apply({"params": params}, inputs, project=project, method=method)


@dataclasses.dataclass(frozen=True, eq=False)
class Pretrained:
    """A loaded model: its weights, config and linen module, with jitted encoders.

    Attributes:
      model: the linen module (:class:`~hac_jax.models.CLIP` or :class:`~hac_jax.models.MERU`)
        for ``model.apply({"params": params}, ...)``.
      params: the parameter tree (``jax.Array`` leaves, float32 on the default device).
      config: the :class:`~hac_jax.models.ModelConfig`.
      root: CLIP's ``[ROOT]`` embedding ``(E,)`` if the checkpoint had one (MERU's root is
        the hyperboloid origin, so it is ``None`` there).
      source: the path loaded.
      info: provenance (converted directories: ``convert_info.json``; ``.pth``: the layout).
    """

    model: CLIP | MERU
    params: dict[str, Any]
    config: ModelConfig
    root: jax.Array | None = None
    source: Path | None = None
    info: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def kind(self) -> str:
        """``"meru"`` or ``"clip"``."""
        return self.config.kind

    @property
    def geometry(self) -> Geometry:
        """The embedding geometry (``LORENTZ`` for MERU, ``SPHERE`` for CLIP)."""
        return self.config.geometry

    @property
    def curv(self) -> float:
        """Curvature ``c`` at use (``exp`` of the clamped stored log; CLIP: 1.0)."""
        return scalar_summary(self.params, self.config)["curv_at_use"]

    def encode_image(self, images: Any, project: bool = True) -> jax.Array:
        """Images -> embeddings, ``(B, S, S, 3) -> (B, E)`` float32 ``jax.Array``.

        Args:
          images: float NHWC RGB in [0, 1] (not normalised; the model applies the config's
            pixel mean/std), ``S = config.vision.image_size``.
          project: ``False``: the raw ``visual_proj`` features. ``True``: CLIP unit vectors, or
            MERU hyperboloid space components ``exp_map0(raw * exp(visual_alpha), c)``.
        """
        images = jnp.asarray(images)
        size = self.config.vision.image_size
        if images.ndim != 4 or images.shape[1:] != (size, size, 3):
            hint = (
                "; it looks channels-first: use images.transpose(0, 2, 3, 1)"
                if images.ndim == 4 and images.shape[1] == 3
                else ""
            )
            raise ValueError(
                f"images must be NHWC (B, {size}, {size}, 3) for this model, got shape "
                f"{tuple(images.shape)}{hint}"
            )
        return _encode(self.model, self.params, images, method="encode_image", project=project)

    def encode_text(self, tokens: Any, project: bool = True) -> jax.Array:
        """Token ids (or captions) -> embeddings, ``(B, L) -> (B, E)`` float32 ``jax.Array``.

        Args:
          tokens: int ids ``(B, L)`` right-padded with 0, ``L <= config.text.context_length``
            (:func:`hac_jax.tokenizer.tokenize`); a caption string or a sequence of strings is
            tokenized first (padded to the context length).
          project: as in :meth:`encode_image` (MERU uses ``textual_alpha``).
        """
        if isinstance(tokens, str) or (
            isinstance(tokens, Sequence) and tokens and all(isinstance(t, str) for t in tokens)
        ):
            tokens = self.tokenize(tokens)
        tokens = jnp.asarray(tokens)
        context = self.config.text.context_length
        if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
            raise ValueError(
                f"tokens must be integer ids of shape (B, L), got {tokens.dtype} "
                f"{tuple(tokens.shape)}; use hac_jax.tokenizer.tokenize"
            )
        if tokens.shape[1] > context:
            raise ValueError(
                f"tokens have length {tokens.shape[1]} but the model's context is {context}; "
                f"tokenize with context_length={context}"
            )
        return _encode(self.model, self.params, tokens, method="encode_text", project=project)

    def tokenize(self, texts: str | Sequence[str]) -> np.ndarray:
        """Captions -> ``int32 (B, config.text.context_length)`` ids for :meth:`encode_text`."""
        from hac_jax.tokenizer import tokenize

        return tokenize(texts, context_length=self.config.text.context_length)


def scalar_summary(params: Mapping[str, Any], cfg: ModelConfig) -> dict[str, Any]:
    """Readable facts of a parameter tree: counts and the learnable scalars as values.

    Returns a dict with ``kind``, ``arch`` (a named architecture or ``None``), ``num_params``
    (every leaf, the fixed ``visual/pos_embed`` table included), ``num_trainable`` (without it),
    ``logit_scale`` / ``curv`` / ``visual_alpha`` / ``textual_alpha`` as ``exp`` of the stored
    logs (MERU-only ones absent for CLIP), and ``curv_at_use`` / ``logit_scale_at_use`` after
    the model's clamps.
    """
    from hac_jax.models.two_tower import scalar_bounds

    leaves = traverse_util.flatten_dict(dict(params))
    count = sum(int(np.prod(np.shape(v))) for v in leaves.values())
    pos = leaves.get(("visual", "pos_embed"))
    out: dict[str, Any] = {
        "kind": cfg.kind,
        "arch": arch_name(cfg),
        "num_params": count,
        "num_trainable": count - (0 if pos is None else int(np.prod(np.shape(pos)))),
    }
    bounds = scalar_bounds(cfg)
    for name in ("logit_scale", "curv", "visual_alpha", "textual_alpha"):
        if name in params:
            out[name] = math.exp(float(np.asarray(params[name])))
    lo, hi = bounds["logit_scale"]
    out["logit_scale_at_use"] = math.exp(float(np.clip(np.asarray(params["logit_scale"]), lo, hi)))
    if "curv" in bounds:
        lo, hi = bounds["curv"]
        out["curv_at_use"] = math.exp(float(np.clip(np.asarray(params["curv"]), lo, hi)))
    else:
        out["curv_at_use"] = 1.0
    return out


@functools.lru_cache(maxsize=16)
def _expected_shapes(cfg: ModelConfig) -> dict[tuple[str, ...], tuple[int, ...]]:
    # Tracing init takes a second or two; configs are hashable, so trace once per config.
    return {k: tuple(v.shape) for k, v in traverse_util.flatten_dict(param_shapes(cfg)).items()}


def _check_tree(params: Mapping[str, Any], cfg: ModelConfig, context: str) -> None:
    """Every parameter of the ``cfg`` model present with its shape, nothing else; otherwise a
    ``CheckpointError`` (a ``ValueError``) ``"{context}: <problems>"``."""
    from hac_jax.models.saved import CheckpointError

    want = _expected_shapes(cfg)
    got = {k: tuple(np.shape(v)) for k, v in traverse_util.flatten_dict(dict(params)).items()}
    problems = [f"missing {'/'.join(k)}" for k in want if k not in got]
    problems += [f"unexpected {'/'.join(k)}" for k in got if k not in want]
    problems += [
        f"{'/'.join(k)} expected {want[k]} got {got[k]}"
        for k in want
        if k in got and got[k] != want[k]
    ]
    if problems:
        shown = "; ".join(problems[:10]) + (
            f" (+{len(problems) - 10} more)" if len(problems) > 10 else ""
        )
        raise CheckpointError(f"{context}: {shown}")


def load_pretrained(
    path: str | os.PathLike,
    *,
    kind: str | None = None,
    heads: int | None = None,
    text_heads: int | None = None,
    **overrides: Any,
) -> Pretrained:
    """Loads a converted directory or a MERU / CLIP-baseline ``.pth`` file.

    Args:
      path: a directory written by ``python -m checkpoints_convert`` / :func:`save_pretrained`,
        or a ``.pth`` file (converted in memory; needs PyTorch).
      kind, heads, text_heads: ``.pth`` only: the model kind and attention head counts when the
        detected ones are wrong or cannot be known (head counts are not in any tensor shape; see
        :func:`hac_jax.models.torch_mapping.infer_config`). A directory carries its config.
      **overrides: :class:`ModelConfig` fields that do not change the weights, e.g.
        ``precision="highest"``.

    Returns:
      A :class:`Pretrained` with ``encode_image`` / ``encode_text`` (jitted) and ``params``,
      ``config``, ``model`` for ``model.apply``.

    Raises:
      FileNotFoundError: ``path`` does not exist.
      hac_jax.models.saved.CheckpointError: an unreadable, unsafe or malformed checkpoint.
      hac_jax.models.torch_mapping.ConversionError: a state dict that does not fit (listing every
        key/shape problem).
      ValueError: an override that is not a ModelConfig field or not allowed for directories.
    """
    from hac_jax.models import saved, torch_io

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"pretrained checkpoint not found: {path}")
    unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(ModelConfig)})
    if unknown:
        raise ValueError(f"unknown ModelConfig overrides {unknown}")
    if path.is_dir():
        if kind is not None or heads is not None or text_heads is not None:
            raise ValueError(
                f"{path} is a converted directory whose config.json fixes kind and heads; "
                "kind/heads/text_heads apply only to .pth files"
            )
        converted = saved.read_converted(path)
        cfg = saved.config_from_dict(converted.config)
        _check_tree(converted.params, cfg, f"{path}: params do not match its config.json")
        params, root, info = converted.params, converted.root, converted.info
    else:
        ckpt = torch_io.read_torch_checkpoint(path)
        cfg = convert_config(
            ckpt.state_dict, kind=kind, heads=heads, text_heads=text_heads, source_path=path
        )
        from hac_jax.models.torch_mapping import convert_state_dict

        params = convert_state_dict(ckpt.state_dict, cfg)
        root = ckpt.root
        info = {"layout": ckpt.layout, "ignored_keys": list(ckpt.ignored_keys)}
    if overrides:
        cfg = dataclasses.replace(cfg, **overrides)
    params = jax.device_put(jax.tree.map(jnp.asarray, params))
    return Pretrained(
        model=build_model(cfg),
        params=params,
        config=cfg,
        root=None if root is None else jnp.asarray(root),
        source=path,
        info=dict(info),
    )


def sidecar_heads(pth_path: str | os.PathLike) -> dict[str, int]:
    """Attention head counts from a metadata JSON stored beside a ``.pth`` checkpoint.

    Looked for, in this order, in the checkpoint's folder: ``<name>.json`` (``x.pth.json``),
    ``<stem>.json``, ``<stem>_config.json``, ``config.json``, then any other ``*.json`` whose
    ``"files"`` list names the checkpoint (the layout of the MERU fixtures' ``tiny_config.json``).
    Understood contents are those of :func:`hac_jax.models.torch_mapping.heads_from_metadata`.
    Returns ``{}`` when nothing usable is found; an unreadable JSON is skipped, not an error.
    """
    import json

    from hac_jax.models.torch_mapping import heads_from_metadata

    pth = Path(pth_path)
    folder = pth.parent
    named = [
        folder / f"{pth.name}.json",
        folder / f"{pth.stem}.json",
        folder / f"{pth.stem}_config.json",
        folder / "config.json",
    ]
    others = sorted(p for p in folder.glob("*.json") if p not in named)
    for candidate in named + others:
        if not candidate.is_file():
            continue
        try:
            meta = json.loads(candidate.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if not isinstance(meta, dict):
            continue
        if candidate in others and pth.name not in (meta.get("files") or []):
            continue
        found = heads_from_metadata(meta)
        if found:
            return found
    return {}


def convert_config(
    state_dict: Mapping[str, Any],
    *,
    kind: str | None = None,
    heads: int | None = None,
    text_heads: int | None = None,
    source_path: str | os.PathLike | None = None,
) -> ModelConfig:
    """:func:`hac_jax.models.torch_mapping.infer_config` plus a ``kind`` override.

    Head counts are in no tensor shape. When ``heads``/``text_heads`` are not given and
    ``source_path`` (the ``.pth``) is, they are read from a metadata JSON beside it, if there is
    one (see :func:`sidecar_heads`); explicit arguments always win.

    Overriding the kind does not change which keys the state dict has, so a mismatch then shows
    up in the conversion as missing/unexpected ``curv`` and alpha keys.
    """
    from hac_jax.models.torch_mapping import infer_config

    if source_path is not None and (heads is None or text_heads is None):
        found = sidecar_heads(source_path)
        heads = heads if heads is not None else found.get("heads")
        text_heads = text_heads if text_heads is not None else found.get("text_heads")
    cfg = infer_config(state_dict, heads=heads, text_heads=text_heads)
    if kind is not None and kind != cfg.kind:
        cfg = dataclasses.replace(cfg, kind=kind)
    return cfg


def save_pretrained(
    path: str | os.PathLike,
    params: Mapping[str, Any],
    config: ModelConfig,
    *,
    root: Any = None,
    overwrite: bool = False,
    info: Mapping[str, Any] | None = None,
) -> Path:
    """Writes ``params`` + ``config`` (+ CLIP ``root``) as a directory :func:`load_pretrained`
    reads (atomically; an existing target only with ``overwrite``). Returns the absolute path.

    Raises:
      ValueError: ``params`` do not match ``config``'s parameter tree.
      FileExistsError: the target exists and ``overwrite`` is false.
    """
    from hac_jax.models import saved

    _check_tree(params, config, f"params do not fit the {config.kind} config")
    facts = scalar_summary(params, config)
    meta = {"arch": facts["arch"], "num_params": facts["num_params"], **dict(info or {})}
    return saved.write_converted(
        path,
        params,
        config,
        root=None if root is None else np.asarray(root),
        info=meta,
        overwrite=overwrite,
    )
