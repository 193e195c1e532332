"""Unlearning runs from a pretrained CLIP or MERU model.

Command line (``get_config`` argument: model name, then switches)::

    python -m experiments.unlearn --config=experiments/configs/unlearn.py:meru \\
        --config.pretrained=runs/meru/pretrained --config.forget=sneaker \\
        --config.methods=ac,ft,ga --workdir=runs/unlearn_meru

Switches: ``smoke`` shrinks steps, batch and evaluation to a seconds-long run;
``data=shapes`` uses the small generated hierarchical set instead of Fashion-MNIST.
"""

import ml_collections
from ml_collections.config_dict import placeholder

from hac_jax.config_utils import parse_arg

MODELS = ("clip", "meru")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The unlearning config for ``arg = "<clip|meru>[,smoke][,data=<fashion_mnist|shapes>]"``."""
    arg = parse_arg(arg, positional=("model",), model="meru", smoke=False, data="fashion_mnist")
    if arg.model not in MODELS:
        raise ValueError(
            f"unknown model {arg.model!r} in the config argument; choose from {MODELS}"
        )

    config = ml_collections.ConfigDict()
    config.model = arg.model  # must match the kind of the pretrained model
    config.pretrained = placeholder(str)  # a save_pretrained / converted directory or a .pth
    config.forget = ""  # comma-separated concept names (classes or groups)
    config.methods = "ac,ft,ga"  # comma-separated registered method names
    config.seed = 0
    config.steps = 200
    config.batch_size = 64
    config.lr = 1e-5
    config.data = ml_collections.ConfigDict(
        dict(
            name=arg.data,  # fashion_mnist | shapes
            source_dir="/usr/share/datasets/fashion-mnist",
            data_dir=placeholder(str),
            max_examples=placeholder(int),
            shapes=dict(image_size=32, train_per_class=64, test_per_class=16, seed=0),
        )
    )
    config.eval = ml_collections.ConfigDict(dict(batch_size=256))
    if arg.smoke:
        config.steps = 4
        config.batch_size = 8
        config.eval.batch_size = 32
        config.data.max_examples = 320 if arg.data == "fashion_mnist" else None
        config.data.shapes.train_per_class = 16
        config.data.shapes.test_per_class = 4
        config.data.shapes.image_size = 16
    return config
