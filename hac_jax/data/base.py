"""What every hierarchical data set shares: features, preparation, and the prepared-data handle.

Every builder in this package writes the same features (array_record files through
tensorflow-datasets, no TensorFlow needed):

* ``image``: ``uint8 (H, W, C)``, ``C`` = 1 (grayscale) or 3;
* ``label``: class id (``ClassLabel`` named by the hierarchy's classes);
* ``group``: group id; ``root``: always 0 (a one-name ``ClassLabel``);
* ``key``: a stable text id of the example (source file and position).

The hierarchy itself is stored in the data set's metadata, so :func:`load_prepared` gets it back
from the directory alone. Records keep generation order (shuffling at write time is off): the
loader shuffles.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import os
import shutil
from collections.abc import Mapping
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from hac_jax.data.hierarchy import Hierarchy
from hac_jax.files import atomic_path

__all__ = [
    "DATA_DIR_ENV",
    "ArraySource",
    "HierDataset",
    "SubsetSource",
    "LocalBuilder",
    "default_data_dir",
    "hierarchy_info",
    "load_prepared",
    "prepare_builder",
]

DATA_DIR_ENV = "HAC_JAX_DATA_DIR"
FILE_FORMAT = "array_record"
_LABELS_FILE = "hac_jax_labels-{split}.npy"
_IMAGES_FILE = "hac_jax_images-{split}.npy"
# Splits whose decoded images take at most this many bytes are held in memory (``in_memory``).
IN_MEMORY_MAX_BYTES = 1 << 30


def default_data_dir() -> str:
    """Where prepared data sets go: ``$HAC_JAX_DATA_DIR``, else ``~/.cache/hac_jax/tfds``."""
    return os.environ.get(DATA_DIR_ENV) or os.path.join(
        os.path.expanduser("~"), ".cache", "hac_jax", "tfds"
    )


class LocalBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base of this package's builders: they read local files only.

    ``code_path`` is pinned to the defining module's file. tfds's default resolves it through
    ``importlib_resources``, a dependency that a TensorFlow-free install lacks; the path is only
    used to look for a download-checksums file, which local builders do not have.
    """

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path | None:
        try:
            return epath.Path(inspect.getfile(cls))
        except (TypeError, OSError):
            return None


def hierarchy_info(
    builder: tfds.core.DatasetBuilder,
    hierarchy: Hierarchy,
    image_shape: tuple[int, int, int],
    *,
    description: str,
    metadata: Mapping[str, Any] | None = None,
) -> tfds.core.DatasetInfo:
    """The ``DatasetInfo`` of a hierarchical image data set (features in the module docstring)."""
    features = tfds.features.FeaturesDict(
        {
            "image": tfds.features.Tensor(shape=tuple(image_shape), dtype=np.uint8),
            "label": tfds.features.ClassLabel(names=list(hierarchy.classes)),
            "group": tfds.features.ClassLabel(names=list(hierarchy.groups)),
            "root": tfds.features.ClassLabel(names=[hierarchy.root]),
            "key": tfds.features.Text(),
        }
    )
    return tfds.core.DatasetInfo(
        builder=builder,
        description=description,
        features=features,
        metadata=tfds.core.MetadataDict(hierarchy=hierarchy.to_dict(), **dict(metadata or {})),
        disable_shuffling=True,
    )


def example_record(hierarchy: Hierarchy, image: np.ndarray, label: int, key: str) -> dict[str, Any]:
    """One example in the shared feature layout."""
    return {
        "image": image,
        "label": int(label),
        "group": int(hierarchy.class_group[int(label)]),
        "root": 0,
        "key": key,
    }


class ArraySource:
    """A split held in memory: random access like a tfds data source, plus a batched
    :meth:`read` that is plain array indexing (no per-record decoding).

    Shapes: ``images (N, H, W, C) uint8``, ``labels (N,) int32``.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        if images.ndim != 4 or labels.shape != (images.shape[0],):
            raise ValueError(
                f"need images (N, H, W, C) and labels (N,), got {images.shape} and {labels.shape}"
            )
        self.images, self.labels = images, np.asarray(labels, np.int32)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"image": self.images[index], "label": int(self.labels[index])}

    def __getitems__(self, indices: Any) -> list[dict[str, Any]]:
        return [self[int(i)] for i in indices]

    def read(self, indices: Any) -> tuple[np.ndarray, np.ndarray]:
        """``(B,) record ids -> (images (B, H, W, C) uint8, labels (B,) int32)``."""
        idx = np.asarray(indices, np.int64)
        return self.images[idx], self.labels[idx]


class SubsetSource:
    """The records ``ids`` of another source, renumbered ``0 .. len(ids) - 1`` (a split carved
    out of another one, e.g. the validation split out of train)."""

    def __init__(self, parent: Any, ids: np.ndarray, labels: np.ndarray):
        self.parent, self.ids = parent, np.asarray(ids, np.int64)
        self.labels = np.asarray(labels, np.int32)

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.parent[int(self.ids[index])]

    def __getitems__(self, indices: Any) -> list[dict[str, Any]]:
        return self.parent.__getitems__([int(self.ids[int(i)]) for i in indices])

    def read(self, indices: Any) -> tuple[np.ndarray, np.ndarray]:
        """As :meth:`ArraySource.read` (only when the parent can read in batches)."""
        return self.parent.read(self.ids[np.asarray(indices, np.int64)])


def read_batch(source: Any, indices: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(images (B, H, W, C) uint8, labels (B,) int32)`` of records ``indices`` of any source:
    array indexing where the source holds arrays, one ``__getitems__`` decode otherwise."""
    if hasattr(source, "read") and (
        not isinstance(source, SubsetSource) or hasattr(source.parent, "read")
    ):
        return source.read(indices)
    records = source.__getitems__([int(i) for i in indices])
    images = np.stack([np.asarray(r["image"]) for r in records])
    return images, np.asarray([r["label"] for r in records], np.int32)


def stratified_holdout(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Record ids of a per-class ``fraction`` of ``labels`` (at least one per class with two or
    more records), drawn with ``seed``; sorted. Shapes: ``(N,) -> (M,)`` int64."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"the validation fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5A11D]))
    picked = []
    for c in np.unique(labels):
        ids = np.flatnonzero(labels == c)
        n = int(round(fraction * ids.size))
        n = min(max(n, 1), ids.size - 1) if ids.size >= 2 else 0
        picked.append(rng.permutation(ids)[:n])
    return np.sort(np.concatenate(picked)).astype(np.int64) if picked else np.zeros(0, np.int64)


@dataclasses.dataclass(frozen=True, eq=False)
class HierDataset:
    """A prepared hierarchical data set: random-access sources per split plus its hierarchy.

    Attributes:
      name: the tfds builder name.
      path: the directory holding the array_record files (``tfds.builder_from_directory`` reads it).
      hierarchy: the concept hierarchy (labels are class ids of it).
      image_shape: ``(H, W, C)`` of the stored images.
      sources: split name -> random-access data source (``len``, ``src[i]``, ``__getitems__``).
    """

    name: str
    path: str
    hierarchy: Hierarchy
    image_shape: tuple[int, int, int]
    sources: Mapping[str, Any]
    _label_cache: dict[str, np.ndarray] = dataclasses.field(default_factory=dict, repr=False)

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self.sources)

    def source(self, split: str) -> Any:
        """The random-access source of ``split`` (``ValueError`` naming the splits if unknown)."""
        if split not in self.sources:
            raise ValueError(f"{self.name} has no split {split!r}; splits: {list(self.sources)}")
        return self.sources[split]

    def num_examples(self, split: str) -> int:
        return len(self.source(split))

    def labels(self, split: str) -> np.ndarray:
        """``(N,)`` int32 class ids of every record of ``split``, in record order.

        Read once from the records and cached next to them (a small ``.npy``), so filtering by
        class costs nothing on later runs.
        """
        if split in self._label_cache:
            return self._label_cache[split]
        src = self.source(split)
        if isinstance(getattr(src, "labels", None), np.ndarray):  # in memory / carved splits
            self._label_cache[split] = src.labels
            return src.labels
        cache = os.path.join(self.path, _LABELS_FILE.format(split=split))
        labels = None
        if os.path.isfile(cache):
            labels = np.load(cache)
            if labels.shape != (len(src),):
                labels = None  # stale (the split was rebuilt): read again
        if labels is None:
            labels = np.empty((len(src),), dtype=np.int32)
            chunk = 4096
            for start in range(0, len(src), chunk):
                idx = list(range(start, min(start + chunk, len(src))))
                labels[start : start + len(idx)] = [r["label"] for r in src.__getitems__(idx)]
            try:
                with atomic_path(cache, suffix=".npy") as tmp:
                    np.save(tmp, labels)
            except OSError as e:  # read-only data directory: keep the labels in memory only
                logging.info("could not cache labels at %s: %s", cache, e)
        if labels.size and (labels.min() < 0 or labels.max() >= self.hierarchy.num_classes):
            raise ValueError(
                f"{self.path} split {split!r}: labels outside [0, {self.hierarchy.num_classes})"
            )
        self._label_cache[split] = labels
        return labels

    def in_memory(self, max_bytes: int = IN_MEMORY_MAX_BYTES) -> HierDataset:
        """The same data set with every split of at most ``max_bytes`` decoded images held in
        memory (:class:`ArraySource`): a batch is then one array index instead of a decode per
        record. The decoded arrays are cached beside the records (a ``.npy`` per split, written
        atomically) so later processes load them in milliseconds."""
        sources = {}
        for split, src in self.sources.items():
            n = len(src)
            if isinstance(src, ArraySource) or n * int(np.prod(self.image_shape)) > max_bytes:
                sources[split] = src
                continue
            labels = self.labels(split)
            cache = os.path.join(self.path, _IMAGES_FILE.format(split=split))
            images = None
            if os.path.isfile(cache):
                images = np.load(cache, mmap_mode=None)
                if images.shape != (n, *self.image_shape):
                    images = None  # stale: the split was rebuilt
            if images is None:
                images = np.empty((n, *self.image_shape), np.uint8)
                for start in range(0, n, 4096):
                    idx = list(range(start, min(start + 4096, n)))
                    for j, r in zip(idx, src.__getitems__(idx), strict=True):
                        images[j] = np.asarray(r["image"]).reshape(self.image_shape)
                try:
                    with atomic_path(cache, suffix=".npy") as tmp:
                        np.save(tmp, images)
                except OSError as e:  # read-only data directory: keep them in memory only
                    logging.info("could not cache images at %s: %s", cache, e)
            sources[split] = ArraySource(images, labels)
        return dataclasses.replace(self, sources=sources, _label_cache={})

    def with_validation(
        self, fraction: float, seed: int = 0, *, split: str = "train", name: str = "val"
    ) -> HierDataset:
        """The same data set with a validation split carved out of ``split``: a per-class
        ``fraction`` of its records (seeded, :func:`stratified_holdout`) becomes split ``name``
        and ``split`` keeps the rest. Nothing trains on the carved records, so tuning and
        stopping rules can read them as unseen data while the test split stays for reporting."""
        if name in self.sources:
            raise ValueError(f"{self.name} already has a split {name!r}")
        labels = self.labels(split)
        held = stratified_holdout(labels, fraction, seed)
        kept = np.setdiff1d(np.arange(labels.size), held)
        parent = self.source(split)
        sources = dict(self.sources)
        sources[split] = SubsetSource(parent, kept, labels[kept])
        sources[name] = SubsetSource(parent, held, labels[held])
        return dataclasses.replace(self, sources=sources, _label_cache={})

    def fingerprint(self, *, sample: int = 512) -> str:
        """SHA-256 of the data set's content: its hierarchy, every split's size and labels, and
        its images (all of them for in-memory splits, else ``sample`` records spread over the
        split). Equal fingerprints: the same data, however and wherever it was prepared."""
        import hashlib
        import json

        from hac_jax.fingerprint import canonical

        h = hashlib.sha256(json.dumps(canonical(self.hierarchy.to_dict()), sort_keys=True).encode())
        for split in sorted(self.splits):
            labels = np.asarray(self.labels(split), np.int64)
            h.update(f"|{split}|{labels.size}|".encode())
            h.update(labels.tobytes())
            src = self.source(split)
            parent = getattr(src, "parent", None)
            if hasattr(src, "images"):
                images = src.images
            elif hasattr(parent, "images"):  # a carved split of an in-memory one
                images = parent.images[src.ids]
            else:
                n = labels.size
                idx = np.unique(np.linspace(0, max(n - 1, 0), min(sample, n)))
                images, _ = read_batch(src, idx.astype(np.int64))
            h.update(np.ascontiguousarray(images).tobytes())
        return h.hexdigest()

    def example(self, split: str, index: int) -> dict[str, Any]:
        """One decoded record (numpy image, int labels, ``key`` as bytes)."""
        return self.source(split)[index]

    @classmethod
    def from_builder(cls, builder: tfds.core.DatasetBuilder) -> HierDataset:
        """Wraps a prepared builder whose features follow the module docstring."""
        info = builder.info
        feats = info.features
        if "image" not in feats or "label" not in feats:
            raise ValueError(
                f"{builder.data_dir}: a data set needs 'image' and 'label' features, "
                f"has {list(feats)}"
            )
        meta = info.metadata or {}
        if "hierarchy" in meta:
            hierarchy = Hierarchy.from_dict(meta["hierarchy"])
        else:
            # A plain labelled data set: the classes are the concepts, under the data set's name.
            hierarchy = Hierarchy.flat(info.name, feats["label"].names)
        shape = tuple(feats["image"].shape)
        if len(shape) == 2:
            raise ValueError(f"{builder.data_dir}: images must be (H, W, C), got shape {shape}")
        try:
            sources = builder.as_data_source()
        except (ValueError, NotImplementedError) as e:
            raise ValueError(
                f"{builder.data_dir} has no random-access ({FILE_FORMAT}) files; prepare it with "
                f"download_and_prepare(file_format='{FILE_FORMAT}'): {e}"
            ) from e
        return cls(
            name=info.name,
            path=os.fspath(builder.data_dir),
            hierarchy=hierarchy,
            image_shape=shape,  # type: ignore[arg-type]
            sources=dict(sources),
        )


def prepare_builder(
    builder_fn: Any, *, overwrite: bool = False, manual_dir: str | None = None
) -> HierDataset:
    """Prepares (once) the data set of ``builder_fn()`` and opens it.

    ``builder_fn`` makes a fresh builder (a second one is needed after ``overwrite`` removes the
    old files). A data set that is already prepared is reused as is.
    """
    builder = builder_fn()
    if overwrite and os.path.isdir(os.fspath(builder.data_dir)):
        shutil.rmtree(os.fspath(builder.data_dir))
        builder = builder_fn()
    config = tfds.download.DownloadConfig(manual_dir=manual_dir) if manual_dir else None
    builder.download_and_prepare(file_format=FILE_FORMAT, download_config=config)
    return HierDataset.from_builder(builder)


def load_prepared(path: str | os.PathLike) -> HierDataset:
    """Opens a prepared tfds data set directory (``.../name/config/version``) with array_record
    files, e.g. one written by this package or by any tfds builder with ``image`` and ``label``
    features (a flat hierarchy is used when its metadata has none)."""
    path = os.fspath(path)
    if not os.path.isfile(os.path.join(path, "dataset_info.json")):
        raise FileNotFoundError(
            f"{path} is not a prepared tfds data set (no dataset_info.json); pass the version "
            f"directory, e.g. <data_dir>/<name>/<config>/<version>"
        )
    return HierDataset.from_builder(tfds.builder_from_directory(path))
