"""The storage layer's request planning and read-ahead, on fsspec's
``memory://`` store (a real fsspec backend, no network): exact ranges
coalesced only within the gap, read-ahead within its byte budget, reads
served from it without requests, memory given back when read or dropped.
"""

from __future__ import annotations

import gc
import threading
import uuid

import fsspec
import numpy as np
import pytest

from arrayfs.storage import readahead
from arrayfs.storage.listing import open_source
from arrayfs.storage.remote import GAP, _needs, plan


@pytest.fixture()
def obj():
    data = np.random.default_rng(0).bytes(3 << 20)
    url = f"memory://arrayfs-ra-{uuid.uuid4().hex[:8]}/blob"
    fsspec.filesystem("memory").pipe_file(url, data)
    yield url, data
    fsspec.filesystem("memory").rm(url)


def test_plan_fetches_exact_ranges_and_merges_only_close_neighbours():
    assert plan([(100, 200)]) == [(100, 200)]
    assert plan([(5000, 6000), (0, 1000)]) == [(0, 6000)]  # 4 KB apart: one request
    assert plan([(0, 1000), (1000 + GAP + 1, 1000 + GAP + 10)]) == [(0, 1000), (1000 + GAP + 1, 1000 + GAP + 10)]
    assert plan([(0, 1000), (3000, 4000)]) == [(0, 4000)]
    assert plan([(0, 10), (5, 20), (20, 20)]) == [(0, 20)]
    assert plan([(0, 20 << 20)], piece=8 << 20) == [(0, 8 << 20), (8 << 20, 16 << 20), (16 << 20, 20 << 20)]


def test_batch_reads_are_exact_and_counted(obj):
    url, data = obj
    src = open_source(url)
    ranges = [(10, 20), (2_000_000, 2_001_000), (30, 40), (1_000_000, 1_000_001)]
    assert src.read_ranges(ranges) == [data[a:b] for a, b in ranges]
    assert src.requests == 3  # (10, 20) and (30, 40) share one
    src.close()


def test_prefetched_ranges_serve_reads_without_requests_and_give_the_budget_back(obj):
    url, data = obj
    src = open_source(url)
    spans = [(k * 100_000, (k + 1) * 100_000) for k in range(20)]
    h = src.prefetch(spans)
    assert 0 < readahead.in_use() <= readahead.budget()
    for a, b in spans:
        assert src.read(a, b - a) == data[a:b]
    assert src.requests == 10  # the pieces' own (neighbours in pairs, within 256 KiB), none more
    assert h.nbytes == 0  # all read: spent, kept until their room is wanted
    a, b = spans[3]
    assert src.read(a, b - a) == data[a:b] and src.requests == 10  # read twice, fetched once
    h.close()
    assert readahead.in_use() == 0
    src.close()


def test_read_ahead_stays_within_its_budget_and_dropping_the_handle_frees_it(obj):
    url, data = obj
    old = readahead.budget()
    readahead.set_budget(300_000)
    try:
        src = open_source(url)
        spans = [(k * 100_000, (k + 1) * 100_000) for k in range(25)]
        h = src.prefetch(spans)
        assert readahead.in_use() <= 300_000
        for a, b in spans[:10]:  # reading admits the next pieces
            assert src.read(a, b - a) == data[a:b]
            assert readahead.in_use() <= 300_000
        assert h.nbytes == 15 * 100_000  # not read yet: started or waiting
        del h
        gc.collect()
        assert readahead.in_use() == 0
        src.close()
    finally:
        readahead.set_budget(old)


def test_sequential_reads_start_read_ahead_by_themselves(obj):
    url, data = obj
    src = open_source(url)
    step = 4096
    for a in range(0, 2_000_000, step):
        assert src.read(a, step) == data[a : a + step]
    reads = 2_000_000 // step
    assert src.requests < reads // 10, src.requests  # the windows grew; most reads were already there
    src.close()
    assert readahead.in_use() == 0


def test_prefetched_neighbours_share_pieces_and_a_scan_starts_slow(obj):
    url, data = obj
    src = open_source(url)
    spans = [(k * 300_000, (k + 1) * 300_000) for k in range(10)]  # 3 MB of chunks, end to end
    h = src.prefetch(spans)
    assert readahead.in_flight() <= readahead.PIECE_BYTES  # the window starts at one piece
    for a, b in spans:
        assert src.read(a, b - a) == data[a:b]
    assert src.requests == 1  # one piece of up to PIECE_BYTES, not one per chunk
    h.close()
    assert readahead.in_use() == 0 and readahead.in_flight() == 0
    src.close()


def test_needs_count_each_range_once_across_pieces():
    # A piece is spent once the reads of its ranges took these many bytes:
    # a range across two pieces counts in both, the same range twice once,
    # overlapping ranges each (each is read).
    pieces = [(0, 100), (100, 200), (300, 400)]
    assert _needs([(50, 150), (50, 150), (120, 130), (300, 310)], pieces) == [50, 60, 10]


def test_read_all_of_a_big_object_reads_ahead_within_the_budget():
    import arrayfs

    # read_all reads its whole run ahead, within the budget, while the
    # reader's threads decode the chunks as they land.
    rng = np.random.default_rng(4)
    recs = [rng.bytes(2000) for _ in range(12_000)]  # 24 MB
    url = f"memory://arrayfs-ra-{uuid.uuid4().hex[:8]}/big.array_record"
    with arrayfs.ArrayRecordWriter(url, "group_size:512") as w:
        for r in recs:
            w.write(r)
    old = readahead.budget()
    readahead.set_budget(4 << 20)
    peak = []
    stop = threading.Event()

    def watch():
        while not stop.wait(0.001):
            peak.append(readahead.in_use())

    t = threading.Thread(target=watch)
    t.start()
    try:
        with arrayfs.ArrayRecordReader(url) as r:
            assert r.read_all() == recs
            readers = r._workers
            f = r._file
            chunk = max(b - a for a, b in (f.chunk_span(k) for k in range(f.num_chunks)))
        # Over the budget by at most the pieces readers wait for: those of
        # one chunk each (a chunk bigger than a piece spans several, and
        # its ends may share a piece with its neighbours).
        assert 0 < max(peak) <= (4 << 20) + readers * (chunk + 2 * readahead.piece_bytes())
    finally:
        stop.set()
        t.join()
        readahead.set_budget(old)
        fsspec.filesystem("memory").rm(url)


def test_interleaved_sequential_readers_each_keep_their_read_ahead(obj):
    url, data = obj
    src = open_source(url)
    step, half = 4096, 1_500_000
    for a in range(0, 1_000_000, step):  # two readers in turn, each in order
        for base in (0, half):
            assert src.read(base + a, step) == data[base + a : base + a + step]
    reads = 2 * 1_000_000 // step
    assert src.requests < reads // 10, src.requests
    src.close()
    assert readahead.in_use() == 0


def test_a_read_across_overlapping_pieces_takes_each_byte_once(obj):
    """Two windows that overlap (two streams' read-ahead, a batch's and a
    scan's): a read that starts in the first and ends in the second gets
    each byte once, from where the first piece ends (it once got the
    overlap twice: wrong bytes, caught only by the chunk hash)."""
    url, data = obj
    src = open_source(url)
    first = src.prefetch([(0, 100_000)])
    second = src.prefetch([(50_000, 200_000)])
    for a, b in [(90_000, 110_000), (99_999, 100_001), (40_000, 150_000), (100_000, 200_000), (0, 200_000)]:
        assert src.read(a, b - a) == data[a:b], (a, b)
    assert src.requests == 2  # the two pieces' own, none more
    first.close()
    second.close()
    src.close()
    assert readahead.in_use() == 0


def test_random_reads_fetch_only_their_bytes(obj):
    """Random reads of one object (threads reading records one at a time,
    a mount's random cats) start no read-ahead window: one exact request
    each, nothing held. (Windows once started whenever a read landed
    within 16 KiB of where another had ended: 80 KB fetched per 1 KB
    record read by 8 threads.)"""
    url, data = obj
    src = open_source(url)
    rng = np.random.default_rng(3)
    starts = rng.integers(0, len(data) - 1000, 400).tolist()
    for a in starts:
        assert src.read(a, 1000) == data[a : a + 1000]
        assert readahead.in_use() == 0
    assert src.requests == len(starts)
    src.close()


def test_windows_of_two_streams_hold_no_byte_twice(obj):
    """A stream whose window would run into another's stops where that one
    starts (and later goes on after it): no byte is fetched twice."""
    url, data = obj
    src = open_source(url)
    step = 4096
    for base in (100_000, 0):  # each stream: three reads in a row, then its window
        for a in range(base, base + 3 * step, step):
            assert src.read(a, step) == data[a : a + step]
    held = sorted((p.a, p.b) for p in src._pieces if p.state != readahead._DEAD)
    assert len(held) >= 2 and all(b1 <= a2 for (_, b1), (a2, _) in zip(held, held[1:])), held
    for a in range(3 * step, 1_000_000, step):  # the second reader goes on, through the first's window
        assert src.read(a, step) == data[a : a + step]
    src.close()
