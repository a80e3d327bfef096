"""``arrayfs pack``: files or lines into shards."""

from __future__ import annotations

import os

from .common import CliError, formatter, human, write_lines

_PACK_EPILOG = """\
what becomes a record:
  --files  each regular file is one record, bytes unchanged. A directory
           is walked recursively, files taken in sorted order of their
           path relative to it (as `find DIR -type f | LC_ALL=C sort`).
  --lines  each line of each text file is one record, without its final
           newline ("\\n" only; a "\\r" before it is kept). '-' is stdin;
           .gz and .bz2 files are decompressed.
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

_JSONL_SUFFIXES = (".jsonl", ".ndjson", ".jsonlines")

def _pack_mode(args) -> str:
    from ..pack import compression_suffix

    if args.mode:
        return args.mode
    ins = args.inputs
    if all(os.path.isdir(p) for p in ins):
        return "files"
    if all(os.path.isfile(p) and p[: len(p) - len(compression_suffix(p))].lower().endswith(_JSONL_SUFFIXES)
           for p in ins):
        return "jsonl"
    for p in ins:
        if p != "-" and not os.path.exists(p):
            raise FileNotFoundError(2, "No such file or directory", p)
    raise CliError(
        "cannot tell how to pack these inputs: pass --files (each file is a record), "
        "--lines (each line is a record) or --jsonl (each JSON line is a record)"
    )

def _cmd_pack(args) -> int:
    from ..file import ArrayRecordFile
    from ..pack import pack_files, pack_lines

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
        f"({human(size)}) with {args.options or 'default options'}"
    )
    write_lines(lines)
    return 0


def register(sub, kit) -> None:
    p = sub.add_parser(
        "pack", help="pack files or lines into ArrayRecord shards", formatter_class=formatter,
        description="Pack the files of a directory tree, or the lines of text/JSONL files, into ArrayRecord shards.",
        epilog=_PACK_EPILOG,
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="directories, files, or '-' for stdin (with --lines or --jsonl)")
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
