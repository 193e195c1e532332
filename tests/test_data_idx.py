"""IDX reader/writer: files written byte by byte here, gzipped and raw, and damaged ones."""

import gzip
import struct

import numpy as np
import pytest

from hac_jax.data.idx import IdxFormatError, read_idx, write_idx


def _idx_bytes(code: int, shape: tuple[int, ...], payload: bytes) -> bytes:
    """An IDX file assembled by hand from the format description (not with write_idx)."""
    return bytes([0, 0, code, len(shape)]) + struct.pack(f">{len(shape)}I", *shape) + payload


@pytest.mark.parametrize("gz", [False, True])
def test_reads_hand_written_ubyte_images(tmp_path, gz):
    values = list(range(2 * 3 * 4))
    raw = _idx_bytes(0x08, (2, 3, 4), bytes(values))
    path = tmp_path / ("images.gz" if gz else "images")
    path.write_bytes(gzip.compress(raw) if gz else raw)
    arr = read_idx(path, ndim=3, dtype=np.uint8)
    assert arr.dtype == np.uint8 and arr.shape == (2, 3, 4)
    np.testing.assert_array_equal(arr.ravel(), values)
    assert arr[1, 2, 3] == 23  # C order


def test_big_endian_multibyte_values(tmp_path):
    values = [1, 300, -2, 32767]
    path = tmp_path / "shorts"
    path.write_bytes(_idx_bytes(0x0B, (4,), struct.pack(">4h", *values)))
    arr = read_idx(path)
    assert arr.dtype == np.int16
    np.testing.assert_array_equal(arr, values)


def test_gzip_is_detected_by_content_not_name(tmp_path):
    raw = _idx_bytes(0x08, (3,), bytes([7, 8, 9]))
    (tmp_path / "labels").write_bytes(gzip.compress(raw))  # gzipped, no .gz
    (tmp_path / "labels.gz").write_bytes(raw)  # plain, with .gz
    np.testing.assert_array_equal(read_idx(tmp_path / "labels"), [7, 8, 9])
    np.testing.assert_array_equal(read_idx(tmp_path / "labels.gz"), [7, 8, 9])


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("name", ["a.idx", "a.idx.gz"])
def test_write_read_round_trip(tmp_path, dtype, name):
    rng = np.random.default_rng(0)
    arr = (rng.normal(size=(5, 2, 3)) * 50).astype(dtype)
    write_idx(tmp_path / name, arr)
    out = read_idx(tmp_path / name)
    assert out.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(out, arr)
    is_gz = (tmp_path / name).read_bytes()[:2] == b"\x1f\x8b"
    assert is_gz == name.endswith(".gz")


@pytest.mark.parametrize(
    "content, message",
    [
        (_idx_bytes(0x08, (4,), bytes(4))[:2], "too short"),
        (b"\x01\x00\x08\x01" + struct.pack(">I", 1) + b"\x00", "bad magic"),
        (b"\x00\x00\x07\x01" + struct.pack(">I", 1) + b"\x00", "bad magic"),
        (_idx_bytes(0x08, (4,), bytes(4))[:6], "truncated header"),
        (_idx_bytes(0x08, (2, 3), bytes(5)), "truncated data"),
        (_idx_bytes(0x08, (2,), bytes(3)), "trailing bytes"),
        (b"\x00\x00\x08\x00", "0 dimensions"),
        (gzip.compress(_idx_bytes(0x08, (100,), bytes(100)))[:-12], "broken gzip"),
    ],
)
def test_damaged_files_raise_idx_format_error(tmp_path, content, message):
    path = tmp_path / "bad"
    path.write_bytes(content)
    with pytest.raises(IdxFormatError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_expected_rank_and_type_are_checked(tmp_path):
    path = tmp_path / "labels"
    path.write_bytes(_idx_bytes(0x08, (3,), bytes(3)))
    with pytest.raises(IdxFormatError, match="1 dimensions .* expected 3"):
        read_idx(path, ndim=3)
    with pytest.raises(IdxFormatError, match="expected int32"):
        read_idx(path, dtype=np.int32)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="IDX file not found"):
        read_idx(tmp_path / "nope")
