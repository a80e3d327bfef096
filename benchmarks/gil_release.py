"""Which library calls release the GIL, and what two threads gain from them.

``python benchmarks/gil_release.py [--repeats 5] [--json OUT]``

For each call that arrayfs makes on its hot paths (zstd, brotli and snappy
decompression and compression, HighwayHash-64, ``pread``) and for the
candidate replacements that are installed (``backports.zstd`` /
``compression.zstd``, ``pyzstd``, ``brotlicffi``, ``cramjam``), on a 1 MB
and a 1 KB buffer, two measures, each the median of ``--repeats`` runs:

* **spinner**: a pure-Python counting loop runs in a second thread while the
  first thread makes the call over and over; its count is compared with the
  count it reaches alone in the same time. Near 1.0 the call releases the
  GIL (the spinner runs on the other core); near 0.5 or below it holds it.
* **2 threads**: the time of ``n`` calls on one thread against ``n`` calls on
  each of two threads at once, as ``2 * t1 / t2`` (2.0 is perfect scaling
  on 2 cores, 1.0 none).

The machine's other load moves both numbers: compare calls within one run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import dump_json, machine_info, print_table  # noqa: E402


def payload(n: int) -> bytes:
    """``n`` bytes that compress to about 70% (like the reader benchmark's records)."""
    rng = np.random.default_rng(0)
    body = rng.integers(0, 32, size=n, dtype=np.uint8) + ord("A")
    body[::64] = rng.integers(0, 256, size=len(body[::64]), dtype=np.uint8)
    return body.tobytes()


def calls(size: int, fd: int) -> dict:
    """name -> factory of a zero-argument callable doing one call on a
    ``size``-byte buffer (each thread makes its own: zstandard's
    (de)compressor objects are not thread-safe)."""
    data = payload(size)
    out = {}
    import zstandard

    frame = zstandard.ZstdCompressor(level=3).compress(data)

    def zdec():
        d = zstandard.ZstdDecompressor().decompress
        return lambda: d(frame, max_output_size=size)

    def zcom():
        c = zstandard.ZstdCompressor(level=3).compress
        return lambda: c(data)

    out["zstandard decompress"] = zdec
    out["zstandard compress"] = zcom
    try:
        from compression import zstd as czstd  # Python 3.14
    except ImportError:
        try:
            from backports import zstd as czstd
        except ImportError:
            czstd = None
    if czstd is not None:
        out["backports.zstd decompress"] = _same(lambda: czstd.decompress(frame))
        out["backports.zstd compress"] = _same(lambda: czstd.compress(data, 3))
    try:
        import pyzstd

        out["pyzstd decompress"] = _same(lambda: pyzstd.decompress(frame))
        out["pyzstd compress"] = _same(lambda: pyzstd.compress(data, 3))
    except ImportError:
        pass
    import brotli

    bframe = brotli.compress(data, quality=6)
    out["brotli decompress"] = _same(lambda: brotli.decompress(bframe))
    if size <= 4096:
        out["brotli compress"] = _same(lambda: brotli.compress(data, quality=6))
    try:
        import brotlicffi

        out["brotlicffi decompress"] = _same(lambda: brotlicffi.decompress(bframe))
    except ImportError:
        pass
    import snappy

    sframe = snappy.compress(data)
    out["python-snappy decompress"] = _same(lambda: snappy.uncompress(sframe))
    out["python-snappy compress"] = _same(lambda: snappy.compress(data))
    try:
        import cramjam

        out["cramjam snappy raw decompress"] = _same(lambda: cramjam.snappy.decompress_raw(sframe))
    except ImportError:
        pass
    from arrayfs.riegeli.hashing import highway_hash64

    out["highwayhash-cffi hash64"] = _same(lambda: highway_hash64(data))
    out["os.pread"] = _same(lambda: os.pread(fd, size, 0))
    return out


def _same(fn):
    """A factory for a call with no state of its own (thread-safe)."""
    return lambda: fn


def spinner_share(make, seconds: float) -> float:
    """Count of a pure-Python loop while ``fn`` runs in a loop on another
    thread, over its count alone for the same time."""

    def spin(stop, box):
        k = 0
        while not stop.is_set():
            for _ in range(1000):
                k += 1
        box.append(k)

    def alone():
        box, stop = [], threading.Event()
        t = threading.Thread(target=spin, args=(stop, box))
        t.start()
        time.sleep(seconds)
        stop.set()
        t.join()
        return box[0]

    def beside():
        fn = make()
        box, stop = [], threading.Event()
        t = threading.Thread(target=spin, args=(stop, box))
        t.start()
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            fn()
        stop.set()
        t.join()
        return box[0]

    base = alone()
    return beside() / base if base else float("nan")


def two_thread_speedup(make, n: int) -> float:
    def run():
        fn = make()
        for _ in range(n):
            fn()

    t0 = time.perf_counter()
    run()
    t1 = time.perf_counter() - t0
    ts = [threading.Thread(target=run) for _ in range(2)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    t2 = time.perf_counter() - t0
    return 2 * t1 / t2


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=0.3, help="spinner window per repeat")
    ap.add_argument("--json", metavar="OUT")
    args = ap.parse_args(argv)
    sys.setswitchinterval(0.005)
    info = machine_info()
    print(f"gil_release: {info['cpu']} x{info['cpu_count']}, load {os.getloadavg()[0]:.1f}")
    results = []
    with tempfile.NamedTemporaryFile(prefix="arrayfs-gil-") as tmp:
        tmp.write(payload(1 << 20))
        tmp.flush()
        for size, label in ((1 << 20, "1 MB"), (1 << 10, "1 KB")):
            for name, make in calls(size, tmp.fileno()).items():
                fn = make()
                fn()
                t0 = time.perf_counter()
                fn()
                per_call = max(time.perf_counter() - t0, 1e-7)
                n = max(20, int(0.15 / per_call))
                shares = [spinner_share(make, args.seconds) for _ in range(args.repeats)]
                speedups = [two_thread_speedup(make, n) for _ in range(args.repeats)]
                row = {"call": name, "buffer": label, "spinner": statistics.median(shares),
                       "two_threads": statistics.median(speedups), "us_per_call": per_call * 1e6}
                results.append(row)
                print(f"  {label:5} {name:32} spinner {row['spinner']:.2f}  2 threads {row['two_threads']:.2f}x",
                      flush=True)
    print()
    print_table([(r["call"], r["buffer"], f"{r['us_per_call']:.1f}", f"{r['spinner']:.2f}",
                  f"{r['two_threads']:.2f}x",
                  "released" if r["spinner"] > 0.75 else "held" if r["spinner"] < 0.6 else "partly")
                 for r in results],
                ["call", "buffer", "us/call", "spinner share", "2 threads", "GIL"])
    if args.json:
        dump_json(args.json, {"machine": info, "rows": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
