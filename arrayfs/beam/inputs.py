"""What ``arrayfs convert`` reads: input kinds, input files, records of a file.

An input kind turns one input file into records (``bytes``):

| kind | one record per | record bytes |
| --- | --- | --- |
| ``tfrecord`` | TFRecord record | its data (:mod:`arrayfs.tfrecord`; both checksums checked) |
| ``jsonl`` | non-blank line | the line without its ``"\\n"``; each must be a JSON value |
| ``lines`` | line | the line without its ``"\\n"`` (a ``"\\r"`` is kept) |
| ``parquet`` | row | a msgpack map ``{column: value}`` that ``decode="msgpack"`` reads (:func:`arrayfs.encoding.encode_msgpack`) |
| ``files`` | file | the file's bytes |

Line rules are those of ``arrayfs pack`` (:mod:`arrayfs.pack`). Files are
opened through Beam's ``FileSystems`` (local paths and any URL Beam
handles); compressed inputs are decompressed by their extension (the
suffixes Beam's own sources know: ``.gz``, ``.bz2``, ``.deflate``,
``.zst``/``.zstd``, ``.xz``/``.lzma``). Decompression is ours, not Beam's
``CompressedFile``, which takes the end of the raw file for the end of the
stream: a cut ``.gz`` or ``.bz2`` would lose its tail without an error.
Here a stream that ends before its end-of-stream marker, or that is not
valid compressed data, raises :class:`InputError` naming the file and the
compressed byte offset.

Records travel in batches (``list[bytes]`` of about
:data:`BATCH_BYTES`): one Beam element per batch rather than per record, so
the per-element cost of a runner is paid thousands of times less often.
"""

from __future__ import annotations

import bz2
import io
import lzma
import os
import zlib
from collections.abc import Iterator
from typing import NamedTuple

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from ..extras import missing

__all__ = [
    "KINDS", "InputFile", "expand_inputs", "read_batches", "parquet_encoder", "InputError",
    "BATCH_BYTES", "BATCH_RECORDS", "local_absolute", "open_input", "compression_of",
]

KINDS = ("tfrecord", "jsonl", "lines", "parquet", "files")

#: A batch is closed once it holds this many bytes or records.
BATCH_BYTES = 4 << 20
BATCH_RECORDS = 8192
_PARQUET_ROWS = 2048


class InputError(ValueError):
    """An input cannot be converted: a parquet column type with no msgpack
    form, an input that names nothing, a compressed input that is cut short
    or is not valid compressed data. The message names the file."""


class InputFile(NamedTuple):
    """One file to convert: ``path`` (as Beam's ``FileSystems`` names it)
    and ``size`` in bytes (as stored; compressed size for ``.gz``)."""

    path: str
    size: int


def _is_local_dir(p: str) -> bool:
    return "://" not in p and os.path.isdir(p)


def local_absolute(pattern):
    """``pattern`` (a path, glob or URL; anything else, such as a Beam
    ``ValueProvider``, is returned as is) made absolute when it is local.
    Beam's local file system expands a relative glob only below a directory
    (``d/*.txt``, not ``*.txt``), and a worker may run in another directory."""
    if isinstance(pattern, os.PathLike):
        pattern = os.fspath(pattern)
    if isinstance(pattern, str) and "://" not in pattern:
        return os.path.abspath(pattern)
    return pattern


def expand_inputs(kind: str, inputs) -> list[InputFile]:
    """The files of ``inputs`` in conversion order.

    Each input is a file, a glob or a URL pattern (matched by Beam's
    ``FileSystems``; the matches of one pattern sorted by path), kept in the
    order given. For ``files``, a local directory means every regular file
    under it (the order of ``arrayfs pack --files``) and a URL ending in
    ``/`` means every object under it.

    Raises:
        ValueError: an unknown kind.
        FileNotFoundError: an input that matches no file.
        IsADirectoryError: a directory given for a kind other than ``files``.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown input kind {kind!r}: expected one of {', '.join(KINDS)}")
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    out: list[InputFile] = []
    for item in inputs:
        pattern = os.fspath(item)
        if _is_local_dir(pattern):
            if kind != "files":
                raise IsADirectoryError(
                    21, f"is a directory: give {kind} files or a quoted glob such as '{pattern.rstrip('/')}/*'",
                    pattern)
            from ..pack import list_files

            out.extend(InputFile(os.path.abspath(p), os.path.getsize(p)) for p in list_files(pattern))
            continue
        if kind == "files" and "://" in pattern and pattern.endswith("/"):
            pattern += "**"
        if "://" not in pattern and os.path.isfile(pattern):
            # An existing file is itself, '[' and '*' in its name included.
            out.append(InputFile(os.path.abspath(pattern), os.path.getsize(pattern)))
            continue
        metadata = FileSystems.match([local_absolute(pattern)])[0].metadata_list
        files = sorted((m for m in metadata if not m.path.endswith("/")), key=lambda m: m.path)
        if not files:
            raise FileNotFoundError(2, "no file matches this input", pattern)
        out.extend(InputFile(m.path, m.size_in_bytes) for m in files)
    return out


def read_batches(kind: str, path: str) -> Iterator[tuple[list[bytes], int]]:
    """``(records, input_bytes)`` batches of one input file, in file order.

    ``input_bytes`` is how much of the (decompressed) file the batch
    consumed, for progress. A batch may be empty (blank JSON lines).

    Raises:
        arrayfs.tfrecord.TFRecordError: a bad or truncated TFRecord file
            (file and byte offset).
        arrayfs.pack.PackError: a JSON line that is not JSON (file and line).
        InputError: a parquet column with no msgpack form; a compressed
            file cut short or holding bad data (file, compressed offset).
        OSError: the file cannot be read.
    """
    reader = _READERS[kind]
    batch: list[bytes] = []
    size = consumed = 0
    with open_input(path, seekable=(kind == "parquet")) as stream:
        for record, used in reader(stream, path):
            consumed += used
            if record is None:
                continue
            batch.append(record)
            size += len(record)
            if size >= BATCH_BYTES or len(batch) >= BATCH_RECORDS:
                yield batch, consumed
                batch, size, consumed = [], 0, 0
    if batch or consumed:
        yield batch, consumed


# -- decompression ------------------------------------------------------------------


def _zstd():
    import zstandard  # Beam's own dependency, for its .zst support

    # Beam's window limit: large enough for any zstd file, bounded memory.
    return zstandard.ZstdDecompressor(max_window_size=2 << 30).decompressobj()


#: Decompressor factories by suffix: those of Beam's
#: ``CompressionTypes.detect_compression_type``, same formats.
_CODECS = {
    ".bz2": bz2.BZ2Decompressor,
    ".deflate": zlib.decompressobj,
    ".gz": lambda: zlib.decompressobj(zlib.MAX_WBITS | 16),
    ".zst": _zstd,
    ".zstd": _zstd,
    ".xz": lzma.LZMADecompressor,
    ".lzma": lzma.LZMADecompressor,
}

# Compressed bytes per read of the raw file: small enough that one read's
# decompressed bytes stay bounded (zlib expands at most ~1000x) and that an
# error's byte range is narrow.
_RAW_READ = 64 << 10


def compression_of(path: str) -> str:
    """The compression suffix of ``path`` (``".gz"``, ...) that
    :func:`open_input` decompresses, or ``""`` for none."""
    low = path.lower()
    return next((s for s in _CODECS if low.endswith(s)), "")


class _Decompressed(io.RawIOBase):
    """The decompressed bytes of a raw binary stream, read sequentially.

    Concatenated streams (``cat a.gz b.gz``) are read one after the other,
    as ``gzip`` and Beam do. Unlike Beam's ``CompressedFile``, the end of
    the raw file must be the end of a stream: a cut file raises
    :class:`InputError` (file, compressed bytes read) instead of ending
    early, and so does data the decompressor refuses."""

    def __init__(self, raw, path: str, suffix: str):
        super().__init__()
        self._raw, self._path, self._suffix = raw, path, suffix
        self._new = _CODECS[suffix]
        self._dec = self._new()
        self._fed = False  # the current stream has had input
        self._pending = memoryview(b"")  # decompressed, not yet returned
        self._offset = 0  # compressed bytes read from the raw file
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while not self._pending and not self._done:
            self._fill()
        n = min(len(b), len(self._pending))
        b[:n] = self._pending[:n]
        self._pending = self._pending[n:]  # a view: no copy of the rest
        return n

    def _fill(self) -> None:
        data = b""
        if self._dec.eof:
            # One stream ended; what follows it is another stream.
            data, self._dec, self._fed = self._dec.unused_data, self._new(), False
        if not data:
            data = self._raw.read(_RAW_READ)
            self._offset += len(data)
        if not data:
            self._finish()
            return
        self._fed = True
        try:
            self._pending = memoryview(self._dec.decompress(data))
        except Exception as e:  # zlib.error, OSError (bz2), LZMAError, ZstdError: each codec its own
            # unused_data is the tail of what was read: data ends at _offset.
            start = self._offset - len(data)
            raise InputError(
                f"{self._path}: not valid {self._suffix} data between bytes {start} and {self._offset} "
                f"of the file ({e})"
            ) from None

    def _finish(self) -> None:
        self._done = True
        if self._fed and not self._dec.eof:
            raise InputError(
                f"{self._path}: truncated {self._suffix} file: its compressed data ends after byte "
                f"{self._offset}, before the end-of-stream marker")

    def close(self) -> None:
        try:
            self._raw.close()
        finally:
            super().close()


def open_input(path: str, *, seekable: bool = False):
    """``path`` opened for reading through Beam's ``FileSystems``, as a
    binary stream of its decompressed bytes when its suffix names a
    compression (:func:`compression_of`).

    ``seekable`` (parquet needs it): a compressed file is decompressed
    into memory whole. Reading the stream raises :class:`InputError` for a
    cut or corrupt compressed file; opening raises ``OSError`` as
    ``FileSystems.open`` does.
    """
    raw = FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
    suffix = compression_of(path)
    if not suffix:
        return raw
    stream = io.BufferedReader(_Decompressed(raw, path, suffix), buffer_size=1 << 20)
    if not seekable:
        return stream
    with stream:
        return io.BytesIO(stream.read())


def _tfrecords(stream, path):
    from ..tfrecord import FOOTER_SIZE, HEADER_SIZE, iter_tfrecords

    overhead = HEADER_SIZE + FOOTER_SIZE
    for record in iter_tfrecords(stream, path=path):
        yield record, len(record) + overhead


def _line_reader(jsonl: bool):
    def read(stream, path):
        # pack's rules (strip one "\n", JSON checks, blank JSON lines
        # skipped) live in one place: arrayfs.pack.
        from ..pack import lines_of

        lines = stream if hasattr(stream, "__iter__") else iter(stream.readline, b"")
        yield from lines_of(lines, path, jsonl)

    return read


def _files(stream, path):
    data = stream.read()
    yield data, len(data)


def parquet_encoder():
    """``(pyarrow.parquet, encode_msgpack)``, or :class:`InputError` saying
    what to install. ``encode_msgpack`` lives in :mod:`arrayfs.encoding`
    (one msgpack layout for writer and reader)."""
    from ..encoding import encode_msgpack

    try:
        import pyarrow.parquet as pq
    except ModuleNotFoundError as e:
        raise InputError(str(missing(e, "--from parquet", "beam"))) from None
    return pq, encode_msgpack


def _parquet(stream, path):
    pq, encode_msgpack = parquet_encoder()
    size = _size_of(stream)
    try:
        pf = pq.ParquetFile(stream)
    except Exception as e:  # pyarrow raises ArrowInvalid and friends
        raise InputError(f"{path}: not a parquet file ({e})") from None
    schema = pf.schema_arrow
    names = schema.names
    columns = [_column_converter(path, field) for field in schema]
    total_rows = max(pf.metadata.num_rows, 1)
    reported = 0
    done_rows = 0
    for batch in pf.iter_batches(batch_size=_PARQUET_ROWS):
        values = [convert(batch.column(i)) for i, convert in enumerate(columns)]
        for row in zip(*values):
            yield encode_msgpack(dict(zip(names, row))), 0
        # Parquet is not read as a byte stream: progress is the rows'
        # share of the file's size.
        done_rows += batch.num_rows
        share = size * done_rows // total_rows
        yield None, share - reported
        reported = share


def _size_of(stream) -> int:
    try:
        end = stream.seek(0, os.SEEK_END)
        stream.seek(0)
        return int(end if end is not None else stream.tell())
    except (OSError, AttributeError, ValueError):
        return 0


def _column_converter(path, field):
    """A function: pyarrow array of one column -> list of per-row values
    that ``encode_msgpack`` stores and ``decode_msgpack`` reads back with
    the column's dtype (numbers as numpy scalars, lists of numbers as 1-D
    numpy arrays, strings and binary as themselves; a null as ``None``)."""
    import pyarrow.types as t

    typ = field.type
    if t.is_dictionary(typ):
        convert = _column_converter(path, field.with_type(typ.value_type))
        return lambda col: convert(col.dictionary_decode())

    def scalars(col):
        if col.null_count:
            return col.to_pylist()
        return list(col.to_numpy(zero_copy_only=False))

    def lists(col):
        if col.null_count or col.values.null_count:
            return col.to_pylist()
        offsets = col.offsets.to_numpy()
        flat = col.values.to_numpy(zero_copy_only=False)
        return [flat[a:b] for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())]

    def fixed_lists(col):
        if col.null_count or col.values.null_count:
            return col.to_pylist()
        return list(col.flatten().to_numpy(zero_copy_only=False).reshape(len(col), typ.list_size))

    if t.is_integer(typ) or t.is_floating(typ) or t.is_boolean(typ) or t.is_timestamp(typ) \
            or t.is_date(typ) or t.is_duration(typ):
        return scalars
    if t.is_string(typ) or t.is_large_string(typ) or t.is_binary(typ) or t.is_large_binary(typ) \
            or t.is_fixed_size_binary(typ):
        return lambda col: col.to_pylist()
    if (t.is_list(typ) or t.is_large_list(typ)) and _plain_numeric(typ.value_type):
        return lists
    if t.is_fixed_size_list(typ) and _plain_numeric(typ.value_type):
        return fixed_lists
    raise InputError(
        f"{path}: column {field.name!r} has type {field.type}, which has no msgpack array form; "
        "convert parquet files whose columns are numbers, booleans, timestamps, strings, binary "
        "or lists of numbers"
    )


def _plain_numeric(typ) -> bool:
    import pyarrow.types as t

    return t.is_integer(typ) or t.is_floating(typ) or t.is_boolean(typ)


_READERS = {
    "tfrecord": _tfrecords,
    "jsonl": _line_reader(True),
    "lines": _line_reader(False),
    "parquet": _parquet,
    "files": _files,
}
