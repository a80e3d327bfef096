"""Objects in fsspec file systems (``s3://``, ``gs://``, ``https://``,
``memory://``, ...) as byte sources.

Reads are ranged requests through the backend's own file objects
(``fs.open(path, "rb", cache_type="none")``), so each backend's consistency
check applies: s3fs sends ``If-Match: <ETag>`` and raises ``FileExpired``
once the object is replaced, gcsfs pins the generation it opened. Around
them:

* a bounded, process-wide cache of 64 KiB blocks (:data:`BLOCK_CACHE`), so
  the postscript, the footer and neighbouring records share requests;
* batches: the blocks a batch of ranges needs are coalesced into runs (one
  request per run of adjacent blocks, small gaps filled) and fetched
  concurrently on a thread pool;
* retries: a failing request is retried with exponential back-off up to
  :attr:`RetryPolicy.attempts` times within :attr:`RetryPolicy.deadline`
  seconds, then raises :class:`StorageError` naming the URL and the range;
  missing objects, refused permissions and replaced objects are not retried.
"""

from __future__ import annotations

import errno
import os
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from .base import ByteSource, SourceChangedError, SourceTruncatedError
from .lru import BoundedLRU
from .urls import StorageError, filesystem

__all__ = ["RemoteFile", "RetryPolicy", "BlockCache", "BLOCK_CACHE", "object_version", "BLOCK", "set_retry_policy"]

#: Bytes per cached block: Riegeli's own block size.
BLOCK = 1 << 16
# Ranges at least this long bypass the cache: a scan's read-ahead or a
# 200 MiB record would only evict everything else. Fetched exactly, in one
# request.
_DIRECT = 512 << 10
# Missing blocks closer than this many blocks are fetched in one request.
_GAP_BLOCKS = 2
_MAX_REQUESTS = 32


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
    for key in ("ETag", "etag", "generation", "VersionId", "version_id", "md5Hash", "LastModified", "mtime",
                "updated", "created"):
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


class BlockCache(BoundedLRU):
    """LRU of fetched blocks, bounded in bytes, shared by every remote file.

    Keys are ``(url, version, block number)``, so a replaced object never
    hits the blocks of its predecessor.
    """

    def __init__(self, max_bytes: int = 64 << 20):
        super().__init__(max_bytes)

    def put(self, key, value: bytes) -> None:
        super().put(key, value, len(value))


BLOCK_CACHE = BlockCache()
_pool = None
_pool_lock = threading.Lock()
_pool_pid = None


def _io_pool() -> ThreadPoolExecutor:
    """Threads for concurrent requests (they wait on the network, not the
    CPU). A forked child makes its own."""
    global _pool, _pool_pid
    if _pool is None or _pool_pid != os.getpid():
        with _pool_lock:
            if _pool is None or _pool_pid != os.getpid():
                _pool = ThreadPoolExecutor(_MAX_REQUESTS, thread_name_prefix="arrayfs-remote")
                _pool_pid = os.getpid()
    return _pool


def _permanent(e: BaseException) -> bool:
    if isinstance(e, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, ValueError,
                      TypeError)):
        return True
    return type(e).__name__ == "FileExpired"


class RemoteFile(ByteSource):
    """One object behind an fsspec URL (see :class:`.base.ByteSource`).

    Args:
        url: the object's URL, e.g. ``s3://bucket/train-00000.array_record``.
        storage_options: fsspec options for the backend (credentials,
            ``endpoint_url``, ...).
        info: the object's fsspec ``info`` dict when already known (from a
            listing): opening then costs no request.
        fs: the fsspec file system, when known (with ``path``).
        path: the object's path within ``fs``.
        cache: the block cache (default: the process-wide one).
        retry: a :class:`RetryPolicy`.

    Raises:
        FileNotFoundError: no object at ``url`` (naming it).
        StorageError: the store cannot be reached or refuses the request.
    """

    remote = True

    def __init__(self, url: str, *, storage_options=None, info=None, fs=None, path=None, cache=BLOCK_CACHE,
                 retry: RetryPolicy | None = None):
        self.name = url
        if fs is None:
            fs, path = filesystem(url, storage_options)
        self._fs = fs
        self._path = path
        self._cache = cache
        self.retry = retry or _default_retry
        self._files: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = False
        if info is None:
            info = self._call(lambda: fs.info(path), "look up")
        if info.get("type", "file") == "directory":
            raise IsADirectoryError(errno.EISDIR, "is a directory, not an ArrayRecord object", url)
        self.size = int(info["size"])
        self.version = object_version(info)
        self.mtime_ns = _mtime_ns(info)
        self.identity = (self.size, self.version)
        self.requests = 0  # ranged requests made, for tests and benchmarks

    # -- requests ------------------------------------------------------------------

    def _call(self, fn, what: str, start=None, end=None):
        """``fn()`` with retries; errors name the URL (and the range)."""
        policy = self.retry
        t0 = time.monotonic()
        where = f"bytes [{start}, {end})" if start is not None else ""
        for attempt in range(policy.attempts):
            try:
                return fn()
            except FileNotFoundError:
                raise FileNotFoundError(errno.ENOENT, "no such object", self.name) from None
            except (SourceChangedError, SourceTruncatedError):
                raise
            except Exception as e:
                if type(e).__name__ == "FileExpired":
                    raise self._replaced() from None
                if _permanent(e) or attempt + 1 >= policy.attempts:
                    raise self._failed(e, what, where, attempt + 1) from e
                sleep = min(policy.max_sleep, policy.backoff * (2**attempt))
                if time.monotonic() - t0 + sleep > policy.deadline:
                    raise self._failed(e, what, where, attempt + 1) from e
                time.sleep(sleep)
        raise AssertionError("unreachable")

    def _replaced(self) -> SourceChangedError:
        """The error for an object replaced since it was opened, saying
        whether it is shorter now (one metadata request to find out)."""
        try:
            self._fs.invalidate_cache(self._path)
            size = int(self._fs.info(self._path)["size"])
        except Exception:
            size = None
        now = f" ({size} bytes now, {self.size} when opened)" if size is not None else ""
        return SourceChangedError(
            f"{self.name}: the object was replaced since it was opened (its ETag or generation changed){now}",
            name=self.name, truncated=size is not None and size < self.size, size=size,
        )

    def _failed(self, e, what, where, attempts) -> StorageError:
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        detail = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        err = StorageError(f"{self.name}: cannot {what}{' ' + where if where else ''}{tries}: {detail}")
        if isinstance(e, PermissionError):
            err.errno = errno.EACCES
        return err

    def _fetch(self, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` in one request (retried)."""

        def once():
            try:
                f = self._files.get_nowait()
            except queue.Empty:
                f = self._fs.open(self._path, "rb", cache_type="none")
                # The backend pins the version its file object saw at open
                # (s3fs: If-Match on its ETag); it must be the one we opened.
                details = getattr(f, "details", None)
                if isinstance(details, dict) and self.version is not None:
                    seen = object_version(details)
                    if seen is not None and seen != self.version:
                        f.close()
                        raise self._replaced() from None
            try:
                f.seek(start)
                data = f.read(end - start)
            except BaseException:
                try:
                    f.close()
                except Exception:
                    pass
                raise
            self._files.put(f)
            return data

        if self._closed:
            raise ValueError(f"{self.name}: read from a closed file")
        data = self._call(once, "read", start, end)
        self.requests += 1
        if len(data) != end - start:
            raise SourceTruncatedError(
                f"{self.name}: the object ends before byte {end} (a read of bytes [{start}, {end}) returned "
                f"{len(data)}; it was {self.size} bytes when opened: truncated or replaced since)",
                name=self.name, offset=start, length=end - start, size=start + len(data),
            )
        return data

    # -- ByteSource ------------------------------------------------------------------

    def read(self, offset: int, length: int) -> bytes:
        return self.read_ranges([(offset, offset + length)])[0]

    def read_ranges(self, ranges) -> list:
        if not ranges:
            return []
        for a, b in ranges:
            if a < 0 or b < a or b > self.size:
                self._check_range(a, b - a)
        key = (self.name, self.version)
        cache = self._cache
        blocks: dict = {}
        direct = []
        want = set()
        for j, (a, b) in enumerate(ranges):
            if b - a >= _DIRECT:
                direct.append(j)
            elif b > a:
                want.update(range(a // BLOCK, (b - 1) // BLOCK + 1))
        missing = []
        for n in sorted(want):
            v = cache.get((*key, n))
            if v is None:
                missing.append(n)
            else:
                blocks[n] = v
        runs = []
        for n in missing:
            if runs and n - runs[-1][1] <= _GAP_BLOCKS:
                runs[-1][1] = n
            else:
                runs.append([n, n])
        jobs = [(r[0] * BLOCK, min((r[1] + 1) * BLOCK, self.size)) for r in runs]
        jobs += [ranges[j] for j in direct]
        if len(jobs) == 1:
            results = [self._fetch(*jobs[0])]
        elif jobs:
            results = list(_io_pool().map(lambda r: self._fetch(*r), jobs))
        else:
            results = []
        for (a, b), data in zip(jobs[: len(runs)], results):
            mv = memoryview(data)
            for n in range(a // BLOCK, (b - 1) // BLOCK + 1):
                piece = bytes(mv[n * BLOCK - a : min((n + 1) * BLOCK, b) - a])
                blocks[n] = piece
                cache.put((*key, n), piece)
        direct_data = dict(zip(direct, results[len(runs):]))
        out = []
        for j, (a, b) in enumerate(ranges):
            if j in direct_data:
                out.append(direct_data[j])
            elif b == a:
                out.append(b"")
            else:
                n0, n1 = a // BLOCK, (b - 1) // BLOCK
                if n0 == n1:
                    out.append(blocks[n0][a - n0 * BLOCK : b - n0 * BLOCK])
                else:
                    parts = [blocks[n] for n in range(n0, n1 + 1)]
                    joined = b"".join(parts)
                    out.append(joined[a - n0 * BLOCK : b - n0 * BLOCK])
        return out

    def check(self) -> None:
        info = self._call(lambda: self._fs.info(self._path), "look up")
        if (int(info["size"]), object_version(info)) != self.identity:
            size = int(info["size"])
            raise SourceChangedError(
                f"{self.name}: the object changed since it was opened (size {self.size} -> {size}, "
                f"version {self.version} -> {object_version(info)})",
                name=self.name, truncated=size < self.size, size=size,
            )

    def close(self) -> None:
        self._closed = True
        while True:
            try:
                f = self._files.get_nowait()
            except queue.Empty:
                break
            try:
                f.close()
            except Exception:
                pass

    @property
    def closed(self) -> bool:
        return self._closed
