"""One ArrayRecord file: postscript, footer index, chunk decoding.

Sources: array_record ``cpp/layout.proto``, ``cpp/array_record_writer.cc``
(where the footer and postscript go) and ``cpp/array_record_reader.cc`` (how
they are found). Layout of a file::

    signature chunk (64 bytes) | [metadata chunk] | user chunks ... |
    footer chunk (padded to a block boundary) | postscript chunk in the last
    64 KiB block (padded to the end of the block)

The footer chunk is a simple chunk whose record 0 is
``RiegeliFooterMetadata`` and whose record ``k + 1`` is the
``ArrayRecordFooter`` of user chunk ``k``. The postscript chunk holds three
copies of ``RiegeliPostscript {footer_offset, magic}``.

:class:`ArrayRecordFile` reads through a :class:`arrayfs.storage.ByteSource`
(a local file read with ``pread``, or an fsspec object read with ranged
requests), so the same code serves ``data/x.array_record`` and
``s3://bucket/x.array_record``. Opening reads the head and the tail of the
file (two ranges, one round trip): the signature, the postscript and the
footer. A footer of up to :data:`EAGER_FOOTER_CHUNKS` entries is decoded at
once into the chunk index, so that a footer contradicting itself is refused
at open; a larger one is checked against its metadata at open (chunk count,
a record count the bytes can hold, no records without chunks) and decoded on
first use, in steps, into compact arrays (16 bytes per chunk, 24 when chunks
hold unequal counts).

Every read of chunk ``k`` fetches its bytes from its offset to the next
chunk's (one ``pread`` or one request) and decodes from that window. A file
truncated, rewritten or replaced while open raises
:class:`arrayfs.errors.TruncatedFileError` or
:class:`arrayfs.errors.FileChangedError` naming the file and the offset; it
never kills the process and never yields bytes of another version.
"""

from __future__ import annotations

import os
import threading
from typing import NamedTuple

import numpy as np

from .errors import (
    ArrayRecordError,
    CorruptChunkError,
    FileChangedError,
    NotArrayRecordError,
    TruncatedFileError,
)
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
from .riegeli.chunk import (
    CHUNK_TYPE_NAMES,
    METADATA,
    SIMPLE,
    TRANSPOSED,
    decode_chunk,
    decode_record_sizes,
    decode_single_record,
    decompress_zstd_frames,
    read_chunk,
    single_record_zstd_frames,
)
from .riegeli.compression import CompressionError, decompress_block, decompress_pieces, decompress_prefix
from .riegeli.varint import VarintError, read_varint
from .storage import ByteSource, SourceChangedError, SourceTruncatedError, open_source

__all__ = ["ArrayRecordFile", "ChunkIndex", "SIGNATURE_BYTES", "EAGER_FOOTER_CHUNKS"]

SIGNATURE_BYTES = bytes.fromhex(
    "83af70d10d884a3f0000000000000000"
    "4000000000000000" "91bac23c9287e1a9"
    "0000000000000000" "e19f13c0e9b1c372"
    "7300000000000000" "0000000000000000"
)
_RECORD_CHUNK_TYPES = (SIMPLE, TRANSPOSED)
#: Footers of up to this many chunks are decoded when the file opens (about
#: 2 ms); bigger ones on first use, so that opening 16 shards of 200,000
#: chunks does not decode 3.2 million footer entries nobody may read.
EAGER_FOOTER_CHUNKS = 16384
# Bytes read from the end of an object at open: the postscript block plus
# the footer of a file of up to a few thousand chunks, in one request.
_TAIL_REMOTE = 4 * BLOCK_SIZE
# Bytes of the last block read locally at open: the postscript chunk (a 40
# byte header and about 100 bytes of data) with room to spare.
_PS_BYTES = BLOCK_SIZE - 4096
# One-record chunks decoded per step of a long batched read.
_SCAN_BLOCK = 8192


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

    __slots__ = ("offsets", "decoded", "first", "group_size", "num_records")

    def __init__(self, offsets, decoded, counts, num_records):
        self.offsets = offsets
        self.decoded = decoded
        self.num_records = num_records
        if isinstance(counts, tuple):  # (group_size, records in the last chunk)
            self.group_size = counts[0]
            self.first = None
            return
        n = len(offsets)
        g = int(counts[0]) if n else 1
        uniform = n == 0 or (g > 0 and bool((counts[:-1] == g).all()) and 0 < counts[-1] <= g)
        self.group_size = g if uniform else None
        if uniform:
            self.first = None
        else:
            self.first = np.zeros(n + 1, dtype=np.int64)
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


def _storage_error(e: Exception, path: str, offset, records=None, opened_size=None) -> Exception:
    """The ArrayRecord error for a storage failure during a read."""
    if isinstance(e, SourceTruncatedError):
        since = (f" (it had {opened_size} bytes when opened: truncated since)"
                 if opened_size is not None and e.size < opened_size else "")
        return TruncatedFileError(
            f"the file ends at byte {e.size}, the read needs bytes up to {e.offset + e.length}{since}",
            path=path, offset=offset, records=records,
        )
    if isinstance(e, SourceChangedError):
        cls = TruncatedFileError if e.truncated else FileChangedError
        reason = str(e)
        if reason.startswith(path + ": "):
            reason = reason[len(path) + 2 :]
        return cls(reason, path=path, offset=offset, records=records)
    return e


class ArrayRecordFile:
    """Random access to the records of one ArrayRecord file.

    Args:
        path: a local path (``str`` or ``os.PathLike``), an fsspec URL
            (``s3://``, ``gs://``, ``https://``, ``memory://``, ...), or an
            open :class:`arrayfs.storage.ByteSource` (the file takes it over
            and closes it).
        verify: check each chunk's data hash on read (header hashes are
            always checked), as Google's reader does.
        load_index: decode the per-chunk index now even when the footer is
            large.
        storage_options: fsspec options for a URL (credentials, endpoint).
        entry: the file's :class:`arrayfs.storage.Entry` from a listing, so
            that a remote open costs no metadata request.

    Attributes:
        path: the path or URL as given, as ``str``.
        num_records: records in the file (from the footer metadata).
        num_chunks: user chunks in the file.
        writer_options: the writer options string stored in the footer
            (``""`` when the writer stored none).
        size: file size in bytes. ``mtime_ns``: modification time at open.
        identity: what tells this file from a replacement (see
            :attr:`arrayfs.storage.ByteSource.identity`).

    Raises:
        NotArrayRecordError: empty file, wrong signature, no valid postscript
            or footer (for example a file still being written).
        TruncatedFileError: the file ends before a structure its headers
            describe.
        CorruptChunkError: a hash mismatch or a self-contradicting footer.
        OSError: the file cannot be opened (``FileNotFoundError`` naming
            it), or an object store cannot be reached
            (:class:`arrayfs.storage.StorageError`).
    """

    def __init__(self, path, *, verify: bool = True, load_index: bool = False, storage_options=None, entry=None):
        self.verify = verify
        self._lock = threading.Lock()
        self._index: _Index | None = None
        self._verified = None  # chunks whose data hash was checked (multi-record chunks)
        if isinstance(path, ByteSource):
            source = path
        else:
            name = os.fspath(path)
            if not isinstance(name, str):
                name = os.fsdecode(name)
            source = open_source(name, storage_options, entry=entry)
        self._source = source
        self.path = source.name if isinstance(path, ByteSource) else os.fspath(path)
        if not isinstance(self.path, str):
            self.path = os.fsdecode(self.path)
        self.size = source.size
        self.mtime_ns = source.mtime_ns
        self.identity = source.identity
        self.remote = source.remote
        try:
            if self.size == 0:
                raise NotArrayRecordError("empty file (0 bytes)", path=self.path)
            self._open()
            if load_index:
                self._get_index()
        except BaseException:
            self.close()
            raise

    # -- reading bytes ---------------------------------------------------------

    def _error(self, cls, reason, offset=None, records=None):
        return cls(reason, path=self.path, offset=offset, records=records)

    def _read(self, offset: int, length: int, *, at=None, records=None) -> bytes:
        """Bytes ``[offset, offset + length)``; storage errors become
        ArrayRecord errors located at ``at`` (default ``offset``)."""
        src = self._source
        if src is None:
            raise ValueError(f"{self.path}: I/O on a closed ArrayRecord file")
        try:
            return src.read(offset, length)
        except (SourceTruncatedError, SourceChangedError) as e:
            raise _storage_error(e, self.path, offset if at is None else at, records, self.size) from None

    def _read_ranges(self, ranges, *, at=None) -> list:
        src = self._source
        if src is None:
            raise ValueError(f"{self.path}: I/O on a closed ArrayRecord file")
        try:
            return src.read_ranges(ranges)
        except (SourceTruncatedError, SourceChangedError) as e:
            if at is None:
                at = getattr(e, "offset", None)
            if at is None and ranges:
                at = ranges[0][0]
            raise _storage_error(e, self.path, at, None, self.size) from None

    # -- opening -----------------------------------------------------------

    def _open(self) -> None:
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
        if header.num_records - 1 <= EAGER_FOOTER_CHUNKS:
            # Small footers cost little to decode: doing it now refuses a
            # footer whose entries contradict its metadata at open, before
            # a dataset counts this shard's records.
            self._index = self._decode_index(header, parts)

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
        so this is two varints and a slice (no general decode at open)."""
        if data and data[0] == 0:
            try:
                sizes_len, pos = read_varint(data, 1)
                size0, _ = read_varint(data, pos)
                start = pos + sizes_len
                if sizes_len <= len(data) - pos and start + size0 <= len(data):
                    return data[start : start + size0]
            except VarintError:
                pass
        values, offsets = self._decode(header, data, offset)
        return values[offsets[0] : offsets[1]]

    def _footer_parts(self, header, data):
        """``(compression type, decoded sizes block, values block)`` of the footer."""
        off = self.footer_offset
        try:
            ctype = data[0]
            sizes_len, pos = read_varint(data, 1)
            if pos + sizes_len > len(data):
                raise CompressionError("sizes block overruns the footer")
            sizes = decompress_block(ctype, memoryview(data)[pos : pos + sizes_len],
                                     max_size=header.num_records * 10)
            return ctype, sizes, memoryview(data)[pos + sizes_len :]
        except (CompressionError, VarintError, IndexError) as e:
            raise self._error(CorruptChunkError, f"bad footer: {e}", offset=off) from None

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
            raise self._error(CorruptChunkError, f"bad footer metadata: {e}", offset=off) from None

    # -- the chunk index -----------------------------------------------------

    def _get_index(self) -> _Index:
        idx = self._index
        if idx is not None:
            return idx
        with self._lock:
            if self._index is None:
                ps_offset = self.size - BLOCK_SIZE
                window = self._read(self.footer_offset, ps_offset - self.footer_offset)
                header, data = self._read_footer(window)
                del window
                self._index = self._decode_index(header, self._footer_parts(header, data))
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

    # -- records ---------------------------------------------------------------

    def read_record(self, i: int) -> bytes:
        """Record ``i`` (``0 <= i < num_records``, unchecked) as ``bytes``.

        Single-record chunks (``group_size:1``, today's default) take a fast
        path that decodes the values block alone. In a chunk of many records
        the values are decompressed only as far as record ``i`` ends (Zstd
        and Brotli stream; Snappy decodes whole): a record early in a 1 MiB
        chunk costs a fraction of it. Callers that read neighbours should
        decode whole chunks and cache them (see :meth:`read_records`).
        """
        idx = self._get_index()
        if idx.group_size == 1:
            begin, end = self.chunk_span(i)
            window = self._read(begin, end - begin, records=(i, i + 1))
            rec = decode_single_record(window, begin, verify=self.verify)
            if rec is not None and len(rec) == idx.decoded.item(i):
                return rec  # else the general path names the disagreement
            values, offsets = self.decode_chunk(i, window=window)
            j = 0
        else:
            k = self.chunk_of(i)
            header, data = self.read_chunk_header(k)
            j = i - self.chunk_first(k)
            if header.chunk_type == SIMPLE:
                return self._record_of_simple(k, header, data, j)
            values, offsets = self._decode(header, data, self.chunk_span(k)[0], self.chunk_records(k))
        if len(offsets) == 2 and isinstance(values, bytes):
            return values
        return bytes(values[offsets[j] : offsets[j + 1]])

    def read_ranges(self, ranges) -> list:
        """Raw bytes of each ``(begin, end)`` in ``ranges``, fetched as one
        batch (see :meth:`arrayfs.storage.ByteSource.read_ranges`)."""
        return self._read_ranges(ranges)

    def read_chunk_windows(self, chunks: np.ndarray, *, view=None) -> tuple:
        """The byte windows of ``chunks`` (``int64``: chunk ``k``'s bytes
        from its offset to the next chunk's) read as one batch:
        ``(buf, positions, begins, lengths)`` with window ``j`` at
        ``buf[positions[j]:positions[j] + lengths[j]]`` (``int64`` arrays).
        Runs of consecutive chunks are read as one range (a sequential scan
        is one read per run, however many chunks). With ``view`` (the
        source's :meth:`map_view`) nothing is read: the windows are in it."""
        offsets = self._get_index().offsets
        n = len(offsets)
        begins = offsets[chunks]
        nxt = chunks + 1
        ends = np.where(nxt < n, offsets[np.minimum(nxt, n - 1)], self.footer_offset)
        lengths = ends - begins
        if view is not None:
            return view, begins, begins, lengths
        steps = np.diff(chunks)
        uniq = chunks if (steps > 0).all() else np.unique(chunks)
        cut = np.flatnonzero(np.diff(uniq) != 1) + 1
        run_first = uniq[np.concatenate(([0], cut))]
        run_last = uniq[np.concatenate((cut - 1, [len(uniq) - 1]))]
        run_begin = offsets[run_first]
        run_end = np.where(run_last + 1 < n, offsets[np.minimum(run_last + 1, n - 1)], self.footer_offset)
        src = self._source
        if src is None:
            raise ValueError(f"{self.path}: I/O on a closed ArrayRecord file")
        try:
            buf, run_base = src.read_joined(run_begin, run_end)
        except (SourceTruncatedError, SourceChangedError) as e:
            at = getattr(e, "offset", None)
            raise _storage_error(e, self.path, int(run_begin[0]) if at is None else at, None, self.size) from None
        run = np.searchsorted(run_first, chunks, side="right") - 1
        positions = run_base[run] + (begins - run_begin[run])
        return buf, positions, begins, lengths

    def _record_of_simple(self, k: int, header, data, j: int) -> bytes:
        """Record ``j`` of simple chunk ``k`` (checked ``header`` and
        ``data``), decompressing the values only up to its end."""
        begin = self.chunk_span(k)[0]
        rng = self.chunk_records(k)
        try:
            ctype, sizes, values_block = decode_record_sizes(data, header.num_records, header.decoded_data_size,
                                                             offset=begin)
            ends = np.cumsum(sizes, dtype=np.uint64)
            if int(ends[-1]) != header.decoded_data_size:
                raise CorruptChunkError(
                    f"record sizes sum to {int(ends[-1])} bytes, the header says {header.decoded_data_size}",
                    offset=begin)
            b = int(ends[j])
            a = b - int(sizes[j])
            values = decompress_prefix(ctype, values_block, b, max_size=header.decoded_data_size)
        except CompressionError as e:
            raise self._error(CorruptChunkError, f"record values: {e}", offset=begin, records=rng) from None
        except ArrayRecordError as e:
            raise e.located(path=self.path, offset=begin, records=rng) from None
        return bytes(values[a:b])

    def single_record_frames(self, indices, *, view=None):
        """For batched reads of ``group_size:1`` zstd files across shards.

        ``indices`` (``int64`` array of valid local indices). Returns
        ``(sel, group)``: the positions in ``indices`` whose record is a
        checked zstd frame, and ``group = (buffer, segments, sizes)`` for
        :func:`arrayfs.riegeli.chunk.decompress_zstd_frames`. The other
        positions must be read with :meth:`read_record`. Requires
        ``group_size == 1``.
        """
        buf, positions, begins, lengths = self.read_chunk_windows(indices, view=view)
        sel, segs, sizes = single_record_zstd_frames(buf, positions, begins, lengths, verify=self.verify)
        agree = sizes == self._get_index().decoded[indices[sel]]
        if not agree.all():  # the general path names the disagreement
            sel, segs, sizes = sel[agree], segs[agree], sizes[agree]
        return sel, (buf, segs, sizes)

    def group_by_chunk(self, indices) -> list:
        """``[(chunk, positions), ...]``: the positions in ``indices`` (an
        ``int64`` array of valid local indices, not empty) of the records of
        each chunk they touch, chunks in increasing order."""
        idx = self._get_index()
        g = idx.group_size
        chunks = indices // g if g is not None else np.searchsorted(idx.first, indices, side="right") - 1
        order = np.argsort(chunks, kind="stable")
        cuts = np.flatnonzero(np.diff(chunks[order])) + 1
        return [(int(chunks[grp[0]]), grp) for grp in np.split(order, cuts)]

    def read_records(self, indices, *, decode=None, threads: int = 0) -> list[bytes]:
        """Records at ``indices`` (``int64`` array of valid local indices), in
        that order, as ``list[bytes]``; each chunk involved is read and
        decoded once, and the chunks' bytes are fetched as one batch.

        ``decode(k)`` replaces :meth:`decode_chunk` for multi-record chunks
        (the dataset passes its cached one). One-record zstd chunks are
        decompressed together on ``threads`` threads outside the GIL (0: the
        calling thread); other chunks are decoded on the calling thread and
        callers split large batches of them across threads.
        """
        if len(indices) == 0:
            return []
        idx = self._get_index()
        if idx.group_size == 1:
            read = self.read_record
            if len(indices) < 16:
                return [read(i) for i in indices.tolist()]
            if len(indices) > _SCAN_BLOCK:
                # A long scan (read_all) goes a block at a time: the bytes
                # held at once stay bounded whatever the file size.
                out = []
                for a in range(0, len(indices), _SCAN_BLOCK):
                    out.extend(self.read_records(indices[a : a + _SCAN_BLOCK], threads=threads))
                return out
            src = self._source
            view = src.map_view() if src is not None else None
            try:
                sel, group = self.single_record_frames(indices, view=view)
                out: list = [None] * len(indices)
                recs = decompress_zstd_frames([group], threads=threads)
                del group
            finally:
                if view is not None:
                    src.end_view()
            if recs:
                for slot, rec in zip(sel.tolist(), recs):
                    out[slot] = rec
            for j in [j for j, rec in enumerate(out) if rec is None]:
                out[j] = read(int(indices[j]))  # other codecs, or the precise error
            return out
        groups = self.group_by_chunk(indices)
        wanted = [k for k, _ in groups]
        if decode is None:
            decoded = self.decode_chunks(wanted)
        else:
            decoded = map(decode, wanted)
        out = [None] * len(indices)
        for (k, grp), (values, offsets) in zip(groups, decoded):
            local = indices[grp] - self.chunk_first(k)
            if len(offsets) == 2 and isinstance(values, bytes):
                for slot in grp.tolist():
                    out[slot] = values
                continue
            for slot, a, b in zip(grp.tolist(), offsets[local].tolist(), offsets[local + 1].tolist()):
                out[slot] = bytes(values[a:b])
        return out

    # -- decoding ------------------------------------------------------------

    def _decode(self, header, data, offset, records=None):
        try:
            return decode_chunk(header, data, offset=offset)
        except ArrayRecordError as e:
            raise e.located(path=self.path, offset=offset, records=records) from None

    def read_chunk_header(self, k: int, *, window=None):
        """``(header, data)`` of user chunk ``k``, checked against the footer.

        ``window``: the chunk's bytes from its offset to the next chunk's,
        when the caller already read them."""
        begin, end = self.chunk_span(k)
        rng = self.chunk_records(k)
        if window is None:
            window = self._read(begin, end - begin, records=rng)
        # A chunk's data hash is checked the first time it is read: the file
        # cannot have changed since (every read checks its identity), and
        # hashing a 1 MiB chunk costs more than decoding one record of it.
        verified = self._verified
        check = self.verify and (verified is None or not verified[k])
        try:
            header, data, _ = read_chunk(window, begin, verify=check, base=begin, limit=end,
                                         file_size=self.size)
        except ArrayRecordError as e:
            raise e.located(path=self.path, offset=begin, records=rng) from None
        if check and rng[1] - rng[0] > 1:
            if verified is None:
                verified = self._verified = np.zeros(self.num_chunks, dtype=bool)
            verified[k] = True
        count = rng[1] - rng[0]
        if header.chunk_type not in _RECORD_CHUNK_TYPES or header.num_records != count:
            kind = CHUNK_TYPE_NAMES.get(header.chunk_type, f"unknown type {header.chunk_type:#04x}")
            raise self._error(
                CorruptChunkError,
                f"footer expects a records chunk of {count} records, found a {kind} chunk "
                f"of {header.num_records}",
                offset=begin, records=rng,
            )
        # record_sizes (what stat shows) trusts the footer's sizes for
        # one-record chunks: bytes served must agree with them.
        expected = self._get_index().decoded.item(k)
        if header.decoded_data_size != expected:
            raise self._error(
                CorruptChunkError,
                f"footer says the chunk decodes to {expected} bytes, its header says {header.decoded_data_size}",
                offset=begin, records=rng,
            )
        return header, data

    def decode_chunk(self, k: int, *, window=None):
        """Decode user chunk ``k`` into ``(values, offsets)`` (see
        :mod:`arrayfs.riegeli.chunk`). Raises :class:`ArrayRecordError`
        subclasses naming the file, the chunk offset and its record range."""
        header, data = self.read_chunk_header(k, window=window)
        return self._decode(header, data, self.chunk_span(k)[0], self.chunk_records(k))

    def decode_chunks(self, chunks) -> list:
        """``[decode_chunk(k) for k in chunks]`` with the chunks' bytes
        fetched as one batch (one request round for an object store)."""
        chunks = list(chunks)
        if len(chunks) <= 1:
            return [self.decode_chunk(k) for k in chunks]
        spans = [self.chunk_span(k) for k in chunks]
        windows = self._read_ranges(spans)
        return [self.decode_chunk(k, window=w) for k, w in zip(chunks, windows)]

    def chunk_record_sizes(self, k: int) -> np.ndarray:
        """Sizes in bytes (``int64``, shape ``(records in chunk,)``) of the
        records of chunk ``k``, decoding only the sizes, not the values
        (single-record chunks need no reading at all)."""
        idx = self._get_index()
        a, b = self.chunk_records(k)
        if b - a == 1:
            return idx.decoded[k : k + 1].copy()
        header, data = self.read_chunk_header(k)
        begin = self.chunk_span(k)[0]
        if header.chunk_type != SIMPLE:
            _, offs = self._decode(header, data, begin, (a, b))
            return np.diff(offs).astype(np.int64)
        try:
            _, sizes, _ = decode_record_sizes(data, header.num_records, header.decoded_data_size, offset=begin)
        except ArrayRecordError as e:
            raise e.located(path=self.path, records=(a, b)) from None
        if int(sizes.sum(dtype=np.uint64)) != header.decoded_data_size:
            raise self._error(
                CorruptChunkError,
                f"record sizes sum to {int(sizes.sum(dtype=np.uint64))} bytes, the header says "
                f"{header.decoded_data_size}", offset=begin, records=(a, b),
            )
        return sizes.astype(np.int64)

    def record_sizes(self, lo: int, hi: int, *, chunk_sizes=None) -> np.ndarray:
        """Sizes in bytes (``int64``, shape ``(hi - lo,)``) of records
        ``[lo, hi)`` of this file: one-record chunks from the footer alone
        (no reads), other chunks by decoding their sizes blocks only.

        ``chunk_sizes(k)`` replaces :meth:`chunk_record_sizes` (a caller's
        cached one). The one place record sizes are computed: the dataset,
        the mount and the CLI all come here.
        """
        out = np.zeros(max(hi - lo, 0), dtype=np.int64)
        if hi <= lo:
            return out
        idx = self._get_index()
        k0, k1 = self.chunk_of(lo), self.chunk_of(hi - 1) + 1
        if idx.group_size == 1:
            out[:] = idx.decoded[lo:hi]
            return out
        get = chunk_sizes or self.chunk_record_sizes
        first = idx.chunk_first() if idx.group_size is None else None
        for k in range(k0, k1):
            a, b = (int(first[k]), int(first[k + 1])) if first is not None else self.chunk_records(k)
            if b - a == 1:
                out[a - lo] = idx.decoded[k]
                continue
            s, e = max(a, lo), min(b, hi)
            out[s - lo : e - lo] = get(k)[s - a : e - a]
        return out

    def read_metadata_chunk(self):
        """``(header, data)`` of the file metadata chunk (type ``'m'``) right
        after the signature, or ``None`` when the file has none."""
        limit = int(self._get_index().offsets[0]) if self.num_chunks else self.footer_offset
        if limit <= 64:
            return None
        window = self._read(64, limit - 64)
        try:
            header, data, _ = read_chunk(window, 64, verify=self.verify, base=64, limit=limit, file_size=self.size)
        except ArrayRecordError as e:
            raise e.located(path=self.path, offset=64) from None
        if header.chunk_type != METADATA:
            return None
        return header, data

    def check(self) -> None:
        """Raise :class:`FileChangedError` (or :class:`TruncatedFileError`)
        if the file changed since it was opened (one ``fstat``, or one
        metadata request for an object store)."""
        try:
            if self._source is not None:
                self._source.check()
        except SourceChangedError as e:
            raise _storage_error(e, self.path, None) from None

    # -- lifetime ------------------------------------------------------------

    def pin(self) -> bool:
        """Keep reading this file after it is removed or replaced at its
        path (its descriptor is kept open, outside the bound, until
        :meth:`close`). Returns ``False`` when that is not possible."""
        src = self._source
        return src.pin() if src is not None else False

    @property
    def closed(self) -> bool:
        return self._source is None

    def close(self) -> None:
        """Release the file (its descriptor, or its cached blocks). Safe to
        call twice. Records already returned stay valid."""
        src, self._source = getattr(self, "_source", None), None
        if src is not None:
            src.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self):
        return f"ArrayRecordFile({self.path!r}, num_records={getattr(self, 'num_records', '?')})"

