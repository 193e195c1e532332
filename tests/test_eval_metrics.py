"""Audit metrics on small constructed cases with known answers."""

from __future__ import annotations

import json
import math

import jax.numpy as jnp
import numpy as np
import pytest

from hac_jax.eval import metrics
from hac_jax.geometry import LORENTZ, SPHERE, lorentz

E = np.eye(3)


def ray_point(direction, radius, c=1.0):
    """Space components of the point at geodesic distance `radius` from O along `direction`."""
    direction = np.asarray(direction, np.float64) / np.linalg.norm(direction)
    return direction * np.sinh(np.sqrt(c) * radius) / np.sqrt(c)


def one_hot_scores(pred, num_classes):
    return np.eye(num_classes)[np.asarray(pred)]


# ------------------------------------------------------------------------------------------------
# FA / UA / RA / TA and retrieval
# ------------------------------------------------------------------------------------------------


def test_forgetting_accuracies_are_macro_averages():
    labels = np.array([0, 0, 0, 0, 1, 2, 2])
    pred = np.array([0, 1, 1, 2, 1, 0, 1])  # class 0: 1/4, class 1: 1/1, class 2: 0/2
    out = metrics.forgetting_accuracies(
        one_hot_scores(pred, 3),
        labels,
        forget_classes=[2],
        forget_train_scores=one_hot_scores([2, 0, 2], 3),
        forget_train_labels=[2, 2, 2],
    )
    assert out["FA"] == pytest.approx(0.0)
    assert out["RA"] == pytest.approx((0.25 + 1.0) / 2)  # macro, not micro (2/5)
    assert out["TA"] == pytest.approx((0.25 + 1.0 + 0.0) / 3)
    assert out["UA"] == pytest.approx(2 / 3)
    # classification is among all classes: a forget image predicted as a retain class is wrong
    both = metrics.forgetting_accuracies(one_hot_scores(pred, 3), labels, forget_classes=[0, 2])
    assert both["FA"] == pytest.approx((0.25 + 0.0) / 2) and both["RA"] == pytest.approx(1.0)
    assert "UA" not in both


def test_forgetting_accuracies_errors_and_empty_parts():
    scores = one_hot_scores([0, 1], 3)
    assert math.isnan(metrics.forgetting_accuracies(scores, [0, 1], [2])["FA"])  # no forget images
    with pytest.raises(ValueError, match="forget_classes is empty"):
        metrics.forgetting_accuracies(scores, [0, 1], [])
    with pytest.raises(ValueError, match=r"class ids in \[0, 3\)"):
        metrics.forgetting_accuracies(scores, [0, 1], [3])
    with pytest.raises(ValueError, match="outside forget_classes"):
        metrics.forgetting_accuracies(
            scores, [0, 1], [2], forget_train_scores=scores, forget_train_labels=[2, 1]
        )
    with pytest.raises(ValueError, match="give both"):
        metrics.forgetting_accuracies(scores, [0, 1], [2], forget_train_scores=scores)


def test_retrieval_metrics_by_hand():
    u = E  # images e1, e2, e3
    v2 = np.array([0.9, 0.0, 0.1]) / np.linalg.norm([0.9, 0.0, 0.1])
    v = np.stack([E[0], E[1], v2])
    out = metrics.retrieval_metrics(u, v, SPHERE, ks=(1, 5))
    # every image's best caption is its own; caption 2 is closer to image 0 than to image 2
    assert out["i2t_R@1"] == pytest.approx(1.0)
    assert out["t2i_R@1"] == pytest.approx(2 / 3)
    assert out["t2i_R@5"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="text_to_image"):
        metrics.retrieval_metrics(u, v[:2], SPHERE)
    many = metrics.retrieval_metrics(
        u, np.stack([E[0], E[0], E[2]]), SPHERE, text_to_image=[0, 0, 2]
    )
    assert many["i2t_R@1"] == pytest.approx(1.0) and many["t2i_R@1"] == pytest.approx(1.0)


# ------------------------------------------------------------------------------------------------
# membership inference
# ------------------------------------------------------------------------------------------------


def test_mia_threshold_by_hand():
    members, nonmembers = [0.9, 0.8, 0.3], [0.1, 0.2, 0.85]
    # thresholds at the observed scores: t = 0.3 keeps all members and rejects 2 of 3 non-members
    t, bal = metrics.fit_mia_threshold(members, nonmembers)
    assert t == pytest.approx(0.25)  # midway between 0.3 and the next lower score 0.2
    assert bal == pytest.approx(0.5 * (1.0 + 2 / 3))
    out = metrics.mia_audit(members, nonmembers, [0.1, 0.26, 0.5])
    assert out["mia_forget_nonmember"] == pytest.approx(1 / 3)
    assert out["mia_forget_member"] == pytest.approx(2 / 3)
    assert out["mia_threshold"] == pytest.approx(0.25)


def test_mia_threshold_uses_balanced_accuracy_and_handles_ties():
    # 1 member vs 9 non-members: plain accuracy would call everyone a non-member
    t, bal = metrics.fit_mia_threshold([0.6], [0.1] * 4 + [0.7] * 5)
    assert t == pytest.approx(0.35) and bal == pytest.approx(0.5 * (1.0 + 4 / 9))
    # no information: the lowest threshold (everyone a member), balanced accuracy 0.5
    t, bal = metrics.fit_mia_threshold([0.4, 0.4], [0.4])
    assert t == pytest.approx(0.4) and bal == pytest.approx(0.5)
    assert metrics.mia_audit([0.4, 0.4], [0.4], [0.4])["mia_forget_nonmember"] == 0.0
    with pytest.raises(ValueError, match="at least one member"):
        metrics.fit_mia_threshold([], [0.1])
    with pytest.raises(ValueError, match="finite"):
        metrics.fit_mia_threshold([np.nan], [0.1])


def test_pair_similarity_per_geometry():
    u = np.stack([ray_point(E[0], 0.5), ray_point(E[1], 1.0)])
    v = np.stack([ray_point(E[0], 1.7), ray_point(E[1], 1.0)])
    np.testing.assert_allclose(metrics.pair_similarity(u, v, LORENTZ, 1.0), [-1.2, 0.0], atol=1e-5)
    np.testing.assert_allclose(metrics.pair_similarity(E[:2], E[[0, 2]], SPHERE), [1.0, 0.0])


# ------------------------------------------------------------------------------------------------
# alignment
# ------------------------------------------------------------------------------------------------


def test_alignment_gap_by_hand():
    out = metrics.alignment_gap(E[:2], E[:2], SPHERE)
    assert out == pytest.approx({"matched": 1.0, "mismatched": 0.0, "gap": 1.0})
    u = v = E[[0, 0, 1]]
    plain = metrics.alignment_gap(u, v, SPHERE, chunk=1)
    # i != j: (0,1), (1,0) have sim 1, the other four 0
    assert plain["mismatched"] == pytest.approx(2 / 6) and plain["gap"] == pytest.approx(2 / 3)
    by_label = metrics.alignment_gap(u, v, SPHERE, labels=[0, 0, 1])
    assert by_label["mismatched"] == pytest.approx(0.0) and by_label["gap"] == pytest.approx(1.0)


def test_alignment_gaps_split_forget_and_retain():
    u = np.stack([E[0], E[1], E[2], E[0]])
    v = np.stack([E[1], E[0], E[2], E[0]])  # forget pairs 0, 1 are swapped
    out = metrics.alignment_gaps(u, v, np.array([True, True, False, False]), SPHERE)
    assert out["align_matched_forget"] == pytest.approx(0.0)
    assert out["align_mismatched_forget"] == pytest.approx(1.0)
    assert out["align_gap_forget"] == pytest.approx(-1.0)
    assert out["align_gap_retain"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="bool"):
        metrics.alignment_gaps(u, v, np.array([1, 1, 0, 0]), SPHERE)


def test_alignment_matrix_by_hand_and_against_loops():
    image = np.stack([E[0], E[1], E[2]])
    text = np.stack([E[0], E[1], E[1]])
    m = metrics.alignment_matrix(image, [0, 0, 1], text, [0, 1, 1], 3, SPHERE)
    # concept 0 images (e1, e2) vs concept 0 texts (e1): mean(1, 0); vs concept 1 texts (e2, e2)
    assert m[0, 0] == pytest.approx(0.5) and m[0, 1] == pytest.approx(0.5)
    assert m[1, 0] == pytest.approx(0.0) and m[1, 1] == pytest.approx(0.0)
    assert np.isnan(m[2]).all() and np.isnan(m[:, 2]).all()  # concept 2 has no image, no text
    rng = np.random.default_rng(0)
    ui, vt = rng.normal(size=(7, 4)) * 0.5, rng.normal(size=(5, 4)) * 0.5
    il, tl = rng.integers(0, 3, 7), rng.integers(0, 3, 5)
    sim = -np.asarray(lorentz.pairwise_dist(ui, vt, 0.7))
    ref = np.full((3, 3), np.nan)
    for a in range(3):
        for b in range(3):
            block = sim[np.ix_(il == a, tl == b)]
            if block.size:
                ref[a, b] = block.mean()
    got = metrics.alignment_matrix(ui, il, vt, tl, 3, LORENTZ, 0.7, chunk=2)
    np.testing.assert_allclose(got, ref, rtol=1e-5, equal_nan=True)


# ------------------------------------------------------------------------------------------------
# hierarchy
# ------------------------------------------------------------------------------------------------


def test_distance_to_origin_audit():
    images = np.stack([ray_point(E[0], 1.0), ray_point(E[1], 3.0), ray_point(E[2], 0.5)])
    texts = np.stack([ray_point(E[0], 0.2), ray_point(E[1], 0.4), ray_point(E[2], 2.0)])
    out = metrics.distance_to_origin_audit(images, texts, np.array([True, True, False]), LORENTZ)
    assert out["dist_origin_image_forget"] == pytest.approx(2.0, rel=1e-5)
    assert out["dist_origin_image_retain"] == pytest.approx(0.5, rel=1e-5)
    assert out["dist_origin_text_forget"] == pytest.approx(0.3, rel=1e-5)
    assert out["dist_origin_text_retain"] == pytest.approx(2.0, rel=1e-5)
    sphere = metrics.distance_to_origin_audit(E, E, np.array([False] * 3), SPHERE)
    assert sphere["dist_origin_image_retain"] == pytest.approx(1.0)
    assert math.isnan(sphere["dist_origin_image_forget"])


def test_cone_membership_by_hand():
    texts = np.stack([0.4 * E[0]] * 3)  # half-aperture pi / 6
    # beyond the text on its ray (angle 0); on the ray towards the origin (angle pi); off the ray
    # at a 60 degree exterior angle seen from far away (outside pi / 6)
    far_off = ray_point(np.array([1.0, 1.0, 0.0]), 3.0)
    images = np.stack([ray_point(E[0], 2.0), 0.1 * E[0], far_off])
    angles = np.asarray(lorentz.oxy_angle(texts, images, 1.0))
    assert angles[0] < math.pi / 6 < angles[2]
    assert metrics.cone_membership(images, texts, 1.0) == pytest.approx(1 / 3)
    assert metrics.cone_membership(images, texts, 1.0, mask=np.array([True, True, False])) == 0.5
    assert math.isnan(metrics.cone_membership(images, texts, 1.0, mask=np.zeros(3, bool)))
    # parent cones: a text nearer the origin on the same ray has a wider cone containing image 0
    parents = np.stack([0.3 * E[0], 0.3 * E[0], 0.3 * E[1]])
    assert metrics.cone_membership(images, parents, 1.0) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="one cone text per image"):
        metrics.cone_membership(images, texts[:2], 1.0)


def test_forgotten_destinations_by_hand():
    # concepts: classes 0, 1 (group 0) and 2 (group 1), groups 3 (= group 0) and 4, root 5
    levels = ["class", "class", "class", "group", "group", "root"]
    groups = [0, 0, 1, 0, 1, -1]
    top1 = [0, 1, 3, 5, 2, 4]  # own class, sibling, parent, root, other class, other group
    out = metrics.forgotten_destinations(
        one_hot_scores(top1, 6),
        np.zeros(6, int),
        concept_levels=levels,
        concept_groups=groups,
        class_groups=[0, 0, 1],
    )
    assert out["own_class"] == pytest.approx(1 / 6)
    assert out["sibling"] == pytest.approx(1 / 6)
    assert out["parent"] == pytest.approx(1 / 6)
    assert out["root"] == pytest.approx(1 / 6)
    assert out["other"] == pytest.approx(2 / 6)
    assert sum(out[k] for k in metrics.DESTINATIONS) == pytest.approx(1.0)
    assert out["level_fraction"] == pytest.approx({"root": 1 / 6, "group": 2 / 6, "class": 3 / 6})
    np.testing.assert_array_equal(out["top1_count"], np.ones(6))
    # classes listed after the groups: class_concepts maps class ids to concept indices
    moved = metrics.forgotten_destinations(
        one_hot_scores([2, 3], 4),
        np.array([1, 0]),
        concept_levels=["group", "group", "class", "class"],
        concept_groups=[0, 1, 0, 0],
        class_concepts=[2, 3],
        class_groups=[0, 0],
    )
    assert moved["sibling"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="unknown concept levels"):
        metrics.forgotten_destinations(
            one_hot_scores([0], 1),
            [0],
            concept_levels=["leaf"],
            concept_groups=[0],
            class_groups=[0],
        )


def test_to_jsonable_round_trips_through_json():
    d = {
        "a": np.array([1.0, np.nan]),
        "b": np.int64(3),
        "c": {"d": jnp.asarray(2.5), "e": [np.float32(1.5), math.inf]},
        "f": np.bool_(True),
        "g": "text",
    }
    out = json.loads(json.dumps(metrics.to_jsonable(d)))
    assert out == {
        "a": [1.0, None],
        "b": 3,
        "c": {"d": 2.5, "e": [1.5, None]},
        "f": True,
        "g": "text",
    }


def test_concept_table_of_fashion_mnist_feeds_forgotten_destinations():
    from hac_jax.data.hierarchy import FASHION_MNIST

    table = metrics.concept_table(FASHION_MNIST)
    assert len(table["names"]) == 10 + 5 + 1
    assert table["names"][7] == "sneaker" and table["levels"][7] == "class"
    footwear = table["names"].index("footwear")
    assert table["levels"][footwear] == "group" and table["phrases"][-1] == "clothing"
    assert table["groups"][-1] == -1 and table["levels"][-1] == "root"
    # sneaker images (class 7) whose top-1 becomes sandal (5), footwear, or bag (8)
    scores = one_hot_scores([5, footwear, 8, 7], 16)
    out = metrics.forgotten_destinations(
        scores,
        np.full(4, 7),
        concept_levels=table["levels"],
        concept_groups=table["groups"],
        class_concepts=table["class_concepts"],
        class_groups=table["class_groups"],
    )
    assert (out["sibling"], out["parent"], out["other"], out["own_class"]) == (0.25,) * 4


def test_classification_metrics_missing_class_and_topk():
    logits = np.array([[3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 3.0, 2.0], [1.0, 0.0, 3.0, 2.0]])
    labels = np.array([1, 2, 3])  # class 0 absent
    m = metrics.classification_metrics(logits, labels, topk=(1, 2, 3, 4))
    assert math.isnan(m["per_class_acc"][0])
    np.testing.assert_allclose(m["per_class_acc"][1:], [0.0, 1.0, 0.0])
    assert m["macro_acc"] == pytest.approx(1 / 3)  # mean over the 3 classes present
    assert m["top1"] == pytest.approx(1 / 3)
    # true-class ranks: 1, 0, 1 -> top2 all hit
    assert m["top2"] == pytest.approx(1.0)
    assert m["top3"] == pytest.approx(1.0)
    assert "top4" not in m  # top-C is trivially 1


def test_classification_metrics_rejects_bad_labels():
    with pytest.raises(ValueError, match="labels must lie"):
        metrics.classification_metrics(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(ValueError, match="need logits"):
        metrics.classification_metrics(np.zeros((2, 3)), np.array([0, 1, 2]))


# 3 images, 5 captions: image 0 has captions 0, 1; image 1 has caption 2; image 2 has 3, 4.
SIM = np.array(
    [
        [0.9, 0.1, 0.8, 0.0, 0.2],
        [0.5, 0.4, 0.3, 0.6, 0.7],
        [0.1, 0.2, 0.9, 0.3, 0.0],
    ]
)
T2I = np.array([0, 0, 1, 2, 2])


def test_retrieval_recall_hand_computed():
    got = metrics.retrieval_recall(SIM, T2I, ks=(1, 2, 5))
    # i2t ranks (wrong captions >= best right one): image 0 -> 0, image 1 -> 4, image 2 -> 1.
    assert got["i2t_R@1"] == pytest.approx(1 / 3)
    assert got["i2t_R@2"] == pytest.approx(2 / 3)
    assert got["i2t_R@5"] == pytest.approx(1.0)
    # t2i ranks per caption: 0, 2, 2, 1, 2.
    assert got["t2i_R@1"] == pytest.approx(1 / 5)
    assert got["t2i_R@2"] == pytest.approx(2 / 5)
    assert got["t2i_R@5"] == pytest.approx(1.0)


def test_retrieval_recall_image_without_caption_is_left_out_and_chunking_agrees():
    sim = np.vstack([SIM, np.full((1, 5), 5.0)])  # image 3: no caption, scores high everywhere
    got = metrics.retrieval_recall(sim, T2I, ks=(1, 2, 5), chunk=2)
    # image 3 outranks every right image in t2i; i2t leaves it out.
    assert got["i2t_R@1"] == pytest.approx(1 / 3)
    assert got["t2i_R@1"] == 0.0
    assert got["t2i_R@2"] == pytest.approx(1 / 5)


def test_retrieval_ties_count_against_the_query():
    got = metrics.retrieval_recall(np.ones((4, 4)), np.arange(4), ks=(1, 3, 4))
    assert got["i2t_R@1"] == 0.0 and got["t2i_R@1"] == 0.0
    assert got["i2t_R@3"] == 0.0 and got["i2t_R@4"] == 1.0


def test_retrieval_rejects_bad_index():
    with pytest.raises(ValueError, match="text_to_image"):
        metrics.retrieval_recall(SIM, np.array([0, 0, 1, 2, 3]))


def test_retrieval_with_a_relevance_matrix():
    # Captions 0 and 1 are the same text (same embedding); with pair ground truth image 0's
    # duplicate caption of image 1 counts against it, with concept relevance it does not.
    sim = np.array([[0.9, 0.9, 0.1], [0.9, 0.9, 0.2], [0.1, 0.2, 0.8]])
    t2i = np.array([0, 1, 2])
    pairs = metrics.retrieval_recall(sim, t2i, ks=(1,))
    assert pairs == {"i2t_R@1": pytest.approx(1 / 3), "t2i_R@1": pytest.approx(1 / 3)}
    relevant = np.array([[1, 1, 0], [1, 1, 0], [0, 0, 1]], bool)
    concept = metrics.retrieval_recall(sim, None, ks=(1,), relevance=relevant)
    assert concept == {"i2t_R@1": 1.0, "t2i_R@1": 1.0}
    with pytest.raises(ValueError, match="relevance has shape"):
        metrics.retrieval_recall(sim, None, relevance=relevant[:2])


def test_concept_relevance():
    # classes 0, 1 in group 0; class 2 in group 1. Captions: class 0, group of class 1, root,
    # class 2.
    rel = metrics.concept_relevance(
        image_labels=np.array([0, 1, 2]),
        caption_labels=np.array([0, 1, 2, 2]),
        caption_depth=["class", "group", "root", "class"],
        class_to_group=np.array([0, 0, 1]),
    )
    want = np.array([[1, 1, 1, 0], [0, 1, 1, 0], [0, 0, 1, 1]], bool)
    np.testing.assert_array_equal(rel, want)
    with pytest.raises(ValueError, match="caption_depth"):
        metrics.concept_relevance(np.array([0]), np.array([0]), ["leaf"], np.array([0]))


# ------------------------------------------------------------------------------------------------
# Distances to a reference model's audit (forget quality against Retrain)
# ------------------------------------------------------------------------------------------------


def test_ks_distance_known_answers():
    from hac_jax.eval.metrics import ks_distance

    assert ks_distance([1.0, 2.0, 3.0], [3.0, 1.0, 2.0]) == 0.0  # same values, any order
    assert ks_distance([0.0, 1.0], [5.0, 6.0, 7.0]) == 1.0  # no overlap
    # F_a = 1/2 on [1, 2), 1 from 2; F_b = 1/4 on [1.5, 2.5): at x = 2, |1 - 1/4| = 3/4
    assert ks_distance([1.0, 2.0], [1.5, 2.5, 3.5, 4.5]) == pytest.approx(0.75)
    # a shifted uniform sample: the distance is the shift's share of the support
    grid = np.linspace(0.0, 1.0, 1001)
    assert ks_distance(grid, grid + 0.2) == pytest.approx(0.2, abs=2e-3)
    assert ks_distance([1.0, 2.0], [2.0, 1.0]) == ks_distance([2.0, 1.0], [1.0, 2.0])
    for bad in (([], [1.0]), ([np.nan], [1.0])):
        with pytest.raises(ValueError):
            ks_distance(*bad)


def test_tv_distance_known_answers():
    from hac_jax.eval.metrics import tv_distance

    assert tv_distance([2, 2, 0], [1, 1, 0]) == 0.0  # counts are normalised
    assert tv_distance([1, 0, 0], [0, 0, 5]) == 1.0  # disjoint support
    assert tv_distance([0.5, 0.5, 0.0], [0.25, 0.25, 0.5]) == pytest.approx(0.5)
    assert tv_distance([3, 1], [1, 3]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="same bins"):
        tv_distance([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="non-negative"):
        tv_distance([0, 0], [1, 1])


def test_true_class_rank_known_answers():
    from hac_jax.eval.metrics import ks_distance, true_class_rank

    scores = np.array([[0.9, 0.1, 0.5], [0.2, 0.1, 0.7], [0.3, 0.3, 0.1]])
    np.testing.assert_array_equal(true_class_rank(scores, [0, 0, 1]), [1, 2, 2])  # tie: against
    # the same ranks on any scale: a model scoring 10x and shifted has the same distribution
    assert (
        ks_distance(true_class_rank(scores, [0, 0, 1]), true_class_rank(10 * scores - 3, [0, 0, 1]))
        == 0.0
    )
    with pytest.raises(ValueError, match="labels"):
        true_class_rank(scores, [0, 3, 1])
