"""Batches from prepared data sets with grain: deterministic, per-host sharded, filterable, mixable.

Pipeline (a ``grain.MapDataset`` of batches, so any step's batch can be rebuilt by index):

1. the record ids of a split, optionally only those of some classes;
2. per epoch ``e``, a permutation of them drawn from ``(seed, stream, e)`` (record order when
   shuffling is off);
3. this host's share: ``[shard_index::shard_count]`` of the permutation (``ShardOptions``; default
   :func:`host_shard_options`, i.e. ``jax.process_index()`` of ``jax.process_count()``), cut to
   the same length on every host when ``drop_remainder`` so hosts step in lockstep;
4. batch ``k`` of epoch ``e`` = the ``k``-th run of ``B`` ids of that share (one array slice, no
   per-record work), then one read per batch that decodes images (an array index for
   in-memory splits) and draws captions.

Batches (numpy, process-local, leading dimension = per-host batch)::

    {"image": float32 (B, H, W, 3) in [0, 1], "tokens": int32 (B, L), "label": int32 (B,),
     "group": int32 (B,), "caption_level": int32 (B,), "index": int32 (B,)}

``index`` is the record index in the split; grayscale images are replicated to 3 channels.
Captions are drawn per example from ``(seed, epoch, index)`` (see
:class:`~hac_jax.data.captions.CaptionBank`), so they do not depend on the host count.
:func:`make_mixed_loader` adds ``"is_forget": bool (B,)``, forget examples first.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import grain
import numpy as np
from absl import flags
from PIL import Image

from hac_jax.data.base import HierDataset, read_batch
from hac_jax.data.captions import CaptionBank

__all__ = ["Loader", "host_shard_options", "make_loader", "make_mixed_loader", "select_records"]

Batch = dict[str, np.ndarray]


def host_shard_options(drop_remainder: bool = True) -> grain.sharding.ShardOptions:
    """This process's shard: ``jax.process_index()`` of ``jax.process_count()``."""
    return grain.sharding.ShardByJaxProcess(drop_remainder=drop_remainder)


def _derived_seed(seed: int, stream: int) -> int:
    """A 32-bit seed per (seed, stream), so that the forget and retain streams of one loader and
    neighbouring seeds never share an order."""
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return int(np.random.SeedSequence([seed, stream]).generate_state(1)[0])


def select_records(
    data: HierDataset, split: str, classes: Iterable[int | str] | int | str | None = None
) -> np.ndarray:
    """Record indices of ``split`` whose class is among ``classes`` (class ids, or concept names:
    a group or the root stands for its classes); all records when ``classes`` is None."""
    n = data.num_examples(split)
    if classes is None:
        return np.arange(n, dtype=np.int64)
    wanted = data.hierarchy.class_ids(classes)
    ids = np.flatnonzero(np.isin(data.labels(split), wanted)).astype(np.int64)
    if ids.size == 0:
        names = [data.hierarchy.classes[i] for i in wanted]
        raise ValueError(f"{data.name} split {split!r} has no examples of classes {names}")
    return ids


def _resize(images: np.ndarray, size: int) -> np.ndarray:
    """``(B, H, W, C) uint8 -> (B, size, size, C) uint8`` (bilinear)."""
    out = np.empty((len(images), size, size, images.shape[-1]), dtype=np.uint8)
    for i, img in enumerate(images):
        pil = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
        arr = np.asarray(pil.resize((size, size), Image.Resampling.BILINEAR))
        out[i] = arr.reshape(size, size, -1)
    return out


class _ReadBatch:
    """(epochs (B,), record ids (B,)) -> a batch dict (see the module docstring)."""

    def __init__(
        self,
        source: Any,
        class_to_group: np.ndarray,
        captions: CaptionBank | None,
        seed: int,
        image_size: int | None,
    ):
        self.source, self.class_to_group, self.captions = source, class_to_group, captions
        self.seed, self.image_size = seed, image_size

    def __call__(self, item: tuple[np.ndarray, np.ndarray]) -> Batch:
        epochs, ids = (np.asarray(a) for a in item)
        images, label = read_batch(self.source, ids)
        if self.image_size is not None and images.shape[1:3] != (self.image_size,) * 2:
            images = _resize(images, self.image_size)
        if images.shape[-1] == 1:
            images = np.repeat(images, 3, axis=-1)
        image = images.astype(np.float32) * np.float32(1.0 / 255.0)
        batch = {
            "image": image,
            "label": label,
            "group": self.class_to_group[label],
            "index": ids.astype(np.int32),
        }
        if self.captions is not None:
            tokens, level = self.captions.sample(label, ids, seed=self.seed, epoch=epochs)
            batch["tokens"] = np.ascontiguousarray(tokens, dtype=np.int32)
            batch["caption_level"] = np.asarray(level, dtype=np.int32)
        return batch


class _Concat:
    """(forget batch, retain batch) -> one batch, forget rows first, with ``is_forget``."""

    def __call__(self, pair: tuple[Batch | None, Batch | None]) -> Batch:
        parts = [(b, flag) for b, flag in zip(pair, (True, False), strict=True) if b is not None]
        out = {k: np.concatenate([b[k] for b, _ in parts]) for k in parts[0][0]}
        out["is_forget"] = np.concatenate(
            [np.full(len(b["label"]), flag, dtype=bool) for b, flag in parts]
        )
        return out


class _AddFlag:
    def __init__(self, flag: bool):
        self.flag = flag

    def __call__(self, batch: Batch) -> Batch:
        return {**batch, "is_forget": np.full(len(batch["label"]), self.flag, dtype=bool)}


class Loader:
    """Batches of one pipeline: iterate it, or index it by step (``loader[step]``).

    Attributes:
      dataset: the ``grain.MapDataset`` of batches.
      batch_size: per-host batch size.
      batches_per_epoch: batches per epoch on this host.
      num_epochs: epochs (``None``: endless).
      hierarchy: the data set's hierarchy.
      captions: the caption bank (``None`` when captions are off).
    """

    def __init__(
        self,
        dataset: grain.MapDataset,
        *,
        batch_size: int,
        batches_per_epoch: int,
        num_epochs: int | None,
        hierarchy: Any,
        captions: CaptionBank | None,
        worker_count: int = 0,
        read_options: grain.ReadOptions | None = None,
    ):
        self.dataset = dataset
        self.batch_size = batch_size
        self.batches_per_epoch = batches_per_epoch
        self.num_epochs = num_epochs
        self.hierarchy = hierarchy
        self.captions = captions
        self.worker_count = worker_count
        # Elements are whole batches: a short buffer and one reader thread overlap reading with
        # the training step without holding many batches in memory.
        self.read_options = read_options or grain.ReadOptions(num_threads=1, prefetch_buffer_size=2)

    @property
    def num_batches(self) -> int | None:
        """Total batches (``None`` when endless)."""
        return None if self.num_epochs is None else self.num_epochs * self.batches_per_epoch

    def __len__(self) -> int:
        if self.num_epochs is None:
            raise TypeError("an endless loader (num_epochs=None) has no length")
        return self.num_epochs * self.batches_per_epoch

    def __getitem__(self, step: int) -> Batch:
        """The batch of global step ``step`` (``step // batches_per_epoch`` is its epoch)."""
        if step < 0 or (self.num_epochs is not None and step >= len(self)):
            raise IndexError(f"step {step} outside this loader's {self.num_batches} batches")
        return self.dataset[step]

    def __iter__(self) -> Iterator[Batch]:
        """A checkpointable grain iterator (``get_state()`` / ``set_state()``)."""
        ds = self.dataset.to_iter_dataset(self.read_options)
        if self.worker_count > 0:
            # grain 0.2.18 reads an absl flag in its worker set-up and fails in scripts that
            # never parsed flags (google/grain#1355, fixed upstream): fall back to the defaults.
            if not flags.FLAGS.is_parsed():
                flags.FLAGS.mark_as_parsed()
            ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=self.worker_count))
        return iter(ds)

    def epoch(self, epoch: int) -> Iterator[Batch]:
        """The batches of one epoch, in order."""
        start = epoch * self.batches_per_epoch
        return (self[start + i] for i in range(self.batches_per_epoch))


class _EpochBatches:
    """Global batch number -> ``(epochs (B,), record ids (B,))`` of this host (steps 2-4 of the
    pipeline). Batch ``s`` is batch ``s % per_epoch`` of epoch ``s // per_epoch``; with
    ``drop_remainder=False`` the last batch of an epoch may be short."""

    def __init__(
        self,
        ids: np.ndarray,
        size: int,
        *,
        seed: int,
        stream: int,
        shuffle: bool,
        shard_options: grain.sharding.ShardOptions,
        drop_remainder: bool,
    ):
        count, index = shard_options.shard_count, shard_options.shard_index
        if not 0 <= index < count:
            raise ValueError(f"shard_index {index} outside [0, {count})")
        self.ids, self.size, self.shuffle = np.asarray(ids, np.int64), size, shuffle
        self.count, self.index = count, index
        self.seed = _derived_seed(seed, stream)
        n = len(self.ids)
        self.per_host = n // count if shard_options.drop_remainder else len(range(index, n, count))
        self.per_epoch = self.per_host // size if drop_remainder else -(-self.per_host // size)
        self._orders: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()  # grain's reader threads share this object

    def order(self, epoch: int) -> np.ndarray:
        """This host's record ids of ``epoch``, in reading order."""
        with self._lock:
            order = self._orders.get(epoch)
        if order is None:
            ids = self.ids
            if self.shuffle:
                rng = np.random.default_rng(np.random.SeedSequence([self.seed, int(epoch)]))
                ids = ids[rng.permutation(ids.size)]
            order = ids[self.index :: self.count][: self.per_host]
            with self._lock:
                if len(self._orders) >= 2:  # readers move forward: keep this epoch and the last
                    self._orders.pop(min(self._orders))
                self._orders[epoch] = order
        return order

    def __call__(self, step: int, _: Any = None) -> tuple[np.ndarray, np.ndarray]:
        epoch, k = divmod(int(step), self.per_epoch)
        ids = self.order(epoch)[k * self.size : (k + 1) * self.size]
        return np.full(ids.shape, epoch, np.int64), ids


def _batches(batcher: _EpochBatches, num_epochs: int | None, read: Any) -> grain.MapDataset:
    """The ``grain.MapDataset`` of read batches: ``num_epochs`` epochs (``None``: endless)."""
    ds = grain.MapDataset.range(batcher.per_epoch)
    if num_epochs != 1:
        ds = ds.repeat(num_epochs)
    return ds.map_with_index(batcher).map(read)


def _per_host(batch_size: int, shard_options: grain.sharding.ShardOptions) -> int:
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if batch_size % shard_options.shard_count:
        raise ValueError(
            f"global batch_size {batch_size} is not divisible by the {shard_options.shard_count} "
            "hosts"
        )
    return batch_size // shard_options.shard_count


def _caption_bank(
    data: HierDataset,
    captions: bool | CaptionBank,
    caption_levels: Mapping[str, float] | None,
    context_length: int,
) -> CaptionBank | None:
    if isinstance(captions, CaptionBank):
        if captions.hierarchy != data.hierarchy:
            raise ValueError("the caption bank was made for another hierarchy")
        return captions
    if not captions:
        return None
    return CaptionBank(data.hierarchy, caption_levels, context_length=context_length)


def _check_common(num_epochs: int | None, worker_count: int, image_size: int | None) -> None:
    if num_epochs is not None and num_epochs <= 0:
        raise ValueError(f"num_epochs must be positive or None, got {num_epochs}")
    if worker_count < 0:
        raise ValueError(f"worker_count must be >= 0, got {worker_count}")
    if image_size is not None and image_size <= 0:
        raise ValueError(f"image_size must be positive, got {image_size}")


def make_loader(
    data: HierDataset,
    split: str,
    *,
    batch_size: int,
    seed: int = 0,
    shuffle: bool = True,
    num_epochs: int | None = None,
    drop_remainder: bool = True,
    classes: Iterable[int | str] | int | str | None = None,
    captions: bool | CaptionBank = True,
    caption_levels: Mapping[str, float] | None = None,
    context_length: int = 77,
    image_size: int | None = None,
    shard_options: grain.sharding.ShardOptions | None = None,
    worker_count: int = 0,
) -> Loader:
    """A deterministic batch loader over one split.

    Args:
      data: a prepared data set (``prepare_fashion_mnist`` / ``prepare_shapes`` /
        ``prepare_image_folder`` / ``load_prepared``).
      split: e.g. ``"train"``.
      batch_size: *global* batch size; each host gets ``batch_size / shard_count`` examples.
      seed: shuffling and caption seed (same seed -> same batches).
      shuffle: reshuffle every epoch (off: record order, e.g. for evaluation).
      num_epochs: epochs to produce (``None``: endless).
      drop_remainder: drop the last partial batch of each epoch.
      classes: keep only these classes (ids or concept names; groups expand to their classes).
      captions: draw captions (``tokens``, ``caption_level``); or a ready ``CaptionBank``.
      caption_levels: level weights for captions (see ``captions.DEFAULT_LEVEL_WEIGHTS``).
      context_length: token length ``L``.
      image_size: resize images to ``image_size`` x ``image_size`` (default: as stored).
      shard_options: this host's shard (default :func:`host_shard_options`).
      worker_count: grain worker processes (0: read in this process, best on small machines).

    Returns:
      A :class:`Loader` of batches as in the module docstring.
    """
    _check_common(num_epochs, worker_count, image_size)
    shard_options = shard_options or host_shard_options()
    per_host = _per_host(batch_size, shard_options)
    ids = select_records(data, split, classes)
    batcher = _EpochBatches(
        ids,
        per_host,
        seed=seed,
        stream=0,
        shuffle=shuffle,
        shard_options=shard_options,
        drop_remainder=drop_remainder,
    )
    if batcher.per_epoch == 0:
        raise ValueError(
            f"{batcher.per_host} examples per host in {data.name}/{split} make no full batch of "
            f"{per_host}; lower batch_size or set drop_remainder=False"
        )
    bank = _caption_bank(data, captions, caption_levels, context_length)
    read = _ReadBatch(data.source(split), data.hierarchy.class_to_group, bank, seed, image_size)
    return Loader(
        _batches(batcher, num_epochs, read),
        batch_size=per_host,
        batches_per_epoch=batcher.per_epoch,
        num_epochs=num_epochs,
        hierarchy=data.hierarchy,
        captions=bank,
        worker_count=worker_count,
    )


def make_mixed_loader(
    data: HierDataset,
    split: str,
    *,
    forget_classes: Iterable[int | str] | int | str,
    batch_size: int,
    forget_fraction: float,
    retain_classes: Iterable[int | str] | int | str | None = None,
    seed: int = 0,
    num_epochs: int | None = None,
    captions: bool | CaptionBank = True,
    caption_levels: Mapping[str, float] | None = None,
    context_length: int = 77,
    image_size: int | None = None,
    shard_options: grain.sharding.ShardOptions | None = None,
    worker_count: int = 0,
) -> Loader:
    """Batches mixing forget and retain examples in a fixed proportion (for unlearning).

    Every per-host batch holds ``round(forget_fraction * B)`` forget examples (first) and the rest
    retain examples; ``is_forget`` marks them. An epoch is one pass over the retain set; the
    forget set is reshuffled and cycled as often as needed (when ``forget_fraction`` is 1, an
    epoch is a pass over the forget set).

    Args:
      forget_classes: concepts to forget (ids or names; groups expand to their classes).
      retain_classes: concepts to retain (default: every other class).
      forget_fraction: share of forget examples per batch, in [0, 1].
      Others: as :func:`make_loader` (always shuffled, full batches only).
    """
    _check_common(num_epochs, worker_count, image_size)
    if not 0.0 <= forget_fraction <= 1.0:
        raise ValueError(f"forget_fraction must be in [0, 1], got {forget_fraction}")
    shard_options = shard_options or host_shard_options()
    per_host = _per_host(batch_size, shard_options)
    h = data.hierarchy
    forget_ids = h.class_ids(forget_classes)
    if retain_classes is None:
        forget_ids, retain_ids = h.split_classes(forget_ids)
    else:
        retain_ids = h.class_ids(retain_classes)
        overlap = set(forget_ids) & set(retain_ids)
        if overlap:
            raise ValueError(
                f"classes both forgotten and retained: {[h.classes[i] for i in sorted(overlap)]}"
            )
    n_forget = int(round(forget_fraction * per_host))
    n_retain = per_host - n_forget
    if forget_fraction > 0 and n_forget == 0 or forget_fraction < 1 and n_retain == 0:
        raise ValueError(
            f"forget_fraction {forget_fraction} of a per-host batch of {per_host} leaves "
            f"{n_forget} forget and {n_retain} retain examples; change batch_size or the fraction"
        )
    bank = _caption_bank(data, captions, caption_levels, context_length)
    read = _ReadBatch(data.source(split), h.class_to_group, bank, seed, image_size)

    def batcher(class_ids: tuple[int, ...], size: int, stream: int, what: str) -> _EpochBatches:
        ids = select_records(data, split, class_ids)
        out = _EpochBatches(
            ids,
            size,
            seed=seed,
            stream=stream,
            shuffle=True,
            shard_options=shard_options,
            drop_remainder=True,
        )
        if out.per_epoch == 0:
            raise ValueError(
                f"the {what} set has {out.per_host} examples per host, fewer than the {size} "
                f"{what} examples per batch; lower batch_size or change forget_fraction"
            )
        return out

    forget = batcher(forget_ids, n_forget, 1, "forget") if n_forget else None
    retain = batcher(retain_ids, n_retain, 2, "retain") if n_retain else None
    lead_batcher = retain if retain is not None else forget
    batches_per_epoch = lead_batcher.per_epoch
    lead = _batches(lead_batcher, num_epochs, read)
    if forget is None or retain is None:
        ds = lead.map(_AddFlag(forget is not None))
    else:
        cycled = _batches(forget, None, read)  # endless: the forget set's epochs run on their own
        if num_epochs is not None:
            cycled = cycled[: len(lead)]
        ds = grain.experimental.ZipMapDataset([cycled, lead]).map(_Concat())
    return Loader(
        ds,
        batch_size=per_host,
        batches_per_epoch=batches_per_epoch,
        num_epochs=num_epochs,
        hierarchy=h,
        captions=bank,
        worker_count=worker_count,
    )
