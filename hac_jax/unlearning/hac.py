"""Hyperbolic Alignment Calibration (HAC) on MERU.

HAC (Pujol Vidal et al., CVPRW 2025, arXiv 2503.15166) adapts AC to MERU and names two hyperbolic
components, entailment calibration and norm regularization; its equations are not public. The loss
below is this project's definition (docs/METHOD.md), every term switchable by its weight:

    L_HAC = L_ctr^H(R u F; targets i->i on R, i->pi(i) on F; weights 1 on R, alpha on F;
                    logits -s d_L)
          + lambda_ent0   * mean_R max(0, ext(v_i, u_i) - aper(v_i))          # MERU's, on R
          + beta          * mean_F max(0, m_d - d_L(u_i, v_i))                 # bounded pos. calib.
                                  (pos_target="relative": mean_F max(0, mean_{j in R} d_L(u_i, v_j)
                                                              - d_L(u_i, v_i) + m), see below)
          + lambda_ec     * mean_F max(0, aper(v_i) + delta - ext(v_i, u_i))   # entailment calib.
          + lambda_parent * parent-cone term (policy keep / push / ignore, below)
          + lambda_n      * mean_R [(|u_i| - |u_i^0|)^2 + (|v_i| - |v_i^0|)^2]  # norm reg.
          + lambda_nf     * mean_F (d_L(O, v_i) - r_f)^2                        # forget-norm target

``u, v`` are image and text embeddings (hyperboloid space components), ``u^0, v^0`` those of the
frozen original model, ``ext`` MERU's exterior angle
(:func:`hac_jax.geometry.lorentz.oxy_angle`) and
``aper`` the half-aperture of the entailment cone. The parent-cone term uses the embedding
``w_i`` of the parent concept of each forget pair (e.g. "footwear" for "sneaker"): its prompt
ensemble pooled as zero-shot pools (:meth:`~hac_jax.geometry.Geometry.pool_prompts`), the same
cone the audits use, computed once per step for the few parent concepts:

* ``keep``: ``mean_F max(0, ext(w_i, u_i) - aper(w_i))`` (MERU's entailment loss of the forget
  image w.r.t. its parent: it stays inside the parent's cone);
* ``push``: ``mean_F max(0, aper(w_i) + delta - ext(w_i, u_i))`` (it leaves the parent's cone too);
* ``ignore``: no term (and no parent embeddings needed).

Positive calibration's target (``pos_target``): ``"bounded"`` pushes each matched forget pair to
the fixed distance ``m_d``; ``"relative"`` pushes it until its distance is at least the image's
mean distance to the batch's retain captions plus ``pos_margin``
(:func:`hac_jax.unlearning.common.relative_excess` on ``-d_L``), a target that moves with the
image and needs no scale of its own.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import Array
from jax.typing import ArrayLike

from hac_jax.geometry import LORENTZ, Geometry, lorentz, sphere
from hac_jax.unlearning import common
from hac_jax.unlearning.ac import (
    model_outputs,
    negative_calibration,
    validate_derangement,
    validate_forget_negatives,
    validate_pos_target,
    validate_weights,
    wrong_positives_from_cfg,
)
from hac_jax.unlearning.registry import register

__all__ = [
    "PARENT_POLICIES",
    "POS_TARGETS",
    "bounded_positive_calibration",
    "caption_cone",
    "entailment_calibration",
    "forget_norm_loss",
    "hac_loss",
    "hac_loss_from_embeddings",
    "norm_regularization",
    "parent_cone_loss",
    "retain_entailment_loss",
]

PARENT_POLICIES = ("keep", "push", "ignore")
# Positive calibration: to the fixed distance margin_d, or relative to the retain captions.
POS_TARGETS = ("bounded", "relative")


def caption_cone(u: ArrayLike, v: ArrayLike, curv: ArrayLike) -> Array:
    """How far each image lies outside its caption's entailment cone, ``ext(v_i, u_i) -
    aper(v_i)`` (:meth:`~hac_jax.geometry.Geometry.cone_violation`; <= 0 inside). Shapes:
    ``(B, D), (B, D), () -> (B,)``."""
    return LORENTZ.cone_violation(v, u, curv)


def retain_entailment_loss(
    u: ArrayLike,
    v: ArrayLike,
    is_forget: ArrayLike,
    curv: ArrayLike,
    *,
    cone: Array | None = None,
    is_retain: ArrayLike | None = None,
) -> Array:
    """MERU's entailment loss on the retain pairs: ``mean_R max(0, ext(v_i, u_i) - aper(v_i))``.

    Shapes: ``(B, D), (B, D), (B,) bool, () -> ()``. ``cone``: :func:`caption_cone` of ``(u, v)``
    when already computed (shared with :func:`entailment_calibration`). ``is_retain``: the
    retain pairs (default: every non-forget pair).
    """
    violation = caption_cone(u, v, curv) if cone is None else cone
    retain = ~jnp.asarray(is_forget, bool) if is_retain is None else jnp.asarray(is_retain, bool)
    return common.masked_mean(jax.nn.relu(violation), retain)


def bounded_positive_calibration(
    u: ArrayLike, v: ArrayLike, is_forget: ArrayLike, curv: ArrayLike, margin: float
) -> Array:
    """``mean_F max(0, m_d - d_L(u_i, v_i))``: pushes matched forget pairs apart up to distance
    ``m_d`` (hyperbolic distance is unbounded, so without the margin the term runs away).

    Shapes: ``(B, D), (B, D), (B,) bool, () -> ()``.
    """
    d = lorentz.dist(u, v, curv)
    return common.masked_mean(jax.nn.relu(margin - d), is_forget)


def entailment_calibration(
    u: ArrayLike,
    v: ArrayLike,
    is_forget: ArrayLike,
    curv: ArrayLike,
    delta: float,
    *,
    cone: Array | None = None,
) -> Array:
    """``mean_F max(0, aper(v_i) + delta - ext(v_i, u_i))``: the forget image leaves its caption's
    entailment cone by an angular margin ``delta >= 0`` (MERU's entailment loss turned around).

    Shapes: ``(B, D), (B, D), (B,) bool, () -> ()``. ``cone``: as in
    :func:`retain_entailment_loss`.
    """
    violation = caption_cone(u, v, curv) if cone is None else cone
    return common.masked_mean(jax.nn.relu(delta - violation), is_forget)


def parent_cone_loss(
    u: ArrayLike,
    parent_text: ArrayLike,
    is_forget: ArrayLike,
    curv: ArrayLike,
    policy: str,
    delta: float,
) -> Array:
    """The parent-cone term of the forget images (module docstring); 0 for ``"ignore"``.

    Shapes: ``(B, D) images, (B, D) parent-concept text embeddings, (B,) bool, () -> ()``.
    """
    if policy not in PARENT_POLICIES:
        raise ValueError(f"parent_policy must be one of {PARENT_POLICIES}, got {policy!r}")
    if policy == "ignore":
        return jnp.zeros((), jnp.result_type(u, 1.0))
    violation = LORENTZ.cone_violation(parent_text, u, curv)
    if policy == "keep":
        return common.masked_mean(jax.nn.relu(violation), is_forget)
    return common.masked_mean(jax.nn.relu(delta - violation), is_forget)


def norm_regularization(
    u: ArrayLike,
    v: ArrayLike,
    u0: ArrayLike,
    v0: ArrayLike,
    is_forget: ArrayLike,
    is_retain: ArrayLike | None = None,
) -> Array:
    """``mean_R [(|u_i| - |u_i^0|)^2 + (|v_i| - |v_i^0|)^2]`` with ``u^0, v^0`` from the frozen
    original model (treated as constants). The norm of space components is monotone in the
    distance to the origin, so this keeps the retained hierarchy's levels in place.

    Shapes: ``(B, D) x 4, (B,) bool -> ()``; ``is_retain`` as in
    :func:`retain_entailment_loss`.
    """
    n_u0 = jax.lax.stop_gradient(sphere.norm(u0))
    n_v0 = jax.lax.stop_gradient(sphere.norm(v0))
    sq = (sphere.norm(u) - n_u0) ** 2 + (sphere.norm(v) - n_v0) ** 2
    retain = ~jnp.asarray(is_forget, bool) if is_retain is None else jnp.asarray(is_retain, bool)
    return common.masked_mean(sq, retain)


def forget_norm_loss(
    v: ArrayLike, is_forget: ArrayLike, curv: ArrayLike, target_radius: float
) -> Array:
    """``mean_F (d_L(O, v_i) - r_f)^2``: moves forget texts to distance ``r_f`` from the origin.

    Shapes: ``(B, D), (B,) bool, () -> ()``.
    """
    r = lorentz.dist_to_origin(v, curv)
    return common.masked_mean((r - target_radius) ** 2, is_forget)


def hac_loss_from_embeddings(
    u: ArrayLike,
    v: ArrayLike,
    is_forget: ArrayLike,
    scale: ArrayLike,
    curv: ArrayLike,
    *,
    perm: ArrayLike,
    valid: ArrayLike | None = None,
    is_retain: ArrayLike | None = None,
    alpha: float = 1.0,
    beta: float = 1.0,
    margin_d: float = 1.0,
    lambda_ent0: float = 0.2,
    lambda_ec: float = 1.0,
    delta: float = 0.0,
    parent_policy: str = "ignore",
    lambda_parent: float = 1.0,
    parent_text: ArrayLike | None = None,
    lambda_n: float = 1.0,
    u0: ArrayLike | None = None,
    v0: ArrayLike | None = None,
    lambda_nf: float = 0.0,
    r_f: float = 0.0,
    pos_target: str = "bounded",
    pos_margin: float = 0.0,
    pos_reference: str = "mean",
    pos_quantile: float = 0.5,
    forget_negatives: bool = True,
) -> tuple[Array, dict[str, Array]]:
    """``L_HAC`` on MERU embeddings (module docstring).

    Args:
      u, v: ``(B, D)`` image / text embeddings (hyperboloid space components).
      is_forget: ``(B,)`` bool.
      scale, curv: logit scale ``s`` and curvature ``c`` (exponentiated, clamped).
      perm, valid: the wrong positives (:func:`common.wrong_positives`).
      is_retain: ``(B,)`` bool, the retain pairs (default: every non-forget pair; pairs in
        neither set take part in no term).
      alpha, beta, margin_d, lambda_ent0, lambda_ec, delta, lambda_parent, lambda_n, lambda_nf,
        r_f: the weights and margins of the terms, Python numbers (static under ``jit``); a
        weight of 0 removes its term from the loss.
      parent_policy: ``"keep"``, ``"push"`` or ``"ignore"``.
      parent_text: ``(B, D)`` parent-concept text embeddings (needed unless the policy is
        ``"ignore"`` or ``lambda_parent == 0``).
      u0, v0: ``(B, D)`` embeddings of the frozen original model (needed when ``lambda_n != 0``).
      pos_target, pos_margin, pos_reference, pos_quantile: positive calibration's target,
        ``"bounded"`` (to ``margin_d``) or ``"relative"`` (``pos_margin`` beyond the mean, or
        the ``pos_quantile``-th, similarity to the retain captions;
        :func:`common.relative_excess`).
      forget_negatives: whether the forget pairs are negatives in the retain InfoNCE
        (:func:`hac_jax.unlearning.ac.negative_calibration`).

    Returns:
      ``(loss, metrics)``: ``loss`` and the unweighted value of every computed term (``ctr``,
      ``ctr_retain``, ``ctr_forget``, ``entail_retain``, ``pos_calib``, ``entail_calib``,
      ``parent_cone``, ``norm_reg``, ``forget_norm``) plus ``num_forget``.
    """
    if parent_policy not in PARENT_POLICIES:
        raise ValueError(f"parent_policy must be one of {PARENT_POLICIES}, got {parent_policy!r}")
    if margin_d < 0 or delta < 0:
        raise ValueError(f"margin_d and delta must be >= 0, got {margin_d} and {delta}")
    if pos_target not in POS_TARGETS:
        raise ValueError(f"pos_target must be one of {POS_TARGETS}, got {pos_target!r}")
    use_parent = parent_policy != "ignore" and lambda_parent != 0
    if use_parent and parent_text is None:
        raise ValueError(
            f"parent_policy={parent_policy!r} needs parent_text (parent-concept text embeddings); "
            "pass them or set parent_policy='ignore'"
        )
    if lambda_n != 0 and (u0 is None or v0 is None):
        raise ValueError(
            "lambda_n != 0 needs u0 and v0 (embeddings of the frozen original model); "
            "pass them or set lambda_n=0"
        )
    is_forget = jnp.asarray(is_forget, bool)
    loss, metrics = negative_calibration(
        u, v, is_forget, scale, curv, LORENTZ, alpha, perm, valid, is_retain, forget_negatives
    )
    cone = caption_cone(u, v, curv)  # one exterior-angle computation for both cone terms
    if pos_target == "relative":
        retain = ~is_forget if is_retain is None else jnp.asarray(is_retain, bool)
        sims = LORENTZ.pairwise_sim(u, v, curv)  # -d_L
        pos = common.masked_mean(
            common.relative_excess(
                sims,
                is_forget,
                retain,
                pos_margin,
                reference=pos_reference,
                quantile=pos_quantile,
            ),
            is_forget,
        )
    else:
        pos = bounded_positive_calibration(u, v, is_forget, curv, margin_d)
    terms = {
        "entail_retain": (
            lambda_ent0,
            retain_entailment_loss(u, v, is_forget, curv, cone=cone, is_retain=is_retain),
        ),
        "pos_calib": (beta, pos),
        "entail_calib": (
            lambda_ec,
            entailment_calibration(u, v, is_forget, curv, delta, cone=cone),
        ),
        "forget_norm": (lambda_nf, forget_norm_loss(v, is_forget, curv, r_f)),
    }
    if parent_text is not None and parent_policy != "ignore":
        terms["parent_cone"] = (
            lambda_parent if use_parent else 0.0,
            parent_cone_loss(u, parent_text, is_forget, curv, parent_policy, delta),
        )
    if u0 is not None and v0 is not None:
        terms["norm_reg"] = (lambda_n, norm_regularization(u, v, u0, v0, is_forget, is_retain))
    for name, (weight, value) in terms.items():
        loss = common.add_term(loss, weight, value)
        metrics[name] = value
    metrics["loss"] = loss
    metrics["num_forget"] = jnp.sum(is_forget.astype(jnp.int32))
    return loss, metrics


def _validate(cfg: Any) -> None:
    validate_derangement(cfg)
    validate_weights(
        cfg, ("alpha", "beta", "lambda_ent0", "lambda_ec", "lambda_parent", "lambda_n", "lambda_nf")
    )
    if cfg.parent_policy not in PARENT_POLICIES:
        raise ValueError(
            f"parent_policy must be one of {PARENT_POLICIES}, got {cfg.parent_policy!r}"
        )
    if cfg.margin_d < 0 or cfg.delta < 0:
        raise ValueError(f"margin_d and delta must be >= 0, got {cfg.margin_d} and {cfg.delta}")
    validate_pos_target(cfg, POS_TARGETS)
    validate_forget_negatives(cfg)


def _uses_parent(cfg: Any) -> bool:
    """Whether HAC under ``cfg`` places the forget images against their parent's cone."""
    return cfg.parent_policy != "ignore" and cfg.lambda_parent != 0


def _uses_frozen_model(cfg: Any) -> bool:
    """Whether HAC under ``cfg`` regularizes norms against the frozen original."""
    return cfg.lambda_n != 0


@register(
    "hac",
    # The default is the documented sweep's choice on sandal against Retrain (docs/SWEEP.md,
    # results/sweep_hac_meru*.json): alpha, beta (stage 1), margin_d (stage 2), the relative
    # target with its margin, the parent cone left to the data and the forget pairs out of the
    # retain InfoNCE (stages 3-4), and the loop's lr and steps.
    defaults=dict(
        alpha=0.0,
        beta=3.0,
        margin_d=1.5,
        # positive calibration's target (POS_TARGETS): "bounded" uses margin_d, "relative"
        # pos_margin
        pos_target="relative",
        pos_margin=0.25,
        pos_reference="mean",  # "relative": the retain captions' mean or pos_quantile-th sim
        pos_quantile=0.5,
        # the forget pairs are negatives in the retain InfoNCE (AC's); False: retain pairs only
        forget_negatives=False,
        lambda_ent0=0.2,
        lambda_ec=1.0,
        delta=0.0,
        # the forget image's place against its parent's cone: "ignore" leaves it to the data,
        # "keep" holds it inside, "push" sends it out (PARENT_POLICIES)
        parent_policy="ignore",
        lambda_parent=1.0,
        parent_stop_gradient=True,
        lambda_n=10.0,
        lambda_nf=0.0,
        r_f=0.0,
        # the pool of negative calibration's wrong positives: AC's own derangement of the
        # forget pairs (inactive at alpha = 0, the sweep's choice; "retain"/"sibling" draw
        # captions of retained concepts instead)
        wrong_positive="forget",
        derangement="random",
        index_shift=1,
    ),
    loop=dict(lr=1e-4, steps=100),
    frozen_model_used=_uses_frozen_model,
    parent_prompts_used=_uses_parent,
    needs_frozen_model=True,
    needs_parent_prompts=True,
    needs_forget=True,
    geometries=("lorentz",),
    validate=_validate,
    description="Hyperbolic AC: AC on -d_L + entailment calibration + norm regularization (MERU)",
)
def hac_loss(
    params: Any,
    frozen_params: Any,
    batch: Any,
    rng: Array | None,
    *,
    model: Any,
    cfg: Any,
    geometry: Geometry,
    step: Any = 0,
    parent_prompt_tokens: Any = None,
) -> tuple[Array, dict[str, Array]]:
    """HAC on a MERU model: the registry signature (see :mod:`hac_jax.unlearning.registry`).

    The ``keep``/``push`` policies need ``parent_prompt_tokens`` (``(R, P, L)`` int32, bound by
    the registry) and ``batch["parent"]`` (``(B,)``, each pair's row); the pooled parent
    embeddings get no gradient when ``cfg.parent_stop_gradient``. ``frozen_params`` (the
    original model) is needed when ``lambda_n != 0``.
    """
    del step
    if geometry.name != "lorentz":
        raise ValueError(f"HAC needs a MERU (lorentz) model, got geometry {geometry.name!r}")
    use_parent = _uses_parent(cfg)
    if use_parent and (parent_prompt_tokens is None or "parent" not in batch):
        raise ValueError(
            f"parent_policy={cfg.parent_policy!r} needs the parent prompts (bound tokens and "
            "batch['parent'], each pair's row); add them or set parent_policy='ignore'"
        )
    if _uses_frozen_model(cfg) and frozen_params is None:
        raise ValueError("lambda_n != 0 needs frozen_params (the original model's parameters)")
    out = model_outputs(model, params, batch)
    is_forget, is_retain = common.pair_masks(batch)
    perm, valid = wrong_positives_from_cfg(batch, rng, cfg)
    parent_text = None
    if use_parent:
        parents = model.apply(
            {"params": params}, parent_prompt_tokens, method="encode_prompt_ensembles"
        )
        if cfg.parent_stop_gradient:
            # The parent's cone is the reference the forget image is placed against; moving the
            # parent text instead would shift the cone of every retained sibling.
            parents = jax.lax.stop_gradient(parents)
        parent_text = parents[jnp.asarray(batch["parent"])]
    u0 = v0 = None
    if _uses_frozen_model(cfg):
        frozen = model_outputs(model, frozen_params, batch)
        u0 = jax.lax.stop_gradient(frozen["image"])
        v0 = jax.lax.stop_gradient(frozen["text"])
    loss, metrics = hac_loss_from_embeddings(
        out["image"],
        out["text"],
        is_forget,
        out["logit_scale"],
        out["curv"],
        perm=perm,
        valid=valid,
        is_retain=is_retain,
        alpha=cfg.alpha,
        beta=cfg.beta,
        margin_d=cfg.margin_d,
        lambda_ent0=cfg.lambda_ent0,
        lambda_ec=cfg.lambda_ec,
        delta=cfg.delta,
        parent_policy=cfg.parent_policy,
        lambda_parent=cfg.lambda_parent,
        parent_text=parent_text,
        lambda_n=cfg.lambda_n,
        u0=u0,
        v0=v0,
        lambda_nf=cfg.lambda_nf,
        r_f=cfg.r_f,
        pos_target=cfg.pos_target,
        pos_margin=cfg.pos_margin,
        pos_reference=cfg.pos_reference,
        pos_quantile=cfg.pos_quantile,
        forget_negatives=cfg.forget_negatives,
    )
    metrics["logit_scale"] = out["logit_scale"]
    metrics["curv"] = out["curv"]
    return loss, metrics
