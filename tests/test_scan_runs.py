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


def _corrupt(path, tmp_path, where: str):
    """A copy of ``path`` with one byte flipped: in the data of a chunk in
    the middle, in a chunk's header, or in the block header at 65,536 (the
    chunk it interrupts is in the scan). Returns ``(copy, chunk offset,
    words the error must hold)``."""
    data = bytearray(path.read_bytes())
    with ArrayRecordFile(str(path)) as f:
        offsets = [int(o) for o in f.index().offsets]
    mid = [k for k in range(len(offsets) // 2, len(offsets))
           if offsets[k] % BLOCK_SIZE + CHUNK_HEADER_SIZE + 64 < BLOCK_SIZE]
    if where == "block header":
        k = max(k for k in range(len(offsets)) if offsets[k] < BLOCK_SIZE)
        data[BLOCK_SIZE + 12] ^= 0xFF  # previous_chunk: its hash no longer matches
        words = ["block header at byte 65536", "hash mismatch"]
    elif where == "chunk header":
        k = mid[0]
        data[offsets[k] + 20] ^= 0xFF  # data_hash
        words = ["chunk header hash mismatch"]
    else:
        k = mid[0]
        data[offsets[k] + CHUNK_HEADER_SIZE + 40] ^= 0xFF
        words = ["hash mismatch"]
    bad = tmp_path / "bad.array_record"
    bad.write_bytes(bytes(data))
    return bad, offsets[k], words


@pytest.mark.parametrize("mmap", ["never", "lease"])
@pytest.mark.parametrize("where", ["data", "chunk header", "block header"])
@pytest.mark.parametrize("parallelism", [1, 2])
def test_every_check_of_a_scan_holds_mapped_or_not(grouped, tmp_path, monkeypatch, mmap, where, parallelism):
    # A scan of a mapped file checks the block and chunk headers of the
    # whole run before its threads start, and the threads do not check
    # them again: a corrupt one must still fail the scan, naming it.
    path, recs = grouped
    monkeypatch.setenv("ARRAYFS_MMAP", mmap)
    bad, at, words = _corrupt(path, tmp_path, where)
    with arrayfs.ArrayRecordReader(str(bad), f"max_parallelism:{parallelism}") as r:
        assert r._file.source.map_mode == ("pread" if mmap == "never" else "lease")
        with pytest.raises(CorruptChunkError) as e:
            r.read_all()
        msg = str(e.value)
        assert str(bad) in msg and str(at) in msg, msg
        for w in words:
            assert w in msg, msg
        assert r.read(0, 5) == recs[:5]


@pytest.mark.parametrize("mmap", ["never", "lease"])
def test_a_parallel_scan_raises_the_first_bad_chunk(grouped, tmp_path, monkeypatch, mmap):
    # Two corrupt chunks far apart: the threads may meet the later one
    # first; the error raised is the earlier one's, as a serial scan's.
    path, _ = grouped
    monkeypatch.setenv("ARRAYFS_MMAP", mmap)
    data = bytearray(path.read_bytes())
    with ArrayRecordFile(str(path)) as f:
        offsets = [int(o) for o in f.index().offsets]
    inside = [k for k in range(len(offsets)) if offsets[k] % BLOCK_SIZE + CHUNK_HEADER_SIZE + 64 < BLOCK_SIZE]
    first, last = inside[1], inside[-1]
    for k in (first, last):
        data[offsets[k] + CHUNK_HEADER_SIZE + 40] ^= 0xFF
    bad = tmp_path / "two.array_record"
    bad.write_bytes(bytes(data))
    for _ in range(5):
        with arrayfs.ArrayRecordReader(str(bad), "max_parallelism:3") as r:
            with pytest.raises(CorruptChunkError) as e:
                r.read_all()
        assert f"at byte {offsets[first]}" in str(e.value) or str(offsets[first]) in str(e.value), str(e.value)
        assert str(offsets[last]) not in str(e.value)


def test_headers_are_skipped_only_through_the_map_they_were_checked_in(grouped, tmp_path, monkeypatch):
    path, _ = grouped
    monkeypatch.setenv("ARRAYFS_MMAP", "lease")
    bad, _, _ = _corrupt(path, tmp_path, "block header")
    with ArrayRecordFile(str(bad)) as f:
        src = f.source
        assert src.map_mode == "lease"
        k = max(k for k in range(f.num_chunks) if f.chunk_span(k)[0] < BLOCK_SIZE)
        view = src.map_view()
        try:
            checked = f.headers_checked(view, list(range(f.num_chunks)))
        finally:
            src.end_view()
        # The chunk the bad block header interrupts takes the checked path;
        # the others do not.
        assert not checked[k] and checked.sum() == f.num_chunks - 1
        # Another map (a lease given up and the file read another way):
        # the checks are made.
        for other in (None, object()):
            with pytest.raises(CorruptChunkError, match="block header at byte 65536"):
                f.decode_chunk_in_place(k, checked_map=other)
    with ArrayRecordFile(str(path)) as f:
        src = f.source
        view = src.map_view()
        try:
            assert f.headers_checked(view, list(range(f.num_chunks))).all()
        finally:
            src.end_view()


def test_a_scan_does_not_wait_behind_busy_helpers(grouped):
    # The helper threads are the process's: when another caller holds them
    # all, a scan does its work on the calling thread alone and returns.
    import threading

    from arrayfs.batch import helper_pool

    path, recs = grouped
    pool = helper_pool(2)
    release = threading.Event()
    busy = [pool.submit(release.wait, 60) for _ in range(pool._max_workers)]
    try:
        done = []
        t = threading.Thread(target=lambda: done.append(
            arrayfs.ArrayRecordReader(str(path), "max_parallelism:2").read_all()))
        t.start()
        t.join(30)
        assert done and done[0] == recs, "the scan waited for a helper held elsewhere"
    finally:
        release.set()
        for b in busy:
            b.result()


def test_parallel_scans_from_many_threads(grouped):
    from concurrent.futures import ThreadPoolExecutor

    path, recs = grouped
    with arrayfs.ArrayRecordReader(str(path), "max_parallelism:2") as r:
        with ThreadPoolExecutor(8) as ex:
            outs = list(ex.map(lambda _: r.read_all(), range(16)))
    assert all(o == recs for o in outs)
