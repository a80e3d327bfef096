"""Test helpers: build and patch ArrayRecord files byte by byte.

Used by the bad-input tests to make files that are wrong in exactly one
way (a hash re-computed so that only the intended fault is left). Built
on arrayfs's own encoders (riegeli chunk headers, ChunkWriter, layout
messages); each helper says which spec structure it produces.
"""

from __future__ import annotations

import io
import os

from arrayfs.layout import (
    POSTSCRIPT_MAGIC,
    encode_chunk_footer,
    encode_footer_metadata,
)
from arrayfs.riegeli.blocks import BLOCK_HEADER_SIZE, BLOCK_SIZE, CHUNK_HEADER_SIZE
from arrayfs.riegeli.chunk import SIMPLE, encode_chunk_header, encode_simple, read_chunk
from arrayfs.riegeli.chunk_writer import ChunkWriter
from arrayfs.riegeli.compression import NONE
from arrayfs.riegeli.varint import encode_varint

__all__ = [
    "logical_positions",
    "write_logical",
    "rewrite_chunk",
    "simple_chunk",
    "build_file",
    "postscript_record",
]


def logical_positions(pos: int, length: int) -> list[int]:
    """Physical positions of ``length`` logical bytes from ``pos`` (block
    headers skipped, spec "Block header")."""
    out = []
    while len(out) < length:
        if pos % BLOCK_SIZE == 0:
            pos += BLOCK_HEADER_SIZE
        out.append(pos)
        pos += 1
    return out


def write_logical(buf: bytearray, pos: int, payload: bytes) -> None:
    """Write ``payload`` as logical bytes starting at physical ``pos``."""
    for p, b in zip(logical_positions(pos, len(payload)), payload):
        buf[p] = b


def rewrite_chunk(buf: bytearray, offset: int, data: bytes | None = None, *, chunk_type=None,
                  num_records=None, decoded_data_size=None) -> None:
    """Replace the chunk at ``offset`` in place with ``data`` (same length as
    the old data) and/or new header fields, re-computing both hashes so the
    chunk is self-consistent."""
    header, old, _ = read_chunk(bytes(buf), offset, verify=False)
    old = bytes(old)
    data = old if data is None else data
    assert len(data) == len(old), "rewrite_chunk keeps the chunk's size"
    raw = encode_chunk_header(
        data,
        header.chunk_type if chunk_type is None else chunk_type,
        header.num_records if num_records is None else num_records,
        header.decoded_data_size if decoded_data_size is None else decoded_data_size,
    )
    write_logical(buf, offset, raw + data)


def simple_chunk(records, compression=NONE, **kw):
    """``(header, data, num_records, decoded_size)`` of a simple chunk."""
    data, decoded = encode_simple(records, compression, **kw)
    return encode_chunk_header(data, SIMPLE, len(records), decoded), data, len(records), decoded


def postscript_record(footer_offset: int, magic: int = POSTSCRIPT_MAGIC) -> bytes:
    """``RiegeliPostscript{footer_offset, magic}`` in protobuf wire format."""
    return b"\x08" + encode_varint(footer_offset) + b"\x10" + encode_varint(magic)


def build_file(path, chunks, *, writer_options="group_size:1,transpose:false,pad_to_block_boundary:false,"
               "uncompressed,max_parallelism:1", footer_entries=None, num_records=None,
               magic=POSTSCRIPT_MAGIC, footer_offset=None) -> dict:
    """Write an ArrayRecord file (array_record ``cpp/array_record_writer.cc``
    layout) from raw user chunks.

    Args:
        chunks: ``(header, data, num_records, decoded_size)`` tuples, written
            as given (headers are not re-hashed: pass a bad one to test it).
            An optional fifth element is a 40-byte header stored in place of
            ``header`` after the layout (padding) was computed from
            ``header``: a header whose claims the file does not back.
        footer_entries: ``(chunk_offset, decoded_size, num_records)`` per
            chunk; by default the true ones.
        num_records: the metadata's record count; by default the sum.
        magic, footer_offset: the postscript's fields (default: correct).

    Returns ``{"chunk_offsets": [...], "footer_offset": int, "size": int}``.
    """
    stream = io.BytesIO()
    cw = ChunkWriter(stream)
    offsets = []
    stored_headers = []
    for header, data, _n, _decoded, *stored in chunks:
        offsets.append(cw.write_chunk(header, data))
        stored_headers.append(stored[0] if stored else None)
    if footer_entries is None:
        footer_entries = [(o, c[3], c[2]) for o, c in zip(offsets, chunks)]
    total = sum(c[2] for c in chunks) if num_records is None else num_records
    meta = encode_footer_metadata(len(footer_entries), total, writer_options)
    footer = [meta] + [encode_chunk_footer(*e) for e in footer_entries]
    real_footer_offset = cw.write_chunk(*simple_chunk(footer)[:2])
    cw.pad_to_block_boundary()
    ps = postscript_record(real_footer_offset if footer_offset is None else footer_offset, magic)
    cw.write_chunk(*simple_chunk([ps] * 3)[:2])
    cw.pad_to_block_boundary()
    blob = bytearray(stream.getvalue())
    for offset, stored in zip(offsets, stored_headers):
        if stored is not None:
            write_logical(blob, offset, stored)
    blob = bytes(blob)
    with open(path, "wb") as f:
        f.write(blob)
    return {"chunk_offsets": offsets, "footer_offset": real_footer_offset, "size": len(blob)}


def postscript_offset(path) -> int:
    """Physical offset of the postscript chunk (the last 64 KiB block)."""
    return os.path.getsize(path) - BLOCK_SIZE


assert CHUNK_HEADER_SIZE == 40
