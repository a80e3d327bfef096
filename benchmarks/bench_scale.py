"""How arrayfs and Google's array_record scale, side by side in one run.

Two tables, each at three sizes, every measurement in its own child process
(so that peak RSS, ``ru_maxrss``, and the descriptors held belong to it):

* many shards: 10^2, 10^3 and 10^4 shards of 10 small records
  (``--shards``), opened as one data source (arrayfs's
  ``ArrayRecordDataSource``, Google's ``array_record_data_source``):
  open time, the first random read, 2,000 random reads after it, peak RSS,
  and the descriptors the process holds at the end;
* big shards: one ``group_size:1`` shard of 10^5, 10^6 and 10^7 records of 8
  bytes (``--records``): open time, the first random read (arrayfs decodes
  its footer index then), the mean of 100 random reads after it, and peak
  RSS, for arrayfs's ``ArrayRecordReader`` and Google's.

* the NNX source over a virtual dataset of 10^3, 10^6 and 10^8 records
  (``--source-records``; record ``i`` computed on read, so no index and no
  data): construction time, first batch of 256, peak RSS and checkpoint
  bytes, which must not depend on N.

Between consecutive sizes each row prints the growth ratio (10x the size: a
ratio near 10 is linear growth, above it super-linear). The writer's table
(peak RSS and ``close()`` time at 10^5..10^7 records) is
``bench_writer.py --scale``; ``--writer`` runs it here too.

    .venv/bin/python benchmarks/bench_scale.py [--quick] [--dir DIR] [--json OUT] [--writer] [--markdown OUT]

``--markdown`` writes the printed tables, with the machine and date, as the
page ``docs/benchmarks.md`` includes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _common import dump_json, machine_info  # noqa: E402

SOURCE_CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[2])
from _counting import CountingSource
from arrayfs.nnx import ArrayRecordSourceConfig, ArrayRecordSourceModule, Pipeline
n = int(sys.argv[1])
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t0 = time.perf_counter()
config = ArrayRecordSourceConfig(seed=0, num_epochs=1, shuffle_files=True, shard_index=3, shard_count=8)
p = Pipeline(source=ArrayRecordSourceModule(config, CountingSource(n)), stages=[], batch_size=256, prefetch=0)
built = time.perf_counter() - t0
t0 = time.perf_counter()
next(p)
first = time.perf_counter() - t0
state = json.dumps(p.get_state())
print(json.dumps({"construct_s": built, "first_batch_s": first, "state_bytes": len(state),
                  "peak_rss_over_imports_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base}))
"""

CHILD = r"""
import json, os, random, resource, sys, time
which, kind, path, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
out = {}
t0 = time.perf_counter()
if kind == "shards":
    if which == "arrayfs":
        import arrayfs
        t0 = time.perf_counter()
        ds = arrayfs.ArrayRecordDataSource(path)
    else:
        from array_record.python import array_record_data_source as g
        import glob
        files = sorted(glob.glob(path))
        t0 = time.perf_counter()
        ds = g.ArrayRecordDataSource(files)
    out["open_s"] = time.perf_counter() - t0
    n = len(ds)
    rng = random.Random(0)
    t0 = time.perf_counter()
    ds[rng.randrange(n)]
    out["first_read_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(2000):
        ds[rng.randrange(n)]
    out["reads_2000_s"] = time.perf_counter() - t0
else:
    if which == "arrayfs":
        import arrayfs
        t0 = time.perf_counter()
        r = arrayfs.ArrayRecordReader(path)
        read = lambda i: r[i]
        n = len(r)
    else:
        from array_record.python import array_record_module as g
        t0 = time.perf_counter()
        r = g.ArrayRecordReader(path)
        read = lambda i: r.read([i])[0]
        n = r.num_records()
    out["open_s"] = time.perf_counter() - t0
    rng = random.Random(0)
    t0 = time.perf_counter()
    read(rng.randrange(n))
    out["first_read_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(100):
        read(rng.randrange(n))
    out["next_read_ms"] = (time.perf_counter() - t0) * 10
out["n"] = n
out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
out["fds"] = len(os.listdir("/proc/self/fd"))
print(json.dumps(out))
"""


def run(which, kind, path, count) -> dict:
    p = subprocess.run([sys.executable, "-c", CHILD, which, kind, path, str(count)], capture_output=True, text=True,
                       timeout=3600)
    if p.returncode != 0:
        return {"error": (p.stderr.strip().splitlines() or [f"exit {p.returncode}"])[-1]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def warm(pattern: str) -> None:
    """Read every file of ``pattern`` once, so that both readers find them
    in the page cache (whichever runs first would otherwise pay the disk)."""
    import glob

    for path in glob.glob(pattern):
        with open(path, "rb") as f:
            while f.read(16 << 20):
                pass


def make_shards(d, n_shards: int) -> str:
    from array_record.python import array_record_module as g

    sub = os.path.join(d, f"shards-{n_shards}")
    if not os.path.isdir(sub):
        os.makedirs(sub + ".tmp", exist_ok=True)
        for k in range(n_shards):
            w = g.ArrayRecordWriter(os.path.join(sub + ".tmp", f"s-{k:05d}.array_record"), "group_size:1")
            for i in range(10):
                w.write(b"%05d:%d" % (k, i))
            w.close()
        os.rename(sub + ".tmp", sub)
    return os.path.join(sub, "s-*.array_record")


def make_big(d, n: int) -> str:
    import arrayfs

    path = os.path.join(d, f"big-{n}.array_record")
    if not os.path.exists(path):
        with arrayfs.ArrayRecordWriter(path + ".tmp", "group_size:1") as w:
            for i in range(n):
                w.write(b"%08d" % i)
        os.rename(path + ".tmp", path)
    return path


def fmt(v, unit):
    if v is None:
        return "-"
    if unit == "s":
        return f"{v:.3f} s"
    if unit == "ms":
        return f"{v:.3f} ms"
    if unit == "MB":
        return f"{v:.0f} MB"
    return f"{v:.0f}"


def table(title, sizes, results, metrics) -> list:
    lines = [f"\n== {title}"]
    head = f"{'':<28}" + "".join(f"{s:>14,}" for s in sizes) + "   growth per 10x"
    lines.append(head)
    for key, label, unit in metrics:
        for who in ("arrayfs", "google"):
            vals = [results[s][who].get(key) for s in sizes]
            errs = [results[s][who].get("error") for s in sizes]
            cells = "".join(f"{('ERR' if e else fmt(v, unit)):>14}" for v, e in zip(vals, errs))
            growth = []
            for a, b in zip(vals, vals[1:]):
                growth.append(f"{b / a:.1f}" if a and b else "-")
            lines.append(f"{label + ' ' + who:<28}{cells}   {' '.join(growth)}")
        if all(results[s]["google"].get(key) and results[s]["arrayfs"].get(key) for s in sizes) and unit in ("s", "ms"):
            ratios = " ".join(f"{results[s]['google'][key] / results[s]['arrayfs'][key]:.1f}x" for s in sizes)
            lines.append(f"{'  google / arrayfs':<28}{ratios:>{14 * len(sizes)}}")
    for s in sizes:
        for who in ("arrayfs", "google"):
            if results[s][who].get("error"):
                lines.append(f"  {who} at {s:,}: {results[s][who]['error']}")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="stop at 10^3 shards and 10^6 records")
    ap.add_argument("--dir", default=os.path.join("bench-out", "scale-data"), help="where the data sets go (kept)")
    ap.add_argument("--shards", type=int, nargs="+", default=[100, 1000, 10000])
    ap.add_argument("--records", type=int, nargs="+", default=[100_000, 1_000_000, 10_000_000])
    ap.add_argument("--source-records", type=int, nargs="+", default=[1000, 1_000_000, 100_000_000])
    ap.add_argument("--writer", action="store_true", help="also run bench_writer.py --scale")
    ap.add_argument("--json", help="write results here")
    ap.add_argument("--markdown", help="write the tables (and the writer's, with --writer) as markdown here")
    args = ap.parse_args(argv)
    if args.quick:
        args.shards = [s for s in args.shards if s <= 1000]
        args.records = [r for r in args.records if r <= 1_000_000]
    os.makedirs(args.dir, exist_ok=True)
    print(machine_info())
    results = {"shards": {}, "records": {}}
    for n in args.shards:
        pattern = make_shards(args.dir, n)
        warm(pattern)
        results["shards"][n] = {w: run(w, "shards", pattern, n) for w in ("arrayfs", "google")}
        print(f"{n} shards: {results['shards'][n]}", flush=True)
    for n in args.records:
        t0 = time.perf_counter()
        path = make_big(args.dir, n)
        if time.perf_counter() - t0 > 1:
            print(f"wrote {path} in {time.perf_counter() - t0:.0f} s", flush=True)
        warm(path)
        results["records"][n] = {w: run(w, "records", path, n) for w in ("arrayfs", "google")}
        print(f"{n} records: {results['records'][n]}", flush=True)
    lines = table("many shards of 10 records (data source)", args.shards, results["shards"], [
        ("open_s", "open", "s"), ("first_read_s", "first read", "s"), ("reads_2000_s", "2,000 reads", "s"),
        ("peak_rss_mb", "peak RSS", "MB"), ("fds", "descriptors", ""),
    ])
    lines += table("one group_size:1 shard of N 8-byte records (reader)", args.records, results["records"], [
        ("open_s", "open", "s"), ("first_read_s", "first read", "s"), ("next_read_ms", "random read", "ms"),
        ("peak_rss_mb", "peak RSS", "MB"),
    ])
    results["source"] = {}
    for n in args.source_records:
        p = subprocess.run([sys.executable, "-c", SOURCE_CHILD, str(n), os.path.join(HERE, "..", "tests")],
                           capture_output=True, text=True, timeout=600)
        results["source"][n] = (json.loads(p.stdout.strip().splitlines()[-1]) if p.returncode == 0
                                else {"error": (p.stderr.strip().splitlines() or ["?"])[-1]})
    lines.append("\n== NNX source, host 3 of 8, over a virtual dataset of N records (no index: its own cost)")
    lines.append(f"{'':<28}" + "".join(f"{n:>14,}" for n in args.source_records))
    for key, label, unit in (("construct_s", "construction", "s"), ("first_batch_s", "first batch of 256", "s"),
                             ("peak_rss_over_imports_mb", "peak RSS over imports", "MB"),
                             ("state_bytes", "checkpoint (JSON bytes)", "")):
        cells = "".join(f"{('ERR' if 'error' in r else fmt(r[key], unit)):>14}"
                        for r in (results["source"][n] for n in args.source_records))
        lines.append(f"{label:<28}{cells}")
    print("\n".join(lines))
    if args.json:
        dump_json(args.json, {"machine": machine_info(), **{k: {str(n): v for n, v in r.items()}
                                                            for k, r in results.items()}})
    if args.writer:
        p = subprocess.run([sys.executable, os.path.join(HERE, "bench_writer.py"), "--scale",
                            "--sizes", *map(str, args.records)], check=False, capture_output=True, text=True)
        print(p.stdout, end="")
        print(p.stderr, end="", file=sys.stderr)
        lines += ["", "== writer (bench_writer.py --scale)", *p.stdout.rstrip().splitlines()]
    if args.markdown:
        m = machine_info()
        with open(args.markdown, "w") as f:
            load = ", ".join(f"{x:.2f}" for x in m.get("load_average", ()))
            f.write(f"Measured {time.strftime('%Y-%m-%d', time.gmtime())} on {m.get('cpu_count', '?')} CPUs "
                    f"({m.get('cpu', '')}; load average at the end {load}), by "
                    f"`benchmarks/bench_scale.py{' --writer' if args.writer else ''}`; growth: the ratio "
                    f"between consecutive sizes (10x apart).\n\n```text\n")
            f.write("\n".join(line for line in lines if line is not None).strip("\n") + "\n```\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
