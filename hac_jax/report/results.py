"""The results file of an unlearning experiment (``results.json``): written and read here only.

``experiments/unlearn.py`` builds each run with :func:`make_run`, the file with
:func:`make_results` and writes it with :func:`write_results`; the report reads files with
:func:`load_results`. Writer and reader check the same field tables (:data:`RESULTS_FIELDS`,
:data:`RUN_FIELDS`), so whatever is written can be read, and a malformed file is refused with a
one-line error naming the file, the run and the field.

One file per pretrained model, one run per (forget set, row, seed)::

    {"model": "meru", "class_names": [...], "runs": [run, ...],              # required
     "pretrained": "/abs/path", "config": {...}, "seeds": [0, 1, 2],
     "forget_sets": [["sneaker"], ["sneaker", "trouser"]]}

    run = {"forget": ["sneaker"], "row": "hac", "seed": 0,
           "metrics": {"FA": 0.0, "RA": 0.84, ...},                          # null for NaN
           "steps": 25, "seconds": 12.3, "examples": 1600,                   # required
           "method": "hac", "forget_class_ids": [7], "method_cfg": {...},
           "loop": {...} | null, "arrays": "arrays/hac__sneaker__s0.npz" | null,
           "settings": {...}, "passes": {...}, "fingerprints": {...}, "vs_retrain": {...}}

Keys beyond the tables are kept as written (a runner may record more about a run). ``arrays`` is
relative to the file's folder and holds the audit's arrays
(:data:`hac_jax.eval.names.ARRAY_KEYS`, plus the distances to the origin where the geometry has
them); :func:`read_run_arrays` opens it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from hac_jax.files import write_json

__all__ = [
    "RESULTS_FIELDS",
    "RUN_FIELDS",
    "Field",
    "load_results",
    "make_results",
    "make_run",
    "read_results",
    "read_run_arrays",
    "validate_results",
    "write_results",
]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _is_concept_list(value: Any) -> bool:
    return _is_str_list(value) and bool(value)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _expect(description: str, is_valid: Callable[[Any], bool]) -> Callable[[Any], str]:
    """A field check: "" for a valid value, else what is wrong with it."""
    return lambda value: "" if is_valid(value) else f"must be {description}, got {_short(value)}"


def _metrics_problem(value: Any) -> str:
    if not isinstance(value, dict):
        return f"must be an object of name -> number, got {_short(value)}"
    for name, number in value.items():
        if number is not None and not _is_number(number):
            return f"has metric {name!r} = {_short(number)}, expected a number or null"
    return ""


@dataclasses.dataclass(frozen=True)
class Field:
    """One key of the file: whether it must be there, what it holds, and its check ("" when the
    value is valid, else what is wrong)."""

    name: str
    required: bool
    meaning: str
    problem: Callable[[Any], str]


_NUMBER_OR_NULL = _expect("a number or null", lambda v: v is None or _is_number(v))

RESULTS_FIELDS: tuple[Field, ...] = (
    Field(
        "model",
        True,
        "the model's name (its kind: clip, meru)",
        _expect("a non-empty string", lambda v: isinstance(v, str) and bool(v)),
    ),
    Field(
        "class_names", True, "the data set's classes", _expect("a list of strings", _is_str_list)
    ),
    Field(
        "runs",
        True,
        "one entry per (forget set, row, seed), fields in RUN_FIELDS",
        _expect("a non-empty list of runs", lambda v: isinstance(v, list) and bool(v)),
    ),
    Field(
        "pretrained",
        False,
        "the pretrained model's path",
        _expect("a string", lambda v: isinstance(v, str)),
    ),
    Field(
        "config",
        False,
        "the runner's settings",
        _expect("an object", lambda v: isinstance(v, dict)),
    ),
    Field(
        "seeds",
        False,
        "the seeds every row ran with",
        _expect("a list of integers", lambda v: isinstance(v, list) and all(map(_is_int, v))),
    ),
    Field(
        "code_revision",
        False,
        "the git commit the runner ran from (+dirty with local changes)",
        _expect("a string", lambda v: isinstance(v, str)),
    ),
    Field(
        "data_settings",
        False,
        "the data settings (which data set, split fractions, seeds)",
        _expect("an object", lambda v: isinstance(v, dict)),
    ),
    Field(
        "retrain_yardstick",
        False,
        "per forget set: the distances between Retrain seeds (ks_forget_score, tv_destination)",
        _expect("an object", lambda v: isinstance(v, dict)),
    ),
    Field(
        "forget_sets",
        False,
        "the forget sets, as lists of concept names",
        _expect(
            "a list of lists of concept names",
            lambda v: isinstance(v, list) and all(map(_is_concept_list, v)),
        ),
    ),
)

RUN_FIELDS: tuple[Field, ...] = (
    Field(
        "forget",
        True,
        "the forgotten concepts",
        _expect("a non-empty list of concept names", _is_concept_list),
    ),
    Field(
        "row",
        True,
        "the table row: a method, a variant of one, retrain or original",
        _expect("a non-empty string", lambda v: isinstance(v, str) and bool(v)),
    ),
    Field("seed", True, "the run's seed", _expect("an integer", _is_int)),
    Field(
        "metrics", True, "the audit's metrics (hac_jax.eval.names.METRIC_KEYS)", _metrics_problem
    ),
    Field("steps", True, "optimizer steps", _NUMBER_OR_NULL),
    Field("seconds", True, "wall time of the unlearning (or Retrain's training)", _NUMBER_OR_NULL),
    Field("examples", True, "images processed (steps x batch)", _NUMBER_OR_NULL),
    Field(
        "method",
        False,
        "the registered method the row runs",
        _expect("a string", lambda v: isinstance(v, str)),
    ),
    Field(
        "forget_class_ids",
        False,
        "the classes the forget set covers",
        _expect("a list of integers", lambda v: isinstance(v, list) and all(map(_is_int, v))),
    ),
    Field(
        "method_cfg",
        False,
        "the method's settings",
        _expect("an object", lambda v: isinstance(v, dict)),
    ),
    Field(
        "loop",
        False,
        "the unlearning loop's settings (null for original and retrain)",
        _expect("an object or null", lambda v: v is None or isinstance(v, dict)),
    ),
    Field(
        "settings",
        False,
        "everything that determines the run: resolved method settings, loop, caption policy",
        _expect("an object", lambda v: isinstance(v, dict)),
    ),
    Field(
        "passes",
        False,
        "forward and backward passes counted in examples (frozen-model forwards included)",
        _expect("an object", lambda v: isinstance(v, dict)),
    ),
    Field(
        "fingerprints",
        False,
        "fingerprints of the starting model, the resulting parameters, the data and the code",
        _expect("an object", lambda v: isinstance(v, dict)),
    ),
    Field(
        "vs_retrain",
        False,
        "distances to Retrain of the same forget set and seed (ks_forget_score, tv_destination)",
        _expect("an object", lambda v: isinstance(v, dict)),
    ),
    Field(
        "arrays",
        False,
        "the audit arrays' npz, relative to the results file",
        _expect("a relative path string or null", lambda v: v is None or isinstance(v, str)),
    ),
)


def _check_fields(
    record: Mapping[str, Any], fields: Sequence[Field], where: str, hint: str = ""
) -> None:
    for field in fields:
        if field.name not in record:
            if field.required:
                raise ValueError(f"{where}: missing key {field.name!r}{hint}")
            continue
        problem = field.problem(record[field.name])
        if problem:
            raise ValueError(f"{where}: {field.name!r} {problem}")


def _check_run(run: Any, where: str) -> None:
    if not isinstance(run, dict):
        raise ValueError(f"{where} must be an object")
    _check_fields(run, RUN_FIELDS, where)


def validate_results(data: Any, where: str) -> None:
    """Raises a one-line ``ValueError`` starting with ``where`` (the file) when ``data`` is not a
    valid results record: a required key missing, a value of the wrong kind, or two runs with the
    same (forget set, row, seed)."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a JSON object at the top level")
    _check_fields(
        data, RESULTS_FIELDS, where, "; is this a results.json of experiments/unlearn.py?"
    )
    seen: set[tuple] = set()
    for i, run in enumerate(data["runs"]):
        _check_run(run, f"{where}: runs[{i}]")
        identity = (tuple(run["forget"]), run["row"], run["seed"])
        if identity in seen:
            raise ValueError(
                f"{where}: runs[{i}]: a second run for forget={run['forget']} "
                f"row={run['row']!r} seed={run['seed']}"
            )
        seen.add(identity)


def _null_if_not_finite(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def make_run(
    *,
    forget: Sequence[str],
    row: str,
    seed: int,
    metrics: Mapping[str, float | None],
    steps: float | None,
    seconds: float | None,
    examples: float | None,
    **recorded: Any,
) -> dict[str, Any]:
    """One checked run entry. ``recorded``: the optional fields of :data:`RUN_FIELDS` and
    whatever else the runner keeps about the run. NaN metrics are stored as ``None``."""
    run = {
        "forget": list(forget),
        "row": row,
        "seed": seed,
        "metrics": {name: _null_if_not_finite(v) for name, v in metrics.items()},
        "steps": steps,
        "seconds": seconds,
        "examples": examples,
        **recorded,
    }
    _check_run(run, f"run {row!r} on {list(forget)} seed {seed}")
    return run


def make_results(
    *,
    model: str,
    class_names: Sequence[str],
    runs: Sequence[Mapping[str, Any]],
    **recorded: Any,
) -> dict[str, Any]:
    """One checked results record (runs from :func:`make_run`). ``recorded``: the optional
    fields of :data:`RESULTS_FIELDS` and anything else the runner keeps."""
    # the runs last: a reader of the file sees what they share first
    data = {"model": model, "class_names": list(class_names), **recorded, "runs": list(runs)}
    validate_results(data, f"results of {model!r}")
    return data


def write_results(path: str | os.PathLike, data: Mapping[str, Any]) -> str:
    """Checks ``data`` and writes it to ``path`` atomically; returns ``path``."""
    validate_results(data, os.fspath(path))
    return write_json(path, data)


def read_results(path: str | os.PathLike) -> dict[str, Any]:
    """One results file, checked, plus ``"_source"``: its absolute path (the run's arrays are
    relative to its folder). Raises ``FileNotFoundError`` or a one-line ``ValueError``."""
    source = os.path.abspath(os.fspath(path))
    if not os.path.isfile(source):
        raise FileNotFoundError(f"results file {os.fspath(path)!r} does not exist")
    try:
        with open(source, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"{source}: not valid JSON ({msg})") from None
    validate_results(data, source)
    data["_source"] = source
    return data


def load_results(paths: Sequence[str | os.PathLike] | str | os.PathLike) -> list[dict]:
    """Reads and checks results files (:func:`read_results`), in the order given. Raises a
    one-line ``ValueError`` for no paths and for a file given twice (its runs would count
    twice)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if not paths:
        raise ValueError("no results.json given; pass at least one path")
    out, seen = [], set()
    for path in paths:
        real = os.path.realpath(os.fspath(path))
        if real in seen:
            raise ValueError(
                f"{os.path.abspath(path)}: given twice; its runs would be counted twice"
            )
        seen.add(real)
        out.append(read_results(path))
    return out


def read_run_arrays(results: Mapping[str, Any], run: Mapping[str, Any]) -> tuple[dict | None, str]:
    """The run's audit arrays (``{key: array}``), or ``(None, why not)``."""
    rel = run.get("arrays")
    if not rel:
        return None, "no arrays path"
    path = os.path.join(os.path.dirname(results["_source"]), rel)
    if not os.path.isfile(path):
        return None, f"{rel} is missing"
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}, ""
    except (OSError, ValueError) as e:
        msg = str(e).splitlines()[0] if str(e) else repr(e)
        return None, f"{rel} is unreadable ({msg})"
