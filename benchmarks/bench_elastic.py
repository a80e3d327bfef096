"""Elastic resume: checkpoint bytes at N = 10^3 and 10^9, restore time at 10^9.

A job of ``--before`` hosts reads ``--steps`` batches of 256 per host of a
shuffled epoch; host 0's pipeline state is saved (JSON) and restored on each
of ``--after`` hosts, which then read their first batch. Neither Grain's nor
datarax's source can restore a shuffled epoch on another host count, so the
peer here is arrayfs itself restoring on the *same* host count: the table
gives the ratio of the two.

The dataset is virtual (record ``i`` is ``i`` as 8 bytes, computed on read):
the permutation and the split are O(1) in memory, so N = 10^9 needs no data,
and the timings are the cost of the order arithmetic, not of I/O.

    python benchmarks/bench_elastic.py            # N = 10^3 and 10^9
    python benchmarks/bench_elastic.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from _common import best_time, dump_json, machine_info, print_table  # noqa: E402
from _counting import CountingSource  # noqa: E402

BATCH = 256


def pipeline(n: int, index: int, count: int):
    from arrayfs.nnx import ArrayRecordSourceConfig, ArrayRecordSourceModule, Pipeline

    config = ArrayRecordSourceConfig(seed=0, shuffle_files=True, shard_index=index, shard_count=count)
    return Pipeline(source=ArrayRecordSourceModule(config, CountingSource(n)), stages=[],
                    batch_size=BATCH, prefetch=0)


def saved_state(n: int, before: int, steps: int) -> str:
    hosts = [pipeline(n, h, before) for h in range(before)]
    for _ in range(steps):
        for p in hosts:
            next(p)
    return json.dumps(hosts[0].get_state())


def restore_and_read(n: int, state: str, index: int, count: int) -> None:
    p = pipeline(n, index, count)
    p.set_state(json.loads(state))
    next(p)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=int, default=256)
    parser.add_argument("--after", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)

    figures: dict = {"machine": machine_info()}
    rows = []
    # N = 10^3: 2 hosts -> 3 after one step (a 10^3 epoch has few batches).
    for n, before, after, steps in ((10**3, 2, 3, 1), (10**9, args.before, args.after, args.steps)):
        state = saved_state(n, before, steps)
        resized = pipeline(n, 0, after)
        resized.set_state(json.loads(state))
        resized_state = json.dumps(resized.get_state())
        other = best_time("restore on another host count + first batch",
                          lambda n=n, s=state, a=after: restore_and_read(n, s, a - 1, a), 1, rounds=5)
        same = best_time("restore on the same host count + first batch",
                         lambda n=n, s=state, b=before: restore_and_read(n, s, b - 1, b), 1, rounds=5)
        rows.append({"N": n, "hosts_before": before, "hosts_after": after,
                     "checkpoint_bytes": len(state), "after_resize_bytes": len(resized_state),
                     "restore_other_s": other.seconds, "restore_same_s": same.seconds})
    figures["elastic"] = rows

    print_table(
        [[f"{r['N']:,}", f"{r['hosts_before']} -> {r['hosts_after']}", r["checkpoint_bytes"],
          r["after_resize_bytes"],
          f"{r['restore_other_s'] * 1e3:.2f} ms", f"{r['restore_same_s'] * 1e3:.2f} ms",
          f"{r['restore_other_s'] / r['restore_same_s']:.2f}x"]
         for r in rows],
        ["N", "hosts", "pipeline state (bytes)", "after resize (bytes)",
         "restore + 1st batch, other count", "same count", "ratio other/same"],
    )
    print("goal: the state does not grow with N (a few hundred bytes); restoring on another "
          "host count costs about the same as on the same one.")
    if args.json:
        dump_json(args.json, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
