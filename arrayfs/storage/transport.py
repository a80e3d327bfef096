"""Ranged GETs through fsspec: one coroutine per request, pinned to the
version the listing saw.

s3fs's file objects pin a version with ``If-Match: <ETag>``, but they take
the ETag from a ``HEAD`` made when each file object opens
(``AbstractBufferedFile.details``), which was the second request of every
shard. Here the ETag (S3) or generation (GCS) comes from the listing and
goes with every GET: ``If-Match`` on S3 (a replaced object answers 412),
``generation=`` on GCS (a replaced object answers 404, or its old bytes on
a versioned bucket). On ``http(s)://`` the listing's ETag goes as
``If-Match`` (a strong one: a weak ETag never matches there), and each
answer's ``ETag``, ``Last-Modified`` and total size (``Content-Range``) are
compared with the listing's, for servers that ignore ``If-Match`` or send
no ETag; a server that sends none of them cannot be pinned. Other fsspec
backends (``memory://``, ...) get plain ranged reads.

A transport answers ``get(key, start, end, pin)`` (a coroutine on
:attr:`loop`), ``info(key)`` (an fsspec-style info dict, one metadata
request) and :meth:`classify` of its errors; :mod:`.obstore_backend` is the
other one.
"""

from __future__ import annotations

import asyncio
import errno
from dataclasses import dataclass

from . import aio

__all__ = ["FsspecTransport", "HttpPin", "ObjectReplaced", "RangeIgnored", "MISSING", "REPLACED", "PERMANENT",
           "RETRY", "BEYOND"]

# What an error means for a read (see classify()).
MISSING, REPLACED, PERMANENT, RETRY, BEYOND = "missing", "replaced", "permanent", "retry", "beyond"


def _is_precondition(e: BaseException) -> bool:
    text = str(e)
    return (type(e).__name__ in ("FileExpired", "PreconditionError")
            or "PreconditionFailed" in text or "pre-conditions" in text or "412" in text.split(":")[0])


class ObjectReplaced(Exception):
    """An answer came from another version of the object than the one
    pinned (its ETag, Last-Modified or total size differ)."""


class RangeIgnored(Exception):
    """The server answered a ranged GET with more bytes than asked: it does
    not honour ``Range`` requests."""


@dataclass(frozen=True)
class HttpPin:
    """What an ``http(s)://`` object was when listed: its ``ETag``,
    ``Last-Modified`` (as the server spells them; ``None`` when not sent)
    and size (bytes)."""

    etag: str | None
    modified: str | None
    size: int | None


def _check_version(headers, pin: HttpPin | None) -> None:
    """Raise :class:`ObjectReplaced` when an answer's headers show another
    version than ``pin``."""
    if pin is None:
        return
    etag, modified = headers.get("ETag"), headers.get("Last-Modified")
    total = headers.get("Content-Range", "").rpartition("/")[2]
    if pin.etag and etag and etag != pin.etag:
        raise ObjectReplaced(f"ETag {etag}, listed {pin.etag}")
    if pin.modified and modified and modified != pin.modified:
        raise ObjectReplaced(f"Last-Modified {modified}, listed {pin.modified}")
    if pin.size is not None and total.isdigit() and int(total) != pin.size:
        raise ObjectReplaced(f"{total} bytes, listed {pin.size}")


def _check_partial(response, start: int, end: int) -> None:
    """Raise :class:`RangeIgnored` when ``response`` to a GET of bytes
    ``[start, end)`` is not just those bytes (a 200 with the whole object),
    before its body is read."""
    if response.status == 206:
        return
    length = response.headers.get("Content-Length")
    if start == 0 and length is not None and length.isdigit() and int(length) == end:
        return  # the range was the whole object
    raise RangeIgnored(f"the server answered {response.status} with {length or 'an unknown number of'} bytes "
                       f"to a GET of bytes [{start}, {end}): it does not honour Range requests")


def info_within(fs, key: str, timeout: float | None) -> dict:
    """``fs.info(key)``, given up after ``timeout`` seconds on async file
    systems (fsspec's ``FSTimeoutError``, a ``TimeoutError``): gcsfs's
    requests have no timeout of their own. Sync file systems (``memory://``)
    answer without a network."""
    if timeout is not None and getattr(fs, "async_impl", False):
        return fs.info(key, timeout=timeout)
    return fs.info(key)


class FsspecTransport:
    """Ranged GETs through an fsspec file system ``fs``."""

    name = "fsspec"

    def __init__(self, fs):
        self.fs = fs
        proto = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        self.protocol = proto
        self.kind = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "http": "http", "https": "http"}.get(proto, "other")
        self.loop = fs.loop if getattr(fs, "async_impl", False) else aio.default_loop()

    def key_of(self, url: str) -> str:
        """The object's path within :attr:`fs` (``bucket/key``)."""
        return self.fs._strip_protocol(url)

    def pin_of(self, info: dict):
        """What to pin each GET to: the ETag on S3, the generation on GCS,
        an :class:`HttpPin` on HTTP (``None``: no pin)."""
        if self.kind == "s3":
            return info.get("ETag") or info.get("etag")
        if self.kind == "gcs":
            g = info.get("generation")
            return str(g) if g not in (None, "") else None
        if self.kind == "http":
            size = info.get("size")
            pin = HttpPin(info.get("ETag"), info.get("Last-Modified"), int(size) if size is not None else None)
            return pin if pin.etag or pin.modified else None
        return None

    def info(self, key: str, timeout: float | None = None) -> dict:
        """``key``'s fsspec info dict (one metadata request), within
        ``timeout`` seconds (raises ``TimeoutError``)."""
        return info_within(self.fs, key, timeout)

    def invalidate(self, key: str) -> None:
        self.fs.invalidate_cache(key)

    async def get(self, key: str, start: int, end: int, pin) -> bytes:
        fs = self.fs
        if self.kind == "s3":
            bucket, path, vers = fs.split_path(key)
            kw = {"Range": f"bytes={start}-{end - 1}"}
            if pin:
                kw["IfMatch"] = pin
            if vers:
                kw["VersionId"] = vers
            resp = await fs._call_s3("get_object", Bucket=bucket, Key=path, **kw, **fs.req_kw)
            try:
                return await resp["Body"].read()
            finally:
                resp["Body"].close()
        if self.kind == "gcs":
            kw = {"generation": pin} if pin else {}
            return await fs._cat_file(key, start=start, end=end, **kw)
        if self.kind == "http":
            return await self._http_get(key, start, end, pin)
        if getattr(fs, "async_impl", False):
            return await fs._cat_file(key, start=start, end=end)
        return await asyncio.to_thread(fs.cat_file, key, start=start, end=end)

    async def _http_get(self, key: str, start: int, end: int, pin: HttpPin | None) -> bytes:
        """Bytes ``[start, end)`` of ``key`` (a URL), pinned to ``pin``: sent
        as ``If-Match`` when a strong ETag (412: :class:`ObjectReplaced`),
        and checked against the answer's headers (fsspec's ``_cat_file``
        shows neither the status nor the headers)."""
        fs = self.fs
        kw = fs.kwargs.copy()
        headers = dict(kw.pop("headers", None) or {})
        headers["Range"] = f"bytes={start}-{end - 1}"
        if pin is not None and pin.etag and not pin.etag.startswith("W/"):
            headers["If-Match"] = pin.etag
        session = await fs.set_session()
        async with session.get(fs.encode_url(key), headers=headers, **kw) as r:
            if r.status == 412:
                raise ObjectReplaced(f"If-Match {pin.etag if pin else None} failed (412)")
            fs._raise_not_found_for_status(r, key)
            _check_version(r.headers, pin)
            _check_partial(r, start, end)
            return await r.read()

    def classify(self, e: BaseException, pinned: bool) -> str:
        """What ``e`` from :meth:`get` means: :data:`MISSING` (no object; on
        GCS with a generation pinned, also a replaced one), :data:`REPLACED`
        (a precondition failed), :data:`BEYOND` (the range starts past the
        end), :data:`PERMANENT` (no retry helps), else :data:`RETRY`."""
        if isinstance(e, FileNotFoundError):
            return MISSING
        if isinstance(e, ObjectReplaced):
            return REPLACED
        if isinstance(e, RangeIgnored):
            return PERMANENT
        if _is_precondition(e):
            return REPLACED
        if isinstance(e, OSError) and e.errno == errno.EINVAL and "pre-conditions" in str(e):
            return REPLACED
        text = str(e)
        if "InvalidRange" in text or "416" in text.split(":")[0] or "Requested Range Not Satisfiable" in text:
            return BEYOND
        if isinstance(e, (PermissionError, IsADirectoryError, NotADirectoryError, ValueError, TypeError)):
            return PERMANENT
        return RETRY
