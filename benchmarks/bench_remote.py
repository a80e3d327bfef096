"""arrayfs on object storage: a real S3-protocol server on loopback (moto in
server mode) behind a proxy that adds ``--latency`` seconds (default 20 ms)
to every request, as a distant bucket would.

Uploads ``--shards`` shards (default 64) of ``--records`` 1,000-byte records
each, ``group_size:1,zstd:3``, then measures in one run:

* open: requests and seconds to open all shards (goal: at most 2 requests
  per shard, overlapped);
* random batches of 256 (cold: the block cache is emptied before each):
  arrayfs ``__getitems__`` against one ranged request per record issued
  serially (how a naive reader works), and against the same data read
  locally (goal: >= 20x the serial baseline);
* in-order iteration: records/s remote against local (goal: within 2x of
  local; read-ahead hides the latency).

The S3 server (``moto_server``) and the proxy each run in a process of
their own, so that neither takes the benchmark's GIL.

    .venv/bin/python benchmarks/bench_remote.py [--quick] [--latency 0.02] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, HERE)

from _common import dump_json, machine_info  # noqa: E402
from _s3server import start_s3  # noqa: E402

_PROXY_CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[2])
from _s3server import FaultProxy
p = FaultProxy(sys.argv[1])
print(p.endpoint, flush=True)
for line in sys.stdin:
    cmd, _, arg = line.strip().partition(" ")
    if cmd == "reset":
        p.reset()
    elif cmd == "latency":
        p.latency = float(arg)
    elif cmd == "stats":
        with p._lock:
            print(json.dumps({"requests": p.requests, "gets": p.gets}), flush=True)
            continue
    print("ok", flush=True)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto() -> tuple:
    """``moto_server`` on loopback in its own process: ``(process, endpoint)``."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            urllib.request.urlopen(endpoint + "/", timeout=1)
            break
        except OSError:
            time.sleep(0.05)
    return proc, endpoint


class ProxyProcess:
    """``tests/_s3server.FaultProxy`` in a child process, driven over a pipe."""

    def __init__(self, upstream: str):
        self.proc = subprocess.Popen([sys.executable, "-c", _PROXY_CHILD, upstream, os.path.join(HERE, "..", "tests")],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.endpoint = self.proc.stdout.readline().strip()

    def _ask(self, line: str) -> str:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline()

    def reset(self) -> None:
        self._ask("reset")

    def set_latency(self, seconds: float) -> None:
        self._ask(f"latency {seconds}")

    def stats(self) -> dict:
        return json.loads(self._ask("stats"))

    def stop(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=10)

import arrayfs  # noqa: E402
from arrayfs.storage import remote as remote_mod  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="16 shards of 500 records")
    ap.add_argument("--shards", type=int, default=64)
    ap.add_argument("--records", type=int, default=1000, help="records per shard")
    ap.add_argument("--latency", type=float, default=0.02, help="seconds added to every request")
    ap.add_argument("--batches", type=int, default=10)
    ap.add_argument("--json", help="write results here")
    args = ap.parse_args(argv)
    if args.quick:
        args.shards, args.records, args.batches = 16, 500, 5
    print(machine_info())
    moto, endpoint = start_moto()
    os.environ["ARRAYFS_TEST_S3_ENDPOINT"] = endpoint
    server = start_s3()
    proxy = ProxyProcess(server.endpoint)
    fs = server.filesystem()
    bucket = server.make_bucket("arrayfs-bench")
    rng = np.random.default_rng(0)
    workdir = tempfile.mkdtemp(prefix="arrayfs-bench-remote-")
    local = []
    for k in range(args.shards):
        path = os.path.join(workdir, f"train-{k:05d}-of-{args.shards:05d}.array_record")
        with arrayfs.ArrayRecordWriter(path, "group_size:1") as w:
            for _ in range(args.records):
                w.write(rng.bytes(500) + bytes(500))
        fs.put_file(path, f"{bucket}/train/{os.path.basename(path)}")
        local.append(path)
    pattern = f"s3://{bucket}/train/train-*.array_record"
    opts = {"endpoint_url": proxy.endpoint}
    proxy.set_latency(args.latency)
    results = {"latency_s": args.latency, "shards": args.shards, "records_per_shard": args.records}
    rows = []

    # -- open ------------------------------------------------------------------
    proxy.reset()
    remote_mod.BLOCK_CACHE.clear()
    t0 = time.perf_counter()
    ds = arrayfs.ArrayRecordDataSource(pattern, storage_options=opts)
    t_open = time.perf_counter() - t0
    st = proxy.stats()
    req = sum(st["requests"].values())
    per_object = [v for k, v in st["gets"].items() if k.endswith(".array_record")]
    most = max(per_object) if per_object else 0
    results["open"] = {"seconds": t_open, "requests": req, "requests_per_shard": req / args.shards,
                       "by_method": st["requests"], "most_gets_per_object": most}
    rows.append((f"open: requests per shard ({req} in all, by method {st['requests']})",
                 f"{req / args.shards:.2f}", "<= 2", req <= 2 * args.shards + 1))
    rows.append(("open: seconds (serial would be >= "
                 f"{args.shards * args.latency:.1f} s)", f"{t_open:.2f}", "overlapped",
                 t_open < args.shards * args.latency))
    n = len(ds)
    loc = arrayfs.ArrayRecordDataSource(local)

    # -- random batches of 256 -----------------------------------------------------
    batches = [rng.integers(0, n, 256) for _ in range(args.batches)]
    t_remote = 0.0
    for b in batches:
        remote_mod.BLOCK_CACHE.clear()
        t0 = time.perf_counter()
        got = ds.__getitems__(b)
        t_remote += time.perf_counter() - t0
        assert got == loc.__getitems__(b)
    t0 = time.perf_counter()
    for b in batches:
        loc.__getitems__(b)
    t_local = time.perf_counter() - t0
    # The naive reader: one ranged request per record, one after another.
    snap = loc.snapshot()
    rfs = server.filesystem(proxy.endpoint)
    naive_n = min(64, 256 * args.batches)
    idx = batches[0][:naive_n]
    t0 = time.perf_counter()
    for i in idx.tolist():
        k = snap.shard_of(i)
        f = snap.file(k)
        local_i = i - int(snap.firsts[k])
        a, e = f.chunk_span(local_i)
        rfs.cat_file(f"{bucket}/train/{os.path.basename(local[k])}", start=a, end=e)
    t_naive = (time.perf_counter() - t0) / naive_n * 256 * args.batches
    # The floor: the same chunks' byte ranges as one concurrent fsspec call
    # per batch (s3fs gathers them on its event loop), no decoding: what
    # this store, through this proxy, can serve at best.
    t_floor = 0.0
    for b in batches:
        paths, starts, ends = [], [], []
        for i in b.tolist():
            k = snap.shard_of(i)
            a, e = snap.file(k).chunk_span(i - int(snap.firsts[k]))
            paths.append(f"{bucket}/train/{os.path.basename(local[k])}")
            starts.append(a)
            ends.append(e)
        t0 = time.perf_counter()
        rfs.cat_ranges(paths, starts, ends)
        t_floor += time.perf_counter() - t0
    recs = 256 * args.batches
    r_remote, r_local, r_naive = recs / t_remote, recs / t_local, recs / t_naive
    r_floor = recs / t_floor
    results["batches"] = {"remote_rps": r_remote, "local_rps": r_local, "serial_naive_rps": r_naive,
                          "floor_rps": r_floor}
    rows.append(("random batch of 256: vs serial naive", f"{r_remote / r_naive:.1f}x", ">= 20x",
                 r_remote / r_naive >= 20))
    rows.append(("random batch of 256: arrayfs time / floor time (concurrent fsspec cat_ranges)",
                 f"{t_remote / t_floor:.2f}", "<= 1.3", t_remote / t_floor <= 1.3))
    rows.append(("random batch of 256: remote / local", f"{r_remote / r_local:.3f}x", "info", None))

    # -- in-order iteration --------------------------------------------------------
    remote_mod.BLOCK_CACHE.clear()
    t0 = time.perf_counter()
    count = sum(1 for _ in ds)
    t_iter_remote = time.perf_counter() - t0
    t0 = time.perf_counter()
    count_local = sum(1 for _ in loc)
    t_iter_local = time.perf_counter() - t0
    assert count == count_local == n
    # Its floor: every shard's bytes fetched at once (fsspec, concurrent), then
    # the same iteration over local copies: transfer plus decoding, no overlap.
    t0 = time.perf_counter()
    rfs.cat([f"{bucket}/train/{os.path.basename(p)}" for p in local])
    t_fetch = time.perf_counter() - t0
    results["iteration"] = {"remote_rps": n / t_iter_remote, "local_rps": n / t_iter_local,
                            "fetch_all_s": t_fetch}
    ratio = t_iter_remote / t_iter_local
    rows.append(("in-order iteration: remote time / local time", f"{ratio:.2f}", "<= 2", ratio <= 2))
    rows.append(("in-order iteration: remote time / (fetch every shard concurrently + local time)",
                 f"{t_iter_remote / (t_fetch + t_iter_local):.2f}", "<= 1.3",
                 t_iter_remote / (t_fetch + t_iter_local) <= 1.3))

    print(f"\n{args.shards} shards x {args.records} records of 1,000 B, {args.latency * 1000:.0f} ms per request")
    print(f"random batches: remote {r_remote:,.0f} rec/s, local {r_local:,.0f} rec/s, "
          f"serial naive {r_naive:,.1f} rec/s, floor (concurrent ranged GETs alone) {r_floor:,.0f} rec/s")
    print(f"iteration: remote {n / t_iter_remote:,.0f} rec/s, local {n / t_iter_local:,.0f} rec/s")
    print()
    w = max(len(r[0]) for r in rows)
    for name, value, goal, ok in rows:
        verdict = "" if ok is None else ("met" if ok else "MISSED")
        print(f"{name:<{w}}  {value:>10}  goal {goal:<10} {verdict}")
    results["printed"] = [{"name": r[0], "value": r[1], "goal": r[2], "met": r[3]} for r in rows]
    # Rows against a peer, in the form benchmarks/plot.py reads.
    results["rows"] = [
        {"name": "S3, random batches of 256 (rec/s)", "peer": "naive reader (a request per record)",
         "ours": r_remote, "theirs": r_naive, "ratio": r_remote / r_naive, "target": ">= 20"},
        {"name": "S3, random batches of 256 (s)", "peer": "floor: concurrent ranged GETs", "unit": "s",
         "ours": t_remote, "theirs": t_floor, "ratio": t_remote / t_floor, "target": "<= 1.3"},
        {"name": "S3, random batches of 256 (rec/s)", "peer": "arrayfs on local disk",
         "ours": r_remote, "theirs": r_local, "ratio": r_remote / r_local},
        {"name": "S3, in-order iteration (s)", "peer": "arrayfs on local disk", "unit": "s",
         "ours": t_iter_remote, "theirs": t_iter_local, "ratio": ratio, "target": "<= 2"},
    ]
    if args.json:
        dump_json(args.json, results)
    ds.close()
    loc.close()
    proxy.stop()
    server.stop()
    moto.terminate()
    moto.wait(timeout=10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
