"""A static HTTP server on loopback for the ``https://`` (fsspec HTTP)
tests: serves a directory, with a directory index (as nginx's autoindex
or ``python -m http.server``, which fsspec's HTTP glob lists), ``Range``
requests, a strong ``ETag`` and ``If-Match`` (412 when it does not match).

Each of those can be turned off while it runs, to be the servers that lack
them: ``ranges=False`` answers every GET with the whole object (200), as
``python -m http.server`` does; ``etags=False`` sends no ETag (only
``Last-Modified``); ``if_match=False`` sends an ETag but ignores
``If-Match``. It runs in a thread of the test process; :meth:`stop` ends it.
"""

from __future__ import annotations

import os
import re
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["StaticServer"]

_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")


class _Handler(SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    def send_head(self):
        path = self.translate_path(self.path)
        if os.path.isdir(path):
            return super().send_head()  # the directory index
        try:
            f = open(path, "rb")
        except OSError:
            self.send_error(404)
            return None
        st = os.fstat(f.fileno())
        server: StaticServer = self.server.static
        etag = f'"{st.st_mtime_ns:x}-{st.st_size:x}"'
        if server.if_match and server.etags and self.headers.get("If-Match") not in (None, etag):
            f.close()
            self.send_error(412)
            return None
        start, end = 0, st.st_size
        m = _RANGE.match(self.headers.get("Range") or "") if server.ranges else None
        if m:
            start, end = int(m.group(1)), min(st.st_size, int(m.group(2) or st.st_size - 1) + 1)
            if start >= st.st_size:
                f.close()
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{st.st_size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{st.st_size}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(end - start))
        if server.ranges:
            self.send_header("Accept-Ranges", "bytes")
        if server.etags:
            self.send_header("ETag", etag)
        self.send_header("Last-Modified", self.date_time_string(int(st.st_mtime)))
        self.end_headers()
        f.seek(start)
        self._left = end - start
        return f

    def copyfile(self, source, outputfile):
        left = getattr(self, "_left", None)
        if left is None:  # the directory index
            return super().copyfile(source, outputfile)
        while left > 0:
            buf = source.read(min(1 << 16, left))
            if not buf:
                break
            outputfile.write(buf)
            left -= len(buf)


class StaticServer:
    """Serves ``directory`` at :attr:`endpoint` (``http://127.0.0.1:PORT``)."""

    def __init__(self, directory: str):
        self.ranges = True
        self.etags = True
        self.if_match = True
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, directory=str(directory)))
        self._httpd.daemon_threads = True
        self._httpd.static = self
        self.endpoint = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
