"""Captions: levels, templates, deterministic sampling, cached tokens, zero-shot prompt sets."""

import numpy as np
import pytest

from hac_jax import data as hdata
from hac_jax.data.captions import (
    CAPTION_LEVELS,
    CaptionBank,
    caption_texts,
    class_prompts,
    group_prompts,
    hash_uniform,
    sample_caption,
)
from hac_jax.data.hierarchy import FASHION_MNIST, Hierarchy
from hac_jax.tokenizer import tokenize

SNEAKER = FASHION_MNIST.class_id("sneaker")


def test_captions_name_the_concept_at_each_level():
    h = FASHION_MNIST
    assert "a photo of a sneaker" in caption_texts(h, SNEAKER, "class")
    assert "a sneaker, a kind of footwear" in caption_texts(h, SNEAKER, "class_in_group")
    assert "a photo of footwear" in caption_texts(h, SNEAKER, "group")
    assert "a photo of clothing" in caption_texts(h, SNEAKER, "root")
    assert "a photo of an ankle boot" in caption_texts(h, h.class_id("ankle boot"), "class")
    for level in ("class", "class_in_group"):
        assert all("sneaker" in t for t in caption_texts(h, SNEAKER, level))
    assert not any("sneaker" in t for t in caption_texts(h, SNEAKER, "group"))
    with pytest.raises(ValueError, match="unknown caption level 'species'"):
        caption_texts(h, SNEAKER, "species")


def test_prompt_sets_for_zero_shot():
    cp = class_prompts(FASHION_MNIST)
    gp = group_prompts(FASHION_MNIST)
    assert len(cp) == 10 and len({len(p) for p in cp}) == 1 and len(cp[0]) > 1
    assert len(gp) == 5 and len({len(p) for p in gp}) == 1
    assert cp[SNEAKER] == caption_texts(FASHION_MNIST, SNEAKER, "class")
    assert all("footwear" in p for p in gp[FASHION_MNIST.group_id("footwear")])
    assert class_prompts(FASHION_MNIST, ["{c} ({g})"])[SNEAKER] == ["a sneaker (footwear)"]
    with pytest.raises(ValueError, match="cannot name a class"):
        group_prompts(FASHION_MNIST, ["{c}"])


def test_hash_uniform_is_deterministic_and_spread():
    idx = np.arange(100_000)
    u = hash_uniform(3, 0, idx, stream=1)
    np.testing.assert_array_equal(u, hash_uniform(3, 0, idx, stream=1))
    assert u.min() >= 0.0 and u.max() < 1.0
    counts = np.histogram(u, bins=10, range=(0, 1))[0]
    # 10k expected per bin; binomial sd ~95, so 500 is > 5 sd.
    assert np.all(np.abs(counts - 10_000) < 500)
    for other in (
        hash_uniform(4, 0, idx, 1),
        hash_uniform(3, 1, idx, 1),
        hash_uniform(3, 0, idx, 2),
    ):
        assert np.mean(other == u) < 1e-3
        assert abs(np.corrcoef(other, u)[0, 1]) < 0.02


def test_sampling_depends_only_on_seed_epoch_and_index():
    bank = CaptionBank(FASHION_MNIST)
    labels = np.arange(200) % 10
    index = np.arange(200) * 7
    tok, lev = bank.sample(labels, index, seed=0, epoch=0)
    tok2, lev2 = bank.sample(labels, index, seed=0, epoch=0)
    np.testing.assert_array_equal(tok, tok2)
    np.testing.assert_array_equal(lev, lev2)
    # A sub-batch in another order draws the same caption for each record.
    perm = np.random.default_rng(0).permutation(200)[:50]
    tok3, _ = bank.sample(labels[perm], index[perm], seed=0, epoch=0)
    np.testing.assert_array_equal(tok3, tok[perm])
    # Another epoch or seed draws other captions: two independent draws coincide with
    # probability 0.6^2/5 + 0.2^2/3 + 0.2^2/4 ~ 0.1 under the default weights.
    base = bank.sample_texts(labels, index, seed=0, epoch=0)
    for kw in (dict(seed=0, epoch=1), dict(seed=1, epoch=0)):
        other = bank.sample_texts(labels, index, **kw)
        assert np.mean([a == b for a, b in zip(other, base, strict=True)]) < 0.3


def test_cached_tokens_equal_tokenizing_the_texts():
    bank = CaptionBank(FASHION_MNIST, {"class": 1, "class_in_group": 1, "group": 1, "root": 1})
    labels = np.arange(60) % 10
    index = np.arange(60)
    tokens, levels = bank.sample(labels, index, seed=5, epoch=2)
    texts = bank.sample_texts(labels, index, seed=5, epoch=2)
    assert tokens.dtype == np.int32 and tokens.shape == (60, 77)
    np.testing.assert_array_equal(tokens, tokenize(texts, context_length=77))
    for text, level, c in zip(texts, levels, labels, strict=True):
        assert text in caption_texts(FASHION_MNIST, int(c), CAPTION_LEVELS[level])
    short = CaptionBank(FASHION_MNIST, context_length=16)
    assert short.sample(labels, index, seed=0, epoch=0)[0].shape == (60, 16)


def test_level_frequencies_follow_the_weights():
    weights = {"class": 0.5, "class_in_group": 0.1, "group": 0.3, "root": 0.1}
    bank = CaptionBank(FASHION_MNIST, weights)
    n = 40_000
    levels, templates = bank.choose(np.zeros(n, int), np.arange(n), seed=0, epoch=0)
    freq = np.bincount(levels, minlength=4) / n
    expected = np.array([weights[k] for k in CAPTION_LEVELS])
    np.testing.assert_allclose(freq, expected, atol=0.01)  # sd <= 0.0025
    # Templates within a level are uniform.
    sel = templates[levels == 0]
    tf = np.bincount(sel, minlength=5) / len(sel)
    np.testing.assert_allclose(tf, np.full(5, 0.2), atol=0.02)
    default = CaptionBank(FASHION_MNIST)
    lv, _ = default.choose(np.zeros(n, int), np.arange(n), seed=0, epoch=0)
    assert not np.any(lv == CAPTION_LEVELS.index("root"))  # weight 0 by default


def test_flat_hierarchy_never_draws_group_captions():
    bank = CaptionBank(Hierarchy.flat("pets", ["cat", "dog"]))
    lv, _ = bank.choose(np.zeros(5000, int), np.arange(5000), seed=0, epoch=0)
    assert set(np.unique(lv)) == {0}


def test_bad_weights_are_rejected():
    with pytest.raises(ValueError, match="no caption level has a positive weight"):
        CaptionBank(FASHION_MNIST, {"class": 0.0})
    with pytest.raises(ValueError, match="must be >= 0"):
        CaptionBank(FASHION_MNIST, {"class": -1.0, "group": 2.0})
    with pytest.raises(ValueError, match="unknown caption level"):
        CaptionBank(FASHION_MNIST, {"species": 1.0})


def test_sample_caption_matches_the_bank():
    bank = CaptionBank(FASHION_MNIST)
    text, level = sample_caption(FASHION_MNIST, SNEAKER, seed=9, epoch=3, index=1234)
    assert text == bank.sample_texts(np.array([SNEAKER]), np.array([1234]), seed=9, epoch=3)[0]
    assert text in caption_texts(FASHION_MNIST, SNEAKER, level)


def test_parent_cone_apex_of_a_flat_hierarchy_is_the_root():
    flat = hdata.Hierarchy.flat("things", ["cup", "pen", "box"])
    prompts, rows = hdata.parent_prompts(flat)
    assert prompts == [[t.format(r="things") for t in hdata.TEMPLATES["root"]]]
    np.testing.assert_array_equal(rows, [0, 0, 0])
    prompts, rows = hdata.parent_prompts(hdata.SHAPES)
    assert prompts == hdata.group_prompts(hdata.SHAPES)
    np.testing.assert_array_equal(rows, hdata.SHAPES.class_group)
