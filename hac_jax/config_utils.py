"""Configs as code: ``--config=path.py:arg --config.key=value`` without absl flags.

* :func:`parse_arg` turns a config argument such as ``"meru,smoke,steps=10"`` into a ConfigDict of
  typed options (big_vision's ``parse_arg`` idea);
* :func:`load_config` imports ``path.py`` and calls its ``get_config(arg)``;
* :func:`apply_overrides` sets dotted keys from strings, typed by the existing field; a key that
  does not exist is an error (with close matches suggested);
* :func:`parse_command_line` puts the three together for the experiment runners.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections

__all__ = [
    "apply_overrides",
    "flatten_keys",
    "load_config",
    "parse_arg",
    "parse_command_line",
    "parse_list",
    "to_dict",
]

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def parse_arg(
    arg: str | None, *, positional: Sequence[str] = (), **defaults: Any
) -> ml_collections.ConfigDict:
    """Parses ``"word,key=value,flag"`` against typed ``defaults``.

    ``key=value`` sets ``key`` (typed like its default); a bare word is ``True`` for a bool
    option, else it fills the next name in ``positional``. Unknown keys/words are a ``ValueError``.
    """
    out = dict(defaults)
    free = list(positional)
    for item in filter(None, (s.strip() for s in (arg or "").split(","))):
        if "=" in item:
            key, value = (s.strip() for s in item.split("=", 1))
            if key not in defaults:
                raise ValueError(
                    f"unknown config option {key!r} in {arg!r}; known: {sorted(defaults)}"
                )
            out[key] = _parse_value(value, defaults[key], key)
        elif isinstance(defaults.get(item), bool):
            out[item] = True
        elif free:
            key = free.pop(0)
            out[key] = _parse_value(item, defaults[key], key)
        else:
            raise ValueError(
                f"unknown config word {item!r} in {arg!r}; flags: "
                f"{sorted(k for k, v in defaults.items() if isinstance(v, bool))}"
            )
    return ml_collections.ConfigDict(out)


def load_config(spec: str) -> ml_collections.ConfigDict:
    """``"path/to/config.py:arg"`` -> ``get_config(arg)`` of that file (``get_config()`` without
    ``:arg``). Raises ``FileNotFoundError`` / ``ValueError`` with the reason."""
    path, _, arg = spec.partition(":")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path!r} not found (from --config={spec})")
    name = "_hac_jax_config_" + os.path.splitext(os.path.basename(path))[0]
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"config file {path!r} has no get_config()")
    config = module.get_config(arg) if arg else module.get_config()
    if not isinstance(config, ml_collections.ConfigDict):
        raise ValueError(f"{path}:get_config must return an ml_collections.ConfigDict")
    return config


def flatten_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    """All dotted leaf keys of a (nested) ConfigDict."""
    keys = []
    for k, v in config.items():
        if isinstance(v, ml_collections.ConfigDict):
            keys.extend(flatten_keys(v, f"{prefix}{k}."))
        else:
            keys.append(f"{prefix}{k}")
    return keys


def _is_nested(current: Any) -> bool:
    return bool(current) and all(isinstance(v, (list, tuple)) for v in current)


def _literal(item: str) -> Any:
    try:
        return ast.literal_eval(item)
    except (ValueError, SyntaxError):
        return item


def parse_list(text: str, *, nested: bool = False) -> list[Any]:
    """A list from its command-line text: ``"0,1,2" -> [0, 1, 2]``, ``"ac, hac" -> ["ac",
    "hac"]``; with ``nested``, ``;`` separates the inner lists: ``"sneaker;sneaker,bag" ->
    [["sneaker"], ["sneaker", "bag"]]``. Items read as Python literals where they are one
    (numbers), else as text; empty items are dropped."""
    if nested:
        return [parse_list(part) for part in text.split(";") if parse_list(part)]
    return [_literal(item.strip()) for item in text.split(",") if item.strip()]


def _parse_value(text: str, current: Any, key: str, field_type: type | None = None) -> Any:
    """``text`` typed like the existing value (or ``field_type`` for a ``None`` placeholder)."""
    kind = field_type if current is None and field_type is not None else type(current)
    try:
        if current is None and text.lower() in ("none", "null"):
            return None
        if kind is bool:
            if text.lower() in _TRUE:
                return True
            if text.lower() in _FALSE:
                return False
            raise ValueError("expected true/false")
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
        if kind is str:
            return text
        if kind in (list, tuple):
            if text.strip().startswith(("[", "(")):
                value = ast.literal_eval(text)
                if not isinstance(value, (list, tuple)):
                    raise ValueError("expected a list or tuple literal")
                return kind(value)
            return kind(parse_list(text, nested=_is_nested(current)))
        if current is None:
            try:
                return ast.literal_eval(text)
            except (ValueError, SyntaxError):
                return text
    except (ValueError, SyntaxError) as e:
        raise ValueError(
            f"config key {key!r}: cannot parse {text!r} as {kind.__name__} ({e})"
        ) from None
    raise ValueError(
        f"config key {key!r} of type {kind.__name__} cannot be set from the command line"
    )


def apply_overrides(
    config: ml_collections.ConfigDict, overrides: Mapping[str, str] | Sequence[str]
) -> ml_collections.ConfigDict:
    """Sets ``{"a.b": "value"}`` (or ``["a.b=value"]``) on ``config`` in place and returns it.

    Values are parsed by the type of the field they replace (``bool`` accepts true/false/1/0).
    A key that does not exist raises ``ValueError`` naming close matches; so does setting a group.
    """
    if not isinstance(overrides, Mapping):
        pairs = {}
        for item in overrides:
            if "=" not in item:
                raise ValueError(f"override {item!r} must look like key=value")
            k, v = item.split("=", 1)
            pairs[k] = v
        overrides = pairs
    known = flatten_keys(config)
    for dotted, text in overrides.items():
        parts = dotted.split(".")
        node = config
        for i, part in enumerate(parts):
            if not isinstance(node, ml_collections.ConfigDict) or part not in node:
                close = difflib.get_close_matches(dotted, known, n=3)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                raise ValueError(f"unknown config key {dotted!r}{hint}")
            if i < len(parts) - 1:
                node = node[part]
        leaf = parts[-1]
        current = node[leaf]
        if isinstance(current, ml_collections.ConfigDict):
            raise ValueError(f"config key {dotted!r} is a group; set one of its fields")
        field_type = node.get_type(leaf) if current is None else None
        node[leaf] = _parse_value(str(text), current, dotted, field_type)
    return config


def parse_command_line(
    argv: Sequence[str] | None = None, *, required: Sequence[str] = ("workdir",), **flag_defaults
) -> tuple[ml_collections.ConfigDict, dict[str, Any]]:
    """Parses ``--config=path.py:arg [--config.key=value ...] [--flag=value ...]``.

    ``required`` flags must be given; other plain flags must be named in ``flag_defaults``
    (typed by their default). Both ``--a=b`` and ``--a b`` work. Returns ``(config, flags)``.
    Errors are ``ValueError`` with the offending argument.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    allowed = {"config", *required, *flag_defaults}
    values: dict[str, str] = {}
    overrides: dict[str, str] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--"):
            raise ValueError(f"unexpected argument {arg!r}; flags look like --name=value")
        name, eq, value = arg[2:].partition("=")
        if not eq:
            if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
                raise ValueError(f"flag --{name} needs a value")
            value = argv[i + 1]
            i += 1
        i += 1
        if name.startswith("config."):
            overrides[name[len("config.") :]] = value
        elif name in allowed:
            values[name] = value
        else:
            raise ValueError(f"unknown flag --{name}; known: {sorted(allowed)} and --config.KEY")
    missing = [f"--{n}" for n in ("config", *required) if n not in values]
    if missing:
        raise ValueError(f"missing required flag(s) {', '.join(missing)}")
    config = load_config(values.pop("config"))
    apply_overrides(config, overrides)
    flags = {
        k: _parse_value(values[k], v, k) if k in values else v for k, v in flag_defaults.items()
    }
    flags.update({k: values[k] for k in required})
    return config, flags


def to_dict(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """Plain nested dict (JSON-friendly) of a ConfigDict."""
    return config.to_dict()


def enable_compilation_cache(path: str | None = None, *, min_compile_secs: float = 1.0) -> str:
    """Turns on JAX's persistent compilation cache for a runner process and returns its folder.

    ``path`` defaults to ``$HAC_JAX_COMPILE_CACHE`` or ``~/.cache/hac_jax/jax``. Runs that
    compile the same step again (the seeds of one method, a resumed run) then load it instead.
    """
    import jax

    path = (
        path
        or os.environ.get("HAC_JAX_COMPILE_CACHE")
        or os.path.join(os.path.expanduser("~"), ".cache", "hac_jax", "jax")
    )
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_secs)
    return path
