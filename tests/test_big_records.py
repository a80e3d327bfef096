"""Big records: decoded with reading, hashing and decompressing overlapped
(:mod:`arrayfs.riegeli.stream`), and shared between the mount's worker
processes (:class:`arrayfs.fs.records.Records`), checked against the plain
decoder and Google's writer."""

from __future__ import annotations

import multiprocessing as mp
import os
import random

import pytest
from _google import gwrite

from arrayfs import ArrayRecordDataSource, ArrayRecordError, ArrayRecordWriter
from arrayfs.file import ArrayRecordFile
from arrayfs.fs.records import SHARED_MIN, Records, shared_directory
from arrayfs.fs.view import FsView
from arrayfs.riegeli import stream
from arrayfs.riegeli.hashing import highway_hash64

CODECS = ["zstd:3", "uncompressed", "brotli:1", "snappy"]


def _big(seed, size):
    rnd = random.Random(seed)
    # Half incompressible, half compressible: zstd stores raw and compressed blocks.
    return rnd.randbytes(size // 2) + bytes(rnd.randrange(4) for _ in range(1000)) * (size // 2000)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    d = tmp_path_factory.mktemp("big")
    out = {}
    for codec in CODECS:
        recs = [_big(1, 5 << 20), b"", os.urandom(100), _big(2, 1 << 20)]
        path = d / f"{codec.split(':')[0]}.array_record"
        gwrite(path, f"group_size:1,{codec}", recs)
        out[codec] = (path, recs)
    return out


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("piece", [3 << 16, stream.PIECE])
def test_stream_decodes_what_the_plain_reader_does(shards, codec, piece, monkeypatch):
    monkeypatch.setattr(stream, "PIECE", piece)  # pieces of 3 blocks: many piece and block boundaries
    path, recs = shards[codec]
    with ArrayRecordFile(str(path)) as f:
        for i, rec in enumerate(recs):
            assert bytes(f.read_big_record(i)) == rec == f.read_record(i)
            out = bytearray(len(rec))
            assert f.read_big_record(i, out) is out and out == rec


def test_streamed_hash_equals_the_one_shot_hash():
    assert stream._CAT is not None, "highwayhash no longer exports HighwayHashCat*: the stream hashes at the end"
    data = os.urandom(1_000_003)
    h = stream._Hasher()
    pos = 0
    rnd = random.Random(3)
    while pos < len(data):
        piece = data[pos:pos + rnd.randrange(1, 70_000)]
        h.q.put((piece, stream._address(piece), len(piece)))
        pos += len(piece)
    assert h.finish() == highway_hash64(data)


@pytest.mark.parametrize("where", ["data", "block header"])
def test_a_corrupt_big_chunk_gives_no_bytes(shards, tmp_path, where):
    path, recs = shards["zstd:3"]
    raw = bytearray(path.read_bytes())
    with ArrayRecordFile(str(path)) as f:
        begin, end = f.chunk_span(0)
    at = begin + 1000 if where == "data" else (begin // 65536 + 10) * 65536 + 5
    raw[at] ^= 0xFF
    bad = tmp_path / "bad.array_record"
    bad.write_bytes(bytes(raw))
    with ArrayRecordFile(str(bad)) as f:
        with pytest.raises(ArrayRecordError) as e:
            f.read_big_record(0)
        assert str(bad) in str(e.value) and "hash mismatch" in str(e.value)
        assert bytes(f.read_big_record(3)) == recs[3]  # the other chunks read on


def test_a_truncated_big_chunk_is_an_error(shards, tmp_path):
    path, _ = shards["zstd:3"]
    bad = tmp_path / "cut.array_record"
    bad.write_bytes(path.read_bytes())
    f2 = ArrayRecordFile(str(bad))
    try:
        with open(bad, "r+b") as fh:
            fh.truncate(2 << 20)
        with pytest.raises(ArrayRecordError):
            f2.read_big_record(0)
    finally:
        f2.close()


def test_records_of_a_shared_chunk_take_the_plain_path(tmp_path):
    path = tmp_path / "g4.array_record"
    with ArrayRecordWriter(str(path), "group_size:4") as w:
        for i in range(8):
            w.write(b"%d" % i * 1000)
    with ArrayRecordFile(str(path)) as f:
        with pytest.raises(ValueError):
            f.read_big_record(1)


def _read_in_process(path, directory, barrier, results):
    ds = ArrayRecordDataSource(str(path))
    snap = FsView(ds).snapshot
    records = Records(directory=directory)
    node = snap.resolve("/0")
    barrier.wait()
    data, address = records.get(snap, node, "0")
    results.put((records.decodes, bytes(data) == ds[0], address != 0))


def test_worker_processes_decode_a_big_record_once(shards):
    """Records bigger than SHARED_MIN are decoded by one process and mapped
    by the others (a lock per key stripe, then a rename)."""
    path, recs = shards["zstd:3"]
    assert len(recs[0]) > SHARED_MIN
    directory = shared_directory()
    ctx = mp.get_context("fork")
    barrier, results = ctx.Barrier(4), ctx.Queue()
    try:
        procs = [ctx.Process(target=_read_in_process, args=(path, directory, barrier, results)) for _ in range(4)]
        for p in procs:
            p.start()
        got = [results.get(timeout=120) for _ in procs]
        for p in procs:
            p.join(30)
        assert sum(d for d, _, _ in got) == 1, got
        assert all(ok and addressed for _, ok, addressed in got), got
        assert [n for n in os.listdir(directory) if not n.startswith("lock-")]  # published there
    finally:
        Records(directory=directory).remove_directory()
    assert not os.path.exists(directory)
