"""``decode="example"``: serialized ``tf.train.Example`` -> numpy, without
TensorFlow. Checked on records TensorFlow Datasets wrote (the fixture), on
Examples built with protobuf's own classes, and on malformed bytes."""

from __future__ import annotations

import pickle
import struct

import numpy as np
import pytest
from _tfds_fixture import VERSION_DIR, expected, shards

from arrayfs import ArrayRecordDataSource
from arrayfs.encoding import DECODERS, RecordDecodeError, decode_example, encode_example, get_decoder
from arrayfs.encoding.example import BytesList, Example, Feature, FloatList, Int64List


def _tf_records(split="train"):
    with ArrayRecordDataSource(shards(split)) as ds:
        return [ds[i] for i in range(len(ds))]


def test_decodes_records_tensorflow_datasets_wrote():
    records = _tf_records()
    want = expected()["train"]
    for record, w in zip(records, want):
        ex = decode_example(record)
        assert ex["label"].dtype == np.int64 and ex["label"].shape == (1,) and ex["label"][0] == w["label"]
        assert ex["text"].dtype == object and ex["text"].tolist() == [w["text"]]
        assert ex["mean"].dtype == np.float32 and ex["mean"].tolist() == [w["mean"]]
        assert ex["pixels"].dtype == np.float32 and ex["pixels"].shape == (64,)
        np.testing.assert_array_equal(ex["pixels"], w["pixels"].astype(np.float32).ravel())
        assert ex["meta/index"].tolist() == [w["meta"]["index"]]
        assert ex["checksum"].view(np.uint64).tolist() == [w["checksum"]]
        assert ex["image"][0].startswith(b"\x89PNG") and ex["meta/inner/photo"][0].startswith(b"\xff\xd8\xff")
        assert ex["thumbs"].shape == (2,) and all(isinstance(b, bytes) for b in ex["thumbs"])
        assert ex["moments"].tolist() == w["moments"].ravel().tolist()


def test_every_kind_and_edge_value():
    msg = Example()
    f = msg.features.feature
    f["ints"].int64_list.value.extend([0, -1, 2**63 - 1, -(2**63)])
    f["floats"].float_list.value.extend([0.5, -np.inf, 3.25e38, 1e-45])
    f["nan"].float_list.value.append(float("nan"))
    f["bytes"].bytes_list.value.extend([b"", b"\x00\xff", "é".encode()])
    f["empty_ints"].int64_list.SetInParent()
    f["empty_floats"].float_list.SetInParent()
    f["no_kind"].SetInParent()
    f["big_floats"].float_list.value.extend(np.linspace(0, 1, 1000, dtype=np.float32).tolist())
    ex = decode_example(msg.SerializeToString())
    assert ex["ints"].dtype == np.int64 and ex["ints"].tolist() == [0, -1, 2**63 - 1, -(2**63)]
    assert ex["floats"].dtype == np.float32
    np.testing.assert_array_equal(ex["floats"], np.array([0.5, -np.inf, 3.25e38, 1e-45], np.float32))
    assert np.isnan(ex["nan"][0])
    assert ex["bytes"].dtype == object and ex["bytes"].tolist() == [b"", b"\x00\xff", "é".encode()]
    assert ex["empty_ints"].dtype == np.int64 and ex["empty_ints"].shape == (0,)
    assert ex["empty_floats"].dtype == np.float32 and ex["empty_floats"].shape == (0,)
    assert ex["no_kind"].dtype == object and ex["no_kind"].shape == (0,)
    np.testing.assert_array_equal(ex["big_floats"], np.linspace(0, 1, 1000, dtype=np.float32))
    for v in ex.values():
        assert v.ndim == 1 and v.flags.writeable


def _record(key: bytes, feature: bytes) -> bytes:
    """An Example holding one feature, written byte by byte (all lengths < 128)."""
    entry = b"\x0a" + bytes([len(key)]) + key + b"\x12" + bytes([len(feature)]) + feature
    features = b"\x0a" + bytes([len(entry)]) + entry
    return b"\x0a" + bytes([len(features)]) + features


def test_unpacked_and_split_float_lists_decode_like_packed_ones():
    # FloatList.value written unpacked (tag 0x0d per value) and as two
    # packed runs: both legal protobuf, both must decode to the same values.
    unpacked = b"".join(b"\x0d" + struct.pack("<f", v) for v in (1.5, -2.0))
    two_runs = b"\x0a\x04" + struct.pack("<f", 1.5) + b"\x0a\x04" + struct.pack("<f", -2.0)
    for body in (unpacked, two_runs):
        record = _record(b"x", b"\x12" + bytes([len(body)]) + body)
        assert FloatList.FromString(body).value[:] == [1.5, -2.0]
        ex = decode_example(record)
        assert ex["x"].dtype == np.float32 and ex["x"].tolist() == [1.5, -2.0]


def test_encode_example_round_trips_and_protobuf_agrees():
    data = {"label": 3, "vec": np.arange(5, dtype=np.int16), "w": np.array([[0.5, 1.5]]), "name": "héllo",
            "blobs": np.array([b"a", b"bc"], dtype=object), "flag": np.array([True, False])}
    record = encode_example(data)
    ex = decode_example(record)
    assert ex["label"].tolist() == [3] and ex["vec"].tolist() == [0, 1, 2, 3, 4]
    assert ex["w"].tolist() == [0.5, 1.5] and ex["name"].tolist() == ["héllo".encode()]
    assert ex["blobs"].tolist() == [b"a", b"bc"] and ex["flag"].tolist() == [1, 0]
    parsed = Example.FromString(record)
    assert parsed.features.feature["vec"].int64_list.value[:] == [0, 1, 2, 3, 4]
    assert isinstance(parsed.features.feature["name"], Feature)
    assert BytesList and Int64List  # the schema's classes are public
    with pytest.raises(ValueError, match="cannot go into"):
        encode_example({"c": np.array([1j])})


def test_encode_example_gives_equal_bytes_in_every_process():
    # The feature map's order came from protobuf's hash table and changed
    # from process to process; the fuzz seeds and any content hash of a
    # dataset need equal examples to be equal bytes.
    import subprocess
    import sys

    code = ("from arrayfs.encoding import encode_example; import sys; "
            "sys.stdout.write(encode_example({'s': 'text', 'b': [b'x'], 'i': [1, -2], 'f': [0.5]}).hex())")
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
            for _ in range(4)}
    assert len(outs) == 1
    record = bytes.fromhex(outs.pop())
    assert record == encode_example({"f": [0.5], "i": [1, -2], "s": "text", "b": [b"x"]})
    names = [record.index(b"\n\x01" + k) for k in (b"b", b"f", b"i", b"s")]
    assert names == sorted(names)  # keys in sorted order


@pytest.mark.parametrize("record,reason", [
    (b"\x0a\x05\x0a\x03\x0a\x01", "not a tf.train.Example"),  # truncated length
    (b"\x0a\x04\x0a\x02\x0a\xff", "not a tf.train.Example"),  # key that is not UTF-8
    (b"\xff\xff\xff", "not a tf.train.Example"),
    (b"\x0a\x09\x0a\x07\x0a\x01x\x12\x02\x12\x01", "not a tf.train.Example"),  # nested length past the end
])
def test_malformed_records_raise_record_decode_error(record, reason):
    with pytest.raises(RecordDecodeError, match=reason) as e:
        decode_example(record)
    assert e.value.decoder == "example" and "example" in str(e.value)
    copy = pickle.loads(pickle.dumps(e.value))
    assert type(copy) is RecordDecodeError and str(copy) == str(e.value)


def test_float_list_that_does_not_parse_names_the_feature():
    body = b"\x0a\x03\x00\x00\x00"  # a packed run of 3 bytes: not whole float32 values
    record = _record(b"bad", b"\x12" + bytes([len(body)]) + body)
    with pytest.raises(RecordDecodeError, match="feature 'bad'") as e:
        decode_example(record)
    assert e.value.decoder == "example"
    # A fixed32 value cut short is not protobuf at all: the record is refused.
    body = b"\x0d\x00\x00"
    with pytest.raises(RecordDecodeError, match="not a tf.train.Example"):
        decode_example(_record(b"bad", b"\x12" + bytes([len(body)]) + body))


def _ld(field: int, payload: bytes) -> bytes:
    assert len(payload) < 128
    return bytes([field << 3 | 2, len(payload)]) + payload


def _floats(*values) -> bytes:
    """A FloatList with one packed run."""
    return _ld(1, struct.pack(f"<{len(values)}f", *values))


@pytest.mark.parametrize("entry", [
    # float_list written twice in one Feature: protobuf merges the two FloatLists
    _ld(1, b"v") + _ld(2, _ld(2, _floats(1.0)) + _ld(2, _floats(2.0))),
    # the map entry's value written twice: the two Features merge
    _ld(1, b"v") + _ld(2, _ld(2, _floats(1.0))) + _ld(2, _ld(2, _floats(2.0))),
    # a packed run, an unpacked value and a packed run in one FloatList
    _ld(1, b"v") + _ld(2, _ld(2, _floats(1.0) + b"\x0d" + struct.pack("<f", 1.5) + _floats(2.0))),
    # an int64_list, then a float_list: the oneof keeps the last
    _ld(1, b"v") + _ld(2, _ld(3, b"\x0a\x01\x07") + _ld(2, _floats(1.0, 2.0))),
], ids=["float_list twice", "entry value twice", "packed, unpacked, packed", "int64_list then float_list"])
def test_repeated_float_list_fields_merge_as_protobuf_merges_them(entry):
    record = _ld(1, _ld(1, entry))
    expected = Example.FromString(record).features.feature["v"].float_list.value[:]
    assert len(expected) >= 2
    assert decode_example(record)["v"].tolist() == expected
    from arrayfs.encoding import decoded_tree, to_json

    assert to_json(record, "example")["v"] == expected
    assert decoded_tree(record, "example")["v"] == "".join(f"{v}\n" for v in expected).encode()
def test_registered_as_decoder_and_in_the_nnx_config():
    from arrayfs.nnx import ArrayRecordSourceConfig

    assert "example" in DECODERS and get_decoder("example")(encode_example({"a": 1}))["a"].tolist() == [1]
    assert DECODERS["example"](encode_example({"a": 1}))["a"].tolist() == [1]
    assert ArrayRecordSourceConfig(decode="example").decode == "example"
    assert ArrayRecordSourceConfig(decode="tfds").decode == "tfds"
    with pytest.raises(ValueError, match="tfds"):
        get_decoder("tfds")
    with pytest.raises(ValueError, match="example"):
        ArrayRecordSourceConfig(decode="protobuf")


def test_nnx_source_decodes_examples(tmp_path):
    from arrayfs.nnx import ArrayRecordSourceConfig, ArrayRecordSourceModule

    src = ArrayRecordSourceModule(ArrayRecordSourceConfig(decode="example", shard_index=0, shard_count=1,
                                                          num_epochs=1), shards("test"))
    got = list(src)
    assert len(got) == 16
    assert sorted(int(g["label"][0]) for g in got) == sorted(w["label"] for w in expected()["test"])
    src.close()


def test_missing_extras_name_the_extra(tmp_path):
    import subprocess
    import sys

    code = (
        "import sys\n"
        "sys.modules['google.protobuf'] = None\n"
        "try:\n"
        "    import arrayfs.encoding.example\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "pip install 'arrayfs[tfds]'" in out.stdout, out.stdout + out.stderr
    code = (
        "import sys\n"
        "import arrayfs.encoding.example\n"
        "sys.modules['PIL'] = None\n"
        "from arrayfs.tfds import decoder\n"
        "try:\n"
        f"    decoder({VERSION_DIR!r})\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "Pillow" in out.stdout and "pip install 'arrayfs[tfds]'" in out.stdout, out.stdout + out.stderr
