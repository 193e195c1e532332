"""Running a model over data once: image and text features in fixed-size batches.

Every evaluation and audit gets its features from here. Batches are zero-padded to a fixed size
so that each encoder compiles once, and the jitted encoders are cached per (model, method,
projection).

* :func:`encode_images`: ``{"image": (B, H, W, 3), ...}`` batches -> ``(N, E)`` features (and the
  batches' other keys, concatenated);
* :func:`encode_texts`: ``(N, L)`` tokens -> ``(N, E)``;
* :func:`encode_unique_texts`: the same, encoding each distinct caption once (template captions
  repeat: thousands of test captions hold a few dozen distinct ones).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

__all__ = ["encode_images", "encode_texts", "encode_unique_texts"]


def _pad_to(x: np.ndarray, size: int) -> np.ndarray:
    if x.shape[0] == size:
        return x
    pad = np.zeros((size - x.shape[0], *x.shape[1:]), dtype=x.dtype)
    return np.concatenate([x, pad], axis=0)


def encode_texts(
    model: Any, params: Any, tokens: np.ndarray, *, project: bool, batch_size: int = 256
) -> np.ndarray:
    """Text features for ``(N, L)`` int32 tokens -> ``(N, E)`` float32, in fixed-size batches
    (the last one padded) so that ``jit`` compiles once."""
    fn = _encoder(model, "encode_text", project)
    tokens = np.asarray(tokens, dtype=np.int32)
    out = []
    for start in range(0, tokens.shape[0], batch_size):
        chunk = tokens[start : start + batch_size]
        feats = fn(params, _pad_to(chunk, min(batch_size, tokens.shape[0])))
        out.append(np.asarray(feats)[: chunk.shape[0]])
    return np.concatenate(out, axis=0)


def encode_images(
    model: Any,
    params: Any,
    batches: Iterable[Mapping[str, Any]],
    *,
    project: bool = True,
    batch_size: int | None = None,
    keys: Sequence[str] = ("label",),
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Image features of every batch: ``{"image": (B, H, W, 3), ...}`` batches -> ``(N, E)``.

    Batches smaller than ``batch_size`` (default: the first batch's size) are zero-padded so that
    ``jit`` compiles once. Returns the features and the concatenated ``keys`` of the batches.
    """
    fn = _encoder(model, "encode_image", project)
    feats, extras = [], {k: [] for k in keys}
    for batch in batches:
        images = np.asarray(batch["image"], dtype=np.float32)
        batch_size = batch_size or images.shape[0]
        n = images.shape[0]
        for start in range(0, n, batch_size):
            chunk = images[start : start + batch_size]
            f = fn(params, _pad_to(chunk, batch_size))
            feats.append(np.asarray(f)[: chunk.shape[0]])
        for k in keys:
            extras[k].append(np.asarray(batch[k]))
    if not feats:
        raise ValueError("no image batches to encode")
    return np.concatenate(feats), {k: np.concatenate(v) for k, v in extras.items()}


_ENCODER_CACHE: dict[tuple[int, str, bool], Callable] = {}


def _encoder(model: Any, method: str, project: bool) -> Callable:
    key = (id(model), method, project)
    if key not in _ENCODER_CACHE:

        def fn(params, x):
            return model.apply({"params": params}, x, project=project, method=method)

        # The closure keeps `model` alive, so its id cannot be reused while cached; bound the size
        # so that models from earlier runs do not pile up.
        if len(_ENCODER_CACHE) >= 8:
            _ENCODER_CACHE.pop(next(iter(_ENCODER_CACHE)))
        _ENCODER_CACHE[key] = jax.jit(fn)
    return _ENCODER_CACHE[key]


def encode_unique_texts(model: Any, params: Any, tokens: np.ndarray, batch_size: int) -> np.ndarray:
    """``(N, L)`` tokens -> ``(N, E)`` projected text embeddings, encoding each distinct caption
    once: captions come from a small template bank, so the test set's thousands of captions
    hold a few dozen distinct ones. The distinct rows are zero-padded to whole batches so that
    the encoder compiles once whatever their number."""
    uniq, inverse = np.unique(np.asarray(tokens, np.int32), axis=0, return_inverse=True)
    n = uniq.shape[0]
    padded = np.concatenate([uniq, np.zeros((-n % batch_size, uniq.shape[1]), np.int32)])
    emb = encode_texts(model, params, padded, project=True, batch_size=batch_size)
    return emb[:n][inverse.reshape(-1)]
