"""The mount's decisions without FUSE: :class:`MountOptions`, the core
(handles, checks, errors, the refresh protocol) and a plugged-in
:class:`Subtree`, called directly on real shards."""

from __future__ import annotations

import dataclasses
import errno
import os

import pytest

from arrayfs import ArrayRecordDataSource, ArrayRecordWriter
from arrayfs.fs.core import Core, SeenNames
from arrayfs.fs.options import LONG_TIMEOUT, SHORT_TIMEOUT, MountError, MountOptions
from arrayfs.fs.view import ROOT_INO, SUBTREE, Attr, FsView, Node, Subtree


def _write(path, recs):
    with ArrayRecordWriter(str(path), "group_size:1") as w:
        for r in recs:
            w.write(r)


# -- options -------------------------------------------------------------------------


def test_options_defaults_per_api():
    o3 = MountOptions.parse(None, api=3, watch=True)
    assert o3.workers == len(os.sched_getaffinity(0)) and o3.threads == 1
    assert o3.entry_timeout == o3.attr_timeout == LONG_TIMEOUT and o3.negative_timeout == 0
    assert o3.fuse3_args()[:4] == ["ro", "fsname=arrayfs", "subtype=arrayfs", "default_permissions"]
    assert "max_read=1048576" in o3.fuse3_args() and "auto_unmount" in o3.fuse3_args()
    o2 = MountOptions.parse(None, api=2, watch=True)
    kw = o2.fuse2_kwargs()
    # libfuse 2 cannot invalidate: short timeouts, no page cache across opens.
    assert o2.workers == 1 and kw["entry_timeout"] == kw["attr_timeout"] == SHORT_TIMEOUT
    assert "kernel_cache" not in kw and kw["ro"] and kw["use_ino"] and "nothreads" not in kw
    assert MountOptions.parse(None, api=2, watch=False).fuse2_kwargs()["kernel_cache"]


def test_options_own_and_passed_through():
    o = MountOptions.parse(["workers=3,max_threads=2", "open_handles", "readdirplus=10,attr_timeout=2.5",
                            "max_readahead=65536", "allow_other"], api=3, watch=False)
    assert (o.workers, o.threads, o.open_handles, o.readdirplus, o.attr_timeout) == (3, 2, True, 10, 2.5)
    assert o.allow_other and o.libfuse == ("max_readahead=65536",)
    assert o.fuse3_args()[-1] == "max_readahead=65536" and "allow_other" in o.fuse3_args()
    assert MountOptions.parse({"nothreads": True, "workers": 2}, api=3).threads == 1
    assert MountOptions.parse("nothreads", api=2).fuse2_kwargs()["nothreads"]
    # Sources on object storage: more threads per worker, unless -o says otherwise.
    from arrayfs.fs.options import REMOTE_THREADS

    assert MountOptions.parse(None, api=3, remote=True).threads == REMOTE_THREADS > 1
    assert MountOptions.parse("max_threads=3", api=3, remote=True).threads == 3
    assert MountOptions.parse(None, api=2, remote=True).threads == 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.workers = 5


@pytest.mark.parametrize("options,api,words", [
    ("rw", 3, "read-only"),
    ("workers=x", 3, "takes a number"),
    ("workers=0", 3, ">= 1"),
    ("=3", 3, "bad FUSE option"),
    ("readdirplus=10", 2, "readdirplus needs libfuse 3"),
    ("max_threads=2", 2, "max_threads needs libfuse 3"),
    ("workers=2", 2, "workers=N needs libfuse 3"),
])
def test_options_a_binding_cannot_honour_are_errors(options, api, words):
    with pytest.raises(MountError) as e:
        MountOptions.parse(options, api=api)
    assert words in str(e.value)


# -- the core ------------------------------------------------------------------------


class Notes:
    """A notifier and a switch that record what the core asks, in order."""

    def __init__(self, core):
        self.calls = []
        self.core = core

    def invalidate_entry(self, parent, name):
        self.calls.append(("entry", parent, name.decode(), self.core.refreshing))
        return True

    def invalidate_inode(self, ino):
        self.calls.append(("inode", ino, self.core.refreshing))
        return True

    def switch(self):
        self.calls.append(("switch", self.core.refreshing))


@pytest.fixture
def watched(tmp_path):
    _write(tmp_path / "s-1.array_record", [b"a%d" % i for i in range(6)])
    _write(tmp_path / "s-2.array_record", [b"b%d" % i for i in range(6)])
    ds = ArrayRecordDataSource(str(tmp_path / "s-*.array_record"))
    core = Core(FsView(ds), MountOptions.parse(None, api=3, watch=True))
    core.init(no_open_supported=True)
    yield tmp_path, core
    core.close()
    ds.close()


def test_checks_and_stateless_handles(watched):
    _, core = watched
    snap, node = core.lookup(ROOT_INO, "03")
    assert core.contents(snap, node, "03")[0] == b"a3"
    with pytest.raises(OSError) as e:
        core.open(snap, node, os.O_RDONLY)
    assert e.value.errno == errno.ENOSYS  # the kernel opens files by itself
    core.no_open = False
    fh = core.open(snap, node, os.O_RDONLY)
    assert core.node(core.attr(snap, node, "03").ino, fh) == (snap, node)  # a handle is its snapshot
    for flags in (os.O_WRONLY, os.O_RDWR, os.O_RDONLY | os.O_TRUNC, os.O_RDONLY | os.O_APPEND):
        with pytest.raises(OSError) as e:
            core.open(snap, node, flags)
        assert e.value.errno == errno.EROFS
    root = core.node(ROOT_INO)
    with pytest.raises(OSError) as e:
        core.open(*root, os.O_RDONLY)
    assert e.value.errno == errno.EISDIR
    with pytest.raises(OSError) as e:
        core.opendir(snap, node)
    assert e.value.errno == errno.ENOTDIR
    assert core.lookup(ROOT_INO, "12") is None and core.lookup(ROOT_INO, "x") is None
    with pytest.raises(OSError) as e:
        core.node(12345)
    assert e.value.errno == errno.ESTALE


def test_refresh_protocol_order_and_handles_across_refreshes(watched):
    d, core = watched
    notes = Notes(core)
    core.notifier, core.switch = notes, notes.switch
    old = core.view.snapshot
    snap, node = core.lookup(ROOT_INO, "7")  # cached by the kernel, unpadded: b1
    ino_b1 = core.attr(snap, node, "7").ino
    core.lookup(ROOT_INO, "02")
    dir_fh = core.opendir(*core.node(ROOT_INO))
    _write(d / "s-0.array_record", [b"z%d" % i for i in range(5)])  # sorts first: every name shifts
    change = core.refresh()
    assert change.added
    # Old summary's pages first, while refreshing; then the worker switch;
    # then the names the kernel had; the summary's name last, no longer
    # refreshing; then the directories.
    assert notes.calls[0] == ("inode", old.summary_ino, True)
    assert notes.calls[1] == ("switch", True)
    entries = [c for c in notes.calls if c[0] == "entry"]
    assert {c[2] for c in entries[:2]} == {"7", "02"} and all(c[3] for c in entries[:2])
    assert entries[-1][2] == ".arrayfs.json" and not entries[-1][3]
    assert notes.calls[-2:] == [("inode", ROOT_INO, False), ("inode", 2, False)]
    assert not core.refreshing
    # The record keeps its inode; a name now means another record.
    snap2, node2 = core.lookup(ROOT_INO, "12")
    assert core.attr(snap2, node2, "12").ino == ino_b1 and core.contents(snap2, node2, "12")[0] == b"b1"
    # The directory handle still lists its snapshot (the previous one)...
    assert core.snapshot(dir_fh) is old
    os.unlink(d / "s-1.array_record")
    core.refresh()
    # ...until a second refresh retires it: ESTALE, and its shards' files closed.
    with pytest.raises(OSError) as e:
        core.snapshot(dir_fh)
    assert e.value.errno == errno.ESTALE


def test_the_summary_is_stale_while_a_refresh_is_applied(watched):
    d, core = watched
    seen = []

    class Probe(Notes):
        def switch(self):
            try:
                core.lookup(ROOT_INO, ".arrayfs.json")
                seen.append("answered")
            except OSError as e:
                seen.append(e.errno)

    probe = Probe(core)
    core.notifier, core.switch = probe, probe.switch
    _write(d / "s-3.array_record", [b"c"])
    core.refresh()
    assert seen == [errno.ESTALE]
    assert core.lookup(ROOT_INO, ".arrayfs.json") is not None


def test_seen_names_mark_and_carry():
    a = SeenNames(120)
    a.padded[[5, 50]] = 1
    a.plain[[7, 100]] = 1
    assert a.names(0, 120, 3) == ["005", "7", "050", "100"]
    b = SeenNames(200)
    a.carry(b, 60)  # names below the first that moved stay cached
    assert b.names(0, 200, 3) == ["005", "7", "050"]


# -- a subtree plugged in --------------------------------------------------------------


class Counts(Subtree):
    """``/.counts/<shard position>``: the shard's record count as text."""

    name = ".counts"

    def root(self):
        return Node(SUBTREE, self.position, part=-1)

    def _file(self, k):
        return Node(SUBTREE, self.position, local=k, part=0)

    def lookup(self, parent, name):
        if parent.part == -1 and name.isdigit() and int(name) < len(self.snap.shards):
            return self._file(int(name))
        raise FileNotFoundError(errno.ENOENT, "no such count", name)

    def attr(self, node):
        if node.part == -1:
            return Attr(0o40555, self.ino_base, 2, 0, self.snap.mtime_ns)
        return Attr(0o100444, self.ino_base | (node.local + 1), 1, len(self.read(node)), self.snap.mtime_ns)

    def readdir(self, node, offset, sizes):
        for k in range(offset - 2, len(self.snap.shards)):
            yield str(k), self.attr(self._file(k)), k + 3

    def read(self, node):
        if node.part == -1:
            raise IsADirectoryError(errno.EISDIR, "a directory")
        return b"%d\n" % self.snap.shards[node.local].num_records

    def node_of_ino(self, ino):
        n = ino - self.ino_base
        return self.root() if n == 0 else (self._file(n - 1) if n <= len(self.snap.shards) else None)


def test_a_subtree_plugs_in_under_the_root(tmp_path):
    _write(tmp_path / "s-1.array_record", [b"a"] * 3)
    _write(tmp_path / "s-2.array_record", [b"b"] * 5)
    with ArrayRecordDataSource(str(tmp_path / "s-*.array_record")) as ds:
        view = FsView(ds, subtrees=(Counts,))
        assert view.listdir("/")[:3] == [".arrayfs.json", ".shards", ".counts"]
        assert view.listdir("/.counts") == ["0", "1"]
        assert view.read("/.counts/1") == b"5\n" and view.getattr("/.counts/1").size == 2
        snap = view.snapshot
        for path in ("/.counts", "/.counts/0", "/.counts/1"):
            node = snap.resolve(path)
            assert snap.node_of_ino(snap.attr(node).ino) == node
        entries = list(snap.readdir(snap.resolve("/.counts"), 1, sizes=True))
        assert [(n, a.size, o) for n, a, o in entries] == [("..", 0, 2), ("0", 2, 3), ("1", 2, 4)]
        # Root records are unchanged by it, and a refresh drops the kernel's entries below it.
        assert view.read("/3") == b"b"
        _write(tmp_path / "s-3.array_record", [b"c"])
        change = view.refresh()
        assert (ROOT_INO, ".counts") in set(change.entries(records=False))
        assert view.read("/.counts/2") == b"1\n"


def _fds_on(path) -> int:
    """Descriptors and maps of this process on ``path`` (deleted or not)."""
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        n += target.startswith(str(path))
    with open("/proc/self/maps") as f:
        n += sum(str(path) in line for line in f)
    return n


def test_a_deleted_shard_gives_its_descriptor_back_once_no_snapshot_uses_it(tmp_path):
    """Explicitly, at the refresh that retires the last snapshot the view
    keeps, even while something else still holds that snapshot (a cache, a
    request in flight), not when the last reference to it goes."""
    _write(tmp_path / "s-1.array_record", [b"a"] * 3)
    _write(tmp_path / "s-2.array_record", [b"b"] * 3)
    with ArrayRecordDataSource(str(tmp_path / "s-*.array_record")) as ds:
        view = FsView(ds)
        held = [view.snapshot]
        assert view.read("/0") == b"a"
        gone = tmp_path / "s-1.array_record"
        os.unlink(gone)
        view.refresh()
        held.append(view.snapshot)
        # The snapshot before still serves files opened before the refresh.
        assert _fds_on(gone) >= 1 and view.previous.read(view.previous.resolve("/0")) == b"a"
        _write(tmp_path / "s-3.array_record", [b"c"])
        view.refresh()
        assert _fds_on(gone) == 0
        with pytest.raises(ValueError):
            held[0].read(held[0].resolve("/0"))
        assert view.read("/0") == b"b" and view.read("/3") == b"c"
