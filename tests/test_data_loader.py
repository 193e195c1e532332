"""grain loader: batch format, determinism, host sharding, class filtering, forget/retain mix."""

import grain
import numpy as np
import pytest

from hac_jax.data import (
    CaptionBank,
    make_loader,
    make_mixed_loader,
    prepare_fashion_mnist,
    prepare_shapes,
    write_idx,
)

NO_SHARD = grain.sharding.NoSharding()
N_TRAIN = 5 * 30  # 30 per class


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return prepare_shapes(
        tmp_path_factory.mktemp("shapes"), image_size=12, train_per_class=30, test_per_class=4
    )


@pytest.fixture(scope="module")
def gray(tmp_path_factory):
    """A tiny Fashion-MNIST-format set (1 channel) written by the test."""
    src = tmp_path_factory.mktemp("fm_src")
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 20), ("t10k", 8)):
        write_idx(
            src / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28), np.uint8)
        )
        write_idx(src / f"{prefix}-labels-idx1-ubyte.gz", (np.arange(n) % 10).astype(np.uint8))
    return prepare_fashion_mnist(src, tmp_path_factory.mktemp("fm_data"))


def _equal_batches(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_batch_format_and_content(shapes):
    loader = make_loader(shapes, "train", batch_size=16, seed=0, shard_options=NO_SHARD)
    batch = loader[0]
    assert set(batch) == {"image", "tokens", "label", "group", "caption_level", "index"}
    assert batch["image"].dtype == np.float32 and batch["image"].shape == (16, 12, 12, 3)
    assert batch["tokens"].dtype == np.int32 and batch["tokens"].shape == (16, 77)
    for k in ("label", "group", "caption_level", "index"):
        assert batch[k].dtype == np.int32 and batch[k].shape == (16,)
    assert 0.0 <= batch["image"].min() and batch["image"].max() <= 1.0
    src = shapes.source("train")
    for row, idx in enumerate(batch["index"]):
        rec = src[int(idx)]
        np.testing.assert_allclose(batch["image"][row], rec["image"] / 255.0, atol=1e-6)
        assert batch["label"][row] == rec["label"] and batch["group"][row] == rec["group"]
    texts = loader.captions.sample_texts(batch["label"], batch["index"], seed=0, epoch=0)
    np.testing.assert_array_equal(
        batch["tokens"], loader.captions.sample(batch["label"], batch["index"], seed=0, epoch=0)[0]
    )
    assert all(isinstance(t, str) and t for t in texts)


def test_grayscale_is_replicated_and_resizing(gray):
    batch = make_loader(gray, "train", batch_size=4, seed=0, shard_options=NO_SHARD)[0]
    assert batch["image"].shape == (4, 28, 28, 3)
    np.testing.assert_array_equal(batch["image"][..., 0], batch["image"][..., 2])
    rec = gray.example("train", int(batch["index"][0]))
    np.testing.assert_allclose(batch["image"][0, ..., 1], rec["image"][..., 0] / 255.0, atol=1e-6)
    big = make_loader(gray, "train", batch_size=4, seed=0, image_size=32, shard_options=NO_SHARD)
    assert big[0]["image"].shape == (4, 32, 32, 3)
    no_captions = make_loader(gray, "train", batch_size=4, captions=False, shard_options=NO_SHARD)
    assert "tokens" not in no_captions[0] and "caption_level" not in no_captions[0]


def test_same_seed_same_batches_other_seed_other_batches(shapes):
    make = lambda seed: make_loader(
        shapes, "train", batch_size=10, seed=seed, shard_options=NO_SHARD
    )
    a, b, c = make(3), make(3), make(4)
    for step in (0, 1, a.batches_per_epoch + 2):
        assert _equal_batches(a[step], b[step])
    assert not np.array_equal(a[0]["index"], c[0]["index"])
    # Iteration and indexing give the same stream.
    it = iter(a)
    for step in range(3):
        assert _equal_batches(next(it), a[step])


def test_epochs_cover_every_record_once_and_reshuffle(shapes):
    loader = make_loader(
        shapes,
        "train",
        batch_size=16,
        seed=0,
        num_epochs=2,
        drop_remainder=False,
        shard_options=NO_SHARD,
    )
    assert loader.batches_per_epoch == 10 and len(loader) == 20  # 150 = 9 x 16 + 6
    epochs = [np.concatenate([b["index"] for b in loader.epoch(e)]) for e in range(2)]
    for order in epochs:
        np.testing.assert_array_equal(np.sort(order), np.arange(N_TRAIN))
    assert not np.array_equal(epochs[0], epochs[1])
    assert len(list(loader)) == 20
    with pytest.raises(IndexError):
        loader[20]
    # Captions are redrawn per epoch for the same record.
    tok = [
        dict(zip(b["index"], b["tokens"].tolist(), strict=True))
        for b in (
            {k: np.concatenate([x[k] for x in loader.epoch(e)]) for k in ("index", "tokens")}
            for e in range(2)
        )
    ]
    changed = np.mean([tok[0][i] != tok[1][i] for i in range(N_TRAIN)])
    assert changed > 0.5


def test_no_shuffle_keeps_record_order(shapes):
    loader = make_loader(
        shapes,
        "test",
        batch_size=8,
        shuffle=False,
        num_epochs=1,
        drop_remainder=False,
        shard_options=NO_SHARD,
    )
    order = np.concatenate([b["index"] for b in loader])
    np.testing.assert_array_equal(order, np.arange(20))


def test_two_hosts_get_disjoint_covering_shards(shapes):
    def host(i, count=2, batch_size=10, **kw):
        opts = grain.sharding.ShardOptions(shard_index=i, shard_count=count, drop_remainder=True)
        return make_loader(shapes, "train", batch_size=batch_size, seed=7, shard_options=opts, **kw)

    h0, h1 = host(0), host(1)
    assert h0.batch_size == 5 and h0.batches_per_epoch == h1.batches_per_epoch == 15
    for epoch in range(2):
        seen = [np.concatenate([b["index"] for b in h.epoch(epoch)]) for h in (h0, h1)]
        assert not set(seen[0]) & set(seen[1])
        np.testing.assert_array_equal(np.sort(np.concatenate(seen)), np.arange(N_TRAIN))
    # A record's caption does not depend on how many hosts read the data.
    single = make_loader(shapes, "train", batch_size=10, seed=7, shard_options=NO_SHARD)
    captions = {}
    for b in single.epoch(0):
        captions.update(zip(b["index"].tolist(), b["tokens"].tolist(), strict=True))
    for h in (h0, h1):
        for b in h.epoch(0):
            for i, t in zip(b["index"].tolist(), b["tokens"].tolist(), strict=True):
                assert captions[i] == t
    # Uneven split (150 records over 4 hosts, 37 each): hosts keep the same number of batches.
    four = [host(i, 4, batch_size=8, num_epochs=1) for i in range(4)]
    assert {len(h) for h in four} == {18}
    seen = np.concatenate([np.concatenate([b["index"] for b in h]) for h in four])
    assert len(np.unique(seen)) == len(seen) == 4 * 18 * 2
    with pytest.raises(ValueError, match="not divisible by the 4 hosts"):
        host(0, 4, batch_size=10)


def test_default_shard_options_follow_jax_processes(shapes):
    loader = make_loader(shapes, "train", batch_size=8, seed=0)  # 1 process in tests
    assert loader.batch_size == 8


def test_class_filtering_by_id_and_name(shapes):
    h = shapes.hierarchy
    by_name = make_loader(
        shapes,
        "train",
        batch_size=10,
        seed=0,
        classes=["patterns"],
        num_epochs=1,
        shard_options=NO_SHARD,
    )
    by_id = make_loader(
        shapes,
        "train",
        batch_size=10,
        seed=0,
        classes=h.class_ids("patterns"),
        num_epochs=1,
        shard_options=NO_SHARD,
    )
    assert len(by_name) == 6  # 60 pattern images
    labels = np.concatenate([b["label"] for b in by_name])
    assert set(labels) == set(h.class_ids("patterns"))
    assert np.all(np.concatenate([b["group"] for b in by_name]) == h.group_id("patterns"))
    for a, b in zip(by_name, by_id, strict=True):
        assert _equal_batches(a, b)
    expected = np.flatnonzero(np.isin(shapes.labels("train"), h.class_ids("patterns")))
    seen = np.sort(np.concatenate([b["index"] for b in by_name]))
    np.testing.assert_array_equal(seen, expected)
    with pytest.raises(ValueError, match="unknown concept 'hexagon'"):
        make_loader(shapes, "train", batch_size=10, classes=["hexagon"], shard_options=NO_SHARD)
    with pytest.raises(ValueError, match="no full batch"):
        make_loader(shapes, "train", batch_size=64, classes=["circle"], shard_options=NO_SHARD)


def test_mixed_forget_retain_batches(shapes):
    h = shapes.hierarchy
    forget = h.class_ids(["circle"])
    loader = make_mixed_loader(
        shapes,
        "train",
        forget_classes=["circle"],
        batch_size=16,
        forget_fraction=0.25,
        seed=0,
        num_epochs=2,
        shard_options=NO_SHARD,
    )
    # 120 retain examples / 12 per batch = 10 batches per epoch.
    assert loader.batches_per_epoch == 10 and len(loader) == 20
    retain_seen, forget_seen = [], []
    for step, batch in enumerate(loader):
        assert batch["is_forget"].dtype == bool and batch["is_forget"].sum() == 4
        assert np.all(batch["is_forget"][:4]) and not np.any(batch["is_forget"][4:])
        assert set(batch["label"][:4]) <= set(forget)
        assert not set(batch["label"][4:]) & set(forget)
        if step < 10:
            retain_seen.append(batch["index"][4:])
            forget_seen.append(batch["index"][:4])
    retain_seen = np.concatenate(retain_seen)
    assert len(np.unique(retain_seen)) == 120  # one pass over the retain set per epoch
    # The 30 forget records are cycled in passes of 7 batches of 4 (28 distinct records each).
    forget_ids = set(np.flatnonzero(np.isin(shapes.labels("train"), forget)))
    first_pass = np.concatenate(forget_seen[:7])
    assert len(set(first_pass)) == 28 and set(first_pass) <= forget_ids
    again = make_mixed_loader(
        shapes,
        "train",
        forget_classes=forget,
        batch_size=16,
        forget_fraction=0.25,
        seed=0,
        num_epochs=2,
        shard_options=NO_SHARD,
    )
    assert _equal_batches(again[13], loader[13])


def test_mixed_edge_fractions_and_errors(shapes):
    kw = dict(forget_classes="circle", batch_size=16, seed=0, shard_options=NO_SHARD)
    only_retain = make_mixed_loader(shapes, "train", forget_fraction=0.0, **kw)
    assert not only_retain[0]["is_forget"].any()
    only_forget = make_mixed_loader(shapes, "train", forget_fraction=1.0, **kw)
    assert only_forget[0]["is_forget"].all() and only_forget.batches_per_epoch == 1
    endless = make_mixed_loader(shapes, "train", forget_fraction=0.25, **kw)
    assert endless.num_batches is None and endless[25]["is_forget"].sum() == 4
    with pytest.raises(ValueError, match="forget_fraction must be in"):
        make_mixed_loader(shapes, "train", forget_fraction=1.5, **kw)
    with pytest.raises(ValueError, match="leaves 0 forget"):
        make_mixed_loader(shapes, "train", forget_fraction=0.01, **kw)
    with pytest.raises(ValueError, match="both forgotten and retained"):
        make_mixed_loader(shapes, "train", forget_fraction=0.5, retain_classes="shapes", **kw)
    with pytest.raises(ValueError, match="fewer than the 48 forget"):
        make_mixed_loader(
            shapes,
            "train",
            forget_classes="circle",
            batch_size=64,
            forget_fraction=0.75,
            shard_options=NO_SHARD,
        )


def test_iterator_state_resumes(shapes):
    loader = make_loader(shapes, "train", batch_size=10, seed=1, shard_options=NO_SHARD)
    it = iter(loader)
    for _ in range(3):
        next(it)
    state = it.get_state()
    expected = next(it)
    resumed = iter(loader)
    resumed.set_state(state)
    assert _equal_batches(next(resumed), expected)


def test_caption_bank_is_shared_and_checked(shapes, gray):
    bank = CaptionBank(shapes.hierarchy, {"group": 1.0})
    loader = make_loader(shapes, "train", batch_size=10, captions=bank, shard_options=NO_SHARD)
    assert loader.captions is bank
    assert np.all(loader[0]["caption_level"] == 2)
    with pytest.raises(ValueError, match="another hierarchy"):
        make_loader(gray, "train", batch_size=4, captions=bank, shard_options=NO_SHARD)
