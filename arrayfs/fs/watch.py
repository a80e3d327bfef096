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
    polled). A directory that does not exist is stood in for by its nearest
    existing ancestor, not recursively: the :class:`Watcher` asks again
    after each change, and watches each missing level as it appears
    (a recursive watch of, say, the directory holding the mountpoint would
    walk the mount itself)."""
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
            d, rec = os.path.dirname(d), False
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
        self._handler = None
        # (directory, recursive) -> (watchdog's ObservedWatch, the directory's
        # (st_dev, st_ino) when scheduled); directories that could not be watched.
        self._watches: dict = {}
        self._unwatchable: set = set()
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
        self._handler = _Handler()
        self._rewatch()
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
        """Refresh once, then follow directories that came or went (see
        :meth:`_rewatch`); returns the :class:`ViewChange` or ``None``.
        Raises what the refresh raises."""
        self._last = time.monotonic()
        try:
            change = self.refresh()
        finally:
            if self._observer is not None and self._rewatch():
                # Files may have appeared in a new directory before its watch
                # was in place: look once more.
                self._event.set()
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

    def _rewatch(self) -> bool:
        """Watch what :func:`watch_dirs` names now, and stop watching the
        rest. A directory removed and created again (watchdog ends a watch
        when its directory is deleted) or replaced by a rename (another
        inode) gets a new watch; a missing one is watched through its
        nearest existing ancestor until it exists. New watches are
        scheduled before old ones go, so no change falls between. Returns
        whether a watch was added. A directory that cannot be watched (no
        inotify watches left) is logged once and tried again next time."""
        want = watch_dirs(self.view.ds.paths)
        added = False
        for key in want:
            have = self._watches.get(key)
            ident = _identity(key[0])
            if have is not None and have[1] == ident and self._alive(have[0]):
                continue
            if have is not None:
                self._unschedule(key)
            try:
                watch = self._observer.schedule(self._handler, key[0], recursive=key[1])
            except OSError as e:
                if key not in self._unwatchable:
                    self._unwatchable.add(key)
                    log.warning("cannot watch %s: %s", key[0], e)
                continue
            self._unwatchable.discard(key)
            self._watches[key] = (watch, ident)
            added = True
        for key in set(self._watches) - set(want):
            self._unschedule(key)
        return added

    def _alive(self, watch) -> bool:
        """Whether watchdog still watches ``watch`` (its emitter stops
        itself when the watched directory is deleted)."""
        emitter = next((e for e in self._observer.emitters if e.watch == watch), None)
        return emitter is not None and not emitter.stopped_event.is_set()

    def _unschedule(self, key) -> None:
        watch, _ = self._watches.pop(key)
        try:
            self._observer.unschedule(watch)
        except (KeyError, OSError):  # already gone with its directory
            pass


def _identity(path: str) -> tuple:
    """``(st_dev, st_ino)`` of ``path``, ``()`` when it is gone."""
    try:
        st = os.stat(path)
    except OSError:
        return ()
    return st.st_dev, st.st_ino
