"""TFRecord files: a reader (and a small writer for tests and benchmarks).

Format (TensorFlow ``core/lib/io/record_writer.cc``; Beam's
``apache_beam/io/tfrecordio.py`` writes the same): a file is a sequence of
records, each::

    uint64 length          little-endian, bytes of data
    uint32 masked_crc32c(the 8 bytes of length)
    byte   data[length]
    uint32 masked_crc32c(data)

``masked_crc32c(x) = ((c >> 15) | (c << 17)) + 0xa282ead8`` (mod 2**32)
where ``c`` is the CRC-32C (Castagnoli) of ``x``, computed with
``google-crc32c``. There is no file header or footer; an empty file holds no
records.

Errors are :class:`TFRecordError`, naming the file and the byte offset of
the record at fault. :func:`parse_tfrecords` parses a whole ``bytes`` and
raises nothing but :class:`TFRecordError` for any input (a fuzz target's
contract); :func:`iter_tfrecords` streams from any binary file object.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator

import google_crc32c

__all__ = [
    "TFRecordError",
    "masked_crc32c",
    "iter_tfrecords",
    "parse_tfrecords",
    "read_tfrecords",
    "encode_tfrecord",
    "write_tfrecords",
    "HEADER_SIZE",
    "FOOTER_SIZE",
]

HEADER_SIZE = 12  # uint64 length + uint32 masked CRC of the length
FOOTER_SIZE = 4  # uint32 masked CRC of the data

_HEADER = struct.Struct("<QI")
_CRC = struct.Struct("<I")
_MASK_DELTA = 0xA282EAD8
# Largest single read when a record's length asks for more than the
# buffer holds: a corrupt length (its checksum can be forged) then costs
# memory only for bytes that really exist in the file.
_MAX_READ = 64 << 20


class TFRecordError(ValueError):
    """A TFRecord file is malformed: a checksum does not match, or the file
    ends inside a record.

    Attributes:
        reason: what is wrong (``str``).
        path: the file or URL (``str``), or ``None`` if unknown.
        offset: byte offset of the record at fault (its length field), or
            ``None``. For a compressed file, the offset in the decompressed
            stream.
    """

    def __init__(self, reason: str, path: str | None = None, offset: int | None = None):
        self.reason = reason
        self.path = path
        self.offset = offset
        where = [str(path)] if path is not None else []
        if offset is not None:
            where.append(f"byte {offset}")
        super().__init__(": ".join(where + [reason]))

    def __reduce__(self):
        # Crosses process boundaries (Beam workers): rebuild with all fields.
        return (type(self), (self.reason, self.path, self.offset))


def masked_crc32c(data) -> int:
    """The masked CRC-32C TFRecord stores (``int`` in ``[0, 2**32)``)."""
    c = google_crc32c.value(bytes(data))
    return ((((c >> 15) | (c << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


def iter_tfrecords(stream, *, path: str | None = None, verify: bool = True,
                   buffer_size: int = 1 << 20) -> Iterator[bytes]:
    """Yield the data of each record of a TFRecord stream, in file order.

    Args:
        stream: a binary file object (``read(n) -> bytes``); read
            sequentially, never seeked.
        path: the file's name for error messages (default: the stream's
            ``name`` attribute, else ``"<stream>"``).
        verify: check both checksums of every record (the length checksum is
            what tells a TFRecord file from any other file).
        buffer_size: bytes per read.

    Yields:
        ``bytes``: each record's data (``length`` bytes).

    Raises:
        TFRecordError: a length or data checksum does not match, or the
            stream ends inside a record (truncated file).
        OSError: reading the stream failed.
    """
    name = path if path is not None else str(getattr(stream, "name", "<stream>"))
    unpack_header = _HEADER.unpack_from
    unpack_crc = _CRC.unpack_from
    crc = google_crc32c.value
    buf = b""
    pos = 0  # next record's position in buf
    base = 0  # file offset of buf[0]
    while True:
        if len(buf) - pos < HEADER_SIZE:
            chunk = stream.read(buffer_size)
            if not chunk:
                left = len(buf) - pos
                if left == 0:
                    return
                raise TFRecordError(
                    f"truncated file: {left} bytes at the end are not a record header "
                    f"({HEADER_SIZE} bytes)", name, base + pos)
            buf = buf[pos:] + chunk
            base += pos
            pos = 0
            continue
        length, length_crc = unpack_header(buf, pos)
        if verify:
            c = crc(buf[pos:pos + 8])
            if ((((c >> 15) | (c << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF != length_crc:
                raise TFRecordError("bad length checksum: not a TFRecord file, or a corrupt record", name, base + pos)
        end = pos + HEADER_SIZE + length + FOOTER_SIZE
        if end > len(buf):
            buf, base = _fill(stream, buf, pos, base, end - pos, buffer_size, name, length)
            pos, end = 0, end - pos
        data = buf[pos + HEADER_SIZE:end - FOOTER_SIZE]
        if verify:
            c = crc(data)
            if ((((c >> 15) | (c << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF != unpack_crc(buf, end - 4)[0]:
                raise TFRecordError(f"bad data checksum in a record of {length} bytes", name, base + pos)
        yield data
        pos = end


def _fill(stream, buf: bytes, pos: int, base: int, need: int, buffer_size: int, name: str, length: int):
    """``(buf, base)`` with the record at ``buf[pos:]`` whole at ``buf[0:]``:
    reads until ``need`` bytes from ``pos`` are there, or raises at EOF."""
    parts = [buf[pos:]]
    have = len(parts[0])
    while have < need:
        chunk = stream.read(min(max(need - have, buffer_size), _MAX_READ))
        if not chunk:
            raise TFRecordError(
                f"truncated file: a record of {length} bytes needs {need} bytes, "
                f"the file ends after {have}", name, base + pos)
        parts.append(chunk)
        have += len(chunk)
    return b"".join(parts), base + pos


class _BytesStream:
    """``read(n)`` over a bytes-like object, without copying it first."""

    def __init__(self, data):
        self._view = memoryview(data).cast("B")
        self._pos = 0

    def read(self, n: int) -> bytes:
        out = bytes(self._view[self._pos:self._pos + n])
        self._pos += len(out)
        return out


def parse_tfrecords(data, *, path: str = "<bytes>", verify: bool = True) -> list[bytes]:
    """All records of a TFRecord file held in memory (``bytes``-like).

    Returns ``list[bytes]``. Raises :class:`TFRecordError` (and nothing
    else) for any malformed input.
    """
    return list(iter_tfrecords(_BytesStream(data), path=path, verify=verify))


def read_tfrecords(path, *, verify: bool = True) -> Iterator[bytes]:
    """Records of the local TFRecord file ``path`` (see :func:`iter_tfrecords`).

    Raises :class:`TFRecordError`, or ``OSError`` if the file cannot be read.
    """
    import os

    name = os.fspath(path)
    with open(name, "rb", buffering=0) as fh:
        yield from iter_tfrecords(fh, path=name, verify=verify)


def encode_tfrecord(data) -> bytes:
    """One record in TFRecord framing (header, data, checksum)."""
    data = bytes(data)
    length = struct.pack("<Q", len(data))
    return b"".join((length, _CRC.pack(masked_crc32c(length)), data, _CRC.pack(masked_crc32c(data))))


def write_tfrecords(stream, records: Iterable) -> int:
    """Write ``records`` (``bytes``-like) to a binary stream as TFRecords.

    Returns the bytes written.
    """
    n = 0
    for r in records:
        b = encode_tfrecord(r)
        stream.write(b)
        n += len(b)
    return n
