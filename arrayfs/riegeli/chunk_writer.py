"""Laying chunks into 64 KiB blocks (spec: "Block header", padding rules;
riegeli ``records/chunk_writer.cc``).

:class:`ChunkWriter` appends encoded chunks to a binary stream, inserting a
block header at every multiple of 65,536 bytes and the padding the spec
requires after each chunk, and writes padding chunks to reach a block
boundary.
"""

from __future__ import annotations

from .blocks import (
    BLOCK_HEADER_SIZE,
    BLOCK_SIZE,
    CHUNK_HEADER_SIZE,
    block_header_bytes,
    chunk_end,
    distance_without_overhead,
)
from .chunk import PADDING, SIGNATURE, encode_chunk_header

__all__ = ["ChunkWriter"]


class ChunkWriter:
    """Writes chunks to ``stream`` (a binary file object) from position 0.

    ``pos`` is the physical position of the next chunk. The first chunk
    written by :meth:`__init__` is the file signature.
    """

    def __init__(self, stream):
        self._stream = stream
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
