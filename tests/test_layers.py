"""The house rules, measured on the code: imports run downhill through the layers below, there
is no import circle, and no code outside the models and the geometry branches on a model kind
(the design in docs/DESIGN.md)."""

from __future__ import annotations

import ast
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Lowest first. A module may import its own layer's modules of the same package and anything in
# a lower layer, nothing above.
LAYERS: tuple[tuple[str, ...], ...] = (
    (
        "hac_jax",
        "hac_jax.files",
        "hac_jax.fingerprint",
        "hac_jax.config_utils",
        "hac_jax.tokenizer",
    ),
    ("hac_jax.geometry",),
    ("hac_jax.models", "hac_jax.data"),
    ("hac_jax.eval",),
    ("hac_jax.training",),
    ("hac_jax.unlearning",),
    ("hac_jax.report",),
    ("experiments", "checkpoints_convert", "benchmarks"),
)
SOURCES = ("hac_jax", "experiments", "checkpoints_convert", "benchmarks")


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _unit(module: str) -> str:
    """The layer entry a module belongs to (the longest matching prefix)."""
    best = ""
    for layer in LAYERS:
        for unit in layer:
            if (module == unit or module.startswith(unit + ".")) and len(unit) > len(best):
                best = unit
    return best


def _layer(unit: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if unit in layer)


def _imports() -> dict[str, set[str]]:
    """module -> the project modules it imports (anywhere in the file, lazy imports included)."""
    graph: dict[str, set[str]] = {}
    for top in SOURCES:
        for path in sorted((ROOT / top).rglob("*.py")):
            name = _module_name(path)
            tree = ast.parse(path.read_text(), filename=str(path))
            found: set[str] = set()
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    found.update(a.name for a in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    found.add(node.module)
                    found.update(f"{node.module}.{a.name}" for a in node.names)
            graph[name] = {m for m in found if m.split(".")[0] in SOURCES}
    return graph


GRAPH = _imports()


def test_every_project_module_has_a_layer():
    assert not [m for m in GRAPH if not _unit(m)]


def test_imports_run_downhill():
    modules = set(GRAPH)
    uphill = []
    for module, targets in GRAPH.items():
        here = _unit(module)
        for target in targets:
            if target not in modules and target.rsplit(".", 1)[0] in modules:
                target = target.rsplit(".", 1)[0]  # "from pkg import name" of a non-module
            there = _unit(target)
            if not there or there == here:
                continue
            # uphill, or sideways between two library packages of one layer (models <-> data);
            # the command-line tools of the top layer may use each other's configs
            sideways = _layer(there) == _layer(here) and here.startswith("hac_jax")
            if _layer(there) > _layer(here) or sideways:
                uphill.append(f"{module} -> {target}")
    assert not uphill, "imports up or sideways between layers:\n" + "\n".join(sorted(uphill))


def test_no_import_circle_between_packages():
    edges: dict[str, set[str]] = {}
    for module, targets in GRAPH.items():
        for target in targets:
            a, b = _unit(module), _unit(target)
            if a and b and a != b:
                edges.setdefault(a, set()).add(b)
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in edges.get(node, ()):
            if state.get(nxt) == 1:
                pytest.fail("import circle: " + " -> ".join([*path, node, nxt]))
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [])


# A comparison of a kind or geometry name with a string literal ("meru", "clip", "lorentz",
# "sphere"), e.g. `cfg.kind == "meru"`, `geometry.name != "lorentz"`, `kind in ("clip", ...)`.
_KIND = re.compile(r"""(==|!=|\bin\b)\s*\(?\s*["'](meru|clip|lorentz|sphere)["']""")
_KIND_REVERSED = re.compile(r"""["'](meru|clip|lorentz|sphere)["']\s*(==|!=)""")
# Where kind-specific rules live, and the one refusal allowed elsewhere (HAC is Lorentz-only).
OWNERS = ("hac_jax/models/", "hac_jax/geometry/")
ALLOWED = {("hac_jax/unlearning/hac.py", 'if geometry.name != "lorentz":')}


def test_no_branch_on_the_model_kind_outside_models_and_geometry():
    found = []
    for top in ("hac_jax", "experiments", "checkpoints_convert"):
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel.startswith(OWNERS):
                continue
            for n, line in enumerate(path.read_text().splitlines(), 1):
                code = line.split("#", 1)[0]
                if (_KIND.search(code) or _KIND_REVERSED.search(code)) and (
                    rel,
                    line.strip(),
                ) not in ALLOWED:
                    found.append(f"{rel}:{n}: {line.strip()}")
    assert not found, "branches on the model kind:\n" + "\n".join(found)
