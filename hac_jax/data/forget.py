"""The forget set of an unlearning experiment, and which captions of its images are forget pairs.

:class:`ForgetSet` is built and validated once from the hierarchy (known concept names, at least
one class, not every class); the runner, the unlearning loop, the mixed loader and the audit all
take it, so none of them re-checks a bare tuple of ids.

Which captions count (docs/METHOD.md, "Which captions are forget"): a caption of a forget image
that *names* the forgotten concept (caption levels of class depth: ``class``,
``class_in_group``) makes a forget pair. A caption at group or root level ("a photo of
footwear") describes what retained siblings share; :data:`GROUP_CAPTION_POLICIES` say what
happens to such pairs:

* ``"exclude"`` (default): neither calibrated nor trained on, and no negative for other pairs;
* ``"retain"``: trained on as retain pairs;
* ``"forget"``: treated as forget pairs (every caption of a forget image, as before the protocol
  was revised; for ablation).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from hac_jax.data.captions import CAPTION_LEVEL_DEPTH, CAPTION_LEVELS, DEFAULT_LEVEL_WEIGHTS

__all__ = [
    "GROUP_CAPTION_POLICIES",
    "NAMING_CAPTION_WEIGHTS",
    "NAMING_LEVEL_IDS",
    "ForgetSet",
    "forget_slug",
    "pair_roles",
]

GROUP_CAPTION_POLICIES = ("exclude", "retain", "forget")

# Caption level ids (``caption_level`` in batches) whose captions name the image's own class.
NAMING_LEVEL_IDS: tuple[int, ...] = tuple(
    i for i, level in enumerate(CAPTION_LEVELS) if CAPTION_LEVEL_DEPTH[level] == "class"
)

NAMING_CAPTION_WEIGHTS: dict[str, float] = {
    level: w for level, w in DEFAULT_LEVEL_WEIGHTS.items() if CAPTION_LEVEL_DEPTH[level] == "class"
}
"""Caption level weights of the audits' matched pairs: the training shares of the captions that
name the image's class (group- and root-level captions left out)."""


@dataclasses.dataclass(frozen=True)
class ForgetSet:
    """Concepts to forget: the names as given and the class ids they cover (sorted).

    Build with :meth:`of`; a ``ForgetSet`` passed to :meth:`of` comes back as it is (after a
    check that it belongs to the same hierarchy).
    """

    names: tuple[str, ...]
    class_ids: tuple[int, ...]
    num_classes: int

    @classmethod
    def of(cls, hierarchy: Any, concepts: ForgetSet | Iterable[str | int] | str | int) -> ForgetSet:
        """The forget set of ``concepts`` (class or group names, or class ids).

        Raises a one-line ``ValueError`` for an empty set, an unknown name (listing the known
        ones), or a set that covers every class (nothing would be retained).
        """
        if isinstance(concepts, ForgetSet):
            if concepts.num_classes != hierarchy.num_classes:
                raise ValueError(
                    f"forget set {list(concepts.names)} was built for {concepts.num_classes} "
                    f"classes, the data have {hierarchy.num_classes}"
                )
            return concepts
        items = [concepts] if isinstance(concepts, (str, int, np.integer)) else list(concepts)
        items = [c for c in items if not (isinstance(c, str) and not c.strip())]
        if not items:
            raise ValueError("the forget set is empty; name at least one concept to forget")
        try:
            ids = tuple(sorted(hierarchy.class_ids(items)))
        except (KeyError, ValueError) as e:
            raise ValueError(f"bad forget set {items!r}: {str(e).splitlines()[0]}") from None
        if not ids:
            raise ValueError(f"the forget set {items!r} covers no class")
        if len(ids) == hierarchy.num_classes:
            raise ValueError(
                f"the forget set {items!r} covers all {hierarchy.num_classes} classes; "
                "nothing would be retained"
            )
        names = tuple(c if isinstance(c, str) else hierarchy.classes[int(c)] for c in items)
        return cls(names=names, class_ids=ids, num_classes=hierarchy.num_classes)

    @property
    def retain_ids(self) -> tuple[int, ...]:
        """Every other class id."""
        return tuple(c for c in range(self.num_classes) if c not in self.class_ids)

    @property
    def k(self) -> int:
        """Number of forgotten classes."""
        return len(self.class_ids)

    def contains(self, labels: Any) -> np.ndarray:
        """``(N,)`` class ids -> ``(N,)`` bool: which belong to the forget set."""
        return np.isin(np.asarray(labels), self.class_ids)


def pair_roles(
    is_forget_image: Any, caption_level: Any, policy: str = "exclude"
) -> tuple[np.ndarray, np.ndarray]:
    """Each pair's role from its image's set and its caption's level (module docstring).

    Shapes: ``(B,) bool, (B,) int -> (is_forget (B,) bool, is_retain (B,) bool)``; a pair that is
    neither takes part in no loss term.
    """
    if policy not in GROUP_CAPTION_POLICIES:
        raise ValueError(f"group_captions must be one of {GROUP_CAPTION_POLICIES}, got {policy!r}")
    image_forget = np.asarray(is_forget_image, bool)
    naming = np.isin(np.asarray(caption_level), NAMING_LEVEL_IDS)
    if policy == "forget":
        return image_forget, ~image_forget
    is_forget = image_forget & naming
    is_retain = ~image_forget | (image_forget & ~naming if policy == "retain" else False)
    return is_forget, np.asarray(is_retain, bool)


def forget_slug(names: Sequence[str]) -> str:
    """A file-name-safe name of a forget set: ``["t-shirt/top", "bag"] -> "t-shirt-top+bag"``."""
    return "+".join(re.sub(r"[^a-z0-9]+", "-", n.lower()).strip("-") for n in names)
