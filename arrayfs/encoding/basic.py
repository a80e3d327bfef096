"""The decoders and encoders of plain record formats: raw bytes, msgpack,
JSON, ``.npy`` and ``.npz`` (numpy and msgpack only). The table of
``decode`` names is in :mod:`arrayfs.encoding`."""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from .errors import RecordDecodeError

__all__ = [
    "ndarray_from_map",
    "decode_raw",
    "decode_msgpack",
    "decode_json",
    "decode_npy",
    "decode_npz",
    "encode_msgpack",
    "encode_npz",
]

def decode_raw(record: bytes) -> dict:
    """``{"data": uint8 array of shape (len(record),)}``, a view of ``record``."""
    return {"data": np.frombuffer(record, dtype=np.uint8)}


def _to_array(value: Any) -> np.ndarray:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return np.frombuffer(value, dtype=np.uint8)
    return np.asarray(value)


def ndarray_from_map(value: Mapping) -> np.ndarray | None:
    """The array a msgpack-numpy map (``{"nd": True, "type", "shape",
    "data"}``) holds, or ``None`` for any other map. Raises
    :class:`RecordDecodeError` for an object dtype or a size mismatch."""
    # msgpack-numpy writes bytes keys unless raw=False decoding made them str;
    # we decode with raw=False, so keys are str here.
    if value.get("nd") is not True or not {"type", "shape", "data"} <= value.keys():
        return None
    dtype = np.dtype(value["type"])
    if dtype.hasobject:
        raise RecordDecodeError("msgpack", "object arrays are not allowed")
    shape = tuple(int(d) for d in value["shape"])
    data = value["data"]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if not isinstance(data, (bytes, bytearray)) or len(data) != expected:
        raise RecordDecodeError(
            "msgpack", f"array of shape {shape} and dtype {dtype} needs {expected} bytes, "
            f"got {len(data) if isinstance(data, (bytes, bytearray)) else type(data).__name__}"
        )
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def _msgpack_value(value: Any) -> np.ndarray:
    if isinstance(value, Mapping):
        arr = ndarray_from_map(value)
        if arr is None:
            raise RecordDecodeError(
                "msgpack", f"nested map with keys {sorted(map(str, value))} is not an array"
            )
        return arr
    return _to_array(value)


def unpack_msgpack(record: bytes):
    """``msgpack.unpackb`` of a record (text as ``str``, any map key).

    Raises:
        RecordDecodeError: not one msgpack value.
    """
    import msgpack

    try:
        return msgpack.unpackb(record, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types, some with no message
        raise RecordDecodeError("msgpack", str(exc) or type(exc).__name__) from exc


def decode_msgpack(record: bytes) -> dict:
    """Decode a msgpack map of arrays (see the module table).

    Raises:
        RecordDecodeError: not msgpack, or a value that is not an array.
    """
    obj = unpack_msgpack(record)
    if isinstance(obj, Mapping):
        arr = ndarray_from_map(obj)
        if arr is not None:
            return {"data": arr}
        return {str(k): _msgpack_value(v) for k, v in obj.items()}
    return {"data": _to_array(obj)}


def decode_json(record: bytes) -> dict:
    """Decode a UTF-8 JSON object; each value through ``np.asarray``.

    Raises:
        RecordDecodeError: not UTF-8 JSON.
    """
    try:
        obj = json.loads(record)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RecordDecodeError("json", str(exc)) from exc
    if isinstance(obj, dict):
        return {k: np.asarray(v) for k, v in obj.items()}
    return {"data": np.asarray(obj)}


def decode_npy(record: bytes) -> dict:
    """Decode one ``.npy`` file to ``{"data": array}`` (no pickles).

    Raises:
        RecordDecodeError: not a ``.npy`` file, or an object array.
    """
    try:
        arr = np.load(io.BytesIO(record), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise RecordDecodeError("npy", str(exc)) from exc
    if not isinstance(arr, np.ndarray):
        raise RecordDecodeError("npy", "record is an .npz archive; use decode='npz'")
    return {"data": arr}


def decode_npz(record: bytes) -> dict:
    """Decode one ``.npz`` archive to ``{member: array}`` (no pickles).

    Raises:
        RecordDecodeError: not a ``.npz`` archive, or an object array.
    """
    try:
        with np.load(io.BytesIO(record), allow_pickle=False) as archive:
            if not hasattr(archive, "files"):
                raise RecordDecodeError("npz", "record is a single .npy array; use decode='npy'")
            return {name: archive[name] for name in archive.files}
    except RecordDecodeError:
        raise
    except (ValueError, OSError, EOFError) as exc:
        raise RecordDecodeError("npz", str(exc)) from exc


def encode_msgpack(example: Mapping[str, Any]) -> bytes:
    """Encode ``{name: array-like}`` as a msgpack map that ``"msgpack"`` decodes.

    Arrays are stored exactly (dtype, shape, raw little- or big-endian bytes
    as numpy holds them) in the msgpack-numpy layout; Python scalars and
    strings are stored as themselves.

    Raises:
        ValueError: an object array (it cannot be stored without pickling).
    """
    import msgpack

    out = {}
    for key, value in example.items():
        if isinstance(value, np.generic):
            value = np.asarray(value)
        if isinstance(value, np.ndarray):
            if value.dtype.hasobject:
                raise ValueError(f"field {key!r}: object arrays cannot be encoded")
            value = {
                "nd": True,
                "type": value.dtype.str,
                "kind": "",
                "shape": list(value.shape),
                "data": np.ascontiguousarray(value).tobytes(),
            }
        out[str(key)] = value
    return msgpack.packb(out, use_bin_type=True)


def encode_npz(example: Mapping[str, Any]) -> bytes:
    """Encode ``{name: array-like}`` as an uncompressed ``.npz`` that ``"npz"`` decodes."""
    buf = io.BytesIO()
    np.savez(buf, **{str(k): np.asarray(v) for k, v in example.items()})
    return buf.getvalue()
