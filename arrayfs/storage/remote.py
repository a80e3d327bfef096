"""Objects in object stores (``s3://``, ``gs://``, ``https://``,
``memory://``, ...) as byte sources.

* Opening costs no request when the listing gave the object's size and
  version (ETag or generation); the file layer's tail read is then the one
  request of a shard.
* Every GET is pinned to that version (``If-Match`` on S3, ``generation``
  on GCS), so a replaced object is :class:`.base.SourceChangedError`,
  never a mix of versions.
* A batch of ranges becomes requests for exactly those bytes; neighbours
  less than :data:`GAP` bytes apart share a request, and ranges over
  :data:`.readahead.PIECE_BYTES` are split. All of a batch's requests are
  in flight at once, up to :func:`.aio.max_requests` per process.
* Read-ahead: explicit (:meth:`RemoteFile.prefetch`), and automatic once
  reads run sequentially (a window that doubles up to
  :data:`AUTO_WINDOW`), within :mod:`.readahead`'s budget.
* Retries: a failing request is retried with exponential back-off up to
  :attr:`RetryPolicy.attempts` times within :attr:`RetryPolicy.deadline`
  seconds, then raises :class:`StorageError` naming the URL and the range;
  missing objects, refused permissions and replaced objects are not retried.
  An attempt with no answer is cut off (half the time left of the deadline)
  and retried: the call ends within the deadline on every client.

The requests go through a *transport*: obstore (:mod:`.obstore_backend`)
where it serves the scheme and the ``storage_options``, else fsspec
(:mod:`.transport`); see :func:`.backends.transport_for`.
"""

from __future__ import annotations

import asyncio
import errno
import os
import threading
import time
from dataclasses import dataclass

from . import aio, readahead
from .base import ByteSource, SourceChangedError, SourceTruncatedError
from .transport import BEYOND, MISSING, REPLACED, RETRY
from .urls import StorageError

__all__ = ["RemoteFile", "RetryPolicy", "object_version", "set_retry_policy", "GAP", "AUTO_WINDOW"]

#: Ranges closer than this (bytes) are fetched in one request: a request
#: costs a round trip, a few KiB more of transfer costs microseconds.
GAP = 16 << 10
#: Largest automatic read-ahead window of one file (bytes).
AUTO_WINDOW = 16 << 20
_AUTO_FIRST = 256 << 10
# Sequential streams of one file followed at once.
_STREAMS = 8
# Reads in a row, each starting where one before ended, before a stream's
# first window is fetched (a random read lands right after another now and
# then; twice in a row, seldom).
_ARM = 2
# How far from where a stream's last read ended a read may start and still
# continue it, before its first window (bytes).
_NEAR = 4 << 10
# Prefetched ranges this small (a batch's records) are merged like a batch's
# requests, into pieces of at most this many bytes.
_MERGE_SMALL = 256 << 10
# The tail read at open (postscript and footer) is kept to serve later
# footer reads, when it is no bigger than this.
_TAIL_KEEP = 1 << 20


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try a failing request: ``attempts`` in all (1 = no
    retry), sleeping ``backoff * 2**k`` seconds (at most ``max_sleep``)
    between them, never past ``deadline`` seconds after the first."""

    attempts: int = 6
    backoff: float = 0.1
    max_sleep: float = 5.0
    deadline: float = 60.0


_default_retry = RetryPolicy()


def set_retry_policy(policy: RetryPolicy) -> None:
    """The :class:`RetryPolicy` of remote files opened from now on (the
    backends' own retries, e.g. botocore's, come on top)."""
    global _default_retry
    _default_retry = policy


def object_version(info: dict):
    """What identifies one version of an object in an fsspec ``info`` dict:
    the ETag (S3, HTTP), the generation (GCS), else the modification time."""
    for key in ("ETag", "etag", "generation", "VersionId", "version_id", "md5Hash", "LastModified", "Last-Modified",
                "mtime", "updated", "created"):
        v = info.get(key)
        if v is not None:
            return str(v)
    return None


def _mtime_ns(info: dict) -> int:
    v = info.get("LastModified", info.get("mtime", info.get("updated", info.get("created"))))
    if v is None:
        return 0
    if hasattr(v, "timestamp"):
        return int(v.timestamp() * 1e9)
    try:
        return int(float(v) * 1e9)
    except (TypeError, ValueError):
        try:
            from datetime import datetime

            return int(datetime.fromisoformat(str(v).replace("Z", "+00:00")).timestamp() * 1e9)
        except ValueError:
            return 0


class _Failed(Exception):
    def __init__(self, kind, error, attempts, start, end):
        super().__init__(kind)
        self.kind, self.error, self.attempts, self.start, self.end = kind, error, attempts, start, end


def _as_bytes(data) -> bytes:
    """``data`` (a transport's buffer) as ``bytes``, copied only if it is not."""
    return data if isinstance(data, bytes) else bytes(data)


def _sleep(policy: RetryPolicy, attempt: int) -> float:
    """Seconds of back-off after failed attempt number ``attempt`` (from 0)."""
    return min(policy.max_sleep, policy.backoff * (2**attempt))


def _left(policy: RetryPolicy, t0: float, attempt: int) -> float:
    """Seconds attempt number ``attempt`` (from 0) of a request first tried
    at ``t0`` (monotonic seconds) may take: half of what is left of
    ``policy``'s deadline, all of it on the last attempt. Half, so that one
    stalled connection (the server never answers) leaves time for a retry
    on a fresh one; at least a moment, so that an attempt the back-off
    check let through is made."""
    left = policy.deadline - (time.monotonic() - t0)
    if attempt + 1 < policy.attempts:
        left /= 2
    return max(left, 0.05)


class AttemptTimeout(TimeoutError):
    """An attempt of a request had no answer before the retry deadline."""


async def _within(coro, seconds: float):
    """``await coro``, cut off after ``seconds``: raises
    :class:`AttemptTimeout` (the client's request is cancelled)."""
    try:
        return await asyncio.wait_for(coro, seconds)
    except asyncio.TimeoutError:
        raise AttemptTimeout(f"no answer within {seconds:.1f} s") from None


def _timed_out(e: BaseException) -> bool:
    """Whether ``e`` is a request cut off by a timeout (ours or the
    client's): worth another attempt while time is left."""
    return isinstance(e, TimeoutError)  # asyncio's and fsspec's FSTimeoutError are TimeoutErrors too


async def _all(coros):
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        raise


def plan(ranges, gap: int = GAP, piece: int = readahead.PIECE_BYTES):
    """Requests for a batch of byte ranges: ``[(start, end), ...]`` sorted,
    ranges less than ``gap`` bytes apart merged (while the merged request
    stays within ``piece`` bytes), longer ranges split into ``piece``-byte
    requests. Empty ranges need no request."""
    spans = sorted((a, b) for a, b in ranges if b > a)
    out = []
    for a, b in spans:
        if out and a <= out[-1][1] + gap and max(b, out[-1][1]) - out[-1][0] <= piece:
            if b > out[-1][1]:
                out[-1][1] = b
            continue
        if out and a < out[-1][1]:  # overlaps a request that cannot grow: fetch the rest
            a = out[-1][1]
            if b <= a:
                continue
        while b - a > piece:
            out.append([a, a + piece])
            a += piece
        out.append([a, b])
    return [tuple(r) for r in out]


def _needs(ranges, pieces) -> list:
    """Bytes of ``ranges`` (duplicates once) within each of ``pieces``
    (sorted, disjoint, covering them)."""
    import bisect

    starts = [p[0] for p in pieces]
    needs = [0] * len(pieces)
    for a, b in set(ranges):
        k = max(bisect.bisect_right(starts, a) - 1, 0)
        while k < len(pieces) and pieces[k][0] < b:
            lo, hi = max(a, pieces[k][0]), min(b, pieces[k][1])
            if hi > lo:
                needs[k] += hi - lo
            k += 1
    return needs


class RemoteFile(ByteSource):
    """One object in an object store (see :class:`.base.ByteSource`).

    Args:
        url: the object's URL, e.g. ``s3://bucket/train-00000.array_record``.
        storage_options: options for the backend (credentials,
            ``endpoint_url``, ...; see ``docs/object-storage.md``).
        info: the object's fsspec ``info`` dict when already known (from a
            listing): opening then costs no request, unless it has no size
            (an HTTP directory index), which costs one metadata request.
        transport: the transport to use (default: :func:`.backends.transport_for`),
            with ``key``, the object's path within it.
        retry: a :class:`RetryPolicy`.

    Raises:
        FileNotFoundError: no object at ``url`` (naming it).
        IsADirectoryError: ``url`` is a directory.
        StorageError: the store cannot be reached or refuses the request.
    """

    remote = True

    def __init__(self, url: str, *, storage_options=None, info=None, transport=None, key=None,
                 retry: RetryPolicy | None = None):
        self.name = url
        self._storage_options = storage_options
        self._pid = os.getpid()
        self._own_transport = transport is None
        if transport is None:
            from .backends import transport_for

            transport, key = transport_for(url, storage_options)
        self._t = transport
        self._key = key
        self.retry = retry or _default_retry
        self._closed = False
        self._lock = threading.Lock()
        self._pieces: list = []  # read-ahead pieces of this file
        self._tail = None  # (offset, bytes) of the tail read at open
        self._auto: list = []  # sequential read-ahead: [next offset, window, end, handles, reads] per stream
        self.requests = 0  # GETs made, for tests and benchmarks
        if info is None or (info.get("size") is None and info.get("type", "file") != "directory"):
            info = self._metadata()  # also when a listing gave no size (fsspec's HTTP glob)
        if info.get("type", "file") == "directory":
            raise IsADirectoryError(errno.EISDIR, "is a directory, not an ArrayRecord object", url)
        self._info = info
        self.size = int(info["size"])
        self.version = object_version(info)
        self.pin_to = transport.pin_of(info)
        self.mtime_ns = _mtime_ns(info)
        self.identity = (self.size, self.version)

    @property
    def backend(self) -> str:
        """``"obstore"`` or ``"fsspec"``: what makes this process's requests."""
        return self._transport().name

    def _transport(self):
        """This process's transport: a forked child (a mount's worker, a
        DataLoader worker) gets its own client, since neither an event
        loop's thread nor a connection pool survives a fork; read-ahead in
        flight in the parent stays there."""
        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    self._after_fork()
        return self._t

    def _after_fork(self) -> None:
        self._pieces = []
        self._auto = []
        if self._own_transport:
            from .backends import transport_for

            self._t, self._key = transport_for(self.name, self._storage_options)
            self.pin_to = self._t.pin_of(self._info)
        self._pid = os.getpid()

    def io_loop(self):
        """The event loop this file's requests run on (for :mod:`.readahead`)."""
        return self._transport().loop

    # -- requests ------------------------------------------------------------------

    def _metadata(self) -> dict:
        """The object's info dict, fresh (one metadata request, retried;
        each attempt bounded by what is left of the deadline)."""
        policy = self.retry
        t0 = time.monotonic()
        t = self._transport()
        for attempt in range(policy.attempts):
            try:
                t.invalidate(self._key)
                return t.info(self._key, timeout=_left(policy, t0, attempt))
            except FileNotFoundError:
                raise FileNotFoundError(errno.ENOENT, "no such object", self.name) from None
            except Exception as e:
                kind = RETRY if _timed_out(e) else t.classify(e, False)
                if not self._again(kind, attempt, t0):
                    raise self._failed(e, "look up", "", attempt + 1) from e
                time.sleep(_sleep(policy, attempt))
        raise AssertionError("unreachable")

    def _again(self, kind: str, attempt: int, t0: float) -> bool:
        """Whether a request that failed (``kind``, see
        :meth:`.transport.FsspecTransport.classify`) on its ``attempt``-th
        try (from 0), first tried at ``t0`` (monotonic seconds), is tried
        again: retryable, attempts left, and the back-off ends with time
        left for the next attempt."""
        policy = self.retry
        sleep = _sleep(policy, attempt)
        return (kind == RETRY and attempt + 1 < policy.attempts
                and time.monotonic() - t0 + sleep < policy.deadline)

    async def fetch(self, start: int, end: int, skip=None):
        """Bytes ``[start, end)`` in one request, retried; raises
        :class:`_Failed` (turned into the public errors by :meth:`_run`).
        ``skip()`` true once a connection is free: the bytes are no longer
        wanted, no request is made (raises :class:`_Failed`).

        Each attempt is cut off after half the time left of
        :attr:`RetryPolicy.deadline` (the last one: all of it; see
        :func:`_left`), and a timed-out attempt is a failed one: the
        clients' own timeouts cannot be relied on (gcsfs waits for an
        answer forever), so a stalled request is retried, and the call ends
        within the deadline whatever the store does. The deadline counts from when the first attempt got a
        connection slot, not while it queued behind others."""
        policy = self.retry
        sem = aio.limit()
        t, key, pin = self._t, self._key, self.pin_to
        t0 = None
        for attempt in range(policy.attempts):
            try:
                async with sem:
                    if skip is not None and skip():
                        raise _Failed("skipped", None, 0, start, end)
                    t0 = time.monotonic() if t0 is None else t0
                    data = await _within(t.get(key, start, end, pin), _left(policy, t0, attempt))
                break
            except _Failed:
                raise
            except Exception as e:
                kind = RETRY if _timed_out(e) else t.classify(e, pin is not None)
                if not self._again(kind, attempt, t0):
                    raise _Failed(kind, e, attempt + 1, start, end) from e
                await asyncio.sleep(_sleep(policy, attempt))
        self.requests += 1
        if len(data) < end - start:
            raise _Failed("short", len(data), 1, start, end)
        if len(data) > end - start:  # not a truncated object: a server that sent more than the range
            raise _Failed("long", len(data), 1, start, end)
        return data

    def _errors(self, f: _Failed) -> Exception:
        """The public error for a failed request."""
        if f.kind == "short":
            return SourceTruncatedError(
                f"the object ends before byte {f.end} (a read of bytes [{f.start}, {f.end}) returned "
                f"{f.error}; it was {self.size} bytes when opened: truncated or replaced since)",
                path=self.name, offset=f.start, length=f.end - f.start, size=f.start + f.error,
            )
        if f.kind == "long":
            return StorageError(f"cannot read bytes [{f.start}, {f.end}): the server answered with {f.error} bytes, "
                                f"not {f.end - f.start}: it does not honour Range requests", path=self.name)
        if f.kind in (MISSING, REPLACED, BEYOND):
            return self._replaced(f.kind)
        where = f"bytes [{f.start}, {f.end})"
        return self._failed(f.error, "read", where, f.attempts)

    def _replaced(self, kind=REPLACED) -> Exception:
        """The error for an object replaced, removed or cut short since it
        was opened (one metadata request to tell which)."""
        try:
            info = self._metadata()
        except FileNotFoundError:
            return SourceChangedError("the object was removed since it was opened",
                                      path=self.name, truncated=True, size=0)
        except Exception:
            info = None
        size = int(info["size"]) if info is not None else None
        if info is not None and (size, object_version(info)) == self.identity:
            if kind == MISSING:
                return FileNotFoundError(errno.ENOENT, "no such object", self.name)
            if kind == BEYOND:
                return SourceTruncatedError("a read reaches past the end of the object",
                                            path=self.name, offset=self.size, length=0, size=self.size)
        now = f" ({size} bytes now, {self.size} when opened)" if size is not None else ""
        return SourceChangedError(
            f"the object was replaced since it was opened (its ETag or generation changed){now}",
            path=self.name, truncated=size is not None and size < self.size, size=size,
        )

    def _failed(self, e, what, where, attempts) -> StorageError:
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        detail = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        err = StorageError(f"cannot {what}{' ' + where if where else ''}{tries}: {detail}", path=self.name)
        if isinstance(e, PermissionError) or type(e).__name__ in ("PermissionDeniedError", "UnauthenticatedError"):
            err.errno = errno.EACCES
        return err

    def _run(self, requests) -> list:
        """The bytes of each ``(start, end)`` request, all in flight at once."""
        if self._closed:
            raise ValueError(f"{self.name}: read from a closed file")
        try:
            loop = self.io_loop()
            if len(requests) == 1:
                return [aio.run(self.fetch(*requests[0]), loop)]
            return aio.run(_all([self.fetch(a, b) for a, b in requests]), loop)
        except _Failed as f:
            raise self._errors(f) from None

    def adopt_pieces(self, pieces) -> None:
        """Track read-ahead ``pieces`` of this file (for :mod:`.readahead`)."""
        with self._lock:
            self._pieces.extend(pieces)

    def forget_piece(self, piece) -> None:
        """Stop tracking a dropped read-ahead ``piece`` (for :mod:`.readahead`)."""
        with self._lock:
            try:
                self._pieces.remove(piece)
            except ValueError:
                pass

    # -- ByteSource ------------------------------------------------------------------

    def read(self, offset: int, length: int) -> bytes:
        return self.read_ranges([(offset, offset + length)])[0]

    def read_ranges(self, ranges) -> list:
        if not ranges:
            return []
        if self._pid != os.getpid():
            self._transport()
        for a, b in ranges:
            if a < 0 or b < a or b > self.size:
                self._check_range(a, b - a)
        out = [None] * len(ranges)
        todo = []
        tail = self._tail
        pieces = self._pieces
        explicit = False  # served by read-ahead a caller asked for
        for j, (a, b) in enumerate(ranges):
            if b == a:
                out[j] = b""
            elif tail is not None and a >= tail[0]:
                out[j] = tail[1][a - tail[0] : b - tail[0]]
            elif pieces:
                try:
                    got = readahead.serve(list(pieces), a, b)
                except _Failed as f:
                    raise self._errors(f) from None
                if got is None:
                    todo.append(j)
                else:
                    out[j] = got[0]
                    explicit = explicit or any(not getattr(p, "auto", False) for p in got[1])
            else:
                todo.append(j)
        if todo:
            self._fetch_into(ranges, todo, out)
        if not explicit and readahead.budget():
            self._sequential(min(r[0] for r in ranges), max(r[1] for r in ranges))
        return out

    def _fetch_into(self, ranges, todo, out) -> None:
        wanted = [ranges[j] for j in todo]
        requests = plan(wanted)
        datas = self._run(requests)
        if len(requests) == 1 and len(todo) == 1 and requests[0] == tuple(wanted[0]):
            out[todo[0]] = _as_bytes(datas[0])
        else:
            starts = [r[0] for r in requests]
            import bisect

            for j in todo:
                a, b = ranges[j]
                k = bisect.bisect_right(starts, a) - 1
                ra, rb = requests[k]
                if b <= rb:
                    d = datas[k]
                    out[j] = _as_bytes(d) if (a, b) == (ra, rb) else bytes(memoryview(d)[a - ra : b - ra])
                else:  # spans split requests
                    parts = []
                    pos = a
                    while pos < b:
                        ra, rb = requests[k]
                        parts.append(memoryview(datas[k])[pos - ra : min(b, rb) - ra])
                        pos = min(b, rb)
                        k += 1
                    out[j] = b"".join(parts)
        lo = min(ranges[j][0] for j in todo)
        hi = max(ranges[j][1] for j in todo)
        if hi == self.size and hi - lo <= _TAIL_KEEP and self._tail is None and len(requests) == 1:
            self._tail = (lo, _as_bytes(datas[0]))

    def _sequential(self, lo: int, hi: int) -> None:
        """Automatic read-ahead: once :data:`_ARM` reads in a row each start
        where one before ended, fetch the bytes after them, in a window that
        doubles (up to :data:`AUTO_WINDOW` bytes) each time reads come within
        half a window of its end. Up to :data:`_STREAMS` such streams are
        followed at once (threads reading parts of one file, several readers
        of a mount); a read that continues none starts a new one. Random
        reads seldom land after one another twice in a row, so they fetch
        no window; a window starts after the bytes other windows of this
        file already hold."""
        with self._lock:
            streams = self._auto  # least recently continued first
            st = next((s for s in reversed(streams) if self._continues(s, lo)), None)
            start, old = None, []
            if st is None:
                streams.append([hi, 0, hi, [], 1])
                if len(streams) > _STREAMS:
                    old = streams.pop(0)[3]
            else:
                if streams[-1] is not st:
                    streams.remove(st)
                    streams.append(st)
                nxt, window, end, _, reads = st
                st[0] = max(nxt, hi)
                st[4] = reads = reads + 1
                if window == 0:
                    if reads > _ARM:
                        window = max(_AUTO_FIRST, 2 * (hi - lo))
                        start = hi
                elif end - hi < window // 2:
                    window = 2 * window
                    start = max(end, hi)
                window = min(window, AUTO_WINDOW, readahead.budget())
                st[1] = window
                if start is not None and start < self.size:
                    st[2] = min(self.size, start + window)
                    start, stop = self._unheld(start, st[2])
                    if start >= stop:
                        start = None
                else:
                    start = None
        for h in old:
            h.close()
        if start is not None:
            handle = self.prefetch([(start, stop)])
            handle.mark_automatic()
            with self._lock:
                st[3] = [h for h in st[3] if h.nbytes] + [handle]

    @staticmethod
    def _continues(stream, lo: int) -> bool:
        """Whether a read from ``lo`` continues ``stream``: anywhere up to
        the end of its window once one runs (readers a little ahead of one
        another); before that, within :data:`_NEAR` bytes of where its last
        read ended."""
        nxt, window, end = stream[:3]
        if window:
            return nxt - GAP <= lo <= max(nxt, end) + GAP
        return nxt - _NEAR <= lo <= nxt + _NEAR

    def _unheld(self, start: int, stop: int) -> tuple:
        """``(start, stop)`` narrowed to the bytes from ``start`` that no
        live piece of this file holds (``_lock`` held): windows of two
        streams that meet are not fetched twice."""
        live = [p for p in self._pieces if p.live]
        moved = True
        while moved and start < stop:
            moved = False
            for p in live:
                if p.a <= start < p.b:
                    start, moved = p.b, True
        return start, min([stop] + [p.a for p in live if start < p.a < stop])

    def prefetch(self, ranges) -> readahead.Prefetch:
        """Start fetching ``ranges`` (``(start, end)`` byte pairs, in the
        order they will be read) ahead of the reads, within the process's
        read-ahead budget; reads they cover are served from them. Returns
        the :class:`.readahead.Prefetch` handle (close it, or drop it, to
        give up what was not read)."""
        if self._closed:
            return readahead.Prefetch()
        if self._pid != os.getpid():
            self._transport()
        ranges = [(max(0, int(a)), min(self.size, int(b))) for a, b in ranges]
        ranges = [(a, b) for a, b in ranges if b > a]
        # Neighbours share a request, as in read_ranges: a batch's records in
        # pieces of at most _MERGE_SMALL (they land sooner), a scan's chunks
        # in pieces of up to PIECE_BYTES. A piece is spent once its ranges'
        # bytes were read, in any order.
        small = all(b - a <= _MERGE_SMALL for a, b in ranges)
        merged = plan(ranges, piece=min(_MERGE_SMALL, readahead.piece_bytes()) if small else readahead.piece_bytes())
        return readahead.Prefetch(self, merged, _needs(ranges, merged))

    def check(self) -> None:
        info = self._metadata()
        if (int(info["size"]), object_version(info)) != self.identity:
            size = int(info["size"])
            raise SourceChangedError(
                f"the object changed since it was opened (size {self.size} -> {size}, "
                f"version {self.version} -> {object_version(info)})",
                path=self.name, truncated=size < self.size, size=size,
            )

    def close(self) -> None:
        self._closed = True
        self._tail = None
        self._auto = []
        with self._lock:
            pieces, self._pieces = list(self._pieces), []
        if pieces:
            readahead.drop(pieces)

    @property
    def closed(self) -> bool:
        return self._closed
