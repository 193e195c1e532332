"""benchmarks/bench_vs_meru.py without PyTorch MERU: argument checks, the alternation of
repeats and the ratio definitions (the benchmark itself needs a MERU checkout and torch with
timm, which the suite does not install)."""

from __future__ import annotations

import os
import sys

import pytest

from benchmarks import bench_vs_meru


@pytest.fixture
def meru_dir(tmp_path):
    os.makedirs(tmp_path / "meru" / "meru")
    (tmp_path / "meru" / "meru" / "lorentz.py").write_text("")
    return str(tmp_path / "meru")


@pytest.mark.parametrize(
    "extra,match",
    [
        (["--meru-dir", "/nonexistent"], "is not a MERU checkout"),
        (["--torch-python", "/nonexistent/python"], "is not an executable file"),
        (["sideways"], "unknown benchmark 'sideways'"),
        (["--models", "meru,vit"], "--models takes meru and/or clip"),
        (["--jax-variant", "gelu"], "model overrides are k=v pairs"),
        (["--threads", "0"], "--threads must be in"),
    ],
)
def test_bad_arguments_are_one_line_errors_before_any_work(meru_dir, extra, match, capsys):
    argv = ["--meru-dir", meru_dir, "--torch-python", sys.executable]
    with pytest.raises(SystemExit):
        bench_vs_meru.main(argv + extra)
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert match in err


class _FakeWorker:
    """Answers ``time`` with a fixed duration and records the order of the calls."""

    def __init__(self, name, seconds, calls):
        self.name, self.seconds, self.calls = name, seconds, calls

    def call(self, op, name):
        assert op == "time"
        self.calls.append((self.name, name))
        return {"s": self.seconds}


def test_repeats_alternate_and_reverse_their_order():
    calls = []
    a, b = _FakeWorker("torch", 2.0, calls), _FakeWorker("jax", 1.0, calls)
    timing = bench_vs_meru.alternate([("meru", a, "train/x"), ("ours", b, "train/x")], 3, "t")
    assert [w for w, _ in calls] == ["torch", "jax", "jax", "torch", "torch", "jax"]
    assert timing["meru"]["median_s"] == 2.0 and timing["ours"]["all_s"] == [1.0] * 3


def test_ratios_are_meru_time_over_ours():
    def t(s):
        return {"median_s": s}

    results = {
        "pairwise": {"ratios": {"pairwise_vs_meru_ratio": 0.5}},
        "train": {"batch": 32, "depth": 12, "meru": {"ratios": {"train_meru_speed_ratio": 1.5}}},
    }
    assert bench_vs_meru.ratios(results) == {
        "pairwise_vs_meru_ratio": 0.5,
        "train_meru_speed_ratio": 1.5,
    }
    results["train"]["meru"]["timing"] = {"meru": t(30.0), "ours": t(20.0), "ours[g=1]": t(15.0)}
    text = bench_vs_meru.table({"train": results["train"]})
    assert "1.50x" in text and "2.00x" in text and "[g=1]" in text
