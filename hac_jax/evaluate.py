"""Zero-shot classification and image-text retrieval.

The numerics are pure functions on embeddings, a :class:`~hac_jax.geometry.Geometry` and the
model's scalars, so they can be checked on hand-built cases and reused by the unlearning audits:

* :func:`class_embeddings` pools prompt-ensemble text features into one embedding per class;
* :func:`zero_shot_logits` scores images against classes (``geometry.pairwise_sim``);
* :func:`classification_metrics` gives macro (mean per-class), top-1 and per-class accuracies;
* :func:`retrieval_recall` gives R@k image->text and text->image from a similarity matrix
  (ground truth as caption->image pairs or, :func:`concept_relevance`, by concept).

:func:`zero_shot_classify` and :func:`retrieval_eval` run a model over data in fixed-size
batches and call the pure functions; :class:`ZeroShotEvaluator` / :class:`RetrievalEvaluator`
wrap them big_vision-style (``run(params)`` yields ``(metric_name, value)``) and
:func:`results_line` prints a copy-paste line as MERU's evaluators do.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hac_jax.geometry import Geometry

__all__ = [
    "RetrievalEvaluator",
    "ZeroShotEvaluator",
    "ZeroShotResult",
    "class_embeddings",
    "classification_metrics",
    "concept_relevance",
    "encode_images",
    "encode_texts",
    "model_scalars",
    "results_line",
    "retrieval_eval",
    "retrieval_recall",
    "zero_shot_classifier",
    "zero_shot_classify",
    "zero_shot_logits",
]

# ----------------------------------------------------------------------------------------------
# Pure functions
# ----------------------------------------------------------------------------------------------


def class_embeddings(
    prompt_features: jax.Array,
    geometry: Geometry,
    *,
    alpha: float | jax.Array = 1.0,
    curv: float | jax.Array = 1.0,
) -> jax.Array:
    """Pools raw prompt-ensemble text features into one embedding per class.

    Args:
      prompt_features: ``(C, P, E)`` raw text features (``encode_text(project=False)``) of ``P``
        prompts for each of ``C`` classes.
      geometry: where the embeddings live; it holds the pooling rule
        (:meth:`~hac_jax.geometry.Geometry.pool_prompts`).
      alpha: the textual feature scale (``exp`` of the clamped ``textual_alpha``; 1 for CLIP).
      curv: curvature ``c > 0`` (ignored on the sphere).

    Returns:
      ``(C, E)`` class embeddings, in the same space as ``encode_text(project=True)``.
    """
    return geometry.pool_prompts(prompt_features, alpha, curv)


def zero_shot_logits(
    image_embeddings: jax.Array,
    class_embs: jax.Array,
    geometry: Geometry,
    curv: float | jax.Array = 1.0,
) -> jax.Array:
    """Scores images against classes: ``(N, E), (C, E) -> (N, C)``, higher = more similar.

    On the sphere this is the dot product; on the hyperboloid it is ``-distance``, which ranks
    classes exactly as the Lorentzian inner product does (distance is a decreasing function of it).
    """
    return geometry.pairwise_sim(image_embeddings, class_embs, curv)


def classification_metrics(
    logits: np.ndarray | jax.Array,
    labels: np.ndarray | jax.Array,
    num_classes: int | None = None,
    *,
    topk: Sequence[int] = (1, 5),
) -> dict[str, Any]:
    """Accuracy of class scores against integer labels.

    Args:
      logits: ``(N, C)`` scores, higher = more likely.
      labels: ``(N,)`` integer class ids in ``[0, C)``.
      num_classes: ``C``; defaults to ``logits.shape[1]``.
      topk: the ``k`` of the reported top-k accuracies (those with ``1 < k < C``).

    Returns:
      ``{"macro_acc": mean of per-class top-1 accuracies over classes present in labels,
      "top1": micro top-1, "top{k}": ..., "per_class_acc": (C,) float64 (NaN where a class has no
      sample), "per_class_count": (C,) int64}``. Accuracies are fractions in ``[0, 1]``. Ties are
      broken towards the lower class index (``argmax``).
    """
    logits = np.asarray(logits)
    labels = np.asarray(labels).astype(np.int64)
    if logits.ndim != 2 or labels.ndim != 1 or logits.shape[0] != labels.shape[0]:
        raise ValueError(
            f"need logits (N, C) and labels (N,), got {logits.shape} and {labels.shape}"
        )
    num_classes = logits.shape[1] if num_classes is None else num_classes
    if logits.shape[1] != num_classes:
        raise ValueError(f"logits have {logits.shape[1]} classes, expected {num_classes}")
    if labels.size == 0:
        raise ValueError("no samples to evaluate")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(
            f"labels must lie in [0, {num_classes}), got [{labels.min()}, {labels.max()}]"
        )
    pred = logits.argmax(axis=1)
    correct = pred == labels
    counts = np.bincount(labels, minlength=num_classes)
    hits = np.bincount(labels, weights=correct, minlength=num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(counts > 0, hits / np.maximum(counts, 1), np.nan)
    out: dict[str, Any] = {
        "macro_acc": float(np.nanmean(per_class)),
        "top1": float(correct.mean()),
    }
    # top-k: the true class counts as found when fewer than k classes score strictly higher.
    true_score = np.take_along_axis(logits, labels[:, None], axis=1)
    rank = (logits > true_score).sum(axis=1)
    for k in topk:
        if 1 < k < num_classes:  # top-C is trivially 1
            out[f"top{k}"] = float((rank < k).mean())
    out["per_class_acc"] = per_class
    out["per_class_count"] = counts
    return out


def retrieval_recall(
    similarity: np.ndarray | jax.Array,
    text_to_image: np.ndarray | Sequence[int] | None,
    ks: Sequence[int] = (1, 5, 10),
    *,
    relevance: np.ndarray | None = None,
    chunk: int = 1024,
) -> dict[str, float]:
    """Recall@k for image->text and text->image retrieval.

    Args:
      similarity: ``(N_img, N_txt)`` scores, higher = more similar.
      text_to_image: ``(N_txt,)`` index of each caption's image (an image may have several);
        ignored when ``relevance`` is given.
      ks: the cut-offs.
      relevance: optional ``(N_img, N_txt)`` bool, which captions count as correct for which
        images (e.g. every caption naming the image's concept, when captions come from
        templates and many are identical); default: the pairs of ``text_to_image``.
      chunk: image rows processed at once (bounds memory for large sets).

    Returns:
      ``{"i2t_R@k": ..., "t2i_R@k": ...}`` as fractions. A query counts as retrieved at ``k``
      when any correct item ranks in its top ``k``; queries without a correct item are left
      out. Ties are counted *against* the query (a wrong item scoring equal to the best correct
      one ranks ahead of it), so a constant similarity matrix cannot score well.
    """
    sim = np.asarray(similarity, dtype=np.float64)
    if sim.ndim != 2 or sim.shape[1] == 0:
        raise ValueError(f"need a non-empty similarity matrix (N_img, N_txt), got {sim.shape}")
    n_img, n_txt = sim.shape
    if relevance is not None:
        relevance = np.asarray(relevance, dtype=bool)
        if relevance.shape != sim.shape:
            raise ValueError(f"relevance has shape {relevance.shape}, similarity {sim.shape}")

        def correct(start: int, stop: int) -> np.ndarray:
            return relevance[start:stop]

    else:
        t2i = np.asarray(text_to_image, dtype=np.int64)
        if t2i.shape != (n_txt,) or t2i.min() < 0 or t2i.max() >= n_img:
            raise ValueError(
                f"text_to_image must be ({n_txt},) indices of images in [0, {n_img}), got "
                f"shape {t2i.shape}"
            )

        def correct(start: int, stop: int) -> np.ndarray:
            return t2i[None, :] == np.arange(start, stop)[:, None]

    blocks = [(a, min(a + chunk, n_img)) for a in range(0, n_img, chunk)]
    # Pass 1: best correct score per image (row) and per caption (column).
    row_best = np.empty(n_img)
    col_best = np.full(n_txt, -np.inf)
    for a, b in blocks:
        scores = np.where(correct(a, b), sim[a:b], -np.inf)
        row_best[a:b] = scores.max(axis=1)
        col_best = np.maximum(col_best, scores.max(axis=0))
    # Pass 2: rank = wrong items scoring at least the best correct one.
    i2t_rank = np.empty(n_img, dtype=np.int64)
    t2i_rank = np.zeros(n_txt, dtype=np.int64)
    for a, b in blocks:
        wrong = ~correct(a, b)
        i2t_rank[a:b] = ((sim[a:b] >= row_best[a:b, None]) & wrong).sum(axis=1)
        t2i_rank += ((sim[a:b] >= col_best[None, :]) & wrong).sum(axis=0)
    i2t_rank = i2t_rank[np.isfinite(row_best)]
    t2i_rank = t2i_rank[np.isfinite(col_best)]
    if i2t_rank.size == 0 or t2i_rank.size == 0:
        raise ValueError("no image or no caption has a correct match")

    out = {}
    for k in ks:
        out[f"i2t_R@{k}"] = float((i2t_rank < k).mean())
    for k in ks:
        out[f"t2i_R@{k}"] = float((t2i_rank < k).mean())
    return out


def concept_relevance(
    image_labels: np.ndarray,
    caption_labels: np.ndarray,
    caption_depth: Sequence[str],
    class_to_group: np.ndarray,
) -> np.ndarray:
    """Which captions describe which images, by concept: ``(N,), (M,), (M,), (C,) -> (N, M)`` bool.

    A caption drawn for class ``caption_labels[j]`` at depth ``"class"`` is correct for the
    images of that class, at depth ``"group"`` for every image of the class's group, at
    ``"root"`` for every image (use with :func:`retrieval_recall`'s ``relevance``).
    """
    image_labels = np.asarray(image_labels, np.int64)
    caption_labels = np.asarray(caption_labels, np.int64)
    depth = np.asarray(caption_depth)
    groups = np.asarray(class_to_group, np.int64)
    unknown = set(depth.tolist()) - {"class", "group", "root"}
    if unknown or depth.shape != caption_labels.shape:
        raise ValueError(f"caption_depth must be class/group/root per caption, got {unknown}")
    same_class = image_labels[:, None] == caption_labels[None, :]
    same_group = groups[image_labels][:, None] == groups[caption_labels][None, :]
    return np.where(
        depth[None, :] == "class", same_class, np.where(depth[None, :] == "group", same_group, True)
    )


def results_line(metrics: Mapping[str, Any], *, percent: bool = True) -> str:
    """One copy-paste line ``"name1,name2,...: v1,v2,..."`` (scalars only; percent by default)."""
    names, values = [], []
    for name, value in metrics.items():
        if np.ndim(value) != 0:
            continue
        names.append(name)
        v = float(value) * (100.0 if percent else 1.0)
        values.append(f"{v:.2f}")
    return f"{','.join(names)}: {','.join(values)}"


# ----------------------------------------------------------------------------------------------
# Model wrappers
# ----------------------------------------------------------------------------------------------


def model_scalars(params: Mapping[str, Any], model_cfg: Any) -> dict[str, jax.Array]:
    """The model's scalars at use, 1.0 where it has none
    (:func:`hac_jax.models.scalars_at_use` with ``fill``)."""
    from hac_jax.models import scalars_at_use

    return scalars_at_use(params, model_cfg, fill=True)


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


def zero_shot_classifier(
    model: Any,
    params: Any,
    model_cfg: Any,
    class_prompts: Sequence[Sequence[str]],
    *,
    tokenize: Callable[..., np.ndarray] | None = None,
    batch_size: int = 256,
) -> jax.Array:
    """``C`` lists of ``P`` prompts -> ``(C, E)`` class embeddings (:func:`class_embeddings`).

    ``tokenize(texts, context_length=...)`` defaults to :func:`hac_jax.tokenizer.tokenize` with
    the model's context length.
    """
    if tokenize is None:
        from hac_jax.tokenizer import tokenize
    sizes = {len(p) for p in class_prompts}
    if not class_prompts or len(sizes) != 1 or 0 in sizes:
        raise ValueError(
            f"every class needs the same non-zero number of prompts, got sizes {sorted(sizes)}"
        )
    n_prompts = sizes.pop()
    texts = [t for prompts in class_prompts for t in prompts]
    tokens = tokenize(texts, context_length=model_cfg.text.context_length)
    raw = encode_texts(model, params, tokens, project=False, batch_size=batch_size)
    raw = raw.reshape(len(class_prompts), n_prompts, -1)
    scalars = model_scalars(params, model_cfg)
    geometry = model_cfg.geometry
    return class_embeddings(raw, geometry, alpha=scalars["textual_alpha"], curv=scalars["curv"])


@dataclasses.dataclass
class ZeroShotResult:
    """Zero-shot metrics (fractions) and per-class accuracies, aligned with ``class_names``."""

    metrics: dict[str, float]
    per_class_acc: np.ndarray
    per_class_count: np.ndarray
    class_names: list[str]
    logits: np.ndarray
    labels: np.ndarray

    def line(self, title: str = "zero-shot") -> str:
        """The copy-paste results line."""
        return f"{title} | {results_line(self.metrics)}"


def zero_shot_classify(
    model: Any,
    params: Any,
    model_cfg: Any,
    image_batches: Iterable[Mapping[str, Any]],
    class_prompts: Sequence[Sequence[str]],
    *,
    class_names: Sequence[str] | None = None,
    tokenize: Callable[..., np.ndarray] | None = None,
    batch_size: int | None = None,
) -> ZeroShotResult:
    """Zero-shot classification of the images in ``image_batches`` (batches with ``"image"`` and
    ``"label"``) among the classes described by ``class_prompts`` (``C`` lists of prompts)."""
    classifier = zero_shot_classifier(model, params, model_cfg, class_prompts, tokenize=tokenize)
    feats, extra = encode_images(model, params, image_batches, project=True, batch_size=batch_size)
    curv = model_scalars(params, model_cfg)["curv"]
    logits = np.asarray(zero_shot_logits(jnp.asarray(feats), classifier, model_cfg.geometry, curv))
    m = classification_metrics(logits, extra["label"], num_classes=len(class_prompts))
    names = (
        list(class_names) if class_names is not None else [str(i) for i in range(len(logits[0]))]
    )
    return ZeroShotResult(
        metrics={k: v for k, v in m.items() if not k.startswith("per_class")},
        per_class_acc=m["per_class_acc"],
        per_class_count=m["per_class_count"],
        class_names=names,
        logits=logits,
        labels=extra["label"],
    )


def retrieval_eval(
    model: Any,
    params: Any,
    model_cfg: Any,
    image_batches: Iterable[Mapping[str, Any]],
    captions_tokens: np.ndarray,
    text_to_image: np.ndarray,
    *,
    ks: Sequence[int] = (1, 5, 10),
    batch_size: int | None = None,
) -> dict[str, float]:
    """R@k of a model: images from ``image_batches`` (in order), captions as ``(N_txt, L)`` tokens
    with ``text_to_image`` the index of each caption's image."""
    img, _ = encode_images(
        model, params, image_batches, project=True, batch_size=batch_size, keys=()
    )
    txt = encode_texts(model, params, captions_tokens, project=True)
    curv = model_scalars(params, model_cfg)["curv"]
    sim = model_cfg.geometry.pairwise_sim(jnp.asarray(img), jnp.asarray(txt), curv)
    return retrieval_recall(np.asarray(sim), text_to_image, ks)


# ----------------------------------------------------------------------------------------------
# Evaluators (big_vision style: run(params) yields (metric_name, value))
# ----------------------------------------------------------------------------------------------


class ZeroShotEvaluator:
    """Zero-shot classification on a data set (``batches_fn()`` gives fresh batch iterables)."""

    def __init__(
        self,
        model: Any,
        model_cfg: Any,
        batches_fn: Callable[[], Iterable[Mapping[str, Any]]],
        class_prompts: Sequence[Sequence[str]],
        class_names: Sequence[str] | None = None,
        prefix: str = "zeroshot/",
        tokenize: Callable[..., np.ndarray] | None = None,
    ):
        self.model, self.model_cfg = model, model_cfg
        self.batches_fn, self.class_prompts = batches_fn, class_prompts
        self.class_names, self.prefix, self.tokenize = class_names, prefix, tokenize
        self.last_result: ZeroShotResult | None = None

    def run(self, params: Any) -> Iterator[tuple[str, float]]:
        result = zero_shot_classify(
            self.model,
            params,
            self.model_cfg,
            self.batches_fn(),
            self.class_prompts,
            class_names=self.class_names,
            tokenize=self.tokenize,
        )
        self.last_result = result
        for name, value in result.metrics.items():
            yield self.prefix + name, value
        for name, acc in zip(result.class_names, result.per_class_acc, strict=True):
            if not math.isnan(acc):
                yield f"{self.prefix}class/{name}", float(acc)


class RetrievalEvaluator:
    """Image<->text R@k on a fixed set of images (``batches_fn()``, in order) and captions."""

    def __init__(
        self,
        model: Any,
        model_cfg: Any,
        batches_fn: Callable[[], Iterable[Mapping[str, Any]]],
        captions_tokens: np.ndarray,
        text_to_image: np.ndarray,
        ks: Sequence[int] = (1, 5, 10),
        prefix: str = "retrieval/",
    ):
        self.model, self.model_cfg, self.batches_fn = model, model_cfg, batches_fn
        self.captions_tokens, self.text_to_image = captions_tokens, text_to_image
        self.ks, self.prefix = ks, prefix

    def run(self, params: Any) -> Iterator[tuple[str, float]]:
        metrics = retrieval_eval(
            self.model,
            params,
            self.model_cfg,
            self.batches_fn(),
            self.captions_tokens,
            self.text_to_image,
            ks=self.ks,
        )
        for name, value in metrics.items():
            yield self.prefix + name, value


EVALUATORS: dict[str, type] = {"zero_shot": ZeroShotEvaluator, "retrieval": RetrievalEvaluator}
