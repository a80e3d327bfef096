"""Training-source throughput, checkpoint size and memory: arrayfs vs Grain vs datarax.

On the same shards (``--records`` records of 1,000 bytes, half random and
half zeros, ``group_size:1,zstd:3``, 8 shards written by arrayfs), shuffled,
batch 256, in one run:

* ``from_source(ArrayRecordSourceModule(...), 256)``: arrayfs, batches of
  ``uint8 (256, 1000)`` built on its prefetch thread;
* the floor: arrayfs's ``ArrayRecordDataSource.__getitems__`` alone on the
  same shuffled order (no pipeline), to show what the pipeline costs;
* ``grain.MapDataset.source(array_record ArrayRecordDataSource).shuffle(seed=0)
  .batch(256)``: Grain over Google's reader;
* datarax's ``ArrayRecordSourceModule(ArrayRecordSourceConfig(seed=0,
  shuffle_files=True))`` iterated as a module (``next(source)``, one record per
  call, as its ``__iter__`` offers; its ``Pipeline`` cannot drive this source
  in datarax 0.1.4) and stacked into batches of 256 the same way; also its
  batched ``get_batch_at`` for information. datarax pins clash with this
  environment, so it runs in a separate one (``--datarax-python``, default
  ``/tmp/datarax-venv/bin/python``; make it with ``python -m venv
  /tmp/datarax-venv && /tmp/datarax-venv/bin/pip install datarax``) on the same
  files; skipped, and said so, when that interpreter is missing.

Then the checkpoint size (``len(json.dumps(get_state()))``, bytes) of an
arrayfs source at N = 10^3 and N = 10^7 records (a real 10-shard dataset of
one-byte records, ``group_size:65536``) after the same 500 elements, next to
datarax's at N = ``--records``; and the RSS of a fresh process iterating
``--rss-epochs`` epochs of the shards through ``from_source`` (resident set at
each epoch's end and the peak).

Rates are the best of ``--rounds`` rounds of ``--seconds`` each; ratios are
arrayfs / other (> 1: arrayfs faster). Targets: >= 10x datarax, >= 3x Grain.

    .venv/bin/python benchmarks/bench_source.py [--quick] [--dir DIR] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import dump_json, machine_info, print_table, time_for  # noqa: E402

import arrayfs  # noqa: E402

BATCH = 256
RECORD_BYTES = 1000
NUM_SHARDS = 8
TINY_SHARDS = 10


def write_bench_shards(directory: str, records: int) -> list[str]:
    paths = [os.path.join(directory, f"bench-{k:05d}-of-{NUM_SHARDS:05d}.array_record")
             for k in range(NUM_SHARDS)]
    marker = os.path.join(directory, f"bench-{records}.done")
    if os.path.exists(marker):
        return paths
    rng = np.random.default_rng(0)
    bounds = np.linspace(0, records, NUM_SHARDS + 1).astype(int)
    zeros = bytes(RECORD_BYTES // 2)
    for k, path in enumerate(paths):
        with arrayfs.ArrayRecordWriter(path, "group_size:1,zstd:3") as w:
            for _ in range(bounds[k], bounds[k + 1]):
                w.write(rng.integers(0, 256, RECORD_BYTES // 2, dtype=np.uint8).tobytes() + zeros)
    open(marker, "w").close()
    return paths


def write_sized(directory: str, name: str, total: int, shards: int, options: str) -> str:
    """``shards`` files of one-byte records, ``total`` in all; returns the glob."""
    pattern = os.path.join(directory, f"{name}-*.array_record")
    marker = os.path.join(directory, f"{name}.done")
    if os.path.exists(marker):
        return pattern
    bounds = np.linspace(0, total, shards + 1).astype(int)
    for k in range(shards):
        path = os.path.join(directory, f"{name}-{k:05d}-of-{shards:05d}.array_record")
        with arrayfs.ArrayRecordWriter(path, options) as w:
            write = w.write
            for _ in range(bounds[k], bounds[k + 1]):
                write(b"x")
    open(marker, "w").close()
    return pattern


def warm_page_cache(paths) -> None:
    for p in paths:
        with open(p, "rb") as f:
            while f.read(1 << 22):
                pass


def bench_arrayfs(paths, seconds, rounds):
    from arrayfs.nnx import ArrayRecordSourceConfig, ArrayRecordSourceModule, from_source

    config = ArrayRecordSourceConfig(seed=0, shuffle_files=True, shard_index=0, shard_count=1)
    pipe = from_source(ArrayRecordSourceModule(config, paths), BATCH, prefetch=2)
    first = next(pipe)
    assert first["data"].shape == (BATCH, RECORD_BYTES) and first["data"].dtype == np.uint8
    with pipe:
        return time_for("arrayfs from_source", lambda k: next(pipe), BATCH,
                        min_seconds=seconds, rounds=rounds)


def bench_floor(paths, seconds, rounds):
    """The dataset alone on the same shuffled order: what the pipeline adds is the
    gap to this (indices, batching into one array, prefetch hand-off)."""
    from arrayfs.nnx.shuffle import epoch_permutation

    ds = arrayfs.ArrayRecordDataSource(paths)
    perm = epoch_permutation(len(ds), 0, 0)
    per_epoch = len(ds) // BATCH

    def step(k):
        k %= per_epoch
        ds.__getitems__(perm(np.arange(k * BATCH, (k + 1) * BATCH)))

    with ds:
        return time_for("dataset __getitems__", step, BATCH, min_seconds=seconds, rounds=rounds)


def bench_grain(paths, seconds, rounds):
    try:
        import grain
        from array_record.python.array_record_data_source import ArrayRecordDataSource
    except ImportError as exc:
        return None, f"not measured: {exc}"
    source = ArrayRecordDataSource(paths)
    dataset = grain.MapDataset.source(source).shuffle(seed=0).batch(BATCH)

    def batches():
        while True:  # one pass is len(dataset) batches; start another if a round needs it
            yield from dataset

    it = batches()
    first = next(it)
    shape = getattr(first, "shape", None)
    t = time_for("grain MapDataset", lambda k: next(it), BATCH, min_seconds=seconds, rounds=rounds)
    return t, f"batch: {type(first).__name__} {shape}"


DATARAX_SCRIPT = textwrap.dedent("""
    import gc, json, sys, time, warnings
    warnings.filterwarnings("ignore")
    import numpy as np
    from datarax.sources import ArrayRecordSourceConfig, ArrayRecordSourceModule
    paths, seconds, rounds, batch = json.loads(sys.argv[1])
    source = ArrayRecordSourceModule(ArrayRecordSourceConfig(seed=0, shuffle_files=True), paths)

    def iterate_batch():
        # The module's own iteration: one record per next(), then stacked.
        return np.stack([np.frombuffer(next(source), np.uint8) for _ in range(batch)])

    start = [0]
    def indexed_batch():
        out = source.get_batch_at(start[0], batch)
        start[0] += batch
        return np.stack([np.frombuffer(r, np.uint8) for r in out])

    def best_rate(step):
        step()
        best = 0.0
        for _ in range(rounds):
            gc.collect()
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                step()
                n += 1
            best = max(best, n / (time.perf_counter() - t0))
        return best

    import datarax
    out = {"version": datarax.__version__,
           "iterate_batches_per_s": best_rate(iterate_batch),
           "get_batch_at_batches_per_s": best_rate(indexed_batch),
           "shape": list(iterate_batch().shape)}
    out["checkpoint_bytes"] = len(json.dumps(source.get_state(), default=str))
    out["num_records"] = len(source)
    print(json.dumps(out))
""")


def bench_datarax(python, paths, seconds, rounds):
    if not python or not os.path.exists(python):
        return None, (f"not measured: no interpreter at {python!r} (python -m venv /tmp/datarax-venv && "
                      "/tmp/datarax-venv/bin/pip install datarax)")
    arg = json.dumps([paths, seconds, rounds, BATCH])
    res = subprocess.run([python, "-c", DATARAX_SCRIPT, arg], capture_output=True, text=True,
                         timeout=1800, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    if res.returncode != 0:
        return None, "failed: " + res.stderr.strip().splitlines()[-1] if res.stderr.strip() else "failed"
    return json.loads(res.stdout.strip().splitlines()[-1]), None


def checkpoint_bytes(pattern, elements=500) -> tuple[int, int, dict]:
    from arrayfs.nnx import ArrayRecordSourceConfig, ArrayRecordSourceModule

    config = ArrayRecordSourceConfig(seed=0, shuffle_files=True, shard_index=0, shard_count=1)
    with ArrayRecordSourceModule(config, pattern) as src:
        for _ in range(elements):
            next(src)
        state = src.get_state()
        return len(json.dumps(state)), src.num_records, state


RSS_SCRIPT = textwrap.dedent("""
    import json, resource, sys, time
    import psutil
    from arrayfs.nnx import ArrayRecordSourceConfig, ArrayRecordSourceModule, from_source
    paths, epochs, batch = json.loads(sys.argv[1])
    proc = psutil.Process()
    config = ArrayRecordSourceConfig(seed=0, shuffle_files=True, num_epochs=epochs,
                                     shard_index=0, shard_count=1)
    src = ArrayRecordSourceModule(config, paths)
    rss, t0, epoch = [], time.perf_counter(), 0
    with from_source(src, batch, prefetch=2) as pipe:
        for b in pipe:
            if src.epoch.get_value() != epoch:
                rss.append(proc.memory_info().rss)
                epoch = src.epoch.get_value()
        rss.append(proc.memory_info().rss)  # the last epoch, before close() unmaps the shards
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"rss_per_epoch": rss, "peak": peak, "seconds": time.perf_counter() - t0}))
""")


def rss_over_epochs(paths, epochs):
    arg = json.dumps([paths, epochs, BATCH])
    res = subprocess.run([sys.executable, "-c", RSS_SCRIPT, arg], capture_output=True, text=True,
                         timeout=3600)
    if res.returncode != 0:
        raise RuntimeError(res.stderr)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=3.0, help="length of one timed round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rss-epochs", type=int, default=10)
    parser.add_argument("--big", type=int, default=10**7, help="N of the large checkpoint dataset")
    parser.add_argument("--datarax-python", default="/tmp/datarax-venv/bin/python")
    parser.add_argument("--dir", help="keep the shards here and reuse them on the next run")
    parser.add_argument("--quick", action="store_true",
                        help="20k records, 1 s rounds, 3 RSS epochs, N = 10^6 for the large checkpoint")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    if args.quick:
        args.records, args.seconds, args.rss_epochs, args.big = 20_000, 1.0, 3, 10**6

    workdir = args.dir or tempfile.mkdtemp(prefix="arrayfs-bench-source-")
    os.makedirs(workdir, exist_ok=True)
    try:
        return run(args, workdir)
    finally:
        if not args.dir:
            shutil.rmtree(workdir, ignore_errors=True)


def run(args, workdir) -> int:
    print(f"machine: {machine_info()}")
    t = time.perf_counter()
    paths = write_bench_shards(workdir, args.records)
    print(f"shards: {NUM_SHARDS} x ~{args.records // NUM_SHARDS} records of {RECORD_BYTES} bytes, "
          f"group_size:1,zstd:3, {sum(map(os.path.getsize, paths)) / 1e6:.1f} MB "
          f"({time.perf_counter() - t:.1f} s to write or find)")
    warm_page_cache(paths)

    ours = bench_arrayfs(paths, args.seconds, args.rounds)
    floor = bench_floor(paths, args.seconds, args.rounds)
    grain_t, grain_note = bench_grain(paths, args.seconds, args.rounds)
    datarax, datarax_note = bench_datarax(args.datarax_python, paths, args.seconds, args.rounds)

    ours_bps = ours.rate / BATCH
    rows = [["arrayfs from_source(ArrayRecordSourceModule)", f"{ours_bps:.1f}", f"{ours.rate:,.0f}", "1.00x"]]
    figures = {"machine": machine_info(), "records": args.records, "batch": BATCH,
               "arrayfs_batches_per_s": ours_bps, "dataset_floor_batches_per_s": floor.rate / BATCH}
    rows.append(["  (floor: arrayfs ArrayRecordDataSource.__getitems__ alone)", f"{floor.rate / BATCH:.1f}",
                 f"{floor.rate:,.0f}", f"{ours.rate / floor.rate:.2f}x"])
    if grain_t is not None:
        g = grain_t.rate / BATCH
        rows.append(["grain MapDataset.source(array_record).shuffle().batch()", f"{g:.1f}",
                     f"{grain_t.rate:,.0f}", f"{ours_bps / g:.2f}x"])
        figures["grain_batches_per_s"] = g
    if datarax is not None:
        d_it, d_ix = datarax["iterate_batches_per_s"], datarax["get_batch_at_batches_per_s"]
        rows.append([f"datarax {datarax['version']} ArrayRecordSourceModule, next() x {BATCH}",
                     f"{d_it:.2f}", f"{d_it * BATCH:,.0f}", f"{ours_bps / d_it:.1f}x"])
        rows.append([f"datarax {datarax['version']} get_batch_at (batched, no state)",
                     f"{d_ix:.2f}", f"{d_ix * BATCH:,.0f}", f"{ours_bps / d_ix:.1f}x"])
        figures["datarax"] = datarax
    print()
    print(f"Shuffled batches of {BATCH} x {RECORD_BYTES} bytes, best of {args.rounds} x {args.seconds:.0f} s:")
    print_table(rows, ["pipeline", "batches/s", "records/s", "arrayfs is"])
    if grain_note:
        print(f"grain: {grain_note}")
    if datarax_note:
        print(f"datarax: {datarax_note}")
    if grain_t is not None:
        ratio = ours_bps / figures["grain_batches_per_s"]
        print(f"target >= 3x Grain: {ratio:.2f}x {'MET' if ratio >= 3 else 'NOT MET'}")
    if datarax is not None:
        ratio = ours_bps / datarax["iterate_batches_per_s"]
        print(f"target >= 10x datarax: {ratio:.1f}x {'MET' if ratio >= 10 else 'NOT MET'}")

    print()
    small_dir = os.path.join(workdir, "small")
    big_dir = os.path.join(workdir, "big")
    os.makedirs(small_dir, exist_ok=True)
    os.makedirs(big_dir, exist_ok=True)
    t = time.perf_counter()
    small = write_sized(small_dir, "n1000", 1000, 1, "group_size:1,zstd:3")
    big = write_sized(big_dir, f"n{args.big}", args.big, TINY_SHARDS, "group_size:65536,zstd:3")
    print(f"checkpoint datasets ready in {time.perf_counter() - t:.1f} s")
    small_bytes, small_n, _ = checkpoint_bytes(small)
    big_bytes, big_n, big_state = checkpoint_bytes(big)
    print(f"arrayfs checkpoint after 500 elements: N = {small_n:,}: {small_bytes} bytes; "
          f"N = {big_n:,}: {big_bytes} bytes ({'equal' if small_bytes == big_bytes else 'NOT EQUAL'})")
    print(f"  {json.dumps(big_state)}")
    figures["checkpoint_bytes"] = {str(small_n): small_bytes, str(big_n): big_bytes}
    if datarax is not None:
        print(f"datarax checkpoint at N = {datarax['num_records']:,}: {datarax['checkpoint_bytes']:,} bytes "
              "(holds the whole shuffled index list)")

    print()
    rss = rss_over_epochs(paths, args.rss_epochs)
    per = rss["rss_per_epoch"]
    mib = [f"{r / 2**20:.1f}" for r in per]
    print(f"RSS over {args.rss_epochs} epochs ({args.rss_epochs * args.records:,} records, "
          f"{rss['seconds']:.1f} s): at each epoch's end (MiB) {', '.join(mib)}; "
          f"peak {rss['peak'] / 2**20:.1f} MiB; epoch 1 -> {len(per)}: "
          f"{(per[-1] - per[0]) / 2**20:+.1f} MiB")
    figures["rss"] = rss
    if args.json:
        dump_json(args.json, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
