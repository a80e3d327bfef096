"""Chunk headers and simple chunks (spec: "Chunk", "Simple chunk with records").

A decoded chunk is ``(values, offsets)``: ``values`` a bytes-like holding
every record back to back, ``offsets`` an ``int64`` array of shape
``(num_records + 1,)`` so that record ``i`` is
``values[offsets[i]:offsets[i + 1]]``. Record sizes are decoded with numpy,
never with a per-record Python loop.

Errors raised here carry the chunk offset but not the path; the file layer
adds it with :meth:`ArrayRecordError.located`.
"""

from __future__ import annotations

import struct

import numpy as np

from .blocks import chunk_end, is_possible_chunk_boundary, read_logical
from .compression import (
    CompressionError,
)
from .errors import CorruptChunkError, TruncatedFileError, UnsupportedChunkError
from .hashing import highway_hash64
from .header import (
    CHUNK_HEADER_SIZE,
    CHUNK_TYPE_NAMES,
    METADATA,
    PADDING,
    SIGNATURE,
    SIMPLE,
    TRANSPOSED,
    ChunkHeader,
    encode_chunk_header,
    parse_chunk_header,
    type_and_count,
)
from .records import RecordBytes
from .simple import (
    decode_record_sizes,
    decode_simple,
    decode_single_record,
    decompress_zstd_frames,
    encode_simple,
    single_record_zstd_frames,
    split_simple,
)
from .varint import VarintError

__all__ = [
    "SIGNATURE",
    "PADDING",
    "METADATA",
    "SIMPLE",
    "TRANSPOSED",
    "CHUNK_TYPE_NAMES",
    "ChunkHeader",
    "parse_chunk_header",
    "encode_chunk_header",
    "read_chunk",
    "split_records",
    "decode_simple",
    "decode_record_sizes",
    "encode_simple",
    "decode_chunk",
    "split_simple",
    "decode_single_record",
    "single_record_zstd_frames",
    "decompress_zstd_frames",
]

_SIMPLE_ONE = type_and_count(SIMPLE, 1)
# A varint64 record size takes at most 10 bytes: bounds the sizes block.
_MAX_VARINT_BYTES = 10


def read_chunk(buf, offset: int, *, verify: bool = True, limit: int | None = None, base: int = 0,
               file_size: int | None = None, headers_checked: bool = False, out=None):
    """Read the chunk that begins at physical ``offset``.

    ``buf`` holds the physical bytes ``[base, base + len(buf))`` of the file
    (all of it when ``base`` is 0). Returns ``(header, data, end)``: the
    checked header, the chunk data (a zero-copy ``memoryview`` of ``buf``
    when no block header interrupts it) and the physical end of the chunk
    including padding. ``limit`` (default: the end of ``buf``) is the
    position the chunk must end by, such as the next chunk's offset;
    ``file_size`` (default: the end of ``buf``) is where the file ends, for
    telling a truncated file from a chunk overrunning its neighbour. With
    ``verify`` the data hash is checked too. ``headers_checked``: the
    chunk header's hash and those of the block headers on the way were
    checked beforehand (:func:`.blocks.block_headers_intact`,
    :func:`.header.chunk_headers_intact`) through bytes that cannot have
    changed since; they are not checked again. ``out``: a
    :class:`.blocks.JoinBuffer` for data that a block header interrupts
    (see :func:`.blocks.read_logical`).

    Raises :class:`TruncatedFileError` when the file ends inside the chunk,
    :class:`CorruptChunkError` on a hash mismatch, an impossible header
    (sizes are checked against ``limit`` before anything is read) or an
    ``offset`` where no chunk can begin (inside or right after a block
    header; spec: "Block header").
    """
    end_of_buf = base + len(buf)
    size = end_of_buf if file_size is None else file_size
    limit = min(end_of_buf, size) if limit is None else limit
    if not is_possible_chunk_boundary(offset):
        raise CorruptChunkError("no chunk can begin here: inside or right after a block header", offset=offset)
    raw, pos = read_logical(buf, offset, CHUNK_HEADER_SIZE, base=base, check=not headers_checked)
    if raw is None or pos > size:
        raise TruncatedFileError("file ends inside a chunk header", offset=offset)
    if pos > end_of_buf:
        raise CorruptChunkError(f"chunk header runs past byte {end_of_buf}", offset=offset)
    header = parse_chunk_header(raw, offset=offset, check=not headers_checked)
    # Checked before reading so that a corrupt size never drives a read.
    end = chunk_end(offset, header.data_size, header.num_records)
    if end > limit or header.data_size > limit:
        claim = (
            f"chunk claims {header.data_size} data bytes and {header.num_records} records, so it would end "
            f"at byte {end}"
        )
        if limit >= size:
            raise TruncatedFileError(f"{claim}; the file ends at byte {size}", offset=offset)
        raise CorruptChunkError(f"{claim}, past the next chunk or structure at byte {limit}", offset=offset)
    data, _ = read_logical(buf, pos, header.data_size, base=base, check=not headers_checked, out=out)
    if data is None:
        raise TruncatedFileError("file ends inside chunk data", offset=offset)
    if verify and highway_hash64(data) != header.data_hash:
        raise CorruptChunkError("chunk data hash mismatch", offset=offset)
    return header, data, end


# Records of one size are cut by one struct.unpack_from of "{size}s" * n
# (2x faster than slicing: no slice object per record, and the format is
# compiled once: struct caches it); past this many records the format
# itself grows large.
_UNIFORM_CUT_MAX = 1 << 16


def split_records(values, offsets: np.ndarray, a: int, b: int) -> list:
    """Records ``a .. b - 1`` of a decoded chunk ``(values, offsets)`` as a
    list of ``bytes``, one object per record whatever ``values`` is
    (``bytes``, ``bytearray``, ``memoryview``), or the records a
    :class:`~.records.RecordBytes` already holds."""
    if type(values) is RecordBytes:
        return values.records[a:b]
    n = b - a
    if 1 < n <= _UNIFORM_CUT_MAX:
        first = int(offsets[a])
        width = int(offsets[a + 1]) - first
        if width and int(offsets[b]) - first == width * n and bool((np.diff(offsets[a : b + 1]) == width).all()):
            return list(struct.unpack_from(f"{width}s" * n, values, first))
    bounds = offsets[a : b + 1].tolist()
    if isinstance(values, bytes):
        return list(map(values.__getitem__, map(slice, bounds[:-1], bounds[1:])))
    return list(map(bytes, map(memoryview(values).__getitem__, map(slice, bounds[:-1], bounds[1:]))))


def decode_chunk(header: ChunkHeader, data, *, offset: int):
    """Decode the records of a chunk of any record-bearing type.

    Returns ``(values, offsets)`` as described in the module docstring.
    Signature and padding chunks decode to no records. Raises
    :class:`UnsupportedChunkError` for a type this reader does not know.
    """
    t = header.chunk_type
    if t == SIMPLE:
        return decode_simple(data, header.num_records, header.decoded_data_size, offset=offset)
    if t == TRANSPOSED:
        try:
            from .transpose import TransposeError, decode_transposed_chunk
        except ImportError:
            raise UnsupportedChunkError(
                "transposed chunks (type 't') are not supported by this build", offset=offset
            ) from None
        try:
            return decode_transposed_chunk(data, header.num_records, header.decoded_data_size)
        except (TransposeError, CompressionError, VarintError) as e:
            raise CorruptChunkError(f"transposed chunk: {e}", offset=offset) from None
    if t in (SIGNATURE, PADDING, METADATA):
        return b"", np.zeros(1, dtype=np.int64)
    raise UnsupportedChunkError(f"unknown chunk type {t:#04x} ({chr(t)!r})", offset=offset)


