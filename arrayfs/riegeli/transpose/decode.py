"""``decode_transposed_chunk``: parse a transposed chunk and pick a decoder.

Upstream: riegeli ``chunk_encoding/transpose_decoder.cc``
(``TransposeDecoder::Decode`` without field projection: records are
decoded whole). Small chunks go to the interpreter (``interpreter.py``),
where numpy's per-call cost would dominate; the rest to the vectorised
decoder (``vector.py``). Both accept exactly what upstream's decoder
accepts, except data no encoder writes where one buffer is read by states
of different kinds (refused).
"""

from __future__ import annotations

from .chunk_data import parse_chunk, reserve_heads
from .errors import fail
from .interpreter import decode_scalar
from .vector import BLOCK_VISITS, SUB_HEAD_BYTES, decode_vector

__all__ = ["decode_transposed_chunk", "parse_for_scalar", "parse_for_vector"]

# Chunks with decoded_data_size + 16 * num_records up to this use the
# interpreter: below it the vectorised decoder's fixed cost (a few hundred
# numpy calls) is not repaid.
SCALAR_MAX_WORK = 24576

_RESERVE = reserve_heads(SUB_HEAD_BYTES * BLOCK_VISITS)


def parse_for_scalar(data, num_records: int, decoded_data_size: int):
    """The chunk parsed for :func:`~.interpreter.decode_scalar`."""
    return parse_chunk(data, num_records, decoded_data_size)


def parse_for_vector(data, num_records: int, decoded_data_size: int):
    """The chunk parsed for :func:`~.vector.decode_vector` (with room for
    the heads after the buffers)."""
    return parse_chunk(data, num_records, decoded_data_size, reserve=_RESERVE)


def decode_transposed_chunk(data, num_records: int, decoded_data_size: int):
    """Decode the data of a transposed chunk (type ``'t'``, or ``'m'`` with
    ``num_records`` 1) into its records.

    Args:
        data: the chunk data, bytes-like (a memoryview of an mmap works).
        num_records: records the chunk header declares.
        decoded_data_size: bytes of all records together, from the header.

    Returns:
        ``(values, offsets)``: ``values`` a bytes-like of
        ``decoded_data_size`` bytes (``bytes`` or a ``memoryview`` of a
        uint8 array) holding the records back to back; ``offsets`` int64 of
        shape ``(num_records + 1,)``, ``offsets[0] == 0``,
        ``offsets[-1] == decoded_data_size``; record ``i`` is
        ``values[offsets[i]:offsets[i + 1]]``.

    Raises:
        TransposeError: malformed data, or data that disagrees with
            ``num_records`` / ``decoded_data_size``. No more is allocated
            than a small multiple of ``decoded_data_size + num_records +
            len(data)``; a valid chunk takes about 2x its decoded size
            at its peak, plus about 3 MiB.
    """
    if num_records < 0 or decoded_data_size < 0:
        fail("negative record count or size")
    if num_records >= 1 << 63 or decoded_data_size >= 1 << 63:
        fail(f"{num_records} records of {decoded_data_size} bytes: past what a file can hold")
    if decoded_data_size + 16 * num_records <= SCALAR_MAX_WORK:
        return decode_scalar(parse_for_scalar(data, num_records, decoded_data_size), num_records, decoded_data_size)
    return decode_vector(parse_for_vector(data, num_records, decoded_data_size), num_records, decoded_data_size)
