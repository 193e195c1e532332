"""Concept hierarchies: root -> groups -> classes.

A :class:`Hierarchy` names the concepts of a data set at three levels (``root``, ``group``,
``class``), says which group each class belongs to, and turns concept names into class ids, so that
training, evaluation and unlearning can pick concepts by name ("sneaker", or a whole group such as
"footwear"). Class ids are the ``label`` values stored in the data; group ids are the ``group``
values.

Names are matched case-insensitively, with ``_`` and runs of whitespace read as one space
(``"Ankle_Boot"`` finds ``"ankle boot"``). Each concept also has a *phrase*, the words captions
use for it: for a class a noun phrase with its article ("an ankle boot"), for a group or the root
a bare noun phrase ("footwear").

A *flat* hierarchy (root -> classes, e.g. an image folder without group folders) is stored with
one group per class, named like the class; :attr:`Hierarchy.is_flat` tells callers that the group
level carries no extra information.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "FASHION_MNIST",
    "LEVELS",
    "Concept",
    "Hierarchy",
    "article_phrase",
    "normalize_name",
]

LEVELS: tuple[str, ...] = ("root", "group", "class")


def normalize_name(name: str) -> str:
    """The form names are compared in: lower case, ``_`` as space, whitespace collapsed."""
    if not isinstance(name, str):
        raise TypeError(f"a concept name must be a string, got {type(name).__name__}: {name!r}")
    return re.sub(r"\s+", " ", name.replace("_", " ")).strip().lower()


def article_phrase(name: str) -> str:
    """A noun with its indefinite article, for caption templates: ``"boot" -> "a boot"``.

    The a/an choice follows the first letter (vowel -> "an"); callers who need an exception
    ("an hour", "a unicorn") give the phrase explicitly.
    """
    words = normalize_name(name)
    return ("an " if words[:1] in "aeiou" and words else "a ") + words


@dataclasses.dataclass(frozen=True)
class Concept:
    """One node of a hierarchy: its canonical ``name``, ``level`` (one of :data:`LEVELS`) and
    ``index`` within that level (class id, group id, or 0 for the root)."""

    name: str
    level: str
    index: int


@dataclasses.dataclass(frozen=True)
class Hierarchy:
    """A three-level concept hierarchy.

    Attributes:
      root: name of the root concept (e.g. ``"clothing"``).
      groups: group names, in group-id order.
      classes: class names, in class-id (label) order.
      class_group: group id of each class, ``len(classes)`` entries.
      class_phrases: caption phrase of each class, with article (default: derived from the name).
      group_phrases: caption phrase of each group (default: the name).
      root_phrase: caption phrase of the root (default: the name).
    """

    root: str
    groups: tuple[str, ...]
    classes: tuple[str, ...]
    class_group: tuple[int, ...]
    class_phrases: tuple[str, ...] | None = None
    group_phrases: tuple[str, ...] | None = None
    root_phrase: str | None = None

    def __post_init__(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)
        set_("groups", tuple(self.groups))
        set_("classes", tuple(self.classes))
        set_("class_group", tuple(int(g) for g in self.class_group))
        if not self.classes:
            raise ValueError("a hierarchy needs at least one class")
        if not self.groups:
            raise ValueError("a hierarchy needs at least one group")
        if len(self.class_group) != len(self.classes):
            raise ValueError(
                f"class_group has {len(self.class_group)} entries for {len(self.classes)} classes"
            )
        for c, g in zip(self.classes, self.class_group, strict=True):
            if not 0 <= g < len(self.groups):
                raise ValueError(f"class {c!r} has group id {g}, outside [0, {len(self.groups)})")
        empty = [g for i, g in enumerate(self.groups) if i not in self.class_group]
        if empty:
            raise ValueError(f"groups without any class: {empty}")
        names = [self.root, *self.groups, *self.classes]
        if any(not isinstance(n, str) or not normalize_name(n) for n in names):
            raise ValueError(f"concept names must be non-empty strings, got {names}")
        for level, items in (("group", self.groups), ("class", self.classes)):
            seen: dict[str, str] = {}
            for n in items:
                key = normalize_name(n)
                if key in seen:
                    raise ValueError(f"duplicate {level} name {n!r} (same as {seen[key]!r})")
                seen[key] = n
        if normalize_name(self.root) in {normalize_name(n) for n in (*self.groups, *self.classes)}:
            raise ValueError(f"the root name {self.root!r} is also used by a group or class")
        if not self.is_flat:
            clash = {normalize_name(n) for n in self.groups} & {
                normalize_name(n) for n in self.classes
            }
            if clash:
                raise ValueError(f"names used both as a group and as a class: {sorted(clash)}")
        if self.class_phrases is None:
            set_("class_phrases", tuple(article_phrase(c) for c in self.classes))
        if self.group_phrases is None:
            set_("group_phrases", tuple(normalize_name(g) for g in self.groups))
        if self.root_phrase is None:
            set_("root_phrase", normalize_name(self.root))
        set_("class_phrases", tuple(self.class_phrases))
        set_("group_phrases", tuple(self.group_phrases))
        if len(self.class_phrases) != len(self.classes):
            raise ValueError("class_phrases must have one entry per class")
        if len(self.group_phrases) != len(self.groups):
            raise ValueError("group_phrases must have one entry per group")

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def from_groups(
        cls,
        root: str,
        groups: Mapping[str, Sequence[str]],
        *,
        class_order: Sequence[str] | None = None,
        class_phrases: Mapping[str, str] | None = None,
        group_phrases: Mapping[str, str] | None = None,
        root_phrase: str | None = None,
    ) -> Hierarchy:
        """Builds a hierarchy from ``{group: [class, ...]}``.

        Class ids follow ``class_order`` when given (it must list every class once), otherwise the
        order of appearance. Phrases default as in the class docstring.
        """
        group_names = list(groups)
        members = [(c, gi) for gi, g in enumerate(group_names) for c in groups[g]]
        by_name = {c: gi for c, gi in members}
        if len(by_name) != len(members):
            raise ValueError("a class appears in more than one group (or twice in one)")
        order = list(class_order) if class_order is not None else [c for c, _ in members]
        if sorted(order) != sorted(by_name):
            raise ValueError(
                f"class_order {order} does not list exactly the classes {sorted(by_name)}"
            )
        return cls(
            root=root,
            groups=tuple(group_names),
            classes=tuple(order),
            class_group=tuple(by_name[c] for c in order),
            class_phrases=None
            if class_phrases is None
            else tuple(class_phrases.get(c, article_phrase(c)) for c in order),
            group_phrases=None
            if group_phrases is None
            else tuple(group_phrases.get(g, normalize_name(g)) for g in group_names),
            root_phrase=root_phrase,
        )

    @classmethod
    def flat(cls, root: str, classes: Sequence[str]) -> Hierarchy:
        """A two-level hierarchy root -> classes (one group per class, see module docstring)."""
        classes = tuple(classes)
        return cls(
            root=root,
            groups=classes,
            classes=classes,
            class_group=tuple(range(len(classes))),
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able description (stored in prepared data sets' metadata)."""
        return {
            "root": self.root,
            "groups": list(self.groups),
            "classes": list(self.classes),
            "class_group": list(self.class_group),
            "class_phrases": list(self.class_phrases),
            "group_phrases": list(self.group_phrases),
            "root_phrase": self.root_phrase,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Hierarchy:
        """Inverse of :meth:`to_dict`."""
        missing = {"root", "groups", "classes", "class_group"} - set(d)
        if missing:
            raise ValueError(f"hierarchy description lacks {sorted(missing)}")
        return cls(
            root=d["root"],
            groups=tuple(d["groups"]),
            classes=tuple(d["classes"]),
            class_group=tuple(d["class_group"]),
            class_phrases=None if d.get("class_phrases") is None else tuple(d["class_phrases"]),
            group_phrases=None if d.get("group_phrases") is None else tuple(d["group_phrases"]),
            root_phrase=d.get("root_phrase"),
        )

    # -- structure ---------------------------------------------------------------------------

    @property
    def levels(self) -> tuple[str, ...]:
        """Level names from the most generic: ``("root", "group", "class")``."""
        return LEVELS

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def num_groups(self) -> int:
        return len(self.groups)

    @property
    def is_flat(self) -> bool:
        """True when the group level repeats the classes (one group per class, same names)."""
        return self.groups == self.classes and self.class_group == tuple(range(len(self.classes)))

    @property
    def class_to_group(self) -> np.ndarray:
        """``(num_classes,)`` int32: group id of each class id."""
        return np.asarray(self.class_group, dtype=np.int32)

    def classes_of_group(self, group: int | str) -> tuple[int, ...]:
        """Class ids of one group (given by id or name), in id order."""
        gid = self.group_id(group) if isinstance(group, str) else int(group)
        if not 0 <= gid < self.num_groups:
            raise ValueError(f"group id {gid} outside [0, {self.num_groups})")
        return tuple(i for i, g in enumerate(self.class_group) if g == gid)

    # -- lookups by name ---------------------------------------------------------------------

    def _index(self) -> dict[str, Concept]:
        # Classes last so that, in a flat hierarchy, a shared name resolves to the class.
        table: dict[str, Concept] = {normalize_name(self.root): Concept(self.root, "root", 0)}
        for i, g in enumerate(self.groups):
            table[normalize_name(g)] = Concept(g, "group", i)
        for i, c in enumerate(self.classes):
            table[normalize_name(c)] = Concept(c, "class", i)
        return table

    def lookup(self, name: str) -> Concept:
        """The concept called ``name`` (any level). Unknown names raise ``ValueError`` listing
        the known ones."""
        table = self._index()
        key = normalize_name(name)
        if key in table:
            return table[key]
        close = difflib.get_close_matches(key, list(table), n=3)
        hint = f" Did you mean {close}?" if close else ""
        raise ValueError(
            f"unknown concept {name!r}.{hint} Known concepts: root {self.root!r}; "
            f"groups {list(self.groups)}; classes {list(self.classes)}"
        )

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and normalize_name(name) in self._index()

    def class_id(self, name: str) -> int:
        """Class id of a class name (``ValueError`` for an unknown name or a non-class)."""
        c = self.lookup(name)
        if c.level != "class":
            raise ValueError(f"{name!r} is a {c.level}, not a class; classes: {list(self.classes)}")
        return c.index

    def group_id(self, name: str) -> int:
        """Group id of a group name (``ValueError`` for an unknown name or a non-group)."""
        table = self._index()
        key = normalize_name(name)
        if self.is_flat and key in table:
            return table[key].index  # in a flat hierarchy group id == class id
        c = self.lookup(name)
        if c.level != "group":
            raise ValueError(f"{name!r} is a {c.level}, not a group; groups: {list(self.groups)}")
        return c.index

    def parent(self, name: str) -> str | None:
        """Name of the parent concept (``None`` for the root)."""
        c = self.lookup(name)
        if c.level == "root":
            return None
        if c.level == "group" or self.is_flat:
            return self.root
        return self.groups[self.class_group[c.index]]

    def children(self, name: str) -> tuple[str, ...]:
        """Names of the direct children (classes have none)."""
        c = self.lookup(name)
        if c.level == "root":
            return self.classes if self.is_flat else self.groups
        if c.level == "group":
            return tuple(self.classes[i] for i in self.classes_of_group(c.index))
        return ()

    def class_ids(self, names: str | int | Iterable[str | int]) -> tuple[int, ...]:
        """Class ids covered by concepts: a class -> itself, a group -> its classes, the root ->
        all classes; ints are taken as class ids. Sorted, without repeats."""
        if isinstance(names, (str, int, np.integer)):
            names = [names]
        out: set[int] = set()
        for n in names:
            if isinstance(n, (int, np.integer)):
                if not 0 <= int(n) < self.num_classes:
                    raise ValueError(f"class id {int(n)} outside [0, {self.num_classes})")
                out.add(int(n))
                continue
            c = self.lookup(n)
            if c.level == "class":
                out.add(c.index)
            elif c.level == "group":
                out.update(self.classes_of_group(c.index))
            else:
                out.update(range(self.num_classes))
        return tuple(sorted(out))

    def split_classes(
        self, forget: str | int | Iterable[str | int]
    ) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """``(forget_class_ids, retain_class_ids)`` for concepts to forget (see :meth:`class_ids`).
        Raises if nothing would be forgotten or nothing retained."""
        f = self.class_ids(forget)
        if not f:
            raise ValueError("no concept to forget was given")
        r = tuple(i for i in range(self.num_classes) if i not in f)
        if not r:
            raise ValueError(f"forgetting {forget!r} would leave no class to retain")
        return f, r


FASHION_MNIST = Hierarchy(
    root="clothing",
    groups=("tops", "bottoms", "dresses", "footwear", "accessories"),
    # Label order of the Fashion-MNIST idx files (Xiao et al., 2017, arXiv 1708.07747).
    classes=(
        "t-shirt/top",
        "trouser",
        "pullover",
        "dress",
        "coat",
        "sandal",
        "shirt",
        "sneaker",
        "bag",
        "ankle boot",
    ),
    class_group=(0, 1, 0, 2, 0, 3, 0, 3, 4, 3),
    class_phrases=(
        "a t-shirt",
        "a pair of trousers",
        "a pullover",
        "a dress",
        "a coat",
        "a sandal",
        "a shirt",
        "a sneaker",
        "a bag",
        "an ankle boot",
    ),
)
"""The Fashion-MNIST concept hierarchy: clothing -> {tops, bottoms, dresses, footwear,
accessories} -> the 10 classes."""
