"""The postscript, the footer and the chunk index of an ArrayRecord file.

Sources: array_record ``cpp/layout.proto``, ``cpp/array_record_writer.cc``
(where the footer and postscript go) and ``cpp/array_record_reader.cc`` (how
they are found). :mod:`arrayfs.layout` decodes their protobuf messages;
this module finds them in a file and turns the footer into the compact
chunk index that :class:`arrayfs.file.ArrayRecordFile` reads by.

Opening reads the head and the tail of the file (two ranges, one round
trip): the signature, the postscript and the footer. The footer is
checked against its metadata at open (chunk count, a record count the bytes
can hold, no records without chunks); its entries are decoded on first use,
in steps, into compact arrays (16 bytes per chunk, 24 when chunks hold
unequal counts). A footer of up to :data:`KEPT_FOOTER_CHUNKS` entries, read
at open anyway, is kept (its compressed bytes, a few per chunk) so that the
first use neither reads nor hashes it again; a larger one is read again.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .errors import ArrayRecordError, CorruptChunkError, NotArrayRecordError, TruncatedFileError
from .layout import (
    ARRAY_RECORD_VERSION,
    POSTSCRIPT_MAGIC,
    FooterMetadata,
    LayoutError,
    decode_footer_index,
    decode_footer_metadata,
    decode_postscript,
    footer_record_sizes,
)
from .options import parse_writer_options
from .riegeli.blocks import BLOCK_SIZE, is_possible_chunk_boundary
from .riegeli.chunk import CHUNK_TYPE_NAMES, SIMPLE, read_chunk, split_simple
from .riegeli.compression import NONE, CompressionError, decompress_block, decompress_pieces, decompress_prefix
from .riegeli.varint import VarintError, read_varint

__all__ = ["ChunkIndex", "FooterIndex", "SIGNATURE_BYTES", "KEPT_FOOTER_CHUNKS"]

SIGNATURE_BYTES = bytes.fromhex(
    "83af70d10d884a3f0000000000000000"
    "4000000000000000" "91bac23c9287e1a9"
    "0000000000000000" "e19f13c0e9b1c372"
    "7300000000000000" "0000000000000000"
)
#: Footers of up to this many chunks are kept from the open (their compressed
#: bytes: about 10 per chunk) until their first use decodes them. Decoding
#: at open cost 40-80 us of Python per small shard, a third of opening one
#: (docs/benchmarks.md), for entries a shard may never be read by; bigger
#: footers are read again on first use rather than held.
KEPT_FOOTER_CHUNKS = 16384
# Bytes read from the end of an object at open: the postscript block plus
# the footer of a file of up to a few thousand chunks, in one request.
_TAIL_REMOTE = 4 * BLOCK_SIZE
# Bytes of the last block read locally at open: the postscript chunk (a 40
# byte header and about 100 bytes of data) with room to spare.
_PS_BYTES = BLOCK_SIZE - 4096


class ChunkIndex(NamedTuple):
    """The per-chunk index of a file, from its footer.

    ``offsets``: byte offset of each user chunk (``int64``, shape
    ``(num_chunks,)``); ``counts``: records in each chunk (``int64``,
    ``(num_chunks,)``); ``first``: index of each chunk's first record, then
    ``num_records`` (``int64``, ``(num_chunks + 1,)``).
    """

    offsets: np.ndarray
    counts: np.ndarray
    first: np.ndarray


class _Index:
    """What the footer says of each chunk, compactly: offsets and decoded
    sizes (``int64``), and record counts only when they are not all
    ``group_size`` (the last chunk may hold fewer): 16 bytes per chunk, 24
    when counts differ."""

    __slots__ = ("offsets", "decoded", "first", "group_size", "num_records", "offset_at", "decoded_at")

    def __init__(self, offsets, decoded, counts, num_records):
        self.offsets = offsets
        self.decoded = decoded
        # The same arrays as memoryviews, for the single-record path:
        # indexing one gives an int in 40 ns, ``ndarray.item`` takes 85.
        self.offset_at = memoryview(offsets)
        self.decoded_at = memoryview(decoded)
        self.num_records = num_records
        if isinstance(counts, tuple):  # (group_size, records in the last chunk)
            self.group_size = counts[0]
            self.first = None
            return
        # Counts as an array: decode_footer_index found them not uniform
        # (layout.uniform_counts decides it, once).
        self.group_size = None
        self.first = np.zeros(len(offsets) + 1, dtype=np.int64)
        np.cumsum(counts, out=self.first[1:])

    def chunk_first(self):
        """``first`` as an array (built on demand when chunks are uniform)."""
        if self.first is not None:
            return self.first
        n = len(self.offsets)
        out = np.arange(n + 1, dtype=np.int64) * self.group_size
        if n:
            out[-1] = self.num_records
        return out

    def counts(self):
        return np.diff(self.chunk_first())




class FooterIndex:
    """The part of :class:`arrayfs.file.ArrayRecordFile` that opens a file
    from its tail and answers where each chunk and record is. Uses the
    file's ``_read``, ``_read_ranges``, ``_error``, ``_decode`` and
    ``_lock``."""

    def _open(self) -> None:
        self._kept_footer = None
        size = self.size
        tail_base = 0
        if size <= _TAIL_REMOTE and self.remote or size < 2 * BLOCK_SIZE:
            tail = self._read(0, size)
            head = tail[: len(SIGNATURE_BYTES)]
        elif self.remote:
            # One request per shard at open: the signature is checked only
            # when the tail is not an ArrayRecord tail (for the message).
            tail_base = size - _TAIL_REMOTE
            tail = self._read(tail_base, _TAIL_REMOTE)
            head = None
        else:
            # Locally a read is a system call: the signature, and the first
            # bytes of the last block (the postscript, about 150 bytes).
            tail_base = size - BLOCK_SIZE
            head, tail = self._read_ranges([(0, len(SIGNATURE_BYTES)), (tail_base, size - _PS_BYTES)])
        try:
            self._open_tail(tail, tail_base, head)
        except (NotArrayRecordError, TruncatedFileError):
            if head is None:
                head = self._read(0, min(size, len(SIGNATURE_BYTES)))
                self._check_signature(head)
            raise

    def _check_signature(self, head) -> None:
        if bytes(head) != SIGNATURE_BYTES:
            raise self._error(
                NotArrayRecordError,
                f"not a Riegeli/ArrayRecord file (starts with {bytes(head[:8]).hex()})", offset=0,
            )

    def _open_tail(self, tail, tail_base: int, head) -> None:
        """Open from ``tail``, the file's bytes from ``tail_base`` on
        (covering at least the postscript chunk), and ``head`` (the
        signature's bytes, or ``None`` when not read)."""
        size = self.size
        if head is not None:
            self._check_signature(head)
        if size < 2 * BLOCK_SIZE or size % BLOCK_SIZE:
            what = "less than two 64 KiB blocks" if size < 2 * BLOCK_SIZE else "not a whole number of 64 KiB blocks"
            raise self._error(
                TruncatedFileError,
                f"{size} bytes is {what}: the file is truncated or still being written",
            )
        ps_offset = size - BLOCK_SIZE
        try:
            header, data, _ = read_chunk(tail, ps_offset, verify=True, base=tail_base, limit=size, file_size=size)
        except ArrayRecordError as e:
            raise NotArrayRecordError(
                f"no ArrayRecord postscript in the last 64 KiB block ({e.reason})",
                path=self.path, offset=ps_offset,
            ) from None
        if header.chunk_type != SIMPLE or header.num_records < 1:
            raise self._error(
                NotArrayRecordError,
                f"last block holds a {CHUNK_TYPE_NAMES.get(header.chunk_type, 'unknown')} chunk, "
                "not an ArrayRecord postscript",
                offset=ps_offset,
            )
        try:
            footer_offset, magic = decode_postscript(self._first_record(header, data, ps_offset))
        except LayoutError as e:
            raise self._error(NotArrayRecordError, f"bad postscript: {e}", offset=ps_offset) from None
        if magic != POSTSCRIPT_MAGIC:
            raise self._error(
                NotArrayRecordError,
                f"postscript magic is {magic if magic is None else hex(magic)}, expected {POSTSCRIPT_MAGIC:#x}",
                offset=ps_offset,
            )
        if footer_offset is None or not (64 <= footer_offset < ps_offset) or not is_possible_chunk_boundary(footer_offset):
            raise self._error(
                CorruptChunkError, f"postscript points to footer at byte {footer_offset}, outside the file",
                offset=ps_offset,
            )
        self.footer_offset = footer_offset
        if tail_base <= footer_offset and tail_base + len(tail) >= ps_offset:
            window = memoryview(tail)[footer_offset - tail_base :]
        else:
            window = self._read(footer_offset, ps_offset - footer_offset)
        del tail
        header, data = self._read_footer(window)
        parts = self._footer_parts(header, data)
        meta = self._footer_metadata(header, parts)
        self._check_metadata(header, meta)
        if header.num_records - 1 <= KEPT_FOOTER_CHUNKS:
            # Copied: the values may be a view of the whole tail read.
            ctype, sizes, values = parts
            self._kept_footer = (header, (ctype, bytes(sizes), bytes(values)))

    def _read_footer(self, window):
        off = self.footer_offset
        try:
            header, data, _ = read_chunk(window, off, verify=True, base=off, limit=self.size - BLOCK_SIZE,
                                         file_size=self.size)
        except ArrayRecordError as e:
            raise type(e)(f"footer: {e.reason}", path=self.path, offset=off) from None
        if header.chunk_type != SIMPLE or header.num_records < 1:
            raise self._error(NotArrayRecordError, "footer is not a simple chunk", offset=off)
        return header, data

    def _check_metadata(self, header, meta: FooterMetadata | None) -> None:
        off = self.footer_offset
        if meta is None:
            raise self._error(NotArrayRecordError, "Riegeli file without ArrayRecord footer metadata", offset=off)
        if meta.version != ARRAY_RECORD_VERSION:
            raise self._error(NotArrayRecordError, f"unsupported ArrayRecord version {meta.version}", offset=off)
        if meta.num_chunks is None or meta.num_records is None or meta.num_chunks != header.num_records - 1:
            raise self._error(
                CorruptChunkError,
                f"footer metadata says {meta.num_chunks} chunks, the footer holds {header.num_records - 1}",
                offset=off,
            )
        if meta.num_records > off:
            # Every chunk spans at least as many bytes as it has records
            # (spec: padding rule), so no count can exceed the bytes before
            # the footer; checking it keeps a forged count from sizing
            # allocations.
            raise self._error(
                CorruptChunkError,
                f"footer metadata claims {meta.num_records} records in {off} bytes of chunks",
                offset=off,
            )
        if (meta.num_records == 0) != (meta.num_chunks == 0):
            raise self._error(
                CorruptChunkError,
                f"footer metadata says {meta.num_records} records in {meta.num_chunks} chunks",
                offset=off,
            )
        self.metadata = meta
        self.num_records = int(meta.num_records)
        self.num_chunks = int(meta.num_chunks)
        self.writer_options = meta.writer_options or ""

    def _first_record(self, header, data, offset):
        """Record 0 of a small simple chunk; the postscript is uncompressed,
        so this is a varint and a slice (no general decode at open)."""
        try:
            ctype, sizes, values = split_simple(data, offset=offset)
            if ctype == NONE:
                size0, _ = read_varint(sizes, 0)
                if size0 <= len(values):
                    return values[:size0]
        except (ArrayRecordError, VarintError):
            pass
        values, offsets = self._decode(header, data, offset)
        return values[offsets[0] : offsets[1]]

    def _footer_parts(self, header, data):
        """``(compression type, decoded sizes block, values block)`` of the footer."""
        off = self.footer_offset
        try:
            ctype, sizes, values = split_simple(data, offset=off)
            return ctype, decompress_block(ctype, sizes, max_size=header.num_records * 10), values
        except ArrayRecordError as e:
            raise self._error(CorruptChunkError, f"bad footer: {e.reason}", offset=off) from None
        except CompressionError as e:
            raise self._error(e.chunk_error, f"bad footer: {e}", offset=off) from None

    def _footer_metadata(self, header, parts) -> FooterMetadata | None:
        """Record 0 of the footer, decoding no more of the values than it."""
        off = self.footer_offset
        ctype, sizes, values = parts
        try:
            size0, _ = read_varint(sizes, 0)
            if size0 > header.decoded_data_size:
                raise self._error(CorruptChunkError, "footer metadata larger than the footer", offset=off)
            rec0 = decompress_prefix(ctype, values, size0, max_size=header.decoded_data_size)
            return decode_footer_metadata(rec0)
        except (CompressionError, VarintError, LayoutError, IndexError) as e:
            cls = e.chunk_error if isinstance(e, CompressionError) else CorruptChunkError
            raise self._error(cls, f"bad footer metadata: {e}", offset=off) from None

    def _get_index(self) -> _Index:
        idx = self._index
        if idx is not None:
            return idx
        with self._lock:
            if self._index is None:
                kept, self._kept_footer = self._kept_footer, None
                if kept is not None:
                    header, parts = kept
                else:
                    ps_offset = self.size - BLOCK_SIZE
                    window = self._read(self.footer_offset, ps_offset - self.footer_offset)
                    header, data = self._read_footer(window)
                    del window
                    parts = self._footer_parts(header, data)
                self._index = self._decode_index(header, parts)
            return self._index

    def _decode_index(self, header, parts) -> _Index:
        off = self.footer_offset
        ctype, sizes_raw, values = parts
        n = self.num_chunks
        try:
            size0, lengths = footer_record_sizes(sizes_raw, n)
            pieces = decompress_pieces(ctype, values, max_size=header.decoded_data_size)
            offsets, decoded, counts = decode_footer_index(pieces, lengths, size0, total=header.decoded_data_size)
        except (LayoutError, CompressionError) as e:
            raise self._error(CorruptChunkError, f"bad chunk footer: {e}", offset=off) from None
        # Values past 2**62 fit no real file: refused here, the rest are
        # viewed (not copied) as int64.
        limit = 1 << 62
        checks = [("offset", offsets), ("decoded size", decoded)]
        if not isinstance(counts, tuple):
            checks.append(("record count", counts))
        for name, arr in checks:
            if n and int(arr.max()) >= limit:
                bad = int(np.flatnonzero(arr >= np.uint64(limit))[0])
                raise self._error(CorruptChunkError, f"footer entry {bad} has a {name} of {int(arr[bad])}",
                                  offset=off)
        offsets, decoded = offsets.view(np.int64), decoded.view(np.int64)
        if n and (offsets[0] < 64 or offsets[-1] >= off):
            bad = int(np.flatnonzero((offsets < 64) | (offsets >= off))[0])
            raise self._error(
                CorruptChunkError,
                f"footer entry {bad} points to byte {int(offsets[bad])}, outside the records area",
                offset=off,
            )
        if n > 1 and (offsets[1:] <= offsets[:-1]).any():
            raise self._error(CorruptChunkError, "footer chunk offsets are not increasing", offset=off)
        if isinstance(counts, tuple):
            group, last = counts
            total = group * (n - 1) + last if n else 0
        else:
            counts = counts.view(np.int64)
            total = int(counts.sum(dtype=np.int64)) if n else 0
        if total != self.num_records:
            raise self._error(
                CorruptChunkError,
                f"footer entries hold {total} records, the metadata says {self.num_records}",
                offset=off,
            )
        return _Index(offsets, decoded, counts, self.num_records)

    def index(self) -> ChunkIndex:
        """The per-chunk index as a :class:`ChunkIndex` (decoded on first
        use, thread-safe). ``counts`` and ``first`` are built for the call
        when every chunk holds ``group_size`` records (the file keeps only
        offsets and sizes then)."""
        idx = self._get_index()
        first = idx.chunk_first()
        return ChunkIndex(idx.offsets, np.diff(first), first)

    @property
    def chunk_decoded_sizes(self) -> np.ndarray:
        """Decoded bytes of each chunk (``int64``, ``(num_chunks,)``), from the footer."""
        return self._get_index().decoded

    @property
    def transposed(self) -> bool:
        """``True`` when the writer options stored in the footer say
        ``transpose:true`` (chunks of type ``'t'``)."""
        t = getattr(self, "_transposed", None)
        if t is None:
            try:
                t = parse_writer_options(self.writer_options).transpose
            except ValueError:
                t = "transpose:true" in self.writer_options
            self._transposed = t
        return t

    @property
    def group_size(self):
        """Records per chunk when every chunk but the last holds the same
        number (then ``chunk = i // group_size``), else ``None``."""
        return self._get_index().group_size

    def chunk_of(self, i: int) -> int:
        """Index of the chunk holding record ``i`` (``0 <= i < num_records``)."""
        idx = self._get_index()
        g = idx.group_size
        if g is not None:
            return i // g
        return int(np.searchsorted(idx.first, i, side="right")) - 1

    def chunk_first(self, k: int) -> int:
        """Index of the first record of chunk ``k`` (``k == num_chunks``
        gives ``num_records``)."""
        idx = self._get_index()
        if idx.group_size is not None:
            return min(k * idx.group_size, self.num_records)
        return int(idx.first[k])

    def chunk_records(self, k: int) -> tuple[int, int]:
        """``(first, stop)``: the half-open range of records of chunk ``k``."""
        return self.chunk_first(k), self.chunk_first(k + 1)

    def chunk_span(self, k: int) -> tuple[int, int]:
        """``(begin, end)`` byte range of chunk ``k`` with its padding: from
        its offset to the next chunk's (the footer's for the last)."""
        offsets = self._get_index().offsets
        nxt = offsets.item(k + 1) if k + 1 < len(offsets) else self.footer_offset
        return offsets.item(k), nxt
