"""Live refresh: shards that appear or vanish under the sources show up in
(or leave) the mount without remounting.

A watchdog observer (inotify on Linux) watches the directories the sources
name: a directory source itself, the parent of a file, the directory part of
a glob pattern before its first wildcard (recursively when a wildcard is in a
directory component). Events are debounced (a writer produces many); then
:meth:`FsView.refresh` re-expands the sources and installs a new snapshot.
Object stores send no change notifications: when a source is a URL the
sources are listed afresh every ``poll_interval`` seconds instead.

- A half-written shard is not shown: the dataset's refresh leaves out a file
  that is not yet a valid ArrayRecord file (Google's writer writes the footer
  and postscript last; arrayfs's writer writes under a hidden name and
  renames), and the watcher retries every ``retry`` seconds while such a
  file is pending, so it appears once complete.
- Kernel caches: with libfuse 3 every directory entry whose meaning
  changed (record names that now name another record or nothing, shard
  directories that vanished or appeared, the summary) is invalidated with
  ``fuse_lowlevel_notify_inval_entry``, record names first and the summary
  last, then the directories' attributes with
  ``fuse_lowlevel_notify_inval_inode``; the contents of an inode never
  change, so no page cache needs dropping and the mount keeps its long
  cache timeouts. With libfuse 2, which cannot invalidate, the daemon
  mounts with 1-second entry/attribute timeouts and no page cache across
  opens while watching (see :func:`arrayfs.fs.daemon.fuse_kwargs`):
  changes then show within about a second.
- Readers are not disturbed more than they must be: a file open before a
  refresh keeps reading its record while that record's shard is in the
  current or the previous snapshot (then ``ESTALE``), and a listing in
  progress finishes on its snapshot.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import threading
import time

from ..paths import has_magic, has_remote
from ..storage import is_remote
from .view import FsView, ViewChange

__all__ = ["Watcher", "watch_dirs"]

log = logging.getLogger("arrayfs.fs")

_INSTRUCTION = re.compile(r"^(?P<path>.+)\[-?\d*:-?\d*\]$")


def watch_dirs(sources) -> list[tuple[str, bool]]:
    """``(directory, recursive)`` pairs to watch for ``sources`` (the
    dataset's ``paths``: paths, patterns, directories, read instructions);
    only directories that exist, no duplicates; URLs are left out (they are
    polled)."""
    if isinstance(sources, (str, bytes, os.PathLike)):
        sources = [sources]
    out: dict[str, bool] = {}
    for entry in sources:
        if hasattr(entry, "filename"):  # a TFDS FileInstruction
            entry = entry.filename
        if is_remote(entry):
            continue
        text = os.path.abspath(os.path.expanduser(os.fsdecode(os.fspath(entry))))
        m = _INSTRUCTION.match(text)
        if m and not os.path.exists(text):
            text = m.group("path")
        if os.path.isdir(text):
            d, rec = text, False
        elif has_magic(text):
            parts = text.split(os.sep)
            fixed = []
            for p in parts:
                if glob.has_magic(p):
                    break
                fixed.append(p)
            d = os.sep.join(fixed) or os.sep
            rec = len(fixed) < len(parts) - 1  # a wildcard in a directory component
        else:
            d, rec = os.path.dirname(text) or os.sep, False
        while not os.path.isdir(d) and d != os.sep:  # watch the nearest existing ancestor
            d, rec = os.path.dirname(d), True
        out[d] = out.get(d, False) or rec
    return sorted(out.items())


class Watcher:
    """Refreshes a :class:`FsView` when files change under its sources.

    Args:
        view: the view (its dataset's ``paths`` say what to watch).
        debounce: quiet time (seconds) after the last event before
            refreshing; at most ``4 * debounce`` after the first event.
        retry: seconds between refresh attempts while a shard is pending
            (present but not yet a valid ArrayRecord file).
        poll_interval: seconds between refreshes when a source is a URL
            (``s3://``, ``gs://``, ...), whatever the local events.

    Attributes:
        operations: set by :func:`arrayfs.fs.daemon.run`; its
            ``invalidate(change)`` drops the kernel's caches of what a
            refresh changed.
        refreshes: number of refreshes that changed the view.

    ``start()``/``stop()`` are idempotent; :meth:`refresh_now` may be called
    directly (tests).
    """

    def __init__(self, view: FsView, *, debounce: float = 0.2, retry: float = 1.0, poll_interval: float = 60.0):
        self.view = view
        self.debounce = debounce
        self.retry = retry
        self.poll = poll_interval if has_remote(view.ds.paths) else None
        self.operations = None
        self.refreshes = 0
        self._event = threading.Event()
        self._stop = threading.Event()
        self._observer = None
        self._thread = None
        self._pending: tuple = ()

    def start(self) -> None:
        """Start the observer and the refresh thread (daemon threads)."""
        if self._thread is not None:
            return
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        watcher = self

        class _Handler(FileSystemEventHandler):
            def on_any_event(self, event):
                if event.event_type not in ("opened", "closed_no_write"):
                    watcher._event.set()

        self._observer = Observer()
        handler = _Handler()
        for d, recursive in watch_dirs(self.view.ds.paths):
            try:
                self._observer.schedule(handler, d, recursive=recursive)
            except OSError as e:
                log.warning("cannot watch %s: %s", d, e)
        self._observer.daemon = True
        self._observer.start()
        self._thread = threading.Thread(target=self._loop, name="arrayfs-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop watching (waits for a refresh in progress)."""
        self._stop.set()
        self._event.set()
        if self._observer is not None:
            try:
                self._observer.stop()
                self._observer.join(timeout=5)
            except Exception:  # shutting down: nothing more to do
                pass
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            waits = [t for t in (self.retry if self._pending else None, self.poll) if t is not None]
            fired = self._event.wait(min(waits) if waits else None)
            if self._stop.is_set():
                return
            if fired:
                # Debounce: wait until events stop for `debounce` seconds.
                first = time.monotonic()
                self._event.clear()
                while time.monotonic() - first < 4 * self.debounce:
                    if not self._event.wait(self.debounce):
                        break
                    self._event.clear()
            try:
                self.refresh_now()
            except Exception:  # a refresh failing must not end the watching
                log.exception("refresh failed; will retry on the next change")

    def refresh_now(self) -> ViewChange | None:
        """Refresh the view once and invalidate what changed; returns the
        :class:`ViewChange` or ``None``."""
        ops = self.operations
        change = self.view.refresh(prepare=getattr(ops, "prepare_refresh", None))
        if change is None:
            self._pending = ()
            return None
        new_pending = tuple(p for p, _ in change.pending)
        for path, reason in change.pending:
            if path not in self._pending:
                log.info("waiting for %s to be complete (%s)", path, reason)
        self._pending = new_pending
        if not (change.added or change.removed or change.fixed):
            return change
        self.refreshes += 1
        snap = self.view.snapshot
        log.info(
            "refreshed: %d shards, %d records (added %s, removed %s)",
            len(snap.shards), snap.num_records, list(change.added), list(change.removed),
        )
        if ops is not None:
            t = time.monotonic()
            n = ops.invalidate(change)
            log.debug("invalidated %d cached paths in %.3f s", n, time.monotonic() - t)
        return change
