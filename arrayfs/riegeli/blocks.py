"""The 64 KiB block layout (spec: "Block header" and "Implementation notes").

Physical file positions count block headers; *logical* chunk bytes do not.
A 24-byte block header sits at every multiple of 65,536 and may interrupt a
chunk anywhere, even inside its 40-byte header. These helpers convert
between the two views and build the headers a writer must insert.
"""

from __future__ import annotations

import struct

import numpy as np

from .errors import CorruptChunkError
from .hashing import buffer_pointer, hashes_at, highway_hash64, release_pointer, stored_hashes_match
from .header import CHUNK_HEADER_SIZE

__all__ = [
    "BLOCK_SIZE",
    "BLOCK_HEADER_SIZE",
    "USABLE_BLOCK_SIZE",
    "CHUNK_HEADER_SIZE",
    "remaining_in_block",
    "is_block_boundary",
    "is_possible_chunk_boundary",
    "round_up_to_possible_chunk_boundary",
    "add_with_overhead",
    "distance_without_overhead",
    "chunk_end",
    "chunk_ends",
    "block_header_bytes",
    "block_headers_bytes",
    "parse_block_header",
    "block_boundaries",
    "block_headers_intact",
    "JoinBuffer",
    "read_logical",
]

BLOCK_SIZE = 1 << 16
BLOCK_HEADER_SIZE = 24
USABLE_BLOCK_SIZE = BLOCK_SIZE - BLOCK_HEADER_SIZE

_Q3 = struct.Struct("<QQQ")
_Q2 = struct.Struct("<QQ")


def remaining_in_block(pos: int) -> int:
    """Bytes from ``pos`` to the next block boundary (0 on a boundary)."""
    return -pos % BLOCK_SIZE


def is_block_boundary(pos: int) -> bool:
    return pos % BLOCK_SIZE == 0


def is_possible_chunk_boundary(pos: int) -> bool:
    """A chunk may begin on a block boundary or past its header's end + 1 byte."""
    return remaining_in_block(pos) < USABLE_BLOCK_SIZE


def round_up_to_possible_chunk_boundary(pos: int) -> int:
    return pos + max(remaining_in_block(pos) - (USABLE_BLOCK_SIZE - 1), 0)


def add_with_overhead(chunk_begin: int, length: int) -> int:
    """Physical position ``length`` logical bytes after ``chunk_begin``."""
    overhead_blocks = (length + (chunk_begin + USABLE_BLOCK_SIZE - 1) % BLOCK_SIZE) // USABLE_BLOCK_SIZE
    return chunk_begin + length + overhead_blocks * BLOCK_HEADER_SIZE


def distance_without_overhead(chunk_begin: int, pos: int) -> int:
    """Logical bytes between two physical positions (block headers excluded)."""
    overhead_blocks = pos // BLOCK_SIZE - chunk_begin // BLOCK_SIZE
    return (
        (pos - min(pos % BLOCK_SIZE, BLOCK_HEADER_SIZE))
        - (chunk_begin - min(chunk_begin % BLOCK_SIZE, BLOCK_HEADER_SIZE))
        - overhead_blocks * BLOCK_HEADER_SIZE
    )


def chunk_end(chunk_begin: int, data_size: int, num_records: int) -> int:
    """Physical end of a chunk, padding included (spec: "Chunk" padding rule).

    The chunk spans its header and data plus block headers, at least
    ``num_records`` bytes, and does not end inside or right after a block
    header.
    """
    return max(
        add_with_overhead(chunk_begin, CHUNK_HEADER_SIZE + data_size),
        round_up_to_possible_chunk_boundary(chunk_begin + num_records),
    )


def chunk_ends(chunk_begin: np.ndarray, data_size: np.ndarray, num_records: np.ndarray) -> np.ndarray:
    """:func:`chunk_end` over ``int64`` arrays of equal shape (the same
    arithmetic, element-wise)."""
    length = CHUNK_HEADER_SIZE + data_size
    overhead_blocks = (length + (chunk_begin + USABLE_BLOCK_SIZE - 1) % BLOCK_SIZE) // USABLE_BLOCK_SIZE
    with_headers = chunk_begin + length + overhead_blocks * BLOCK_HEADER_SIZE
    pos = chunk_begin + num_records
    rounded = pos + np.maximum((-pos % BLOCK_SIZE) - (USABLE_BLOCK_SIZE - 1), 0)
    return np.maximum(with_headers, rounded)


def block_header_bytes(previous_chunk: int, next_chunk: int) -> bytes:
    """The 24 bytes of a block header: hash, ``previous_chunk``, ``next_chunk``."""
    body = _Q2.pack(previous_chunk, next_chunk)
    return struct.pack("<Q", highway_hash64(body)) + body


def block_headers_bytes(previous_chunk: np.ndarray, next_chunk: np.ndarray) -> bytes:
    """:func:`block_header_bytes` of many block headers at once (``int64``
    arrays of shape ``(n,)``): ``24 * n`` bytes, hashes one C call each."""
    n = len(previous_chunk)
    headers = np.empty((n, 3), dtype="<u8")
    headers[:, 1] = previous_chunk
    headers[:, 2] = next_chunk
    ptr = buffer_pointer(headers)
    try:
        headers[:, 0] = hashes_at(ptr, range(8, BLOCK_HEADER_SIZE * n, BLOCK_HEADER_SIZE), [16] * n)
    finally:
        release_pointer(ptr)
    return headers.tobytes()


def parse_block_header(raw, pos: int) -> tuple[int, int]:
    """``(previous_chunk, next_chunk)`` of the 24-byte block header ``raw``
    found at physical ``pos``; raises :class:`CorruptChunkError` when its
    hash does not match."""
    stored, prev, nxt = _Q3.unpack_from(raw, 0)
    if highway_hash64(memoryview(raw)[8:BLOCK_HEADER_SIZE]) != stored:
        raise CorruptChunkError(f"block header at byte {pos}: hash mismatch")
    return prev, nxt


class JoinBuffer:
    """Memory that one thread reuses for each chunk it joins across block
    headers (:func:`read_logical`): a scan that took new memory per chunk
    paid for it in page faults (docs/benchmarks.md)."""

    __slots__ = ("_buf",)

    def __init__(self):
        self._buf = bytearray()

    def take(self, n: int) -> memoryview:
        """A writable view of ``n`` bytes; views taken before stay valid
        (a larger buffer replaces the old one, it is not resized)."""
        if len(self._buf) < n:
            self._buf = bytearray(n)
        return memoryview(self._buf)[:n]


def block_boundaries(begins: np.ndarray, ends: np.ndarray) -> tuple:
    """The block boundaries (multiples of 65,536) in each ``[begins[i],
    ends[i])`` (``int64`` arrays of shape ``(n,)``): ``(positions, owner)``,
    ``int64`` arrays, ``owner[j]`` the ``i`` that position ``j`` lies in."""
    first = -(-begins // BLOCK_SIZE) * BLOCK_SIZE
    counts = np.maximum((ends - 1 - first) // BLOCK_SIZE + 1, 0)
    owner = np.repeat(np.arange(len(begins), dtype=np.int64), counts)
    starts = np.cumsum(counts) - counts
    step = np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(starts, counts)
    return first[owner] + step * BLOCK_SIZE, owner


def block_headers_intact(buf, positions: np.ndarray) -> np.ndarray:
    """Which of the block headers at ``positions`` (``int64`` file positions
    in ``buf``, a whole file's map) hash-check: ``bool``, shape ``(n,)``; a
    header that ``buf`` does not hold reads ``False``. One C call per
    header, all from one thread before a scan hands chunks to others,
    which then skip these checks (:func:`read_logical` with
    ``check=False``); see :func:`.header.chunk_headers_intact`."""
    ok = np.zeros(len(positions), dtype=bool)
    inside = positions + BLOCK_HEADER_SIZE <= len(buf)
    ok[inside] = stored_hashes_match(buf, positions[inside], BLOCK_HEADER_SIZE)
    return ok


def _check_block_header(buf, at: int, pos: int) -> None:
    if at + BLOCK_HEADER_SIZE > len(buf):
        return  # the caller reports the truncation
    parse_block_header(memoryview(buf)[at : at + BLOCK_HEADER_SIZE], pos)


def read_logical(buf, pos: int, length: int, *, base: int = 0, check: bool = True, out=None):
    """Read ``length`` logical bytes starting at physical ``pos``.

    ``buf`` holds the physical bytes ``[base, base + len(buf))`` of the file
    (the whole file when ``base`` is 0, or a window read around a chunk);
    block boundaries are multiples of 65,536 in file positions. ``pos``
    must not lie inside a block header; a block header at ``pos`` itself is
    skipped. Returns ``(data, end)``: ``data`` is a zero-copy ``memoryview``
    slice of ``buf`` when no block header intervenes, otherwise a view of a
    new ``bytes``; ``end`` is the physical position after the last byte
    read. Returns ``None`` for ``data`` if ``buf`` ends first (the caller
    names the file in its error). Each block header skipped is
    hash-checked, as Google's reader does; a mismatch raises
    :class:`CorruptChunkError`. ``check=False`` skips those checks, for
    headers checked beforehand (:func:`block_headers_intact`). ``out``: a
    :class:`JoinBuffer` to join the pieces into when a block header
    intervenes, in place of new memory; ``data`` is then a view of it,
    overwritten by the next join into the same buffer.
    """
    if pos % BLOCK_SIZE == 0:
        if check:
            _check_block_header(buf, pos - base, pos)
        pos += BLOCK_HEADER_SIZE
    room = BLOCK_SIZE - pos % BLOCK_SIZE
    limit = base + len(buf)
    if length <= room:
        end = pos + length
        if end > limit:
            return None, end
        return memoryview(buf)[pos - base : end - base], end
    parts = []
    mv = memoryview(buf)
    while length > 0:
        if pos % BLOCK_SIZE == 0:
            if check:
                _check_block_header(buf, pos - base, pos)
            pos += BLOCK_HEADER_SIZE
        take = min(length, BLOCK_SIZE - pos % BLOCK_SIZE)
        if pos + take > limit:
            return None, pos + take
        parts.append(mv[pos - base : pos - base + take])
        pos += take
        length -= take
    if out is not None:
        dest = out.take(sum(map(len, parts)))
        at = 0
        for p in parts:
            dest[at : at + len(p)] = p
            at += len(p)
        return dest, pos
    # A view, so that callers slicing sections out of a large chunk do not
    # copy it again.
    return memoryview(b"".join(parts)), pos
