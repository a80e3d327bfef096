"""What reading through a map gains over ``pread``, on one file, one run.

``python benchmarks/bench_mapping.py [--records 100000] [--rounds 5]``

Writes ``--records`` records of 1,000 bytes (``group_size:1,zstd:3``) and
opens the file twice, once with ``ARRAYFS_MMAP=never`` semantics
(``pread`` and an ``fstat`` identity check per read or batch) and once
mapped (a read lease here, or the mode the file system allows), then times,
alternating the two in each round: 20,000 random ``reader[i]`` and 100
random batches of 256. Prints the median CPU time (user + system, steadier
than wall time on a shared machine) per read and per batch, and the ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import arrayfs  # noqa: E402
from arrayfs.file import ArrayRecordFile  # noqa: E402
from arrayfs.storage.local import LocalFile  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="arrayfs-bench-map-") as d:
        path = os.path.join(d, "m.array_record")
        rng = np.random.default_rng(0)
        w = arrayfs.ArrayRecordWriter(path, "group_size:1")
        for _ in range(args.records):
            w.write((rng.integers(0, 32, 1000, dtype=np.uint8) + 65).tobytes())
        w.close()
        files = {m: ArrayRecordFile(LocalFile(path, mmap=m)) for m in ("never", "auto")}
        mode = files["auto"]._source.map_mode
        singles = rng.integers(0, args.records, 20_000).tolist()
        batches = [rng.integers(0, args.records, 256) for _ in range(100)]
        res = {(m, w): [] for m in files for w in ("single", "batch")}
        for f in files.values():
            f.read_records(batches[0])
        for _ in range(args.rounds):
            for m, f in files.items():
                t = time.process_time()
                for i in singles:
                    f.read_record(i)
                res[m, "single"].append((time.process_time() - t) / len(singles) * 1e6)
                t = time.process_time()
                for b in batches:
                    f.read_records(b)
                res[m, "batch"].append((time.process_time() - t) / len(batches) * 1e3)
        print(f"{args.records} records of 1,000 B, group_size:1; mapped mode here: {mode}; "
              f"median CPU time of {args.rounds} rounds")
        for w, unit in (("single", "us per read"), ("batch", "ms per batch of 256")):
            p, m = statistics.median(res["never", w]), statistics.median(res["auto", w])
            print(f"  {w:6}  pread {p:7.2f}  mapped {m:7.2f}  {unit}   mapped is {p / m:.2f}x")
        for f in files.values():
            f.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
