"""Entries of string buffers: each a varint32 length and that many bytes,
read front to back (upstream: ``transpose_decoder.cc``, the
length-delimited case of ``Decode``).

An entry's end depends on its own first byte, so finding the ``k``-th
entry is a walk, not a numpy pass. The walk runs in C for one-byte
lengths (values below 128, nearly all in practice): ``list.extend`` over
``accumulate`` over a ``map`` that reads the list being extended, each
step adding ``STEP[byte]`` (the entry's size, or 0 for a longer length,
which stops the walk in place). A longer length is read in Python and the
walk resumes after it.
"""

from __future__ import annotations

import itertools

import numpy as np

from .errors import fail
from .varints import read_varint32

__all__ = ["StringWalker"]

# Step from an entry's first byte to the next entry: v < 128 is a one-byte
# length (advance 1 + v); anything else stops the walk (0).
_STEP = bytes(range(1, 129)) + bytes(128)


class StringWalker:
    """Walks the entries of the string buffers of one chunk.

    ``src`` holds the buffers; ``ranges`` the ``(start, end)`` of each
    string buffer in it. The step table covers the span of all of them
    (one byte per byte: riegeli writes string buffers next to each other).
    """

    def __init__(self, src, ranges):
        self.lo = lo = min(a for a, _ in ranges)
        hi = max(b for _, b in ranges)
        self.src = src
        self.step = bytes(memoryview(src)[lo:hi]).translate(_STEP) + bytes(129)

    def sizes(self, b: int, start: int, end: int, count: int) -> np.ndarray:
        """Sizes (varint length + payload) of the ``count`` entries of
        buffer ``b`` (``src[start:end]`` unread) from ``start``; int64 of
        shape ``(count,)``. Raises ``TransposeError`` when the buffer ends
        first."""
        lo = self.lo
        get = self.step.__getitem__
        parts = []
        pos = start - lo
        stop = end - lo
        got = 0
        while got < count:
            k = count - got
            walk = []
            walk.extend(itertools.islice(itertools.accumulate(map(get, walk), initial=pos), k + 1))
            arr = np.array(walk, dtype=np.int64)
            d = np.diff(arr)
            stuck = np.flatnonzero(d == 0)
            good = int(stuck[0]) if stuck.size else k
            if good:
                parts.append(d[:good])
            got += good
            pos = int(arr[good])
            if pos > stop:
                break
            if got == count:
                break
            if pos >= stop:
                fail(f"buffer {b} ends before string {got} of the {count} its states read")
            length, q = read_varint32(self.src, pos + lo, f"string length in buffer {b}", "buffer")
            q += length - lo
            if q > stop:
                fail(f"string of {length} bytes overruns buffer {b}")
            parts.append(np.array([q - pos], dtype=np.int64))
            pos = q
            got += 1
        if pos > stop:
            fail(f"strings overrun buffer {b}")
        return parts[0] if len(parts) == 1 else np.concatenate(parts)
