"""One record as the JSON object ``arrayfs cat --decode`` prints (and a
mount's ``.decoded/<name>.json`` holds).

Numbers and text are themselves; a feature of an Example holding one value
is that value, one holding several is a list; maps stay maps (a nested
TFDS ``FeaturesDict`` is a nested object); arrays are nested lists of
their shape; a binary value is a short description such as ``{"bytes":
1234, "type": "png", "shape": [28, 28, 1]}``. Non-finite floats, which
JSON has no literal for, are the strings ``"nan"``, ``"inf"``, ``"-inf"``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np

from .errors import RecordDecodeError
from .sniff import sniff_content, sniff_format

__all__ = ["to_json", "json_line", "json_value", "describe_bytes", "as_text", "msgpack_values"]

# Pillow modes -> channels of the decoded image.
_CHANNELS = {"1": 1, "L": 1, "P": 1, "I": 1, "F": 1, "I;16": 1, "I;16B": 1, "I;16L": 1,
             "LA": 2, "La": 2, "PA": 2, "RGB": 3, "YCbCr": 3, "LAB": 3, "HSV": 3,
             "RGBA": 4, "RGBa": 4, "RGBX": 4, "CMYK": 4}


def _image_shape(data: bytes) -> list | None:
    """``[height, width, channels]`` from an image's header (Pillow reads
    the header only), or ``None`` when Pillow is missing or cannot tell."""
    try:
        from PIL import Image
    except ImportError:
        return None
    import io

    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            channels = _CHANNELS.get(im.mode)
            frames = getattr(im, "n_frames", 1)
    except Exception:  # a truncated or odd header: no shape, not an error
        return None
    if channels is None:
        return None
    shape = [h, w, channels]
    return [frames, *shape] if frames > 1 else shape


def _npy_shape(data: bytes) -> list | None:
    import io

    try:
        f = io.BytesIO(data)
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, _ = read(f)
    except Exception:  # not a well-formed header: no shape
        return None
    return list(shape)


def describe_bytes(data) -> dict:
    """``{"bytes": size, "type": kind}`` for a binary value, with
    ``"shape"`` for images (``[height, width, channels]``, frames first
    for an animated GIF) and ``.npy`` arrays. ``type`` is an extension of
    :func:`~arrayfs.encoding.sniff.sniff_content`, else ``"binary"``."""
    data = bytes(data)
    kind = sniff_content(data)
    out = {"bytes": len(data), "type": kind or "binary"}
    shape = None
    if kind in ("png", "jpg", "gif", "webp"):
        shape = _image_shape(data)
    elif kind == "npy":
        shape = _npy_shape(data)
    if shape is not None:
        out["shape"] = shape
    return out


def as_text(data) -> str | None:
    """``data`` as text when it is UTF-8 with no control character other
    than tab, newline and carriage return; else ``None`` (it is binary)."""
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        return None
    if any(c < " " and c not in "\t\n\r" or c == "\x7f" for c in text):
        return None
    return text


def _number(x):
    if isinstance(x, float) and not math.isfinite(x):
        return "nan" if x != x else ("inf" if x > 0 else "-inf")
    return x


def _leaves(nested, fn):
    """``fn`` applied to every leaf of ``ndarray.tolist()``'s output."""
    if isinstance(nested, list):
        return [_leaves(v, fn) for v in nested]
    return fn(nested)


def json_value(value):
    """A decoded value (nested dicts and lists, numpy arrays and scalars,
    Python scalars, ``bytes``, ``str``) as JSON-able Python objects."""
    if isinstance(value, Mapping):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        text = as_text(value)
        return text if text is not None else describe_bytes(value)
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "O" or value.dtype.kind in "SU":
            return _leaves(value.tolist(), json_value)
        if value.dtype.kind == "f":
            return _leaves(value.tolist(), _number)
        return value.tolist()
    if isinstance(value, np.generic):
        return json_value(value.item())
    if isinstance(value, float):
        return _number(value)
    if value is None or isinstance(value, (bool, int, str)):
        return value
    raise TypeError(f"cannot show a {type(value).__name__} as JSON")


def _example_json(record: bytes) -> dict:
    from .example import read_features

    return read_features(record, _example_object)


def _example_object(fmap) -> dict:
    from .example import feature_values

    out = {}
    for key, feature in fmap.items():
        values = json_value(feature_values(feature, key))
        out[key] = values[0] if len(values) == 1 else values
    return out


def msgpack_values(record: bytes):
    """A msgpack record unpacked, with maps in the msgpack-numpy layout
    (what :func:`~arrayfs.encoding.encode_msgpack` writes) as arrays and
    binary values kept as ``bytes``.

    Raises:
        RecordDecodeError: not msgpack, or a malformed array map.
    """
    from .basic import ndarray_from_map, unpack_msgpack

    def convert(obj):
        if isinstance(obj, Mapping):
            arr = ndarray_from_map(obj)
            return arr if arr is not None else {str(k): convert(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [convert(v) for v in obj]
        return obj

    return convert(unpack_msgpack(record))


def _json_json(record: bytes):
    import json

    try:
        return json.loads(record)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RecordDecodeError("json", str(exc)) from exc


def to_json(record, decode: str | Callable = "auto"):
    """The JSON object ``arrayfs cat --decode DECODE`` prints for one record.

    Args:
        record: the record's bytes.
        decode: ``"auto"`` (:func:`~arrayfs.encoding.sniff.sniff_format` of
            this record alone: a tool sniffing a dataset passes the format
            it found), ``"example"`` (a feature with one value is that value,
            several are a list), ``"msgpack"``, ``"json"`` (the record's
            own JSON), ``"raw"`` (the record described as a binary value),
            or a callable ``bytes -> decoded tree`` such as
            :meth:`arrayfs.tfds.TfdsFeatures.decode_for_display` (its values
            through :func:`json_value`).

    Raises:
        RecordDecodeError: the record is not of the format named.
        ValueError: an unknown ``decode`` name.
    """
    if callable(decode):
        return json_value(decode(record))
    if decode == "auto":
        decode = sniff_format([record])
    if decode == "example":
        return _example_json(record)
    if decode == "msgpack":
        return json_value(msgpack_values(record))
    if decode == "json":
        return _json_json(record)
    if decode == "raw":
        return describe_bytes(record)
    raise ValueError(f"decode must be 'auto', 'example', 'msgpack', 'json', 'raw' or a callable, got {decode!r}")


def json_line(obj) -> bytes:
    """The one text form of a :func:`to_json` object: compact UTF-8 JSON
    (non-ASCII text as itself) and a newline, what ``arrayfs cat`` prints per
    record and ``.decoded/<name>.json`` holds (so ``stat`` sizes are exact).

    Raises:
        ValueError: ``obj`` holds a non-finite float (``to_json`` never
            makes one).
    """
    import json

    return (json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":")) + "\n").encode("utf-8")
