"""Contrastive pretraining of CLIP / MERU (one loop for both; the loss comes from the model kind).

``train(config, workdir)`` runs the whole job described by an ``ml_collections`` config (see
``experiments/configs/pretrain.py``):

1. checks the config and opens the data *before* any compute (unknown model or arch, bad keys and
   a missing data directory fail at once);
2. builds the mesh (``data`` axis, optional ``model`` axis), initialises the parameters directly
   onto their shardings and the optimizer state next to them;
3. resumes from the newest checkpoint in ``<workdir>/checkpoints`` (params, optimizer state,
   step, rng and the data iterator position), so an interrupted run continues exactly;
4. trains with a jitted step (global batch sharded on ``data``; the scalar clamps are projected
   after every update), logging to stdout and ``<workdir>/metrics.jsonl``;
5. prints a zero-shot report on the test split, then saves the final parameters with the model
   config in ``<workdir>/pretrained`` (the format of ``hac_jax.models.load_pretrained``); the
   export comes last and marks the run finished.

A run killed at any moment (SIGKILL included) and started again with the same command ends as an
uninterrupted one: every file is written whole or not at all (checkpoints by orbax, the rest by
:mod:`hac_jax.files`), leftovers of interrupted writes are removed on the restart, and the
metrics log is cut back to the checkpoint the run resumes from.

The same command runs as several JAX processes (one per host, or several on one machine; see
:func:`hac_jax.training.sharding.maybe_initialize_distributed` and the README's "Many hosts"):
each reads its own share of every batch, all of them save and restore the checkpoints, and only
process 0 writes the logs, the fingerprint, the report and the export.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import grain
import jax
import jax.numpy as jnp
import ml_collections
import optax

from hac_jax import data as hdata
from hac_jax.eval import zero_shot
from hac_jax.files import remove_leftovers, write_text
from hac_jax.training import checkpointing, driver, optim, progress, sharding

__all__ = [
    "MODEL_KINDS",
    "Job",
    "TrainResult",
    "export_pretrained",
    "jit_train_step",
    "prepare",
    "run",
    "zero_shot_report",
    "build_model_config",
    "make_train_step",
    "train",
    "validate_config",
]

MODEL_KINDS = ("clip", "meru")
_BATCH_KEYS = ("image", "tokens")


# ----------------------------------------------------------------------------------------------
# Set-up
# ----------------------------------------------------------------------------------------------


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Raises ``ValueError`` for settings that cannot work, before anything is built."""
    kind = config.model.kind
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model {kind!r}; choose one of {list(MODEL_KINDS)}")
    if config.total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {config.total_steps}")
    if config.batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {config.batch_size}")
    if config.data.name not in hdata.DATASETS:
        raise ValueError(
            f"unknown data set {config.data.name!r}; choose one of {list(hdata.DATASETS)}"
        )
    if config.ckpt.every <= 0:
        raise ValueError(f"ckpt.every must be positive, got {config.ckpt.every}")


def build_model_config(config: ml_collections.ConfigDict) -> Any:
    """The ``ModelConfig`` of ``config.model`` (kind, named arch, overrides); an unset
    ``model.image_size`` follows the data (the side of the images ``config.data`` stores)."""
    from hac_jax import models
    from hac_jax.data.datasets import stored_image_size

    overrides = config.model.to_dict()
    if overrides.get("image_size") is None:
        overrides["image_size"] = stored_image_size(config.data)
    return models.model_config(**overrides)


# ----------------------------------------------------------------------------------------------
# State and step
# ----------------------------------------------------------------------------------------------


def make_train_step(model: Any, model_cfg: Any, tx: optax.GradientTransformation, schedule: Any):
    """``step(state, batch) -> (state, metrics)`` (not jitted).

    ``state = {"step", "params", "opt_state", "rng"}``; ``batch = {"image", "tokens"}``. The
    update is followed by the scalar-clamp projection (``clamp_scalars``). ``metrics`` holds the
    loss and its terms on the batch (before the update), the learning rate, the gradient norm and
    the model scalars (``logit_scale``, ``curv``, ``visual_alpha``, ``textual_alpha``: values at
    use) after the update.
    """
    from hac_jax.models import clamp_scalars, scalars_at_use
    from hac_jax.models.losses import model_loss

    loss_fn = model_loss(model_cfg)

    def step(state, batch):
        def loss_of(params):
            out = model.apply({"params": params}, batch["image"], batch["tokens"])
            loss, metrics = loss_fn(out)
            return loss, metrics

        (loss, metrics), grads = jax.value_and_grad(loss_of, has_aux=True)(state["params"])
        params, opt_state, update_metrics = optim.gradient_update(
            state, grads, tx, schedule, lambda p: clamp_scalars(p, model_cfg)
        )
        # The loss's own scalars (values at use before the update) are superseded by the values
        # after the update and its projection.
        metrics = {
            **metrics,
            "loss": loss,
            **update_metrics,
            **scalars_at_use(params, model_cfg),
        }
        new_state = {
            "step": state["step"] + 1,
            "params": params,
            "opt_state": opt_state,
            "rng": state["rng"],
        }
        return new_state, metrics

    return step


def jit_train_step(job: Job, shardings: Any):
    """The jitted :func:`make_train_step` of ``job``: state on ``shardings``, batch split on
    ``data``, metrics replicated. With ``config.donate`` (the default) the state's buffers are
    donated to the new state, so a step holds one copy of parameters and optimizer state instead
    of two, and the state passed in is deleted."""
    return jax.jit(
        make_train_step(job.model, job.model_cfg, job.tx, job.schedule),
        in_shardings=(shardings, sharding.batch_sharding(job.mesh)),
        out_shardings=(shardings, sharding.replicated(job.mesh)),
        donate_argnums=0 if job.config.get("donate", True) else (),
    )


# Config entries that do not change what a run computes: where it logs and how often, how it
# checkpoints, what it evaluates afterwards, how many processes share it, whether the step
# reuses its input buffers (the step's program records that), where files live (their content
# is fingerprinted instead), and the class filter (recorded as the class ids it resolves to). The
# model's input size, set or resolved from the data, is fingerprinted in the compiled init and
# step instead.
NON_DETERMINING_KEYS = (
    "log_every",
    "ckpt",
    "eval",
    "distributed",
    "donate",
    "num_devices",
    "model.image_size",
    "data.name",
    "data.data_dir",
    "data.source_dir",
    "data.path",
    "data.root",
    "data.max_examples",
    "data.worker_count",
    "data.test_split",
    "data.exclude_classes",
    "data.shapes",
)


def _without(config: Mapping[str, Any], dotted: Sequence[str]) -> dict[str, Any]:
    out = json.loads(json.dumps(config, default=str))
    for key in dotted:
        *parents, last = key.split(".")
        node = out
        for p in parents:
            node = node.get(p, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(last, None)
    return out


def run_fingerprint(job: Job) -> dict[str, Any]:
    """What determines a pretraining run's result, each part fingerprinted
    (:mod:`hac_jax.fingerprint`): the settings (the config without
    :data:`NON_DETERMINING_KEYS`), the classes trained on, the data's content, the compiled
    initialisation and train step (StableHLO) and the first global batch (as one process reads
    it, so that every process of a run computes the same key). ``key`` hashes them all: equal
    keys mean the same computation on the same data."""
    from hac_jax import fingerprint as fp

    config = job.config
    rng = jax.random.PRNGKey(config.seed)
    init_rng, _ = jax.random.split(rng)
    init_params, _ = driver.init_fns(job.model, job.model_cfg, job.tx)
    abstract = jax.eval_shape(init_params, init_rng)
    shardings = driver.state_shardings(abstract, job.tx, job.mesh, _sharding_rules(config))
    if jax.process_count() == 1:
        first = job.loader[0]
    else:
        whole = grain.sharding.NoSharding()
        first = _train_loader(config, job.data, job.model_cfg, job.train_classes, whole)[0]
    abstract_state = {
        "step": jax.ShapeDtypeStruct((), jnp.int32),
        "params": abstract,
        "opt_state": jax.eval_shape(job.tx.init, abstract),
        "rng": jax.eval_shape(lambda r: jax.random.split(r)[1], rng),
    }
    abstract_batch = {
        k: jax.ShapeDtypeStruct((config.batch_size, *first[k].shape[1:]), first[k].dtype)
        for k in _BATCH_KEYS
    }
    parts = {
        "settings": fp.settings_fingerprint(_without(config.to_dict(), NON_DETERMINING_KEYS)),
        "train_classes": "all" if job.train_classes is None else list(job.train_classes),
        "data": fp.data_fingerprint(job.data),
        "init": fp.program_fingerprint(
            jax.jit(init_params, out_shardings=shardings["params"]).lower(init_rng)
        ),
        "step": fp.program_fingerprint(
            jit_train_step(job, shardings).lower(abstract_state, abstract_batch)
        ),
        "first_batch": fp.batch_fingerprint({k: first[k] for k in _BATCH_KEYS}),
    }
    return {"key": fp.combine(parts), **parts}


# ----------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class TrainResult:
    """What a run produced: final parameters, model config, last step, the logged training
    records of this call, the zero-shot result (if evaluated) and the export directory."""

    params: Any
    model_cfg: Any
    step: int
    history: list[dict[str, Any]]
    zero_shot: zero_shot.ZeroShotResult | None
    export_dir: str | None


def _config_json(config: ml_collections.ConfigDict) -> str:
    return json.dumps(config.to_dict(), indent=2, sort_keys=True, default=str)


@dataclasses.dataclass
class Job:
    """Everything :func:`run` needs, built and checked by :func:`prepare` (no parameters yet)."""

    config: ml_collections.ConfigDict
    workdir: str
    data: hdata.HierDataset
    model_cfg: Any
    model: Any
    mesh: jax.sharding.Mesh
    loader: hdata.Loader
    tx: optax.GradientTransformation
    schedule: optax.Schedule
    train_classes: tuple[int, ...] | None = None  # None: every class


def prepare(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> Job:
    """Checks the config, opens the data and builds model, mesh, loader and optimizer.

    Cheap (no parameter is initialised): every configuration error surfaces here, as a
    ``ValueError`` / ``FileNotFoundError`` with a one-line message, before training starts.
    """
    validate_config(config)
    sharding.maybe_initialize_distributed(**sharding.distributed_options(config))
    workdir = os.path.abspath(os.fspath(workdir))
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise NotADirectoryError(f"workdir {workdir!r} is a file")
    model_cfg = build_model_config(config)
    data = sharding.main_process_first(
        "pretrain: data prepared", lambda: hdata.load_data(config.data)
    )
    n_dev = config.get("num_devices")
    if n_dev is not None and not 0 < n_dev <= jax.device_count():
        raise ValueError(f"num_devices must be in [1, {jax.device_count()}], got {n_dev}")
    if n_dev is not None and n_dev != jax.device_count() and jax.process_count() > 1:
        raise ValueError(
            f"num_devices={n_dev} would leave processes without devices; with "
            f"{jax.process_count()} processes every device takes part (leave num_devices unset)"
        )
    mesh = sharding.make_mesh(
        [tuple(a) for a in config.mesh], jax.devices()[:n_dev] if n_dev else None
    )
    n_data = mesh.shape[sharding.DATA_AXIS]
    if config.batch_size % n_data:
        raise ValueError(
            f"batch_size {config.batch_size} is not divisible by the data axis ({n_data} devices)"
        )
    from hac_jax.models import build_model

    model = build_model(model_cfg)
    train_classes = _train_classes(config.data, data.hierarchy)
    loader = _train_loader(config, data, model_cfg, train_classes)
    from hac_jax.models import param_shapes

    abstract = param_shapes(model_cfg)
    tx, schedule = optim.make_optimizer(config.optim, abstract, config.total_steps)
    # Check the sharding rules against the real shapes now rather than after data loading.
    sharding.param_shardings(abstract, mesh, _sharding_rules(config))
    return Job(config, workdir, data, model_cfg, model, mesh, loader, tx, schedule, train_classes)


def run(job: Job, *, stop_after: int | None = None) -> TrainResult:
    """Trains (resuming from the newest checkpoint of ``job.workdir``), then evaluates and
    exports when ``config.total_steps`` is reached.

    Every process of a multi-process run calls it; they return once the export is written.

    Args:
      job: from :func:`prepare`.
      stop_after: stop (with a checkpoint) once this step is reached, as if interrupted; the
        schedule still spans ``config.total_steps``.
    """
    config, workdir, mesh = job.config, job.workdir, job.mesh
    is_main = sharding.is_main_process()
    fingerprint = run_fingerprint(job)
    fp_path = os.path.join(workdir, FINGERPRINT_FILE)
    old = _read_json(fp_path)
    if old is not None and old.get("key") != fingerprint["key"]:
        if _exported_step(os.path.join(workdir, "pretrained")) == config.total_steps:
            # A finished run of other settings or code: keep it as it is (downstream caches key
            # on its parameters), and say so.
            if is_main:
                print(
                    f"[train] note: {workdir} holds a finished run computed differently "
                    f"({FINGERPRINT_FILE}: {_differing(old, fingerprint)}); kept as it is",
                    flush=True,
                )
            fingerprint = old
        else:
            raise ValueError(
                f"workdir {workdir!r} holds an unfinished run of other settings or code "
                f"({FINGERPRINT_FILE} differs in {_differing(old, fingerprint)}); use a fresh "
                "workdir"
            )
    if is_main:
        os.makedirs(workdir, exist_ok=True)
        # Temporary files and export folders that a killed run left half-written.
        remove_leftovers(workdir, (".tmp_*", ".pretrained.tmp-*"))
        write_text(os.path.join(workdir, "config.json"), _config_json(config))
        write_text(fp_path, json.dumps(fingerprint, indent=1, sort_keys=True) + "\n")
    state, shardings = driver.create_train_state(
        job.model,
        job.model_cfg,
        job.tx,
        jax.random.PRNGKey(config.seed),
        mesh,
        _sharding_rules(config),
    )
    data_iter = iter(job.loader)
    ckpt = checkpointing.Checkpointer(
        os.path.join(workdir, "checkpoints"), save_every=config.ckpt.every, keep=config.ckpt.keep
    )
    state, start = driver.resume(ckpt, state, data_iter)
    if is_main and 0 < start < config.total_steps:
        print(f"[train] resumed from step {start} in {workdir}", flush=True)
    export = os.path.join(workdir, "pretrained")
    if start >= config.total_steps and _exported_step(export) == config.total_steps:
        # A finished run: leave its export untouched (its files identify the model to caches
        # downstream) and do not evaluate it again.
        ckpt.close()
        if is_main:
            print(f"[train] complete at step {start}; exported model: {export}", flush=True)
        return TrainResult(
            params=state["params"],
            model_cfg=job.model_cfg,
            step=start,
            history=[],
            zero_shot=None,
            export_dir=export,
        )

    end = config.total_steps if stop_after is None else min(stop_after, config.total_steps)
    bar = progress.Progress(
        config.total_steps,
        workdir=workdir,
        initial_step=start,
        log_every=config.log_every,
        images_per_step=config.batch_size,
        is_main=is_main,
    )
    state, history = driver.run_steps(
        jit_train_step(job, shardings),
        state,
        data_iter,
        mesh=mesh,
        start=start,
        end=end,
        batch_keys=_BATCH_KEYS,
        progress=bar,
        ckpt=ckpt,
        ckpt_every=config.ckpt.every,
    )

    result = TrainResult(
        params=state["params"],
        model_cfg=job.model_cfg,
        step=max(start, end),
        history=history,
        zero_shot=None,
        export_dir=None,
    )
    if end < config.total_steps:
        return result
    # The export is written last: its presence marks a finished run, so a run killed during the
    # evaluation evaluates again when restarted.
    params = sharding.host_values(state["params"])
    if config.eval.zero_shot:
        result.zero_shot = zero_shot_report(job.model, params, job.model_cfg, job.data, config, bar)
    if is_main:
        export_pretrained(params, job.model_cfg, workdir, end)
    sharding.sync_processes("pretrain: exported")
    result.export_dir = export
    return result


def train(
    config: ml_collections.ConfigDict, workdir: str | os.PathLike, *, stop_after: int | None = None
) -> TrainResult:
    """Runs (or resumes) the pretraining job of ``config`` in ``workdir``:
    ``run(prepare(config, workdir), stop_after=stop_after)``.

    ``workdir`` receives ``checkpoints/``, ``metrics.jsonl``, ``config.json`` and
    ``pretrained/``.
    """
    return run(prepare(config, workdir), stop_after=stop_after)


def _train_loader(
    config: ml_collections.ConfigDict,
    data: hdata.HierDataset,
    model_cfg: Any,
    train_classes: tuple[int, ...] | None,
    shard_options: grain.sharding.ShardOptions | None = None,
) -> hdata.Loader:
    """The training batches: this process's share of every global batch (by default), or whole
    global batches with ``shard_options=grain.sharding.NoSharding()``."""
    return hdata.make_loader(
        data,
        config.data.train_split,
        batch_size=config.batch_size,
        seed=config.seed,
        classes=train_classes,
        caption_levels=_level_weights(config.data),
        context_length=model_cfg.text.context_length,
        image_size=model_cfg.vision.image_size,  # resized only where the data differ
        shard_options=shard_options,
        worker_count=config.data.get("worker_count", 0),
    )


def _train_classes(cfg: ml_collections.ConfigDict, hierarchy: Any) -> tuple[int, ...] | None:
    """The class ids to train on: all (``None``) unless ``data.exclude_classes`` names concepts
    to leave out, which is how Retrain (pretraining on the retain set only) is run."""
    exclude = cfg.get("exclude_classes") or ()
    if isinstance(exclude, str):
        exclude = [e.strip() for e in exclude.split(",") if e.strip()]
    if not exclude:
        return None
    _, keep = hierarchy.split_classes(list(exclude))  # one-line errors for bad names / all
    return keep


def _sharding_rules(config: ml_collections.ConfigDict) -> list[tuple[str, tuple]]:
    return [(r, tuple(spec)) for r, spec in config.get("sharding_rules", [])]


def _level_weights(cfg: ml_collections.ConfigDict) -> dict[str, float] | None:
    levels = cfg.get("caption_levels")
    return None if levels is None else dict(levels)


FINGERPRINT_FILE = "fingerprint.json"


def _read_json(path: str) -> Any:
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def _differing(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    return sorted(k for k in set(a) | set(b) if k != "key" and a.get(k) != b.get(k))


def _exported_step(export_dir: str) -> int | None:
    """The training step recorded in an export's ``convert_info.json`` (``None``: no export)."""
    path = os.path.join(export_dir, "convert_info.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        step = json.load(f).get("step")
    return int(step) if step is not None else None


def export_pretrained(params: Any, model_cfg: Any, workdir: str, step: int) -> str:
    """Writes the final parameters + model config to ``<workdir>/pretrained`` with
    ``hac_jax.models.save_pretrained`` (the converted-checkpoint format that
    ``load_pretrained`` reads; written atomically)."""
    from hac_jax.models.pretrained import save_pretrained

    out = os.path.join(workdir, "pretrained")
    info = {"source": "hac_jax.training.pretrain", "step": int(step), "workdir": workdir}
    save_pretrained(out, jax.device_get(params), model_cfg, overwrite=True, info=info)
    return out


def zero_shot_report(
    model: Any,
    params: Any,
    model_cfg: Any,
    data: hdata.HierDataset,
    config: ml_collections.ConfigDict,
    bar: progress.Progress | None = None,
) -> zero_shot.ZeroShotResult:
    """Zero-shot classification on the test split, printed as a copy-paste line and logged."""
    loader = hdata.make_loader(
        data,
        config.data.test_split,
        batch_size=config.eval.batch_size,
        shuffle=False,
        num_epochs=1,
        drop_remainder=False,
        captions=False,
        image_size=model_cfg.vision.image_size,
        shard_options=grain.sharding.NoSharding(),  # every host scores the whole split
    )
    result = zero_shot.zero_shot_classify(
        model,
        jax.device_get(params),
        model_cfg,
        loader,
        hdata.class_prompts(data.hierarchy),
        class_names=list(data.hierarchy.classes),
        batch_size=config.eval.batch_size,
    )
    if jax.process_index() == 0:
        record = dict(result.metrics)
        record.update(
            {
                f"class/{n}": float(a)
                for n, a in zip(result.class_names, result.per_class_acc, strict=True)
            }
        )
        if bar is not None:
            bar.log(record, kind="eval")
        print(result.line(f"zero-shot {data.name}/{config.data.test_split}"), flush=True)
    return result
