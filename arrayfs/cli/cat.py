"""``arrayfs cat``: raw record bytes to standard output."""

from __future__ import annotations

import sys

from .common import CliError, formatter, looks_like_index, open_dataset, parse_index_spec, storage_options

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
    with open_dataset(srcs, storage_options(args)) as ds:
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


def register(sub, kit) -> None:
    p = sub.add_parser(
        "cat", help="write records' raw bytes to stdout", formatter_class=formatter,
        usage="%(prog)s [-h] [-n] [-i INDEX] SRC... INDEX...",
        description="Write the raw bytes of records to standard output.", epilog=_CAT_EPILOG,
    )
    p.add_argument("items", nargs="+", metavar="SRC... INDEX...", help="sources, then indices (see below)")
    p.add_argument("-i", "--index", action="append", metavar="INDEX",
                   help="an index or range; repeatable; then all positionals are SRCs")
    p.add_argument("-n", "--newline", action="store_true", help="write a newline after each record")
    kit.add_storage_option(p)
    p.set_defaults(func=_cmd_cat)
