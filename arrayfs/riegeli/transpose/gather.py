"""Concatenating slices of one array into another, with numpy: the last
step of the vectorised decoder (fields into records) and of the visit
expansion (chains of states into the visit sequence).

Short slices go through one per-item index (each slice's first item jumps,
the rest step by 1: a ``cumsum``), long ones are copied as slices (per
item, a Python call per slice is cheaper than 16 bytes of index).
"""

from __future__ import annotations

import threading

import numpy as np

__all__ = ["gather", "gather_bytes"]

# Items of index built at a time (bounds the index's memory).
SLICE_ITEMS = 1 << 16
# Byte slices at least this long are copied one by one, this many at a time.
LONG_SEGMENT = 96
_LOOP_PIECE = 2048


def gather(src: np.ndarray, seg_src: np.ndarray, seg_len: np.ndarray, out: np.ndarray) -> None:
    """``out[:] = concatenate([src[s:s + n] for s, n in zip(seg_src,
    seg_len)])``. Every length must be > 0 and every slice inside ``src``
    (the caller checks); ``seg_len.sum() == out.size``. Index arrays are
    int64; the index is built a slice of about ``SLICE_ITEMS`` items at a
    time."""
    total = out.size
    if total == 0:
        return
    nseg = seg_len.size
    if total <= SLICE_ITEMS:
        _gather_part(src, seg_src, seg_len, out)
        return
    out_end = np.cumsum(seg_len)
    lo = 0
    o = 0
    while lo < nseg:
        hi = max(int(np.searchsorted(out_end, o + SLICE_ITEMS, side="right")), lo + 1)
        span = int(out_end[hi - 1]) - o
        _gather_part(src, seg_src[lo:hi], seg_len[lo:hi], out[o : o + span])
        o += span
        lo = hi


_scratch = threading.local()


def _index_scratch(size: int) -> np.ndarray:
    buf = getattr(_scratch, "idx", None)
    if buf is None or buf.size < size:
        buf = _scratch.idx = np.empty(max(size, SLICE_ITEMS), dtype=np.int64)
    return buf[:size]


def _gather_part(src, s, n, out) -> None:
    idx = _index_scratch(out.size)
    idx.fill(1)
    idx[0] = s[0]
    if n.size > 1:
        jumps = s[1:] - s[:-1]
        jumps -= n[:-1]
        jumps += 1
        idx[np.cumsum(n[:-1])] = jumps
    np.cumsum(idx, out=idx)
    np.take(src, idx, out=out, mode="clip")


def gather_bytes(src: np.ndarray, seg_src: np.ndarray, seg_len: np.ndarray, out: np.ndarray) -> None:
    """:func:`gather` for uint8 arrays, where slices may be empty; slices of
    ``LONG_SEGMENT`` bytes or more are copied one by one."""
    nz = np.flatnonzero(seg_len != 0)
    n = seg_len.take(nz)
    s = seg_src.take(nz)
    if n.size == 0 or int(n.max()) < LONG_SEGMENT:
        gather(src, s, n, out)
        return
    seg_src, seg_len = s, n
    longs = seg_len >= LONG_SEGMENT
    # Short slices into one run, then the output is the short runs between
    # long slices, each copied whole.
    short = ~longs
    nz = np.flatnonzero(short)
    n_short = seg_len.take(nz)
    tmp = np.empty(int(n_short.sum()), dtype=np.uint8)
    gather(src, seg_src.take(nz), n_short, tmp)
    li = np.flatnonzero(longs)
    # Bytes of short slices before each long one, in the run and in out.
    short_cum = np.cumsum(np.where(short, seg_len, 0))
    before = short_cum.take(li)
    ends = np.cumsum(seg_len)
    out_at = ends.take(li) - seg_len.take(li)
    long_src = seg_src.take(li)
    long_len = seg_len.take(li)
    mo, ms, mt = memoryview(out), memoryview(src), memoryview(tmp)
    t = 0
    # A piece of the slices at a time: Python lists of their numbers take
    # about 40 bytes an item.
    for a in range(0, li.size, _LOOP_PIECE):
        z = slice(a, a + _LOOP_PIECE)
        for o, b, s, n in zip(out_at[z].tolist(), before[z].tolist(), long_src[z].tolist(), long_len[z].tolist()):
            run = b - t
            if run:
                mo[o - run : o] = mt[t:b]
                t = b
            mo[o : o + n] = ms[s : s + n]
    if t < tmp.size:
        mo[out.size - (tmp.size - t) :] = mt[t:]
