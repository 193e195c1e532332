"""Tests of hac_jax.report on synthetic results.json files (docs/DESIGN.md "Unlearning results")."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from hac_jax import report

CLASSES = ["t-shirt/top", "trouser", "sneaker", "ankle boot"]
FORGETS = [["sneaker"], ["sneaker", "trouser"]]
SEEDS = [0, 1, 2]
ROWS = {"clip": ["original", "retrain", "ac"], "meru": ["original", "hac", "retrain"]}
EXAMPLES = {"original": 0, "retrain": 51200, "ac": 6400, "hac": 12800}
N_TEST = 40
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _nan_to_null(obj):
    if isinstance(obj, dict):
        return {k: _nan_to_null(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_nan_to_null(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _metrics(rng, model, forget_idx, row, seed):
    m = {
        "FA": float(rng.uniform(0, 1)),
        "UA": float(rng.uniform(0, 1)),
        "RA": float(rng.uniform(0, 1)),
        "TA": float(rng.uniform(0, 1)),
        "ret_i2t_R@1": float(rng.uniform(0, 1)),
        "mia_forget_nonmember": float(rng.uniform(0, 1)),
        "mia_threshold": float(rng.normal()),
        "align_gap_forget": float(rng.normal()),
        "align_gap_retain": float(rng.normal()),
        "dest_sibling": float(rng.uniform(0, 1)),
    }
    if model == "meru":
        m["dist_origin_image_forget"] = float(rng.uniform(0.5, 3))
        m["cone_own_forget"] = float(rng.uniform(0, 1))
        # Never finite in this group: the aggregate must keep it with n = 0.
        m["cone_parent_forget"] = math.nan if row == "hac" else float(rng.uniform(0, 1))
        if row == "hac" and seed == 1:
            m["FA"] = math.nan  # ignored: n(FA) = 2 for meru / hac
        if row == "hac" and seed == 2:
            m["RA"] = None
    return m


def _write_results(root, model, rng, *, drop_npz=()):
    """One runner workdir: results.json + arrays/*.npz. Returns (path, runs as written)."""
    workdir = root / f"unlearn_{model}"
    (workdir / "arrays").mkdir(parents=True)
    runs = []
    for fi, forget in enumerate(FORGETS):
        ids = [CLASSES.index(f) for f in forget]
        for row in ROWS[model]:
            for seed in [0] if row == "original" else SEEDS:
                rel = f"arrays/{row}__{'+'.join(forget)}__s{seed}.npz"
                labels = rng.integers(0, len(CLASSES), size=N_TEST)
                arrays = {
                    "alignment_matrix": rng.normal(size=(len(CLASSES), len(CLASSES))),
                    "is_forget": np.isin(labels, ids),
                    "labels": labels,
                    "dest_top1_count": rng.integers(0, 5, size=6),
                    "concept_names": np.array(CLASSES + ["footwear", "clothing"]),
                }
                if model == "meru":
                    arrays["dist_origin_image"] = rng.uniform(0.5, 3, size=N_TEST)
                    arrays["dist_origin_text"] = rng.uniform(0.2, 2, size=N_TEST)
                if (row, fi, seed) not in drop_npz:
                    np.savez(workdir / rel, **arrays)
                runs.append(
                    {
                        "forget": forget,
                        "forget_class_ids": ids,
                        "row": row,
                        "method": row,
                        "seed": seed,
                        "metrics": _metrics(rng, model, fi, row, seed),
                        "steps": 0 if row == "original" else 200 + 10 * seed,
                        "seconds": 0.0 if row == "original" else float(rng.uniform(5, 50)),
                        "examples": EXAMPLES[row] + (0 if row == "original" else 128 * seed),
                        "arrays": rel,
                    }
                )
    data = {
        "model": model,
        "pretrained": f"/abs/{model}/pretrained",
        "config": {"steps": 200, "lr": 1e-5},
        "seeds": SEEDS,
        "forget_sets": FORGETS,
        "class_names": CLASSES,
        "runs": runs,
    }
    path = workdir / "results.json"
    path.write_text(json.dumps(_nan_to_null(data), indent=2))
    return str(path), runs


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("results")
    rng = np.random.default_rng(0)
    # meru first on the command line: the report still lists clip before meru.
    meru_path, meru_runs = _write_results(
        tmp_path,
        "meru",
        rng,
        drop_npz={("hac", 0, 0)},  # seed 1 stands in for seed 0
    )
    clip_path, clip_runs = _write_results(
        tmp_path,
        "clip",
        rng,
        drop_npz={("ac", 1, s) for s in SEEDS},  # every ac run of k=2 lacks arrays
    )
    return {"paths": [meru_path, clip_path], "runs": {"meru": meru_runs, "clip": clip_runs}}


@pytest.fixture(scope="module")
def written(two_models, tmp_path_factory):
    """One full report shared by the tests that read it (rendering dominates the run time)."""
    out_dir = tmp_path_factory.mktemp("report") / "out" / "report"
    paths = report.write_report(two_models["paths"], str(out_dir), title="Synthetic")
    return out_dir, paths


def _group(agg, model, forget, row):
    (hit,) = [e for e in agg if e["model"] == model and e["forget"] == forget and e["row"] == row]
    return hit


def _raw(runs, forget, row, key):
    vals = [r["metrics"].get(key) if key in r["metrics"] else r.get(key) for r in runs]
    sel = [v for r, v in zip(runs, vals, strict=True) if r["forget"] == forget and r["row"] == row]
    return np.array([np.nan if v is None else v for v in sel], dtype=np.float64)


# ----------------------------------------------------------------------------------------------


def test_aggregate_matches_numpy(two_models):
    agg = report.aggregate(report.load_results(two_models["paths"]))
    for model, runs in two_models["runs"].items():
        for forget in FORGETS:
            for row in ROWS[model]:
                e = _group(agg, model, forget, row)
                group_runs = [r for r in runs if r["forget"] == forget and r["row"] == row]
                assert e["n"] == len(group_runs)
                assert e["k"] == len(forget)
                assert e["seeds"] == sorted(r["seed"] for r in group_runs)
                names = {m for r in group_runs for m in r["metrics"]}
                assert set(e["metrics"]) == names
                for m in names:
                    v = _raw(runs, forget, row, m)
                    v = v[np.isfinite(v)]
                    s = e["metrics"][m]
                    assert s["n"] == v.size
                    if v.size == 0:
                        assert math.isnan(s["mean"]) and math.isnan(s["std"])
                        continue
                    np.testing.assert_allclose(s["mean"], np.mean(v), rtol=1e-12)
                    expect_std = np.std(v, ddof=1) if v.size >= 2 else 0.0
                    np.testing.assert_allclose(s["std"], expect_std, rtol=1e-12, atol=0)
                for cost in ("steps", "seconds", "examples"):
                    want = np.mean([r[cost] for r in group_runs])
                    np.testing.assert_allclose(e[cost], want, rtol=1e-12)


def test_aggregate_nan_handling_and_absent_metrics(two_models):
    agg = report.aggregate(report.load_results(two_models["paths"]))
    hac = _group(agg, "meru", ["sneaker"], "hac")
    assert hac["n"] == 3
    assert hac["metrics"]["FA"]["n"] == 2  # one NaN dropped
    assert hac["metrics"]["RA"]["n"] == 2  # one null dropped
    assert hac["metrics"]["UA"]["n"] == 3
    assert hac["metrics"]["cone_parent_forget"]["n"] == 0
    assert math.isnan(hac["metrics"]["cone_parent_forget"]["mean"])
    clip_ac = _group(agg, "clip", ["sneaker"], "ac")
    assert "dist_origin_image_forget" not in clip_ac["metrics"]  # absent for clip
    assert "cone_own_forget" not in clip_ac["metrics"]
    single = _group(agg, "meru", ["sneaker"], "original")
    assert single["n"] == 1 and single["metrics"]["FA"]["std"] == 0.0


def test_aggregate_metric_selection(two_models):
    res = report.load_results(two_models["paths"])
    agg = report.aggregate(res, metrics=["RA", "nonexistent", "FA"])
    for e in agg:
        assert list(e["metrics"]) == ["RA", "FA"]


def test_aggregate_order(two_models):
    agg = report.aggregate(report.load_results(two_models["paths"]))
    got = [(e["model"], tuple(e["forget"]), e["row"]) for e in agg]
    # rows: original first, then global first appearance (meru file is read first: hac, retrain,
    # then clip's ac)
    want = [
        (model, tuple(f), row)
        for model in ("clip", "meru")
        for f in FORGETS
        for row in ("original", "hac", "retrain", "ac")
        if row in ROWS[model]
    ]
    assert got == want


def test_compute_vs_retrain(two_models):
    agg = report.aggregate(report.load_results(two_models["paths"]))
    for model, runs in two_models["runs"].items():
        for forget in FORGETS:
            retrain = np.mean(_raw(runs, forget, "retrain", "examples"))
            for row in ROWS[model]:
                e = _group(agg, model, forget, row)
                want = np.mean(_raw(runs, forget, row, "examples")) / retrain
                np.testing.assert_allclose(e["compute_vs_retrain"], want, rtol=1e-12)
    md = report.markdown_tables(agg)
    e = _group(agg, "meru", ["sneaker"], "hac")
    assert f"{100 * e['compute_vs_retrain']:.1f}%" in md
    # without a retrain row there is nothing to compare with
    res = report.load_results(two_models["paths"])
    for r in res:
        r["runs"] = [x for x in r["runs"] if x["row"] != "retrain"]
    agg2 = report.aggregate(res)
    assert all(e["compute_vs_retrain"] is None for e in agg2)
    assert "compute vs retrain" not in report.markdown_tables(agg2)


def test_markdown_known_cells(tmp_path):
    runs = [
        {
            "forget": ["sneaker"],
            "row": row,
            "seed": seed,
            "metrics": {"FA": fa, "align_gap_forget": gap},
            "steps": 100,
            "seconds": 2.0,
            "examples": ex,
        }
        for row, seed, fa, gap, ex in [
            ("ac", 0, 0.1, 0.25, 250),
            ("retrain", 0, 0.1, 0.2, 1000),
            ("original", 0, 0.9, 0.5, 0),  # listed last, reported first
            ("ac", 1, 0.2, 0.5, 250),
            ("ac", 2, 0.3, 0.75, 250),
        ]
    ]
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"model": "clip", "class_names": CLASSES, "runs": runs}))
    agg = report.aggregate(report.load_results([str(path)]))
    assert [e["row"] for e in agg] == ["original", "ac", "retrain"]
    md = report.markdown_tables(agg)
    # FA 0.1/0.2/0.3 -> 20.0 ± 10.0 percent; gaps 0.25/0.5/0.75 -> 0.500 ± 0.250 raw
    assert "| clip / ac | 20.0 ± 10.0 | 0.500 ± 0.250 | 3 | 100 | 2.0 | 25.0% |" in md
    assert "| clip / original | 90.0 | 0.500 | 1 | 100 | 2.0 | 0.0% |" in md
    assert "FA (%)" in md and "align_gap_forget |" in md
    # columns without any value in the table are dropped
    for dropped in ("UA", "RA (%)", "ret_i2t_R@1", "dest_sibling"):
        assert dropped not in md
    assert md.startswith("### Forget set: sneaker (k=1)")


def test_markdown_one_table_per_forget_set(two_models):
    agg = report.aggregate(report.load_results(two_models["paths"]))
    md = report.markdown_tables(agg)
    assert md.count("### Forget set:") == 2
    assert md.index("sneaker (k=1)") < md.index("sneaker, trouser (k=2)")
    first = md.split("### Forget set:")[1]
    assert first.index("| clip / original |") < first.index("| meru / original |")
    # a meru-only metric reads n/a on clip lines but the column stays
    assert "dist_origin_image_forget" in first
    clip_line = next(line for line in first.splitlines() if line.startswith("| clip / ac |"))
    assert "n/a" in clip_line
    e = _group(agg, "meru", ["sneaker"], "hac")
    fa = e["metrics"]["FA"]
    assert f"{100 * fa['mean']:.1f} ± {100 * fa['std']:.1f}" in first
    assert report.is_fraction("cone_own_forget") and report.is_fraction("ret_t2i_R@5")
    assert not report.is_fraction("align_gap_forget") and not report.is_fraction("mia_threshold")


def test_accuracy_by_k_pools_forget_sets_of_equal_size(tmp_path):
    rng = np.random.default_rng(3)
    values = {}
    runs = []
    for forget in (["sneaker"], ["trouser"], ["sneaker", "trouser"]):
        for seed in SEEDS:
            fa = float(rng.uniform())
            values.setdefault(len(forget), []).append(fa)
            runs.append(
                {
                    "forget": forget,
                    "row": "hac",
                    "seed": seed,
                    "metrics": {"FA": fa},
                    "steps": 1,
                    "seconds": 1.0,
                    "examples": 1,
                }
            )
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"model": "meru", "class_names": CLASSES, "runs": runs}))
    agg = report.aggregate(report.load_results([str(path)]))
    (pts,) = report.accuracy_by_k(agg, "FA").values()
    assert [p["k"] for p in pts] == [1, 2]
    for p in pts:
        v = np.array(values[p["k"]])
        assert p["n"] == v.size
        np.testing.assert_allclose(p["mean"], v.mean(), rtol=1e-12)
        np.testing.assert_allclose(p["std"], v.std(ddof=1), rtol=1e-10)
    assert report.accuracy_by_k(agg, "RA") == {}
    out = report.plot_accuracy_vs_k(agg, str(tmp_path / "acc.png"))
    assert open(out, "rb").read(8) == PNG_MAGIC


def test_write_report(two_models, written):
    out_dir, paths = written
    assert paths["markdown"] == str(out_dir / "report.md")
    names = sorted(os.path.basename(p) for p in paths["plots"])
    assert len(names) == 2 + 4 + 1  # clip: 2 align; meru: 2 align + 2 norms; accuracy vs k
    assert "accuracy_vs_k.png" in names
    assert sum(n.startswith("norms_") for n in names) == 2
    for p in paths["plots"]:
        blob = open(p, "rb").read()
        assert blob[:8] == PNG_MAGIC and len(blob) > 1000
    assert not [f for f in os.listdir(out_dir) if f.startswith(".tmp_")]
    umask = os.umask(0)
    os.umask(umask)
    for p in [paths["markdown"], paths["json"], *paths["plots"]]:
        assert os.stat(p).st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's private 0600

    md = open(paths["markdown"]).read()
    assert md.startswith("# Synthetic")
    for p in paths["plots"]:
        assert f"]({os.path.basename(p)})" in md
    assert "seeds [0, 1, 2]" in md
    assert "row 'ac' left out of the align figure" in md  # every clip ac npz of k=2 removed
    assert "hac (seed 1)" in md  # seed 0's npz is missing, the next lowest is used
    assert "hac (seed 0)" in md  # k=2 has all seeds
    assert "**FA** (percent)" in md and "compute vs retrain" in md
    results_section = md.split("## Results")[1].split("## Figures")[0]
    assert "### Distance to Retrain" in results_section  # so --tables-only prints it too
    assert report.markdown_tables(report.aggregate(report.load_results(two_models["paths"]))) in md

    with open(paths["json"]) as f:
        doc = json.load(f)
    agg = report.aggregate(report.load_results(two_models["paths"]))
    assert doc["aggregate"] == _nan_to_null(agg)
    hac = _group(doc["aggregate"], "meru", ["sneaker"], "hac")
    assert hac["metrics"]["cone_parent_forget"]["mean"] is None
    assert doc["plots"] == [os.path.basename(p) for p in paths["plots"]]


def test_plot_functions_direct(tmp_path):
    rng = np.random.default_rng(1)
    before = rng.normal(size=(4, 4))
    out = report.plot_alignment_matrices(
        before, {"ac": before + 1}, CLASSES, str(tmp_path / "a.png"), "t"
    )
    assert out == str(tmp_path / "a.png") and open(out, "rb").read(8) == PNG_MAGIC
    with pytest.raises(ValueError, match="shape"):
        report.plot_alignment_matrices(before, {"ac": before[:3]}, CLASSES, str(tmp_path / "b"), "")
    assert not (tmp_path / "b").exists()
    d = {
        "dist_origin_image": rng.uniform(size=30),
        "dist_origin_text": rng.uniform(size=30),
        "is_forget": np.arange(30) < 10,
    }
    out = report.plot_norm_histograms(d, {}, str(tmp_path / "n.png"), "t")
    assert open(out, "rb").read(8) == PNG_MAGIC
    with pytest.raises(ValueError, match="is_forget"):
        report.plot_norm_histograms({"dist_origin_image": d["dist_origin_image"]}, {}, "x.png", "")
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp_")]


def test_failed_save_leaves_no_file(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    def broken(self, fname, **kw):
        with open(fname, "wb") as f:
            f.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken)
    target = tmp_path / "a.png"
    with pytest.raises(RuntimeError):
        report.plot_alignment_matrices(np.eye(4), {}, CLASSES, str(target), "t")
    assert os.listdir(tmp_path) == []


def _write_json(path, data):
    path.write_text(json.dumps(data))
    return str(path)


def test_load_results_errors(two_models, tmp_path):
    good = json.load(open(two_models["paths"][0]))
    bad = dict(good)
    del bad["runs"]
    p = _write_json(tmp_path / "no_runs.json", bad)
    with pytest.raises(ValueError, match=r"no_runs\.json.*missing key 'runs'"):
        report.load_results([p])
    bad = json.loads(json.dumps(good))
    del bad["runs"][4]["examples"]
    p = _write_json(tmp_path / "no_ex.json", bad)
    with pytest.raises(ValueError, match=r"no_ex\.json: runs\[4\]: missing key 'examples'"):
        report.load_results([p])
    bad = json.loads(json.dumps(good))
    bad["runs"][2]["metrics"]["FA"] = "high"
    with pytest.raises(ValueError, match="metric 'FA'"):
        report.load_results([_write_json(tmp_path / "str.json", bad)])
    bad = json.loads(json.dumps(good))
    bad["runs"].append(bad["runs"][1])
    with pytest.raises(ValueError, match="second run"):
        report.load_results([_write_json(tmp_path / "dup.json", bad)])
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        report.load_results([str(tmp_path / "broken.json")])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        report.load_results([str(tmp_path / "nope.json")])
    with pytest.raises(ValueError, match="given twice"):
        report.load_results([two_models["paths"][0], two_models["paths"][0]])
    with pytest.raises(ValueError, match="no results"):
        report.load_results([])
    # bad input is caught before the output directory is made
    with pytest.raises(ValueError):
        report.write_report([str(tmp_path / "broken.json")], str(tmp_path / "never"))
    assert not (tmp_path / "never").exists()


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "hac_jax.report", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_bad_input_exit_status(two_models, tmp_path):
    good = json.load(open(two_models["paths"][0]))
    del good["class_names"]
    p = _write_json(tmp_path / "nokey.json", good)
    r = _cli(p, "--out", str(tmp_path / "o"))
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "missing key 'class_names'" in r.stderr
    r = _cli(str(tmp_path / "missing.json"), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and r.stderr.startswith("error:") and r.stderr.count("\n") == 1
    (tmp_path / "bad.json").write_text("[1, 2")
    r = _cli(str(tmp_path / "bad.json"), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "not valid JSON" in r.stderr
    assert not (tmp_path / "o").exists()


def test_cli_success_in_process(two_models, tmp_path, capsys):
    res = json.load(open(two_models["paths"][1]))  # clip, k = 1 only: one figure to render
    res["runs"] = [r for r in res["runs"] if len(r["forget"]) == 1]
    one = tmp_path / "one" / "results.json"
    one.parent.mkdir()
    os.symlink(os.path.dirname(two_models["paths"][1]) + "/arrays", one.parent / "arrays")
    one.write_text(json.dumps(res))
    out = tmp_path / "cli_out"
    status = report.main([str(one), "--out", str(out), "--title", "CLI title"])
    assert status == 0
    printed = capsys.readouterr().out
    assert printed.startswith("# CLI title")
    assert "| clip / ac |" in printed
    assert f"[report] markdown: {out / 'report.md'}" in printed
    assert f"[report] json: {out / 'report.json'}" in printed
    assert f"[report] plot: {out / 'align_0_clip_f0_sneaker.png'}" in printed
    assert printed.count("[report] plot: ") == 1  # one k: no accuracy-vs-k figure
    assert "## Skipped" not in printed


def test_a_run_shared_by_two_files_counts_once(two_models, tmp_path):
    (meru_path,) = [p for p in two_models["paths"] if "meru" in json.load(open(p))["model"]]
    data = json.load(open(meru_path))
    subset = dict(data, runs=[r for r in data["runs"] if r["row"] in ("original", "hac")])
    copy = tmp_path / "subset.json"
    _write_json(copy, subset)
    base = report.aggregate(report.load_results([meru_path]))
    both = report.aggregate(report.load_results([meru_path, str(copy)]))
    assert both == base  # the subset's runs are the same runs, not new seeds
    bad = json.loads(json.dumps(subset))
    bad["runs"][-1]["metrics"]["FA"] = 0.123456
    _write_json(copy, bad)
    with pytest.raises(ValueError, match="differs from the same run in another file"):
        report.aggregate(report.load_results([meru_path, str(copy)]))
