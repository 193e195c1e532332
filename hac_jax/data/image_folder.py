"""User image folders as hierarchical data sets (PNG/JPEG read with PIL, no TensorFlow).

Layouts (folder names are concept names):

* ``root/<group>/<class>/*.png`` -- three levels, root -> groups -> classes;
* ``root/<class>/*.png`` -- flat: root -> classes;
* either of them under ``root/train/``, ``root/test/`` (and optionally ``root/validation/``) to give
  the splits; otherwise a deterministic ``test_fraction`` of each class's files (chosen by a hash
  of the file path) becomes the ``test`` split.

Images are converted to RGB and resized to ``image_size`` x ``image_size`` (default
:data:`DEFAULT_IMAGE_SIZE`; scaled so the shorter side fits, then centre-cropped, keeping the
aspect ratio). Files with other extensions and hidden entries are ignored. An empty class
folder, an unreadable image, mixed layouts or no classes at all raise a one-line error naming the
path. A prepared copy is named by a digest of the listing (the folder, and every file's relative
path, size and modification time), so a changed folder is prepared again, an unchanged one reused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image, ImageOps, UnidentifiedImageError

from hac_jax.data.base import (
    HierDataset,
    LocalBuilder,
    default_data_dir,
    example_record,
    hierarchy_info,
    prepare_builder,
)
from hac_jax.data.hierarchy import Hierarchy

__all__ = [
    "DEFAULT_IMAGE_SIZE",
    "DEFAULT_TEST_FRACTION",
    "IMAGE_EXTENSIONS",
    "FolderLayout",
    "HierImageFolder",
    "ImageFolderConfig",
    "load_image",
    "prepare_image_folder",
    "scan_image_folder",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
SPLIT_NAMES = ("train", "test", "validation")
# Stored side in pixels unless asked otherwise: the default models' 28-px input, a 4x4 grid of
# 7-px patches (experiments/configs/pretrain.py).
DEFAULT_IMAGE_SIZE = 28
# Share of each class held out as ``test`` when the folder has no split folders.
DEFAULT_TEST_FRACTION = 0.2


@dataclasses.dataclass(frozen=True)
class FolderLayout:
    """What :func:`scan_image_folder` found: the hierarchy and, per split, ``(relative path,
    class id)`` of every image, sorted."""

    root: str
    hierarchy: Hierarchy
    files: dict[str, tuple[tuple[str, int], ...]]


def _entries(path: str) -> tuple[list[str], list[str]]:
    """(sub-folders, image files) of ``path``, sorted, hidden entries skipped."""
    dirs, images = [], []
    for name in sorted(os.listdir(path)):
        if name.startswith("."):
            continue
        full = os.path.join(path, name)
        if os.path.isdir(full):
            dirs.append(name)
        elif name.lower().endswith(IMAGE_EXTENSIONS):
            images.append(name)
    return dirs, images


def _scan_tree(top: str, rel: str) -> dict[tuple[str | None, str], list[str]]:
    """``(group or None, class) -> [relative image paths]`` of one split tree."""
    dirs, images = _entries(top)
    if images:
        raise ValueError(
            f"{top} holds image files directly; put them in one folder per class "
            "(root/<class>/*.png or root/<group>/<class>/*.png)"
        )
    if not dirs:
        raise ValueError(
            f"no classes in {top}: expected one sub-folder per class "
            "(root/<class>/*.png or root/<group>/<class>/*.png)"
        )
    out: dict[tuple[str | None, str], list[str]] = {}
    kinds = set()
    for d in dirs:
        sub_dirs, sub_images = _entries(os.path.join(top, d))
        if sub_dirs and sub_images:
            raise ValueError(
                f"{os.path.join(top, d)} holds both images and sub-folders; a folder is either "
                "a class (images) or a group (class folders)"
            )
        if sub_images:
            kinds.add("class")
            out[(None, d)] = [os.path.join(rel, d, f) for f in sub_images]
        elif sub_dirs:
            kinds.add("group")
            for c in sub_dirs:
                cdirs, cimages = _entries(os.path.join(top, d, c))
                if cdirs:
                    raise ValueError(
                        f"{os.path.join(top, d, c)} has sub-folders; only root/<group>/<class>/ "
                        "(two folder levels) is supported"
                    )
                if not cimages:
                    raise ValueError(
                        f"empty class folder {os.path.join(top, d, c)}: no "
                        f"{'/'.join(IMAGE_EXTENSIONS)} files"
                    )
                out[(d, c)] = [os.path.join(rel, d, c, f) for f in cimages]
        else:
            raise ValueError(
                f"empty folder {os.path.join(top, d)}: no {'/'.join(IMAGE_EXTENSIONS)} files "
                "and no class folders"
            )
    if len(kinds) > 1:
        raise ValueError(
            f"{top} mixes class folders (with images) and group folders (with class folders); "
            "use one layout"
        )
    return out


def _hash_unit(text: str) -> float:
    """A stable number in [0, 1) for a string."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2.0**64


def scan_image_folder(
    root: str | os.PathLike,
    *,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    root_name: str | None = None,
) -> FolderLayout:
    """Reads the folder structure (not the images) into a hierarchy and per-split file lists.

    Args:
      root: the top folder.
      test_fraction: share of each class held out as ``test`` when there are no split folders.
      root_name: name of the root concept (default: the folder's name).

    Raises:
      FileNotFoundError: ``root`` does not exist.
      ValueError: no classes, an empty folder, or a layout this module does not read.
    """
    root = os.path.abspath(os.fspath(root))
    if not os.path.isdir(root):
        raise FileNotFoundError(f"image folder {root} does not exist")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    top_dirs, _ = _entries(root)
    if top_dirs and set(top_dirs) <= set(SPLIT_NAMES):
        trees = {s: _scan_tree(os.path.join(root, s), s) for s in top_dirs}
    else:
        trees = {"train": _scan_tree(root, "")}
    concepts = sorted({k for t in trees.values() for k in t}, key=lambda k: (k[0] or "", k[1]))
    if len({k[0] is None for k in concepts}) > 1:
        raise ValueError(f"splits under {root} use different layouts (flat vs grouped)")
    seen: dict[str, str | None] = {}
    for g, c in concepts:
        if c in seen:
            raise ValueError(f"class folder {c!r} appears under groups {seen[c]!r} and {g!r}")
        seen[c] = g
    name = root_name or os.path.basename(root.rstrip(os.sep)) or "images"
    if concepts[0][0] is None:
        hierarchy = Hierarchy.flat(name, [c for _, c in concepts])
    else:
        groups: dict[str, list[str]] = {}
        for g, c in concepts:
            groups.setdefault(g, []).append(c)  # type: ignore[arg-type]
        hierarchy = Hierarchy.from_groups(name, groups)
    class_of = {k: hierarchy.classes.index(k[1]) for k in concepts}
    files: dict[str, list[tuple[str, int]]] = {}
    for split, tree in trees.items():
        for k, paths in tree.items():
            if split == "train" and len(trees) == 1 and test_fraction > 0:
                # Per class: the files with the smallest path hashes go to test.
                ranked = sorted(paths, key=_hash_unit)
                n_test = int(round(test_fraction * len(ranked)))
                if len(ranked) >= 2:
                    n_test = min(max(n_test, 1), len(ranked) - 1)
                files.setdefault("test", []).extend((p, class_of[k]) for p in ranked[:n_test])
                files.setdefault("train", []).extend((p, class_of[k]) for p in ranked[n_test:])
            else:
                files.setdefault(split, []).extend((p, class_of[k]) for p in paths)
    return FolderLayout(
        root=root,
        hierarchy=hierarchy,
        files={s: tuple(sorted(v, key=lambda t: (t[1], t[0]))) for s, v in files.items() if v},
    )


def load_image(path: str, image_size: int) -> np.ndarray:
    """Reads one image file -> ``(image_size, image_size, 3) uint8`` (RGB, resized and
    centre-cropped). Raises ``ValueError`` naming the file if PIL cannot read it."""
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            img = ImageOps.fit(img, (image_size, image_size), method=Image.Resampling.BICUBIC)
            return np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from e


def _listing_digest(layout: FolderLayout) -> str:
    """Changes when a file is added, removed, resized or touched."""
    h = hashlib.sha256(layout.root.encode())
    for split, items in sorted(layout.files.items()):
        for rel, label in items:
            st = os.stat(os.path.join(layout.root, rel))
            h.update(f"{split}|{rel}|{label}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:12]


@dataclasses.dataclass(eq=False)
class ImageFolderConfig(tfds.core.BuilderConfig):
    """A scanned folder (``layout``) and the stored image size."""

    layout: FolderLayout | None = None
    image_size: int = DEFAULT_IMAGE_SIZE


def image_folder_config(
    root: str | os.PathLike,
    *,
    image_size: int = DEFAULT_IMAGE_SIZE,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    root_name: str | None = None,
) -> ImageFolderConfig:
    """Scans ``root`` into an :class:`ImageFolderConfig` named after the folder, the size and a
    digest of the file listing (a changed folder gets a fresh prepared copy)."""
    if image_size <= 0:
        raise ValueError(f"image_size must be positive, got {image_size}")
    layout = scan_image_folder(root, test_fraction=test_fraction, root_name=root_name)
    slug = re.sub(r"[^a-z0-9]+", "_", os.path.basename(layout.root).lower()).strip("_") or "images"
    tf = f"{test_fraction:g}".replace(".", "p")
    return ImageFolderConfig(
        name=f"{slug}_{image_size}px_test{tf}_{_listing_digest(layout)}",
        layout=layout,
        image_size=image_size,
    )


class HierImageFolder(LocalBuilder):
    """Images from nested user folders, with class, group and root labels (config required)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Image folders with a folder-given hierarchy."}
    BUILDER_CONFIGS: Sequence[ImageFolderConfig] = []

    def _info(self) -> tfds.core.DatasetInfo:
        cfg = self.builder_config
        if cfg is None or cfg.layout is None:
            raise ValueError("HierImageFolder needs a config from image_folder_config(root)")
        return hierarchy_info(
            self,
            cfg.layout.hierarchy,
            (cfg.image_size, cfg.image_size, 3),
            description=f"Images from {cfg.layout.root}.",
            metadata={"source_dir": cfg.layout.root},
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        layout = self.builder_config.layout
        return {split: self._generate_examples(items) for split, items in layout.files.items()}

    def _generate_examples(
        self, items: tuple[tuple[str, int], ...]
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        layout, size = self.builder_config.layout, self.builder_config.image_size
        for rel, label in items:
            image = load_image(os.path.join(layout.root, rel), size)
            yield rel, example_record(layout.hierarchy, image, label, rel)


def prepare_image_folder(
    root: str | os.PathLike,
    data_dir: str | os.PathLike | None = None,
    *,
    image_size: int = DEFAULT_IMAGE_SIZE,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    root_name: str | None = None,
    overwrite: bool = False,
) -> HierDataset:
    """Builds (once per folder content and size) and opens an image-folder data set.

    Args:
      root: the folder (layouts in the module docstring).
      data_dir: where prepared data go (default :func:`~hac_jax.data.base.default_data_dir`).
      image_size: stored images are ``(image_size, image_size, 3)``.
      test_fraction: share of each class held out as ``test`` when there are no split folders.
      root_name: name of the root concept (default: the folder name).
      overwrite: rebuild even if prepared data exist.

    Raises:
      FileNotFoundError / ValueError: see :func:`scan_image_folder` and :func:`load_image`.
    """
    config = image_folder_config(
        root, image_size=image_size, test_fraction=test_fraction, root_name=root_name
    )
    data_dir = os.fspath(data_dir or default_data_dir())
    return prepare_builder(
        lambda: HierImageFolder(data_dir=data_dir, config=config, file_format="array_record"),
        overwrite=overwrite,
    )
