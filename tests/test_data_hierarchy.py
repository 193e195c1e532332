"""Concept hierarchy: structure, lookups by name, errors."""

import numpy as np
import pytest

from hac_jax.data.hierarchy import FASHION_MNIST, Hierarchy, normalize_name

# The Fashion-MNIST label order (Xiao et al., 2017), written out independently of the module.
FASHION_LABELS = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
FASHION_GROUPS = {
    "tops": ["T-shirt/top", "Pullover", "Coat", "Shirt"],
    "bottoms": ["Trouser"],
    "dresses": ["Dress"],
    "footwear": ["Sandal", "Sneaker", "Ankle boot"],
    "accessories": ["Bag"],
}


def test_fashion_mnist_structure_matches_the_method_spec():
    h = FASHION_MNIST
    assert h.root == "clothing"
    assert h.levels == ("root", "group", "class")
    assert [normalize_name(c) for c in h.classes] == [normalize_name(c) for c in FASHION_LABELS]
    assert h.num_classes == 10 and h.num_groups == 5 and not h.is_flat
    for group, members in FASHION_GROUPS.items():
        expected = tuple(sorted(FASHION_LABELS.index(m) for m in members))
        assert h.class_ids(group) == expected
        assert h.classes_of_group(group) == expected
        for m in members:
            assert h.parent(m) == group
            assert h.class_to_group[h.class_id(m)] == h.group_id(group)
        assert h.parent(group) == "clothing"
    assert h.parent("clothing") is None
    assert set(h.children("clothing")) == set(FASHION_GROUPS)
    assert h.children("footwear") == ("sandal", "sneaker", "ankle boot")
    assert h.children("sneaker") == ()
    assert h.class_ids("clothing") == tuple(range(10))


def test_lookup_is_forgiving_about_case_underscores_and_spaces():
    h = FASHION_MNIST
    for name in ("Ankle boot", "ANKLE_BOOT", "  ankle   boot "):
        c = h.lookup(name)
        assert (c.name, c.level, c.index) == ("ankle boot", "class", 9)
    assert h.lookup("Footwear").level == "group"
    assert h.lookup("clothing").level == "root"
    assert "sneaker" in h and "sneakers" not in h


def test_unknown_or_wrong_level_names_raise_clear_errors():
    h = FASHION_MNIST
    with pytest.raises(ValueError, match=r"unknown concept 'sneakers'.*Did you mean.*'sneaker'"):
        h.lookup("sneakers")
    with pytest.raises(ValueError, match="unknown concept 'hat'"):
        h.class_ids(["sneaker", "hat"])
    with pytest.raises(ValueError, match="is a group, not a class"):
        h.class_id("footwear")
    with pytest.raises(ValueError, match="is a class, not a group"):
        h.group_id("sneaker")
    with pytest.raises(ValueError, match="class id 10 outside"):
        h.class_ids([10])


def test_split_classes_for_unlearning():
    h = FASHION_MNIST
    forget, retain = h.split_classes(["sneaker", "bag"])
    assert forget == (7, 8)
    assert retain == (0, 1, 2, 3, 4, 5, 6, 9)
    forget, retain = h.split_classes("footwear")
    assert forget == (5, 7, 9) and set(forget) | set(retain) == set(range(10))
    with pytest.raises(ValueError, match="no class to retain"):
        h.split_classes("clothing")
    with pytest.raises(ValueError, match="no concept to forget"):
        h.split_classes([])


def test_dict_round_trip_and_from_groups():
    h = FASHION_MNIST
    assert Hierarchy.from_dict(h.to_dict()) == h
    g = Hierarchy.from_groups("things", {"b": ["yak", "owl"], "a": ["zebu"]})
    assert g.classes == ("yak", "owl", "zebu") and g.groups == ("b", "a")
    assert g.class_group == (0, 0, 1)
    assert g.class_phrases == ("a yak", "an owl", "a zebu")
    ordered = Hierarchy.from_groups(
        "things", {"b": ["yak", "owl"], "a": ["zebu"]}, class_order=["zebu", "owl", "yak"]
    )
    assert ordered.classes == ("zebu", "owl", "yak") and ordered.class_group == (1, 0, 0)
    np.testing.assert_array_equal(ordered.class_to_group, [1, 0, 0])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(root="r", groups=("g",), classes=("a", "A"), class_group=(0, 0)), "duplicate class"),
        (dict(root="r", groups=("g", "h"), classes=("a",), class_group=(0,)), "without any class"),
        (dict(root="r", groups=("g",), classes=("a",), class_group=(1,)), "group id 1"),
        (dict(root="r", groups=("g",), classes=("a", "b"), class_group=(0,)), "class_group has"),
        (dict(root="a", groups=("g",), classes=("a",), class_group=(0,)), "root name"),
        (dict(root="r", groups=("a", "g"), classes=("a", "b"), class_group=(1, 0)), "both as"),
        (dict(root="r", groups=(), classes=("a",), class_group=(0,)), "at least one group"),
        (dict(root="r", groups=("g",), classes=("",), class_group=(0,)), "non-empty"),
    ],
)
def test_invalid_hierarchies_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Hierarchy(**kwargs)


def test_flat_hierarchy():
    h = Hierarchy.flat("pets", ["cat", "dog"])
    assert h.is_flat
    assert h.parent("cat") == "pets"
    assert h.children("pets") == ("cat", "dog")
    assert h.lookup("dog").level == "class"
    assert h.group_id("dog") == 1
    np.testing.assert_array_equal(h.class_to_group, [0, 1])
