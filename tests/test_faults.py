"""Shards that change under a reader, and datasets bigger than the process's
descriptor limit.

Every fault runs in a child process: a read of a mapped page that a
truncation took away kills a process with ``SIGBUS``, and these tests must
see that happen (as a negative return code) rather than die with it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from _google import gwrite

import arrayfs


def run_child(code: str, *args, timeout=300, env=None) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *map(str, args)], capture_output=True,
                       text=True, timeout=timeout, env=env)
    assert p.returncode >= 0, f"killed by signal {-p.returncode}: {p.stderr[-2000:]}"
    return p



RECORDS = [np.random.default_rng(i).bytes(900) for i in range(400)]


@pytest.fixture(params=["group_size:1", "group_size:100,uncompressed"])
def shard(request, tmp_path):
    return gwrite(tmp_path / "victim.array_record", request.param, RECORDS), request.param


TRUNCATE = """
import os, sys, arrayfs
path = sys.argv[1]
ds = arrayfs.ArrayRecordDataSource(path)
first = ds[0]
last_before = ds[len(ds) - 1]
os.truncate(path, 65536)  # in place, as `: > file` or `rsync --inplace` would
for what, read in (("one", lambda: ds[len(ds) - 1]), ("batch", lambda: ds.__getitems__(list(range(len(ds))))),
                   ("iter", lambda: list(ds))):
    try:
        got = read()
    except arrayfs.TruncatedFileError as e:
        assert e.path == path and e.offset is not None, e
        print(what, "TruncatedFileError", e)
    else:
        # Only records read before (and cached) may come back, unchanged.
        print(what, "returned", got == last_before or got == first)
print("alive")
"""


def test_shard_truncated_in_place_is_an_error_not_a_crash(shard):
    path, _ = shard
    p = run_child(TRUNCATE, path)
    assert "alive" in p.stdout, p.stderr
    for what in ("one", "batch", "iter"):
        line = next(x for x in p.stdout.splitlines() if x.startswith(what + " "))
        assert "TruncatedFileError" in line or line.endswith("True"), line
        if "TruncatedFileError" in line:
            assert path in line and "chunk at byte" in line, line
    assert "batch TruncatedFileError" in p.stdout  # it needs records never read before


REWRITE = """
import os, sys, arrayfs
path, other = sys.argv[1], sys.argv[2]
ds = arrayfs.ArrayRecordDataSource(path)
old = [ds[i] for i in (0, 1)]
with open(other, "rb") as f:
    new_bytes = f.read()
assert len(new_bytes) == os.path.getsize(path)
with open(path, "r+b") as f:  # same size, same layout, other records: in place
    f.write(new_bytes)
errors = 0
for i in range(len(ds)):
    try:
        rec = ds[i]
    except arrayfs.FileChangedError:
        errors += 1
        continue
    assert rec == old[i] if i < 2 else False, f"record {i} came back from the new file"
print("errors", errors, "of", len(ds))
"""


def test_shard_rewritten_in_place_with_the_same_layout_never_serves_new_bytes(tmp_path):
    """The worst rewrite: another valid file of the same size and chunk
    layout, so every hash matches; only the file's identity tells."""
    a = gwrite(tmp_path / "a.array_record", "group_size:1,uncompressed", [b"A%04d" % i * 20 for i in range(300)])
    b = gwrite(tmp_path / "b.array_record", "group_size:1,uncompressed", [b"B%04d" % i * 20 for i in range(300)])
    assert os.path.getsize(a) == os.path.getsize(b)
    p = run_child(REWRITE, a, b)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split()[1] in ("298", "299", "300"), p.stdout


def test_footer_metadata_claiming_no_records_is_refused_at_open(tmp_path):
    """Mutation fuzzing found it: metadata saying 0 records (one byte)
    while the chunk entries hold records must not open as an empty shard."""
    from _arfile import build_file, simple_chunk

    recs = [b"r%d" % i for i in range(10)]
    path = tmp_path / "zero.array_record"
    build_file(path, [simple_chunk(recs[k : k + 2]) for k in range(0, 10, 2)], num_records=0)
    for opener in (arrayfs.ArrayRecordDataSource, arrayfs.ArrayRecordReader):
        with pytest.raises(arrayfs.CorruptChunkError) as e:
            opener(str(path))
        assert str(path) in str(e.value)


MANY = """
import os, resource, sys, random
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
import arrayfs
pattern, n_shards, per = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def fds():
    return len(os.listdir("/proc/self/fd"))
peak = fds()
ds = arrayfs.ArrayRecordDataSource(pattern)
assert len(ds) == n_shards * per, len(ds)
peak = max(peak, fds())
rng = random.Random(0)
for _ in range(3000):
    i = rng.randrange(len(ds))
    k, j = divmod(i, per)
    assert ds[i] == b"shard %d record %d" % (k, j)
peak = max(peak, fds())
idx = [rng.randrange(len(ds)) for _ in range(2000)]
assert ds.__getitems__(idx) == [b"shard %d record %d" % divmod(i, per) for i in idx]
peak = max(peak, fds())
count = 0
for i, rec in enumerate(ds):
    assert rec == b"shard %d record %d" % divmod(i, per)
    count += 1
assert count == len(ds)
peak = max(peak, fds())
print("peak descriptors", peak)
"""


@pytest.fixture(scope="module")
def many_shards(tmp_path_factory):
    d = tmp_path_factory.mktemp("many")
    n, per = 5000, 3
    for k in range(n):
        with arrayfs.ArrayRecordWriter(d / f"m-{k:05d}.array_record", "group_size:1") as w:
            for j in range(per):
                w.write(b"shard %d record %d" % (k, j))
    return d, n, per


def test_5000_shards_under_a_256_descriptor_limit(many_shards):
    d, n, per = many_shards
    p = run_child(MANY, d / "m-*.array_record", n, per, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    peak = int(p.stdout.split()[-1])
    assert peak <= 256, p.stdout


def test_emfile_names_the_shard(tmp_path):
    """When the application itself has taken every descriptor, the error
    names the shard that could not be opened."""
    paths = [gwrite(tmp_path / f"e-{k}.array_record", "group_size:1", [b"x"]) for k in range(3)]
    code = """
import os, resource, sys, arrayfs
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
hog = []
try:
    while True:
        hog.append(os.open("/dev/null", os.O_RDONLY))
except OSError:
    pass
try:
    arrayfs.ArrayRecordDataSource(sys.argv[1:])
except OSError as e:
    print("error", e.errno, e.filename)
"""
    p = run_child(code, *paths)
    assert f"error 24 {paths[0]}" in p.stdout, p.stdout + p.stderr


def test_snapshot_reads_end_when_the_dataset_closes(tmp_path):
    path = gwrite(tmp_path / "s.array_record", "group_size:1", RECORDS[:10])
    ds = arrayfs.ArrayRecordDataSource(path)
    snap = ds.snapshot()
    assert snap[3] == RECORDS[3]
    ds.close()
    with pytest.raises(ValueError, match="closed"):
        snap[4]
    with pytest.raises(ValueError, match="closed"):
        snap.record_sizes(0, 0, 2)
    with pytest.raises(ValueError, match="closed"):
        ds.snapshot()


def test_removed_shard_stays_readable_by_an_old_snapshot(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    for k in range(3):
        gwrite(d / f"r-{k}.array_record", "group_size:1", [b"%d:%d" % (k, i) for i in range(50)])
    with arrayfs.ArrayRecordDataSource(str(d / "r-*.array_record")) as ds:
        old = ds.snapshot()
        old[60]  # shard 1 is open
        os.remove(d / "r-1.array_record")
        assert ds.refresh().removed == (str(d / "r-1.array_record"),)
        assert old[75] == b"1:25"  # a read on the old snapshot finishes on the file it began on
        assert len(ds) == 100 and ds[75] == b"2:25"
    shutil.rmtree(d)
