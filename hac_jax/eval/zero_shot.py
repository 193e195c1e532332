"""Zero-shot classification and image-text retrieval of a model.

* :func:`class_embeddings` pools prompt-ensemble text features into one embedding per class (the
  geometry's rule, :meth:`~hac_jax.geometry.Geometry.pool_prompts`), :func:`zero_shot_classifier`
  encodes the prompts of every class and pools them;
* :func:`zero_shot_logits` scores images against classes (``geometry.pairwise_sim``);
* :func:`zero_shot_classify` and :func:`retrieval_eval` run a model over data in fixed-size
  batches (:mod:`hac_jax.eval.encode`) and call the pure metrics (:mod:`hac_jax.eval.metrics`);
  :class:`ZeroShotEvaluator` / :class:`RetrievalEvaluator` wrap them big_vision-style
  (``run(params)`` yields ``(metric_name, value)``) and :func:`results_line` prints a copy-paste
  line as MERU's evaluators do.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hac_jax.eval import encode
from hac_jax.eval.metrics import classification_metrics, retrieval_recall
from hac_jax.geometry import Geometry
from hac_jax.models import scalars_at_use

__all__ = [
    "RetrievalEvaluator",
    "ZeroShotEvaluator",
    "ZeroShotResult",
    "class_embeddings",
    "results_line",
    "retrieval_eval",
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
    raw = encode.encode_texts(model, params, tokens, project=False, batch_size=batch_size)
    raw = raw.reshape(len(class_prompts), n_prompts, -1)
    scalars = scalars_at_use(params, model_cfg, fill=True)
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
    feats, extra = encode.encode_images(
        model, params, image_batches, project=True, batch_size=batch_size
    )
    curv = scalars_at_use(params, model_cfg, fill=True)["curv"]
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
    img, _ = encode.encode_images(
        model, params, image_batches, project=True, batch_size=batch_size, keys=()
    )
    txt = encode.encode_texts(model, params, captions_tokens, project=True)
    curv = scalars_at_use(params, model_cfg, fill=True)["curv"]
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
