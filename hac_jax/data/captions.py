"""Captions from templates at several levels of a concept hierarchy, and zero-shot prompt sets.

Caption levels (:data:`CAPTION_LEVELS`, the ``caption_level`` ids in batches):

====  ==================  ============================================  =============
id    level               example                                       concept depth
====  ==================  ============================================  =============
0     ``class``           "a photo of a sneaker"                        class
1     ``class_in_group``  "a sneaker, a kind of footwear"               class
2     ``group``           "a photo of footwear"                         group
3     ``root``            "a photo of clothing"                         root
====  ==================  ============================================  =============

For a flat hierarchy (no real groups) levels 1 and 2 are not drawn.

:class:`CaptionBank` tokenizes every (class, level, template) caption once and samples one per
example from a counter-based hash of ``(seed, epoch, record index)``: the caption of a record in an
epoch does not depend on batch size, shuffling or the number of hosts, and sampling costs a few
array operations per batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from hac_jax.data.hierarchy import Hierarchy

__all__ = [
    "CAPTION_LEVELS",
    "CAPTION_LEVEL_DEPTH",
    "DEFAULT_LEVEL_WEIGHTS",
    "TEMPLATES",
    "CaptionBank",
    "caption_texts",
    "class_prompts",
    "group_prompts",
    "hash_uniform",
    "parent_prompts",
    "sample_caption",
]

CAPTION_LEVELS: tuple[str, ...] = ("class", "class_in_group", "group", "root")
CAPTION_LEVEL_DEPTH: dict[str, str] = {
    "class": "class",
    "class_in_group": "class",
    "group": "group",
    "root": "root",
}

# {c}: the class phrase with its article; {g}: group phrase; {r}: root phrase.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "class": (
        "a photo of {c}",
        "a picture of {c}",
        "an image of {c}",
        "a low resolution photo of {c}",
        "{c}",
    ),
    "class_in_group": (
        "{c}, a kind of {g}",
        "a photo of {c}, a kind of {g}",
        "{c}, a type of {g}",
    ),
    "group": ("a photo of {g}", "a picture of {g}", "an image of {g}", "{g}"),
    "root": ("a photo of {r}", "an image of {r}", "{r}"),
}

DEFAULT_LEVEL_WEIGHTS: dict[str, float] = {
    "class": 0.6,
    "class_in_group": 0.2,
    "group": 0.2,
    "root": 0.0,
}
"""Default share of training captions per level (root captions are the same for every image,
so they carry no contrastive signal and are off by default)."""


def _check_level(level: str) -> None:
    if level not in TEMPLATES:
        raise ValueError(f"unknown caption level {level!r}; levels: {list(CAPTION_LEVELS)}")


def caption_texts(
    hierarchy: Hierarchy,
    class_id: int,
    level: str,
    templates: Mapping[str, Sequence[str]] | None = None,
) -> list[str]:
    """Every caption of ``level`` for an image of class ``class_id`` (one per template)."""
    _check_level(level)
    templates = TEMPLATES if templates is None else templates
    return _fill(hierarchy, class_id, templates.get(level, ()))


def _fill(hierarchy: Hierarchy, class_id: int, templates: Sequence[str]) -> list[str]:
    if not 0 <= class_id < hierarchy.num_classes:
        raise ValueError(f"class id {class_id} outside [0, {hierarchy.num_classes})")
    fill = {
        "c": hierarchy.class_phrases[class_id],
        "g": hierarchy.group_phrases[hierarchy.class_group[class_id]],
        "r": hierarchy.root_phrase,
    }
    return [t.format(**fill) for t in templates]


def class_prompts(hierarchy: Hierarchy, templates: Sequence[str] | None = None) -> list[list[str]]:
    """Zero-shot prompt ensemble for the classes: ``num_classes`` lists of ``P`` prompts (the
    ``class`` templates by default; placeholders ``{c}``, ``{g}``, ``{r}`` as in ``TEMPLATES``)."""
    templates = tuple(templates or TEMPLATES["class"])
    return [_fill(hierarchy, i, templates) for i in range(hierarchy.num_classes)]


def group_prompts(hierarchy: Hierarchy, templates: Sequence[str] | None = None) -> list[list[str]]:
    """Zero-shot prompt ensemble for the groups: ``num_groups`` lists of ``P`` prompts."""
    templates = tuple(templates or TEMPLATES["group"])
    bad = [t for t in templates if "{c}" in t]
    if bad:
        raise ValueError(f"group prompts cannot name a class: {bad}")
    return [
        [t.format(g=hierarchy.group_phrases[g], r=hierarchy.root_phrase) for t in templates]
        for g in range(hierarchy.num_groups)
    ]


def parent_prompts(hierarchy: Hierarchy) -> tuple[list[list[str]], np.ndarray]:
    """The parent concepts' prompt ensembles and each class's row in them: the group prompts
    (:func:`group_prompts`) or, for a flat hierarchy whose groups repeat the classes, the root's
    (``TEMPLATES["root"]``). Returns ``(prompts: R lists of P prompts, rows: (num_classes,)
    int64)``. The parent cone of a class is that of its row's pooled ensemble, in unlearning
    (HAC's parent-cone term) and in the audits alike."""
    if hierarchy.is_flat:
        root = [t.format(r=hierarchy.root_phrase) for t in TEMPLATES["root"]]
        return [root], np.zeros(hierarchy.num_classes, np.int64)
    return group_prompts(hierarchy), np.asarray(hierarchy.class_group, np.int64)


# Counter-based hashing (splitmix64 finaliser, Steele et al., OOPSLA 2014): a well-mixed 64-bit
# value from (seed, epoch, index, stream) with no generator state, vectorised over indices.
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


def hash_uniform(
    seed: int, epoch: np.ndarray | int, index: np.ndarray | int, stream: int
) -> np.ndarray:
    """Deterministic uniforms in [0, 1), one per element of the broadcast of ``epoch`` and
    ``index``; ``stream`` separates independent draws for the same example."""
    with np.errstate(over="ignore"):
        e = np.asarray(epoch, dtype=np.int64).astype(np.uint64)
        i = np.asarray(index, dtype=np.int64).astype(np.uint64)
        h = _mix(np.uint64(seed & 0xFFFFFFFFFFFFFFFF) * _GOLDEN + np.uint64(stream))
        h = _mix(h ^ (e * _GOLDEN))
        h = _mix(h ^ (i * _GOLDEN + np.uint64(1)))
    return (h >> np.uint64(11)).astype(np.float64) * 2.0**-53


class CaptionBank:
    """All template captions of a hierarchy, tokenized once, and a deterministic sampler.

    Args:
      hierarchy: the concepts.
      level_weights: share of each level among sampled captions (normalised; levels missing or
        0 are never drawn). Default :data:`DEFAULT_LEVEL_WEIGHTS`.
      templates: ``{level: templates}`` overriding :data:`TEMPLATES`.
      context_length: token sequence length ``L``.
    """

    def __init__(
        self,
        hierarchy: Hierarchy,
        level_weights: Mapping[str, float] | None = None,
        templates: Mapping[str, Sequence[str]] | None = None,
        context_length: int = 77,
    ):
        self.hierarchy = hierarchy
        self.templates = {k: tuple(v) for k, v in (templates or TEMPLATES).items()}
        for level in self.templates:
            _check_level(level)
        weights = dict(DEFAULT_LEVEL_WEIGHTS if level_weights is None else level_weights)
        for level, w in weights.items():
            _check_level(level)
            if not np.isfinite(w) or w < 0:
                raise ValueError(f"caption level weight for {level!r} must be >= 0, got {w}")
        if hierarchy.is_flat:
            # Group captions would just repeat the class without its article.
            weights = {k: v for k, v in weights.items() if CAPTION_LEVEL_DEPTH[k] != "group"}
            weights.pop("class_in_group", None)
        w = np.array([weights.get(level, 0.0) for level in CAPTION_LEVELS], dtype=np.float64)
        for level, wi in zip(CAPTION_LEVELS, w, strict=True):
            if wi > 0 and not self.templates.get(level):
                raise ValueError(f"caption level {level!r} has weight {wi} but no templates")
        if w.sum() <= 0:
            raise ValueError(f"no caption level has a positive weight: {dict(weights)}")
        self.level_probs = w / w.sum()
        self._level_cdf = np.cumsum(self.level_probs)
        self._level_cdf[-1] = 1.0
        self.context_length = int(context_length)
        self.num_templates = np.array(
            [len(self.templates.get(level, ())) for level in CAPTION_LEVELS], dtype=np.int64
        )
        self._tokens: np.ndarray | None = None

    def texts(self, class_id: int, level: str) -> list[str]:
        """The captions of ``level`` for class ``class_id``."""
        return caption_texts(self.hierarchy, class_id, level, self.templates)

    @property
    def tokens(self) -> np.ndarray:
        """``(C, n_levels, T_max, L)`` int32 token ids of every caption (zero where a level has
        fewer templates), computed on first use."""
        if self._tokens is None:
            from hac_jax.tokenizer import tokenize  # imported on use: the data layer stays light

            c, t_max = self.hierarchy.num_classes, int(self.num_templates.max())
            out = np.zeros((c, len(CAPTION_LEVELS), t_max, self.context_length), dtype=np.int32)
            for li, level in enumerate(CAPTION_LEVELS):
                if not self.num_templates[li]:
                    continue
                texts = [t for k in range(c) for t in self.texts(k, level)]
                ids = np.asarray(tokenize(texts, context_length=self.context_length))
                out[:, li, : self.num_templates[li]] = ids.reshape(c, -1, self.context_length)
            self._tokens = out
        return self._tokens

    def choose(
        self, labels: np.ndarray, index: np.ndarray, *, seed: int, epoch: np.ndarray | int
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(B,)`` labels and record indices -> ``(B,)`` level ids and ``(B,)`` template ids."""
        labels = np.asarray(labels)
        u_level = hash_uniform(seed, epoch, index, stream=1)
        u_template = hash_uniform(seed, epoch, index, stream=2)
        level = np.searchsorted(self._level_cdf, u_level, side="right").astype(np.int32)
        level = np.minimum(level, len(CAPTION_LEVELS) - 1)
        template = np.floor(u_template * self.num_templates[level]).astype(np.int32)
        return np.broadcast_to(level, labels.shape), np.broadcast_to(template, labels.shape)

    def sample(
        self, labels: np.ndarray, index: np.ndarray, *, seed: int, epoch: np.ndarray | int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Token ids of one caption per example: ``(B,)``, ``(B,)`` -> ``(B, L)`` int32 tokens and
        ``(B,)`` int32 caption levels (ids into :data:`CAPTION_LEVELS`)."""
        labels = np.asarray(labels, dtype=np.int64)
        level, template = self.choose(labels, index, seed=seed, epoch=epoch)
        return self.tokens[labels, level, template], level

    def sample_texts(
        self, labels: np.ndarray, index: np.ndarray, *, seed: int, epoch: np.ndarray | int
    ) -> list[str]:
        """The caption strings :meth:`sample` would tokenize."""
        labels = np.asarray(labels, dtype=np.int64)
        level, template = self.choose(labels, index, seed=seed, epoch=epoch)
        return [
            self.texts(int(c), CAPTION_LEVELS[lv])[t]
            for c, lv, t in zip(labels, level, template, strict=True)
        ]


def sample_caption(
    hierarchy: Hierarchy,
    class_id: int,
    *,
    seed: int,
    epoch: int,
    index: int,
    level_weights: Mapping[str, float] | None = None,
) -> tuple[str, str]:
    """One caption text and its level for record ``index`` of class ``class_id`` (the same draw
    as :class:`CaptionBank` makes)."""
    bank = CaptionBank(hierarchy, level_weights)
    level, _ = bank.choose(np.array([class_id]), np.array([index]), seed=seed, epoch=epoch)
    text = bank.sample_texts(np.array([class_id]), np.array([index]), seed=seed, epoch=epoch)[0]
    return text, CAPTION_LEVELS[int(level[0])]
