"""``arrayfs cat``: raw record bytes to standard output, or with
``--decode`` one JSON object per record (:mod:`arrayfs.display`)."""

from __future__ import annotations

import sys

from ..errors import ArrayRecordError
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

With --decode FORMAT, each record is one line of JSON instead: numbers and
text as themselves, a feature of one value as a scalar, several as a list,
a nested TFDS FeaturesDict as a nested object, and binary values as a short
description such as {"bytes": 1234, "type": "png", "shape": [28, 28, 1]}.
FORMAT: auto (sniffed from the first 8 records; a TFDS dataset, with its
features.json beside the shards, by its features), example
(tf.train.Example), tfds, msgpack, json, raw (each record described).

examples:
  arrayfs cat data/train.array_record 42 > rec42.bin
  arrayfs cat 'data/train-*.array_record' 0:10 -n          # first 10 JSON lines
  arrayfs cat data/ -1 | xxd | head                          # the last record
  arrayfs cat -i 3 -i 7:9 data/train.array_record
  arrayfs cat --decode auto ~/tensorflow_datasets/mnist/3.0.1 0:3
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

def _choose(mode: str, ds, options):
    from ..display import choose_display

    try:
        return choose_display(mode, ds, storage_options=options)
    except (ValueError, ImportError) as e:
        raise CliError(f"--decode {mode}: {e}") from None


def _json_lines(display, ds, first: int, recs):
    """The records ``first, first + 1, ...`` as JSON lines; a record that
    does not decode is an error naming it and its shard."""
    for j, rec in enumerate(recs):
        try:
            yield display.json_bytes(rec)
        except (ValueError, TypeError) as e:
            path, local = ds.locate(first + j)
            raise CliError(f"record {first + j} ({path} record {local}): {e}") from None


def _cmd_cat(args) -> int:
    import numpy as np

    srcs, specs = _split_cat_args(args)
    options = storage_options(args)
    with open_dataset(srcs, options) as ds:
        n = len(ds)
        try:
            ranges = [parse_index_spec(s, n) for s in specs]
        except CliError as e:
            raise CliError(f"{' '.join(srcs)}: {e}") from None
        display = _choose(args.decode, ds, options) if args.decode else None
        out = sys.stdout.buffer
        sep = b"\n" if args.newline and display is None else None
        # Adaptive batch: many small records per call, few big ones, so a
        # range of 200 MiB records never holds more than a few in memory.
        batch = 1
        for r in ranges:
            i = r.start
            while i < r.stop:
                j = min(i + batch, r.stop)
                try:
                    recs = ds.__getitems__(np.arange(i, j, dtype=np.int64))
                except ArrayRecordError:
                    if j - i == 1:
                        raise
                    # A bad record in the batch: the ones before it are
                    # still written, then it fails on its own.
                    recs = (ds[k] for k in range(i, j))
                if display is not None:
                    recs = _json_lines(display, ds, i, recs)
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
        usage="%(prog)s [-h] [-n] [-i INDEX] [--decode FORMAT] SRC... INDEX...",
        description="Write the raw bytes of records (or, with --decode, one JSON object per record) to "
                    "standard output.", epilog=_CAT_EPILOG,
    )
    p.add_argument("items", nargs="+", metavar="SRC... INDEX...", help="sources, then indices (see below)")
    p.add_argument("-i", "--index", action="append", metavar="INDEX",
                   help="an index or range; repeatable; then all positionals are SRCs")
    p.add_argument("-n", "--newline", action="store_true",
                   help="write a newline after each record (JSON lines end in one already)")
    p.add_argument("--decode", choices=("auto", "example", "tfds", "msgpack", "json", "raw"), metavar="FORMAT",
                   help="print each record as one JSON object: auto, example, tfds, msgpack, json or raw (below)")
    kit.add_storage_option(p)
    p.set_defaults(func=_cmd_cat)
