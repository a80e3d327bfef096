"""The dataset in other processes and threads: Grain's MapDataset and
DataLoader (2 worker processes) give what they give with Google's source;
pickling into a spawned process; PyTorch's DataLoader with 2 workers; 16
reading threads; no descriptor, mapping or thread leaks over 1,000
open/close cycles of 100 shards."""

from __future__ import annotations

import concurrent.futures
import gc
import multiprocessing
import operator
import os
import pickle
import threading
import time

import numpy as np
import pytest
from _dataset_shards import fd_count, mappings_of
from _records import write_shards

import arrayfs

google = pytest.importorskip("array_record.python.array_record_module", reason="array-record wheel not installed")

pytestmark = pytest.mark.usefixtures("quiet_absl")


# -- Grain ------------------------------------------------------------------------------


def test_grain_map_dataset_drop_in(ours, theirs):
    grain = pytest.importorskip("grain")
    a = list(grain.MapDataset.source(ours).shuffle(seed=0).batch(8))
    b = list(grain.MapDataset.source(theirs).shuffle(seed=0).batch(8))
    assert len(a) == len(b) == -(-len(ours) // 8)
    for x, y in zip(a, b):
        assert x.dtype == y.dtype and np.array_equal(x, y)
    # exact bytes (np.stack of bytes drops trailing NULs)
    a = list(grain.MapDataset.source(ours).shuffle(seed=0).batch(8, batch_fn=list))
    b = list(grain.MapDataset.source(theirs).shuffle(seed=0).batch(8, batch_fn=list))
    assert a == b
    # slices and threads reading (to_iter_dataset prefetches on a thread pool)
    opts = grain.ReadOptions(num_threads=8, prefetch_buffer_size=32)
    a = list(grain.MapDataset.source(ours).seed(3).shuffle()[100:900].to_iter_dataset(opts))
    b = list(grain.MapDataset.source(theirs).seed(3).shuffle()[100:900].to_iter_dataset(opts))
    assert a == b


def grain_loader(grain, source):
    sampler = grain.samplers.IndexSampler(
        num_records=len(source), shard_options=grain.sharding.NoSharding(), shuffle=True, num_epochs=1, seed=0
    )
    return grain.DataLoader(
        data_source=source, sampler=sampler, worker_count=2,
        operations=[grain.transforms.Batch(batch_size=16, batch_fn=list)],
    )


@pytest.mark.slow
def test_grain_data_loader_with_workers(ours, theirs):
    grain = pytest.importorskip("grain")
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()  # DataLoader reads absl flags
    # Most of this test's time is the start of 2 x 2 spawned interpreters
    # that import grain.
    a = list(grain_loader(grain, ours))
    b = list(grain_loader(grain, theirs))
    assert a == b
    assert sum(map(len, a)) == len(ours)
    assert sorted(r for batch in a for r in batch) == sorted(ours)


# -- pickling and worker processes ----------------------------------------------------------


def test_pickle_round_trip_in_process(shards, pattern):
    records = shards[2]
    with arrayfs.ArrayRecordDataSource(pattern) as ds:
        ds.__getitems__(np.arange(500))  # open the thread pool and fill the cache
        blob = pickle.dumps(ds)
        assert len(blob) < 10_000, "the pickle carries paths and counts, not data"
    before = mappings_of(shards[0])
    copy = pickle.loads(blob)
    assert mappings_of(shards[0]) == before, "files are opened lazily after unpickling"
    assert len(copy) == len(records)
    assert copy[len(records) - 1] == records[-1]
    assert copy.__getitems__(np.arange(len(records))) == records
    assert list(copy) == records
    copy.close()


def test_pickle_into_spawned_worker(shards, ours):
    records = shards[2]
    ours.__getitems__(np.arange(200))  # the parent's pool and cache exist
    idx = np.random.default_rng(5).integers(0, len(records), 700)
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as pool:
        batch = pool.submit(operator.methodcaller("__getitems__", idx), ours)
        single = pool.submit(operator.getitem, ours, 333)
        everything = pool.submit(list, ours)
        n = pool.submit(len, ours)
        assert batch.result(timeout=120) == [records[i] for i in idx]
        assert single.result(timeout=60) == records[333]
        assert everything.result(timeout=60) == records
        assert n.result(timeout=60) == len(records)


def _torch_batches(source, batch_size, timeout, num_workers=2):
    """Batches of a seeded, shuffled ``torch.utils.data.DataLoader`` over
    ``source`` (workers forked, the Linux default). Hung workers are killed
    on the way out so that a failure costs ``timeout`` seconds, no more."""
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader

    loader = DataLoader(
        source, batch_size=batch_size, num_workers=num_workers, shuffle=True,
        generator=torch.Generator().manual_seed(0), timeout=timeout if num_workers else 0,
    )
    it = iter(loader)
    try:
        return [list(b) for b in it]
    except BaseException:
        # Stop hung workers now (torch would join each for 5 s, later, from
        # a garbage collection in some other test). Unregister them first so
        # torch's SIGCHLD handler does not report the kill.
        from torch.utils.data import _utils

        if getattr(it, "_worker_pids_set", False):
            _utils.signal_handling._remove_worker_pids(id(it))
            it._worker_pids_set = False
        for w in getattr(it, "_workers", []):
            if w.is_alive():
                w.kill()
                w.join(5)
        if hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()
        raise


def test_torch_data_loader_two_workers(ours, theirs):
    """Google's source cannot be the oracle with forked workers (its C++
    readers segfault in them, array_record 0.8.6); it runs in-process with
    the same sampler seed instead, which yields the same batches."""
    pytest.importorskip("torch")
    a = _torch_batches(ours, 8, timeout=120)
    b = _torch_batches(theirs, 8, timeout=0, num_workers=0)
    assert a == b and sum(map(len, a)) == len(ours)


def test_torch_data_loader_after_parent_used_thread_pool(shards, pattern):
    """PyTorch forks its workers (Linux default). A source whose parent has
    already read a large batch (thread pool started) must still work in the
    forked workers, with batches large enough to use the pool there."""
    pytest.importorskip("torch")
    records = shards[2]
    with arrayfs.ArrayRecordDataSource(pattern) as ds:
        assert ds.__getitems__(np.arange(300)) == records[:300]
        got = _torch_batches(ds, 128, timeout=10)
    assert sorted(r for b in got for r in b) == sorted(records)



# -- threads ----------------------------------------------------------------------------------


def test_sixteen_threads_equal_serial(shards, pattern):
    records = shards[2]
    n = len(records)
    rng = np.random.default_rng(7)
    jobs = []
    for t in range(16):
        ops = []
        for _ in range(14):
            kind = rng.integers(0, 4)
            if kind == 0:
                ops.append(("one", int(rng.integers(0, n))))
            elif kind == 1:
                ops.append(("batch", rng.integers(0, n, int(rng.integers(1, 40)))))
            elif kind == 2:
                ops.append(("batch", rng.integers(0, n, int(rng.integers(64, 400)))))
            else:
                ops.append(("size", int(rng.integers(0, n))))
        if t % 8 == 0:
            ops.append(("iter", None))
        jobs.append(ops)

    def expected(op):
        kind, arg = op
        if kind == "one":
            return records[arg]
        if kind == "batch":
            return [records[i] for i in arg]
        if kind == "size":
            return len(records[arg])
        return records

    # a cache smaller than the data, so that chunks are evicted and decoded
    # again while other threads read them
    with arrayfs.ArrayRecordDataSource(pattern, cache_bytes=1 << 20, max_workers=2) as ds:
        def run(ops):
            barrier.wait()
            out = []
            for kind, arg in ops:
                if kind == "one":
                    out.append(ds[arg])
                elif kind == "batch":
                    out.append(ds.__getitems__(arg))
                elif kind == "size":
                    out.append(ds.record_size(arg))
                else:
                    out.append(list(ds))
            return out

        serial = [[expected(op) for op in ops] for ops in jobs]
        barrier = threading.Barrier(16)
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            results = list(pool.map(run, jobs))
        assert results == serial


# -- resources --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hundred(tmp_path_factory):
    d = tmp_path_factory.mktemp("hundred")
    # half zstd group_size 1, half uncompressed group_size 10 (zero-copy chunks in the cache)
    layout = [("group_size:1" if k % 2 else "group_size:10,uncompressed", 12) for k in range(100)]
    write_shards(d, layout, name="h-{:05d}-of-{:05d}.array_record", seed=0,
                 records=lambda n, seed: [b"%d:%d" % (seed, i) for i in range(n)])  # shard k: "k:i"
    return str(d)


@pytest.mark.slow
def test_open_close_1000_times_leaks_nothing(hundred):
    pat = os.path.join(hundred, "*.array_record")
    firsts = None

    def cycle(read):
        nonlocal firsts
        ds = arrayfs.ArrayRecordDataSource(pat)
        try:
            assert len(ds) == 1200
            if read:
                if firsts is None:
                    firsts = np.array([s.first_index for s in ds.shards])
                assert ds.__getitems__(firsts + 11)[7] == b"7:11"
                assert ds[1199] == b"99:11"
        finally:
            ds.close()

    for _ in range(3):  # warm up: lazily created module state
        cycle(True)
    with arrayfs.ArrayRecordDataSource(pat) as ds:  # a whole-dataset batch starts the batch helper
        ds.__getitems__(np.arange(1200))
    gc.collect()
    fds, maps, threads = fd_count(), mappings_of(hundred), threading.active_count()
    assert maps == 0
    t0 = time.perf_counter()
    for k in range(1000):
        cycle(k % 10 == 0)
    elapsed = time.perf_counter() - t0
    with arrayfs.ArrayRecordDataSource(pat) as ds:  # the with form too
        ds.__getitems__(np.arange(1200))
    gc.collect()
    assert fd_count() == fds
    assert mappings_of(hundred) == 0
    assert threading.active_count() == threads, [t.name for t in threading.enumerate()]
    print(f"1,000 open/close cycles of 100 shards: {elapsed:.1f} s")


def test_closed_source_reads_fail_cleanly(pattern):
    ds = arrayfs.ArrayRecordDataSource(pattern)
    ds.close()
    ds.close()  # twice is fine
    with pytest.raises((IndexError, ValueError)):
        ds[0]
