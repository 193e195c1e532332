"""Alignment Calibration (AC) for image-text pairs, on either geometry.

AC (Wang et al., "Alignment Calibration: Machine Unlearning for Contrastive Learning under
Auditing", arXiv 2406.03603) unlearns a forget set F while training on a retain set R with

    L_AC = [sum_{i in R} l_i + alpha sum_{i in F} l_i] / (|R| + alpha |F|)    # negative calibration
         + beta * (N_f / N) * mean_{i in F} sim(u_i, v_i)                    # positive calibration

where ``l_i`` is the symmetric InfoNCE of the pair ``(u_i, v_{pi(i)})`` (``pi`` = identity on R and
a derangement of the forget pairs of the batch), logits ``s * sim`` over the whole batch, ``sim`` =
dot product on the sphere (CLIP) and ``-d_L`` on the hyperboloid (MERU; the AC-on-MERU ablation),
``N`` the batch size and ``N_f`` its number of forget pairs (docs/METHOD.md). AC's public code
averages the positive term over the forget pairs without the ``N_f / N`` factor;
``pos_reduction="mean"`` selects that form. ``pos_target="relative"`` replaces ``sim(u_i, v_i)``
by its excess over the image's mean similarity to the batch's retain captions,
``max(0, sim(u_i, v_i) - mean_{j in R} sim(u_i, v_j) + m)`` (:func:`common.relative_excess`):
the push stops where an unrelated caption would sit instead of driving the pair below every
other caption. On MERU ``-d_L`` is unbounded, so this positive term
can run away; HAC (:mod:`hac_jax.unlearning.hac`) bounds it with a margin.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from jax import Array
from jax.typing import ArrayLike

from hac_jax.geometry import Geometry
from hac_jax.unlearning import common
from hac_jax.unlearning.registry import register

__all__ = [
    "POS_REDUCTIONS",
    "POS_TARGETS",
    "DERANGEMENTS",
    "ac_loss",
    "ac_loss_from_embeddings",
    "derangement_from_cfg",
    "model_outputs",
    "negative_calibration",
    "positive_calibration",
    "validate_derangement",
    "wrong_positives_from_cfg",
]

POS_REDUCTIONS = ("fraction", "mean")
# What positive calibration lowers: the matched similarity itself (AC), or its excess over the
# image's mean similarity to retained concepts' captions (common.relative_excess).
POS_TARGETS = ("absolute", "relative")


def negative_calibration(
    u: ArrayLike,
    v: ArrayLike,
    is_forget: ArrayLike,
    scale: ArrayLike,
    curv: ArrayLike,
    geometry: Geometry,
    alpha: float,
    perm: ArrayLike,
    valid: ArrayLike | None = None,
    is_retain: ArrayLike | None = None,
    forget_negatives: bool = True,
) -> tuple[Array, dict[str, Array]]:
    """AC's weighted InfoNCE with wrong positives on the forget pairs.

    Args:
      u, v: ``(B, D)`` image and text embeddings.
      is_forget: ``(B,)`` bool.
      scale: the logit scale ``s`` (already exponentiated and clamped).
      curv: curvature (ignored on the sphere).
      geometry: ``LORENTZ`` or ``SPHERE``.
      alpha: weight of the forget pairs (AC's gamma).
      perm: ``(B,)`` int targets from :func:`common.wrong_positives`.
      valid: ``(B,)`` bool, forget pairs that got a wrong partner (default: all forget pairs).
        Forget pairs outside it (a lone forget pair in a batch) are left out of the loss.
      is_retain: ``(B,)`` bool, the retain pairs (default: every non-forget pair). Pairs in
        neither set are no positives and no negatives (:func:`common.pair_masks`).
      forget_negatives: whether the forget pairs' images and captions are negatives of the
        retain pairs (AC's code: True). False (only with ``alpha == 0``): the term is the
        contrastive loss of the retain pairs alone, the data Retrain trains on, so it pushes
        nothing away from the forget pairs.

    Returns:
      ``(loss, metrics)`` with ``ctr`` (the loss), ``ctr_retain`` / ``ctr_forget`` (unweighted
      means of ``l_i`` over each part).
    """
    is_forget = jnp.asarray(is_forget, bool)
    valid = is_forget if valid is None else jnp.asarray(valid, bool)
    retain = ~is_forget if is_retain is None else jnp.asarray(is_retain, bool)
    if not forget_negatives and alpha != 0:
        raise ValueError(f"forget_negatives=False needs alpha=0, got alpha={alpha}")
    logits = scale * geometry.pairwise_sim(u, v, curv)
    weights = jnp.where(retain, 1.0, jnp.where(valid, alpha, 0.0)).astype(logits.dtype)
    if forget_negatives:
        active = None if is_retain is None else retain | is_forget
    else:
        active = retain
    loss, per_sample = common.weighted_symmetric_infonce(logits, perm, weights, active)
    return loss, {
        "ctr": loss,
        "ctr_retain": common.masked_mean(per_sample, retain),
        "ctr_forget": common.masked_mean(per_sample, valid),
    }


def positive_calibration(
    u: ArrayLike,
    v: ArrayLike,
    is_forget: ArrayLike,
    curv: ArrayLike,
    geometry: Geometry,
    reduction: str = "fraction",
    *,
    target: str = "absolute",
    margin: float = 0.0,
    is_retain: ArrayLike | None = None,
    reference: str = "mean",
    quantile: float = 0.5,
) -> Array:
    """AC's positive-calibration term (before its weight beta): ``(B, D), (B, D), (B,) -> ()``.

    ``"fraction"``: ``(N_f / N) * mean_F sim(u_i, v_i) = sum_F sim(u_i, v_i) / N`` (METHOD.md);
    ``"mean"``: ``mean_F sim(u_i, v_i)`` (AC's code). 0 when the batch has no forget pair.
    ``target="relative"``: ``sim(u_i, v_i)`` is replaced by
    ``max(0, sim(u_i, v_i) - mean_{j in R} sim(u_i, v_j) + margin)`` over the retain captions
    ``is_retain`` (default: every non-forget pair); ``reference="quantile"`` takes their
    ``quantile``-th similarity instead of the mean (:func:`common.relative_excess`).
    """
    if reduction not in POS_REDUCTIONS:
        raise ValueError(f"pos_reduction must be one of {POS_REDUCTIONS}, got {reduction!r}")
    if target not in POS_TARGETS:
        raise ValueError(f"pos_target must be one of {POS_TARGETS}, got {target!r}")
    is_forget = jnp.asarray(is_forget, bool)
    if target == "relative":
        retain = ~is_forget if is_retain is None else jnp.asarray(is_retain, bool)
        sims = geometry.pairwise_sim(u, v, curv)
        matched = common.relative_excess(
            sims, is_forget, retain, margin, reference=reference, quantile=quantile
        )
    else:
        matched = geometry.sim(u, v, curv)
    if reduction == "mean":
        return common.masked_mean(matched, is_forget)
    return common.masked_sum(matched, is_forget) / matched.shape[0]


def ac_loss_from_embeddings(
    u: ArrayLike,
    v: ArrayLike,
    is_forget: ArrayLike,
    scale: ArrayLike,
    curv: ArrayLike,
    geometry: Geometry,
    alpha: float,
    beta: float,
    perm: ArrayLike,
    *,
    valid: ArrayLike | None = None,
    is_retain: ArrayLike | None = None,
    pos_reduction: str = "fraction",
    pos_target: str = "absolute",
    pos_margin: float = 0.0,
    pos_reference: str = "mean",
    pos_quantile: float = 0.5,
    forget_negatives: bool = True,
) -> tuple[Array, dict[str, Array]]:
    """``L_AC`` on embeddings (module docstring). Shapes: ``(B, D), (B, D), (B,) bool -> ()``.

    Returns ``(loss, metrics)``; metrics hold ``loss``, ``ctr``, ``ctr_retain``, ``ctr_forget``,
    ``pos_calib`` (the unweighted positive term) and ``num_forget``. With no forget pair in the
    batch the loss is the plain symmetric contrastive loss of the model.
    """
    loss, metrics = negative_calibration(
        u, v, is_forget, scale, curv, geometry, alpha, perm, valid, is_retain, forget_negatives
    )
    pos = positive_calibration(
        u,
        v,
        is_forget,
        curv,
        geometry,
        pos_reduction,
        target=pos_target,
        margin=pos_margin,
        is_retain=is_retain,
        reference=pos_reference,
        quantile=pos_quantile,
    )
    loss = common.add_term(loss, beta, pos)
    metrics.update(
        loss=loss,
        pos_calib=pos,
        num_forget=jnp.sum(jnp.asarray(is_forget, jnp.int32)),
    )
    return loss, metrics


def derangement_from_cfg(is_forget: Array, rng: Array | None, cfg: Any) -> tuple[Array, Array]:
    """``pi`` of the ``forget`` pool as the method config asks: ``cfg.derangement`` =
    ``"random"`` (uses ``rng``) or ``"shift"`` (uses ``cfg.index_shift``)."""
    mode = cfg.derangement
    if mode == "random":
        if rng is None:
            raise ValueError("derangement='random' needs an rng key; pass one or use 'shift'")
        return common.forget_derangement(is_forget, rng=rng)
    if mode == "shift":
        return common.forget_derangement(is_forget, shift=int(cfg.index_shift))
    raise ValueError(f"derangement must be 'random' or 'shift', got {mode!r}")


def wrong_positives_from_cfg(batch: Any, rng: Array | None, cfg: Any) -> tuple[Array, Array]:
    """The wrong positives of a batch's forget pairs from ``cfg.wrong_positive`` (the pool,
    :data:`common.WRONG_POSITIVE_POOLS`); the ``forget`` pool uses ``cfg.derangement``.
    Returns ``(targets (B,), valid (B,))`` (:func:`common.wrong_positives`)."""
    is_forget, is_retain = common.pair_masks(batch)
    if cfg.wrong_positive == "forget":
        return derangement_from_cfg(is_forget, rng, cfg)
    return common.wrong_positives(
        is_forget, is_retain, batch["label"], batch["group"], cfg.wrong_positive, rng=rng
    )


def model_outputs(model: Any, params: Any, batch: Any) -> dict[str, Array]:
    """``model.apply`` on a batch's images and tokens.

    Returns ``{"image", "text", "logit_scale", "curv"}`` (the model's output dict).
    """
    return model.apply({"params": params}, batch["image"], batch["tokens"])


DERANGEMENTS = ("random", "shift")


def validate_derangement(cfg: Any) -> None:
    """Checks ``cfg.wrong_positive``, ``cfg.derangement`` / ``cfg.index_shift`` (shared by AC
    and HAC)."""
    if cfg.wrong_positive not in common.WRONG_POSITIVE_POOLS:
        raise ValueError(
            f"wrong_positive must be one of {common.WRONG_POSITIVE_POOLS}, got "
            f"{cfg.wrong_positive!r}"
        )
    if cfg.derangement not in DERANGEMENTS:
        raise ValueError(f"derangement must be one of {DERANGEMENTS}, got {cfg.derangement!r}")
    if cfg.derangement == "shift" and int(cfg.index_shift) < 1:
        raise ValueError(f"index_shift must be >= 1, got {cfg.index_shift!r}")


def validate_weights(cfg: Any, names: tuple[str, ...]) -> None:
    """Loss weights must be finite and >= 0 (0 switches a term off)."""
    for name in names:
        value = float(cfg[name])
        if not value >= 0 or value == float("inf"):
            raise ValueError(f"{name} must be a finite weight >= 0, got {cfg[name]!r}")


def _validate(cfg: Any) -> None:
    validate_derangement(cfg)
    validate_weights(cfg, ("alpha", "beta"))
    if cfg.pos_reduction not in POS_REDUCTIONS:
        raise ValueError(
            f"pos_reduction must be one of {POS_REDUCTIONS}, got {cfg.pos_reduction!r}"
        )
    validate_pos_target(cfg, POS_TARGETS)
    validate_forget_negatives(cfg)


def validate_forget_negatives(cfg: Any) -> None:
    """``forget_negatives=False`` leaves the forget pairs out of the InfoNCE, which only
    works when negative calibration is off (AC and HAC)."""
    if not cfg.forget_negatives and float(cfg.alpha) != 0:
        raise ValueError(f"forget_negatives=False needs alpha=0, got alpha={cfg.alpha}")


def validate_pos_target(cfg: Any, targets: tuple[str, ...]) -> None:
    """Checks ``cfg.pos_target`` against ``targets``, ``cfg.pos_margin >= 0``,
    ``cfg.pos_reference`` and ``cfg.pos_quantile`` in [0, 1] (AC and HAC)."""
    if cfg.pos_target not in targets:
        raise ValueError(f"pos_target must be one of {targets}, got {cfg.pos_target!r}")
    if not float(cfg.pos_margin) >= 0:
        raise ValueError(f"pos_margin must be >= 0, got {cfg.pos_margin!r}")
    if cfg.pos_reference not in common.POS_REFERENCES:
        raise ValueError(
            f"pos_reference must be one of {common.POS_REFERENCES}, got {cfg.pos_reference!r}"
        )
    if not 0.0 <= float(cfg.pos_quantile) <= 1.0:
        raise ValueError(f"pos_quantile must be in [0, 1], got {cfg.pos_quantile!r}")


@register(
    "ac",
    # The default is the documented sweep's choice on sandal against Retrain (docs/SWEEP.md,
    # results/sweep_ac_clip.json): alpha, beta and the loop's lr and steps (stage 1).
    defaults=dict(
        alpha=0.0,
        beta=3.0,
        # the pool of negative calibration's wrong positives: AC's own derangement of the
        # forget pairs (inactive at alpha = 0, the sweep's choice; "retain"/"sibling" draw
        # captions of retained concepts instead)
        wrong_positive="forget",
        derangement="random",
        index_shift=1,
        pos_reduction="fraction",
        # what positive calibration lowers (POS_TARGETS) and, for "relative", the margin below
        # the retained captions' mean similarity where it stops
        pos_target="absolute",
        pos_margin=0.0,
        # the retained captions' level of "relative": their mean or a quantile
        pos_reference="mean",
        pos_quantile=0.5,
        # the forget pairs are negatives in the retain InfoNCE (AC's code); False: it sees the
        # retain pairs alone (needs alpha = 0)
        forget_negatives=True,
    ),
    loop=dict(lr=1e-4, steps=25),
    needs_forget=True,
    validate=_validate,
    description="Alignment Calibration (negative + positive calibration), either geometry",
)
def ac_loss(
    params: Any,
    frozen_params: Any,
    batch: Any,
    rng: Array | None,
    *,
    model: Any,
    cfg: Any,
    geometry: Geometry,
    step: Any = 0,
) -> tuple[Array, dict[str, Array]]:
    """AC on a model: the registry signature (see :mod:`hac_jax.unlearning.registry`)."""
    del frozen_params, step
    out = model_outputs(model, params, batch)
    is_forget, is_retain = common.pair_masks(batch)
    perm, valid = wrong_positives_from_cfg(batch, rng, cfg)
    loss, metrics = ac_loss_from_embeddings(
        out["image"],
        out["text"],
        is_forget,
        out["logit_scale"],
        out["curv"],
        geometry,
        cfg.alpha,
        cfg.beta,
        perm,
        valid=valid,
        is_retain=is_retain,
        pos_reduction=cfg.pos_reduction,
        pos_target=cfg.pos_target,
        pos_margin=cfg.pos_margin,
        pos_reference=cfg.pos_reference,
        pos_quantile=cfg.pos_quantile,
        forget_negatives=cfg.forget_negatives,
    )
    metrics["logit_scale"] = out["logit_scale"]
    metrics["curv"] = out["curv"]
    return loss, metrics
