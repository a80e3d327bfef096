"""Interrupt a shuffled epoch on 2 hosts, resume it on 3: every record once.

Simulates a data-parallel job in one process: each "host" is a pipeline with
its own ``shard_index``/``shard_count``, and the hosts step in lockstep (each
takes one batch per training step). After ``--steps`` steps the job is
preempted: host 0's pipeline state is written to a JSON checkpoint and every
pipeline is dropped. The job comes back on a different number of hosts; each
new host restores that one checkpoint and reads its share of what the old
hosts had not read. The script then checks that over both runs every record
of the interrupted epoch was read exactly once, and that the next epoch is
split normally among the new hosts::

    python examples/elastic_resume.py --data /tmp/elastic
    python examples/elastic_resume.py --data /tmp/elastic --before 4 --after 3 --steps 5

Each record holds its own index (8 bytes, little-endian), so the check is
exact. Exits with status 1 if a record was missed or read twice.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from collections import Counter

import numpy as np

import arrayfs
from arrayfs.nnx import ArrayRecordSourceConfig, ArrayRecordSourceModule, Pipeline


def write_shards(directory: str, num_records: int, num_shards: int) -> str:
    """``num_records`` records in ``num_shards`` shards; returns their glob."""
    pattern = os.path.join(directory, "ids-*.array_record")
    for old in glob.glob(pattern):
        os.remove(old)
    os.makedirs(directory, exist_ok=True)
    bounds = np.linspace(0, num_records, num_shards + 1).astype(int)
    for k in range(num_shards):
        path = os.path.join(directory, f"ids-{k:05d}-of-{num_shards:05d}.array_record")
        with arrayfs.ArrayRecordWriter(path) as writer:
            for i in range(bounds[k], bounds[k + 1]):
                writer.write(int(i).to_bytes(8, "little"))
    return pattern


def make_host(pattern: str, index: int, count: int, args) -> Pipeline:
    config = ArrayRecordSourceConfig(seed=args.seed, num_epochs=2, shuffle_files=True,
                                     shard_index=index, shard_count=count)
    return Pipeline(source=ArrayRecordSourceModule(config, pattern), stages=[],
                    batch_size=args.batch_size)


def record_ids(batch) -> list[int]:
    return np.ascontiguousarray(batch["data"]).view("<u8").ravel().tolist()


def report(label: str, seen: list[int], num_records: int) -> bool:
    counts = Counter(seen)
    twice = sum(1 for c in counts.values() if c > 1)
    missed = num_records - len(counts)
    ok = twice == 0 and missed == 0 and set(counts) == set(range(num_records))
    verdict = "each read exactly once" if ok else f"{missed} missed, {twice} read more than once"
    print(f"{label}: {len(seen)} reads of {num_records} records, {verdict}")
    return ok


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="directory for the shards and the checkpoint")
    parser.add_argument("--records", type=int, default=1009, help="records in the dataset (default: a prime)")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--before", type=int, default=2, help="hosts before the interruption")
    parser.add_argument("--after", type=int, default=3, help="hosts after it")
    parser.add_argument("--steps", type=int, default=20, help="lockstep steps before the interruption")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.steps * args.batch_size > args.records // args.before:
        parser.error("--steps * --batch-size must fit in one host's share of the epoch")

    pattern = write_shards(args.data, args.records, args.shards)
    print(f"wrote {args.records} records in {args.shards} shards to {args.data}")

    # -- the first job: lockstep steps, then preemption --------------------------
    hosts = [make_host(pattern, h, args.before, args) for h in range(args.before)]
    epoch0: list[int] = []
    for _ in range(args.steps):
        for pipeline in hosts:  # one training step: every host takes one batch
            epoch0 += record_ids(next(pipeline))
    checkpoint = os.path.join(args.data, "checkpoint.json")
    with open(checkpoint, "w") as f:
        json.dump(hosts[0].get_state(), f)  # any host's state would do
    for pipeline in hosts:
        pipeline.close()
    print(f"{args.before} hosts, {args.steps} steps of {args.batch_size}: {len(epoch0)} records of "
          f"epoch 0 read; then preempted. Checkpoint of host 0: {os.path.getsize(checkpoint)} bytes")

    # -- the job comes back on another number of hosts -----------------------------
    with open(checkpoint) as f:
        state = json.load(f)
    hosts = [make_host(pattern, h, args.after, args) for h in range(args.after)]
    epoch1: list[int] = []
    for h, pipeline in enumerate(hosts):
        pipeline.set_state(state)
        left = pipeline.source.epoch_length()
        with pipeline:
            for batch in pipeline:
                # The source's epoch is that of the batch just handed out.
                (epoch0 if pipeline.source.epoch.get_value() == 0 else epoch1).extend(record_ids(batch))
        print(f"  host {h} of {args.after}: {left} more records of epoch 0, "
              f"then {len(pipeline.source)} of epoch 1")
    ok = report("epoch 0 (interrupted on %d hosts, finished on %d)" % (args.before, args.after),
                epoch0, args.records)
    ok &= report(f"epoch 1 (on {args.after} hosts)", epoch1, args.records)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
