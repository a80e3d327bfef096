"""Shards on object storage: fsspec's ``memory://`` for the seam, and a real
S3-protocol server on loopback (moto in server mode, ``tests/_s3server.py``)
for everything S3 users do: read, write, glob, refresh, the CLI, and the
faults of a real store (503s, a store that refuses everything, objects
replaced or truncated under a reader). Google's wheel writes the shards
that are uploaded, and reads what arrayfs uploads.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

import fsspec
import numpy as np
import pytest
from _google import google, gwrite
from _httpserver import StaticServer
from _records import make_records as shared_records
from _s3server import FaultProxy
from _stores import check_reads, mounted, upload

import arrayfs
from arrayfs.storage import StorageError, backends
from arrayfs.storage import remote as remote_mod

LAYOUT = [("group_size:1", 120), ("group_size:16,brotli:5", 200), ("group_size:1,snappy", 80), ("group_size:50", 0),
          ("group_size:64,uncompressed", 150)]


def make_records(n: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        tag = b"s%d/r%d;" % (seed, i)
        out.append(tag + (rng.bytes(int(rng.integers(0, 2000))) if i % 3 else tag * int(rng.integers(0, 200))))
    if n > 7:
        out[7] = rng.bytes(100_000)  # crosses block boundaries
    return out



@pytest.fixture(scope="module")
def local_shards(tmp_path_factory):
    d = tmp_path_factory.mktemp("remote-src")
    paths, records = [], []
    for k, (options, n) in enumerate(LAYOUT):
        recs = make_records(n, k + 1)
        paths.append(gwrite(d / f"train-{k:05d}-of-{len(LAYOUT):05d}.array_record", options, recs))
        records.extend(recs)
    return paths, records


@pytest.fixture(scope="module")
def bucket(s3, local_shards):
    """A bucket holding the Google-written shards; ``(pattern URL, records,
    storage_options)``."""
    name = s3.make_bucket(f"arrayfs-{uuid.uuid4().hex[:10]}")
    fs = s3.filesystem()
    for p in local_shards[0]:
        fs.put_file(p, f"{name}/data/{os.path.basename(p)}")
    opts = {"endpoint_url": s3.endpoint}
    return f"s3://{name}/data/train-*.array_record", local_shards[1], opts, name




# -- memory:// : the seam itself --------------------------------------------------------------


def test_memory_write_read_glob_refresh():
    base = f"memory://arrayfs-{uuid.uuid4().hex[:8]}"
    recs = [make_records(30, 9), make_records(5, 10)]
    with arrayfs.ArrayRecordWriter(f"{base}/m-00000.array_record", "group_size:4") as w:
        for r in recs[0]:
            w.write(r)
    with arrayfs.ArrayRecordReader(f"{base}/m-00000.array_record") as r:
        assert r.read_all() == recs[0]
        assert r[-1] == recs[0][-1]
    with arrayfs.ArrayRecordDataSource(f"{base}/m-*.array_record") as ds:
        assert list(ds) == recs[0]
        with arrayfs.ArrayRecordWriter(f"{base}/m-00001.array_record") as w:
            for r in recs[1]:
                w.write(r)
        res = ds.refresh()
        # Listed URLs come back in fsspec's spelling (memory:///...).
        assert [p.rsplit("/", 1)[1] for p in res.added] == ["m-00001.array_record"] and not res.removed
        assert list(ds) == recs[0] + recs[1]
        fsspec.filesystem("memory").rm(f"{base}/m-00000.array_record")
        res = ds.refresh()
        assert [p.rsplit("/", 1)[1] for p in res.removed] == ["m-00000.array_record"]
        assert list(ds) == recs[1]


def test_obstore_mode_reads_other_schemes_through_fsspec(s3):
    """``ARRAYFS_REMOTE_BACKEND=obstore`` is about ``s3://`` URLs: one whose
    options obstore cannot take is an error, while other schemes (obstore
    serves none) read through fsspec."""
    base = f"memory://arrayfs-ob-{uuid.uuid4().hex[:8]}"
    recs = make_records(20, 11)
    with arrayfs.ArrayRecordWriter(f"{base}/m.array_record", "group_size:4") as w:
        for r in recs:
            w.write(r)
    old = backends.backend()
    backends.set_backend("obstore")
    try:
        with arrayfs.ArrayRecordReader(f"{base}/m.array_record") as r:
            assert r[3] == recs[3] and r.read_all() == recs
        name = s3.make_bucket(f"arrayfs-ob-{uuid.uuid4().hex[:8]}")
        url = _upload(s3, name, "f.array_record", recs)
        opts = {"endpoint_url": s3.endpoint, "client_kwargs": {"verify": False}}  # no obstore equivalent
        with pytest.raises(StorageError, match="obstore cannot serve"):
            arrayfs.ArrayRecordReader(url, storage_options=opts)
    finally:
        backends.set_backend(old)


# -- S3 on loopback -------------------------------------------------------------------------------


def test_dataset_on_s3_reads_what_google_wrote(bucket, local_shards):
    pattern, records, opts, _ = bucket
    with arrayfs.ArrayRecordDataSource(pattern, storage_options=opts) as ds:
        assert len(ds) == len(records)
        assert [s.path.rsplit("/", 1)[1] for s in ds.shards] == [os.path.basename(p) for p in local_shards[0]]
        check_reads(ds, records, np.random.default_rng(3), singles=60, batch=300)
        assert [ds.record_size(i) for i in range(0, len(records), 7)] == [len(records[i]) for i in
                                                                           range(0, len(records), 7)]
    with arrayfs.ArrayRecordDataSource(local_shards[0]) as local:
        with arrayfs.ArrayRecordDataSource(pattern, storage_options=opts) as ds:
            assert repr(ds) == repr(local)  # Grain checkpoints move between disk and bucket


@pytest.mark.parametrize("workers", [1, 2])
def test_iteration_of_shards_cut_mid_chunk_on_s3(bucket, local_shards, workers):
    """In-order iteration of S3 shards cut by read instructions mid-chunk:
    one-record chunks read on the calling thread, larger chunks decoded on
    the pool ahead (two workers) or in turn (one), every block's bytes
    fetched ahead."""
    pattern, records, opts, name = bucket
    cuts = [(5, 117), (3, 190), (0, 80), (1, 149)]
    kept = [k for k, (_, n) in enumerate(LAYOUT) if n]
    spec = [f"s3://{name}/data/{os.path.basename(local_shards[0][k])}[{a}:{b}]" for k, (a, b) in zip(kept, cuts)]
    want = []
    for k, (a, b) in zip(kept, cuts):
        first = sum(n for _, n in LAYOUT[:k])
        want += records[first + a : first + b]
    with arrayfs.ArrayRecordDataSource(spec, storage_options=opts, max_workers=workers) as ds:
        assert list(ds) == want


def test_endpoint_from_the_environment(bucket, monkeypatch, s3):
    pattern, records, _, _ = bucket
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint)
    fsspec.config.conf.pop("s3", None)
    with arrayfs.ArrayRecordDataSource(pattern) as ds:
        assert ds[len(records) - 1] == records[-1]


def test_reader_and_compat_source_on_s3(bucket, local_shards):
    _, records, opts, name = bucket
    url = f"s3://{name}/data/{os.path.basename(local_shards[0][1])}"
    want = make_records(LAYOUT[1][1], 2)
    with arrayfs.ArrayRecordReader(url, storage_options=opts) as r:
        assert r.num_records() == len(want)
        assert r.read_all() == want
        assert r.read([5, 1, 150]) == [want[5], want[1], want[150]]
        assert r.writer_options_string().startswith("group_size:16")


def test_writer_uploads_on_close_and_google_reads_it(s3, tmp_path):
    name = s3.make_bucket(f"arrayfs-w-{uuid.uuid4().hex[:8]}")
    fs = s3.filesystem()
    url = f"s3://{name}/out/w.array_record"
    recs = make_records(500, 21)
    w = arrayfs.ArrayRecordWriter(url, "group_size:8,zstd:1", storage_options={"endpoint_url": s3.endpoint})
    for r in recs:
        w.write(r)
    assert not fs.exists(url), "nothing appears before close()"
    w.close()
    fs.get_file(url, str(tmp_path / "w.array_record"))
    g = google.ArrayRecordReader(str(tmp_path / "w.array_record"))
    assert g.read_all() == recs
    assert g.writer_options_string().startswith("group_size:8")
    g.close()


def test_failed_write_uploads_nothing(s3):
    name = s3.make_bucket(f"arrayfs-w-{uuid.uuid4().hex[:8]}")
    url = f"s3://{name}/out/never.array_record"
    with pytest.raises(RuntimeError, match="boom"):
        with arrayfs.ArrayRecordWriter(url, storage_options={"endpoint_url": s3.endpoint}) as w:
            w.write(b"x")
            raise RuntimeError("boom")
    w2 = arrayfs.ArrayRecordWriter(url, storage_options={"endpoint_url": s3.endpoint})
    w2.write(b"y")
    w2.abort()
    assert not s3.filesystem().exists(url)


@pytest.fixture(params=["obstore", "fsspec"])
def backend(request):
    """Each fault test runs through both clients of remote reads."""
    old = backends.backend()
    backends.set_backend(request.param)
    yield request.param
    backends.set_backend(old)


@pytest.fixture()
def proxy(s3):
    p = FaultProxy(s3.endpoint)
    yield p
    p.stop()


def test_open_costs_one_request_per_shard(s3, proxy, backend):
    name = s3.make_bucket(f"arrayfs-o-{uuid.uuid4().hex[:8]}")
    fs = s3.filesystem()
    n = 12
    for k in range(n):
        with fs.open(f"{name}/o-{k:03d}.array_record", "wb") as f:
            with arrayfs.ArrayRecordWriter(f, "group_size:1") as w:
                for i in range(200 + 10 * k):
                    w.write(b"%d:%d" % (k, i) * 20)
    proxy.reset()
    with arrayfs.ArrayRecordDataSource(f"s3://{name}/o-*.array_record",
                                       storage_options={"endpoint_url": proxy.endpoint}) as ds:
        assert len(ds) == sum(200 + 10 * k for k in range(n))
        opened = dict(proxy.gets)
        total = proxy.total
    per_object = {k: v for k, v in opened.items() if k.endswith(".array_record")}
    assert len(per_object) == n
    assert max(per_object.values()) == 1, per_object  # the tail; size and ETag came with the listing
    assert total == n + 1, proxy.requests  # + the listing
    assert proxy.requests == {"GET": n + 1}, proxy.requests


def test_injected_503s_are_retried(s3, proxy, backend):
    name = s3.make_bucket(f"arrayfs-503-{uuid.uuid4().hex[:8]}")
    recs = noise(3000, 200, 1)  # 600 KB: the first records lie outside the tail read at open
    url = _upload(s3, name, "f.array_record", recs)
    opts = {"endpoint_url": proxy.endpoint}
    proxy.fail_next = 3
    with arrayfs.ArrayRecordDataSource(url, storage_options=opts) as ds:
        assert proxy.fail_next == 0
        proxy.fail_next = 4
        assert ds[10] == recs[10]
        assert ds.__getitems__([0, 5, 900, len(recs) - 1]) == [recs[0], recs[5], recs[900], recs[-1]]
    assert proxy.fail_next == 0


def test_refusing_store_fails_naming_the_url_in_bounded_time(s3, proxy, backend):
    name = s3.make_bucket(f"arrayfs-rf-{uuid.uuid4().hex[:8]}")
    records = noise(3000, 200, 2)
    pattern = _upload(s3, name, "data/f-0.array_record", records).replace("/data/f-0", "/data/f-*")
    # Few retries on every level, so that the bound is short here; the
    # same path with the default policy gives up after its deadline.
    opts = {"endpoint_url": proxy.endpoint, "config_kwargs": {"retries": {"max_attempts": 1}}}
    old = remote_mod._default_retry
    remote_mod.set_retry_policy(remote_mod.RetryPolicy(attempts=3, backoff=0.05, deadline=5))
    try:
        ds = arrayfs.ArrayRecordDataSource(pattern, storage_options=opts)
        proxy.refuse = True
        t0 = time.monotonic()
        with pytest.raises(StorageError) as e:
            ds[3]
        assert time.monotonic() - t0 < 60
        assert f"s3://{name}/data/" in str(e.value) and "cannot read" in str(e.value)
        with pytest.raises(StorageError):
            arrayfs.ArrayRecordDataSource(pattern, storage_options=opts)
        proxy.refuse = False
        assert ds[3] == records[3]  # the store is back: so is the dataset
        ds.close()
    finally:
        remote_mod.set_retry_policy(old)


@pytest.fixture()
def short_deadline():
    """A retry policy whose deadline (4 s) a test can wait out."""
    old = remote_mod._default_retry
    remote_mod.set_retry_policy(remote_mod.RetryPolicy(attempts=3, backoff=0.05, deadline=4))
    yield 4
    remote_mod.set_retry_policy(old)


def test_stalled_request_is_retried_and_a_silent_store_fails_within_the_deadline(s3, proxy, backend,
                                                                                 short_deadline):
    """A request the store takes and never answers is cut off (half the
    time left of the deadline) and retried; a store that answers nothing
    at all ends the read within the deadline, naming the URL and range."""
    name = s3.make_bucket(f"arrayfs-st-{uuid.uuid4().hex[:8]}")
    recs = noise(3000, 200, 3)  # 600 KB: record 10 lies outside the tail read at open
    url = _upload(s3, name, "f.array_record", recs)
    with arrayfs.ArrayRecordDataSource(url, storage_options={"endpoint_url": proxy.endpoint}) as ds:
        proxy.stall_next = 1
        t0 = time.monotonic()
        assert ds[10] == recs[10]
        assert proxy.stall_next == 0 and time.monotonic() - t0 < short_deadline
        proxy.stall = True
        t0 = time.monotonic()
        with pytest.raises(StorageError) as e:
            ds[20]
        took = time.monotonic() - t0
        assert took < short_deadline + 1, took
        assert url in str(e.value) and "cannot read bytes [" in str(e.value), e.value


def noise(n: int, size: int, seed: int) -> list[bytes]:
    """``n`` incompressible records of ``size`` bytes: their shard is as
    big as they are, so that most of it lies outside the tail read at open."""
    return shared_records(n, seed, size=(size, size + 1), tag=True, compressible=False)


def _upload(s3, name, key, recs, options="group_size:1") -> str:
    return upload(s3, "s3", name, key, recs, options)


@pytest.mark.parametrize("kind", ["reader", "dataset"])
def test_iterating_larger_chunks_on_s3_asks_for_the_bytes_ahead_in_few_requests(s3, proxy, kind):
    # 3 MB in 47 chunks of 64 records: the pool decodes two blocks at a
    # time, but the bytes of all of them are asked for at the start, in
    # pieces of up to 8 MiB, not a request or two per block as the pool
    # reaches it.
    name = s3.make_bucket(f"arrayfs-it-{uuid.uuid4().hex[:8]}")
    recs = noise(3000, 1000, 5)
    url = _upload(s3, name, "big.array_record", recs, "group_size:64,uncompressed")
    opts = {"endpoint_url": proxy.endpoint}
    if kind == "reader":
        src = arrayfs.ArrayRecordReader(url, "max_parallelism:2", storage_options=opts)
    else:
        src = arrayfs.ArrayRecordDataSource(url, storage_options=opts, max_workers=2)
    with src:
        proxy.reset()
        assert list(src) == recs
        gets = proxy.requests.get("GET", 0)
    assert 1 <= gets <= 4, proxy.requests


def test_reader_stepping_through_chunks_of_many_records_asks_once_per_chunk(s3, proxy):
    """reader[i] for i in order on a store: each chunk of 16 records is
    fetched whole for any record of it, so the records after the first come
    from the chunk kept, not from a request each (there were 801 GETs for
    800 records)."""
    name = s3.make_bucket(f"arrayfs-st-{uuid.uuid4().hex[:8]}")
    recs = noise(800, 1000, 6)
    url = _upload(s3, name, "step.array_record", recs, "group_size:16")
    with arrayfs.ArrayRecordReader(url, storage_options={"endpoint_url": proxy.endpoint}) as r:
        proxy.reset()
        assert [r[i] for i in range(len(r))] == recs
        assert proxy.requests.get("GET", 0) <= 50 + 2, proxy.requests  # 50 chunks
        assert r[-1] == recs[-1] and r[5] == recs[5] and r[3:7] == recs[3:7]


def test_object_replaced_after_open_is_an_error_not_mixed_bytes(s3, backend):
    name = s3.make_bucket(f"arrayfs-c-{uuid.uuid4().hex[:8]}")
    old = noise(400, 2000, 3)
    new = noise(400, 2000, 4)  # same sizes, same layout; 800 KB, beyond the tail read at open
    url = _upload(s3, name, "c.array_record", old)
    opts = {"endpoint_url": s3.endpoint}
    with arrayfs.ArrayRecordDataSource(url, storage_options=opts) as ds:
        assert ds[0] == old[0]
        _upload(s3, name, "c.array_record", new)
        with pytest.raises(arrayfs.FileChangedError) as e:
            ds[1]
        assert url in str(e.value)
        for i in (0, 1, 200, 399):  # cached or not: old bytes or an error, never new ones
            try:
                assert ds[i] == old[i]
            except arrayfs.FileChangedError:
                pass
        res = ds.refresh()
        assert res.added == (url,) and res.removed == (url,)
        assert ds[399] == new[399]


def test_truncated_object_is_a_truncated_file_error(s3, backend):
    name = s3.make_bucket(f"arrayfs-t-{uuid.uuid4().hex[:8]}")
    recs = noise(3000, 200, 5)
    url = _upload(s3, name, "t.array_record", recs)
    fs = s3.filesystem()
    full = fs.cat_file(url)
    with arrayfs.ArrayRecordDataSource(url, storage_options={"endpoint_url": s3.endpoint}) as ds:
        fs.pipe_file(url, full[: 2 * 65536])
        with pytest.raises(arrayfs.TruncatedFileError) as e:
            ds[1]  # outside the tail read at open
        assert url in str(e.value)


@pytest.mark.parametrize("kind", ["scheme", "bucket", "object", "glob"])
def test_bad_urls_are_one_line_errors_naming_the_url(s3, kind):
    opts = {"endpoint_url": s3.endpoint}
    url = {
        "scheme": "nosuchscheme://bucket/x.array_record",
        "bucket": f"s3://no-such-bucket-{uuid.uuid4().hex[:6]}/x.array_record",
        "object": f"s3://{s3.make_bucket('arrayfs-empty')}/missing.array_record",
        "glob": f"s3://{s3.make_bucket('arrayfs-empty')}/none-*.array_record",
    }[kind]
    with pytest.raises(OSError) as e:
        arrayfs.ArrayRecordDataSource(url, storage_options=opts)
    text = f"{e.value.filename}: {e.value.strerror}" if e.value.filename else str(e.value)
    assert url in text and "\n" not in text, text


def _cli(*args):
    env = dict(os.environ)
    return subprocess.run([sys.executable, "-m", "arrayfs", *map(str, args)], capture_output=True, env=env,
                          timeout=120)


def test_cli_ls_cat_info_verify_on_s3(bucket, s3):
    pattern, records, _, _ = bucket
    so = ["--storage-option", f"endpoint_url={s3.endpoint}"]
    p = _cli("ls", "-l", pattern, *so)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.decode().splitlines()
    assert len(lines) == len(records)
    assert [int(line.split("\t")[3]) for line in lines[:20]] == [len(r) for r in records[:20]]
    p = _cli("cat", pattern, "5", "7", *so)
    assert p.returncode == 0, p.stderr
    assert p.stdout == records[5] + records[7]
    p = _cli("info", "--json", pattern, *so)
    assert p.returncode == 0, p.stderr
    info = json.loads(p.stdout)
    assert info["num_records"] == len(records) and info["record_bytes"] == sum(map(len, records))
    p = _cli("verify", "--no-progress", pattern, *so)
    assert p.returncode == 0, p.stdout + p.stderr
    assert b"OK: 5 shards" in p.stdout
    p = _cli("ls", "s3://arrayfs-nope-bucket/x-*.array_record", *so)
    assert p.returncode == 1 and p.stderr.decode().count("\n") == 1 and b"s3://arrayfs-nope-bucket" in p.stderr


def test_nnx_source_reads_shuffled_epochs_from_s3(bucket):
    pytest.importorskip("flax")
    pattern, records, opts, _ = bucket
    from arrayfs import ArrayRecordSourceConfig, ArrayRecordSourceModule

    config = ArrayRecordSourceConfig(seed=3, num_epochs=1, shuffle_files=True, shard_index=0, shard_count=1)
    src = ArrayRecordSourceModule(config, pattern, storage_options=opts)
    got = [bytes(el["data"]) for el in src]
    assert sorted(got) == sorted(records) and got != records  # every record once, shuffled
    src.close()


def test_refresh_lists_the_bucket_afresh(s3):
    name = s3.make_bucket(f"arrayfs-r-{uuid.uuid4().hex[:8]}")
    a = _upload(s3, name, "r-00000.array_record", [b"a%d" % i for i in range(5)])
    with arrayfs.ArrayRecordDataSource(f"s3://{name}/r-*.array_record",
                                       storage_options={"endpoint_url": s3.endpoint}) as ds:
        assert len(ds) == 5
        b = _upload(s3, name, "r-00001.array_record", [b"b%d" % i for i in range(3)])
        res = ds.refresh()
        assert res.added == (b,) and not res.removed
        assert ds[6] == b"b1"
        s3.filesystem().rm(a)
        assert ds.refresh().removed == (a,)
        assert list(ds) == [b"b0", b"b1", b"b2"]


def test_mount_workers_read_through_obstore_one_request_per_record(s3, tmp_path):
    """A bucket mount's worker processes read through obstore (the command
    and the coordinator that fork them read through fsspec, since obstore's
    runtime does not survive a fork), reuse the chunk indexes read before
    the fork, and fetch each record with one request: no metadata request
    and no second read of the shard's tail."""
    name = s3.make_bucket(f"arrayfs-mw-{uuid.uuid4().hex[:8]}")
    recs = noise(3000, 200, 11)  # 600 KB: most records lie outside the tail kept from the open
    url = _upload(s3, name, "m/a-0.array_record", recs)
    proxy = FaultProxy(s3.endpoint)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        with mounted(url.replace("/a-0", "/a-*"), mnt, {"endpoint_url": proxy.endpoint}, "-o", "workers=2"):
            names = sorted(n for n in os.listdir(mnt) if n[0] != ".")
            assert len(names) == len(recs)
            assert proxy.agents and not any(a.startswith("object_store") for a in proxy.agents), proxy.agents
            proxy.reset()
            picks = list(range(0, 1500, 97))  # records ~25 KB apart: no read-ahead, no shared request
            for i in picks:
                assert (mnt / names[i]).read_bytes() == recs[i]
            assert proxy.requests == {"GET": len(picks)}, proxy.lines
            assert all(a.startswith("object_store") for a in proxy.agents), set(proxy.agents)
            proxy.reset()
            assert (mnt / names[picks[3]]).read_bytes() == recs[picks[3]]
            assert proxy.total == 0  # the kernel's page cache
    finally:
        proxy.stop()


def test_a_forked_child_reads_the_shards_its_parent_opened(s3, backend):
    """A child forked after its parent read a bucket (PyTorch's DataLoader
    workers) reads the same open shards: with a client of its own (fsspec
    when obstore ran in the parent, whose runtime the child lacks), never
    hanging on the parent's event loop or runtime."""
    import multiprocessing

    name = s3.make_bucket(f"arrayfs-fk-{uuid.uuid4().hex[:8]}")
    recs = noise(3000, 200, 12)
    url = _upload(s3, name, "f.array_record", recs)
    with arrayfs.ArrayRecordDataSource(url, storage_options={"endpoint_url": s3.endpoint}) as ds:
        assert ds[5] == recs[5]
        h = ds.snapshot().file(0)._source.prefetch([(0, 300_000)])  # in flight at the fork
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(1) as pool:
            got = pool.apply_async(_child_reads, (ds, [1, 700, 2999])).get(timeout=60)
        h.close()
        assert got == ([recs[1], recs[700], recs[2999]], "fsspec")
        assert ds[6] == recs[6]


def _child_reads(ds, picks):
    return [ds[i] for i in picks], ds.snapshot().file(0)._source.backend


# -- https:// (fsspec HTTP) on loopback -------------------------------------------------------


@pytest.fixture()
def www(tmp_path):
    """A static HTTP server of a fresh directory: ``(server, directory)``."""
    d = tmp_path / "www"
    d.mkdir()
    server = StaticServer(d)
    yield server, d
    server.stop()


def _write_g1(path, recs) -> None:
    with arrayfs.ArrayRecordWriter(str(path), "group_size:1,uncompressed") as w:
        for r in recs:
            w.write(r)


@pytest.mark.parametrize("server_pins", ["if-match", "etag", "last-modified"])
def test_http_object_replaced_after_open_is_an_error_not_mixed_bytes(www, tmp_path, server_pins):
    """A same-size object replaced behind an ``http://`` URL: reads are
    pinned with ``If-Match`` to the listed ETag, or, where the server
    ignores it or sends no ETag, checked against each answer's ETag or
    Last-Modified: a FileChangedError, never records of the new version."""
    server, d = www
    server.if_match = server_pins == "if-match"
    server.etags = server_pins != "last-modified"
    old, new = noise(400, 2000, 40), noise(400, 2000, 41)
    _write_g1(d / "c.array_record", old)
    _write_g1(tmp_path / "new.array_record", new)
    url = f"{server.endpoint}/c.array_record"
    with arrayfs.ArrayRecordDataSource(url) as ds:
        assert ds[0] == old[0]
        mtime = os.stat(d / "c.array_record").st_mtime
        os.utime(tmp_path / "new.array_record", (mtime + 10, mtime + 10))  # Last-Modified has whole seconds
        os.replace(tmp_path / "new.array_record", d / "c.array_record")
        with pytest.raises(arrayfs.FileChangedError) as e:
            ds[1]  # outside the tail read at open
        assert url in str(e.value)


def test_http_glob_over_a_directory_index_reads_the_shards(www):
    """fsspec's HTTP glob lists a directory index with no sizes: each file
    found costs one metadata request, and the shards read."""
    server, d = www
    recs = [noise(50, 300, 50), noise(70, 300, 51)]
    for k, r in enumerate(recs):
        _write_g1(d / f"train-{k:05d}.array_record", r)
    (d / "notes.txt").write_text("not a shard")
    with arrayfs.ArrayRecordDataSource(f"{server.endpoint}/train-*.array_record") as ds:
        assert len(ds.shards) == 2
        assert list(ds) == recs[0] + recs[1]
        assert ds[60] == recs[1][10]


def test_http_server_ignoring_range_is_a_storage_error_saying_so(www):
    """A server that answers a ranged GET with the whole object (200) is a
    StorageError naming the URL, the range and the cause, not a truncated
    file."""
    server, d = www
    server.ranges = False
    _write_g1(d / "t.array_record", noise(3000, 300, 60))
    url = f"{server.endpoint}/t.array_record"
    with pytest.raises(StorageError) as e:
        arrayfs.ArrayRecordDataSource(url)
    assert not isinstance(e.value, arrayfs.TruncatedFileError)
    assert url in str(e.value) and "does not honour Range requests" in str(e.value), e.value
    assert "cannot read bytes [" in str(e.value)


def test_http_stalled_request_is_retried_within_the_deadline(www, short_deadline):
    """fsspec's HTTP client, like gcsfs, waits for an answer as long as the
    server keeps the connection: a stalled request is cut off and retried."""
    server, d = www
    recs = noise(3000, 200, 70)
    _write_g1(d / "f.array_record", recs)
    proxy = FaultProxy(server.endpoint)
    try:
        with arrayfs.ArrayRecordDataSource(f"{proxy.endpoint}/f.array_record") as ds:
            proxy.stall_next = 1
            t0 = time.monotonic()
            assert ds[10] == recs[10]
            assert proxy.stall_next == 0 and time.monotonic() - t0 < short_deadline
    finally:
        proxy.stop()
