"""Running object-store requests concurrently from threaded, synchronous code.

Every remote read is a set of coroutines (one per request) run on an event
loop thread and waited for by the calling thread: hundreds of requests can
be in flight without a thread each. fsspec's async backends must run on
their own loop (``fs.loop``); other clients (obstore) run on the loop kept
here, one per process (a forked child starts its own: a loop's thread does
not survive a fork).

The number of requests in flight is bounded process-wide, per loop, by
:func:`max_requests` (default 64, ``ARRAYFS_MAX_REQUESTS``): a batch asks
for as many as it needs, and many batches together never exceed the bound.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time

__all__ = ["run", "default_loop", "drain", "limit", "max_requests", "set_max_requests"]

_lock = threading.Lock()
_loop = None  # (loop, pid)
_limits: dict = {}  # loop -> (asyncio.Semaphore, bound, pid)
_max_requests = int(os.environ.get("ARRAYFS_MAX_REQUESTS", "64") or 64)


def _after_fork() -> None:
    global _lock
    _lock = threading.Lock()  # another thread may have held it at the fork
    _limits.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def max_requests() -> int:
    """Requests to an object store in flight at once (per process and
    event loop), at most."""
    return _max_requests


def set_max_requests(n: int) -> None:
    """Bound the requests in flight (``n >= 1``; default 64, or the
    ``ARRAYFS_MAX_REQUESTS`` environment variable). Applies to requests
    started from now on."""
    global _max_requests
    if int(n) < 1:
        raise ValueError(f"max_requests must be at least 1, got {n}")
    _max_requests = int(n)


def default_loop() -> asyncio.AbstractEventLoop:
    """This process's event loop thread for clients that bring no loop."""
    global _loop
    pid = os.getpid()
    cur = _loop
    if cur is not None and cur[1] == pid:
        return cur[0]
    with _lock:
        if _loop is None or _loop[1] != pid:
            loop = asyncio.new_event_loop()
            t = threading.Thread(target=loop.run_forever, name="arrayfs-io", daemon=True)
            t.start()
            _loop = (loop, pid)
        return _loop[0]


def drain(timeout: float) -> int:
    """Wait up to ``timeout`` seconds for the requests in flight on this
    process's loop (and the ones they start) to finish; returns how many
    were still running at the end (0: none)."""
    cur = _loop
    if cur is None or cur[1] != os.getpid() or not cur[0].is_running():
        return 0
    loop = cur[0]

    async def pending() -> tuple:
        # Waits a little for the tasks there are; a round that finds none
        # means nothing was started since the last one (read-ahead starts
        # tasks as others land).
        me = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not me]
        if tasks:
            await asyncio.wait(tasks, timeout=0.25)
        return len(tasks), sum(not t.done() for t in tasks)

    deadline = time.monotonic() + timeout
    left = 0
    try:
        while time.monotonic() < deadline:
            seen, left = asyncio.run_coroutine_threadsafe(pending(), loop).result(timeout)
            if not seen:
                break
    except Exception:  # noqa: BLE001 - the loop is gone: nothing runs on it
        return 0
    return left


def limit(loop=None) -> asyncio.Semaphore:
    """The semaphore bounding requests on ``loop`` (the running loop when
    ``None``); call from a coroutine on that loop."""
    loop = loop or asyncio.get_running_loop()
    got = _limits.get(loop)
    if got is None or got[1] != _max_requests or got[2] != os.getpid():
        with _lock:
            got = _limits.get(loop)
            if got is None or got[1] != _max_requests or got[2] != os.getpid():
                got = _limits[loop] = (asyncio.Semaphore(_max_requests), _max_requests, os.getpid())
    return got[0]


def submit(coro, loop=None):
    """Start ``coro`` on ``loop`` (default: :func:`default_loop`); returns a
    ``concurrent.futures.Future``."""
    return asyncio.run_coroutine_threadsafe(coro, loop or default_loop())


def run(coro, loop=None):
    """Run ``coro`` on ``loop`` (default: :func:`default_loop`) and return
    its result, raising what it raised. Must not be called from that
    loop's own thread."""
    return submit(coro, loop).result()
