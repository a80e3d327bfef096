"""Fuzz target: decode a transposed chunk's data (type ``'t'``, and the
file metadata chunk ``'m'``).

Input: ``num_records`` and ``decoded_data_size`` (two ``uint32``
little-endian; the size is taken modulo 4 MiB so that what the documented
bound allows stays under the harness's memory cap), then the chunk data.
Passes when :func:`decode_transposed_chunk` returns records of the declared
count and total size, or raises :class:`TransposeError` (or the
``CompressionError``/``VarintError`` its caller, ``decode_chunk``, turns
into ``CorruptChunkError``); one-record inputs also go through
:func:`decode_records_metadata` and :func:`parse_records_metadata`
(``ValueError``).

Run: ``python fuzz/fuzz_transposed.py [libFuzzer flags] fuzz/corpus/transposed``.
"""

import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _harness  # noqa: E402

with _harness.instrumented():
    import numpy as np

    from arrayfs.riegeli.compression import CompressionError
    from arrayfs.riegeli.transpose import (
        TransposeError,
        decode_records_metadata,
        decode_transposed_chunk,
        parse_records_metadata,
    )
    from arrayfs.riegeli.varint import VarintError

MAX_DECODED = 4 << 20


def check(data: bytes) -> None:
    if len(data) < 8:
        return
    num_records, decoded_data_size = struct.unpack_from("<II", data)
    decoded_data_size %= MAX_DECODED
    # A chunk spans at least num_records bytes (spec: padding), so a real
    # file bounds the count by its size; the input's size bounds it here.
    num_records %= 4 * len(data)
    body = data[8:]
    values, offsets = decode_transposed_chunk(body, num_records, decoded_data_size)
    assert len(offsets) == num_records + 1 and offsets[0] == 0, (len(offsets), num_records)
    assert int(offsets[-1]) == decoded_data_size == len(values), (int(offsets[-1]), decoded_data_size, len(values))
    assert (np.diff(offsets) >= 0).all(), "offsets decrease"
    if num_records == 1:
        meta = decode_records_metadata(body, decoded_data_size)
        assert meta == bytes(values)
        try:
            parse_records_metadata(meta)
        except ValueError:
            pass


EXPECTED = (TransposeError, CompressionError, VarintError)

if __name__ == "__main__":
    _harness.main(check, EXPECTED)
