"""Transposed chunks (type ``'t'``) and the file metadata chunk (type ``'m'``).

Upstream: riegeli ``riegeli/chunk_encoding/transpose_decoder.cc``
(``TransposeDecoder::Parse``, ``ParseBuffers``, ``Decode`` without field
projection), ``transpose_encoder.cc`` (what it writes) and
``transpose_internal.h`` (``MessageId``, ``Subtype``,
``kSubmessageWireType``). The metadata chunk is the transposed encoding of
one serialized ``riegeli.RecordsMetadata`` (``riegeli/records/
records_metadata.proto``) with ``num_records`` 0 in its chunk header.

Chunk data::

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
    state_machine_size                  varint32 (S)
    tags[S]                             varint32: 0 no-op, 1 non-proto
                                        record, 2 start of submessage,
                                        3 start of message, else a proto
                                        tag (wire type 6: end of a
                                        submessage whose tag has type 2)
    next_node[S]                        varint32; >= S marks an implicit
                                        transition to next_node - S
    subtypes                            1 byte per varint-typed tag: 0..9
                                        the value's length in its buffer,
                                        10..137 an inline value 0..127
    buffer_indices                      varint32 per state with a buffer
    first_node                          varint32

Records come out last to first. Each state copies its field (tag plus data
from its buffer, read front to back) in front of what is already written;
an end-of-submessage state marks a position and the matching
start-of-submessage state writes tag and length in front of the
submessage. After a state the machine moves to ``next_node`` (implicit) or
reads a transition byte: ``next_node + (byte >> 2)``, then ``byte & 3``
more moves to ``next_node + 0``. A start-of-message state closes a record.

Two decoders share the parsed chunk: a direct interpreter of the state
machine (small chunks, where numpy's per-call cost would dominate) and a
vectorised one (large chunks): the transition bytes run through a table
automaton inside ``itertools.accumulate``, the visited states are expanded
with numpy, and the output is gathered in one pass. Both accept exactly
what upstream's decoder accepts, except data no encoder writes where one
buffer is read by states of different kinds (refused). Field projection
(decoding some fields only) is not implemented: records are decoded whole.

Memory: the vectorised decoder holds about 120 bytes per visited state at
its peak (about 35x the decoded size for typical protos); every size
declared in the chunk is checked against ``decoded_data_size``,
``num_records`` and ``len(data)`` before anything of that size exists.
Functions here keep no state between calls but two bounded caches, safe to
share between threads.
"""

from __future__ import annotations

import itertools
import operator

import numpy as np
import zstandard

from .compression import (
    COMPRESSION_NAMES,
    NONE,
    ZSTD,
    CompressionError,
    block_decompressed_size,
    decompress_block,
    zstd_decompressor,
)
from .varint import VarintError, encode_varint, read_varint

__all__ = [
    "TransposeError",
    "decode_transposed_chunk",
    "decode_records_metadata",
    "parse_records_metadata",
]


class TransposeError(ValueError):
    """A transposed chunk is malformed. The message gives the byte position
    within the chunk data (or within a decompressed part of it); the chunk
    layer adds the file and the chunk offset."""


# MessageId values (transpose_internal.h) that are not proto tags.
_ID_NOOP, _ID_NONPROTO, _ID_START_SUBMESSAGE, _ID_START_MESSAGE = 0, 1, 2, 3
_SUBMESSAGE_WIRE_TYPE = 6
_SUBTYPE_INLINE0 = 10  # Subtype::kVarintInline0
_SUBTYPE_INLINE_MAX = _SUBTYPE_INLINE0 + 0x7F

# What visiting a state does.
K_NOOP = 0
K_NONPROTO = 1  # copy a whole non-proto record, then close the record
K_MSGSTART = 2  # close the record (its first byte is the current position)
K_SUBSTART = 3  # write tag + length of the submessage opened by K_SUBEND
K_SUBEND = 4  # remember the position where a submessage ends
K_COPY = 5  # tag only (groups), or tag + inline varint byte
K_VARINT = 6  # tag + `width` buffer bytes, all but the last with bit 7 set
K_FIXED = 7  # tag + `width` (4 or 8) buffer bytes
K_STRING = 8  # tag + varint length + payload from the buffer
K_FAIL = 9  # outside the state machine

# What a buffer holds, from the states that read it; one class per buffer.
_C_NONE, _C_VARINT, _C_FIXED, _C_STRING, _C_NONPROTO, _C_LENGTHS = range(6)
_CLASS_OF_KIND = {K_VARINT: _C_VARINT, K_FIXED: _C_FIXED, K_STRING: _C_STRING, K_NONPROTO: _C_NONPROTO}

_U32_LIMIT = 1 << 32
# A transition byte's offset reaches at most 63 states past a base.
_PAD = 64
# Chunks with decoded_data_size + 16 * num_records up to this use the
# interpreter: measured crossover about 50 records of 400 bytes, where the
# vectorised decoder's fixed cost (a few hundred numpy calls) is repaid.
_SCALAR_MAX_WORK = 24576
# Python-list automaton tables are built for at most this many bases.
_MAX_TABLE_STATES = 1 << 13
# Output is gathered in slices of about this many bytes, a block of this
# many visits at a time (bounding the index arrays' memory).
_GATHER_SLICE = 1 << 22
_VISIT_BLOCK = 1 << 19


def _fail(msg: str):
    raise TransposeError(msg)


# --------------------------------------------------------------------------
# Varints


def _read_varint32(buf, pos: int, what: str, where: str) -> tuple[int, int]:
    """One varint32 as riegeli's ``ReadVarint32`` accepts it: at most 5
    bytes and a value below 2**32."""
    if pos < len(buf):
        b = buf[pos]
        if b < 0x80:
            return b, pos + 1
    result = 0
    shift = 0
    p = pos
    end = len(buf)
    while True:
        if p >= end:
            _fail(f"{what}: truncated varint at {where} byte {pos}")
        b = buf[p]
        p += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            break
        shift += 7
        if shift >= 35:
            _fail(f"{what}: varint32 at {where} byte {pos} is longer than 5 bytes")
    if result >= _U32_LIMIT:
        _fail(f"{what}: varint32 at {where} byte {pos} overflows 32 bits")
    return result, p


def _read_varint64(buf, pos: int, what: str, where: str) -> tuple[int, int]:
    try:
        return read_varint(buf, pos)
    except VarintError as e:
        _fail(f"{what}: {e} of {where}")


def _varint_array(a: np.ndarray, pos: int, count: int, max_len: int, what: str, where: str):
    """``count`` varints from uint8 array ``a`` at ``pos``, vectorised.

    Returns ``(values, next_pos)``: ``values`` int64 of shape ``(count,)``.
    ``max_len`` is 5 (varint32: value < 2**32) or 10 (varint64; values at
    or above 2**63 are rejected too, as no size or count can be that big).
    """
    if count == 0:
        return np.zeros(0, dtype=np.int64), pos
    if count > a.size - pos:
        _fail(f"{what}: {count} varints cannot fit in the {a.size - pos} bytes left at {where} byte {pos}")
    window = a[pos : pos + count * max_len]
    ends = np.flatnonzero(window < 0x80)
    if ends.size < count:
        _fail(f"{what}: truncated varint at {where} byte {pos + (int(ends[-1]) + 1 if ends.size else 0)}")
    ends = ends[:count]
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    lengths = ends - starts + 1
    longest = int(lengths.max())
    if longest == 1:
        return window[:count].astype(np.int64), pos + count
    if longest > max_len:
        bad = int(starts[np.argmax(lengths > max_len)])
        _fail(f"{what}: varint at {where} byte {pos + bad} is longer than {max_len} bytes")
    used = window[: int(ends[-1]) + 1]
    low = (used & 0x7F).astype(np.uint64)
    shift = (np.arange(used.size) - np.repeat(starts, lengths)) * 7
    if max_len == 10:
        # The 10th byte holds bit 63 only; more would overflow, and bit 63
        # itself is no valid size.
        if longest == 10 and int(used[ends[lengths == 10]].max()) > 0:
            _fail(f"{what}: varint at {where} byte {pos} group is too large")
    values = np.add.reduceat(low << shift.astype(np.uint64), starts)
    if max_len == 5 and int(values.max()) >= _U32_LIMIT:
        _fail(f"{what}: varint32 at {where} byte {pos} group overflows 32 bits")
    return values.astype(np.int64), pos + int(ends[-1]) + 1


def _varint_lengths(v: np.ndarray) -> np.ndarray:
    """Encoded length (1..5) of each value below 2**32; int64."""
    n = np.ones(v.shape, dtype=np.int64)
    for k in (7, 14, 21, 28):
        n += v >= (1 << k)
    return n


def _encode_varints32(v: np.ndarray) -> np.ndarray:
    """Encodings of values below 2**32 as a ``(len(v), 5)`` uint8 array;
    row ``i`` holds ``_varint_lengths(v)[i]`` meaningful bytes."""
    v = v.astype(np.uint64)
    n = _varint_lengths(v)
    out = np.empty((v.size, 5), dtype=np.uint8)
    for j in range(5):
        byte = (v >> np.uint64(7 * j)) & np.uint64(0x7F)
        out[:, j] = byte.astype(np.uint8) | np.where(n - 1 > j, 0x80, 0).astype(np.uint8)
    return out


# --------------------------------------------------------------------------
# Parsing


def _decompress(ctype: int, block, max_size: int, what: str, where: str):
    try:
        return decompress_block(ctype, block, max_size=max_size)
    except CompressionError as e:
        _fail(f"{what} at {where}: {e}")


def _decompress_buckets(ctype: int, data, bucket_pos: list, bucket_len: list, max_total: int):
    """Decompress every bucket; returns ``(list of bytes-likes, sizes)``.

    The declared sizes are read and summed first, so nothing is allocated
    beyond ``max_total`` bytes in all.
    """
    mv = memoryview(data)
    blocks = [mv[p : p + n] for p, n in zip(bucket_pos, bucket_len)]
    if ctype == NONE:
        return blocks, list(bucket_len)
    sizes = []
    starts = []
    for i, blk in enumerate(blocks):
        try:
            size, start = block_decompressed_size(ctype, blk)
        except CompressionError as e:
            _fail(f"bucket {i} at chunk byte {bucket_pos[i]}: {e}")
        sizes.append(size)
        starts.append(start)
    if sum(sizes) > max_total:
        _fail(f"buckets declare {sum(sizes)} decompressed bytes, but their buffers total {max_total}")
    if ctype == ZSTD and len(blocks) > 8:
        # One C call for all frames instead of one Python call per bucket
        # (array_record's default bucket size is 256 bytes).
        out = _zstd_many(
            data,
            np.add(bucket_pos, starts, dtype=np.int64),
            np.subtract(bucket_len, starts, dtype=np.int64),
            np.array(sizes, dtype=np.int64),
        )
        if out is not None:
            return out, sizes
    out = []
    for i, blk in enumerate(blocks):
        out.append(_decompress(ctype, blk, sizes[i], f"bucket {i}", f"chunk byte {bucket_pos[i]}"))
    return out, sizes


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
        res = zstd_decompressor().multi_decompress_to_buffer(frames, decompressed_sizes=sizes.astype(np.uint64).tobytes())
    except (zstandard.ZstdError, ValueError, TypeError):
        return None
    got = [res[i] for i in range(len(res))]
    if any(len(g) != int(s) for g, s in zip(got, sizes.tolist())):
        return None
    return got


class _Small:
    """A parsed chunk as Python lists (the interpreter's form; the
    vectorised decoder converts it with :func:`_to_arrays`).

    Per state (padded with ``_PAD`` failure states): ``kind`` (``K_*``),
    ``nxt`` (next state or base), ``implicit``, ``width`` (bytes read from
    the buffer by varint/fixed states), ``bufidx`` (-1: none), ``heads``
    (bytes written before the data: tag, plus the value of an inline
    varint); ``tags`` (tag bytes, for heads of submessages). Buffers are
    ``src[bstart[i]:bend[i]]``; ``trans`` the transition bytes.
    """

    __slots__ = (
        "S",
        "kind",
        "nxt",
        "implicit",
        "width",
        "bufidx",
        "heads",
        "tags",
        "first",
        "src",
        "bstart",
        "bend",
        "lengths_buffer",
        "trans",
        "trans_where",
    )


def _parse(data, num_records: int, decoded_data_size: int) -> _Small:
    """Parse chunk data: compression type, header, buckets (decompressed
    into one buffer area) and transitions, checking every field and every
    declared size before anything of that size is allocated.

    Plain Python, not numpy: headers are a few hundred bytes, where numpy's
    per-call cost would dominate (one-record chunks most of all).
    """
    n = len(data)
    if n < 1:
        _fail("chunk data is empty: no compression type at byte 0")
    ctype = data[0]
    if ctype not in COMPRESSION_NAMES:
        _fail(f"unknown compression type {ctype:#04x} at byte 0")
    header_size, pos = _read_varint64(data, 1, "header size", "chunk data")
    if header_size > n - pos:
        _fail(f"header of {header_size} bytes at byte {pos} overruns the chunk data ({n} bytes)")
    hwhere = f"header (chunk byte {pos})"
    header_max = 4096 + 32 * (decoded_data_size + num_records + n)
    h = bytes(_decompress(ctype, memoryview(data)[pos : pos + header_size], header_max, "header", f"chunk byte {pos}"))
    hnp = np.frombuffer(h, dtype=np.uint8)
    pos += header_size
    hn = len(h)

    def varints(hp, count, what, read):
        if count > hn - hp:
            _fail(f"{what}: {count} varints cannot fit in the {hn - hp} bytes left at {hwhere} byte {hp}")
        span = h[hp : hp + count]
        if not span or max(span) < 0x80:  # all one-byte varints
            return list(span), hp + count
        if count > 16:
            values, hp = _varint_array(hnp, hp, count, 5 if read is _read_varint32 else 10, what, hwhere)
            return values.tolist(), hp
        out = []
        for _ in range(count):
            v, hp = read(h, hp, what, hwhere)
            out.append(v)
        return out, hp

    num_buckets, hp = _read_varint32(h, 0, "number of buckets", hwhere)
    num_buffers, hp = _read_varint32(h, hp, "number of buffers", hwhere)
    bucket_len, hp = varints(hp, num_buckets, "bucket lengths", _read_varint64)
    buffer_len, hp = varints(hp, num_buffers, "buffer lengths", _read_varint64)
    if num_buckets == 0 and num_buffers != 0:
        _fail(f"{num_buffers} buffers but no buckets ({hwhere})")
    buckets_total = sum(bucket_len)
    if buckets_total > n - pos:
        _fail(f"buckets of {buckets_total} bytes at byte {pos} overrun the chunk data ({n} bytes)")
    buffers_total = sum(buffer_len)
    if buffers_total > decoded_data_size + 10 * num_records:
        _fail(
            f"buffers declare {buffers_total} bytes, more than {num_records} records of "
            f"{decoded_data_size} bytes can use ({hwhere})"
        )
    bucket_pos = []
    for length in bucket_len:
        bucket_pos.append(pos)
        pos += length

    key = (h[hp:], num_buffers)
    machine = _MACHINES.get(key)
    if machine is None:
        machine = _parse_machine(h, hp, hwhere, num_buffers, varints)
        if hn - hp <= _MAX_MACHINE_BYTES:
            if len(_MACHINES) >= _MAX_MACHINES:
                _MACHINES.clear()
            _MACHINES[key] = machine
    p = _Small()
    (p.S, p.kind, p.nxt, p.implicit, p.width, p.bufidx, p.heads, p.tags, p.first, p.lengths_buffer) = machine
    if num_buckets:
        blocks, bsizes = _decompress_buckets(ctype, data, bucket_pos, bucket_len, buffers_total)
        if sum(bsizes) != buffers_total:
            _fail(f"buckets decompress to {sum(bsizes)} bytes, their buffers total {buffers_total} ({hwhere})")
        ends = set()
        acc = 0
        for length in buffer_len:
            acc += length
            ends.add(acc)
        acc = 0
        for i, size in enumerate(bsizes[:-1]):
            acc += size
            if acc not in ends:
                _fail(f"bucket {i} (chunk byte {bucket_pos[i]}) ends inside a buffer")
        p.src = bytes(blocks[0]) if len(blocks) == 1 else b"".join(blocks)
    else:
        p.src = b""
    p.bstart = []
    p.bend = []
    acc = 0
    for length in buffer_len:
        p.bstart.append(acc)
        acc += length
        p.bend.append(acc)
    # Transitions: a byte per explicit move, and at most a few moves per
    # visited state, each state writing at least one byte or closing a record.
    trans_max = 4096 + 16 * (decoded_data_size + num_records)
    p.trans = bytes(_decompress(ctype, memoryview(data)[pos:], trans_max, "transitions", f"chunk byte {pos}"))
    p.trans_where = f"transitions (chunk byte {pos})"
    return p


# What a state does, by tag (and subtype for varints: ``tag | subtype << 32``):
# ``(kind, width, head, tag bytes, has a buffer)``. Valid keys only.
_STATE_INFO: dict = {}


def _state_info(key: int, i: int, hwhere: str):
    raw, subtype = key & 0xFFFFFFFF, key >> 32
    if raw < 4:
        info = ((K_NOOP, K_NONPROTO, K_SUBSTART, K_MSGSTART)[raw], 0, b"", b"", raw == _ID_NONPROTO)
    else:
        t = raw - (_SUBMESSAGE_WIRE_TYPE - 2) if raw & 7 == _SUBMESSAGE_WIRE_TYPE else raw
        if t < 8 or t & 7 > 5:
            _fail(f"state {i} has invalid tag {raw} ({hwhere})")
        tb = encode_varint(t)
        wt = t & 7
        if raw != t:
            info = (K_SUBEND, 0, b"", tb, False)
        elif wt == 0:
            if subtype > _SUBTYPE_INLINE_MAX:
                _fail(f"state {i} has invalid varint subtype {subtype} ({hwhere})")
            if subtype >= _SUBTYPE_INLINE0:
                info = (K_COPY, 0, tb + bytes((subtype - _SUBTYPE_INLINE0,)), tb, False)
            else:
                info = (K_VARINT, subtype + 1, tb, tb, True)
        elif wt == 1 or wt == 5:
            info = (K_FIXED, 8 if wt == 1 else 4, tb, tb, True)
        elif wt == 2:
            info = (K_STRING, 0, tb, tb, True)
        else:
            info = (K_COPY, 0, tb, tb, False)
    if len(_STATE_INFO) < 1 << 16:
        _STATE_INFO[key] = info
    return info


# Parsed state machines of small chunks, keyed by the header's bytes from
# the state machine on (plus the buffer count its indices are checked
# against): consecutive chunks of one record type often share them.
_MACHINES: dict = {}
_MAX_MACHINES = 256
_MAX_MACHINE_BYTES = 4096


def _parse_machine(h: bytes, hp: int, hwhere: str, num_buffers: int, varints):
    """The state machine part of the header, from ``hp`` to its end, as
    Python lists (see :class:`_Small`)."""
    hn = len(h)
    S, hp = _read_varint32(h, hp, "state machine size", hwhere)
    tags, hp = varints(hp, S, "state tags", _read_varint32)
    nexts, hp = varints(hp, S, "next states", _read_varint32)
    num_subtypes = sum(1 for t in tags if t >= 8 and t & 7 == 0)
    if num_subtypes > hn - hp:
        _fail(f"subtypes: {num_subtypes} bytes needed at {hwhere} byte {hp}, {hn - hp} left")
    subtypes = iter(h[hp : hp + num_subtypes])
    hp += num_subtypes
    infos = []
    get = _STATE_INFO.get
    for i, t in enumerate(tags):
        key = t | next(subtypes) << 32 if t >= 8 and t & 7 == 0 else t
        info = get(key)
        if info is None:
            info = _state_info(key, i, hwhere)
        infos.append(info)
    kind, width, heads, tag_bytes, has_buffer = map(list, zip(*infos)) if infos else ([], [], [], [], [])
    pad = [K_FAIL] * _PAD
    indices, hp = varints(hp, sum(has_buffer), "buffer indices", _read_varint32)
    if indices and max(indices) >= num_buffers:
        _fail(f"buffer index {max(indices)} out of range: {num_buffers} buffers ({hwhere})")
    it = iter(indices)
    bufidx = [next(it) if hb else -1 for hb in has_buffer]
    first, hp = _read_varint32(h, hp, "first state", hwhere)
    if hp != hn:
        _fail(f"header has {hn - hp} unexpected bytes at {hwhere} byte {hp}")
    if first >= S:
        _fail(f"first state {first} out of range: {S} states ({hwhere})")
    implicit = [x >= S for x in nexts]
    nxt = [x - S if x >= S else x for x in nexts]
    for i, x in enumerate(nxt):
        if x >= S:
            _fail(f"state {i}: next state {x} out of range: {S} states ({hwhere})")

    # In what the encoder writes, every buffer belongs to one field, so all
    # states reading it read it the same way; the non-proto lengths buffer
    # (the last one) is read by no state. Other data is refused.
    lengths_buffer = -1
    cls = [_C_NONE] * num_buffers
    if K_NONPROTO in kind:
        if num_buffers == 0:
            _fail("non-proto records but no buffer for their lengths")
        lengths_buffer = num_buffers - 1
        cls[lengths_buffer] = _C_LENGTHS
    owner = {}
    for k, b in zip(kind, bufidx):
        if b >= 0:
            c = _CLASS_OF_KIND[k]
            seen = owner.setdefault(b, c)
            if seen != c or cls[b] == _C_LENGTHS:
                _fail(f"buffer {b} is read by states of different kinds ({hwhere})")
    # Loops of implicit transitions (upstream's ContainsImplicitLoop).
    loop_id = [0] * S
    for i in range(S):
        if loop_id[i]:
            continue
        j = i
        loop_id[j] = i + 1
        while implicit[j]:
            j = nxt[j]
            if loop_id[j] == i + 1:
                _fail(f"states contain a loop of implicit transitions through state {j} ({hwhere})")
            if loop_id[j]:
                break
            loop_id[j] = i + 1

    return (
        S,
        kind + pad,
        nxt + [0] * _PAD,
        implicit + [False] * _PAD,
        width + [0] * _PAD,
        bufidx + [-1] * _PAD,
        heads + [b""] * _PAD,
        tag_bytes,
        first,
        lengths_buffer,
    )


# --------------------------------------------------------------------------
# Interpreter


def _decode_scalar(p: _Small, num_records: int, decoded_data_size: int):
    """Run the state machine state by state (transpose_decoder.cc's
    ``DecodingState``). Returns ``(bytes, int64 offsets)``.

    Every state visited writes a byte, closes a record, opens a submessage
    (each needing a head of 2 bytes later) or is a no-op; the first three
    are bounded by the header's sizes, no-ops by a budget (valid data has
    at most one per move), so the loop ends on any input.
    """
    kind, nxt, implicit, width, bufidx = p.kind, p.nxt, p.implicit, p.width, p.bufidx
    heads, tags = p.heads, p.tags
    src = p.src
    bpos = list(p.bstart)
    bend = p.bend
    lpos = lend = 0
    if p.lengths_buffer >= 0:
        lpos = bpos[p.lengths_buffer]
        lend = bend[p.lengths_buffer]
    trans = p.trans
    tlen = len(trans)
    noops = 4 * tlen + 1
    max_open = decoded_data_size // 2
    pieces = []
    append = pieces.append
    dest = 0
    stack = []
    limits = []
    node = p.first
    pending = 0
    tpos = 0
    while True:
        k = kind[node]
        if k <= K_MSGSTART:
            if k == K_NOOP:
                noops -= 1
                if noops < 0:
                    _fail("state machine visits more states than the records can hold")
            else:
                if k == K_NONPROTO:
                    length, q = _read_varint32(src, lpos, "non-proto record length", "decompressed buffers")
                    if q > lend:
                        _fail("non-proto lengths buffer ends inside a length")
                    lpos = q
                    b = bufidx[node]
                    a = bpos[b]
                    q = a + length
                    if q > bend[b]:
                        _fail(f"non-proto record of {length} bytes overruns buffer {b}")
                    bpos[b] = q
                    append(src[a:q])
                    dest += length
                    if dest > decoded_data_size:
                        _fail(f"records exceed the {decoded_data_size} bytes the chunk header declares")
                if stack:
                    _fail("a record starts while submessages are still open")
                if len(limits) == num_records:
                    _fail(f"more than the {num_records} records the chunk header declares")
                limits.append(dest)
        elif k == K_SUBEND:
            if len(stack) >= max_open:
                _fail("more submessages open than the records can hold")
            stack.append((dest, node))
        else:
            if k == K_VARINT:
                b = bufidx[node]
                a = bpos[b]
                q = a + width[node]
                if q > bend[b]:
                    _fail(f"buffer {b} ends inside a varint field (state {node})")
                bpos[b] = q
                piece = heads[node] + src[a : q - 1].translate(_SET_BIT7) + src[q - 1 : q]
            elif k == K_COPY:
                piece = heads[node]
            elif k == K_STRING:
                b = bufidx[node]
                a = bpos[b]
                length, q = _read_varint32(src, a, f"string length in buffer {b}", "decompressed buffers")
                q += length
                if q > bend[b]:
                    _fail(f"string of {length} bytes overruns buffer {b} (state {node})")
                bpos[b] = q
                piece = heads[node] + src[a:q]
            elif k == K_SUBSTART:
                if not stack:
                    _fail(f"submessage start without an end (state {node})")
                end_pos, end_node = stack.pop()
                length = dest - end_pos
                if length >= _U32_LIMIT:
                    _fail("submessage longer than 2**32 - 1 bytes")
                piece = tags[end_node] + encode_varint(length)
            elif k == K_FIXED:
                b = bufidx[node]
                a = bpos[b]
                q = a + width[node]
                if q > bend[b]:
                    _fail(f"buffer {b} ends inside a fixed field (state {node})")
                bpos[b] = q
                piece = heads[node] + src[a:q]
            else:
                _fail(f"transition to state {node}, outside the {p.S} states")
            append(piece)
            dest += len(piece)
            if dest > decoded_data_size:
                _fail(f"records exceed the {decoded_data_size} bytes the chunk header declares")
        # Move to the next state.
        if implicit[node]:
            node = nxt[node]
        elif pending:
            pending -= 1
            node = nxt[node]
        elif tpos < tlen:
            t = trans[tpos]
            tpos += 1
            node = nxt[node] + (t >> 2)
            pending = t & 3
        else:
            break
    if stack:
        _fail(f"{len(stack)} submessages still open at the end of the chunk")
    if len(limits) != num_records:
        _fail(f"chunk decodes to {len(limits)} records, its header declares {num_records}")
    if (limits[-1] if limits else 0) != dest:
        _fail(f"{dest - (limits[-1] if limits else 0)} bytes belong to no record")
    if dest != decoded_data_size:
        _fail(f"records decode to {dest} bytes, the chunk header declares {decoded_data_size}")
    pieces.reverse()
    limits.reverse()
    limits.append(0)
    offsets = np.array(limits, dtype=np.int64)
    np.subtract(dest, offsets, out=offsets)
    return b"".join(pieces), offsets


# Varint bytes in buffers have bit 7 cleared; all but a value's last get it back.
_SET_BIT7 = bytes(b | 0x80 for b in range(256))


# --------------------------------------------------------------------------
# Vectorised decoder


class _Chunk:
    """A parsed transposed chunk: state machine, buffers, transitions."""

    __slots__ = (
        "S",
        "kind",
        "nxt",
        "implicit",
        "width",
        "bufidx",
        "head_len",
        "tag_len",
        "tagb",
        "tagr",
        "first",
        "chain_end",
        "chain_len",
        "src",
        "buf_start",
        "buf_len",
        "varint_buffers",
        "lengths_buffer",
        "trans",
        "trans_where",
    )


def _to_arrays(p: "_Small") -> _Chunk:
    """The parsed chunk as numpy arrays, for the vectorised decoder.

    Arrays cover the S states, ``_PAD`` failure states that a transition
    byte may reach past the last one, and a sink (index ``S + _PAD``) that
    failure states lead to.
    """
    S = p.S
    M = S + _PAD + 1
    sink = S + _PAD
    c = _Chunk()
    c.S = S
    c.first = p.first
    c.kind = np.array(p.kind + [K_FAIL], dtype=np.int8)
    c.nxt = np.array(p.nxt + [sink], dtype=np.int64)
    c.nxt[S:] = sink
    c.implicit = np.array(p.implicit + [False], dtype=bool)
    c.width = np.array(p.width + [0], dtype=np.int64)
    c.bufidx = np.array(p.bufidx + [-1], dtype=np.int64)
    c.head_len = np.array([len(h) for h in p.heads] + [0], dtype=np.int64)
    c.tag_len = np.zeros(M, dtype=np.int64)
    c.tag_len[:S] = [len(t) for t in p.tags]
    # Heads (tag, and the value of an inline varint) in 6-byte slots, and
    # tags right-aligned in 5 bytes (heads of submessages end with them).
    c.tagb = np.zeros((M, 6), dtype=np.uint8)
    c.tagb[:S] = np.frombuffer(b"".join(h.ljust(6, b"\0") for h in p.heads[:S]), dtype=np.uint8).reshape(S, 6)
    c.tagr = np.zeros((M, 5), dtype=np.uint8)
    c.tagr[:S] = np.frombuffer(b"".join(t.rjust(5, b"\0") for t in p.tags), dtype=np.uint8).reshape(S, 5)
    c.buf_start = np.array(p.bstart, dtype=np.int64)
    c.buf_len = np.array(p.bend, dtype=np.int64) - c.buf_start
    c.varint_buffers = np.unique(c.bufidx[c.kind == K_VARINT])
    c.lengths_buffer = p.lengths_buffer
    c.src = p.src
    c.trans = p.trans
    c.trans_where = p.trans_where
    _close_implicit_chains(c)
    return c


def _close_implicit_chains(c: _Chunk) -> None:
    """For every state: the explicit state that ends its chain of implicit
    moves (``chain_end``) and how many states the chain visits
    (``chain_len``), by pointer doubling. (:func:`_parse` has already
    refused cycles of implicit moves; the check here only backs it up.)"""
    M = c.kind.size
    ident = np.arange(M, dtype=np.int64)
    succ = np.where(c.implicit, c.nxt, ident)
    steps = c.implicit.astype(np.int64)
    if c.implicit.any():
        for _ in range(max(1, (c.S + 1).bit_length() + 1)):
            steps = steps + steps[succ]
            succ = succ[succ]
        if c.implicit[succ].any():
            i = int(np.argmax(c.implicit[succ]))
            _fail(f"states contain a loop of implicit transitions through state {i}")
    c.chain_end = succ
    c.chain_len = steps + 1


# Transition from a string entry's length byte to the next entry: v < 128 is
# a one-byte length (advance 1 + v); anything else stops the chain (0).
_STEP = bytes(range(1, 129)) + bytes(128)


def _run_automaton(c: _Chunk, tb: bytes, beta0: int):
    """Run the transition bytes through the machine, one row per base.

    The move for one byte depends only on the current base (``next_node``
    of the explicit state reached) and the byte, so the machine is a table
    automaton on bases. It runs in C: ``accumulate(bytes, getitem)`` over
    rows that are Python lists whose entry ``b`` is the row reached by byte
    ``b`` and whose entry 256 is the row's number.

    Returns ``(rows, bases)``: ``rows`` of shape ``(len(tb) + 1,)``, the
    row before each byte and after the last; ``bases[row]`` is its base.
    """
    S = c.S
    nxt, chain_end = c.nxt, c.chain_end
    sink = S + _PAD
    explicit = np.flatnonzero(~c.implicit[:S])
    bases = np.unique(np.concatenate((nxt[explicit], [beta0])))
    D = bases.size
    if D > _MAX_TABLE_STATES:
        return _run_automaton_slow(c, tb, beta0)
    row_of = np.full(sink + 1, D, dtype=np.int64)
    row_of[bases] = np.arange(D)
    used = np.flatnonzero(np.bincount(np.frombuffer(tb, dtype=np.uint8), minlength=256))
    cur = nxt[chain_end[bases[:, None] + (used >> 2)[None, :]]]
    reps = used & 3
    for j in (1, 2, 3):
        cols = reps >= j
        if cols.any():
            cur[:, cols] = nxt[chain_end[cur[:, cols]]]
    table = np.full((D + 1, 256), D, dtype=np.int64)
    table[:D, used] = row_of[cur]
    rows = [[None] * 256 + [i] for i in range(D + 1)]
    flat = operator.itemgetter(*table.ravel().tolist())(rows)
    for i, row in enumerate(rows):
        row[:256] = flat[256 * i : 256 * (i + 1)]
    walk = itertools.accumulate(tb, operator.getitem, initial=rows[int(row_of[beta0])])
    try:
        if D < 256:
            seq = np.frombuffer(bytes(map(operator.itemgetter(256), walk)), dtype=np.uint8)
        else:
            seq = np.fromiter(map(operator.itemgetter(256), walk), dtype=np.int64, count=len(tb) + 1)
    finally:
        for row in rows:  # the rows reference each other: break the cycles
            row.clear()
    if int(seq.max()) == D:
        k = int(np.argmax(seq == D)) - 1
        _fail(f"transition byte {k} of the {c.trans_where} leads outside the {S} states")
    return seq, bases


def _run_automaton_slow(c: _Chunk, tb: bytes, beta0: int):
    """``_run_automaton`` for machines too large for tables: a Python loop,
    with every base its own row."""
    nxt = c.nxt.tolist()
    end = c.chain_end.tolist()
    kind = c.kind.tolist()
    seq = np.empty(len(tb) + 1, dtype=np.int64)
    beta = seq[0] = beta0
    for i, t in enumerate(tb):
        e = end[beta + (t >> 2)]
        for _ in range(t & 3):
            if kind[e] == K_FAIL:
                break
            e = end[nxt[e]]
        if kind[e] == K_FAIL:
            _fail(f"transition byte {i} of the {c.trans_where} leads outside the {c.S} states")
        beta = seq[i + 1] = nxt[e]
    return seq, np.arange(c.S, dtype=np.int64)


def _expand_chains(c: _Chunk, starts: np.ndarray) -> np.ndarray:
    """The states visited from each of ``starts`` through its chain of
    implicit moves, concatenated; int64."""
    nxt, chain_len = c.nxt, c.chain_len
    lens = chain_len[starts]
    longest = int(lens.max()) if lens.size else 1
    if longest == 1:
        return starts
    total = int(lens.sum())
    out_off = np.cumsum(lens) - lens
    if longest <= 64:
        # Each distinct chain spelled out once, a step per round.
        mark = np.zeros(c.kind.size, dtype=bool)
        mark[starts] = True
        uniq = np.flatnonzero(mark)
        ulen = chain_len[uniq]
        uoff = np.cumsum(ulen) - ulen
        table = np.empty(int(ulen.sum()), dtype=nxt.dtype)
        cur, pos, rem = uniq, uoff, ulen
        while cur.size:
            table[pos] = cur
            keep = rem > 1
            cur, pos, rem = nxt[cur[keep]], pos[keep] + 1, rem[keep] - 1
        where_of = np.zeros(c.kind.size, dtype=np.int64)
        where_of[uniq] = uoff
        return table.take(np.repeat(where_of.take(starts) - out_off, lens) + np.arange(total))
    # Long chains: step j is next_node applied j times, by doubling.
    v = np.repeat(starts, lens)
    j = np.arange(total) - np.repeat(out_off, lens)
    jump = np.where(c.implicit, nxt, np.arange(c.kind.size))
    bit = 0
    while (1 << bit) < longest:
        sel = ((j >> bit) & 1).astype(bool)
        v[sel] = jump[v[sel]]
        jump = jump[jump]
        bit += 1
    return v


def _visits(c: _Chunk, num_records: int, decoded_data_size: int) -> np.ndarray:
    """Every state visited, in decoding order; int64 array.

    Each distinct (row, byte) pair of the automaton's run is expanded once
    into the states its moves visit; the run is then a gather of those
    expansions.
    """
    nxt, chain_end, chain_len = c.nxt, c.chain_end, c.chain_len
    first = c.first
    head = _expand_chains(c, np.array([first], dtype=np.int64)).astype(nxt.dtype)
    tb = c.trans if isinstance(c.trans, bytes) else bytes(c.trans)
    if not tb:
        return head
    t = np.frombuffer(tb, dtype=np.uint8)
    seq, bases = _run_automaton(c, tb, int(nxt[chain_end[first]]))
    pid = seq[:-1].astype(np.int64) << 8
    pid |= t
    npairs = (int(seq.max()) + 1) << 8
    if npairs <= 4 * t.size + (1 << 16):
        mark = np.zeros(npairs, dtype=bool)
        mark[pid] = True
        pairs = np.flatnonzero(mark)
        pidx = (np.cumsum(mark) - 1).take(pid)
    else:  # huge machines (the slow automaton): no table as large as them
        pairs, pidx = np.unique(pid, return_inverse=True)
    pb = pairs & 255
    moves = np.empty((pairs.size, 4), dtype=np.int64)
    moves[:, 0] = bases[pairs >> 8] + (pb >> 2)
    for j in (1, 2, 3):
        moves[:, j] = nxt[chain_end[moves[:, j - 1]]]
    taken = np.arange(4)[None, :] <= (pb & 3)[:, None]
    starts = moves[taken]
    owner = np.repeat(np.arange(pairs.size), taken.sum(axis=1))
    exp_len = np.bincount(owner, weights=chain_len[starts], minlength=pairs.size).astype(np.int64)
    lens = exp_len.take(pidx)
    total = head.size + int(lens.sum())
    # Valid data visits at most one no-op per move; every other state
    # writes a byte or closes a record.
    if total > 4 * t.size + 1 + decoded_data_size + num_records:
        _fail("state machine visits more states than the records can hold")
    expansions = _expand_chains(c, starts)
    exp_off = np.cumsum(exp_len) - exp_len
    out = np.empty(total, dtype=nxt.dtype)
    out[: head.size] = head
    _gather(expansions, exp_off.take(pidx), lens, total - head.size, out=out[head.size :])
    return out


def _group_offsets(groups: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Exclusive running sum of ``sizes`` within each group, in order."""
    if groups.size == 0:
        return np.zeros(0, dtype=np.int64)
    if int(groups.min()) == int(groups.max()):
        return np.cumsum(sizes) - sizes
    order = _stable_order(groups)
    s = sizes.take(order)
    run = np.cumsum(s) - s
    g = groups.take(order)
    first = np.flatnonzero(np.concatenate(([True], g[1:] != g[:-1])))
    counts = np.diff(np.append(first, g.size))
    run -= np.repeat(run.take(first), counts)
    out = np.empty_like(run)
    out[order] = run
    return out


def _stable_order(keys: np.ndarray) -> np.ndarray:
    """``argsort(keys, kind='stable')``, as a radix sort for small keys."""
    top = int(keys.max()) if keys.size else 0
    if top < 256:
        keys = keys.astype(np.uint8)
    elif top < 65536:
        keys = keys.astype(np.uint16)
    return np.argsort(keys, kind="stable")


def _strings_fast(src, starts: np.ndarray, lens: np.ndarray, counts: np.ndarray):
    """Entries of string buffers that hold exactly ``counts`` strings each,
    all with one-byte lengths (the common case), in one walk over the
    buffers joined; ``None`` otherwise (then :func:`_string_entries` reads
    each buffer and says what is wrong).

    Returns ``(positions in src, sizes)`` in buffer order, int64. The walk
    runs in C: ``accumulate`` over a ``map`` reading the list that the
    walk extends, each step adding ``_STEP[byte]`` (0 for a longer length,
    which stops the walk in place).
    """
    if lens.size == 1:
        joined = bytes(src[int(starts[0]) : int(starts[0] + lens[0])])
    else:
        joined = b"".join([src[a : a + n] for a, n in zip(starts.tolist(), lens.tolist())])
    step = joined.translate(_STEP) + bytes(129)
    total = int(counts.sum())
    walk = [0]
    walk.extend(itertools.islice(itertools.accumulate(map(step.__getitem__, walk)), total))
    pos = np.fromiter(walk, dtype=np.int64, count=total + 1)
    size = np.diff(pos)
    ends = np.cumsum(lens)
    if int(size.min()) <= 0 or not np.array_equal(pos[np.cumsum(counts)], ends):
        return None
    pos = pos[:-1]
    pos += np.repeat(starts - (ends - lens), counts)
    return pos, size


def _string_entries(src, start: int, end: int, count: int, b: int):
    """Positions and sizes (varint length + payload) of the first ``count``
    length-prefixed strings of buffer ``b`` = ``src[start:end]``.

    The walk from one entry to the next runs in C for one-byte lengths:
    ``list.extend`` over a ``map`` that reads the list it extends, each
    step adding ``_STEP[byte]``. A longer length stops the walk (step 0);
    it is read in Python and the walk resumes.
    """
    buf = bytes(src[start:end])
    L = len(buf)
    step = buf.translate(_STEP) + bytes(129)
    pos_parts = []
    size_parts = []
    pos = 0
    got = 0
    chunk = 1024
    add = operator.add
    get = step.__getitem__
    while got < count:
        k = min(count - got, chunk)
        walk = [pos]
        walk.extend(itertools.islice(map(add, walk, map(get, walk)), k))
        arr = np.fromiter(walk, dtype=np.int64, count=k + 1)
        d = np.diff(arr)
        stuck = np.flatnonzero(d == 0)
        good = int(stuck[0]) if stuck.size else k
        if good:
            pos_parts.append(arr[:good])
            size_parts.append(d[:good])
        got += good
        pos = int(arr[good])
        if good == k:
            chunk = min(chunk * 4, 1 << 20)
            continue
        if pos >= L:
            _fail(f"buffer {b} ends before string {got} of the {count} its states read")
        length, q = _read_varint32(buf, pos, f"string length in buffer {b}", "buffer")
        q += length
        if q > L:
            _fail(f"string of {length} bytes overruns buffer {b}")
        pos_parts.append(np.array([pos], dtype=np.int64))
        size_parts.append(np.array([q - pos], dtype=np.int64))
        pos = q
        got += 1
        chunk = max(16, 2 * good)
    if pos > L:
        _fail(f"string overruns buffer {b}")
    return np.concatenate(pos_parts) + start, np.concatenate(size_parts)


def _decode_vector(c: _Chunk, num_records: int, decoded_data_size: int):
    """The vectorised decoder. Returns ``(memoryview, int64 offsets)``.

    Lookups use ``take(mode="clip")`` with int64 indices, the fastest
    gather numpy has; every index is in range by construction (visits are
    states, buffer positions were checked against buffer ends).
    """
    V = _visits(c, num_records, decoded_data_size)
    nv = V.size
    kv = c.kind.take(V, mode="clip")
    count = np.bincount(kv, minlength=K_FAIL + 1)
    if count[K_FAIL]:  # reachable only through an implicit chain's sink
        _fail("transition leads outside the state machine")
    if int(count[K_MSGSTART] + count[K_NONPROTO]) != num_records:
        _fail(
            f"chunk decodes to {int(count[K_MSGSTART] + count[K_NONPROTO])} records, its header declares {num_records}"
        )
    if count[K_NONPROTO]:
        rs = np.flatnonzero((kv == K_MSGSTART) | (kv == K_NONPROTO))
    else:
        rs = np.flatnonzero(kv == K_MSGSTART)
    starts = np.flatnonzero(kv == K_SUBSTART) if count[K_SUBSTART] else None
    depth = delta = None
    if count[K_SUBSTART] or count[K_SUBEND]:
        delta = (kv == K_SUBEND).view(np.int8) - (kv == K_SUBSTART).view(np.int8)
        depth = np.cumsum(delta)
        if int(depth.min()) < 0:
            _fail(f"submessage start without an end (visit {int(np.argmax(depth < 0))})")
        if rs.size and depth.take(rs).any():
            _fail("a record starts while submessages are still open")
        if int(depth[-1]) != 0:
            _fail(f"{int(depth[-1])} submessages still open at the end of the chunk")

    size = c.head_len.take(V, mode="clip")
    data_src = np.zeros(nv, dtype=np.int64)
    data_len = np.zeros(nv, dtype=np.int64)
    buf_start, buf_len = c.buf_start, c.buf_len

    varint_final = None
    if count[K_VARINT] or count[K_FIXED]:
        w = c.width.take(V, mode="clip")
        fw = np.flatnonzero(w)
        w = w.take(fw)
        vn = V.take(fw)
        bi = c.bufidx.take(vn, mode="clip")
        off = _group_offsets(bi, w)
        off += w
        over = off > buf_len.take(bi)
        if over.any():
            i = int(np.argmax(over))
            _fail(f"buffer {int(bi[i])} ends inside a field (state {int(vn[i])})")
        off += buf_start.take(bi)
        if count[K_VARINT]:
            varint_final = off[kv.take(fw) == K_VARINT] - 1
        off -= w
        data_src[fw] = off
        data_len[fw] = w
        del fw, w, vn, bi, off, over

    if count[K_STRING]:
        si = np.flatnonzero(kv == K_STRING)
        bi = c.bufidx.take(V.take(si), mode="clip")
        counts = np.bincount(bi, minlength=buf_len.size)
        order = _stable_order(bi)
        used = np.flatnonzero(counts)
        got = _strings_fast(c.src, buf_start[used], buf_len[used], counts[used])
        if got is None:
            parts = [
                _string_entries(c.src, int(buf_start[b]), int(buf_start[b] + buf_len[b]), int(counts[b]), b)
                for b in used.tolist()
            ]
            got = np.concatenate([p for p, _ in parts]), np.concatenate([s for _, s in parts])
        si = si.take(order)
        data_src[si] = got[0]
        data_len[si] = got[1]
        del si, bi, order, got

    if count[K_NONPROTO]:
        ni = np.flatnonzero(kv == K_NONPROTO)
        lb = c.lengths_buffer
        a = np.frombuffer(c.src, dtype=np.uint8)[int(buf_start[lb]) : int(buf_start[lb] + buf_len[lb])]
        lengths, _ = _varint_array(a, 0, ni.size, 5, "non-proto record lengths", "lengths buffer")
        bi = c.bufidx.take(V.take(ni), mode="clip")
        off = _group_offsets(bi, lengths)
        over = off + lengths > buf_len.take(bi)
        if over.any():
            _fail(f"non-proto records overrun buffer {int(bi[np.argmax(over)])}")
        data_src[ni] = buf_start.take(bi) + off
        data_len[ni] = lengths

    del kv
    size += data_len
    # Bytes written up to each visit, heads of submessages aside (added
    # below from their own running sum).
    cum = np.cumsum(size)
    total = int(cum[-1])
    written = cum.take(rs)
    sub_heads = None
    if starts is not None:
        sub_heads, head = _submessage_heads(c, V, delta, depth, starts, cum)
        size[starts] = head
        hx = np.zeros(starts.size + 1, dtype=np.int64)
        np.cumsum(head, out=hx[1:])
        written += hx.take(np.searchsorted(starts, rs))
        total += int(hx[-1])
    del cum, depth, delta
    if total != (int(written[-1]) if rs.size else 0):
        _fail(f"{total - (int(written[-1]) if rs.size else 0)} bytes belong to no record")
    if total != decoded_data_size:
        _fail(f"records decode to {total} bytes, the chunk header declares {decoded_data_size}")
    offsets = np.empty(num_records + 1, dtype=np.int64)
    offsets[:num_records] = total - written[::-1]
    offsets[num_records] = total
    if total == 0:
        return b"", offsets

    # One source array: buffers, then the heads of the states (6 bytes a
    # state), then the heads of the submessages (10 bytes each).
    nsrc = len(c.src)
    tag_base = nsrc
    sub_base = tag_base + c.tagb.size
    src = np.empty(sub_base + (0 if sub_heads is None else sub_heads[0].size), dtype=np.uint8)
    src[:nsrc] = np.frombuffer(c.src, dtype=np.uint8)
    src[tag_base:sub_base] = c.tagb.ravel()
    if sub_heads is not None:
        heads, first_col = sub_heads
        src[sub_base:] = heads.ravel()
    if varint_final is not None:
        # Varint bytes get bit 7 back, except each value's last byte.
        keep = src.take(varint_final)
        for b in c.varint_buffers.tolist():
            src[int(buf_start[b]) : int(buf_start[b] + buf_len[b])] |= 0x80
        src[varint_final] = keep

    # Visit i's head comes from the state's 6-byte slot or its submessage
    # head (V is not needed any more: reuse it), its data from its buffer.
    head_src = V
    np.multiply(head_src, 6, out=head_src)
    head_src += tag_base
    if sub_heads is not None:
        head_src[starts] = sub_base + 10 * np.arange(starts.size) + first_col
    head_len = size
    head_len -= data_len
    out = np.empty(total, dtype=np.uint8)
    # Output order is the reverse of visiting order, head before data; built
    # a block of visits at a time to bound the segment arrays' memory.
    written = 0
    for lo in range(0, nv, _VISIT_BLOCK):
        hi = min(nv, lo + _VISIT_BLOCK)
        seg_src = np.empty((hi - lo, 2), dtype=np.int64)
        seg_len = np.empty((hi - lo, 2), dtype=np.int64)
        seg_src[:, 0] = head_src[lo:hi][::-1]
        seg_src[:, 1] = data_src[lo:hi][::-1]
        seg_len[:, 0] = head_len[lo:hi][::-1]
        seg_len[:, 1] = data_len[lo:hi][::-1]
        seg_src = seg_src.reshape(-1)
        seg_len = seg_len.reshape(-1)
        nz = np.flatnonzero(seg_len)
        seg_len = seg_len.take(nz)
        n = int(seg_len.sum())
        _gather(src, seg_src.take(nz), seg_len, n, out=out[total - written - n : total - written])
        written += n
    return memoryview(out), offsets


def _submessage_heads(c: _Chunk, V, delta, depth, starts, cum):
    """Tag and length of every submessage, in visiting order of its start.

    ``cum`` is the running sum of bytes written, without the heads of
    submessages. Returns ``((heads, first_col), head_len)``: ``heads``
    uint8 ``(k, 10)`` holding the tag right-aligned in columns 0..4 and the
    length varint in columns 5..9, so the head is
    ``heads[i, first_col[i]:5 + varint length]``; ``head_len`` int64
    ``(k,)``. A submessage's length counts the heads of those inside it,
    whose lengths count the heads inside them, so lengths are iterated to a
    fixed point (a round per level of nesting at most; two or three in
    practice).
    """
    ev = np.flatnonzero(delta)
    level = depth.take(ev)
    level += delta.take(ev) < 0
    order = _stable_order(level)
    # Sorted by level, ends and starts alternate; consecutive ones match.
    pair_end = ev.take(order[0::2])
    pair_start = ev.take(order[1::2])
    end_at = np.empty(starts.size, dtype=np.int64)
    end_at[np.searchsorted(starts, pair_start)] = pair_end
    end_node = V.take(end_at)
    tl = c.tag_len.take(end_node, mode="clip")
    inner = cum.take(starts - 1) - cum.take(end_at)
    lo = np.searchsorted(starts, end_at, side="right")
    hi = np.arange(starts.size)
    head = tl + 1
    hx = np.zeros(head.size + 1, dtype=np.int64)
    while True:
        np.cumsum(head, out=hx[1:])
        length = inner + hx.take(hi) - hx.take(lo)
        new = tl + _varint_lengths(length)
        if np.array_equal(new, head):
            break
        head = new
    if int(length.max()) >= _U32_LIMIT:
        _fail("submessage longer than 2**32 - 1 bytes")
    heads = np.empty((starts.size, 10), dtype=np.uint8)
    heads[:, :5] = c.tagr.take(end_node, axis=0, mode="clip")
    heads[:, 5:] = _encode_varints32(length)
    return (heads, 5 - tl), head


def _gather(src: np.ndarray, seg_src: np.ndarray, seg_len: np.ndarray, total: int, out=None) -> np.ndarray:
    """Concatenate ``src[seg_src[i]:seg_src[i] + seg_len[i]]`` for all
    ``i`` (lengths > 0) into a new array of ``total`` items of ``src``'s
    dtype.

    Builds a per-item index with one ``cumsum`` (each segment's first item
    jumps, the rest step by 1), in slices of about ``_GATHER_SLICE`` items
    to bound the index's memory. Segments must lie inside ``src``.
    """
    if out is None:
        out = np.empty(total, dtype=src.dtype)
    if total == 0:
        return out
    out_end = np.cumsum(seg_len)
    lo = 0
    o = 0
    nseg = seg_len.size
    while lo < nseg:
        hi = max(int(np.searchsorted(out_end, o + _GATHER_SLICE, side="right")), lo + 1)
        s = seg_src[lo:hi]
        n = seg_len[lo:hi]
        span = int(out_end[hi - 1]) - o
        idx = np.ones(span, dtype=np.int64)
        idx[0] = s[0]
        if n.size > 1:
            idx[np.cumsum(n[:-1])] = s[1:] - s[:-1] - n[:-1] + 1
        np.cumsum(idx, out=idx)
        np.take(src, idx, out=out[o : o + span], mode="clip")
        o += span
        lo = hi
    return out


# --------------------------------------------------------------------------
# Public API


def decode_transposed_chunk(data, num_records: int, decoded_data_size: int):
    """Decode the data of a transposed chunk (type ``'t'``, or ``'m'`` with
    ``num_records`` 1) into its records.

    Args:
        data: the chunk data, bytes-like (a memoryview of an mmap works).
        num_records: records the chunk header declares.
        decoded_data_size: bytes of all records together, from the header.

    Returns:
        ``(values, offsets)``: ``values`` a bytes-like of
        ``decoded_data_size`` bytes (``bytes`` or a ``memoryview`` of a
        uint8 array) holding the records back to back; ``offsets`` int64 of
        shape ``(num_records + 1,)``, ``offsets[0] == 0``,
        ``offsets[-1] == decoded_data_size``; record ``i`` is
        ``values[offsets[i]:offsets[i + 1]]``.

    Raises:
        TransposeError: malformed data, or data that disagrees with
            ``num_records`` / ``decoded_data_size``. No more is allocated
            than a small multiple of ``decoded_data_size + num_records +
            len(data)``.
    """
    if num_records < 0 or decoded_data_size < 0:
        _fail("negative record count or size")
    p = _parse(data, num_records, decoded_data_size)
    if decoded_data_size + 16 * num_records <= _SCALAR_MAX_WORK:
        return _decode_scalar(p, num_records, decoded_data_size)
    return _decode_vector(_to_arrays(p), num_records, decoded_data_size)


def decode_records_metadata(data, decoded_data_size: int) -> bytes:
    """The serialized ``RecordsMetadata`` held by a file metadata chunk
    (type ``'m'``): its data decoded as a transposed chunk of one record.

    Raises :class:`TransposeError` as :func:`decode_transposed_chunk`.
    """
    values, offsets = decode_transposed_chunk(data, 1, decoded_data_size)
    return bytes(values)


# RecordsMetadata fields (riegeli/records/records_metadata.proto).
_METADATA_FIELDS = {
    1: "file_comment",
    2: "record_type_name",
    3: "file_descriptor",
    4: "record_writer_options",
    5: "num_records",
}


def _proto_fields(buf: bytes):
    """Top-level fields of a serialized message as ``(number, wire_type,
    value)``: ints for varint/fixed, bytes for length-delimited. Raises
    ``ValueError`` on malformed input or groups."""
    pos = 0
    n = len(buf)
    while pos < n:
        key, pos = read_varint(buf, pos)
        number, wt = key >> 3, key & 7
        if number == 0:
            raise ValueError(f"field number 0 at byte {pos}")
        if wt == 0:
            value, pos = read_varint(buf, pos)
        elif wt == 1 or wt == 5:
            size = 8 if wt == 1 else 4
            if pos + size > n:
                raise ValueError(f"truncated fixed field at byte {pos}")
            value = int.from_bytes(buf[pos : pos + size], "little")
            pos += size
        elif wt == 2:
            size, pos = read_varint(buf, pos)
            if pos + size > n:
                raise ValueError(f"truncated length-delimited field at byte {pos}")
            value = bytes(buf[pos : pos + size])
            pos += size
        else:
            raise ValueError(f"unsupported wire type {wt} at byte {pos}")
        yield number, wt, value


def parse_records_metadata(serialized) -> dict:
    """Decode the fields of a serialized ``riegeli.RecordsMetadata``.

    Returns a dict with ``file_comment``, ``record_type_name``,
    ``record_writer_options`` (``str``, empty when unset), ``num_records``
    (``int``, 0 when unset), ``file_descriptor`` (``list`` of serialized
    ``google.protobuf.FileDescriptorProto`` bytes), ``file_descriptor_names``
    (their ``name`` fields) and ``extensions`` (``list`` of ``(field_number,
    wire_type, value)`` for fields outside 1..5, e.g. extensions 1000+).

    Raises ``ValueError`` if ``serialized`` is not a valid message.
    """
    buf = bytes(serialized)
    out = {
        "file_comment": "",
        "record_type_name": "",
        "record_writer_options": "",
        "num_records": 0,
        "file_descriptor": [],
        "file_descriptor_names": [],
        "extensions": [],
    }
    try:
        for number, wt, value in _proto_fields(buf):
            name = _METADATA_FIELDS.get(number)
            if name is None:
                out["extensions"].append((number, wt, value))
            elif number == 5:
                if wt != 0:
                    raise ValueError("num_records is not a varint")
                out[name] = value - (1 << 64) if value >= 1 << 63 else value
            elif wt != 2:
                raise ValueError(f"field {number} is not length-delimited")
            elif number == 3:
                out["file_descriptor"].append(value)
                fname = ""
                for fnum, fwt, fval in _proto_fields(value):
                    if fnum == 1 and fwt == 2:
                        fname = fval.decode("utf-8", "replace")
                out["file_descriptor_names"].append(fname)
            else:
                out[name] = value.decode("utf-8", "replace")
    except VarintError as e:
        raise ValueError(f"RecordsMetadata: {e}") from None
    return out
