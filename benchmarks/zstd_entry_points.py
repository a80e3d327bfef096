"""The cheapest way to decompress a batch of small zstd frames from Python.

``python benchmarks/zstd_entry_points.py [--frames 256] [--size 1000] [--repeats 7]``

A batch of ``group_size:1`` records is ``--frames`` independent zstd frames
of about ``--size`` bytes decompressed. This times, for the same frames (the
median of ``--repeats`` rounds of 200 batches, as microseconds per frame):

* a plain loop of ``zstandard.ZstdDecompressor.decompress`` (with and
  without ``max_output_size``);
* ``multi_decompress_to_buffer`` on 0 and 2 threads, with its
  ``BufferWithSegments`` built from one buffer and an offsets array;
* a plain loop of ``backports.zstd`` / ``compression.zstd`` ``decompress``
  and of its ``ZstdDecompressor`` objects, and of ``pyzstd.decompress``,
  when installed;
* two threads each running the plain loop over half the frames.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time

import numpy as np
import zstandard


def make_frames(n: int, size: int):
    rng = np.random.default_rng(0)
    recs = []
    for _ in range(n):
        body = rng.integers(0, 32, size=size, dtype=np.uint8) + ord("A")
        body[:16] = rng.integers(0, 256, size=16, dtype=np.uint8)
        recs.append(body.tobytes())
    c = zstandard.ZstdCompressor(level=3)
    frames = [c.compress(r) for r in recs]
    return recs, frames


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=256)
    ap.add_argument("--size", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args(argv)
    recs, frames = make_frames(args.frames, args.size)
    buf = b"".join(frames)
    lengths = np.array([len(f) for f in frames], dtype=np.uint64)
    segs = np.empty((len(frames), 2), dtype=np.uint64)
    segs[:, 1] = lengths
    segs[:, 0] = np.cumsum(lengths) - lengths
    sizes = np.full(len(frames), args.size, dtype=np.uint64).tobytes()
    views = [memoryview(buf)[a : a + n] for a, n in segs.tolist()]
    size = args.size

    d = zstandard.ZstdDecompressor()
    dec = d.decompress

    def loop():
        return [dec(v) for v in views]

    def loop_max():
        return [dec(v, max_output_size=size) for v in views]

    def multi(threads):
        def run():
            bws = zstandard.BufferWithSegments(buf, segs.tobytes())
            r = d.multi_decompress_to_buffer(bws, decompressed_sizes=sizes, threads=threads)
            return [r[i].tobytes() for i in range(len(r))]
        return run

    cases = {"zstandard decompress loop": loop, "zstandard decompress(max_output_size) loop": loop_max,
             "multi_decompress_to_buffer threads=0": multi(0), "multi_decompress_to_buffer threads=2": multi(2)}
    try:
        try:
            from compression import zstd as czstd
        except ImportError:
            from backports import zstd as czstd
        cdec = czstd.decompress
        cases["backports.zstd decompress loop"] = lambda: [cdec(v) for v in views]

        def cobj():
            out = []
            for v in views:
                out.append(czstd.ZstdDecompressor().decompress(v))
            return out
        cases["backports.zstd ZstdDecompressor per frame"] = cobj
    except ImportError:
        pass
    try:
        import pyzstd

        pdec = pyzstd.decompress
        cases["pyzstd decompress loop"] = lambda: [pdec(v) for v in views]
    except ImportError:
        pass
    half = len(views) // 2

    def two_threads():
        out = [None, None]

        def run(j, part):
            dd = zstandard.ZstdDecompressor().decompress
            out[j] = [dd(v) for v in part]

        ts = [threading.Thread(target=run, args=(0, views[:half])), threading.Thread(target=run, args=(1, views[half:]))]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        return out[0] + out[1]

    cases["2 threads, zstandard loop each"] = two_threads
    for name, fn in cases.items():
        got = fn()
        assert got == recs, name
    rows = []
    for name, fn in cases.items():
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            for _ in range(200):
                fn()
            times.append((time.perf_counter() - t0) / (200 * len(frames)) * 1e6)
        rows.append((name, statistics.median(times)))
    base = rows[0][1]
    print(f"{args.frames} frames of {args.size} bytes ({int(lengths.mean())} compressed), us per frame, "
          f"median of {args.repeats}")
    for name, t in rows:
        print(f"  {name:46} {t:6.2f} us  {base / t:5.2f}x the plain loop")
    return 0


if __name__ == "__main__":
    sys.exit(main())
