"""The data sets a run can name (``config.data.name``), as a registry: the trainer and the
unlearning runner never branch on the data set.

``load_data(cfg)`` prepares (once) and opens the data set of a config's ``data`` block, holds its
splits in memory where they fit, and carves the validation split out of train.
"""

from __future__ import annotations

import os
from typing import Any

from hac_jax.data.base import HierDataset, load_prepared
from hac_jax.data.fashion_mnist import prepare_fashion_mnist
from hac_jax.data.synthetic import prepare_shapes

__all__ = ["DATASETS", "load_data"]


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


def _prepared(cfg: Any) -> HierDataset:
    return load_prepared(_require_dir(cfg.path, "path"))


# Data sets by name (rules as data: the trainer never branches on the data set).
DATASETS = {"fashion_mnist": _fashion_mnist, "shapes": _shapes, "prepared": _prepared}


def load_data(cfg: Any) -> HierDataset:
    """Prepares (once) and opens the data set named by ``cfg.name`` (``fashion_mnist`` from the
    IDX files in ``cfg.source_dir``, the generated ``shapes``, or a ``prepared`` tfds directory
    ``cfg.path``); prepared copies go to ``cfg.data_dir`` (default: ``$HAC_JAX_DATA_DIR``).
    Splits that fit are held in memory; ``cfg.val_fraction > 0`` carves the validation split
    ``val`` out of ``train`` (per class, seeded by ``cfg.val_seed``), which nothing trains on.

    Raises ``FileNotFoundError`` when the configured source directory does not exist.
    """
    if cfg.name not in DATASETS:
        raise ValueError(f"unknown data set {cfg.name!r}; choose one of {list(DATASETS)}")
    if cfg.get("data_dir") and os.path.exists(cfg.data_dir) and not os.path.isdir(cfg.data_dir):
        raise NotADirectoryError(f"data.data_dir {cfg.data_dir!r} is a file, not a directory")
    fraction = float(cfg.get("val_fraction") or 0.0)
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"data.val_fraction must be in [0, 1), got {fraction}")
    data = DATASETS[cfg.name](cfg).in_memory()
    if fraction > 0:
        data = data.with_validation(fraction, int(cfg.get("val_seed") or 0))
    return data
