"""Fingerprints of what determines a run (hac_jax/fingerprint.py)."""

import importlib
import sys

import numpy as np

from hac_jax import fingerprint as fp


def test_settings_fingerprint_ignores_unset_placeholders_and_key_order():
    a = {"lr": 1e-4, "steps": 25, "extra": None, "nested": {"b": 1, "a": [1, 2], "p": None}}
    b = {"nested": {"a": (1, 2), "b": 1}, "steps": 25, "lr": 1e-4}
    assert fp.settings_fingerprint(a) == fp.settings_fingerprint(b)
    assert fp.settings_fingerprint(a) != fp.settings_fingerprint({**b, "steps": 26})
    assert fp.settings_fingerprint({"x": 1}) != fp.settings_fingerprint({"x": 1.0 + 1e-9})


def test_tree_fingerprint_sees_values_names_and_dtypes():
    tree = {"a": np.zeros(3, np.float32), "b": {"c": np.ones((2, 2), np.float32)}}
    same = {"b": {"c": np.ones((2, 2), np.float32)}, "a": np.zeros(3, np.float32)}
    assert fp.tree_fingerprint(tree) == fp.tree_fingerprint(same)
    for other in (
        {**tree, "a": np.array([0, 0, 1e-7], np.float32)},
        {**tree, "a": np.zeros(3, np.float64)},
        {"a2": tree["a"], "b": tree["b"]},
    ):
        assert fp.tree_fingerprint(other) != fp.tree_fingerprint(tree)


def test_code_fingerprint_follows_code_not_docstrings(tmp_path, monkeypatch):
    pkg = tmp_path / "fp_probe_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text('"""A package."""\n')
    mod = pkg / "rule.py"
    monkeypatch.syspath_prepend(str(tmp_path))

    def fingerprint_of(source):
        mod.write_text(source)
        for name in [n for n in sys.modules if n.startswith("fp_probe_pkg")]:
            del sys.modules[name]
        importlib.invalidate_caches()
        return fp.code_fingerprint("fp_probe_pkg"), fp.code_fingerprint("fp_probe_pkg.rule")

    base = fingerprint_of('def stop(x):\n    """Stop early."""\n    return x > 0.5\n')
    redoc = fingerprint_of(
        'def stop(x):\n    """When to stop (reworded)."""\n    return x > 0.5  # c\n'
    )
    changed = fingerprint_of('def stop(x):\n    """Stop early."""\n    return x > 0.4\n')
    assert base == redoc  # docstrings and comments are not code
    assert changed[0] != base[0] and changed[1] != base[1]
    assert base[0] != base[1]  # the package covers __init__.py too
