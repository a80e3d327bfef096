"""One ArrayRecord file: its records, read and decoded chunk by chunk.

Layout of a file (array_record ``cpp/layout.proto``)::

    signature chunk (64 bytes) | [metadata chunk] | user chunks ... |
    footer chunk (padded to a block boundary) | postscript chunk in the last
    64 KiB block (padded to the end of the block)

:class:`ArrayRecordFile` reads through a :class:`arrayfs.storage.ByteSource`
(a local file, mapped where nothing can truncate it and read with ``pread``
elsewhere, or an fsspec object read with ranged requests), so the same code
serves ``data/x.array_record`` and ``s3://bucket/x.array_record``. Finding
the postscript and footer and the chunk index are :mod:`arrayfs.footer`'s;
batched reads are :mod:`arrayfs.batch`'s; the simple chunk's layout is
:mod:`arrayfs.riegeli.simple`'s.

Every read of chunk ``k`` fetches its bytes from its offset to the next
chunk's (one ``pread``, a copy out of the map, or one request) and decodes
from that window. A file truncated, rewritten or replaced while open raises
:class:`arrayfs.errors.TruncatedFileError` or
:class:`arrayfs.errors.FileChangedError` naming the file and the offset; it
never kills the process and never yields bytes of another version.
"""

from __future__ import annotations

import os
import threading

import numpy as np

from .batch import BatchReads, _storage_error
from .errors import (
    ArrayRecordError,
    CorruptChunkError,
    NotArrayRecordError,
)
from .footer import KEPT_FOOTER_CHUNKS, SIGNATURE_BYTES, ChunkIndex, FooterIndex, _Index
from .riegeli.chunk import (
    CHUNK_TYPE_NAMES,
    METADATA,
    SIMPLE,
    TRANSPOSED,
    decode_chunk,
    decode_record_sizes,
    decode_single_record,
    read_chunk,
)
from .riegeli.compression import CompressionError, decompress_prefix
from .riegeli.stream import decode_single_record_stream
from .storage import ByteSource, SourceChangedError, SourceTruncatedError, open_source

__all__ = ["ArrayRecordFile", "ChunkIndex", "SIGNATURE_BYTES", "KEPT_FOOTER_CHUNKS"]

_RECORD_CHUNK_TYPES = (SIMPLE, TRANSPOSED)


class ArrayRecordFile(FooterIndex, BatchReads):
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
        idx = self._index or self._get_index()
        if idx.group_size == 1:
            offset_at = idx.offset_at
            begin = offset_at[i]
            end = offset_at[i + 1] if i + 1 < len(offset_at) else self.footer_offset
            src = self._source
            if src is None:
                raise ValueError(f"{self.path}: I/O on a closed ArrayRecord file")
            try:
                window = src.read(begin, end - begin)
            except (SourceTruncatedError, SourceChangedError) as e:
                raise _storage_error(e, self.path, begin, (i, i + 1), self.size) from None
            rec = decode_single_record(window, begin, self.verify, idx.decoded_at[i])
            if rec is not None:
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

    def record_windows(self, records) -> tuple:
        """For a few records ``records`` (``list[int]`` of valid local
        indices) of a ``group_size:1`` file: ``(windows, begins, decoded)``,
        each record's chunk bytes (from its offset to the next chunk's)
        fetched as one batch (:meth:`~arrayfs.storage.ByteSource.read_ranges`:
        copies out of the map, or coalesced ``pread`` calls and one
        ``fstat``), and the chunks' file offsets and the footer's decoded
        sizes (``list[int]``). For batches spread over many shards,
        gathered into one buffer by the caller."""
        idx = self._index or self._get_index()
        src = self._source
        if src is None:
            raise ValueError(f"{self.path}: I/O on a closed ArrayRecord file")
        # A few records: scalar lookups cost less than numpy's per-call
        # set-up, and one loop less than three comprehensions (Python 3.11
        # makes each a call: 1.7 against 3 us for 4 records).
        at, dec = idx.offset_at, idx.decoded_at
        last, footer = len(at) - 1, self.footer_offset
        begins, ranges, decoded = [], [], []
        for i in records:
            a = at[i]
            begins.append(a)
            ranges.append((a, at[i + 1] if i < last else footer))
            decoded.append(dec[i])
        try:
            windows = src.read_ranges(ranges)
        except (SourceTruncatedError, SourceChangedError) as e:
            raise _storage_error(e, self.path, getattr(e, "offset", None), None, self.size) from None
        return windows, begins, decoded

    def read_big_record(self, i: int, out=None):
        """Record ``i`` when it is alone in its chunk, with reading, hashing
        and decompressing overlapped (:mod:`arrayfs.riegeli.stream`), into
        ``out`` (a writable buffer of the record's size) or new anonymous
        memory; returns that buffer. For records of many MiB; checks
        what :meth:`read_record` checks. Raises ``ValueError`` when the
        chunk holds other records too."""
        k = self.chunk_of(i)
        if self.chunk_records(k) != (i, i + 1):
            raise ValueError(f"{self.path}: record {i} is not alone in its chunk")
        begin, end = self.chunk_span(k)
        try:
            return decode_single_record_stream(lambda off, n: self._read(off, n, records=(i, i + 1)), begin, end,
                                               size=int(self._get_index().decoded.item(k)), verify=self.verify,
                                               out=out)
        except ArrayRecordError as e:
            raise e.located(path=self.path, offset=begin, records=(i, i + 1)) from None

    def read_ranges(self, ranges) -> list:
        """Raw bytes of each ``(begin, end)`` in ``ranges``, fetched as one
        batch (see :meth:`arrayfs.storage.ByteSource.read_ranges`)."""
        return self._read_ranges(ranges)

    def prefetch_records(self, ranges):
        """Start fetching the chunks of each ``(lo, hi)`` record range (in
        the order they will be read) ahead of the reads: object stores only
        (see :meth:`arrayfs.storage.ByteSource.prefetch`). Returns the handle;
        dropping it gives up what was not read."""
        spans = [(self.chunk_span(self.chunk_of(lo))[0], self.chunk_span(self.chunk_of(hi - 1))[1])
                 for lo, hi in ranges if hi > lo]
        return self._source.prefetch(spans)

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
            raise self._error(e.chunk_error, f"record values: {e}", offset=begin, records=rng) from None
        except ArrayRecordError as e:
            raise e.located(path=self.path, offset=begin, records=rng) from None
        return bytes(values[a:b])

    # -- decoding ------------------------------------------------------------

    def _decode(self, header, data, offset, records=None):
        try:
            return decode_chunk(header, data, offset=offset)
        except ArrayRecordError as e:
            raise e.located(path=self.path, offset=offset, records=records) from None

    def read_chunk_header(self, k: int, *, window=None, headers_checked: bool = False, out=None):
        """``(header, data)`` of user chunk ``k``, checked against the footer.

        ``window``: the chunk's bytes from its offset to the next chunk's,
        when the caller already read them. ``headers_checked`` and ``out``:
        see :func:`arrayfs.riegeli.chunk.read_chunk` (a scan checks the
        block and chunk headers of a mapped file beforehand, and joins each
        chunk's data into a buffer of its thread's)."""
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
                                         file_size=self.size, headers_checked=headers_checked, out=out)
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

    def decode_chunk_in_place(self, k: int, upto: int | None = None, *, checked_map=None, out=None):
        """:meth:`decode_chunk` of chunk ``k`` reading its bytes in place
        from the file's map when it has one (no copy: the hash and the codec
        read the map; a plain read otherwise), and with ``upto`` (records
        from the chunk's first) decompressing a simple chunk's values only
        as far as record ``upto - 1`` ends: ``values`` then holds that
        prefix, ``offsets`` every record's. The data hash, when checked,
        covers the whole chunk. ``values`` never refers to the map; with
        ``out`` (see :meth:`read_chunk_header`) it may refer to ``out``'s
        memory, until its next use. ``checked_map``: a map of this file
        whose block and chunk headers around chunk ``k`` the caller checked
        (:meth:`BatchReads.headers_checked`); when this read goes
        through the same map, the file cannot have changed since, and
        those checks are not made again."""
        src = self._source
        view = src.map_view() if src is not None else None
        try:
            window = None
            if view is not None:
                begin, end = self.chunk_span(k)
                window = memoryview(view)[begin:end]
            header, data = self.read_chunk_header(k, window=window, out=out,
                                                  headers_checked=view is not None and view is checked_map)
            begin = self.chunk_span(k)[0]
            if upto is not None and header.chunk_type == SIMPLE and upto < header.num_records:
                values, offsets = self._decode_prefix(k, header, data, upto)
            else:
                values, offsets = self._decode(header, data, begin, self.chunk_records(k))
            if view is not None and not isinstance(values, bytes):
                values = bytes(values)
            del window, data
        finally:
            if view is not None:
                src.end_view()
        return values, offsets

    def _decode_prefix(self, k: int, header, data, upto: int):
        """``(values prefix, offsets)`` of simple chunk ``k``: the values up
        to the end of record ``upto - 1``."""
        begin = self.chunk_span(k)[0]
        rng = self.chunk_records(k)
        try:
            ctype, sizes, values_block = decode_record_sizes(data, header.num_records, header.decoded_data_size,
                                                             offset=begin)
            offsets = np.zeros(header.num_records + 1, dtype=np.int64)
            np.cumsum(sizes, out=offsets[1:], dtype=np.int64)
            if int(offsets[-1]) != header.decoded_data_size or int(sizes.max()) > header.decoded_data_size:
                raise CorruptChunkError(
                    f"record sizes sum to {int(offsets[-1])} bytes, the header says {header.decoded_data_size}",
                    offset=begin)
            values = decompress_prefix(ctype, values_block, int(offsets[upto]), max_size=header.decoded_data_size)
        except CompressionError as e:
            raise self._error(e.chunk_error, f"record values: {e}", offset=begin, records=rng) from None
        except ArrayRecordError as e:
            raise e.located(path=self.path, offset=begin, records=rng) from None
        return values, offsets

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

    @property
    def source(self) -> ByteSource | None:
        """The :class:`arrayfs.storage.ByteSource` the file reads from
        (``None`` once closed): for zero-copy reads of its map."""
        return self._source

    def after_fork(self) -> None:
        """Start a forked child with a fresh lock: one held by another
        thread at fork time would stay held there forever."""
        self._lock = threading.Lock()

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

