"""The data of a transposed chunk, taken apart: compression type, header,
buckets (decompressed into one buffer area) and transitions.

Upstream: riegeli ``chunk_encoding/transpose_decoder.cc`` (``Parse``,
``ParseBuffers``), ``doc/riegeli_records_file_format.md`` ("Transposed
chunk")::

    compression_type     1 byte: 0, 'b', 'z' or 's'
    header_size          varint64
    header               compressed block of header_size bytes (below)
    buckets              num_buckets compressed blocks, back to back
    transitions          compressed block: the rest of the chunk data

Header, decompressed::

    num_buckets, num_buffers            varint32 each
    bucket_lengths[num_buckets]         varint64, compressed sizes
    buffer_lengths[num_buffers]         varint64; buffers fill the
                                        decompressed buckets in order and
                                        never straddle a bucket boundary
    state machine                       see machine.py

Every size declared in the chunk is checked against ``decoded_data_size``,
``num_records`` and ``len(data)`` before anything of that size exists.
Plain Python, not numpy, where the fields are small (headers are a few
hundred bytes, where numpy's per-call cost would dominate).
"""

from __future__ import annotations

import numpy as np
import zstandard

from ..compression import (
    COMPRESSION_NAMES,
    NONE,
    ZSTD,
    CompressionError,
    block_decompressed_size,
    decompress_block,
    zstd_decompress_into,
    zstd_decompressor,
)
from .errors import fail
from .machine import HEAD_SLOT, PAD, Machine, parse_machine
from .varints import read_varint32, read_varint64, read_varint_list

__all__ = ["Chunk", "parse_chunk", "reserve_heads"]


class Chunk:
    """A parsed transposed chunk.

    ``machine`` the state machine; ``src`` a ``bytearray`` holding the
    decompressed buffers back to back (buffer ``i`` is
    ``src[bstart[i]:bend[i]]``), followed by ``len(src) - nsrc`` reserved
    bytes; ``trans`` the transition bytes (``bytes``) and ``trans_where``
    where they start, for messages.
    """

    __slots__ = ("machine", "src", "nsrc", "bstart", "bend", "trans", "trans_where")


def _decompress(ctype: int, block, max_size: int, what: str, where: str):
    try:
        return decompress_block(ctype, block, max_size=max_size)
    except CompressionError as e:
        fail(f"{what} at {where}: {e}")


def parse_chunk(data, num_records: int, decoded_data_size: int, reserve=None) -> Chunk:
    """Parse chunk data, checking every field and every declared size.

    ``reserve(machine)``, if given, says how many bytes to leave free after
    the buffers in ``src`` (the vectorised decoder puts heads there).
    Raises ``TransposeError``.
    """
    n = len(data)
    if n < 1:
        fail("chunk data is empty: no compression type at byte 0")
    ctype = data[0]
    if ctype not in COMPRESSION_NAMES:
        fail(f"unknown compression type {ctype:#04x} at byte 0")
    header_size, pos = read_varint64(data, 1, "header size", "chunk data")
    if header_size > n - pos:
        fail(f"header of {header_size} bytes at byte {pos} overruns the chunk data ({n} bytes)")
    hwhere = f"header (chunk byte {pos})"
    header_max = 4096 + 32 * (decoded_data_size + num_records + n)
    h = bytes(_decompress(ctype, memoryview(data)[pos : pos + header_size], header_max, "header", f"chunk byte {pos}"))
    hnp = np.frombuffer(h, dtype=np.uint8)
    pos += header_size

    num_buckets, hp = read_varint32(h, 0, "number of buckets", hwhere)
    num_buffers, hp = read_varint32(h, hp, "number of buffers", hwhere)
    bucket_len, hp = read_varint_list(h, hnp, hp, num_buckets, 10, "bucket lengths", hwhere)
    buffer_len, hp = read_varint_list(h, hnp, hp, num_buffers, 10, "buffer lengths", hwhere)
    if num_buckets == 0 and num_buffers != 0:
        fail(f"{num_buffers} buffers but no buckets ({hwhere})")
    buckets_total = sum(bucket_len)
    if buckets_total > n - pos:
        fail(f"buckets of {buckets_total} bytes at byte {pos} overrun the chunk data ({n} bytes)")
    buffers_total = sum(buffer_len)
    if buffers_total > decoded_data_size + 10 * num_records:
        fail(
            f"buffers declare {buffers_total} bytes, more than {num_records} records of "
            f"{decoded_data_size} bytes can use ({hwhere})"
        )
    bucket_pos = []
    for length in bucket_len:
        bucket_pos.append(pos)
        pos += length

    c = Chunk()
    c.machine = m = parse_machine(h, hnp, hp, hwhere, num_buffers)
    c.nsrc = buffers_total
    c.src = src = bytearray(buffers_total + (reserve(m) if reserve is not None else 0))
    if num_buckets:
        bsizes = _decompress_buckets(ctype, data, bucket_pos, bucket_len, buffers_total, src)
        ends = set()
        acc = 0
        for length in buffer_len:
            acc += length
            ends.add(acc)
        acc = 0
        for i, size in enumerate(bsizes[:-1]):
            acc += size
            if acc not in ends:
                fail(f"bucket {i} (chunk byte {bucket_pos[i]}) ends inside a buffer")
    c.bstart = bstart = []
    c.bend = bend = []
    acc = 0
    for length in buffer_len:
        bstart.append(acc)
        acc += length
        bend.append(acc)
    # Transitions: a byte per explicit move, and at most a few moves per
    # visited state, each state writing at least one byte or closing a record.
    trans_max = 4096 + 16 * (decoded_data_size + num_records)
    c.trans = bytes(_decompress(ctype, memoryview(data)[pos:], trans_max, "transitions", f"chunk byte {pos}"))
    c.trans_where = f"transitions (chunk byte {pos})"
    return c


def reserve_heads(extra: int):
    """A ``reserve`` for :func:`parse_chunk`: the machine's head slots plus
    ``extra`` bytes."""

    def reserve(m: Machine) -> int:
        return HEAD_SLOT * (m.S + PAD + 1) + extra

    return reserve


def _decompress_buckets(ctype: int, data, bucket_pos: list, bucket_len: list, total: int, out: bytearray) -> list:
    """Decompress every bucket into ``out`` back to back; returns the sizes.

    The declared sizes are read and summed first, so nothing is allocated
    beyond ``total`` bytes in all; they must add up to ``total``.
    """
    mv = memoryview(data)
    blocks = [mv[p : p + n] for p, n in zip(bucket_pos, bucket_len)]
    if ctype == NONE:
        sizes = list(bucket_len)
        if sum(sizes) != total:
            fail(f"buckets decompress to {sum(sizes)} bytes, their buffers total {total}")
        o = 0
        for blk in blocks:
            out[o : o + len(blk)] = blk
            o += len(blk)
        return sizes
    sizes = []
    starts = []
    for i, blk in enumerate(blocks):
        try:
            size, start = block_decompressed_size(ctype, blk)
        except CompressionError as e:
            fail(f"bucket {i} at chunk byte {bucket_pos[i]}: {e}")
        sizes.append(size)
        starts.append(start)
    if sum(sizes) != total:
        fail(f"buckets decompress to {sum(sizes)} bytes, their buffers total {total}")
    got = None
    if ctype == ZSTD and len(blocks) > 8:
        # One C call for all frames instead of one Python call per bucket
        # (array_record's default bucket size is 256 bytes).
        got = _zstd_many(
            data,
            np.add(bucket_pos, starts, dtype=np.int64),
            np.subtract(bucket_len, starts, dtype=np.int64),
            np.array(sizes, dtype=np.int64),
        )
    o = 0
    mv_out = memoryview(out)
    for i, blk in enumerate(blocks):
        size = sizes[i]
        if got is not None:
            out[o : o + size] = got[i]
        elif ctype == ZSTD:
            _zstd_into(blk[starts[i] :], mv_out[o : o + size], f"bucket {i} at chunk byte {bucket_pos[i]}")
        else:
            out[o : o + size] = _decompress(ctype, blk, size, f"bucket {i}", f"chunk byte {bucket_pos[i]}")
        o += size
    return sizes


def _zstd_into(stream, out: memoryview, where: str) -> None:
    """Decode one zstd frame of exactly ``len(out)`` bytes into ``out``."""
    try:
        zstd_decompress_into(stream, out, exact=True)
    except CompressionError as e:
        fail(f"{where}: {e}")


def _zstd_many(data, frame_pos: np.ndarray, frame_len: np.ndarray, sizes: np.ndarray):
    """Decompress zstd frames with ``multi_decompress_to_buffer``; ``None``
    if any frame is empty or corrupt (the caller then decodes one by one
    and reports which)."""
    if int(frame_len.min()) <= 0 or int(sizes.min()) <= 0:
        return None
    segs = np.empty((frame_pos.size, 2), dtype=np.uint64)
    segs[:, 0] = frame_pos
    segs[:, 1] = frame_len
    try:
        frames = zstandard.BufferWithSegments(bytes(data) if not isinstance(data, bytes) else data, segs.tobytes())
        res = zstd_decompressor().multi_decompress_to_buffer(
            frames, decompressed_sizes=sizes.astype(np.uint64).tobytes()
        )
    except (zstandard.ZstdError, ValueError, TypeError):
        return None
    got = [res[i] for i in range(len(res))]
    if any(len(g) != int(s) for g, s in zip(got, sizes.tolist())):
        return None
    return got
