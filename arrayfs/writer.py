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

Memory: records wait in batches of up to 4,096 records or 1 MiB (2 MiB
for chunks of several records; more only when a single chunk is larger)
and are encoded a batch at a time
(:mod:`arrayfs.riegeli.chunk_encoder`); with ``max_parallelism:N`` up to
2N batches are in flight. Of each chunk written only its footer stays, as
its serialized bytes (about 12 bytes; :class:`arrayfs.layout.FooterEncoder`),
so 10^7 one-record chunks hold about 120 MB until ``close()``.
"""

from __future__ import annotations

import collections
import logging
import os
import re
import tempfile
from concurrent.futures import ThreadPoolExecutor

from .layout import FooterEncoder, encode_postscript
from .naming import temp_stem
from .options import parse_writer_options
from .riegeli.chunk import SIMPLE, encode_chunk_header, encode_simple
from .riegeli.chunk_encoder import EncodedBatch, SimpleChunkEncoder
from .riegeli.chunk_writer import ChunkWriter
from .riegeli.compression import NONE
from .storage import StorageError, filesystem, is_remote

__all__ = ["ArrayRecordWriter"]

log = logging.getLogger("arrayfs.writer")

# A batch of records is encoded together: at most this many records, and it
# is cut once it holds this many bytes (always at a chunk boundary). Larger
# batches cost more than they save: glibc's malloc then hands each batch's
# buffers back to the kernel and takes them again, and the page faults (a
# few per KiB written) outweigh the per-batch numpy calls saved.
_BATCH_RECORDS = 4096
_BATCH_BYTES = 1 << 20
# The byte budget of a batch of multi-record chunks, whose records are
# joined and compressed a chunk per call: two 1 MB chunks a batch halve the
# hand-overs to the pool per byte. 100 MB of 1 KB records on 2 cores,
# interleaved: 13-14% faster at group_size:1024 than 1 MiB batches, while
# one-record chunks were 2-6% slower with 2 MiB (the page faults above).
_GROUP_BATCH_BYTES = 2 << 20


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
            chunks on N threads, ``max_parallelism:auto`` on one per CPU;
            the footer stores the number given (Google's Python writer,
            which has no thread pool, always stores ``max_parallelism:1``).
            Without it chunks are compressed on one thread per CPU (the
            codecs release the GIL) and the footer stores
            ``max_parallelism:1``, as Google's does, so with options that
            leave it out both writers store the same string (and,
            uncompressed, write the same bytes).
        storage_options: passed to fsspec for a URL ``path`` (credentials,
            endpoint); ignored for local paths and streams.

    Raises:
        ValueError: a bad options string.
        OSError: the directory is missing or not writable (naming ``path``);
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
            try:
                fd, self._tmp_path = tempfile.mkstemp(prefix=f".{temp_stem(name)}.", suffix=".arrayfs-tmp",
                                                      dir=directory)
            except OSError as e:
                # Name the file asked for, not the temporary one beside it.
                raise type(e)(e.errno, e.strerror, self.path) from None
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
        o = self._options
        self._encoder = SimpleChunkEncoder(o.compression, o.level, o.window_log, o.group_size)
        self._footer = FooterEncoder(self._options.to_string())
        # Records not yet encoded, and the check write() makes: encode once
        # the list reaches _flush_at records or _room (bytes) goes below 0
        # (both set by _flush so that only whole chunks are encoded).
        g = self._options.group_size
        self._pending: list[bytes] = []
        self._flush_at = self._batch_records = max(_BATCH_RECORDS // g, 1) * g
        self._batch_bytes = _BATCH_BYTES if g == 1 else _GROUP_BATCH_BYTES
        self._room = self._batch_bytes
        self._written = 0  # records handed to the encoder
        self._error: BaseException | None = None
        self._closed = False
        self._stop = False  # closed or failed: write() takes its slow path
        workers = self._options.max_parallelism
        if not re.search(r"(^|,)\s*max_parallelism\s*:", options):
            workers = os.cpu_count() or 1
        self._workers = workers
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
        except BaseException as e:
            self.abort()
            named = self._named(e)
            if named is not e:
                raise named from e
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
            raise StorageError(f"upload failed: {type(e).__name__}: {e}", path=self.path) from e
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
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
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
            except OSError as e:
                # Called while another error is raised (the caller's, inside
                # `with`): that one must come out, not this.
                log.warning("%s: cannot remove the temporary file %s: %s", self.path, tmp, e)

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
                self._room = self._batch_bytes - sum(map(len, self._pending))
                self._written += n
                self._flush_at = self._batch_records
                encoded = self._encoder.prepare(batch, final)
                if self._pool is None:
                    self._put(encoded, self._encode(encoded))
                else:
                    self._inflight.append((encoded, self._pool.submit(self._encode, encoded)))
            # Keep at most two batches per worker in flight, written in order.
            limit = 0 if final else 2 * self._workers
            while len(self._inflight) > limit:
                encoded, future = self._inflight.popleft()
                self._put(encoded, future.result())
        except BaseException as e:
            named = self._named(e)
            self._error = named
            self._stop = True
            if named is not e:
                raise named from e
            raise

    def _named(self, e: BaseException) -> BaseException:
        """``e``, or for an ``OSError`` naming no file (a full disk while
        writing or closing the temporary file), the same error naming the
        output, so that a message says which file could not be written."""
        if isinstance(e, OSError) and e.filename is None and e.errno is not None:
            return type(e)(e.errno, e.strerror, self.path)
        return e

    def _encode(self, batch: EncodedBatch):
        """The step a pool thread runs: compress the batch and, for chunks
        of many records, lay them out with their headers and hashes too
        (``None``: the writing thread assembles one-record chunks, whose
        per-record steps would only contend for the GIL)."""
        self._encoder.compress(batch)
        if self._options.group_size == 1:
            return None
        return self._encoder.assemble(batch)

    def _put(self, batch: EncodedBatch, assembled=None) -> None:
        buf, starts, decoded = assembled if assembled is not None else self._encoder.assemble(batch)
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
        decoded_size = len(values)

        def release():
            # The serialized footers (about 12 bytes a chunk) go before the
            # compressed blocks are joined: peak memory is one of them less.
            values.release()
            sizes.release()
            self._footer = None

        data = self._encoder.chunk_data(sizes, values, release=release)
        footer_offset = cw.write_chunk(encode_chunk_header(data, SIMPLE, count, decoded_size), data)
        del data
        cw.pad_to_block_boundary()
        postscript, decoded_size = encode_simple([encode_postscript(footer_offset)] * 3, NONE)
        cw.write_chunk(encode_chunk_header(postscript, SIMPLE, 3, decoded_size), postscript)
        cw.pad_to_block_boundary()
