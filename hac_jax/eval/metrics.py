"""The metrics of docs/METHOD.md "Metrics" as pure functions on embeddings, scores and labels.

No model is involved: every function takes arrays (numpy or jax) and returns plain Python floats /
numpy arrays in dicts, so each metric is checked on hand-built cases. :func:`to_jsonable` turns
such a dict into JSON-able values. Accuracies and rates are fractions in ``[0, 1]``.

* :func:`classification_metrics`: macro (mean per-class), top-k and per-class accuracies;
  :func:`forgetting_accuracies`: FA, UA, RA, TA from them, macro over classes like MERU's evaluator.
* :func:`retrieval_recall`, :func:`concept_relevance`, :func:`retrieval_metrics`: R@k
  image->text and text->image, with ground truth as caption->image pairs or by concept.
* :func:`pair_similarity`, :func:`fit_mia_threshold`, :func:`mia_audit`: the membership-inference
  audit in the style of AC's EMIA (Wang et al., arXiv 2406.03603): per-pair score = sim(image, its
  caption), a threshold fit on retain-train (members) vs test (non-members), then the share of
  forget-train pairs judged non-members.
* :func:`alignment_gap`, :func:`alignment_gaps`, :func:`alignment_matrix`: AC's alignment audits.
* :func:`distance_to_origin_audit`, :func:`cone_membership`, :func:`forgotten_destinations`:
  the hierarchy audit (MERU; distances to the origin are defined on both geometries).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hac_jax.data.hierarchy import LEVELS, Hierarchy
from hac_jax.eval.names import DESTINATIONS
from hac_jax.geometry import LORENTZ, Geometry

__all__ = [
    "DESTINATIONS",
    "REFERENCE_ARRAYS",
    "alignment_gap",
    "alignment_gaps",
    "alignment_matrix",
    "classification_metrics",
    "concept_relevance",
    "concept_table",
    "cone_membership",
    "distance_to_origin_audit",
    "distances_to_reference",
    "fit_mia_threshold",
    "forgetting_accuracies",
    "forgotten_destinations",
    "ks_distance",
    "mia_audit",
    "pair_similarity",
    "pairwise_similarity",
    "retrieval_metrics",
    "retrieval_recall",
    "to_jsonable",
    "true_class_rank",
    "tv_distance",
]

_CHUNK = 1024


def _as_2d(name: str, x: Any) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a (N, D) array, got shape {x.shape}")
    return x


def _as_mask(name: str, mask: Any, n: int) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.shape != (n,) or mask.dtype != bool:
        raise ValueError(f"{name} must be a ({n},) bool array, got {mask.dtype} {mask.shape}")
    return mask


# ----------------------------------------------------------------------------------------------
# Classification and retrieval
# ----------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------
# Similarities
# ----------------------------------------------------------------------------------------------


def pairwise_similarity(
    x: Any, y: Any, geometry: Geometry, curv: Any = 1.0, *, chunk: int = _CHUNK
) -> np.ndarray:
    """``geometry.pairwise_sim`` in row chunks: ``(N1, D), (N2, D) -> (N1, N2)`` numpy."""
    x, y = _as_2d("x", x), _as_2d("y", y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y need the same dimension, got {x.shape} and {y.shape}")
    y_j = jnp.asarray(y)
    rows = [
        np.asarray(geometry.pairwise_sim(jnp.asarray(x[s : s + chunk]), y_j, curv))
        for s in range(0, x.shape[0], chunk)
    ]
    if not rows:
        return np.zeros((0, y.shape[0]), dtype=np.result_type(x.dtype, np.float32))
    return np.concatenate(rows, axis=0)


def pair_similarity(u: Any, v: Any, geometry: Geometry, curv: Any = 1.0) -> np.ndarray:
    """``sim(u_i, v_i)`` of matched pairs: ``(N, D), (N, D) -> (N,)`` (the MIA score)."""
    u, v = _as_2d("u", u), _as_2d("v", v)
    if u.shape != v.shape:
        raise ValueError(f"u and v must have the same shape, got {u.shape} and {v.shape}")
    return np.asarray(geometry.sim(jnp.asarray(u), jnp.asarray(v), curv))


# ----------------------------------------------------------------------------------------------
# Zero-shot accuracies and retrieval
# ----------------------------------------------------------------------------------------------


def _macro_on(scores: np.ndarray, labels: np.ndarray, rows: np.ndarray) -> float:
    if not rows.any():
        return math.nan
    return classification_metrics(scores[rows], labels[rows], scores.shape[1], topk=())["macro_acc"]


def forgetting_accuracies(
    test_scores: Any,
    test_labels: Any,
    forget_classes: Sequence[int],
    *,
    forget_train_scores: Any | None = None,
    forget_train_labels: Any | None = None,
) -> dict[str, float]:
    """FA, RA, TA (and UA) from zero-shot class scores.

    Args:
      test_scores: ``(N, C)`` scores of held-out test images against all ``C`` concepts.
      test_labels: ``(N,)`` class ids.
      forget_classes: the forgotten class ids.
      forget_train_scores, forget_train_labels: the same for the forget *training* images (UA).

    Returns:
      ``{"FA": macro top-1 on test images of forget classes, "RA": ... of retain classes,
      "TA": ... of all test images, ["UA": ... of the forget training images]}``. Classification
      is always among all ``C`` concepts; "macro" = mean of per-class accuracies over the classes
      present. A subset without images gives NaN.
    """
    scores = _as_2d("test_scores", test_scores)
    labels = np.asarray(test_labels).astype(np.int64)
    forget = np.asarray(sorted({int(c) for c in forget_classes}), dtype=np.int64)
    if forget.size == 0:
        raise ValueError("forget_classes is empty: name at least one forgotten class id")
    if forget.min() < 0 or forget.max() >= scores.shape[1]:
        raise ValueError(
            f"forget_classes must be class ids in [0, {scores.shape[1]}), got {forget.tolist()}"
        )
    is_f = np.isin(labels, forget)
    out = {
        "FA": _macro_on(scores, labels, is_f),
        "RA": _macro_on(scores, labels, ~is_f),
        "TA": _macro_on(scores, labels, np.ones_like(is_f)),
    }
    if (forget_train_scores is None) != (forget_train_labels is None):
        raise ValueError("give both forget_train_scores and forget_train_labels, or neither")
    if forget_train_scores is not None:
        f_scores = _as_2d("forget_train_scores", forget_train_scores)
        f_labels = np.asarray(forget_train_labels).astype(np.int64)
        if not np.isin(f_labels, forget).all():
            raise ValueError("forget_train_labels contain classes outside forget_classes")
        out["UA"] = _macro_on(f_scores, f_labels, np.ones(f_labels.shape, bool))
    return out


def retrieval_metrics(
    image_emb: Any,
    text_emb: Any,
    geometry: Geometry,
    curv: Any = 1.0,
    *,
    text_to_image: Any | None = None,
    ks: Sequence[int] = (1, 5),
) -> dict[str, float]:
    """R@k image->text and text->image (fractions) on a set of images and captions.

    ``text_to_image`` (``(N_txt,)``) gives each caption's image; by default caption ``i`` belongs to
    image ``i``. Pass the retain-concept test pairs for the METHOD.md metric. Ties count against
    the query (:func:`retrieval_recall`).
    """
    sim = pairwise_similarity(image_emb, text_emb, geometry, curv)
    if text_to_image is None:
        if sim.shape[0] != sim.shape[1]:
            raise ValueError(
                f"{sim.shape[0]} images and {sim.shape[1]} captions: pass text_to_image"
            )
        text_to_image = np.arange(sim.shape[1])
    return retrieval_recall(sim, text_to_image, ks=ks)


# ----------------------------------------------------------------------------------------------
# Membership inference
# ----------------------------------------------------------------------------------------------


def fit_mia_threshold(member_scores: Any, nonmember_scores: Any) -> tuple[float, float]:
    """The threshold ``t`` of the rule "member iff score >= t" with the best balanced accuracy.

    Candidates are the observed scores; among equally good ones the lowest wins (so scores that
    carry no information judge everyone a member, as AC's threshold search does). The returned
    ``t`` is the midpoint between the chosen score and the next lower observed score (any value in
    between classifies the fitting data the same way).

    Returns ``(threshold, balanced_accuracy)`` with ``balanced_accuracy = (TPR + TNR) / 2`` on
    the fitting data.
    """
    mem = np.asarray(member_scores, dtype=np.float64).ravel()
    non = np.asarray(nonmember_scores, dtype=np.float64).ravel()
    if mem.size == 0 or non.size == 0:
        raise ValueError("the MIA threshold needs at least one member and one non-member score")
    if not (np.isfinite(mem).all() and np.isfinite(non).all()):
        raise ValueError("MIA scores must be finite")
    cand = np.unique(np.concatenate([mem, non]))
    mem_sorted, non_sorted = np.sort(mem), np.sort(non)
    tpr = 1.0 - np.searchsorted(mem_sorted, cand, side="left") / mem.size  # share >= t
    tnr = np.searchsorted(non_sorted, cand, side="left") / non.size  # share < t
    bal = 0.5 * (tpr + tnr)
    best = int(np.argmax(bal))
    t = cand[best] if best == 0 else 0.5 * (cand[best] + cand[best - 1])
    return float(t), float(bal[best])


def mia_audit(
    retain_train_scores: Any, test_scores: Any, forget_train_scores: Any
) -> dict[str, float]:
    """EMIA-style membership audit (module docstring).

    Args:
      retain_train_scores: ``(N_r,)`` sim(image, caption) of retain training pairs (members).
      test_scores: ``(N_t,)`` the same for held-out test pairs (non-members).
      forget_train_scores: ``(N_f,)`` the same for the forget training pairs.

    Returns:
      ``{"mia_threshold", "mia_fit_balanced_acc", "mia_forget_nonmember": share of forget pairs
      with score < threshold (compare with Retrain), "mia_forget_member": 1 - that}``.
    """
    forget = np.asarray(forget_train_scores, dtype=np.float64).ravel()
    if forget.size == 0:
        raise ValueError("no forget-train scores to audit")
    t, bal = fit_mia_threshold(retain_train_scores, test_scores)
    nonmember = float(np.mean(forget < t))
    return {
        "mia_threshold": t,
        "mia_fit_balanced_acc": bal,
        "mia_forget_nonmember": nonmember,
        "mia_forget_member": 1.0 - nonmember,
    }


# ----------------------------------------------------------------------------------------------
# Alignment
# ----------------------------------------------------------------------------------------------


def alignment_gap(
    u: Any,
    v: Any,
    geometry: Geometry,
    curv: Any = 1.0,
    *,
    labels: Any | None = None,
    chunk: int = _CHUNK,
) -> dict[str, float]:
    """Mean sim of matched pairs minus mean sim of mismatched pairs.

    Matched: ``(u_i, v_i)``. Mismatched: ``(u_i, v_j)``, ``i != j``; with ``labels`` only pairs of
    different concepts (captions of the same concept describe the image as well).

    Returns ``{"matched", "mismatched", "gap"}`` (NaN where a part has no pair).
    """
    u, v = _as_2d("u", u), _as_2d("v", v)
    if u.shape != v.shape:
        raise ValueError(f"u and v must have the same shape, got {u.shape} and {v.shape}")
    n = u.shape[0]
    lab = None if labels is None else np.asarray(labels)
    if lab is not None and lab.shape != (n,):
        raise ValueError(f"labels must be ({n},), got {lab.shape}")
    matched = float(np.mean(pair_similarity(u, v, geometry, curv))) if n else math.nan
    total, count = 0.0, 0
    v_j = jnp.asarray(v)
    for s in range(0, n, chunk):
        sim = np.asarray(geometry.pairwise_sim(jnp.asarray(u[s : s + chunk]), v_j, curv))
        rows = np.arange(s, s + sim.shape[0])
        keep = rows[:, None] != np.arange(n)[None, :]
        if lab is not None:
            keep &= lab[rows][:, None] != lab[None, :]
        total += float(sim[keep].astype(np.float64).sum())
        count += int(keep.sum())
    mismatched = total / count if count else math.nan
    return {"matched": matched, "mismatched": mismatched, "gap": matched - mismatched}


def alignment_gaps(
    u: Any,
    v: Any,
    is_forget: Any,
    geometry: Geometry,
    curv: Any = 1.0,
    *,
    labels: Any | None = None,
) -> dict[str, float]:
    """:func:`alignment_gap` on the forget pairs and on the retain pairs (each set on its own):
    ``{"align_matched_forget", "align_mismatched_forget", "align_gap_forget", ..._retain}``."""
    u = _as_2d("u", u)
    mask = _as_mask("is_forget", is_forget, u.shape[0])
    v = np.asarray(v)
    lab = None if labels is None else np.asarray(labels)
    out = {}
    for part, sel in (("forget", mask), ("retain", ~mask)):
        gap = alignment_gap(
            u[sel], v[sel], geometry, curv, labels=None if lab is None else lab[sel]
        )
        out.update({f"align_{k}_{part}": val for k, val in gap.items()})
    return out


def alignment_matrix(
    image_emb: Any,
    image_labels: Any,
    text_emb: Any,
    text_labels: Any,
    num_concepts: int,
    geometry: Geometry,
    curv: Any = 1.0,
    *,
    chunk: int = _CHUNK,
) -> np.ndarray:
    """Concept x concept alignment: ``M[a, b]`` = mean sim(image of concept a, text of concept b).

    Shapes: ``(N, D), (N,), (M, D), (M,) -> (C, C)`` float64; NaN where concept ``a`` has no image
    or ``b`` no text. The diagonal is the matched-concept alignment (AC's auditing heatmap).
    """
    image_emb, text_emb = _as_2d("image_emb", image_emb), _as_2d("text_emb", text_emb)
    il = np.asarray(image_labels).astype(np.int64)
    tl = np.asarray(text_labels).astype(np.int64)
    if il.shape != (image_emb.shape[0],) or tl.shape != (text_emb.shape[0],):
        raise ValueError("need one label per image and per text")
    for name, lab in (("image_labels", il), ("text_labels", tl)):
        if lab.size and (lab.min() < 0 or lab.max() >= num_concepts):
            raise ValueError(f"{name} must lie in [0, {num_concepts})")
    text_onehot = np.eye(num_concepts, dtype=np.float64)[tl]  # (M, C)
    sums = np.zeros((num_concepts, num_concepts), np.float64)
    t_j = jnp.asarray(text_emb)
    for s in range(0, image_emb.shape[0], chunk):
        sim = np.asarray(geometry.pairwise_sim(jnp.asarray(image_emb[s : s + chunk]), t_j, curv))
        per_text_concept = sim.astype(np.float64) @ text_onehot  # (n, C)
        np.add.at(sums, il[s : s + sim.shape[0]], per_text_concept)
    img_count = np.bincount(il, minlength=num_concepts).astype(np.float64)
    txt_count = np.bincount(tl, minlength=num_concepts).astype(np.float64)
    denom = img_count[:, None] * txt_count[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, sums / np.maximum(denom, 1.0), np.nan)


# ----------------------------------------------------------------------------------------------
# Hierarchy
# ----------------------------------------------------------------------------------------------


def distance_to_origin_audit(
    image_emb: Any,
    text_emb: Any,
    is_forget: Any,
    geometry: Geometry,
    curv: Any = 1.0,
) -> dict[str, float]:
    """Mean distance to the origin of forget / retain image and text embeddings.

    Returns ``{"dist_origin_image_forget", "dist_origin_image_retain", "dist_origin_text_forget",
    "dist_origin_text_retain"}`` (NaN for an empty part). On the sphere every norm is 1.
    """
    image_emb, text_emb = _as_2d("image_emb", image_emb), _as_2d("text_emb", text_emb)
    mask = _as_mask("is_forget", is_forget, image_emb.shape[0])
    if text_emb.shape[0] != image_emb.shape[0]:
        raise ValueError("image_emb and text_emb need one row per pair")
    out = {}
    for kind, emb in (("image", image_emb), ("text", text_emb)):
        d = np.asarray(geometry.dist_to_origin(jnp.asarray(emb), curv), dtype=np.float64)
        for part, sel in (("forget", mask), ("retain", ~mask)):
            out[f"dist_origin_{kind}_{part}"] = float(d[sel].mean()) if sel.any() else math.nan
    return out


def cone_membership(images: Any, cone_texts: Any, curv: Any, *, mask: Any | None = None) -> float:
    """Share of images inside the entailment cone of their text (MERU, Lorentz model).

    Image ``i`` is inside the cone of text ``i`` when ``oxy_angle(t_i, x_i) <= half_aperture(t_i)``
    (Desai et al., ICML 2023). Pass the paired captions for caption-cone membership, or the
    parent-concept text of each image for parent-cone membership. Shapes: ``(N, D), (N, D) -> ()``;
    ``mask`` ``(N,)`` bool restricts the images counted (NaN when it selects none).
    """
    images, cone_texts = _as_2d("images", images), _as_2d("cone_texts", cone_texts)
    if images.shape != cone_texts.shape:
        raise ValueError(f"need one cone text per image, got {images.shape} and {cone_texts.shape}")
    violation = LORENTZ.cone_violation(jnp.asarray(cone_texts), jnp.asarray(images), curv)
    inside = np.asarray(violation) <= 0
    if mask is not None:
        inside = inside[_as_mask("mask", mask, images.shape[0])]
    return float(inside.mean()) if inside.size else math.nan


def concept_table(hierarchy: Hierarchy) -> dict[str, Any]:
    """Every concept of a hierarchy in one list (classes, then groups, then the root), with what
    :func:`forgotten_destinations` needs.

    Returns ``{"names", "phrases", "levels", "groups", "class_concepts", "class_groups"}``: ``K``
    names, caption phrases and level names, the group id of each concept (-1 for the root), the
    concept index of each class id and the group id of each class id. Score images against text
    embeddings of ``phrases`` in this order. A flat hierarchy lists no group level (its groups
    repeat the classes).
    """
    classes = list(hierarchy.classes)
    class_groups = list(hierarchy.class_group)
    names, phrases = list(classes), list(hierarchy.class_phrases)
    levels, groups = ["class"] * len(classes), list(class_groups)
    if not hierarchy.is_flat:
        names += list(hierarchy.groups)
        phrases += list(hierarchy.group_phrases)
        levels += ["group"] * hierarchy.num_groups
        groups += list(range(hierarchy.num_groups))
    names.append(hierarchy.root)
    phrases.append(hierarchy.root_phrase)
    levels.append("root")
    groups.append(-1)
    return {
        "names": names,
        "phrases": phrases,
        "levels": levels,
        "groups": groups,
        "class_concepts": list(range(len(classes))),
        "class_groups": class_groups,
    }


def forgotten_destinations(
    scores: Any,
    labels: Any,
    *,
    concept_levels: Sequence[str],
    concept_groups: Sequence[int],
    class_concepts: Sequence[int] | None = None,
    class_groups: Sequence[int],
) -> dict[str, Any]:
    """Where images go: the distribution of their top-1 concept among scored concepts.

    Args:
      scores: ``(N, K)`` scores of (typically forget-class) images against ``K`` concepts, which
        may mix levels (classes, groups, the root).
      labels: ``(N,)`` true class ids of the images.
      concept_levels: ``K`` level names from ``hac_jax.data.hierarchy.LEVELS``.
      concept_groups: ``K`` group ids: a class's group, a group's own id, -1 for the root.
      class_concepts: the concept index of each class id (default: class ``c`` is concept ``c``).
      class_groups: the group id of each class id.

    Returns:
      ``{"top1_count": (K,) int64, "top1_fraction": (K,), "level_fraction": {level: share},
      "own_class" / "sibling" / "parent" / "root" / "other": shares}`` where ``own_class`` = the
      image's own class, ``sibling`` = another class of its group, ``parent`` = its group concept,
      ``root`` = the root, ``other`` = anything in another group. The five shares sum to 1.
    """
    scores = _as_2d("scores", scores)
    labels = np.asarray(labels).astype(np.int64)
    n, k = scores.shape
    if labels.shape != (n,):
        raise ValueError(f"labels must be ({n},), got {labels.shape}")
    if n == 0:
        raise ValueError("no images to audit")
    levels = np.asarray(list(concept_levels))
    groups = np.asarray(list(concept_groups), dtype=np.int64)
    if levels.shape != (k,) or groups.shape != (k,):
        raise ValueError(f"concept_levels and concept_groups need {k} entries (one per concept)")
    bad = sorted(set(levels.tolist()) - set(LEVELS))
    if bad:
        raise ValueError(f"unknown concept levels {bad}; expected names from {LEVELS}")
    class_groups = np.asarray(list(class_groups), dtype=np.int64)
    cc = (
        np.arange(class_groups.size) if class_concepts is None else np.asarray(class_concepts)
    ).astype(np.int64)
    if cc.shape != class_groups.shape:
        raise ValueError("class_concepts and class_groups need one entry per class")
    if labels.min() < 0 or labels.max() >= class_groups.size:
        raise ValueError(f"labels must be class ids in [0, {class_groups.size})")
    top1 = scores.argmax(axis=1)
    own_concept = cc[labels]
    own_group = class_groups[labels]
    top_level = levels[top1]
    same_group = groups[top1] == own_group
    is_own = top1 == own_concept
    cat = {
        "own_class": is_own,
        "sibling": ~is_own & (top_level == "class") & same_group,
        "parent": (top_level == "group") & same_group,
        "root": top_level == "root",
    }
    cat["other"] = ~(cat["own_class"] | cat["sibling"] | cat["parent"] | cat["root"])
    counts = np.bincount(top1, minlength=k).astype(np.int64)
    out: dict[str, Any] = {
        "top1_count": counts,
        "top1_fraction": counts / n,
        "level_fraction": {lvl: float(np.mean(top_level == lvl)) for lvl in LEVELS},
    }
    out.update({name: float(np.mean(sel)) for name, sel in cat.items()})
    return out


# ----------------------------------------------------------------------------------------------
# Distances between two models' audits (forget quality against Retrain)
# ----------------------------------------------------------------------------------------------


def ks_distance(a: Any, b: Any) -> float:
    """Two-sample Kolmogorov-Smirnov distance ``sup_x |F_a(x) - F_b(x)|`` of the empirical CDFs
    of ``a`` ``(N,)`` and ``b`` ``(M,)``, in [0, 1] (0: the same distribution of values; 1: no
    overlap). After OpenUnlearning's forget-quality test: ``a`` the unlearned model's per-pair
    forget scores, ``b`` Retrain's on the same pairs."""
    a = np.sort(np.asarray(a, np.float64).ravel())
    b = np.sort(np.asarray(b, np.float64).ravel())
    if a.size == 0 or b.size == 0:
        raise ValueError("ks_distance needs at least one value on each side")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("ks_distance needs finite values")
    grid = np.concatenate([a, b])
    cdf_a = np.searchsorted(a, grid, side="right") / a.size
    cdf_b = np.searchsorted(b, grid, side="right") / b.size
    return float(np.max(np.abs(cdf_a - cdf_b)))


def true_class_rank(scores: Any, labels: Any) -> np.ndarray:
    """The rank of each sample's own class among all classes: ``(N, C)`` scores (higher =
    closer), ``(N,)`` labels -> ``(N,)`` int64 in ``1..C`` (1 = top-1; ties count against the
    true class). Unlike a raw similarity it means the same for every model, so its distribution
    can be compared between an unlearned model and Retrain (:func:`ks_distance`)."""
    scores = _as_2d("scores", scores)
    labels = np.asarray(labels, np.int64)
    if labels.shape != (scores.shape[0],):
        raise ValueError(f"labels must be ({scores.shape[0]},), got {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= scores.shape[1]):
        raise ValueError(f"labels must be class ids in [0, {scores.shape[1]})")
    own = scores[np.arange(labels.size), labels]
    # the class itself and every class scoring at least as high
    return np.sum(scores >= own[:, None], axis=1).astype(np.int64)


def tv_distance(p: Any, q: Any) -> float:
    """Total-variation distance ``0.5 * sum |p/sum(p) - q/sum(q)|`` of two histograms (counts or
    shares over the same bins, ``(K,)``), in [0, 1]: e.g. where the forgotten images go (their
    top-1 concept) under a method and under Retrain."""
    p = np.asarray(p, np.float64).ravel()
    q = np.asarray(q, np.float64).ravel()
    if p.shape != q.shape:
        raise ValueError(
            f"tv_distance needs histograms over the same bins, got {p.shape}, {q.shape}"
        )
    if np.any(p < 0) or np.any(q < 0) or p.sum() <= 0 or q.sum() <= 0:
        raise ValueError("tv_distance needs non-negative histograms with a positive total")
    return float(0.5 * np.abs(p / p.sum() - q / q.sum()).sum())


# The audit arrays that :func:`distances_to_reference` compares.
REFERENCE_ARRAYS = ("forget_train_score", "forget_train_rank", "dest_top1_count")


def distances_to_reference(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, float]:
    """Forget quality of audit arrays ``a`` against a reference's ``b`` (typically Retrain's on
    the same images; docs/METHOD.md, Metrics): ``ks_forget_score`` (KS of the per-pair forget
    scores, each model on its own scale), ``ks_forget_rank`` (KS of the true-class ranks, one
    scale for every model) and ``tv_destination`` (TV of where the forgotten images go). Both
    mappings hold :data:`REFERENCE_ARRAYS`."""
    return {
        "ks_forget_score": ks_distance(a["forget_train_score"], b["forget_train_score"]),
        "ks_forget_rank": ks_distance(a["forget_train_rank"], b["forget_train_rank"]),
        "tv_destination": tv_distance(a["dest_top1_count"], b["dest_top1_count"]),
    }


# ----------------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------------


def to_jsonable(obj: Any) -> Any:
    """Numpy / jax arrays and scalars -> lists and Python numbers, NaN/inf -> ``None``,
    recursively through dicts, lists and tuples (for ``json.dump``)."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (str, bool)) or obj is None:
        return obj
    if hasattr(obj, "shape"):
        # numpy and jax arrays; 0-d ones become the matching Python scalar
        return to_jsonable(np.asarray(obj).tolist())
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    value = float(obj)
    return value if math.isfinite(value) else None
