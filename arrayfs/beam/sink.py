"""``WriteToArrayRecord``: an atomic Beam file sink of ArrayRecord shards.

Built on Beam's ``apache_beam.io.filebasedsink.FileBasedSink`` (the machinery
behind ``WriteToText`` and ``WriteToTFRecord``): every writer streams its
shard into a temporary file, created through Beam's ``FileSystems`` in a
``beam-temp-*`` directory beside the output; ``finalize`` renames the
temporary files to their final names once every bundle succeeded, then
removes the temporary directory. So outputs on ``gs://``, ``s3://`` or any
filesystem Beam has go there directly (no local staging), and a failed
pipeline leaves no file under an output name.

Each shard is written by :class:`arrayfs.ArrayRecordWriter` to the stream
``FileSystems.create`` returns (sequential writes, no seek), with the full
array_record writer options grammar (:mod:`arrayfs.options`).
"""

from __future__ import annotations

import uuid

import apache_beam as beam
from apache_beam.io import filebasedsink, iobase
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from ..naming import SHARD_TEMPLATE
from ..options import parse_writer_options
from ..writer import ArrayRecordWriter
from .defaults import WRITER_OPTIONS

__all__ = ["WriteToArrayRecord", "ArrayRecordSink", "check_writer_options", "check_output_name",
           "METRICS_NAMESPACE"]

#: Namespace of the sink's and ``convert``'s Beam metrics (counters
#: ``records_written``, ``bytes_written``, ``shards_written``).
METRICS_NAMESPACE = "arrayfs"


def check_writer_options(writer_options: str) -> str:
    """Validate an array_record writer options string now, at pipeline
    construction, rather than in a worker.

    Returns the string unchanged. Raises ``ValueError`` naming the bad
    option (array_record's message), and for ``transpose:true``, which the
    writer does not support.
    """
    if not isinstance(writer_options, str):
        raise TypeError(f"writer_options must be a str, got {type(writer_options).__name__}")
    try:
        parsed = parse_writer_options(writer_options)
    except ValueError as e:
        raise ValueError(f"bad writer_options {writer_options!r}: {e}") from None
    if parsed.transpose:
        raise ValueError(
            f"bad writer_options {writer_options!r}: transpose:true is not supported for writing "
            "(arrayfs reads transposed files but writes simple chunks); drop it or use transpose:false"
        )
    return writer_options


#: Characters Beam's file systems (or some of them: ``{}`` on object stores)
#: read as a glob in a path.
GLOB_CHARACTERS = "*?[]{}"


def check_output_name(file_path_prefix, file_name_suffix="", shard_name_template=""):
    """Refuse glob characters in the names of the shards to write.

    Beam's ``FileBasedSink`` matches ``prefix + "-*-of-NNNNN" + suffix`` as
    a glob to delete existing shards before it renames its own, and to
    check them when it finalizes: with ``[1]`` in the prefix, writing
    ``out/train[1]`` deletes ``out/train1-00000-of-00001`` (another
    dataset). Escaping cannot be done for every file system Beam globs
    through, so such names are refused. A ``ValueProvider`` (known only at
    run time) is not checked.

    Raises ``ValueError`` naming the path and the character.
    """
    for what, text in (("output prefix", file_path_prefix), ("file name suffix", file_name_suffix),
                       ("shard name template", shard_name_template)):
        if not isinstance(text, str):
            continue
        bad = sorted({c for c in text if c in GLOB_CHARACTERS})
        if bad:
            raise ValueError(
                f"{text}: the {what} holds the glob character{'s' if len(bad) > 1 else ''} "
                f"{' '.join(bad)}, which Beam's file sink would match other files with "
                f"(it deletes existing shards by glob); choose a name without any of {' '.join(GLOB_CHARACTERS)}")


class _CountingStream:
    """Counts the bytes a shard's writer puts in the Beam stream."""

    __slots__ = ("raw", "bytes_written", "name")

    def __init__(self, raw, name):
        self.raw = raw
        self.name = name
        self.bytes_written = 0

    def write(self, b):
        self.bytes_written += len(b)
        return self.raw.write(b)

    def flush(self):
        self.raw.flush()


class _ShardHandle:
    """What ``open`` returns: the shard's writer and its Beam stream."""

    __slots__ = ("writer", "stream")

    def __init__(self, writer, stream):
        self.writer = writer
        self.stream = stream


class ArrayRecordSink(filebasedsink.FileBasedSink):
    """A ``FileBasedSink`` writing one ArrayRecord file per shard.

    Args: as :class:`WriteToArrayRecord`, plus ``batched``: each element is
    a sequence of records (written in order) rather than one record; the
    fast path :func:`arrayfs.beam.convert` uses to move thousands of
    records per element.
    """

    def __init__(self, file_path_prefix, *, file_name_suffix="", num_shards=0, shard_name_template=None,
                 coder=None, writer_options=WRITER_OPTIONS, batched=False):
        check_output_name(file_path_prefix, file_name_suffix, shard_name_template)
        super().__init__(
            file_path_prefix,
            coder=coder,
            file_name_suffix=file_name_suffix,
            num_shards=num_shards,
            # Beam's default, spelled out so that it stays arrayfs's naming.
            shard_name_template=SHARD_TEMPLATE if shard_name_template is None else shard_name_template,
            mime_type="application/octet-stream",
            # An ArrayRecord file must never be wrapped in gzip because its
            # name ends in .gz: the format compresses its own chunks.
            compression_type=CompressionTypes.UNCOMPRESSED,
        )
        self.writer_options = check_writer_options(writer_options)
        self.batched = batched
        # Fixed at construction so that the caller (convert) knows where
        # temporary files go and can remove them if the pipeline fails.
        self._run_id = uuid.uuid4().hex

    def temp_directory(self) -> str:
        """The ``beam-temp-*`` directory this sink's writers use, beside
        the output (removed by a successful ``finalize``)."""
        base, last = FileSystems.split(self.file_path_prefix.get())
        return FileSystems.join(base, f"beam-temp-{last}-{self._run_id}")

    # FileBasedSink names a fresh directory per call; ours is fixed per sink.
    def initialize_write(self):
        tmp = self.temp_directory()
        if not FileSystems.exists(tmp):
            FileSystems.mkdirs(tmp)
        return tmp

    def finalize_write(self, init_result, writer_results, pre_finalize_results):
        """Rename the temporary shards to their final names; returns the
        final names, all ``len(writer_results)`` of them, in shard order.

        Safe to retry: Beam's ``FileBasedSink`` skips a shard whose
        temporary file is gone and whose final file exists (renamed by an
        earlier attempt) but yields only the shards this attempt renamed,
        so a retried finalize, the one whose output counts, yielded none.
        Raises ``BeamIOError`` when a shard is neither here nor there.
        """
        for _ in super().finalize_write(init_result, writer_results, pre_finalize_results):
            pass  # a generator: the renames happen as it runs
        n = len(writer_results)
        return [self._get_final_name(k, n) for k in range(n)]

    def open(self, temp_path):
        raw = FileSystems.create(temp_path, self.mime_type, CompressionTypes.UNCOMPRESSED)
        stream = _CountingStream(raw, temp_path)
        try:
            writer = ArrayRecordWriter(stream, self.writer_options)
        except BaseException:
            raw.close()
            raise
        return _ShardHandle(writer, stream)

    def write_record(self, file_handle, value):
        write = file_handle.writer.write
        if self.batched:
            for record in value:
                write(record)
            _RECORDS.inc(len(value))
            return
        if self.coder is not None:
            value = self.coder.encode(value)
        elif not isinstance(value, (bytes, bytearray, memoryview)):
            raise TypeError(
                f"WriteToArrayRecord takes bytes elements, got {type(value).__name__}; "
                "pass coder=... (e.g. beam.coders.StrUtf8Coder()) to encode other types"
            )
        write(value)
        _RECORDS.inc()

    def write_encoded_record(self, file_handle, encoded_value):
        file_handle.writer.write(encoded_value)

    def close(self, file_handle):
        try:
            file_handle.writer.close()
        finally:
            file_handle.stream.raw.close()
        _BYTES.inc(file_handle.stream.bytes_written)
        _SHARDS.inc()


_RECORDS = Metrics.counter(METRICS_NAMESPACE, "records_written")
_BYTES = Metrics.counter(METRICS_NAMESPACE, "bytes_written")
_SHARDS = Metrics.counter(METRICS_NAMESPACE, "shards_written")


class WriteToArrayRecord(beam.PTransform):
    """Write a ``PCollection`` of ``bytes`` as ArrayRecord shards.

    Arguments and shard naming follow array_record's ``beam/arrayrecordio.py``
    and Beam's file sinks (``WriteToTFRecord``).

    Args:
        file_path_prefix: output prefix: a local path or any URL Beam's
            ``FileSystems`` handles (``gs://``, ``s3://``, ...). Missing
            local directories are created.
        file_name_suffix: appended to each name (e.g. ``".array_record"``).
        num_shards: the number of shards; ``0`` lets the runner choose
            (one per bundle). Records are spread over shards in no
            particular order.
        shard_name_template: Beam's template (``S`` shard number, ``N``
            shard count); default ``"-SSSSS-of-NNNNN"``; ``""`` writes one
            file named exactly ``file_path_prefix + file_name_suffix``.
        coder: encodes each element to ``bytes``; default ``None`` takes
            ``bytes`` (``bytearray``, ``memoryview``) elements as they are
            and raises ``TypeError`` for anything else (array_record's sink
            would write ``str(element)``).
        writer_options: array_record writer options for every shard, e.g.
            ``"group_size:64,zstd:9"`` (:mod:`arrayfs.options`); default
            ``"group_size:1"`` (with ``zstd:3``), as array_record's sink.

    Raises:
        ValueError: at construction: bad ``writer_options`` (including
            ``transpose:true``) or ``shard_name_template``; a glob character
            (``* ? [ ] { }``) in ``file_path_prefix``, ``file_name_suffix``
            or ``shard_name_template`` (Beam's sink would delete other files
            matching it: :func:`check_output_name`).

    The transform's output is a ``PCollection`` of the final shard paths.
    Metrics (namespace ``"arrayfs"``): ``records_written``,
    ``bytes_written`` (bytes of ArrayRecord files), ``shards_written``.
    """

    def __init__(self, file_path_prefix, *, file_name_suffix="", num_shards=0, shard_name_template=None,
                 coder=None, writer_options=WRITER_OPTIONS):
        super().__init__()
        if not isinstance(num_shards, int) or num_shards < 0:
            raise ValueError(f"num_shards must be an int >= 0, got {num_shards!r}")
        self.sink = ArrayRecordSink(
            file_path_prefix, file_name_suffix=file_name_suffix, num_shards=num_shards,
            shard_name_template=shard_name_template, coder=coder, writer_options=writer_options,
        )

    def expand(self, pcoll):
        return pcoll | iobase.Write(self.sink)
