"""ArrayRecordSourceConfig validation and the record decoders."""

from __future__ import annotations

import dataclasses
import io
import json

import msgpack
import numpy as np
import pytest

from arrayfs.nnx.config import ArrayRecordSourceConfig
from arrayfs.nnx.decode import (
    RecordDecodeError,
    decode_raw,
    encode_msgpack,
    encode_npz,
    get_decoder,
)


def test_defaults_match_datarax():
    c = ArrayRecordSourceConfig()
    assert (c.seed, c.num_epochs, c.shuffle_files) == (42, -1, False)
    assert (c.shard_index, c.shard_count, c.drop_remainder, c.decode) == (None, None, False, None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.seed = 1


@pytest.mark.parametrize("kwargs", [
    {"seed": -1}, {"seed": 2**64}, {"seed": 1.0}, {"seed": True}, {"seed": "42"},
    {"num_epochs": 0}, {"num_epochs": -2}, {"num_epochs": 1.5}, {"num_epochs": None},
    {"shuffle_files": 1}, {"drop_remainder": "yes"}, {"verify": None},
    {"shard_index": 0}, {"shard_count": 2},
    {"shard_index": 2, "shard_count": 2}, {"shard_index": -1, "shard_count": 2},
    {"shard_index": 0, "shard_count": 0}, {"shard_index": 0.0, "shard_count": 1},
    {"decode": "pickle"}, {"decode": 3},
])
def test_invalid_values_raise_at_construction(kwargs):
    with pytest.raises(ValueError):
        ArrayRecordSourceConfig(**kwargs)


def test_valid_values():
    ArrayRecordSourceConfig(seed=0, num_epochs=1, shard_index=3, shard_count=4, decode="npz")
    ArrayRecordSourceConfig(seed=2**64 - 1, decode=lambda b: {"x": b})


def test_resolved_fills_shards_from_jax():
    import jax

    c = ArrayRecordSourceConfig().resolved()
    assert (c.shard_index, c.shard_count) == (jax.process_index(), jax.process_count())
    explicit = ArrayRecordSourceConfig(shard_index=1, shard_count=3)
    assert explicit.resolved() is explicit


# -- decoders ---------------------------------------------------------------------


def test_raw():
    out = get_decoder(None)(b"\x01\x02\x03")
    assert out["data"].dtype == np.uint8 and out["data"].tolist() == [1, 2, 3]
    assert get_decoder(None) is decode_raw


def test_msgpack_roundtrip_keeps_dtype_and_shape():
    ex = {"image": np.arange(64, dtype=np.float32).reshape(8, 8), "label": np.int64(7),
          "name": "seven", "raw": b"\x00\xff", "vec": [1, 2, 3]}
    out = get_decoder("msgpack")(encode_msgpack(ex))
    assert out["image"].dtype == np.float32 and out["image"].shape == (8, 8)
    np.testing.assert_array_equal(out["image"], ex["image"])
    assert out["label"].dtype == np.int64 and out["label"].shape == () and out["label"] == 7
    assert out["name"] == "seven"
    assert out["raw"].dtype == np.uint8 and out["raw"].tolist() == [0, 255]
    assert out["vec"].tolist() == [1, 2, 3]


def test_msgpack_plain_values_and_errors():
    dec = get_decoder("msgpack")
    assert dec(msgpack.packb([1, 2]))["data"].tolist() == [1, 2]
    with pytest.raises(RecordDecodeError, match="msgpack"):
        dec(b"\xc1")  # never-used msgpack byte
    with pytest.raises(RecordDecodeError, match="needs 16 bytes"):
        dec(msgpack.packb({"x": {"nd": True, "type": "<f8", "shape": [2], "data": b"123"}}))
    with pytest.raises(RecordDecodeError, match="object"):
        dec(msgpack.packb({"x": {"nd": True, "type": "|O", "shape": [1], "data": b"12345678"}}))
    with pytest.raises(ValueError, match="object"):
        encode_msgpack({"x": np.array([None])})


def test_json():
    dec = get_decoder("json")
    out = dec(json.dumps({"a": [1.5, 2.5], "b": 3}).encode())
    assert out["a"].tolist() == [1.5, 2.5] and out["b"] == 3
    assert dec(b"[1, 2]")["data"].tolist() == [1, 2]
    with pytest.raises(RecordDecodeError, match="json"):
        dec(b"{nope")


def test_npy_and_npz():
    buf = io.BytesIO()
    np.save(buf, np.arange(6, dtype=np.int16).reshape(2, 3))
    out = get_decoder("npy")(buf.getvalue())
    assert out["data"].dtype == np.int16 and out["data"].shape == (2, 3)
    ex = {"x": np.ones((2, 2), np.float16), "y": np.array(3)}
    out = get_decoder("npz")(encode_npz(ex))
    assert out["x"].dtype == np.float16 and out["y"] == 3
    with pytest.raises(RecordDecodeError, match="npz"):
        get_decoder("npy")(encode_npz(ex))
    with pytest.raises(RecordDecodeError, match="npy"):
        get_decoder("npy")(b"not an npy file")
    pickled = io.BytesIO()
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(RecordDecodeError):  # never unpickles a record
        get_decoder("npy")(pickled.getvalue())


def test_callable_decoder():
    dec = get_decoder(lambda b: {"n": len(b), "first": b[0]})
    out = dec(b"abc")
    assert out["n"] == 3 and out["first"] == ord("a") and isinstance(out["n"], np.ndarray)
    with pytest.raises(RecordDecodeError, match="expected a dict"):
        get_decoder(lambda b: [1])(b"x")
    with pytest.raises(ValueError):
        get_decoder("nope")
