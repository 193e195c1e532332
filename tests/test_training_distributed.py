"""Pretraining and unlearning as two real JAX processes joined over 127.0.0.1 (4 CPU devices
each, gloo collectives), against one-process runs on 8 devices of the same configs.

The two processes are started twice with the same command: the first time they stop after the
checkpoint of step 3 (``--stop_after=3``), the second time both restore it and finish, evaluate
and export. Their per-step losses, fingerprint and exported parameters must be those of the
one-process run, and only process 0 may print or write.
"""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import module_compilation_cache

from hac_jax import config_utils

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "experiments", "configs", "pretrain.py")
CONFIG_ARG = f"{CONFIG}:meru,smoke,data=shapes"
PROCESSES = 2
DEVICES_PER_PROCESS = 4
RUN_TIMEOUT_S = 300


@pytest.fixture(scope="module", autouse=True)
def _compilation_cache():
    """The session's compilation cache (``HAC_JAX_COMPILE_CACHE``): the second start of the
    processes loads what the first compiled (process 0 only: JAX writes entries from process 0),
    and one-process runs elsewhere in the suite load what the reference run compiles here."""
    with module_compilation_cache(os.environ["HAC_JAX_COMPILE_CACHE"]):
        yield


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(args: list[str], module: str = "experiments.pretrain") -> list[tuple[int, str]]:
    """Runs ``python -m MODULE ARGS`` as the processes of one JAX run; returns ``(exit status,
    output)`` per process id."""
    port = _free_port()
    procs = []
    for pid in range(PROCESSES):
        env = {
            **os.environ,
            "XLA_FLAGS": f"--xla_force_host_platform_device_count={DEVICES_PER_PROCESS}",
            "JAX_PLATFORMS": "cpu",
            "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
            "JAX_NUM_PROCESSES": str(PROCESSES),
            "JAX_PROCESS_ID": str(pid),
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", module, *args],
                cwd=REPO,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    results = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=RUN_TIMEOUT_S)
            results.append((p.returncode, out))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    return results


def _reference_run(config):
    """The same steps in this process on one 8-device mesh: ``(job, fingerprint, [(loss,
    grad_norm)] per step, final params)``."""
    from hac_jax.training import driver, pretrain, sharding

    job = pretrain.prepare(config, "/nonexistent-unused")
    assert job.mesh.devices.size == PROCESSES * DEVICES_PER_PROCESS
    fingerprint = pretrain.run_fingerprint(job)
    state, shardings = driver.create_train_state(
        job.model, job.model_cfg, job.tx, jax.random.PRNGKey(config.seed), job.mesh
    )
    step = pretrain.jit_train_step(job, shardings)
    history = []
    for i in range(config.total_steps):
        batch = {k: job.loader[i][k] for k in ("image", "tokens")}
        state, metrics = step(state, sharding.global_batch(batch, job.mesh))
        history.append((float(metrics["loss"]), float(metrics["grad_norm"])))
    return job, fingerprint, np.array(history), jax.device_get(state["params"])


def test_two_processes_equal_one_process_on_eight_devices(tmp_path):
    from hac_jax.models import load_pretrained
    from hac_jax.training import progress

    data_dir, workdir = str(tmp_path / "tfds"), tmp_path / "run"
    config = config_utils.load_config(CONFIG_ARG)
    config.data.data_dir = data_dir
    assert config.total_steps == 6 and config.ckpt.every == 3 and config.log_every == 1
    job, ref_fingerprint, ref_history, ref_params = _reference_run(config)

    args = [f"--config={CONFIG_ARG}", f"--workdir={workdir}", f"--config.data.data_dir={data_dir}"]
    first = _launch([*args, "--stop_after=3"])
    assert [rc for rc, _ in first] == [0, 0], first
    assert os.listdir(workdir / "checkpoints") == ["3"]  # saved by both, restored below
    assert not (workdir / "pretrained").exists()
    second = _launch(args)
    assert [rc for rc, _ in second] == [0, 0], second

    (_, main_first), (_, other_first) = first
    (_, main_second), (_, other_second) = second
    assert "[train] step=3" in main_first and "[train] step=4" not in main_first
    assert "resumed from step 3" in main_second and "pretrained model:" in main_second
    for out in (other_first, other_second):  # process 1 prints no log line
        assert "[train]" not in out and "[eval]" not in out and "zero-shot" not in out, out

    # One record per step (one writer), the losses of the one-process run.
    records = progress.read_metrics(workdir, "train")
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    got = np.array([(r["loss"], r["grad_norm"]) for r in records])
    np.testing.assert_allclose(got, ref_history, rtol=1e-5)
    assert len(progress.read_metrics(workdir, "eval")) == 1

    # The same run: settings, data, first global batch and the compiled programs.
    fingerprint = json.loads((workdir / "fingerprint.json").read_text())
    assert fingerprint == ref_fingerprint

    # The exported model computes what the one-process model computes. (Parameters are not
    # compared one by one: the attention key biases get a zero gradient up to rounding noise,
    # which Adam scales to full-size steps, so their values depend on the summation order.)
    exported = load_pretrained(str(workdir / "pretrained"))
    assert exported.config == job.model_cfg
    shapes = jax.tree.map(np.shape, exported.params)
    assert shapes == jax.tree.map(np.shape, ref_params)
    batch = job.loader[0]
    got, ref = (
        job.model.apply({"params": p}, batch["image"], batch["tokens"])
        for p in (exported.params, ref_params)
    )
    for key in ("image", "text", "logit_scale", "curv"):
        np.testing.assert_allclose(got[key], ref[key], rtol=1e-5, atol=1e-6, err_msg=key)


def test_unlearning_runner_as_two_processes_equals_one_process(tmp_path):
    """``experiments.unlearn`` with HAC: the two processes compute every run together
    and process 0 alone audits, caches, writes and prints; the audited metrics are those of the
    one-process run on 8 devices."""
    from experiments import unlearn as runner
    from hac_jax.models import init_params, save_pretrained
    from hac_jax.training import pretrain

    data_dir = str(tmp_path / "tfds")
    pre_config = config_utils.load_config(CONFIG_ARG)
    pre_config.data.data_dir = data_dir
    model_cfg = pretrain.build_model_config(pre_config)
    model_dir = save_pretrained(
        tmp_path / "pre" / "pretrained", init_params(model_cfg, 3), model_cfg
    )

    def argv(workdir):
        return [
            "--config=experiments/configs/unlearn.py:meru,smoke,data=shapes",
            f"--workdir={workdir}",
            f"--config.data.data_dir={data_dir}",
            f"--config.pretrained={model_dir}",
            "--config.forget=circle",
            "--config.methods=hac",
            "--config.report=False",
        ]

    assert runner.main(argv(tmp_path / "one")) == 0
    first = _launch(argv(tmp_path / "two"), "experiments.unlearn")
    assert [rc for rc, _ in first] == [0, 0], first
    (_, main_out), (_, other_out) = first
    assert "[unlearn] hac on ['circle'], seed 0" in main_out and "results:" in main_out
    assert "[unlearn]" not in other_out and "[train]" not in other_out, other_out

    def metrics(workdir):
        results = json.loads((workdir / "results.json").read_text())
        return {r["row"]: r["metrics"] for r in results["runs"]}

    one, two = metrics(tmp_path / "one"), metrics(tmp_path / "two")
    assert sorted(two) == ["hac", "original"]
    for row, ref in one.items():
        scalars = {k: v for k, v in ref.items() if isinstance(v, (int, float))}
        assert len(scalars) > 10, row
        got = {k: two[row][k] for k in scalars}
        np.testing.assert_allclose(
            [got[k] for k in sorted(scalars)],
            [scalars[k] for k in sorted(scalars)],
            rtol=1e-4,
            atol=1e-5,
            err_msg=row,
        )


@pytest.mark.parametrize(
    "overrides,message",
    [
        (
            {"num_processes": "2", "process_id": "2", "coordinator_address": "127.0.0.1:1"},
            "error: the process id must be in [0, 2) (distributed.num_processes=2), got "
            "distributed.process_id=2",
        ),
        (
            {"num_processes": "2", "process_id": "0"},
            "error: distributed.num_processes=2 but no coordinator address",
        ),
        (
            {"coordinator_address": "127.0.0.1"},
            "error: the coordinator address must be host:port, got "
            "distributed.coordinator_address=127.0.0.1",
        ),
    ],
)
def test_inconsistent_process_settings_are_one_line_errors(
    overrides, message, tmp_path, capsys, monkeypatch
):
    from experiments import pretrain as cli

    for var in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        monkeypatch.delenv(var, raising=False)
    args = [f"--config={CONFIG_ARG}", f"--workdir={tmp_path / 'w'}"]
    args += [f"--config.distributed.{k}={v}" for k, v in overrides.items()]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1, err
    assert not (tmp_path / "w").exists()
