"""Timing helpers shared by the benchmarks.

Every timing is wall-clock (``time.perf_counter``) in this one process, the
best of several rounds (the least disturbed by the rest of the machine).
Rates are items (records, bytes) per second; a ratio ``ours / theirs`` above
1 means arrayfs is faster.

The JSON a benchmark writes with ``--json OUT`` (read by ``plot.py``, which
draws one panel per area, and by ``run_all.py``, which prints every row with
its goal) is one object::

    {
      "machine": {...} | "text",      # machine_info() or a description
      "date": "2026-12-06",           # optional (the file's mtime otherwise)
      "bench": "remote",              # optional: the area (default: the file
                                      #   name: reader, dataset, writer, source,
                                      #   mount, remote, tfds, transpose, scale)
      "rows": [
        {
          "name": "S3, random batches of 256",   # or "measurement"/"workload"
          "peer": "naive reader",     # what it is compared with ("floor: ..."
                                      #   for a floor row: hatched in the plot)
          "ours": 37.6, "theirs": 12.7, "unit": "rec/s",   # optional figures
          "ratio": 2.97,              # ours / theirs as the target reads it
          "target": ">= 20",          # or "<= 1.3 (ours/floor)"; no target:
                                      #   not a headline row (no bar)
          "higher_is_better": true    # optional; default from the target
        }
      ]
    }

``bench_reader.py``/``bench_writer.py`` rows add ``kind``/``label``/
``status``, ``bench_dataset.py`` rows use ``measurement`` and
``theirs_or_floor``; ``plot.py`` reads those, ``bench_source.py``'s and
``bench_mount.py``'s own keys too. A row comparing unlike things (a remote
figure against a local one) must carry no target: it is a cost, not a goal.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field

__all__ = ["Timing", "best_time", "time_for", "machine_info", "print_table", "dump_json", "fmt_rate"]


@dataclass
class Timing:
    """Best-of-rounds time of one workload of ``items`` items (records)."""

    name: str
    seconds: float
    items: int
    rounds: int
    all_seconds: list = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Items per second of the best round."""
        return self.items / self.seconds if self.seconds > 0 else float("inf")

    @property
    def per_item_us(self) -> float:
        return 1e6 * self.seconds / self.items if self.items else float("nan")

    def as_dict(self) -> dict:
        d = asdict(self)
        d["rate"] = self.rate
        d["per_item_us"] = self.per_item_us
        return d


def best_time(name: str, fn, items: int, *, rounds: int = 3, warmup: bool = True, setup=None) -> Timing:
    """Run ``fn()`` (one workload of ``items`` items) ``rounds`` times after an
    optional warm-up and return the best. ``setup()``, if given, runs before
    each round, untimed. The garbage collector is paused while timing."""
    if warmup:
        if setup is not None:
            setup()
        fn()
    times = []
    for _ in range(rounds):
        if setup is not None:
            setup()
        gc.collect()
        gc.disable()
        try:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        finally:
            gc.enable()
    return Timing(name, min(times), items, rounds, times)


def time_for(name: str, step, items_per_step: int, *, min_seconds: float = 1.0, rounds: int = 3) -> Timing:
    """Call ``step(k)`` for k = 0, 1, ... until ``min_seconds`` pass (one
    round); best round of ``rounds``, as a rate per item."""
    best = None
    all_rates = []
    for _ in range(rounds):
        gc.collect()
        k = 0
        t0 = time.perf_counter()
        while True:
            step(k)
            k += 1
            elapsed = time.perf_counter() - t0
            if elapsed >= min_seconds:
                break
        t = Timing(name, elapsed, k * items_per_step, 1)
        all_rates.append(t.rate)
        if best is None or t.rate > best.rate:
            best = t
    best.rounds = rounds
    best.all_seconds = [best.items / r for r in all_rates]
    return best


def fmt_rate(rate: float, unit: str = "rec/s") -> str:
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if rate >= div:
            return f"{rate / div:.2f}{suffix} {unit}"
    return f"{rate:.1f} {unit}"


def machine_info() -> dict:
    info = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cpu": platform.processor() or "",
    }
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    from importlib import metadata

    for dist in ("numpy", "zstandard", "array-record", "arrayfs", "highwayhash-cffi"):
        try:
            info[dist.replace("-", "_")] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            info[dist.replace("-", "_")] = None
    try:
        info["load_average"] = os.getloadavg()
    except OSError:
        pass
    return info


def print_table(rows, headers) -> None:
    """Plain fixed-width table; ``rows`` are sequences of already formatted cells."""
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    line = "  ".join(str(h).ljust(w) for h, w in zip(headers, widths))
    print(line)
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))


def dump_json(path: str, payload: dict) -> None:
    with open(path, "w") as f:
        json.dump(payload, f, indent=2, default=lambda o: o.as_dict() if hasattr(o, "as_dict") else str(o))
        f.write("\n")


def map_file(path):
    """A read-only mmap of ``path``: the floor loops slice chunks out of it
    with no read call, so that they time hashing and decompression alone."""
    import mmap

    with open(path, "rb") as f:
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
