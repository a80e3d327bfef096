"""What the loopback object stores of the tests share (``_s3server.py``:
moto; ``_gcsserver.py``: fake-gcs-server): a server started here or
named by an environment variable (CI starts them before the tests), its
buckets, a mount of a bucket through the command line, and the reads every
store must serve as local disk does.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time

__all__ = ["LoopbackStore", "free_port", "mounted", "check_reads"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LoopbackStore:
    """A store on loopback: ``endpoint`` (``http://127.0.0.1:PORT``).
    Subclasses name the environment they need (:attr:`ENV`, set unless the
    user set it), the variable naming an external server
    (:attr:`EXTERNAL`), and start one (:meth:`_start`, returning its
    endpoint) and make file systems on it (:meth:`filesystem`)."""

    ENV: dict = {}
    EXTERNAL = ""

    def __init__(self):
        for k, v in self.ENV.items():
            os.environ.setdefault(k, v)
        external = os.environ.get(self.EXTERNAL)
        self.endpoint = external.rstrip("/") if external else self._start()

    def _start(self) -> str:
        raise NotImplementedError

    def _stop(self) -> None:
        """Stop the server started here (none when external)."""

    def filesystem(self):
        raise NotImplementedError

    def make_bucket(self, name: str) -> str:
        fs = self.filesystem()
        if not fs.exists(name):
            fs.mkdir(name)
        return name

    def stop(self) -> None:
        if not os.environ.get(self.EXTERNAL):
            self._stop()


def upload(store, scheme: str, bucket: str, key: str, records, options: str = "group_size:1") -> str:
    """Write ``records`` with arrayfs's writer straight into ``bucket/key``
    of ``store`` (a test server with ``filesystem()``); returns the URL."""
    import arrayfs

    with store.filesystem().open(f"{bucket}/{key}", "wb") as f:
        with arrayfs.ArrayRecordWriter(f, options) as w:
            for r in records:
                w.write(r)
    return f"{scheme}://{bucket}/{key}"


@contextlib.contextmanager
def mounted(pattern: str, mnt, storage_options: dict, *args: str):
    """``arrayfs mount pattern mnt`` (background, ``--no-watch``, each of
    ``storage_options`` as ``--storage-option``, then ``args``), unmounted
    on exit."""
    cli = [sys.executable, "-m", "arrayfs.fs.cli", "mount", pattern, str(mnt), "--no-watch"]
    for k, v in storage_options.items():
        cli += ["--storage-option", f"{k}={v}"]
    p = subprocess.run([*cli, *args], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    try:
        yield mnt
    finally:
        for _ in range(50):
            if subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)


def check_reads(ds, records, rng, *, singles: int = 40, batch: int = 256) -> None:
    """``ds`` reads ``records``: random single records, a random batch, and
    in order."""
    for i in rng.integers(0, len(records), singles).tolist():
        assert ds[i] == records[i]
    idx = rng.integers(0, len(records), batch)
    assert ds.__getitems__(idx) == [records[i] for i in idx]
    assert list(ds) == records
