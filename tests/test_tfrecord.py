"""arrayfs.tfrecord against Beam's TFRecord code (an independent writer):
byte-exact framing, every truncation and every flipped byte of a small
file give a TFRecordError naming the file and the record's offset."""

import io
import os
import pickle
import random
import struct

import pytest
from apache_beam.io.tfrecordio import _TFRecordUtil
from hypothesis import given, settings
from hypothesis import strategies as st

from arrayfs.tfrecord import (
    TFRecordError,
    encode_tfrecord,
    iter_tfrecords,
    masked_crc32c,
    parse_tfrecords,
    read_tfrecords,
    write_tfrecords,
)


def beam_encode(records) -> bytes:
    buf = io.BytesIO()
    for r in records:
        _TFRecordUtil.write_record(buf, r)
    return buf.getvalue()


def sample_records(n=50, seed=0):
    rng = random.Random(seed)
    sizes = [0, 1, 7, 12, 16, 4096, 70000] + [rng.randrange(0, 3000) for _ in range(n)]
    return [rng.randbytes(s) for s in sizes]


def test_reads_what_beam_writes_in_order(tmp_path):
    recs = sample_records()
    path = tmp_path / "a.tfrecord"
    path.write_bytes(beam_encode(recs))
    assert list(read_tfrecords(path)) == recs
    assert parse_tfrecords(path.read_bytes()) == recs


def test_encoding_is_byte_exact_with_beam(tmp_path):
    recs = sample_records(seed=1)
    assert b"".join(encode_tfrecord(r) for r in recs) == beam_encode(recs)
    buf = io.BytesIO()
    assert write_tfrecords(buf, recs) == len(buf.getvalue())
    assert buf.getvalue() == beam_encode(recs)
    for r in recs[:10]:
        assert masked_crc32c(r) == _TFRecordUtil._masked_crc32c(r)


@pytest.mark.parametrize("buffer_size", [1, 5, 12, 13, 100, 4096])
def test_any_buffer_size(buffer_size):
    recs = sample_records(20, seed=2)
    got = list(iter_tfrecords(io.BytesIO(beam_encode(recs)), buffer_size=buffer_size))
    assert got == recs


def test_empty_file_has_no_records(tmp_path):
    p = tmp_path / "empty.tfrecord"
    p.write_bytes(b"")
    assert list(read_tfrecords(p)) == []


def _starts(recs):
    out, pos = [], 0
    for r in recs:
        out.append(pos)
        pos += 16 + len(r)
    return out, pos


def test_every_truncation_names_the_file_and_the_broken_record():
    recs = [b"a" * 5, b"", b"bcdefgh" * 3]
    data = beam_encode(recs)
    starts, end = _starts(recs)
    for cut in range(len(data)):
        if cut in starts:
            # A cut at a record boundary is a shorter, valid file.
            assert parse_tfrecords(data[:cut], path="t.tfrecord") == recs[: starts.index(cut)]
            continue
        with pytest.raises(TFRecordError) as ei:
            parse_tfrecords(data[:cut], path="t.tfrecord")
        broken = max(s for s in starts if s < cut)
        e = ei.value
        assert (e.path, e.offset) == ("t.tfrecord", broken)
        assert "truncated" in e.reason
        assert str(e).startswith(f"t.tfrecord: byte {broken}: ")


def test_every_flipped_byte_is_caught():
    recs = [b"hello", b"world!" * 4]
    data = bytearray(beam_encode(recs))
    starts, _ = _starts(recs)
    for i in range(len(data)):
        bad = bytearray(data)
        bad[i] ^= 0x40
        with pytest.raises(TFRecordError) as ei:
            parse_tfrecords(bytes(bad), path="f")
        rec = max(s for s in starts if s <= i)
        e = ei.value
        # A flipped length field may point past the end: then "truncated".
        assert e.offset == rec
        assert ("checksum" in e.reason) or ("truncated" in e.reason)


def test_not_a_tfrecord_file():
    with pytest.raises(TFRecordError, match=r"^x\.txt: byte 0: bad length checksum"):
        parse_tfrecords(b"this is a text file, not TFRecord\n" * 3, path="x.txt")


def test_forged_huge_length_allocates_nothing_big():
    # A length of 2**62 with a correct length checksum: the reader must
    # stop at the end of the file, not try to allocate 4 EiB.
    length = struct.pack("<Q", 1 << 62)
    data = length + struct.pack("<I", masked_crc32c(length)) + b"x" * 100
    with pytest.raises(TFRecordError, match="truncated"):
        parse_tfrecords(data)


def test_bad_data_checksum_names_the_record():
    recs = [b"one", b"two", b"three"]
    data = bytearray(beam_encode(recs))
    starts, _ = _starts(recs)
    data[starts[2] + 12] ^= 1  # first data byte of record 2
    with pytest.raises(TFRecordError) as ei:
        parse_tfrecords(bytes(data), path="d")
    assert ei.value.offset == starts[2] and "data checksum" in ei.value.reason
    # verify=False trusts the framing.
    assert parse_tfrecords(bytes(data), verify=False)[:2] == recs[:2]


def test_error_pickles_with_its_fields():
    e = TFRecordError("bad length checksum", "gs://b/x.tfrecord", 1234)
    f = pickle.loads(pickle.dumps(e))
    assert (type(f), f.reason, f.path, f.offset, str(f)) == (TFRecordError, e.reason, e.path, e.offset, str(e))
    assert isinstance(f, ValueError)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_parse_raises_only_tfrecord_error(data):
    try:
        parse_tfrecords(data)
    except TFRecordError:
        pass


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=20))
def test_round_trip(records):
    assert parse_tfrecords(b"".join(map(encode_tfrecord, records))) == records


def test_reads_a_real_file_object(tmp_path):
    recs = [os.urandom(100) for _ in range(300)]
    p = tmp_path / "r.tfrecord"
    with open(p, "wb") as f:
        write_tfrecords(f, recs)
    with open(p, "rb") as f:
        assert list(iter_tfrecords(f, buffer_size=1000)) == recs
