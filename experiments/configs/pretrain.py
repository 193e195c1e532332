"""Pretraining CLIP or MERU from scratch (default: Fashion-MNIST with its concept hierarchy).

Command line (``get_config`` argument after the colon: model name, then switches)::

    python -m experiments.pretrain --config=experiments/configs/pretrain.py:meru --workdir=runs/meru
    python -m experiments.pretrain --config=experiments/configs/pretrain.py:clip,smoke \\
        --workdir=/tmp/smoke --config.total_steps=20

Switches: ``smoke`` shrinks everything to a seconds-long run (like big_vision's ``runlocal``);
``data=shapes`` trains on the small generated hierarchical set instead of Fashion-MNIST. Your
own images: ``--config.data.name=image_folder --config.data.root=DIR`` (layouts and options in
``experiments/configs/common.py``).
"""

import ml_collections
from ml_collections.config_dict import placeholder

from experiments.configs.common import data_config, distributed_config, model_switches
from hac_jax.config_utils import parse_arg
from hac_jax.training import optim

MODELS = ("clip", "meru")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The pretraining config for ``arg = "<clip|meru>[,smoke][,data=<fashion_mnist|shapes>]"``."""
    arg = parse_arg(arg, positional=("model",), model="meru", smoke=False, data="fashion_mnist")
    if arg.model not in MODELS:
        raise ValueError(
            f"unknown model {arg.model!r} in the config argument; choose from {MODELS}"
        )

    config = ml_collections.ConfigDict()
    config.seed = 0
    config.total_steps = 1500
    config.batch_size = 256  # global; split over hosts and the `data` mesh axis
    config.log_every = 50
    config.distributed = distributed_config()  # several JAX processes (README "Many hosts")
    config.donate = True  # the train step reuses the state's buffers for the new state

    # Mesh: (axis, size) pairs, -1 = the remaining devices. Add ("model", k) for large models
    # together with sharding_rules such as (".*/mlp/(fc1|c_fc)/kernel", (None, "model")).
    config.mesh = [("data", -1)]
    config.num_devices = placeholder(int)  # use only the first N devices (default: all)
    config.sharding_rules = []  # (regex over "a/b/c" param names, PartitionSpec tuple)

    # The model: kind, a named architecture (hac_jax.models.get_arch), then field overrides
    # (hac_jax.models.model_config). Every size is pinned here, so the measured default does not
    # move when a named architecture changes: 7-pixel patches (Fashion-MNIST's 28x28 images give
    # 17 tokens), three blocks of width 64, a one-block text tower; a 15-minute CPU run then sees
    # ~6 epochs. The input size follows the data (the side of the stored images) unless
    # image_size is set; a patch size that does not divide it is an error before any compute.
    config.model = ml_collections.ConfigDict(
        dict(
            kind=arg.model,
            arch="fmnist_s",
            image_size=placeholder(int),
            patch_size=7,
            vision_width=64,
            vision_depth=3,
            vision_heads=2,
            text_width=64,
            text_depth=1,
            text_heads=2,
            embed_dim=64,
            context_length=16,  # the longest caption template is 14 tokens; MERU's is 77
            entail_weight=0.2,  # MERU's entailment-loss weight (ignored by CLIP)
            # the compute switches, unset (experiments/configs/common.py, MODEL_SWITCHES)
            **model_switches(),
        )
    )

    # Where the data come from (experiments/configs/common.py), and what pretraining reads on top.
    config.data = data_config(
        arg.data,
        smoke=arg.smoke,
        smoke_shapes_test_per_class=8,
        caption_levels={"class": 0.6, "class_in_group": 0.2, "group": 0.2, "root": 0.0},
        train_split="train",
        test_split="test",
        exclude_classes="",  # comma-separated concepts left out (Retrain: the forget set)
        worker_count=0,
    )

    # MERU's AdamW recipe; the masks are data (see hac_jax.training.optim.meru_optim_config).
    config.optim = optim.meru_optim_config(lr=1e-3, warmup_steps=100, weight_decay=0.2)

    config.ckpt = ml_collections.ConfigDict(dict(every=500, keep=2))
    config.eval = ml_collections.ConfigDict(dict(zero_shot=True, batch_size=500))

    if arg.data == "shapes":
        # The generated shapes (32 px, 16 in smoke runs) are resized to 28 px, which 7-pixel
        # patches divide.
        config.model.image_size = 28
        config.total_steps = 300
        config.batch_size = 64
        config.optim.warmup_steps = 30
        config.ckpt.every = 100
        config.eval.batch_size = 80

    if arg.smoke:
        config.total_steps = 6
        config.batch_size = 16
        config.log_every = 1
        config.model.update(dict(arch="fmnist_xs", vision_depth=1, embed_dim=32))
        config.optim.warmup_steps = 2
        config.ckpt.every = 3
        config.eval.batch_size = 40
    return config
