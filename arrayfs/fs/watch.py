"""Live refresh: shards that appear or vanish under the sources show up in
(or leave) the mount without remounting (docs/mounting.md, "Watch mode").

Local directories are watched through watchdog (inotify on Linux), with
events debounced; URL sources are listed afresh every ``poll_interval``
seconds; a half-written shard (left out by the dataset's refresh) is
retried every ``retry`` seconds. Each refresh is
:meth:`arrayfs.fs.core.Core.refresh`: the kernel's caches and the worker
processes follow.
"""

from __future__ import annotations

import glob
import logging
import os
import threading
import time

from ..paths import has_magic, has_remote, split_instruction
from ..storage import is_remote
from .view import FsView, ViewChange

__all__ = ["Watcher", "watch_dirs"]

log = logging.getLogger("arrayfs.fs")

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
        instruction = split_instruction(text)
        if instruction is not None and not os.path.exists(text):
            text = instruction[0]
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
    """Refreshes a view when files change under its sources.

    Args:
        view: the view (its dataset's ``paths`` say what to watch).
        refresh: what refreshes it (:meth:`arrayfs.fs.core.Core.refresh`;
            default: ``view.refresh``); returns a :class:`ViewChange` or
            ``None``.
        debounce: quiet time (seconds) after the last event before
            refreshing; at most ``4 * debounce`` after the first event.
        retry: seconds between refresh attempts while a shard is pending
            (present but not yet a valid ArrayRecord file).
        poll_interval: seconds between refreshes when a source is a URL
            (``s3://``, ``gs://``, ...), whatever the local events.

    The refreshing thread calls :meth:`step` in a loop (the coordinator's
    main thread), or :meth:`start` with ``thread=True`` runs that loop in a
    thread of its own. ``refreshes``: refreshes that changed the view.
    """

    def __init__(self, view: FsView, refresh=None, *, debounce: float = 0.2, retry: float = 1.0,
                 poll_interval: float = 60.0):
        self.view = view
        self.refresh = refresh or view.refresh
        self.debounce = debounce
        self.retry = retry
        self.poll = poll_interval if has_remote(view.ds.paths) else None
        self.refreshes = 0
        self._event = threading.Event()
        self._stop = threading.Event()
        self._observer = None
        self._thread = None
        self._pending: tuple = ()
        self._last = time.monotonic()

    def start(self, thread: bool = False) -> None:
        """Start the observer (and with ``thread``, a thread calling
        :meth:`step`); idempotent."""
        if self._observer is not None:
            return
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        changed = self._event

        class _Handler(FileSystemEventHandler):
            def on_any_event(self, event):
                if event.event_type not in ("opened", "closed_no_write"):
                    changed.set()

        self._observer = Observer()
        handler = _Handler()
        for d, recursive in watch_dirs(self.view.ds.paths):
            try:
                self._observer.schedule(handler, d, recursive=recursive)
            except OSError as e:
                log.warning("cannot watch %s: %s", d, e)
        self._observer.daemon = True
        self._observer.start()
        if thread:
            self._thread = threading.Thread(target=self._loop, name="arrayfs-watch", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop watching (waits for a refresh in progress in its thread)."""
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
            self.step(1.0)

    def step(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for a change, and refresh once one
        is due (events debounced; pending shards retried; URLs polled). A
        refresh that fails is logged and tried again on the next change."""
        waits = [t for t in (self.retry if self._pending else None, self.poll) if t is not None]
        due = self._last + min(waits) if waits else None
        fired = self._event.wait(timeout if due is None else max(0.0, min(timeout, due - time.monotonic())))
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
        elif due is None or time.monotonic() < due:
            return
        try:
            self.refresh_now()
        except Exception:  # a refresh failing must not end the watching
            log.exception("refresh failed; will retry on the next change")

    def refresh_now(self) -> ViewChange | None:
        """Refresh once; returns the :class:`ViewChange` or ``None``."""
        self._last = time.monotonic()
        change = self.refresh()
        if change is None:
            self._pending = ()
            return None
        for path, reason in change.pending:
            if path not in self._pending:
                log.info("waiting for %s to be complete (%s)", path, reason)
        self._pending = tuple(p for p, _ in change.pending)
        if change.added or change.removed or change.fixed:
            self.refreshes += 1
            snap = self.view.snapshot
            log.info("refreshed: %d shards, %d records (added %s, removed %s)", len(snap.shards), snap.num_records,
                     list(change.added), list(change.removed))
        return change
