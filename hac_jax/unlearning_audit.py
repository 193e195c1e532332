"""Runs a model over a data set and feeds the pure audits of :mod:`hac_jax.audit`.

``audit_model(model, params, model_cfg, data, forget_ids)`` gives FA/RA/TA (zero-shot on the test
images), UA (zero-shot on the forget training images), the alignment gap of image/caption pairs
of the forget and retain test images and, on the hyperboloid, their mean distance to the origin.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from hac_jax import audit, evaluate
from hac_jax.geometry import get_geometry

__all__ = ["audit_model", "cross_alignment_gaps", "embed_split"]


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
    order -> ``(image_emb (N, E), caption_emb (N, E), labels (N,))`` projected embeddings."""
    from hac_jax import data as hdata

    loader = hdata.make_loader(
        data,
        split,
        batch_size=batch_size,
        shuffle=False,
        num_epochs=1,
        drop_remainder=False,
        classes=None if classes is None else list(classes),
        context_length=model_cfg.text.context_length,
        image_size=model_cfg.vision.image_size,
    )
    images, extras = evaluate.encode_images(
        model, params, loader, project=True, batch_size=batch_size, keys=("label", "tokens")
    )
    texts = evaluate.encode_texts(
        model, params, extras["tokens"], project=True, batch_size=batch_size
    )
    return images, texts, extras["label"].astype(np.int64)


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
    :func:`hac_jax.audit.alignment_gaps` the mismatches are not confined to the part, so a
    forget set of a single class still has them. NaN for a part without rows.
    """
    images, texts = np.asarray(images), np.asarray(texts)
    labels = np.asarray(labels).astype(np.int64)
    mask = np.asarray(is_forget, dtype=bool)
    matched = np.asarray(audit.pair_similarity(images, texts, geometry, curv), np.float64)
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
) -> dict[str, float]:
    """Forgetting accuracies, alignment gaps and (MERU) distances to the origin of one model.

    Returns a flat dict: ``FA, RA, TA, UA`` (fractions in [0, 1]), ``align_*_forget/retain``
    (:func:`cross_alignment_gaps` over test image/caption pairs) and, for MERU,
    ``dist_origin_*`` (:func:`hac_jax.audit.distance_to_origin_audit`).
    """
    forget_ids = sorted({int(c) for c in forget_ids})
    if not forget_ids:
        raise ValueError("forget_ids is empty: name at least one forgotten class id")
    geometry = get_geometry(model_cfg.kind)
    curv = float(evaluate.model_scalars(params, model_cfg)["curv"])
    from hac_jax.data import class_prompts

    classes = evaluate.zero_shot_classifier(
        model, params, model_cfg, class_prompts(data.hierarchy), batch_size=batch_size
    )
    img, txt, labels = embed_split(
        model, params, model_cfg, data, test_split, batch_size=batch_size
    )
    f_img, _, f_labels = embed_split(
        model, params, model_cfg, data, train_split, batch_size=batch_size, classes=forget_ids
    )

    def scores(x: np.ndarray) -> np.ndarray:
        return np.asarray(geometry.pairwise_sim(jnp.asarray(x), classes, curv))

    out = audit.forgetting_accuracies(
        scores(img),
        labels,
        forget_ids,
        forget_train_scores=scores(f_img),
        forget_train_labels=f_labels,
    )
    is_forget = np.isin(labels, forget_ids)
    out.update(cross_alignment_gaps(img, txt, labels, is_forget, geometry, curv))
    if model_cfg.kind == "meru":
        out.update(audit.distance_to_origin_audit(img, txt, is_forget, geometry, curv))
    return out
