"""Read-ahead for object stores: byte ranges fetched before the reads that
will want them, within one process-wide budget of bytes.

A scan over a bucket is bound by latency unless the next chunks are already
on their way: :meth:`.base.ByteSource.prefetch` names the ranges a caller
will read, in order. Each becomes a *piece* (ranges over
:data:`PIECE_BYTES` are split), started as long as the pieces held add up
to at most :func:`budget` bytes (default 64 MiB,
``ARRAYFS_READAHEAD_BYTES``); the rest wait in one FIFO across all files, so
shards prefetched in order are fetched in order. A read covered by pieces
is served from them (waiting for those still in flight).

Once reads have taken as many bytes as were asked of a piece it is *spent*:
it stays readable (a caller that reads a chunk twice, for instance to name
an error or to take a slower path, makes no second request) until its room
is wanted by a waiting piece, oldest spent first, or its
:class:`Prefetch` handle is closed or collected. The newest spent pieces,
up to an eighth of the budget, are kept even then. Memory stays within the
budget, however long the scan.

Pieces are started in groups, one hand-over to the event loop per group
(not per request), and a piece given up before its turn for a connection
makes no request.
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from collections import OrderedDict, deque
from concurrent.futures import CancelledError, Future

__all__ = ["Prefetch", "budget", "set_budget", "PIECE_BYTES", "piece_bytes", "in_use", "in_flight", "drop"]

#: Largest piece: a longer range is fetched as several concurrent requests.
PIECE_BYTES = 8 << 20

_WAITING, _STARTED, _SPENT, _DEAD = 0, 1, 2, 3

_lock = threading.Lock()
_budget = int(os.environ.get("ARRAYFS_READAHEAD_BYTES", str(64 << 20)) or (64 << 20))
_in_use = 0  # bytes of pieces started and not dropped (in flight, unread or spent)
_flight = 0  # bytes of pieces whose requests have not ended
_window = PIECE_BYTES  # bytes allowed in flight now (slow start, see _pump)
_spent_bytes = 0
_spent: OrderedDict = OrderedDict()  # spent pieces, least recently read first
_waiting: deque = deque()  # pieces not started yet, in prefetch order


def _after_fork() -> None:
    # A forked child has none of its parent's requests in flight (the event
    # loop's thread stayed in the parent): it starts with nothing held.
    global _lock, _flush_lock, _in_use, _spent_bytes, _spent, _waiting, _flight, _window
    _lock = threading.Lock()
    _flush_lock = threading.Lock()
    _queued.clear()
    _in_use = _spent_bytes = _flight = 0
    _window = PIECE_BYTES
    _spent = OrderedDict()
    _waiting = deque()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def budget() -> int:
    """Bytes of read-ahead a process holds at most."""
    return _budget


def set_budget(nbytes: int) -> None:
    """Set :func:`budget` (bytes, ``>= 0``; 0 turns read-ahead off)."""
    global _budget
    if int(nbytes) < 0:
        raise ValueError(f"read-ahead budget must be >= 0 bytes, got {nbytes}")
    _budget = int(nbytes)


def in_use() -> int:
    """Bytes of read-ahead held now: started (in flight or not yet read)
    and spent (read, kept until their room is wanted). For tests."""
    return _in_use


def piece_bytes() -> int:
    """Largest piece now: :data:`PIECE_BYTES`, or an eighth of a smaller
    budget (at least 64 KiB), so that the pieces readers wait for keep
    memory near the budget."""
    return max(64 << 10, min(PIECE_BYTES, _budget >> 3))


def in_flight() -> int:
    """Bytes of read-ahead requests started and not ended, now (for tests)."""
    return _flight


class _Piece:
    __slots__ = ("source", "a", "b", "future", "need", "state", "auto", "__weakref__")

    def __init__(self, source, a, b, need=None):
        self.source, self.a, self.b = source, a, b
        self.future = None
        self.need = b - a if need is None else need  # bytes reads must take before it is spent
        self.state = _WAITING
        self.auto = False  # started by a source's own sequential read-ahead

    @property
    def live(self) -> bool:
        """Still holds (or will hold) its bytes: not dropped."""
        return self.state != _DEAD


def _start(piece, go: list) -> None:
    """Mark ``piece`` started and add it to ``go`` for :func:`_launch`
    (``_lock`` held)."""
    global _in_use, _flight
    _in_use += piece.b - piece.a
    _flight += piece.b - piece.a
    piece.state = _STARTED
    piece.future = Future()
    go.append((piece.source, piece.a, piece.b, piece.future))


def _release(p) -> None:
    """Forget piece ``p``: free its room, cancel it if not done (``_lock`` held)."""
    global _in_use, _spent_bytes
    if p.state == _DEAD:
        return
    if p.state == _SPENT:
        _spent_bytes -= p.b - p.a
        _spent.pop(p, None)
    if p.state in (_STARTED, _SPENT):
        _in_use -= p.b - p.a
        p.future.cancel()
    p.state = _DEAD
    p.future = None  # the bytes go with the last reader that holds them
    p.source.forget_piece(p)


def _make_room(nbytes: int) -> None:
    """Drop spent pieces, least recently read first, while ``nbytes`` more
    would exceed the budget, keeping the newest up to an eighth of it
    (``_lock`` held)."""
    reserve = _budget >> 3
    while _in_use and _in_use + nbytes > _budget and _spent and _spent_bytes > reserve:
        _release(next(iter(_spent)))


def _pump(go: list) -> None:
    """Start waiting pieces while the budget allows, making room by
    dropping spent pieces, oldest first, beyond the reserve (``_lock``
    held).

    Slow start: the bytes in flight are held to a window that begins at
    :data:`PIECE_BYTES` and grows by each piece that lands (doubling per
    round trip), up to the budget, from the time read-ahead was last idle.
    Pieces share the network: with the whole budget asked at once, the
    first would land only when nearly all had, and the reader would wait
    for all of them."""
    while _waiting:
        p = _waiting[0]
        if p.state != _WAITING:
            _waiting.popleft()
            continue
        if not _budget:
            return
        n = p.b - p.a
        if _flight and _flight + n > _window:
            return
        _make_room(n)
        if _in_use and _in_use + n > _budget:
            return
        _waiting.popleft()
        _start(p, go)


_flush_lock = threading.Lock()
_queued: dict = {}  # event loop -> requests waiting for it to start them


def _launch(go: list) -> None:
    """Start the requests of ``go`` (``(source, a, b, future)``). The loop
    is woken once for all the requests handed to it before it runs: a
    batch's prefetches of many shards cost one wake-up, not one each."""
    if not go:
        return
    for item in go:
        loop = item[0].io_loop()
        with _flush_lock:
            waiting = _queued.get(loop)
            if waiting is None:
                waiting = _queued[loop] = []
                wake = True
            else:
                wake = False
            waiting.append(item)
        if wake:
            loop.call_soon_threadsafe(_start_all, loop)


def _start_all(loop) -> None:
    with _flush_lock:
        items = _queued.pop(loop, ())
    for source, a, b, fut in items:
        if fut.cancelled():
            _landed(b - a)
        else:
            asyncio.ensure_future(_fill(source, a, b, fut))


def _landed(nbytes: int) -> None:
    """A piece's request ended: the window grows, waiting pieces may start."""
    global _flight, _window
    go: list = []
    with _lock:
        _flight -= nbytes
        if _flight <= 0 and not _waiting:
            _flight, _window = 0, PIECE_BYTES  # idle: the next scan starts slow
        else:
            _window = min(max(_budget, PIECE_BYTES), _window + nbytes)
            _pump(go)
    _launch(go)


async def _fill(source, a, b, fut: Future) -> None:
    try:
        data = await source.fetch(a, b, skip=fut.cancelled)
    except BaseException as e:  # noqa: BLE001 - handed to the reader
        _landed(b - a)
        if fut.set_running_or_notify_cancel():
            fut.set_exception(e)
        if not isinstance(e, Exception):
            raise
        return
    _landed(b - a)
    if fut.set_running_or_notify_cancel():
        fut.set_result(data)


def drop(pieces) -> None:
    """Forget ``pieces``: cancel what is in flight, free the budget."""
    go: list = []
    with _lock:
        for p in pieces:
            _release(p)
        _pump(go)
    _launch(go)


class Prefetch:
    """The handle of one :meth:`.base.ByteSource.prefetch` call: its pieces
    live until spent and their room is wanted, until :meth:`close`, or
    until the handle is collected."""

    def __init__(self, source=None, ranges=(), needs=None):
        self._pieces = []
        if source is None or not _budget:
            return
        most = piece_bytes()
        for j, (a, b) in enumerate(ranges):
            a, b = int(a), int(b)
            if needs is not None and b - a <= most:
                self._pieces.append(_Piece(source, a, b, needs[j]))
                continue
            while b > a:
                e = min(b, a + most)
                self._pieces.append(_Piece(source, a, e))
                a = e
        if not self._pieces:
            return
        source.adopt_pieces(self._pieces)
        go: list = []
        with _lock:
            _waiting.extend(self._pieces)
            _pump(go)
        _launch(go)
        weakref.finalize(self, drop, self._pieces)

    @property
    def nbytes(self) -> int:
        """Bytes this handle prefetches that reads have not taken yet
        (started or waiting)."""
        return sum(p.b - p.a for p in self._pieces if p.state in (_WAITING, _STARTED))

    def mark_automatic(self) -> None:
        """Mark these pieces as started by sequential read-ahead, not asked
        for by a reader."""
        for p in self._pieces:
            p.auto = True

    def close(self) -> None:
        """Drop the pieces (read or not)."""
        drop(self._pieces)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def serve(pieces, a: int, b: int):
    """``(bytes [a, b), the pieces that held them)`` from ``pieces`` (a
    source's live pieces) when they cover it, else ``None`` (also when a
    piece is given up meanwhile: the caller then reads for itself). Waits
    for pieces in flight; starts waiting ones (the reader needs them now).
    Raises what their requests raised."""
    global _spent_bytes
    go: list = []
    with _lock:
        # Pieces may overlap (two streams' windows, a batch's and a scan's):
        # each serves the bytes from where the one before it ended.
        cover, spans = [], []
        pos = a
        for p in sorted((p for p in pieces if p.state != _DEAD and p.a < b and p.b > a), key=lambda p: p.a):
            if p.a > pos:
                return None
            if p.b > pos:
                cover.append(p)
                spans.append((pos, min(b, p.b)))
                pos = p.b
            if pos >= b:
                break
        if pos < b or not cover:
            return None
        for p in cover:
            if p.state == _WAITING:  # a reader needs it now: past the window and the budget
                _make_room(p.b - p.a)
                _start(p, go)
        futures = [p.future for p in cover]
    _launch(go)
    parts = []
    try:
        for p, (lo, hi), fut in zip(cover, spans, futures):
            data = fut.result()
            lo, hi = lo - p.a, hi - p.a
            parts.append(data if (lo, hi) == (0, len(data)) else memoryview(data)[lo:hi])
    except CancelledError:
        return None
    except BaseException:
        drop(cover)
        raise
    go = []
    with _lock:
        spent = False
        for p, (lo, hi) in zip(cover, spans):
            if p.state == _STARTED:
                p.need -= hi - lo
                if p.need <= 0:
                    p.state = _SPENT
                    _spent[p] = None
                    _spent_bytes += p.b - p.a
                    spent = True
            elif p.state == _SPENT:
                _spent.move_to_end(p)
        if spent:
            _make_room(0)
            _pump(go)
    _launch(go)
    if len(parts) == 1:
        return (parts[0] if isinstance(parts[0], bytes) else bytes(parts[0])), cover
    return b"".join(parts), cover
