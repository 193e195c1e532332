"""Fashion-MNIST with its concept hierarchy, as a tfds builder reading the standard IDX files.

Fashion-MNIST (Xiao et al., 2017, arXiv 1708.07747): 60k train + 10k test grayscale 28x28 images
of 10 clothing classes. The files come from the Debian package ``dataset-fashion-mnist``
(``/usr/share/datasets/fashion-mnist/``) or any directory holding the four standard files,
gzipped or not. Labels get the hierarchy :data:`~hac_jax.data.hierarchy.FASHION_MNIST`
(clothing -> tops/bottoms/dresses/footwear/accessories -> classes).

Use :func:`prepare_fashion_mnist`; the builder class is exposed for ``tfds`` users.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from hac_jax.data.base import (
    HierDataset,
    LocalBuilder,
    default_data_dir,
    example_record,
    hierarchy_info,
    prepare_builder,
)
from hac_jax.data.hierarchy import FASHION_MNIST
from hac_jax.data.idx import IdxFormatError, read_idx

__all__ = [
    "DEFAULT_SOURCE_DIR",
    "FashionMnistConfig",
    "FashionMnistHierarchy",
    "find_fashion_mnist_files",
    "prepare_fashion_mnist",
    "read_fashion_mnist_split",
]

DEFAULT_SOURCE_DIR = "/usr/share/datasets/fashion-mnist"
IMAGE_SHAPE = (28, 28, 1)
# split -> (images file, labels file), without the optional ".gz".
FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
HOW_TO_GET = (
    "Install the Debian package (`apt-get install dataset-fashion-mnist`, files in "
    f"{DEFAULT_SOURCE_DIR}) or pass the directory that holds "
    "train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz] "
    "and t10k-labels-idx1-ubyte[.gz]."
)


def find_fashion_mnist_files(source_dir: str | os.PathLike) -> dict[str, tuple[str, str]]:
    """``split -> (images path, labels path)`` in ``source_dir`` (``.gz`` preferred).

    Raises ``FileNotFoundError`` saying how to get the files when the directory or a file is
    missing.
    """
    source_dir = os.fspath(source_dir)
    if not os.path.isdir(source_dir):
        raise FileNotFoundError(
            f"Fashion-MNIST directory {source_dir} does not exist. {HOW_TO_GET}"
        )
    out: dict[str, tuple[str, str]] = {}
    missing: list[str] = []
    for split, names in FILES.items():
        paths = []
        for base in names:
            found = [
                os.path.join(source_dir, base + ext)
                for ext in (".gz", "")
                if os.path.isfile(os.path.join(source_dir, base + ext))
            ]
            if found:
                paths.append(found[0])
            else:
                missing.append(base + "[.gz]")
        if len(paths) == 2:
            out[split] = (paths[0], paths[1])
    if missing:
        raise FileNotFoundError(
            f"Fashion-MNIST files missing in {source_dir}: {', '.join(missing)}. {HOW_TO_GET}"
        )
    return out


def read_fashion_mnist_split(images_path: str, labels_path: str) -> tuple[np.ndarray, np.ndarray]:
    """Reads and validates one split: ``(N, 28, 28) uint8`` images and ``(N,) uint8`` labels.

    Raises :class:`~hac_jax.data.idx.IdxFormatError` on a damaged file, mismatched counts, a wrong
    image size or labels outside 0..9.
    """
    images = read_idx(images_path, ndim=3, dtype=np.uint8)
    labels = read_idx(labels_path, ndim=1, dtype=np.uint8)
    if images.shape[1:] != IMAGE_SHAPE[:2]:
        raise IdxFormatError(
            f"{images_path}: images are {images.shape[1:]}, Fashion-MNIST images are 28x28"
        )
    if len(images) != len(labels):
        raise IdxFormatError(
            f"{images_path} holds {len(images)} images but {labels_path} holds "
            f"{len(labels)} labels; the files do not belong together"
        )
    if len(labels) and labels.max() >= FASHION_MNIST.num_classes:
        raise IdxFormatError(
            f"{labels_path}: label {int(labels.max())} outside 0..{FASHION_MNIST.num_classes - 1}"
        )
    return images, labels


def _fingerprint(files: dict[str, tuple[str, str]]) -> dict[str, str]:
    """sha256 of each source file, keyed by file name (records what a prepared set came from)."""
    out = {}
    for pair in files.values():
        for path in pair:
            with open(path, "rb") as f:
                out[os.path.basename(path)] = hashlib.sha256(f.read()).hexdigest()
    return out


@dataclasses.dataclass(eq=False)
class FashionMnistConfig(tfds.core.BuilderConfig):
    """``max_examples``: keep only the first N records of each split (quick checks)."""

    max_examples: int | None = None


class FashionMnistHierarchy(LocalBuilder):
    """Fashion-MNIST from local IDX files, with class, group and root labels."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Fashion-MNIST with the clothing concept hierarchy."}
    BUILDER_CONFIGS = [FashionMnistConfig(name="full")]
    MANUAL_DOWNLOAD_INSTRUCTIONS = HOW_TO_GET

    def _info(self) -> tfds.core.DatasetInfo:
        return hierarchy_info(
            self,
            FASHION_MNIST,
            IMAGE_SHAPE,
            description="Fashion-MNIST (Xiao et al., 2017) with a 3-level clothing hierarchy.",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        files = find_fashion_mnist_files(dl_manager.manual_dir)
        # Read and check every file before the first record is written.
        data = {split: read_fashion_mnist_split(*paths) for split, paths in files.items()}
        self.info.metadata["source_sha256"] = _fingerprint(files)
        self.info.metadata["source_dir"] = os.fspath(dl_manager.manual_dir)
        return {split: self._generate_examples(split, *arrays) for split, arrays in data.items()}

    def _generate_examples(
        self, split: str, images: np.ndarray, labels: np.ndarray
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        n = len(images)
        if self.builder_config.max_examples is not None:
            n = min(n, self.builder_config.max_examples)
        for i in range(n):
            key = f"{split}_{i:05d}"
            yield key, example_record(FASHION_MNIST, images[i][..., None], labels[i], key)


def prepare_fashion_mnist(
    source_dir: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    *,
    max_examples: int | None = None,
    overwrite: bool = False,
) -> HierDataset:
    """Builds (once) and opens Fashion-MNIST with its hierarchy as array_record data sources.

    Args:
      source_dir: directory with the four IDX files (default :data:`DEFAULT_SOURCE_DIR`).
      data_dir: where prepared data go (default :func:`~hac_jax.data.base.default_data_dir`).
      max_examples: keep only the first N records per split (a separate prepared copy).
      overwrite: rebuild even if prepared data exist.

    Returns:
      A :class:`~hac_jax.data.base.HierDataset` with splits ``train`` and ``test``. Prepared
      data are reused (also when the source files are gone); when the source files are there,
      their sha256 must match those the data were built from.

    Raises:
      FileNotFoundError: the files are missing (the message says how to get them).
      IdxFormatError: a file is damaged, or images and labels do not match.
      ValueError: prepared data in ``data_dir`` were built from different files
        (pass ``overwrite=True``).
    """
    source_dir = os.fspath(source_dir or DEFAULT_SOURCE_DIR)
    data_dir = os.fspath(data_dir or default_data_dir())
    if max_examples is not None and max_examples <= 0:
        raise ValueError(f"max_examples must be positive, got {max_examples}")
    config = (
        "full"
        if max_examples is None
        else FashionMnistConfig(name=f"first{max_examples}", max_examples=max_examples)
    )

    def make() -> FashionMnistHierarchy:
        return FashionMnistHierarchy(data_dir=data_dir, config=config, file_format="array_record")

    existing = make()
    if existing.is_prepared() and not overwrite:
        stored = existing.info.metadata.get("source_sha256")
        if os.path.isdir(source_dir):
            current = _fingerprint(find_fashion_mnist_files(source_dir))
            if stored is not None and stored != current:
                raise ValueError(
                    f"prepared Fashion-MNIST in {existing.data_dir} was built from other files "
                    f"than those in {source_dir}; pass overwrite=True to rebuild, or another "
                    "data_dir"
                )
        return HierDataset.from_builder(existing)
    # Fail with the how-to-get message before tfds starts (and validate the files up front).
    find_fashion_mnist_files(source_dir)
    return prepare_builder(make, overwrite=overwrite, manual_dir=source_dir)
