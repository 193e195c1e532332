"""hac_jax.models.losses against an independent numpy cross-entropy and the PyTorch MERU forward
values (fed with the reference embeddings, so these tests do not depend on the models)."""

from __future__ import annotations

import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hac_jax import models
from hac_jax.geometry import lorentz
from hac_jax.models import losses

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "meru_torch"
RTOL = {"f32": 1e-4, "f64": 1e-10}
CLAMPED_SCALE = math.exp(4.6052)


def _np_contrastive(logits):
    logits = np.asarray(logits, np.float64)

    def ce(x):
        x = x - x.max(axis=1, keepdims=True)
        logp = x - np.log(np.exp(x).sum(axis=1, keepdims=True))
        return -np.mean(np.diag(logp))

    return 0.5 * (ce(logits) + ce(logits.T))


@pytest.fixture(scope="module")
def golden():
    return {kind: dict(np.load(FIXTURES / f"golden_tiny_{kind}.npz")) for kind in ("meru", "clip")}


def _run(prec, fn):
    """Runs ``fn`` with x64 on for float64 (results as numpy)."""
    if prec == "f64":
        with jax.enable_x64(True):
            return jax.tree.map(np.asarray, fn())
    return jax.tree.map(np.asarray, fn())


def test_contrastive_matches_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(7, 7)).astype(np.float32) * 5
    np.testing.assert_allclose(losses.contrastive_loss(logits), _np_contrastive(logits), rtol=1e-6)
    asym = logits + 3 * np.triu(np.ones((7, 7), np.float32))
    np.testing.assert_allclose(losses.contrastive_loss(asym), _np_contrastive(asym), rtol=1e-6)
    # Symmetric in its two directions.
    np.testing.assert_allclose(
        losses.contrastive_loss(asym), losses.contrastive_loss(asym.T), rtol=1e-6
    )
    # A perfectly separated batch has (almost) zero loss; a constant one has log(B).
    assert losses.contrastive_loss(100 * np.eye(4)) < 1e-30
    np.testing.assert_allclose(losses.contrastive_loss(np.ones((5, 5))), math.log(5), rtol=1e-6)


def test_contrastive_rejects_non_square():
    with pytest.raises(ValueError, match="square"):
        losses.contrastive_loss(np.zeros((3, 4)))


@pytest.mark.parametrize("prec", ["f32", "f64"])
def test_clip_loss_matches_reference(golden, prec):
    g = golden["clip"]
    out = {
        "image": g[f"{prec}/image_proj"],
        "text": g[f"{prec}/text_proj"],
        "logit_scale": g[f"{prec}/forward/logit_scale"],
        "curv": 1.0,
    }
    loss, metrics = _run(prec, lambda: losses.clip_loss(out))
    np.testing.assert_allclose(loss, g[f"{prec}/forward/loss"], rtol=RTOL[prec])
    assert sorted(metrics) == ["contrastive_loss", "logit_scale"]
    np.testing.assert_allclose(metrics["contrastive_loss"], loss, rtol=0)
    # Clamped case: the unit vectors do not depend on logit_scale, only s changes.
    out["logit_scale"] = g[f"{prec}/clamped/logit_scale"]
    np.testing.assert_allclose(out["logit_scale"], CLAMPED_SCALE, rtol=1e-6)
    loss, _ = _run(prec, lambda: losses.clip_loss(out))
    np.testing.assert_allclose(loss, g[f"{prec}/clamped/loss"], rtol=RTOL[prec])


@pytest.mark.parametrize("prec", ["f32", "f64"])
def test_meru_loss_matches_reference(golden, prec):
    g = golden["meru"]
    out = {
        "image": g[f"{prec}/image_proj"],
        "text": g[f"{prec}/text_proj"],
        "logit_scale": g[f"{prec}/forward/logit_scale"],
        "curv": g[f"{prec}/forward/curv"],
    }
    loss, metrics = _run(prec, lambda: losses.meru_loss(out, entail_weight=0.2))
    assert sorted(metrics) == ["contrastive_loss", "curv", "entailment_loss", "logit_scale"]
    for name in ("contrastive_loss", "entailment_loss", "logit_scale", "curv"):
        np.testing.assert_allclose(
            metrics[name], g[f"{prec}/forward/{name}"], rtol=RTOL[prec], err_msg=name
        )
    np.testing.assert_allclose(loss, g[f"{prec}/forward/loss"], rtol=RTOL[prec])


@pytest.mark.parametrize("prec", ["f32", "f64"])
def test_meru_loss_clamped_reference(golden, prec):
    """Reference ``clamped/*``: c = 10, alpha = 1, s = exp(4.6052), from the raw features."""
    g = golden["meru"]
    c = float(g[f"{prec}/clamped/curv"])
    np.testing.assert_allclose(c, 10.0, rtol=1e-6)

    def compute():
        out = {
            "image": lorentz.exp_map0(g[f"{prec}/image_raw"], c),
            "text": lorentz.exp_map0(g[f"{prec}/text_raw"], c),
            "logit_scale": g[f"{prec}/clamped/logit_scale"],
            "curv": c,
        }
        return losses.meru_loss(out)

    loss, metrics = _run(prec, compute)
    np.testing.assert_allclose(
        metrics["contrastive_loss"], g[f"{prec}/clamped/contrastive_loss"], rtol=RTOL[prec]
    )
    entail, ref = metrics["entailment_loss"], g[f"{prec}/clamped/entailment_loss"]
    if prec == "f32":
        np.testing.assert_allclose(entail, ref, rtol=RTOL[prec])
        np.testing.assert_allclose(loss, g[f"{prec}/clamped/loss"], rtol=RTOL[prec])
    else:
        # The angles sit within 1.4e-4 of pi, where MERU's float64 acos clip pins them to
        # pi - sqrt(2e-8); hac_jax.geometry.lorentz returns the unclipped angle (see its docs).
        assert 0 <= entail - ref <= math.sqrt(2e-8)
        np.testing.assert_allclose(loss, metrics["contrastive_loss"] + 0.2 * entail, rtol=1e-12)


def test_meru_loss_is_distance_contrastive_plus_entailment(golden):
    g = golden["meru"]
    img, txt = g["f32/image_proj"], g["f32/text_proj"]
    out = {"image": img, "text": txt, "logit_scale": np.float32(7.0), "curv": np.float32(0.6)}
    loss, metrics = losses.meru_loss(out, entail_weight=0.7)
    logits = -7.0 * np.asarray(lorentz.pairwise_dist(img, txt, 0.6))
    np.testing.assert_allclose(metrics["contrastive_loss"], _np_contrastive(logits), rtol=1e-5)
    angle = np.asarray(lorentz.oxy_angle(txt, img, 0.6))
    aperture = np.asarray(lorentz.half_aperture(txt, 0.6))
    entail = np.mean(np.maximum(angle - aperture, 0))
    np.testing.assert_allclose(metrics["entailment_loss"], entail, rtol=1e-6)
    np.testing.assert_allclose(loss, _np_contrastive(logits) + 0.7 * entail, rtol=1e-5)


def test_entailment_zero_inside_cone():
    # A caption near the origin has a wide cone; an image further out along it lies inside.
    text = np.array([[0.3, 0.0, 0.0]], np.float32)
    image = np.array([[2.0, 0.05, 0.0]], np.float32)
    assert losses.entailment_loss(text, image, 1.0) == 0.0
    # ... an image on the opposite side does not.
    assert losses.entailment_loss(text, -image, 1.0) > 1.0


def test_model_loss_picks_kind_and_weight(golden):
    g = golden["meru"]
    out = {
        "image": g["f32/image_proj"],
        "text": g["f32/text_proj"],
        "logit_scale": np.float32(20.0),
        "curv": np.float32(0.75),
    }
    cfg = models.get_arch("tiny", "meru", entail_weight=0.5)
    loss, metrics = losses.model_loss(cfg)(out)
    np.testing.assert_allclose(
        loss, metrics["contrastive_loss"] + 0.5 * metrics["entailment_loss"], rtol=1e-6
    )
    assert losses.model_loss(models.get_arch("tiny", "clip")) is losses.clip_loss
    with pytest.raises(ValueError, match="unknown model kind"):
        losses.model_loss(type("Cfg", (), {"kind": "poincare"})())


def test_gradients_finite_including_degenerate_pairs(golden):
    g = golden["meru"]
    img = jnp.asarray(g["f32/image_proj"])
    txt = jnp.asarray(g["f32/text_proj"])
    # Text 0 equals image 0 (zero distance, undefined oxy angle); text 1 equals image 0 too.
    txt = txt.at[0].set(img[0]).at[1].set(img[0])

    def total(img, txt, log_s, log_c):
        out = {"image": img, "text": txt, "logit_scale": jnp.exp(log_s), "curv": jnp.exp(log_c)}
        return losses.meru_loss(out)[0]

    grads = jax.jit(jax.grad(total, argnums=(0, 1, 2, 3)))(img, txt, 3.0, -0.3)
    assert all(np.all(np.isfinite(x)) for x in grads)
    assert all(np.any(x != 0) for x in grads)
