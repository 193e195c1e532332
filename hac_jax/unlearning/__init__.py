"""Unlearning methods (AC, HAC, baselines) behind one registry.

Every module of this package is imported here, so a method registered with
``@register("name")`` in a new file is available as ``get_method("name")`` without further edits.
"""

from __future__ import annotations

import importlib
import pkgutil

from hac_jax.unlearning.registry import (
    LossFn,
    Method,
    get_config,
    get_method,
    list_methods,
    register,
)

for _info in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_info.name}")
del _info

from hac_jax.unlearning.ac import ac_loss_from_embeddings  # noqa: E402
from hac_jax.unlearning.common import (  # noqa: E402
    forget_derangement,
    masked_mean,
    subset_model_loss,
    weighted_symmetric_infonce,
)
from hac_jax.unlearning.hac import hac_loss_from_embeddings  # noqa: E402

__all__ = [
    "LossFn",
    "Method",
    "ac_loss_from_embeddings",
    "forget_derangement",
    "get_config",
    "get_method",
    "hac_loss_from_embeddings",
    "list_methods",
    "masked_mean",
    "register",
    "subset_model_loss",
    "weighted_symmetric_infonce",
]
