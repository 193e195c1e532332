"""Caption tokenizer with MERU's token ids (OpenAI-CLIP byte-level BPE, 49408 ids).

MERU (Desai et al., ICML 2023) tokenizes with the OpenAI-CLIP BPE after cleaning each caption:
ftfy fixing, HTML unescaping twice, whitespace collapsed to single spaces, strip, lowercase.
Each caption becomes ``[49406 (SOT), ..., 49407 (EOT)]``; a caption longer than the context is
cut to its first ``context_length`` ids with the last one set back to EOT. Here every row is
right-padded with 0 to a fixed ``context_length`` (static shapes under ``jit``); the text tower
finds the EOS position with ``argmax`` since EOT is the largest id, so padding with 0 to 77
instead of to the batch maximum gives the same features (attention is causal).

The BPE itself is ``instant_clip_tokenizer`` (the CLIP vocabulary ships in its wheel, so it works
offline); this module adds MERU's text cleaning, the truncation rule and the dtype.
"""

from __future__ import annotations

import functools
import html
import re
from collections.abc import Sequence

import ftfy
import instant_clip_tokenizer
import numpy as np

__all__ = ["EOT_ID", "SOT_ID", "VOCAB_SIZE", "clean_caption", "tokenize"]

SOT_ID = 49406
EOT_ID = 49407
VOCAB_SIZE = 49408

_WHITESPACE = re.compile(r"\s+")
# The BPE backend refuses contexts shorter than SOT + one token + EOT; shorter ones are cut here.
_BACKEND_MIN_CONTEXT = 3


@functools.cache
def _backend() -> instant_clip_tokenizer.Tokenizer:
    """The BPE tokenizer, built once per process (building it parses the whole vocabulary)."""
    tok = instant_clip_tokenizer.Tokenizer()
    if (tok.start_of_text(), tok.end_of_text()) != (SOT_ID, EOT_ID):
        raise RuntimeError(
            "instant_clip_tokenizer has unexpected special ids "
            f"{(tok.start_of_text(), tok.end_of_text())}; expected {(SOT_ID, EOT_ID)}"
        )
    return tok


def clean_caption(text: str) -> str:
    """MERU's caption cleaning: ftfy fix, double HTML unescape, collapse whitespace, strip,
    lowercase. ``str -> str``."""
    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text))
    return _WHITESPACE.sub(" ", text).strip().lower()


def tokenize(texts: str | Sequence[str], context_length: int = 77) -> np.ndarray:
    """Captions -> MERU token ids, ``int32 [B, context_length]``, right-padded with 0.

    Args:
      texts: one caption (gives ``B = 1``) or a sequence of captions (``B = len(texts)``; an
        empty sequence gives shape ``(0, context_length)``).
      context_length: row length; at least 2 (room for SOT and EOT). Captions whose ids
        (SOT and EOT included) are longer keep their first ``context_length`` ids with the last
        one replaced by EOT, as MERU's text encoder does.

    Returns:
      ``np.ndarray`` of dtype int32 and shape ``(B, context_length)``. Row ``i`` is
      ``[49406, <BPE ids of clean_caption(texts[i])>, 49407, 0, 0, ...]``.

    Raises:
      TypeError: ``texts`` (or one of its items) is not a string, or ``context_length`` is not
        an int.
      ValueError: ``context_length < 2``.
    """
    if isinstance(context_length, bool) or not isinstance(context_length, (int, np.integer)):
        raise TypeError(f"context_length must be an int, got {type(context_length).__name__}")
    context_length = int(context_length)
    if context_length < 2:
        raise ValueError(
            f"context_length must be >= 2 (room for the start and end tokens), got {context_length}"
        )
    if isinstance(texts, str):
        texts = [texts]
    elif isinstance(texts, (bytes, bytearray)) or not isinstance(texts, Sequence | np.ndarray):
        raise TypeError(
            f"texts must be a str or a sequence of str, got {type(texts).__name__}; "
            "decode bytes to str first"
        )
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(
                f"texts[{i}] is {type(text).__name__}, not str; decode bytes / convert to str first"
            )

    # Caption templates repeat a lot; clean and encode each distinct caption once.
    unique = list(dict.fromkeys(texts))
    if not unique:
        return np.zeros((0, context_length), np.int32)
    index = {text: i for i, text in enumerate(unique)}
    backend_length = max(context_length, _BACKEND_MIN_CONTEXT)
    ids = _backend().tokenize_batch([clean_caption(t) for t in unique], backend_length)
    ids = np.asarray(ids, dtype=np.int32)
    if backend_length != context_length:
        # Same rule as the backend applies at >= 3: keep the first ids, end on EOT.
        ids = ids[:, :context_length].copy()
        ids[:, -1] = EOT_ID
    return ids[np.fromiter((index[t] for t in texts), np.intp, count=len(texts))]
