"""Fuzz target: read and decode one chunk (simple, or any other type).

Input: 3 bytes, the chunk's physical offset in its file (``uint24``
little-endian; block headers sit at its multiples of 65,536), then the
file's bytes from that offset on. Passes when :func:`read_chunk` and
:func:`decode_chunk` end in records or an :class:`arrayfs.ArrayRecordError`,
and the three ways arrayfs reads a one-record chunk agree: the general
decode, :func:`decode_single_record` (the ``read_record`` fast path, which
must return ``None`` for anything it does not take) and the batched zstd
path (:func:`single_record_zstd_frames` + :func:`decompress_zstd_frames`).
For simple chunks :func:`decode_record_sizes` must give the decoded
records' sizes.

Run: ``python fuzz/fuzz_chunk.py [libFuzzer flags] fuzz/corpus/chunk``.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _harness  # noqa: E402

with _harness.instrumented():
    import numpy as np

    from arrayfs.errors import ArrayRecordError
    from arrayfs.riegeli.chunk import (
        SIMPLE,
        TRANSPOSED,
        decode_chunk,
        decode_record_sizes,
        decode_single_record,
        decompress_zstd_frames,
        read_chunk,
        single_record_zstd_frames,
    )

PREFIX = 3


def base_of(data: bytes) -> int:
    return int.from_bytes(data[:PREFIX], "little")


def check(data: bytes) -> None:
    if len(data) < PREFIX:
        return
    base = base_of(data)
    buf = data[PREFIX:]
    # The fast paths say None (or leave a chunk out) for what they do not
    # take; they must never raise, nor return what the general path refuses.
    fast = decode_single_record(buf, base, verify=True)
    sel, segs, sizes = single_record_zstd_frames(
        buf, np.zeros(1, np.int64), np.array([base], np.int64), np.array([len(buf)], np.int64), verify=True)
    batched = decompress_zstd_frames([(buf, segs, sizes)]) if len(sel) else []
    batched = batched[0] if batched else None
    try:
        header, chunk_data, end = read_chunk(buf, base, base=base, verify=True)
        values, offsets = decode_chunk(header, chunk_data, offset=base)
    except ArrayRecordError as e:
        # The fast paths take a lone record's size from the header (the
        # hashes hold) and skip its sizes block: a bad sizes block is the
        # one thing they may not notice.
        if "sizes" not in e.reason:
            assert fast is None, f"decode_single_record returned {fast[:16]!r} for a chunk decode_chunk refuses"
            assert batched is None, f"the batched zstd path returned {batched[:16]!r}; decode_chunk refuses it"
        raise
    assert end > base
    n = header.num_records if header.chunk_type in (SIMPLE, TRANSPOSED) else 0
    assert len(offsets) == n + 1 and offsets[0] == 0, (len(offsets), n)
    assert (np.diff(offsets) >= 0).all() and int(offsets[-1]) == len(values), "offsets do not fit the values"
    if n:
        assert len(values) == header.decoded_data_size, (len(values), header.decoded_data_size)
    for other, name in ((fast, "decode_single_record"), (batched, "the batched zstd path")):
        if other is not None:
            assert n == 1 and other == bytes(values), f"{name} disagrees with decode_chunk"
    if header.chunk_type == SIMPLE:
        _, sizes, _ = decode_record_sizes(chunk_data, n, header.decoded_data_size, offset=base)
        assert sizes.tolist() == np.diff(offsets).tolist(), "decode_record_sizes disagrees with decode_chunk"


EXPECTED = (ArrayRecordError,)

if __name__ == "__main__":
    _harness.main(check, EXPECTED, mutator=_harness.riegeli_mutator(prefix=PREFIX, base_of=base_of, keep_size=False))
