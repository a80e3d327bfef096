"""``convert``: TFRecord, JSON lines, text lines, parquet or plain files into
ArrayRecord shards, as a Beam pipeline (the engine of ``arrayfs convert``).

The pipeline, on any runner, takes one of two shapes:

* ``1 <= num_shards <= number of input files`` (``num_shards=1`` is the
  default): the input files, in the order given, are cut into
  ``num_shards`` contiguous groups of about equal bytes
  (:func:`file_groups`); shard ``k`` is written by one worker reading group
  ``k`` file by file, record by record. No record moves through a shuffle,
  and the records keep their input order: shard 0, then shard 1, ... read
  back in order give the inputs' records in order. Beam promises no order
  between the elements of a ``PCollection``, so order is kept by
  construction (one sequential loop per shard), not by a sort.
* fewer input files than shards (say, one big TFRecord into 16 shards), or
  ``num_shards=0`` (the runner chooses): each input file is read by one
  worker, records travel in batches (:mod:`.inputs`) through a shuffle
  into the writers, in no particular order.

Writes go through :class:`~arrayfs.beam.sink.ArrayRecordSink`: temporary
files in a ``beam-temp-*`` directory, renamed to
``PREFIX-SSSSS-of-NNNNN.array_record`` only once every writer succeeded.
When the pipeline fails, :func:`convert` also removes that directory (and a
directory it created for the output), so a failed run leaves nothing
behind, and raises :class:`ConvertError` with the first line of the cause
(file and byte offset for a bad TFRecord, file and line for bad JSON).
"""

from __future__ import annotations

import bisect
import logging
import os
import re
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.io import iobase
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.pvalue import AsList, AsSingleton
from apache_beam.runners.runner import PipelineState

from ..naming import SHARD_TEMPLATE, shard_glob, shard_matcher, shard_names, shard_set_pattern
from .defaults import WRITER_OPTIONS
from .inputs import KINDS, InputError, expand_inputs, parquet_encoder, read_batches
from .progress import ProgressBar, WorkerProgress
from .sink import METRICS_NAMESPACE, ArrayRecordSink, check_output_name, check_writer_options

__all__ = ["convert", "ConvertResult", "ConvertError", "ReadRecords", "KINDS", "DEFAULT_SUFFIX"]

DEFAULT_SUFFIX = ".array_record"

_INPUT_BYTES = Metrics.counter(METRICS_NAMESPACE, "input_bytes")
_INPUT_RECORDS = Metrics.counter(METRICS_NAMESPACE, "input_records")


class ConvertError(Exception):
    """A conversion could not start or did not finish; nothing was written
    under the output names.

    ``str(error)`` is one line: the cause, naming the input file and the
    position (byte offset, line) when the cause is bad input. The Beam
    exception, when there is one, is ``__cause__``.
    """


@dataclass(frozen=True)
class ConvertResult:
    """What :func:`convert` did.

    Attributes:
        records: records written (all shards).
        bytes_in: bytes of the input files, as stored.
        bytes_out: bytes of the shards written.
        seconds: wall time of the pipeline run (``time.perf_counter``).
        num_inputs: input files read.
        num_shards: shards written.
        shards: their paths, in shard order.
    """

    records: int
    bytes_in: int
    bytes_out: int
    seconds: float
    num_inputs: int
    num_shards: int
    shards: tuple

    def summary(self) -> str:
        """One line: records, bytes in and out, seconds, rate, outputs."""
        rate = self.records / self.seconds if self.seconds > 0 else 0.0
        where = self.shards[0] if self.num_shards == 1 else _pattern_of(self.shards)
        return (
            f"converted {self.records:,} records from {self.num_inputs} file{'s' if self.num_inputs != 1 else ''}"
            f": {_human(self.bytes_in)} in, {_human(self.bytes_out)} out, {self.seconds:.1f} s "
            f"({rate:,.0f} records/s) -> {where}"
        )


def _pattern_of(shards) -> str:
    return shard_set_pattern(shards[0]) if shards else "(no shards)"


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


# -- the pipeline pieces ---------------------------------------------------------


class _ReadBatchesFn(beam.DoFn):
    """input path -> batches (``list[bytes]``) of its records."""

    def __init__(self, kind: str, progress_dir: str | None = None):
        self.kind = kind
        self.progress = WorkerProgress(progress_dir)

    def setup(self):
        self.progress.start()

    def process(self, path):
        for batch, used in read_batches(self.kind, path):
            _INPUT_BYTES.inc(used)
            self.progress.add(used)
            if batch:
                _INPUT_RECORDS.inc(len(batch))
                yield batch

    def finish_bundle(self):
        self.progress.flush()

    def teardown(self):
        self.progress.close()


class ReadRecords(beam.PTransform):
    """The records of input files of one kind, as a ``PCollection`` of
    ``bytes``: the reading half of :func:`convert`, for composing your own
    pipeline (then write with :class:`~arrayfs.beam.WriteToArrayRecord`).

    Args:
        kind: one of :data:`KINDS` (``tfrecord``, ``jsonl``, ``lines``,
            ``parquet``, ``files``; see :mod:`arrayfs.beam.inputs`).
        inputs: paths, globs or URL patterns (matched now, at construction).

    Raises (at construction): ``ValueError`` for an unknown kind,
    ``FileNotFoundError`` for an input that matches nothing. Each input
    file is read by one worker; there is no order across files.
    """

    def __init__(self, kind: str, inputs):
        super().__init__()
        self.kind = kind
        self.files = expand_inputs(kind, inputs)

    def expand(self, pbegin):
        return (
            pbegin
            | "Inputs" >> beam.Create([f.path for f in self.files])
            | "Spread" >> beam.Reshuffle()
            | "Read" >> beam.ParDo(_ReadBatchesFn(self.kind))
            | "Unbatch" >> beam.FlatMap(lambda batch: batch).with_output_types(bytes)
        )


class _WriteShardFn(beam.DoFn):
    """``(k, paths)`` -> shard ``k``: reads its input files in order and
    writes them, record by record, into one temporary shard file."""

    def __init__(self, sink, kind, progress_dir):
        self.sink = sink
        self.kind = kind
        self.progress = WorkerProgress(progress_dir)

    def setup(self):
        self.progress.start()

    def process(self, group, init_result):
        k, paths = group
        # Beam's finalize numbers shards in the sorted order of the
        # temporary names: the group index first makes shard k group k.
        writer = self.sink.open_writer(init_result, f"{k:05d}-{uuid.uuid4().hex}")
        for path in paths:
            for batch, used in read_batches(self.kind, path):
                _INPUT_BYTES.inc(used)
                self.progress.add(used)
                if batch:
                    _INPUT_RECORDS.inc(len(batch))
                    writer.write(batch)
        yield writer.close()

    def finish_bundle(self):
        self.progress.flush()

    def teardown(self):
        self.progress.close()


def _pre_finalize(_, sink, init_result, written):
    # One element, whatever pre_finalize returns: FinalizeWrite takes it as
    # a singleton side input.
    yield sink.pre_finalize(init_result, list(written))


def _finalize(_, sink, init_result, written, pre_finalize_result):
    return list(sink.finalize_write(init_result, list(written), pre_finalize_result))


def file_groups(sizes, num_groups: int) -> list[range]:
    """Split files (their ``sizes`` in bytes, in order) into ``num_groups``
    contiguous, non-empty runs of about equal bytes.

    Returns ``num_groups`` ranges of file indices that cover
    ``range(len(sizes))`` in order. Needs ``len(sizes) >= num_groups >= 1``.
    """
    n = len(sizes)
    if not 1 <= num_groups <= n:
        raise ValueError(f"cannot split {n} files into {num_groups} non-empty groups")
    cum = [0]
    for s in sizes:
        cum.append(cum[-1] + s)
    total = cum[-1]
    bounds = [0]
    for k in range(1, num_groups):
        target = total * k / num_groups
        i = bisect.bisect_left(cum, target)
        if i > 0 and target - cum[i - 1] < cum[min(i, n)] - target:
            i -= 1
        i = min(max(i, bounds[-1] + 1), n - (num_groups - k))
        bounds.append(i)
    bounds.append(n)
    return [range(bounds[k], bounds[k + 1]) for k in range(num_groups)]


class _ConvertFileGroups(beam.PTransform):
    """One shard per group of input files, each written by one worker in
    input order; the initialize / write / pre-finalize / finalize steps of
    Beam's ``iobase.Write`` (``WriteImpl``), without moving any record
    through a shuffle. Every step may be retried: finalize skips a shard
    already renamed into place (:meth:`ArrayRecordSink.finalize_write`)."""

    def __init__(self, sink, kind, groups, progress_dir):
        super().__init__()
        self.sink, self.kind, self.groups, self.progress_dir = sink, kind, groups, progress_dir

    def expand(self, pbegin):
        p = pbegin.pipeline
        once = p | "Once" >> beam.Create([None])
        init = once | "InitializeWrite" >> beam.Map(lambda _, sink: sink.initialize_write(), self.sink)
        written = (
            p
            | "Groups" >> beam.Create(list(enumerate(self.groups)))
            | "Spread" >> beam.Reshuffle()
            | "ReadAndWrite" >> beam.ParDo(_WriteShardFn(self.sink, self.kind, self.progress_dir), AsSingleton(init))
        )
        # PreFinalize (deleting existing shards of the same count) is a step of
        # its own whose output FinalizeWrite waits for, as in Beam's
        # WriteImpl: a retried FinalizeWrite must not run it again, or it
        # deletes the shards the earlier attempt renamed into place.
        pre = once | "PreFinalize" >> beam.FlatMap(_pre_finalize, self.sink, AsSingleton(init), AsList(written))
        return once | "FinalizeWrite" >> beam.FlatMap(
            _finalize, self.sink, AsSingleton(init), AsList(written), AsSingleton(pre))


# -- running -----------------------------------------------------------------------


def _pipeline_options(pipeline_args) -> PipelineOptions:
    if isinstance(pipeline_args, PipelineOptions):
        return pipeline_args
    args = list(pipeline_args or [])
    opts = PipelineOptions(args)
    quiet = logging.getLogger("apache_beam.options.pipeline_options")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # we report unknown flags ourselves
    try:
        unknown = set(opts.get_all_options(retain_unknown_options=True)) - set(opts.get_all_options())
    finally:
        quiet.setLevel(level)
    if unknown:
        flags = ", ".join(f"--{u}" for u in sorted(unknown))
        raise ConvertError(f"unknown option {flags}: not an arrayfs convert option nor a Beam pipeline option")
    return opts


def _counter(result, name: str) -> int:
    try:
        found = result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE).with_name(name))
    except Exception:  # a runner without metrics support
        return 0
    total = 0
    for r in found["counters"]:
        value = r.committed if r.committed is not None else r.attempted
        total += int(value or 0)
    return total


_POLL_MS = 2000  # how long one wait lasts before the bar is fed, milliseconds


def _ended(result) -> bool:
    return PipelineState.is_terminal(result.state)


def _wait(result, bar) -> None:
    """Wait for a runner whose ``run()`` returns early (Dataflow, Flink,
    the BundleBasedDirectRunner), feeding the bar from the ``input_bytes``
    counter every :data:`_POLL_MS` ms.

    Raises what the runner raises for a failed job, or
    :class:`ConvertError` when it ends in a state other than ``DONE``.
    """
    while not _ended(result):
        try:
            result.wait_until_finish(duration=_POLL_MS)
        except NotImplementedError:
            # The BundleBasedDirectRunner waits only to the end (its bar is
            # fed by the worker files, in this process).
            result.wait_until_finish()
        if bar is not None:
            bar.set(_counter(result, "input_bytes"))
    state = str(result.state)
    if state != "DONE":
        raise ConvertError(f"the pipeline ended in state {state}")


def _stopped(result) -> bool:
    """Whether the job of ``result`` (``None``: ``run()`` did not return)
    is known to have ended, cancelling it first if it still runs."""
    if result is None:
        return True  # in-process runners run within run(); others never started
    try:
        if not _ended(result):
            result.cancel()
        return _ended(result)
    except Exception:  # noqa: BLE001 - a runner that cannot cancel or tell: assume it runs
        return False


_ERROR_LINE = re.compile(r"^((?:[A-Za-z_][\w]*\.)*[A-Za-z_]\w*(?:Error|Exception)): (.+)$", re.M)
_BEAM_SUFFIX = re.compile(r"\s*\[while running '[^']*'\]\s*$")


def cause_text(exc: BaseException) -> str:
    """The one-line cause of a failed Beam run.

    In-process runners raise the worker's exception (with Beam's
    ``[while running ...]`` note, and the original as ``__context__``);
    worker processes send a traceback as text, whose first
    ``Type: message`` line is the original error.
    """
    from ..errors import ArrayRecordError
    from ..pack import PackError
    from ..tfrecord import TFRecordError
    from .inputs import InputError

    ours = (TFRecordError, PackError, InputError, ArrayRecordError, OSError)
    seen, e, found = set(), exc, None
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, ours):
            found = e  # keep walking: the innermost is the original
        # Follow what the traceback shows: an explicit cause, else the
        # context unless `raise ... from None` hid it.
        e = e.__cause__ if e.__cause__ is not None else (None if e.__suppress_context__ else e.__context__)
    if found is not None:
        text = str(found)
        if isinstance(found, OSError) and found.filename and found.strerror:
            text = f"{found.filename}: {found.strerror}"
    else:
        text = str(exc)
        m = _ERROR_LINE.search(text) if "Traceback (most recent call last)" in text else None
        if m:
            name = m.group(1).rsplit(".", 1)[-1]
            text = m.group(2) if name in {c.__name__ for c in ours} else f"{name}: {m.group(2)}"
        elif not text:
            text = type(exc).__name__
    text = _BEAM_SUFFIX.sub("", text.strip().splitlines()[0] if text.strip() else text)
    return " ".join(text.split())


def _existing_shards(prefix: str, suffix: str) -> list[str]:
    try:
        found = FileSystems.match([shard_glob(prefix, suffix)])[0].metadata_list
    except Exception:
        return []
    rx = shard_matcher(prefix, suffix)
    return sorted(m.path for m in found if rx.fullmatch(m.path))


def _prepare_output(prefix: str) -> list[str]:
    """Check the output prefix; create its local directory. Returns the
    directories created (to remove if the run fails)."""
    if not prefix:
        raise ConvertError("empty output prefix")
    local_dir = "://" not in prefix and os.path.isdir(prefix)
    if local_dir or prefix.endswith(("/", os.sep)):
        what = "is a directory" if local_dir else "ends in a path separator"
        raise ConvertError(f"{prefix}: {what}; give a file name prefix such as {prefix.rstrip('/')}/train")
    if "://" in prefix:
        return []  # object stores have no directories to create
    created = []
    d = os.path.dirname(os.path.abspath(prefix))
    while not os.path.exists(d):
        created.append(d)
        d = os.path.dirname(d)
    if not os.path.isdir(d):
        raise ConvertError(f"cannot create the output directory {os.path.dirname(prefix)}: {d} is not a directory")
    try:
        os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    except OSError as e:
        raise ConvertError(f"cannot create the output directory {os.path.dirname(prefix)}: {e.strerror or e}") from e
    return created


def _cleanup(sink, created_dirs) -> None:
    tmp = sink.temp_directory()
    try:
        if FileSystems.exists(tmp):
            FileSystems.delete([tmp])
    except Exception:  # noqa: BLE001 - cleanup must not hide the real error
        pass
    for d in created_dirs:  # deepest first
        try:
            os.rmdir(d)
        except OSError:
            break


def convert(kind: str, inputs, output_prefix: str, *, num_shards: int = 1,
            writer_options: str = WRITER_OPTIONS, file_name_suffix: str = DEFAULT_SUFFIX,
            pipeline_args=None, overwrite: bool = False, progress=False) -> ConvertResult:
    """Convert input files into ArrayRecord shards with a Beam pipeline.

    Args:
        kind: what the inputs are: ``"tfrecord"``, ``"jsonl"``,
            ``"lines"``, ``"parquet"`` or ``"files"`` (the records each
            gives: :mod:`arrayfs.beam.inputs`).
        inputs: a path, glob or URL pattern, or a list of them (kept in
            order; each pattern's matches sorted by path).
        output_prefix: shards are named
            ``{output_prefix}-SSSSS-of-NNNNN{file_name_suffix}``; a local
            directory that does not exist is created.
        num_shards: ``1`` keeps input order; ``N > 1`` writes N shards in
            parallel (records in no particular order); ``0`` lets the
            runner choose.
        writer_options: array_record writer options, e.g.
            ``"group_size:64,zstd:9"`` (checked before the run).
        file_name_suffix: appended to every shard name.
        pipeline_args: Beam pipeline flags (``["--runner=DataflowRunner",
            "--project=...", ...]``) or a ``PipelineOptions``; default: the
            DirectRunner in this process.
        overwrite: replace existing shards of ``output_prefix`` (and, after
            success, remove shards of it with another shard count); without
            it existing shards raise :class:`ConvertError` before the run.
        progress: ``True`` (or a text stream) shows a tqdm bar of input
            bytes on stderr (or that stream).

    Returns:
        :class:`ConvertResult` (records, bytes in and out, seconds, shards).

    Raises:
        ConvertError: bad arguments (among them an output prefix or
            suffix holding a glob character ``* ? [ ] { }``), inputs that
            match nothing, existing outputs, or a failed pipeline (bad input: the message names the
            file and the byte offset or line). Nothing is left under the
            output names, nor the sink's temporary directory (unless a job
            that runs apart from this process, say on Dataflow, fails to
            wait for and cannot be cancelled: then the message says its
            temporary directory is left, rather than pull it from under
            a running job).
    """
    if kind not in KINDS:
        raise ConvertError(f"unknown input kind {kind!r}: expected one of {', '.join(KINDS)}")
    if not isinstance(num_shards, int) or isinstance(num_shards, bool) or num_shards < 0:
        raise ConvertError(f"num_shards must be an integer >= 0, got {num_shards!r}")
    try:
        check_writer_options(writer_options)
    except (TypeError, ValueError) as e:
        raise ConvertError(str(e)) from None
    prefix = os.fspath(output_prefix)
    if prefix and "://" not in prefix:
        # Absolute, as Beam's FileSystems.match reports local files, so that
        # the shard names we compute compare equal to the ones it lists.
        prefix = os.path.abspath(prefix) + (os.sep if prefix.endswith(os.sep) else "")
    try:
        # Absolute: Beam globs the whole path, the working directory's too.
        check_output_name(prefix, file_name_suffix)
    except ValueError as e:
        raise ConvertError(str(e)) from None
    opts = _pipeline_options(pipeline_args)
    if kind == "parquet":
        try:
            parquet_encoder()  # fail now, not in every worker
        except InputError as e:
            raise ConvertError(str(e)) from None
    try:
        files = expand_inputs(kind, inputs)
    except FileNotFoundError as e:
        raise ConvertError(f"{e.filename}: {e.strerror}") from None
    except OSError as e:
        raise ConvertError(f"{e.filename}: {e.strerror or e}") from None
    existing = _existing_shards(prefix, file_name_suffix)
    if existing and not overwrite:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise ConvertError(f"{existing[0]}: output exists{more}; remove it or pass --force (overwrite=True)")
    created = _prepare_output(prefix)
    sink = ArrayRecordSink(
        prefix, file_name_suffix=file_name_suffix, num_shards=num_shards,
        shard_name_template=SHARD_TEMPLATE, writer_options=writer_options, batched=True,
    )
    paths = [f.path for f in files]
    bytes_in = sum(f.size for f in files)
    progress_dir = tempfile.mkdtemp(prefix="arrayfs-progress-") if progress else None
    bar = result = None
    try:
        p = beam.Pipeline(options=opts)
        if 1 <= num_shards <= len(files):
            groups = [paths[r.start:r.stop] for r in file_groups([f.size for f in files], num_shards)]
            _ = p | "Convert" >> _ConvertFileGroups(sink, kind, groups, progress_dir)
        else:
            _ = (
                p
                | "Inputs" >> beam.Create(paths)
                | "Spread" >> beam.Reshuffle()
                | "Read" >> beam.ParDo(_ReadBatchesFn(kind, progress_dir))
                | "Write" >> iobase.Write(sink)
            )
        if progress:
            stream = sys.stderr if progress is True else progress
            bar = ProgressBar(bytes_in, stream, progress_dir, desc=f"converting {kind}")
        t0 = time.perf_counter()
        result = p.run()
        _wait(result, bar)
        seconds = time.perf_counter() - t0
    except BaseException as e:
        # Whatever stopped the run (bad input, a worker, Ctrl-C), leave
        # nothing behind: the temporary shards, the directory we created.
        # But not while the job may still run: its writers would make the
        # temporary directory again, or fail on its removal.
        running = not _stopped(result)
        if not running:
            _cleanup(sink, created)
        if not isinstance(e, Exception) or (isinstance(e, ConvertError) and not running):
            raise
        text = cause_text(e)
        if running:
            text += (f"; the job could not be cancelled and may still be running: its temporary files in "
                     f"{sink.temp_directory()} are left")
        raise ConvertError(text) from e
    finally:
        if bar is not None:
            bar.close()
        if progress_dir is not None:
            shutil.rmtree(progress_dir, ignore_errors=True)

    shards_written = _counter(result, "shards_written")
    n = num_shards or shards_written
    shards = tuple(shard_names(prefix, n, file_name_suffix))
    if overwrite:
        keep = set(shards)
        stale = [s for s in _existing_shards(prefix, file_name_suffix) if s not in keep]
        if stale:
            FileSystems.delete(stale)
    return ConvertResult(
        records=_counter(result, "records_written"),
        bytes_in=bytes_in,
        bytes_out=_counter(result, "bytes_written"),
        seconds=seconds,
        num_inputs=len(files),
        num_shards=n,
        shards=shards,
    )
