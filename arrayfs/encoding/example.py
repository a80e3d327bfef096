"""``tf.train.Example`` without TensorFlow: the messages built from their
schema at import, a decoder to numpy and an encoder.

The schema is TensorFlow's ``tensorflow/core/example/example.proto`` and
``feature.proto`` (proto3)::

    message Example   { Features features = 1; }
    message Features  { map<string, Feature> feature = 1; }
    message Feature   { oneof kind { BytesList bytes_list = 1;
                                     FloatList float_list = 2;
                                     Int64List int64_list = 3; } }
    message BytesList { repeated bytes value = 1; }
    message FloatList { repeated float value = 1 [packed = true]; }
    message Int64List { repeated int64 value = 1 [packed = true]; }

It is described here as a ``FileDescriptorProto`` and turned into message
classes by ``protobuf`` (its upb backend parses in C). No generated
``_pb2`` module and no protoc are needed.

Decoding reads each ``Feature`` through a second view of the same wire
format in which ``float_list`` is a ``FloatRuns`` message whose field 1 is
``repeated bytes``: a packed float list is one length-delimited run of
little-endian ``float32`` values, which numpy takes as it is
(``np.frombuffer``) instead of one Python float per value. The view keeps
protobuf's semantics: repeated occurrences of ``float_list`` (or of a map
entry's ``value``) merge, their runs in wire order, and the oneof keeps the
last list written. A float written unpacked (legal, never by TensorFlow) is
a field the view does not know: the runs then do not account for the
message's bytes, :func:`packed_floats` raises :class:`ReparseNeeded`, and
:func:`read_features` reads that record from the real message,
re-serialized.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .errors import RecordDecodeError

try:
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    from google.protobuf.message import DecodeError
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        f"decoding tf.train.Example records needs protobuf ({e}); install it with: pip install 'arrayfs[tfds]'"
    ) from None

__all__ = ["Example", "Feature", "Features", "BytesList", "FloatList", "Int64List",
           "decode_example", "encode_example", "parse_features", "read_features", "feature_values",
           "packed_floats", "ReparseNeeded"]

_PACKAGE = "arrayfs.tfexample"
_F = descriptor_pb2.FieldDescriptorProto


def _schema() -> descriptor_pb2.FileDescriptorProto:
    fd = descriptor_pb2.FileDescriptorProto(name="arrayfs/tfexample.proto", package=_PACKAGE, syntax="proto3")
    rep, opt = _F.LABEL_REPEATED, _F.LABEL_OPTIONAL

    def message(name, *fields, oneof=None):
        m = fd.message_type.add(name=name)
        if oneof:
            m.oneof_decl.add(name=oneof)
        for fname, number, ftype, label, type_name in fields:
            f = m.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                f.type_name = f".{_PACKAGE}.{type_name}"
            if oneof:
                f.oneof_index = 0
        return m

    message("BytesList", ("value", 1, _F.TYPE_BYTES, rep, None))
    message("FloatList", ("value", 1, _F.TYPE_FLOAT, rep, None))
    message("Int64List", ("value", 1, _F.TYPE_INT64, rep, None))
    message("FloatRuns", ("value", 1, _F.TYPE_BYTES, rep, None))
    for name, floats in (("Feature", "FloatList"), ("FeatureView", "FloatRuns")):
        message(name,
                ("bytes_list", 1, _F.TYPE_MESSAGE, opt, "BytesList"),
                ("float_list", 2, _F.TYPE_MESSAGE, opt, floats),
                ("int64_list", 3, _F.TYPE_MESSAGE, opt, "Int64List"),
                oneof="kind")
    for suffix, feature in (("", "Feature"), ("View", "FeatureView")):
        m = message(f"Features{suffix}", ("feature", 1, _F.TYPE_MESSAGE, rep, f"Features{suffix}.FeatureEntry"))
        entry = m.nested_type.add(name="FeatureEntry")
        entry.field.add(name="key", number=1, type=_F.TYPE_STRING, label=opt)
        entry.field.add(name="value", number=2, type=_F.TYPE_MESSAGE, label=opt, type_name=f".{_PACKAGE}.{feature}")
        entry.options.map_entry = True
        message(f"Example{suffix}", ("features", 1, _F.TYPE_MESSAGE, opt, f"Features{suffix}"))
    return fd


def _classes() -> dict:
    pool = descriptor_pool.DescriptorPool()
    pool.Add(_schema())
    names = ("Example", "Features", "Feature", "BytesList", "FloatList", "Int64List", "ExampleView")
    return {n: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{n}")) for n in names}


_CLASSES = _classes()
#: ``tf.train.Example`` and its parts, as protobuf message classes.
Example = _CLASSES["Example"]
Features = _CLASSES["Features"]
Feature = _CLASSES["Feature"]
BytesList = _CLASSES["BytesList"]
FloatList = _CLASSES["FloatList"]
Int64List = _CLASSES["Int64List"]
_ExampleView = _CLASSES["ExampleView"]
_EMPTY_OBJECT = np.empty(0, dtype=object)
_EMPTY_OBJECT.flags.writeable = False


class ReparseNeeded(Exception):
    """A parsed view (:func:`parse_features`) cannot tell a feature's values:
    its ``float_list`` holds more than packed runs (a float written
    unpacked), whose order among the runs decides the values.
    :func:`read_features` catches it and reads the record from the real
    message instead; it escapes only to callers of :func:`feature_values`
    or :func:`packed_floats` on a view of their own.

    Attributes:
        key: the feature.
    """

    def __init__(self, key: str):
        self.key = key
        super().__init__(f"feature {key!r}: its float_list is not only packed runs: parse the real message")


def _varint_size(n: int) -> int:
    return (n.bit_length() + 6) // 7 or 1


def packed_floats(float_list, key: str, *, copy: bool = True) -> np.ndarray:
    """The ``float32`` values, shape ``(n,)``, of a parsed view's
    ``float_list`` (a ``FloatRuns``: the packed runs of every occurrence on
    the wire, concatenated as protobuf merges them). A writable copy, or
    with ``copy=False`` possibly a read-only view of the record's bytes.

    Raises:
        RecordDecodeError: a run that is not whole ``float32`` values,
            naming ``key``.
        ReparseNeeded: the message holds more than packed runs.
    """
    runs = float_list.value
    # Unpacked floats (or any field the view does not declare) are kept as
    # unknown fields, which count in ByteSize but not in the runs.
    size = float_list.ByteSize()
    if len(runs) == 1:  # the usual form, checked without a loop
        n = len(runs[0])
        if size == n + (2 if n < 128 else 1 + _varint_size(n)) and not n % 4:
            view = np.frombuffer(runs[0], dtype="<f4")
            return view.astype(np.float32) if copy else view
    if size != sum(len(r) + 1 + _varint_size(len(r)) for r in runs):
        raise ReparseNeeded(key)
    for r in runs:
        if len(r) % 4:
            raise RecordDecodeError("example", f"feature {key!r}: float_list is not a FloatList: a packed run of "
                                    f"{len(r)} bytes is not whole float32 values")
    if len(runs) == 1:
        view = np.frombuffer(runs[0], dtype="<f4")
        return view.astype(np.float32) if copy else view
    if not runs:
        return np.empty(0, dtype=np.float32)
    return np.concatenate([np.frombuffer(r, dtype="<f4") for r in runs]).astype(np.float32, copy=False)


def parse_features(record) -> Mapping:
    """The ``feature`` map of a serialized Example, as parsed by protobuf
    through the view (values are ``FeatureView`` messages whose
    ``float_list`` is the list of serialized ``FloatList`` occurrences; ask
    :func:`feature_kind`, not ``WhichOneof``, which list is set); for
    decoders that want only some features. Wrap the reading in
    :func:`read_features` to read every record exactly.

    Raises:
        RecordDecodeError: the bytes are not a ``tf.train.Example``.
    """
    try:
        return _ExampleView.FromString(record).features.feature
    except DecodeError as e:
        raise RecordDecodeError("example", f"not a tf.train.Example: {e}") from None
    except TypeError as e:  # not bytes-like
        raise RecordDecodeError("example", str(e)) from None


def _exact_features(record) -> Mapping:
    """The view of the real message's canonical bytes, in which each
    float list is one packed run: what :func:`parse_features`
    gives for records :class:`ReparseNeeded` was raised for."""
    try:
        msg = Example.FromString(record)
    except DecodeError as e:
        raise RecordDecodeError("example", f"not a tf.train.Example: {e}") from None
    # Unknown fields carry no values; kept, one inside a FloatList would
    # make the view ask for this re-parse again.
    msg.DiscardUnknownFields()
    return parse_features(msg.SerializeToString())


def read_features(record, read):
    """``read(parse_features(record))``, again on the view of the real
    message's canonical bytes when ``read`` raises :class:`ReparseNeeded`
    (a record TensorFlow never writes), so that values always equal
    protobuf's parse of the ``Example``. Raises what ``read`` and
    :func:`parse_features` raise."""
    try:
        return read(parse_features(record))
    except ReparseNeeded:
        return read(_exact_features(record))


def feature_values(feature, key: str) -> np.ndarray:
    """One parsed ``Feature`` (from :func:`parse_features`) as a 1-D array:
    ``int64``, ``float32`` or ``object`` (of ``bytes``); a ``Feature`` with
    no list set gives an empty ``object`` array (no dtype is known).

    Raises:
        RecordDecodeError: a float list that does not parse, naming ``key``.
        ReparseNeeded: as :func:`packed_floats`.
    """
    kind = feature.WhichOneof("kind")
    if kind == "int64_list":
        values = feature.int64_list.value
        return np.fromiter(values, dtype=np.int64, count=len(values))
    if kind == "float_list":
        return packed_floats(feature.float_list, key)
    if kind == "bytes_list":
        values = feature.bytes_list.value
        out = np.empty(len(values), dtype=object)
        out[:] = values
        return out
    return _EMPTY_OBJECT.copy()


def decode_example(record) -> dict:
    """Decode a serialized ``tf.train.Example`` to ``{feature name: array}``.

    ``int64_list`` becomes ``int64`` of shape ``(n,)``, ``float_list``
    ``float32`` ``(n,)``, ``bytes_list`` an ``object`` array of ``bytes``
    ``(n,)``; a feature with no list set, an empty ``object`` array. Keys
    keep the Example's map order as parsed. Arrays are writable copies.

    Raises:
        RecordDecodeError: the bytes are not a ``tf.train.Example`` (bad
            wire format, a key that is not UTF-8, a float list that does not
            parse), naming the decoder ``"example"`` and the reason.
    """
    return read_features(record, lambda fmap: {key: feature_values(f, key) for key, f in fmap.items()})


def encode_example(example: Mapping) -> bytes:
    """Encode ``{name: values}`` as a serialized ``tf.train.Example``.

    Values are array-likes (or scalars): integer and bool dtypes go to an
    ``int64_list``, floating ones to a ``float_list`` (as ``float32``),
    ``bytes``/``str`` (UTF-8) and object arrays of them to a
    ``bytes_list``. Arrays are flattened (the Example keeps no shape).
    Features are serialized in key order, so equal examples give equal
    bytes in every process.

    Raises:
        ValueError: a value of another dtype.
    """
    msg = Example()
    fmap = msg.features.feature
    for key, value in example.items():
        if isinstance(value, (bytes, str)):
            value = [value]
        arr = np.asarray(value)
        feature = fmap[str(key)]
        if arr.dtype.kind in "iub":
            feature.int64_list.value.extend(arr.astype(np.int64).ravel().tolist())
            feature.int64_list.SetInParent()
        elif arr.dtype.kind == "f":
            feature.float_list.value.extend(arr.astype(np.float32).ravel().tolist())
            feature.float_list.SetInParent()
        elif arr.dtype.kind in "SUO":
            items = [v.encode() if isinstance(v, str) else bytes(v) for v in arr.ravel().tolist()]
            feature.bytes_list.value.extend(items)
            feature.bytes_list.SetInParent()
        else:
            raise ValueError(f"feature {key!r}: dtype {arr.dtype} cannot go into a tf.train.Example")
    # The feature map's order is the hash table's, which changes from one
    # process to the next: sorted keys make equal examples equal bytes.
    return msg.SerializeToString(deterministic=True)
