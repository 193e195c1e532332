"""Settings shared by the experiment configs: the data block (``config.data``), how several
JAX processes join (``config.distributed``) and the model's compute switches
(:data:`MODEL_SWITCHES`).

Pretraining, unlearning and the sweep read their data through ``hac_jax.data.load_data``, so
they share one description of it; what differs between the runners (the smoke sizes, the keys
only pretraining reads) is passed to :func:`data_config`.

Data sets (``data.name``, the keys of ``hac_jax.data.DATASETS``):

* ``fashion_mnist``: the IDX files in ``source_dir``;
* ``shapes``: the small generated hierarchical set (sizes in ``shapes``);
* ``image_folder``: your own images in ``root`` (``root/<group>/<class>/*.png`` or
  ``root/<class>/*.png``, optionally under ``train/`` and ``test/``; see
  ``hac_jax.data.image_folder``), prepared once per folder content and stored at
  ``image_size`` pixels;
* ``prepared``: a prepared tfds version directory ``path``.

Prepared copies go to ``data_dir``. The model reads images at the size they are stored at
unless its config sets ``model.image_size``.
"""

from typing import Any

import ml_collections
from ml_collections.config_dict import placeholder

from hac_jax.data.fashion_mnist import DEFAULT_SOURCE_DIR

# Smoke runs (seconds long): Fashion-MNIST records kept per split; generated shapes per class
# in train and their side in pixels.
SMOKE_MAX_EXAMPLES = 320
SMOKE_SHAPES_TRAIN_PER_CLASS = 16
SMOKE_SHAPES_IMAGE_SIZE = 16


def data_config(
    name: str,
    *,
    smoke: bool = False,
    smoke_shapes_test_per_class: int = 4,
    **runner_keys: Any,
) -> ml_collections.ConfigDict:
    """The data block of a runner's config.

    Args:
      name: the data set (``fashion_mnist``, ``shapes``, ``image_folder`` or ``prepared``).
      smoke: shrink the data for a seconds-long run (the first :data:`SMOKE_MAX_EXAMPLES`
        Fashion-MNIST records per split, or small 16-px shapes).
      smoke_shapes_test_per_class: generated test shapes per class in a smoke run.
      **runner_keys: keys only this runner reads (pretraining: caption levels, splits, ...).
    """
    data = ml_collections.ConfigDict(
        dict(
            name=name,
            source_dir=DEFAULT_SOURCE_DIR,  # name=fashion_mnist: the IDX files
            data_dir=placeholder(str),  # prepared copies (default: $HAC_JAX_DATA_DIR or ~/.cache)
            path=placeholder(str),  # name=prepared: a prepared tfds version directory
            root=placeholder(str),  # name=image_folder: the folder of class folders
            # name=image_folder: side of the stored images (default: 28, the default models'
            # input), and the share of each class held out as test when the folder has no
            # train/ and test/ folders (default 0.2).
            image_size=placeholder(int),
            test_fraction=placeholder(float),
            max_examples=placeholder(int),  # name=fashion_mnist: keep the first N per split
            # Per-class share of train held out as the validation split "val" (never trained
            # on; every tuning choice and stopping rule reads it, the test split is for reports).
            val_fraction=0.1,
            val_seed=0,
            shapes=dict(image_size=32, train_per_class=64, test_per_class=16, seed=0),
            **runner_keys,
        )
    )
    if smoke:
        data.max_examples = SMOKE_MAX_EXAMPLES if name == "fashion_mnist" else None
        data.shapes.train_per_class = SMOKE_SHAPES_TRAIN_PER_CLASS
        data.shapes.test_per_class = smoke_shapes_test_per_class
        data.shapes.image_size = SMOKE_SHAPES_IMAGE_SIZE
    return data


def distributed_config() -> ml_collections.ConfigDict:
    """How several JAX processes join (README "Many hosts",
    ``hac_jax.training.sharding.maybe_initialize_distributed``): when ``mode`` is ``"on"``, or
    ``"auto"`` and the settings or the environment show several (JAX_COORDINATOR_ADDRESS, SLURM,
    Open MPI). Unset fields come from JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES /
    JAX_PROCESS_ID."""
    return ml_collections.ConfigDict(
        dict(
            mode="auto",  # auto | on | off
            coordinator_address=placeholder(str),  # host:port of process 0
            num_processes=placeholder(int),
            process_id=placeholder(int),
        )
    )


# The model's compute switches (hac_jax.models.ModelConfig: dtype="bfloat16" matmuls, precision,
# attention="xla" (jax.nn.dot_product_attention), remat="full"/"dots" per block, gelu="erfc"
# (Flax's form of the exact GELU)); unset, the model computes today's float32 numbers and the
# run fingerprints stay as they were.
MODEL_SWITCHES = ("dtype", "precision", "attention", "remat", "gelu")


def model_switches() -> dict[str, Any]:
    """The compute switches as unset, typed keys of a config block, so the command line can set
    them (``--config.model.attention=xla``)."""
    return {name: placeholder(str) for name in MODEL_SWITCHES}


def set_switches(switches: Any) -> dict[str, str]:
    """The switches that are set, ``{name: value}``, of a config block holding them."""
    if switches is None:
        return {}
    return {k: switches[k] for k in MODEL_SWITCHES if switches.get(k) is not None}
