"""The data sets a run can name (``config.data.name``), as a registry: the trainer and the
unlearning runner never branch on the data set.

``load_data(cfg)`` prepares (once) and opens the data set of a config's ``data`` block, holds its
splits in memory where they fit, and carves the validation split out of train.
``stored_image_size(cfg)`` is the side of its stored images, known before anything is prepared:
the model's input size follows it unless the model config sets one.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

from hac_jax.data.base import HierDataset, load_prepared
from hac_jax.data.fashion_mnist import IMAGE_SHAPE as FASHION_MNIST_IMAGE_SHAPE
from hac_jax.data.fashion_mnist import prepare_fashion_mnist
from hac_jax.data.image_folder import (
    DEFAULT_IMAGE_SIZE,
    DEFAULT_TEST_FRACTION,
    prepare_image_folder,
)
from hac_jax.data.synthetic import prepare_shapes

__all__ = ["DATASETS", "DataSet", "load_data", "stored_image_size"]


def _require_dir(path: str | None, key: str) -> str:
    if not path:
        raise ValueError(f"data.{key} is not set; pass --config.data.{key}=DIR")
    if not os.path.isdir(path):
        raise FileNotFoundError(
            f"data.{key} {path!r} is not a directory; point --config.data.{key} at the data"
        )
    return path


def _fashion_mnist(cfg: Any) -> HierDataset:
    source = _require_dir(cfg.source_dir, "source_dir")
    return prepare_fashion_mnist(source, cfg.data_dir, max_examples=cfg.get("max_examples"))


def _shapes(cfg: Any) -> HierDataset:
    return prepare_shapes(
        cfg.data_dir,
        image_size=cfg.shapes.image_size,
        train_per_class=cfg.shapes.train_per_class,
        test_per_class=cfg.shapes.test_per_class,
        seed=cfg.shapes.seed,
    )


def _image_folder_size(cfg: Any) -> int:
    _require_dir(cfg.get("root"), "root")
    size = cfg.get("image_size")
    if size is None:
        return DEFAULT_IMAGE_SIZE
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise ValueError(f"data.image_size must be a positive number of pixels, got {size!r}")
    return size


def _image_folder(cfg: Any) -> HierDataset:
    test_fraction = cfg.get("test_fraction")
    return prepare_image_folder(
        cfg.root,
        cfg.data_dir,
        image_size=_image_folder_size(cfg),
        test_fraction=DEFAULT_TEST_FRACTION if test_fraction is None else float(test_fraction),
    )


def _prepared(cfg: Any) -> HierDataset:
    return load_prepared(_require_dir(cfg.path, "path"))


def _square_side(shape: tuple[int, ...], where: str) -> int:
    if shape[0] != shape[1]:
        raise ValueError(f"{where} stores {shape[0]}x{shape[1]} images; only square ones are read")
    return int(shape[0])


@dataclasses.dataclass(frozen=True)
class DataSet:
    """A data set a config can name.

    Attributes:
      load: ``cfg -> HierDataset``, preparing it once.
      image_size: ``cfg -> side`` of the stored images, without preparing anything; it checks
        the paths the data set needs, so a bad setting fails before any work.
    """

    load: Callable[[Any], HierDataset]
    image_size: Callable[[Any], int]


# Data sets by name (rules as data: the trainer never branches on the data set).
DATASETS = {
    "fashion_mnist": DataSet(
        _fashion_mnist, lambda cfg: _square_side(FASHION_MNIST_IMAGE_SHAPE, "fashion_mnist")
    ),
    "shapes": DataSet(_shapes, lambda cfg: int(cfg.shapes.image_size)),
    "image_folder": DataSet(_image_folder, _image_folder_size),
    "prepared": DataSet(_prepared, lambda cfg: _square_side(_prepared(cfg).image_shape, cfg.path)),
}


def _entry(cfg: Any) -> DataSet:
    if cfg.name not in DATASETS:
        raise ValueError(f"unknown data set {cfg.name!r}; choose one of {list(DATASETS)}")
    return DATASETS[cfg.name]


def stored_image_size(cfg: Any) -> int:
    """The side in pixels of the images the data set of ``cfg`` stores (Fashion-MNIST 28,
    ``shapes.image_size``, an image folder's ``image_size`` or 28, a prepared directory's own),
    found without preparing anything.

    Raises ``ValueError`` / ``FileNotFoundError`` for an unknown data set or a path it needs
    that is not set or missing.
    """
    return _entry(cfg).image_size(cfg)


def load_data(cfg: Any) -> HierDataset:
    """Prepares (once) and opens the data set named by ``cfg.name`` (``fashion_mnist`` from the
    IDX files in ``cfg.source_dir``, the generated ``shapes``, an ``image_folder`` of class
    folders ``cfg.root`` stored at ``cfg.image_size`` pixels, or a ``prepared`` tfds directory
    ``cfg.path``); prepared copies go to ``cfg.data_dir`` (default: ``$HAC_JAX_DATA_DIR``). An
    image folder is prepared again only when its content changes (paths, sizes, modification
    times) and its layout errors are raised before any image is read.
    Splits that fit are held in memory; ``cfg.val_fraction > 0`` carves the validation split
    ``val`` out of ``train`` (per class, seeded by ``cfg.val_seed``), which nothing trains on.

    Raises ``FileNotFoundError`` when the configured source directory does not exist.
    """
    entry = _entry(cfg)
    if cfg.get("data_dir") and os.path.exists(cfg.data_dir) and not os.path.isdir(cfg.data_dir):
        raise NotADirectoryError(f"data.data_dir {cfg.data_dir!r} is a file, not a directory")
    fraction = float(cfg.get("val_fraction") or 0.0)
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"data.val_fraction must be in [0, 1), got {fraction}")
    data = entry.load(cfg).in_memory()
    if fraction > 0:
        data = data.with_validation(fraction, int(cfg.get("val_seed") or 0))
    return data
