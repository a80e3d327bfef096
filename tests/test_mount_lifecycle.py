"""Real FUSE mounts: unmounting, signals, a killed daemon, errors at mount
time, the foreground API, worker processes, libfuse 2's limits, and
5,000 shards under a small descriptor limit.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading

import _mounting
import pytest
from _mounting import (
    CLI,
    FUSERMOUNT,
    daemon_pid,
    daemon_pids,
    force_unmount,
    is_mounted,
    run_cli,
    wait_for,
    worker_pids,
)

from arrayfs import ArrayRecordWriter

pytestmark = _mounting.needs_fuse
dataset, mounter = _mounting.dataset, _mounting.mounter

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
        ((tmp_path / "nothing-*.array_record", mnt), f"no shard matched: {tmp_path / 'nothing-*.array_record'}"),
        ((tmp_path / "gone.array_record", mnt), f"no shard matched: {tmp_path / 'gone.array_record'}: no such file"),
        ((empty, mnt), f"no shard matched: {empty}"),
        ((d, mnt, "--log-file", tmp_path / "nodir" / "x.log"), f"log file {tmp_path / 'nodir' / 'x.log'}: "),
        ((bad, mnt), "bad file"),
        ((d, mnt, "-o", "rw"), "read-only"),
    ]
    for args, words in cases:
        p = run_cli("mount", *args)
        assert p.returncode == 1, (args, p.stderr)
        assert p.stderr.count("\n") == 1 and p.stderr.startswith("arrayfs: error: ") and words in p.stderr, p.stderr
        assert not is_mounted(mnt)
    # A second mount on a mounted directory says so.
    p = run_cli("mount", "--no-watch", d, mnt)
    assert p.returncode == 0, p.stderr
    try:
        p = run_cli("mount", d, mnt)
        assert p.returncode == 1 and p.stderr.count("\n") == 1, p.stderr
        assert "is already a mount point; unmount it first" in p.stderr
    finally:
        force_unmount(mnt)
    # A mount libfuse itself refuses (unknown option) is one line too.
    p = run_cli("mount", d, mnt, "-o", "no_such_option_x")
    assert p.returncode == 1 and p.stderr.count("\n") == 1, p.stderr
    assert not is_mounted(mnt)


def test_relative_log_file_and_file_urls(tmp_path, dataset):
    # The daemon runs in "/": a relative --log-file is the caller's, and a
    # file:// URL is the local path it names.
    d, recs = dataset
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        p = subprocess.run([*CLI, "mount", "--no-watch", "--log-file", "rel.log", f"file://{d}", str(mnt)],
                           capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert p.returncode == 0, p.stderr
        assert (tmp_path / "rel.log").exists()
        names = sorted(n for n in os.listdir(mnt) if not n.startswith("."))
        assert len(names) == len(recs)
        assert (mnt / names[0]).read_bytes() == recs[0]
    finally:
        force_unmount(mnt)
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
        subprocess.run([FUSERMOUNT, "-u", str(mnt)], check=True)
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
