"""A GCS-protocol server on loopback for tests: ``gcp-storage-emulator``
(PyPI) in a process of its own, or, when ``ARRAYFS_TEST_GCS_ENDPOINT`` is
set (CI starts the emulator before the tests), the one at that URL.

gcsfs talks to it over HTTP as to Google's JSON API (``endpoint_url`` in
``storage_options``, ``token="anon"``); nothing of gcsfs is mocked.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request

from _stores import LoopbackStore, free_port

__all__ = ["GCSServer", "start_gcs", "GCS_ENV"]

#: What arrayfs users of an emulator (and these tests) need: no gRPC probe
#: of each bucket's type (arrayfs sets it when it imports gcsfs; here it is
#: spelled out for the fsspec calls the tests make themselves).
GCS_ENV = {"GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}


def _wait(endpoint: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            urllib.request.urlopen(endpoint + "/storage/v1/b", timeout=1)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


class GCSServer(LoopbackStore):
    """A GCS endpoint on loopback: ``endpoint`` (``http://127.0.0.1:PORT``)."""

    ENV = GCS_ENV
    EXTERNAL = "ARRAYFS_TEST_GCS_ENDPOINT"

    def _start(self) -> str:
        port = free_port()
        exe = os.path.join(os.path.dirname(sys.executable), "gcp-storage-emulator")
        self._proc = subprocess.Popen([exe, "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory",
                                       "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        endpoint = f"http://127.0.0.1:{port}"
        _wait(endpoint)
        return endpoint

    def _stop(self) -> None:
        self._proc.terminate()
        self._proc.wait(timeout=10)

    @property
    def storage_options(self) -> dict:
        return {"endpoint_url": self.endpoint, "token": "anon"}

    def filesystem(self):
        """A fresh gcsfs file system on this server."""
        import gcsfs

        return gcsfs.GCSFileSystem(endpoint_url=self.endpoint, token="anon", skip_instance_cache=True)


def start_gcs() -> GCSServer:
    return GCSServer()
