"""A pretraining run killed with SIGKILL and started again with the same command ends as an
uninterrupted run: the same losses, evaluation and exported parameters, and no half-written
checkpoint, export or results file.

The command runs as a real subprocess, started four times on one workdir and killed as soon as
the workdir shows the next milestone: a committed checkpoint of step 3 of 6 (killed while
training), the checkpoint of step 6 (killed in the final evaluation, before the export), the
export (killed while the run ends, if it has not ended by itself), and a last start with nothing
left to do. Before the third start the workdir also gets the leftovers that a kill in the middle
of a write leaves behind (an orbax temporary step, a temporary file, a temporary export folder),
which the restart must remove.
"""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from conftest import module_compilation_cache

from hac_jax import config_utils

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_ARG = os.path.join(REPO, "experiments", "configs", "pretrain.py") + ":meru,smoke,data=shapes"
RUN_TIMEOUT_S = 300
TIMING_KEYS = ("img_per_s", "s_per_step")


@pytest.fixture(scope="module", autouse=True)
def _compilation_cache():
    """The session's compilation cache (``HAC_JAX_COMPILE_CACHE``, which the subprocesses
    inherit): the runs started below load what the uninterrupted run compiled here."""
    with module_compilation_cache(os.environ["HAC_JAX_COMPILE_CACHE"]):
        yield


def _command(workdir, data_dir):
    return [
        sys.executable,
        "-m",
        "experiments.pretrain",
        f"--config={CONFIG_ARG}",
        f"--workdir={workdir}",
        f"--config.data.data_dir={data_dir}",
    ]


def _run_until(command, done, what, log, *, may_end=False):
    """Starts ``command`` (output to the file ``log``) and kills it with SIGKILL as soon as
    ``done()`` is true; returns its output. Fails if the process ends first, unless ``may_end``
    (then it must end successfully)."""
    with open(log, "w") as out:
        proc = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + RUN_TIMEOUT_S
    try:
        while not done() and proc.poll() is None:
            assert time.monotonic() < deadline, f"no {what} after {RUN_TIMEOUT_S} s"
            time.sleep(0.005)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    ended_itself = proc.returncode != -signal.SIGKILL
    assert not ended_itself or (may_end and proc.returncode == 0), (
        f"the run ended (status {proc.returncode}) before {what}:\n{log.read_text()}"
    )
    return log.read_text()


def _metrics_lines(workdir):
    """Every line of ``metrics.jsonl`` as JSON (fails on a line cut short)."""
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def _records(workdir):
    from hac_jax.training import progress

    return [
        {k: v for k, v in r.items() if k not in TIMING_KEYS} for r in progress.read_metrics(workdir)
    ]


def _plant_leftovers(workdir):
    """What kills in the middle of writes leave: an orbax step still being written, a temporary
    file of an atomic write, a temporary export folder."""
    orbax_tmp = workdir / "checkpoints" / "9.orbax-checkpoint-tmp-1700000000"
    orbax_tmp.mkdir()
    (orbax_tmp / "partial").write_bytes(b"\0" * 10)
    (workdir / ".tmp_3f9a2b.json").write_text('{"half": ')
    export_tmp = workdir / ".pretrained.tmp-0a1b2c3d4e5f"
    export_tmp.mkdir()
    (export_tmp / "config.json").write_text("{")
    return [orbax_tmp, workdir / ".tmp_3f9a2b.json", export_tmp]


def test_sigkilled_run_restarted_ends_as_an_uninterrupted_run(tmp_path):
    from hac_jax.models import load_pretrained
    from hac_jax.training import pretrain

    data_dir = str(tmp_path / "tfds")
    config = config_utils.load_config(CONFIG_ARG)
    config.data.data_dir = data_dir
    assert (config.total_steps, config.ckpt.every) == (6, 3)
    reference = pretrain.train(config, tmp_path / "uninterrupted")

    workdir = tmp_path / "killed"
    command = _command(workdir, data_dir)
    ckpt = workdir / "checkpoints"
    export = workdir / "pretrained"

    # 1. Killed while training, once step 3 is checkpointed.
    _run_until(command, lambda: (ckpt / "3").is_dir(), "checkpoint 3", tmp_path / "run1.log")
    assert not export.exists()
    assert [r["step"] for r in _metrics_lines(workdir)][:3] == [1, 2, 3]

    # 2. Restarted, resumes at step 3; killed after the last checkpoint, while evaluating.
    out = _run_until(command, lambda: (ckpt / "6").is_dir(), "checkpoint 6", tmp_path / "run2.log")
    assert "resumed from step 3" in out
    assert not export.exists()

    # 3. Restarted over the leftovers of interrupted writes: it evaluates and exports, and is
    # killed as soon as the export is there (unless it has ended by then).
    leftovers = _plant_leftovers(workdir)
    out = _run_until(
        command, lambda: export.is_dir(), "the export", tmp_path / "run3.log", may_end=True
    )
    assert "resumed" not in out  # the checkpoint of step 6 is the last step

    # 4. Started once more: a finished run, nothing to do.
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "complete at step 6" in done.stdout

    # The same records (every step once, one evaluation), the same exported parameters.
    assert _records(workdir) == _records(tmp_path / "uninterrupted")
    assert [r["step"] for r in _records(workdir) if r["kind"] == "train"] == [1, 2, 3, 4, 5, 6]
    exported = load_pretrained(str(export))
    assert exported.config == reference.model_cfg
    for (path, a), b in zip(
        jax.tree_util.tree_leaves_with_path(exported.params),
        jax.tree.leaves(jax.device_get(reference.params)),
        strict=True,
    ):
        np.testing.assert_array_equal(np.asarray(a), b, err_msg=str(path))

    # Nothing half-written is left: no temporary step, file or export folder; every file whole.
    for path in leftovers:
        assert not path.exists(), path
    assert sorted(os.listdir(ckpt)) == ["3", "6"]
    assert not [n for n in os.listdir(workdir) if n.startswith(".")]
    for name in ("config.json", "fingerprint.json"):
        json.loads((workdir / name).read_text())
    assert (workdir / "fingerprint.json").read_text() == (
        tmp_path / "uninterrupted" / "fingerprint.json"
    ).read_text()
