"""A real S3-protocol server on loopback for tests and benchmarks, and a
small fault-injecting proxy in front of it (of any HTTP store: the GCS
emulator's too).

The server is moto in server mode: started here in a thread
(``ThreadedMotoServer(port=0)``), or, when ``ARRAYFS_TEST_S3_ENDPOINT`` is
set (CI starts ``moto_server`` before the tests), the one at that URL.
s3fs talks to it over HTTP exactly as to AWS; nothing of fsspec or
botocore is mocked.

:class:`FaultProxy` forwards every request to the server and can count
requests, add latency, answer ``503 SlowDown`` to the next N requests,
refuse everything, or take requests and never answer them (a stalled
connection), so tests see real retries, real timeouts and real failures.
"""

from __future__ import annotations

import http.client
import logging
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from _stores import LoopbackStore

__all__ = ["S3Server", "FaultProxy", "start_s3"]

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
        "transfer-encoding", "upgrade"}
_SLOW_DOWN = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
              b"<Message>Please reduce your request rate.</Message></Error>")


class S3Server(LoopbackStore):
    """An S3 endpoint on loopback: ``endpoint`` (``http://127.0.0.1:PORT``)."""

    ENV = CREDENTIALS
    EXTERNAL = "ARRAYFS_TEST_S3_ENDPOINT"

    def _start(self) -> str:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        return f"http://{host}:{port}"

    def _stop(self) -> None:
        self._server.stop()

    def filesystem(self, endpoint: str | None = None):
        """A fresh s3fs file system on this server (or on ``endpoint``)."""
        import s3fs

        return s3fs.S3FileSystem(endpoint_url=endpoint or self.endpoint, skip_instance_cache=True,
                                 use_listings_cache=False)


def start_s3() -> S3Server:
    return S3Server()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    def _any(self):
        proxy: FaultProxy = self.server.proxy
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        proxy._count(self.command, self.path, self.headers.get("User-Agent", ""))
        if proxy.latency:
            time.sleep(proxy.latency)
        if proxy._take_stall():
            proxy._released.wait(600)  # no answer until the proxy stops
            self.close_connection = True
            return
        if proxy._take_failure():
            self.send_response(503)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(_SLOW_DOWN)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(_SLOW_DOWN)
            return
        target = urllib.parse.urlsplit(proxy.upstream)
        conn = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
        try:
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            # A HEAD answer has no body but the object's Content-Length.
            if k.lower() not in _HOP and (k.lower() != "content-length" or self.command == "HEAD"):
                self.send_header(k, v)
        if self.command != "HEAD":
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any


class FaultProxy:
    """A loopback HTTP proxy in front of ``upstream`` (an S3 endpoint).

    Attributes (change them while it runs):
        latency: seconds added to every request.
        fail_next: the next this-many requests get ``503 SlowDown``.
        refuse: when ``True``, every request gets ``503 SlowDown``.
        stall_next: the next this-many requests are read and never
            answered (until :meth:`stop`).
        stall: when ``True``, every request is read and never answered.
        requests: ``{method: count}`` of requests seen (``reset()`` clears).
        gets: ``GET`` requests counted by path.
        lines: ``"METHOD path?query"`` of every request, in order.
        agents: the ``User-Agent`` of every request, in order (which
            client made it: obstore's ``object_store/...``, botocore's, ...).
    """

    def __init__(self, upstream: str, *, latency: float = 0.0):
        self.upstream = upstream
        self.latency = latency
        self.fail_next = 0
        self.refuse = False
        self.stall_next = 0
        self.stall = False
        self._released = threading.Event()
        self._lock = threading.Lock()
        self.requests: dict = {}
        self.gets: dict = {}
        self.lines: list = []
        self.agents: list = []
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.proxy = self
        self.endpoint = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def _count(self, method: str, path: str, agent: str) -> None:
        with self._lock:
            self.requests[method] = self.requests.get(method, 0) + 1
            self.lines.append(f"{method} {path}")
            self.agents.append(agent)
            if method == "GET":
                key = urllib.parse.urlsplit(path).path
                self.gets[key] = self.gets.get(key, 0) + 1

    def _take_failure(self) -> bool:
        with self._lock:
            if self.refuse:
                return True
            if self.fail_next > 0:
                self.fail_next -= 1
                return True
            return False

    def _take_stall(self) -> bool:
        with self._lock:
            if self.stall:
                return True
            if self.stall_next > 0:
                self.stall_next -= 1
                return True
            return False

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.gets.clear()
            self.lines.clear()
            self.agents.clear()

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self.requests.values())

    def stop(self) -> None:
        self._released.set()
        self._httpd.shutdown()
        self._httpd.server_close()
