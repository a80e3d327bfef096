"""``arrayfs ls``: the records (or the shards) of a dataset, one per line."""

from __future__ import annotations

from .common import formatter, open_dataset, storage_options, write_lines

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

def _cmd_ls(args) -> int:
    with open_dataset(args.src, storage_options(args)) as ds:
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
                write_lines(lines)
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
                write_lines(lines)
    return 0


def register(sub, kit) -> None:
    p = sub.add_parser(
        "ls", help="list the records (or shards) of a dataset", formatter_class=formatter,
        description="List the records of a dataset, one per line, in global order.", epilog=_LS_EPILOG,
    )
    p.add_argument("src", nargs="+", metavar="SRC", help="shard file, quoted glob, directory or 'path[a:b]'")
    p.add_argument("-l", "--long", action="store_true", help="also show each record's size in bytes")
    p.add_argument("--shards", action="store_true", help="list shards instead of records")
    kit.add_storage_option(p)
    p.set_defaults(func=_cmd_ls)
