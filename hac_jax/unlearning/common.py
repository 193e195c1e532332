"""Pieces shared by the unlearning losses: masked means, forget-subset derangements, the weighted
symmetric InfoNCE of Alignment Calibration, and model losses restricted to a subset of the batch.

Batches mix retain and forget pairs. Shapes stay static under ``jit`` while the number of forget
pairs varies from batch to batch, so every reduction over a subset is a *masked* mean that is 0
(with zero gradient) when the subset is empty, and the derangement of the forget pairs is built
with a sort on the mask instead of boolean indexing.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import Array
from jax.typing import ArrayLike

from hac_jax.geometry import Geometry

__all__ = [
    "POS_REFERENCES",
    "WRONG_POSITIVE_POOLS",
    "add_term",
    "forget_derangement",
    "masked_mean",
    "masked_sum",
    "pair_masks",
    "relative_excess",
    "subset_contrastive_loss",
    "subset_entailment_loss",
    "subset_model_loss",
    "weighted_symmetric_infonce",
    "wrong_positives",
]

WRONG_POSITIVE_POOLS = ("forget", "retain", "sibling")


def pair_masks(batch: Any) -> tuple[Array, Array]:
    """``(is_forget, is_retain)``, both ``(B,) bool``, of a batch: the forget pairs (captions that
    name a forgotten concept) and the retain pairs. Pairs in neither (group-level captions of
    forget images under the default ``group_captions="exclude"``, see
    :mod:`hac_jax.data.forget`) take part in no term. Batches without ``is_retain`` treat every
    non-forget pair as retain."""
    is_forget = jnp.asarray(batch["is_forget"], bool)
    if "is_retain" in batch:
        return is_forget, jnp.asarray(batch["is_retain"], bool)
    return is_forget, ~is_forget


def masked_sum(x: ArrayLike, mask: ArrayLike) -> Array:
    """Sum of ``x`` over ``mask``: ``(B,), (B,) bool -> ()``. Entries outside the mask get a zero
    cotangent, and their values never reach the result (``where``, not a product, so a NaN or inf
    there cannot leak into the value)."""
    x = jnp.asarray(x)
    return jnp.sum(jnp.where(mask, x, jnp.zeros_like(x)))


def masked_mean(x: ArrayLike, mask: ArrayLike) -> Array:
    """Mean of ``x`` over ``mask``: ``(B,), (B,) bool -> ()``; 0 (zero gradient) if the mask is
    empty."""
    count = jnp.sum(jnp.asarray(mask, jnp.int32))
    return masked_sum(x, mask) / jnp.maximum(count, 1).astype(jnp.result_type(x, 1.0))


def add_term(total: Array, weight: Any, term: Array) -> Array:
    """``total + weight * term``, leaving ``total`` untouched when ``weight`` is a Python zero.

    Skipping (instead of multiplying by 0) keeps a switched-off term out of the gradient entirely,
    so an ablation cannot be contaminated by a non-finite gradient of the unused term.
    """
    if isinstance(weight, (int, float)) and weight == 0:
        return total
    return total + weight * term


def forget_derangement(
    is_forget: ArrayLike,
    *,
    shift: int | None = None,
    rng: Array | None = None,
) -> tuple[Array, Array]:
    """A derangement ``pi`` of the forget positions of a batch; retain positions map to themselves.

    Shapes: ``(B,) bool -> (B,) int32, (B,) bool``. Works under ``jit`` with a traced mask.

    The forget positions are put in an order ``f_0, ..., f_{n-1}`` by a stable sort on the mask
    (batch order for ``shift``, a uniformly random order when ``rng`` is given), and
    ``pi(f_j) = f_{(j + s) mod n}``:

    * ``shift=k`` (AC's ``--index-shift``, Wang et al., arXiv 2406.03603): ``s = k mod n``, and
      ``s = 1`` when ``n`` divides ``k`` (the plain shift would be the identity). Deterministic.
    * ``rng`` (random each step): ``s = 1`` on a random order, i.e. a uniformly random ``n``-cycle.

    Exactly one of ``shift`` and ``rng`` must be given. A derangement needs ``n >= 2``: with a
    single forget pair ``pi`` is the identity and the returned ``valid`` mask is False there, so
    callers can leave that pair out instead of reinforcing it. ``valid`` is True on forget positions
    that got a wrong partner (all of them when ``n >= 2``) and False elsewhere.
    """
    if (shift is None) == (rng is None):
        raise ValueError("forget_derangement needs exactly one of shift=k (an int >= 1) or rng=key")
    if shift is not None and (not isinstance(shift, int) or isinstance(shift, bool) or shift < 1):
        raise ValueError(f"shift must be an int >= 1 (AC's index shift), got {shift!r}")
    is_forget = jnp.asarray(is_forget, bool)
    if is_forget.ndim != 1:
        raise ValueError(f"is_forget must be a (B,) mask, got shape {is_forget.shape}")
    size = is_forget.shape[0]
    idx = jnp.arange(size, dtype=jnp.int32)
    if rng is not None:
        priority = jax.random.permutation(rng, size).astype(jnp.int32)
    else:
        priority = idx
    # Forget positions first (ordered by priority), retain positions after them.
    order = jnp.argsort(jnp.where(is_forget, priority, size + idx), stable=True).astype(jnp.int32)
    rank = jnp.zeros(size, jnp.int32).at[order].set(idx)  # position of each index in `order`
    n = jnp.sum(is_forget.astype(jnp.int32))
    n_safe = jnp.maximum(n, 1)
    if shift is not None:
        s = jnp.asarray(shift, jnp.int32) % n_safe
        s = jnp.where(s == 0, 1, s)
    else:
        s = jnp.asarray(1, jnp.int32)
    valid = is_forget & (n >= 2)
    target = order[(rank + s) % n_safe]
    return jnp.where(valid, target, idx), valid


def wrong_positives(
    is_forget: ArrayLike,
    is_retain: ArrayLike,
    label: ArrayLike,
    group: ArrayLike,
    pool: str,
    *,
    rng: Array | None = None,
    shift: int | None = None,
) -> tuple[Array, Array]:
    """The wrong positive ``w(i)`` of every forget pair, drawn from ``pool`` (docs/METHOD.md):

    * ``"forget"``: another forget pair (:func:`forget_derangement` with ``rng`` or ``shift``;
      AC's original form, for random-sample forgetting);
    * ``"retain"``: a uniformly drawn retain pair of the batch (a caption of a retained concept);
    * ``"sibling"``: a retain pair of the same group and another class when the batch has one,
      else any retain pair.

    Shapes: ``(B,) bool, (B,) bool, (B,) int, (B,) int -> (targets (B,) int32, valid (B,)
    bool)``: ``targets[i]`` is the caption index of pair ``i``'s positive (itself where not
    deranged); ``valid`` marks the forget pairs that got a wrong partner (a pool empty in this
    batch leaves them out). ``"retain"`` and ``"sibling"`` need ``rng``.
    """
    if pool not in WRONG_POSITIVE_POOLS:
        raise ValueError(f"wrong-positive pool must be one of {WRONG_POSITIVE_POOLS}, got {pool!r}")
    is_forget = jnp.asarray(is_forget, bool)
    if pool == "forget":
        return forget_derangement(is_forget, shift=shift, rng=rng)
    if rng is None:
        raise ValueError(f"the {pool!r} wrong-positive pool draws at random: pass an rng key")
    is_retain = jnp.asarray(is_retain, bool)
    label = jnp.asarray(label)
    candidates = is_retain[None, :] & (label[:, None] != label[None, :])  # (B, B): i -> j
    if pool == "sibling":
        group = jnp.asarray(group)
        sibling = candidates & (group[:, None] == group[None, :])
        has_sibling = jnp.any(sibling, axis=1, keepdims=True)
        candidates = jnp.where(has_sibling, sibling, candidates)
    # A uniform draw among each row's candidates: the largest of i.i.d. uniform scores.
    scores = jax.random.uniform(rng, candidates.shape)
    choice = jnp.argmax(jnp.where(candidates, scores, -1.0), axis=1).astype(jnp.int32)
    valid = is_forget & jnp.any(candidates, axis=1)
    idx = jnp.arange(is_forget.shape[0], dtype=jnp.int32)
    return jnp.where(valid, choice, idx), valid


# The retained captions' level that a relative positive target is measured against.
POS_REFERENCES = ("mean", "quantile")


def relative_excess(
    sims: ArrayLike,
    is_forget: ArrayLike,
    is_retain: ArrayLike,
    margin: float = 0.0,
    *,
    reference: str = "mean",
    quantile: float = 0.5,
) -> Array:
    """How far each forget pair's similarity lies above the level of an unrelated caption:
    ``relu(S_ii - ref_i + margin)`` per row, ``ref_i`` the image's similarities to the batch's
    retain captions reduced by ``reference`` (``"mean"``, or ``"quantile"``: the ``quantile``-th
    of them, the lower order statistic, so 0.5 is the median, 0 the farthest and 1 the closest
    retain caption) and treated as a constant. ``(B, B) sims (image rows, text columns),
    (B,) bool, (B,) bool -> (B,)``.

    The relative target of positive calibration (AC's ``pos_target="relative"``, HAC's too):
    the forget caption is pushed down until it is no closer to its image than that level of the
    retained concepts' captions (``margin`` > 0: that much below), and no further, which is
    where a model that never learned the concept leaves it (in the middle of the other
    captions rather than below all of them). The target moves with the image, so it needs no
    scale of its own on either geometry (cosine or ``-d_L``). Rows that are not forget pairs,
    and every row of a batch without retain captions, are 0.
    """
    if reference not in POS_REFERENCES:
        raise ValueError(f"pos_reference must be one of {POS_REFERENCES}, got {reference!r}")
    if not 0.0 <= quantile <= 1.0:
        raise ValueError(f"pos_quantile must be in [0, 1], got {quantile!r}")
    sims = jnp.asarray(sims)
    retain = jnp.asarray(is_retain, bool)
    count = jnp.sum(retain.astype(jnp.int32))
    if reference == "mean":
        ref = jnp.sum(jnp.where(retain[None, :], sims, 0.0), axis=1) / jnp.maximum(count, 1)
    else:
        # ascending with the other columns last; the order statistic floor(q (count - 1))
        ordered = jnp.sort(jnp.where(retain[None, :], sims, jnp.inf), axis=1)
        k = jnp.floor(quantile * (jnp.maximum(count, 1) - 1)).astype(jnp.int32)
        ref = ordered[:, k]
    excess = jax.nn.relu(jnp.diagonal(sims) - jax.lax.stop_gradient(ref) + margin)
    keep = jnp.asarray(is_forget, bool) & (count > 0)
    return jnp.where(keep, excess, jnp.zeros_like(excess))


def weighted_symmetric_infonce(
    logits: ArrayLike,
    targets: ArrayLike,
    weights: ArrayLike,
    active: ArrayLike | None = None,
) -> tuple[Array, Array]:
    """Symmetric InfoNCE with a per-sample positive and weight (AC's weighted form).

    Args:
      logits: ``(B, B)`` scaled similarities, ``logits[i, j] = s * sim(image_i, text_j)``.
      targets: ``(B,)`` int: the positive pair of sample ``i`` is ``(image_i,
        text_{targets[i]})`` (``targets[i] = i`` for an ordinary pair; a derangement of the
        forget pairs, or any other pair's caption for AC's wrong positive).
      weights: ``(B,)`` non-negative per-sample weights.
      active: ``(B,)`` bool, the pairs that take part (default: all). Inactive images and texts
        are no negatives of anyone (their logits are masked out of both softmaxes); give them
        weight 0 too.

    Returns:
      ``(loss, per_sample)``: ``per_sample[i] = (CE_row + CE_col) / 2`` for entry
      ``(i, targets[i])`` (image->text softmax over row ``i``, text->image softmax over column
      ``targets[i]``), and ``loss = sum(w * per_sample) / sum(w)`` (0 when all weights are 0).
      With ``targets = arange(B)`` and equal weights this is the CLIP/MERU contrastive loss. Both
      directions use the same positive pairs, as AC's code does for its two views.
    """
    logits = jnp.asarray(logits)
    if logits.ndim != 2 or logits.shape[0] != logits.shape[1]:
        raise ValueError(f"logits must be a square (B, B) matrix, got shape {logits.shape}")
    targets = jnp.asarray(targets, jnp.int32)
    weights = jnp.asarray(weights, logits.dtype)
    size = logits.shape[0]
    if targets.shape != (size,) or weights.shape != (size,):
        raise ValueError(
            f"targets and weights must be ({size},), got {targets.shape} and {weights.shape}"
        )
    rows = jnp.arange(size)
    if active is not None:
        active = jnp.asarray(active, bool)
        # A very negative finite value (not -inf) keeps fully masked rows finite.
        neg = jnp.asarray(jnp.finfo(logits.dtype).min / 4, logits.dtype)
        logits = jnp.where(active[:, None] & active[None, :], logits, neg)
    logp_i2t = jax.nn.log_softmax(logits, axis=1)[rows, targets]
    logp_t2i = jax.nn.log_softmax(logits, axis=0)[rows, targets]
    per_sample = -0.5 * (logp_i2t + logp_t2i)
    total_w = jnp.sum(weights)
    loss = jnp.sum(weights * per_sample) / jnp.where(total_w > 0, total_w, 1.0)
    return loss, per_sample


def subset_contrastive_loss(logits: ArrayLike, mask: ArrayLike) -> Array:
    """The symmetric contrastive loss of the sub-batch ``mask`` selects: ``(B, B), (B,) -> ()``.

    Equal to the plain loss on the selected rows/columns alone (the other pairs are neither
    positives nor negatives), with shapes kept static. 0 for an empty subset.
    """
    logits = jnp.asarray(logits)
    mask = jnp.asarray(mask, bool)
    pair = mask[:, None] & mask[None, :]
    # A very negative finite value (not -inf) keeps fully masked rows finite.
    neg = jnp.asarray(jnp.finfo(logits.dtype).min / 4, logits.dtype)
    masked = jnp.where(pair, logits, neg)
    diag = jnp.diagonal(masked)
    ce_i2t = jax.nn.logsumexp(masked, axis=1) - diag
    ce_t2i = jax.nn.logsumexp(masked, axis=0) - diag
    return masked_mean(0.5 * (ce_i2t + ce_t2i), mask)


def subset_entailment_loss(
    image: ArrayLike, text: ArrayLike, curv: ArrayLike, mask: ArrayLike, geometry: Geometry
) -> Array:
    """MERU's entailment loss on a subset: ``mean_mask max(0, ext(t_i, x_i) - aper(t_i))``
    (:meth:`~hac_jax.geometry.Geometry.cone_violation`). Shapes: ``(B, D), (B, D), (), (B,) ->
    ()``. MERU: Desai et al., ICML 2023.
    """
    return masked_mean(jax.nn.relu(geometry.cone_violation(text, image, curv)), mask)


def subset_model_loss(
    image: ArrayLike,
    text: ArrayLike,
    scale: ArrayLike,
    curv: ArrayLike,
    geometry: Geometry,
    mask: ArrayLike,
    *,
    entail_weight: float = 0.0,
) -> tuple[Array, dict[str, Array]]:
    """The model's own training loss on the sub-batch ``mask`` selects.

    The contrastive loss with logits ``s * geometry.pairwise_sim`` (``s * u @ v.T`` on CLIP's
    sphere, ``-s * d_L`` on MERU's hyperboloid), plus, where the geometry has cones,
    ``entail_weight`` times the entailment loss. With an all-True
    mask this equals :func:`hac_jax.models.losses.clip_loss` / ``meru_loss``.

    Shapes: ``(B, D), (B, D), (), (), Geometry, (B,) bool -> (loss, metrics)``.
    """
    logits = scale * geometry.pairwise_sim(image, text, curv)
    contrastive = subset_contrastive_loss(logits, mask)
    metrics = {"contrastive_loss": contrastive}
    loss = contrastive
    if geometry.has_cones:
        entail = subset_entailment_loss(image, text, curv, mask, geometry)
        metrics["entailment_loss"] = entail
        loss = add_term(loss, entail_weight, entail)
    metrics["loss"] = loss
    return loss, metrics
