"""A small generated hierarchical data set for tests and smoke runs ("hier_shapes").

Two groups of procedurally drawn colour images: ``shapes`` (circle, square, triangle: one filled
shape on a plain background) and ``patterns`` (stripes, checkerboard: a texture over the whole
image). Position, size, period, phase and colours are random, so only the drawn form identifies
the class and a tiny model has something real to learn. Every image is a pure function of
``(seed, split, index)``: the data set is identical on every machine and builds in well under a
second with the default sizes.
"""

from __future__ import annotations

import dataclasses
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
from hac_jax.data.hierarchy import Hierarchy

__all__ = ["SHAPES", "HierShapes", "ShapesConfig", "draw_example", "prepare_shapes"]

SHAPES = Hierarchy.from_groups(
    "drawings",
    {"shapes": ["circle", "square", "triangle"], "patterns": ["stripes", "checkerboard"]},
    class_phrases={"stripes": "stripes"},
)
"""drawings -> {shapes: circle, square, triangle; patterns: stripes, checkerboard}."""

_SPLIT_IDS = {"train": 0, "test": 1}


def draw_example(class_name: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """One ``(size, size, 3) uint8`` image of a :data:`SHAPES` class, drawn with ``rng``."""
    s = float(size)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    background = rng.uniform(0.0, 0.35, size=3)
    foreground = rng.uniform(0.55, 1.0, size=3)
    cx, cy = rng.uniform(0.38, 0.62, size=2) * s
    if class_name == "circle":
        r = rng.uniform(0.2, 0.32) * s
        mask = (x - cx) ** 2 + (y - cy) ** 2 <= r**2
    elif class_name == "square":
        h = rng.uniform(0.17, 0.28) * s
        mask = (np.abs(x - cx) <= h) & (np.abs(y - cy) <= h)
    elif class_name == "triangle":
        h = rng.uniform(0.2, 0.32) * s
        # Apex up: the half-width grows linearly from the apex (cy - h) to the base (cy + h).
        mask = (y >= cy - h) & (y <= cy + h) & (np.abs(x - cx) <= (y - (cy - h)) / 2.0 * 1.15)
    elif class_name == "stripes":
        period = rng.uniform(0.14, 0.28) * s
        coord = x if rng.random() < 0.5 else y
        mask = np.mod(coord + rng.uniform(0, period), period) < period / 2
    elif class_name == "checkerboard":
        period = rng.uniform(0.18, 0.32) * s
        ox, oy = rng.uniform(0, period, size=2)
        mask = (np.floor((x + ox) / (period / 2)) + np.floor((y + oy) / (period / 2))) % 2 == 0
    else:
        raise ValueError(f"unknown class {class_name!r}; classes: {list(SHAPES.classes)}")
    img = np.where(mask[..., None], foreground, background)
    img = img + rng.normal(0.0, 0.03, size=img.shape)
    return np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)


@dataclasses.dataclass(eq=False)
class ShapesConfig(tfds.core.BuilderConfig):
    """Size of the generated set: square ``image_size``, examples per class and split, seed."""

    image_size: int = 32
    train_per_class: int = 64
    test_per_class: int = 16
    seed: int = 0


def shapes_config(
    image_size: int = 32, train_per_class: int = 64, test_per_class: int = 16, seed: int = 0
) -> ShapesConfig:
    """A :class:`ShapesConfig` whose name encodes its settings (so each gets its own folder)."""
    for name, v in (("image_size", image_size), ("train_per_class", train_per_class)):
        if v <= 0:
            raise ValueError(f"{name} must be positive, got {v}")
    if image_size < 8:
        raise ValueError(f"image_size must be at least 8 to draw the shapes, got {image_size}")
    if test_per_class < 0 or seed < 0:
        raise ValueError("test_per_class and seed must be >= 0")
    return ShapesConfig(
        name=f"s{image_size}_n{train_per_class}_{test_per_class}_seed{seed}",
        image_size=image_size,
        train_per_class=train_per_class,
        test_per_class=test_per_class,
        seed=seed,
    )


class HierShapes(LocalBuilder):
    """Generated shapes/patterns images with class, group and root labels."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Shapes and patterns, two groups, five classes."}
    BUILDER_CONFIGS = [shapes_config()]

    def _info(self) -> tfds.core.DatasetInfo:
        size = self.builder_config.image_size
        return hierarchy_info(
            self, SHAPES, (size, size, 3), description="Procedurally drawn shapes and patterns."
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        cfg = self.builder_config
        out = {"train": self._generate_examples("train", cfg.train_per_class)}
        if cfg.test_per_class:
            out["test"] = self._generate_examples("test", cfg.test_per_class)
        return out

    def _generate_examples(
        self, split: str, per_class: int
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        cfg = self.builder_config
        for i in range(per_class * SHAPES.num_classes):
            label = i % SHAPES.num_classes  # balanced, classes interleaved
            rng = np.random.default_rng([cfg.seed, _SPLIT_IDS[split], i])
            image = draw_example(SHAPES.classes[label], cfg.image_size, rng)
            key = f"{split}_{i:05d}"
            yield key, example_record(SHAPES, image, label, key)


def prepare_shapes(
    data_dir: str | os.PathLike | None = None,
    *,
    image_size: int = 32,
    train_per_class: int = 64,
    test_per_class: int = 16,
    seed: int = 0,
    overwrite: bool = False,
) -> HierDataset:
    """Builds (once) and opens the generated data set (splits ``train``, ``test``).

    ``data_dir`` defaults to :func:`~hac_jax.data.base.default_data_dir`; each setting of the
    sizes and seed is prepared in its own config folder.
    """
    config: ShapesConfig | str = shapes_config(image_size, train_per_class, test_per_class, seed)
    if config.name in {c.name for c in HierShapes.BUILDER_CONFIGS}:
        config = config.name  # tfds refuses a custom config named like a predefined one
    data_dir = os.fspath(data_dir or default_data_dir())
    return prepare_builder(
        lambda: HierShapes(data_dir=data_dir, config=config, file_format="array_record"),
        overwrite=overwrite,
    )
