"""Fuzz target: the TFRecord reader.

Input: the bytes of a TFRecord file. Passes when
:func:`arrayfs.tfrecord.parse_tfrecords` returns records or raises
:class:`TFRecordError` (its documented contract: nothing else, for any
input), with and without checksum verification; records parsed with
verification come back the same when written and parsed again.

Run: ``python fuzz/fuzz_tfrecord.py [libFuzzer flags] fuzz/corpus/tfrecord``.
"""

import os
import random
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _harness  # noqa: E402

with _harness.instrumented():
    from arrayfs.tfrecord import TFRecordError, encode_tfrecord, masked_crc32c, parse_tfrecords


def fix_checksums(buf: bytearray) -> bytearray:
    """Recompute, in place, both checksums of each record whose bytes are
    all there, so that mutations reach past the checksum checks."""
    pos = 0
    while pos + 12 <= len(buf):
        length = struct.unpack_from("<Q", buf, pos)[0]
        struct.pack_into("<I", buf, pos + 8, masked_crc32c(buf[pos : pos + 8]))
        end = pos + 12 + length + 4
        if end > len(buf):
            break
        struct.pack_into("<I", buf, end - 4, masked_crc32c(buf[pos + 12 : end - 4]))
        pos = end
    return buf


def mutate(data: bytes, max_size: int, seed: int) -> bytes:
    import atheris

    out = atheris.Mutate(data, max_size)
    if random.Random(seed).random() < 0.5:
        out = bytes(fix_checksums(bytearray(out)))
    return out


def check(data: bytes) -> None:
    try:
        parse_tfrecords(data, verify=False)
    except TFRecordError:
        pass
    records = parse_tfrecords(data)
    assert b"".join(encode_tfrecord(r) for r in records) == data, "records do not rebuild the file"


EXPECTED = (TFRecordError,)

if __name__ == "__main__":
    _harness.main(check, EXPECTED, mutator=mutate)
