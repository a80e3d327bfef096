"""The reader's fast paths against Google's reader: partial decompression of
big chunks (the first, a middle and the last record of each chunk), the
data hash checked once per chunk, scans on threads over padded files with
records crossing blocks, batched reads of one-record chunks."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
from _google import google, gwrite
from _records import make_records

import arrayfs

CODECS = ["zstd:3", "brotli:5", "snappy", "uncompressed"]



def records(n, seed=0):
    # Some records cross a 64 KiB block; half of each is zeros (compressible).
    return [r[: len(r) // 2] + bytes(len(r) - len(r) // 2)
            for r in make_records(n, seed, size=(0, 3000), big_every=97, big_size=(70_000, 70_001), compressible=False)]


@pytest.mark.parametrize("codec", CODECS)
def test_first_middle_last_record_of_each_chunk(tmp_path, codec):
    recs = records(2500, seed=len(codec))
    path = gwrite(tmp_path / "big.array_record", f"group_size:1000,{codec}", recs)
    g = google.ArrayRecordReader(path)
    with arrayfs.ArrayRecordReader(path) as r:
        for first in range(0, len(recs), 1000):
            last = min(first + 1000, len(recs)) - 1
            for i in (last, (first + last) // 2, first, first + 1):  # last first: no earlier decode helps
                assert r[i] == recs[i] == g.read([i])[0], i
    g.close()


def test_corrupt_chunk_data_is_an_error_on_first_read(tmp_path):
    recs = records(1500, seed=3)
    path = gwrite(tmp_path / "c.array_record", "group_size:1000,zstd:3", recs)
    with arrayfs.ArrayRecordReader(path) as r:
        span = r._file.chunk_span(1)
    with open(path, "r+b") as f:
        f.seek((span[0] + span[1]) // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    with arrayfs.ArrayRecordReader(path) as r:
        assert r[0] == recs[0]
        with pytest.raises(arrayfs.CorruptChunkError, match="hash mismatch") as e:
            r[1000]  # the first record: its prefix decodes, the hash does not match
        assert e.value.records == (1000, 1500) and e.value.path == path


def test_a_verified_chunk_changed_on_disk_is_not_served(tmp_path):
    recs = records(2000, seed=4)
    path = gwrite(tmp_path / "v.array_record", "group_size:1000,uncompressed", recs)
    with arrayfs.ArrayRecordReader(path) as r:
        assert r[10] == recs[10]  # chunk 0's hash checked and remembered
        a, b = r._file.chunk_span(0)
        time.sleep(0.01)
        with open(path, "r+b") as f:
            f.seek(b - 100)
            f.write(b"\x00" * 50)
        with pytest.raises(arrayfs.FileChangedError):
            r[999]


@pytest.mark.parametrize("options", ["group_size:1,pad_to_block_boundary:true", "group_size:64,brotli:3",
                                     "group_size:1,zstd:1", "group_size:500,pad_to_block_boundary:true,snappy"])
def test_scans_on_threads_equal_google(tmp_path, options):
    recs = records(3000, seed=5)
    path = gwrite(tmp_path / "s.array_record", options, recs)
    g = google.ArrayRecordReader(path)
    want = g.read_all()
    g.close()
    assert want == recs
    for reader_options in ("max_parallelism:4", "max_parallelism:1"):
        with arrayfs.ArrayRecordReader(path, reader_options) as r:
            assert r.read_all() == recs
            assert list(r) == recs
            idx = np.random.default_rng(1).integers(0, len(recs), 700)
            assert r.read(idx) == [recs[i] for i in idx]
    with arrayfs.ArrayRecordDataSource([path, path]) as ds:
        assert list(ds) == recs + recs
