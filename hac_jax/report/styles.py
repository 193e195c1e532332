"""How each model is shown: its place in tables and legends and its line in figures.

Data keyed by the model's name (the ``model`` of a results file), with a default for names not
listed, so no report code branches on a model kind: a new model appears after the listed ones
(by name) with solid lines.
"""

from __future__ import annotations

import dataclasses

__all__ = ["DEFAULT_STYLE", "MODEL_STYLES", "ModelStyle", "model_order", "model_style"]


@dataclasses.dataclass(frozen=True)
class ModelStyle:
    rank: int
    """Models are listed by rank, then by name."""
    line_style: str
    """Matplotlib line style of the model's lines (the accuracy-vs-k figure)."""


MODEL_STYLES: dict[str, ModelStyle] = {
    "clip": ModelStyle(rank=0, line_style="--"),
    "meru": ModelStyle(rank=1, line_style="-"),
}
DEFAULT_STYLE = ModelStyle(rank=len(MODEL_STYLES), line_style="-")


def model_style(model: str) -> ModelStyle:
    return MODEL_STYLES.get(model, DEFAULT_STYLE)


def model_order(model: str) -> tuple[int, str]:
    """Sort key of a model name."""
    return (model_style(model).rank, model)
