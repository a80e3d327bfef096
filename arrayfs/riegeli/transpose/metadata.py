"""The file metadata chunk (type ``'m'``) and the message it holds.

The metadata chunk is the transposed encoding of one serialized
``riegeli.RecordsMetadata`` (``riegeli/records/records_metadata.proto``)
with ``num_records`` 0 in its chunk header (riegeli
``doc/riegeli_records_file_format.md``, "File metadata chunk").
"""

from __future__ import annotations

from ..varint import VarintError, read_varint
from .decode import decode_transposed_chunk

__all__ = ["decode_records_metadata", "parse_records_metadata"]


def decode_records_metadata(data, decoded_data_size: int) -> bytes:
    """The serialized ``RecordsMetadata`` held by a file metadata chunk
    (type ``'m'``): its data decoded as a transposed chunk of one record.

    Raises :class:`~arrayfs.riegeli.transpose.TransposeError` as
    :func:`~arrayfs.riegeli.transpose.decode_transposed_chunk`.
    """
    values, _ = decode_transposed_chunk(data, 1, decoded_data_size)
    return bytes(values)


# RecordsMetadata fields (riegeli/records/records_metadata.proto).
_METADATA_FIELDS = {
    1: "file_comment",
    2: "record_type_name",
    3: "file_descriptor",
    4: "record_writer_options",
    5: "num_records",
}


def _proto_fields(buf: bytes):
    """Top-level fields of a serialized message as ``(number, wire_type,
    value)``: ints for varint/fixed, bytes for length-delimited. Raises
    ``ValueError`` on malformed input or groups."""
    pos = 0
    n = len(buf)
    while pos < n:
        key, pos = read_varint(buf, pos)
        number, wt = key >> 3, key & 7
        if number == 0:
            raise ValueError(f"field number 0 at byte {pos}")
        if wt == 0:
            value, pos = read_varint(buf, pos)
        elif wt == 1 or wt == 5:
            size = 8 if wt == 1 else 4
            if pos + size > n:
                raise ValueError(f"truncated fixed field at byte {pos}")
            value = int.from_bytes(buf[pos : pos + size], "little")
            pos += size
        elif wt == 2:
            size, pos = read_varint(buf, pos)
            if pos + size > n:
                raise ValueError(f"truncated length-delimited field at byte {pos}")
            value = bytes(buf[pos : pos + size])
            pos += size
        else:
            raise ValueError(f"unsupported wire type {wt} at byte {pos}")
        yield number, wt, value


def parse_records_metadata(serialized) -> dict:
    """Decode the fields of a serialized ``riegeli.RecordsMetadata``.

    Returns a dict with ``file_comment``, ``record_type_name``,
    ``record_writer_options`` (``str``, empty when unset), ``num_records``
    (``int``, 0 when unset), ``file_descriptor`` (``list`` of serialized
    ``google.protobuf.FileDescriptorProto`` bytes), ``file_descriptor_names``
    (their ``name`` fields) and ``extensions`` (``list`` of ``(field_number,
    wire_type, value)`` for fields outside 1..5, e.g. extensions 1000+).

    Raises ``ValueError`` if ``serialized`` is not a valid message.
    """
    buf = bytes(serialized)
    out = {
        "file_comment": "",
        "record_type_name": "",
        "record_writer_options": "",
        "num_records": 0,
        "file_descriptor": [],
        "file_descriptor_names": [],
        "extensions": [],
    }
    try:
        for number, wt, value in _proto_fields(buf):
            name = _METADATA_FIELDS.get(number)
            if name is None:
                out["extensions"].append((number, wt, value))
            elif number == 5:
                if wt != 0:
                    raise ValueError("num_records is not a varint")
                out[name] = value - (1 << 64) if value >= 1 << 63 else value
            elif wt != 2:
                raise ValueError(f"field {number} is not length-delimited")
            elif number == 3:
                out["file_descriptor"].append(value)
                fname = ""
                for fnum, fwt, fval in _proto_fields(value):
                    if fnum == 1 and fwt == 2:
                        fname = fval.decode("utf-8", "replace")
                out["file_descriptor_names"].append(fname)
            else:
                out[name] = value.decode("utf-8", "replace")
    except VarintError as e:
        raise ValueError(f"RecordsMetadata: {e}") from None
    return out
