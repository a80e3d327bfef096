"""Local files are mapped only where nothing can truncate them while mapped.

Each case in which :mod:`arrayfs.storage.mapping` chooses a map is made for
real: a tmpfs mounted and remounted read-only, a file made immutable with
``chattr +i``, and a read lease broken by a truncation from another
process, from another thread and from the same thread. Everything that can
kill a process runs in a child (a ``SIGBUS`` shows as a negative return
code). Needs root (mount, chattr; CI runs as root).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
from _google import gread, gwrite

import arrayfs
from arrayfs.storage.local import LocalFile
from arrayfs.storage.mapping import leases_held, map_policy, maps_held

RECORDS = [np.random.default_rng(i).bytes(700 + i) for i in range(300)]
OPTIONS = ["group_size:1", "group_size:64,zstd:3"]

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the mapping cases are Linux's")


def run_child(code: str, *args) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *map(str, args)], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode >= 0, f"killed by signal {-p.returncode}: {p.stderr[-2000:]}"
    assert p.returncode == 0, p.stderr[-3000:]
    return p


def _root_or_skip():
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs and chattr +i need root")


@pytest.fixture
def ro_mount(tmp_path):
    """A tmpfs holding shards, remounted read-only."""
    _root_or_skip()
    mnt = tmp_path / "ro"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)], check=True)
    try:
        paths = [gwrite(mnt / f"s{j}.array_record", o, RECORDS) for j, o in enumerate(OPTIONS)]
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        yield mnt, paths
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_policy_parsing():
    assert map_policy("auto") == map_policy("") == {"readonly-fs", "immutable", "lease"}
    assert map_policy("never") == frozenset()
    assert map_policy("lease, immutable") == {"lease", "immutable"}
    with pytest.raises(ValueError, match="unknown mode"):
        map_policy("sometimes")


def test_read_only_file_system_is_mapped(ro_mount):
    mnt, paths = ro_mount
    assert os.statvfs(str(mnt)).f_flag & os.ST_RDONLY
    for path in paths:
        src = LocalFile(path)
        assert src.map_mode == "readonly-fs"
        src.close()
        with arrayfs.ArrayRecordReader(path) as r:
            assert r.read_all() == RECORDS == gread(path)
            assert r.read(np.arange(299, -1, -1)) == RECORDS[::-1]
            assert [r[i] for i in (0, 150, 299)] == [RECORDS[0], RECORDS[150], RECORDS[299]]
        with pytest.raises(OSError):  # and nothing can truncate it
            os.truncate(path, 65536)
    with arrayfs.ArrayRecordDataSource(paths) as ds:
        assert list(ds) == RECORDS * 2
        assert ds.__getitems__(list(range(599, -1, -7))) == [(RECORDS * 2)[i] for i in range(599, -1, -7)]
    assert LocalFile(paths[0], mmap="never").map_mode == "pread"
    assert LocalFile(paths[0], mmap="lease").map_mode == "lease"  # a read lease is possible there too


@pytest.fixture
def immutable(tmp_path):
    _root_or_skip()
    paths = [gwrite(tmp_path / f"i{j}.array_record", o, RECORDS) for j, o in enumerate(OPTIONS)]
    for p in paths:
        subprocess.run(["chattr", "+i", p], check=True)
    try:
        yield paths
    finally:
        for p in paths:
            subprocess.run(["chattr", "-i", p], check=False)


def test_immutable_file_is_mapped(immutable):
    for path in immutable:
        src = LocalFile(path)
        assert src.map_mode == "immutable"
        src.close()
        with arrayfs.ArrayRecordReader(path) as r:
            assert r.read_all() == RECORDS
            assert r.read(np.arange(0, 300, 3)) == RECORDS[::3]
        with pytest.raises(PermissionError):
            os.truncate(path, 65536)
        with pytest.raises(PermissionError):
            open(path, "r+b").close()
    assert LocalFile(immutable[0], mmap="readonly-fs,lease").map_mode == "lease"


def test_lease_is_taken_on_an_owned_file_and_released_on_close(tmp_path):
    path = gwrite(tmp_path / "l.array_record", "group_size:1", RECORDS)
    before_leases, before_maps = leases_held(), maps_held()
    src = LocalFile(path)
    assert src.map_mode == "lease"
    assert leases_held() == before_leases + 1 and maps_held() == before_maps + 1
    src.close()
    assert leases_held() == before_leases and maps_held() == before_maps
    with open(path, "r+b"):  # an open for writing is not blocked by anything now
        pass


def test_no_lease_while_someone_writes(tmp_path):
    path = gwrite(tmp_path / "w.array_record", "group_size:1", RECORDS)
    with open(path, "r+b"):
        src = LocalFile(path)
        assert src.map_mode == "pread"  # the kernel refuses a read lease: EAGAIN
        assert src.read(0, 8) == open(path, "rb").read(8)
        src.close()


TRUNCATE_UNDER_LEASE = """
import os, subprocess, sys, threading, time
import numpy as np
import arrayfs
path, how = sys.argv[1], sys.argv[2]
ds = arrayfs.ArrayRecordDataSource(path)
src = ds.snapshot().file(0)._source
assert src.map_mode == "lease", src.map_mode
first = ds[0]
t0 = time.monotonic()
if how == "process":
    subprocess.run([sys.executable, "-c", f"import os; os.truncate({path!r}, 65536)"], check=True)
elif how == "thread":
    t = threading.Thread(target=os.truncate, args=(path, 65536))
    t.start()
    t.join()
else:
    os.truncate(path, 65536)
took = time.monotonic() - t0
assert src.map_mode == "lease" and not src._lease.live, "the break was not handled"
assert os.path.getsize(path) == 65536
errors = []
for what, read in (("one", lambda: ds[len(ds) - 1]), ("batch", lambda: ds.__getitems__(list(range(len(ds))))),
                   ("iter", lambda: list(ds))):
    try:
        read()
    except arrayfs.TruncatedFileError as e:
        assert e.path == path and e.offset is not None, e
        errors.append(what)
print("errors", " ".join(errors), "took", f"{took:.2f}")
print("mode", src.map_mode)
"""


@pytest.mark.parametrize("options", OPTIONS)
@pytest.mark.parametrize("how", ["process", "thread", "same-thread"])
def test_truncation_breaks_the_lease_and_reads_raise(tmp_path, how, options):
    """The truncating call waits for the break to be handled (never for
    the 45 s lease-break timeout), then every read of what is gone raises
    TruncatedFileError naming the file and a position."""
    path = gwrite(tmp_path / "victim.array_record", options, RECORDS)
    p = run_child(TRUNCATE_UNDER_LEASE, path, how)
    line = p.stdout.splitlines()[0]
    assert line.startswith("errors one batch iter took"), p.stdout
    assert float(line.split()[-1]) < 30, "the truncate waited for the kernel's lease-break timeout"
    assert "mode pread" in p.stdout


REWRITE_UNDER_LEASE = """
import sys
import arrayfs
path, other = sys.argv[1], sys.argv[2]
ds = arrayfs.ArrayRecordDataSource(path)
assert ds.snapshot().file(0)._source.map_mode == "lease"
old = ds[0]
with open(other, "rb") as f:
    new = f.read()
with open(path, "r+b") as f:  # same size and layout, other records, in place
    f.write(new)
bad = 0
for i in range(len(ds)):
    try:
        rec = ds[i]
    except arrayfs.FileChangedError:
        continue
    bad += rec != (old if i == 0 else None)
print("new bytes served", bad)
"""


def test_rewrite_in_place_under_lease_never_serves_new_bytes(tmp_path):
    a = gwrite(tmp_path / "a.array_record", "group_size:1,uncompressed", [b"A%04d" % i * 20 for i in range(300)])
    b = gwrite(tmp_path / "b.array_record", "group_size:1,uncompressed", [b"B%04d" % i * 20 for i in range(300)])
    p = run_child(REWRITE_UNDER_LEASE, a, b)
    assert "new bytes served 0" in p.stdout, p.stdout


FORK_CHILD = """
import os, sys
import arrayfs
path = sys.argv[1]
ds = arrayfs.ArrayRecordDataSource(path)
src = ds.snapshot().file(0)._source
assert src.map_mode == "lease"
ds[0]
pid = os.fork()
if pid == 0:
    # No watcher here: the child must not read through the parent's lease.
    ok = src.map_mode == "lease" and src._lease is not None and not src._lease.live
    try:
        rec = ds[5]
        ok = ok and len(rec) > 0
    except Exception as e:
        ok = False
    os._exit(0 if ok else 3)
_, status = os.waitpid(pid, 0)
print("child", os.waitstatus_to_exitcode(status))
print("parent", ds[7] is not None, src._lease.live)
"""


def test_forked_child_reads_with_pread(tmp_path):
    path = gwrite(tmp_path / "f.array_record", "group_size:1", RECORDS)
    p = run_child(FORK_CHILD, path)
    assert "child 0" in p.stdout and "parent True True" in p.stdout, p.stdout + p.stderr


def test_readers_in_threads_while_another_process_truncates(tmp_path):
    """Four threads read through the map while a child truncates: each read
    returns the right bytes or raises; nothing else (and no SIGBUS)."""
    code = """
    import os, subprocess, sys, threading
    import numpy as np
    import arrayfs
    path = sys.argv[1]
    want = arrayfs.ArrayRecordReader(path, "max_parallelism:1").read_all()
    ds = arrayfs.ArrayRecordDataSource(path)
    assert ds.snapshot().file(0)._source.map_mode == "lease"
    stop = threading.Event()
    bad = []
    def reader(seed):
        rng = np.random.default_rng(seed)
        while not stop.is_set():
            idx = rng.integers(0, len(ds), 32)
            try:
                got = ds.__getitems__(idx)
            except (arrayfs.TruncatedFileError, arrayfs.FileChangedError):
                continue
            bad.extend(j for j, g in zip(idx.tolist(), got) if g != want[j])
    ts = [threading.Thread(target=reader, args=(s,)) for s in range(4)]
    for t in ts:
        t.start()
    subprocess.run([sys.executable, "-c", f"import os, time; time.sleep(0.2); os.truncate({path!r}, 65536)"],
                   check=True)
    stop.set()
    for t in ts:
        t.join()
    print("wrong", len(bad))
    """
    path = gwrite(tmp_path / "t.array_record", "group_size:1", RECORDS * 10)
    p = run_child(code, path)
    assert "wrong 0" in p.stdout, p.stdout


def test_map_budget_falls_back_to_pread(tmp_path, monkeypatch):
    from arrayfs.storage import mapping

    path = gwrite(tmp_path / "b.array_record", "group_size:1", RECORDS)
    monkeypatch.setattr(mapping, "_slots", 10**9)
    src = LocalFile(path)
    assert src.map_mode == "pread"
    assert src.read(0, 8) == open(path, "rb").read(8)
    src.close()


def test_no_descriptor_left_for_a_map_falls_back_to_pread(tmp_path):
    """A process using nearly all its descriptors opens 100 shards: a map's
    duplicate descriptor (Python before 3.13) or the lease's may fail with
    EMFILE; the shard is then read with pread, whose pool gives back idle
    descriptors, and the dataset opens and reads."""
    for k in range(100):
        with arrayfs.ArrayRecordWriter(tmp_path / f"x.array_record-{k:05d}", "group_size:1") as w:
            w.write(b"rec%d" % k)
    p = run_child("""
    import os, resource, sys
    import arrayfs
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    held = []
    while len(os.listdir("/proc/self/fd")) < 256 - 40:
        held.append(os.open(os.devnull, os.O_RDONLY))
    ds = arrayfs.ArrayRecordDataSource(sys.argv[1] + "/x.array_record-*")
    assert list(ds) == [b"rec%d" % k for k in range(100)]
    assert ds[57] == b"rec57" and ds.__getitems__([3, 99]) == [b"rec3", b"rec99"]
    print("ok")
    """, str(tmp_path))
    assert p.stdout.strip() == "ok", p.stderr


def test_env_never_reads_with_pread(tmp_path):
    path = gwrite(tmp_path / "e.array_record", "group_size:1", RECORDS)
    p = run_child("""
    import sys
    from arrayfs.storage.local import LocalFile
    print(LocalFile(sys.argv[1]).map_mode)
    """, path)
    assert p.stdout.strip() == "lease"
    env = dict(os.environ, ARRAYFS_MMAP="never")
    q = subprocess.run([sys.executable, "-c", "import sys\nfrom arrayfs.storage.local import LocalFile\n"
                        "print(LocalFile(sys.argv[1]).map_mode)", path], capture_output=True, text=True, env=env)
    assert q.stdout.strip() == "pread", q.stderr


def test_fault_suite_in_pread_mode():
    """The truncation and rewrite tests of ``test_faults.py`` run by default
    on leased maps (tmp_path is an owned file on a local file system); here
    they run again with every map turned off."""
    env = dict(os.environ, ARRAYFS_MMAP="never")
    here = os.path.dirname(os.path.abspath(__file__))
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k",
                        "truncated or rewritten or replaced or removed", os.path.join(here, "test_faults.py")],
                       capture_output=True, text=True, env=env, timeout=600, cwd=os.path.dirname(here))
    assert p.returncode == 0, p.stdout[-3000:]
    assert " passed" in p.stdout and "failed" not in p.stdout, p.stdout[-500:]


def test_shutil_copy_of_a_leased_file(tmp_path):
    """Reading a leased file does not stand in the way of ordinary tools
    that only read it."""
    path = gwrite(tmp_path / "c.array_record", "group_size:1", RECORDS)
    with arrayfs.ArrayRecordReader(path) as r:
        assert r._file._source.map_mode == "lease"
        shutil.copy(path, tmp_path / "copy.array_record")
        assert gread(tmp_path / "copy.array_record") == RECORDS
        done = threading.Event()
        t = threading.Thread(target=lambda: (open(path, "rb").read(), done.set()))
        t.start()
        t.join(10)
        assert done.is_set()


ORPHANED_CHILD = """
import os, sys, time
import numpy as np
import arrayfs
path, log, stop, hold_view = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
ds = arrayfs.ArrayRecordDataSource(path)
src = ds.snapshot().file(0)._source
assert src.map_mode == "lease", src.map_mode
want = list(ds)
# A view of the map exported across the fork (a thread reading a batch at
# that moment): the child cannot close that map, it must map it afresh.
view = memoryview(src.map_view()) if hold_view else None
r, w = os.pipe()
pid = os.fork()
if pid:
    os.close(w)
    os.read(r, 1)  # the child is reading
    print(pid, flush=True)
    os._exit(0)  # as a daemon's parent returns: no close, no release
os.close(r)
out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
os.dup2(out, 1)
os.dup2(out, 2)
rng = np.random.default_rng(0)
counts = {"right": 0, "errors": 0, "wrong": 0}
def one_pass():
    for read in (lambda: [(i, ds[i]) for i in rng.integers(0, len(ds), 50).tolist()],
                 lambda: list(zip(idx := rng.integers(0, len(ds), 64).tolist(), ds.__getitems__(idx)))):
        try:
            got = read()
        except (arrayfs.TruncatedFileError, arrayfs.FileChangedError):
            counts["errors"] += 1
            continue
        for i, rec in got:
            counts["right" if rec == want[i] else "wrong"] += 1
one_pass()
os.write(w, b"x")
deadline = time.monotonic() + 60
while not os.path.exists(stop) and time.monotonic() < deadline:
    one_pass()
    time.sleep(0.01)
for _ in range(5):
    one_pass()
print("done", counts["right"], counts["errors"], counts["wrong"], flush=True)
os._exit(0)
"""


@pytest.mark.parametrize("hold_view", [False, True], ids=["no-view", "view-held-at-fork"])
@pytest.mark.parametrize("change", ["truncate", "rewrite"])
def test_forked_child_outliving_the_leaseholder_blocks_no_writer(tmp_path, change, hold_view):
    """A lease belongs to the open file description, which a forked child
    inherits. The parent takes a lease and forks a child that keeps
    reading; the parent exits (as ``arrayfs mount``'s parent does). A third
    process then opens the file for writing: it must not wait out the
    kernel's lease-break-time (45 s), because the child holds nothing of
    the leased description. The child then reads the right bytes or gets
    TruncatedFileError/FileChangedError, never other bytes, and lives."""
    records = [np.random.default_rng(i).bytes(500 + i % 300) for i in range(400)]
    path = gwrite(tmp_path / "orphan.array_record", "group_size:1,uncompressed", records)
    other = gwrite(tmp_path / "other.array_record", "group_size:1,uncompressed",
                   [bytes(255 - b for b in r) for r in records])  # same layout, other bytes
    log, stop = tmp_path / "child.log", tmp_path / "stop"
    p = run_child(ORPHANED_CHILD, path, log, stop, int(hold_view))
    child = int(p.stdout.split()[0])
    try:
        writer = f"""
import os, sys, time
t0 = time.monotonic()
fd = os.open({path!r}, os.O_WRONLY)  # breaks any read lease: waits for its holder
took = time.monotonic() - t0
if {change!r} == "truncate":
    os.ftruncate(fd, 65536)
else:
    os.pwrite(fd, open({other!r}, "rb").read(), 0)
os.close(fd)
print(f"{{took:.3f}}")
"""
        w = subprocess.run([sys.executable, "-c", writer], capture_output=True, text=True, timeout=120)
        assert w.returncode == 0, w.stderr
        assert float(w.stdout) < 20, f"the writer waited {w.stdout.strip()} s: the child kept the parent's lease"
    finally:
        stop.touch()
    deadline = time.monotonic() + 60
    text = ""
    while time.monotonic() < deadline:
        text = log.read_text() if log.exists() else ""
        if "done" in text or not os.path.exists(f"/proc/{child}"):
            break
        time.sleep(0.05)
    line = [x for x in text.splitlines() if x.startswith("done")]
    assert line, f"the child died or hung: {text[-2000:]}"
    right, errors, wrong = map(int, line[0].split()[1:])
    assert wrong == 0, line
    assert right > 0 and errors > 0, line  # it read before, and saw the change after


def test_a_stray_lease_signal_kills_no_process(tmp_path):
    """The lease-break signal's default action ends a process. It is sent
    to the watcher thread alone; and should one be sent to the process (or
    reach a thread started before the watcher, or a forked child), the
    handler set at import makes it harmless. A subprocess that the reader
    spawns gets the default action back (a handler does not cross exec)."""
    path = gwrite(tmp_path / "s.array_record", "group_size:1", RECORDS)
    p = run_child("""
    import os, signal, subprocess, sys, threading, time
    import arrayfs
    sig = signal.SIGRTMAX - 6
    early = threading.Thread(target=time.sleep, args=(0.5,))
    early.start()  # a thread older than the watcher
    r = arrayfs.ArrayRecordReader(sys.argv[1])
    assert r._file._source.map_mode == "lease"
    os.kill(os.getpid(), sig)  # to the process, not the watcher
    signal.pthread_kill(early.ident, sig)
    pid = os.fork()
    if pid == 0:
        os.kill(os.getpid(), sig)
        time.sleep(0.1)
        os._exit(0)
    print("child", os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
    early.join()
    q = subprocess.run([sys.executable, "-c", "import signal; print(signal.getsignal(signal.SIGRTMAX - 6) == signal.SIG_DFL)"],
                       capture_output=True, text=True)
    print("exec'd", q.stdout.strip())
    print("alive", r[3] == r.read([3])[0])
    """, path)
    assert "child 0" in p.stdout and "alive True" in p.stdout, p.stdout
    assert "exec'd True" in p.stdout, p.stdout
