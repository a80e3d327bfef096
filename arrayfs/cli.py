"""The ``arrayfs`` command line (console script ``arrayfs``; ``mount_cli.py``
at the top of the repository runs the same :func:`main`).

Commands (``arrayfs COMMAND --help`` shows each one's options and examples):

* ``arrayfs ls SRC... [-l] [--shards]``: the records (or the shards) of a
  dataset, one per line, tab-separated.
* ``arrayfs cat SRC... INDEX...``: raw record bytes to standard output.
* ``arrayfs info SRC... [--json]``: shards, counts, chunks, group size,
  writer options, sizes, file metadata.
* ``arrayfs verify SRC... [--no-progress] [-j N] [--json]``: every hash and
  every chunk decodes; exit status 1 when anything is wrong.
* ``arrayfs pack INPUT... -o OUT [--options OPTS] [--shard-size N]
  [--files|--lines|--jsonl] [--force]``: files or lines into shards.
* ``arrayfs mount ...`` / ``arrayfs unmount MOUNTPOINT`` (also
  ``arrayfs -u MOUNTPOINT``): registered by :mod:`arrayfs.fs.cli`.
* ``arrayfs convert --from KIND INPUT... -o PREFIX``: TFRecord, JSON lines,
  lines, parquet or files into shards with Beam; registered by
  :mod:`arrayfs.beam.cli`.

``SRC`` is anything :class:`arrayfs.ArrayRecordDataSource` accepts: a file,
a quoted glob (``'data/train-*.array_record'``), a directory (its files
whose names contain ``array_record``), or a read instruction
``'path[start:stop]'``.

Exit status: 0 on success; 1 for an error about the data (no file matches,
a bad or corrupt file, an index out of range, bad writer options, and for
``verify``, any problem found); 2 for a command line that cannot be parsed;
130 on Ctrl-C. Errors are one line on stderr, ``arrayfs: error: ...``,
without a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys

from . import __version__
from .errors import ArrayRecordError
from .pack import PackError

__all__ = ["main", "build_parser", "parse_index_spec", "CliError"]

PROG = "arrayfs"
_FUSE_HINT = "pip install 'arrayfs[fuse]'"


class CliError(Exception):
    """An expected failure, shown as one ``arrayfs: error: ...`` line."""


class _Parser(argparse.ArgumentParser):
    """Reports a bad command line in one line (plus where to get help),
    not argparse's usage block, so scripts' logs stay readable."""

    def error(self, message):
        self.exit(2, f"{PROG}: error: {message} (see '{self.prog} --help')\n")


def _formatter(prog):
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=30)


def _error_text(e: BaseException) -> str:
    if isinstance(e, OSError) and e.filename is not None:
        # "path: No such file or directory" rather than "[Errno 2] ...".
        return f"{e.filename}: {e.strerror or e}"
    if isinstance(e, OSError) and not e.strerror and e.args:
        return str(e.args[0])
    return str(e)


# -- helpers ---------------------------------------------------------------


def _human(n: int) -> str:
    """Bytes as a short human string (binary units)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # unreachable


def _check_sources(srcs, storage_options=None) -> None:
    """Raise ``FileNotFoundError`` (path, reason) for the first SRC that
    names no file, before any shard is opened."""
    from .paths import expand_paths

    for src in srcs:
        expand_paths(src, storage_options=storage_options)


def _open(srcs, storage_options=None):
    from .dataset import ArrayRecordDataSource

    _check_sources(srcs, storage_options)
    return ArrayRecordDataSource(srcs if len(srcs) != 1 else srcs[0], verify=True, storage_options=storage_options)


def add_storage_option(p) -> None:
    """``--storage-option KEY=VALUE`` (repeatable) on parser ``p``."""
    p.add_argument(
        "--storage-option", dest="storage_option", action="append", default=[], metavar="KEY=VALUE",
        help="fsspec option for s3://, gs://, https:// sources (repeatable), e.g. "
             "endpoint_url=http://127.0.0.1:9000 or anon=true; VALUE is read as JSON when it parses",
    )


def storage_options(args) -> dict | None:
    """The ``--storage-option`` values as a dict (``None`` when none).
    Raises :class:`CliError` for an item without ``=``."""
    out = {}
    for item in getattr(args, "storage_option", None) or []:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise CliError(f"--storage-option {item!r}: expected KEY=VALUE")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out or None


def _write_lines(lines) -> None:
    sys.stdout.write("\n".join(lines))
    sys.stdout.write("\n")


_INT = r"[+-]?\d+"
_INDEX_RE = re.compile(rf"(?:{_INT}|(?:{_INT})?:(?:{_INT})?)")


def looks_like_index(token: str) -> bool:
    """``True`` for ``N``, ``-N``, ``A:B``, ``A:``, ``:B``, ``:`` (the
    forms :func:`parse_index_spec` takes)."""
    return _INDEX_RE.fullmatch(token) is not None


def parse_index_spec(token: str, n: int) -> range:
    """Resolve one ``cat`` index against a dataset of ``n`` records.

    Forms: ``N`` (one record; ``-N`` counts from the end, ``-1`` is the
    last), ``A:B`` (records ``A`` to ``B - 1``), ``A:`` (to the end),
    ``:B`` (from the start), ``:`` (all). Bounds may be negative (from the
    end) but are not clipped: a bound past either end is an error rather
    than a silently shorter output.

    Returns a ``range`` of global indices. Raises :class:`CliError` for a
    malformed token, an index out of ``[0, n)``, a bound out of ``[0, n]``,
    or ``A > B``.
    """
    if not looks_like_index(token):
        raise CliError(f"bad index {token!r}: expected N, -N, A:B, A: or :B")
    if ":" not in token:
        i = int(token)
        j = i + n if i < 0 else i
        if not 0 <= j < n:
            raise CliError(f"record index {i} out of range: the dataset has {n} records (0..{n - 1})"
                           if n else f"record index {i} out of range: the dataset has no records")
        return range(j, j + 1)
    a_text, b_text = token.split(":")

    def bound(text, default):
        if not text:
            return default
        v = int(text)
        w = v + n if v < 0 else v
        if not 0 <= w <= n:
            raise CliError(f"range {token!r}: bound {v} is outside the dataset's {n} records")
        return w

    a, b = bound(a_text, 0), bound(b_text, n)
    if a > b:
        raise CliError(f"range {token!r} is backwards (start {a} > stop {b})")
    return range(a, b)


# -- ls --------------------------------------------------------------------


def _cmd_ls(args) -> int:
    with _open(args.src, storage_options(args)) as ds:
        snap = ds.snapshot()
        shards = snap.shards
        if args.shards:
            lines = []
            for sh in shards:
                cols = [str(sh.first_index), str(sh.num_records)]
                if args.long:
                    cols += [str(sh.size_bytes), sh.writer_options or "-"]
                lines.append("\t".join(cols + [sh.path]))
            if lines:
                _write_lines(lines)
            return 0
        # Global indices are zero-padded to the width of the largest one,
        # the names the mount gives the records, so `ls` output sorts in order.
        width = len(str(max(len(ds) - 1, 0)))
        for k, sh in enumerate(shards):
            sizes = snap.record_sizes(k, sh.start, sh.start + sh.num_records).tolist() if args.long else None
            step = 1 << 16
            for base in range(0, sh.num_records, step):
                stop = min(base + step, sh.num_records)
                g0, l0 = sh.first_index, sh.start
                if sizes is None:
                    lines = [f"{g0 + j:0{width}d}\t{sh.path}\t{l0 + j}" for j in range(base, stop)]
                else:
                    lines = [f"{g0 + j:0{width}d}\t{sh.path}\t{l0 + j}\t{sizes[j]}" for j in range(base, stop)]
                _write_lines(lines)
    return 0


# -- cat -------------------------------------------------------------------


def _split_cat_args(args):
    """SRC and INDEX lists from the positionals (rule in ``cat --help``)."""
    items = list(args.items)
    if args.index:
        return items, list(args.index)
    k = len(items)
    while k > 0 and looks_like_index(items[k - 1]):
        k -= 1
    srcs, specs = items[:k], items[k:]
    if not specs:
        raise CliError(
            f"no INDEX given: the last argument {items[-1]!r} is not an index "
            "(N, -N, A:B, A: or :B): arrayfs cat SRC... INDEX..."
        )
    if not srcs:
        raise CliError(
            "no SRC given: every argument looks like an index; name a shard file that looks "
            "like a number as ./NAME, or give indices with -i"
        )
    return srcs, specs


def _cmd_cat(args) -> int:
    import numpy as np

    srcs, specs = _split_cat_args(args)
    with _open(srcs, storage_options(args)) as ds:
        n = len(ds)
        try:
            ranges = [parse_index_spec(s, n) for s in specs]
        except CliError as e:
            raise CliError(f"{' '.join(srcs)}: {e}") from None
        out = sys.stdout.buffer
        sep = b"\n" if args.newline else None
        # Adaptive batch: many small records per call, few big ones, so a
        # range of 200 MiB records never holds more than a few in memory.
        batch = 1
        for r in ranges:
            i = r.start
            while i < r.stop:
                j = min(i + batch, r.stop)
                recs = ds.__getitems__(np.arange(i, j, dtype=np.int64))
                got = 0
                for rec in recs:
                    out.write(rec)
                    got += len(rec)
                    if sep is not None:
                        out.write(sep)
                i = j
                if got < 8 << 20:
                    batch = min(batch * 2, 4096)
                elif got > 64 << 20:
                    batch = max(batch // 2, 1)
        out.flush()
    return 0


# -- info ------------------------------------------------------------------


def _metadata_summary(f) -> dict | None:
    """The file metadata chunk of an open ArrayRecordFile, as a dict, or
    ``None`` when there is none."""
    try:
        found = f.read_metadata_chunk()
    except ArrayRecordError as e:
        return {"present": True, "decoded": False, "error": e.reason}
    if found is None:
        return None
    header, data = found
    try:
        from .riegeli.transpose import decode_records_metadata, parse_records_metadata
    except ImportError:
        return {"present": True, "decoded": False, "size_bytes": header.decoded_data_size}
    try:
        fields = parse_records_metadata(decode_records_metadata(data, header.decoded_data_size))
    except Exception as e:  # noqa: BLE001 - a bad metadata chunk must not stop `info`
        return {"present": True, "decoded": False, "error": str(e)}
    return {"present": True, "decoded": True, "fields": fields}


def _jsonable(o):
    # Metadata holds serialized protos (file descriptors, extensions):
    # binary by nature, so always base64, never a guess at text.
    if isinstance(o, (bytes, bytearray, memoryview)):
        import base64

        return base64.b64encode(bytes(o)).decode("ascii")
    if isinstance(o, (set, frozenset)):
        return list(o)
    if hasattr(o, "tolist"):
        return o.tolist()
    return repr(o)


def collect_info(srcs, storage_options=None) -> dict:
    """The summary ``arrayfs info --json`` prints (see ``info --help``)."""
    from .options import parse_writer_options

    shards = []
    with _open(srcs, storage_options) as ds:
        snap = ds.snapshot()
        for k, sh in enumerate(snap.shards):
            f = snap.file(k)
            chunks_used = 0
            if sh.num_records:
                chunks_used = f.chunk_of(sh.start + sh.num_records - 1) + 1 - f.chunk_of(sh.start)
            try:
                compression = parse_writer_options(sh.writer_options).to_string().split(",")
                compression = next(
                    (c for c in compression if c.split(":")[0] in ("uncompressed", "brotli", "zstd", "snappy")),
                    None,
                )
            except ValueError:
                compression = None
            shards.append({
                "path": sh.path,
                "num_records": sh.num_records,
                "first_index": sh.first_index,
                "start": sh.start,
                "file_records": f.num_records,
                "num_chunks": f.num_chunks,
                "chunks_used": chunks_used,
                "group_size": f.group_size,
                "writer_options": sh.writer_options,
                "compression": compression,
                "file_bytes": sh.size_bytes,
                "record_bytes": snap.shard_record_bytes(k),
                "mtime_ns": sh.mtime_ns,
                "metadata": _metadata_summary(f),
            })
    return {
        "num_shards": len(shards),
        "num_records": sum(s["num_records"] for s in shards),
        "num_chunks": sum(s["num_chunks"] for s in shards),
        "file_bytes": sum(s["file_bytes"] for s in shards),
        "record_bytes": sum(s["record_bytes"] for s in shards),
        "shards": shards,
    }


def _metadata_text(md) -> str:
    if md is None:
        return "none"
    if not md.get("decoded"):
        return f"present (not decoded{': ' + md['error'] if md.get('error') else ''})"
    fields = md.get("fields") or {}
    name = fields.get("record_type_name")
    parts = [f"record type {name}" if name else "no record type"]
    if fields.get("file_comment"):
        parts.append(f"comment {fields['file_comment']!r}")
    if fields.get("file_descriptor_names"):
        parts.append(f"descriptors {', '.join(map(str, fields['file_descriptor_names']))}")
    if fields.get("record_writer_options"):
        parts.append(f"riegeli options {fields['record_writer_options']}")
    return "; ".join(parts)


def _cmd_info(args) -> int:
    info = collect_info(args.src, storage_options(args))
    if args.json:
        json.dump(info, sys.stdout, indent=2, default=_jsonable)
        sys.stdout.write("\n")
        return 0
    lines = [
        f"{info['num_shards']} shard{'s' if info['num_shards'] != 1 else ''}, "
        f"{info['num_records']:,} records, {info['num_chunks']:,} chunks, "
        f"{_human(info['file_bytes'])} on disk, {_human(info['record_bytes'])} of records",
    ]
    for k, s in enumerate(info["shards"]):
        used = ""
        if s["num_records"] != s["file_records"]:
            used = f" (records {s['start']}..{s['start'] + s['num_records'] - 1} of {s['file_records']} in the file)"
        gs = s["group_size"] if s["group_size"] is not None else "irregular"
        lines += [
            f"shard {k}: {s['path']}",
            f"  records        {s['num_records']:,}{used}, global "
            f"[{s['first_index']}, {s['first_index'] + s['num_records']})",
            f"  chunks         {s['num_chunks']:,} (group_size {gs})",
            f"  writer options {s['writer_options'] or '(none stored)'}",
            f"  file bytes     {s['file_bytes']:,} ({_human(s['file_bytes'])})",
            f"  record bytes   {s['record_bytes']:,} ({_human(s['record_bytes'])})",
            f"  metadata       {_metadata_text(s['metadata'])}",
        ]
    _write_lines(lines)
    return 0


# -- verify ----------------------------------------------------------------


def _cmd_verify(args) -> int:
    from .verify import verify_shards

    if args.jobs < 1:
        raise CliError(f"--jobs must be at least 1, got {args.jobs}")
    opts = storage_options(args)
    _check_sources(args.src, opts)
    report = verify_shards(args.src, progress=not args.no_progress, jobs=args.jobs, storage_options=opts)
    if args.json:
        json.dump(report.to_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0 if report.ok else 1
    lines = [f"BAD {b}" for b in report.bad_chunks]
    ns = len(report.shards)
    counts = f"{report.num_chunks:,} chunks, {report.num_records:,} records, {_human(report.size_bytes)}"
    if report.ok:
        lines.append(f"OK: {ns} shard{'s' if ns != 1 else ''}, {counts} verified")
    else:
        nbad = len(report.bad_chunks)
        lines.append(
            f"CORRUPT: {nbad} problem{'s' if nbad != 1 else ''} in {len(report.bad_shards)} of {ns} "
            f"shard{'s' if ns != 1 else ''} ({counts} checked)"
        )
    _write_lines(lines)
    return 0 if report.ok else 1


# -- pack ------------------------------------------------------------------

_JSONL_SUFFIXES = (".jsonl", ".ndjson", ".jsonlines")


def _pack_mode(args) -> str:
    if args.mode:
        return args.mode
    ins = args.inputs
    if all(os.path.isdir(p) for p in ins):
        return "files"
    if all(os.path.isfile(p) and p.lower().endswith(_JSONL_SUFFIXES) for p in ins):
        return "jsonl"
    for p in ins:
        if p != "-" and not os.path.exists(p):
            raise FileNotFoundError(2, "No such file or directory", p)
    raise CliError(
        "cannot tell how to pack these inputs: pass --files (each file is a record), "
        "--lines (each line is a record) or --jsonl (each JSON line is a record)"
    )


def _cmd_pack(args) -> int:
    from .file import ArrayRecordFile
    from .pack import pack_files, pack_lines

    mode = _pack_mode(args)
    if args.shard_size is not None and args.shard_size < 1:
        raise CliError(f"--shard-size must be a positive number of records, got {args.shard_size}")
    progress = not args.no_progress
    if mode == "files":
        if "-" in args.inputs:
            raise CliError("'-' (standard input) needs --lines or --jsonl")
        written = pack_files(args.inputs, args.output, args.options, args.shard_size, progress, overwrite=args.force)
    else:
        written = pack_lines(
            args.inputs, args.output, args.options, args.shard_size, progress,
            jsonl=(mode == "jsonl"), overwrite=args.force,
        )
    lines, records, size = [], 0, 0
    for p in written:
        # Reopening is cheap (postscript and footer) and proves each shard
        # is complete and readable before we say so.
        with ArrayRecordFile(p) as f:
            n, b = f.num_records, f.size
        records += n
        size += b
        lines.append(f"{p}\t{n} records\t{b} bytes")
    lines.append(
        f"packed {records:,} records into {len(written)} shard{'s' if len(written) != 1 else ''} "
        f"({_human(size)}) with {args.options or 'default options'}"
    )
    _write_lines(lines)
    return 0


# -- mount / unmount (arrayfs.fs.cli) ---------------------------------------


def _add_fs_commands(sub) -> bool:
    """Register ``mount`` and ``unmount`` from :mod:`arrayfs.fs.cli`.

    Returns ``True`` when ``unmount`` exists (real or a stub that explains
    what to install), ``False`` when this build has no filesystem package.
    """
    try:
        from .fs.cli import add_subcommands
    except ModuleNotFoundError as e:
        if e.name in ("arrayfs.fs", "arrayfs.fs.cli"):
            return False
        _add_fs_stubs(sub, f"needs the Python package {e.name!r}, which is not installed: {_FUSE_HINT}")
        return True
    except OSError as e:
        # fusepy-style bindings raise OSError at import when libfuse is absent.
        _add_fs_stubs(
            sub, f"cannot load libfuse ({e}): install fuse3 or libfuse2 (e.g. apt-get install fuse3), then {_FUSE_HINT}"
        )
        return True
    except ImportError as e:
        _add_fs_stubs(sub, f"cannot be loaded ({e}): {_FUSE_HINT}")
        return True
    add_subcommands(sub)
    return True


def _add_fs_stubs(sub, reason: str) -> None:
    for name, what in (("mount", "mount a dataset as a directory of records"), ("unmount", "unmount an arrayfs mount")):
        p = sub.add_parser(
            name, help=f"{what} (unavailable: {reason.split(':')[0]})",
            description=f"arrayfs {name} {reason}", formatter_class=_formatter,
        )
        p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
        p.set_defaults(func=lambda args, name=name: _raise(CliError(f"{name} {reason}")))


def _raise(e):
    raise e


# -- the parser --------------------------------------------------------------

_TOP_EPILOG = """\
examples:
  arrayfs ls 'data/train-*.array_record' | head
  arrayfs cat data/train.array_record 42 > record42.bin
  arrayfs info data/ --json
  arrayfs verify 'data/*.array_record'
  arrayfs pack images/ -o out/images.array_record --shard-size 10000
  arrayfs convert --from tfrecord 'data/*.tfrecord' -o out/train --num-shards 8
  arrayfs mount 'data/train-*.array_record' mnt && ls mnt | head && arrayfs -u mnt

SRC is a file, a quoted glob, a directory (its *array_record* files) or a
read instruction 'path[start:stop]'; several SRCs are concatenated in order.
Each may be a URL (s3://, gs://, https://, ...) read through fsspec, with
credentials from the usual environment or --storage-option KEY=VALUE.
Exit status: 0 ok, 1 error or corruption found, 2 bad command line.
"""

_LS_EPILOG = """\
output (tab-separated, one line per record, in global order):
  GLOBAL_INDEX  SHARD_PATH  LOCAL_INDEX  [SIZE_BYTES with -l]
GLOBAL_INDEX is zero-padded to the width of the largest index (the file
names `arrayfs mount` uses). With --shards, one line per shard:
  FIRST_GLOBAL_INDEX  NUM_RECORDS  [FILE_BYTES  WRITER_OPTIONS with -l]  PATH

examples:
  arrayfs ls 'data/train-*.array_record' | head
  arrayfs ls -l data/train.array_record | sort -t$'\\t' -k4 -n | tail -1   # biggest record
  arrayfs ls --shards -l data/
"""

_CAT_EPILOG = """\
which arguments are indices: the trailing arguments that look like an
index (N, -N, A:B, A:, :B) are INDEXes, the ones before are SRCs. With -i,
every positional argument is a SRC and the indices come from -i. (A shard
file named like a number: write it as ./123, or use -i.)

INDEX forms (global indices over all SRCs concatenated, 0-based):
  N     record N          -N   N-th record from the end (-1 is the last)
  A:B   records A..B-1    A:   A to the end    :B   the first B records
Bounds are not clipped: an index or bound outside the dataset is an error.
A negative range must follow `--` (or use -i=-3:), e.g. arrayfs cat SRC -- -3:

Records are written back to back, as they are; --newline adds a newline
after each record (for text/JSON records).

examples:
  arrayfs cat data/train.array_record 42 > rec42.bin
  arrayfs cat 'data/train-*.array_record' 0:10 -n          # first 10 JSON lines
  arrayfs cat data/ -1 | xxd | head                          # the last record
  arrayfs cat -i 3 -i 7:9 data/train.array_record
"""

_INFO_EPILOG = """\
shows, per shard: records (and the global range they take), chunks and
group_size, writer options, bytes on disk, bytes of records (uncompressed),
and the Riegeli file metadata chunk (record type name) when there is one.

--json prints one object: num_shards, num_records, num_chunks, file_bytes,
record_bytes, and "shards": a list of {path, num_records, first_index,
start, file_records, num_chunks, chunks_used, group_size (null when chunks
differ), writer_options, compression, file_bytes, record_bytes, mtime_ns,
metadata (null, or {present, decoded, fields|error}; bytes in base64)}.

examples:
  arrayfs info 'data/train-*.array_record'
  arrayfs info data/ --json | python -c 'import json,sys; print(json.load(sys.stdin)["num_records"])'
"""

_VERIFY_EPILOG = """\
checks every shard whole: signature, postscript, footer, every chunk's
header and data hashes, that every chunk decodes to the record count and
size the footer says, and every block header. It keeps going after a
problem and lists each one on stdout:
  BAD <shard>: chunk K at byte OFFSET, records [A, B) (global [C, D)): reason
then a summary line (OK: ... or CORRUPT: ...). Exit status 1 if anything is
wrong. The progress bar (bytes) goes to stderr when it is a terminal.

examples:
  arrayfs verify 'data/train-*.array_record'
  arrayfs verify data/ -j 4 --no-progress || echo "dataset is damaged"
"""

_PACK_EPILOG = """\
what becomes a record:
  --files  each regular file is one record, bytes unchanged. A directory
           is walked recursively, files taken in sorted order of their
           path relative to it (as `find DIR -type f | LC_ALL=C sort`).
  --lines  each line of each text file is one record, without its final
           newline ("\\n" only; a "\\r" before it is kept). '-' is stdin.
  --jsonl  as --lines, but every line must be JSON; blank lines skipped.
  Without a flag: directories mean --files, *.jsonl/*.ndjson files mean
  --jsonl; anything else asks you to choose.

output names: without --shard-size everything goes into one file named
exactly OUT. With --shard-size N, shards of N records named
  OUT-00000-of-0000K, OUT-00001-of-0000K, ...
e.g. -o out/train.array_record --shard-size 1000 gives
out/train.array_record-00000-of-00004 etc. (read them back with
'out/train.array_record-*' or the directory out/). Shards appear under
their names only once all are written. Existing outputs (or shards of OUT
from an earlier run) stop the pack unless --force, which also removes
stale shards of OUT.

--options is the array_record writer options string (default
group_size:1,zstd:3), e.g. 'group_size:64,zstd:9' or 'brotli:6'.

examples:
  arrayfs pack images/ -o out/images.array_record --shard-size 10000
  arrayfs pack train.jsonl -o out/train.array_record --options group_size:16,zstd:5
  zcat corpus.txt.gz | arrayfs pack --lines - -o out/corpus.array_record --shard-size 1000000
"""


def build_parser() -> tuple[argparse.ArgumentParser, bool]:
    """The argument parser, and whether ``unmount`` is registered."""
    parser = _Parser(
        prog=PROG,
        description="Look at, check and build ArrayRecord datasets; mount them as a directory of records.",
        epilog=_TOP_EPILOG,
        formatter_class=_formatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "-u", "--unmount", dest="unmount_point", metavar="MOUNTPOINT",
        help="unmount MOUNTPOINT (same as `arrayfs unmount MOUNTPOINT`)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser(
        "ls", help="list the records (or shards) of a dataset", formatter_class=_formatter,
        description="List the records of a dataset, one per line, in global order.", epilog=_LS_EPILOG,
    )
    p.add_argument("src", nargs="+", metavar="SRC", help="shard file, quoted glob, directory or 'path[a:b]'")
    p.add_argument("-l", "--long", action="store_true", help="also show each record's size in bytes")
    p.add_argument("--shards", action="store_true", help="list shards instead of records")
    add_storage_option(p)
    p.set_defaults(func=_cmd_ls)

    p = sub.add_parser(
        "cat", help="write records' raw bytes to stdout", formatter_class=_formatter,
        usage="%(prog)s [-h] [-n] [-i INDEX] SRC... INDEX...",
        description="Write the raw bytes of records to standard output.", epilog=_CAT_EPILOG,
    )
    p.add_argument("items", nargs="+", metavar="SRC... INDEX...", help="sources, then indices (see below)")
    p.add_argument("-i", "--index", action="append", metavar="INDEX",
                   help="an index or range; repeatable; then all positionals are SRCs")
    p.add_argument("-n", "--newline", action="store_true", help="write a newline after each record")
    add_storage_option(p)
    p.set_defaults(func=_cmd_cat)

    p = sub.add_parser(
        "info", help="summary of shards, records, chunks, options, sizes", formatter_class=_formatter,
        description="Summarize a dataset: shards, record counts, chunks, group size, writer options, sizes, "
                    "file metadata.",
        epilog=_INFO_EPILOG,
    )
    p.add_argument("src", nargs="+", metavar="SRC", help="shard file, quoted glob, directory or 'path[a:b]'")
    p.add_argument("--json", action="store_true", help="print JSON (format below)")
    add_storage_option(p)
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser(
        "verify", help="check every hash and chunk; exit 1 on corruption", formatter_class=_formatter,
        description="Check the integrity of every shard and report every bad chunk.", epilog=_VERIFY_EPILOG,
    )
    p.add_argument("src", nargs="+", metavar="SRC", help="shard file, quoted glob, directory or 'path[a:b]'")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("-j", "--jobs", type=int, default=1, metavar="N",
                   help="check N shards at once, in separate processes (default 1)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    add_storage_option(p)
    p.set_defaults(func=_cmd_verify)

    p = sub.add_parser(
        "pack", help="pack files or lines into ArrayRecord shards", formatter_class=_formatter,
        description="Pack the files of a directory tree, or the lines of text/JSONL files, into ArrayRecord shards.",
        epilog=_PACK_EPILOG,
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="directories, files, or '-' for stdin (lines)")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output file name (pattern with --shard-size)")
    p.add_argument("--options", default="", metavar="OPTS", help="writer options, e.g. 'group_size:64,zstd:9'")
    p.add_argument("--shard-size", type=int, metavar="N", help="records per shard (default: one file)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--files", dest="mode", action="store_const", const="files", help="each file is a record")
    mode.add_argument("--lines", dest="mode", action="store_const", const="lines", help="each line is a record")
    mode.add_argument("--jsonl", dest="mode", action="store_const", const="jsonl",
                      help="each JSON line is a record (checked)")
    p.add_argument("-f", "--force", action="store_true", help="replace existing outputs")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_pack)

    has_unmount = _add_fs_commands(sub)
    from .beam.cli import add_subcommands as add_convert_command  # imports no Beam

    add_convert_command(sub)
    return parser, has_unmount


# -- entry point ---------------------------------------------------------------


_FUSE_MODULES = ("mfusepy", "fuse", "watchdog")


def _run(args) -> int:
    try:
        rc = args.func(args)
    except ModuleNotFoundError as e:
        # mount/unmount load their FUSE dependencies when they run.
        if e.name and e.name.split(".")[0] in _FUSE_MODULES:
            raise CliError(f"{args.command} needs {e.name!r}, which is not installed: {_FUSE_HINT}") from None
        raise
    return 0 if rc is None else int(rc)


def main(argv=None) -> int:
    """Run the ``arrayfs`` command line with ``argv`` (default
    ``sys.argv[1:]``). Returns the exit status; never raises for expected
    errors (they are printed as one line on stderr)."""
    argv = sys.argv[1:] if argv is None else [os.fspath(a) for a in argv]
    parser, has_unmount = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.unmount_point is not None:
            if args.command is not None:
                parser.error("-u/--unmount takes no command")
            if not has_unmount:
                raise CliError("unmount is not available: this arrayfs has no filesystem support (arrayfs.fs)")
            args = parser.parse_args(["unmount", args.unmount_point])
        if getattr(args, "func", None) is None:
            parser.print_help(sys.stderr)
            return 2
        return _run(args)
    except SystemExit as e:  # argparse: --help, --version, bad command line
        code = e.code
        return code if isinstance(code, int) else (0 if code is None else _fail(str(code)))
    except KeyboardInterrupt:
        sys.stderr.write("\n")
        return 130
    except BrokenPipeError:
        # `arrayfs ls ... | head`: the reader left; stop quietly. Point stdout
        # at /dev/null so the interpreter's final flush does not complain.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 141  # as a shell reports a process killed by SIGPIPE
    except (CliError, ArrayRecordError, PackError, OSError) as e:
        return _fail(_error_text(e))


def _fail(message: str) -> int:
    # Keep it to one line whatever the message holds.
    sys.stderr.write(f"{PROG}: error: {' '.join(message.split())}\n")
    sys.stderr.flush()
    return 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
