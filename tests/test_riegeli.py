"""Unit tests of the Riegeli container layer (arrayfs.riegeli).

Oracles: the formulas and fixed bytes of riegeli's
``doc/riegeli_records_file_format.md`` (re-implemented here independently,
plus byte-by-byte brute force), and files written by Google's array_record
wheel where it is installed.
"""

from __future__ import annotations

import io
import mmap
import os
import struct
import tracemalloc

import numpy as np
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arrayfs.errors import ArrayRecordError, CorruptChunkError, TruncatedFileError, UnsupportedChunkError
from arrayfs.riegeli import blocks, compression
from arrayfs.riegeli.blocks import (
    BLOCK_HEADER_SIZE,
    BLOCK_SIZE,
    CHUNK_HEADER_SIZE,
    USABLE_BLOCK_SIZE,
    add_with_overhead,
    block_header_bytes,
    chunk_end,
    distance_without_overhead,
    is_possible_chunk_boundary,
    read_logical,
    round_up_to_possible_chunk_boundary,
)
from arrayfs.riegeli.chunk import (
    PADDING,
    SIGNATURE,
    SIMPLE,
    TRANSPOSED,
    ChunkHeader,
    decode_chunk,
    decode_record_sizes,
    decode_simple,
    encode_chunk_header,
    encode_simple,
    parse_chunk_header,
    read_chunk,
    split_records,
)
from arrayfs.riegeli.chunk_writer import ChunkWriter
from arrayfs.riegeli.compression import (
    BROTLI,
    NONE,
    SNAPPY,
    ZSTD,
    CompressionError,
    compress_block,
    decompress_block,
    decompress_prefix,
)
from arrayfs.riegeli.hashing import RIEGELI_HASH_KEY, highway_hash64
from arrayfs.riegeli.varint import (
    MAX_VARINT64_LEN,
    VarintError,
    decode_varints,
    encode_varint,
    encode_varints,
    read_varint,
)

U64_MAX = 2**64 - 1
CODECS = [NONE, BROTLI, ZSTD, SNAPPY]
CODEC_IDS = ["none", "brotli", "zstd", "snappy"]

# riegeli_records_file_format.md, "File signature": the first 64 bytes of
# every Riegeli/records file.
SPEC_SIGNATURE = bytes.fromhex(
    "83 af 70 d1 0d 88 4a 3f 00 00 00 00 00 00 00 00"
    "40 00 00 00 00 00 00 00 91 ba c2 3c 92 87 e1 a9"
    "00 00 00 00 00 00 00 00 e1 9f 13 c0 e9 b1 c3 72"
    "73 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00"
)


# -- varints ------------------------------------------------------------------


def scalar_varint(value: int) -> bytes:
    """Reference encoder: the protobuf base-128 definition, one byte at a time."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


EDGE_VALUES = [0, 1, 127, 128, 255, 16383, 16384, 2**21 - 1, 2**21, 2**28, 2**35 - 1, 2**35,
               2**42, 2**49, 2**56 - 1, 2**56, 2**63 - 1, 2**63, U64_MAX]


@pytest.mark.parametrize("value", EDGE_VALUES)
def test_encode_varint_matches_reference(value):
    enc = encode_varint(value)
    assert enc == scalar_varint(value)
    assert len(enc) <= MAX_VARINT64_LEN
    assert read_varint(enc, 0) == (value, len(enc))
    # and at a position inside a larger buffer
    assert read_varint(b"\xff\x7f" + enc + b"\x01", 2) == (value, 2 + len(enc))


def test_encode_varint_rejects_out_of_range():
    with pytest.raises(ValueError):
        encode_varint(-1)
    with pytest.raises(ValueError):
        encode_varint(2**64)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, U64_MAX), max_size=300))
def test_vectorised_varints_match_scalar(values):
    expected = b"".join(scalar_varint(v) for v in values)
    assert encode_varints(values) == expected
    assert encode_varints(np.array(values, dtype=np.uint64)) == expected
    decoded = decode_varints(expected, len(values))
    assert decoded.dtype == np.uint64 and decoded.shape == (len(values),)
    assert decoded.tolist() == values
    # the scalar reader walks the same bytes
    pos, seen = 0, []
    while pos < len(expected):
        v, pos = read_varint(expected, pos)
        seen.append(v)
    assert seen == values


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 127), min_size=1, max_size=500))
def test_decode_varints_single_byte_fast_path(values):
    buf = bytes(values)
    assert decode_varints(buf, len(values)).tolist() == values
    assert decode_varints(memoryview(bytearray(buf)), len(values)).tolist() == values


@settings(max_examples=100, deadline=None)
@given(st.integers(2, 9).flatmap(lambda w: st.lists(st.integers(1 << 7 * (w - 1), (1 << 7 * w) - 1),
                                                    min_size=1, max_size=300)))
def test_decode_varints_of_one_width(values):
    # Records of one size class (every size in 2 bytes, say) take a path of
    # their own: a (count, width) matrix.
    buf = encode_varints(values)
    assert len(buf) % len(values) == 0
    assert decode_varints(buf, len(values)).tolist() == values


@pytest.mark.parametrize("buf, count", [(b"\x05\x80\x05\x80", 2), (b"\x80\x80\x80\x05", 2),
                                        (b"\x80\x05\x80\x85", 2), (b"\x85\x85", 1)])
def test_decode_varints_of_one_width_refuses_misplaced_ends(buf, count):
    with pytest.raises(VarintError):
        decode_varints(buf, count)


def test_decode_varints_of_mixed_sizes_is_vectorised():
    sizes = np.random.default_rng(0).integers(0, 2**40, 100_000, dtype=np.uint64)
    buf = encode_varints(sizes)
    assert np.array_equal(decode_varints(buf, sizes.size), sizes)


@pytest.mark.parametrize(
    "buf, count",
    [
        (b"\x80", 1),  # truncated
        (b"\x05\x80", 2),  # last one truncated
        (b"\x80" * 10 + b"\x01", 1),  # 11 bytes long
        (b"\x80" * 9 + b"\x02", 1),  # 10 bytes, overflows 64 bits
        (b"\xff" * 9 + b"\x7f", 1),  # 10 bytes, overflows 64 bits
        (b"\x05\x05", 1),  # trailing varint
        (b"\x05", 2),  # too few
        (b"", 1),
        (b"\x05", 0),
    ],
)
def test_decode_varints_errors(buf, count):
    with pytest.raises(VarintError):
        decode_varints(buf, count)


@pytest.mark.parametrize(
    "buf",
    [b"", b"\x80", b"\xff\xff", b"\x80" * 10 + b"\x01", b"\x80" * 9 + b"\x02", b"\xff" * 10],
)
def test_read_varint_errors(buf):
    with pytest.raises(VarintError):
        read_varint(buf, 0)


def test_read_varint_past_end():
    with pytest.raises(VarintError):
        read_varint(b"\x01", 1)


def test_varint_error_is_value_error():
    assert issubclass(VarintError, ValueError)


# -- hashing --------------------------------------------------------------------


def test_hash_key_is_the_spec_key():
    # riegeli_records_file_format.md, "Conventions".
    assert struct.unpack("<4Q", RIEGELI_HASH_KEY) == (
        0x2F696C6567656952, 0x0A7364726F636572, 0x2F696C6567656952, 0x0A7364726F636572,
    )


def test_signature_bytes_are_fixed_by_the_spec():
    block_header = block_header_bytes(0, 64)
    chunk_header = encode_chunk_header(b"", SIGNATURE, 0, 0)
    assert block_header + chunk_header == SPEC_SIGNATURE
    # field by field: the hashes the spec's bytes hold
    assert highway_hash64(struct.pack("<QQ", 0, 64)) == struct.unpack_from("<Q", SPEC_SIGNATURE, 0)[0]
    assert highway_hash64(b"") == struct.unpack_from("<Q", SPEC_SIGNATURE, 40)[0] == 0x72C3B1E9C0139FE1
    assert highway_hash64(SPEC_SIGNATURE[32:64]) == struct.unpack_from("<Q", SPEC_SIGNATURE, 24)[0]


def test_chunk_writer_starts_with_the_signature():
    out = io.BytesIO()
    cw = ChunkWriter(out)
    assert out.getvalue() == SPEC_SIGNATURE and cw.pos == 64


def test_hash_accepts_any_contiguous_buffer(tmp_path):
    data = os.urandom(100_000)
    h = highway_hash64(data)
    assert highway_hash64(bytearray(data)) == h
    assert highway_hash64(memoryview(data)) == h
    assert highway_hash64(np.frombuffer(data, np.uint8)) == h
    p = tmp_path / "f"
    p.write_bytes(b"xx" + data)
    with open(p, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        view = memoryview(mm)[2:]
        assert highway_hash64(view) == h
        view.release()
    # a different byte, a different hash
    assert highway_hash64(data[:-1] + bytes([data[-1] ^ 1])) != h
    assert 0 <= h <= U64_MAX


def test_hash_matches_highwayhash_package():
    highwayhash = pytest.importorskip("highwayhash")
    for n in (0, 1, 31, 32, 33, 1000):
        data = bytes(range(256)) * 4
        data = data[:n]
        expected = struct.unpack("<Q", highwayhash.highwayhash_64(RIEGELI_HASH_KEY, data))[0]
        assert highway_hash64(data) == expected


# -- block arithmetic -------------------------------------------------------------
# The spec's "Implementation notes", transcribed literally.


def spec_num_overhead_blocks(pos, size):
    return (size + (pos + USABLE_BLOCK_SIZE - 1) % BLOCK_SIZE) // USABLE_BLOCK_SIZE


def spec_add_with_overhead(pos, size):
    return pos + size + spec_num_overhead_blocks(pos, size) * BLOCK_HEADER_SIZE


def spec_remaining_in_block(pos):
    return BLOCK_SIZE - 1 - (pos + BLOCK_SIZE - 1) % BLOCK_SIZE


def spec_round_up_to_possible_chunk_boundary(pos):
    return pos + max(spec_remaining_in_block(pos) - (USABLE_BLOCK_SIZE - 1), 0)


def spec_chunk_end(chunk_begin, data_size, num_records):
    return max(
        spec_add_with_overhead(chunk_begin, CHUNK_HEADER_SIZE + data_size),
        spec_round_up_to_possible_chunk_boundary(chunk_begin + num_records),
    )


def _logical_positions(begin, size):
    """Physical positions of the first ``size`` logical bytes from ``begin``:
    every byte that is not inside a block header (numpy brute force)."""
    span = np.arange(begin, begin + size + (size // USABLE_BLOCK_SIZE + 2) * BLOCK_HEADER_SIZE, dtype=np.int64)
    return span[span % BLOCK_SIZE >= BLOCK_HEADER_SIZE][:size]


def brute_add_with_overhead(pos, size):
    """Walk ``size`` logical bytes from ``pos``, stepping over block headers."""
    return pos if size == 0 else int(_logical_positions(pos, size)[-1]) + 1


def brute_distance_without_overhead(begin, pos):
    span = np.arange(begin, pos, dtype=np.int64)
    return int(np.count_nonzero(span % BLOCK_SIZE >= BLOCK_HEADER_SIZE))


def possible_chunk_boundaries():
    """Chunk starts: block boundaries and positions 25..64K-1 into a block."""
    out = [64, 65, 100, 1000, 40000]
    for k in (0, 1, 2, 7):
        base = k * BLOCK_SIZE
        out += [base + x for x in (0, 25, 26, 27, 63, 64, 65535 - 40, 65535 - 39, 65535 - 24, 65535 - 1, 65535)]
    return sorted({p for p in out if p >= 64 or p == 0})


SIZES = [0, 1, 2, 23, 24, 25, 39, 40, 41, 64, 1000, 65471, 65472, 65511, 65512, 65513, 65536,
         65560, 131023, 131024, 131025, 200_000, 1 << 20]


def test_round_up_to_possible_chunk_boundary_examples():
    # the spec's comment: 0 -> 0, 1..25 -> 25, 26 -> 26, ..., 64K -> 64K, 64K+1..64K+25 -> 64K+25
    expected = {0: 0, 1: 25, 24: 25, 25: 25, 26: 26, 65535: 65535, 65536: 65536, 65537: 65561,
                65560: 65561, 65561: 65561, 65562: 65562}
    for pos, want in expected.items():
        assert round_up_to_possible_chunk_boundary(pos) == want == spec_round_up_to_possible_chunk_boundary(pos)


@pytest.mark.parametrize("begin", possible_chunk_boundaries())
def test_block_math_matches_spec_and_brute_force(begin):
    assert is_possible_chunk_boundary(begin)
    for size in SIZES:
        end = add_with_overhead(begin, size)
        assert end == spec_add_with_overhead(begin, size), (begin, size)
        assert end == brute_add_with_overhead(begin, size), (begin, size)
        assert distance_without_overhead(begin, end) == brute_distance_without_overhead(begin, end)
        assert distance_without_overhead(begin, end) == size, (begin, size)
        for n in (0, 1, 25, 64, 65536, 70000):
            assert chunk_end(begin, size, n) == spec_chunk_end(begin, size, n), (begin, size, n)


def test_positions_inside_a_block_header_are_not_chunk_boundaries():
    for k in (0, 1, 5):
        base = k * BLOCK_SIZE
        for x in range(1, BLOCK_HEADER_SIZE + 1):
            assert not is_possible_chunk_boundary(base + x)
        assert is_possible_chunk_boundary(base)
        assert is_possible_chunk_boundary(base + BLOCK_HEADER_SIZE + 1)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**40), st.integers(0, 2**24), st.integers(0, 2**20))
def test_chunk_end_properties(begin, data_size, num_records):
    begin = round_up_to_possible_chunk_boundary(begin)
    end = chunk_end(begin, data_size, num_records)
    assert end == spec_chunk_end(begin, data_size, num_records)
    # spans its header and data, and at least num_records bytes
    assert distance_without_overhead(begin, end) >= CHUNK_HEADER_SIZE + data_size
    assert end - begin >= num_records
    # does not end inside or right after a block header
    assert is_possible_chunk_boundary(end)
    # minimal: one byte less would violate a constraint
    smaller = end - 1
    assert (
        distance_without_overhead(begin, smaller) < CHUNK_HEADER_SIZE + data_size
        or smaller - begin < num_records
        or not is_possible_chunk_boundary(smaller)
    )


def test_block_header_fields():
    raw = block_header_bytes(100, 200)
    assert len(raw) == BLOCK_HEADER_SIZE
    h, prev, nxt = struct.unpack("<QQQ", raw)
    assert (prev, nxt) == (100, 200)
    assert h == highway_hash64(raw[8:])


def test_read_logical_skips_block_headers():
    buf = bytearray(3 * BLOCK_SIZE)
    for i in range(len(buf)):
        buf[i] = i % 251
    for k in range(3):
        buf[k * BLOCK_SIZE : k * BLOCK_SIZE + BLOCK_HEADER_SIZE] = block_header_bytes(1000 + k, 2000 + k)
    expected_positions = [p for p in range(BLOCK_SIZE - 100, 2 * BLOCK_SIZE + 500) if p % BLOCK_SIZE >= BLOCK_HEADER_SIZE]
    n = len(expected_positions)
    data, end = read_logical(buf, BLOCK_SIZE - 100, n)
    assert bytes(data) == bytes(buf[p] for p in expected_positions)
    assert end == expected_positions[-1] + 1
    # within one block: a zero-copy view
    data, end = read_logical(buf, 100, 50)
    assert isinstance(data, memoryview) and bytes(data) == bytes(buf[100:150]) and end == 150
    # from a block boundary: the header is skipped
    data, end = read_logical(buf, BLOCK_SIZE, 10)
    assert bytes(data) == bytes(buf[BLOCK_SIZE + 24 : BLOCK_SIZE + 34])
    # past the end of the buffer
    assert read_logical(buf, 3 * BLOCK_SIZE - 10, 100)[0] is None
    assert read_logical(buf, 2 * BLOCK_SIZE - 10, 2 * BLOCK_SIZE)[0] is None


def test_read_logical_checks_skipped_block_headers():
    """A block header a read steps over is hash-checked (as Google's reader
    does); a damaged one is an error, never silently skipped."""
    buf = bytearray(2 * BLOCK_SIZE)
    buf[BLOCK_SIZE : BLOCK_SIZE + BLOCK_HEADER_SIZE] = block_header_bytes(100, 200)
    assert len(read_logical(buf, BLOCK_SIZE - 50, 100)[0]) == 100
    buf[BLOCK_SIZE + 9] ^= 0x40
    with pytest.raises(CorruptChunkError):
        read_logical(buf, BLOCK_SIZE - 50, 100)
    with pytest.raises(CorruptChunkError):
        read_logical(buf, BLOCK_SIZE, 10)


# -- chunks across block boundaries ---------------------------------------------


def _buffer_with_chunk_at(begin: int, records, ctype=ZSTD):
    """A Riegeli byte stream (via ChunkWriter) whose simple chunk starts at
    physical ``begin``; a padding chunk fills the space before it."""
    out = io.BytesIO()
    cw = ChunkWriter(out)
    if begin > cw.pos:
        gap = distance_without_overhead(cw.pos, begin) - CHUNK_HEADER_SIZE
        assert gap >= 0
        pad = bytes(gap)
        cw.write_chunk(encode_chunk_header(pad, PADDING, 0, 0), pad)
    assert cw.pos == begin, (cw.pos, begin)
    data, decoded = encode_simple(records, ctype)
    offset = cw.write_chunk(encode_chunk_header(data, SIMPLE, len(records), decoded), data)
    assert offset == begin
    return out.getvalue(), cw.pos


# Every split of a chunk header by the block header at 64 KiB, plus splits
# inside the data and a chunk starting on the boundary itself.
SPLITS = list(range(1, CHUNK_HEADER_SIZE + 1)) + [41, 45, 100, 1000]


@pytest.mark.parametrize("before_boundary", SPLITS)
def test_chunk_split_by_block_header(before_boundary):
    begin = BLOCK_SIZE - before_boundary
    assert is_possible_chunk_boundary(begin)
    records = [b"", b"a", os.urandom(300), os.urandom(5000)]
    buf, end = _buffer_with_chunk_at(begin, records)
    header, data, chunk_stop = read_chunk(buf, begin)
    assert chunk_stop == end == len(buf)
    assert header.chunk_type == SIMPLE and header.num_records == 4
    values, offsets = decode_chunk(header, data, offset=begin)
    assert [bytes(values[offsets[i] : offsets[i + 1]]) for i in range(4)] == records
    # the block header ChunkWriter inserted is right for this chunk
    h, prev, nxt = struct.unpack_from("<QQQ", buf, BLOCK_SIZE)
    assert h == highway_hash64(buf[BLOCK_SIZE + 8 : BLOCK_SIZE + 24])
    assert prev == BLOCK_SIZE - begin and nxt == end - BLOCK_SIZE


def test_chunk_starting_on_block_boundary():
    records = [b"r%d" % i for i in range(100)]
    buf, end = _buffer_with_chunk_at(BLOCK_SIZE, records, NONE)
    header, data, stop = read_chunk(buf, BLOCK_SIZE)
    assert stop == end
    values, offsets = decode_chunk(header, data, offset=BLOCK_SIZE)
    assert bytes(values) == b"".join(records)
    _, prev, nxt = struct.unpack_from("<QQQ", buf, BLOCK_SIZE)
    assert prev == 0 and nxt == end - BLOCK_SIZE


def test_chunk_writer_pads_chunks_with_many_empty_records():
    # num_records empty records: the chunk must still span num_records bytes
    out = io.BytesIO()
    cw = ChunkWriter(out)
    recs = [b""] * 100_000
    data, decoded = encode_simple(recs, NONE)
    off = cw.write_chunk(encode_chunk_header(data, SIMPLE, len(recs), decoded), data)
    assert cw.pos == chunk_end(off, len(data), len(recs)) and cw.pos - off >= 100_000
    buf = out.getvalue()
    assert len(buf) == cw.pos
    header, data, stop = read_chunk(buf, off)
    assert stop == cw.pos
    values, offsets = decode_chunk(header, data, offset=off)
    assert len(offsets) == 100_001 and offsets[-1] == 0


@pytest.mark.parametrize("start", [64, 1000, BLOCK_SIZE - 30, BLOCK_SIZE, BLOCK_SIZE + 25, 3 * BLOCK_SIZE - 1])
def test_pad_to_block_boundary(start):
    out = io.BytesIO()
    cw = ChunkWriter(out)
    if start > 64:
        gap = distance_without_overhead(64, start) - CHUNK_HEADER_SIZE
        pad = bytes(gap)
        cw.write_chunk(encode_chunk_header(pad, PADDING, 0, 0), pad)
    assert cw.pos == start
    cw.pad_to_block_boundary()
    assert cw.pos % BLOCK_SIZE == 0 and cw.pos >= start
    assert len(out.getvalue()) == cw.pos


# -- chunk headers -------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200), st.sampled_from([SIGNATURE, PADDING, SIMPLE, TRANSPOSED, ord("m")]),
       st.integers(0, 2**56 - 1), st.integers(0, U64_MAX))
def test_chunk_header_round_trip(data, ctype, num_records, decoded):
    raw = encode_chunk_header(data, ctype, num_records, decoded)
    assert len(raw) == CHUNK_HEADER_SIZE
    h = parse_chunk_header(raw, offset=123)
    assert h == ChunkHeader(h.header_hash, len(data), highway_hash64(data), ctype, num_records, decoded)
    assert h.header_hash == highway_hash64(raw[8:])


def test_chunk_header_layout():
    raw = encode_chunk_header(b"abc", SIMPLE, 0x01020304050607, 77)
    header_hash, size, data_hash, type_and_count, decoded = struct.unpack("<5Q", raw)
    assert size == 3 and decoded == 77 and data_hash == highway_hash64(b"abc")
    assert raw[24] == ord("r") and raw[25:32] == (0x01020304050607).to_bytes(7, "little")


def test_chunk_header_num_records_limit():
    with pytest.raises(ValueError):
        encode_chunk_header(b"", SIMPLE, 2**56, 0)


@pytest.mark.parametrize("byte", range(CHUNK_HEADER_SIZE))
def test_chunk_header_any_flipped_bit_is_detected(byte):
    raw = bytearray(encode_chunk_header(b"hello", SIMPLE, 3, 5))
    raw[byte] ^= 1 << (byte % 8)
    with pytest.raises(CorruptChunkError) as e:
        parse_chunk_header(bytes(raw), offset=4242)
    assert e.value.offset == 4242 and "4242" in str(e.value)


def test_read_chunk_checks_data_hash_only_with_verify():
    buf, _ = _buffer_with_chunk_at(64, [b"hello world"] * 3, NONE)
    buf = bytearray(buf)
    buf[64 + CHUNK_HEADER_SIZE + 5] ^= 0x10
    with pytest.raises(CorruptChunkError):
        read_chunk(bytes(buf), 64)
    header, data, _ = read_chunk(bytes(buf), 64, verify=False)
    assert header.num_records == 3


def test_read_chunk_truncated():
    buf, end = _buffer_with_chunk_at(64, [os.urandom(5000)], NONE)
    for cut in (64 + 10, 64 + CHUNK_HEADER_SIZE, 64 + CHUNK_HEADER_SIZE + 100, end - 1):
        with pytest.raises(TruncatedFileError):
            read_chunk(buf[:cut], 64)
    with pytest.raises(TruncatedFileError):
        read_chunk(buf, 64, limit=end - 1, file_size=end - 1)
    # A chunk running past the next chunk (or structure) is corrupt, not truncated.
    with pytest.raises(CorruptChunkError, match="past the next chunk"):
        read_chunk(buf, 64, limit=end - 1)


def test_read_chunk_huge_data_size_is_refused_before_reading():
    data = b"x"
    raw = struct.pack("<QQQQ", 2**62, highway_hash64(data), SIMPLE | 1 << 8, 1)
    raw = struct.pack("<Q", highway_hash64(raw)) + raw
    buf = bytes(64) + raw + data + bytes(100)
    tracemalloc.start()
    try:
        with pytest.raises(TruncatedFileError):
            read_chunk(buf, 64)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


# -- simple chunks ----------------------------------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=300), max_size=40), st.sampled_from(CODECS))
def test_simple_chunk_round_trip(records, ctype):
    data, decoded = encode_simple(records, ctype)
    assert data[0] == ctype and decoded == sum(map(len, records))
    values, offsets = decode_simple(data, len(records), decoded, offset=0)
    assert offsets.dtype == np.int64 and offsets.shape == (len(records) + 1,)
    assert [bytes(values[offsets[i] : offsets[i + 1]]) for i in range(len(records))] == records
    _, sizes, _ = decode_record_sizes(data, len(records), decoded, offset=0)
    assert sizes.tolist() == [len(r) for r in records]


def test_simple_chunk_uncompressed_values_are_zero_copy():
    data, decoded = encode_simple([b"abc", b"defg"], NONE)
    mv = memoryview(data)
    values, offsets = decode_simple(mv, 2, decoded, offset=0)
    assert isinstance(values, memoryview) and values.obj is data


@pytest.mark.parametrize("ctype", CODECS, ids=CODEC_IDS)
def test_simple_chunk_inconsistent_with_header(ctype):
    data, decoded = encode_simple([b"abc", b"defgh"], ctype)
    with pytest.raises(CorruptChunkError):
        decode_simple(data, 2, decoded + 1, offset=7)
    with pytest.raises(CorruptChunkError):
        decode_simple(data, 3, decoded, offset=7)
    with pytest.raises(CorruptChunkError):
        decode_simple(data, 1, decoded, offset=7)


@pytest.mark.parametrize(
    "data",
    [b"", b"q\x00", b"\x00\x05\x01", b"\x00\x80", b"z\x03\x01\x02\x03"],
    ids=["empty", "unknown-compression", "sizes-overrun", "bad-varint", "bad-zstd-sizes"],
)
def test_simple_chunk_malformed(data):
    with pytest.raises(CorruptChunkError) as e:
        decode_simple(data, 1, 1, offset=99)
    assert e.value.offset == 99


def test_decode_chunk_by_type():
    data, decoded = encode_simple([b"a"], NONE)
    for ctype in (SIGNATURE, PADDING, ord("m")):
        header = ChunkHeader(0, len(data), 0, ctype, 0, 0)
        values, offsets = decode_chunk(header, data, offset=0)
        assert len(offsets) == 1
    with pytest.raises(UnsupportedChunkError) as e:
        decode_chunk(ChunkHeader(0, 0, 0, ord("x"), 1, 1), b"", offset=5)
    assert "'x'" in str(e.value)
    # a transposed chunk: decoded when the decoder exists, else a clear error
    try:
        decode_chunk(ChunkHeader(0, 3, 0, TRANSPOSED, 1, 1), b"\x00\x00\x00", offset=5)
    except UnsupportedChunkError as e:
        assert "transposed" in str(e) and "'t'" in str(e)
    except CorruptChunkError:
        pass  # a real decoder rejects this garbage


# -- compression --------------------------------------------------------------------------


PAYLOADS = [b"", b"a", b"abc" * 1000, os.urandom(70_000), bytes(1 << 20)]


@pytest.mark.parametrize("ctype", CODECS, ids=CODEC_IDS)
@pytest.mark.parametrize("payload", PAYLOADS, ids=["0", "1", "3000", "70000-random", "1MiB-zeros"])
def test_compression_round_trip(ctype, payload):
    block = compress_block(ctype, payload)
    if ctype == NONE:
        assert block == payload
    else:
        assert read_varint(block, 0)[0] == len(payload)
    out = decompress_block(ctype, block, max_size=len(payload))
    assert bytes(out) == payload
    assert bytes(decompress_block(ctype, memoryview(block), max_size=len(payload) + 10)) == payload
    # a prefix of the decoded bytes
    assert bytes(decompress_prefix(ctype, block, 2, max_size=len(payload))) == payload[:2]


@pytest.mark.parametrize("level", [1, 3, 19, -5])
def test_zstd_levels_and_window(level):
    payload = os.urandom(1000) * 50
    block = compress_block(ZSTD, payload, level=level, window_log=10)
    assert decompress_block(ZSTD, block, max_size=len(payload)) == payload


@pytest.mark.parametrize("level", [0, 1, 6, 11])
def test_brotli_levels(level):
    payload = b"brotli " * 1000
    block = compress_block(BROTLI, payload, level=level)
    assert decompress_block(BROTLI, block, max_size=len(payload)) == payload


@pytest.mark.parametrize("ctype", [BROTLI, ZSTD, SNAPPY], ids=CODEC_IDS[1:])
def test_bomb_prefix_refused_before_allocation(ctype):
    payload = b"x" * 1000
    block = compress_block(ctype, payload)
    _, start = read_varint(block, 0)
    bomb = encode_varint(2**40) + block[start:]
    tracemalloc.start()
    try:
        with pytest.raises(CompressionError, match="1099511627776"):
            decompress_block(ctype, bomb, max_size=1000)
        with pytest.raises(CompressionError):
            decompress_prefix(ctype, bomb, 10, max_size=1000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def _zstd_raw_frame(content: bytes, content_size: int) -> bytes:
    """A zstd frame (RFC 8878) of one raw block whose header declares
    ``content_size``: single-segment, 8-byte Frame_Content_Size."""
    return (
        struct.pack("<I", 0xFD2FB528) + bytes([0xE0]) + struct.pack("<Q", content_size)
        + (len(content) << 3 | 1).to_bytes(3, "little") + content
    )


def test_zstd_frame_content_size_is_checked_before_allocation():
    assert zstandard.ZstdDecompressor().decompress(_zstd_raw_frame(b"hello", 5)) == b"hello"
    assert decompress_block(ZSTD, encode_varint(5) + _zstd_raw_frame(b"hello", 5), max_size=5) == b"hello"
    # the block prefix says 5, the frame header 1 TiB (python-zstandard
    # would allocate the frame's size)
    block = encode_varint(5) + _zstd_raw_frame(b"hello", 2**40)
    tracemalloc.start()
    try:
        with pytest.raises(CompressionError):
            decompress_block(ZSTD, block, max_size=5)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_zstd_frame_without_content_size():
    payload = os.urandom(3000) * 3
    frame = zstandard.ZstdCompressor(write_content_size=False).compress(payload)
    assert zstandard.frame_content_size(frame) == -1
    assert decompress_block(ZSTD, encode_varint(len(payload)) + frame, max_size=len(payload)) == payload
    # a prefix (and header) claiming far more: memory follows the real output
    big = 3 << 30
    tracemalloc.start()
    try:
        with pytest.raises(CompressionError):
            decompress_block(ZSTD, encode_varint(big) + frame, max_size=big)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20


@pytest.mark.parametrize("ctype", [BROTLI, ZSTD, SNAPPY], ids=CODEC_IDS[1:])
def test_corrupt_streams_raise_compression_error(ctype):
    payload = os.urandom(500) * 20
    block = bytearray(compress_block(ctype, payload))
    _, start = read_varint(block, 0)
    cases = {
        "truncated": bytes(block[: start + (len(block) - start) // 2]),
        "garbage": encode_varint(len(payload)) + b"\x12\x34\x56\x78" * 10,
        "no-stream": encode_varint(len(payload)),
        "short-prefix": bytes(block[: start - 1]) if start > 1 else b"\x80",
    }
    for name, bad in cases.items():
        try:
            decompress_block(ctype, bad, max_size=len(payload))
        except CompressionError:
            continue
        pytest.fail(f"{name}: no CompressionError")
    # prefix smaller than the real output
    smaller = encode_varint(len(payload) - 1) + bytes(block[start:])
    with pytest.raises(CompressionError):
        decompress_block(ctype, smaller, max_size=len(payload))


def test_unknown_compression_type():
    with pytest.raises(CompressionError):
        decompress_block(ord("q"), b"\x01a", max_size=10)
    with pytest.raises(ValueError):
        compress_block(ord("q"), b"a")


def test_compression_error_family():
    assert issubclass(CompressionError, ValueError)
    assert issubclass(CorruptChunkError, ArrayRecordError)
    assert compression.COMPRESSION_NAMES[ZSTD] == "zstd"
    assert blocks.CHUNK_HEADER_SIZE == 40


# -- against Google's files ------------------------------------------------------------------


def test_every_chunk_of_a_google_file_parses(tmp_path):
    """Walk a file Google wrote chunk by chunk from the signature: every
    header hash, data hash and padding rule agrees with ours."""
    from _google import gwrite  # Google's wheel, or the test is skipped
    from _records import make_records

    records = make_records(500, 5, size=(0, 3000), compressible=False)
    path = gwrite(tmp_path / "g.array_record", "group_size:7,zstd:1", records)
    buf = open(path, "rb").read()
    assert buf[:64] == SPEC_SIGNATURE
    pos, types, got = 0, [], []
    while pos < len(buf):
        header, data, end = read_chunk(buf, pos)
        assert end == spec_chunk_end(pos, header.data_size, header.num_records)
        types.append(chr(header.chunk_type))
        if header.chunk_type == SIMPLE and header.num_records:
            values, offsets = decode_chunk(header, data, offset=pos)
            got += [bytes(values[offsets[i] : offsets[i + 1]]) for i in range(header.num_records)]
        # block headers that interrupt this chunk carry the right distances
        for b in range((pos // BLOCK_SIZE + 1) * BLOCK_SIZE, end, BLOCK_SIZE):
            h, prev, nxt = struct.unpack_from("<QQQ", buf, b)
            assert h == highway_hash64(buf[b + 8 : b + 24]) and prev == b - pos and nxt == end - b
        pos = end
    assert pos == len(buf)
    assert types[0] == "s" and types.count("r") >= len(records) // 7
    assert got[: len(records)] == records


@pytest.mark.parametrize("sizes", [
    [1000] * 64,                  # one size: one struct.unpack_from
    [999, 1001] * 32,             # the same total, two sizes: sliced
    [0] * 10,                     # empty records
    [5],                          # one record
    [7] * 20 + [8],               # one size but the last
    [3] * ((1 << 16) + 1),        # more than one format should hold
])
@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_split_records_cuts_every_record_as_bytes(sizes, kind):
    rng = np.random.default_rng(len(sizes))
    recs = [rng.bytes(n) for n in sizes]
    offsets = np.zeros(len(sizes) + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    values = kind(b"".join(recs)) if kind is not memoryview else memoryview(b"".join(recs))
    for a, b in [(0, len(sizes)), (1, len(sizes)), (0, max(1, len(sizes) // 2)), (len(sizes) - 1, len(sizes))]:
        got = split_records(values, offsets, a, b)
        assert got == recs[a:b]
        assert all(type(r) is bytes for r in got)
