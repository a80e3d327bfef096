"""``arrayfs convert``: the command-line side of :func:`arrayfs.beam.convert`.

The main command line (:mod:`arrayfs.cli`) calls :func:`register`.
This module imports nothing from Beam until the command runs, so that the
other ``arrayfs`` commands start fast and work without ``arrayfs[beam]``.

Output: the one-line summary on stdout; a progress bar on stderr when it is
a terminal. Beam's own logging (and its worker processes' output) goes to
a log file while the pipeline runs; on failure stderr gets at most two
lines: the cause (file and byte offset or line) and where that log is.
Exit status: 0 done, 1 failed (nothing written), 2 bad command line, 130
interrupted.
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import sys
import tempfile

from ..extras import install_hint
from .defaults import WRITER_OPTIONS

__all__ = ["register", "cmd_convert", "KINDS"]

# Repeated from arrayfs.beam.inputs (which imports Beam) for argparse; a
# test checks that the two agree.
KINDS = ("tfrecord", "jsonl", "lines", "parquet", "files")

_BEAM_HINT = install_hint("beam")

CONVERT_EPILOG = """\
records, per --from:
  tfrecord  each TFRecord record's payload (length and data checksums checked)
  jsonl     each line without its newline; every non-blank line must be JSON
  lines     each line without its "\\n" (a "\\r" before it is kept)
  parquet   each row as a msgpack map {column: value} (decode="msgpack" reads it)
  files     each file's bytes (a local directory: every file under it, sorted)
INPUTs are paths, quoted globs or URLs Beam reads (gs://...); .gz/.bz2
inputs are decompressed.

output: OUTPUT_PREFIX-00000-of-0000N.array_record. Records keep their input
order (shard 0, then 1, ...) whenever there are at least as many input files
as shards (always with the default --num-shards 1); with fewer input files
than shards, files are read in parallel and records land in the N shards in
no particular order; 0 lets the runner choose. Shards appear only when the
whole run succeeded.

Any other --flag=value is a Beam pipeline option (write them with '=').

examples:
  arrayfs convert --from tfrecord 'data/train-*.tfrecord' -o out/train --num-shards 16
  arrayfs convert --from jsonl corpus.jsonl -o out/corpus --options group_size:64,zstd:9
  arrayfs convert --from tfrecord 'data/*.tfrecord' -o out/train --num-shards 2 \\
      --direct_num_workers=2 --direct_running_mode=multi_processing
  arrayfs convert --from parquet 'gs://b/rows/*.parquet' -o gs://b/ar/rows --num-shards 64 \\
      --runner=DataflowRunner --project=P --region=us-central1 \\
      --temp_location=gs://b/tmp --requirements_file=requirements.txt
"""


def _keep_unknown_flags(parser) -> None:
    """Make ``parser`` hand unknown ``--flags`` to ``args.beam_args``
    instead of failing, so Beam's pipeline options pass through."""
    parse_known = parser.parse_known_args

    def parse_known_args(args=None, namespace=None):
        ns, extra = parse_known(args, namespace)
        ns.beam_args = list(getattr(ns, "beam_args", None) or []) + list(extra)
        return ns, []

    parser.parse_known_args = parse_known_args


def register(subparsers, kit=None) -> None:
    """Register ``convert`` on an ``argparse`` subparsers object (the
    command line's hook; ``kit``, its helpers, is not needed here); its
    ``func`` default is :func:`cmd_convert` (``func(args) -> exit code``)."""
    p = subparsers.add_parser(
        "convert",
        help="convert TFRecord, JSON lines, lines, parquet or files into ArrayRecord shards (Beam)",
        description="Convert TFRecord, JSON lines, text lines, parquet or plain files into ArrayRecord "
        "shards with an Apache Beam pipeline: locally on the DirectRunner, or on any runner.",
        epilog=CONVERT_EPILOG,
        formatter_class=lambda prog: argparse.RawDescriptionHelpFormatter(prog, max_help_position=30),
        usage="%(prog)s --from KIND INPUT... -o OUTPUT_PREFIX [--num-shards N] [--options OPTS] "
        "[--runner RUNNER] [BEAM_ARGS...]",
    )
    p.add_argument("--from", dest="kind", required=True, choices=KINDS, metavar="KIND",
                   help=f"what the inputs are: {', '.join(KINDS)}")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="input files, quoted globs or URLs")
    p.add_argument("-o", "--output", required=True, metavar="OUTPUT_PREFIX",
                   help="shard name prefix (its directory is created; no glob characters * ? [ ] { })")
    p.add_argument("--num-shards", type=int, default=1, metavar="N",
                   help="shards to write (default 1: input order kept; 0: the runner chooses)")
    p.add_argument("--options", default=WRITER_OPTIONS, metavar="OPTS",
                   help=f"array_record writer options (default {WRITER_OPTIONS}, with zstd:3)")
    p.add_argument("--runner", metavar="RUNNER", help="Beam runner (default DirectRunner)")
    p.add_argument("-f", "--force", action="store_true",
                   help="replace existing shards of OUTPUT_PREFIX")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_convert, beam_args=[])
    _keep_unknown_flags(p)


def _say(stream, line: str) -> None:
    stream.write(line + "\n")
    stream.flush()


def cmd_convert(args) -> int:
    """Handler of ``arrayfs convert``; returns the exit code."""
    err = sys.stderr
    bad = [a for a in args.beam_args if not a.startswith("-")]
    if bad:
        _say(err, f"arrayfs: error: unexpected argument {bad[0]!r}: give INPUTs before other options, "
                  "and Beam options as --flag=value")
        return 2
    if args.num_shards < 0:
        _say(err, f"arrayfs: error: --num-shards must be >= 0, got {args.num_shards}")
        return 2
    beam_args = ([f"--runner={args.runner}"] if args.runner else []) + list(args.beam_args)

    # While Beam runs, fd 2 (this process's and its worker processes')
    # goes to a log file: Beam logs warnings and tracebacks there freely.
    # The bar and our own lines go to the real stderr, kept aside.
    log = tempfile.NamedTemporaryFile(prefix="arrayfs-convert-", suffix=".log", delete=False)
    err.flush()
    saved_fd = os.dup(2)
    term = os.fdopen(os.dup(saved_fd), "w", buffering=1)
    show_bar = not args.no_progress and term.isatty()
    os.dup2(log.fileno(), 2)
    failed = None
    result = None
    # Beam's runners leave directories in the temporary directory on every
    # run (a job server's beam-temp*, staging directories, a requirements
    # cache), some in use until the process exits: the run, its worker
    # processes included, gets a directory of its own, removed at exit
    # (registered before Beam's own exit handlers, so it runs after them).
    scratch = tempfile.mkdtemp(prefix="arrayfs-convert-")
    atexit.register(shutil.rmtree, scratch, True)
    saved_tmp = tempfile.tempdir, os.environ.get("TMPDIR")
    tempfile.tempdir = os.environ["TMPDIR"] = scratch
    try:
        try:
            from .conversion import ConvertError, convert
        except ModuleNotFoundError as e:
            failed = (f"convert needs the Python package {e.name!r}, which is not installed: {_BEAM_HINT}", False, 1)
        else:
            try:
                result = convert(
                    args.kind, args.inputs, args.output, num_shards=args.num_shards,
                    writer_options=args.options, pipeline_args=beam_args, overwrite=args.force,
                    progress=term if show_bar else False,
                )
            except ConvertError as e:
                failed = (str(e), e.__cause__ is not None, 1)
    except KeyboardInterrupt:
        failed = ("interrupted", True, 130)  # 128 + SIGINT, as shells report it
    finally:
        tempfile.tempdir = saved_tmp[0]
        if saved_tmp[1] is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved_tmp[1]
        sys.stderr.flush()
        os.dup2(saved_fd, 2)
        os.close(saved_fd)
        log.close()
    try:
        if failed is None:
            _say(sys.stdout, result.summary())
            return 0
        message, ran, status = failed
        _say(term, f"arrayfs: error: {' '.join(message.split())}")
        if ran and os.path.getsize(log.name):
            _say(term, f"arrayfs: nothing was written; Beam's log: {log.name}")
            log = None  # keep it
        return status
    finally:
        term.close()
        if log is not None:
            os.unlink(log.name)
