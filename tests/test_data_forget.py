"""The forget set value type and the caption-level roles of pairs (hac_jax/data/forget.py)."""

import numpy as np
import pytest

from hac_jax import data as hdata
from hac_jax.data.forget import NAMING_LEVEL_IDS, ForgetSet, pair_roles

H = hdata.FASHION_MNIST


def test_forget_set_is_built_and_checked_once():
    fs = ForgetSet.of(H, ["footwear", "bag"])
    assert fs.names == ("footwear", "bag")
    assert fs.class_ids == tuple(sorted(H.class_ids(["sandal", "sneaker", "ankle boot", "bag"])))
    assert fs.k == 4 and set(fs.retain_ids) == set(range(10)) - set(fs.class_ids)
    assert ForgetSet.of(H, fs) is fs  # passed through, not rebuilt
    assert ForgetSet.of(H, 7).names == (H.classes[7],)
    np.testing.assert_array_equal(fs.contains([5, 0, 8]), [True, False, True])
    for bad, msg in (
        ([], "empty"),
        ([""], "empty"),
        (["snekaer"], "bad forget set"),
        (["clothing"], "covers all 10"),
    ):
        with pytest.raises(ValueError, match=msg):
            ForgetSet.of(H, bad)
    with pytest.raises(ValueError, match="built for 10 classes"):
        ForgetSet.of(hdata.SHAPES, fs)


def test_naming_levels_are_the_class_depth_captions():
    assert [hdata.CAPTION_LEVELS[i] for i in NAMING_LEVEL_IDS] == ["class", "class_in_group"]


def test_pair_roles_by_caption_level_and_policy():
    # images: forget, forget, forget, forget, retain, retain; levels: class, class_in_group,
    # group, root, group, class
    image_forget = np.array([1, 1, 1, 1, 0, 0], bool)
    level = np.array([0, 1, 2, 3, 2, 0])
    f, r = pair_roles(image_forget, level)  # default: exclude
    np.testing.assert_array_equal(f, [1, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(r, [0, 0, 0, 0, 1, 1])
    f, r = pair_roles(image_forget, level, "retain")
    np.testing.assert_array_equal(f, [1, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(r, [0, 0, 1, 1, 1, 1])
    f, r = pair_roles(image_forget, level, "forget")
    np.testing.assert_array_equal(f, [1, 1, 1, 1, 0, 0])
    np.testing.assert_array_equal(r, [0, 0, 0, 0, 1, 1])
    with pytest.raises(ValueError, match="group_captions must be one of"):
        pair_roles(image_forget, level, "drop")
