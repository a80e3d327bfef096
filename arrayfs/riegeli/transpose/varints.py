"""Varints as the transposed decoder reads them: one at a time with the
position in the error (header fields, the interpreter), and whole streams
at once with numpy (lists in the header, non-proto record lengths, the
lengths of submessages).

Upstream: riegeli ``varint/varint_reading.h`` (``ReadVarint32``,
``ReadVarint64``: at most 5 and 10 bytes).
"""

from __future__ import annotations

import numpy as np

from ..varint import VarintError, read_varint
from .errors import fail

__all__ = [
    "U32_LIMIT",
    "read_varint32",
    "read_varint64",
    "read_varint_list",
    "varint_array",
    "varint_lengths",
    "encode_varints32",
]

U32_LIMIT = 1 << 32


def read_varint32(buf, pos: int, what: str, where: str) -> tuple[int, int]:
    """One varint32 of ``buf`` at ``pos`` as riegeli's ``ReadVarint32``
    accepts it: at most 5 bytes and a value below 2**32. Returns ``(value,
    next_pos)``; raises ``TransposeError`` naming ``what`` and ``where``."""
    if pos < len(buf):
        b = buf[pos]
        if b < 0x80:  # the common one-byte case, before any call
            return b, pos + 1
    # Decoded from a 5-byte window: a longer varint does not terminate in it.
    window = buf[pos : pos + 5]
    try:
        result, n = read_varint(window, 0)
    except VarintError:
        if len(window) < 5:
            fail(f"{what}: truncated varint at {where} byte {pos}")
        fail(f"{what}: varint32 at {where} byte {pos} is longer than 5 bytes")
    if result >= U32_LIMIT:
        fail(f"{what}: varint32 at {where} byte {pos} overflows 32 bits")
    return result, pos + n


def read_varint64(buf, pos: int, what: str, where: str) -> tuple[int, int]:
    """One varint64 (at most 10 bytes); like :func:`read_varint32`."""
    try:
        return read_varint(buf, pos)
    except VarintError as e:
        fail(f"{what}: {e} of {where}")


def varint_array(a: np.ndarray, pos: int, count: int, max_len: int, what: str, where: str):
    """``count`` varints from uint8 array ``a`` at ``pos``, vectorised.

    Returns ``(values, next_pos)``: ``values`` int64 of shape ``(count,)``.
    ``max_len`` is 5 (varint32: value < 2**32) or 10 (varint64; values at
    or above 2**63 are rejected too, as no size or count can be that big).
    Reads at most ``count * max_len`` bytes of ``a``.
    """
    if count == 0:
        return np.zeros(0, dtype=np.int64), pos
    if count > a.size - pos:
        fail(f"{what}: {count} varints cannot fit in the {a.size - pos} bytes left at {where} byte {pos}")
    window = a[pos : pos + count * max_len]
    head = window[:count]
    if int(head.max()) < 0x80:  # all one-byte varints: the common case
        return head.astype(np.int64), pos + count
    ends = np.flatnonzero(window < 0x80)
    if ends.size < count:
        fail(f"{what}: truncated varint at {where} byte {pos + (int(ends[-1]) + 1 if ends.size else 0)}")
    ends = ends[:count]
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    lengths = ends - starts + 1
    longest = int(lengths.max())
    if longest > max_len:
        bad = int(starts[np.argmax(lengths > max_len)])
        fail(f"{what}: varint at {where} byte {pos + bad} is longer than {max_len} bytes")
    used = window[: int(ends[-1]) + 1]
    low = (used & 0x7F).astype(np.uint64)
    # Each byte's shift is 7 times its place in its varint: a running count
    # that restarts at every varint's first byte.
    step = np.ones(used.size, dtype=np.int64)
    step[starts[1:]] = 1 - lengths[:-1]
    step[0] = 0
    shift = np.cumsum(step)
    shift *= 7
    if max_len == 10:
        # The 10th byte holds bit 63 only; more would overflow, and bit 63
        # itself is no valid size.
        if longest == 10 and int(used[ends[lengths == 10]].max()) > 0:
            fail(f"{what}: varint at {where} byte {pos} group is too large")
    values = np.add.reduceat(low << shift.astype(np.uint64), starts)
    if max_len == 5 and int(values.max()) >= U32_LIMIT:
        fail(f"{what}: varint32 at {where} byte {pos} group overflows 32 bits")
    return values.astype(np.int64), pos + int(ends[-1]) + 1


def varint_lengths(v: np.ndarray) -> np.ndarray:
    """Encoded length (1..5) of each value of int64 ``v`` (values below
    2**32); int64."""
    n = np.ones(v.shape, dtype=np.int64)
    if v.size:
        top = int(v.max())
        for k in (7, 14, 21, 28):
            if top < 1 << k:
                break
            n += v >= (1 << k)
    return n


def encode_varints32(v: np.ndarray) -> np.ndarray:
    """Encodings of int64 values below 2**32 as a ``(len(v), 5)`` uint8
    array; row ``i`` holds ``varint_lengths(v)[i]`` meaningful bytes (the
    rest is undefined)."""
    out = np.empty((v.size, 5), dtype=np.uint8)
    rest = v.copy()
    for j in range(5):
        low = rest & 0x7F
        rest >>= 7
        more = rest != 0
        low |= more.view(np.uint8) << 7
        out[:, j] = low
        if not more.any():
            break
    return out


def read_varint_list(h: bytes, hnp: np.ndarray, pos: int, count: int, max_len: int, what: str, where: str):
    """``count`` varints of a header list at ``pos`` as a Python list:
    bytes as they are when all are below 128, else one at a time (few) or
    with numpy (many). Returns ``(values, next_pos)``."""
    if count > len(h) - pos:
        fail(f"{what}: {count} varints cannot fit in the {len(h) - pos} bytes left at {where} byte {pos}")
    span = h[pos : pos + count]
    if not span or max(span) < 0x80:
        return list(span), pos + count
    if count > 16:
        values, pos = varint_array(hnp, pos, count, max_len, what, where)
        return values.tolist(), pos
    read = read_varint32 if max_len == 5 else read_varint64
    out = []
    for _ in range(count):
        v, pos = read(h, pos, what, where)
        out.append(v)
    return out, pos
