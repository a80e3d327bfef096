"""Refresh of a dataset: shards added, removed, half written and rewritten,
a read in flight over a refresh, mappings released, reads during
refreshes."""

from __future__ import annotations

import gc
import glob
import os
import random
import shutil
import threading
import time
import warnings

import numpy as np
import pytest
from _dataset_shards import LAYOUT, fd_count, google_ds, mappings_of
from _google import gwrite

import arrayfs

google = pytest.importorskip("array_record.python.array_record_module", reason="array-record wheel not installed")

pytestmark = pytest.mark.usefixtures("quiet_absl")


# -- refresh ---------------------------------------------------------------------------------


@pytest.fixture
def live(tmp_path, shards):
    """A directory holding copies of shards 0..2 (of the module's shards)."""
    d = tmp_path / "live"
    d.mkdir()
    for p in shards[1][:3]:
        shutil.copy(p, d / os.path.basename(p))
    return d


def live_records(shards, ks):
    n = [n for _, n in LAYOUT]
    offsets = np.concatenate([[0], np.cumsum(n)]).tolist()
    return [r for k in ks for r in shards[2][offsets[k] : offsets[k + 1]]]


def test_refresh_added_removed_half_written(live, shards):
    _, paths, _ = shards
    pat = str(live / "train-*-of-*.array_record")
    with arrayfs.ArrayRecordDataSource(pat) as ds:
        assert list(ds) == live_records(shards, [0, 1, 2])
        r = ds.refresh()
        assert not r.changed and r.added == r.removed == ()

        # a shard added
        added = shutil.copy(paths[4], live / os.path.basename(paths[4]))
        r = ds.refresh()
        assert r.added == (str(added),) and r.removed == () and r.changed
        want = live_records(shards, [0, 1, 2, 4])
        assert len(ds) == len(want) and list(ds) == want
        theirs = google_ds.ArrayRecordDataSource(sorted(glob.glob(pat)))
        idx = np.random.default_rng(0).integers(0, len(want), 300)
        assert ds.__getitems__(idx) == theirs.__getitems__(idx.tolist()) == [want[i] for i in idx]

        # a shard removed
        os.remove(live / os.path.basename(paths[1]))
        r = ds.refresh()
        assert r.removed == (str(live / os.path.basename(paths[1])),) and r.added == ()
        want = live_records(shards, [0, 2, 4])
        assert list(ds) == want and ds.__getitems__(np.arange(len(want))) == want
        assert [s.path for s in ds.shards] == [str(live / os.path.basename(paths[k])) for k in (0, 2, 4)]

        # a shard being written: the first half of a valid shard's bytes
        blob = open(paths[5], "rb").read()
        half = live / os.path.basename(paths[5])
        half.write_bytes(blob[: len(blob) // 2])
        with pytest.warns(arrayfs.PendingShardWarning, match=os.path.basename(paths[5])):
            r = ds.refresh()
        assert r.added == () and r.removed == ()
        assert [p for p, _ in r.pending] == [str(half)]
        assert list(ds) == want
        # still being written: tried again, left out again
        with pytest.warns(arrayfs.PendingShardWarning, match=os.path.basename(paths[5])):
            r = ds.refresh()
        assert [p for p, _ in r.pending] == [str(half)] and not r.changed

        # the writer finishes
        half.write_bytes(blob)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            r = ds.refresh()
        assert r.added == (str(half),) and r.pending == ()
        want = live_records(shards, [0, 2, 4, 5])
        assert list(ds) == want
        assert ds.shards[-1].first_index == len(want) - LAYOUT[5][1]


def test_refresh_of_a_shard_listed_twice_changes_nothing(live, shards):
    """A path given twice (or matched by a glob and named too) is two
    shards of one spec: a refresh with nothing changed on disk keeps both,
    reports nothing and pins no file."""
    first = sorted(glob.glob(str(live / "*")))[0]
    with arrayfs.ArrayRecordDataSource([first, str(live / "*"), first]) as ds:
        before = [ds[i] for i in range(len(ds))]
        snap = ds.snapshot()
        result = ds.refresh()
        assert not result.changed, result
        assert ds.snapshot() is snap
        assert [ds[i] for i in range(len(ds))] == before


def test_refresh_half_written_on_block_boundary(live, big_shard):
    """A writer's partial file usually ends on a 64 KiB boundary; it must
    still be recognised as incomplete."""
    path, recs = big_shard
    blob = open(path, "rb").read()
    pat = str(live / "*.array_record")
    with arrayfs.ArrayRecordDataSource(pat) as ds:
        n0 = len(ds)
        target = live / "zzz-big.array_record"
        for cut in range(2 * 65536, len(blob), 65536):
            target.write_bytes(blob[:cut])
            with pytest.warns(arrayfs.PendingShardWarning, match="zzz-big"):
                r = ds.refresh()
            assert not r.changed and len(ds) == n0
        target.write_bytes(blob)
        assert ds.refresh().added == (str(target),)
        assert ds.__getitems__(np.arange(n0, n0 + len(recs))) == recs


def test_refresh_rewritten_shard(live, shards):
    _, paths, _ = shards
    with arrayfs.ArrayRecordDataSource(str(live / "*.array_record")) as ds:
        ds.__getitems__(np.arange(len(ds)))  # cache chunks of the old file
        target = live / os.path.basename(paths[1])
        new = [b"new %d" % i for i in range(70)]
        tmp = live / "tmp.partial"
        gwrite(tmp, "group_size:100,brotli:6", new)
        os.replace(tmp, target)  # atomic replace, as writers should
        r = ds.refresh()
        assert str(target) in r.added and str(target) in r.removed
        want = live_records(shards, [0]) + new + live_records(shards, [2])
        assert list(ds) == want
        assert ds.__getitems__(np.arange(len(want))) == want
        assert [ds[i] for i in range(len(want))] == want


def test_read_in_flight_finishes_on_old_snapshot(live, shards):
    _, paths, _ = shards
    want = live_records(shards, [0, 1, 2])
    with arrayfs.ArrayRecordDataSource(str(live / "*.array_record")) as ds:
        it = iter(ds)
        head = [next(it) for _ in range(10)]
        os.remove(live / os.path.basename(paths[2]))  # not read yet
        os.remove(live / os.path.basename(paths[1]))
        assert len(ds.refresh().removed) == 2
        gc.collect()
        rest = list(it)
        assert head + rest == want
        assert list(ds) == live_records(shards, [0])


def test_refresh_releases_mappings_of_removed_shards(live, shards):
    _, paths, _ = shards
    with arrayfs.ArrayRecordDataSource(str(live / "*.array_record")) as ds:
        ds.__getitems__(np.arange(len(ds)))
        gone = str(live / os.path.basename(paths[1]))
        assert mappings_of(gone) >= 1
        fds = fd_count()
        os.remove(gone)
        ds.refresh()
        gc.collect()
        assert mappings_of(gone) == 0
        assert fd_count() <= fds
    assert mappings_of(str(live)) == 0


def test_reads_during_refreshes(tmp_path):
    """Readers in 4 threads while the main thread removes, re-adds and
    refreshes shards 30 times: every read returns a valid record or a
    clean IndexError, never another error."""
    d = tmp_path / "churn"
    d.mkdir()
    recs = {}
    for k in range(6):
        rs = [b"shard%d:%d:" % (k, i) + bytes(i % 50) for i in range(200)]
        recs[k] = rs
        gwrite(d / f"c-{k}.array_record", "group_size:1" if k % 2 else "group_size:100,zstd:1", rs)
    valid = {r for rs in recs.values() for r in rs}
    stash = tmp_path / "stash"
    stash.mkdir()
    errors, stop = [], threading.Event()
    with arrayfs.ArrayRecordDataSource(str(d / "*.array_record"), cache_bytes=1 << 14) as ds:

        def reader(seed):
            rng = np.random.default_rng(seed)
            try:
                while not stop.is_set():
                    n = 4 * 200  # at least 4 of the 6 shards are always there
                    got = ds.__getitems__(rng.integers(0, n, 100)) + [ds[int(rng.integers(0, n))]]
                    assert all(r in valid for r in got)
                    # each in-order read sees one snapshot: one shard's records in order
                    first = ds.__getitems__(np.arange(0, 200))
                    k = int(first[0].split(b":")[0][5:])
                    assert first == recs[k]
            except Exception as e:  # noqa: BLE001
                errors.append(e)

        threads = [threading.Thread(target=reader, args=(s,)) for s in range(4)]
        for t in threads:
            t.start()
        try:
            rng = random.Random(0)
            for _ in range(30):
                k = rng.randrange(6)
                a, b = d / f"c-{k}.array_record", stash / f"c-{k}.array_record"
                if a.exists() and len(os.listdir(d)) > 4:
                    os.replace(a, b)
                elif b.exists():
                    os.replace(b, a)
                ds.refresh()
                time.sleep(0.005)
        finally:
            stop.set()
            for t in threads:
                t.join(60)
        assert not errors, errors[:3]
