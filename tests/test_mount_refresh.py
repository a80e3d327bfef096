"""Real FUSE mounts that follow their sources: shards added, removed,
rewritten and truncated, on disk and in a bucket, with libfuse 3 and 2.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import time

import _mounting
import pytest
from _mounting import (
    daemon_pid,
    force_unmount,
    libfuse_env,
    names,
    records,
    refreshed,
    wait_for,
    write_google,
    write_ours,
)

pytestmark = _mounting.needs_fuse
dataset, mounter = _mounting.dataset, _mounting.mounter

# -- live refresh -------------------------------------------------------------------------------



@pytest.mark.parametrize("libfuse", ["3", "2"])
def test_watch_adds_and_removes_shards(tmp_path, mounter, libfuse):
    env = libfuse_env(libfuse)
    d = tmp_path / "data"
    d.mkdir()
    write_ours(d / "s-00000.array_record", [b"a%d" % i for i in range(5)])
    mnt = mounter(d / "s-*.array_record", env=env)
    assert names(mnt) == ["0", "1", "2", "3", "4"]
    assert (mnt / "4").read_bytes() == b"a4"
    assert json.loads((mnt / ".arrayfs.json").read_bytes())["num_records"] == 5
    # A shard appears: Google's writer writes in place, so it is invisible
    # while incomplete, then shows up.
    write_google(d / "s-00001.array_record", [b"b%d" % i for i in range(7)])
    assert wait_for(lambda: refreshed(mnt, 12)), names(mnt)
    assert names(mnt) == [f"{i:02d}" for i in range(12)]
    assert (mnt / "07").read_bytes() == b"b2" and os.stat(mnt / "7").st_size == 2
    assert wait_for(lambda: json.loads((mnt / ".arrayfs.json").read_bytes())["num_records"] == 12)
    assert sorted(os.listdir(mnt / ".shards")) == ["s-00000.array_record", "s-00001.array_record"]
    # A half-written shard stays out until complete.
    full = (d / "s-00001.array_record").read_bytes()
    write_ours(d / "tmp.bin", [b"c%d" % i for i in range(3)])
    part = d / "s-00002.array_record"
    part.write_bytes(full[:1000])
    time.sleep(1.5)
    assert len(names(mnt)) == 12
    os.replace(d / "tmp.bin", part)
    assert wait_for(lambda: refreshed(mnt, 15))
    assert (mnt / "14").read_bytes() == b"c2"
    # A shard vanishes: its records leave, later names shift down.
    os.unlink(d / "s-00000.array_record")
    assert wait_for(lambda: refreshed(mnt, 10))
    assert (mnt / "0").read_bytes() == b"b0"
    assert (mnt / "9").read_bytes() == b"c2"
    with pytest.raises(FileNotFoundError):
        os.stat(mnt / "10")
    with pytest.raises(FileNotFoundError):
        open(mnt / "12", "rb").read()
    assert sorted(os.listdir(mnt / ".shards")) == ["s-00001.array_record", "s-00002.array_record"]


@pytest.mark.parametrize("libfuse,source", [("3", "glob"), ("3", "dir"), ("2", "glob")])
def test_watch_follows_a_directory_removed_and_created_again(tmp_path, mounter, libfuse, source):
    """A pipeline that regenerates its output (rm -rf out && mkdir out,
    or a new directory renamed into place): the deleted directory's watch
    is gone, so the watcher must watch the new one."""
    env = libfuse_env(libfuse)
    d = tmp_path / "out"
    d.mkdir()
    write_ours(d / "s-0.array_record", [b"old%d" % i for i in range(3)])
    mnt = mounter(d / "s-*.array_record" if source == "glob" else d, env=env)
    assert names(mnt) == ["0", "1", "2"]
    shutil.rmtree(d)
    assert wait_for(lambda: refreshed(mnt, 0))
    d.mkdir()
    write_ours(tmp_path / "tmp.bin", [b"new%d" % i for i in range(5)])
    os.rename(tmp_path / "tmp.bin", d / "s-0.array_record")
    assert wait_for(lambda: refreshed(mnt, 5)), names(mnt)
    assert (mnt / "4").read_bytes() == b"new4"
    # Replaced by a rename: the old directory (still watched) lives on elsewhere.
    new = tmp_path / "out.new"
    new.mkdir()
    write_ours(new / "s-0.array_record", [b"re%d" % i for i in range(2)])
    os.rename(d, tmp_path / "out.old")
    os.rename(new, d)
    assert wait_for(lambda: refreshed(mnt, 2)), names(mnt)
    write_ours(tmp_path / "tmp.bin", [b"more"])
    os.rename(tmp_path / "tmp.bin", d / "s-1.array_record")
    assert wait_for(lambda: refreshed(mnt, 3)), names(mnt)
    assert (mnt / "2").read_bytes() == b"more"


def test_summary_names_its_generation_and_gets_a_new_inode(tmp_path, mounter):
    d = tmp_path / "data"
    d.mkdir()
    write_ours(d / "s-00000.array_record", [b"a%d" % i for i in range(5)])
    mnt = mounter(d / "s-*.array_record")
    doc = json.loads((mnt / ".arrayfs.json").read_bytes())
    ino = os.stat(mnt / ".arrayfs.json").st_ino
    assert doc["generation"] == 0
    write_ours(d / "s-00001.array_record", [b"b%d" % i for i in range(3)])
    assert wait_for(lambda: json.loads((mnt / ".arrayfs.json").read_bytes())["generation"] == 1)
    assert json.loads((mnt / ".arrayfs.json").read_bytes())["num_records"] == 8
    assert os.stat(mnt / ".arrayfs.json").st_ino != ino


def test_open_file_reads_its_record_until_its_shard_is_two_refreshes_gone(tmp_path, mounter):
    """In the low-level daemon an open file is its inode: it keeps reading
    its record while the shard is in the current or the previous snapshot,
    then answers ESTALE (never another record's bytes)."""
    d = tmp_path / "data"
    d.mkdir()
    recs = [b"a%d" % i * 100 for i in range(5)]
    write_ours(d / "s-00000.array_record", recs)
    write_ours(d / "s-00001.array_record", [b"b%d" % i for i in range(5)])
    mnt = mounter(d / "s-*.array_record")
    assert len(names(mnt)) == 10
    fa = open(mnt / "2", "rb")
    fb = open(mnt / "3", "rb")
    try:
        os.unlink(d / "s-00000.array_record")
        assert wait_for(lambda: refreshed(mnt, 5))
        assert (mnt / "2").read_bytes() == b"b2"  # the name now means another record
        assert fa.read() == recs[2]  # the open file still reads its own
        write_ours(d / "s-00002.array_record", [b"c%d" % i for i in range(5)])
        assert wait_for(lambda: refreshed(mnt, 10))
        with pytest.raises(OSError) as e:
            fb.read()
        assert e.value.errno == errno.ESTALE
    finally:
        fa.close()
        fb.close()


@pytest.mark.parametrize("libfuse", ["3", "2"])
@pytest.mark.parametrize("new_size", [600_000, 200_000])
def test_open_file_keeps_its_record_when_its_shard_is_replaced(tmp_path, mounter, libfuse, new_size):
    """A file opened before its shard is replaced (by rename, new contents)
    reads its own record to the end even after another open of the same
    name has read the new one: never a stream half old, half new, nor one
    cut at the new record's size (``new_size``, bytes). libfuse 2 gives the
    name the same kernel inode across refreshes, so its page cache and size
    are shared by both opens."""
    env = libfuse_env(libfuse)
    d, staging = tmp_path / "data", tmp_path / "staging"
    d.mkdir()
    staging.mkdir()  # outside the watched directory: the rename is the only change seen
    old = [bytes([65 + i]) * 600_000 for i in range(3)]  # b"AAA...", b"BBB...", ...
    new = [bytes([97 + i]) * new_size for i in range(3)]  # b"aaa...", ...
    write_ours(d / "s-0.array_record", old)
    mnt = mounter(d / "s-*.array_record", env=env)
    with open(mnt / "1", "rb", buffering=0) as held:
        head = held.read(4096)
        write_ours(staging / "s-0.array_record", new)
        os.replace(staging / "s-0.array_record", d / "s-0.array_record")
        assert wait_for(lambda: json.loads((mnt / ".arrayfs.json").read_bytes())["generation"] == 1)
        # Past libfuse 2's 1 s timeouts the name means the new record.
        assert wait_for(lambda: (mnt / "1").read_bytes() == new[1])
        rest = held.read()
    got = head + rest
    assert got == old[1], f"{len(got)} bytes of {bytes(sorted(set(got)))!r}"


@pytest.mark.parametrize("limit", ["10", "0"])
def test_listing_without_attributes_past_the_readdirplus_limit(dataset, mounter, limit):
    d, recs = dataset
    mnt = mounter("--no-watch", "-o", f"readdirplus={limit}", d)
    out = subprocess.run(["ls", "-l", str(mnt)], capture_output=True, text=True, check=True).stdout.splitlines()
    rows = [ln.split() for ln in out[1:]]
    assert {r[8]: int(r[4]) for r in rows} == {f"{i:03d}": len(r) for i, r in enumerate(recs)}


def test_libfuse2_daemon_serves_the_same(tmp_path, dataset, mounter):
    """mfusepy's high-level API (the daemon where libfuse 3 is missing)."""
    d, recs = dataset
    env = dict(os.environ, FUSE_LIBRARY_NAME="fuse")
    mnt = mounter("--no-watch", d, env=env)
    assert names(mnt) == [f"{i:03d}" for i in range(len(recs))]
    for i in (0, 3, 41, len(recs) - 1):
        assert (mnt / f"{i:03d}").read_bytes() == recs[i]
        assert os.stat(mnt / f"{i:03d}").st_size == len(recs[i])
    with open(mnt / "041", "rb") as f:
        f.seek(200_000)
        assert f.read(50_000) == recs[41][200_000:250_000]
    assert json.loads((mnt / ".arrayfs.json").read_bytes())["num_records"] == len(recs)
    assert os.stat(mnt / "041").st_ino == os.stat(mnt / ".shards" / "train-00001-of-00004.array_record" / "11").st_ino
    with pytest.raises(OSError) as e:
        open(mnt / "000", "wb")
    assert e.value.errno == errno.EROFS
    pid = daemon_pid(mnt)
    with open(f"/proc/{pid}/maps") as f:
        assert "libfuse.so.2" in f.read()


def test_names_looked_up_in_both_forms_follow_a_shift(tmp_path, mounter):
    """A shard that sorts first shifts every name: each name the kernel
    cached (padded or not, looked up or listed) must now read the new record."""
    d = tmp_path / "data"
    d.mkdir()
    write_ours(d / "s-1.array_record", [b"a%d" % i for i in range(6)])
    write_ours(d / "s-2.array_record", [b"b%d" % i for i in range(6)])
    mnt = mounter(d / "s-*.array_record")
    assert (mnt / "3").read_bytes() == b"a3" and (mnt / "03").read_bytes() == b"a3"
    assert (mnt / "11").read_bytes() == b"b5"
    assert os.stat(mnt / "7").st_size == 2
    write_ours(d / "s-0.array_record", [b"zz%d" % i for i in range(5)])
    assert wait_for(lambda: json.loads((mnt / ".arrayfs.json").read_bytes())["num_records"] == 17)
    assert (mnt / "3").read_bytes() == b"zz3" and (mnt / "03").read_bytes() == b"zz3"
    assert (mnt / "11").read_bytes() == b"b0"
    assert (mnt / "7").read_bytes() == b"a2" and os.stat(mnt / "7").st_size == 2
    assert (mnt / "16").read_bytes() == b"b5"


@pytest.mark.parametrize("watch", ["--no-watch", "--watch"])
def test_shard_truncated_in_place_is_eio_and_the_daemon_lives(tmp_path, mounter, watch):
    d = tmp_path / "data"
    d.mkdir()
    a = records(11, 40, big_at={5, 30})
    b = records(12, 10)
    write_ours(d / "s-0.array_record", a)
    write_ours(d / "s-1.array_record", b)
    mnt = mounter(watch, d / "s-*.array_record")
    assert (mnt / "05").read_bytes() == a[5]
    path = d / "s-0.array_record"
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 3)
    for i in (1, 30, 39):  # before and past the cut: the bytes of the record, or EIO; never others
        try:
            assert (mnt / f"{i:02d}").read_bytes() == a[i]
        except OSError as e:
            assert e.errno in (errno.EIO, errno.ENOENT, errno.ESTALE)
    assert daemon_pid(mnt) is not None
    if watch == "--watch":
        assert wait_for(lambda: json.loads((mnt / ".arrayfs.json").read_bytes())["num_records"] == 10)
        assert (mnt / "0").read_bytes() == b[0]
    else:
        assert (mnt / "45").read_bytes() == b[5]


def test_mount_of_a_bucket_follows_it_and_a_refusing_store_reads_as_eio(s3, tmp_path, mounter):
    """``arrayfs mount s3://...``: records read as on local disk, a shard
    uploaded later shows up by polling, and while the store refuses every
    request a read is EIO naming the object in the log, the daemon lives,
    and the same read succeeds once the store is back."""
    from _s3server import FaultProxy

    name = s3.make_bucket(f"arrayfs-m-{os.getpid()}-{time.monotonic_ns() % 10**6}")
    fs = s3.filesystem()
    a = records(21, 30, big_at={4, 20})
    b = records(22, 10)
    write_google(tmp_path / "a.array_record", a)
    write_ours(tmp_path / "b.array_record", b, "group_size:4,zstd:3")
    fs.put_file(str(tmp_path / "a.array_record"), f"{name}/d/s-0.array_record")
    proxy = FaultProxy(s3.endpoint)
    log = tmp_path / "daemon.log"
    try:
        mnt = mounter(f"s3://{name}/d/s-*.array_record", "--poll-interval", "0.5", "--log-file", log,
                      "--storage-option", f"endpoint_url={proxy.endpoint}",
                      "--storage-option", 'config_kwargs={"retries": {"max_attempts": 1}}')
        assert (mnt / "04").read_bytes() == a[4]
        assert len([n for n in os.listdir(mnt) if n[0] != "."]) == 30
        assert os.stat(mnt / "20").st_size == len(a[20])
        fs.put_file(str(tmp_path / "b.array_record"), f"{name}/d/s-1.array_record")
        assert wait_for(lambda: json.loads((mnt / ".arrayfs.json").read_bytes())["num_records"] == 40)
        assert (mnt / "35").read_bytes() == b[5]
        proxy.refuse = True
        t0 = time.monotonic()
        with pytest.raises(OSError) as e:
            (mnt / "20").read_bytes()  # never read: neither the kernel nor the daemon has its bytes
        assert e.value.errno == errno.EIO and time.monotonic() - t0 < 90
        assert daemon_pid(mnt) is not None
        proxy.refuse = False
        assert (mnt / "20").read_bytes() == a[20]
        assert (mnt / "39").read_bytes() == b[9]
        assert f"s3://{name}/d/s-0.array_record" in log.read_text()
        force_unmount(mnt)  # before the proxy goes: the daemon polls through it
    finally:
        proxy.stop()
