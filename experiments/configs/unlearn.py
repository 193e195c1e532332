"""Unlearning experiments from a pretrained CLIP or MERU model (``python -m experiments.unlearn``).

``get_config`` argument: the model, then the experiment and switches::

    --config=experiments/configs/unlearn.py:meru            # E1 on MERU (default experiment)
    --config=experiments/configs/unlearn.py:clip,exp=e2     # E2 multi-concept scaling on CLIP
    --config=experiments/configs/unlearn.py:meru,exp=e3     # E3 HAC ablations (MERU only)
    --config=experiments/configs/unlearn.py:meru,exp=e4     # E4 hierarchy analysis
    --config=experiments/configs/unlearn.py:meru,exp=main   # the README main command's comparison
    --config=experiments/configs/unlearn.py:meru,smoke,data=shapes   # seconds-long check

Experiments (docs/METHOD.md):

* ``e1``: each of ``E1_FORGET`` (sneaker, trouser, dress, pullover, bag: one concept per group,
  fixed before tuning); Retrain, AC (CLIP) / HAC + AC + ac-matched (MERU), FT, GA, NegGrad,
  l1-sparse. ``ac-matched`` is AC with HAC's shared settings and steps (``VARIANTS``).
* ``e2``: k = 1, 2, 3, 5 concepts (nested sets starting at ``sneaker``); Retrain, AC (CLIP),
  AC, ac-matched and HAC (MERU), every method with its one default (the same budget rule at
  every k).
* ``e3``: Retrain; HAC without each term (entailment calibration, norm regularization, both,
  the retain pairs' entailment loss, positive calibration), with negative calibration added
  back (the sweep chose alpha = 0), the parent cone kept or pushed out of (HAC's default leaves
  it to the data), AC and ac-matched on MERU.
* ``e4``: the hierarchy audit of AC vs HAC (its default, parent cone kept, pushed) on
  ``sneaker``.
* ``main``: E1's comparison with one seed and fewer baselines (the README main command).

Lists are lists (``config.methods``, ``config.seeds``, ``config.forget`` as a list of forget
sets); on the command line ``--config.seeds=0,1`` and ``--config.forget="sneaker;sneaker,bag"``
(``;`` separates forget sets). Every experiment uses seeds 0, 1, 2 (``main``: 0), the same for
every row. AC's and HAC's settings are their registered defaults
(``hac_jax/unlearning/ac.py``, ``hac.py``: the sweep's choice, docs/SWEEP.md), listed in
``config.method_overrides`` so that each can be changed from the command line
(``--config.method_overrides.hac.lambda_n=5``); the baselines run with the common ``steps`` /
``lr`` and are not tuned. Runs are cached in ``cache_dir``, so
experiments that share a run (E1's HAC is E2's k = 1 and E3's full HAC) compute it once.
"""

import ml_collections
from ml_collections.config_dict import placeholder

from experiments.configs.common import data_config, distributed_config, model_switches
from hac_jax.config_utils import parse_arg
from hac_jax.report import HIERARCHY_COLUMNS
from hac_jax.unlearning import get_method

MODELS = ("clip", "meru")
EXPERIMENTS = ("e1", "e2", "e3", "e4", "main")
# The methods with a tuned default (docs/SWEEP.md); the others run with the common loop settings.
TUNED = ("ac", "hac")


def tuned_settings(name: str) -> dict:
    """A tuned method's whole default: its registered loop settings (lr, steps) and options."""
    method = get_method(name)
    return {**method.loop, **method.defaults}


# What ac-matched takes from HAC's default (the settings the two methods share).
SHARED_WITH_HAC = ("lr", "steps", "pos_target", "pos_margin", "forget_negatives")

# E3's ablations: a row name -> the method it runs and the options that differ.
VARIANTS = {
    "hac-ec": dict(method="hac", lambda_ec=0.0),  # without entailment calibration
    "hac-norm": dict(method="hac", lambda_n=0.0),  # without norm regularization
    "hac-pos": dict(method="hac", beta=0.0),  # without positive calibration
    "hac-ent": dict(method="hac", lambda_ent0=0.0),  # without the retain pairs' entailment loss
    # without both terms of HAC's own (entailment calibration and norm regularization)
    "hac-ec-norm": dict(method="hac", lambda_ec=0.0, lambda_n=0.0),
    # The sweep set alpha = 0 (no negative calibration); the ablation adds it back.
    # with negative calibration (alpha = 1), which needs the forget pairs in the InfoNCE
    "hac+neg": dict(method="hac", alpha=1.0, forget_negatives=True),
    "hac-push": dict(method="hac", parent_policy="push"),  # the forgotten image leaves the parent
    "hac-keep": dict(method="hac", parent_policy="keep"),  # ... or stays in it (stages 1-3)
    # AC with HAC's shared settings and budget: the like-for-like comparison on MERU that
    # isolates HAC's own terms (entailment calibration, norm regularization)
    "ac-matched": dict(method="ac", **{k: tuned_settings("hac")[k] for k in SHARED_WITH_HAC}),
}

_METHODS = {
    ("e1", "clip"): ["retrain", "ac", "ft", "ga", "negrad", "l1_sparse"],
    ("e1", "meru"): ["retrain", "hac", "ac", "ac-matched", "ft", "ga", "negrad", "l1_sparse"],
    ("e2", "clip"): ["retrain", "ac"],
    ("e2", "meru"): ["retrain", "hac", "ac", "ac-matched"],
    ("e3", "meru"): [
        "retrain",
        "hac",
        "hac-ec",
        "hac-norm",
        "hac-ec-norm",
        "hac-ent",
        "hac-pos",
        "hac+neg",
        "hac-push",
        "hac-keep",
        "ac",
        "ac-matched",
    ],
    ("e4", "clip"): ["ac"],
    ("e4", "meru"): ["hac", "hac-keep", "hac-push", "ac"],
    ("main", "clip"): ["retrain", "ac", "ft", "ga"],
    ("main", "meru"): ["retrain", "hac", "ac", "ft", "ga"],
}
# The reported concepts, fixed before tuning (the sweep tunes on sandal and coat, never these):
# E1 one concept from each group; E2 nested sets of k = 1, 2, 3, 5.
E1_FORGET = [["sneaker"], ["trouser"], ["dress"], ["pullover"], ["bag"]]
E2_FORGET = [
    ["sneaker"],
    ["sneaker", "trouser"],
    ["sneaker", "trouser", "bag"],
    ["sneaker", "trouser", "bag", "pullover", "dress"],
]


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The unlearning config for ``arg = "<clip|meru>[,smoke][,data=<fashion_mnist|shapes>]"``."""
    arg = parse_arg(
        arg,
        positional=("model",),
        model="meru",
        exp="e1",
        smoke=False,
        data="fashion_mnist",
    )
    if arg.model not in MODELS:
        raise ValueError(
            f"unknown model {arg.model!r} in the config argument; choose from {MODELS}"
        )
    if arg.exp not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {arg.exp!r}; choose from {EXPERIMENTS}")
    if (arg.exp, arg.model) not in _METHODS:
        raise ValueError(f"experiment {arg.exp} ablates HAC and runs on meru only")

    config = ml_collections.ConfigDict()
    config.model = arg.model  # must match the kind of the pretrained model
    # a save_pretrained / converted directory or a .pth (default: the README's pretraining run)
    config.pretrained = f"runs/{arg.model}_fmnist/pretrained"
    # compute switches of the loaded model and of Retrain (experiments/configs/common.py;
    # --config.model_switches.attention=xla); unset, the model computes as it was saved
    config.model_switches = model_switches()
    # forget sets (lists of concepts); on the command line ";" separates sets, "," concepts
    config.forget = {"e1": E1_FORGET, "e2": E2_FORGET}.get(arg.exp, [["sneaker"]])
    config.methods = list(_METHODS[(arg.exp, arg.model)])  # rows: methods, variants, retrain
    # group- and root-level captions of forget images: "exclude" (in no loss term), "retain"
    # or "forget" (hac_jax.data.forget); the audits use class-level captions only
    config.group_captions = "exclude"
    config.seeds = [0] if arg.exp == "main" else [0, 1, 2]
    # Loop arguments of rows without their own (the baselines).
    config.steps = 100
    config.batch_size = 64
    config.lr = 1e-5
    config.method_overrides = {name: tuned_settings(name) for name in TUNED}
    config.variants = {k: dict(v) for k, v in VARIANTS.items()}
    # Retrain: the pretraining config of the original model (default: config.json beside the
    # pretrained export) on the retain classes, one cached run per forget set and seed.
    config.retrain = ml_collections.ConfigDict(dict(config=placeholder(str), dir="runs/retrain"))
    config.cache_dir = "runs/unlearn_cache"  # finished runs, shared by the experiments
    config.distributed = distributed_config()  # several JAX processes (README "Many hosts")
    config.report = True
    # report columns (comma-separated metric names; empty: hac_jax.report.DEFAULT_COLUMNS)
    config.report_columns = ",".join(HIERARCHY_COLUMNS) if arg.exp == "e4" else ""
    config.title = f"{arg.exp.upper()} unlearning on {arg.model.upper()}"
    config.data = data_config(arg.data, smoke=arg.smoke)  # experiments/configs/common.py
    config.eval = ml_collections.ConfigDict(dict(batch_size=256))
    if arg.smoke:
        config.steps = 4
        for over in config.method_overrides.values():
            over.steps = 4
        config.seeds = [0]
        config.cache_dir = ""  # inside the workdir
        config.retrain.dir = ""
        config.batch_size = 8
        config.eval.batch_size = 32
    return config
