"""Telling formats apart by their bytes: which record format a dataset
holds (for ``--decode auto``), and what kind of file one ``bytes`` value
is (for ``.decoded/`` file names and ``arrayfs cat`` descriptions).
Signatures: PNG (ISO/IEC 15948 5.2), JPEG (SOI + marker), GIF87a/89a,
RIFF ``WEBP``/``WAVE``, ``fLaC``, and numpy's ``\\x93NUMPY``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

__all__ = ["FORMATS", "sniff_format", "sniff_content", "SNIFF_RECORDS"]

#: What :func:`sniff_format` answers, in the order it tries them (raw last).
FORMATS = ("json", "example", "msgpack", "raw")
#: Records :func:`sniff_format` looks at by default.
SNIFF_RECORDS = 8


def sniff_content(data) -> str | None:
    """The file extension of an encoded value by its signature: ``"png"``,
    ``"jpg"``, ``"gif"``, ``"webp"``, ``"wav"``, ``"flac"``, ``"npy"``, or
    ``None``."""
    head = bytes(data[:16])
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if head.startswith(b"RIFF") and len(head) >= 12:
        return {b"WEBP": "webp", b"WAVE": "wav"}.get(head[8:12])
    if head.startswith(b"fLaC"):
        return "flac"
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    return None


def _is_json(record: bytes) -> bool:
    text = bytes(record).lstrip()
    if text[:1] not in (b"{", b"["):
        return False
    try:
        json.loads(record)
    except (ValueError, UnicodeDecodeError):
        return False
    return True


def _is_example(record: bytes) -> bool:
    try:
        from .example import Example
    except ImportError:
        return False
    from google.protobuf.message import DecodeError

    try:
        msg = Example.FromString(record)
    except (DecodeError, TypeError):
        return False
    if not msg.features.feature:
        return False
    if any(f.WhichOneof("kind") is None for f in msg.features.feature.values()):
        return False
    # Random bytes often parse as some protobuf; an Example has no field the
    # schema does not know, so nothing may be left once unknown fields go.
    msg.DiscardUnknownFields()
    return msg.ByteSize() == len(record)


def _is_msgpack_map(record: bytes) -> bool:
    try:
        import msgpack
    except ImportError:
        return False
    try:
        obj = msgpack.unpackb(record, raw=False, strict_map_key=False)
    except Exception:  # msgpack raises several unrelated types
        return False
    return isinstance(obj, dict)


_TESTS = {"json": _is_json, "example": _is_example, "msgpack": _is_msgpack_map}


def sniff_format(records: Iterable[bytes], *, limit: int = SNIFF_RECORDS) -> str:
    """The format of a dataset's records, from its first ``limit``
    non-empty ones: the first of ``"json"`` (a UTF-8 JSON object or array),
    ``"example"`` (a ``tf.train.Example`` with at least one feature and no
    unknown field), ``"msgpack"`` (a msgpack map) that every one of them
    is, else ``"raw"``. No records, or only empty ones: ``"raw"``.
    """
    sample = []
    for record in records:
        if len(record):
            sample.append(bytes(record))
            if len(sample) >= limit:
                break
    if not sample:
        return "raw"
    for name, test in _TESTS.items():
        if all(test(r) for r in sample):
            return name
    return "raw"

