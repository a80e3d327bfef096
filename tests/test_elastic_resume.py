"""Elastic resume: a lockstep job's checkpoint restores on another host count.

A job of A hosts each yields p elements of an epoch; host 0's state is
restored on B hosts, which run to the end of the epoch. Over all hosts every
record of the epoch must be yielded exactly once (at most once with
drop_remainder), and the next epoch must be split normally among the B hosts.
Records carry their global index (8 bytes, little-endian), so each host's
output is checked exactly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter

import numpy as np
import pytest
from _counting import CountingSource
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import arrayfs
from arrayfs.nnx import ArrayRecordSourceConfig, ArrayRecordSourceModule, Pipeline, from_source
from arrayfs.nnx.order import MAX_RESIZES, longest_slice

TOTAL = 240
PRIMES = [2, 3, 5, 7, 11, 13, 97, 101, 211, 223, 227, 229, 233, 239]


@pytest.fixture(scope="module")
def shard(tmp_path_factory):
    """One shard holding records 0..TOTAL-1; ``"path[0:n]"`` gives N = n."""
    path = str(tmp_path_factory.mktemp("elastic") / "ids-00000-of-00001.array_record")
    with arrayfs.ArrayRecordWriter(path, "group_size:4,zstd:1") as w:
        for i in range(TOTAL):
            w.write(i.to_bytes(8, "little"))
    return path


def ids(elements) -> list[int]:
    return [int(np.asarray(e["data"][:8]).view("<u8")[0]) for e in elements]


def batch_ids(batch) -> list[int]:
    return np.ascontiguousarray(batch["data"][:, :8]).view("<u8").ravel().tolist()


def cfg(index, count, **kw):
    return ArrayRecordSourceConfig(shard_index=index, shard_count=count, **kw)


def hosts(dataset, count, **kw) -> list[ArrayRecordSourceModule]:
    return [ArrayRecordSourceModule(cfg(h, count, **kw), dataset) for h in range(count)]


def left_in(src, epoch) -> int:
    """Elements ``src`` has left of ``epoch``."""
    if src.epoch.get_value() != epoch:
        return 0
    return max(0, src.epoch_length() - src.position.get_value())


def step_all(sources, steps, epoch=0) -> list[list[int]]:
    """Lockstep: every host takes ``steps`` more elements of ``epoch``
    (fewer if its share ends first)."""
    out = []
    for src in sources:
        left = left_in(src, epoch)
        out.append(ids(next(src) for _ in range(min(steps, left))))
    return out


def run_out(src) -> dict[int, list[int]]:
    """Every element left, grouped by the epoch it came from."""
    per_epoch: dict[int, list[int]] = {}
    for element in src:
        per_epoch.setdefault(src.epoch.get_value(), []).extend(ids([element]))
    return per_epoch


def roundtrip(state):
    return json.loads(json.dumps(state))


def check_epoch(seen: list[int], n: int, drop: bool, max_dropped: int):
    counts = Counter(seen)
    assert all(c == 1 for c in counts.values()), "a record was yielded twice"
    assert set(counts) <= set(range(n))
    if drop:
        assert n - max_dropped <= len(counts) <= n
    else:
        assert sorted(counts) == list(range(n)), "a record of the epoch was never yielded"


n_strategy = st.one_of(st.sampled_from(PRIMES), st.integers(1, 12), st.integers(1, TOTAL))


@given(n=n_strategy, a=st.integers(1, 8), b=st.integers(1, 8), shuffle=st.booleans(),
       drop=st.booleans(), seed=st.integers(0, 2**64 - 1), data_=st.data())
@settings(max_examples=70, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_restore_on_another_host_count_yields_each_record_once(shard, n, a, b, shuffle, drop,
                                                               seed, data_):
    kw = dict(num_epochs=2, shuffle_files=shuffle, seed=seed, drop_remainder=drop)
    with arrayfs.ArrayRecordDataSource(f"{shard}[0:{n}]") as ds:
        first = hosts(ds, a, **kw)
        p = data_.draw(st.integers(0, longest_slice(n, a, drop)), label="p")
        seen = [x for part in step_all(first, p) for x in part]
        state = roundtrip(first[0].get_state())

        second = hosts(ds, b, **kw)
        later = []
        for src in second:
            src.set_state(state)
            out = run_out(src)
            assert set(out) <= {state["epoch"], state["epoch"] + 1}
            seen += out.get(0, [])
            later.append(out.get(1, []))
        check_epoch(seen, n, drop, max_dropped=(a - 1) + (b - 1))

        # Epoch 1 runs normally on the B hosts: exactly a fresh B-host job's epoch 1.
        fresh = hosts(ds, b, **kw)
        assert later == [src.global_indices(1, 0, len(src)).tolist() for src in fresh]
        check_epoch([x for part in later for x in part], n, drop, max_dropped=b - 1)


@given(n=n_strategy, counts=st.lists(st.integers(1, 8), min_size=2, max_size=5),
       shuffle=st.booleans(), drop=st.booleans(), data_=st.data())
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_several_resizes_within_one_epoch(shard, n, counts, shuffle, drop, data_):
    kw = dict(num_epochs=1, shuffle_files=shuffle, seed=3, drop_remainder=drop)
    with arrayfs.ArrayRecordDataSource(f"{shard}[0:{n}]") as ds:
        seen, state = [], None
        for count in counts:
            job = hosts(ds, count, **kw)
            if state is not None:
                for src in job:
                    src.set_state(state)
            longest = max(left_in(src, 0) for src in job)
            steps = data_.draw(st.integers(0, longest), label=f"steps on {count}")
            seen += [x for part in step_all(job, steps) for x in part]
            # Any host that has yielded as many elements as the others (a host
            # whose share ended earlier has not: lockstep broke for it) saves
            # the same state but for shard_index.
            states = [roundtrip(src.get_state()) for src in job]
            top = max(s["position"] for s in states)
            states = [s for s in states if s["position"] == top]
            assert len({json.dumps({**s, "shard_index": 0}) for s in states}) == 1
            state = states[data_.draw(st.integers(0, len(states) - 1), label="saving host")]
            assert len(state["resized_from"]) <= len(counts)
        for src in hosts(ds, counts[-1], **kw):
            src.set_state(state)
            seen += run_out(src).get(state["epoch"], [])
        check_epoch(seen, n, drop, max_dropped=sum(c - 1 for c in counts))


def test_same_host_count_any_host_continues_its_own_slice(shard):
    kw = dict(num_epochs=1, shuffle_files=True, seed=9)
    with arrayfs.ArrayRecordDataSource(f"{shard}[0:101]") as ds:
        job = hosts(ds, 4, **kw)  # slices of 26, 25, 25, 25
        step_all(job, 25)
        state = job[3].get_state()  # a short host, done with its share
        assert state["position"] == 25
        expected = [job[h].global_indices(0, 25, len(job[h]) - 25).tolist() for h in range(4)]
        for h, src in enumerate(hosts(ds, 4, **kw)):
            src.set_state(state)
            assert src.get_state()["resized_from"] == []
            assert ids(src) == expected[h]  # host 0 has one left, the others none


def test_state_keys_size_and_old_format(shard):
    with arrayfs.ArrayRecordDataSource(f"{shard}[0:200]") as ds:
        src = ArrayRecordSourceModule(cfg(0, 2, shuffle_files=True, seed=1), ds)
        for _ in range(7):
            next(src)
        state = src.get_state()
        assert (state["current_index"], state["current_epoch"]) == (7, 0)
        assert (state["position"], state["epoch"]) == (7, 0)
        restored = ArrayRecordSourceModule(cfg(0, 3, shuffle_files=True, seed=1), ds)
        restored.set_state(roundtrip(state))
        assert restored.get_state()["resized_from"] == [[2, 7]]
        assert len(json.dumps(restored.get_state())) < 400

        # A state as arrayfs wrote it before elastic resume (format 1).
        old = {"format": "arrayfs.source/1", "epoch": 0, "position": 7, "seed": 1,
               "shuffle_files": True, "shard_index": 0, "shard_count": 2,
               "drop_remainder": False, "dataset": state["dataset"]}
        fresh = ArrayRecordSourceModule(cfg(0, 2, shuffle_files=True, seed=1), ds)
        fresh.set_state(old)
        assert ids([next(fresh)]) == src.global_indices(0, 7, 1).tolist()
        other_count = ArrayRecordSourceModule(cfg(1, 3, shuffle_files=True, seed=1), ds)
        other_count.set_state(old)
        assert other_count.get_state()["resized_from"] == [[2, 7]]


def test_nnx_state_of_a_resized_epoch_restores_with_nnx_update(shard):
    from flax import nnx

    from arrayfs.nnx import IterationState

    kw = dict(num_epochs=2, shuffle_files=True, seed=8)
    with arrayfs.ArrayRecordDataSource(f"{shard}[0:150]") as ds:
        job = hosts(ds, 2, **kw)
        step_all(job, 30)
        src = ArrayRecordSourceModule(cfg(1, 3, **kw), ds)
        src.set_state(job[0].get_state())
        for _ in range(5):
            next(src)
        saved = nnx.state(src, IterationState)
        fresh = ArrayRecordSourceModule(cfg(1, 3, **kw), ds)
        empty = nnx.state(fresh, IterationState)
        # One structure whatever happened: the same leaves, shapes and dtypes.
        assert [np.shape(x) for x in jax_leaves(saved)] == [np.shape(x) for x in jax_leaves(empty)]
        nnx.update(fresh, saved)
        assert fresh.get_state() == src.get_state()
        assert ids(fresh) == ids(src)


def jax_leaves(tree):
    import jax

    return jax.tree.leaves(tree)


def test_a_different_order_is_still_refused_on_another_host_count(shard, tmp_path):
    other = str(tmp_path / "other-00000-of-00001.array_record")
    with arrayfs.ArrayRecordWriter(other) as w:
        for i in range(100):
            w.write(i.to_bytes(8, "little"))
    with ArrayRecordSourceModule(cfg(0, 2, shuffle_files=True, seed=1), f"{shard}[0:100]") as src:
        next(src)
        state = src.get_state()
    cases = [
        (cfg(0, 3, shuffle_files=True, seed=2), f"{shard}[0:100]", "seed"),
        (cfg(0, 3, shuffle_files=False, seed=1), f"{shard}[0:100]", "shuffle_files"),
        (cfg(0, 3, shuffle_files=True, seed=1, drop_remainder=True), f"{shard}[0:100]",
         "drop_remainder"),
        (cfg(0, 3, shuffle_files=True, seed=1), f"{shard}[0:101]", "dataset"),
        (cfg(0, 3, shuffle_files=True, seed=1), other, "dataset"),
    ]
    for config, paths, field in cases:
        with ArrayRecordSourceModule(config, paths) as src:
            with pytest.raises(ValueError, match=f"does not match.*{field}: checkpoint has"):
                src.set_state(state)


def test_resizes_past_the_bound_are_refused_but_the_epoch_can_finish(shard):
    kw = dict(num_epochs=1, shuffle_files=True, seed=5)
    with arrayfs.ArrayRecordDataSource(shard) as ds:
        state, seen = None, []
        for k in range(MAX_RESIZES + 1):
            count = 2 + k % 2  # 2, 3, 2, 3, ...
            job = hosts(ds, count, **kw)
            for src in job:
                if state is not None:
                    src.set_state(state)
            seen += [x for part in step_all(job, 1) for x in part]
            state = job[0].get_state()
        assert len(state["resized_from"]) == MAX_RESIZES and state["shard_count"] == 2
        with pytest.raises(ValueError, match=f"{MAX_RESIZES} times.*restore it on 2 hosts"):
            ArrayRecordSourceModule(cfg(0, 3, **kw), ds).set_state(state)
        for src in hosts(ds, 2, **kw):
            src.set_state(state)
            seen += ids(src)
        check_epoch(seen, TOTAL, False, 0)


def test_checkpoint_at_the_end_of_an_epoch_starts_the_next_normally(shard):
    kw = dict(num_epochs=2, shuffle_files=True, seed=2)
    with arrayfs.ArrayRecordDataSource(f"{shard}[0:50]") as ds:
        job = hosts(ds, 3, **kw)
        step_all(job, 17)  # 17, 17, 16: the epoch is done
        state = job[0].get_state()
        for src, fresh in zip(hosts(ds, 4, **kw), hosts(ds, 4, **kw)):
            src.set_state(state)
            assert (src.epoch.get_value(), src.position.get_value()) == (1, 0)
            assert src.get_state()["resized_from"] == []
            assert ids(src) == fresh.global_indices(1, 0, len(fresh)).tolist()


@pytest.mark.parametrize("a,b,batch,drop", [(2, 3, 8, False), (4, 2, 5, False), (3, 5, 4, True)])
def test_pipelines_resume_on_another_host_count(shard, a, b, batch, drop):
    """Batches with prefetch: the consumer's state, not the prefetcher's, is restored."""
    kw = dict(num_epochs=2, shuffle_files=True, seed=11)
    paths = f"{shard}[0:229]"
    first = [from_source(ArrayRecordSourceModule(cfg(h, a, **kw), paths), batch, prefetch=3,
                         drop_remainder=drop) for h in range(a)]
    seen = []
    for pipe in first:
        for _ in range(6):
            seen += batch_ids(next(pipe))
    state = roundtrip(first[0].get_state())
    for pipe in first:
        pipe.close()
    later = []
    for h in range(b):
        pipe = Pipeline(source=ArrayRecordSourceModule(cfg(h, b, **kw), paths), stages=[],
                        batch_size=batch + 1, drop_remainder=drop)
        with pipe:
            pipe.set_state(state)
            for x in pipe:
                (seen if pipe.source.epoch.get_value() == 0 else later).extend(batch_ids(x))
    # Each level leaves out at most (hosts - 1) elements with drop_remainder,
    # plus each host's short last batch.
    check_epoch(seen, 229, drop, max_dropped=(a - 1) + (b - 1) + b * batch)
    check_epoch(later, 229, drop, max_dropped=(b - 1) + b * batch)


def test_pipeline_state_of_hosts_with_different_batch_counts_restores_only_on_its_host(shard):
    """N = 11 on 2 hosts (6 and 5 elements), batches of 5: host 0 takes 2
    batches per epoch, host 1 one, so after 2 steps host 1 is already in
    epoch 1 and host 0's state does not say what it read. Restoring that
    state on another host would read records twice: refused; each host's
    own state still restores exactly."""
    kw = dict(num_epochs=2, shuffle_files=True, seed=1)
    paths = f"{shard}[0:11]"

    def pipe(h, count, **extra):
        return from_source(ArrayRecordSourceModule(cfg(h, count, **kw, **extra), paths), 5)

    job = [pipe(h, 2) for h in range(2)]
    for _ in range(2):
        for p in job:
            next(p)
    states = [roundtrip(p.get_state()) for p in job]
    expected = [[x for b in p for x in batch_ids(b)] for p in job]
    for p in job:
        p.close()
    for h, count in [(1, 2), (0, 3), (1, 3), (2, 3)]:
        with pipe(h, count) as other:
            before = other.source.get_state()
            with pytest.raises(ValueError, match="different numbers of batches per epoch"):
                other.set_state(states[0])
            assert other.source.get_state() == before  # a refused state changes nothing
    for h in range(2):
        with pipe(h, 2) as own:
            own.set_state(states[h])
            assert [x for b in own for x in batch_ids(b)] == expected[h]

    # Equal shares (drop_remainder in the config): equal batch counts, so
    # host 0's state restores on 3 hosts and every record is read once.
    job = [pipe(h, 2, drop_remainder=True) for h in range(2)]
    seen = [x for p in job for _ in range(1) for x in batch_ids(next(p))]
    state = roundtrip(job[0].get_state())
    for p in job:
        p.close()
    for h in range(3):
        with pipe(h, 3, drop_remainder=True) as p:
            p.set_state(state)
            seen += [x for b in p if p.source.epoch.get_value() == 0 for x in batch_ids(b)]
    check_epoch(seen, 11, True, max_dropped=1 + 2)


# -- real processes ------------------------------------------------------------

WORKER = textwrap.dedent("""
    import json, os, sys, time
    import numpy as np
    from arrayfs.nnx import ArrayRecordSourceConfig, ArrayRecordSourceModule, from_source

    args = json.loads(sys.argv[1])
    config = ArrayRecordSourceConfig(**args["config"])
    pipe = from_source(ArrayRecordSourceModule(config, args["paths"]), args["batch_size"])
    if args["restore"]:
        with open(args["restore"]) as f:
            pipe.set_state(json.load(f))
    out = []
    for step, batch in enumerate(pipe):
        ids = np.ascontiguousarray(batch["data"][:, :8]).view("<u8").ravel().tolist()
        out.append([pipe.source.epoch.get_value(), ids])
        if args["steps"] is not None and step + 1 == args["steps"]:
            break
    tmp = args["out"] + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"batches": out, "state": pipe.get_state()}, f)
    os.replace(tmp, args["out"])
    if args["steps"] is not None:
        # Keep "training" until the job is preempted (SIGKILL, no clean-up).
        while True:
            time.sleep(1)
""")


def _spawn(tmp_path, name, config, paths, restore, steps):
    out = str(tmp_path / f"{name}.json")
    arg = json.dumps({"config": config, "paths": paths, "batch_size": 6, "restore": restore,
                      "steps": steps, "out": out})
    proc = subprocess.Popen([sys.executable, "-c", WORKER, arg], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    return proc, out


def _wait_for(paths, procs, timeout=180.0):
    deadline = time.monotonic() + timeout
    while not all(os.path.exists(p) for p in paths):
        for proc in procs:
            if proc.poll() is not None and proc.returncode != 0:
                raise AssertionError(proc.stderr.read())
        assert time.monotonic() < deadline, "workers did not report in time"
        time.sleep(0.05)


def test_processes_killed_on_three_hosts_resume_on_two(shard, tmp_path):
    n, a, b, steps = 227, 3, 2, 7
    paths = f"{shard}[0:{n}]"
    base = dict(seed=21, num_epochs=2, shuffle_files=True)

    first = [_spawn(tmp_path, f"a{h}", {**base, "shard_index": h, "shard_count": a}, paths,
                    None, steps) for h in range(a)]
    try:
        _wait_for([out for _, out in first], [p for p, _ in first])
    finally:
        for proc, _ in first:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            proc.stdout.close()
            proc.stderr.close()
    assert all(proc.returncode == -signal.SIGKILL for proc, _ in first)
    reports = [json.load(open(out)) for _, out in first]
    seen = [x for r in reports for epoch, batch in r["batches"] for x in batch]
    assert len(seen) == a * steps * 6
    state_file = str(tmp_path / "host0-state.json")
    with open(state_file, "w") as f:
        json.dump(reports[0]["state"], f)

    second = [_spawn(tmp_path, f"b{h}", {**base, "shard_index": h, "shard_count": b}, paths,
                     state_file, None) for h in range(b)]
    later = []
    for proc, out in second:
        _, err = proc.communicate(timeout=180)
        proc.stdout.close()
        proc.stderr.close()
        assert proc.returncode == 0, err
        for epoch, batch in json.load(open(out))["batches"]:
            (seen if epoch == 0 else later).extend(batch)
    check_epoch(seen, n, False, 0)
    check_epoch(later, n, False, 0)


# -- huge N: the state does not grow, and restoring costs no data -----------------




def test_state_size_does_not_depend_on_n():
    kw = dict(shuffle_files=True, seed=4)
    sizes = []
    for n in (10**3, 10**9):
        job = hosts(CountingSource(n), 4, **kw)
        step_all(job, 100)
        state = roundtrip(job[0].get_state())
        src = ArrayRecordSourceModule(cfg(2, 3, **kw), CountingSource(n))
        src.set_state(state)
        sizes.append((len(json.dumps(state)), len(json.dumps(src.get_state()))))
        # Host 2 of 3 starts at its even_split share of what the 4 hosts left:
        # their suffixes [100, n/4) concatenated in host order.
        left = n // 4 - 100
        start = 2 * (4 * left // 3) + min(2, 4 * left % 3)
        host, offset = divmod(start, left)
        assert ids([next(src) for _ in range(3)]) == job[host].global_indices(
            0, 100 + offset, 3).tolist()
    assert sizes[0] == sizes[1] and max(sizes[0]) < 400


# -- the example ------------------------------------------------------------------

EXAMPLE = os.path.join(os.path.dirname(__file__), os.pardir, "examples", "elastic_resume.py")


def test_example_interrupted_on_two_hosts_resumed_on_three(tmp_path):
    res = subprocess.run([sys.executable, EXAMPLE, "--data", str(tmp_path)], capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout
    assert "epoch 0 (interrupted on 2 hosts, finished on 3): 1009 reads of 1009 records, " \
           "each read exactly once" in out
    assert "epoch 1 (on 3 hosts): 1009 reads of 1009 records, each read exactly once" in out
    with open(tmp_path / "checkpoint.json") as f:
        state = json.load(f)
    assert state["source"]["shard_count"] == 2 and state["source"]["position"] == 320
