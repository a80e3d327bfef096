"""What the fuzz targets in ``fuzz/`` found, kept as tests, and the targets
themselves run over their seeds (so that a target that rots, or a seed
that stops passing, fails here and not only in ``make fuzz``).

Each finding's input is inline (bytes) or built by code, with the target
that found it and what was wrong.
"""

from __future__ import annotations

import importlib
import os
import sys

import numpy as np
import pytest

from arrayfs.errors import CorruptChunkError
from arrayfs.file import ArrayRecordFile
from arrayfs.riegeli.blocks import BLOCK_SIZE
from arrayfs.riegeli.chunk import (
    SIMPLE,
    decode_single_record,
    encode_chunk_header,
    encode_simple,
    read_chunk,
    single_record_zstd_frames,
)
from arrayfs.riegeli.compression import NONE, ZSTD

FUZZ = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fuzz")
TARGETS = ("file", "chunk", "transposed", "footer", "options", "tfrecord", "example")


def _target(name):
    if FUZZ not in sys.path:
        sys.path.insert(0, FUZZ)
    return importlib.import_module(f"fuzz_{name}")


def _passes(name, data: bytes) -> None:
    """Run one input through target ``name`` under its pass rule."""
    t = _target(name)
    _target_harness().one_input(t.check, t.EXPECTED, keep_going="")(data)


def _target_harness():
    if FUZZ not in sys.path:
        sys.path.insert(0, FUZZ)
    return importlib.import_module("_harness")


def _one_record_chunk(record: bytes, compression: int) -> bytes:
    data, decoded = encode_simple([record], compression)
    return encode_chunk_header(data, SIMPLE, 1, decoded) + data


# -- fuzz_chunk: a chunk beginning inside a block header ----------------------
#
# Found by fuzz_chunk: at byte 131095 (23 bytes into the block header at
# 131072) a valid one-record zstd chunk was returned by
# decode_single_record (the read_record fast path) while read_chunk
# refused it as truncated, with arithmetic for a chunk that crosses a block
# header. No chunk can begin inside or right after a block header (spec:
# "Block header"), so a footer entry pointing there is corrupt: both paths
# now say so.

FOUND_INSIDE_BLOCK_HEADER = bytes.fromhex(
    "170002f01aa26617c125921700000000000000968e85b6ae057dfa7201000000000000000000000000"
    "00007a0b0128b52ffd2001090000000028b52ffd2000010000"
)


def test_found_chunk_inside_block_header_passes_the_target():
    _passes("chunk", FOUND_INSIDE_BLOCK_HEADER)


@pytest.mark.parametrize("r", [1, 10, 23, 24])
@pytest.mark.parametrize("compression", [NONE, ZSTD])
def test_no_chunk_begins_inside_or_right_after_a_block_header(r, compression):
    window = _one_record_chunk(b"hello, record", compression)
    offset = 2 * BLOCK_SIZE + r
    assert decode_single_record(window, offset, verify=True) is None
    sel, _, _ = single_record_zstd_frames(
        window, np.zeros(1, np.int64), np.array([offset], np.int64), np.array([len(window)], np.int64), verify=True)
    assert len(sel) == 0
    with pytest.raises(CorruptChunkError, match="no chunk can begin here") as e:
        read_chunk(window, offset, base=offset)
    assert e.value.offset == offset


@pytest.mark.parametrize("r", [1, 23, 24])
def test_no_chunk_begins_inside_a_block_header_when_the_window_reaches_the_next(r):
    # Found by fuzz_chunk (seed 20261206, 2026-12-07): the same chunk as
    # above, in a window long enough to reach the next block header, which
    # hash-checks. decode_single_record took that branch, which cut the
    # next header out and never asked where the chunk began: it returned
    # the record that read_chunk refuses.
    from arrayfs.riegeli.blocks import BLOCK_HEADER_SIZE, block_header_bytes

    chunk = _one_record_chunk(b"hello, record", ZSTD)
    offset = 2 * BLOCK_SIZE + r
    q = BLOCK_SIZE - r
    window = chunk + bytes(q - len(chunk)) + block_header_bytes(0, 0) + bytes(100)
    assert len(window) > q + BLOCK_HEADER_SIZE
    assert decode_single_record(window, offset, verify=True) is None
    with pytest.raises(CorruptChunkError, match="no chunk can begin here"):
        read_chunk(window, offset, base=offset)
    _passes("chunk", offset.to_bytes(3, "little") + window)


@pytest.mark.parametrize("compression", [NONE, ZSTD])
def test_one_record_chunk_just_past_a_block_header_still_reads(compression):
    window = _one_record_chunk(b"hello, record", compression)
    offset = 2 * BLOCK_SIZE + 25
    assert decode_single_record(window, offset, verify=True) == b"hello, record"
    header, _, _ = read_chunk(window, offset, base=offset)
    assert header.num_records == 1


# -- fuzz_chunk: bytes after a one-record zstd frame ---------------------------
#
# Found by fuzz_chunk: a one-record zstd chunk (hashes valid) whose values
# block holds a frame followed by 4 stray bytes. The batched path of
# read_records (single_record_zstd_frames + decompress_zstd_frames) returned
# the record, zstd ignoring the stray bytes, while read_record's general
# path refused the chunk: the same file read two ways gave a record and an
# error. The batched path now takes a frame only when it ends where the
# chunk data ends, and a frame declaring its size refuses trailing bytes.

FOUND_TRAILING_BYTES = bytes.fromhex(
    "27010116cf853184d68c511c000000000000007498f53e26ad31ba720100000000000001000000000000007a0b0128b52ffd"
    "0001090000010128b52ffd0001090000010128b52f0000"
)


def test_found_trailing_bytes_passes_the_target():
    _passes("chunk", FOUND_TRAILING_BYTES)


def _zstd_chunk_with_values(values_block: bytes, record: bytes) -> bytes:
    """A one-record zstd simple chunk with the given values block (hashes valid)."""
    from arrayfs.riegeli.compression import compress_block

    sizes_block = compress_block(ZSTD, bytes([len(record)]))
    data = bytes([ZSTD, len(sizes_block)]) + sizes_block + values_block
    return encode_chunk_header(data, SIMPLE, 1, len(record)) + data


@pytest.mark.parametrize("content_size", [True, False])
def test_zstd_frame_with_trailing_bytes_is_refused_by_every_path(content_size):
    import zstandard

    from arrayfs.riegeli.chunk import decode_chunk, decompress_zstd_frames
    from arrayfs.riegeli.varint import encode_varint

    record = b"a record of some bytes"
    frame = zstandard.ZstdCompressor(write_content_size=content_size).compress(record)
    offset = 64
    good = _zstd_chunk_with_values(encode_varint(len(record)) + frame, record)
    bad = _zstd_chunk_with_values(encode_varint(len(record)) + frame + b"\x01\x28\xb5\x2f", record)

    def batched(window):
        sel, segs, sizes = single_record_zstd_frames(
            window, np.zeros(1, np.int64), np.array([offset], np.int64), np.array([len(window)], np.int64),
            verify=True)
        out = decompress_zstd_frames([(window, segs, sizes)]) if len(sel) else []
        return out[0] if out else None

    assert batched(good) == record
    assert decode_single_record(good, offset, verify=True) == record
    assert batched(bad) is None
    assert decode_single_record(bad, offset, verify=True) is None
    header, data, _ = read_chunk(bad, offset, base=offset)
    with pytest.raises(CorruptChunkError):
        decode_chunk(header, data, offset=offset)


# -- fuzz_file: a one-record zstd frame whose header is not zstd's ------------
#
# Found by fuzz_file in CI: a one-record zstd chunk (hashes valid) whose
# frame header zstd cannot parse. read_record's fast path asked zstd for the
# frame's content size outside its try, and the ZstdError escaped the
# reader instead of the general path's CorruptChunkError naming the file.


@pytest.mark.parametrize("header", [b"\x00\x00\x00\x00", b"\x28\xb5\x2f\xfd\x08"])
def test_frame_header_zstd_cannot_parse_is_a_corrupt_chunk(tmp_path, header):
    import zstandard

    from arrayfs.riegeli.chunk import decode_chunk
    from arrayfs.riegeli.varint import encode_varint

    record = b"a record of some bytes"
    frame = zstandard.ZstdCompressor(write_content_size=True).compress(record)
    bad_frame = header + frame[len(header):]
    with pytest.raises(zstandard.ZstdError):
        zstandard.frame_content_size(bad_frame)
    offset = 64
    bad = _zstd_chunk_with_values(encode_varint(len(record)) + bad_frame, record)
    assert decode_single_record(bad, offset, verify=True) is None
    header_, data, _ = read_chunk(bad, offset, base=offset)
    with pytest.raises(CorruptChunkError):
        decode_chunk(header_, data, offset=offset)


# -- sizes a compressed stream cannot hold -------------------------------------
#
# Found while reading what fuzz_chunk reported as MemoryError under the
# harness's 256 MiB cap: a zstd frame may declare any content size and
# python-zstandard allocates it before decoding; python-snappy does the same
# with the length at the head of its stream. Both are now checked against
# the most a stream of that many bytes can decode to, and a MemoryError is
# no longer reported as "stream is corrupt".


def test_zstd_frame_declaring_more_than_it_can_hold_is_refused_before_allocating():
    import struct

    import zstandard

    from arrayfs.riegeli.compression import CompressionError, decompress_block
    from arrayfs.riegeli.varint import encode_varint

    frame = zstandard.ZstdCompressor(write_content_size=True).compress(b"x" * 10)
    # Same frame, the content size widened to 8 bytes claiming 8 GiB.
    forged = frame[:4] + bytes([0xE0]) + struct.pack("<Q", 8 << 30) + frame[6:]
    assert zstandard.frame_content_size(forged) == 8 << 30
    with pytest.raises(CompressionError, match="cannot hold"):
        decompress_block(ZSTD, encode_varint(8 << 30) + forged, max_size=1 << 40)


def test_snappy_stream_declaring_more_than_it_can_hold_is_refused_before_allocating():
    from arrayfs.riegeli.compression import SNAPPY, CompressionError, decompress_block
    from arrayfs.riegeli.varint import encode_varint

    claim = 1 << 33
    stream = encode_varint(claim) + b"\x00x"  # a 1-byte literal
    with pytest.raises(CompressionError, match="cannot hold"):
        decompress_block(SNAPPY, encode_varint(claim) + stream, max_size=1 << 40)


def test_memory_error_is_not_called_a_corrupt_stream(monkeypatch):
    import snappy

    from arrayfs.riegeli.compression import SNAPPY, compress_block, decompress_block

    block = compress_block(SNAPPY, b"hello hello hello")

    def no_memory(data):
        raise MemoryError

    monkeypatch.setattr(snappy, "uncompress", no_memory)
    with pytest.raises(MemoryError):
        decompress_block(SNAPPY, block, max_size=100)


# -- fuzz_chunk: a one-record chunk whose sizes block is corrupt ---------------
#
# Found by fuzz_chunk, kept as documented behaviour rather than changed:
# decode_single_record and the batched zstd path (the group_size:1 read
# paths) take a lone record's size from the chunk header and never decode
# its sizes block, so a chunk whose hashes hold but whose sizes block is
# corrupt is read by them and refused by decode_chunk. Decoding the sizes
# block would cost a decompression per record on the hot path; the record
# bytes served are the chunk's values, checked against its hash and size.

FOUND_BAD_SIZES_BLOCK = bytes.fromhex(
    "270100cd49e91ae7c02cd818000000000000003471d58896b11e00720100000000000001000000000000007a0b0128b52ffd"
    "2201090000010128b52ffd200109000063"
)


def test_found_bad_sizes_block_passes_the_target():
    from arrayfs.riegeli.chunk import decode_chunk

    _passes("chunk", FOUND_BAD_SIZES_BLOCK)
    base = int.from_bytes(FOUND_BAD_SIZES_BLOCK[:3], "little")
    window = FOUND_BAD_SIZES_BLOCK[3:]
    assert decode_single_record(window, base, verify=True) == b"c"
    header, data, _ = read_chunk(window, base, base=base)
    with pytest.raises(CorruptChunkError, match="sizes"):
        decode_chunk(header, data, offset=base)


# -- fuzz_file: a footer whose decoded size disagrees with its chunk ----------
#
# Found by fuzz_file's consistency check: in a group_size:1 file, one byte of
# a footer entry's decoded_data_size changed (footer re-hashed) made
# record_sizes (from the footer alone: what the mount's stat shows) say 2
# bytes while read_record served the chunk's 1 byte. Every read path now
# checks the chunk header's decoded size against the footer's and raises
# CorruptChunkError naming the chunk when they differ.


def _rewrite_footer(tmp_path, options, records, edit):
    """A Google-written file whose footer chunk is decoded, passed to
    ``edit(entries, index)`` (the footer's records: metadata, then one
    entry per chunk), which returns the new chunk data, and written back
    in place (hashes valid)."""
    from _google import gwrite

    from arrayfs.riegeli.chunk import decode_chunk

    path = tmp_path / "forged.array_record"
    gwrite(path, options, records)
    buf = bytearray(path.read_bytes())
    with ArrayRecordFile(str(path)) as f:
        footer_offset = f.footer_offset
        index = f.index()
    header, data, _ = read_chunk(buf, footer_offset)
    values, offsets = decode_chunk(header, data, offset=footer_offset)
    entries = [bytes(values[a:b]) for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())]
    data, decoded = edit(entries, index)
    chunk = encode_chunk_header(data, SIMPLE, len(entries), decoded) + data
    end = len(buf) - BLOCK_SIZE
    assert footer_offset + len(chunk) <= end and footer_offset // BLOCK_SIZE == (footer_offset + len(chunk)) // BLOCK_SIZE
    buf[footer_offset:end] = chunk + bytes(end - footer_offset - len(chunk))
    path.write_bytes(bytes(buf))
    return path


def _forged_decoded_size(tmp_path, options, records, record_index, new_size):
    """A file whose footer says record ``record_index``'s chunk decodes to
    ``new_size`` bytes (group_size:1)."""
    from arrayfs.layout import encode_chunk_footer

    def edit(entries, index):
        chunk_offset = int(index.offsets[record_index])
        assert entries[record_index + 1] == encode_chunk_footer(chunk_offset, len(records[record_index]), 1)
        entries[record_index + 1] = encode_chunk_footer(chunk_offset, new_size, 1)
        return encode_simple(entries, NONE)

    return _rewrite_footer(tmp_path, options, records, edit)


@pytest.mark.parametrize("options", ["group_size:1,uncompressed", "group_size:1,zstd:3", "group_size:1,snappy"])
def test_footer_decoded_size_must_match_the_chunk(tmp_path, options):
    records = [b"a", b"bb", b"ccc"] * 10
    path = _forged_decoded_size(tmp_path, options, records, 1, 3)
    with ArrayRecordFile(str(path)) as f:
        assert f.record_sizes(0, f.num_records).tolist()[1] == 3  # what the footer says
        with pytest.raises(CorruptChunkError, match="footer says the chunk decodes to 3 bytes") as e:
            f.read_record(1)
        assert e.value.records == (1, 2) and str(path) in str(e.value)
        # 30 indices: the batched path (zstd frames decoded together).
        with pytest.raises(CorruptChunkError, match="decodes to 3 bytes"):
            f.read_records(np.arange(f.num_records, dtype=np.int64))
        assert f.read_record(0) == b"a"
        assert f.read_records(np.arange(2, 30, dtype=np.int64)) == records[2:]
    _passes("file", path.read_bytes())


# -- fuzz_file: an error that did not name the file ---------------------------
#
# Found by fuzz_file's check that every error names the file: a footer
# whose sizes block gives its metadata record more bytes than the whole
# footer decodes to raised "footer metadata larger than the footer" with the
# offset but without the path.


def test_footer_metadata_larger_than_the_footer_names_the_file(tmp_path):
    from arrayfs.riegeli.varint import encode_varint, encode_varints

    def edit(entries, index):
        values = b"".join(entries)
        sizes = encode_varints([len(values) + 1] + [len(e) for e in entries[1:]])
        return bytes([NONE]) + encode_varint(len(sizes)) + sizes + values, len(values)

    path = _rewrite_footer(tmp_path, "group_size:1,uncompressed", [b"a", b"bb"], edit)
    with pytest.raises(CorruptChunkError, match="footer metadata larger than the footer") as e:
        ArrayRecordFile(str(path))
    assert e.value.path == str(path) and str(path) in str(e.value)
    _passes("file", path.read_bytes())


# -- every target passes its seeds ---------------------------------------------


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    if FUZZ not in sys.path:
        sys.path.insert(0, FUZZ)
    make_seeds = importlib.import_module("make_seeds")
    out = tmp_path_factory.mktemp("corpus")
    counts = make_seeds.make(str(out))
    assert all(counts[t] > 0 for t in TARGETS), counts
    return out


@pytest.mark.parametrize("name", TARGETS)
def test_target_passes_its_seeds(seeds, name):
    t = _target(name)
    run = _target_harness().one_input(t.check, t.EXPECTED, keep_going="")
    files = sorted((seeds / name).iterdir())
    assert files
    for path in files:
        run(path.read_bytes())


@pytest.mark.parametrize("name", TARGETS)
def test_target_refuses_what_is_not_documented(name):
    """The pass rule lets documented exceptions through and nothing else."""
    t = _target(name)
    assert t.EXPECTED and all(issubclass(e, Exception) for e in t.EXPECTED)
    assert not any(issubclass(e, (KeyError, IndexError, TypeError, MemoryError, AssertionError)) for e in t.EXPECTED)

    def boom(data):
        raise IndexError("not documented")

    with pytest.raises(IndexError):
        _target_harness().one_input(boom, t.EXPECTED, keep_going="")(b"")


# Found by fuzz_chunk (10-minute run): a transposed chunk whose header
# claims 42 TiB of records had the vector decoder allocate them up front
# (MemoryError). The output and the offsets now start at what the chunk's
# own bytes can make and grow only as records really decode.


@pytest.mark.parametrize("forge", ["size", "count"])
def test_transposed_chunk_claiming_huge_sizes_is_refused_without_allocating(tmp_path, forge):
    import random
    import tracemalloc

    from _transpose_helpers import google_write, mixed_records, transposed_chunks

    from arrayfs.riegeli.transpose import TransposeError, decode_transposed_chunk

    records = mixed_records(random.Random(7), 3000)
    path = tmp_path / "t.array_record"
    google_write(path, records, "group_size:3000,transpose:true,zstd:3")
    (n, d, data), = transposed_chunks(path)
    values, offsets = decode_transposed_chunk(data, n, d)  # the real thing decodes
    assert bytes(values[offsets[5] : offsets[6]]) == records[5]
    n2, d2 = (n, 46_179_488_366_613) if forge == "size" else (1 << 40, d)
    tracemalloc.start()
    try:
        with pytest.raises(TransposeError):
            decode_transposed_chunk(data, n2, d2)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 256 << 20, peak


# Found by fuzz_chunk in CI's 30-second run right after the change above:
# header sizes of 2^63 and more overflowed the int64 offsets.
_HUGE_HEADER_CHUNKS = [
    "wgAAAUb6W+nfKgVVAAAAAAAAAGe2A1n9hj+5dAIAAAAAAAAqAAAAAAAA32IlJRskAABEt7lpkUEDNXorhCQKQD6WLhm9f0S/clMmZxWOIMCNAA"
    "KLAIAEBAMIiwOAq6qqPwAAgD8DEhsRAACkEVpmaKQijFhSjBV1JwKLAIAEBwM=",
    "VgEAyHxcPDybLRkwAAAAAAAAAItJnwX+gHBKdAEAAAAAAAAAAOcDKAAAmgAfAwQCBAkBAQQJBwMIEhUCCB4ABwgMCQsKAAAAAwIBBggIq6oqQOfn"
    "5+fn5+fn5+fn5+fn5+fn5+fn5+fn5+fn5+fn5+fn5+fn5+fn5+fn5+fn5+fn5+fn5+fn5+fn5+fn5+fn5whyZWNvcmQtOA==",
]


@pytest.mark.parametrize("b64", _HUGE_HEADER_CHUNKS)
def test_found_transposed_header_sizes_past_int64_pass_the_target(b64):
    import base64

    _passes("chunk", base64.b64decode(b64))
