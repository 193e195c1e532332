"""Evaluating a pretrained CLIP or MERU model (``python -m experiments.evaluate``).

``get_config`` argument: switches only (the model's kind comes from its files)::

    --config=experiments/configs/evaluate.py                  # Fashion-MNIST test split
    --config=experiments/configs/evaluate.py:data=shapes      # the generated shapes
    --config=experiments/configs/evaluate.py:data=shapes,smoke   # the data of a smoke pretraining

``smoke`` selects the data a ``smoke`` pretraining run trains on (the pretraining config's
switch), so that its exported model is evaluated on the same data set. ``config.pretrained`` must
be set. Data sets and their keys are described in ``experiments/configs/common.py``.
"""

import ml_collections
from ml_collections.config_dict import placeholder

from experiments.configs.common import data_config
from hac_jax.config_utils import parse_arg

# Generated test shapes per class in a smoke run: the pretraining config's smoke value.
SMOKE_SHAPES_TEST_PER_CLASS = 8


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The evaluation config for ``arg = "[data=<fashion_mnist|shapes|...>][,smoke]"``."""
    arg = parse_arg(arg, smoke=False, data="fashion_mnist")

    config = ml_collections.ConfigDict()
    # a directory written by training, save_pretrained or `python -m checkpoints_convert`, or a
    # PyTorch .pth
    config.pretrained = placeholder(str)
    config.data = data_config(
        arg.data, smoke=arg.smoke, smoke_shapes_test_per_class=SMOKE_SHAPES_TEST_PER_CLASS
    )
    # 0: the train split is evaluated whole, as the data set stores it. Set it to pretraining's
    # 0.1 to evaluate on the validation split "val" that pretraining held out.
    config.data.val_fraction = 0.0
    config.split = "test"
    config.batch_size = 500
    # Image-text retrieval on the first `images` images of the split, each with
    # `captions_per_image` captions drawn from the data set's caption templates (0: skipped).
    config.retrieval = ml_collections.ConfigDict(dict(images=0, captions_per_image=2))
    config.seed = 0  # of the retrieval captions' draws
    return config
