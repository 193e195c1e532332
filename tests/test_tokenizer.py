"""The tokenizer against token ids produced by MERU's own tokenizer (tests/fixtures/meru_torch)."""

import json
import time

import numpy as np
import pytest

from hac_jax.tokenizer import EOT_ID, SOT_ID, clean_caption, tokenize


@pytest.fixture(scope="module")
def cases(fixtures_dir):
    with open(fixtures_dir / "tokenizer_cases.json") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def inputs(fixtures_dir):
    with np.load(fixtures_dir / "inputs.npz") as data:
        return {k: data[k] for k in data.files}


def _meru_row(ids, context_length):
    """MERU's rule on a full id list: first ``context_length`` ids, last one set back to EOT,
    then (here) right-padded with 0."""
    ids = list(ids)
    if len(ids) > context_length:
        ids = ids[:context_length]
        ids[-1] = EOT_ID
    return np.array(ids + [0] * (context_length - len(ids)), np.int32)


def test_special_ids_match_fixture(cases):
    assert (cases["sot_id"], cases["eot_id"]) == (SOT_ID, EOT_ID)


def test_every_case_one_by_one(cases):
    assert len(cases["cases"]) == 15
    for case in cases["cases"]:
        got = tokenize(case["text"])
        assert got.shape == (1, 77) and got.dtype == np.int32
        np.testing.assert_array_equal(
            got[0], _meru_row(case["ids"], 77), err_msg=repr(case["text"])
        )


def test_all_cases_as_one_batch(cases):
    texts = [c["text"] for c in cases["cases"]]
    got = tokenize(texts)
    want = np.stack([_meru_row(c["ids"], 77) for c in cases["cases"]])
    np.testing.assert_array_equal(got, want)


def test_html_and_whitespace_cleaning_matter(cases):
    # Without the cleaning, "&amp;" would be tokenized literally; the ids prove it is unescaped.
    by_text = {c["text"]: c["ids"] for c in cases["cases"]}
    assert clean_caption("Tom &amp;amp; Jerry") == "tom & jerry"
    assert (
        clean_caption("   multiple    spaces\tand\nnewlines   ") == "multiple spaces and newlines"
    )
    np.testing.assert_array_equal(
        tokenize("Tom &amp; Jerry &lt;3")[0], tokenize("tom & jerry <3")[0]
    )
    np.testing.assert_array_equal(
        tokenize("Tom &amp; Jerry &lt;3")[0], _meru_row(by_text["Tom &amp; Jerry &lt;3"], 77)
    )


def test_matches_inputs_npz_tokens(inputs, cases):
    got = tokenize(cases["captions"])
    np.testing.assert_array_equal(got, inputs["tokens_padded77"])
    np.testing.assert_array_equal(tokenize(cases["captions"], 12), inputs["tokens_padded"])


def test_long_caption_truncation(inputs, cases):
    raw = inputs["long_tokens_raw"]
    assert raw.shape[0] > 77
    np.testing.assert_array_equal(raw, cases["long_caption_ids"])
    got = tokenize(cases["long_caption"])[0]
    np.testing.assert_array_equal(got, inputs["long_tokens_truncated"])
    assert got[-1] == EOT_ID and got[0] == SOT_ID
    # With a context long enough for the whole caption nothing is cut.
    full = tokenize(cases["long_caption"], context_length=128)[0]
    np.testing.assert_array_equal(full[: raw.shape[0]], raw)
    assert not full[raw.shape[0] :].any()


@pytest.mark.parametrize("context_length", [2, 3, 5, 7, 8, 12, 16])
def test_short_context_length(cases, context_length):
    texts = [c["text"] for c in cases["cases"]] + [cases["long_caption"]]
    all_ids = [c["ids"] for c in cases["cases"]] + [cases["long_caption_ids"]]
    got = tokenize(texts, context_length=context_length)
    assert got.shape == (len(texts), context_length) and got.dtype == np.int32
    want = np.stack([_meru_row(ids, context_length) for ids in all_ids])
    np.testing.assert_array_equal(got, want)
    # The EOS position used by the text tower is argmax: always a real EOT.
    assert (got[np.arange(len(texts)), got.argmax(-1)] == EOT_ID).all()


def test_order_and_duplicates_preserved(cases):
    texts = [c["text"] for c in cases["cases"][:4]]
    mixed = [texts[2], texts[0], texts[2], texts[3], texts[0], texts[1]]
    single = {t: tokenize(t)[0] for t in texts}
    np.testing.assert_array_equal(tokenize(mixed), np.stack([single[t] for t in mixed]))


def test_tuple_and_numpy_inputs(cases):
    texts = cases["captions"]
    want = tokenize(list(texts))
    np.testing.assert_array_equal(tokenize(tuple(texts)), want)
    np.testing.assert_array_equal(tokenize(np.array(texts)), want)


def test_empty_batch():
    got = tokenize([], context_length=10)
    assert got.shape == (0, 10) and got.dtype == np.int32


@pytest.mark.parametrize("context_length", [1, 0, -5])
def test_context_length_too_short(context_length):
    with pytest.raises(ValueError, match="context_length must be >= 2"):
        tokenize("a dog", context_length=context_length)


@pytest.mark.parametrize("context_length", ["77", 7.0, True])
def test_context_length_not_int(context_length):
    with pytest.raises(TypeError, match="context_length must be an int"):
        tokenize("a dog", context_length=context_length)


@pytest.mark.parametrize(
    "bad, where",
    [
        (["a dog", 3], r"texts\[1\] is int"),
        ([b"a dog"], r"texts\[0\] is bytes"),
        (b"a dog", "texts must be a str"),
        (None, "texts must be a str"),
        (17, "texts must be a str"),
    ],
)
def test_non_string_input(bad, where):
    with pytest.raises(TypeError, match=where):
        tokenize(bad)


def test_thousands_of_captions_fast():
    captions = [f"a photo of a {kind} number {i}" for i in range(3000) for kind in ("dog",)]
    captions += ["a photo of a shirt", "a photo of a sneaker"] * 2000
    tokenize(["warm up"])
    start = time.perf_counter()
    got = tokenize(captions)
    elapsed = time.perf_counter() - start
    assert got.shape == (7000, 77)
    np.testing.assert_array_equal(got[3000], tokenize("a photo of a shirt")[0])
    # ~50 us per distinct caption here (ftfy dominates); a generous bound for a busy machine.
    assert elapsed < 5.0, elapsed
