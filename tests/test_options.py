"""Writer and reader options strings, with Google's array_record as the oracle.

For every string, Google's ``ArrayRecordWriter(path, s)`` either raises or
stores ``writer_options_string()`` in the footer; ``parse_writer_options(s)``
must raise the same ``ValueError`` message or render the same string. One
deliberate exception: ``max_parallelism``. Google's Python writer has no
thread pool, so it always stores ``max_parallelism:1``; ours honours N and
stores it.
"""

from __future__ import annotations

import os
import random
import re

import pytest

import arrayfs
from arrayfs.options import ReaderOptions, WriterOptions, parse_reader_options, parse_writer_options
from arrayfs.riegeli.compression import BROTLI, NONE, SNAPPY, ZSTD

google = pytest.importorskip("array_record.python.array_record_module", reason="array-record wheel not installed")


def google_writer_result(path, text: str) -> str:
    """Google's stored options string, or ``"!<message>"`` if it refuses."""
    try:
        w = google.ArrayRecordWriter(str(path), text)
    except ValueError as e:
        return f"!{e}"
    w.write(b"x")
    w.close()
    return google.ArrayRecordReader(str(path)).writer_options_string()


def our_result(text: str) -> str:
    try:
        return parse_writer_options(text).to_string()
    except ValueError as e:
        return f"!{e}"


def without_parallelism(s: str) -> str:
    return re.sub(r"max_parallelism:\d+", "max_parallelism:*", s)


ACCEPTED = [
    "", ",", ",,", "default", "default,", "default,zstd:5", "default:anything",
    "group_size:1", "group_size:3", "group_size:1000", "group_size:65536", "group_size:2147483647",
    "group_size:010", "group_size:+5", "group_size: 5", "group_size:5 ", "group_size:00000000000000000000001",
    "uncompressed", "uncompressed:", "brotli", "brotli:", "brotli:0", "brotli:1", "brotli:6", "brotli:11",
    "zstd", "zstd:", "zstd:-131072", "zstd:-5", "zstd:-0", "zstd:0", "zstd:1", "zstd:3", "zstd:19", "zstd:22",
    "zstd:+3", "zstd: -3", "zstd:3 ", "snappy", "snappy:", "snappy:1", "snappy:2",
    "window_log:10", "window_log:20", "window_log:31", "window_log:auto", "window_log: 20",
    "brotli,window_log:10", "brotli,window_log:24", "brotli,window_log:30", "brotli:6,window_log:auto",
    "window_log:18,brotli:5", "zstd:19,window_log:27",
    "transpose", "transpose:", "transpose:true", "transpose:false",
    "transpose:true,transpose_bucket_size:1k", "transpose_bucket_size:1000", "transpose_bucket_size:auto",
    "transpose_bucket_size:1.5,transpose", "transpose_bucket_size:2.5,transpose",
    "transpose_bucket_size:1e20,transpose", "transpose_bucket_size:inf", "transpose:true,uncompressed",
    "pad_to_block_boundary", "pad_to_block_boundary:", "pad_to_block_boundary:true", "pad_to_block_boundary:false",
    "saturation_delay_ms:10", "max_parallelism:1", "max_parallelism:4", "max_parallelism:auto",
    "zstd:3,group_size:7,pad_to_block_boundary:true", "group_size:1000,zstd:19,window_log:24",
    "brotli:6,group_size:3,pad_to_block_boundary:false", ",,group_size:5,", "zstd:3,",
    "group_size:1,transpose:false,pad_to_block_boundary:false,zstd:3,window_log:20,max_parallelism:1",
    "group_size:65536,transpose:false,pad_to_block_boundary:false,brotli:6,max_parallelism:1",
]

REJECTED = [
    # unknown keys (keys are not trimmed; case matters)
    "foo", "foo:1", "GROUP_SIZE:1", " zstd:3", "chunk_size:1M", "parallelism:2",
    # out of range / malformed integers
    "group_size:0", "group_size:-1", "group_size:-0", "group_size:2147483648", "group_size:99999999999999999999",
    "group_size:abc", "group_size:", "group_size", "group_size:0x10", "group_size:1.5", "group_size:1e3",
    "brotli:12", "brotli:-1", "zstd:23", "zstd:-131073", "zstd:1.5", "zstd:3e0", "zstd:abc",
    "snappy:0", "snappy:3", "uncompressed:1", "uncompressed:0",
    "window_log:9", "window_log:32", "window_log:", "window_log:abc", "brotli,window_log:31", "brotli,window_log:9",
    "max_parallelism:0", "max_parallelism:-1", "max_parallelism:", "max_parallelism: x",
    "saturation_delay_ms:0", "saturation_delay_ms:auto",
    "transpose_bucket_size:0", "transpose_bucket_size:0.4", "transpose_bucket_size:1KB", "transpose_bucket_size:",
    # bad booleans (exact spelling only)
    "transpose:1", "transpose:yes", "transpose:False", "transpose:TRUE", "pad_to_block_boundary:TRUE",
    "pad_to_block_boundary:1", "pad_to_block_boundary: true", "pad_to_block_boundary:no",
    # conflicting compressions
    "brotli,zstd", "zstd,brotli", "uncompressed,zstd:3", "snappy,uncompressed", "zstd:99,brotli",
    # window_log with uncompressed or snappy, in either order, even "auto"
    "uncompressed,window_log:20", "window_log:20,uncompressed", "snappy,window_log:20", "window_log:20,snappy",
    "snappy,window_log:auto", "window_log:auto,snappy", "uncompressed,window_log:auto", "window_log:auto,uncompressed",
    # repeated options, default not first
    "zstd:1,zstd:5", "brotli:3,brotli", "group_size:5,group_size:7", "window_log:20,window_log:22",
    "default,default", "max_parallelism:auto,max_parallelism:2", "zstd:5,default", "group_size:1,default",
    # which error wins: first pass (all options) before compression options
    "zstd:99,group_size:0", "zstd:99,foo", "window_log:5,zstd:99", "zstd:99,window_log:5",
]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("options") / "w.array_record"


@pytest.mark.parametrize("text", ACCEPTED)
def test_accepted_strings_render_like_google(scratch, text):
    g = google_writer_result(scratch, text)
    assert not g.startswith("!"), f"Google refuses {text!r}: {g}"
    ours = our_result(text)
    if "max_parallelism" in text:
        # Google's Python writer stores max_parallelism:1 whatever it was given.
        assert without_parallelism(ours) == without_parallelism(g)
    else:
        assert ours == g


@pytest.mark.parametrize("text", REJECTED)
def test_rejected_strings_fail_like_google(scratch, text):
    g = google_writer_result(scratch, text)
    assert g.startswith("!"), f"Google accepts {text!r}: {g}"
    with pytest.raises(ValueError) as e:
        parse_writer_options(text)
    assert f"!{e.value}" == g


def test_random_option_strings_agree_with_google(scratch):
    """A seeded sweep over combinations of keys and values, good and bad."""
    keys = ["default", "group_size", "max_parallelism", "saturation_delay_ms", "transpose", "transpose_bucket_size",
            "uncompressed", "brotli", "zstd", "snappy", "window_log", "pad_to_block_boundary", "foo", ""]
    values = [None, "", "1", "0", "-1", "3", "22", "23", "11", "12", "2", "auto", "true", "false", "1k", "1.5",
              "abc", " 5", "5 ", "30", "31", "10", "9", "-131072", "+4", "2147483647", "2147483648", "0x10", "1e3"]
    rnd = random.Random(20240601)
    mismatches = []
    for _ in range(600):
        parts = []
        for _ in range(rnd.randint(0, 4)):
            k, v = rnd.choice(keys), rnd.choice(values)
            parts.append(k if v is None else f"{k}:{v}")
        text = ",".join(parts)
        g, o = google_writer_result(scratch, text), our_result(text)
        if without_parallelism(g) != without_parallelism(o):
            mismatches.append((text, g, o))
    assert not mismatches, mismatches[:5]


def test_max_parallelism_is_stored_as_given(tmp_path):
    """Deliberate difference: ours stores the parallelism it used."""
    p = tmp_path / "p.array_record"
    assert google_writer_result(p, "max_parallelism:4").endswith("max_parallelism:1")
    assert our_result("max_parallelism:4").endswith("max_parallelism:4")
    assert parse_writer_options("max_parallelism:auto").max_parallelism == (os.cpu_count() or 1)
    with arrayfs.ArrayRecordWriter(p, "max_parallelism:3,group_size:2") as w:
        for i in range(500):
            w.write(b"%d" % i)
    stored = google.ArrayRecordReader(str(p)).writer_options_string()
    assert stored == "group_size:2,transpose:false,pad_to_block_boundary:false,zstd:3,window_log:20,max_parallelism:3"
    assert google.ArrayRecordReader(str(p)).read_all() == [b"%d" % i for i in range(500)]


@pytest.mark.parametrize(
    "text",
    ["", "group_size:3,brotli:1", "uncompressed,pad_to_block_boundary:true", "snappy,group_size:1000",
     "zstd:19,window_log:24", "transpose:false", "brotli,window_log:30"],
)
def test_our_writer_stores_what_google_stores(tmp_path, text):
    g = google_writer_result(tmp_path / "g", text)
    with arrayfs.ArrayRecordWriter(tmp_path / "o", text) as w:
        w.write(b"x")
    assert google.ArrayRecordReader(str(tmp_path / "o")).writer_options_string() == g
    with arrayfs.ArrayRecordReader(tmp_path / "o") as r:
        assert r.writer_options_string() == g


def test_parsed_fields():
    o = parse_writer_options("")
    assert o == WriterOptions()
    assert (o.group_size, o.compression, o.level, o.window_log, o.transpose, o.pad_to_block_boundary) == (
        1, ZSTD, 3, 20, False, False)
    o = parse_writer_options("group_size:7,brotli:2,window_log:18,pad_to_block_boundary:true")
    assert (o.group_size, o.compression, o.level, o.window_log, o.pad_to_block_boundary) == (7, BROTLI, 2, 18, True)
    assert parse_writer_options("brotli").window_log is None
    assert parse_writer_options("uncompressed").compression == NONE
    assert parse_writer_options("snappy:2").compression == SNAPPY
    assert parse_writer_options("transpose_bucket_size:1.5k,transpose").transpose_bucket_size == 1536


def test_options_must_be_str():
    with pytest.raises(TypeError):
        parse_writer_options(None)
    with pytest.raises(TypeError):
        parse_reader_options(b"group_size:1")


def test_writer_rejects_bad_options_without_leaving_files(tmp_path):
    for text in ("group_size:0", "foo", "zstd,brotli"):
        with pytest.raises(ValueError):
            arrayfs.ArrayRecordWriter(tmp_path / "bad.array_record", text)
    assert os.listdir(tmp_path) == []


def test_writer_transpose_is_a_clear_error_or_works(tmp_path):
    p = tmp_path / "t.array_record"
    try:
        with arrayfs.ArrayRecordWriter(p, "transpose:true") as w:
            w.write(b"abc")
    except ValueError as e:
        assert "transpose" in str(e)
        assert not p.exists()
    else:
        assert google.ArrayRecordReader(str(p)).read_all() == [b"abc"]


# -- reader options ----------------------------------------------------------------


READER_ACCEPTED = [
    "", ",", "readahead_buffer_size:0", "readahead_buffer_size:auto", "readahead_buffer_size:1M",
    "readahead_buffer_size:1G", "readahead_buffer_size:1.5k", "readahead_buffer_size: 4k", "readahead_buffer_size:1e3",
    "readahead_buffer_size:0x10", "readahead_buffer_size:.5k", "readahead_buffer_size:5.", "readahead_buffer_size:+5",
    "max_parallelism:0", "max_parallelism:1", "max_parallelism:3", "max_parallelism:auto", "max_parallelism: 3",
    "index_storage_option:in_memory", "index_storage_option", "index_storage_option:",
    "index_storage_option:offloaded,footer_prefetch_bytes:0", "footer_prefetch_bytes:0", "footer_prefetch_bytes:auto",
    "footer_prefetch_bytes:1M", "readahead_buffer_size:0,max_parallelism:2,index_storage_option:in_memory",
]
READER_REJECTED = [
    "foo", "default", "group_size:1", "zstd", "Max_parallelism:1",
    "readahead_buffer_size:2G", "readahead_buffer_size:-1", "readahead_buffer_size:", "readahead_buffer_size:inf",
    "readahead_buffer_size:nan", "readahead_buffer_size:1_000",
    "max_parallelism:-1", "max_parallelism:", "max_parallelism:x",
    "index_storage_option:foo", "index_storage_option:offloaded",
    "index_storage_option:offloaded,footer_prefetch_bytes:auto", "footer_prefetch_bytes:1,index_storage_option:offloaded",
    "footer_prefetch_bytes:-1", "footer_prefetch_bytes:2G", "footer_prefetch_bytes:",
    "max_parallelism:1,max_parallelism:2",
]


@pytest.fixture(scope="module")
def small_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("reader_options") / "r.array_record"
    w = google.ArrayRecordWriter(str(p), "group_size:3")
    for i in range(10):
        w.write(b"r%d" % i)
    w.close()
    return str(p)


def google_reader_result(path, text):
    try:
        r = google.ArrayRecordReader(path, text)
        r.num_records()
        return "ok"
    except ValueError as e:
        return f"!{e}"


@pytest.mark.parametrize("text", READER_ACCEPTED)
def test_reader_options_accepted_like_google(small_file, text):
    assert google_reader_result(small_file, text) == "ok"
    assert isinstance(parse_reader_options(text), ReaderOptions)
    with arrayfs.ArrayRecordReader(small_file, text) as r:
        assert r.read_all() == [b"r%d" % i for i in range(10)]


@pytest.mark.parametrize("text", READER_REJECTED)
def test_reader_options_rejected_like_google(small_file, text):
    g = google_reader_result(small_file, text)
    assert g.startswith("!")
    with pytest.raises(ValueError) as e:
        arrayfs.ArrayRecordReader(small_file, text)
    assert f"!{e.value}" == g


#: Sizes as array_record's documentation writes them ("Example 16MB"), which
#: Google's own parser refuses: arrayfs reads them as the suffix without "B".
READER_SIZES_WITH_B = [
    ("readahead_buffer_size:64MB", "readahead_buffer_size", 64 << 20),
    ("readahead_buffer_size:16MB", "readahead_buffer_size", 16 << 20),
    ("readahead_buffer_size:4MB", "readahead_buffer_size", 4 << 20),
    ("readahead_buffer_size:1KB", "readahead_buffer_size", 1 << 10),
    ("readahead_buffer_size:1kB", "readahead_buffer_size", 1 << 10),
    ("readahead_buffer_size:1GB", "readahead_buffer_size", 1 << 30),
    ("readahead_buffer_size:1.5MB", "readahead_buffer_size", 3 << 19),
    ("readahead_buffer_size: 2 MB", "readahead_buffer_size", 2 << 20),
    ("footer_prefetch_bytes:2MB", "footer_prefetch_bytes", 2 << 20),
]


@pytest.mark.parametrize("text,key,size", READER_SIZES_WITH_B)
def test_reader_sizes_with_a_b_are_the_same_size(small_file, text, key, size):
    without_b = text[:-1]
    assert google_reader_result(small_file, without_b) == "ok"
    assert google_reader_result(small_file, text).startswith("!")  # Google's parser
    assert getattr(parse_reader_options(text), key) == getattr(parse_reader_options(without_b), key) == size
    with arrayfs.ArrayRecordReader(small_file, text) as r:
        assert r.read_all() == [b"r%d" % i for i in range(10)]


@pytest.mark.parametrize("value", ["64mb", "64Mb", "64MiB", "64Mi", "64MBB", "MB", "64BB", "B", "-4MB", "2GB",
                                   "1.5XB", "64M B", "nanMB", "infKB", "4TB"])
def test_reader_sizes_that_mean_nothing_are_refused(value):
    with pytest.raises(ValueError, match="readahead_buffer_size: invalid value"):
        parse_reader_options(f"readahead_buffer_size:{value}")


def test_writer_sizes_stay_as_strict_as_google():
    # Writer strings are stored in the footer; they keep Google's grammar.
    with pytest.raises(ValueError, match="transpose_bucket_size: invalid value"):
        parse_writer_options("transpose,transpose_bucket_size:1KB")


def test_reader_unknown_option_names_raise_value_error(small_file):
    with pytest.raises(ValueError, match="Unknown option bogus"):
        arrayfs.ArrayRecordReader(small_file, "bogus:1")
    with pytest.raises(ValueError, match="Unknown option"):
        parse_reader_options("readahead_buffer_size:0,bogus")


def test_reader_option_values():
    o = parse_reader_options("readahead_buffer_size:1.5k,max_parallelism:3,footer_prefetch_bytes:2M")
    assert (o.readahead_buffer_size, o.max_parallelism, o.footer_prefetch_bytes) == (1536, 3, 2 << 20)
    assert parse_reader_options("max_parallelism:auto").max_parallelism is None
    assert parse_reader_options("readahead_buffer_size:2.5").readahead_buffer_size == 3  # rounds half away
    assert parse_reader_options("").readahead_buffer_size == 16 << 20


def test_reader_accepts_googles_keyword_arguments(small_file):
    expected = [b"r%d" % i for i in range(10)]
    with arrayfs.ArrayRecordReader(small_file, "", file_reader_buffer_size=4096) as r:
        assert r.read_all() == expected
    with arrayfs.ArrayRecordReader(small_file, "readahead_buffer_size:0", file_reader_buffer_size=1 << 20) as r:
        assert r.read_all() == expected
    assert google.ArrayRecordReader(small_file, "", file_reader_buffer_size=4096).read_all() == expected


def test_reader_unknown_keyword_is_type_error(small_file):
    # Google's pybind11 reader silently ignores unknown keywords; ours says so.
    with pytest.raises(TypeError):
        arrayfs.ArrayRecordReader(small_file, "", no_such_option=1)
