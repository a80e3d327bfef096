"""Compatibility with Google's array_record, which serves as the oracle.

* Google writes, arrayfs reads: byte-identical records, same count, same
  writer options string.
* arrayfs writes, Google's ``ArrayRecordReader`` and
  ``ArrayRecordDataSource`` read: byte-identical records.
* The two readers side by side: the same results and the same kinds of
  error for the same calls.
* The ``digits`` files that ship in the grain wheel.

Matrix: compression {uncompressed, brotli:1, brotli:6, zstd:1, zstd:3,
zstd:19, snappy} x group_size {1, 3, 1000} x pad_to_block_boundary
{false, true}, over records of 0, 1, 65,536, 65,560 bytes and 1 MiB; a
smaller matrix adds a 20 MiB record; files of 0, 1 and 12,345 records.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest
from _google import gwrite
from _records import awrite, sized_records

import arrayfs
from arrayfs.file import ArrayRecordFile
from arrayfs.riegeli.blocks import BLOCK_SIZE, CHUNK_HEADER_SIZE

google = pytest.importorskip("array_record.python.array_record_module", reason="array-record wheel not installed")
google_ds = pytest.importorskip("array_record.python.array_record_data_source", reason="array-record wheel not installed")

COMPRESSIONS = ["uncompressed", "brotli:1", "brotli:6", "zstd:1", "zstd:3", "zstd:19", "snappy"]
GROUP_SIZES = [1, 3, 1000]
PADS = ["false", "true"]
MATRIX = [
    f"group_size:{g},{c},pad_to_block_boundary:{p}" for c in COMPRESSIONS for g in GROUP_SIZES for p in PADS
]


# Google's ArrayRecordDataSource logs an ERROR for every file with group_size > 1.
pytestmark = pytest.mark.usefixtures("quiet_absl")


# 0, 1, exactly one block, one block + a block header, 1 MiB, and small ones.
EDGE_SIZES = [0, 1, 65_536, 65_560, 7, 1000, 1 << 20, 3, 0, 100_000, 65_535, 65_537, 24, 40, 1]
EDGE_RECORDS = sized_records(EDGE_SIZES, seed=1)


def google_read_all(path):
    r = google.ArrayRecordReader(str(path))
    try:
        n = r.num_records()
        return r.read_all() if n else [], r.writer_options_string()
    finally:
        r.close()


def assert_arrayfs_reads(path, records, options_string):
    with arrayfs.ArrayRecordReader(path) as r:
        assert r.num_records() == len(records) == len(r)
        assert r.writer_options_string() == options_string
        got = r.read_all()
        assert len(got) == len(records)
        for i, (a, b) in enumerate(zip(got, records)):
            assert type(a) is bytes and a == b, f"record {i} differs"
        if records:
            # random access, batched and reversed
            idx = np.random.default_rng(0).permutation(len(records))[:500].tolist()
            assert r.read(idx) == [records[i] for i in idx]
            assert r[len(records) - 1] == records[-1] and r[0] == records[0]
            assert list(r) == records


def assert_google_reads(path, records):
    got, opts = google_read_all(path)
    assert len(got) == len(records)
    for i, (a, b) in enumerate(zip(got, records)):
        assert a == b, f"Google's reader: record {i} differs"
    ds = google_ds.ArrayRecordDataSource([str(path)])
    try:
        assert len(ds) == len(records)
        if records:
            idx = list(range(len(records)))[:2000]
            assert ds.__getitems__(idx) == [records[i] for i in idx]
            for i in sorted({0, len(records) - 1, len(records) // 2}):
                assert ds[i] == records[i]
    finally:
        ds.__exit__(None, None, None)
    return opts


# -- the matrix, both directions ---------------------------------------------------


@pytest.mark.parametrize("options", MATRIX)
def test_google_writes_arrayfs_reads(tmp_path, options):
    path = tmp_path / "g.array_record"
    gwrite(path, options, EDGE_RECORDS)
    _, stored = google_read_all(path)
    assert_arrayfs_reads(path, EDGE_RECORDS, stored)


@pytest.mark.parametrize("options", MATRIX)
def test_arrayfs_writes_google_reads(tmp_path, options):
    ours, theirs = tmp_path / "o.array_record", tmp_path / "g.array_record"
    awrite(ours, options, EDGE_RECORDS)
    stored = assert_google_reads(ours, EDGE_RECORDS)
    gwrite(theirs, options, EDGE_RECORDS)
    assert stored == google_read_all(theirs)[1]
    # the same layout: chunk placement, padding, footer and postscript
    assert os.path.getsize(ours) == os.path.getsize(theirs)
    if "uncompressed" in options:
        # no codec in the way: the files are identical byte for byte
        assert ours.read_bytes() == theirs.read_bytes()


HUGE = 20 << 20
HUGE_RECORDS = sized_records([5, HUGE, 0, 1000], seed=2)
HUGE_MATRIX = [
    "group_size:1,uncompressed,pad_to_block_boundary:false",
    "group_size:3,uncompressed,pad_to_block_boundary:true",
    "group_size:1,zstd:3,pad_to_block_boundary:false",
    "group_size:3,zstd:1,pad_to_block_boundary:true",
    "group_size:1000,brotli:1,pad_to_block_boundary:false",
    "group_size:1,snappy,pad_to_block_boundary:false",
]


@pytest.mark.parametrize("options", HUGE_MATRIX)
def test_20_mib_record_both_directions(tmp_path, options):
    ours, theirs = tmp_path / "o.array_record", tmp_path / "g.array_record"
    gwrite(theirs, options, HUGE_RECORDS)
    assert_arrayfs_reads(theirs, HUGE_RECORDS, google_read_all(theirs)[1])
    awrite(ours, options, HUGE_RECORDS)
    got, _ = google_read_all(ours)
    assert [len(r) for r in got] == [len(r) for r in HUGE_RECORDS]
    assert got == HUGE_RECORDS


# -- record counts: 0, 1, 10,000+ ------------------------------------------------------


@pytest.mark.parametrize("options", ["", "uncompressed", "brotli:6", "snappy,pad_to_block_boundary:true",
                                     "group_size:1000,zstd:19"])
def test_empty_file(tmp_path, options):
    ours, theirs = tmp_path / "o.array_record", tmp_path / "g.array_record"
    gwrite(theirs, options, [])
    awrite(ours, options, [])
    for p in (ours, theirs):
        with arrayfs.ArrayRecordReader(p) as r:
            assert r.num_records() == 0 and len(r) == 0
            assert r.read_all() == [] and list(r) == []
            with pytest.raises(IndexError):
                r.read()
            with pytest.raises(IndexError):
                r[0]
        g = google.ArrayRecordReader(str(p))
        assert g.num_records() == 0
        assert g.writer_options_string() == arrayfs.ArrayRecordReader(p).writer_options_string()
    assert os.path.getsize(ours) == os.path.getsize(theirs)


@pytest.mark.parametrize("record", [b"", b"\x00", b"x" * 65_536, os.urandom(65_560)], ids=["0", "1", "64k", "64k+24"])
@pytest.mark.parametrize("options", ["", "uncompressed", "brotli:1,pad_to_block_boundary:true", "snappy,group_size:3"])
def test_single_record_file(tmp_path, options, record):
    ours, theirs = tmp_path / "o.array_record", tmp_path / "g.array_record"
    gwrite(theirs, options, [record])
    assert_arrayfs_reads(theirs, [record], google_read_all(theirs)[1])
    awrite(ours, options, [record])
    assert google_read_all(ours)[0] == [record]


MANY = 12_345
MANY_RECORDS = sized_records(np.random.default_rng(3).integers(0, 200, MANY), seed=3)


@pytest.mark.parametrize(
    "options",
    ["group_size:1,uncompressed", "group_size:1,zstd:3", "group_size:3,brotli:1,pad_to_block_boundary:true",
     "group_size:1000,snappy", "group_size:1000,zstd:19"],
)
def test_many_records_both_directions(tmp_path, options):
    ours, theirs = tmp_path / "o.array_record", tmp_path / "g.array_record"
    gwrite(theirs, options, MANY_RECORDS)
    assert_arrayfs_reads(theirs, MANY_RECORDS, google_read_all(theirs)[1])
    awrite(ours, options, MANY_RECORDS)
    assert_google_reads(ours, MANY_RECORDS)


_WIDE_SCRIPT = """
import resource, sys
import arrayfs
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))  # a 2 GiB window cannot be reserved
with arrayfs.ArrayRecordReader(sys.argv[1]) as r:
    got = r.read_all()
    assert got == list(r) == [r[i] for i in range(len(r))]
print(len(got), sum(map(len, got)))
"""


@pytest.mark.parametrize("window_log", [28, 31])
@pytest.mark.parametrize("group_size", [1, 100])
def test_google_zstd_windows_above_2_27(tmp_path, window_log, group_size):
    """Google's writer declares the whole window_log in frames without a
    content size (up to 2 GiB); zstd refuses windows above 2^27 by default
    and would reserve the whole window. arrayfs reads them, every way,
    within 1 GiB of address space (the window is fitted to the block)."""
    rng = np.random.default_rng(window_log + group_size)
    records = [rng.integers(0, 8, 3000 if group_size > 1 else 200_000, dtype=np.uint8).tobytes()
               for _ in range(500 if group_size > 1 else 3)]
    path = gwrite(tmp_path / "g.array_record", f"zstd:3,window_log:{window_log},group_size:{group_size}", records)
    assert_arrayfs_reads(path, records, google_read_all(path)[1])
    out = subprocess.run([sys.executable, "-c", _WIDE_SCRIPT, path], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(len(records)), str(sum(map(len, records)))]


def test_google_zstd_window_31_record_streamed(tmp_path):
    """The streamed decode of a large record (reading, hashing and
    decompressing overlapped) fits the window as the other paths do."""
    record = np.random.default_rng(31).integers(0, 8, 4 << 20, dtype=np.uint8).tobytes()
    path = gwrite(tmp_path / "g.array_record", "zstd:3,window_log:31,group_size:1", [record])
    with ArrayRecordFile(path) as f:
        assert bytes(f.read_big_record(0)) == record


def test_chunk_headers_split_by_block_headers_in_google_file(tmp_path):
    """A file of many small chunks has chunk headers that a block header
    cuts in two; they read back like the others."""
    path = tmp_path / "g.array_record"
    gwrite(path, "group_size:1,uncompressed", MANY_RECORDS)
    with ArrayRecordFile(path) as f:
        offsets, _, _ = f.index()
        split = [int(o) for o in offsets if BLOCK_SIZE - CHUNK_HEADER_SIZE < int(o) % BLOCK_SIZE]
        inside_data = [int(o) for o in offsets if 0 < BLOCK_SIZE - int(o) % BLOCK_SIZE <= BLOCK_SIZE - 25]
    assert split, "expected some chunk headers across a block boundary"
    assert inside_data
    with arrayfs.ArrayRecordReader(path) as r:
        first = r._file.index()[2]
        for off in split:
            k = int(np.flatnonzero(offsets == off)[0])
            i = int(first[k])
            assert r[i] == MANY_RECORDS[i]


def test_parallel_writer_output_reads_in_google(tmp_path):
    path = tmp_path / "p.array_record"
    records = MANY_RECORDS[:3000]
    awrite(path, "group_size:7,zstd:3,max_parallelism:2", records)
    assert google_read_all(path)[0] == records


# -- API semantics, side by side ----------------------------------------------------------


N_API = 10
API_RECORDS = [b"rec-%d" % i * (i + 1) for i in range(N_API)]


@pytest.fixture(scope="module", params=["group_size:3,brotli:1", "group_size:1,uncompressed", "group_size:1000,zstd:3"])
def api_file(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("api") / "api.array_record"
    gwrite(path, request.param, API_RECORDS)
    return str(path)


def outcome(fn):
    try:
        return ("ok", fn())
    except Exception as e:  # noqa: BLE001 - the exception is the result
        return ("raise", e)


def assert_same(ours, theirs, what):
    """Same value, or an exception of Google's class (ours may be a subclass)."""
    if theirs[0] == "ok":
        assert ours == theirs, what
    else:
        assert ours[0] == "raise", f"{what}: Google raises {theirs[1]!r}, ours returns {ours[1]!r}"
        assert isinstance(ours[1], type(theirs[1])), f"{what}: {ours[1]!r} vs Google's {theirs[1]!r}"


CALLS = [
    ("num_records()", lambda r: r.num_records()),
    ("record_index()", lambda r: r.record_index()),
    ("read()", lambda r: r.read()),
    ("read()", lambda r: r.read()),
    ("record_index()", lambda r: r.record_index()),
    ("read(0, 10)", lambda r: r.read(0, 10)),
    ("read(2, 5)", lambda r: r.read(2, 5)),
    ("read(-3, -1)", lambda r: r.read(-3, -1)),
    ("read(-10, 10)", lambda r: r.read(-10, 10)),
    ("read(9, 10)", lambda r: r.read(9, 10)),
    ("read(3, 3)", lambda r: r.read(3, 3)),
    ("read(5, 3)", lambda r: r.read(5, 3)),
    ("read(0, 11)", lambda r: r.read(0, 11)),
    ("read(-11, 2)", lambda r: r.read(-11, 2)),
    ("read(10, 12)", lambda r: r.read(10, 12)),
    ("read(-1, 0)", lambda r: r.read(-1, 0)),
    ("record_index()", lambda r: r.record_index()),
    ("read([indices])", lambda r: r.read([9, 0, 4, 4, 1])),
    ("read([])", lambda r: r.read([])),
    ("read([10])", lambda r: r.read([10])),
    ("read([0, 12])", lambda r: r.read([0, 12])),
    ("read_all()", lambda r: r.read_all()),
    ("record_index()", lambda r: r.record_index()),
    ("seek(7)", lambda r: r.seek(7)),
    ("record_index()", lambda r: r.record_index()),
    ("read()", lambda r: r.read()),
    ("seek(-1)", lambda r: r.seek(-1)),
    ("record_index()", lambda r: r.record_index()),
    ("read() at end", lambda r: r.read()),
    ("seek(100)", lambda r: r.seek(100)),
    ("record_index()", lambda r: r.record_index()),
    ("seek(10)", lambda r: r.seek(10)),
    ("read() at end", lambda r: r.read()),
    ("seek(9)", lambda r: r.seek(9)),
    ("read() last", lambda r: r.read()),
    ("read() past", lambda r: r.read()),
    ("seek(0)", lambda r: r.seek(0)),
    ("read() first", lambda r: r.read()),
    ("writer_options_string()", lambda r: r.writer_options_string()),
    ("ok()", lambda r: r.ok()),
    ("is_open()", lambda r: r.is_open()),
    ("close()", lambda r: r.close()),
    ("ok() closed", lambda r: r.ok()),
    ("is_open() closed", lambda r: r.is_open()),
    ("num_records() closed", lambda r: r.num_records()),
    ("read() closed", lambda r: r.read()),
    ("read([0]) closed", lambda r: r.read([0])),
    ("read_all() closed", lambda r: r.read_all()),
    ("writer_options_string() closed", lambda r: r.writer_options_string()),
    ("close() twice", lambda r: r.close()),
]


def test_api_side_by_side(api_file):
    ours = arrayfs.ArrayRecordReader(api_file)
    theirs = google.ArrayRecordReader(api_file)
    for what, call in CALLS:
        assert_same(outcome(lambda c=call: c(ours)), outcome(lambda c=call: c(theirs)), what)


def test_record_index_after_close(api_file):
    ours = arrayfs.ArrayRecordReader(api_file)
    theirs = google.ArrayRecordReader(api_file)
    for r in (ours, theirs):
        r.seek(5)
        r.close()
    assert ours.record_index() == theirs.record_index() == 0


def test_read_range_after_close(api_file):
    ours = arrayfs.ArrayRecordReader(api_file)
    theirs = google.ArrayRecordReader(api_file)
    for r in (ours, theirs):
        r.close()
    assert_same(outcome(lambda: ours.read(0, 2)), outcome(lambda: theirs.read(0, 2)), "read(0, 2) closed")


def test_read_errors_are_the_documented_types(api_file):
    with arrayfs.ArrayRecordReader(api_file) as r:
        with pytest.raises(IndexError):
            r.read(3, 3)
        with pytest.raises(IndexError):
            r.read(0, 11)
        # Google raises RuntimeError here; ours is both
        with pytest.raises(RuntimeError):
            r.read([10])
        with pytest.raises(IndexError):
            r.read([10])
        with pytest.raises(IndexError):
            r[10]
        with pytest.raises(IndexError):
            r[-11]
        with pytest.raises(TypeError):
            r.read(1, 2, 3)
    with pytest.raises(RuntimeError):
        r.read()


def test_arrayfs_extensions(api_file):
    """len, [], slices, negative indices, iteration, with; checked against
    Google's read_all."""
    expected = google.ArrayRecordReader(api_file).read_all()
    with arrayfs.ArrayRecordReader(api_file) as r:
        assert len(r) == N_API
        assert [r[i] for i in range(N_API)] == expected
        assert [r[-i] for i in range(1, N_API + 1)] == expected[::-1]
        assert r[2:8:3] == expected[2:8:3]
        assert r[::-1] == expected[::-1]
        assert list(r) == expected
        assert r.read([-1, 0, -10]) == [expected[-1], expected[0], expected[0]]
        assert r.read(np.array([3, 1], dtype=np.int32)) == [expected[3], expected[1]]
        assert r.read_records(range(N_API)) == expected
        assert r.record_index() == 0  # none of these move the cursor
        assert isinstance(repr(r), str)
    assert not r.is_open() and r.num_records() == 0


def test_google_reader_on_file_with_cursor_reads(tmp_path):
    """A sequential read() over a whole multi-chunk file matches read_all()."""
    path = tmp_path / "seq.array_record"
    gwrite(path, "group_size:5,zstd:3", MANY_RECORDS[:1003])
    with arrayfs.ArrayRecordReader(path) as r:
        got = [r.read() for _ in range(r.num_records())]
        with pytest.raises(IndexError):
            r.read()
    assert got == MANY_RECORDS[:1003]


# -- grain's digits files --------------------------------------------------------------------


def find_digits_files():
    for package in ("grain", "array_record"):
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        for root in spec.submodule_search_locations:
            found = sorted(glob.glob(os.path.join(root, "**", "digits.array_record-0000?-of-00002"), recursive=True))
            if found:
                return found
    return []


def test_grain_digits_files():
    paths = find_digits_files()
    if not paths:
        pytest.skip("no digits.array_record-*-of-00002 in the grain or array_record wheels")
    assert len(paths) == 2
    ours, theirs = [], []
    for p in paths:
        with arrayfs.ArrayRecordReader(p) as r:
            ours += r.read_all()
            assert r.writer_options_string() == google.ArrayRecordReader(p).writer_options_string()
        theirs += google.ArrayRecordReader(p).read_all()
    assert ours == theirs == [str(d).encode() for d in range(10)]
    ds = google_ds.ArrayRecordDataSource(paths)
    assert [ds[i] for i in range(len(ds))] == ours


@pytest.mark.parametrize("window_log", [25, 30])
def test_google_brotli_large_window_is_unsupported_not_corrupt(tmp_path, window_log):
    """Above window_log:24 riegeli writes Brotli's large-window format,
    which the brotli package cannot decode: the error says so and is an
    UnsupportedChunkError naming the file, not a corruption."""
    path = gwrite(tmp_path / "g.array_record", f"brotli:5,window_log:{window_log}", [b"hello", b"world"])
    with pytest.raises(arrayfs.UnsupportedChunkError, match="large-window") as e:
        with arrayfs.ArrayRecordReader(path) as r:
            r.read_all()
    assert e.value.path == path
    ours = awrite(tmp_path / "o.array_record", f"brotli:5,window_log:{window_log}", [b"hello", b"world"])
    assert google_read_all(ours)[0] == [b"hello", b"world"]
