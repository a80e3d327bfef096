"""Encoding records into simple chunks, many chunks at a time (spec: "Simple
chunk with records").

A simple chunk's data is the compression type byte, the size of the sizes
block as a varint, the sizes block (each record's size as a varint,
compressed) and the values block (the records back to back, compressed); a
compressed block starts with its decompressed size as a varint.
:func:`arrayfs.riegeli.chunk.encode_simple` builds one chunk; this module
builds a *batch* of them with a few calls per batch rather than per chunk:

1. :meth:`SimpleChunkEncoder.prepare` (the caller's thread) cuts the records
   into chunks and joins each chunk's sizes and values;
2. :meth:`SimpleChunkEncoder.compress` (any thread) compresses every block
   of the batch; for zstd that is one ``multi_compress_to_buffer`` call,
   which releases the GIL, so a pool of threads compresses on several cores;
3. :meth:`SimpleChunkEncoder.assemble` (the caller's thread, in file order)
   lays the chunks back to back in one buffer with their headers, ready for
   :meth:`arrayfs.riegeli.chunk_writer.ChunkWriter.write_chunks`.

With one record per chunk (array_record's default ``group_size:1``)
everything in a chunk's data before the record's compressed bytes depends
on the record's size alone, so it is built once per size and reused.
"""

from __future__ import annotations

import threading
from itertools import chain, repeat

import numpy as np
import zstandard

from .blocks import CHUNK_HEADER_SIZE
from .chunk import SIMPLE
from .chunk_writer import fill_chunk_headers
from .compression import BROTLI, NONE, ZSTD, compress_block
from .varint import encode_varint

__all__ = ["SimpleChunkEncoder", "EncodedBatch"]

# Record sizes whose one-record chunk prefix is kept (see _prefixes_for).
_PREFIX_CACHE = 1 << 16
_PLACEHOLDER = bytes(CHUNK_HEADER_SIZE)
# python brotli's encoder takes windows up to 2**24, so a larger window_log is
# written as 24: a standard stream, which every Brotli decoder reads (riegeli's
# own writer uses the large-window format above 24, which python brotli cannot
# decode: see compression._brotli_failed).
_BROTLI_MAX_WINDOW_LOG = 24


def _varint_rows(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each of ``values`` (non-negative integers below 2**64, shape
    ``(n,)``) as a varint64, in fixed-width rows: returns ``(rows,
    lengths)``, ``rows`` of shape ``(n, w)`` (``uint8``; ``w`` the longest
    varint here) whose first ``lengths[i]`` bytes (``int64``) are value
    ``i``'s varint; ``rows[mask]`` with ``mask = np.arange(w) < lengths[:,
    None]`` concatenates them. Vectorised, as
    :func:`arrayfs.riegeli.varint.encode_varints`, with fewer passes when
    the values are small."""
    values = np.asarray(values, dtype=np.uint64)
    lengths = np.ones(values.shape, dtype=np.int64)
    top = int(values.max()) if values.size else 0
    for k in range(1, 10):
        if top < 1 << (7 * k):
            break
        lengths += values >= np.uint64(1 << (7 * k))
    width = int(lengths.max()) if values.size else 1
    if width == 1:
        return values.astype(np.uint8)[:, None], lengths
    shifts = (7 * np.arange(width)).astype(np.uint64)
    rows = ((values[:, None] >> shifts) & np.uint64(0x7F)).astype(np.uint8)
    rows |= (np.arange(width) < (lengths - 1)[:, None]).astype(np.uint8) << 7
    return rows, lengths


class EncodedBatch:
    """Records on their way to becoming chunks.

    ``records`` in file order; ``counts`` the records of each chunk
    (``int64``, shape ``(k,)``); ``lengths`` each record's size (bytes);
    ``joined`` the records back to back; ``blocks`` the chunks' sizes and
    values as the codec takes them, ``frames`` what it gave back.
    """

    __slots__ = ("records", "counts", "lengths", "joined", "blocks", "frames")

    def __init__(self, records, counts):
        self.records = records
        self.counts = counts
        self.lengths = None
        self.joined = None
        self.blocks = None
        self.frames = None


class SimpleChunkEncoder:
    """Encodes batches of records into simple chunks of ``group_size``
    records, compressed with ``compression`` (a compression type byte of
    :mod:`arrayfs.riegeli.compression`) at ``level`` with ``window_log``
    (``None``: the codec's default).

    The chunks are those :func:`arrayfs.riegeli.chunk.encode_simple` gives
    for the same records and options, except that zstd frames come from one
    reused compressor per thread (zstd's parameters for the level, not
    re-tuned to each block's size: the frames Google's writer makes).
    """

    def __init__(self, compression: int, level: int, window_log: int | None, group_size: int):
        self.ctype = compression
        self.level = level
        self.window_log = window_log
        if compression == BROTLI and window_log is not None:
            self.window_log = min(window_log, _BROTLI_MAX_WINDOW_LOG)
        self.group_size = group_size
        self._ctype_byte = bytes((compression,))
        self._local = threading.local()
        self._prefixes: dict[int, bytes] = {}
        self._params = None
        if compression == ZSTD:
            self._params = zstandard.ZstdCompressionParameters.from_level(
                level, window_log=window_log or 0, write_content_size=True
            )

    # -- single blocks ----------------------------------------------------------

    def _zstd(self) -> zstandard.ZstdCompressor:
        c = getattr(self._local, "zstd", None)
        if c is None:
            c = self._local.zstd = zstandard.ZstdCompressor(compression_params=self._params)
        return c

    def block(self, data) -> bytes:
        """``data`` (bytes-like) as one block of a simple chunk: compressed
        and prefixed by its size, or as it is when uncompressed."""
        if self.ctype == ZSTD:
            return encode_varint(len(data)) + self._zstd().compress(data)
        return compress_block(self.ctype, data, level=self.level, window_log=self.window_log)

    def chunk_data(self, sizes, values, *, release=None) -> bytes:
        """One simple chunk's data from its records' ``sizes`` (varints) and
        ``values`` (the records back to back), both bytes-like.

        ``release``, if given, is called once ``sizes`` and ``values`` are
        no longer needed (after compression, before the blocks are joined),
        so that a caller holding large inputs can free them first.
        """
        if self.ctype == NONE:  # no copies before the one join
            data = b"".join((self._ctype_byte, encode_varint(len(sizes)), sizes, values))
            if release is not None:
                release()
            return data
        sizes_block = self.block(sizes)
        values_block = self.block(values)
        if release is not None:
            release()
        return b"".join((self._ctype_byte, encode_varint(len(sizes_block)), sizes_block, values_block))

    # -- batches ------------------------------------------------------------------

    def prepare(self, records: list, final: bool) -> EncodedBatch:
        """Cut ``records`` (a list of ``bytes``) into chunks of
        ``group_size`` records and lay out what the codec needs. Only when
        ``final`` may the last chunk hold fewer (``ValueError`` otherwise)."""
        g = self.group_size
        n = len(records)
        if n % g and not final:
            raise ValueError(f"{n} records do not fill chunks of {g}")
        counts = np.full(n // g, g, dtype=np.int64)
        if n % g:
            counts = np.append(counts, n % g)
        batch = EncodedBatch(records, counts)
        if g == 1:
            batch.lengths = list(map(len, records))
            if self.ctype == ZSTD:
                batch.joined = b"".join(records)
            return batch
        lengths = np.fromiter(map(len, records), dtype=np.int64, count=n)
        batch.lengths = lengths
        batch.joined = b"".join(records)
        ends = np.cumsum(counts)
        value_ends = np.cumsum(lengths)[ends - 1]
        rows, varint_lengths = _varint_rows(lengths)
        size_ends = np.cumsum(varint_lengths)[ends - 1]
        batch.blocks = (
            rows[np.arange(rows.shape[1]) < varint_lengths[:, None]].tobytes(),
            np.diff(size_ends, prepend=0),
            batch.joined,
            np.diff(value_ends, prepend=0),
        )
        return batch

    def _frames(self, buf, lengths):
        """Each piece of ``buf`` (``lengths`` bytes each, in order)
        compressed: for zstd the frames alone (a sequence of bytes-likes),
        for the other codecs whole blocks, size prefix included."""
        if self.ctype != ZSTD:
            return [self.block(piece) for piece in _slices(buf, lengths)]
        if not len(buf):  # zstandard's multi-buffer call refuses an empty buffer
            return [self._zstd().compress(b"")] * len(lengths)
        return self._zstd().multi_compress_to_buffer(_segments(buf, lengths), threads=1)

    def compress(self, batch: EncodedBatch) -> None:
        """Compress the batch's blocks into ``batch.frames``. Thread-safe:
        the step a pool runs."""
        if self.ctype == NONE:
            return
        if self.group_size == 1:
            if self.ctype == ZSTD:
                # A list: the main thread takes each frame's length and bytes.
                batch.frames = list(self._frames(batch.joined, batch.lengths))
            else:
                batch.frames = list(map(self.block, batch.records))
            return
        sizes, size_lengths, values, value_lengths = batch.blocks
        batch.frames = (self._frames(sizes, size_lengths), self._frames(values, value_lengths))

    def _prefixes_for(self, sizes: list) -> list:
        """For each record size, a one-record chunk's data up to its
        compressed record bytes (the values block, or for zstd its frame):
        it depends on the record's size alone, so it is built once."""
        cache = self._prefixes
        missing = set(sizes).difference(cache)
        if missing:
            if len(cache) + len(missing) > _PREFIX_CACHE:
                cache.clear()
                missing = set(sizes)
            for size in missing:
                sizes_block = self.block(encode_varint(size))
                prefix = self._ctype_byte + encode_varint(len(sizes_block)) + sizes_block
                if self.ctype == ZSTD:
                    prefix += encode_varint(size)
                cache[size] = prefix
        return list(map(cache.__getitem__, sizes))

    def assemble(self, batch: EncodedBatch) -> tuple[bytearray, np.ndarray, np.ndarray]:
        """The batch's chunks back to back, headers filled in. Returns
        ``(buf, starts, decoded_sizes)``: chunk ``i`` begins at byte
        ``starts[i]`` of ``buf`` and decodes to ``decoded_sizes[i]`` bytes
        (``int64`` arrays of shape ``(k,)``)."""
        if self.group_size == 1:
            lengths = batch.lengths
            payloads = batch.records if self.ctype == NONE else batch.frames
            prefixes = self._prefixes_for(lengths)
            pieces = chain.from_iterable(zip(repeat(_PLACEHOLDER), prefixes, payloads))
            data_sizes = np.fromiter(map(len, prefixes), dtype=np.int64, count=len(lengths))
            data_sizes += np.fromiter(map(len, payloads), dtype=np.int64, count=len(lengths))
            decoded = np.asarray(lengths, dtype=np.int64)
        else:
            pieces, data_sizes = self._group_pieces(batch)
            decoded = batch.blocks[3]
        buf = bytearray().join(pieces)
        starts = np.zeros(len(data_sizes), dtype=np.int64)
        np.cumsum(data_sizes[:-1] + CHUNK_HEADER_SIZE, out=starts[1:])
        fill_chunk_headers(buf, starts, data_sizes, SIMPLE, batch.counts, decoded)
        return buf, starts, decoded

    def _group_pieces(self, batch: EncodedBatch):
        sizes, size_lengths, values, value_lengths = batch.blocks
        k = len(batch.counts)
        pieces = []
        data_sizes = np.empty(k, dtype=np.int64)
        raw_sizes = _slices(sizes, size_lengths)
        raw_values = _slices(values, value_lengths)
        if self.ctype == NONE:
            blocks = zip(raw_sizes, raw_values)
        elif self.ctype == ZSTD:
            sizes_frames, values_frames = batch.frames
            blocks = (
                (encode_varint(len(s)) + sf, (encode_varint(len(v)), vf))
                for s, v, sf, vf in zip(raw_sizes, raw_values, sizes_frames, values_frames)
            )
        else:
            blocks = zip(*batch.frames)
        for i, (sizes_block, values_block) in enumerate(blocks):
            values_parts = values_block if isinstance(values_block, tuple) else (values_block,)
            part = (_PLACEHOLDER, self._ctype_byte + encode_varint(len(sizes_block)), sizes_block, *values_parts)
            pieces += part
            data_sizes[i] = sum(map(len, part)) - CHUNK_HEADER_SIZE
        return pieces, data_sizes


def _segments(buf, lengths) -> zstandard.BufferWithSegments:
    """``buf`` cut into consecutive pieces of ``lengths`` bytes, as
    zstandard's multi-buffer calls take them."""
    lengths = np.asarray(lengths, dtype=np.uint64)
    segments = np.empty((len(lengths), 2), dtype=np.uint64)
    segments[:, 1] = lengths
    np.cumsum(lengths, out=segments[:, 0])
    segments[:, 0] -= lengths
    return zstandard.BufferWithSegments(buf, segments.tobytes())


def _slices(buf, lengths):
    """Consecutive zero-copy pieces of ``buf``, ``lengths`` bytes each."""
    mv = memoryview(buf)
    at = 0
    for n in np.asarray(lengths).tolist():
        yield mv[at : at + n]
        at += n
