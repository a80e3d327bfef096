"""Laying chunks into 64 KiB blocks (spec: "Block header", padding rules;
riegeli ``records/chunk_writer.cc``).

:class:`ChunkWriter` appends encoded chunks to a binary stream, inserting a
block header at every multiple of 65,536 bytes and the padding the spec
requires after each chunk, and writes padding chunks to reach a block
boundary. It takes one chunk at a time (:meth:`ChunkWriter.write_chunk`) or
many laid out back to back in one buffer (:meth:`ChunkWriter.write_chunks`),
whose headers :func:`fill_chunk_headers` computes for all of them at once.

Batches rest on one fact of the layout: a file is its *logical* bytes (every
byte but the block headers) with a 24-byte block header inserted before each
run of 65,512 of them, so a chunk that needs no padding begins at a physical
position that depends only on how many logical bytes precede it.
"""

from __future__ import annotations

import numpy as np

from .blocks import (
    BLOCK_HEADER_SIZE,
    BLOCK_SIZE,
    CHUNK_HEADER_SIZE,
    USABLE_BLOCK_SIZE,
    block_header_bytes,
    block_headers_bytes,
    chunk_end,
    distance_without_overhead,
)
from .chunk import PADDING, SIGNATURE, encode_chunk_header
from .header import fill_chunk_headers

__all__ = ["ChunkWriter", "fill_chunk_headers"]

def _physical(logical):
    """Physical position of the chunk that begins after ``logical`` logical
    bytes of the file (an ``int`` or an ``int64`` array): on a block
    boundary, the boundary itself (its block header is the chunk's to
    write), elsewhere past every block header before it."""
    q, r = divmod(logical, USABLE_BLOCK_SIZE)
    if isinstance(r, np.ndarray):
        return q * BLOCK_SIZE + np.where(r > 0, r + BLOCK_HEADER_SIZE, 0)
    return q * BLOCK_SIZE + (r + BLOCK_HEADER_SIZE if r else 0)


def _logical(pos: int) -> int:
    """Logical bytes before physical ``pos``, a position where a chunk may begin."""
    return pos - BLOCK_HEADER_SIZE * -(-pos // BLOCK_SIZE)


class ChunkWriter:
    """Writes chunks to ``stream`` (a binary file object) from position 0.

    ``pos`` is the physical position of the next chunk. The first chunk
    written by :meth:`__init__` is the file signature.
    """

    def __init__(self, stream):
        self._stream = stream
        self._writelines = getattr(stream, "writelines", None) or self._write_each
        self.pos = 0
        self.write_chunk(encode_chunk_header(b"", SIGNATURE, 0, 0), b"")

    def write_chunk(self, header: bytes, data) -> int:
        """Write one chunk (40-byte ``header`` + ``data``) with its block
        headers and padding. Returns the chunk's physical offset."""
        begin = self.pos
        num_records = int.from_bytes(header[25:32], "little")
        end = chunk_end(begin, len(data), num_records)
        out = self._stream.write
        r = begin % BLOCK_SIZE
        if r and r + (end - begin) < BLOCK_SIZE:
            # The common small chunk: no block header inside or at its end.
            out(header)
            out(data)
            pad = end - begin - CHUNK_HEADER_SIZE - len(data)
            if pad:
                out(bytes(pad))
            self.pos = end
            return begin
        pos = begin
        for piece in (header, data):
            mv = memoryview(piece)
            while mv:
                if pos % BLOCK_SIZE == 0:
                    out(block_header_bytes(pos - begin, end - pos))
                    pos += BLOCK_HEADER_SIZE
                take = min(len(mv), BLOCK_SIZE - pos % BLOCK_SIZE)
                out(mv[:take])
                mv = mv[take:]
                pos += take
        while pos < end:
            if pos % BLOCK_SIZE == 0:
                out(block_header_bytes(pos - begin, end - pos))
                pos += BLOCK_HEADER_SIZE
            take = min(end - pos, BLOCK_SIZE - pos % BLOCK_SIZE)
            out(bytes(take))
            pos += take
        self.pos = pos
        return begin

    def write_chunks(self, buf, starts: np.ndarray, num_records: np.ndarray, *,
                     pad_to_block_boundary: bool = False) -> np.ndarray:
        """Write chunks laid out back to back in ``buf`` (each one's 40-byte
        header then its data, no padding), chunk ``i`` beginning at
        ``starts[i]`` (``starts[0] == 0``) and holding ``num_records[i]``
        records. With ``pad_to_block_boundary`` each chunk is followed by a
        padding chunk, as :meth:`pad_to_block_boundary` writes.

        Returns the physical offset of each chunk (``int64``, shape
        ``(n,)``), as :meth:`write_chunk` returns one. The bytes written are
        those of :meth:`write_chunk` called on each chunk in turn.
        """
        starts = np.asarray(starts, dtype=np.int64)
        ends = np.empty_like(starts)
        ends[:-1] = starts[1:]
        ends[-1:] = len(buf)
        # A chunk needs padding only if it holds more records than bytes.
        if pad_to_block_boundary or (np.asarray(num_records) > ends - starts).any():
            mv = memoryview(buf)
            out = np.empty(len(starts), dtype=np.int64)
            for i, (a, b) in enumerate(zip(starts.tolist(), ends.tolist())):
                out[i] = self.write_chunk(mv[a : a + CHUNK_HEADER_SIZE], mv[a + CHUNK_HEADER_SIZE : b])
                if pad_to_block_boundary:
                    self.pad_to_block_boundary()
            return out
        first = _logical(self.pos)
        offsets = _physical(first + starts)
        end = _physical(first + len(buf))
        mv = memoryview(buf)
        # Block boundaries from the current position up to (not at) the end.
        ks = np.arange(-(-self.pos // BLOCK_SIZE), (end - 1) // BLOCK_SIZE + 1, dtype=np.int64)
        if not len(ks):
            self._stream.write(mv)
        else:
            cuts = ks * USABLE_BLOCK_SIZE - first
            owner = np.searchsorted(starts, cuts, side="right") - 1
            boundaries = ks * BLOCK_SIZE
            raw = memoryview(block_headers_bytes(boundaries - offsets[owner],
                                                 _physical(first + ends[owner]) - boundaries))
            pieces = []
            done = 0
            for i, cut in enumerate(cuts.tolist()):
                if cut > done:
                    pieces.append(mv[done:cut])
                pieces.append(raw[BLOCK_HEADER_SIZE * i : BLOCK_HEADER_SIZE * (i + 1)])
                done = cut
            pieces.append(mv[done:])
            self._writelines(pieces)
        self.pos = end
        return offsets

    def _write_each(self, pieces) -> None:
        for piece in pieces:
            self._stream.write(piece)

    def pad_to_block_boundary(self) -> None:
        """Write a padding chunk so that the next chunk starts on a block
        boundary (riegeli ``PosAfterPadding`` with 64 KiB granularity)."""
        pos = self.pos
        if pos % BLOCK_SIZE == 0:
            return
        length = BLOCK_SIZE - pos % BLOCK_SIZE
        while length < CHUNK_HEADER_SIZE:
            length += BLOCK_SIZE
        target = pos + length
        data = bytes(distance_without_overhead(pos, target) - CHUNK_HEADER_SIZE)
        self.write_chunk(encode_chunk_header(data, PADDING, 0, 0), data)
        assert self.pos == target, (self.pos, target)
