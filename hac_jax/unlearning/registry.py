"""The registry of unlearning methods: a name -> loss function + config defaults + flags.

Adding a method is one small file in this package (every module of ``hac_jax.unlearning`` is
imported with the package)::

    from hac_jax.unlearning.registry import register

    @register("my_method", defaults=dict(weight=1.0), needs_forget=True)
    def my_loss(params, frozen_params, batch, rng, *, model, cfg, geometry, step=0):
        ...
        return loss, metrics

The uniform loss signature:

* ``params``: the trainable Flax parameters (the tree under ``"params"``);
* ``frozen_params``: the original model's parameters (``None`` unless ``needs_frozen_model``);
* ``batch``: ``{"image": (B,H,W,3) float, "tokens": (B,L) int32, "is_forget": (B,) bool,
  "is_retain": (B,) bool, "label": (B,) int32, "group": (B,) int32, "parent": (B,) int32}``
  (``is_forget`` / ``is_retain``: the pairs' roles, a pair may be in neither, see
  :func:`hac_jax.unlearning.common.pair_masks`; ``parent``: each pair's row in the parent
  prompts);
* ``rng``: a PRNG key for this step (or ``None`` when the method draws nothing);
* ``model``: the linen module (``model.apply({"params": p}, images, tokens)`` returns
  ``{"image","text","logit_scale","curv"}``), ``cfg``: the method's ``ConfigDict``,
  ``geometry``: :data:`hac_jax.geometry.LORENTZ` or ``SPHERE``, ``step``: the unlearning step
  (a traced int is fine);
* ``parent_prompt_tokens`` (only for methods flagged ``needs_parent_prompts``): ``(R, P, L)``
  int32 tokens of the parent concepts' prompt ensembles
  (:func:`hac_jax.data.captions.parent_prompts`), a constant of the run;
* returns ``(loss, metrics)``: a scalar and a flat dict of scalars (``metrics["loss"]`` included).

``loop`` holds the unlearning loop's settings a method was tuned with (``lr``, ``steps``; see
:data:`LOOP_DEFAULT_KEYS`): :func:`hac_jax.unlearning.loop.unlearn` and the experiment runner
use them when no value is given, so a tuned method's whole default lives in its registration.

Flags tell the runner what a method needs: ``needs_frozen_model`` (pass the original parameters),
``needs_parent_prompts`` (the parent prompt tokens),
``needs_forget`` / ``needs_retain`` (which pairs the batches must contain), ``reinit`` (start from
a freshly initialised model), ``geometries`` (the geometries it is defined on).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import re
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Protocol

import ml_collections
import numpy as np

from hac_jax.geometry import Geometry, get_geometry

__all__ = [
    "LossFn",
    "Method",
    "get_config",
    "get_method",
    "list_methods",
    "register",
]


class LossFn(Protocol):
    """The uniform loss signature (module docstring)."""

    def __call__(
        self,
        params: Any,
        frozen_params: Any,
        batch: Mapping[str, Any],
        rng: Any,
        *,
        model: Any,
        cfg: ml_collections.ConfigDict,
        geometry: Geometry,
        step: Any = 0,
    ) -> tuple[Any, dict[str, Any]]: ...


_GEOMETRY_NAMES = ("lorentz", "sphere")
# The unlearning loop's settings a registration may fix (``register(..., loop=...)``).
LOOP_DEFAULT_KEYS = ("lr", "steps")
_NAME_RE = re.compile(r"[a-z][a-z0-9_]*")


@dataclasses.dataclass(frozen=True)
class Method:
    """A registered unlearning method (see the module docstring for the fields' meaning)."""

    name: str
    loss_fn: LossFn
    defaults: Mapping[str, Any]
    needs_frozen_model: bool = False
    needs_forget: bool = True
    needs_retain: bool = True
    reinit: bool = False
    geometries: tuple[str, ...] = _GEOMETRY_NAMES
    description: str = ""
    validate: Callable[[ml_collections.ConfigDict], None] | None = None
    needs_parent_prompts: bool = False
    # the loop settings the method was tuned with (keys of LOOP_DEFAULT_KEYS); empty: untuned
    loop: Mapping[str, Any] = dataclasses.field(default_factory=lambda: MappingProxyType({}))
    # whether a config's loss runs the frozen model / encodes the parent prompts (a setting can
    # switch the term off); None: whenever the flag says it needs them
    frozen_model_used: Callable[[ml_collections.ConfigDict], bool] | None = None
    parent_prompts_used: Callable[[ml_collections.ConfigDict], bool] | None = None

    def uses_frozen_model(self, cfg: ml_collections.ConfigDict) -> bool:
        """Whether the loss under ``cfg`` runs the frozen original (what the run's cost counts)."""
        used = self.frozen_model_used
        return self.needs_frozen_model and (used is None or bool(used(cfg)))

    def uses_parent_prompts(self, cfg: ml_collections.ConfigDict) -> bool:
        """Whether the loss under ``cfg`` encodes the parent prompts."""
        used = self.parent_prompts_used
        return self.needs_parent_prompts and (used is None or bool(used(cfg)))

    def config(self, **overrides: Any) -> ml_collections.ConfigDict:
        """A fresh, locked ``ConfigDict`` of the defaults with ``overrides`` applied.

        An override naming no default is a ``ValueError`` (a typo must not pass silently).
        """
        unknown = sorted(set(overrides) - set(self.defaults))
        if unknown:
            raise ValueError(
                f"method {self.name!r} has no option(s) {unknown}; known: {sorted(self.defaults)}"
            )
        cfg = ml_collections.ConfigDict(copy.deepcopy(dict(self.defaults)))
        for key, value in overrides.items():
            cfg[key] = value
        cfg.lock()
        self.check_config(cfg)
        return cfg

    def check_config(self, cfg: ml_collections.ConfigDict) -> None:
        """Raises ``ValueError`` if ``cfg`` lacks a default's key or fails the method's checks."""
        missing = sorted(set(self.defaults) - set(cfg.keys()))
        if missing:
            raise ValueError(f"config for method {self.name!r} lacks {missing}")
        if self.validate is not None:
            self.validate(cfg)

    def bind(
        self,
        *,
        model: Any,
        geometry: str | Geometry,
        cfg: ml_collections.ConfigDict | None = None,
        parent_prompt_tokens: Any = None,
    ) -> Callable[..., tuple[Any, dict[str, Any]]]:
        """``loss(params, frozen_params, batch, rng, step=0) -> (loss, metrics)`` with the static
        arguments fixed; checks the config and the geometry first. Ready for ``jax.value_and_grad
        (..., has_aux=True)`` and ``jit``. ``parent_prompt_tokens``: ``(R, P, L)`` int32, passed on
        to methods flagged ``needs_parent_prompts`` (see :func:`hac_jax.data.parent_prompts`)."""
        geometry = get_geometry(geometry)
        if geometry.name not in self.geometries:
            raise ValueError(
                f"method {self.name!r} is defined for geometries {list(self.geometries)}, "
                f"not {geometry.name!r}"
            )
        cfg = self.config() if cfg is None else cfg
        self.check_config(cfg)
        extra: dict[str, Any] = {}
        if self.needs_parent_prompts:
            # Absent tokens are the loss's to refuse (a setting may switch the parent term off).
            tokens = parent_prompt_tokens
            if tokens is not None and np.ndim(tokens) != 3:
                raise ValueError(
                    f"parent_prompt_tokens must be (R, P, L), got shape {np.shape(tokens)}"
                )
            extra["parent_prompt_tokens"] = None if tokens is None else np.asarray(tokens)

        def loss(params, frozen_params, batch, rng, step=0):
            return self.loss_fn(
                params,
                frozen_params,
                batch,
                rng,
                model=model,
                cfg=cfg,
                geometry=geometry,
                step=step,
                **extra,
            )

        # Name and doc only: no __wrapped__, so signature-based tools (jit's static_argnames)
        # see this function's own parameters.
        loss.__name__ = loss.__qualname__ = f"{self.name}_loss"
        loss.__doc__ = self.loss_fn.__doc__
        return loss


_REGISTRY: dict[str, Method] = {}


def register(
    name: str,
    *,
    defaults: Mapping[str, Any] | None = None,
    needs_frozen_model: bool = False,
    needs_forget: bool = True,
    needs_retain: bool = True,
    reinit: bool = False,
    geometries: tuple[str, ...] = _GEOMETRY_NAMES,
    description: str = "",
    validate: Callable[[ml_collections.ConfigDict], None] | None = None,
    needs_parent_prompts: bool = False,
    loop: Mapping[str, Any] | None = None,
    frozen_model_used: Callable[[ml_collections.ConfigDict], bool] | None = None,
    parent_prompts_used: Callable[[ml_collections.ConfigDict], bool] | None = None,
    replace: bool = False,
) -> Callable[[LossFn], LossFn]:
    """Decorator registering a loss function under ``name`` (returns the function unchanged).

    ``loop``: the loop settings the method was tuned with (``lr`` > 0, ``steps`` > 0; module
    docstring). ``frozen_model_used`` / ``parent_prompts_used``: ``cfg -> bool``, whether a
    config's loss uses what ``needs_frozen_model`` / ``needs_parent_prompts`` provide (the
    run's cost counts those passes only then). A name already taken is a ``ValueError`` unless
    ``replace=True``.
    """
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ValueError(f"method names are lower-case identifiers, got {name!r}")
    bad = sorted(set(geometries) - set(_GEOMETRY_NAMES))
    if bad or not geometries:
        raise ValueError(
            f"geometries must be a non-empty subset of {_GEOMETRY_NAMES}, got {geometries}"
        )
    if not needs_forget and not needs_retain:
        raise ValueError(f"method {name!r} must use the forget or the retain pairs (or both)")
    loop = dict(loop or {})
    unknown = sorted(set(loop) - set(LOOP_DEFAULT_KEYS))
    if unknown:
        raise ValueError(f"loop settings of {name!r} may be {LOOP_DEFAULT_KEYS}, got {unknown}")
    if "steps" in loop and not (isinstance(loop["steps"], int) and loop["steps"] > 0):
        raise ValueError(f"loop steps of {name!r} must be a positive int, got {loop['steps']!r}")
    if "lr" in loop and not float(loop["lr"]) > 0:
        raise ValueError(f"loop lr of {name!r} must be positive, got {loop['lr']!r}")

    def decorator(fn: LossFn) -> LossFn:
        if name in _REGISTRY and not replace:
            raise ValueError(
                f"an unlearning method named {name!r} is already registered "
                f"({_REGISTRY[name].loss_fn.__module__}); pass replace=True to override it"
            )
        method = Method(
            name=name,
            loss_fn=fn,
            defaults=MappingProxyType(copy.deepcopy(dict(defaults or {}))),
            needs_frozen_model=needs_frozen_model,
            needs_forget=needs_forget,
            needs_retain=needs_retain,
            reinit=reinit,
            geometries=tuple(geometries),
            description=description,
            validate=validate,
            needs_parent_prompts=needs_parent_prompts,
            loop=MappingProxyType(loop),
            frozen_model_used=frozen_model_used,
            parent_prompts_used=parent_prompts_used,
        )
        # Check the defaults themselves before anything can use them.
        method.config()
        _REGISTRY[name] = method
        return fn

    return decorator


def list_methods() -> tuple[str, ...]:
    """Names of the registered methods, sorted."""
    return tuple(sorted(_REGISTRY))


def get_method(name: str) -> Method:
    """The method registered as ``name``; an unknown name raises ``ValueError`` listing the known
    ones (and close matches)."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    known = list_methods()
    close = difflib.get_close_matches(str(name), known, n=3)
    hint = f" Did you mean {close}?" if close else ""
    raise ValueError(f"unknown unlearning method {name!r}.{hint} Known methods: {list(known)}")


def get_config(name: str, **overrides: Any) -> ml_collections.ConfigDict:
    """``get_method(name).config(**overrides)``."""
    return get_method(name).config(**overrides)
