"""Decoded chunk values that also hold their records already cut.

A decoder that produces each record as its own ``bytes`` on the way (the
transposed decoder, for chunks of whole non-proto records) joins them into
:class:`RecordBytes`: the ``values`` of the chunk layer's ``(values,
offsets)`` pair, which also keeps the list. Cutting the records again would
cost one Python operation per record; :func:`arrayfs.riegeli.chunk.split_records`
hands out slices of the list instead.
"""

from __future__ import annotations

__all__ = ["RecordBytes", "decoded_nbytes"]

# Bytes of a bytes object besides its contents, and of its list slot.
_PER_RECORD = 33 + 8


class RecordBytes(bytes):
    """The records back to back (a ``bytes``: slicing gives plain
    ``bytes``), with ``records``, the same records as a ``list[bytes]``."""

    records: list

    @classmethod
    def join(cls, records: list) -> RecordBytes:
        """``records`` (two or more ``bytes``) joined, keeping the list."""
        values = cls(b"".join(records))
        values.records = records
        return values


def decoded_nbytes(values, offsets) -> int:
    """Bytes of memory a decoded chunk ``(values, offsets)`` holds: with
    :class:`RecordBytes`, its list of records too."""
    n = len(values) + offsets.nbytes
    if type(values) is RecordBytes:
        n += len(values) + _PER_RECORD * len(values.records)
    return n
