"""The unlearning audit of one model: runs it over the data once and feeds the pure metrics of
:mod:`hac_jax.eval.metrics`.

:func:`audit_model` is the per-model audit of docs/METHOD.md "Metrics". It works in two stages:

Every image's caption in the audit names its class (class-level captions only,
:data:`hac_jax.data.forget.NAMING_CAPTION_WEIGHTS`): the matched pairs of the MIA, the alignment
gaps, the text distances and retrieval never mix in the group captions that retained siblings
share (docs/METHOD.md).

1. :func:`embed_for_audit` runs the model once over what the audit needs and returns an
   :class:`AuditEmbeddings` (projected embeddings of the test pairs, the forget-train pairs, a
   seeded subset of the retain-train pairs, and the prompt-ensemble embeddings of the concepts);
2. :func:`audit_embeddings` turns those embeddings into a :class:`ModelAudit` with the pure
   functions of :mod:`hac_jax.eval.metrics` (no model involved, so hand-built embeddings test it).

Metric names (:data:`METRIC_KEYS`, every one present on both geometries; fractions in [0, 1]):

* ``FA, UA, RA, TA``: zero-shot accuracies (:func:`hac_jax.eval.metrics.forgetting_accuracies`).
* ``ret_{i2t,t2i}_R@{1,5}``: retrieval on the retain-concept test pairs with concept relevance
  (:func:`retain_retrieval`).
* ``mia_forget_nonmember, mia_fit_balanced_acc``: EMIA-style membership audit
  (:func:`hac_jax.eval.metrics.mia_audit`).
* ``align_{matched,mismatched,gap}_{forget,retain}``: :func:`cross_alignment_gaps` (computed
  from the concept x concept alignment matrix, :func:`hac_jax.eval.metrics.alignment_matrix`).
* ``dist_origin_{image,text}_{forget,retain}``: mean distance to the origin
  (:func:`hac_jax.eval.metrics.distance_to_origin_audit`); MERU only, NaN for CLIP (on the
  sphere every embedding has norm 1, so the number says nothing).
* ``cone_{own,parent}_{forget,retain}``: share of test images inside the entailment cone of their
  class / parent concept (:func:`hac_jax.eval.metrics.cone_membership`); MERU only, NaN for CLIP.
* ``dest_{own_class,sibling,parent,root,other}``: where the forget test images go among every
  concept of the hierarchy (:func:`hac_jax.eval.metrics.forgotten_destinations`).

Arrays (:data:`ARRAY_KEYS`, the npz keys of docs/DESIGN.md "Unlearning results"):
``alignment_matrix`` ``(C, C)``, ``is_forget`` / ``labels`` ``(N,)`` of the test images,
``forget_train_score`` ``(N_f,)`` sim of each forget-train image with its class caption (the
scores the MIA judges and :func:`hac_jax.eval.metrics.ks_distance` compares with Retrain's),
``forget_train_rank`` ``(N_f,)`` the rank of its own class among all classes for the zero-shot
classifier (1 = top; a forget score on the same scale for every model),
``dest_top1_count`` and ``concept_names`` ``(K,)`` and, MERU only, ``dist_origin_image`` /
``dist_origin_text`` ``(N,)``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import grain
import jax
import jax.numpy as jnp
import numpy as np

from hac_jax.data.captions import parent_prompts
from hac_jax.data.forget import NAMING_CAPTION_WEIGHTS
from hac_jax.eval import encode
from hac_jax.eval import metrics as pure  # the metrics as pure functions
from hac_jax.eval.names import (
    ARRAY_KEYS,
    DESTINATIONS,
    HIERARCHY_METRICS,
    MERU_ARRAY_KEYS,
    METRIC_KEYS,
    RETRIEVAL_KS,
)
from hac_jax.eval.zero_shot import zero_shot_classifier
from hac_jax.geometry import Geometry
from hac_jax.models import scalars_at_use

__all__ = [
    "ARRAY_KEYS",
    "METRIC_KEYS",
    "MERU_ARRAY_KEYS",
    "AuditEmbeddings",
    "ModelAudit",
    "audit_embeddings",
    "audit_model",
    "concept_prompts",
    "cross_alignment_gaps",
    "embed_for_audit",
    "embed_split",
    "retain_retrieval",
]

# Prompts are encoded in batches of this size, so the class, concept and parent prompt sets
# (of different sizes) share one compiled text encoder.
_PROMPT_BATCH = 8


@dataclasses.dataclass
class ModelAudit:
    """The audit of one model.

    Attributes:
      metrics: flat ``{name: float}`` with exactly the keys of :data:`METRIC_KEYS` (NaN where a
        metric is undefined: the MERU-only ones on CLIP, a part without images).
      arrays: the per-sample and per-concept arrays for plots (:data:`ARRAY_KEYS`, plus
        :data:`MERU_ARRAY_KEYS` on the hyperboloid).
    """

    metrics: dict[str, float]
    arrays: dict[str, np.ndarray]


@dataclasses.dataclass
class AuditEmbeddings:
    """What the audit needs from a model: projected embeddings (``E`` = embedding dim).

    Attributes:
      test_images, test_texts: ``(N, E)`` every test image and its one caption.
      test_labels: ``(N,)`` class ids.
      test_caption_levels: ``(N,)`` caption level ids (``hac_jax.data.CAPTION_LEVELS``).
      forget_train_images, forget_train_texts, forget_train_labels: the forget-train pairs.
      member_images, member_texts: ``(M, E)`` a seeded subset of retain-train pairs (MIA members).
      class_embs: ``(C, E)`` the zero-shot classifier (class prompt ensembles).
      parent_embs: ``(C, E)`` the prompt-ensemble embedding of each class's parent concept (its
        group; the root in a flat hierarchy), or ``None`` where it is not needed (CLIP).
      concept_embs: ``(K, E)`` every concept of :func:`hac_jax.eval.metrics.concept_table`, in its
        order (:func:`concept_prompts`).
    """

    test_images: np.ndarray
    test_texts: np.ndarray
    test_labels: np.ndarray
    test_caption_levels: np.ndarray
    forget_train_images: np.ndarray
    forget_train_texts: np.ndarray
    forget_train_labels: np.ndarray
    member_images: np.ndarray
    member_texts: np.ndarray
    class_embs: np.ndarray
    parent_embs: np.ndarray | None
    concept_embs: np.ndarray


# ----------------------------------------------------------------------------------------------
# Embedding
# ----------------------------------------------------------------------------------------------


def _embed_batches(
    model: Any, params: Any, batches: Iterable[Mapping[str, Any]], batch_size: int
) -> dict[str, np.ndarray]:
    images, extras = encode.encode_images(
        model,
        params,
        batches,
        project=True,
        batch_size=batch_size,
        keys=("label", "tokens", "caption_level"),
    )
    return {
        "images": images,
        "texts": encode.encode_unique_texts(model, params, extras["tokens"], batch_size),
        "labels": extras["label"].astype(np.int64),
        "levels": extras["caption_level"].astype(np.int64),
    }


def _loader(
    data: Any,
    split: str,
    model_cfg: Any,
    batch_size: int,
    *,
    classes: Sequence[int] | None = None,
    shuffle: bool = False,
    seed: int = 0,
) -> Any:
    from hac_jax import data as hdata

    # An audit reads the whole split in the process that runs it, whatever the process count.
    return hdata.make_loader(
        data,
        split,
        shard_options=grain.sharding.NoSharding(),
        batch_size=batch_size,
        seed=seed,
        shuffle=shuffle,
        num_epochs=1,
        drop_remainder=False,
        classes=None if classes is None else list(classes),
        caption_levels=NAMING_CAPTION_WEIGHTS,
        context_length=model_cfg.text.context_length,
        image_size=model_cfg.vision.image_size,
    )


def embed_split(
    model: Any,
    params: Any,
    model_cfg: Any,
    data: Any,
    split: str,
    *,
    batch_size: int,
    classes: Sequence[int] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every image of ``split`` (optionally only ``classes``) with one caption each, in record
    order -> ``(image_emb (N, E), caption_emb (N, E), labels (N,))`` projected embeddings.

    The caption of record ``i`` is the loader's draw for ``(seed 0, epoch 0, i)`` among the
    class-level captions.
    """
    out = _embed_batches(
        model, params, _loader(data, split, model_cfg, batch_size, classes=classes), batch_size
    )
    return out["images"], out["texts"], out["labels"]


def concept_prompts(hierarchy: Any) -> list[list[str]]:
    """Prompt ensembles of every concept of :func:`hac_jax.eval.metrics.concept_table`, in its
    order.

    Every concept gets the class templates (``hac_jax.data.TEMPLATES["class"]``) filled with its
    phrase ("a photo of a sneaker", "a photo of footwear", "a photo of clothing"): the same
    ensemble at every level, so scores of concepts of different levels differ by the phrase
    only. The class rows are exactly :func:`hac_jax.data.class_prompts`.
    """
    from hac_jax.data import TEMPLATES, class_prompts

    table = pure.concept_table(hierarchy)
    n_cls = hierarchy.num_classes
    extra = [
        [t.format(c=p, g=p, r=hierarchy.root_phrase) for t in TEMPLATES["class"]]
        for p in table["phrases"][n_cls:]
    ]
    return class_prompts(hierarchy) + extra


def _check_request(
    data: Any,
    forget_ids: Sequence[int],
    splits: Sequence[str],
    batch_size: int,
    mia_members: int,
) -> list[int]:
    num_classes = data.hierarchy.num_classes
    ids = sorted({int(c) for c in forget_ids})
    if not ids:
        raise ValueError("forget_ids is empty: name at least one forgotten class id")
    if ids[0] < 0 or ids[-1] >= num_classes:
        raise ValueError(f"forget_ids must be class ids in [0, {num_classes}), got {ids}")
    if len(ids) == num_classes:
        raise ValueError("forget_ids cover every class: nothing is retained to audit against")
    for split in splits:
        data.source(split)  # a clear error naming the splits
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if mia_members <= 0:
        raise ValueError(f"mia_members must be positive, got {mia_members}")
    return ids


def embed_for_audit(
    model: Any,
    params: Any,
    model_cfg: Any,
    data: Any,
    forget_ids: Sequence[int],
    *,
    batch_size: int = 256,
    train_split: str = "train",
    test_split: str = "test",
    mia_members: int = 2000,
    seed: int = 0,
) -> AuditEmbeddings:
    """Runs the model over everything :func:`audit_embeddings` needs.

    Test and forget-train pairs are every record of the split (forget classes only for the
    latter), in record order. The MIA members are the first ``min(mia_members, #retain-train)``
    records of the loader's ``seed``-shuffled retain-train records, with the captions the loader
    draws for them. Concept embeddings are prompt ensembles pooled as zero-shot does
    (:func:`hac_jax.eval.zero_shot.zero_shot_classifier`: on the hyperboloid the raw features are
    averaged in the tangent space and lifted with ``exp_map0``).
    """
    forget_ids = _check_request(
        data, forget_ids, (train_split, test_split), batch_size, mia_members
    )
    h = data.hierarchy
    retain_ids = [c for c in range(h.num_classes) if c not in forget_ids]

    def classifier(prompts: list[list[str]]) -> np.ndarray:
        return np.asarray(
            zero_shot_classifier(model, params, model_cfg, prompts, batch_size=_PROMPT_BATCH)
        )

    # One ensemble call for every concept; its class rows are the zero-shot classifier.
    concept_embs = classifier(concept_prompts(h))
    parent_embs = None
    if model_cfg.geometry.has_cones:
        prompts, rows = parent_prompts(h)
        parent_embs = classifier(prompts)[rows]

    test = _embed_batches(
        model, params, _loader(data, test_split, model_cfg, batch_size), batch_size
    )
    forget = _embed_batches(
        model,
        params,
        _loader(data, train_split, model_cfg, batch_size, classes=forget_ids),
        batch_size,
    )
    members_loader = _loader(
        data, train_split, model_cfg, batch_size, classes=retain_ids, shuffle=True, seed=seed
    )
    n_members = min(int(mia_members), int(np.isin(data.labels(train_split), retain_ids).sum()))
    n_batches = -(-n_members // members_loader.batch_size)
    members = _embed_batches(
        model, params, (members_loader[i] for i in range(n_batches)), batch_size
    )
    return AuditEmbeddings(
        test_images=test["images"],
        test_texts=test["texts"],
        test_labels=test["labels"],
        test_caption_levels=test["levels"],
        forget_train_images=forget["images"],
        forget_train_texts=forget["texts"],
        forget_train_labels=forget["labels"],
        member_images=members["images"][:n_members],
        member_texts=members["texts"][:n_members],
        class_embs=concept_embs[: h.num_classes],
        parent_embs=parent_embs,
        concept_embs=concept_embs,
    )


# ----------------------------------------------------------------------------------------------
# Audits on embeddings
# ----------------------------------------------------------------------------------------------


_BLOCK = 1024  # rows per compiled call of the jitted geometry ops (the audits' chunk size)


def _bucket(n: int) -> int:
    """Column count a pairwise call is padded to: a power of two up to ``_BLOCK``, then a
    multiple of it, so that a handful of shapes is ever compiled."""
    return 1 << max(n - 1, 0).bit_length() if n <= _BLOCK else -(-n // _BLOCK) * _BLOCK


def _pad_rows(x: np.ndarray, rows: int) -> np.ndarray:
    return np.pad(x, [(0, rows - x.shape[0])] + [(0, 0)] * (x.ndim - 1))


@functools.partial(jax.jit, static_argnums=(0, 1))
def _geometry_op(geometry: Geometry, method: str, curv: jax.Array, *args: jax.Array) -> jax.Array:
    return getattr(geometry, method)(*args, curv)


@dataclasses.dataclass(frozen=True)
class _JittedGeometry:
    """A geometry whose ops run as one compiled function on blocks of zero-padded rows.

    Called eagerly, every primitive of e.g. a Lorentz distance compiles once per input shape; the
    audits feed many shapes (chunks, parts, concept sets), which made compiling cost more than
    computing. Inputs are cut into blocks of ``_BLOCK`` rows (the last one zero-padded: the
    origin / the zero vector, finite everywhere) and padding is cut off the result, so each op
    compiles for one row count. Same values as the wrapped geometry.
    """

    base: Geometry

    @property
    def name(self) -> str:
        return self.base.name

    def project(self, v: Any, curv: Any) -> jax.Array:
        return self.base.project(v, curv)

    def _blocks(self, method: str, curv: Any, rows: Sequence[Any], fixed: Sequence[Any] = ()):
        """``method(*row_blocks, *fixed, curv)`` over blocks of the ``rows`` arrays (which share
        their row count), concatenated along rows."""
        rows = [np.asarray(r) for r in rows]
        n = rows[0].shape[0]
        out = []
        for s in range(0, n, _BLOCK):
            blocks = [_pad_rows(r[s : s + _BLOCK], _BLOCK) for r in rows]
            res = _geometry_op(self.base, method, curv, *blocks, *fixed)
            out.append(np.asarray(res)[: min(_BLOCK, n - s)])
        if not out:
            return np.asarray(_geometry_op(self.base, method, curv, *rows, *fixed))
        return np.concatenate(out)

    def pairwise_sim(self, x: Any, y: Any, curv: Any) -> np.ndarray:
        y = np.asarray(y)
        y_pad = _pad_rows(y, _bucket(y.shape[0]))
        return self._blocks("pairwise_sim", curv, [x], [y_pad])[:, : y.shape[0]]

    def sim(self, x: Any, y: Any, curv: Any) -> np.ndarray:
        return self._blocks("sim", curv, [x, y])

    def dist_to_origin(self, x: Any, curv: Any) -> np.ndarray:
        return self._blocks("dist_to_origin", curv, [x])


def cross_alignment_gaps(
    images: Any,
    texts: Any,
    labels: Any,
    is_forget: Any,
    geometry: Any,
    curv: Any,
    *,
    chunk: int = 1024,
) -> dict[str, float]:
    """Alignment gap of the forget and the retain pairs against captions of *every* other concept.

    ``(N, E), (N, E), (N,), (N,) -> {"align_{matched,mismatched,gap}_{forget,retain}"}``: matched
    = mean sim(image_i, caption_i); mismatched = mean sim(image_i, caption_j) over all ``j`` of a
    different concept, averaged over the rows of the part. Unlike
    :func:`hac_jax.eval.metrics.alignment_gaps` the mismatches are not confined to the part, so a
    forget set of a single class still has them. NaN for a part without rows.
    """
    images, texts = np.asarray(images), np.asarray(texts)
    labels = np.asarray(labels).astype(np.int64)
    mask = np.asarray(is_forget, dtype=bool)
    matched = np.asarray(pure.pair_similarity(images, texts, geometry, curv), np.float64)
    mism_sum = np.zeros(images.shape[0], np.float64)
    mism_cnt = np.zeros(images.shape[0], np.float64)
    t_all = jnp.asarray(texts)
    for s in range(0, images.shape[0], chunk):
        sim = np.asarray(geometry.pairwise_sim(jnp.asarray(images[s : s + chunk]), t_all, curv))
        keep = labels[s : s + sim.shape[0], None] != labels[None, :]
        mism_sum[s : s + sim.shape[0]] = np.where(keep, sim, 0.0).sum(axis=1, dtype=np.float64)
        mism_cnt[s : s + sim.shape[0]] = keep.sum(axis=1)
    out = {}
    for part, sel in (("forget", mask), ("retain", ~mask)):
        m = float(matched[sel].mean()) if sel.any() else math.nan
        cnt = mism_cnt[sel].sum()
        mm = float(mism_sum[sel].sum() / cnt) if cnt else math.nan
        out.update(
            {
                f"align_matched_{part}": m,
                f"align_mismatched_{part}": mm,
                f"align_gap_{part}": m - mm,
            }
        )
    return out


def _gaps_from_matrix(
    matrix: np.ndarray, labels: np.ndarray, matched: np.ndarray, forget_classes: np.ndarray
) -> dict[str, float]:
    """:func:`cross_alignment_gaps` of pairs whose images and captions share the labels, when the
    forget part is a set of classes: every mismatched sum is a sum of concept-pair blocks,
    ``alignment_matrix[a, b] * n_a * n_b`` (saves a second pass over all image-caption pairs).

    ``(C, C), (N,), (N,) sim of each pair, (C,) bool -> {"align_*_{forget,retain}"}``."""
    counts = np.bincount(labels, minlength=matrix.shape[0]).astype(np.float64)
    pair_counts = counts[:, None] * counts[None, :]
    sums = np.where(pair_counts > 0, matrix, 0.0) * pair_counts
    off_diagonal = ~np.eye(matrix.shape[0], dtype=bool)
    out = {}
    for part, classes in (("forget", forget_classes), ("retain", ~forget_classes)):
        blocks = classes[:, None] & off_diagonal
        rows = classes[labels]
        m = float(np.mean(matched[rows], dtype=np.float64)) if rows.any() else math.nan
        cnt = pair_counts[blocks].sum()
        mm = float(sums[blocks].sum() / cnt) if cnt else math.nan
        out.update(
            {
                f"align_matched_{part}": m,
                f"align_mismatched_{part}": mm,
                f"align_gap_{part}": m - mm,
            }
        )
    return out


def retain_retrieval(
    images: Any,
    image_labels: Any,
    texts: Any,
    caption_labels: Any,
    caption_levels: Any,
    class_to_group: Any,
    geometry: Geometry,
    curv: Any = 1.0,
    *,
    ks: Sequence[int] = RETRIEVAL_KS,
) -> dict[str, float]:
    """R@k image->text and text->image with concept relevance over distinct captions.

    Args:
      images: ``(N, E)`` image embeddings (the retain-concept test images).
      image_labels: ``(N,)`` their class ids.
      texts: ``(M, E)`` caption embeddings (the images' captions).
      caption_labels: ``(M,)`` the class each caption was drawn for.
      caption_levels: ``(M,)`` caption level ids (``hac_jax.data.CAPTION_LEVELS``).
      class_to_group: ``(C,)`` group id of each class.
      geometry, curv: the embedding space.
      ks: the cut-offs.

    Returns:
      ``{"ret_i2t_R@k", "ret_t2i_R@k"}`` fractions. Captions come from templates, so many pairs
      share one caption and pair-identity retrieval is ill-posed. Here a caption is correct for an
      image when it describes the image's concept (:func:`hac_jax.eval.zero_shot.concept_relevance`:
      class-level captions its class, group-level ones its group, root ones every image), and
      the caption gallery is the set of *distinct* captions (equal embedding rows merged, a
      merged caption correct wherever one of its copies is): with duplicates kept, one wrong
      caption text would fill all top-k slots and R@5 would equal R@1. Image->text queries are
      the ``N`` images, text->image queries the distinct captions; ranks as in
      :func:`hac_jax.eval.zero_shot.retrieval_recall` (ties count against the query).
    """
    from hac_jax.data import CAPTION_LEVEL_DEPTH, CAPTION_LEVELS

    images, texts = np.asarray(images), np.asarray(texts)
    image_labels = np.asarray(image_labels, np.int64)
    caption_labels = np.asarray(caption_labels, np.int64)
    levels = np.asarray(caption_levels, np.int64)
    groups = np.asarray(class_to_group, np.int64)
    if images.shape[0] == 0 or texts.shape[0] == 0:
        raise ValueError("retrieval needs at least one image and one caption")
    if caption_labels.shape != (texts.shape[0],) or levels.shape != caption_labels.shape:
        raise ValueError("need one label and one caption level per caption")
    if levels.min() < 0 or levels.max() >= len(CAPTION_LEVELS):
        raise ValueError(f"caption levels must be ids in [0, {len(CAPTION_LEVELS)})")
    depth = [CAPTION_LEVEL_DEPTH[CAPTION_LEVELS[lv]] for lv in levels]
    uniq, inverse = np.unique(texts, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    # The classes each caption describes, merged over the copies of a distinct caption.
    describes = pure.concept_relevance(
        np.arange(groups.size), caption_labels, depth, groups
    ).T  # (M, C)
    uniq_describes = np.zeros((uniq.shape[0], groups.size), bool)
    np.logical_or.at(uniq_describes, inverse, describes)
    relevance = uniq_describes.T[image_labels]  # (N, U)
    sim = pure.pairwise_similarity(images, uniq, geometry, curv)
    rec = pure.retrieval_recall(sim, None, ks=ks, relevance=relevance)
    return {f"ret_{k}": v for k, v in rec.items()}


def _check_embeddings(emb: AuditEmbeddings, num_classes: int, num_concepts: int) -> None:
    n = emb.test_images.shape[0]
    pairs = (
        ("test", emb.test_images, emb.test_texts, emb.test_labels),
        ("forget-train", emb.forget_train_images, emb.forget_train_texts, emb.forget_train_labels),
        ("member", emb.member_images, emb.member_texts, None),
    )
    for name, img, txt, lab in pairs:
        if img.ndim != 2 or img.shape != txt.shape:
            raise ValueError(
                f"{name} images and texts must be (N, E) of one shape, got "
                f"{img.shape} and {txt.shape}"
            )
        if lab is not None and lab.shape != (img.shape[0],):
            raise ValueError(f"{name} labels must be ({img.shape[0]},), got {lab.shape}")
    if emb.test_caption_levels.shape != (n,):
        raise ValueError(f"test_caption_levels must be ({n},), got {emb.test_caption_levels.shape}")
    if emb.class_embs.shape[0] != num_classes:
        raise ValueError(f"class_embs must have {num_classes} rows, got {emb.class_embs.shape}")
    if emb.concept_embs.shape[0] != num_concepts:
        raise ValueError(
            f"concept_embs must have {num_concepts} rows, got {emb.concept_embs.shape}"
        )


def audit_embeddings(
    emb: AuditEmbeddings,
    hierarchy: Any,
    forget_ids: Sequence[int],
    geometry: Geometry,
    curv: Any = 1.0,
) -> ModelAudit:
    """Every metric of docs/METHOD.md "Metrics" from a model's embeddings (module docstring).

    ``forget_ids`` are the forgotten class ids of ``hierarchy``; the MERU-only metrics
    (distances to the origin, cones) are computed on the hyperboloid and NaN on the sphere.
    """
    num_classes = hierarchy.num_classes
    table = pure.concept_table(hierarchy)
    _check_embeddings(emb, num_classes, len(table["names"]))
    forget_ids = sorted({int(c) for c in forget_ids})
    labels = np.asarray(emb.test_labels, np.int64)
    is_forget = np.isin(labels, forget_ids)
    retain = ~is_forget
    if not is_forget.any() or not retain.any():
        raise ValueError(
            "the test split needs images of both forget and retain classes to audit, got "
            f"{int(is_forget.sum())} forget and {int(retain.sum())} retain images"
        )
    img, txt = np.asarray(emb.test_images), np.asarray(emb.test_texts)
    has_cones = geometry.has_cones
    geometry = _JittedGeometry(geometry)  # type: ignore[assignment]
    curv = jnp.asarray(curv, np.result_type(img.dtype, np.float32))
    metrics: dict[str, float] = {}

    def class_scores(x: np.ndarray) -> np.ndarray:
        return pure.pairwise_similarity(x, emb.class_embs, geometry, curv)

    forget_train_class_scores = class_scores(emb.forget_train_images)
    metrics.update(
        pure.forgetting_accuracies(
            class_scores(img),
            labels,
            forget_ids,
            forget_train_scores=forget_train_class_scores,
            forget_train_labels=emb.forget_train_labels,
        )
    )
    metrics.update(
        retain_retrieval(
            img[retain],
            labels[retain],
            txt[retain],
            labels[retain],
            np.asarray(emb.test_caption_levels)[retain],
            hierarchy.class_to_group,
            geometry,
            curv,
        )
    )
    pair_sims = pure.pair_similarity(img, txt, geometry, curv)
    forget_train_score = pure.pair_similarity(
        emb.forget_train_images, emb.forget_train_texts, geometry, curv
    )
    mia = pure.mia_audit(
        pure.pair_similarity(emb.member_images, emb.member_texts, geometry, curv),
        pair_sims[retain],
        forget_train_score,
    )
    metrics.update({k: mia[k] for k in ("mia_forget_nonmember", "mia_fit_balanced_acc")})
    matrix = pure.alignment_matrix(img, labels, txt, labels, num_classes, geometry, curv)
    forget_classes = np.isin(np.arange(num_classes), forget_ids)
    metrics.update(_gaps_from_matrix(matrix, labels, pair_sims, forget_classes))
    arrays: dict[str, np.ndarray] = {
        "alignment_matrix": matrix,
        "is_forget": is_forget,
        "labels": labels,
        "forget_train_score": np.asarray(forget_train_score, np.float64),
        "forget_train_rank": pure.true_class_rank(
            forget_train_class_scores, emb.forget_train_labels
        ),
    }

    if has_cones:
        metrics.update(pure.distance_to_origin_audit(img, txt, is_forget, geometry, curv))
        for kind, x in (("image", img), ("text", txt)):
            arrays[f"dist_origin_{kind}"] = np.asarray(
                geometry.dist_to_origin(jnp.asarray(x), curv), np.float64
            )
        if emb.parent_embs is None:
            raise ValueError("parent_embs are needed on the hyperboloid (parent-cone membership)")
        for cone, apex in (("own", emb.class_embs), ("parent", emb.parent_embs)):
            apex = np.asarray(apex)[labels]
            for part, sel in (("forget", is_forget), ("retain", retain)):
                metrics[f"cone_{cone}_{part}"] = pure.cone_membership(img, apex, curv, mask=sel)
    else:
        metrics.update({k: math.nan for k in HIERARCHY_METRICS})

    dest = pure.forgotten_destinations(
        pure.pairwise_similarity(img[is_forget], emb.concept_embs, geometry, curv),
        labels[is_forget],
        concept_levels=table["levels"],
        concept_groups=table["groups"],
        class_concepts=table["class_concepts"],
        class_groups=table["class_groups"],
    )
    metrics.update({f"dest_{d}": dest[d] for d in DESTINATIONS})
    arrays["dest_top1_count"] = dest["top1_count"]
    arrays["concept_names"] = np.asarray(table["names"], dtype=str)
    return ModelAudit(
        metrics={k: float(metrics[k]) for k in METRIC_KEYS},
        arrays=arrays,
    )


def audit_model(
    model: Any,
    params: Any,
    model_cfg: Any,
    data: Any,
    forget_ids: Sequence[int],
    *,
    batch_size: int = 256,
    train_split: str = "train",
    test_split: str = "test",
    mia_members: int = 2000,
    seed: int = 0,
) -> ModelAudit:
    """The complete audit of one model (module docstring for the metrics and arrays).

    ``forget_ids`` are class ids of ``data.hierarchy``; ``seed`` picks the MIA members
    (:func:`embed_for_audit`). Deterministic for fixed inputs. Bad input (empty or
    out-of-range forget ids, a forget set covering every class, an unknown split) raises a
    ``ValueError`` before any compute.
    """
    emb = embed_for_audit(
        model,
        params,
        model_cfg,
        data,
        forget_ids,
        batch_size=batch_size,
        train_split=train_split,
        test_split=test_split,
        mia_members=mia_members,
        seed=seed,
    )
    curv = float(scalars_at_use(params, model_cfg, fill=True)["curv"])
    return audit_embeddings(emb, data.hierarchy, forget_ids, model_cfg.geometry, curv)
