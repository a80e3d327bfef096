"""The filesystem view (arrayfs.fs.view) called directly: no FUSE, no mount."""

from __future__ import annotations

import errno
import itertools
import json
import os

import pytest
from _mounting import write_google, write_ours
from _records import make_records

import arrayfs
from arrayfs import ArrayRecordDataSource, ArrayRecordError, ArrayRecordWriter
from arrayfs.fs.view import RECORD, ROOT, SHARD_DIR, SHARDS, SUMMARY, FsView, diff

array_record_module = pytest.importorskip("array_record.python.array_record_module")


def _records(seed: int, n: int, big_every: int = 0) -> list[bytes]:
    return make_records(n, seed, size=(0, 300), big_every=big_every, big_size=(200_000, 200_001),
                        compressible=False)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Three shards: ours group_size 1 (one big record), Google's group_size 4,
    ours group_size 8. Returns (directory, list of all records in order)."""
    d = tmp_path_factory.mktemp("viewdata")
    a = _records(1, 40, big_every=17)
    b = _records(2, 23)
    c = _records(3, 50)
    write_ours(d / "part-00000.array_record", a)
    write_google(d / "part-00001.array_record", b, "group_size:4")
    write_ours(d / "part-00002.array_record", c, "group_size:8,zstd:1")
    return d, a + b + c


@pytest.fixture
def view(data):
    d, _ = data
    ds = ArrayRecordDataSource(str(d / "*.array_record"))
    yield FsView(ds)
    ds.close()


def test_root_lists_every_record_padded(view, data):
    _, recs = data
    names = view.listdir("/")
    assert names[:2] == [".arrayfs.json", ".shards"]
    assert names[2:] == [str(i).zfill(3) for i in range(len(recs))]


def test_names_resolve_padded_and_unpadded(view, data):
    _, recs = data
    snap = view.snapshot
    assert snap.width == 3
    for i in (0, 7, 42, len(recs) - 1):
        assert view.resolve("/" + str(i).zfill(3)) == view.resolve(f"/{i}")
        node = view.resolve(f"/{i}")
        assert node.kind == RECORD and node.index == i
    assert view.resolve("/").kind == ROOT
    assert view.resolve("/.shards").kind == SHARDS
    assert view.resolve("/.arrayfs.json").kind == SUMMARY
    assert view.resolve("/.shards/part-00001.array_record").kind == SHARD_DIR


@pytest.mark.parametrize(
    "path",
    ["/-1", "/abc", "/00x", "/113", "/999", "/0000", "/007x", "/ 1", "/1 ", "/+1", "/1.0", "/٣", "/²",
     "/../x", "/..", "/.", "/./1", "/x/../1", "", "1", "//1", "/1/", "/001/x", "/.shards/x", "/.shards/..",
     "/.shards/part-00001.array_record/23", "/.shards/part-00001.array_record/-0",
     "/.shards/part-00001.array_record/1/2", "/.arrayfs.json/x", "/.shards/part-00001.array_record/000",
     "/" + "9" * 5000],
)
def test_non_records_are_enoent(view, path):
    with pytest.raises(FileNotFoundError) as e:
        view.resolve(path)
    assert e.value.errno == errno.ENOENT


def test_contents_and_sizes_equal_the_reader(view, data):
    _, recs = data
    ds = view.ds
    for i, rec in enumerate(recs):
        a = view.getattr(f"/{i}")
        assert a.size == len(rec) == ds.record_size(i)
        assert view.read(f"/{i}") == rec == ds[i]


def test_shard_views(view, data):
    d, recs = data
    shard_names = view.listdir("/.shards")
    assert shard_names == [f"part-0000{k}.array_record" for k in range(3)]
    names = view.listdir("/.shards/part-00002.array_record")
    assert names == [f"{j:02d}" for j in range(50)]
    assert view.read("/.shards/part-00002.array_record/07") == recs[40 + 23 + 7]
    assert view.read("/.shards/part-00002.array_record/7") == recs[40 + 23 + 7]
    # One inode for both names of a record, like a hard link.
    a = view.getattr("/.shards/part-00002.array_record/07")
    b = view.getattr(f"/{40 + 23 + 7}")
    assert a == b and a.nlink == 2


def test_attributes(view, data):
    d, recs = data
    snap = view.snapshot
    st = os.stat(d / "part-00001.array_record")
    a = view.getattr("/45")  # in shard 1
    assert a.mode == 0o100444 and a.mtime_ns == st.st_mtime_ns
    assert view.getattr("/").mode == 0o40555
    assert view.getattr("/.shards").nlink == 2 + 3
    inos = [view.getattr(f"/{i}").ino for i in range(len(recs))]
    inos += [view.getattr(p).ino for p in ("/", "/.shards", "/.arrayfs.json")]
    inos += [view.getattr(f"/.shards/{n}").ino for n in snap.shard_names]
    assert len(set(inos)) == len(inos)
    # Stable across a remount (a new view of the same files).
    ds2 = ArrayRecordDataSource(str(d / "*.array_record"))
    try:
        v2 = FsView(ds2)
        assert [v2.getattr(f"/{i}").ino for i in range(len(recs))] == inos[: len(recs)]
    finally:
        ds2.close()


def test_readdir_offsets_resume_and_carry_types(view, data):
    _, recs = data
    snap = view.snapshot
    root = snap.resolve("/")
    full = list(snap.readdir(root, 0, sizes=True))
    assert [e[0] for e in full[:4]] == [".", "..", ".arrayfs.json", ".shards"]
    assert [e[2] for e in full] == list(range(1, len(full) + 1))
    # Resume from every offset, in pieces of 7.
    got, off = [], 0
    while True:
        piece = list(itertools.islice(snap.readdir(root, off), 7))
        if not piece:
            break
        got += piece
        off = piece[-1][2]
    assert [(n, a.mode, a.ino, o) for n, a, o in got] == [(n, a.mode, a.ino, o) for n, a, o in full]
    for name, a, _ in full[4:]:
        assert a.mode == 0o100444 and a.size == len(recs[int(name)])
    shard = snap.resolve("/.shards/part-00001.array_record")
    entries = list(snap.readdir(shard, 5))
    assert [e[0] for e in entries] == [f"{j:02d}" for j in range(3, 23)]


def test_readdir_is_streamed(tmp_path):
    # 300,000 records: the first entries come without listing the rest.
    path = tmp_path / "many.array_record"
    with ArrayRecordWriter(str(path), "group_size:1000,uncompressed") as w:
        for _ in range(300_000):
            w.write(b"x")
    ds = ArrayRecordDataSource(str(path))
    try:
        snap = FsView(ds).snapshot
        it = snap.readdir_batches(snap.resolve("/"), 299_990, sizes=True)
        first = next(it)
        head = next(snap.readdir_batches(snap.resolve("/"), 0))
        while head.name_list()[0] in (".", "..", ".arrayfs.json", ".shards"):
            head = next(snap.readdir_batches(snap.resolve("/"), head.next_offset))
        assert head.name_list()[0] == "000000" and len(head.name_list()) <= 64
        assert first.name_list()[0] == "299986" and first.next_offset == 299_991
        assert len(first.name_list()) == 14
        rest = list(snap.readdir(snap.resolve("/"), 299_990))
        assert [n for n, _, _ in rest] == [str(i) for i in range(299_986, 300_000)]
    finally:
        ds.close()


def test_summary_is_exact(view, data):
    _, recs = data
    doc = json.loads(view.read("/.arrayfs.json"))
    assert doc["num_records"] == len(recs)
    assert doc["total_bytes"] == sum(map(len, recs))
    assert [s["num_records"] for s in doc["shards"]] == [40, 23, 50]
    assert [s["first_index"] for s in doc["shards"]] == [0, 40, 63]
    assert doc["shards"][1]["writer_options"].startswith("group_size:4")
    assert view.getattr("/.arrayfs.json").size == len(view.read("/.arrayfs.json"))


def test_slices_and_duplicate_names(data):
    d, recs = data
    p = str(d / "part-00002.array_record")
    ds = ArrayRecordDataSource([p + "[3:21]", p + "[21:]", str(d / "part-00000.array_record")])
    try:
        v = FsView(ds)
        assert v.listdir("/.shards") == [
            "part-00002.array_record[3:21]", "part-00002.array_record[21:50]", "part-00000.array_record"
        ]
        c = recs[63:]
        assert v.listdir("/.shards/part-00002.array_record[3:21]") == [f"{j:02d}" for j in range(3, 21)]
        assert v.read("/.shards/part-00002.array_record[3:21]/05") == c[5]
        assert v.read("/0") == c[3]
        with pytest.raises(FileNotFoundError):
            v.resolve("/.shards/part-00002.array_record[3:21]/02")
        doc = json.loads(v.read("/.arrayfs.json"))
        # Exact even though the slices cut group_size:8 chunks.
        assert [s["total_bytes"] for s in doc["shards"]] == [sum(map(len, c[3:21])), sum(map(len, c[21:])),
                                                           sum(map(len, recs[:40]))]
    finally:
        ds.close()
    ds = ArrayRecordDataSource([p, p])
    try:
        assert FsView(ds).listdir("/.shards") == ["part-00002.array_record", "part-00002.array_record@1"]
    finally:
        ds.close()


def test_long_shard_names_stay_unique_within_255_bytes(tmp_path):
    """Suffixes that tell shards apart (``[a:b]``, ``@<position>``) are
    added after the name is cut to fit, never cut off themselves."""
    long = "x" * 242 + ".array_record"  # 255 bytes: the longest file name
    wide = "é" * 127 + "y"  # 255 bytes, two per "é"
    paths = []
    for sub, name, n in (("a", long, 3), ("b", long, 4), ("c", wide, 5), ("d", wide, 6)):
        (tmp_path / sub).mkdir()
        # (Our writer's temporary name would be too long: write, then rename.)
        write_ours(tmp_path / sub / "s", [b"%s%d" % (sub.encode(), i) for i in range(n)])
        os.rename(tmp_path / sub / "s", tmp_path / sub / name)
        paths.append(str(tmp_path / sub / name))
    ds = ArrayRecordDataSource([*paths, paths[0] + "[1:3]"])
    try:
        v = FsView(ds)
        names = v.listdir("/.shards")
        assert len(set(names)) == 5 and all(len(os.fsencode(n)) <= 255 for n in names)
        assert names[0] == long and names[2] == wide
        assert names[1] == long[:253] + "@1"
        assert names[3] == "é" * 126 + "@3"  # 254 bytes: no "é" is split
        assert names[4] == long[:250] + "[1:3]"
        for k, (n, sub) in enumerate(zip(names, "abcda")):
            first = 1 if k == 4 else 0
            assert v.read(f"/.shards/{n}/{first}") == b"%s%d" % (sub.encode(), first)
    finally:
        ds.close()


def test_refresh_adds_and_removes(tmp_path):
    d = tmp_path
    write_ours(d / "s-00000.array_record", [b"a%d" % i for i in range(9)])
    ds = ArrayRecordDataSource(str(d / "*.array_record"))
    try:
        v = FsView(ds)
        old = v.snapshot
        ino = v.getattr("/3").ino
        assert v.refresh() is None
        write_ours(d / "s-00001.array_record", [b"b%d" % i for i in range(3)])
        change = v.refresh()
        assert change.added == (str(d / "s-00001.array_record"),)
        assert len(v.listdir("/")) == 2 + 12
        assert v.read("/10") == b"b1" and v.read("/03") == b"a3"
        assert v.getattr("/3").ino == ino  # same record, same inode
        names = {name for parent, name in change.entries() if parent == 1}
        # Width grew from 1 to 2: every root name may have changed meaning.
        assert {".arrayfs.json", "3", "03", "8", "08"} <= names and {"/", "/.shards"} <= set(change.fixed)
        assert "9" not in names and "09" not in names  # did not exist: nothing cached
        # The old snapshot still reads what it read.
        assert old.read(old.resolve("/3")) == b"a3" and old.num_records == 9
        os.unlink(d / "s-00000.array_record")
        change = v.refresh()
        assert change.removed == (str(d / "s-00000.array_record"),)
        assert v.listdir("/") == [".arrayfs.json", ".shards", "0", "1", "2"]
        assert v.read("/0") == b"b0"
        assert (2, "s-00000.array_record") in set(change.entries())  # its entries go with it
        # A deleted shard stays readable through a snapshot that holds it.
        assert old.read(old.resolve("/8")) == b"a8"
    finally:
        ds.close()


def test_refresh_leaves_half_written_shards_out(tmp_path):
    d = tmp_path
    write_ours(d / "s-00000.array_record", [b"a"])
    ds = ArrayRecordDataSource(str(d))
    try:
        v = FsView(ds)
        full = (d / "s-00000.array_record").read_bytes()
        (d / "s-00001.array_record").write_bytes(full[: len(full) // 2])
        with pytest.warns(arrayfs.PendingShardWarning):
            change = v.refresh()
        assert change is not None and change.pending and not change.added
        assert v.listdir("/") == [".arrayfs.json", ".shards", "0"]
        (d / "s-00001.array_record").write_bytes(full)
        change = v.refresh()
        assert change.added and v.listdir("/")[2:] == ["0", "1"]
    finally:
        ds.close()


def test_diff_of_appended_shard_keeps_old_names(tmp_path):
    d = tmp_path
    write_ours(d / "s-00000.array_record", [b"a"] * 20)
    ds = ArrayRecordDataSource(str(d / "*.array_record"))
    try:
        v = FsView(ds)
        old = v.snapshot
        write_ours(d / "s-00001.array_record", [b"b"] * 30)
        v.refresh()
        lo, hi, widths = diff(old, v.snapshot).records
        assert (lo, hi, widths) == (20, 20, (2,))  # nothing to invalidate among records
    finally:
        ds.close()


def test_corrupt_record_raises_naming_shard(tmp_path):
    path = tmp_path / "c.array_record"
    recs = [bytes([i]) * 500 for i in range(10)]
    write_ours(path, recs, "group_size:1,uncompressed")
    f = arrayfs.file.ArrayRecordFile(str(path))
    off = int(f.index()[0][4])
    f.close()
    raw = bytearray(path.read_bytes())
    raw[off + 40 + 300] ^= 0xFF  # inside record 4's values
    path.write_bytes(bytes(raw))
    ds = ArrayRecordDataSource(str(path))
    try:
        v = FsView(ds)
        with pytest.raises(ArrayRecordError) as e:
            v.read("/4")
        assert str(path) in str(e.value)
        assert "chunk" in v.snapshot.describe(v.resolve("/4"))
        assert v.read("/5") == recs[5]
    finally:
        ds.close()


def test_listing_with_sizes_survives_a_corrupt_chunk(tmp_path, caplog):
    """Sizes of a chunk of many records need its sizes block: a corrupt
    chunk leaves its entries without a size (-1; their own lookups raise),
    every other entry exact, and one log line naming file and records."""
    path = tmp_path / "c.array_record"
    recs = [b"r%02d-" % i * 40 for i in range(40)]
    write_ours(path, recs, "group_size:10,uncompressed")
    raw = bytearray(path.read_bytes())
    at = raw.find(b"r15-")
    raw[at : at + 8] = b"X" * 8  # chunk 1: records [10, 20)
    path.write_bytes(bytes(raw))
    # A slice that cuts the bad chunk: the summary's size needs its sizes too.
    ds = ArrayRecordDataSource([str(path), f"{path}[12:40]"])
    try:
        snap = FsView(ds).snapshot
        for _ in range(2):  # logged once, not per listing
            full = list(snap.readdir(snap.resolve("/"), 0, sizes=True))
            shard = list(snap.readdir(snap.resolve("/.shards/c.array_record"), 0, sizes=True))
        assert full[2][0] == ".arrayfs.json" and full[2][1].size == -1
        sizes = {name: a.size for name, a, _ in full[4:]}
        want = [-1 if 10 <= i < 20 else len(recs[i]) for i in [*range(40), *range(12, 40)]]
        assert sizes == {f"{g:02d}": n for g, n in enumerate(want)}
        assert [a.size for _, a, _ in shard[2:]] == want[:40]
        with pytest.raises(ArrayRecordError):
            snap.attr(snap.resolve("/15"))
        lines = [r.getMessage() for r in caplog.records if "listed without attributes" in r.getMessage()]
        assert len(lines) == 3, lines  # the summary, the chunk in each of the two shards
        assert all(str(path) in ln and "records [10, 20)" in ln for ln in lines)
    finally:
        ds.close()


def test_statfs(view, data):
    _, recs = data
    st = view.snapshot.statfs()
    assert st["f_files"] == len(recs) + 3 + 3
    assert st["f_blocks"] * st["f_bsize"] >= sum(map(len, recs))


# -- inodes: the low-level daemon's handles ---------------------------------------------------


def test_inodes_name_their_nodes(view, data):
    _, recs = data
    snap = view.snapshot
    seen = {}
    for path in ["/", "/.shards", "/.arrayfs.json", "/.shards/part-00001.array_record", "/000", "/039",
                 "/.shards/part-00001.array_record/22", f"/{len(recs) - 1}"]:
        node = snap.resolve(path)
        ino = snap.attr(node).ino
        assert snap.node_of_ino(ino) == node, path
        seen[ino] = path
    assert len(seen) == 8  # all distinct
    # A record's two names are one inode, whose node is the same record.
    a = snap.resolve("/.shards/part-00001.array_record/22")
    b = snap.resolve(f"/{40 + 22}")
    assert a == b and snap.attr(a).ino == snap.attr(b).ino
    # Every record inode maps back to its record (global index and local index).
    for i in range(len(recs)):
        node = snap.resolve(f"/{i}")
        assert snap.node_of_ino(snap.attr(node).ino) == node
    # Numbers never given out are unknown.
    for ino in (0, 4, 15, 16 + 10_000, (1 << 40) * 5000, snap.summary_ino + 1, (1 << 63) | 12345):
        assert snap.node_of_ino(ino) is None, ino
    # A local index outside the shard's records (in range of the 40 bits) is unknown too.
    first = snap.attr(snap.resolve("/000")).ino
    assert snap.node_of_ino(first + 40) is None


def test_lookup_is_resolve_one_name_at_a_time(view, data):
    _, recs = data
    snap = view.snapshot
    root = snap.resolve("/")
    shards = snap.lookup(root, ".shards")
    assert shards.kind == SHARDS
    d = snap.lookup(shards, "part-00002.array_record")
    assert d.kind == SHARD_DIR and d.shard == 2
    rec = snap.lookup(d, "07")
    assert rec == snap.resolve("/.shards/part-00002.array_record/07") == snap.lookup(root, str(63 + 7))
    assert snap.lookup(root, ".arrayfs.json").kind == SUMMARY
    for parent, name in [(root, "x"), (root, ""), (root, "0000"), (shards, "nope"), (d, "50"), (d, "007")]:
        with pytest.raises(FileNotFoundError):
            snap.lookup(parent, name)
    with pytest.raises(NotADirectoryError):
        snap.lookup(rec, "0")


def test_refresh_new_inodes_only_for_new_contents(tmp_path):
    d = tmp_path
    write_ours(d / "s-00000.array_record", [b"a%d" % i for i in range(5)])
    write_ours(d / "s-00001.array_record", [b"b%d" % i for i in range(5)])
    ds = ArrayRecordDataSource(str(d / "*.array_record"))
    try:
        v = FsView(ds)
        s0 = v.snapshot
        ino_b0 = s0.attr(s0.resolve("/5")).ino
        ino_a0 = s0.attr(s0.resolve("/0")).ino
        sum0 = s0.summary_ino
        # Rewrite shard 0 with other contents: a new shard, new inodes.
        write_ours(d / "s-00000.array_record", [b"A%d" % i for i in range(3)])
        change = v.refresh()
        s1 = v.snapshot
        assert v.previous is s0
        assert s1.summary_ino != sum0 and s1.node_of_ino(sum0) is None
        assert s1.node_of_ino(ino_a0) is None  # the old shard's records are gone...
        assert s0.node_of_ino(ino_a0) == s0.resolve("/0")  # ...but the old snapshot has them
        # Shard 1's records moved from /5.. to /3.. and kept their inodes.
        assert s1.attr(s1.resolve("/3")).ino == ino_b0
        assert s1.node_of_ino(ino_b0) == s1.resolve("/3")
        # Entries to invalidate: every shifted record name, both shard
        # directories' entries (rewritten: a new directory), and the
        # summary's name last; then the directories' attributes.
        entries = list(change.entries())
        assert entries[-1] == (1, ".arrayfs.json")
        names = {name for parent, name in entries if parent == 1}
        assert {str(i) for i in range(10)} <= names
        assert (2, "s-00000.array_record") in entries
        assert change.inodes() == (1, 2)
    finally:
        ds.close()


def test_big_records_decode_once_and_leave_once_read(view, data):
    """The mount's decoded-record cache: a big record read by many requests
    at once is decoded once, even when it is bigger than the whole budget
    (it is then kept alone); it leaves once its last bytes were sent."""
    import threading

    from arrayfs.fs.records import Records

    _, recs = data
    snap = view.snapshot
    node = snap.resolve("/16")  # the 200,000-byte record of shard 0
    assert len(recs[16]) == 200_000
    contents = Records(max_bytes=100_000)
    got, errors = [], []

    def read():
        try:
            got.append(contents.get(snap, node, "16")[0])
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=read) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(got) == 8 and all(g == recs[16] for g in got)
    assert contents.decodes == 1
    assert contents.get(snap, node, "16")[0] == recs[16] and contents.decodes == 1
    contents.read_to_end(snap, node)
    assert contents.get(snap, node, "16")[0] == recs[16] and contents.decodes == 2
    small = snap.resolve("/0")
    assert contents.get(snap, small, "0") == (recs[0], 0) and contents.decodes == 2


def test_records_of_a_chunk_of_many_decode_the_chunk_once(tmp_path, monkeypatch):
    """Reading every record of group_size:16 chunks through the view
    decodes each chunk once (the dataset's chunk cache), not once per
    record."""
    recs = _records(11, 64)
    write_ours(tmp_path / "g.array_record", recs, "group_size:16,zstd:3")
    calls = []
    decode = arrayfs.file.ArrayRecordFile.decode_chunk

    def counting(self, k, *args, **kwargs):
        calls.append(k)
        return decode(self, k, *args, **kwargs)

    monkeypatch.setattr(arrayfs.file.ArrayRecordFile, "decode_chunk", counting)
    with ArrayRecordDataSource(str(tmp_path / "g.array_record")) as ds:
        view = FsView(ds)
        assert [view.read(f"/{i:02d}") for i in range(64)] == recs
        assert [view.read(f"/.shards/g.array_record/{i:02d}") for i in range(64)] == recs
    assert sorted(calls) == [0, 1, 2, 3]
