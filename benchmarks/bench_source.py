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
  environment, so it runs in a separate one, one timed round per request so
  that its rounds take turns with the others' (``--datarax-python``, default
  ``/tmp/datarax-venv/bin/python``; make it with ``python -m venv
  /tmp/datarax-venv && /tmp/datarax-venv/bin/pip install datarax``) on the same
  files; skipped, and said so, when that interpreter is missing.

Then the checkpoint size (``len(json.dumps(get_state()))``, bytes) of an
arrayfs source at N = 10^3 and N = 10^7 records (a real 10-shard dataset of
one-byte records, ``group_size:65536``) after the same 500 elements, next to
datarax's at N = ``--records``; and the RSS of a fresh process iterating
``--rss-epochs`` epochs of the shards through ``from_source`` (resident set at
each epoch's end and the peak).

Rates are the best of ``--rounds`` rounds of ``--seconds`` each (arrayfs, the
floor and Grain take turns within each round, each built afresh and closed
after its turn, so load from elsewhere on the machine hits them alike and no
read-ahead thread of one runs during another's turn); ratios are arrayfs / other (> 1: arrayfs faster). Targets: >= 10x datarax, >= 8x Grain.

    .venv/bin/python benchmarks/bench_source.py [--quick] [--dir DIR] [--json OUT]
"""

from __future__ import annotations

import argparse
import gc
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


def arrayfs_step(paths):
    """``(step, close)`` yielding one arrayfs pipeline batch per call."""
    from arrayfs.nnx import ArrayRecordSourceConfig, ArrayRecordSourceModule, from_source

    config = ArrayRecordSourceConfig(seed=0, shuffle_files=True, shard_index=0, shard_count=1)
    pipe = from_source(ArrayRecordSourceModule(config, paths), BATCH, prefetch=2)
    first = next(pipe)
    assert first["data"].shape == (BATCH, RECORD_BYTES) and first["data"].dtype == np.uint8
    return (lambda k: next(pipe)), pipe.close


def floor_step(paths):
    """The dataset alone on the same shuffled order: what the pipeline adds is the
    gap to this (indices, batching into one array, prefetch hand-off)."""
    from arrayfs.nnx.shuffle import epoch_permutation

    ds = arrayfs.ArrayRecordDataSource(paths)
    perm = epoch_permutation(len(ds), 0, 0)
    per_epoch = len(ds) // BATCH

    def step(k):
        k %= per_epoch
        ds.__getitems__(perm(np.arange(k * BATCH, (k + 1) * BATCH)))

    return step, ds.close


def grain_step(paths):
    """``(step, close)`` for Grain; raises ImportError without grain/array_record."""
    import grain
    from array_record.python.array_record_data_source import ArrayRecordDataSource

    source = ArrayRecordDataSource(paths)
    dataset = grain.MapDataset.source(source).shuffle(seed=0).batch(BATCH)

    def batches():
        while True:  # one pass is len(dataset) batches; start another if a round needs it
            yield from dataset

    it = batches()
    first = next(it)
    assert len(first) == BATCH

    def close():
        # Ends Grain's iterator and its read-ahead threads (16 by default),
        # which would otherwise keep reading during the next contender's turn.
        it.close()
        source.__exit__(None, None, None)

    return (lambda k: next(it)), close


def in_process(make):
    """A contender's ``run_round(seconds) -> records/s`` from ``make() ->
    (step, close)``: built, warmed by one step, timed, closed, so no
    background thread of it runs during another contender's turn."""
    def run_round(seconds: float) -> float:
        step, close = make()
        try:
            step(0)
            return time_for("", step, BATCH, min_seconds=seconds, rounds=1).rate
        finally:
            close()
            del step, close
            gc.collect()

    return run_round


def take_turns(contenders, seconds, rounds):
    """Best records/s of each ``name -> run_round`` over ``rounds`` rounds in
    which the contenders take turns, so that a change in the machine's load
    over the run hits all of them alike."""
    best = dict.fromkeys(contenders, 0.0)
    for _ in range(rounds):
        for name, run_round in contenders.items():
            best[name] = max(best[name], run_round(seconds))
    return best


DATARAX_SCRIPT = textwrap.dedent("""
    # Runs in datarax's environment; times one round per command read from
    # stdin, so its rounds can take turns with the others'.
    import gc, json, sys, time, warnings
    warnings.filterwarnings("ignore")
    import numpy as np
    import datarax
    from datarax.sources import ArrayRecordSourceConfig, ArrayRecordSourceModule
    paths, batch = json.loads(sys.argv[1])
    source = ArrayRecordSourceModule(ArrayRecordSourceConfig(seed=0, shuffle_files=True), paths)

    def iterate():
        # The module's own iteration: one record per next(), then stacked.
        return np.stack([np.frombuffer(next(source), np.uint8) for _ in range(batch)])

    start = [0]
    def get_batch_at():
        out = source.get_batch_at(start[0], batch)
        start[0] += batch
        return np.stack([np.frombuffer(r, np.uint8) for r in out])

    steps = {"iterate": iterate, "get_batch_at": get_batch_at}
    assert iterate().shape == (batch, len(source[0]))
    print(json.dumps({"version": datarax.__version__, "num_records": len(source),
                      "checkpoint_bytes": len(json.dumps(source.get_state(), default=str))}), flush=True)
    for line in sys.stdin:
        name, seconds = line.split()
        step = steps[name]
        step()
        gc.collect()
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < float(seconds):
            step()
            n += 1
        print(json.dumps(n * batch / (time.perf_counter() - t0)), flush=True)
""")


class Datarax:
    """datarax in its own interpreter, timed one round per request."""

    def __init__(self, python: str, paths):
        self.proc = subprocess.Popen(
            [python, "-c", DATARAX_SCRIPT, json.dumps([paths, BATCH])], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "JAX_PLATFORMS": "cpu"})
        line = self.proc.stdout.readline()
        if not line:
            err = self.proc.stderr.read().strip().splitlines()
            self.proc.wait()
            raise RuntimeError(err[-1] if err else "datarax process failed")
        self.info = json.loads(line)

    def round(self, name: str, seconds: float) -> float:
        """Records/s of one round of ``seconds``."""
        self.proc.stdin.write(f"{name} {seconds}\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


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

    contenders = {"arrayfs": in_process(lambda: arrayfs_step(paths)),
                  "floor": in_process(lambda: floor_step(paths))}
    grain_note = datarax_note = None
    try:
        import grain  # noqa: F401
        from array_record.python import array_record_data_source  # noqa: F401

        contenders["grain"] = in_process(lambda: grain_step(paths))
    except ImportError as exc:
        grain_note = f"not measured: {exc}"
    datarax = None
    if not args.datarax_python or not os.path.exists(args.datarax_python):
        datarax_note = (f"not measured: no interpreter at {args.datarax_python!r} (python -m venv "
                        "/tmp/datarax-venv && /tmp/datarax-venv/bin/pip install datarax)")
    else:
        try:
            datarax = Datarax(args.datarax_python, paths)
            contenders["datarax"] = lambda sec: datarax.round("iterate", sec)
            contenders["datarax_get_batch_at"] = lambda sec: datarax.round("get_batch_at", sec)
        except RuntimeError as exc:
            datarax_note = f"failed: {exc}"
    try:
        rates = take_turns(contenders, args.seconds, args.rounds)
    finally:
        if datarax is not None:
            datarax.close()

    ours_bps = rates["arrayfs"] / BATCH
    rows = [["arrayfs from_source(ArrayRecordSourceModule)", f"{ours_bps:.1f}", f"{rates['arrayfs']:,.0f}", "1.00x"]]
    figures = {"machine": machine_info(), "records": args.records, "batch": BATCH,
               "arrayfs_batches_per_s": ours_bps, "dataset_floor_batches_per_s": rates["floor"] / BATCH}
    rows.append(["  (floor: arrayfs ArrayRecordDataSource.__getitems__ alone)", f"{rates['floor'] / BATCH:.1f}",
                 f"{rates['floor']:,.0f}", f"{rates['arrayfs'] / rates['floor']:.2f}x"])
    if "grain" in rates:
        g = rates["grain"] / BATCH
        rows.append(["grain MapDataset.source(array_record).shuffle().batch()", f"{g:.1f}",
                     f"{rates['grain']:,.0f}", f"{ours_bps / g:.2f}x"])
        figures["grain_batches_per_s"] = g
    if datarax is not None:
        d_it, d_ix = rates["datarax"] / BATCH, rates["datarax_get_batch_at"] / BATCH
        version = datarax.info["version"]
        rows.append([f"datarax {version} ArrayRecordSourceModule, next() x {BATCH}",
                     f"{d_it:.2f}", f"{rates['datarax']:,.0f}", f"{ours_bps / d_it:.1f}x"])
        rows.append([f"datarax {version} get_batch_at (batched, no state)",
                     f"{d_ix:.2f}", f"{rates['datarax_get_batch_at']:,.0f}", f"{ours_bps / d_ix:.1f}x"])
        figures["datarax"] = {**datarax.info, "iterate_batches_per_s": d_it, "get_batch_at_batches_per_s": d_ix}
    print()
    print(f"Shuffled batches of {BATCH} x {RECORD_BYTES} bytes, best of {args.rounds} x {args.seconds:.0f} s:")
    print_table(rows, ["pipeline", "batches/s", "records/s", "arrayfs is"])
    if grain_note:
        print(f"grain: {grain_note}")
    if datarax_note:
        print(f"datarax: {datarax_note}")
    if "grain" in rates:
        ratio = ours_bps / figures["grain_batches_per_s"]
        print(f"target >= 8x Grain: {ratio:.2f}x {'MET' if ratio >= 8 else 'NOT MET'}")
    if datarax is not None:
        ratio = ours_bps / figures["datarax"]["iterate_batches_per_s"]
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
        print(f"datarax checkpoint at N = {datarax.info['num_records']:,}: "
              f"{datarax.info['checkpoint_bytes']:,} bytes "
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
