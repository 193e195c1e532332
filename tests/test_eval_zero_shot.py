"""Zero-shot and retrieval evaluators on hand-checkable cases."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hac_jax.eval import metrics
from hac_jax.eval import zero_shot as ev
from hac_jax.geometry import LORENTZ, SPHERE, lorentz
from hac_jax.models import scalars_at_use


def _np_exp_map0(v, c):
    """Independent float64 exp_map0: sinh(sqrt(c)|v|) / (sqrt(c)|v|) * v."""
    v = np.asarray(v, np.float64)
    r = math.sqrt(c) * np.linalg.norm(v, axis=-1, keepdims=True)
    return np.sinh(r) / r * v


# Two prompts per class whose raw features differ a lot in length, so that "normalise, then
# average" (CLIP) and "average raw" (MERU) give visibly different class directions.
PROMPTS = np.array(
    [
        [[10.0, 0.0, 0.0], [0.0, 1.0, 0.0]],
        [[0.0, 0.0, 3.0], [0.0, 3.0, 0.0]],
        [[1.0, 0.0, 0.0], [0.0, 0.0, 4.0]],
    ],
    np.float32,
)


def test_class_embeddings_sphere_normalises_each_prompt_first():
    got = np.asarray(ev.class_embeddings(PROMPTS, SPHERE))
    s = 1 / math.sqrt(2)
    want = np.array([[s, s, 0], [0, s, s], [s, 0, s]])
    np.testing.assert_allclose(got, want, atol=1e-6)


@pytest.mark.parametrize("curv", [1.0, 0.37])
def test_class_embeddings_lorentz_averages_raw_features_then_exp_map(curv):
    alpha = 0.3
    got = np.asarray(ev.class_embeddings(PROMPTS, LORENTZ, alpha=alpha, curv=curv))
    want = _np_exp_map0(alpha * PROMPTS.astype(np.float64).mean(axis=1), curv)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    # The raw mean of class 0 is (5, 0.5, 0): its direction is not the normalised-mean (1, 1, 0).
    direction = got[0] / np.linalg.norm(got[0])
    np.testing.assert_allclose(direction, np.array([5, 0.5, 0]) / math.hypot(5, 0.5), rtol=1e-5)


def test_class_embeddings_rejects_bad_shape():
    with pytest.raises(ValueError, match="classes, prompts, dim"):
        ev.class_embeddings(PROMPTS[0], SPHERE)


def _images_and_labels(directions, geometry, curv, norm):
    """7 images: 4 of class 0 (one placed on class 1), 2 of class 1, 1 of class 2 placed on class 0.

    Expected per-class accuracy (0.75, 1, 0): macro 0.5833, micro 5/7.
    """
    where = [0, 0, 0, 1, 1, 1, 0]  # the class direction each image sits on
    labels = np.array([0, 0, 0, 0, 1, 1, 2])
    raw = norm * directions[where]
    return geometry.project(jnp.asarray(raw), curv), labels


@pytest.mark.parametrize("geometry,curv", [(SPHERE, 1.0), (LORENTZ, 1.0), (LORENTZ, 2.5)])
def test_zero_shot_accuracy_hand_built(geometry, curv):
    directions = np.eye(3, dtype=np.float32)
    prompts = np.stack([directions, 2 * directions], axis=1)  # (3 classes, 2 prompts, 3)
    classes = ev.class_embeddings(prompts, geometry, alpha=0.5, curv=curv)
    images, labels = _images_and_labels(directions, geometry, curv, norm=0.8)
    logits = ev.zero_shot_logits(images, classes, geometry, curv)
    assert logits.shape == (7, 3)
    m = metrics.classification_metrics(logits, labels)
    np.testing.assert_allclose(m["per_class_acc"], [0.75, 1.0, 0.0])
    np.testing.assert_array_equal(m["per_class_count"], [4, 2, 1])
    assert m["macro_acc"] == pytest.approx((0.75 + 1.0 + 0.0) / 3)
    assert m["top1"] == pytest.approx(5 / 7)
    assert "top5" not in m  # only 3 classes


def test_lorentz_ranking_equals_lorentzian_inner_product_ranking():
    rng = np.random.default_rng(0)
    x = lorentz.exp_map0(jnp.asarray(rng.normal(size=(50, 8)), jnp.float32), 0.7)
    y = lorentz.exp_map0(jnp.asarray(rng.normal(size=(6, 8)), jnp.float32), 0.7)
    by_sim = np.argmax(np.asarray(ev.zero_shot_logits(x, y, LORENTZ, 0.7)), axis=1)
    by_inner = np.argmax(np.asarray(lorentz.pairwise_inner(x, y, 0.7)), axis=1)
    np.testing.assert_array_equal(by_sim, by_inner)


def test_results_line():
    line = ev.results_line({"macro_acc": 0.8123, "top1": 0.5, "per_class": np.zeros(3)})
    assert line == "macro_acc,top1: 81.23,50.00"


def test_pure_functions_jit():
    f = jax.jit(lambda p: ev.class_embeddings(p, LORENTZ, alpha=0.5, curv=1.0))
    np.testing.assert_allclose(
        f(PROMPTS), ev.class_embeddings(PROMPTS, LORENTZ, alpha=0.5, curv=1.0), rtol=1e-6
    )


# ----------------------------------------------------------------------------------------------
# Model wrappers (tiny real model)
# ----------------------------------------------------------------------------------------------


@functools.cache
def _tiny(kind):
    from hac_jax import models

    cfg = models.get_arch("fmnist_xs", kind)
    params = dict(models.init_params(cfg, 0))
    if kind == "meru":  # non-default scalars, so that alpha and curv must be applied right
        params["curv"] = jnp.asarray(np.log(0.5), jnp.float32)
        params["textual_alpha"] = jnp.asarray(-1.0, jnp.float32)
        params["visual_alpha"] = jnp.asarray(-0.5, jnp.float32)
    return cfg, models.build_model(cfg), params


@pytest.mark.parametrize("kind", ["clip", "meru"])
def test_single_prompt_classifier_equals_projected_text_embedding(kind):
    from hac_jax.tokenizer import tokenize

    cfg, model, params = _tiny(kind)
    prompts = [["a photo of a circle"], ["a photo of a square"], ["stripes"]]
    got = ev.zero_shot_classifier(model, params, cfg, prompts)
    tokens = tokenize([p[0] for p in prompts], context_length=cfg.text.context_length)
    want = model.apply({"params": params}, tokens, project=True, method="encode_text")
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)
    scalars = scalars_at_use(params, cfg, fill=True)
    if kind == "meru":
        assert float(scalars["curv"]) == pytest.approx(0.5)
        assert float(scalars["textual_alpha"]) == pytest.approx(np.exp(-1.0))
    else:
        assert float(scalars["curv"]) == 1.0 and float(scalars["textual_alpha"]) == 1.0


@pytest.mark.parametrize("kind", ["clip", "meru"])
def test_zero_shot_classify_over_uneven_batches(kind):
    cfg, model, params = _tiny(kind)
    rng = np.random.default_rng(0)
    size = cfg.vision.image_size
    images = rng.random((11, size, size, 3), dtype=np.float32)
    labels = rng.integers(0, 3, size=11).astype(np.int32)
    batches = [{"image": images[a:b], "label": labels[a:b]} for a, b in [(0, 4), (4, 8), (8, 11)]]
    prompts = [
        ["a circle", "a photo of a circle"],
        ["a square", "a photo of a square"],
        ["stripes", "a photo of stripes"],
    ]
    result = ev.zero_shot_classify(
        model, params, cfg, batches, prompts, class_names=["circle", "square", "stripes"]
    )
    feats = model.apply({"params": params}, images, project=True, method="encode_image")
    classes = ev.zero_shot_classifier(model, params, cfg, prompts)
    curv = scalars_at_use(params, cfg, fill=True)["curv"]
    from hac_jax.geometry import get_geometry

    want = get_geometry(kind).pairwise_sim(feats, classes, curv)
    np.testing.assert_allclose(result.logits, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(result.labels, labels)
    m = metrics.classification_metrics(np.asarray(want), labels)
    assert result.metrics["macro_acc"] == pytest.approx(m["macro_acc"])
    assert result.line().startswith("zero-shot | macro_acc,top1: ")


def test_evaluators_yield_named_metrics():
    from hac_jax.tokenizer import tokenize

    cfg, model, params = _tiny("meru")
    rng = np.random.default_rng(1)
    size = cfg.vision.image_size
    batch = {
        "image": rng.random((6, size, size, 3), dtype=np.float32),
        "label": np.array([0, 1, 2, 0, 1, 2], np.int32),
    }
    prompts = [["a circle"], ["a square"], ["stripes"]]
    zs = ev.EVALUATORS["zero_shot"](
        model, cfg, lambda: [batch], prompts, class_names=["circle", "square", "stripes"]
    )
    metrics = dict(zs.run(params))
    assert metrics["zeroshot/macro_acc"] == pytest.approx(zs.last_result.metrics["macro_acc"])
    assert {"zeroshot/class/circle", "zeroshot/class/square", "zeroshot/class/stripes"} <= set(
        metrics
    )
    tokens = tokenize(["a circle", "a square", "stripes"] * 2, context_length=16)
    rt = ev.EVALUATORS["retrieval"](model, cfg, lambda: [batch], tokens, np.arange(6), ks=(1, 5))
    got = dict(rt.run(params))
    assert set(got) == {
        "retrieval/i2t_R@1",
        "retrieval/i2t_R@5",
        "retrieval/t2i_R@1",
        "retrieval/t2i_R@5",
    }
    assert all(0.0 <= v <= 1.0 for v in got.values())
