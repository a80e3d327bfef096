"""Fuzz target: the ArrayRecord footer and postscript messages
(:mod:`arrayfs.layout`).

Input: a piece size (``uint8``), the chunk count ``n`` and the sizes
block's length (two ``uint16`` little-endian), the footer chunk's decoded
sizes block (``n + 1`` varints), then its decoded values. The values are
also parsed as a postscript and as footer metadata. Passes when every
function returns or raises :class:`arrayfs.layout.LayoutError`, and the
footer index decodes alike from one buffer, from pieces of the given size
(how a compressed footer arrives) and through :func:`decode_chunk_footers`.

Run: ``python fuzz/fuzz_footer.py [libFuzzer flags] fuzz/corpus/footer``.
"""

import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _harness  # noqa: E402

with _harness.instrumented():
    import numpy as np

    from arrayfs.layout import (
        LayoutError,
        decode_chunk_footers,
        decode_footer_index,
        decode_footer_metadata,
        decode_postscript,
        footer_record_sizes,
    )

PREFIX = 5


def _as_rows(result) -> list:
    offsets, decoded, counts = result
    if isinstance(counts, tuple):
        group, last = counts
        counts = np.full(len(offsets), group, dtype=np.uint64)
        if len(counts):
            counts[-1] = last
    return np.stack([np.asarray(offsets, np.uint64), np.asarray(decoded, np.uint64),
                     np.asarray(counts, np.uint64)], axis=1).tolist()


def check(data: bytes) -> None:
    if len(data) < PREFIX:
        return
    piece = data[0]
    n, sizes_len = struct.unpack_from("<HH", data, 1)
    sizes = data[PREFIX : PREFIX + sizes_len]
    values = data[PREFIX + sizes_len :]
    for decode in (decode_postscript, decode_footer_metadata):
        try:
            decode(values)
        except LayoutError:
            pass
    size0, lengths = footer_record_sizes(sizes, n)
    assert len(lengths) == n
    try:
        whole = _as_rows(decode_footer_index([values], lengths, size0, total=len(values)))
    except LayoutError:
        whole = None
    if piece:
        pieces = [values[i : i + piece] for i in range(0, len(values), piece)]
        try:
            split = _as_rows(decode_footer_index(pieces, lengths, size0, total=len(values)))
        except LayoutError:
            split = None
        assert split == whole, f"footer index from pieces of {piece} bytes differs from one buffer"
    if size0 + int(np.asarray(lengths, np.int64).sum()) == len(values):
        offsets = size0 + np.concatenate(([0], np.cumsum(lengths, dtype=np.int64)))
        try:
            rows = decode_chunk_footers(values, offsets).tolist()
        except LayoutError:
            rows = None
        assert rows == whole, "decode_chunk_footers differs from decode_footer_index"


EXPECTED = (LayoutError,)

if __name__ == "__main__":
    _harness.main(check, EXPECTED)
