"""arrayfs's ArrayRecordWriter vs Google's array_record writer, in one run.

Two parts:

* throughput (default): ``--mb`` MB (default 200; ``--quick``: 30) of
  1,000-byte records (the records of ``bench_reader.py``), written with
  ``group_size:1,zstd:3`` and ``group_size:1024,zstd:3`` by Google's
  ``ArrayRecordWriter`` and by arrayfs's, both with default parallelism
  (Google's Python writer has no pool; arrayfs's compresses on one thread
  per CPU), then by arrayfs with ``max_parallelism:1`` (one thread, for
  the floor and the profile). Each row prints the
  rate, the ratio arrayfs / Google (> 1: arrayfs is faster) and the goal.
  A floor row gives arrayfs's one-thread time over the *Python floor*: the
  bare library calls no Python writer can avoid for the same chunks, one
  thread, nothing else (per chunk: the records joined, zstd on the values
  and on the sizes block (``group_size:1``: the values only; a one-record
  sizes block is the same for every record of a size), HighwayHash-64 of
  the compressed bytes and of a chunk header, and the compressed bytes
  written to a file through a 1 MiB buffer);
* ``--scale``: records of 8 to 100 bytes, ``group_size:1`` (one chunk per
  record: the footer holds one entry per record), 10^5, 10^6 and 10^7
  records (``--sizes``), each writer in its own subprocess. Prints for both
  writers the time in ``write()``, the time in ``close()``, the peak RSS of
  the process (``wait4``'s ``ru_maxrss``) and its growth over the RSS before
  the first record, and, between consecutive sizes, the ratio of each
  (10x the records: a ratio near 10 is linear growth).

    .venv/bin/python benchmarks/bench_writer.py [--quick] [--mb 200] [--rounds 3] [--json OUT] [--profile]
    .venv/bin/python benchmarks/bench_writer.py --scale [--sizes 100000 1000000 10000000] [--json OUT]
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import io
import json
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)

from _common import best_time, dump_json, fmt_rate, machine_info, print_table  # noqa: E402

import arrayfs  # noqa: E402
from arrayfs.riegeli.hashing import highway_hash64  # noqa: E402
from arrayfs.riegeli.varint import encode_varints  # noqa: E402

try:
    import zstandard
    from array_record.python import array_record_module as google
except ImportError as e:  # pragma: no cover
    sys.exit(f"bench_writer needs array-record and zstandard installed ({e})")

from bench_reader import RECORD_SIZE, make_records  # noqa: E402

TARGETS = {  # kind -> (comparison, threshold)
    "writer": (">=", 1.2),
    "writer/floor": ("<=", 1.3),
    "close": ("<=", 2.0),
    "rss": ("<=", 1.0),
}


def google_write(path, options, records):
    w = google.ArrayRecordWriter(path, options)
    write = w.write
    for r in records:
        write(r)
    w.close()


def our_write(path, options, records):
    w = arrayfs.ArrayRecordWriter(path, options)
    write = w.write
    for r in records:
        write(r)
    w.close()


def floor_write(path, records, group_size: int) -> None:
    """The Python floor: the library calls each chunk needs and nothing
    else (no chunk layout), on one thread: zstd, HighwayHash-64 of the
    compressed bytes and of a 32-byte header, and the compressed bytes
    written to ``path`` through a 1 MiB buffer."""
    params = zstandard.ZstdCompressionParameters.from_level(3, window_log=20, write_content_size=True)
    compress = zstandard.ZstdCompressor(compression_params=params).compress
    header = bytes(32)
    with open(path, "wb", buffering=1 << 20) as f:
        write = f.write
        if group_size == 1:
            for r in records:
                frame = compress(r)
                highway_hash64(frame)
                highway_hash64(header)
                write(frame)
            return
        for i in range(0, len(records), group_size):
            group = records[i : i + group_size]
            values = compress(b"".join(group))
            sizes = compress(encode_varints([len(r) for r in group]))
            highway_hash64(sizes + values)
            highway_hash64(header)
            write(sizes)
            write(values)


def remove(path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def ratio_row(name, ours: float, theirs: float, kind: str, unit: str = "rec/s"):
    ratio = ours / theirs if theirs else float("inf")
    cmp, target = TARGETS.get(kind, (None, None))
    status = ""
    if cmp == ">=":
        status = "ok" if ratio >= target else "MISSED"
    elif cmp == "<=":
        status = "ok" if ratio <= target else "MISSED"
    return {"name": name, "kind": kind, "ours": ours, "theirs": theirs, "ratio": ratio,
            "target": f"{cmp} {target:g}" if cmp else "", "status": status, "unit": unit}


def profile(fn, top: int) -> str:
    pr = cProfile.Profile()
    pr.enable()
    fn()
    pr.disable()
    s = io.StringIO()
    pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(top)
    return s.getvalue()


# -- throughput ------------------------------------------------------------------------


def bench_throughput(args, results) -> list:
    n = int(args.mb * 1e6 // RECORD_SIZE)
    records = make_records(n)
    workdir = args.dir or tempfile.mkdtemp(prefix="arrayfs-bench-writer-")
    os.makedirs(workdir, exist_ok=True)
    rows = []
    try:
        for label, options in (("group_size:1", "group_size:1,zstd:3"), ("group_size:1024", "group_size:1024,zstd:3")):
            group = int(label.split(":")[1])
            paths = {k: os.path.join(workdir, f"w-{k}.array_record") for k in ("google", "ours", "auto", "floor")}
            # Interleaved rounds (Google, arrayfs, arrayfs auto, floor, ...): a
            # burst of load elsewhere hits every writer alike.
            best: dict = {}
            runs = {
                "google": (google_write, paths["google"], options),
                "ours": (our_write, paths["ours"], options + ",max_parallelism:1"),
                "auto": (our_write, paths["auto"], options),  # default options: every core
            }
            cpu: dict = {}
            for _ in range(args.rounds):
                for key in ("google", "ours", "auto", "floor"):
                    if key == "floor":
                        fn = functools.partial(floor_write, paths["floor"], records, group)
                    else:
                        write, path, opts = runs[key]
                        fn = functools.partial(write, path, opts, records)
                    # Each writer makes a new file, as when writing shards: a
                    # file replaced or truncated in place costs the kernel more
                    # (ext4 flushes it on rename or close), which is no
                    # writer's doing.
                    remove(paths[key])
                    c0 = time.process_time()
                    t = best_time(f"{label} {key}", fn, n, rounds=1, warmup=False)
                    # CPU seconds of the whole process (every thread): on a
                    # loaded machine, a check on the one-thread wall times.
                    cpu[key] = min(cpu.get(key, float("inf")), time.process_time() - c0)
                    if key not in best or t.seconds < best[key].seconds:
                        best[key] = t
            g = google.ArrayRecordReader(paths["ours"])
            assert g.num_records() == n and g.read([0, n - 1]) == [records[0], records[-1]]
            g.close()
            t_g, t_o, t_a, t_f = best["google"], best["ours"], best["auto"], best["floor"]
            cores = os.cpu_count() or 1
            rows.append(ratio_row(f"{label}: writer, default options (arrayfs on {cores} threads)", t_a.rate,
                                  t_g.rate, "writer"))
            rows.append(ratio_row(f"{label}: writer, max_parallelism:1 (one thread, both)", t_o.rate, t_g.rate,
                                  "info"))
            rows.append(ratio_row(f"{label}: writer time / Python floor time", t_o.seconds, t_f.seconds,
                                  "writer/floor", unit="s"))
            rows.append(ratio_row(f"{label}: CPU time, arrayfs / Google (max_parallelism:1)", cpu["ours"],
                                  cpu["google"], "info", unit="s"))
            rows.append(ratio_row(f"{label}: CPU time, arrayfs / Python floor", cpu["ours"], cpu["floor"], "info",
                                  unit="s"))
            print(f"  {label}: google {fmt_rate(t_g.rate)}, arrayfs {fmt_rate(t_o.rate)}, "
                  f"arrayfs auto {fmt_rate(t_a.rate)}, floor {fmt_rate(t_f.rate)}", flush=True)
            results[f"writer {label}"] = {
                "timings": [t.as_dict() for t in (t_g, t_o, t_a, t_f)],
                "cpu_seconds": cpu,
                "sizes": {k: os.path.getsize(p) for k, p in paths.items()},
            }
            if args.profile:
                remove(paths["ours"])
                print(f"\n== cProfile of arrayfs's writer, {label}, max_parallelism:1\n")
                print(profile(functools.partial(our_write, paths["ours"], options, records), args.profile_top))
            for p in paths.values():
                remove(p)
    finally:
        if not args.dir:
            shutil.rmtree(workdir, ignore_errors=True)
    return rows


# -- scale: one subprocess per writer and size ------------------------------------------------

_CHILD = r"""
import json, os, resource, sys, time
import numpy as np
which, path, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
if which == "google":
    from array_record.python.array_record_module import ArrayRecordWriter
else:
    from arrayfs import ArrayRecordWriter
rng = np.random.default_rng(0)
# 4,096 distinct records of 8 to 100 bytes, written in turn: nothing the
# benchmark holds grows with n.
pool = [rng.integers(0, 64, int(k), dtype=np.uint8).tobytes() for k in rng.integers(8, 101, 4096)]
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
w = ArrayRecordWriter(path, "group_size:1")
write = w.write
for i in range(n):
    write(pool[i & 4095])
t1 = time.perf_counter()
w.close()
t2 = time.perf_counter()
print(json.dumps({"write_s": t1 - t0, "close_s": t2 - t1, "rss0_kb": rss0, "bytes": os.path.getsize(path)}))
"""


def run_child(which: str, path: str, n: int) -> dict:
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, which, path, str(n)], stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"{which} writer of {n} records failed ({proc.returncode})")
    res = json.loads(out)
    res["peak_rss_kb"] = usage.ru_maxrss
    os.unlink(path)
    return res


def bench_scale(args, results) -> list:
    workdir = args.dir or tempfile.mkdtemp(prefix="arrayfs-bench-scale-")
    os.makedirs(workdir, exist_ok=True)
    runs: dict = {}
    rows = []
    try:
        for n in args.sizes:
            for which in ("google", "arrayfs"):
                r = run_child(which, os.path.join(workdir, f"scale-{which}.array_record"), n)
                runs[(which, n)] = r
                print(f"  {n:>11,} records  {which:<8} write {r['write_s']:7.2f} s  close {r['close_s']:6.3f} s  "
                      f"peak RSS {r['peak_rss_kb'] / 1024:7.1f} MB (+{(r['peak_rss_kb'] - r['rss0_kb']) / 1024:.1f} MB "
                      f"over start)  file {r['bytes'] / 1e6:.0f} MB", flush=True)
            g, o = runs[("google", n)], runs[("arrayfs", n)]
            rows.append(ratio_row(f"scale {n:,} group_size:1: write()", n / o["write_s"], n / g["write_s"], "info"))
            rows.append(ratio_row(f"scale {n:,} group_size:1: close() time", o["close_s"], g["close_s"], "close",
                                  unit="s"))
            rows.append(ratio_row(f"scale {n:,} group_size:1: peak RSS", o["peak_rss_kb"], g["peak_rss_kb"], "rss",
                                  unit="KB"))
    finally:
        if not args.dir:
            shutil.rmtree(workdir, ignore_errors=True)
    table = []
    for n in args.sizes:
        for which in ("google", "arrayfs"):
            r = runs[(which, n)]
            table.append((f"{n:,}", which, f"{r['write_s']:.2f} s", f"{r['close_s']:.3f} s",
                          f"{r['peak_rss_kb'] / 1024:.0f} MB", f"{(r['peak_rss_kb'] - r['rss0_kb']) / 1024:.0f} MB",
                          f"{(r['peak_rss_kb'] - r['rss0_kb']) * 1024 / n:.1f}"))
    print("\n== scale: group_size:1, records of 8-100 bytes (RSS growth = peak - RSS before the first record)\n")
    print_table(table, ["records", "writer", "write()", "close()", "peak RSS", "RSS growth", "growth B/record"])
    growth = []
    for a, b in zip(args.sizes, args.sizes[1:]):
        for which in ("google", "arrayfs"):
            ra, rb = runs[(which, a)], runs[(which, b)]
            da = ra["peak_rss_kb"] - ra["rss0_kb"]
            db = rb["peak_rss_kb"] - rb["rss0_kb"]
            # A growth under 4 MB is lost in the allocator's noise: no ratio.
            growth_ratio = f"{db / da:.1f}" if da >= 4096 else f"- (+{da / 1024:.0f} -> +{db / 1024:.0f} MB)"
            growth.append((f"{a:,} -> {b:,} (x{b / a:g})", which, f"{rb['write_s'] / ra['write_s']:.1f}",
                           f"{rb['close_s'] / max(ra['close_s'], 1e-9):.1f}",
                           f"{rb['peak_rss_kb'] / ra['peak_rss_kb']:.2f}", growth_ratio))
    print("\n== growth between sizes (a ratio near the size ratio is linear)\n")
    print_table(growth, ["sizes", "writer", "write() time", "close() time", "peak RSS", "RSS growth"])
    results["scale"] = {f"{w} {n}": r for (w, n), r in runs.items()}
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=200.0, help="MB of 1,000-byte records (default 200)")
    ap.add_argument("--quick", action="store_true", help="30 MB, and --scale stops at 10^6 records")
    ap.add_argument("--rounds", type=int, default=3, help="timing rounds, best taken (default 3)")
    ap.add_argument("--scale", action="store_true", help="the 10^5..10^7-record memory and close() table")
    ap.add_argument("--sizes", type=int, nargs="+", default=None, help="record counts for --scale")
    ap.add_argument("--dir", default=None, help="where to write the files (default: a temporary directory)")
    ap.add_argument("--json", metavar="OUT", help="write the results as JSON to OUT")
    ap.add_argument("--profile", action="store_true", help="cProfile arrayfs's one-thread writer")
    ap.add_argument("--profile-top", type=int, default=25)
    args = ap.parse_args(argv)
    if args.quick:
        args.mb = min(args.mb, 30.0)
    if args.sizes is None:
        args.sizes = [10**5, 10**6] if args.quick else [10**5, 10**6, 10**7]

    info = machine_info()
    results: dict = {"machine": info, "args": vars(args), "record_size": RECORD_SIZE}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    results["load_before"] = load
    print(f"arrayfs bench_writer: machine {info['cpu']} x{info['cpu_count']}, python {info['python']}, "
          f"array_record {info['array_record']}, zstandard {info['zstandard']}, load {load:.1f}")
    if load > (os.cpu_count() or 1) * 0.75:
        print(f"warning: load average {load:.1f} on {os.cpu_count()} CPUs: other work competes, timings are noisy")
    if args.scale:
        rows = bench_scale(args, results)
    else:
        print(f"{int(args.mb * 1e6 // RECORD_SIZE)} records of {RECORD_SIZE} bytes", flush=True)
        rows = bench_throughput(args, results)

    print("\n== results (ratio = arrayfs / Google, > 1 faster; for time, size and floor rows, arrayfs / peer, "
          "< 1 better)\n")
    table = []
    for r in rows:
        if r["unit"] == "s":
            ours, theirs = f"{r['ours'] * 1e3:.1f} ms", f"{r['theirs'] * 1e3:.1f} ms"
        elif r["unit"] == "KB":
            ours, theirs = f"{r['ours'] / 1024:.0f} MB", f"{r['theirs'] / 1024:.0f} MB"
        else:
            ours, theirs = fmt_rate(r["ours"]), fmt_rate(r["theirs"])
        table.append((r["name"], theirs, ours, f"{r['ratio']:.2f}x", r["target"], r["status"]))
    print_table(table, ["workload", "Google / floor", "arrayfs", "ratio", "target", ""])
    results["rows"] = rows
    missed = [r for r in rows if r["status"] == "MISSED"]
    print(f"\n{len(missed)} target(s) missed" + (": " + ", ".join(r["name"] for r in missed) if missed else ""))
    results["load_after"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if args.json:
        dump_json(args.json, results)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
