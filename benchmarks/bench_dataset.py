"""Sharded ArrayRecordDataSource: arrayfs against Google's array_record (issue 3).

One run prints a table of ratios against
``array_record.python.array_record_data_source.ArrayRecordDataSource``:

* open 1,000 small shards (target: ours <= 1x theirs),
* open 16 shards of 200,000 16-byte records (target: <= 0.2x theirs;
  they decode every footer index at open),
* 64 shards, group_size 1, zstd:3, 1,000-byte records: random ``ds[i]``
  (>= 3x faster), ``__getitems__`` of 256 random indices (>= 4x), in-order
  iteration (>= 1.5x),
* random ``ds[i]`` against the same calls for one record at a time (the
  chunk copied out of its map, both hashes, the frame decompressed;
  target <= 1.3),
* our random-batch time over the bare work on the same frames -- HighwayHash
  of each chunk header and chunk data plus zstd decompression of its values
  frame, frames located in advance -- on one thread (for reference) and on
  both cores as the libraries allow (target <= 1.3).

All shards are written once by Google's ``ArrayRecordWriter`` into
``--cache-dir`` (default ``/tmp/arrayfs-bench-cache``) and reused. Times are
wall-clock (``time.perf_counter``); each figure is the median of
``--repeats`` runs, ours and theirs interleaved (order alternating) so that
load from other processes on a shared machine hits both alike. Files are in
the page cache (written or read just before): this measures the readers, not
the disk.

    .venv/bin/python benchmarks/bench_dataset.py [--quick] [--json OUT]
    .venv/bin/python benchmarks/bench_dataset.py --profile getitems   # cProfile of ours
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import itertools
import json
import logging
import os
import platform
import pstats
import statistics
import sys
import time

import numpy as np
import zstandard

import arrayfs
from arrayfs.file import ArrayRecordFile
from arrayfs.riegeli.chunk import read_chunk
from arrayfs.riegeli.hashing import highway_hash64
from arrayfs.riegeli.varint import read_varint

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_reader  # noqa: E402  (its single-read floor)
from _common import map_file  # noqa: E402

try:
    from array_record.python import array_record_data_source as google_ds
    from array_record.python import array_record_module as google
except ImportError:  # pragma: no cover
    sys.exit("bench_dataset needs Google's array-record wheel (pip install array-record)")

logging.getLogger("absl").setLevel(logging.CRITICAL)

# -- data sets, written once by Google's writer ------------------------------------------


def _record_1000(rng) -> bytes:
    # Text-like: 16 symbols, so zstd:3 roughly halves it (a realistic payload).
    return (rng.integers(0, 16, 1000, dtype=np.uint8) + 65).tobytes()


def build(cache: str, name: str, shards: int, records: int, options: str, make) -> list[str]:
    """``shards`` files of ``records`` records each under ``cache/name``;
    reused when a previous run completed them. Returns the paths in order."""
    d = os.path.join(cache, name)
    paths = [os.path.join(d, f"data.array_record-{k:05d}-of-{shards:05d}") for k in range(shards)]
    done = os.path.join(d, ".complete")
    if os.path.exists(done):
        return paths
    os.makedirs(d, exist_ok=True)
    t = time.perf_counter()
    for k, p in enumerate(paths):
        rng = np.random.default_rng(k)
        w = google.ArrayRecordWriter(p, options)
        for i in range(records):
            w.write(make(rng, k, i))
        w.close()
    with open(done, "w") as f:
        f.write(options)
    size = sum(os.path.getsize(p) for p in paths)
    print(f"  wrote {name}: {shards} x {records:,} records, {size / 2**20:,.0f} MiB in {time.perf_counter() - t:.1f} s",
          file=sys.stderr)
    return paths


def warm_page_cache(paths):
    for p in paths:
        with open(p, "rb") as f:
            while f.read(1 << 22):
                pass


# -- timing ---------------------------------------------------------------------------------


def interleaved(repeats: int, ours, theirs, floor=None, floor2=None) -> dict:
    """Median wall time of each callable over ``repeats`` rounds, alternating
    which of ours/theirs runs first."""
    times = {"ours": [], "theirs": [], "floor": [], "floor2": []}
    for r in range(repeats):
        pair = [("ours", ours), ("theirs", theirs)]
        if r % 2:
            pair.reverse()
        for name, fn in pair + ([("floor", floor)] if floor else []) + ([("floor2", floor2)] if floor2 else []):
            gc.collect()
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items() if v} | {"all": times}


def google_source(paths):
    return google_ds.ArrayRecordDataSource(list(paths))


def close_google(ds):
    ds.__exit__(None, None, None)


# -- the floor: hash + decompress of the same frames ------------------------------------------


class Floor:
    """The bare work behind reading records of group_size-1 zstd chunks:
    HighwayHash-64 of the 32 hashed header bytes and of the chunk data, and
    one zstd decompression of the values frame. Chunks are located and
    sliced (zero copy, from the files' mmaps) beforehand."""

    def __init__(self, paths):
        self.files = [ArrayRecordFile(p) for p in paths]
        self.maps = [map_file(p) for p in paths]
        self.firsts = np.concatenate([[0], np.cumsum([f.num_records for f in self.files])])
        self.dctx = zstandard.ZstdDecompressor()
        self.dctx2 = zstandard.ZstdDecompressor()  # one per thread
        self.pool = None

    def frames(self, indices):
        out = []
        for i in np.asarray(indices).tolist():
            k = int(np.searchsorted(self.firsts, i, side="right")) - 1
            f, mm = self.files[k], self.maps[k]
            off = int(f.index()[0][i - int(self.firsts[k])])
            header, data, _ = read_chunk(mm, off, verify=False)
            assert data[0] == ord("z") and header.num_records == 1
            sizes_len, pos = read_varint(data, 1)
            size, fpos = read_varint(data, pos + sizes_len)
            head = bytes(mm[off + 8 : off + 40])
            out.append((head, data, data[fpos:], size))
        return out

    def run(self, frames):
        h, dec = highway_hash64, self.dctx.decompress
        n = 0
        for head, data, frame, size in frames:
            h(head)
            h(data)
            n += len(dec(frame, size))
        return n

    def run2(self, frames):
        """The same calls on both cores, as the libraries allow (as
        ``bench_reader.two_core_floor`` for one-record chunks): a second
        thread decompresses 85% of the frames in one
        ``multi_decompress_to_buffer`` call, the GIL released throughout,
        while this thread hashes every chunk and decompresses the rest; a
        hand-off per 1 KB call costs more than the call. The call takes
        the frames where they lie, in the files' maps (a list of views): no
        gathering."""
        if self.pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self.pool = ThreadPoolExecutor(1)
        mine = len(frames) - int(len(frames) * 0.85)
        rest = frames[mine:]
        listed = [fr[2] for fr in rest]
        sizes = np.fromiter((fr[3] for fr in rest), dtype=np.uint64, count=len(rest)).tobytes()

        def helper():
            return self.dctx2.multi_decompress_to_buffer(listed, decompressed_sizes=sizes, threads=0)

        fut = self.pool.submit(helper)
        h, dec = highway_hash64, self.dctx.decompress
        for head, data, _, _ in frames:
            h(head)
            h(data)
        recs = [dec(fr[2], fr[3]) for fr in frames[:mine]]
        out = fut.result()
        recs += [out[i].tobytes() for i in range(len(out))]  # one bytes object per record, as a reader returns
        return len(recs)

    def close(self):
        for f in self.files:
            f.close()


# -- the measurements -----------------------------------------------------------------------------


def bench_open(paths, repeats, label):
    """Open time (constructor only) for the same path list; also ours from a glob."""
    pattern = os.path.join(os.path.dirname(paths[0]), "data.array_record-*")
    opened = []

    def ours():
        opened.append(arrayfs.ArrayRecordDataSource(paths))

    def theirs():
        opened.append(google_source(paths))

    res = interleaved(repeats, ours, theirs)
    counts = {len(ds) for ds in opened}
    assert len(counts) == 1, f"record counts differ: {counts}"
    total = counts.pop()
    for ds in opened:
        ds.close() if isinstance(ds, arrayfs.ArrayRecordDataSource) else close_google(ds)
    globbed = []
    for _ in range(repeats):
        t = time.perf_counter()
        ds = arrayfs.ArrayRecordDataSource(pattern)
        globbed.append(time.perf_counter() - t)
        assert len(ds) == total
        ds.close()
    res["ours_glob"] = statistics.median(globbed)
    res["label"] = label
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller data sets and fewer repeats")
    ap.add_argument("--json", metavar="OUT", help="write the results as JSON to OUT")
    ap.add_argument("--cache-dir", default="/tmp/arrayfs-bench-cache")
    ap.add_argument("--repeats", type=int, default=None, help="rounds per measurement (default 7, quick 3)")
    ap.add_argument("--profile", choices=["open_small", "open_big", "single", "getitems", "iterate"],
                    help="after the run, cProfile ours on this measurement and print the top functions")
    args = ap.parse_args(argv)
    quick = args.quick
    repeats = args.repeats or (3 if quick else 7)
    cache = args.cache_dir

    # data sets
    small_n = 1000
    big_shards, big_records = (16, 50_000) if quick else (16, 200_000)
    main_shards, main_records = (64, 500) if quick else (64, 5_000)
    print("data sets (Google's writer; cached):", file=sys.stderr)
    small = build(cache, f"small-{small_n}x10", small_n, 10, "group_size:1",
                  lambda rng, k, i: b"%05d:%05d......" % (k, i))
    big = build(cache, f"big-{big_shards}x{big_records}", big_shards, big_records, "group_size:1",
                lambda rng, k, i: (k * 1_000_000 + i).to_bytes(8, "little") * 2)
    mainp = build(cache, f"main-{main_shards}x{main_records}-zstd3-1000B", main_shards, main_records,
                  "group_size:1,zstd:3", lambda rng, k, i: _record_1000(rng))
    for ps in (small, big, mainp):
        warm_page_cache(ps)

    results = {}
    rows = []

    # 1. open
    r = bench_open(small, repeats, "open 1,000 small shards")
    results["open_small"] = r
    rows.append(("open: 1,000 shards x 10 records", r["ours"], r["theirs"], r["ours"] / r["theirs"], "<= 1.0 (ours/theirs)",
                 r["ours"] / r["theirs"] <= 1.0))
    r = bench_open(big, repeats, f"open {big_shards} shards x {big_records:,} records")
    results["open_big"] = r
    rows.append((f"open: {big_shards} shards x {big_records:,} records", r["ours"], r["theirs"], r["ours"] / r["theirs"],
                 "<= 0.2 (ours/theirs)", r["ours"] / r["theirs"] <= 0.2))

    # 2. reads on the 64-shard set
    ours = arrayfs.ArrayRecordDataSource(mainp)
    theirs = google_source(mainp)
    n = len(ours)
    assert n == len(theirs) == main_shards * main_records
    # warm: every shard's index and reader, both sides; and a correctness check
    firsts = [s.first_index for s in ours.shards]
    assert ours.__getitems__(firsts) == theirs.__getitems__(firsts)
    for i in firsts:
        assert ours[i] == theirs[i]
    rng = np.random.default_rng(0)

    # random single reads
    singles = rng.integers(0, n, 1000 if quick else 3000).tolist()
    assert [ours[i] for i in singles[:200]] == [theirs[i] for i in singles[:200]]

    def single(ds):
        def run():
            for i in singles:
                ds[i]
        return run

    floor = Floor(mainp)
    single_frames = floor.frames(singles)

    def single_floor():
        bench_reader.single_floor(single_frames, range(len(single_frames)))

    r = interleaved(repeats, single(ours), single(theirs), single_floor)
    r["per_read_us"] = {k: r[k] / len(singles) * 1e6 for k in ("ours", "theirs", "floor")}
    results["single"] = r
    rows.append(("random ds[i] (us per read)", r["per_read_us"]["ours"], r["per_read_us"]["theirs"],
                 r["theirs"] / r["ours"], ">= 3 (theirs/ours)", r["theirs"] / r["ours"] >= 3))
    rows.append(("random ds[i] / single-read floor (us per read)", r["per_read_us"]["ours"],
                 r["per_read_us"]["floor"], r["ours"] / r["floor"], "<= 1.3 (ours/floor)",
                 r["ours"] / r["floor"] <= 1.3))

    # random batches of 256
    nb = 40 if quick else 100
    batches = [rng.integers(0, n, 256) for _ in range(nb)]
    assert ours.__getitems__(batches[0]) == theirs.__getitems__(batches[0].tolist())
    lists = [b.tolist() for b in batches]
    frames = [floor.frames(b) for b in batches]

    def batch_ours():
        for b in batches:
            ours.__getitems__(b)

    def batch_theirs():
        for b in lists:
            theirs.__getitems__(b)

    def batch_floor():
        for f in frames:
            floor.run(f)

    def batch_floor2():
        for f in frames:
            floor.run2(f)

    r = interleaved(repeats, batch_ours, batch_theirs, batch_floor, batch_floor2)
    r["per_batch_ms"] = {k: r[k] / nb * 1e3 for k in ("ours", "theirs", "floor", "floor2")}
    results["getitems"] = r
    rows.append(("__getitems__ 256 random (ms per batch)", r["per_batch_ms"]["ours"], r["per_batch_ms"]["theirs"],
                 r["theirs"] / r["ours"], ">= 4 (theirs/ours)", r["theirs"] / r["ours"] >= 4))
    # The goal is against the floor that uses both cores (issue 19); the
    # one-thread floor is for reference.
    rows.append(("random batch / bare hash+zstd floor (ms)", r["per_batch_ms"]["ours"], r["per_batch_ms"]["floor"],
                 r["ours"] / r["floor"], "info (ours/floor)", True))
    rows.append(("random batch / 2-core floor (ms)", r["per_batch_ms"]["ours"], r["per_batch_ms"]["floor2"],
                 r["ours"] / r["floor2"], "<= 1.3 (ours/floor)", r["ours"] / r["floor2"] <= 1.3))

    # in-order iteration (a prefix of the data set: Google's iterates one ds[i] at a time)
    m = min(n, 20_000 if quick else 60_000)

    def iterate(ds):
        def run():
            for _ in itertools.islice(iter(ds), m):
                pass
        return run

    head_ours = list(itertools.islice(iter(ours), 500))
    assert head_ours == [theirs[i] for i in range(500)]
    r = interleaved(repeats, iterate(ours), iterate(theirs))
    r["records_per_s"] = {k: m / r[k] for k in ("ours", "theirs")}
    results["iterate"] = r
    rows.append((f"in-order iteration, {m:,} records (s)", r["ours"], r["theirs"], r["theirs"] / r["ours"],
                 ">= 1.5 (theirs/ours)", r["theirs"] / r["ours"] >= 1.5))

    # table
    print()
    print(f"arrayfs {arrayfs.__version__} vs array_record {getattr(google_ds, '__version__', '0.8.6')}; "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; median of {repeats}; "
          f"{'quick' if quick else 'full'} data sets")
    w = max(len(r[0]) for r in rows)
    print(f"{'measurement':<{w}}  {'ours':>10}  {'theirs':>10}  {'ratio':>8}  {'target':<22} ok")
    for name, a, b, ratio, target, ok in rows:
        unit_a = f"{a:10.4f}" if a < 100 else f"{a:10.1f}"
        unit_b = f"{b:10.4f}" if b < 100 else f"{b:10.1f}"
        print(f"{name:<{w}}  {unit_a}  {unit_b}  {ratio:8.3f}  {target:<22} {'yes' if ok else 'NO'}")
    print(f"(open rows in s; ours from a glob pattern: {results['open_small']['ours_glob']:.4f} s and "
          f"{results['open_big']['ours_glob']:.4f} s; 'theirs' in the floor row is the floor)")

    if args.json:
        out = {
            "machine": {"cpus": os.cpu_count(), "loadavg": os.getloadavg(), "python": platform.python_version()},
            "quick": quick,
            "repeats": repeats,
            "rows": [
                {"measurement": name, "ours": a, "theirs_or_floor": b, "ratio": ratio, "target": target, "ok": ok}
                for name, a, b, ratio, target, ok in rows
            ],
            "raw": results,
        }
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2, default=float)

    if args.profile:
        what = {
            "open_small": lambda: arrayfs.ArrayRecordDataSource(small).close(),
            "open_big": lambda: arrayfs.ArrayRecordDataSource(big).close(),
            "single": single(ours),
            "getitems": batch_ours,
            "iterate": iterate(ours),
        }[args.profile]
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(3):
            what()
        prof.disable()
        print(f"\ncProfile of ours, {args.profile} x 3 (main thread only):")
        pstats.Stats(prof).sort_stats("tottime").print_stats(15)

    ours.close()
    close_google(theirs)
    floor.close()
    return rows


if __name__ == "__main__":
    main()
