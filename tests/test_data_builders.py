"""Generated shapes set and user image folders, built through tfds (array_record), and both
through the data-set registry (``load_data``, ``stored_image_size``)."""

import os

import ml_collections
import numpy as np
import pytest
from PIL import Image

from hac_jax.data import SHAPES, load_data, load_prepared, prepare_image_folder, prepare_shapes
from hac_jax.data.datasets import stored_image_size
from hac_jax.data.image_folder import DEFAULT_IMAGE_SIZE, scan_image_folder

# ------------------------------------------------------------------------------------------------
# Generated shapes
# ------------------------------------------------------------------------------------------------


def _all_images(ds, split):
    return np.stack([ds.example(split, i)["image"] for i in range(ds.num_examples(split))])


def test_shapes_are_deterministic_balanced_and_hierarchical(tmp_path):
    kw = dict(image_size=16, train_per_class=6, test_per_class=2)
    a = prepare_shapes(tmp_path / "a", **kw)
    b = prepare_shapes(tmp_path / "b", **kw)
    c = prepare_shapes(tmp_path / "c", seed=1, **kw)
    assert a.hierarchy == SHAPES and SHAPES.num_groups == 2
    assert {s: a.num_examples(s) for s in a.splits} == {"train": 30, "test": 10}
    assert a.image_shape == (16, 16, 3)
    images = _all_images(a, "train")
    np.testing.assert_array_equal(images, _all_images(b, "train"))
    assert not np.array_equal(images, _all_images(c, "train"))
    np.testing.assert_array_equal(np.bincount(a.labels("train")), np.full(5, 6))
    for i in range(a.num_examples("train")):
        rec = a.example("train", i)
        assert rec["group"] == SHAPES.class_group[rec["label"]]
    # Every image has a foreground and a background (not a flat colour).
    assert np.all(images.reshape(30, -1).std(axis=1) > 10)
    assert not np.array_equal(images, _all_images(a, "test")[:1].repeat(30, 0))


def test_shapes_classes_differ_in_form_not_in_colour(tmp_path):
    ds = prepare_shapes(tmp_path, image_size=32, train_per_class=40, test_per_class=0)
    assert ds.splits == ("train",)
    images = _all_images(ds, "train").astype(np.float32) / 255
    labels = ds.labels("train")
    # Share of the image covered by the brighter colour, per class: patterns cover about half,
    # the filled shapes much less; the foreground/background split is from the pixel values.
    lum = images.mean(-1).reshape(len(images), -1)
    cover = (lum > (lum.min(1, keepdims=True) + lum.max(1, keepdims=True)) / 2).mean(1)
    per_class = np.array([cover[labels == k].mean() for k in range(5)])
    patterns = [SHAPES.class_id("stripes"), SHAPES.class_id("checkerboard")]
    shapes = [SHAPES.class_id(n) for n in ("circle", "square", "triangle")]
    assert per_class[patterns].min() > 0.4 and per_class[shapes].max() < 0.35
    # The foreground colour carries no class information (one distribution for every class):
    # per-image U(0.55, 1) per channel, sd 0.13, so a mean over 40 images has sd ~0.02.
    fg_mask = lum > (lum.min(1, keepdims=True) + lum.max(1, keepdims=True)) / 2
    flat = images.reshape(len(images), -1, 3)
    fg = np.stack([flat[i][fg_mask[i]].mean(0) for i in range(len(images))])
    class_fg = np.stack([fg[labels == k].mean(0) for k in range(5)])
    assert np.ptp(class_fg, axis=0).max() < 0.12


def test_shapes_prepare_twice_reuses(tmp_path):
    a = prepare_shapes(tmp_path, image_size=8, train_per_class=2, test_per_class=1)
    f = next(f for f in os.listdir(a.path) if "train.array_record" in f)
    stamp = os.stat(os.path.join(a.path, f)).st_mtime_ns
    b = prepare_shapes(tmp_path, image_size=8, train_per_class=2, test_per_class=1)
    assert b.path == a.path and os.stat(os.path.join(a.path, f)).st_mtime_ns == stamp
    with pytest.raises(ValueError, match="image_size must be at least 8"):
        prepare_shapes(tmp_path, image_size=4)


# ------------------------------------------------------------------------------------------------
# Image folders
# ------------------------------------------------------------------------------------------------

# class -> (group, colour); every image of a class is one flat colour so stored pixels can be
# traced back to their class.
COLOURS = {
    "cat": ("animals", (200, 30, 30)),
    "dog": ("animals", (30, 200, 30)),
    "car": ("vehicles", (30, 30, 200)),
}


def _write_images(folder, colour, n, *, start=0):
    os.makedirs(folder, exist_ok=True)
    for i in range(start, start + n):
        size = (20 + 3 * i, 12 + i)  # various sizes and aspect ratios
        if i % 3 == 0:
            Image.new("RGB", size, colour).save(os.path.join(folder, f"img{i}.png"))
        elif i % 3 == 1:  # RGBA PNG
            Image.new("RGBA", size, (*colour, 255)).save(os.path.join(folder, f"img{i}.png"))
        else:  # JPEG (lossy: compared with a tolerance)
            Image.new("RGB", size, colour).save(os.path.join(folder, f"img{i}.jpg"), quality=95)


def _nested(root, n=5):
    for cls, (group, colour) in COLOURS.items():
        _write_images(os.path.join(root, group, cls), colour, n)
    with open(os.path.join(root, "animals", "cat", "notes.txt"), "w") as f:
        f.write("ignored")
    return root


def _check_colours(ds, split):
    for i in range(ds.num_examples(split)):
        rec = ds.example(split, i)
        cls = ds.hierarchy.classes[rec["label"]]
        expected = np.array(COLOURS[cls][1])
        assert np.abs(rec["image"].reshape(-1, 3).mean(0) - expected).max() < 4, rec["key"]


def test_nested_folders_give_the_hierarchy(tmp_path):
    root = _nested(tmp_path / "zoo")
    ds = prepare_image_folder(root, tmp_path / "data", image_size=16, test_fraction=0.4)
    h = ds.hierarchy
    assert h.root == "zoo" and h.groups == ("animals", "vehicles")
    assert h.classes == ("cat", "dog", "car")
    assert h.parent("dog") == "animals" and h.parent("car") == "vehicles"
    assert ds.image_shape == (16, 16, 3)
    # 5 images per class, 2 of them (40 %) held out per class.
    assert ds.num_examples("train") == 9 and ds.num_examples("test") == 6
    np.testing.assert_array_equal(np.bincount(ds.labels("test")), [2, 2, 2])
    train_keys = {ds.example("train", i)["key"] for i in range(9)}
    test_keys = {ds.example("test", i)["key"] for i in range(6)}
    assert not train_keys & test_keys and len(train_keys | test_keys) == 15
    for split in ds.splits:
        _check_colours(ds, split)
        for i in range(ds.num_examples(split)):
            rec = ds.example(split, i)
            assert rec["group"] == h.class_group[rec["label"]]
            key = rec["key"].decode()
            assert key.split(os.sep)[:2] == [h.groups[rec["group"]], h.classes[rec["label"]]]
    # Same folder again: reused. A changed folder: a fresh copy.
    again = prepare_image_folder(root, tmp_path / "data", image_size=16, test_fraction=0.4)
    assert again.path == ds.path
    assert load_prepared(ds.path).hierarchy == h
    _write_images(root / "vehicles" / "car", COLOURS["car"][1], 1, start=5)
    changed = prepare_image_folder(root, tmp_path / "data", image_size=16, test_fraction=0.4)
    assert changed.path != ds.path
    assert changed.num_examples("train") + changed.num_examples("test") == 16


def test_split_folders_and_flat_layout(tmp_path):
    root = tmp_path / "splits"
    for split, n in (("train", 3), ("test", 2)):
        for cls in ("cat", "dog"):
            _write_images(root / split / cls, COLOURS[cls][1], n)
    ds = prepare_image_folder(root, tmp_path / "data", image_size=8, root_name="pets")
    assert ds.hierarchy.is_flat and ds.hierarchy.root == "pets"
    assert ds.hierarchy.classes == ("cat", "dog")
    assert ds.num_examples("train") == 6 and ds.num_examples("test") == 4
    _check_colours(ds, "test")
    no_test = prepare_image_folder(root / "train", tmp_path / "data", test_fraction=0.0)
    assert no_test.splits == ("train",)


def test_scan_is_deterministic(tmp_path):
    root = _nested(tmp_path / "zoo", n=10)
    a = scan_image_folder(root, test_fraction=0.3)
    b = scan_image_folder(root, test_fraction=0.3)
    assert a.files == b.files and len(a.files["test"]) == 9


@pytest.mark.parametrize("case", ["missing", "no_classes", "empty_class", "loose_images", "mixed"])
def test_folder_layout_errors(tmp_path, case):
    root = tmp_path / "root"
    if case == "missing":
        with pytest.raises(FileNotFoundError, match="does not exist"):
            prepare_image_folder(root, tmp_path / "data")
        return
    os.makedirs(root)
    if case == "no_classes":
        match = "no classes in"
    elif case == "empty_class":
        _write_images(root / "animals" / "cat", COLOURS["cat"][1], 2)
        os.makedirs(root / "animals" / "dog")
        match = "empty class folder .*dog"
    elif case == "loose_images":
        _write_images(root, COLOURS["cat"][1], 1)
        match = "holds image files directly"
    else:
        _write_images(root / "animals" / "cat", COLOURS["cat"][1], 2)
        _write_images(root / "car", COLOURS["car"][1], 2)
        match = "mixes class folders"
    with pytest.raises(ValueError, match=match):
        prepare_image_folder(root, tmp_path / "data")


def test_unreadable_image_is_named_and_nothing_is_prepared(tmp_path):
    root = _nested(tmp_path / "zoo", n=2)
    (root / "vehicles" / "car" / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match=r"cannot read image .*broken\.png"):
        prepare_image_folder(root, tmp_path / "data", image_size=8)
    prepared = [d for d, _, files in os.walk(tmp_path / "data") if "dataset_info.json" in files]
    assert prepared == []


# ------------------------------------------------------------------------------------------------
# Through the data-set registry (config.data blocks)
# ------------------------------------------------------------------------------------------------


def _data_cfg(**keys):
    return ml_collections.ConfigDict(dict(val_fraction=0.0, **keys))


def _stamps(path):
    return {f: os.stat(os.path.join(path, f)).st_mtime_ns for f in sorted(os.listdir(path))}


def test_an_image_folder_is_prepared_once_per_content(tmp_path):
    root = _nested(tmp_path / "zoo", n=5)
    cfg = _data_cfg(
        name="image_folder", root=str(root), data_dir=str(tmp_path / "data"), image_size=12
    )
    assert stored_image_size(cfg) == 12
    assert not (tmp_path / "data").exists()  # the size is known before anything is prepared
    first = load_data(cfg)
    assert first.image_shape == (12, 12, 3)
    # 5 images per class, the default 20 % of each held out as test.
    assert first.num_examples("train") == 12 and first.num_examples("test") == 3
    stamps = _stamps(first.path)
    again = load_data(cfg)
    assert again.path == first.path and _stamps(first.path) == stamps
    # Touching one file (same bytes, new modification time) counts as a change.
    image = root / "animals" / "cat" / "img0.png"
    mtime = os.stat(image).st_mtime_ns
    os.utime(image, ns=(mtime, mtime + 10**9))
    touched = load_data(cfg)
    assert touched.path != first.path and _stamps(first.path) == stamps
    cfg.test_fraction = 0.4
    assert load_data(cfg).num_examples("test") == 6


def test_stored_image_size_of_each_data_set(tmp_path):
    root = _nested(tmp_path / "zoo", n=2)
    folder = _data_cfg(name="image_folder", root=str(root), data_dir=str(tmp_path / "data"))
    assert stored_image_size(folder) == DEFAULT_IMAGE_SIZE == load_data(folder).image_shape[0]
    shapes = _data_cfg(
        name="shapes",
        data_dir=str(tmp_path / "data"),
        shapes=dict(image_size=8, train_per_class=2, test_per_class=1, seed=0),
    )
    assert stored_image_size(shapes) == 8
    prepared = _data_cfg(name="prepared", path=load_data(shapes).path)
    assert stored_image_size(prepared) == 8
    assert stored_image_size(_data_cfg(name="fashion_mnist")) == 28
    with pytest.raises(ValueError, match="data.root is not set"):
        stored_image_size(_data_cfg(name="image_folder", root=None))
    with pytest.raises(ValueError, match="unknown data set 'nosuch'"):
        stored_image_size(_data_cfg(name="nosuch"))
