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
format in which ``float_list`` is a ``bytes`` field: a packed float list
is one length-delimited run of little-endian ``float32`` values, which
numpy takes as it is (``np.frombuffer``) instead of one Python float per
value. A float list written unpacked (legal, rare) is parsed with the real
``FloatList`` message instead.
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
           "decode_example", "encode_example", "parse_features", "feature_values", "packed_floats"]

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
    for name, float_field in (("Feature", (_F.TYPE_MESSAGE, "FloatList")),
                              ("FeatureView", (_F.TYPE_BYTES, None))):
        message(name,
                ("bytes_list", 1, _F.TYPE_MESSAGE, opt, "BytesList"),
                ("float_list", 2, float_field[0], opt, float_field[1]),
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


def packed_floats(raw: bytes, key: str, *, copy: bool = True) -> np.ndarray:
    """The ``float32`` values of a serialized ``FloatList`` (as
    :func:`parse_features` leaves it): a writable copy, or with ``copy=False``
    possibly a read-only view of ``raw``.

    Raises:
        RecordDecodeError: ``raw`` is not a ``FloatList``, naming ``key``.
    """
    if not raw:
        return np.empty(0, dtype=np.float32)
    # The usual form: tag 0x0a, a varint length, then exactly that many bytes.
    if raw[0] == 0x0A and len(raw) > 1:
        length, pos, shift = 0, 1, 0
        while pos < len(raw) and shift < 35:
            b = raw[pos]
            length |= (b & 0x7F) << shift
            pos += 1
            shift += 7
            if b < 0x80:
                if pos + length == len(raw) and length % 4 == 0:
                    view = np.frombuffer(raw, dtype="<f4", offset=pos)
                    return view.astype(np.float32) if copy else view
                break
    try:
        values = FloatList.FromString(raw).value
    except DecodeError as e:
        raise RecordDecodeError("example", f"feature {key!r}: float_list is not a FloatList: {e}") from None
    return np.fromiter(values, dtype=np.float32, count=len(values))


def parse_features(record) -> Mapping:
    """The ``feature`` map of a serialized Example, as parsed by protobuf
    (values are ``Feature`` messages whose ``float_list`` is the raw
    serialized ``FloatList``); for decoders that want only some features.

    Raises:
        RecordDecodeError: the bytes are not a ``tf.train.Example``.
    """
    try:
        return _ExampleView.FromString(record).features.feature
    except DecodeError as e:
        raise RecordDecodeError("example", f"not a tf.train.Example: {e}") from None
    except TypeError as e:  # not bytes-like
        raise RecordDecodeError("example", str(e)) from None


def feature_values(feature, key: str) -> np.ndarray:
    """One parsed ``Feature`` (from :func:`parse_features`) as a 1-D array:
    ``int64``, ``float32`` or ``object`` (of ``bytes``); a ``Feature`` with
    no list set gives an empty ``object`` array (no dtype is known)."""
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
    return {key: feature_values(f, key) for key, f in parse_features(record).items()}


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
