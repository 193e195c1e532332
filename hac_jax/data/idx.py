"""Reading and writing IDX files (the MNIST / Fashion-MNIST array format), gzipped or not.

Layout (big-endian): two zero bytes, a type code, the number of dimensions ``n``, then ``n``
uint32 sizes, then the data in C order. Every check that can fail on a damaged file (magic,
type code, sizes, truncation, trailing bytes, broken gzip stream) raises :class:`IdxFormatError`
naming the file, so a corrupt download is caught before any training.
"""

from __future__ import annotations

import gzip
import os
import zlib

import numpy as np

from hac_jax.files import write_text

__all__ = ["IdxFormatError", "read_idx", "write_idx"]

# IDX type code -> big-endian numpy dtype.
_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


class IdxFormatError(ValueError):
    """A file is not a valid IDX file."""


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        raw = f.read()
    # Decide by content, not by name: some mirrors gunzip files but keep the ".gz".
    if raw[:2] == _GZIP_MAGIC:
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise IdxFormatError(
                f"{path}: broken gzip stream ({e}); download the file again"
            ) from e
    return raw


def read_idx(
    path: str | os.PathLike, *, ndim: int | None = None, dtype: np.dtype | str | None = None
) -> np.ndarray:
    """Reads one IDX file (``.gz`` or raw) into a native-endian numpy array.

    Args:
      path: the file.
      ndim: expected number of dimensions (e.g. 3 for images, 1 for labels); checked if given.
      dtype: expected element type (e.g. ``np.uint8``); checked if given.

    Returns:
      The array, shape as stored in the header.

    Raises:
      FileNotFoundError: the file does not exist.
      IdxFormatError: bad magic / type code / dimensions, truncated data or trailing bytes.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"IDX file not found: {path}")
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise IdxFormatError(f"{path}: {len(raw)} bytes, too short for an IDX header")
    zero0, zero1, code, nd = raw[0], raw[1], raw[2], raw[3]
    if zero0 != 0 or zero1 != 0 or code not in _DTYPES:
        raise IdxFormatError(
            f"{path}: bad magic number 0x{raw[:4].hex()} (expected 0x0000TTNN with a type code "
            f"TT in {[hex(c) for c in _DTYPES]}); not an IDX file"
        )
    if nd == 0:
        raise IdxFormatError(f"{path}: header declares 0 dimensions")
    header = 4 + 4 * nd
    if len(raw) < header:
        raise IdxFormatError(f"{path}: truncated header ({len(raw)} bytes, need {header})")
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=nd, offset=4))
    file_dtype = _DTYPES[code]
    expected = header + int(np.prod(shape, dtype=np.int64)) * file_dtype.itemsize
    if len(raw) < expected:
        raise IdxFormatError(
            f"{path}: truncated data: header says shape {shape} ({expected} bytes in all), "
            f"file has {len(raw)} bytes; download the file again"
        )
    if len(raw) > expected:
        raise IdxFormatError(
            f"{path}: {len(raw) - expected} unexpected trailing bytes after shape {shape}"
        )
    if ndim is not None and nd != ndim:
        raise IdxFormatError(f"{path}: {nd} dimensions {shape}, expected {ndim}")
    if dtype is not None and file_dtype.newbyteorder("=") != np.dtype(dtype):
        raise IdxFormatError(f"{path}: element type {file_dtype.name}, expected {np.dtype(dtype)}")
    arr = np.frombuffer(raw, dtype=file_dtype, offset=header).reshape(shape)
    return arr.astype(file_dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: np.ndarray, *, compress: bool | None = None) -> None:
    """Writes ``array`` as an IDX file; gzipped when ``compress`` (default: name ends in .gz).

    The file is written to a temporary name and renamed, so a failure leaves no partial file.
    """
    path = os.fspath(path)
    array = np.asarray(array)
    codes = {v.newbyteorder("="): k for k, v in _DTYPES.items()}
    if array.dtype not in codes:
        raise ValueError(f"IDX cannot store dtype {array.dtype}; use one of {list(codes)}")
    if array.ndim == 0 or array.ndim > 255:
        raise ValueError(f"IDX stores 1 to 255 dimensions, got {array.ndim}")
    be = array.dtype.newbyteorder(">")
    payload = (
        bytes([0, 0, codes[array.dtype], array.ndim])
        + np.asarray(array.shape, dtype=">u4").tobytes()
        + np.ascontiguousarray(array, dtype=be).tobytes()
    )
    if compress is None:
        compress = path.endswith(".gz")
    if compress:
        payload = gzip.compress(payload, mtime=0)
    write_text(path, payload)
