"""``arrayfs mount --decode``: the ``.decoded/`` directory, called as plain
Python (the view and the core) and through real FUSE mounts (libfuse 3
with worker processes, libfuse 2), on the TFDS-built fixture and on
Example, JSON and msgpack datasets of our own.

The fixture's expected values are what ``tfds.data_source`` returned when
it was built: pixels, labels and texts are checked against them, not
against arrayfs's own decoders."""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import subprocess

import _mounting
import msgpack
import numpy as np
import pytest
from _mounting import daemon_pid, libfuse_env, refreshed, run_cli, wait_for, write_ours
from _tfds_fixture import VERSION_DIR, expected
from PIL import Image

from arrayfs import ArrayRecordDataSource
from arrayfs.display import choose_display
from arrayfs.encoding import encode_example, encode_msgpack, json_line
from arrayfs.fs.core import Core
from arrayfs.fs.decoded import DecodedRecordError, decoded_subtree
from arrayfs.fs.options import MountOptions
from arrayfs.fs.view import FsView, ViewSnapshot

mounter = _mounting.mounter  # the fixture: mounts through the command line, unmounts in teardown
TRAIN = os.path.join(VERSION_DIR, "arrayfs_digits-train.array_record-*")
NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def _png(shape, mode="L") -> bytes:
    buf = io.BytesIO()
    Image.fromarray((np.arange(np.prod(shape)) * 7 % 256).astype(np.uint8).reshape(shape), mode).save(buf, "PNG")
    return buf.getvalue()


def read_tree(path) -> dict:
    """A directory as ``{name: bytes | dict}``, read through the file system."""
    out = {}
    for entry in os.scandir(path):
        out[entry.name] = read_tree(entry.path) if entry.is_dir() else open(entry.path, "rb").read()
    return out


def check_sizes(path) -> int:
    """``stat`` size == bytes read, for every file under ``path``; returns
    the number of files."""
    n = 0
    for root, _, files in os.walk(path):
        for name in files:
            p = os.path.join(root, name)
            with open(p, "rb") as f:
                assert os.fstat(f.fileno()).st_size == len(f.read()), p
            assert os.stat(p).st_size == os.path.getsize(p)
            n += 1
    return n


class Counting:
    """A display that counts its decodes (of the TFDS fixture)."""

    def __init__(self, display):
        self.inner, self.calls = display, 0

    def json_bytes(self, record):
        self.calls += 1
        return self.inner.json_bytes(record)

    def tree(self, record):
        self.calls += 1
        return self.inner.tree(record)


@pytest.fixture(scope="module")
def tfds_view():
    ds = ArrayRecordDataSource(TRAIN)
    display = choose_display("tfds", ds)
    counting = Counting(display)
    view = FsView(ds, subtrees=(decoded_subtree(counting),))
    yield ds, display, counting, view
    ds.close()


# -- the view, called directly ----------------------------------------------------------------


def test_the_view_lists_every_record_and_decodes_nothing_to_do_so(tfds_view):
    ds, display, counting, view = tfds_view
    counting.calls = 0
    names = view.listdir("/.decoded")
    assert sorted(names) == [n for i in range(64) for n in (f"{i:02d}", f"{i:02d}.json")]
    snap = view.snapshot
    root = snap.resolve("/.decoded")
    # Every offset resumes where the listing left off.
    entries = list(snap.readdir(root))
    for off in range(len(entries) + 1):
        assert [e[0] for e in snap.readdir(root, off)] == [e[0] for e in entries[off:]], off
    # A record's directory is looked up and stat'ed without decoding it, and
    # the core lists .decoded/ without attributes (the kernel looks each up).
    assert snap.attr(snap.resolve("/.decoded/42")).size == 0
    core = Core(view, MountOptions())
    batches, attrs = core.listing(snap, root, 0, 65536, True)
    assert attrs is False and sum(len(b.inos) for b in batches) == 2 + 128
    assert counting.calls == 0
    batches, attrs = core.listing(snap, snap.resolve("/.decoded/42"), 0, 65536, True)
    assert attrs is True and sum(len(b.inos) for b in batches) == 2 + 16
    assert counting.calls == 1


def test_a_listing_of_many_records_resumes_from_every_offset(tmp_path):
    """Across shard boundaries, with mtimes and inodes of each entry's record."""
    for k, n in enumerate((300, 1, 290)):
        write_ours(tmp_path / f"s-{k}.array_record", [b'{"k": %d}' % k] * n)
    with ArrayRecordDataSource(str(tmp_path / "s-*.array_record")) as ds:
        view = FsView(ds, subtrees=(decoded_subtree(choose_display("json", ds)),))
        snap = view.snapshot
        root = snap.resolve("/.decoded")
        entries = list(snap.readdir(root))
        assert sorted(e[0] for e in entries[2:]) == [f"{i:03d}{x}" for i in range(591) for x in ("", ".json")]
        assert [e[2] for e in entries] == list(range(1, len(entries) + 1))
        for off in range(len(entries) + 1):
            assert [e[:2] for e in snap.readdir(root, off)] == [e[:2] for e in entries[off:]], off
        for name, a, _ in entries[2:]:
            assert snap.node_of_ino(a.ino) == snap.resolve(f"/.decoded/{name}")
            assert a.mtime_ns == view.getattr(f"/{name.split('.')[0]}").mtime_ns
        assert view.read("/.decoded/300/k") == b"1\n" and view.read("/.decoded/590.json") == b'{"k":2}\n'


def test_the_view_of_a_record(tfds_view):
    ds, display, counting, view = tfds_view
    snap = view.snapshot
    for i in (0, 5, 31, 32, 63):
        record = ds[i]
        tree = display.tree(record)
        assert _tree_of(view, f"/.decoded/{i:02d}") == tree
        assert _tree_of(view, f"/.decoded/{i}") == tree  # the unpadded name
        assert view.read(f"/.decoded/{i:02d}.json") == display.json_bytes(record)
        assert view.getattr(f"/.decoded/{i}.json").size == len(display.json_bytes(record))
        # Every node's inode leads back to it.
        paths = [f"/.decoded/{i:02d}", f"/.decoded/{i:02d}.json"]
        paths += [f"/.decoded/{i:02d}/{p}" for p in _paths(tree)]
        inos = set()
        for path in paths:
            node = snap.resolve(path)
            a = snap.attr(node)
            inos.add(a.ino)
            assert snap.node_of_ino(a.ino) == node, path
        assert len(inos) == len(paths)
    assert view.read("/.decoded/07/label.name") == f"{NAMES[expected()['train'][7]['label']]}\n".encode()
    for bad in ("/.decoded/64", "/.decoded/007", "/.decoded/x", "/.decoded/.arrayfs.json", "/.decoded/.shards",
                "/.decoded/07/nope", "/.decoded/07.json/x", "/.decoded/07/label/x", "/.decoded/64.json"):
        with pytest.raises(FileNotFoundError):
            view.getattr(bad)


def _tree_of(view, path) -> dict:
    out = {}
    for name in view.listdir(path):
        p = f"{path}/{name}"
        out[name] = _tree_of(view, p) if view.getattr(p).mode & 0o040000 else view.read(p)
    return out


def _paths(tree, prefix=""):
    for name, value in tree.items():
        yield prefix + name
        if isinstance(value, dict):
            yield from _paths(value, f"{prefix}{name}/")


def test_a_record_that_does_not_decode_is_eio_naming_it(tmp_path, caplog):
    path = tmp_path / "m.array_record"
    write_ours(path, [msgpack.packb({"a": 1}), b"\xc1", msgpack.packb({"b": [1, 2]})])
    with ArrayRecordDataSource(str(path)) as ds:
        view = FsView(ds, subtrees=(decoded_subtree(choose_display("msgpack", ds)),))
        core = Core(view, MountOptions())
        snap = view.snapshot
        with pytest.raises(DecodedRecordError, match="msgpack"):
            view.read("/.decoded/1.json")
        caplog.set_level(logging.ERROR, "arrayfs.fs")
        for call in (lambda: core.attr(snap, snap.resolve("/.decoded/1.json"), "1.json"),
                     lambda: core.lookup(snap.attr(snap.resolve("/.decoded/1")).ino, "x"),
                     lambda: core.contents(snap, snap.resolve("/.decoded/1.json"), "1.json"),
                     lambda: core.path_node("/.decoded/1/a")):
            with pytest.raises(OSError) as e:
                call()
            assert e.value.errno == errno.EIO
        assert all(f"{path} record 1" in r.getMessage() for r in caplog.records) and len(caplog.records) == 4
        # The directory itself is there; the other records and the raw one are fine.
        assert core.opendir(snap, snap.resolve("/.decoded/1"))
        assert view.read("/.decoded/0/a") == b"1\n" and view.read("/.decoded/2/b") == b"1\n2\n"
        assert view.read("/1") == b"\xc1"


def test_a_record_with_more_files_than_its_inodes_number_is_eio(tmp_path):
    path = tmp_path / "m.array_record"
    write_ours(path, [msgpack.packb({"a": 1}), msgpack.packb({f"k{i}": i for i in range(20)})])
    with ArrayRecordDataSource(str(path)) as ds:
        view = FsView(ds, subtrees=(decoded_subtree(choose_display("msgpack", ds), cache_bytes=0),))
        tree = view.snapshot.subtrees[0]
        tree._bits = (4,)  # 16 nodes per record, as for a shard of 2**32 records
        assert view.read("/.decoded/0/a") == b"1\n"
        with pytest.raises(DecodedRecordError, match="22 decoded files"):
            view.listdir("/.decoded/1")


# -- real mounts ------------------------------------------------------------------------------


def _file_type(path) -> str:
    return subprocess.run(["file", "-b", str(path)], capture_output=True, text=True, check=True).stdout


def test_tfds_fixture_mount_with_workers(mounter, tmp_path):
    mnt = mounter("--no-watch", "--decode", "tfds", "-o", "workers=3", TRAIN)
    want = expected()["train"]
    with ArrayRecordDataSource(TRAIN) as ds:
        display = choose_display("tfds", ds)
        records = [ds[i] for i in range(len(ds))]
    # `ls` of .decoded/ lists without decoding; `ls -l` then shows exact sizes
    # (each entry looked up: a .json's lookup decodes its record).
    assert sorted(os.listdir(mnt / ".decoded")) == [n for i in range(64) for n in (f"{i:02d}", f"{i:02d}.json")]
    out = subprocess.run(["ls", "-l", str(mnt / ".decoded")], capture_output=True, text=True, check=True).stdout
    rows = {r[8]: (r[0][0], int(r[4])) for r in (ln.split() for ln in out.splitlines()[1:])}
    assert rows == {**{f"{i:02d}": ("d", 0) for i in range(64)},
                    **{f"{i:02d}.json": ("-", len(display.json_bytes(r))) for i, r in enumerate(records)}}
    for i in (0, 7, 31, 32, 63):
        d = mnt / ".decoded" / f"{i:02d}"
        # Pillow, as an image viewer opens it: the pixels TFDS decoded.
        with Image.open(d / "image.png") as im:
            assert im.format == "PNG"
            assert np.array_equal(np.asarray(im), want[i]["image"][..., 0])
        assert (d / "image.png").read_bytes() == display.tree(records[i])["image.png"]  # the stored bytes
        assert _file_type(d / "image.png").startswith("PNG image data, 8 x 8, 8-bit grayscale")
        assert _file_type(d / "meta" / "inner" / "photo.jpg").startswith("JPEG image data")
        with Image.open(d / "thumbs" / "1.png") as im:
            assert np.array_equal(np.asarray(im), want[i]["thumbs"][1][..., 0])
        assert (d / "label").read_bytes() == f"{want[i]['label']}\n".encode()
        assert (d / "label.name").read_bytes() == f"{NAMES[want[i]['label']]}\n".encode()
        assert (d / "text").read_bytes() == want[i]["text"]
        assert (d / "meta" / "index").read_bytes() == f"{want[i]['meta']['index']}\n".encode()
        assert (d / "moments").read_bytes().split() == [str(v).encode() for v in want[i]["moments"].ravel()]
        # The whole directory, and its sizes.
        assert read_tree(d) == display.tree(records[i])
        assert check_sizes(d) >= 20
        # The JSON: what `arrayfs cat --decode tfds` prints, nested.
        doc = (mnt / ".decoded" / f"{i}.json").read_bytes()
        assert json.loads(doc)["meta"]["source"] == "sklearn.datasets.load_digits"
        assert json.loads(doc)["image"] == {"bytes": len((d / "image.png").read_bytes()), "type": "png",
                                            "shape": [8, 8, 1]}
    cat = run_cli("cat", "--decode", "tfds", TRAIN, "7", "32")
    assert cat.returncode == 0, cat.stderr
    assert cat.stdout.encode() == (mnt / ".decoded" / "07.json").read_bytes() + (mnt / ".decoded/32.json").read_bytes()
    # cp -r of a record's directory, as of any directory.
    subprocess.run(["cp", "-r", str(mnt / ".decoded" / "05"), str(tmp_path / "copy")], check=True)
    assert read_tree(tmp_path / "copy") == display.tree(records[5])
    # Reads of files and raw records side by side in 8 processes spread over the workers.
    code = ("import os, sys\nmnt = sys.argv[1]\nfor i in range(64):\n"
            "    a = open(f'{mnt}/.decoded/{i:02d}/image.png', 'rb').read()\n"
            "    b = open(f'{mnt}/{i:02d}', 'rb').read()\n"
            "    assert os.stat(f'{mnt}/.decoded/{i:02d}/image.png').st_size == len(a) and len(b) > len(a)\n")
    procs = [subprocess.Popen([__import__("sys").executable, "-c", code, str(mnt)]) for _ in range(8)]
    assert [p.wait(timeout=120) for p in procs] == [0] * 8


def test_example_mount_of_a_dataset_tfds_did_not_write(tmp_path, mounter):
    d = tmp_path / "data"
    d.mkdir()
    rgb = _png((6, 5, 3), "RGB")
    recs = [encode_example({"image": [rgb if i % 2 else _png((4, 3))], "label": [i], "scores": [0.5, i + 1.25],
                            "tags": [b"a%d" % i, b"b"], "name": f"n{i}"}) for i in range(12)]
    write_ours(d / "ex-00000.array_record", recs[:7])
    write_ours(d / "ex-00001.array_record", recs[7:], "group_size:4,brotli:3")
    mnt = mounter("--no-watch", "--decode", "example", d)
    for i in (0, 1, 6, 7, 11):
        r = mnt / ".decoded" / f"{i:02d}"
        png = rgb if i % 2 else _png((4, 3))
        assert sorted(os.listdir(r)) == ["image.png", "label", "name", "scores", "tags"]
        assert (r / "image.png").read_bytes() == png and os.stat(r / "image.png").st_size == len(png)
        with Image.open(r / "image.png") as im:
            assert im.size == ((5, 6) if i % 2 else (3, 4))
        assert (r / "label").read_bytes() == f"{i}\n".encode()
        assert (r / "scores").read_bytes() == f"0.5\n{i + 1.25}\n".encode()
        assert read_tree(r / "tags") == {"0": b"a%d" % i, "1": b"b"}
        assert (r / "name").read_bytes() == f"n{i}".encode()
        doc = json.loads((mnt / ".decoded" / f"{i:02d}.json").read_bytes())
        assert doc["label"] == i and doc["scores"] == [0.5, i + 1.25] and doc["tags"] == [f"a{i}", "b"]
        assert doc["image"] == {"bytes": len(png), "type": "png", "shape": [6, 5, 3] if i % 2 else [4, 3, 1]}
        check_sizes(r)
    # auto finds Examples (no features.json here): the same files.
    mnt2 = mounter("--no-watch", "--decode", "auto", d)
    assert read_tree(mnt2 / ".decoded" / "03") == read_tree(mnt / ".decoded" / "03")


def test_json_and_msgpack_mounts(tmp_path, mounter):
    d = tmp_path / "data"
    d.mkdir()
    docs = [{"id": i, "text": "héllo", "vec": [1.5, i], "nested": {"k": [1, 2]}, "tags": ["x", "y"], "none": None}
            for i in range(5)]
    write_ours(d / "j.array_record", [json.dumps(doc).encode() for doc in docs])
    mnt = mounter("--no-watch", "--decode", "json", d / "j.array_record")
    for i, doc in enumerate(docs):
        r = mnt / ".decoded" / str(i)
        assert read_tree(r) == {"id": f"{i}\n".encode(), "text": "héllo".encode(), "vec": f"1.5\n{float(i)}\n".encode(),
                                "nested": {"k": b"1\n2\n"}, "tags": {"0": b"x", "1": b"y"}}
        assert (mnt / ".decoded" / f"{i}.json").read_bytes() == json_line(doc)
        check_sizes(r)
    photo = _png((3, 3))
    m = [encode_msgpack({"arr": np.arange(6, dtype=np.int16).reshape(2, 3) + i, "photo": photo, "note": "hi"})
         for i in range(3)]
    write_ours(d / "m.array_record", m)
    mnt = mounter("--no-watch", "--decode", "msgpack", d / "m.array_record")
    assert read_tree(mnt / ".decoded" / "2") == {"arr": b"".join(b"%d\n" % (v + 2) for v in range(6)),
                                                 "photo.png": photo, "note": b"hi"}
    assert json.loads((mnt / ".decoded" / "2.json").read_bytes()) == {
        "arr": [[2, 3, 4], [5, 6, 7]], "photo": {"bytes": len(photo), "type": "png", "shape": [3, 3, 1]}, "note": "hi"}
    assert _file_type(mnt / ".decoded" / "0" / "photo.png").startswith("PNG image data, 3 x 3")


def test_decoded_names_are_unique_file_names(tmp_path, mounter):
    """Keys no file name can hold as they are: NUL (the kernel would cut
    the name there: two entries "nul"), "/", and longer than 255 bytes
    (two keys equal in their first 255 bytes; one with an extension)."""
    d = tmp_path / "data"
    d.mkdir()
    long = "é" * 130  # 260 bytes
    doc = {"nul\u0000key": 1, "nul": 2, "a/b": 3, long: 4, long + "z": 5, long + "p": _png((2, 2))}
    write_ours(d / "j.array_record", [json.dumps({k: v if k != long + "p" else None for k, v in doc.items()}).encode()])
    write_ours(d / "m.array_record", [encode_msgpack(doc)])
    mnt = mounter("--no-watch", "--decode", "msgpack", d / "m.array_record")
    got = read_tree(mnt / ".decoded" / "0")
    cut = "é" * 127  # 254 bytes: a cut never splits a character
    assert got == {"nul%00key": b"1\n", "nul": b"2\n", "a%2Fb": b"3\n", cut: b"4\n", "é" * 126 + "~1": b"5\n",
                   "é" * 125 + ".png": _png((2, 2))}
    assert all(len(os.fsencode(n)) <= 255 for n in got)
    check_sizes(mnt / ".decoded" / "0")
    mnt = mounter("--no-watch", "--decode", "json", d / "j.array_record")
    assert sorted(os.listdir(mnt / ".decoded" / "0")) == sorted(["nul%00key", "nul", "a%2Fb", cut, "é" * 126 + "~1"])


def test_a_record_that_does_not_decode_is_eio_and_the_daemon_lives(tmp_path, mounter):
    d = tmp_path / "data"
    d.mkdir()
    path = d / "m.array_record"
    recs = [msgpack.packb({"a": 1}), b"\xc1 not msgpack", msgpack.packb({"b": [1, 2]})]
    write_ours(path, recs)
    log = tmp_path / "daemon.log"
    mnt = mounter("--no-watch", "--decode", "msgpack", "--log-file", log, path)
    dec = mnt / ".decoded"
    # Listing decodes nothing: the bad record's entries are listed as any.
    p = subprocess.run(["ls", str(dec)], capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.split() == ["0", "0.json", "1", "1.json", "2", "2.json"]
    # `ls -l` looks each up: the bad JSON is EIO, every other entry shows.
    p = subprocess.run(["ls", "-l", str(dec)], capture_output=True, text=True)
    assert p.returncode != 0 and "1.json" in p.stderr and "Input/output error" in p.stderr
    assert len(p.stdout.splitlines()) == 1 + 6
    for attempt in (lambda: (dec / "1.json").read_bytes(), lambda: os.listdir(dec / "1"),
                    lambda: os.stat(dec / "1" / "a"), lambda: os.stat(dec / "1.json")):
        with pytest.raises(OSError) as e:
            attempt()
        assert e.value.errno == errno.EIO
    assert os.path.isdir(dec / "1")
    p = subprocess.run(["cat", str(dec / "1.json")], capture_output=True, text=True)
    assert p.returncode != 0 and "Input/output error" in p.stderr
    # The raw record, the other records and the daemon are fine.
    assert (mnt / "1").read_bytes() == recs[1]
    assert (dec / "0" / "a").read_bytes() == b"1\n" and (dec / "2" / "b").read_bytes() == b"1\n2\n"
    assert daemon_pid(mnt) is not None
    assert wait_for(lambda: log.exists() and "EIO" in log.read_text())
    text = log.read_text()
    assert f"{path} record 1" in text and "cannot decode record as msgpack" in text and "Traceback" not in text


@pytest.mark.parametrize("libfuse", ["3", "2"])
def test_watch_refreshes_the_decoded_names(tmp_path, mounter, libfuse):
    env = libfuse_env(libfuse)
    d = tmp_path / "data"
    d.mkdir()
    write_ours(d / "s-00001.array_record", [json.dumps({"v": f"b{i}"}).encode() for i in range(3)])
    mnt = mounter("--decode", "json", d / "s-*.array_record", env=env)
    dec = mnt / ".decoded"
    assert (dec / "0" / "v").read_bytes() == b"b0" and (dec / "0.json").read_bytes() == b'{"v":"b0"}\n'
    assert sorted(os.listdir(dec)) == ["0", "0.json", "1", "1.json", "2", "2.json"]
    # A shard sorting first: every name shifts, the kernel's cached ones too.
    write_ours(d / "s-00000.array_record", [json.dumps({"v": f"a{i}"}).encode() for i in range(2)])
    assert wait_for(lambda: refreshed(mnt, 5))
    assert wait_for(lambda: (dec / "0" / "v").read_bytes() == b"a0")
    assert wait_for(lambda: (dec / "0.json").read_bytes() == b'{"v":"a0"}\n')
    assert (dec / "2" / "v").read_bytes() == b"b0" and (dec / "4.json").read_bytes() == b'{"v":"b2"}\n'
    assert os.stat(dec / "4.json").st_size == len(b'{"v":"b2"}\n')
    assert len(os.listdir(dec)) == 10
    if libfuse == "2":
        pid = daemon_pid(mnt)
        with open(f"/proc/{pid}/maps") as f:
            assert "libfuse.so.2" in f.read()


def test_libfuse2_serves_the_tfds_fixture(mounter):
    mnt = mounter("--no-watch", "--decode", "auto", TRAIN, env=libfuse_env("2"))
    want = expected()["train"]
    for i in (3, 40):
        d = mnt / ".decoded" / f"{i:02d}"
        with Image.open(d / "image.png") as im:
            assert np.array_equal(np.asarray(im), want[i]["image"][..., 0])
        assert (d / "label.name").read_bytes() == f"{NAMES[want[i]['label']]}\n".encode()
        check_sizes(d)
        assert json.loads((mnt / ".decoded" / f"{i}.json").read_bytes())["label"] == want[i]["label"]
    out = subprocess.run(["ls", "-l", str(mnt / ".decoded")], capture_output=True, text=True, check=True).stdout
    sizes = {r[8]: int(r[4]) for r in (ln.split() for ln in out.splitlines()[1:])}
    assert sizes["40.json"] == os.path.getsize(mnt / ".decoded" / "40.json") > 1000


def test_decode_settings_that_cannot_work_are_one_line_errors(tmp_path):
    path = tmp_path / "plain.array_record"
    write_ours(path, [b"x"])
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    p = run_cli("mount", "--decode", "tfds", path, mnt)
    assert p.returncode == 1 and p.stderr.count("\n") == 1, p.stderr
    assert "features.json" in p.stderr and str(tmp_path) in p.stderr
    p = run_cli("mount", "--decode", "xml", path, mnt)
    assert p.returncode == 2 and "invalid choice" in p.stderr
    assert not os.listdir(mnt)


def test_shards_whose_serials_wrap_onto_one_slot_are_eio_not_each_other(tmp_path):
    for k in range(3):
        write_ours(tmp_path / f"s-{k}.array_record", [b'{"k": %d}' % k])
    with ArrayRecordDataSource(str(tmp_path / "s-*.array_record")) as ds:
        view = FsView(ds, subtrees=(decoded_subtree(choose_display("json", ds)),))
        # As if shard 2's serial came 2**20 - 1 serials after shard 0's.
        view._serials[view.snapshot.keys[2]] = (1 << 20) - 1
        view.snapshot = ViewSnapshot(ds.snapshot(), view._serials, subtrees=view._subtrees)
        snap = view.snapshot
        assert view.read("/.decoded/1/k") == b"1\n"
        for name in ("/.decoded/0", "/.decoded/2.json"):
            with pytest.raises(DecodedRecordError, match="remount"):
                snap.resolve(name)
        tree = snap.subtrees[0]
        assert tree._slots[0] == tree._slots[2]
        assert snap.node_of_ino(tree.ino_base | tree._slots[0] << 36 | 0 << tree._bits[0]) is None
