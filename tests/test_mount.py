"""Real FUSE mounts of real shards (Google's array_record writer and ours).

Every mount is made through the command line (``python -m arrayfs``)
or the Python API and always unmounted in teardown (``fusermount -u``, then
lazily), so a failing test leaves no mount behind. Skipped only where FUSE
cannot work at all (no /dev/fuse or no fusermount); CI installs fuse3 and
libfuse2, so nothing is skipped there.
"""

from __future__ import annotations

import ctypes.util
import errno
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time

import pytest
from _google import gwrite
from _records import awrite

import arrayfs
from arrayfs import ArrayRecordDataSource, ArrayRecordWriter

_FUSERMOUNT = shutil.which("fusermount3") or shutil.which("fusermount")
pytestmark = pytest.mark.skipif(
    not os.path.exists("/dev/fuse") or _FUSERMOUNT is None,
    reason="FUSE unavailable: needs /dev/fuse and fusermount3/fusermount (apt-get install fuse3)",
)

array_record_module = pytest.importorskip("array_record.python.array_record_module")

CLI = [sys.executable, "-m", "arrayfs"]
BIG = 300_000  # bytes: more than two 128 KiB read requests


# -- helpers ------------------------------------------------------------------------------


def is_mounted(path) -> bool:
    path = os.path.abspath(path)
    with open("/proc/mounts") as f:
        return any(line.split()[1] == path for line in f)


def force_unmount(path) -> None:
    """Unmount whatever is at ``path``: plainly, then lazily."""
    for cmd in (["-u"], ["-u", "-z"]):
        if not is_mounted(path):
            return
        for helper in ("fusermount3", "fusermount"):
            if shutil.which(helper):
                subprocess.run([helper, *cmd, str(path)], capture_output=True)
                if not is_mounted(path):
                    return
    if is_mounted(path):
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def wait_for(cond, timeout=15.0, step=0.05):
    """Poll ``cond`` until true. ESTALE is "not yet": a file opened just
    before a refresh retired it (the summary) reads as ESTALE, by design."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if cond():
                return True
        except OSError as e:
            if e.errno != errno.ESTALE:
                raise
        time.sleep(step)
    return cond()


def run_cli(*args, env=None, timeout=60):
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, env=env, timeout=timeout)


def daemon_pids(mnt) -> dict:
    """Processes of the arrayfs daemon serving ``mnt`` (from /proc): pid ->
    parent pid; the coordinator and its worker processes."""
    mnt = os.fsencode(os.path.abspath(mnt))
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if b"arrayfs" in args and b"mount" in args and fields[0] != "Z" and mnt in [
            os.fsencode(os.path.abspath(a.decode())) for a in args if a
        ]:
            out[int(pid)] = int(fields[1])
    return out


def daemon_pid(mnt) -> int | None:
    """Process id of the daemon's coordinator serving ``mnt``."""
    pids = daemon_pids(mnt)
    return next((pid for pid, parent in pids.items() if parent not in pids), None)


def worker_pids(mnt) -> list:
    """Process ids of the daemon's worker processes."""
    pids = daemon_pids(mnt)
    return sorted(pid for pid, parent in pids.items() if parent in pids)


def records(seed, n, big_at=()):
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        out.append(rnd.randbytes(BIG) if i in big_at else rnd.randbytes(rnd.randrange(0, 2000)))
    return out


def write_ours(path, recs, options="group_size:1"):
    awrite(path, options, recs)


def write_google(path, recs, options="group_size:1"):
    gwrite(path, options, recs)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Shards by Google's writer (group_size 1 and its default options) and
    by ours (group_size 1 with an empty and a big record; group_size 16).
    Returns ``(directory, records in global order)``."""
    d = tmp_path_factory.mktemp("mountdata")
    a = records(1, 30)
    a[3] = b""
    b = records(2, 25, big_at={11})
    c = records(3, 20)
    e = records(4, 40)
    write_google(d / "train-00000-of-00004.array_record", a)
    write_ours(d / "train-00001-of-00004.array_record", b)
    write_google(d / "train-00002-of-00004.array_record", c, "")
    write_ours(d / "train-00003-of-00004.array_record", e, "group_size:16,brotli:3")
    return d, a + b + c + e


@pytest.fixture
def mounter(tmp_path):
    """``mount(*sources, opts...) -> mountpoint``; unmounts in teardown."""
    made = []

    def mount(*args, env=None, expect_ok=True):
        mnt = tmp_path / f"mnt{len(made)}"
        mnt.mkdir()
        made.append(mnt)
        p = run_cli("mount", *args, mnt, env=env)
        if expect_ok:
            assert p.returncode == 0, p.stderr
            assert is_mounted(mnt)
        return mnt

    yield mount
    for mnt in made:
        force_unmount(mnt)
        assert not is_mounted(mnt)


@pytest.fixture(scope="module")
def shared_mount(dataset, tmp_path_factory):
    """One read-only mount of the module's dataset, without watching."""
    d, recs = dataset
    mnt = tmp_path_factory.mktemp("shared") / "mnt"
    mnt.mkdir()
    p = run_cli("mount", "--no-watch", d / "*.array_record", mnt)
    assert p.returncode == 0, p.stderr
    yield mnt, recs
    force_unmount(mnt)
    assert not is_mounted(mnt)


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


def test_unmount_leaves_nothing(tmp_path, dataset):
    d, _ = dataset
    mnt = tmp_path / "m"
    mnt.mkdir()
    try:
        assert run_cli("mount", "--no-watch", d, mnt).returncode == 0
        pid = daemon_pid(mnt)
        assert pid is not None
        p = run_cli("unmount", mnt)
        assert p.returncode == 0, p.stderr
        assert not is_mounted(mnt)
        assert wait_for(lambda: not os.path.exists(f"/proc/{pid}") or _zombie(pid), timeout=10)
        p = run_cli("unmount", mnt)
        assert p.returncode == 1 and p.stderr.count("\n") == 1 and "not mounted" in p.stderr
        # -u is the short form.
        assert run_cli("mount", "--no-watch", d, mnt).returncode == 0
        assert run_cli("-u", mnt).returncode == 0 and not is_mounted(mnt)
    finally:
        force_unmount(mnt)


def _zombie(pid) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signals_unmount_cleanly(tmp_path, dataset, sig):
    d, recs = dataset
    mnt = tmp_path / "m"
    mnt.mkdir()
    p = subprocess.Popen([*CLI, "mount", "-f", "--no-watch", str(d), str(mnt)], stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: is_mounted(mnt) and os.path.exists(mnt / "000"))
        assert (mnt / "005").read_bytes() == recs[5]
        p.send_signal(sig)
        assert p.wait(timeout=15) in (0, 130)
        assert not is_mounted(mnt)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        force_unmount(mnt)


def test_killed_daemon_leaves_no_hanging_mount(tmp_path, dataset):
    d, _ = dataset
    mnt = tmp_path / "m"
    mnt.mkdir()
    try:
        assert run_cli("mount", "--no-watch", d, mnt).returncode == 0
        pid = daemon_pid(mnt)
        os.kill(pid, signal.SIGKILL)
        # auto_unmount: fusermount's helper unmounts when the daemon dies.
        assert wait_for(lambda: not is_mounted(mnt), timeout=10)
        assert os.listdir(mnt) == []
    finally:
        force_unmount(mnt)


def test_mount_errors_are_one_line(tmp_path, dataset):
    d, _ = dataset
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("x")
    afile = tmp_path / "afile"
    afile.write_text("x")
    bad = tmp_path / "bad.array_record"
    bad.write_bytes(b"not an array record file" * 100)
    empty = tmp_path / "empty"
    empty.mkdir()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    cases = [
        ((d, full), "not empty"),
        ((d, afile), "not a directory"),
        ((d, tmp_path / "missing"), "does not exist"),
        ((tmp_path / "nothing-*.array_record", mnt), "no shard matched"),
        ((empty, mnt), "no shard matched"),
        ((bad, mnt), "bad file"),
        ((d, mnt, "-o", "rw"), "read-only"),
    ]
    for args, words in cases:
        p = run_cli("mount", *args)
        assert p.returncode == 1, (args, p.stderr)
        assert p.stderr.count("\n") == 1 and p.stderr.startswith("arrayfs: error: ") and words in p.stderr, p.stderr
        assert not is_mounted(mnt)
    # A mount libfuse itself refuses (unknown option) is one line too.
    p = run_cli("mount", d, mnt, "-o", "no_such_option_x")
    assert p.returncode == 1 and p.stderr.count("\n") == 1, p.stderr
    assert not is_mounted(mnt)


def test_help_has_examples():
    for cmd in ("mount", "unmount"):
        p = run_cli(cmd, "--help")
        assert p.returncode == 0 and "example" in p.stdout


def test_foreground_api_and_open_handles_mode(tmp_path, dataset):
    # The Python API in foreground mode, in handle mode (decode per open file).
    d, recs = dataset
    mnt = tmp_path / "m"
    mnt.mkdir()
    code = (f"from arrayfs.fs import mount; mount({str(d)!r}, {str(mnt)!r}, foreground=True, watch=False, "
            "fuse_options='open_handles')")
    p = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: is_mounted(mnt) and os.path.exists(mnt / "000"))
        assert (mnt / "041").read_bytes() == recs[41]
        assert all((mnt / f"{i:03d}").read_bytes() == r for i, r in enumerate(recs))
        subprocess.run([_FUSERMOUNT, "-u", str(mnt)], check=True)
        assert p.wait(timeout=15) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        force_unmount(mnt)


@pytest.mark.parametrize("options", ["workers=3", "workers=2,open_handles", "workers=1,max_threads=2"])
def test_workers_serve_in_parallel_and_a_dead_one_is_replaced(dataset, mounter, options):
    """The worker processes read from clones of the FUSE device: several
    readers at once (a big record in many requests) get the right bytes; a
    worker killed is replaced and the mount goes on."""
    d, recs = dataset
    mnt = mounter("--no-watch", "-o", options, d)
    want = int(options.split(",")[0].split("=")[1])
    assert wait_for(lambda: len(worker_pids(mnt)) == want)
    errors = []

    def read(k):
        try:
            for i in range(k, len(recs), 3):
                assert (mnt / f"{i:03d}").read_bytes() == recs[i], i
            with open(mnt / "041", "rb") as f:
                f.seek(1000 * k)
                assert f.read() == recs[41][1000 * k:]
        except BaseException as e:  # noqa: BLE001 - collected for the main thread
            errors.append(e)

    threads = [threading.Thread(target=read, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    victim = worker_pids(mnt)[0]
    os.kill(victim, signal.SIGKILL)
    assert wait_for(lambda: victim not in worker_pids(mnt) and len(worker_pids(mnt)) == want)
    assert (mnt / "042").read_bytes() == recs[42]
    assert daemon_pid(mnt) is not None


def test_libfuse2_refuses_what_it_cannot_honour(dataset, tmp_path):
    d, _ = dataset
    env = dict(os.environ, FUSE_LIBRARY_NAME="fuse")
    mnt = tmp_path / "m"
    mnt.mkdir()
    for option, words in (("readdirplus=10", "readdirplus needs libfuse 3"), ("workers=2", "workers=N needs")):
        p = run_cli("mount", "--no-watch", "-o", option, d, mnt, env=env)
        assert p.returncode == 1 and p.stderr.count("\n") == 1 and words in p.stderr, p.stderr
        assert not is_mounted(mnt)


# -- live refresh -------------------------------------------------------------------------------


def _names(mnt):
    return sorted(n for n in os.listdir(mnt) if not n.startswith("."))


def refreshed(mnt, n) -> bool:
    """Whether the mount's summary (readable again: the refresh is fully
    applied, every name means what it says) counts ``n`` records."""
    return json.loads((mnt / ".arrayfs.json").read_bytes())["num_records"] == n


@pytest.mark.parametrize("libfuse", ["3", "2"])
def test_watch_adds_and_removes_shards(tmp_path, mounter, libfuse):
    env = None
    if libfuse == "2":
        if not ctypes.util.find_library("fuse") or not shutil.which("fusermount"):
            pytest.skip("libfuse 2 (libfuse.so.2 and fusermount) not installed")
        env = dict(os.environ, FUSE_LIBRARY_NAME="fuse")
    d = tmp_path / "data"
    d.mkdir()
    write_ours(d / "s-00000.array_record", [b"a%d" % i for i in range(5)])
    mnt = mounter(d / "s-*.array_record", env=env)
    assert _names(mnt) == ["0", "1", "2", "3", "4"]
    assert (mnt / "4").read_bytes() == b"a4"
    assert json.loads((mnt / ".arrayfs.json").read_bytes())["num_records"] == 5
    # A shard appears: Google's writer writes in place, so it is invisible
    # while incomplete, then shows up.
    write_google(d / "s-00001.array_record", [b"b%d" % i for i in range(7)])
    assert wait_for(lambda: refreshed(mnt, 12)), _names(mnt)
    assert _names(mnt) == [f"{i:02d}" for i in range(12)]
    assert (mnt / "07").read_bytes() == b"b2" and os.stat(mnt / "7").st_size == 2
    assert wait_for(lambda: json.loads((mnt / ".arrayfs.json").read_bytes())["num_records"] == 12)
    assert sorted(os.listdir(mnt / ".shards")) == ["s-00000.array_record", "s-00001.array_record"]
    # A half-written shard stays out until complete.
    full = (d / "s-00001.array_record").read_bytes()
    write_ours(d / "tmp.bin", [b"c%d" % i for i in range(3)])
    part = d / "s-00002.array_record"
    part.write_bytes(full[:1000])
    time.sleep(1.5)
    assert len(_names(mnt)) == 12
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
    assert len(_names(mnt)) == 10
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
    assert _names(mnt) == [f"{i:03d}" for i in range(len(recs))]
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


def test_mount_of_5000_shards_under_a_256_descriptor_limit(tmp_path):
    """The daemon keeps a bounded pool of shard descriptors: under
    ``ulimit -n 256`` it mounts, lists and reads 5,000 shards."""
    import resource

    d = tmp_path / "many"
    d.mkdir()
    n, per = 5000, 3
    for k in range(n):
        with ArrayRecordWriter(str(d / f"m-{k:05d}.array_record"), "group_size:1") as w:
            for j in range(per):
                w.write(b"shard %d record %d" % (k, j))
    mnt = tmp_path / "mnt"
    mnt.mkdir()

    def limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

    p = subprocess.run([*CLI, "mount", str(d / "m-*.array_record"), str(mnt)], capture_output=True, text=True,
                       timeout=300, preexec_fn=limit)
    try:
        assert p.returncode == 0, p.stderr
        pid = daemon_pid(mnt)
        with open(f"/proc/{pid}/limits") as f:
            assert any(line.startswith("Max open files") and line.split()[3] == "256" for line in f)
        names = [x for x in os.listdir(mnt) if x[0] != "."]
        assert len(names) == n * per
        assert len(os.listdir(mnt / ".shards")) == n
        rng = random.Random(5)
        peak = 0
        for _ in range(1500):
            i = rng.randrange(n * per)
            assert (mnt / names[i]).read_bytes() == b"shard %d record %d" % divmod(int(names[i]), per)
            if _ % 100 == 0:  # every process of the daemon: the coordinator and each worker
                peak = max([peak] + [len(os.listdir(f"/proc/{p}/fd")) for p in daemon_pids(mnt)])
        assert (mnt / ".shards" / "m-04999.array_record" / "2").read_bytes() == b"shard 4999 record 2"
        assert 0 < peak <= 256
    finally:
        force_unmount(mnt)
