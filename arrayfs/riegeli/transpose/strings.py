"""Entries of string buffers: each a varint32 length and that many bytes,
read front to back (upstream: ``transpose_decoder.cc``, the
length-delimited case of ``Decode``).

An entry's end depends on its own first bytes, so finding entries is a
walk, not a numpy pass. The walk runs in C: ``list.extend`` over
``accumulate`` over a ``map`` that reads the list being extended, each
step adding ``step[position]``, the size of the entry there (from a byte
table while lengths take one byte, then from a uint16 table computed with
numpy for lengths of one and two bytes; 0 for longer ones, which stops the
walk in place: they are read in Python and the walk resumes after them).

riegeli writes the string buffers of a chunk next to each other, so one
walk over them finds every entry of every string buffer
(:class:`StringEntries`); a block then takes its fields' sizes with numpy.
Buffers whose bytes are not a sequence of whole entries are walked field
by field instead (:meth:`StringEntries.sizes`), which says what is wrong.
"""

from __future__ import annotations

import array
import bisect
import itertools

import numpy as np

from .errors import TransposeError, fail
from .varints import read_varint32

__all__ = ["StringEntries"]

# Bytes of a table built at a time, and bytes of the window a table covers.
_PIECE = 1 << 20
_WINDOW = 1 << 20
# Entries walked in one C call at most.
_MAX_WALK = 8192
# Past the end of a run the table holds zeros (the walk stops there); an
# entry of a two-byte length reaches at most this far.
_TAIL = 2 + (1 << 14)


def _byte_table(a: np.ndarray) -> bytearray:
    """Size of the entry starting at each byte of ``a`` (uint8) when its
    length takes one byte (``a + 1`` below 128), else 0; then 129 zeros.
    Built in place, a piece at a time (no temporary as large as ``a``)."""
    n = a.size
    table = bytearray(n + 129)
    t = np.frombuffer(table, dtype=np.uint8)
    for i in range(0, n, _PIECE):
        x = a[i : i + _PIECE]
        o = t[i : i + x.size]
        np.right_shift(x, 7, out=o)
        o -= 1  # 255 below 128, 0 from 128
        o &= x + 1
    return table


def _wide_table(a: np.ndarray) -> array.array:
    """Size of the entry starting at each byte of ``a`` (uint8) when its
    length takes one or two bytes, else 0; then ``_TAIL`` zeros. An
    ``array`` of uint16 (its items read fast from Python), built in place
    a piece at a time."""
    n = a.size
    table = array.array("H", [0]) * (n + _TAIL)
    t = np.frombuffer(table, dtype=np.uint16)
    for i in range(0, n, _PIECE):
        x = a[i : i + _PIECE]
        o = t[i : i + x.size]
        np.add(x, 1, out=o, dtype=np.uint16)
        long = np.flatnonzero(x >= 0x80)
        if long.size:
            at = long + i  # in a
            nxt = np.zeros(long.size, dtype=np.uint16)
            ok = at + 1 < n
            nxt[ok] = a.take(at[ok] + 1)
            size = x.take(long).astype(np.uint16) & 0x7F
            size |= nxt << 7
            size += 2
            size[~ok | (nxt >= 0x80)] = 0
            o[long] = size
    return table


class StringEntries:
    """Where the entries of a chunk's string buffers start.

    ``src`` (uint8 array) holds the buffers; ``ranges`` the ``(start,
    end)`` of each string buffer, by buffer number in ``buffers``.
    ``regular[b]`` says whether buffer ``b``'s bytes are whole entries, and
    then its entries start at ``pos[first[b]:last[b]]`` (``pos[last[b]]``
    is its end).
    """

    def __init__(self, src: np.ndarray, buffers: list, bstart: np.ndarray, bend: np.ndarray):
        # Varints are read one at a time from a memoryview (items are
        # Python ints; numpy's uint8 scalars would wrap around).
        self.src = memoryview(src)
        nb = bstart.size
        self.regular = np.zeros(nb, dtype=bool)
        self.first = np.zeros(nb, dtype=np.int64)
        self.last = np.zeros(nb, dtype=np.int64)
        bufs = sorted(buffers, key=lambda b: (int(bstart[b]), int(bend[b])))
        parts = []
        npos = 0
        i = 0
        while i < len(bufs):
            # A run of adjacent buffers, walked as one.
            j = i + 1
            while j < len(bufs) and bstart[bufs[j]] == bend[bufs[j - 1]]:
                j += 1
            run = bufs[i:j]
            lo, hi = int(bstart[run[0]]), int(bend[run[-1]])
            pos = _walk(src, self.src, lo, hi)
            parts.append(pos)
            rs = np.array([bstart[b] for b in run], dtype=np.int64)
            re_ = np.array([bend[b] for b in run], dtype=np.int64)
            f = np.searchsorted(pos, rs)
            e = np.searchsorted(pos, re_)
            ok = (f < pos.size) & (e < pos.size)
            ok[ok] = (pos[f[ok]] == rs[ok]) & (pos[e[ok]] == re_[ok])
            run_a = np.array(run, dtype=np.int64)
            self.regular[run_a] = ok
            self.first[run_a] = f + npos
            self.last[run_a] = e + npos
            npos += pos.size
            i = j
        self.pos = np.concatenate(parts) if len(parts) > 1 else parts[0]
        self.consumed = np.zeros(nb, dtype=np.int64)

    def take(self, buffers: np.ndarray, counts: np.ndarray, bsorted: np.ndarray, slots: np.ndarray) -> np.ndarray:
        """Sizes of the next fields of regular ``buffers`` (``counts`` of
        each). ``slots`` are the fields' places in a list sorted by buffer
        (``bsorted`` their buffers), each buffer's fields consecutive and in
        order; returns their sizes, int64 in the order of ``slots``."""
        first_slot = np.searchsorted(bsorted, buffers)  # where each buffer's group begins
        base = np.zeros(self.first.size, dtype=np.int64)
        base[buffers] = self.first.take(buffers) + self.consumed.take(buffers) - first_slot
        e = slots + base.take(bsorted.take(slots))
        after = self.consumed.take(buffers) + counts
        over = self.first.take(buffers) + after > self.last.take(buffers)
        if over.any():
            b = int(buffers[np.argmax(over)])
            have = int(self.last[b] - self.first[b])
            fail(f"buffer {b} ends before string {have} of the {int(after[np.argmax(over)])} its states read")
        self.consumed[buffers] = after
        pos = self.pos
        return pos.take(e + 1) - pos.take(e)

    def sizes(self, b: int, start: int, end: int, count: int) -> np.ndarray:
        """Sizes (varint length + payload) of the ``count`` entries of
        buffer ``b`` from ``start`` (``src[start:end]`` unread), walked
        field by field; int64 of shape ``(count,)``. Raises
        ``TransposeError`` when the buffer ends first."""
        src = self.src
        out = np.empty(count, dtype=np.int64)
        pos = start
        for i in range(count):
            if pos >= end:
                fail(f"buffer {b} ends before string {i} of the {count} its states read")
            length, q = read_varint32(src, pos, f"string length in buffer {b}", "buffer")
            q += length
            if q > end:
                fail(f"string of {length} bytes overruns buffer {b}")
            out[i] = q - pos
            pos = q
        return out


def _walk(src: np.ndarray, view: memoryview, lo: int, hi: int) -> np.ndarray:
    """Start of every entry from ``lo`` while below ``hi``, then the first
    position at or past ``hi`` (or where an entry cannot be read); int32
    when positions fit, else int64.

    Walks with a byte table (one-byte lengths) until the first longer
    length, then with the uint16 table (an ``array``: a ``memoryview``'s
    items are slow to read), and reads longer ones in Python. Tables cover
    a window of ``_WINDOW`` bytes at a time (past it they hold zeros, which
    stop the walk), so their memory does not grow with the chunk.
    """
    L = hi - lo
    a = src[lo:hi]
    dtype = np.int32 if hi < 1 << 31 else np.int64
    wide = False
    parts = []
    done = 0
    p = 0
    w0 = w1 = 0  # the window the table covers
    get = None
    est = min(_MAX_WALK, L // 16 + 16)
    while True:
        if not w0 <= p < w1:
            w0, w1 = p, min(L, p + _WINDOW)
            get = None  # the old table goes before the new one comes
            get = (_wide_table if wide else _byte_table)(a[w0:w1]).__getitem__
        walk = []
        walk.extend(itertools.islice(itertools.accumulate(map(get, walk), initial=p - w0), min(est, w1 - p) + 1))
        # Entries at or past the window's end are not from this table (the
        # walk goes on in its zero tail until the count runs out).
        stop = bisect.bisect_left(walk, w1 - w0)
        arr = np.array(walk[: stop + 1] if stop < len(walk) else walk, dtype=np.int64)
        arr += w0
        stop = arr.size - 1
        d = np.diff(arr)
        stuck = np.flatnonzero(d == 0)
        if stuck.size:
            stop = int(stuck[0])
        parts.append(arr[:stop].astype(dtype))
        done += stop
        p = int(arr[stop])
        if p >= L:
            break
        if p >= w1:
            continue  # next window
        if not stuck.size:
            # Walked the count without reaching the end: guess how many are
            # left from their mean size so far (a guess too high costs a
            # step per entry it is over).
            est = max(16, min(_MAX_WALK, int((w1 - p) * done / max(p, 1)) + 16))
            continue
        if not wide:
            wide = True
            w1 = 0
            continue
        # An entry whose length takes 3 or more bytes (or is no varint).
        try:
            length, q = read_varint32(view, lo + p, "string length", "buffer")
        except TransposeError:
            break
        parts.append(np.array([p], dtype=dtype))
        done += 1
        p = q - lo + length
        if p >= L:
            break
    parts.append(np.array([min(p, L + _TAIL)], dtype=dtype))
    pos = np.concatenate(parts) if len(parts) > 1 else parts[0]
    pos += lo
    return pos
