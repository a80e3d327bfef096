"""``arrayfs verify``: every hash and every chunk of every shard; exit status 1 when anything is wrong."""

from __future__ import annotations

import json
import sys

from .common import CliError, check_sources, formatter, human, storage_options, write_lines

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

def _cmd_verify(args) -> int:
    from ..verify import verify_shards

    if args.jobs < 1:
        raise CliError(f"--jobs must be at least 1, got {args.jobs}")
    opts = storage_options(args)
    check_sources(args.src, opts)
    report = verify_shards(args.src, progress=not args.no_progress, jobs=args.jobs, storage_options=opts)
    if args.json:
        json.dump(report.to_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0 if report.ok else 1
    lines = [f"BAD {b}" for b in report.bad_chunks]
    ns = len(report.shards)
    counts = f"{report.num_chunks:,} chunks, {report.num_records:,} records, {human(report.size_bytes)}"
    if report.ok:
        lines.append(f"OK: {ns} shard{'s' if ns != 1 else ''}, {counts} verified")
    else:
        nbad = len(report.bad_chunks)
        lines.append(
            f"CORRUPT: {nbad} problem{'s' if nbad != 1 else ''} in {len(report.bad_shards)} of {ns} "
            f"shard{'s' if ns != 1 else ''} ({counts} checked)"
        )
    write_lines(lines)
    return 0 if report.ok else 1


def register(sub, kit) -> None:
    p = sub.add_parser(
        "verify", help="check every hash and chunk; exit 1 on corruption", formatter_class=formatter,
        description="Check the integrity of every shard and report every bad chunk.", epilog=_VERIFY_EPILOG,
    )
    p.add_argument("src", nargs="+", metavar="SRC", help="shard file, quoted glob, directory or 'path[a:b]'")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("-j", "--jobs", type=int, default=1, metavar="N",
                   help="check N shards at once, in separate processes (default 1)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    kit.add_storage_option(p)
    p.set_defaults(func=_cmd_verify)
