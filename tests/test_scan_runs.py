"""Scans of multi-record chunks and the footer kept from the open (issue 19).

A run of consecutive records (``read_all``, ``read(start, end)``) is cut
chunk by chunk straight into the output, decoding ``max_parallelism``
chunks at a time; a footer read at open is decoded on first use from the
bytes kept then, not read again."""

from __future__ import annotations

import numpy as np
import pytest
from _arfile import build_file, simple_chunk
from _google import google

import arrayfs
from arrayfs.errors import CorruptChunkError
from arrayfs.file import ArrayRecordFile
from arrayfs.riegeli.blocks import BLOCK_SIZE, CHUNK_HEADER_SIZE
from arrayfs.storage.base import ByteSource
from arrayfs.storage.local import LocalFile

N = 1000
GROUP = 64


def _records(n: int = N) -> list[bytes]:
    rng = np.random.default_rng(7)
    return [rng.bytes(int(rng.integers(0, 400))) for _ in range(n)]


@pytest.fixture(scope="module")
def grouped(tmp_path_factory):
    """A file of ``N`` records in chunks of ``GROUP`` (the last one short),
    written by Google's writer, and its records."""
    path = tmp_path_factory.mktemp("scan") / "g64.array_record"
    recs = _records()
    w = google.ArrayRecordWriter(str(path), f"group_size:{GROUP},zstd:3")
    for r in recs:
        w.write(r)
    w.close()
    return path, recs


@pytest.mark.parametrize("parallelism", [1, 2, 3])
def test_runs_match_the_records(grouped, parallelism):
    path, recs = grouped
    with arrayfs.ArrayRecordReader(str(path), f"max_parallelism:{parallelism}") as r:
        assert r.read_all() == recs
        # Runs starting and ending inside chunks, on chunk edges, of one
        # record, across many chunks and up to the short last chunk.
        for a, b in [(0, 1), (5, 70), (63, 65), (64, 128), (130, 131), (100, N), (N - 3, N)]:
            assert r.read(a, b) == recs[a:b], (a, b)
            assert r.read(np.arange(a, b)) == recs[a:b], (a, b)
        # Not a run: the general path, same records.
        idx = [900, 3, 64, 63, 999, 3]
        assert r.read(idx) == [recs[i] for i in idx]


@pytest.mark.parametrize("parallelism", [1, 2])
def test_a_corrupt_chunk_in_a_scan_is_named(grouped, tmp_path, parallelism):
    path, _ = grouped
    data = bytearray(path.read_bytes())
    with ArrayRecordFile(str(path)) as f:
        offsets = f.index().offsets
    # A chunk in the middle whose first data bytes lie in one block.
    k = next(k for k in range(len(offsets) // 2, len(offsets))
             if int(offsets[k]) % BLOCK_SIZE + CHUNK_HEADER_SIZE + 64 < BLOCK_SIZE)
    at = int(offsets[k]) + CHUNK_HEADER_SIZE + 40
    data[at] ^= 0xFF
    bad = tmp_path / "bad.array_record"
    bad.write_bytes(bytes(data))
    with arrayfs.ArrayRecordReader(str(bad), f"max_parallelism:{parallelism}") as r:
        with pytest.raises(CorruptChunkError) as e:
            r.read_all()
        assert str(bad) in str(e.value)
        assert str(int(offsets[k])) in str(e.value)
        # The chunks before it still read.
        assert len(r.read(0, k * GROUP)) == k * GROUP


class _Recording(ByteSource):
    """A local file that records every range read from it."""

    def __init__(self, inner: LocalFile):
        self.inner = inner
        self.name, self.size, self.mtime_ns, self.identity = inner.name, inner.size, inner.mtime_ns, inner.identity
        self.ranges: list[tuple[int, int]] = []

    def read(self, offset, length):
        self.ranges.append((offset, length))
        return self.inner.read(offset, length)

    def read_ranges(self, ranges):
        self.ranges.extend(ranges)
        return self.inner.read_ranges(ranges)

    def close(self):
        self.inner.close()


def test_the_footer_read_at_open_is_not_read_again(grouped):
    path, recs = grouped
    src = _Recording(LocalFile(str(path), mmap="never"))
    with ArrayRecordFile(src) as f:
        opened = len(src.ranges)
        assert f.read_record(500) == recs[500]
        assert f.read_record(3) == recs[3]
        later = src.ranges[opened:]
        assert later and all(off + n <= f.footer_offset for off, n in later), later


def test_footer_entries_contradicting_the_metadata_fail_on_first_use(tmp_path):
    """The metadata is checked at open; the entries when first decoded,
    naming the file and the footer's offset, on every use after that too."""
    path = tmp_path / "f.array_record"
    build_file(path, [simple_chunk([b"ab", b"cd"])], footer_entries=[(64, 4, 3)])  # 3 records, not 2
    with ArrayRecordFile(str(path)) as f:
        assert f.num_records == 2
        for _ in range(2):
            with pytest.raises(CorruptChunkError) as e:
                f.read_record(1)
            assert str(path) in str(e.value)
            assert e.value.offset == f.footer_offset
