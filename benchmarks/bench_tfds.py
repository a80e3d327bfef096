"""TFDS datasets: ``arrayfs.tfds.data_source`` vs TFDS's own ``tfds.data_source``.

The dataset is the TFDS test fixture's builder (``tests/data/tfds/make_fixture.py``:
scikit-learn digits with 21 stored features, four of them images) made
larger, ``--records`` train records in 8 shards, prepared by
tensorflow-datasets itself with ``file_format="array_record"`` (built once
into ``--data-dir`` when missing). Four readers, in one run, taking turns
within each round on the same random indices:

* ``arrayfs.tfds.data_source(dir, split="train").__getitems__(256 random)``;
* ``tfds.data_source(name, split="train", data_dir=...).__getitems__`` (TFDS
  over array_record's C++ reader, TensorFlow installed);
* each of them through Grain: ``grain.MapDataset.source(src).shuffle(seed)
  .batch(256, batch_fn=list)``, one batch per call (Grain 0.2 reads such a
  batch one element at a time: its batched-read path is an experiment,
  switched off);
* and through Grain on batched indices, which reach ``__getitems__``:
  ``grain.MapDataset.range(n).shuffle(seed).batch(256).map(lambda idx:
  src.__getitems__(idx.tolist()))``.

TensorFlow cannot share the main venv, so TFDS's side runs in the TensorFlow
venv (``--tf-python``, default ``.venv-tfds/bin/python``; ``make
tfds-fixture`` makes it) as a child process that times its own batches on
command; both sides report wall time and CPU time (user + sys) per batch.
Before timing, one direct batch and one Grain batch are decoded by both and
compared value for value, type for type (``tests/data/tfds/expected_io``).

Goal: arrayfs >= 2x TFDS's data source (batches per second), with the same
values. Rates are the median of ``--rounds`` rounds of ``--batches``
batches each; ratios are arrayfs / TFDS.

    .venv/bin/python benchmarks/bench_tfds.py [--quick] [--data-dir DIR] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
FIXTURE = os.path.join(ROOT, "tests", "data", "tfds")
sys.path.insert(0, HERE)
sys.path.insert(0, FIXTURE)
import expected_io  # noqa: E402
from _common import dump_json, machine_info, print_table  # noqa: E402

BATCH = 256
GOAL = 2.0
NAME = "arrayfs_digits"

# The TFDS side: a loop reading commands (JSON lines) from stdin, answering
# with JSON lines. Runs in the TensorFlow venv; shares nothing with arrayfs.
PEER = textwrap.dedent('''
    import json, os, sys, time
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import numpy as np
    import tensorflow_datasets as tfds
    import grain
    sys.path.insert(0, sys.argv[3])
    import expected_io
    src = tfds.data_source(sys.argv[2], split="train", data_dir=sys.argv[1], download=False)
    print(json.dumps({"ready": len(src)}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "quit":
            break
        if cmd["op"] == "dump":
            batch = src.__getitems__(cmd["indices"]) if cmd["mode"] == "direct" else \\
                grain.MapDataset.source(src).shuffle(seed=cmd["seed"]).batch(cmd["batch"], batch_fn=list)[cmd["k"]]
            expected_io.save(cmd["out"], {"batch": list(batch)})
            print(json.dumps({"ok": True}), flush=True)
            continue
        if cmd["mode"] == "direct":
            batches = [np.asarray(b) for b in cmd["indices"]]
            run = lambda k: src.__getitems__(batches[k].tolist())
        elif cmd["mode"] == "grain":
            ds = grain.MapDataset.source(src).shuffle(seed=cmd["seed"]).batch(cmd["batch"], batch_fn=list)
            run = lambda k: ds[k]
        else:
            ds = grain.MapDataset.range(len(src)).shuffle(seed=cmd["seed"]).batch(cmd["batch"]).map(
                lambda idx: src.__getitems__(idx.tolist()))
            run = lambda k: ds[k]
        run(0)  # warm
        w0, c0 = time.perf_counter(), time.process_time()
        for k in range(len(cmd["indices"]) if cmd["mode"] == "direct" else cmd["batches"]):
            run(k)
        print(json.dumps({"wall": time.perf_counter() - w0, "cpu": time.process_time() - c0}), flush=True)
''')


class Peer:
    """TFDS's data source in the TensorFlow venv, driven over pipes."""

    def __init__(self, python: str, data_dir: str):
        self.proc = subprocess.Popen([python, "-c", PEER, data_dir, NAME, FIXTURE], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.length = self._read()["ready"]

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the TFDS peer process ended (run it by hand to see why)")
        return json.loads(line)

    def ask(self, **cmd) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        try:
            self.ask(op="quit")
        except (RuntimeError, BrokenPipeError, ValueError):
            pass
        self.proc.wait(timeout=30)


def ensure_dataset(data_dir: str, records: int, tf_python: str) -> str:
    version_dir = os.path.join(data_dir, NAME, "1.0.0")
    info = os.path.join(version_dir, "dataset_info.json")
    if os.path.exists(info):
        with open(info) as f:
            splits = {s["name"]: sum(int(n) for n in s["shardLengths"]) for s in json.load(f)["splits"]}
        if splits.get("train") == records:
            return version_dir
    print(f"building {records} records with tensorflow-datasets into {data_dir} ...", flush=True)
    subprocess.run([tf_python, os.path.join(FIXTURE, "make_fixture.py"), "--data-dir", data_dir, "--train",
                    str(records), "--test", "16", "--num-shards", "8", "--no-expected"], check=True,
                   stdout=subprocess.DEVNULL)
    return version_dir


def time_ours(run, count: int) -> dict:
    run(0)  # warm
    w0, c0 = time.perf_counter(), time.process_time()
    for k in range(count):
        run(k)
    return {"wall": time.perf_counter() - w0, "cpu": time.process_time() - c0}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default="/tmp/tfds-bench")
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--tf-python", default=os.path.join(ROOT, ".venv-tfds", "bin", "python"))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batches", type=int, default=12, help="batches of 256 per reader per round")
    ap.add_argument("--quick", action="store_true", help="2 rounds of 4 batches")
    ap.add_argument("--json", default=os.path.join(ROOT, "docs", "benchmarks", "tfds.json"))
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.batches = 2, 4
    if not os.path.exists(args.tf_python):
        print(f"no TensorFlow venv at {args.tf_python}: run `make tfds-fixture` first (it makes one)")
        return 2

    import grain

    import arrayfs.tfds

    version_dir = ensure_dataset(args.data_dir, args.records, args.tf_python)
    ours = arrayfs.tfds.data_source(version_dir, split="train")
    peer = Peer(args.tf_python, args.data_dir)
    n = len(ours)
    assert peer.length == n, (peer.length, n)
    rng = np.random.default_rng(0)

    # Same values, direct and through Grain.
    with tempfile.TemporaryDirectory(prefix="tfds-bench-") as tmp:
        idx = rng.integers(0, n, BATCH).tolist()
        peer.ask(op="dump", mode="direct", indices=idx, out=os.path.join(tmp, "direct"))
        for i, (a, b) in enumerate(zip(ours.__getitems__(idx), expected_io.load(os.path.join(tmp, "direct"))["batch"])):
            expected_io.assert_same(a, b, f"direct[{i}]")
        peer.ask(op="dump", mode="grain", seed=7, batch=BATCH, k=3, indices=[], out=os.path.join(tmp, "grain"))
        ours_grain = grain.MapDataset.source(ours).shuffle(seed=7).batch(BATCH, batch_fn=list)[3]
        for i, (a, b) in enumerate(zip(ours_grain, expected_io.load(os.path.join(tmp, "grain"))["batch"])):
            expected_io.assert_same(a, b, f"grain[{i}]")
    print(f"values equal: {BATCH} random records direct and one Grain batch, type for type")

    results = {k: [] for k in ("ours_direct", "tfds_direct", "ours_grain", "tfds_grain", "ours_grain_batched",
                               "tfds_grain_batched")}
    for r in range(args.rounds):
        batches = [rng.integers(0, n, BATCH) for _ in range(args.batches)]
        results["ours_direct"].append(time_ours(lambda k, b=batches: ours.__getitems__(b[k]), args.batches))
        results["tfds_direct"].append(peer.ask(op="time", mode="direct", indices=[b.tolist() for b in batches]))
        seed = 1000 + r
        ds = grain.MapDataset.source(ours).shuffle(seed=seed).batch(BATCH, batch_fn=list)
        results["ours_grain"].append(time_ours(lambda k, d=ds: d[k], args.batches))
        results["tfds_grain"].append(peer.ask(op="time", mode="grain", seed=seed, batch=BATCH, batches=args.batches,
                                              indices=[]))
        ds = grain.MapDataset.range(n).shuffle(seed=seed).batch(BATCH).map(
            lambda idx, s=ours: s.__getitems__(idx.tolist()))
        results["ours_grain_batched"].append(time_ours(lambda k, d=ds: d[k], args.batches))
        results["tfds_grain_batched"].append(peer.ask(op="time", mode="grain_batched", seed=seed, batch=BATCH,
                                                      batches=args.batches, indices=[]))
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(
            f"{k} {results[k][-1]['wall'] / args.batches * 1e3:.0f} ms" for k in results), flush=True)
    peer.close()
    ours.close()

    def per_batch(key, what="wall"):
        return statistics.median(x[what] / args.batches for x in results[key])

    rows, table = [], []
    names = {"direct": "__getitems__", "grain": "Grain MapDataset", "grain_batched": "Grain, batched indices"}
    for mode in ("direct", "grain", "grain_batched"):
        for what in ("wall", "cpu"):
            a, b = per_batch(f"ours_{mode}", what), per_batch(f"tfds_{mode}", what)
            ratio = b / a
            label = f"{names[mode]} 256 random ({what} ms per batch)"
            rows.append({"measurement": label, "ours": a * 1e3, "theirs_or_floor": b * 1e3, "ratio": ratio,
                         "target": f">= {GOAL:g} (theirs/ours)", "ok": ratio >= GOAL})
            table.append([label, f"{a * 1e3:.1f}", f"{b * 1e3:.1f}", f"{ratio:.2f}x",
                          "ok" if ratio >= GOAL else f"below {GOAL:g}x"])
    print_table(table, ["measurement", "arrayfs", "tfds.data_source", "ratio", f"goal >= {GOAL:g}x"])
    if args.json:
        dump_json(args.json, {
            "machine": machine_info(),
            "quick": args.quick,
            "records": n,
            "batch": BATCH,
            "rounds": args.rounds,
            "batches_per_round": args.batches,
            "rows": rows,
            "raw": results,
        })
        print("wrote", args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
