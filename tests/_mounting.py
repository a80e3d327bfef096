"""Helpers and fixtures of the mount tests (``test_mount*.py``): real
mounts through the command line, always unmounted in teardown
(``fusermount -u``, then lazily), so a failing test leaves no mount behind.

A test module takes the fixtures by name (``mounter = _mounting.mounter``)
and skips only where FUSE cannot work at all (``pytestmark =
_mounting.needs_fuse``); CI installs fuse3 and libfuse2, so nothing is
skipped there.
"""

from __future__ import annotations

import ctypes.util
import errno
import json
import os
import random
import shutil
import subprocess
import sys
import time

import pytest
from _google import gwrite
from _records import awrite

FUSERMOUNT = shutil.which("fusermount3") or shutil.which("fusermount")
needs_fuse = pytest.mark.skipif(
    not os.path.exists("/dev/fuse") or FUSERMOUNT is None,
    reason="FUSE unavailable: needs /dev/fuse and fusermount3/fusermount (apt-get install fuse3)",
)

array_record_module = pytest.importorskip("array_record.python.array_record_module")

CLI = [sys.executable, "-m", "arrayfs"]
BIG = 300_000  # bytes: more than two 128 KiB read requests


def libfuse_env(libfuse: str) -> dict | None:
    """The environment of a mount through libfuse ``libfuse`` ("3": the
    default one; "2": mfusepy's high-level binding; skips where libfuse 2
    is not installed)."""
    if libfuse == "3":
        return None
    if not ctypes.util.find_library("fuse") or not shutil.which("fusermount"):
        pytest.skip("libfuse 2 (libfuse.so.2 and fusermount) not installed")
    return dict(os.environ, FUSE_LIBRARY_NAME="fuse")


def names(mnt):
    """The record names at the root of ``mnt``, sorted."""
    return sorted(n for n in os.listdir(mnt) if not n.startswith("."))


def refreshed(mnt, n) -> bool:
    """Whether the mount's summary (readable again: the refresh is fully
    applied, every name means what it says) counts ``n`` records."""
    return json.loads((mnt / ".arrayfs.json").read_bytes())["num_records"] == n



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
