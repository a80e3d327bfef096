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

:class:`ArrayRecordFile` maps the file with ``mmap`` and is safe to read
from many threads. Opening reads the postscript and the footer's record 0
(the record count); the per-chunk index is decoded on first use, in one
vectorised pass.
"""

from __future__ import annotations

import mmap
import os
import threading
import traceback
from typing import NamedTuple

import numpy as np

from .errors import (
    ArrayRecordError,
    CorruptChunkError,
    NotArrayRecordError,
    TruncatedFileError,
)
from .layout import (
    ARRAY_RECORD_VERSION,
    POSTSCRIPT_MAGIC,
    FooterMetadata,
    LayoutError,
    decode_chunk_footers,
    decode_footer_metadata,
    decode_postscript,
)
from .riegeli.blocks import BLOCK_SIZE, is_possible_chunk_boundary
from .riegeli.chunk import (
    CHUNK_TYPE_NAMES,
    METADATA,
    SIMPLE,
    TRANSPOSED,
    decode_chunk,
    decode_record_sizes,
    read_chunk,
    read_single_record,
    read_single_records_zstd,
    single_record_zstd_frames,
)
from .riegeli.compression import CompressionError, decompress_prefix
from .riegeli.hashing import buffer_pointer
from .riegeli.varint import VarintError, read_varint

__all__ = ["ArrayRecordFile", "ChunkIndex", "SIGNATURE_BYTES"]


def _clear_frames(exc) -> None:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if exc.__traceback__ is not None:
            traceback.clear_frames(exc.__traceback__.tb_next or exc.__traceback__)
        exc = exc.__context__

SIGNATURE_BYTES = bytes.fromhex(
    "83af70d10d884a3f0000000000000000"
    "4000000000000000" "91bac23c9287e1a9"
    "0000000000000000" "e19f13c0e9b1c372"
    "7300000000000000" "0000000000000000"
)
_RECORD_CHUNK_TYPES = (SIMPLE, TRANSPOSED)


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


class ArrayRecordFile:
    """Random access to the records of one ArrayRecord file.

    Args:
        path: the file (``str`` or ``os.PathLike``).
        verify: check each chunk's data hash on read (header hashes are
            always checked), as Google's reader does.
        load_index: decode the per-chunk index now instead of on first read.

    Attributes:
        path: the path as given, as ``str``.
        num_records: records in the file (from the footer metadata).
        writer_options: the writer options string stored in the footer
            (``""`` when the writer stored none).
        size: file size in bytes. ``mtime_ns``: modification time at open.

    Raises:
        NotArrayRecordError: empty file, wrong signature, no valid postscript
            or footer (for example a file still being written).
        TruncatedFileError: the file ends before a structure its headers
            describe.
        CorruptChunkError: a hash mismatch or a self-contradicting footer.
        OSError: the file cannot be opened or mapped.
    """

    def __init__(self, path, *, verify: bool = True, load_index: bool = False):
        self.path = os.fspath(path)
        self.verify = verify
        self._lock = threading.Lock()
        self._index = None
        self._mm = None
        self._ptr = None
        fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            st = os.fstat(fd)
            self.size = st.st_size
            self.mtime_ns = st.st_mtime_ns
            self.identity = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            if self.size == 0:
                raise NotArrayRecordError("empty file (0 bytes)", path=self.path)
            # mmap keeps a duplicate of the descriptor; ours is closed at once.
            self._mm = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
            self._ptr = buffer_pointer(self._mm)
        finally:
            os.close(fd)
        try:
            self._open()
            if load_index:
                self.index()
        except BaseException as e:
            # The traceback's frames hold views of the map; drop them so that
            # close() can unmap now even while the caller keeps the error.
            _clear_frames(e)
            self.close()
            raise

    # -- opening -----------------------------------------------------------

    def _error(self, cls, reason, offset=None, records=None):
        return cls(reason, path=self.path, offset=offset, records=records)

    def _open(self) -> None:
        mm = self._mm
        if mm[: len(SIGNATURE_BYTES)] != SIGNATURE_BYTES:
            head = mm[:8]
            raise self._error(
                NotArrayRecordError, f"not a Riegeli/ArrayRecord file (starts with {head.hex()})", offset=0
            )
        if self.size < 2 * BLOCK_SIZE or self.size % BLOCK_SIZE:
            what = "less than two 64 KiB blocks" if self.size < 2 * BLOCK_SIZE else "not a whole number of 64 KiB blocks"
            raise self._error(
                TruncatedFileError,
                f"{self.size} bytes is {what}: the file is truncated or still being written",
            )
        ps_offset = self.size - BLOCK_SIZE
        try:
            header, data, _ = read_chunk(mm, ps_offset, verify=True)
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
        try:
            header, data, _ = self._read(footer_offset, limit=ps_offset, verify=True)
        except ArrayRecordError as e:
            raise type(e)(f"footer: {e.reason}", path=self.path, offset=footer_offset) from None
        if header.chunk_type != SIMPLE or header.num_records < 1:
            raise self._error(NotArrayRecordError, "footer is not a simple chunk", offset=footer_offset)
        self._footer = (header, data)
        meta = self._footer_metadata(header, data)
        if meta is None:
            raise self._error(
                NotArrayRecordError, "Riegeli file without ArrayRecord footer metadata", offset=footer_offset
            )
        if meta.version != ARRAY_RECORD_VERSION:
            raise self._error(
                NotArrayRecordError, f"unsupported ArrayRecord version {meta.version}", offset=footer_offset
            )
        if meta.num_chunks is None or meta.num_records is None or meta.num_chunks != header.num_records - 1:
            raise self._error(
                CorruptChunkError,
                f"footer metadata says {meta.num_chunks} chunks, the footer holds {header.num_records - 1}",
                offset=footer_offset,
            )
        if meta.num_records > footer_offset:
            # Every chunk spans at least as many bytes as it has records
            # (spec: padding rule), so no count can exceed the bytes before
            # the footer; checking it keeps a forged count from sizing
            # allocations.
            raise self._error(
                CorruptChunkError,
                f"footer metadata claims {meta.num_records} records in {footer_offset} bytes of chunks",
                offset=footer_offset,
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

    def _footer_metadata(self, header, data) -> FooterMetadata | None:
        """Record 0 of the footer, decoding as little of the chunk as the codec allows."""
        off = self.footer_offset
        try:
            ctype = data[0]
            sizes_len, pos = read_varint(data, 1)
            sizes_block = data[pos : pos + sizes_len]
            first = decompress_prefix(ctype, sizes_block, 10, max_size=header.num_records * 10)
            size0, _ = read_varint(first, 0)
            if size0 > header.decoded_data_size:
                raise CorruptChunkError("footer metadata larger than the footer", offset=off)
            rec0 = decompress_prefix(ctype, data[pos + sizes_len :], size0, max_size=header.decoded_data_size)
            return decode_footer_metadata(rec0)
        except (CompressionError, VarintError, LayoutError, IndexError) as e:
            raise self._error(CorruptChunkError, f"bad footer metadata: {e}", offset=off) from None

    # -- the chunk index -----------------------------------------------------

    def index(self):
        """The per-chunk index, decoded once (thread-safe).

        Returns a :class:`ChunkIndex` ``(offsets, counts, first)``.
        """
        idx = self._index
        if idx is not None:
            return idx
        with self._lock:
            if self._index is None:
                self._index = self._load_index()
            return self._index

    def _load_index(self):
        header, data = self._footer
        values, offsets = self._decode(header, data, self.footer_offset)
        try:
            footers = decode_chunk_footers(values, offsets[1:])
        except LayoutError as e:
            raise self._error(CorruptChunkError, f"bad chunk footer: {e}", offset=self.footer_offset) from None
        chunk_offsets = footers[:, 0].astype(np.int64)
        counts = footers[:, 2].astype(np.int64)
        self.chunk_decoded_sizes = footers[:, 1].astype(np.int64)
        first = np.zeros(len(counts) + 1, dtype=np.int64)
        np.cumsum(counts, out=first[1:])
        if (footers[:, 0] >= np.uint64(self.footer_offset)).any() or (chunk_offsets < 64).any():
            bad = int(np.flatnonzero((chunk_offsets < 64) | (footers[:, 0] >= np.uint64(self.footer_offset)))[0])
            raise self._error(
                CorruptChunkError,
                f"footer entry {bad} points to byte {int(footers[bad, 0])}, outside the records area",
                offset=self.footer_offset,
            )
        if len(counts) and (np.diff(chunk_offsets) <= 0).any():
            raise self._error(CorruptChunkError, "footer chunk offsets are not increasing", offset=self.footer_offset)
        if int(first[-1]) != self.num_records or (footers[:, 2] > np.uint64(2**56)).any():
            raise self._error(
                CorruptChunkError,
                f"footer entries hold {int(first[-1])} records, the metadata says {self.num_records}",
                offset=self.footer_offset,
            )
        # Fast chunk lookup when every chunk but the last holds group_size records.
        g = int(counts[0]) if len(counts) else 1
        uniform = len(counts) == 0 or (g > 0 and bool((counts[:-1] == g).all()) and 0 < counts[-1] <= g)
        self._group_size = g if uniform else None
        # Plain ints index faster than numpy scalars on the single-read path.
        self._offsets_list = chunk_offsets.tolist()
        self._footer = None  # the decoded arrays replace it
        return ChunkIndex(chunk_offsets, counts, first)

    @property
    def group_size(self):
        """Records per chunk when every chunk but the last holds the same
        number (then ``chunk = i // group_size``), else ``None``."""
        if self._index is None:
            self.index()
        return self._group_size

    def chunk_of(self, i: int) -> int:
        """Index of the chunk holding record ``i`` (``0 <= i < num_records``)."""
        offsets, counts, first = self.index()
        g = self.group_size
        if g is not None:
            return i // g
        return int(np.searchsorted(first, i, side="right")) - 1

    # -- records ---------------------------------------------------------------

    def read_record(self, i: int) -> bytes:
        """Record ``i`` (``0 <= i < num_records``, unchecked) as ``bytes``.

        Single-record chunks (``group_size:1``, today's default) take a fast
        path that hashes and decodes in place; other chunks are decoded
        whole (callers that read neighbours should cache them, see
        :meth:`read_records`).
        """
        if self._index is None:
            self.index()
        if self._group_size == 1:
            mm = self._mm
            if mm is None:
                raise ValueError(f"{self.path}: read from a closed ArrayRecord file")
            rec = read_single_record(mm, self._ptr, self._offsets_list[i], self.size, verify=self.verify)
            if rec is not None:
                return rec
        k = self.chunk_of(i)
        values, offsets = self.decode_chunk(k)
        j = i - int(self._index[2][k])
        if len(offsets) == 2 and isinstance(values, bytes):
            return values
        return bytes(values[offsets[j] : offsets[j + 1]])

    def single_record_frames(self, indices):
        """For batched reads of ``group_size:1`` zstd files across shards.

        ``indices`` (``int64`` array of valid local indices). Returns
        ``(sel, group)``: the positions in ``indices`` whose record is a
        checked zstd frame, and ``group = (buffer, segments, sizes)`` for
        :func:`arrayfs.riegeli.chunk.decompress_zstd_frames`. The other
        positions must be read with :meth:`read_record`. Requires
        ``group_size == 1``.
        """
        if self._index is None:
            self.index()
        mm = self._mm
        if mm is None:
            raise ValueError(f"{self.path}: read from a closed ArrayRecord file")
        sel, segs, sizes = single_record_zstd_frames(mm, self._ptr, self._index[0][indices], self.size, verify=self.verify)
        return sel, (mm, segs, sizes)

    def group_by_chunk(self, indices) -> list:
        """``[(chunk, positions), ...]``: the positions in ``indices`` (an
        ``int64`` array of valid local indices, not empty) of the records of
        each chunk they touch, chunks in increasing order."""
        first = self.index()[2]
        g = self._group_size
        chunks = indices // g if g is not None else np.searchsorted(first, indices, side="right") - 1
        order = np.argsort(chunks, kind="stable")
        cuts = np.flatnonzero(np.diff(chunks[order])) + 1
        return [(int(chunks[grp[0]]), grp) for grp in np.split(order, cuts)]

    def read_records(self, indices, *, decode=None, threads: int = 0) -> list[bytes]:
        """Records at ``indices`` (``int64`` array of valid local indices), in
        that order, as ``list[bytes]``; each chunk involved is decoded once.

        ``decode(k)`` replaces :meth:`decode_chunk` for multi-record chunks
        (the dataset passes its cached one). One-record zstd chunks are
        decompressed together on ``threads`` threads outside the GIL (0: the
        calling thread); other chunks are decoded on the calling thread and
        callers split large batches of them across threads.
        """
        if self._index is None:
            self.index()
        if len(indices) == 0:
            return []
        if self._group_size == 1:
            read = self.read_record
            if len(indices) < 16 or self._mm is None:
                return [read(i) for i in indices.tolist()]
            out = read_single_records_zstd(
                self._mm, self._ptr, self._index[0][indices], self.size, verify=self.verify, threads=threads
            )
            for j in [j for j, rec in enumerate(out) if rec is None]:
                out[j] = read(int(indices[j]))  # other codecs, or the precise error
            return out
        first = self._index[2]
        groups = self.group_by_chunk(indices)
        wanted = [k for k, _ in groups]
        out: list = [None] * len(indices)
        for (k, grp), (values, offsets) in zip(groups, map(decode or self.decode_chunk, wanted)):
            local = indices[grp] - first[k]
            if len(offsets) == 2 and isinstance(values, bytes):
                for slot in grp.tolist():
                    out[slot] = values
                continue
            for slot, a, b in zip(grp.tolist(), offsets[local].tolist(), offsets[local + 1].tolist()):
                out[slot] = bytes(values[a:b])
        return out

    # -- decoding ------------------------------------------------------------

    def _read(self, offset: int, *, limit=None, verify=None):
        try:
            return read_chunk(self._mm, offset, verify=self.verify if verify is None else verify, limit=limit)
        except ArrayRecordError as e:
            raise e.located(path=self.path, offset=offset) from None
        except (TypeError, ValueError):
            if self._mm is None or self._mm.closed:
                raise ValueError(f"{self.path}: I/O on a closed ArrayRecord file") from None
            raise

    def _decode(self, header, data, offset, records=None):
        try:
            return decode_chunk(header, data, offset=offset)
        except ArrayRecordError as e:
            raise e.located(path=self.path, offset=offset, records=records) from None

    def read_chunk_header(self, k: int):
        """``(header, data)`` of user chunk ``k``, checked against the footer."""
        offsets, counts, first = self.index()
        off = int(offsets[k])
        rng = (int(first[k]), int(first[k + 1]))
        try:
            header, data, _ = self._read(off)
        except ArrayRecordError as e:
            raise e.located(records=rng) from None
        if header.chunk_type not in _RECORD_CHUNK_TYPES or header.num_records != counts[k]:
            kind = CHUNK_TYPE_NAMES.get(header.chunk_type, f"unknown type {header.chunk_type:#04x}")
            raise self._error(
                CorruptChunkError,
                f"footer expects a records chunk of {int(counts[k])} records, found a {kind} chunk "
                f"of {header.num_records}",
                offset=off, records=rng,
            )
        return header, data

    def decode_chunk(self, k: int):
        """Decode user chunk ``k`` into ``(values, offsets)`` (see
        :mod:`arrayfs.riegeli.chunk`). Raises :class:`ArrayRecordError`
        subclasses naming the file, the chunk offset and its record range."""
        header, data = self.read_chunk_header(k)
        offsets, counts, first = self._index
        rng = (int(first[k]), int(first[k + 1]))
        return self._decode(header, data, int(offsets[k]), rng)

    def chunk_record_sizes(self, k: int) -> np.ndarray:
        """Sizes in bytes (``uint64``, shape ``(records in chunk,)``) of the
        records of chunk ``k``, decoding only the sizes, not the values
        (single-record chunks need no decoding at all)."""
        offsets, counts, first = self.index()
        if counts[k] == 1:
            return self.chunk_decoded_sizes[k : k + 1].astype(np.uint64)
        header, data = self.read_chunk_header(k)
        if header.chunk_type != SIMPLE:
            values, offs = self._decode(header, data, int(offsets[k]), (int(first[k]), int(first[k + 1])))
            return np.diff(offs).astype(np.uint64)
        try:
            _, sizes, _ = decode_record_sizes(data, header.num_records, header.decoded_data_size, offset=int(offsets[k]))
        except ArrayRecordError as e:
            raise e.located(path=self.path, records=(int(first[k]), int(first[k + 1]))) from None
        return sizes

    def read_metadata_chunk(self):
        """``(header, data)`` of the file metadata chunk (type ``'m'``) right
        after the signature, or ``None`` when the file has none."""
        header, data, _ = self._read(64)
        if header.chunk_type != METADATA:
            return None
        return header, data

    # -- lifetime ------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._mm is None

    def close(self) -> None:
        """Unmap the file. Safe to call twice. Records already returned stay valid."""
        mm, self._mm = self._mm, None
        self._footer = None
        # Dropped, not released: a read in flight on another thread may still
        # hash through this pointer. Without it (the usual case) the export
        # ends here and the unmap below succeeds; with it, the unmap fails
        # with BufferError and happens when that read lets go.
        self._ptr = None
        if mm is not None:
            try:
                mm.close()
            except BufferError:
                # A zero-copy view is still alive somewhere (an uncompressed
                # chunk in a caller's hands); the map is freed with it.
                pass

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
