"""What a TFDS data source returned, stored without pickles: a JSON tree
describing every value (its Python or numpy type, dtype and shape), the
bytes of all arrays in one buffer in an ``.npz`` beside it (one member:
small arrays each in a member of their own would cost more than their
data). Used by ``make_fixture.py`` (in
the TensorFlow venv, where it records ``tfds.data_source``) and by the
tests (which compare ``arrayfs.tfds.data_source`` against it, type for
type and value for value). numpy only.
"""

from __future__ import annotations

import base64
import json

import numpy as np


def describe(value, key: str, arrays: bytearray):
    """A JSON-able description of ``value``; array bytes are appended to
    ``arrays`` (``key`` names the value in errors)."""
    if isinstance(value, dict):
        return {"dict": {k: describe(v, f"{key}/{k}", arrays) for k, v in value.items()}}
    if isinstance(value, (list, tuple)):
        kind = "list" if isinstance(value, list) else "tuple"
        return {kind: [describe(v, f"{key}/{i}", arrays) for i, v in enumerate(value)]}
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "O":
            return {"object_array": [describe(v, f"{key}/{i}", arrays) for i, v in enumerate(value.ravel())],
                    "shape": list(value.shape)}
        return {"ndarray": _put(arrays, value), "dtype": value.dtype.str, "shape": list(value.shape)}
    if isinstance(value, np.generic):
        return {"numpy_scalar": _put(arrays, np.asarray(value)), "dtype": value.dtype.str}
    if isinstance(value, bool):
        return {"bool": value}
    if isinstance(value, int):
        return {"int": value}
    if isinstance(value, float):
        return {"float": value.hex()}
    if isinstance(value, bytes):
        return {"bytes": base64.b64encode(value).decode()}
    if isinstance(value, str):
        return {"str": value}
    if value is None:
        return {"none": None}
    raise TypeError(f"{key}: cannot describe a {type(value).__name__}")


def _put(arrays: bytearray, value: np.ndarray) -> list:
    start = len(arrays)
    arrays += np.ascontiguousarray(value).tobytes()
    return [start, len(arrays)]


def _get(arrays: bytes, where, dtype: str, shape=()) -> np.ndarray:
    a, b = where
    return np.frombuffer(arrays[a:b], dtype=np.dtype(dtype)).reshape(shape).copy()


def save(path_prefix: str, tree: dict) -> None:
    """Write ``tree`` (any nesting of what :func:`describe` takes) to
    ``path_prefix.json`` and ``path_prefix.npz``."""
    arrays = bytearray()
    desc = describe(tree, "", arrays)
    with open(path_prefix + ".json", "w") as f:
        json.dump(desc, f, indent=None, separators=(",", ":"))
        f.write("\n")
    np.savez_compressed(path_prefix + ".npz", arrays=np.frombuffer(bytes(arrays), dtype=np.uint8))


def _build(desc, arrays):
    (kind, body), *rest = desc.items()
    if kind == "dict":
        return {k: _build(v, arrays) for k, v in body.items()}
    if kind in ("list", "tuple"):
        out = [_build(v, arrays) for v in body]
        return out if kind == "list" else tuple(out)
    if kind == "object_array":
        out = np.empty(len(body), dtype=object)
        for i, v in enumerate(body):
            out[i] = _build(v, arrays)
        return out.reshape(desc["shape"])
    if kind == "ndarray":
        return _get(arrays, body, desc["dtype"], desc["shape"])
    if kind == "numpy_scalar":
        return _get(arrays, body, desc["dtype"])[()]
    if kind == "bool" or kind == "int" or kind == "str":
        return body
    if kind == "float":
        return float.fromhex(body)
    if kind == "bytes":
        return base64.b64decode(body)
    if kind == "none":
        return None
    raise ValueError(f"unknown kind {kind!r}")


def load(path_prefix: str):
    """The tree :func:`save` wrote, rebuilt with the same types."""
    with open(path_prefix + ".json") as f:
        desc = json.load(f)
    with np.load(path_prefix + ".npz", allow_pickle=False) as z:
        arrays = z["arrays"].tobytes()
    return _build(desc, arrays)


def assert_same(got, want, where: str = "") -> None:
    """``got`` equals ``want`` in structure, Python/numpy type, dtype,
    shape and value (floats bit for bit; NaN equals NaN)."""
    assert type(got) is type(want), f"{where}: type {type(got).__name__} != {type(want).__name__}"
    if isinstance(want, dict):
        assert list(got) == list(want), f"{where}: keys {list(got)} != {list(want)}"
        for k in want:
            assert_same(got[k], want[k], f"{where}/{k}")
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want), f"{where}: length {len(got)} != {len(want)}"
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same(g, w, f"{where}/{i}")
    elif isinstance(want, np.ndarray):
        assert got.dtype == want.dtype, f"{where}: dtype {got.dtype} != {want.dtype}"
        assert got.shape == want.shape, f"{where}: shape {got.shape} != {want.shape}"
        if want.dtype.kind == "O":
            for i, (g, w) in enumerate(zip(got.ravel(), want.ravel())):
                assert_same(g, w, f"{where}[{i}]")
        else:
            assert np.array_equal(got, want, equal_nan=want.dtype.kind in "fc"), f"{where}: values differ"
    elif isinstance(want, np.generic):
        assert got.dtype == want.dtype, f"{where}: dtype {got.dtype} != {want.dtype}"
        assert np.array_equal(got, want, equal_nan=want.dtype.kind in "fc"), f"{where}: {got!r} != {want!r}"
    elif isinstance(want, float):
        assert got.hex() == want.hex() or (got != got and want != want), f"{where}: {got!r} != {want!r}"
    else:
        assert got == want, f"{where}: {got!r} != {want!r}"
