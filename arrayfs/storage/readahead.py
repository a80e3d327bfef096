"""Read-ahead for object stores: byte ranges fetched before the reads that
will want them, within one process-wide budget of bytes.

A scan over a bucket is bound by latency unless the next chunks are already
on their way: :meth:`.base.ByteSource.prefetch` names the ranges a caller
will read, in order. Each becomes a *piece* (ranges over
:data:`PIECE_BYTES` are split), started as long as the pieces started and
not yet read add up to at most :func:`budget` bytes (default 64 MiB,
``ARRAYFS_READAHEAD_BYTES``); the rest wait in one FIFO across all files, so
shards prefetched in order are fetched in order. A read covered by pieces
is served from them (waiting for those still in flight), and a piece is
dropped once reads have taken as many bytes as were asked of it, or when its :class:`Prefetch` handle is
closed or collected. Memory stays at the budget, however long the scan.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections import deque

__all__ = ["Prefetch", "budget", "set_budget", "PIECE_BYTES", "in_use"]

#: Largest piece: a longer range is fetched as several concurrent requests.
PIECE_BYTES = 8 << 20

_lock = threading.Lock()
_budget = int(os.environ.get("ARRAYFS_READAHEAD_BYTES", str(64 << 20)) or (64 << 20))
_in_use = 0  # bytes of started, unread pieces
_waiting: deque = deque()  # pieces not started yet, in prefetch order


def budget() -> int:
    """Bytes of read-ahead (started and not yet read) a process holds at most."""
    return _budget


def set_budget(nbytes: int) -> None:
    """Set :func:`budget` (bytes, ``>= 0``; 0 turns read-ahead off)."""
    global _budget
    if int(nbytes) < 0:
        raise ValueError(f"read-ahead budget must be >= 0 bytes, got {nbytes}")
    _budget = int(nbytes)


def in_use() -> int:
    """Bytes of read-ahead started and not yet read, now (for tests)."""
    return _in_use


class _Piece:
    __slots__ = ("source", "a", "b", "future", "need", "dead", "auto")

    def __init__(self, source, a, b, need=None):
        self.source, self.a, self.b = source, a, b
        self.future = None
        self.need = b - a if need is None else need  # bytes reads must take before it is dropped
        self.dead = False
        self.auto = False  # started by a source's own sequential read-ahead


def _start(piece) -> None:
    """Start ``piece`` (call with ``_lock`` held)."""
    global _in_use
    _in_use += piece.b - piece.a
    piece.future = piece.source._start_fetch(piece.a, piece.b)


def _pump() -> None:
    """Start waiting pieces while the budget allows (``_lock`` held)."""
    while _waiting:
        p = _waiting[0]
        if p.dead:
            _waiting.popleft()
            continue
        if _in_use and _in_use + (p.b - p.a) > _budget:
            return
        if not _budget:
            return
        _waiting.popleft()
        _start(p)


def _drop(pieces) -> None:
    """Forget ``pieces``: cancel what is in flight, free the budget."""
    global _in_use
    with _lock:
        for p in pieces:
            if p.dead:
                continue
            p.dead = True
            if p.future is not None:
                _in_use -= p.b - p.a
                p.future.cancel()
            p.source._forget(p)
        _pump()


class Prefetch:
    """The handle of one :meth:`.base.ByteSource.prefetch` call: its pieces
    live until read, :meth:`close`, or until the handle is collected."""

    def __init__(self, source=None, ranges=(), needs=None):
        self._pieces = []
        if source is None or not _budget:
            return
        for j, (a, b) in enumerate(ranges):
            a, b = int(a), int(b)
            if needs is not None and b - a <= PIECE_BYTES:
                self._pieces.append(_Piece(source, a, b, needs[j]))
                continue
            while b > a:
                e = min(b, a + PIECE_BYTES)
                self._pieces.append(_Piece(source, a, e))
                a = e
        if not self._pieces:
            return
        source._adopt(self._pieces)
        with _lock:
            _waiting.extend(self._pieces)
            _pump()
        weakref.finalize(self, _drop, self._pieces)

    @property
    def nbytes(self) -> int:
        """Bytes this handle prefetches (started or waiting, not yet read)."""
        return sum(p.b - p.a for p in self._pieces if not p.dead)

    def close(self) -> None:
        """Drop the pieces not read yet."""
        _drop(self._pieces)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def serve(pieces, a: int, b: int):
    """``(bytes [a, b), the pieces that held them)`` from ``pieces`` (a
    source's live pieces) when they cover it, else ``None``. Waits for pieces in flight; starts waiting ones
    (the reader needs them now); drops pieces read to their end. Raises what
    their requests raised."""
    cover = []
    pos = a
    for p in sorted((p for p in pieces if not p.dead and p.a < b and p.b > a), key=lambda p: p.a):
        if p.a > pos:
            return None
        if p.b > pos:
            cover.append(p)
            pos = p.b
        if pos >= b:
            break
    if pos < b or not cover:
        return None
    with _lock:
        for p in cover:
            if p.future is None and not p.dead:
                try:
                    _waiting.remove(p)
                except ValueError:
                    pass
                _start(p)
    try:
        parts = []
        for p in cover:
            data = p.future.result()
            lo, hi = max(a, p.a) - p.a, min(b, p.b) - p.a
            parts.append(data if (lo, hi) == (0, len(data)) else memoryview(data)[lo:hi])
    except BaseException:
        _drop(cover)
        raise
    done = []
    with _lock:
        for p in cover:
            p.need -= min(b, p.b) - max(a, p.a)
            if p.need <= 0:
                done.append(p)
    if done:
        _drop(done)
    if len(parts) == 1:
        return (parts[0] if isinstance(parts[0], bytes) else bytes(parts[0])), cover
    return b"".join(parts), cover
