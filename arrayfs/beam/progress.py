"""Progress of a conversion: input bytes consumed, shown as a tqdm bar.

Workers of a local run (the DirectRunner, in this process or in worker
processes) each keep a tiny file in a directory the launcher made, holding
the input bytes they have consumed; the launcher sums them a few times a
second. Workers on a cluster do not see that directory and write nothing;
there the launcher reads the ``input_bytes`` Beam counter while the job
runs. Both are cheap: a worker rewrites its file at most every 0.25 s.
"""

from __future__ import annotations

import os
import threading
import time
import uuid

__all__ = ["WorkerProgress", "ProgressBar"]

_EVERY = 0.25  # seconds between a worker's writes and the bar's polls


class WorkerProgress:
    """Worker side: counts input bytes; ``directory=None`` (or a directory
    this worker cannot see) makes it a no-op."""

    def __init__(self, directory: str | None):
        self.directory = directory
        self._fd = None
        self._total = 0
        self._last = 0.0

    def start(self) -> None:
        if self.directory and os.path.isdir(self.directory) and self._fd is None:
            name = os.path.join(self.directory, f"{os.getpid()}-{uuid.uuid4().hex}")
            try:
                self._fd = os.open(name, os.O_WRONLY | os.O_CREAT, 0o600)
            except OSError:
                self._fd = None  # progress is a nicety; never fail the job for it

    def add(self, n: int) -> None:
        self._total += n
        if self._fd is not None:
            now = time.monotonic()
            if now - self._last >= _EVERY:
                self._last = now
                self._write()

    def flush(self) -> None:
        if self._fd is not None:
            self._write()

    def _write(self) -> None:
        try:
            os.pwrite(self._fd, b"%020d" % self._total, 0)
        except OSError:
            pass

    def close(self) -> None:
        if self._fd is not None:
            self._write()
            os.close(self._fd)
            self._fd = None

    def __getstate__(self):
        # Pickled into workers before start(): only the directory travels.
        return {"directory": self.directory}

    def __setstate__(self, state):
        self.__init__(state["directory"])


def _read_total(directory: str) -> int:
    total = 0
    try:
        names = os.listdir(directory)
    except OSError:
        return 0
    for n in names:
        try:
            with open(os.path.join(directory, n), "rb") as fh:
                total += int(fh.read(20) or 0)
        except (OSError, ValueError):
            continue  # a file being rewritten; read it next time
    return total


class ProgressBar:
    """Launcher side: a tqdm bar of input bytes (``total`` bytes) on
    ``file``, fed by worker files in ``directory`` (polled on a thread) or
    by :meth:`set` (from Beam metrics)."""

    def __init__(self, total: int, file, directory: str | None, desc: str = "converting"):
        from tqdm import tqdm

        self._bar = tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                         file=file, leave=False)
        self._total = total
        self._directory = directory
        self._stop = threading.Event()
        self._thread = None
        if directory:
            self._thread = threading.Thread(target=self._poll, name="arrayfs-progress", daemon=True)
            self._thread.start()

    def set(self, n: int) -> None:
        # Retried bundles count twice; the bar never goes past the total.
        n = min(int(n), self._total)
        if n > self._bar.n:
            self._bar.update(n - self._bar.n)

    def _poll(self) -> None:
        while not self._stop.wait(_EVERY):
            self.set(_read_total(self._directory))

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._bar.close()
