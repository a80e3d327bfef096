"""Real FUSE mounts of real shards (Google's array_record writer and ours):
contents, shell tools, errors and faults while reading.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import threading

import _mounting
import pytest
from _mounting import (
    BIG,
    records,
    wait_for,
    write_ours,
)

import arrayfs
from arrayfs import ArrayRecordDataSource

pytestmark = _mounting.needs_fuse
dataset, mounter, shared_mount = _mounting.dataset, _mounting.mounter, _mounting.shared_mount

# -- contents ---------------------------------------------------------------------------------


def test_listing_count_bytes_and_sizes(shared_mount, dataset):
    mnt, recs = shared_mount
    d, _ = dataset
    names = sorted(n for n in os.listdir(mnt) if not n.startswith("."))
    assert len(names) == len(recs) == len(ArrayRecordDataSource(str(d / "*.array_record")))
    assert names == [f"{i:03d}" for i in range(len(recs))]
    ds = ArrayRecordDataSource(str(d / "*.array_record"))
    try:
        for i, name in enumerate(names):
            with open(mnt / name, "rb") as f:
                data = f.read()
            assert data == recs[i] == ds[i], i
            assert os.stat(mnt / name).st_size == len(recs[i]) == ds.record_size(i)
    finally:
        ds.close()
    with open(mnt / "42", "rb") as f:  # the unpadded name
        assert f.read() == recs[42]


def test_directory_entries_carry_types(shared_mount):
    mnt, recs = shared_mount
    with os.scandir(mnt) as it:
        entries = list(it)
    types = {e.name: (e.is_file(follow_symlinks=False), e.is_dir(follow_symlinks=False)) for e in entries}
    assert types[".shards"] == (False, True)
    assert types[".arrayfs.json"] == (True, False)
    assert all(types[f"{i:03d}"] == (True, False) for i in range(len(recs)))
    inos = {e.name: e.inode() for e in entries}
    assert inos["000"] == os.stat(mnt / "000").st_ino


def test_shard_view_and_summary(shared_mount, dataset):
    mnt, recs = shared_mount
    d, _ = dataset
    shards = sorted(os.listdir(mnt / ".shards"))
    assert shards == [f"train-0000{k}-of-00004.array_record" for k in range(4)]
    local = sorted(os.listdir(mnt / ".shards" / shards[1]))
    assert local == [f"{j:02d}" for j in range(25)]
    assert (mnt / ".shards" / shards[1] / "11").read_bytes() == recs[30 + 11]
    st_a, st_b = os.stat(mnt / ".shards" / shards[1] / "11"), os.stat(mnt / "041")
    assert (st_a.st_ino, st_a.st_size, st_a.st_nlink) == (st_b.st_ino, st_b.st_size, 2)
    assert st_a.st_mtime_ns == os.stat(d / shards[1]).st_mtime_ns
    doc = json.loads((mnt / ".arrayfs.json").read_bytes())
    assert doc["num_records"] == len(recs)
    assert doc["total_bytes"] == sum(map(len, recs))
    assert [s["first_index"] for s in doc["shards"]] == [0, 30, 55, 75]
    assert "group_size:16" in doc["shards"][3]["writer_options"]


def test_shell_tools(shared_mount, tmp_path):
    mnt, recs = shared_mount
    n = len(recs)
    # ls -l: one line per record with its exact size.
    out = subprocess.run(["ls", "-l", str(mnt)], capture_output=True, text=True, check=True).stdout.splitlines()
    rows = [ln.split() for ln in out[1:]]
    assert len(rows) == n
    assert {r[8]: int(r[4]) for r in rows} == {f"{i:03d}": len(r) for i, r in enumerate(recs)}
    assert all(r[0] == "-r--r--r--" for r in rows)
    # cat, stat, head/tail on a big record.
    cat = subprocess.run(["cat", str(mnt / "001"), str(mnt / "041"), str(mnt / "099")], capture_output=True, check=True)
    assert cat.stdout == recs[1] + recs[41] + recs[99]
    sizes = subprocess.run(["stat", "-c", "%s", str(mnt / "041"), str(mnt / "003")], capture_output=True,
                           text=True, check=True).stdout.split()
    assert sizes == [str(BIG), "0"]
    head = subprocess.run(["head", "-c", "200000", str(mnt / "041")], capture_output=True, check=True).stdout
    tail = subprocess.run(["tail", "-c", "1000", str(mnt / "041")], capture_output=True, check=True).stdout
    assert head == recs[41][:200000] and tail == recs[41][-1000:]
    # find: file types from readdir; records twice (root and .shards) plus the summary.
    found = subprocess.run(["find", str(mnt), "-type", "f"], capture_output=True, text=True, check=True).stdout.split()
    assert len(found) == 2 * n + 1
    # md5sum of every record.
    md5 = subprocess.run(f"cd {mnt} && md5sum [0-9]*", shell=True, capture_output=True, text=True, check=True)
    got = dict(reversed(line.split()) for line in md5.stdout.splitlines())
    assert got == {f"{i:03d}": hashlib.md5(r).hexdigest() for i, r in enumerate(recs)}
    # cp -r of the whole tree.
    dst = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(mnt), str(dst)], check=True)
    assert all((dst / f"{i:03d}").read_bytes() == r for i, r in enumerate(recs))
    assert (dst / ".shards" / "train-00003-of-00004.array_record" / "39").read_bytes() == recs[-1]
    # tar c of the whole tree: the second name of each record is a hard link.
    tar = subprocess.run(["tar", "c", "-C", str(mnt), "."], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=__import__("io").BytesIO(tar)) as tf:
        members = {m.name.lstrip("./"): m for m in tf.getmembers()}
        assert len([m for m in members.values() if m.isfile() or m.islnk()]) == 2 * n + 1
        for i in (0, 3, 41, n - 1):
            m = members[f"{i:03d}"]
            src = tf.getmember(m.linkname) if m.islnk() else m
            assert tf.extractfile(src).read() == recs[i]


def test_writes_fail_with_erofs(shared_mount):
    mnt, _ = shared_mount
    attempts = [
        lambda: open(mnt / "000", "wb"),
        lambda: open(mnt / "000", "ab"),
        lambda: open(mnt / "new", "wb"),
        lambda: os.mkdir(mnt / "d"),
        lambda: os.unlink(mnt / "000"),
        lambda: os.rmdir(mnt / ".shards"),
        lambda: os.rename(mnt / "000", mnt / "zzz"),
        lambda: os.chmod(mnt / "000", 0o666),
        lambda: os.chown(mnt / "000", 1, 1),
        lambda: os.truncate(mnt / "000", 0),
        lambda: os.symlink("000", mnt / "link"),
        lambda: os.link(mnt / "000", mnt / "hard"),
        lambda: os.utime(mnt / "000", (0, 0)),
        lambda: os.setxattr(mnt / "000", "user.x", b"1"),
    ]
    for attempt in attempts:
        with pytest.raises(OSError) as e:
            attempt()
        assert e.value.errno == errno.EROFS, attempt
    p = subprocess.run(["sh", "-c", f"echo x > {mnt}/001"], capture_output=True, text=True)
    assert p.returncode != 0 and "Read-only file system" in p.stderr


def test_non_records_are_enoent(shared_mount):
    mnt, recs = shared_mount
    n = len(recs)
    for name in ["-1", "abc", "00x", str(n), f"{n:03d}", "0000", "1e3", " 1", ".shards/../x",
                 ".shards/nope", ".shards/train-00000-of-00004.array_record/30",
                 ".shards/train-00000-of-00004.array_record/-1", "..x", "...", "000/x"]:
        with pytest.raises(OSError) as e:
            os.stat(mnt / name)
        assert e.value.errno in (errno.ENOENT, errno.ENOTDIR), name
        with pytest.raises(OSError):
            open(mnt / name, "rb")
    # ".." is resolved by the kernel, never by arrayfs: it leaves the mount.
    assert os.path.realpath(mnt / "..") == str(mnt.parent)


def test_sixteen_concurrent_reader_processes(shared_mount):
    mnt, recs = shared_mount
    code = (
        "import hashlib, os, sys\n"
        "mnt, k = sys.argv[1], int(sys.argv[2])\n"
        "names = sorted(n for n in os.listdir(mnt) if not n.startswith('.'))\n"
        "h = []\n"
        "for rep in range(3):\n"
        "    for name in names[k::4] + names[::7]:\n"
        "        with open(os.path.join(mnt, name), 'rb') as f:\n"
        "            h.append(name + ':' + hashlib.md5(f.read()).hexdigest())\n"
        "print('\\n'.join(h))\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(mnt), str(k % 4)], stdout=subprocess.PIPE, text=True)
             for k in range(16)]
    expected = {f"{i:03d}": hashlib.md5(r).hexdigest() for i, r in enumerate(recs)}
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0
        lines = out.split()
        assert len(lines) > 60
        for line in lines:
            name, digest = line.split(":")
            assert expected[name] == digest, name


def test_concurrent_threads_on_big_record(shared_mount):
    mnt, recs = shared_mount
    errors = []

    def read():
        try:
            for _ in range(5):
                with open(mnt / "041", "rb") as f:
                    f.seek(100_000)
                    assert f.read(150_000) == recs[41][100_000:250_000]
        except BaseException as e:  # noqa: BLE001 - collected for the main thread
            errors.append(e)

    ts = [threading.Thread(target=read) for _ in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors


def test_shards_whose_names_differ_past_255_bytes(tmp_path, mounter):
    """Two shards of one 255-byte name in two directories: ``@1`` must
    survive the cut to 255 bytes, or one shard is unreachable."""
    long = "x" * 242 + ".array_record"
    for k, sub in enumerate("ab"):
        (tmp_path / sub).mkdir()
        write_ours(tmp_path / sub / "s", [b"%s%d" % (sub.encode(), i) for i in range(3 + k)])
        os.rename(tmp_path / sub / "s", tmp_path / sub / long)  # our writer's temporary name would be too long
    mnt = mounter("--no-watch", tmp_path / "*" / long)
    shards = os.listdir(mnt / ".shards")
    assert sorted(shards) == sorted([long, long[:253] + "@1"])
    assert sorted(os.listdir(mnt / ".shards" / long)) == ["0", "1", "2"]
    assert (mnt / ".shards" / (long[:253] + "@1") / "3").read_bytes() == b"b3"
    assert (mnt / "6").read_bytes() == b"b3"


# -- robustness ---------------------------------------------------------------------------------


def test_corrupt_record_is_eio_and_logged(tmp_path, mounter):
    d = tmp_path / "data"
    d.mkdir()
    recs = [bytes([i]) * 3000 for i in range(20)]
    path = d / "c.array_record"
    write_ours(path, recs, "group_size:1,uncompressed")
    f = arrayfs.file.ArrayRecordFile(str(path))
    off = int(f.index()[0][7])
    f.close()
    raw = bytearray(path.read_bytes())
    raw[off + 40 + 1500] ^= 0xFF  # inside record 7's values
    path.write_bytes(bytes(raw))
    log = tmp_path / "daemon.log"
    mnt = mounter("--no-watch", "--log-file", log, path)
    with pytest.raises(OSError) as e:
        (mnt / "07").read_bytes()
    assert e.value.errno == errno.EIO
    p = subprocess.run(["cat", str(mnt / "07")], capture_output=True, text=True)
    assert p.returncode != 0 and "Input/output error" in p.stderr
    for i in (0, 6, 8, 19):  # everything else reads fine, the daemon lives on
        assert (mnt / f"{i:02d}").read_bytes() == recs[i]
    assert wait_for(lambda: log.exists() and "EIO" in log.read_text())
    text = log.read_text()
    assert str(path) in text and f"chunk 7 at byte {off}" in text


@pytest.mark.parametrize("libfuse", ["3", "2"])
def test_listings_survive_a_corrupt_chunk_of_many_records(tmp_path, mounter, libfuse):
    """A listing with attributes (READDIRPLUS) needs every record's size;
    a chunk of 10 whose sizes cannot be read must not fail the listing:
    its records are listed without attributes (their lookups are EIO),
    every other record keeps its exact size, and the log says it once."""
    env = _mounting.libfuse_env(libfuse)
    d = tmp_path / "data"
    d.mkdir()
    recs = [b"rec%03d-" % i * 50 for i in range(40)]
    path = d / "s-0.array_record"
    write_ours(path, recs, "group_size:10,uncompressed")
    write_ours(d / "s-1.array_record", recs[:5])
    raw = bytearray(path.read_bytes())
    at = raw.find(b"rec015-")
    raw[at : at + 20] = b"X" * 20  # chunk 1 (records 10-19) no longer checks out
    path.write_bytes(bytes(raw))
    log = tmp_path / "daemon.log"
    opts = ["-o", "workers=1"] if libfuse == "3" else []
    mnt = mounter("--no-watch", *opts, "--log-file", log, d / "s-*.array_record", env=env)
    want = [f"{i:02d}" for i in range(45)]
    assert _mounting.names(mnt) == want
    shard = mnt / ".shards" / "s-0.array_record"
    assert sorted(os.listdir(shard)) == want[:40]
    found = subprocess.run(["find", str(mnt), "-type", "f", "-name", "1?"], capture_output=True, text=True)
    assert found.returncode == 0, found.stderr
    for i in range(45):
        for p in [mnt / f"{i:02d}"] + ([shard / f"{i:02d}"] if i < 40 else []):
            if 10 <= i < 20:
                with pytest.raises(OSError) as e:
                    os.stat(p)
                assert e.value.errno == errno.EIO
            else:
                assert os.stat(p).st_size == len(recs[i % 40])
    assert (mnt / "09").read_bytes() == recs[9] and (mnt / "44").read_bytes() == recs[4]
    if libfuse == "3":  # libfuse 2 lists without sizes: nothing to log there
        assert wait_for(lambda: log.exists() and "listed without attributes" in log.read_text())
        lines = [ln for ln in log.read_text().splitlines() if "listed without attributes" in ln]
        assert len(lines) == 1 and str(path) in lines[0] and "records [10, 20)" in lines[0], lines
    else:
        with open(f"/proc/{_mounting.daemon_pid(mnt)}/maps") as f:
            assert "libfuse.so.2" in f.read()


def test_shard_deleted_while_reading(tmp_path, mounter):
    d = tmp_path / "data"
    d.mkdir()
    recs = records(7, 10, big_at={2, 5})
    write_ours(d / "s.array_record", recs)
    mnt = mounter("--no-watch", d)
    f = open(mnt / "2", "rb")
    try:
        first = f.read(50_000)
        os.unlink(d / "s.array_record")
        rest = f.read()
    finally:
        f.close()
    assert first + rest == recs[2]
    # The file is gone from disk; its mapping still serves other records.
    assert (mnt / "5").read_bytes() == recs[5]
    assert (mnt / "9").read_bytes() == recs[9]
