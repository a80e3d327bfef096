"""Base-128 varints (protocol buffer wire format, as Riegeli uses them).

Riegeli stores record sizes, section sizes and decompressed-size prefixes as
varint64: 7 bits per byte, least significant group first, high bit set on
every byte but the last, at most 10 bytes.
"""

from __future__ import annotations

import numpy as np

__all__ = ["MAX_VARINT64_LEN", "VarintError", "read_varint", "encode_varint", "encode_varints", "decode_varints"]

MAX_VARINT64_LEN = 10
_U64_MAX = (1 << 64) - 1


class VarintError(ValueError):
    """A varint is truncated, longer than 10 bytes, or overflows 64 bits.

    The message gives the byte position within the buffer being parsed;
    callers add the file and chunk.
    """


def read_varint(buf, pos: int) -> tuple[int, int]:
    """Read one varint64 from ``buf`` (bytes-like) at byte ``pos``.

    Returns ``(value, next_pos)``. Raises :class:`VarintError` when the buffer
    ends inside the varint or the varint exceeds 64 bits.
    """
    b = buf[pos] if pos < len(buf) else None
    if b is not None and b < 0x80:  # the common one-byte case, kept branch-light
        return b, pos + 1
    result = 0
    shift = 0
    start = pos
    end = len(buf)
    while True:
        if pos >= end:
            raise VarintError(f"truncated varint at byte {start}")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            break
        shift += 7
        if shift >= 70:
            raise VarintError(f"varint at byte {start} is longer than 10 bytes")
    if result > _U64_MAX:
        raise VarintError(f"varint at byte {start} overflows 64 bits")
    return result, pos


def _encode_slow(value: int) -> bytes:
    if value < 0:
        raise ValueError(f"varint value must be non-negative, got {value}")
    if value > _U64_MAX:
        raise ValueError(f"varint value {value} exceeds 64 bits")
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# Writers encode several varints per record (sizes, size prefixes); values
# below 2**14 (one or two bytes) come from a table.
_TABLE = [_encode_slow(v) for v in range(1 << 14)]


def encode_varint(value: int) -> bytes:
    """Encode a non-negative integer below 2**64 as a varint64."""
    if 0 <= value < 16384:
        return _TABLE[value]
    return _encode_slow(value)


def encode_varints(values) -> bytes:
    """Encode a sequence of non-negative integers as concatenated varint64s.

    Vectorised with numpy: ``values`` is anything ``np.asarray`` turns into
    non-negative integers below 2**63 (record sizes in practice).
    """
    v = np.asarray(values, dtype=np.uint64).ravel()
    if v.size == 0:
        return b""
    if int(v.max()) < 0x80:
        return v.astype(np.uint8).tobytes()
    # Number of 7-bit groups per value: one, plus one per threshold passed.
    ngroups = np.ones(v.shape, dtype=np.int64)
    for k in range(1, MAX_VARINT64_LEN):
        ngroups += v >= np.uint64(1 << (7 * k))
    ends = np.cumsum(ngroups)
    starts = ends - ngroups
    total = int(ends[-1])
    out = np.empty(total, dtype=np.uint8)
    # Byte k of each value: (v >> 7k) & 0x7f, plus continuation bit if not last.
    owner = np.repeat(np.arange(v.size), ngroups)
    k = np.arange(total) - np.repeat(starts, ngroups)
    groups = (v[owner] >> (7 * k).astype(np.uint64)) & np.uint64(0x7F)
    cont = k < (ngroups[owner] - 1)
    out[:] = groups.astype(np.uint8) | (cont.astype(np.uint8) << 7)
    return out.tobytes()


def decode_varints(buf, count: int) -> np.ndarray:
    """Decode exactly ``count`` concatenated varint64s filling all of ``buf``.

    Vectorised with numpy (no per-value Python loop). Returns a ``uint64``
    array of shape ``(count,)``. Raises :class:`VarintError` if ``buf`` does
    not hold exactly ``count`` well-formed varints.
    """
    a = np.frombuffer(buf, dtype=np.uint8)
    if count == 0:
        if a.size:
            raise VarintError(f"expected no varints, found {a.size} bytes")
        return np.zeros(0, dtype=np.uint64)
    if a.size == count:
        # All single-byte varints (every size < 128): the common case.
        if int(a.max()) >= 0x80:
            raise VarintError(f"expected {count} varints in {a.size} bytes")
        return a.astype(np.uint64)
    width, rem = divmod(a.size, count)
    if not rem and 1 < width < MAX_VARINT64_LEN:
        # Every varint of one width (records of one size class, as often):
        # a (count, width) matrix, no per-byte index arrays.
        m = a.reshape(count, width)
        if int(m[:, :-1].min()) >= 0x80 and int(m[:, -1].max()) < 0x80:
            values = m[:, -1].astype(np.uint64) << np.uint64(7 * (width - 1))
            for i in range(width - 1):
                values |= (m[:, i] & 0x7F).astype(np.uint64) << np.uint64(7 * i)
            return values
    ends = np.flatnonzero(a < 0x80)
    if ends.size != count or (ends.size and ends[-1] != a.size - 1):
        raise VarintError(
            f"expected {count} varints in {a.size} bytes, found {ends.size} terminated ones"
        )
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    lengths = ends - starts + 1
    longest = int(lengths.max())
    if longest > MAX_VARINT64_LEN:
        raise VarintError("varint longer than 10 bytes")
    if longest == MAX_VARINT64_LEN and (a[ends[lengths == MAX_VARINT64_LEN]] > 1).any():
        # The 10th byte holds bit 63 only; more would wrap silently below.
        raise VarintError("varint overflows 64 bits")
    low = (a & 0x7F).astype(np.uint64)
    pos_in_varint = np.arange(a.size) - np.repeat(starts, lengths)
    shifted = low << (7 * pos_in_varint).astype(np.uint64)
    values = np.add.reduceat(shifted, starts)
    return values.astype(np.uint64)
