"""Decoding a serialized ``tf.train.Example`` by a TFDS feature tree, to
exactly what TFDS's NumPy path (``tfds.data_source``) returns.

Facts from TFDS's ``core/example_serializer.py`` (how features are
written), ``core/example_parser.py`` (``ExampleParserNp``),
``core/features/top_level_feature.py`` (``_decode_feature``), and each
feature's ``decode_example_np`` / ``decode_batch_example_np``:

* Nested ``FeaturesDict`` keys are joined with ``/`` in the Example.
  ``int`` and ``bool`` tensors are stored as ``int64_list`` (``uint64``
  bitcast), floating ones as ``float_list`` (``float32``), strings,
  images and ``encoding="bytes"|"zlib"`` tensors as ``bytes_list``.
* A value of shape ``()`` (outside any ``Sequence``) comes back as a
  Python scalar (``int``, ``float``, ``bool``, ``bytes``: numpy's
  ``.item()``); others as arrays of the declared dtype and shape.
* Inside one ``Sequence`` a feature comes back as a Python ``list`` of its
  elements (numpy scalars for scalar features; arrays otherwise); a
  ``Sequence`` of dicts as a dict of such lists.
* ``Sequence`` in ``Sequence`` is stored as ``<key>/ragged_flat_values`` and
  ``<key>/ragged_row_lengths_<i>`` and comes back as nested lists of
  arrays.
* A ``Tensor`` with two or more unknown dimensions is stored as
  ``<key>/value`` (bytes) and ``<key>/shape`` (``int32``).
* ``Text`` is ``bytes`` (not ``str``); ``ClassLabel`` its ``int``.
* ``Image``: see :mod:`arrayfs.tfds.images`.

Where TFDS fails on valid data (an empty two-unknown-dimension tensor: it
cuts the stored shape to the value's byte length) this decodes it. A
malformed record raises :class:`~arrayfs.encoding.RecordDecodeError`
(decoder ``"tfds"``) naming the feature.
"""

from __future__ import annotations

import functools
import struct
import zlib

import numpy as np

from ..encoding.errors import RecordDecodeError
from ..encoding.example import ReparseNeeded, feature_values, packed_floats, parse_features, read_features
from .features import (
    ClassLabelSpec,
    DictSpec,
    FeatureSpec,
    ImageSpec,
    SequenceSpec,
    TensorSpec,
    TextSpec,
    UnsupportedFeatureError,
)
from .images import image_decoder

__all__ = ["compile_features"]

_U64_MASK = (1 << 64) - 1
_INT_KINDS = "iub"
_INT64 = np.dtype(np.int64)


def _fail(path: str, reason: str):
    raise RecordDecodeError("tfds", f"feature {path!r}: {reason}")


def _list_kind(dtype: np.dtype) -> str:
    if dtype.kind == "O":
        return "bytes_list"
    if dtype.kind in _INT_KINDS:
        return "int64_list"
    if dtype.kind == "f" or dtype.name == "bfloat16":
        return "float_list"
    raise TypeError(dtype)


@functools.lru_cache(maxsize=4096)
def _list_reader(dtype: np.dtype, path: str):
    """``feature -> 1-D array of dtype``: the stored list (``int64``,
    ``float32`` or bytes) converted as TFDS's ``np.array(values, dtype)``
    does, after checking that the list is of the kind ``dtype`` is stored
    as (an empty feature of any kind is an empty array)."""
    kind = _list_kind(dtype)

    def other_kind(feature):
        found = feature.WhichOneof("kind")
        if found is None:
            return np.empty(0, dtype=dtype)
        values = feature_values(feature, path)
        if values.size:
            _fail(path, f"stored as {found}, declared {dtype}")
        return np.empty(0, dtype=dtype)

    if kind == "bytes_list":
        def read(feature):
            if feature.WhichOneof("kind") != kind:
                return other_kind(feature)
            values = feature.bytes_list.value
            out = np.empty(len(values), dtype=object)
            out[:] = values
            return out
    elif kind == "float_list":
        def read(feature):
            if feature.WhichOneof("kind") != kind:
                return other_kind(feature)
            values = packed_floats(feature.float_list, path, copy=False)
            with np.errstate(invalid="ignore", over="ignore"):  # a signalling NaN's bits; float16 overflow to inf
                return values.astype(dtype)
    else:
        narrow = np.iinfo(dtype) if dtype.kind in "iu" and dtype.itemsize < 8 else None

        def read(feature):
            if feature.WhichOneof("kind") != kind:
                return other_kind(feature)
            values = feature.int64_list.value
            arr = np.fromiter(values, dtype=np.int64, count=len(values))
            if dtype == np.int64:
                return arr
            if dtype == np.uint64:
                return arr.view(np.uint64)
            if dtype == np.bool_:
                return arr.astype(np.bool_)
            # TFDS (np.array of Python ints) refuses a value the dtype cannot hold.
            if len(values):
                lo, hi = (min(values), max(values)) if len(values) <= 32 else (arr.min(), arr.max())
                if lo < narrow.min or hi > narrow.max:
                    _fail(path, f"a value outside the range of {dtype}")
            return arr.astype(dtype)

    return read


def _numpy_shape(shape) -> tuple:
    return tuple(-1 if d is None else d for d in shape)


def _reshape(arr: np.ndarray, shape: tuple, path: str, numpy_shape=None) -> np.ndarray:
    try:
        return arr.reshape(numpy_shape if numpy_shape is not None else _numpy_shape(shape))
    except ValueError:
        _fail(path, f"{arr.size} values do not make shape {shape}")


def _ragged(values: np.ndarray, row_lengths: list, shape: tuple, path: str):
    """Nested lists of slices of ``values``: the innermost known dimension
    first, then one level per unknown dimension that has row lengths."""
    if shape and shape[-1] is None:
        groupings = list(reversed(row_lengths))
    else:
        groupings, k = [], len(row_lengths) - 1
        for d in reversed(shape):
            if d is None:
                if k < 0:
                    break
                groupings.append(row_lengths[k])
                k -= 1
            else:
                groupings.append([d] * (len(values) // d) if d else [])
    out = values
    for lengths in groupings:
        parts, i = [], 0
        for n in lengths:
            if n < 0 or i + n > len(out):
                _fail(path, f"ragged row lengths {lengths[:8]} do not fit {len(out)} values")
            parts.append(out[i : i + n])
            i += n
        out = parts
    return out


class _Leaf:
    """One stored feature: reads its key(s) from a parsed Example."""

    __slots__ = ("path", "key", "spec", "rank", "lengths", "read")

    def __init__(self, spec: FeatureSpec, lengths: tuple, display: bool):
        self.spec = spec
        self.path = spec.path
        self.key = spec.path
        self.lengths = lengths
        self.rank = len(lengths)
        if isinstance(spec, ImageSpec):
            self.read = self._image(spec, display)
        elif isinstance(spec, TensorSpec) and spec.dynamic:
            self.read = self._dynamic(spec)
        else:
            self.read = self._tensor(spec)

    def _missing(self, optional: bool):
        if optional:
            return None
        _fail(self.path, "missing from the record")

    def _image(self, spec: ImageSpec, display: bool):
        if self.rank > 1:
            raise UnsupportedFeatureError(spec.path, spec.class_name, "inside a Sequence of Sequence is not supported "
                                          "(TFDS's NumPy path cannot decode it either)")
        decode = (lambda data: data) if display else image_decoder(spec)
        path, key, rank, lengths = self.path, self.key, self.rank, self.lengths

        def read(fmap):
            feature = fmap.get(key)
            if feature is None:
                return self._missing(False)
            if feature.WhichOneof("kind") != "bytes_list":
                _fail(path, f"an image stored as {feature.WhichOneof('kind')}")
            values = feature.bytes_list.value
            if rank == 0:
                if len(values) != 1:
                    _fail(path, f"{len(values)} values for one image")
                return decode(values[0])
            if lengths[0] is not None and len(values) != lengths[0]:
                _fail(path, f"{len(values)} images in a Sequence of length {lengths[0]}")
            return [decode(v) for v in values]

        return read

    def _dynamic(self, spec: TensorSpec):
        if self.rank:
            raise UnsupportedFeatureError(spec.path, spec.class_name, "with two unknown dimensions inside a Sequence "
                                          "is not supported")
        path, static, dtype, zipped = self.path, spec.shape, spec.dtype, spec.encoding == "zlib"

        value_key, shape_key = f"{path}/value", f"{path}/shape"
        value_of, shape_of = _list_reader(np.dtype(object), path), _list_reader(np.dtype(np.int32), path)

        def read(fmap):
            value, shape = fmap.get(value_key), fmap.get(shape_key)
            if value is None or shape is None:
                return self._missing(spec.optional)
            value, shape = value_of(value), shape_of(shape)
            if value.size != 1 or shape.size != len(static):
                _fail(path, f"{value.size} values and a shape of {shape.size} dimensions for a tensor of shape {static}")
            merged = tuple(int(s) if d is None else d for d, s in zip(static, shape.tolist()))
            return _decode_bytes(value[0], dtype, merged, zipped, path, declared=False)

        return read

    def _tensor(self, spec):
        rank, lengths, path, key = self.rank, self.lengths, self.path, self.key
        optional = getattr(spec, "optional", False)
        if isinstance(spec, TextSpec):
            stored, own_shape, element = np.dtype(object), (), None
        elif isinstance(spec, ClassLabelSpec):
            stored, own_shape, element = np.dtype(np.int64), (), None
        elif spec.encoding != "none":
            if rank > 1:
                raise UnsupportedFeatureError(path, spec.class_name, f"with encoding={spec.encoding!r} inside a "
                                              "Sequence of Sequence is not supported (nor by TFDS's NumPy path)")
            dtype, shape, zipped = spec.dtype, spec.shape, spec.encoding == "zlib"
            stored, own_shape = np.dtype(object), ()

            def element(data):
                return _decode_bytes(data, dtype, shape, zipped, path)
        else:
            stored, own_shape = spec.dtype, spec.shape
            element = None
        serialized = lengths + own_shape
        serialized_np = _numpy_shape(serialized)
        reshape_to = _numpy_shape(own_shape)

        if rank == 0 and not own_shape:
            kind = _list_kind(stored)
            item = _scalar_reader(stored, path)

            def read(fmap):
                feature = fmap.get(key)
                if feature is None:
                    return self._missing(optional)
                if feature.WhichOneof("kind") != kind:
                    _fail(path, f"stored as {feature.WhichOneof('kind')}, declared {stored}")
                value = item(feature)
                return value if element is None else element(value)

            return read

        values_of = _list_reader(stored, path)

        if rank > 1:
            flat_key = f"{key}/ragged_flat_values"
            lengths_of = _list_reader(_INT64, path)

            def read(fmap):
                feature = fmap.get(flat_key)
                if feature is None:
                    return self._missing(optional)
                values = values_of(feature)
                row_lengths, i = [], 0
                while (lengths := fmap.get(f"{key}/ragged_row_lengths_{i}")) is not None:
                    row_lengths.append(lengths_of(lengths).tolist())
                    i += 1
                if not row_lengths:
                    return _reshape(values, serialized, path)
                return _ragged(values, row_lengths, serialized, path)

            return read

        if serialized.count(None) > 1:
            raise UnsupportedFeatureError(path, spec.class_name, f"has shape {serialized} with more than one unknown "
                                          "dimension and no encoding (TFDS cannot write it)")

        def read(fmap):
            feature = fmap.get(key)
            if feature is None:
                return self._missing(optional)
            arr = _reshape(values_of(feature), serialized, path, serialized_np)
            if rank == 0:
                return arr
            if element is not None:
                return [element(v) for v in arr]
            if own_shape:
                return [v.reshape(reshape_to) for v in arr]
            return list(arr)

        return read


def _scalar_reader(stored: np.dtype, path: str):
    """``feature -> Python scalar`` for a value of shape ``()``: numpy's
    ``.item()`` of the stored list converted to ``stored``."""
    if stored.kind == "O":
        def item(feature):
            values = feature.bytes_list.value
            if len(values) != 1:
                _fail(path, f"{len(values)} values for a scalar")
            return values[0]
    elif stored == np.int64 or stored == np.uint64 or stored == np.bool_:
        cast = bool if stored == np.bool_ else (lambda v: v & _U64_MASK) if stored == np.uint64 else int

        def item(feature):
            values = feature.int64_list.value
            if len(values) != 1:
                _fail(path, f"{len(values)} values for a scalar")
            return cast(values[0])
    elif stored == np.float32 or stored == np.float64:
        unpack = struct.Struct("<f").unpack

        def item(feature):
            runs = feature.float_list.value
            # The usual form, one packed value and nothing else (an unpacked
            # float would add bytes the runs do not account for), read in place.
            if len(runs) == 1 and len(runs[0]) == 4 and feature.float_list.ByteSize() == 6:
                return unpack(runs[0])[0]
            values = feature_values(feature, path)
            if values.size != 1:
                _fail(path, f"{values.size} values for a scalar")
            return float(values[0])
    else:
        values_of = _list_reader(stored, path)

        def item(feature):
            values = values_of(feature)
            if values.size != 1:
                _fail(path, f"{values.size} values for a scalar")
            return values.item()
    return item


#: The most bytes a ``Tensor(encoding="zlib")`` with an unknown dimension
#: may decompress to (256 MiB); with a fully known shape the bound is the
#: shape's own byte size. More is a decode error, never an allocation.
MAX_DECOMPRESSED_BYTES = 256 << 20


def _inflate(data: bytes, limit: int, path: str) -> bytes:
    """``data`` decompressed, refusing (not allocating) past ``limit`` bytes."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as e:
        _fail(path, f"zlib data does not decompress: {e}")
    if len(out) > limit:
        _fail(path, f"zlib data decompresses to more than {limit} bytes, the most allowed")
    if not inflater.eof:
        _fail(path, "zlib data does not decompress: incomplete or truncated stream")
    return out


def _decode_bytes(data: bytes, dtype: np.dtype, shape: tuple, zipped: bool, path: str,
                  declared: bool = True) -> np.ndarray:
    """A ``Tensor`` with ``encoding="bytes"`` (``zipped``: ``"zlib"``,
    decompressed to at most the byte size of ``shape`` when it is known and
    ``declared`` (from features.json), else to at most
    :data:`MAX_DECOMPRESSED_BYTES`: a shape stored in the record bounds
    nothing an attacker could not choose)."""
    if zipped:
        limit = MAX_DECOMPRESSED_BYTES
        if None not in shape:
            size = max(int(np.prod(shape, dtype=np.int64)) * dtype.itemsize, 0)
            limit = size if declared else min(size, limit)
        data = _inflate(data, limit, path)
    if len(data) % dtype.itemsize:
        _fail(path, f"{len(data)} bytes are not a whole number of {dtype} values")
    return _reshape(np.frombuffer(data, dtype=dtype), shape, path)


def _compile(spec: FeatureSpec, lengths: tuple, display: bool):
    """``fmap -> decoded value`` for ``spec`` under Sequences of
    ``lengths``; the list of leaves it reads."""
    if isinstance(spec, DictSpec):
        parts = [(name, _compile(child, lengths, display)) for name, child in spec.children.items()]
        readers = [(name, r) for name, (r, _) in parts]
        leaves = [leaf for _, (_, ls) in parts for leaf in ls]

        def read(fmap):
            return {name: r(fmap) for name, r in readers}

        return read, leaves
    if isinstance(spec, SequenceSpec):
        return _compile(spec.feature, lengths + (spec.length,), display)
    leaf = _Leaf(spec, lengths, display)
    return leaf.read, [leaf]


def _assembler(spec: FeatureSpec, counter: list):
    """``(columns, k) -> nested value`` of record ``k`` from per-leaf
    columns, leaves numbered in :func:`_compile`'s order."""
    if isinstance(spec, DictSpec):
        parts = [(name, _assembler(child, counter)) for name, child in spec.children.items()]

        def build(columns, k):
            return {name: b(columns, k) for name, b in parts}

        return build
    if isinstance(spec, SequenceSpec):
        return _assembler(spec.feature, counter)
    i = counter[0]
    counter[0] += 1
    return lambda columns, k: columns[i][k]


def compile_features(spec: FeatureSpec, *, display: bool = False):
    """``(decode, decode_batch, leaves)``: ``decode(record bytes) -> nested
    value``, ``decode_batch(records) -> [nested value]`` and the stored
    features they read. ``display`` keeps images as their stored bytes (for
    ``arrayfs cat`` and ``.decoded/``).

    ``decode_batch`` decodes feature by feature across the records (all
    images of a batch, then all labels, ...), which keeps one decoder's code
    and data hot in the CPU's caches: about a quarter faster than record by
    record on the fixture's records. Same values, same errors (a batch
    with a malformed record raises the first one's error, in batch order).

    Raises:
        UnsupportedFeatureError: a feature that cannot be decoded (at
            compile time, not per record).
    """
    if not isinstance(spec, DictSpec):
        raise UnsupportedFeatureError("<root>", spec.class_name, "as the top feature (not a FeaturesDict) is not "
                                      "supported")
    read, leaves = _compile(spec, (), display)
    build = _assembler(spec, [0])
    readers = [leaf.read for leaf in leaves]

    def decode(record):
        return read_features(record, read)

    def decode_batch(records) -> list:
        fmaps = [parse_features(r) for r in records]
        try:
            columns = [[r(fmap) for fmap in fmaps] for r in readers]
        except (ReparseNeeded, RecordDecodeError):
            # Record by record: a record TensorFlow never writes is read
            # exactly, and the error raised is the first bad record's
            # (feature by feature, the error met first may be a later one's).
            return [decode(r) for r in records]
        return [build(columns, k) for k in range(len(fmaps))]

    return decode, decode_batch, leaves
