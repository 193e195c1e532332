"""The results file's schema (hac_jax/report/results.py): what is written can be read, and a
malformed record is refused before anything is written."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

from hac_jax.report import results

CLASSES = ["t-shirt/top", "trouser", "sneaker"]


def _run(row="hac", seed=0, **recorded):
    fields = dict(
        forget=["sneaker"],
        row=row,
        seed=seed,
        metrics={"FA": 0.0, "RA": 0.84, "cone_own_forget": math.nan},
        steps=25,
        seconds=3.5,
        examples=1600,
    )
    return results.make_run(**(fields | recorded))


def test_written_results_read_back(tmp_path):
    runs = [
        _run("original", examples=0, steps=0, loop=None, arrays="arrays/o.npz"),
        _run(method="hac", method_cfg={"beta": 3.0}, forget_class_ids=[2], audit_seconds=1.25),
    ]
    data = results.make_results(
        model="meru",
        class_names=CLASSES,
        runs=runs,
        seeds=[0],
        forget_sets=[["sneaker"]],
        code_revision="abc123",
    )
    path = tmp_path / "results.json"
    assert results.write_results(path, data) == str(path)
    back = results.read_results(path)
    assert back.pop("_source") == str(path)
    assert back == data
    assert list(back)[-1] == "runs"  # what the runs share comes first
    assert back["code_revision"] == "abc123"  # keys beyond the schema are kept
    assert back["runs"][1]["audit_seconds"] == 1.25
    assert back["runs"][0]["metrics"]["cone_own_forget"] is None  # NaN is stored as null
    assert "NaN" not in path.read_text()


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("seed", "0", "'seed' must be an integer, got '0'"),
        ("forget", [], "'forget' must be a non-empty list of concept names"),
        ("row", "", "'row' must be a non-empty string"),
        ("metrics", {"FA": "high"}, "'metrics' has metric 'FA' = 'high'"),
        ("examples", "many", "'examples' must be a number or null"),
        ("forget_class_ids", ["2"], "'forget_class_ids' must be a list of integers"),
        ("loop", [], "'loop' must be an object or null"),
        ("arrays", 3, "'arrays' must be a relative path string or null"),
    ],
)
def test_make_run_refuses_a_bad_field(field, value, needle):
    with pytest.raises(ValueError, match=r"^run '\w*' on \[.*\] seed \d+: ") as info:
        _run(**{field: value})
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_make_results_refuses_a_second_run_and_write_results_writes_nothing(tmp_path):
    with pytest.raises(
        ValueError, match="a second run for forget=\\['sneaker'\\] row='hac' seed=0"
    ):
        results.make_results(model="meru", class_names=CLASSES, runs=[_run(), _run()])
    with pytest.raises(ValueError, match="'seeds' must be a list of integers"):
        results.make_results(model="meru", class_names=CLASSES, runs=[_run()], seeds="0,1")
    bad = {"model": "meru", "class_names": CLASSES, "runs": [dict(_run(), seed=True)]}
    with pytest.raises(ValueError, match=r"results\.json: runs\[0\]: 'seed' must be an integer"):
        results.write_results(tmp_path / "results.json", bad)
    assert os.listdir(tmp_path) == []


def test_read_run_arrays(tmp_path):
    data = results.make_results(
        model="clip",
        class_names=CLASSES,
        runs=[_run(arrays="arrays/a.npz"), _run(seed=1, arrays="arrays/b.npz"), _run(seed=2)],
    )
    results.write_results(tmp_path / "results.json", data)
    (tmp_path / "arrays").mkdir()
    np.savez(tmp_path / "arrays" / "a.npz", alignment_matrix=np.eye(3))
    loaded = results.read_results(tmp_path / "results.json")
    arrays, why = results.read_run_arrays(loaded, loaded["runs"][0])
    assert why == "" and np.array_equal(arrays["alignment_matrix"], np.eye(3))
    assert results.read_run_arrays(loaded, loaded["runs"][1]) == (None, "arrays/b.npz is missing")
    assert results.read_run_arrays(loaded, loaded["runs"][2]) == (None, "no arrays path")


def test_read_results_names_the_file_and_the_missing_key(tmp_path):
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"model": "meru", "runs": [_run()]}))
    with pytest.raises(ValueError, match=r"old\.json: missing key 'class_names'; is this"):
        results.read_results(path)
