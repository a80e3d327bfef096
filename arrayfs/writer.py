"""``ArrayRecordWriter``: the drop-in for ``array_record_module.ArrayRecordWriter``.

Writes the layout of array_record ``cpp/array_record_writer.cc``: the
signature, one simple chunk per ``group_size`` records, the footer chunk
(``RiegeliFooterMetadata`` then one ``ArrayRecordFooter`` per chunk) right
after the last one and padded to a block boundary, then the postscript chunk (three
``RiegeliPostscript``) padded to the end of its block.

Where the bytes go:

* a local path: the file is written under a hidden temporary name in the
  same directory and renamed to its final name only when
  :meth:`ArrayRecordWriter.close` succeeds, so a crashed or abandoned writer
  never leaves a file that looks complete (and a live ``arrayfs mount``
  never shows a half-written shard);
* an fsspec URL (``s3://``, ``gs://``, ``memory://``, ...): the file is
  built in the local temporary directory and uploaded by ``close()``; until
  then nothing exists at the URL, and a failed or aborted write uploads
  nothing;
* a binary stream (anything with ``write``, such as a file Beam's
  ``FileSystems.create`` returns): bytes are written to it in order with no
  seek; ``close()`` flushes it and leaves closing it to its owner.
"""

from __future__ import annotations

import collections
import os
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from itertools import accumulate, chain, repeat

import brotli
import numpy as np
import snappy
import zstandard

from .layout import FooterEncoder, encode_postscript
from .options import parse_writer_options
from .storage import StorageError, filesystem, is_remote
from .riegeli.blocks import CHUNK_HEADER_SIZE
from .riegeli.chunk import SIMPLE, encode_chunk_header, encode_simple
from .riegeli.chunk_writer import ChunkWriter, fill_chunk_headers
from .riegeli.compression import BROTLI, NONE, SNAPPY, ZSTD
from .riegeli.varint import encode_varint, encode_varints

__all__ = ["ArrayRecordWriter"]

# A batch of records is encoded together: at most this many records, and it
# is cut once it holds this many bytes (always at a chunk boundary).
_BATCH_RECORDS = 4096
_BATCH_BYTES = 1 << 20
# Record sizes whose one-record chunk prefix is kept (see _Encoder._prefix).
_PREFIX_CACHE = 1 << 16
_PLACEHOLDER = bytes(CHUNK_HEADER_SIZE)


class _Batch:
    """Records on their way to becoming chunks: ``records`` in file order,
    ``counts`` the records of each chunk; ``blocks`` what the codec gets,
    ``frames`` what it gave back (filled by :meth:`_Encoder.compress`)."""

    __slots__ = ("records", "counts", "lengths", "joined", "blocks", "frames")

    def __init__(self, records, counts):
        self.records = records
        self.counts = counts
        self.lengths = None
        self.joined = None
        self.blocks = None
        self.frames = None


class _Encoder:
    """Encodes batches of records into simple chunks (spec: "Simple chunk
    with records") in three steps: :meth:`prepare` (the calling thread),
    :meth:`compress` (any thread; for zstd one C call per batch that
    releases the GIL, so a pool of them runs on several cores) and
    :meth:`assemble` (the calling thread, in file order).

    The codec's output equals what :func:`arrayfs.riegeli.chunk.encode_simple`
    gives each chunk, and that of Google's writer for the same options.
    """

    def __init__(self, options):
        self.ctype = options.compression
        self.level = options.level
        self.window_log = options.window_log
        self.group_size = options.group_size
        self._local = threading.local()
        self._prefixes: dict[int, bytes] = {}
        self._params = None
        if self.ctype == ZSTD:
            self._params = zstandard.ZstdCompressionParameters.from_level(
                self.level, window_log=self.window_log or 0, write_content_size=True
            )

    # -- the codec ------------------------------------------------------------

    def _zstd(self) -> zstandard.ZstdCompressor:
        c = getattr(self._local, "zstd", None)
        if c is None:
            c = self._local.zstd = zstandard.ZstdCompressor(compression_params=self._params)
        return c

    def _compress_one(self, data) -> bytes:
        """One compressed block's payload (no size prefix)."""
        if self.ctype == ZSTD:
            return self._zstd().compress(data)
        if self.ctype == BROTLI:
            window_log = self.window_log
            if window_log is not None and window_log > 24:
                window_log = 24  # python brotli's encoder stops at 24; any window decodes
            kwargs = {"quality": self.level}
            if window_log is not None:
                kwargs["lgwin"] = window_log
            return brotli.compress(data, **kwargs)
        return snappy.compress(data)

    def block(self, data) -> bytes:
        """``data`` as one block of a simple chunk: compressed and prefixed
        by its size, or as it is when uncompressed."""
        if self.ctype == NONE:
            return bytes(data)
        return encode_varint(len(data)) + self._compress_one(data)

    def chunk_data(self, sizes, values) -> bytes:
        """Simple chunk data from the record ``sizes`` (varints) and the
        ``values`` (records back to back), both bytes-like."""
        sizes_block = self.block(sizes)
        return b"".join((bytes((self.ctype,)), encode_varint(len(sizes_block)), sizes_block, self.block(values)))

    # -- batches --------------------------------------------------------------

    def prepare(self, records: list, final: bool) -> _Batch:
        """Cut ``records`` into chunks of ``group_size`` (the last one
        shorter only if ``final``) and lay out what the codec needs."""
        g = self.group_size
        n = len(records)
        counts = np.full(n // g, g, dtype=np.int64)
        if n % g:
            assert final
            counts = np.append(counts, n % g)
        batch = _Batch(records, counts)
        if g == 1:
            batch.lengths = list(map(len, records))
            if self.ctype == ZSTD:
                batch.joined = b"".join(records)
            return batch
        lengths = np.fromiter(map(len, records), dtype=np.int64, count=n)
        batch.lengths = lengths
        batch.joined = b"".join(records)
        ends = np.cumsum(counts)
        value_bounds = np.concatenate(([0], np.cumsum(lengths)[ends - 1]))
        # Each record's size as a varint: 1 + one byte per 7 bits past the first 7.
        varint_lengths = np.ones(n, dtype=np.int64)
        for k in range(1, 10):
            varint_lengths += lengths >= (1 << (7 * k))
        size_bounds = np.concatenate(([0], np.cumsum(varint_lengths)[ends - 1]))
        batch.blocks = (encode_varints(lengths), np.diff(size_bounds), batch.joined, np.diff(value_bounds))
        return batch

    def _frames(self, buf, lengths):
        """The compressed payload of each piece of ``buf`` (``lengths``
        bytes each, in order), as a sequence of bytes-likes."""
        if self.ctype != ZSTD:
            return [self._compress_one(b) for b in _slices(buf, lengths)]
        if not len(buf):  # zstandard's multi-buffer API refuses an empty buffer
            return [self._compress_one(b"")] * len(lengths)
        return self._zstd().multi_compress_to_buffer(_segments(buf, lengths), threads=1)

    def compress(self, batch: _Batch) -> None:
        """Compress the batch's blocks (the step a pool runs)."""
        if self.ctype == NONE:
            return
        if self.group_size == 1:
            if self.ctype == ZSTD:
                batch.frames = self._frames(batch.joined, batch.lengths)
            else:
                batch.frames = list(map(self._compress_one, batch.records))
            return
        sizes, size_lengths, values, value_lengths = batch.blocks
        batch.frames = (self._frames(sizes, size_lengths), self._frames(values, value_lengths))

    def _prefix(self, size: int) -> bytes:
        """Everything in a one-record chunk's data before the record's
        compressed bytes: it depends on the record's size alone."""
        prefix = self._prefixes.get(size)
        if prefix is None:
            if len(self._prefixes) >= _PREFIX_CACHE:
                self._prefixes.clear()
            sizes_block = self.block(encode_varint(size))
            prefix = bytes((self.ctype,)) + encode_varint(len(sizes_block)) + sizes_block
            if self.ctype != NONE:
                prefix += encode_varint(size)
            self._prefixes[size] = prefix
        return prefix

    def assemble(self, batch: _Batch) -> tuple[bytearray, np.ndarray, np.ndarray]:
        """The batch's chunks back to back, headers filled in:
        ``(buf, starts, decoded_sizes)``."""
        if self.group_size == 1:
            lengths = batch.lengths
            payloads = batch.records if self.ctype == NONE else batch.frames
            prefixes = list(map(self._prefix, lengths))
            pieces = chain.from_iterable(zip(repeat(_PLACEHOLDER), prefixes, payloads))
            data_sizes = np.fromiter(map(len, prefixes), dtype=np.int64, count=len(lengths))
            data_sizes += np.fromiter(map(len, payloads), dtype=np.int64, count=len(lengths))
            decoded = np.asarray(lengths, dtype=np.int64)
        else:
            pieces, data_sizes, decoded = self._group_pieces(batch)
        buf = bytearray().join(pieces)
        starts = np.zeros(len(data_sizes), dtype=np.int64)
        np.cumsum(data_sizes[:-1] + CHUNK_HEADER_SIZE, out=starts[1:])
        fill_chunk_headers(buf, starts, data_sizes, SIMPLE, batch.counts, decoded)
        return buf, starts, decoded

    def _group_pieces(self, batch: _Batch):
        sizes, size_lengths, values, value_lengths = batch.blocks
        k = len(batch.counts)
        ctype = bytes((self.ctype,))
        pieces = []
        data_sizes = np.empty(k, dtype=np.int64)
        size_at = [0, *accumulate(size_lengths.tolist())]
        value_at = [0, *accumulate(value_lengths.tolist())]
        sizes_mv, values_mv = memoryview(sizes), memoryview(values)
        for i in range(k):
            raw_sizes = sizes_mv[size_at[i] : size_at[i + 1]]
            raw_values = values_mv[value_at[i] : value_at[i + 1]]
            if self.ctype == NONE:
                part = (_PLACEHOLDER, ctype + encode_varint(len(raw_sizes)), raw_sizes, raw_values)
            else:
                sizes_frame, values_frame = batch.frames[0][i], batch.frames[1][i]
                size_prefix = encode_varint(len(raw_sizes))
                part = (
                    _PLACEHOLDER,
                    ctype + encode_varint(len(size_prefix) + len(sizes_frame)) + size_prefix,
                    sizes_frame,
                    encode_varint(len(raw_values)),
                    values_frame,
                )
            pieces += part
            data_sizes[i] = sum(map(len, part)) - CHUNK_HEADER_SIZE
        return pieces, data_sizes, np.asarray(value_lengths, dtype=np.int64)


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
    mv = memoryview(buf)
    at = 0
    for n in np.asarray(lengths).tolist():
        yield mv[at : at + n]
        at += n


class ArrayRecordWriter:
    """Writes records to a new ArrayRecord file.

    Args:
        path: the file to create (replaced if it exists, once ``close()``
            succeeds): a local path, an fsspec URL, or a writable binary
            stream (see the module docstring).
        options: array_record writer options, e.g.
            ``"group_size:1024,zstd:3"``; see :mod:`arrayfs.options`.
            ``transpose:true`` raises ``ValueError`` (writing transposed
            chunks is not supported). ``max_parallelism:N`` compresses
            chunks on N threads (default 1, as Google's Python writer).
        storage_options: passed to fsspec for a URL ``path`` (credentials,
            endpoint); ignored for local paths and streams.

    Raises:
        ValueError: a bad options string.
        OSError: the directory is not writable;
            :class:`arrayfs.storage.StorageError` (an ``OSError``) when a
            URL's backend is missing or the upload fails.
    """

    def __init__(self, path, options: str = "", *, storage_options: dict | None = None):
        self._options = parse_writer_options(options)
        if self._options.transpose:
            raise ValueError(
                "transpose:true is not supported by arrayfs's writer (it reads transposed "
                "files); write with transpose:false"
            )
        self._tmp_path = None
        self._remote = None
        self._stream = None
        if hasattr(path, "write"):
            self._stream = path
            self.path = str(getattr(path, "name", "<stream>"))
            self._file = path
        else:
            self.path = os.fspath(path)
            if is_remote(self.path):
                # Checked now, not at close(): a missing backend or a bad URL
                # should fail before any record is encoded.
                self._remote = filesystem(self.path, storage_options)
                name = self.path.rstrip("/").rsplit("/", 1)[-1]
                directory = None
            else:
                directory, name = os.path.split(os.path.abspath(self.path))
            fd, self._tmp_path = tempfile.mkstemp(prefix=f".{name}.", suffix=".arrayfs-tmp", dir=directory)
            # mkstemp makes the file 0600; a dataset is shared like any file
            # created with open(): 0666 less the umask.
            try:
                umask = os.umask(0)
                os.umask(umask)
                os.fchmod(fd, 0o666 & ~umask)
                self._file = os.fdopen(fd, "wb", buffering=1 << 20)
            except BaseException:
                os.close(fd)
                os.unlink(self._tmp_path)
                raise
        self._encoder = _Encoder(self._options)
        self._footer = FooterEncoder(self._options.to_string())
        # Records not yet encoded, and the check write() makes: encode once
        # the list reaches _flush_at records or _room (bytes) goes below 0
        # (both set by _flush so that only whole chunks are encoded).
        g = self._options.group_size
        self._pending: list[bytes] = []
        self._flush_at = self._batch_records = max(_BATCH_RECORDS // g, 1) * g
        self._room = _BATCH_BYTES
        self._written = 0  # records handed to the encoder
        self._error: BaseException | None = None
        self._closed = False
        self._stop = False  # closed or failed: write() takes its slow path
        workers = self._options.max_parallelism
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="arrayfs-writer") if workers > 1 else None
        self._inflight: collections.deque = collections.deque()
        try:
            self._chunks = ChunkWriter(self._file)
        except BaseException:
            self.abort()
            raise

    # -- Google's API --------------------------------------------------------

    def ok(self) -> bool:
        """``True`` while open and no write has failed."""
        return not self._closed and self._error is None

    def is_open(self) -> bool:
        return not self._closed

    def write(self, record) -> None:
        """Append one record (``bytes``, ``bytearray`` or ``memoryview``).

        Raises ``TypeError`` for ``str`` and other non-bytes objects,
        ``RuntimeError`` once closed or after a failed write.
        """
        # Called once per record: one test for the common case, then two
        # counters (records and bytes room) before the batch is encoded.
        if record.__class__ is not bytes or self._stop:
            record = self._admit(record)
        pending = self._pending
        pending.append(record)
        self._room -= len(record)
        if len(pending) >= self._flush_at or self._room < 0:
            self._flush(final=False)

    def _admit(self, record) -> bytes:
        if self._stop:
            raise RuntimeError(f"{self.path}: writer is closed" if self._closed else f"{self.path}: {self._error}")
        if isinstance(record, (bytes, bytearray, memoryview)):
            return bytes(record)
        raise TypeError(f"write() takes bytes, got {type(record).__name__}")

    def close(self) -> None:
        """Write the last chunk, the footer and the postscript, then move the
        file to its final name. Raises ``RuntimeError`` if a write failed;
        the partial file is then removed. A second call does nothing."""
        if self._closed:
            return
        try:
            if self._error is not None:
                raise RuntimeError(f"{self.path}: {self._error}")
            self._flush(final=True)
            self._write_footer()
            if self._stream is not None:
                self._stream.flush()
            else:
                self._file.close()
                if self._remote is not None:
                    self._upload()
                else:
                    os.replace(self._tmp_path, self.path)
        except BaseException:
            self.abort()
            raise
        finally:
            self._closed = self._stop = True
            if self._pool is not None:
                self._pool.shutdown(wait=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __del__(self):
        if not getattr(self, "_closed", True):
            self.abort()

    def __repr__(self):
        return f"ArrayRecordWriter({self.path!r}, {self._num_records} records, {self._options.to_string()!r})"

    @property
    def _num_records(self) -> int:
        return self._written + len(self._pending)

    # -- internals -------------------------------------------------------------

    def _upload(self) -> None:
        fs, rpath = self._remote
        try:
            fs.put_file(self._tmp_path, rpath)
        except Exception as e:
            raise StorageError(f"{self.path}: upload failed: {type(e).__name__}: {e}") from e
        finally:
            os.unlink(self._tmp_path)

    def abort(self) -> None:
        """Give up the file: nothing appears under its final name (nothing
        is uploaded to a URL), the temporary file is removed. With a stream
        target, the bytes already written stay in the stream; its owner
        discards them. Safe after :meth:`close` (does nothing)."""
        tmp = getattr(self, "_tmp_path", None)
        if self._closed and (tmp is None or not os.path.exists(tmp)):
            return
        self._closed = self._stop = True
        if self._stream is None:
            try:
                self._file.close()
            except Exception:
                pass
        if tmp is not None:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _flush(self, *, final: bool) -> None:
        """Encode the pending records that fill whole chunks (all of them
        if ``final``), then write every encoded batch that is ready (all of
        them if ``final``)."""
        try:
            pending = self._pending
            g = self._options.group_size
            n = len(pending) if final else len(pending) - len(pending) % g
            if n == 0 and not final:
                # Over the byte budget inside a chunk: encode when it is whole.
                self._flush_at = len(pending) + g - len(pending) % g
                self._room = float("inf")
                return
            if n:
                if n == len(pending):
                    batch, self._pending = pending, []
                else:
                    batch, self._pending = pending[:n], pending[n:]
                self._room = _BATCH_BYTES - sum(map(len, self._pending))
                self._written += n
                self._flush_at = self._batch_records
                encoded = self._encoder.prepare(batch, final)
                if self._pool is None:
                    self._encoder.compress(encoded)
                    self._put(encoded)
                else:
                    self._inflight.append((encoded, self._pool.submit(self._encoder.compress, encoded)))
            # Keep at most two batches per worker in flight, written in order.
            limit = 0 if final else 2 * self._options.max_parallelism
            while len(self._inflight) > limit:
                encoded, future = self._inflight.popleft()
                future.result()
                self._put(encoded)
        except BaseException as e:
            self._error = e
            self._stop = True
            raise

    def _put(self, batch: _Batch) -> None:
        buf, starts, decoded = self._encoder.assemble(batch)
        offsets = self._chunks.write_chunks(
            buf, starts, batch.counts, pad_to_block_boundary=self._options.pad_to_block_boundary
        )
        self._footer.add(offsets, decoded, batch.counts)

    def _write_footer(self) -> None:
        """The footer chunk (metadata, then one footer per chunk) and the
        postscript, each padded to a block boundary (array_record
        ``ArrayRecordWriterBase::Close``)."""
        cw = self._chunks
        values, sizes, count = self._footer.finish(self._num_records)
        data = self._encoder.chunk_data(sizes, values)
        del sizes
        footer_offset = cw.write_chunk(encode_chunk_header(data, SIMPLE, count, len(values)), data)
        del data, values
        cw.pad_to_block_boundary()
        postscript, decoded_size = encode_simple([encode_postscript(footer_offset)] * 3, NONE)
        cw.write_chunk(encode_chunk_header(postscript, SIMPLE, 3, decoded_size), postscript)
        cw.pad_to_block_boundary()
