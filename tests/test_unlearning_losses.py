"""Unlearning losses on hand-built embeddings: values, gradient directions, derangements."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hac_jax.geometry import LORENTZ, SPHERE, lorentz
from hac_jax.models import losses
from hac_jax.unlearning import ac, common, hac

# ------------------------------------------------------------------------------------------------
# independent numpy references
# ------------------------------------------------------------------------------------------------


def np_lorentz_dist(x, y, c):
    """Pairwise geodesic distance from the Lorentzian inner product (acosh form)."""
    tx = np.sqrt(1 / c + (x * x).sum(-1))
    ty = np.sqrt(1 / c + (y * y).sum(-1))
    inner = x @ y.T - tx[:, None] * ty[None, :]
    return np.arccosh(np.maximum(-c * inner, 1.0)) / np.sqrt(c)


def np_log_softmax(a, axis):
    m = a.max(axis=axis, keepdims=True)
    return a - m - np.log(np.exp(a - m).sum(axis=axis, keepdims=True))


def np_ac(sim, is_forget, perm, scale, alpha, beta, matched_sim, reduction="fraction"):
    """L_AC written out with explicit loops (docs/METHOD.md)."""
    n = sim.shape[0]
    logits = scale * sim
    lr, lc = np_log_softmax(logits, 1), np_log_softmax(logits, 0)
    num = den = 0.0
    for i in range(n):
        ell = -0.5 * (lr[i, perm[i]] + lc[i, perm[i]])
        w = alpha if is_forget[i] else 1.0
        num += w * ell
        den += w
    forget = [i for i in range(n) if is_forget[i]]
    pos = 0.0
    if forget:
        mean_f = np.mean([matched_sim[i] for i in forget])
        pos = mean_f * (len(forget) / n if reduction == "fraction" else 1.0)
    return num / den + beta * pos


def np_clip_loss(logits):
    n = logits.shape[0]
    idx = np.arange(n)
    return -0.5 * (
        np_log_softmax(logits, 1)[idx, idx].mean() + np_log_softmax(logits, 0)[idx, idx].mean()
    )


def unit(rng, n, d):
    x = rng.normal(size=(n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def ray_point(direction, radius, c=1.0):
    """Space components of the point at geodesic distance `radius` from O along `direction`."""
    direction = np.asarray(direction, np.float64)
    direction = direction / np.linalg.norm(direction)
    return direction * np.sinh(np.sqrt(c) * radius) / np.sqrt(c)


# ------------------------------------------------------------------------------------------------
# masked means and the derangement
# ------------------------------------------------------------------------------------------------


def test_masked_mean_is_safe_on_empty_mask():
    x = jnp.array([1.0, 2.0, 4.0])
    assert float(common.masked_mean(x, jnp.array([True, False, True]))) == pytest.approx(2.5)
    empty = jnp.zeros(3, bool)
    assert float(common.masked_mean(x, empty)) == 0.0
    assert (
        float(common.masked_mean(jnp.array([1.0, jnp.nan, jnp.inf]), jnp.array([1, 0, 0], bool)))
        == 1.0
    )
    g = jax.grad(lambda x: common.masked_mean(x**2, empty))(x)
    assert np.all(np.asarray(g) == 0.0)
    g = jax.grad(lambda x: common.masked_mean(x**2, jnp.array([True, False, True])))(x)
    np.testing.assert_allclose(g, [1.0, 0.0, 4.0])


def test_derangement_index_shift_by_hand():
    is_forget = jnp.array([False, True, False, True, True, False, True])
    perm, valid = common.forget_derangement(is_forget, shift=1)
    np.testing.assert_array_equal(perm, [0, 3, 2, 4, 6, 5, 1])
    np.testing.assert_array_equal(valid, np.asarray(is_forget))
    perm2, _ = common.forget_derangement(is_forget, shift=2)
    np.testing.assert_array_equal(perm2, [0, 4, 2, 6, 1, 5, 3])
    # a shift that is a multiple of the forget count would be the identity: falls back to 1
    perm4, _ = common.forget_derangement(is_forget, shift=4)
    np.testing.assert_array_equal(perm4, perm)
    # deterministic, also under jit with a traced mask
    perm_jit, _ = jax.jit(lambda m: common.forget_derangement(m, shift=1))(is_forget)
    np.testing.assert_array_equal(perm_jit, perm)


@pytest.mark.parametrize("mode", ["shift", "random"])
def test_derangement_properties_on_random_masks(mode):
    rng = np.random.default_rng(0)

    @jax.jit
    def derange(mask, key):
        if mode == "shift":
            return common.forget_derangement(mask, shift=3)
        return common.forget_derangement(mask, rng=key)

    seen = set()
    for trial in range(40):
        mask = rng.random(12) < 0.5
        if mask.sum() < 2:
            mask[:2] = True
        perm, valid = (np.asarray(a) for a in derange(jnp.asarray(mask), jax.random.key(trial)))
        forget = np.flatnonzero(mask)
        np.testing.assert_array_equal(valid, mask)
        np.testing.assert_array_equal(perm[~mask], np.flatnonzero(~mask))  # retain: identity
        assert np.all(perm[forget] != forget)  # no fixed point
        np.testing.assert_array_equal(np.sort(perm[forget]), forget)  # a permutation of F
        if mode == "random" and mask.sum() >= 4:
            seen.add(tuple(perm[forget[:4]]))
    if mode == "random":
        assert len(seen) > 5  # the order changes with the key


def test_derangement_with_fewer_than_two_forget_pairs():
    for mask in ([False] * 5, [False, False, True, False, False]):
        perm, valid = common.forget_derangement(jnp.array(mask), shift=1)
        np.testing.assert_array_equal(perm, np.arange(5))
        assert not np.asarray(valid).any()


def test_derangement_rejects_bad_arguments():
    mask = jnp.array([True, True])
    with pytest.raises(ValueError, match="exactly one"):
        common.forget_derangement(mask)
    with pytest.raises(ValueError, match="exactly one"):
        common.forget_derangement(mask, shift=1, rng=jax.random.key(0))
    with pytest.raises(ValueError, match="shift must be an int >= 1"):
        common.forget_derangement(mask, shift=0)


# ------------------------------------------------------------------------------------------------
# wrong-positive pools
# ------------------------------------------------------------------------------------------------

# A hand-checkable batch: pairs 0-2 are forget pairs (class 5, group 3); 3 is a retain sibling
# (class 7, group 3); 4-5 are retain pairs of other groups; 6 is a forget image's group caption
# (in neither set).
POOL_BATCH = dict(
    is_forget=jnp.array([1, 1, 1, 0, 0, 0, 0], bool),
    is_retain=jnp.array([0, 0, 0, 1, 1, 1, 0], bool),
    label=jnp.array([5, 5, 5, 7, 0, 1, 5]),
    group=jnp.array([3, 3, 3, 3, 0, 0, 3]),
)


@pytest.mark.parametrize("seed", range(4))
def test_wrong_positive_pools_by_hand(seed):
    b, key = POOL_BATCH, jax.random.key(seed)
    idx = np.arange(7)
    # retain: any retain pair (3, 4, 5), never a forget pair or the excluded pair 6
    t, valid = common.wrong_positives(**b, pool="retain", rng=key)
    np.testing.assert_array_equal(valid, [1, 1, 1, 0, 0, 0, 0])
    assert set(np.asarray(t)[:3]) <= {3, 4, 5}
    np.testing.assert_array_equal(np.asarray(t)[3:], idx[3:])
    # sibling: the one retain pair of the same group (3)
    t, valid = common.wrong_positives(**b, pool="sibling", rng=key)
    np.testing.assert_array_equal(np.asarray(t), [3, 3, 3, 3, 4, 5, 6])
    np.testing.assert_array_equal(valid, [1, 1, 1, 0, 0, 0, 0])
    # forget: a derangement among 0-2
    t, valid = common.wrong_positives(**b, pool="forget", shift=1)
    np.testing.assert_array_equal(np.asarray(t), [1, 2, 0, 3, 4, 5, 6])


def test_sibling_pool_falls_back_to_any_retain_pair_and_draws_uniformly():
    b = dict(POOL_BATCH, group=jnp.array([3, 3, 3, 1, 0, 0, 3]))  # no sibling in the batch
    draws = np.stack(
        [
            np.asarray(common.wrong_positives(**b, pool="sibling", rng=jax.random.key(i))[0][:3])
            for i in range(300)
        ]
    )
    counts = np.array([(draws == j).sum() for j in (3, 4, 5)])
    assert counts.sum() == draws.size  # only retain pairs
    assert counts.min() > 0.25 * draws.size  # about a third each (expected 300 of 900)


def test_wrong_positives_without_candidates_and_bad_arguments():
    b = dict(POOL_BATCH, is_retain=jnp.zeros(7, bool))
    t, valid = common.wrong_positives(**b, pool="retain", rng=jax.random.key(0))
    assert not np.asarray(valid).any()
    np.testing.assert_array_equal(np.asarray(t), np.arange(7))
    with pytest.raises(ValueError, match="pool must be one of"):
        common.wrong_positives(**POOL_BATCH, pool="nearest", rng=jax.random.key(0))
    with pytest.raises(ValueError, match="rng"):
        common.wrong_positives(**POOL_BATCH, pool="retain")


def test_weighted_infonce_active_mask_equals_the_sub_batch():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(6, 6)) * 2
    active = np.array([1, 1, 0, 1, 1, 0], bool)
    targets = np.array([1, 0, 2, 3, 4, 5])
    weights = np.array([1.0, 0.5, 0.0, 1.0, 1.0, 0.0])
    loss, per = common.weighted_symmetric_infonce(logits, targets, weights, active)
    keep = np.flatnonzero(active)
    sub = logits[np.ix_(keep, keep)]
    sub_targets = np.searchsorted(keep, targets[keep])
    ref, ref_per = common.weighted_symmetric_infonce(sub, sub_targets, weights[keep])
    np.testing.assert_allclose(loss, ref, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(per)[keep], ref_per, rtol=1e-6)


def test_excluded_pairs_change_no_loss_of_ac_or_hac():
    """A pair in neither set (a group caption of a forget image) is neither calibrated nor
    trained on: any embedding put there leaves every loss value and gradient unchanged."""
    rng = np.random.default_rng(5)
    n = 7
    b = POOL_BATCH
    u0 = jnp.asarray(rng.normal(size=(n, 4)) * 0.6, jnp.float32)
    v0 = jnp.asarray(rng.normal(size=(n, 4)) * 0.6, jnp.float32)
    parent = jnp.asarray(rng.normal(size=(n, 4)) * 0.3, jnp.float32)
    perm, valid = common.wrong_positives(**b, pool="retain", rng=jax.random.key(1))

    def losses_at(u, v, names=("ac_sphere", "ac_lorentz", "hac")):
        out = {}
        for name, geometry in (("sphere", SPHERE), ("lorentz", LORENTZ)):
            if f"ac_{name}" not in names:
                continue
            uu, vv = (geometry.project(x, 1.0) for x in (u, v))
            out[f"ac_{name}"] = ac.ac_loss_from_embeddings(
                uu,
                vv,
                b["is_forget"],
                10.0,
                1.0,
                geometry,
                1.0,
                1.0,
                perm,
                valid=valid,
                is_retain=b["is_retain"],
            )[0]
        if "hac" not in names:
            return out
        out["hac"] = hac.hac_loss_from_embeddings(
            u,
            v,
            b["is_forget"],
            10.0,
            1.0,
            perm=perm,
            valid=valid,
            is_retain=b["is_retain"],
            alpha=1.0,
            parent_policy="keep",
            parent_text=parent,
            u0=u0,
            v0=v0,
            delta=0.1,
        )[0]
        return out

    u = jnp.asarray(rng.normal(size=(n, 4)) * 0.6, jnp.float32)
    v = jnp.asarray(rng.normal(size=(n, 4)) * 0.6, jnp.float32)
    moved_u, moved_v = u.at[6].set(5.0), v.at[6].set(-3.0)
    all_losses = jax.jit(losses_at)
    before, after = all_losses(u, v), all_losses(moved_u, moved_v)
    for name in before:
        np.testing.assert_allclose(before[name], after[name], rtol=1e-6, err_msg=name)
        # compiled rather than op by op: the same values, in a fraction of the time
        grads = jax.jit(jax.grad(lambda x, y, name=name: losses_at(x, y, (name,))[name], (0, 1)))
        for grad in grads(u, v):
            np.testing.assert_array_equal(np.asarray(grad)[6], 0.0, err_msg=name)
    # ... while moving a retain pair the same way does change them
    moved = all_losses(u.at[4].set(5.0), v.at[4].set(-3.0))
    for name in before:
        assert abs(float(moved[name]) - float(before[name])) > 1e-3, name


# ------------------------------------------------------------------------------------------------
# weighted InfoNCE and AC
# ------------------------------------------------------------------------------------------------


def test_weighted_infonce_matches_numpy_loops():
    rng = np.random.default_rng(1)
    with jax.enable_x64(True):
        logits = rng.normal(size=(5, 5)) * 3
        targets = np.array([0, 3, 2, 4, 1])
        weights = np.array([1.0, 0.5, 1.0, 0.5, 0.5])
        loss, per = common.weighted_symmetric_infonce(logits, targets, weights)
        lr, lc = np_log_softmax(logits, 1), np_log_softmax(logits, 0)
        ref_per = np.array([-0.5 * (lr[i, targets[i]] + lc[i, targets[i]]) for i in range(5)])
        np.testing.assert_allclose(per, ref_per, rtol=1e-12)
        np.testing.assert_allclose(loss, (weights * ref_per).sum() / weights.sum(), rtol=1e-12)
        # identity targets and equal weights: the CLIP loss
        plain, _ = common.weighted_symmetric_infonce(logits, np.arange(5), np.ones(5))
        np.testing.assert_allclose(plain, np_clip_loss(logits), rtol=1e-12)


def test_ac_two_forget_pairs_by_hand():
    # u = v = (e1, e2), s = 1: logits = I. Both pairs are forget pairs and swap partners, so each
    # l_i = log(1 + e) (the positive logit is 0, the other is 1) and the matched sims are 1.
    u = v = jnp.eye(2)
    is_forget = jnp.array([True, True])
    perm, valid = common.forget_derangement(is_forget, shift=1)
    loss, m = ac.ac_loss_from_embeddings(u, v, is_forget, 1.0, 1.0, SPHERE, 0.7, 0.3, perm)
    assert float(m["ctr"]) == pytest.approx(math.log(1 + math.e), rel=1e-6)
    assert float(m["pos_calib"]) == pytest.approx(1.0, rel=1e-6)  # (2/2) * mean(1, 1)
    assert float(loss) == pytest.approx(math.log(1 + math.e) + 0.3, rel=1e-6)
    assert int(m["num_forget"]) == 2


@pytest.mark.parametrize("geometry", [SPHERE, LORENTZ])
@pytest.mark.parametrize("reduction", ["fraction", "mean"])
def test_ac_matches_numpy_formula(geometry, reduction):
    rng = np.random.default_rng(2)
    with jax.enable_x64(True):
        n, c, scale, alpha, beta = 6, 0.7, 4.0, 1.7, 0.4
        if geometry is SPHERE:
            u, v = unit(rng, n, 5), unit(rng, n, 5)
            sim = u @ v.T
        else:
            u, v = rng.normal(size=(n, 5)) * 0.6, rng.normal(size=(n, 5)) * 0.6
            sim = -np_lorentz_dist(u, v, c)
        is_forget = np.array([True, False, True, False, False, True])
        perm, _ = common.forget_derangement(jnp.asarray(is_forget), shift=1)
        perm = np.asarray(perm)
        assert perm.tolist() == [2, 1, 5, 3, 4, 0]
        loss, m = ac.ac_loss_from_embeddings(
            u, v, is_forget, scale, c, geometry, alpha, beta, perm, pos_reduction=reduction
        )
        ref = np_ac(sim, is_forget, perm, scale, alpha, beta, np.diag(sim), reduction)
        np.testing.assert_allclose(loss, ref, rtol=1e-10)


@pytest.mark.parametrize("geometry", [SPHERE, LORENTZ])
def test_ac_without_forget_pairs_is_the_clip_loss(geometry):
    rng = np.random.default_rng(3)
    u, v = unit(rng, 4, 3), unit(rng, 4, 3)
    is_forget = np.zeros(4, bool)
    perm, _ = common.forget_derangement(jnp.asarray(is_forget), rng=jax.random.key(0))
    loss, m = ac.ac_loss_from_embeddings(u, v, is_forget, 10.0, 1.0, geometry, 3.0, 5.0, perm)
    sim = u @ v.T if geometry is SPHERE else -np_lorentz_dist(u, v, 1.0)
    np.testing.assert_allclose(loss, np_clip_loss(10.0 * sim), rtol=1e-5)
    assert float(m["pos_calib"]) == 0.0


def test_ac_leaves_a_lone_forget_pair_out_of_the_contrastive_term():
    rng = np.random.default_rng(4)
    u, v = unit(rng, 3, 3), unit(rng, 3, 3)
    is_forget = np.array([False, True, False])
    perm, valid = common.forget_derangement(jnp.asarray(is_forget), shift=1)
    loss, m = ac.ac_loss_from_embeddings(
        u, v, is_forget, 2.0, 1.0, SPHERE, 5.0, 0.0, perm, valid=valid
    )
    lr, lc = np_log_softmax(2.0 * u @ v.T, 1), np_log_softmax(2.0 * u @ v.T, 0)
    ref = np.mean([-0.5 * (lr[i, i] + lc[i, i]) for i in (0, 2)])
    np.testing.assert_allclose(loss, ref, rtol=1e-5)


def test_negative_calibration_moves_forget_image_towards_deranged_caption():
    rng = np.random.default_rng(5)
    u, v = jnp.asarray(unit(rng, 6, 8)), jnp.asarray(unit(rng, 6, 8))
    is_forget = jnp.array([True, True, True, False, False, False])
    perm, valid = common.forget_derangement(is_forget, shift=1)

    def loss(u):
        return ac.ac_loss_from_embeddings(
            SPHERE.project(u), v, is_forget, 10.0, 1.0, SPHERE, 1.0, 0.0, perm, valid=valid
        )[0]

    u_new = SPHERE.project(u - 0.05 * jax.grad(loss)(u))
    before = np.asarray(SPHERE.sim(u, v[perm], 1.0))
    after = np.asarray(SPHERE.sim(u_new, v[perm], 1.0))
    assert np.all(after[:3] > before[:3])  # forget images align with their wrong captions


@pytest.mark.parametrize("geometry", [SPHERE, LORENTZ])
def test_positive_calibration_decreases_matched_forget_similarity(geometry):
    rng = np.random.default_rng(6)
    u, v = jnp.asarray(unit(rng, 4, 3) * 0.8), jnp.asarray(unit(rng, 4, 3) * 0.8)
    is_forget = jnp.array([True, False, True, False])
    g = jax.grad(lambda u: ac.positive_calibration(u, v, is_forget, 1.0, geometry))(u)
    u_new = u - 0.05 * g
    before, after = geometry.sim(u, v, 1.0), geometry.sim(u_new, v, 1.0)
    assert np.all(np.asarray(after - before)[[0, 2]] < 0)
    np.testing.assert_array_equal(np.asarray(g)[[1, 3]], 0.0)  # retain pairs untouched


def test_relative_excess_by_hand():
    # rows: images; columns: captions. Pair 0 and 1 are forget pairs, 2 and 3 retain captions,
    # column 4 is excluded (in neither set) and must not enter the reference.
    sims = np.array(
        [
            [0.9, 0.0, 0.2, 0.4, 5.0],  # ref = (0.2 + 0.4) / 2 = 0.3 -> 0.9 - 0.3 + 0.1 = 0.7
            [0.0, 0.1, 0.5, 0.3, 5.0],  # ref = 0.4 -> 0.1 - 0.4 + 0.1 < 0 -> 0
            [0.0, 0.0, 0.8, 0.1, 5.0],  # retain row -> 0
            [0.0, 0.0, 0.1, 0.8, 5.0],
            [0.0, 0.0, 0.0, 0.0, 5.0],
        ]
    )
    forget = np.array([True, True, False, False, False])
    retain = np.array([False, False, True, True, False])
    out = np.asarray(common.relative_excess(sims, forget, retain, 0.1))
    np.testing.assert_allclose(out, [0.7, 0.0, 0.0, 0.0, 0.0], atol=1e-6)
    # the reference is a constant: only the matched similarity of an active forget row moves
    g = np.asarray(jax.grad(lambda s: common.relative_excess(s, forget, retain, 0.1).sum())(sims))
    expected = np.zeros_like(sims)
    expected[0, 0] = 1.0
    np.testing.assert_array_equal(g, expected)
    # no retain caption in the batch: nothing to be relative to, the term is 0
    none = np.asarray(common.relative_excess(sims, forget, np.zeros(5, bool), 0.1))
    np.testing.assert_array_equal(none, 0.0)


def test_relative_excess_quantile_reference_by_hand():
    # Row 0's retain captions (columns 1..4) sit at 0.1, 0.2, 0.4, 0.8; column 5 is excluded
    # (in neither set) and its 9.0 must never be picked. The quantile-th is the lower order
    # statistic floor(q (n - 1)) of the n = 4 retain similarities.
    sims = np.zeros((6, 6))
    sims[0] = [0.9, 0.8, 0.1, 0.4, 0.2, 9.0]
    forget = np.array([True, False, False, False, False, False])
    retain = np.array([False, True, True, True, True, False])
    for q, ref in ((0.0, 0.1), (0.5, 0.2), (0.7, 0.4), (1.0, 0.8)):
        out = np.asarray(
            common.relative_excess(sims, forget, retain, 0.0, reference="quantile", quantile=q)
        )
        np.testing.assert_allclose(out, [0.9 - ref, 0, 0, 0, 0, 0], atol=1e-6, err_msg=f"q={q}")
    # the order statistic is a constant too: only the matched similarity carries a gradient
    g = np.asarray(
        jax.grad(
            lambda s: common.relative_excess(
                s, forget, retain, 0.0, reference="quantile", quantile=0.7
            ).sum()
        )(sims)
    )
    expected = np.zeros_like(sims)
    expected[0, 0] = 1.0
    np.testing.assert_array_equal(g, expected)
    with pytest.raises(ValueError, match="pos_reference"):
        common.relative_excess(sims, forget, retain, reference="median")
    with pytest.raises(ValueError, match="pos_quantile"):
        common.relative_excess(sims, forget, retain, reference="quantile", quantile=1.5)


@pytest.mark.parametrize("geometry", [SPHERE, LORENTZ])
def test_relative_positive_calibration_matches_numpy_and_stops_at_the_retain_level(geometry):
    rng = np.random.default_rng(8)
    with jax.enable_x64(True):
        n, c, margin = 6, 0.8, 0.05
        if geometry is SPHERE:
            u, v = unit(rng, n, 4), unit(rng, n, 4)
            sim = u @ v.T
        else:
            u, v = rng.normal(size=(n, 4)) * 0.6, rng.normal(size=(n, 4)) * 0.6
            sim = -np_lorentz_dist(u, v, c)
        is_forget = np.array([True, False, True, False, False, True])
        retain = ~is_forget
        ref = np.array(
            [
                max(0.0, sim[i, i] - sim[i, retain].mean() + margin) if is_forget[i] else 0.0
                for i in range(n)
            ]
        )
        for reduction, scale in (("fraction", 3 / n), ("mean", 1.0)):
            got = ac.positive_calibration(
                u, v, is_forget, c, geometry, reduction, target="relative", margin=margin
            )
            np.testing.assert_allclose(got, ref[is_forget].mean() * scale, rtol=1e-10)
        if geometry is LORENTZ:
            common_kw = dict(
                perm=np.arange(n),
                alpha=0.0,
                beta=1.0,
                lambda_ent0=0.0,
                lambda_ec=0.0,
                lambda_n=0.0,
                pos_margin=margin,
            )
            _, m = hac.hac_loss_from_embeddings(
                u, v, is_forget, 1.0, c, pos_target="relative", **common_kw
            )
            np.testing.assert_allclose(m["pos_calib"], ref[is_forget].mean(), rtol=1e-10)
    # a forget caption already far below the retained captions gets no push (unlike "absolute")
    u = jnp.asarray(np.eye(3))
    v = jnp.asarray(np.array([[-1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
    forget = jnp.array([True, False, False])
    for target, moves in (("absolute", True), ("relative", False)):
        g = jax.grad(ac.positive_calibration)(u, v, forget, 1.0, SPHERE, target=target)
        assert bool(np.any(np.asarray(g) != 0)) == moves


def test_positive_targets_are_validated():
    with pytest.raises(ValueError, match="pos_target"):
        ac.positive_calibration(
            np.eye(2), np.eye(2), np.array([True, False]), 1.0, SPHERE, target="nope"
        )
    with pytest.raises(ValueError, match="pos_target"):
        hac.hac_loss_from_embeddings(
            np.eye(2),
            np.eye(2),
            np.array([True, False]),
            1.0,
            1.0,
            perm=np.arange(2),
            lambda_n=0.0,
            pos_target="absolute",
        )


def test_ac_zero_weights_remove_terms_and_their_gradients():
    rng = np.random.default_rng(7)
    u, v = jnp.asarray(unit(rng, 4, 3)), jnp.asarray(unit(rng, 4, 3))
    is_forget = jnp.array([True, True, True, True])
    perm, valid = common.forget_derangement(is_forget, shift=1)

    def loss(u, v):
        return ac.ac_loss_from_embeddings(u, v, is_forget, 5.0, 1.0, SPHERE, 0.0, 0.0, perm)[0]

    value, grads = jax.value_and_grad(loss, argnums=(0, 1))(u, v)
    assert float(value) == 0.0
    assert all(np.all(np.asarray(g) == 0.0) for g in grads)


# ------------------------------------------------------------------------------------------------
# subset (model) losses
# ------------------------------------------------------------------------------------------------


def test_subset_contrastive_loss_equals_loss_of_the_sub_batch():
    rng = np.random.default_rng(8)
    with jax.enable_x64(True):
        logits = rng.normal(size=(6, 6)) * 2
        mask = np.array([True, False, True, True, False, False])
        sub = logits[np.ix_(mask, mask)]
        np.testing.assert_allclose(
            common.subset_contrastive_loss(logits, mask), np_clip_loss(sub), rtol=1e-12
        )
        np.testing.assert_allclose(
            common.subset_contrastive_loss(logits, np.ones(6, bool)),
            np_clip_loss(logits),
            rtol=1e-12,
        )
        assert float(common.subset_contrastive_loss(logits, np.zeros(6, bool))) == 0.0


def test_subset_model_loss_meru_adds_weighted_entailment():
    rng = np.random.default_rng(9)
    u, v = rng.normal(size=(4, 3)) * 0.5, rng.normal(size=(4, 3)) * 0.5
    mask = np.array([True, True, False, True])
    loss, m = common.subset_model_loss(u, v, 3.0, 0.8, LORENTZ, mask, entail_weight=0.2)
    sub = np.flatnonzero(mask)
    ctr = np_clip_loss(-3.0 * np_lorentz_dist(u[sub], v[sub], 0.8))
    ent = np.mean(
        np.maximum(
            np.asarray(lorentz.oxy_angle(v, u, 0.8)) - np.asarray(lorentz.half_aperture(v, 0.8)),
            0,
        )[sub]
    )
    np.testing.assert_allclose(m["contrastive_loss"], ctr, rtol=1e-5)
    np.testing.assert_allclose(m["entailment_loss"], ent, rtol=1e-5)
    np.testing.assert_allclose(loss, ctr + 0.2 * ent, rtol=1e-5)
    # the sphere has no entailment term
    loss_s, m_s = common.subset_model_loss(
        unit(rng, 4, 3), unit(rng, 4, 3), 3.0, 1.0, SPHERE, mask, entail_weight=0.2
    )
    assert "entailment_loss" not in m_s and float(loss_s) == float(m_s["contrastive_loss"])


# ------------------------------------------------------------------------------------------------
# HAC terms on points placed along rays (hand-computable geometry, c = 1)
# ------------------------------------------------------------------------------------------------

E1, E2 = np.array([1.0, 0.0]), np.array([0.0, 1.0])


def test_bounded_positive_calibration_by_hand():
    # same ray: d_L = 1.2 - 0.5 = 0.7 (pair 0); different rays far apart (pair 1, d > m_d)
    u = np.stack([ray_point(E1, 0.5), ray_point(E1, 3.0)])
    v = np.stack([ray_point(E1, 1.2), ray_point(-E1, 3.0)])
    forget = np.array([True, True])
    val = hac.bounded_positive_calibration(u, v, forget, 1.0, 2.0)
    assert float(val) == pytest.approx(((2.0 - 0.7) + 0.0) / 2, rel=1e-5)
    g = np.asarray(jax.grad(lambda u: hac.bounded_positive_calibration(u, v, forget, 1.0, 2.0))(u))
    assert g[0, 0] > 0  # descent moves u_0 towards the origin, away from v_0
    np.testing.assert_array_equal(g[1], 0.0)  # beyond the margin: no push
    d_before = float(lorentz.dist(u[0], v[0], 1.0))
    d_after = float(lorentz.dist(u[0] - 0.1 * g[0], v[0], 1.0))
    assert d_after > d_before


def test_entailment_calibration_by_hand():
    v = np.stack([0.4 * E1, 0.4 * E1])  # half-aperture asin(0.2 / 0.4) = pi / 6
    u = np.stack([ray_point(E1, 2.0), 0.1 * E1])  # beyond v on its ray (angle 0), before it (pi)
    forget = np.array([True, True])
    delta = 0.1
    aper = math.pi / 6
    np.testing.assert_allclose(lorentz.half_aperture(v, 1.0), [aper, aper], rtol=1e-6)
    val = hac.entailment_calibration(u, v, forget, 1.0, delta)
    # pair 0 is deep inside the cone; pair 1 is outside (angle pi > aper + delta)
    assert float(val) == pytest.approx((aper + delta - 0.0) / 2, abs=1e-3)


def test_entailment_calibration_increases_exterior_angle():
    rng = np.random.default_rng(10)
    v = jnp.asarray(rng.normal(size=(3, 4)))
    # images inside their caption's cone: further out along the caption's direction plus noise
    u = v * 2.0 + 0.05 * jnp.asarray(rng.normal(size=(3, 4)))
    forget = jnp.array([True, True, False])
    before = np.asarray(lorentz.oxy_angle(v, u, 1.0))
    assert np.all(before < np.asarray(lorentz.half_aperture(v, 1.0)))
    g = jax.grad(lambda u: hac.entailment_calibration(u, v, forget, 1.0, 0.1))(u)
    after = np.asarray(lorentz.oxy_angle(v, u - 0.2 * g, 1.0))
    assert np.all(after[:2] > before[:2])
    np.testing.assert_array_equal(np.asarray(g)[2], 0.0)


def test_parent_cone_policies_by_hand():
    w = np.stack([0.4 * E2, 0.4 * E2])  # parent texts, half-aperture pi / 6
    u = np.stack([ray_point(E2, 2.0), 0.1 * E2])  # inside the parent cone / outside (pi)
    forget = np.array([True, True])
    aper, delta = math.pi / 6, 0.05
    keep = hac.parent_cone_loss(u, w, forget, 1.0, "keep", delta)
    push = hac.parent_cone_loss(u, w, forget, 1.0, "push", delta)
    ignore = hac.parent_cone_loss(u, w, forget, 1.0, "ignore", delta)
    assert float(keep) == pytest.approx((0.0 + (math.pi - aper)) / 2, abs=1e-3)
    assert float(push) == pytest.approx(((aper + delta) + 0.0) / 2, abs=1e-3)
    assert float(ignore) == 0.0
    with pytest.raises(ValueError, match="parent_policy"):
        hac.parent_cone_loss(u, w, forget, 1.0, "keepp", delta)


def test_retain_entailment_by_hand():
    v = np.stack([0.4 * E1, 0.4 * E1])
    u = np.stack([0.1 * E1, ray_point(E1, 2.0)])  # pair 0 outside its cone (angle pi)
    val = hac.retain_entailment_loss(u, v, np.array([False, True]), 1.0)
    assert float(val) == pytest.approx(math.pi - math.pi / 6, abs=1e-3)  # only pair 0 is retain


def test_norm_regularization_by_hand_and_direction():
    u = np.array([[2.0, 0.0], [0.0, 1.0]])
    v = np.array([[0.0, 0.5], [3.0, 4.0]])
    u0 = np.array([[1.0, 0.0], [0.0, 9.0]])
    v0 = np.array([[0.0, 1.5], [0.0, 0.0]])
    retain = np.array([False, False])  # is_forget: both are retain pairs
    val = hac.norm_regularization(u, v, u0, v0, retain)
    assert float(val) == pytest.approx(((1.0 + 1.0) + (64.0 + 25.0)) / 2, rel=1e-5)
    is_forget = np.array([False, True])
    val = hac.norm_regularization(u, v, u0, v0, is_forget)
    assert float(val) == pytest.approx(2.0, rel=1e-5)
    gu, gv, gu0 = jax.grad(
        lambda u, v, u0: hac.norm_regularization(u, v, u0, v0, is_forget), argnums=(0, 1, 2)
    )(u, v, u0)
    # |u_0| = 2 > 1 = |u0_0| and |v_0| = 0.5 < 1.5: descent shrinks u_0 and grows v_0
    assert np.linalg.norm(u[0] - 0.1 * gu[0]) < 2.0
    assert np.linalg.norm(v[0] - 0.1 * gv[0]) > 0.5
    np.testing.assert_array_equal(np.asarray(gu)[1], 0.0)  # forget rows: no norm pull
    np.testing.assert_array_equal(np.asarray(gu0), 0.0)  # the frozen model gets no gradient


def test_forget_norm_target_by_hand():
    v = np.stack([ray_point(E1, 1.2, c=0.5), ray_point(E2, 0.3, c=0.5)])
    forget = np.array([True, False])
    val = hac.forget_norm_loss(v, forget, 0.5, 0.5)
    assert float(val) == pytest.approx((1.2 - 0.5) ** 2, rel=1e-5)
    g = jax.grad(lambda v: hac.forget_norm_loss(v, forget, 0.5, 0.5))(v)
    assert np.linalg.norm(v[0] - 0.1 * g[0]) < np.linalg.norm(v[0])  # towards r_f


# ------------------------------------------------------------------------------------------------
# the HAC total
# ------------------------------------------------------------------------------------------------


def _hac_case():
    """Six pairs, forget = 0, 2, 4. Images 0 and 2 lie inside their caption's cone (further out
    along it), image 0 also inside its parent's cone (the parent sits on the same ray, nearer the
    origin); the others are random. So every term of L_HAC is active."""
    rng = np.random.default_rng(11)
    n = 6
    v = rng.normal(size=(n, 4)) * 0.7
    u = rng.normal(size=(n, 4)) * 0.7
    u[[0, 2]] = 2.0 * v[[0, 2]] + 0.02 * rng.normal(size=(2, 4))
    parent = rng.normal(size=(n, 4)) * 0.3
    parent[0] = 0.5 * v[0]
    is_forget = jnp.array([True, False, True, False, True, False])
    perm, valid = common.forget_derangement(is_forget, shift=1)
    u, v = jnp.asarray(u, jnp.float32), jnp.asarray(v, jnp.float32)
    extra = dict(parent_text=jnp.asarray(parent, jnp.float32), u0=u * 1.3, v0=v * 0.8)
    return u, v, is_forget, perm, valid, extra


ZERO = dict(
    beta=0.0, lambda_ent0=0.0, lambda_ec=0.0, lambda_parent=0.0, lambda_n=0.0, lambda_nf=0.0
)
TERMS = {
    "beta": "pos_calib",
    "lambda_ent0": "entail_retain",
    "lambda_ec": "entail_calib",
    "lambda_parent": "parent_cone",
    "lambda_n": "norm_reg",
    "lambda_nf": "forget_norm",
}


def test_hac_total_is_the_weighted_sum_of_its_terms():
    u, v, is_forget, perm, valid, extra = _hac_case()
    common_kw = dict(perm=perm, valid=valid, margin_d=2.0, delta=0.05, r_f=0.3, **extra)
    weights = dict(
        alpha=1.5,
        beta=0.7,
        lambda_ent0=0.2,
        lambda_ec=1.1,
        lambda_parent=0.4,
        lambda_n=2.0,
        lambda_nf=0.3,
    )
    for policy in ("keep", "push"):
        loss, m = hac.hac_loss_from_embeddings(
            u, v, is_forget, 5.0, 1.0, parent_policy=policy, **weights, **common_kw
        )
        expected = m["ctr"] + sum(weights[w] * m[t] for w, t in TERMS.items())
        np.testing.assert_allclose(loss, expected, rtol=1e-5)
        ctr, _ = ac.negative_calibration(u, v, is_forget, 5.0, 1.0, LORENTZ, 1.5, perm, valid)
        np.testing.assert_allclose(m["ctr"], ctr, rtol=1e-6)
        assert all(float(m[t]) > 0 for t in TERMS.values())  # a non-trivial case for every term


@pytest.mark.parametrize("weight", sorted(TERMS))
def test_hac_zero_weight_removes_the_term_and_its_gradient(weight):
    u, v, is_forget, perm, valid, extra = _hac_case()
    kw = dict(
        perm=perm, valid=valid, alpha=1.0, parent_policy="push", margin_d=2.0, r_f=0.3, **extra
    )

    def loss(u, v, w):
        return hac.hac_loss_from_embeddings(u, v, is_forget, 5.0, 1.0, **{**kw, **ZERO, weight: w})

    base, m0 = loss(u, v, 0.0)
    on, m1 = loss(u, v, 1.0)
    np.testing.assert_allclose(on - base, m1[TERMS[weight]], rtol=1e-5)
    np.testing.assert_allclose(m0[TERMS[weight]], m1[TERMS[weight]], rtol=1e-6)  # still reported
    g_off = jax.grad(lambda u, v: loss(u, v, 0.0)[0], argnums=(0, 1))(u, v)
    g_ctr = jax.grad(
        lambda u, v: ac.negative_calibration(u, v, is_forget, 5.0, 1.0, LORENTZ, 1.0, perm, valid)[
            0
        ],
        argnums=(0, 1),
    )(u, v)
    for a, b in zip(g_off, g_ctr, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_hac_all_weights_zero_on_an_all_forget_batch():
    u, v, _, _, _, extra = _hac_case()
    is_forget = jnp.ones(u.shape[0], bool)
    perm, valid = common.forget_derangement(is_forget, shift=1)

    def loss(u, v):
        return hac.hac_loss_from_embeddings(
            u,
            v,
            is_forget,
            5.0,
            1.0,
            perm=perm,
            valid=valid,
            alpha=0.0,
            parent_policy="keep",
            **ZERO,
            **extra,
        )[0]

    value, grads = jax.value_and_grad(loss, argnums=(0, 1))(u, v)
    assert float(value) == 0.0
    assert all(np.all(np.asarray(g) == 0.0) for g in grads)


def test_hac_requires_inputs_its_terms_need():
    u, v, is_forget, perm, valid, extra = _hac_case()
    with pytest.raises(ValueError, match="parent_text"):
        hac.hac_loss_from_embeddings(u, v, is_forget, 5.0, 1.0, perm=perm, parent_policy="keep")
    with pytest.raises(ValueError, match="u0 and v0"):
        hac.hac_loss_from_embeddings(
            u, v, is_forget, 5.0, 1.0, perm=perm, parent_policy="ignore", lambda_n=1.0
        )
    with pytest.raises(ValueError, match="parent_policy"):
        hac.hac_loss_from_embeddings(u, v, is_forget, 5.0, 1.0, perm=perm, parent_policy="drop")
    # everything optional switched off: no extra inputs needed, value is finite
    loss, m = hac.hac_loss_from_embeddings(
        u, v, is_forget, 5.0, 1.0, perm=perm, parent_policy="ignore", lambda_n=0.0
    )
    assert np.isfinite(float(loss)) and "norm_reg" not in m and "parent_cone" not in m


def test_hac_is_jittable_with_a_varying_forget_count():
    u, v, _, _, _, extra = _hac_case()

    @jax.jit
    def step(u, v, is_forget, key):
        perm, valid = common.forget_derangement(is_forget, rng=key)
        f = lambda u: hac.hac_loss_from_embeddings(
            u, v, is_forget, 5.0, 1.0, perm=perm, valid=valid, parent_policy="keep", **extra
        )[0]
        return jax.value_and_grad(f)(u)

    for mask in ([0, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0], [1, 1, 0, 1, 0, 0], [1] * 6):
        value, g = step(u, v, jnp.asarray(mask, bool), jax.random.key(sum(mask)))
        assert np.isfinite(float(value)) and np.all(np.isfinite(np.asarray(g)))


@pytest.mark.parametrize("geometry", [SPHERE, LORENTZ])
def test_full_mask_model_loss_equals_the_training_loss(geometry):
    rng = np.random.default_rng(12)
    u, v = jnp.asarray(unit(rng, 6, 4) * 0.9), jnp.asarray(unit(rng, 6, 4) * 0.6)
    out = {"image": u, "text": v, "logit_scale": jnp.asarray(7.0), "curv": jnp.asarray(0.8)}
    full = np.ones(6, bool)
    ours, m = common.subset_model_loss(u, v, 7.0, 0.8, geometry, full, entail_weight=0.2)
    if geometry is SPHERE:
        ref, ref_m = losses.clip_loss(out)
    else:
        ref, ref_m = losses.meru_loss(out, entail_weight=0.2)
        np.testing.assert_allclose(m["entailment_loss"], ref_m["entailment_loss"], rtol=1e-6)
    np.testing.assert_allclose(ours, ref, rtol=1e-6)
    logits = 7.0 * geometry.pairwise_sim(u, v, 0.8)
    plain, _ = common.weighted_symmetric_infonce(logits, jnp.arange(6), jnp.ones(6))
    np.testing.assert_allclose(plain, losses.contrastive_loss(logits), rtol=1e-6)


@pytest.mark.parametrize("geometry", [SPHERE, LORENTZ])
def test_forget_negatives_off_is_the_retain_pairs_contrastive_loss(geometry):
    rng = np.random.default_rng(3)
    u = jnp.asarray(rng.normal(size=(6, 4)), jnp.float32)
    v = jnp.asarray(rng.normal(size=(6, 4)), jnp.float32)
    is_forget = np.array([True, True, False, False, False, False])
    is_retain = np.array([False, False, True, True, True, False])  # the last pair in neither
    perm = jnp.arange(6)

    def loss(u, v, forget_negatives):
        out, _ = ac.negative_calibration(
            u, v, is_forget, 2.0, 1.0, geometry, 0.0, perm, None, is_retain, forget_negatives
        )
        return out

    # the contrastive loss of the three retain pairs alone, by hand
    logits = 2.0 * np.asarray(geometry.pairwise_sim(u, v, 1.0), np.float64)[2:5, 2:5]
    ce_rows = np.log(np.exp(logits).sum(1)) - np.diag(logits)
    ce_cols = np.log(np.exp(logits).sum(0)) - np.diag(logits)
    np.testing.assert_allclose(
        float(loss(u, v, False)), np.mean(0.5 * (ce_rows + ce_cols)), rtol=1e-5
    )
    # AC's code (forget pairs as negatives) differs, and only it moves the forget pairs
    assert abs(float(loss(u, v, True)) - float(loss(u, v, False))) > 1e-4
    g_off = jax.grad(loss, argnums=(0, 1))(u, v, False)
    g_on = jax.grad(loss, argnums=(0, 1))(u, v, True)
    for g in g_off:
        np.testing.assert_array_equal(np.asarray(g)[:2], 0.0)
    assert np.abs(np.asarray(g_on[1])[:2]).max() > 1e-4
    with pytest.raises(ValueError, match="forget_negatives=False needs alpha=0"):
        ac.negative_calibration(
            u, v, is_forget, 2.0, 1.0, geometry, 1.0, perm, None, is_retain, False
        )
