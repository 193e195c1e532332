"""The per-model unlearning audit: every metric on both geometries, the wiring of the pure audits,
and known answers on hand-built embeddings."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hac_jax import data as hdata
from hac_jax import models
from hac_jax.eval import encode, metrics
from hac_jax.eval.audit import (
    ARRAY_KEYS,
    MERU_ARRAY_KEYS,
    METRIC_KEYS,
    AuditEmbeddings,
    audit_embeddings,
    audit_model,
    concept_prompts,
    cross_alignment_gaps,
    embed_for_audit,
    embed_split,
    retain_retrieval,
)
from hac_jax.eval.names import DESTINATIONS
from hac_jax.eval.zero_shot import zero_shot_classifier
from hac_jax.geometry import LORENTZ, SPHERE

B = 32
FORGET = [0]  # circle
MERU_ONLY = [k for k in METRIC_KEYS if k.startswith(("dist_origin_", "cone_"))]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return hdata.prepare_shapes(
        str(tmp_path_factory.mktemp("tfds")), image_size=16, train_per_class=16, test_per_class=4
    )


@pytest.fixture(scope="module")
def tiny_models():
    """A tiny random MERU and the CLIP with the same weights (CLIP's parameter tree is MERU's
    without the curvature and the two feature scales): one initialisation serves both."""
    out = {}
    for kind in ("meru", "clip"):
        out[kind] = models.model_config(
            kind, "fmnist_xs", image_size=16, patch_size=8, vision_depth=1, embed_dim=16
        )
    params = models.init_params(out["meru"], 11)
    clip_params = {
        k: v for k, v in params.items() if k not in ("curv", "visual_alpha", "textual_alpha")
    }
    return {
        "meru": (models.build_model(out["meru"]), params, out["meru"]),
        "clip": (models.build_model(out["clip"]), clip_params, out["clip"]),
    }


_AUDITS = {}


def _audit(kind, tiny_models, data):
    if kind not in _AUDITS:
        model, params, cfg = tiny_models[kind]
        _AUDITS[kind] = audit_model(model, params, cfg, data, FORGET, batch_size=B, mia_members=24)
    return _AUDITS[kind]


# ------------------------------------------------------------------------------------------------
# audit_model on tiny models: keys, ranges, shapes
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["meru", "clip"])
def test_every_metric_and_array_present(kind, tiny_models, data):
    res = _audit(kind, tiny_models, data)
    h = data.hierarchy
    assert list(res.metrics) == list(METRIC_KEYS)
    for key, value in res.metrics.items():
        assert isinstance(value, float), key
        if kind == "clip" and key in MERU_ONLY:
            assert math.isnan(value), key
            continue
        assert math.isfinite(value), key
        if key.startswith(("align_", "dist_origin_")):
            continue
        assert 0.0 <= value <= 1.0, (key, value)
    for key in ("align_matched_forget", "align_matched_retain"):
        if kind == "meru":
            assert res.metrics[key] <= 0.0  # -distance
        else:
            assert -1.0 - 1e-6 <= res.metrics[key] <= 1.0 + 1e-6
    dest = sum(res.metrics[f"dest_{d}"] for d in DESTINATIONS)
    assert dest == pytest.approx(1.0)

    expected = set(ARRAY_KEYS) | (set(MERU_ARRAY_KEYS) if kind == "meru" else set())
    assert set(res.arrays) == expected
    n = data.num_examples("test")
    labels = data.labels("test")
    names = metrics.concept_table(h)["names"]
    arr = res.arrays
    assert arr["alignment_matrix"].shape == (h.num_classes, h.num_classes)
    assert np.isfinite(arr["alignment_matrix"]).all()
    np.testing.assert_array_equal(arr["labels"], labels)
    np.testing.assert_array_equal(arr["is_forget"], np.isin(labels, FORGET))
    assert arr["is_forget"].dtype == bool
    assert arr["dest_top1_count"].shape == (len(names),)
    assert arr["dest_top1_count"].sum() == np.isin(labels, FORGET).sum()
    assert arr["concept_names"].tolist() == names
    if kind == "meru":
        for key in MERU_ARRAY_KEYS:
            assert arr[key].shape == (n,)
            assert (arr[key] >= 0).all()
        d_img = arr["dist_origin_image"]
        assert res.metrics["dist_origin_image_forget"] == pytest.approx(
            d_img[arr["is_forget"]].mean(), rel=1e-6
        )


def _pure_inputs(kind, tiny_models, data):
    model, params, cfg = tiny_models[kind]
    img, txt, lab = embed_split(model, params, cfg, data, "test", batch_size=B)
    curv = float(models.scalars_at_use(params, cfg, fill=True)["curv"])
    return model, params, cfg, img, txt, lab, curv


def test_audit_model_matches_the_pure_audits(tiny_models, data):
    """audit_model's numbers = the audit.* functions recomputed from embed_split output and the
    zero-shot prompt ensembles with the plain geometry (on the sphere, where eager similarities
    are cheap; the hyperboloid-only wiring is checked below)."""
    res = _audit("clip", tiny_models, data)
    model, params, cfg, img, txt, lab, curv = _pure_inputs("clip", tiny_models, data)
    h, geo = data.hierarchy, SPHERE
    f_img, _, f_lab = embed_split(model, params, cfg, data, "train", batch_size=B, classes=FORGET)
    classes = zero_shot_classifier(model, params, cfg, hdata.class_prompts(h))
    concepts = zero_shot_classifier(model, params, cfg, concept_prompts(h))
    is_f = np.isin(lab, FORGET)
    m = res.metrics

    acc = metrics.forgetting_accuracies(
        metrics.pairwise_similarity(img, classes, geo, curv),
        lab,
        FORGET,
        forget_train_scores=metrics.pairwise_similarity(f_img, classes, geo, curv),
        forget_train_labels=f_lab,
    )
    for key in ("FA", "UA", "RA", "TA"):
        assert m[key] == pytest.approx(acc[key], abs=1e-12), key
    gaps = cross_alignment_gaps(img, txt, lab, is_f, geo, curv)
    for key, value in gaps.items():
        assert m[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    np.testing.assert_allclose(
        res.arrays["alignment_matrix"],
        metrics.alignment_matrix(img, lab, txt, lab, h.num_classes, geo, curv),
        rtol=1e-5,
        atol=1e-6,
    )
    table = metrics.concept_table(h)
    dest = metrics.forgotten_destinations(
        metrics.pairwise_similarity(img[is_f], concepts, geo, curv),
        lab[is_f],
        concept_levels=table["levels"],
        concept_groups=table["groups"],
        class_concepts=table["class_concepts"],
        class_groups=table["class_groups"],
    )
    for d in DESTINATIONS:
        assert m[f"dest_{d}"] == pytest.approx(dest[d], abs=1e-12), d
    np.testing.assert_array_equal(res.arrays["dest_top1_count"], dest["top1_count"])


def test_meru_cones_and_distances_match_the_pure_audits(tiny_models, data):
    """Cone apexes are the zero-shot class / group prompt ensembles; distances per test pair."""
    res = _audit("meru", tiny_models, data)
    model, params, cfg, img, txt, lab, curv = _pure_inputs("meru", tiny_models, data)
    h = data.hierarchy
    classes = np.asarray(zero_shot_classifier(model, params, cfg, hdata.class_prompts(h)))
    groups = np.asarray(zero_shot_classifier(model, params, cfg, hdata.group_prompts(h)))
    is_f = np.isin(lab, FORGET)
    m = res.metrics
    dist = metrics.distance_to_origin_audit(img, txt, is_f, LORENTZ, curv)
    for key, value in dist.items():
        assert m[key] == pytest.approx(value, rel=1e-5), key
    parent = groups[np.asarray(h.class_group)[lab]]
    for part, sel in (("forget", is_f), ("retain", ~is_f)):
        own = metrics.cone_membership(img, classes[lab], curv, mask=sel)
        assert m[f"cone_own_{part}"] == pytest.approx(own, abs=1e-12)
        par = metrics.cone_membership(img, parent, curv, mask=sel)
        assert m[f"cone_parent_{part}"] == pytest.approx(par, abs=1e-12)


def test_mia_members_are_a_seeded_subset_of_retain_train(tiny_models, data):
    model, params, cfg = tiny_models["clip"]
    retain = [c for c in range(data.hierarchy.num_classes) if c not in FORGET]
    pool, _, pool_lab = embed_split(model, params, cfg, data, "train", batch_size=B, classes=retain)

    def members(seed, n):
        e = embed_for_audit(
            model, params, cfg, data, FORGET, batch_size=B, mia_members=n, seed=seed
        )
        return e.member_images

    a, again, other = members(0, 10), members(0, 10), members(1, 10)
    assert a.shape == (10, pool.shape[1])
    np.testing.assert_array_equal(a, again)
    # each member is a distinct retain-train image
    dist = np.linalg.norm(a[:, None, :] - pool[None, :, :], axis=-1)
    match = dist.argmin(axis=1)
    assert dist.min(axis=1).max() < 1e-5
    assert len(set(match.tolist())) == 10
    other_match = np.linalg.norm(other[:, None, :] - pool[None], axis=-1).argmin(axis=1)
    assert set(other_match.tolist()) != set(match.tolist())
    # asking for more members than there are retain-train pairs takes them all
    assert members(0, 10_000).shape[0] == pool.shape[0] == np.isin(pool_lab, retain).sum()


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        (dict(forget_ids=[]), "forget_ids is empty"),
        (dict(forget_ids=[5]), r"class ids in \[0, 5\)"),
        (dict(forget_ids=[0, 1, 2, 3, 4]), "cover every class"),
        (dict(test_split="validation"), "no split 'validation'"),
        (dict(mia_members=0), "mia_members must be positive"),
    ],
)
def test_bad_input_raises_before_compute(kw, needle, tiny_models, data, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("compute started before the input was rejected")

    monkeypatch.setattr(encode, "encode_images", boom)
    monkeypatch.setattr(encode, "encode_texts", boom)
    model, params, cfg = tiny_models["clip"]
    args = dict(forget_ids=FORGET)
    args.update(kw)
    forget = args.pop("forget_ids")
    with pytest.raises(ValueError, match=needle) as info:
        audit_model(model, params, cfg, data, forget, batch_size=B, **args)
    assert "\n" not in str(info.value)


def test_concept_prompts_use_the_class_templates_at_every_level():
    h = hdata.SHAPES
    prompts = concept_prompts(h)
    assert len(prompts) == len(metrics.concept_table(h)["names"])
    assert prompts[: h.num_classes] == hdata.class_prompts(h)
    n = len(hdata.TEMPLATES["class"])
    assert all(len(p) == n for p in prompts)
    assert prompts[h.num_classes][0] == "a photo of shapes"
    assert prompts[-1][0] == "a photo of drawings"


# ------------------------------------------------------------------------------------------------
# Known answers on hand-built embeddings
# ------------------------------------------------------------------------------------------------


def _unit(*rows):
    x = np.asarray(rows, np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _e(i, dim=10, scale=1.0):
    v = np.zeros(dim, np.float32)
    v[i] = scale
    return v


def _sphere_case():
    """SHAPES concepts (circle, square, triangle, stripes, checkerboard, shapes, patterns,
    drawings) at the basis vectors e_0..e_7; circle forgotten."""
    e = _e
    noise = e(9, scale=0.5)  # captions sit a little off their images: sim 1/sqrt(1.25)
    forget_img = _unit(e(0), e(1), e(5) + 0.05 * e(2), e(3), e(7) + 0.05 * e(4))
    retain_lab = np.repeat([1, 2, 3, 4], 3)
    retain_img = _unit(*[e(c) for c in retain_lab])
    retain_img[0] = _unit(e(2) + 0.1 * e(1))[0]  # a square that looks like a triangle
    retain_txt = _unit(*[e(c) + noise for c in retain_lab])
    levels = np.zeros(len(retain_lab), np.int64)
    retain_txt[6] = _unit(e(3) + e(4) + noise)[0]  # a stripes image with the caption "patterns"
    levels[6] = hdata.CAPTION_LEVELS.index("group")
    forget_txt = forget_img.copy()  # sim 1, like members: they must not enter the MIA fit
    member_lab = np.array([1, 2, 3, 4, 1, 2])
    member_img = _unit(*[e(c) for c in member_lab])
    ft_img = _unit(e(0), e(0), e(1), e(1))
    ft_txt = np.concatenate([ft_img[:2], _unit(*[x + noise for x in ft_img[2:]])])
    return AuditEmbeddings(
        test_images=np.concatenate([forget_img, retain_img]),
        test_texts=np.concatenate([forget_txt, retain_txt]),
        test_labels=np.concatenate([np.zeros(5, np.int64), retain_lab]),
        test_caption_levels=np.concatenate([np.zeros(5, np.int64), levels]),
        forget_train_images=ft_img,
        forget_train_texts=ft_txt,
        forget_train_labels=np.zeros(4, np.int64),
        member_images=member_img,
        member_texts=member_img.copy(),
        class_embs=_unit(*[e(i) for i in range(5)]),
        parent_embs=None,
        concept_embs=_unit(*[e(i) for i in range(8)]),
    )


def test_known_answers_on_the_sphere():
    emb = _sphere_case()
    res = audit_embeddings(emb, hdata.SHAPES, FORGET, SPHERE)
    m = res.metrics
    # forget test images: only the first is classified as a circle; the square-like square fails
    assert m["FA"] == pytest.approx(1 / 5)
    assert m["RA"] == pytest.approx((2 / 3 + 3) / 4)
    assert m["TA"] == pytest.approx((1 / 5 + 2 / 3 + 3) / 5)
    assert m["UA"] == pytest.approx(0.5)
    # the square-like square ranks its caption second; the "patterns" caption finds the stripes
    # and checkerboard images, tied with each other, as correct (group-level relevance)
    assert m["ret_i2t_R@1"] == pytest.approx(11 / 12)
    assert m["ret_i2t_R@5"] == 1.0
    assert m["ret_t2i_R@1"] == 1.0 and m["ret_t2i_R@5"] == 1.0
    # members (sim 1) separate perfectly from non-members (sim < 0.9); half the forget-train
    # pairs look like members
    assert m["mia_fit_balanced_acc"] == 1.0
    assert m["mia_forget_nonmember"] == 0.5
    # one forget image per destination: own class, sibling, parent, other group, root
    for d in DESTINATIONS:
        assert m[f"dest_{d}"] == pytest.approx(0.2), d
    np.testing.assert_array_equal(res.arrays["dest_top1_count"], [1, 1, 0, 1, 0, 1, 0, 1])
    for key in MERU_ONLY:
        assert math.isnan(m[key]), key
    assert not set(MERU_ARRAY_KEYS) & set(res.arrays)
    # alignment matrix and gaps by brute force
    img, txt, lab = emb.test_images, emb.test_texts, emb.test_labels
    sim = img.astype(np.float64) @ txt.T.astype(np.float64)
    want = np.array([[sim[lab == a][:, lab == b].mean() for b in range(5)] for a in range(5)])
    np.testing.assert_allclose(res.arrays["alignment_matrix"], want, rtol=1e-5, atol=1e-7)
    gaps = cross_alignment_gaps(img, txt, lab, lab == 0, SPHERE, 1.0)
    for key, value in gaps.items():
        assert m[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


def test_known_answers_on_the_hyperboloid():
    """Class cone apexes at |t| = 1 and parent apexes at |p| = 0.5 on the class's ray, curv 2.
    An image further out on the ray is inside both cones (exterior angle 0); one between the
    two apexes only in the parent's (angle pi at the class apex); one on an orthogonal ray in
    neither (the triangle O, apex, image has a right angle at O, so its exterior angle at the
    apex exceeds pi/2 > any aperture here)."""
    curv = 2.0
    e = _e
    forget_img = np.stack([e(0, scale=3), e(0, scale=3), e(9, scale=3), e(9, scale=3)])
    retain_lab = np.array([1, 1, 2, 2, 3, 3, 4, 4, 1])
    retain_img = np.stack([e(c, scale=3) for c in retain_lab])
    retain_img[-1] = e(1, scale=0.75)
    img = np.concatenate([forget_img, retain_img])
    lab = np.concatenate([np.zeros(4, np.int64), retain_lab])
    txt = np.stack([e(int(c), scale=1.5) for c in lab])
    emb = AuditEmbeddings(
        test_images=img,
        test_texts=txt,
        test_labels=lab,
        test_caption_levels=np.zeros(len(lab), np.int64),
        forget_train_images=forget_img,
        forget_train_texts=forget_img * 0.5,
        forget_train_labels=np.zeros(4, np.int64),
        member_images=retain_img,
        member_texts=retain_img * 0.9,
        class_embs=np.stack([e(i) for i in range(5)]),
        parent_embs=np.stack([e(i, scale=0.5) for i in range(5)]),
        concept_embs=np.stack([e(i) for i in range(8)]),
    )
    res = audit_embeddings(emb, hdata.SHAPES, FORGET, LORENTZ, curv)
    m = res.metrics
    assert m["cone_own_forget"] == 0.5 and m["cone_parent_forget"] == 0.5
    assert m["cone_own_retain"] == pytest.approx(8 / 9)
    assert m["cone_parent_retain"] == 1.0
    # d(O, x) = asinh(sqrt(c) |x|) / sqrt(c)
    d_img = np.arcsinh(np.sqrt(curv) * np.linalg.norm(img, axis=1)) / np.sqrt(curv)
    d_txt = np.arcsinh(np.sqrt(curv) * 1.5) / np.sqrt(curv)
    np.testing.assert_allclose(res.arrays["dist_origin_image"], d_img, rtol=1e-5)
    np.testing.assert_allclose(res.arrays["dist_origin_text"], d_txt, rtol=1e-5)
    assert m["dist_origin_image_forget"] == pytest.approx(d_img[:4].mean(), rel=1e-5)
    assert m["dist_origin_image_retain"] == pytest.approx(d_img[4:].mean(), rel=1e-5)
    assert m["dist_origin_text_forget"] == pytest.approx(d_txt, rel=1e-5)
    for key in METRIC_KEYS:
        assert math.isfinite(m[key]), key


def test_retrieval_ranks_distinct_captions():
    """One image of class 0 is closer to the caption of class 1, which ten pairs share: among
    distinct captions its own ranks second (R@5 hit), not eleventh."""
    img = _unit(_e(1, 3) + 0.3 * _e(0, 3), *[_e(1, 3)] * 10)
    lab = np.array([0] + [1] * 10)
    txt = _unit(_e(0, 3), *[_e(1, 3)] * 10)
    rec = retain_retrieval(img, lab, txt, lab, np.zeros(11, np.int64), np.arange(2), SPHERE)
    assert rec["ret_i2t_R@1"] == pytest.approx(10 / 11)
    assert rec["ret_i2t_R@5"] == 1.0
    assert rec["ret_t2i_R@1"] == 1.0  # both distinct captions find an image of their class
