"""``gs://`` for real: gcsfs against a GCS-protocol emulator on loopback
(``tests/_gcsserver.py``; CI starts it): the dataset, the reader, the
writer's upload, the mount, one request per shard at open with every read
pinned to the listed generation, and 503s retried. Google's wheel writes the
shards that are uploaded and reads what arrayfs uploads.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.parse
import uuid

import numpy as np
import pytest
from _gcsserver import start_gcs
from _google import google, gwrite
from _records import make_records
from _s3server import FaultProxy
from _stores import check_reads, mounted, upload

import arrayfs
from arrayfs.storage import backends
from arrayfs.storage import remote as remote_mod


def noise(n: int, size: int, seed: int) -> list[bytes]:
    return make_records(n, seed, size=(0, size), tag=True, compressible=False)


@pytest.fixture(scope="module")
def gcs():
    server = start_gcs()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def bucket(gcs, tmp_path_factory):
    """Google-written shards in a bucket: ``(pattern, records, name)``."""
    d = tmp_path_factory.mktemp("gcs-src")
    name = gcs.make_bucket(f"arrayfs-{uuid.uuid4().hex[:10]}")
    fs = gcs.filesystem()
    records = []
    for k, options in enumerate(["group_size:1", "group_size:32,brotli:3", "group_size:1,snappy"]):
        recs = noise(300, 3000, k)
        p = gwrite(d / f"train-{k:05d}-of-00003.array_record", options, recs)
        fs.put_file(str(p), f"{name}/data/{os.path.basename(p)}")
        records.extend(recs)
    return f"gs://{name}/data/train-*.array_record", records, name


def test_dataset_and_reader_on_gcs_read_what_google_wrote(gcs, bucket):
    pattern, records, name = bucket
    with arrayfs.ArrayRecordDataSource(pattern, storage_options=gcs.storage_options) as ds:
        assert len(ds) == len(records)
        check_reads(ds, records, np.random.default_rng(1))
    url = f"gs://{name}/data/train-00001-of-00003.array_record"
    with arrayfs.ArrayRecordReader(url, storage_options=gcs.storage_options) as r:
        assert r.read_all() == records[300:600]
        assert r.read([299, 0, 31, 32]) == [records[300 + i] for i in (299, 0, 31, 32)]
        assert r.writer_options_string().startswith("group_size:32")


def test_writer_uploads_to_gcs_on_close_and_google_reads_it(gcs, tmp_path):
    name = gcs.make_bucket(f"arrayfs-w-{uuid.uuid4().hex[:8]}")
    url = f"gs://{name}/out/w.array_record"
    recs = noise(500, 2000, 7)
    w = arrayfs.ArrayRecordWriter(url, "group_size:8,zstd:1", storage_options=gcs.storage_options)
    for r in recs:
        w.write(r)
    fs = gcs.filesystem()
    assert not fs.exists(url), "nothing appears before close()"
    w.close()
    fs.get_file(url, str(tmp_path / "w.array_record"))
    g = google.ArrayRecordReader(str(tmp_path / "w.array_record"))
    assert g.read_all() == recs
    g.close()


def test_open_is_one_request_per_shard_and_reads_pin_the_listed_generation(gcs, bucket):
    pattern, records, name = bucket
    proxy = FaultProxy(gcs.endpoint)
    try:
        opts = {"endpoint_url": proxy.endpoint, "token": "anon"}
        with arrayfs.ArrayRecordDataSource(pattern, storage_options=opts) as ds:
            opened = [line for line in proxy.lines if line.startswith("GET /download/")]
            assert len(opened) == 3, proxy.lines  # the tail of each; size and generation came with the listing
            assert len(proxy.lines) == 4, proxy.lines  # + the listing
            gens = {s.path.rsplit("/", 1)[1]: ds.snapshot().file(k)._source.pin_to for k, s in enumerate(ds.shards)}
            proxy.reset()
            assert ds.__getitems__(list(range(0, len(records), 7))) == records[::7]
            reads = [urllib.parse.unquote(line) for line in proxy.lines]
            assert reads and all(line.startswith("GET ") for line in reads)
            for line in reads:
                shard = next(n for n in gens if n in line)
                assert f"generation={gens[shard]}" in line, line
            proxy.fail_next = 3
            assert ds[len(records) - 1] == records[-1] and ds[1] == records[1]
            assert proxy.fail_next == 0  # 503s retried
    finally:
        proxy.stop()


def test_obstore_mode_reads_gcs_through_gcsfs(gcs, bucket):
    """``ARRAYFS_REMOTE_BACKEND=obstore`` concerns ``s3://`` only: ``gs://``
    still reads, through gcsfs."""
    pattern, records, name = bucket
    old = backends.backend()
    backends.set_backend("obstore")
    try:
        with arrayfs.ArrayRecordDataSource(pattern, storage_options=gcs.storage_options) as ds:
            assert ds[3] == records[3] and ds[len(records) - 1] == records[-1]
            assert ds.snapshot().file(0)._source.backend == "fsspec"
    finally:
        backends.set_backend(old)


def test_mount_of_a_gcs_bucket(gcs, bucket, tmp_path):
    pattern, records, _ = bucket
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with mounted(pattern, mnt, gcs.storage_options):
        names = sorted(n for n in os.listdir(mnt) if n[0] != ".")
        assert len(names) == len(records)
        for i in (0, 299, 300, 650, len(records) - 1):
            assert (mnt / names[i]).read_bytes() == records[i]
            assert os.stat(mnt / names[i]).st_size == len(records[i])


def test_gcs_urls_skip_gcsfs_grpc_bucket_probe_unless_asked(gcs, bucket):
    """gcsfs 2026.x's experimental class probes each bucket's type over
    gRPC, which waits 60 s where gRPC is not served; arrayfs turns it off
    (``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false``) unless the user set it."""
    pattern, records, _ = bucket
    code = ("import os, sys, arrayfs\n"
            "ds = arrayfs.ArrayRecordDataSource(sys.argv[1], storage_options={'endpoint_url': sys.argv[2], "
            "'token': 'anon'})\n"
            "import gcsfs\n"
            "print(len(ds), os.environ['GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT'], gcsfs.GCSFileSystem.__name__)\n")
    env = {k: v for k, v in os.environ.items() if k != "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"}
    p = subprocess.run([sys.executable, "-c", code, pattern, gcs.endpoint], capture_output=True, text=True,
                       env=env, timeout=50)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == [str(len(records)), "false", "GCSFileSystem"]
    env["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "true"  # the user's choice stands
    code2 = "import os, arrayfs.storage as s; s.filesystem('gs://b/x'); print(os.environ['GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT'])"
    p = subprocess.run([sys.executable, "-c", code2], capture_output=True, text=True, env=env, timeout=50)
    assert p.returncode == 0 and p.stdout.strip() == "true", p.stderr


def test_object_replaced_after_open_is_an_error_not_mixed_bytes(gcs):
    """Reads are pinned to the generation the listing gave: once the object
    is replaced, the store answers 404 to them and the read is a
    FileChangedError naming the URL, never bytes of the new object."""
    name = gcs.make_bucket(f"arrayfs-c-{uuid.uuid4().hex[:8]}")
    fs = gcs.filesystem()
    old, new = noise(400, 4000, 20), noise(400, 4000, 21)

    def upload(recs):
        with fs.open(f"{name}/c.array_record", "wb") as f:
            with arrayfs.ArrayRecordWriter(f, "group_size:1") as w:
                for r in recs:
                    w.write(r)

    upload(old)
    url = f"gs://{name}/c.array_record"
    with arrayfs.ArrayRecordDataSource(url, storage_options=gcs.storage_options) as ds:
        assert ds[0] == old[0]
        upload(new)
        with pytest.raises(arrayfs.FileChangedError) as e:
            ds[1]  # outside the tail read at open
        assert url in str(e.value)
        res = ds.refresh()
        assert res.added == (url,) and res.removed == (url,)
        assert ds[1] == new[1]


def test_stalled_request_is_retried_and_a_silent_store_fails_within_the_deadline(gcs):
    """gcsfs waits for an answer forever (no timeout of its own): a
    request the store takes and never answers is cut off at half the time
    left of the retry deadline and retried; a store that answers nothing
    ends the read within the deadline, naming the URL and range."""
    name = gcs.make_bucket(f"arrayfs-st-{uuid.uuid4().hex[:8]}")
    recs = noise(3000, 200, 30)  # 600 KB: record 10 lies outside the tail read at open
    url = upload(gcs, "gs", name, "f.array_record", recs)
    proxy = FaultProxy(gcs.endpoint)
    old = remote_mod._default_retry
    remote_mod.set_retry_policy(remote_mod.RetryPolicy(attempts=3, backoff=0.05, deadline=4))
    try:
        with arrayfs.ArrayRecordDataSource(url, storage_options={"endpoint_url": proxy.endpoint,
                                                                 "token": "anon"}) as ds:
            proxy.stall_next = 1
            t0 = time.monotonic()
            assert ds[10] == recs[10]
            assert proxy.stall_next == 0 and time.monotonic() - t0 < 4
            proxy.stall = True
            t0 = time.monotonic()
            with pytest.raises(arrayfs.StorageError) as e:
                ds[20]
            took = time.monotonic() - t0
            assert took < 5, took
            assert url in str(e.value) and "cannot read bytes [" in str(e.value), e.value
    finally:
        remote_mod.set_retry_policy(old)
        proxy.stop()
