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

import numpy as np
import zstandard

from .layout import encode_chunk_footers, encode_footer_metadata, encode_postscript
from .options import parse_writer_options
from .riegeli.chunk import SIMPLE, encode_chunk_header
from .riegeli.chunk_writer import ChunkWriter
from .riegeli.compression import NONE, ZSTD, compress_block
from .riegeli.varint import encode_varint, encode_varints
from .storage import StorageError, filesystem, is_remote

__all__ = ["ArrayRecordWriter"]

# Chunks handed to one worker task; amortises the pool's per-task cost
# for small chunks (group_size 1).
_CHUNKS_PER_TASK = 64


class _Encoder:
    """Encodes simple chunks; keeps one zstd compressor per thread."""

    def __init__(self, options):
        self.ctype = options.compression
        self.level = options.level
        self.window_log = options.window_log
        self._local = threading.local()
        self._small: dict = {}

    def _compress(self, data) -> bytes:
        if len(data) <= 10:
            # A one-record chunk's sizes block is one varint; records of equal
            # size repeat it, and compressing is deterministic, so reuse it.
            hit = self._small.get(data)
            if hit is None:
                if len(self._small) >= 4096:
                    self._small.clear()
                hit = self._small[bytes(data)] = self._compress_uncached(data)
            return hit
        return self._compress_uncached(data)

    def _compress_uncached(self, data) -> bytes:
        if self.ctype == ZSTD:
            c = getattr(self._local, "zstd", None)
            if c is None:
                params = zstandard.ZstdCompressionParameters.from_level(
                    self.level, window_log=self.window_log or 0, write_content_size=True
                )
                c = self._local.zstd = zstandard.ZstdCompressor(compression_params=params)
            return encode_varint(len(data)) + c.compress(data)
        window_log = self.window_log
        if window_log is not None and window_log > 24:
            window_log = 24  # python brotli's encoder stops at 24; any window decodes
        return compress_block(self.ctype, data, level=self.level, window_log=window_log)

    def encode(self, records) -> tuple[bytes, bytes, int, int]:
        """``(header, data, num_records, decoded_data_size)`` of one chunk."""
        if len(records) == 1:
            return self.encode_joined(records[0], encode_varint(len(records[0])), 1)
        return self.encode_joined(b"".join(records), encode_varints([len(r) for r in records]), len(records))

    def encode_joined(self, values: bytes, sizes: bytes, num_records: int) -> tuple[bytes, bytes, int, int]:
        """Like :meth:`encode` for records already concatenated in ``values``
        with their sizes as varints in ``sizes``."""
        if self.ctype == NONE:
            sizes_block, values_block = sizes, values
        else:
            sizes_block, values_block = self._compress(sizes), self._compress(values)
        data = b"".join((bytes((self.ctype,)), encode_varint(len(sizes_block)), sizes_block, values_block))
        header = encode_chunk_header(data, SIMPLE, num_records, len(values))
        return header, data, num_records, len(values)

    def encode_many(self, groups):
        return [self.encode(g) for g in groups]


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
        self._group: list[bytes] = []
        # Per user chunk: offset (bytes), decoded size (bytes), records.
        self._footers: tuple[list, list, list] = ([], [], [])
        self._num_records = 0
        self._error: BaseException | None = None
        self._closed = False
        workers = self._options.max_parallelism
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="arrayfs-writer") if workers > 1 else None
        self._pending: collections.deque = collections.deque()
        self._batch: list[list[bytes]] = []
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
        if not self.ok():
            raise RuntimeError(f"{self.path}: writer is closed" if self._closed else f"{self.path}: {self._error}")
        if not isinstance(record, bytes):
            if isinstance(record, (bytearray, memoryview)):
                record = bytes(record)
            else:
                raise TypeError(f"write() takes bytes, got {type(record).__name__}")
        self._group.append(record)
        self._num_records += 1
        if len(self._group) >= self._options.group_size:
            self._submit(self._group)
            self._group = []

    def close(self) -> None:
        """Write the last chunk, the footer and the postscript, then move the
        file to its final name. Raises ``RuntimeError`` if a write failed;
        the partial file is then removed. A second call does nothing."""
        if self._closed:
            return
        try:
            if self._error is not None:
                raise RuntimeError(f"{self.path}: {self._error}")
            if self._group:
                self._submit(self._group)
                self._group = []
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
            self._closed = True
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
        self._closed = True
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

    def _submit(self, group: list[bytes]) -> None:
        try:
            if self._pool is None:
                self._put(*self._encoder.encode(group))
                return
            self._batch.append(group)
            if len(self._batch) >= _CHUNKS_PER_TASK:
                self._pending.append(self._pool.submit(self._encoder.encode_many, self._batch))
                self._batch = []
                self._flush(final=False)
        except BaseException as e:
            self._error = e
            raise

    def _flush(self, *, final: bool) -> None:
        if self._pool is None:
            return
        if final and self._batch:
            self._pending.append(self._pool.submit(self._encoder.encode_many, self._batch))
            self._batch = []
        # Keep at most two tasks per worker in flight, written in order.
        limit = 0 if final else 2 * self._options.max_parallelism
        while len(self._pending) > limit:
            for chunk in self._pending.popleft().result():
                self._put(*chunk)

    def _put(self, header, data, num_records, decoded_size) -> None:
        offset = self._chunks.write_chunk(header, data)
        if self._options.pad_to_block_boundary:
            self._chunks.pad_to_block_boundary()
        offsets, sizes, counts = self._footers
        offsets.append(offset)
        sizes.append(decoded_size)
        counts.append(num_records)

    def _write_footer(self) -> None:
        cw = self._chunks
        offsets, sizes, counts = self._footers
        meta = encode_footer_metadata(len(offsets), self._num_records, self._options.to_string())
        footers, lengths = encode_chunk_footers(offsets, sizes, counts)
        record_sizes = encode_varints(np.concatenate([[len(meta)], lengths]))
        header, data, _, _ = self._encoder.encode_joined(meta + footers, record_sizes, len(offsets) + 1)
        footer_offset = cw.write_chunk(header, data)
        cw.pad_to_block_boundary()
        postscript = encode_postscript(footer_offset)
        plain = _Encoder(parse_writer_options("uncompressed"))
        cw.write_chunk(*plain.encode([postscript] * 3)[:2])
        cw.pad_to_block_boundary()
