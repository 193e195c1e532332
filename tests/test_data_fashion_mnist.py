"""Fashion-MNIST builder on small IDX files written by the test (and the real files if present)."""

import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from hac_jax.data import (
    FASHION_MNIST,
    IdxFormatError,
    load_prepared,
    prepare_fashion_mnist,
    read_idx,
    write_idx,
)
from hac_jax.data.fashion_mnist import DEFAULT_SOURCE_DIR, FashionMnistHierarchy

N_TRAIN, N_TEST = 24, 10


def _fake_split(n: int, offset: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(offset)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = ((np.arange(n) * 3 + offset) % 10).astype(np.uint8)
    return images, labels


def _write_source(directory, *, train_gz=True, test_gz=False, n_train=N_TRAIN, n_test=N_TEST):
    """The four standard files: train gzipped, test raw (both cases in one directory)."""
    os.makedirs(directory, exist_ok=True)
    arrays = {"train": _fake_split(n_train, 1), "t10k": _fake_split(n_test, 2)}
    for prefix, (images, labels) in arrays.items():
        ext = ".gz" if (train_gz if prefix == "train" else test_gz) else ""
        write_idx(os.path.join(directory, f"{prefix}-images-idx3-ubyte{ext}"), images)
        write_idx(os.path.join(directory, f"{prefix}-labels-idx1-ubyte{ext}"), labels)
    return {"train": arrays["train"], "test": arrays["t10k"]}


def _is_prepared(data_dir) -> bool:
    return FashionMnistHierarchy(data_dir=str(data_dir), config="full").is_prepared()


def test_builds_records_with_class_group_and_root_labels(tmp_path):
    arrays = _write_source(tmp_path / "src")
    ds = prepare_fashion_mnist(tmp_path / "src", tmp_path / "data")
    assert ds.hierarchy == FASHION_MNIST
    assert ds.image_shape == (28, 28, 1)
    assert {s: ds.num_examples(s) for s in ds.splits} == {"train": N_TRAIN, "test": N_TEST}
    for split, (images, labels) in arrays.items():
        np.testing.assert_array_equal(ds.labels(split), labels)
        for i in range(len(labels)):
            rec = ds.example(split, i)
            np.testing.assert_array_equal(rec["image"][..., 0], images[i])
            assert rec["label"] == labels[i]
            assert rec["group"] == FASHION_MNIST.class_group[labels[i]]
            assert rec["root"] == 0
            assert rec["key"] == f"{split}_{i:05d}".encode()
    # The directory alone gives back the same data set, hierarchy included.
    again = load_prepared(ds.path)
    assert again.hierarchy == FASHION_MNIST and again.num_examples("test") == N_TEST
    builder = tfds.builder_from_directory(ds.path)
    assert builder.info.features["label"].names == list(FASHION_MNIST.classes)
    assert builder.info.features["group"].names == list(FASHION_MNIST.groups)


def test_preparation_is_idempotent_and_checks_the_source(tmp_path):
    _write_source(tmp_path / "src")
    first = prepare_fashion_mnist(tmp_path / "src", tmp_path / "data")
    files = sorted(f for f in os.listdir(first.path) if "array_record" in f)
    stamps = [os.stat(os.path.join(first.path, f)).st_mtime_ns for f in files]
    second = prepare_fashion_mnist(tmp_path / "src", tmp_path / "data")
    assert second.path == first.path
    assert [os.stat(os.path.join(first.path, f)).st_mtime_ns for f in files] == stamps
    # Other files in the source directory: refuse silently stale data, rebuild on request.
    _write_source(tmp_path / "src", n_test=N_TEST + 2)
    with pytest.raises(ValueError, match="built from other files.*overwrite=True"):
        prepare_fashion_mnist(tmp_path / "src", tmp_path / "data")
    rebuilt = prepare_fashion_mnist(tmp_path / "src", tmp_path / "data", overwrite=True)
    assert rebuilt.num_examples("test") == N_TEST + 2


def test_data_dir_from_environment(tmp_path, monkeypatch):
    _write_source(tmp_path / "src")
    monkeypatch.setenv("HAC_JAX_DATA_DIR", str(tmp_path / "env_data"))
    ds = prepare_fashion_mnist(tmp_path / "src")
    assert ds.path.startswith(str(tmp_path / "env_data"))


def test_max_examples_is_a_separate_copy(tmp_path):
    _write_source(tmp_path / "src")
    small = prepare_fashion_mnist(tmp_path / "src", tmp_path / "data", max_examples=5)
    full = prepare_fashion_mnist(tmp_path / "src", tmp_path / "data")
    assert small.num_examples("train") == 5 and full.num_examples("train") == N_TRAIN
    assert small.path != full.path


def test_missing_directory_or_files_say_how_to_get_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        prepare_fashion_mnist(tmp_path / "nowhere", tmp_path / "data")
    _write_source(tmp_path / "src")
    os.remove(tmp_path / "src" / "t10k-labels-idx1-ubyte")
    with pytest.raises(FileNotFoundError, match=r"t10k-labels-idx1-ubyte\[\.gz\].*apt-get"):
        prepare_fashion_mnist(tmp_path / "src", tmp_path / "data")
    assert not _is_prepared(tmp_path / "data")


@pytest.mark.parametrize("damage", ["count_mismatch", "label_range", "image_size", "truncated"])
def test_corrupt_files_fail_before_anything_is_written(tmp_path, damage):
    src = tmp_path / "src"
    _write_source(src)
    if damage == "count_mismatch":
        write_idx(src / "t10k-labels-idx1-ubyte", np.zeros(N_TEST - 1, np.uint8))
        match = "do not belong together"
    elif damage == "label_range":
        write_idx(src / "t10k-labels-idx1-ubyte", np.full(N_TEST, 10, np.uint8))
        match = "label 10 outside"
    elif damage == "image_size":
        write_idx(src / "t10k-images-idx3-ubyte", np.zeros((N_TEST, 28, 27), np.uint8))
        match = "28x28"
    else:
        raw = (src / "t10k-images-idx3-ubyte").read_bytes()
        (src / "t10k-images-idx3-ubyte").write_bytes(raw[:-100])
        match = "truncated data"
    with pytest.raises(IdxFormatError, match=match):
        prepare_fashion_mnist(src, tmp_path / "data")
    assert not _is_prepared(tmp_path / "data")


@pytest.mark.skipif(
    not os.path.isdir(DEFAULT_SOURCE_DIR), reason="dataset-fashion-mnist is not installed"
)
def test_real_fashion_mnist_first_records(tmp_path):
    n = 40
    ds = prepare_fashion_mnist(data_dir=tmp_path / "data", max_examples=n)
    images = read_idx(os.path.join(DEFAULT_SOURCE_DIR, "t10k-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(DEFAULT_SOURCE_DIR, "t10k-labels-idx1-ubyte.gz"))
    assert images.shape == (10000, 28, 28) and labels.shape == (10000,)
    assert ds.num_examples("test") == n and ds.num_examples("train") == n
    np.testing.assert_array_equal(ds.labels("test"), labels[:n])
    for i in (0, 17, n - 1):
        np.testing.assert_array_equal(ds.example("test", i)["image"][..., 0], images[i])
    # The real test split is balanced: 1000 images per class.
    np.testing.assert_array_equal(np.bincount(labels, minlength=10), np.full(10, 1000))
