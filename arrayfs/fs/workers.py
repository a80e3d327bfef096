"""Worker processes: one mount served on every core (``-o workers=N``).

Each worker reads requests from its own clone of the FUSE device
(``FUSE_DEV_IOC_CLONE``) and keeps nothing per open file; the coordinator
(the process that mounted) answers INIT, then watches the sources and the
workers. A refresh forks a new generation holding the new snapshot and
stops the old one (``SIGUSR1``: finish the request in hand, exit) before
names are invalidated. A worker that dies is replaced; workers die with
the coordinator (``PR_SET_PDEATHSIG``). See docs/mounting.md, "Workers".
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import time
import warnings

__all__ = ["Workers", "RETIRED"]

log = logging.getLogger("arrayfs.fs")

RETIRED = 3  # exit status of a worker a newer generation replaced
_PR_SET_PDEATHSIG = 1


class Workers:
    """``count`` worker processes running ``serve(stop) -> bool`` (``True``
    when the session ended, ``False`` when ``stop()`` became true). Fork
    from the main thread: a worker dies with the thread that forked it."""

    def __init__(self, count: int, serve):
        self.count = count
        self._serve = serve
        self._pids: set = set()
        self.ended = False

    def start(self) -> None:
        """Fork workers until there are ``count``."""
        while len(self._pids) < self.count:
            self._pids.add(self._fork())

    def _fork(self) -> int:
        parent = os.getpid()
        sys.stdout.flush()
        sys.stderr.flush()
        with warnings.catch_warnings():
            # Python 3.12+ warns about forking a process with threads (the
            # watcher's): a worker only serves, it touches none of their locks.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid:
            return pid
        code = 1
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != parent:  # the coordinator died before prctl
                os._exit(1)
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(sig, signal.SIG_IGN)  # the coordinator ends the mount
            stop = []
            signal.signal(signal.SIGUSR1, lambda *_: stop.append(True))
            code = 0 if self._serve(lambda: bool(stop)) else RETIRED
        except BaseException:  # noqa: BLE001 - report, then leave without running the parent's cleanups
            log.exception("worker %d failed", os.getpid())
        finally:
            os._exit(code)

    def replace(self, timeout: float = 30.0) -> None:
        """Start a new generation of workers, then stop the old one; return
        once every old worker has exited (killed after ``timeout`` s)."""
        old, self._pids = self._pids, set()
        self.start()
        deadline = time.monotonic() + timeout
        while old:
            for pid in list(old):
                if self._reaped(pid):
                    old.discard(pid)
                elif time.monotonic() > deadline:
                    log.warning("worker %d did not stop; killing it", pid)
                    os.kill(pid, signal.SIGKILL)
                else:
                    # Again and again: a signal that lands just before the
                    # worker blocks reading the device does not wake it.
                    os.kill(pid, signal.SIGUSR1)
            if old:
                time.sleep(0.005)

    def _reaped(self, pid: int) -> bool:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return True
        if not done:
            return False
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
            self.ended = True  # it saw the session end
        elif not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == RETIRED):
            what = f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else f"status {os.WEXITSTATUS(status)}"
            log.error("worker %d died (%s)", pid, what)
        return True

    def check(self) -> bool:
        """Reap workers that exited and replace those that died; ``False``
        once the session has ended."""
        for pid in list(self._pids):
            if self._reaped(pid):
                self._pids.discard(pid)
        if not self.ended:
            self.start()
        return not self.ended

    def stop(self, timeout: float = 10.0) -> None:
        """Wait for the workers to see the session end (after an unmount),
        killing those still there after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while self._pids:
            for pid in list(self._pids):
                if self._reaped(pid):
                    self._pids.discard(pid)
                elif time.monotonic() > deadline:
                    os.kill(pid, signal.SIGKILL)
            if self._pids:
                time.sleep(0.01)
