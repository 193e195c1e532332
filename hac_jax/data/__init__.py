"""Data: concept hierarchies, captions, tfds builders (Fashion-MNIST, generated shapes, image
folders) writing array_record files without TensorFlow, and grain batch loaders.

Typical use::

    from hac_jax import data
    ds = data.prepare_fashion_mnist()   # or prepare_shapes() / prepare_image_folder(path)
    train = data.make_loader(ds, "train", batch_size=256, seed=0)
    forget, retain = ds.hierarchy.split_classes(["sneaker"])
    mixed = data.make_mixed_loader(ds, "train", forget_classes=forget, batch_size=256,
                                   forget_fraction=0.25, seed=0)
    prompts = data.class_prompts(ds.hierarchy)       # zero-shot prompt ensembles
"""

from hac_jax.data.base import DATA_DIR_ENV, HierDataset, default_data_dir, load_prepared
from hac_jax.data.captions import (
    CAPTION_LEVEL_DEPTH,
    CAPTION_LEVELS,
    DEFAULT_LEVEL_WEIGHTS,
    TEMPLATES,
    CaptionBank,
    caption_texts,
    class_prompts,
    group_prompts,
    parent_prompts,
    sample_caption,
)
from hac_jax.data.datasets import DATASETS, load_data
from hac_jax.data.fashion_mnist import (
    DEFAULT_SOURCE_DIR,
    FashionMnistHierarchy,
    find_fashion_mnist_files,
    prepare_fashion_mnist,
)
from hac_jax.data.forget import GROUP_CAPTION_POLICIES, ForgetSet, pair_roles
from hac_jax.data.hierarchy import FASHION_MNIST, LEVELS, Concept, Hierarchy, normalize_name
from hac_jax.data.idx import IdxFormatError, read_idx, write_idx
from hac_jax.data.image_folder import HierImageFolder, prepare_image_folder, scan_image_folder
from hac_jax.data.loader import (
    Loader,
    host_shard_options,
    make_loader,
    make_mixed_loader,
    select_records,
)
from hac_jax.data.synthetic import SHAPES, HierShapes, prepare_shapes

__all__ = [
    "CAPTION_LEVELS",
    "CAPTION_LEVEL_DEPTH",
    "DATASETS",
    "DATA_DIR_ENV",
    "DEFAULT_LEVEL_WEIGHTS",
    "DEFAULT_SOURCE_DIR",
    "FASHION_MNIST",
    "GROUP_CAPTION_POLICIES",
    "LEVELS",
    "SHAPES",
    "TEMPLATES",
    "CaptionBank",
    "Concept",
    "FashionMnistHierarchy",
    "ForgetSet",
    "HierDataset",
    "HierImageFolder",
    "HierShapes",
    "Hierarchy",
    "IdxFormatError",
    "Loader",
    "caption_texts",
    "class_prompts",
    "default_data_dir",
    "find_fashion_mnist_files",
    "group_prompts",
    "host_shard_options",
    "load_data",
    "load_prepared",
    "make_loader",
    "make_mixed_loader",
    "normalize_name",
    "pair_roles",
    "parent_prompts",
    "prepare_fashion_mnist",
    "prepare_image_folder",
    "prepare_shapes",
    "read_idx",
    "sample_caption",
    "scan_image_folder",
    "select_records",
    "write_idx",
]
