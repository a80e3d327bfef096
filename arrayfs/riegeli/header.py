"""The 40-byte chunk header (spec: "Chunk"), parsed here and nowhere else.

Layout, five little-endian u64: ``header_hash`` (HighwayHash of the next
32 bytes), ``data_size``, ``data_hash``, ``chunk_type`` (low byte) with
``num_records`` (high 7 bytes), ``decoded_data_size``. One header is parsed
by :func:`parse_chunk_header`; many at once (a batch of one-record chunks,
``verify``) by :func:`parse_chunk_headers` with numpy, from the same field
list.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

import numpy as np

from .errors import CorruptChunkError
from .hashing import buffer_pointer, hashes_at, highway_hash64, release_pointer, stored_hashes_match

__all__ = [
    "CHUNK_HEADER_SIZE",
    "SIGNATURE",
    "PADDING",
    "METADATA",
    "SIMPLE",
    "TRANSPOSED",
    "CHUNK_TYPE_NAMES",
    "MAX_NUM_RECORDS",
    "ChunkHeader",
    "HEADER_DTYPE",
    "parse_chunk_header",
    "peek_chunk_header",
    "parse_chunk_headers",
    "chunk_headers_intact",
    "encode_chunk_header",
    "fill_chunk_headers",
    "type_and_count",
]

CHUNK_HEADER_SIZE = 40

SIGNATURE = ord("s")
METADATA = ord("m")
PADDING = ord("p")
SIMPLE = ord("r")
TRANSPOSED = ord("t")
CHUNK_TYPE_NAMES = {
    SIGNATURE: "signature",
    METADATA: "file metadata",
    PADDING: "padding",
    SIMPLE: "simple records",
    TRANSPOSED: "transposed records",
}
MAX_NUM_RECORDS = (1 << 56) - 1

_FIELDS = ("header_hash", "data_size", "data_hash", "type_and_count", "decoded_data_size")
_HEADER = struct.Struct("<" + "Q" * len(_FIELDS))
_BODY = struct.Struct("<" + "Q" * (len(_FIELDS) - 1))
_U64 = struct.Struct("<Q")
#: numpy dtype of one header, for vectorised parsing.
HEADER_DTYPE = np.dtype([(name, "<u8") for name in _FIELDS])


class ChunkHeader(NamedTuple):
    """The 40-byte chunk header; sizes in bytes, ``num_records`` in records."""

    header_hash: int
    data_size: int
    data_hash: int
    chunk_type: int
    num_records: int
    decoded_data_size: int


def type_and_count(chunk_type: int, num_records: int) -> int:
    """The fourth header field: type in the low byte, count above it."""
    return chunk_type | (num_records << 8)


def parse_chunk_header(raw, *, offset: int, check: bool = True) -> ChunkHeader:
    """Parse and hash-check the 40 header bytes of the chunk at file ``offset``.

    Raises :class:`CorruptChunkError` if ``header_hash`` does not match.
    ``check=False`` skips the hash, for headers already checked in a batch
    (:func:`chunk_headers_intact`).
    """
    header_hash, data_size, data_hash, tc, decoded = _HEADER.unpack(raw)
    if check and highway_hash64(memoryview(raw)[8:CHUNK_HEADER_SIZE]) != header_hash:
        raise CorruptChunkError("chunk header hash mismatch", offset=offset)
    return ChunkHeader(header_hash, data_size, data_hash, tc & 0xFF, tc >> 8, decoded)


def peek_chunk_header(buf, pos: int = 0) -> tuple:
    """The five raw fields at ``buf[pos:pos + 40]``, *not* hash-checked:
    for fast paths that check the hash themselves (with the data's)."""
    return _HEADER.unpack_from(buf, pos)


def parse_chunk_headers(rows: np.ndarray) -> dict:
    """Fields of many headers at once, *not* hash-checked.

    ``rows`` is a ``uint8`` array of shape ``(n, 40)``. Returns a dict of
    ``uint64`` arrays of shape ``(n,)``: ``header_hash``, ``data_size``,
    ``data_hash``, ``chunk_type``, ``num_records``, ``decoded_data_size``.
    The caller checks the header hashes (one C call each) before trusting
    any field.
    """
    h = np.ascontiguousarray(rows[:, :CHUNK_HEADER_SIZE]).view(HEADER_DTYPE).ravel()
    tc = h["type_and_count"]
    return {
        "header_hash": h["header_hash"],
        "data_size": h["data_size"],
        "data_hash": h["data_hash"],
        "chunk_type": tc & np.uint64(0xFF),
        "num_records": tc >> np.uint64(8),
        "decoded_data_size": h["decoded_data_size"],
        "type_and_count": tc,
    }


def chunk_headers_intact(buf, positions: np.ndarray, block_size: int) -> np.ndarray:
    """Which of the 40-byte chunk headers at ``positions`` (``int64``
    offsets into ``buf``, a whole file's map) hash-check: a ``bool`` array
    of shape ``(n,)``. A header split by a block boundary (it starts within
    40 bytes of a multiple of ``block_size``) reads ``False``: the caller
    reads it the checked way. One C call per header, all from one thread
    before any chunk is handed to another: a scan's threads then make no
    small hashing calls, each of which lets go of the GIL
    (docs/benchmarks.md)."""
    whole = (positions % block_size + CHUNK_HEADER_SIZE <= block_size) & (positions + CHUNK_HEADER_SIZE <= len(buf))
    ok = np.zeros(len(positions), dtype=bool)
    ok[whole] = stored_hashes_match(buf, positions[whole], CHUNK_HEADER_SIZE)
    return ok


def encode_chunk_header(data, chunk_type: int, num_records: int, decoded_data_size: int) -> bytes:
    """The 40 header bytes for chunk ``data`` (hashes computed here)."""
    if num_records > MAX_NUM_RECORDS:
        raise ValueError(f"a chunk holds at most 2**56 - 1 records, got {num_records}")
    body = _BODY.pack(len(data), highway_hash64(data), type_and_count(chunk_type, num_records), decoded_data_size)
    return _U64.pack(highway_hash64(body)) + body


def fill_chunk_headers(buf: bytearray, starts: np.ndarray, data_sizes: np.ndarray, chunk_type: int,
                       num_records: np.ndarray, decoded_data_sizes: np.ndarray) -> None:
    """Write the 40-byte headers of chunks laid out back to back in ``buf``.

    Chunk ``i``'s header goes at ``starts[i]`` and its data is the
    ``data_sizes[i]`` bytes after it (bytes; ``int64`` arrays of shape
    ``(n,)``, as ``num_records`` and ``decoded_data_sizes``). The same bytes
    as :func:`encode_chunk_header` gives each chunk
    (spec: "Chunk header"), with the hashes computed in two passes of C calls.
    """
    n = len(starts)
    if n == 0:
        return
    starts = np.asarray(starts, dtype=np.int64)
    headers = np.empty(n, dtype=HEADER_DTYPE)
    headers["data_size"] = data_sizes
    headers["type_and_count"] = np.asarray(num_records, dtype=np.uint64) << np.uint64(8) | np.uint64(chunk_type)
    headers["decoded_data_size"] = decoded_data_sizes
    ptr = buffer_pointer(buf)
    try:
        headers["data_hash"] = hashes_at(ptr, (starts + CHUNK_HEADER_SIZE).tolist(),
                                         headers["data_size"].tolist())
    finally:
        release_pointer(ptr)
    hptr = buffer_pointer(headers)
    try:
        headers["header_hash"] = hashes_at(hptr, range(8, CHUNK_HEADER_SIZE * n, CHUNK_HEADER_SIZE), [32] * n)
    finally:
        release_pointer(hptr)
    view = np.frombuffer(buf, dtype=np.uint8)
    view[starts[:, None] + np.arange(CHUNK_HEADER_SIZE)] = headers.view(np.uint8).reshape(n, CHUNK_HEADER_SIZE)
