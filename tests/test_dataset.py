"""The sharded ``ArrayRecordDataSource`` (issue 3) against Google's.

Oracle: ``array_record.python.array_record_data_source.ArrayRecordDataSource``
(array_record 0.8.6) over the same shards, all written by Google's
``ArrayRecordWriter`` (``_dataset_shards.py``): several shards, group_size 1
and 100, zstd, brotli, snappy and uncompressed, an empty shard, records of 0
bytes to 100 KB.

Covered here: len and bytes of every index; random single and batched reads
(lists, numpy arrays, numpy integer scalars); iteration; IndexError at the
edges; glob natural order and the read-instruction forms; locate, shards,
repr, record_size; bad shards and missing paths give errors naming them.
Refresh, workers and threads, and the compat modules have files of their
own (``test_dataset_refresh.py``, ``test_dataset_workers.py``,
``test_dataset_compat.py``).
"""

from __future__ import annotations

import dataclasses
import gc
import os
import pickle
import random
import shutil

import numpy as np
import pytest
from _dataset_shards import LAYOUT, fd_count, google_ds, mappings_of
from _google import gwrite

import arrayfs
from arrayfs.file import ArrayRecordFile

google = pytest.importorskip("array_record.python.array_record_module", reason="array-record wheel not installed")

pytestmark = pytest.mark.usefixtures("quiet_absl")


# -- Google's answers, ours ------------------------------------------------------


def test_same_len_and_every_record(shards, ours, theirs):
    _, _, records = shards
    assert len(ours) == len(theirs) == len(records) == sum(n for _, n in LAYOUT)
    for i in range(len(records)):
        got = ours[i]
        assert type(got) is bytes
        assert got == theirs[i] == records[i], f"record {i}"


def test_random_single_reads_any_int_type(shards, ours, theirs):
    records = shards[2]
    rng = random.Random(1)
    types = [int, np.int64, np.int32, np.uint32, np.uint64, np.int16, np.intp]
    for _ in range(500):
        i = rng.randrange(len(records))
        t = rng.choice([t for t in types if np.iinfo(t).max >= i] if rng.random() < 0.9 else [int])
        assert ours[t(i)] == theirs[i] == records[i]


@pytest.mark.parametrize("size", [1, 7, 63, 64, 65, 256, 1000])
@pytest.mark.parametrize("form", ["list", "int64", "int32", "uint64", "np_scalars", "tuple"])
def test_batched_reads(shards, ours, theirs, size, form):
    records = shards[2]
    rng = np.random.default_rng(size)
    idx = rng.integers(0, len(records), size)  # unsorted, with repeats, across shards
    want = [records[i] for i in idx]
    assert theirs.__getitems__(idx.tolist()) == want
    arg = {
        "list": idx.tolist(),
        "int64": idx.astype(np.int64),
        "int32": idx.astype(np.int32),
        "uint64": idx.astype(np.uint64),
        "np_scalars": [np.int64(i) for i in idx],
        "tuple": tuple(idx.tolist()),
    }[form]
    got = ours.__getitems__(arg)
    assert isinstance(got, list) and all(type(r) is bytes for r in got)
    assert got == want


def test_batched_edge_batches(shards, ours):
    records = shards[2]
    n = len(records)
    assert ours.__getitems__([]) == []
    assert ours.__getitems__(np.array([], dtype=np.int64)) == []
    everything = ours.__getitems__(np.arange(n))
    assert everything == records
    assert ours.__getitems__(np.arange(n)[::-1]) == records[::-1]
    assert ours.__getitems__([n - 1] * 300) == [records[-1]] * 300
    assert ours.__getitems__(range(10, 20)) == records[10:20]


@pytest.mark.parametrize("max_workers", [1, 2, 8])
@pytest.mark.parametrize("verify", [True, False])
def test_batched_reads_any_pool_size(shards, pattern, max_workers, verify):
    records = shards[2]
    idx = np.random.default_rng(max_workers).integers(0, len(records), 700)
    with arrayfs.ArrayRecordDataSource(pattern, max_workers=max_workers, verify=verify) as ds:
        assert ds.__getitems__(idx) == [records[i] for i in idx]
        assert list(ds) == records


@pytest.mark.parametrize("cache_bytes", [0, 64 << 20])
def test_each_chunk_decoded_once_per_batch(tmp_path, monkeypatch, cache_bytes):
    """Issue 3: ``__getitems__`` decodes each chunk once per call, whatever
    the cache (0 disables it; chunks larger than the cache bound are never
    cached) and however the batch is split across the pool."""
    path = gwrite(tmp_path / "g100.array_record", "group_size:100,brotli:6",
                  [np.random.default_rng(i).bytes(1000) for i in range(1000)])
    calls = []
    decode = ArrayRecordFile.decode_chunk

    def counting(self, k):
        calls.append(k)
        return decode(self, k)

    monkeypatch.setattr(ArrayRecordFile, "decode_chunk", counting)
    idx = np.random.default_rng(0).integers(0, 1000, 400)  # touches all 10 chunks
    with arrayfs.ArrayRecordDataSource(path, cache_bytes=cache_bytes, max_workers=4) as ds:
        got = ds.__getitems__(idx)
    assert got == [np.random.default_rng(int(i)).bytes(1000) for i in idx]
    assert sorted(calls) == list(range(10)), f"{len(calls)} decodes of 10 chunks"


def test_iteration_equals_list_of_all(shards, ours, theirs):
    records = shards[2]
    assert list(ours) == records
    assert list(iter(ours)) == list(theirs)
    # two iterators interleaved don't disturb each other
    a, b = iter(ours), iter(ours)
    pairs = [(next(a), next(b)) for _ in range(100)]
    assert [x for x, _ in pairs] == [y for _, y in pairs] == records[:100]


@pytest.mark.parametrize("workers", [1, 2])
def test_iteration_of_local_shards_reads_on_the_calling_thread(tmp_path, monkeypatch, workers):
    """Local shards iterate a block at a time on the calling thread (with
    the helper threads a scan uses), never on the dataset's pool: blocks
    of one-record chunks (several per shard), chunks of many records two
    per thread, shards cut by read instructions mid-chunk, a transposed
    shard; the records are the list of all, in order."""
    import arrayfs.batch as batch

    monkeypatch.setattr(batch, "_ITER_SINGLES", 64)
    monkeypatch.setattr(batch, "_ITER_MIN", 8)
    rng = random.Random(workers)
    specs = [("group_size:1", 300), ("group_size:7,zstd:1", 200), ("group_size:1", 5), ("group_size:16,brotli:1", 90)]
    paths, want = [], []
    for k, (opts, n) in enumerate(specs):
        records = [rng.randbytes(rng.randrange(0, 300)) for _ in range(n)]
        path = str(tmp_path / f"s{k}.array_record")
        with arrayfs.ArrayRecordWriter(path, opts) as w:
            for r in records:
                w.write(r)
        paths.append(path)
        want.append(records)
    text = [b"\xff" + rng.randbytes(rng.randrange(0, 50)) for _ in range(40)]  # non-proto records
    paths.append(gwrite(tmp_path / "t.array_record", "group_size:8,transpose:true,zstd:1", text))
    want.append(text)
    cuts = [(0, 300), (3, 198), (0, 5), (17, 90), (5, 37)]
    spec = [f"{p}[{a}:{b}]" for p, (a, b) in zip(paths, cuts)]
    with arrayfs.ArrayRecordDataSource(spec, max_workers=workers) as ds:
        got = list(ds)
        assert ds._core.pool is None  # the pool reads ahead for object stores only
    assert got == [r for records, (a, b) in zip(want, cuts) for r in records[a:b]]
    with arrayfs.ArrayRecordReader(paths[1], f"max_parallelism:{workers}") as r:
        assert list(r) == want[1]


def test_index_errors(ours):
    n = len(ours)
    for bad in (-1, n, n + 10, np.int64(-1), np.int64(n), -(n + 1)):
        with pytest.raises(IndexError):
            ours[bad]
        with pytest.raises(IndexError):
            ours.__getitems__([0, bad])
        with pytest.raises(IndexError):
            ours.__getitems__(np.array([bad, 0]))
        with pytest.raises(IndexError):
            ours.locate(bad)
        with pytest.raises(IndexError):
            ours.record_size(bad)
    for bad in (1.0, "3", None):
        with pytest.raises(TypeError):
            ours[bad]
    assert ours[n - 1] == ours.__getitems__([n - 1])[0]


def test_empty_dataset(tmp_path):
    p = gwrite(tmp_path / "e.array_record", "group_size:1", [])
    with arrayfs.ArrayRecordDataSource(p) as ds:
        assert len(ds) == 0
        assert list(ds) == [] and ds.__getitems__([]) == []
        with pytest.raises(IndexError):
            ds[0]
        assert len(google_ds.ArrayRecordDataSource([p])) == 0


def test_record_size_equals_len(shards, ours):
    records = shards[2]
    for i in range(len(records)):
        assert ours.record_size(i) == len(records[i]), f"record {i}"
    assert ours.record_size(np.int32(5)) == len(records[5])


def test_record_size_before_any_read(shards, pattern):
    # sizes first, on a fresh source: no decoded chunk in the cache
    records = shards[2]
    with arrayfs.ArrayRecordDataSource(pattern) as ds:
        for i in range(0, len(records), 37):
            assert ds.record_size(i) == len(records[i])


# -- shards, locate, repr -----------------------------------------------------------


def test_shards_and_locate(shards, ours):
    _, paths, records = shards
    info = ours.shards
    assert [s.path for s in info] == paths
    assert [s.num_records for s in info] == [n for _, n in LAYOUT]
    firsts = np.concatenate([[0], np.cumsum([n for _, n in LAYOUT])[:-1]]).tolist()
    assert [s.first_index for s in info] == firsts
    assert all(s.start == 0 for s in info)
    assert all(s.size_bytes == os.path.getsize(s.path) for s in info)
    for s, (options, _) in zip(info, LAYOUT):
        assert s.writer_options.startswith(options.split(",")[0] + ",")
    for s in info:
        if s.num_records:
            assert ours.locate(s.first_index) == (s.path, 0)
            assert ours.locate(np.int64(s.first_index + s.num_records - 1)) == (s.path, s.num_records - 1)
    rng = random.Random(2)
    for _ in range(200):
        i = rng.randrange(len(records))
        path, local = ours.locate(i)
        assert arrayfs.ArrayRecordReader(path).read([local]) == [records[i]]


def test_repr_identifies_paths_and_counts(shards, pattern, ours):
    _, paths, _ = shards
    r = repr(ours)
    assert r.startswith("ArrayRecordDataSource(hash_of_paths=") and r.endswith(f", len={len(ours)})")
    assert len(r) < 80  # Grain stores it in every checkpoint
    with arrayfs.ArrayRecordDataSource(pattern) as again:
        assert repr(again) == r  # stable: Grain validates checkpoints against it
    with arrayfs.ArrayRecordDataSource(paths[:-1]) as fewer:
        assert repr(fewer) != r
    with arrayfs.ArrayRecordDataSource(paths[:-1] + [paths[-1] + "[0:10]"]) as cut:
        assert repr(cut) != r and repr(cut) != repr(fewer)
    assert repr(pickle.loads(pickle.dumps(ours))) == r


def test_repr_survives_relocation(shards, tmp_path):
    """A copy of the shards in another directory has the same repr, so a
    Grain checkpoint taken on one copy restores on the other."""
    _, paths, _ = shards
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    for p in paths:
        shutil.copy(p, moved / os.path.basename(p))
    with arrayfs.ArrayRecordDataSource(paths) as a, arrayfs.ArrayRecordDataSource(
        [str(moved / os.path.basename(p)) for p in paths]
    ) as b:
        assert repr(a) == repr(b)


def test_getitem_with_a_list_of_indices(ours, shards):
    records = shards[2]
    assert ours[[10, 50, 100]] == [records[10], records[50], records[100]]
    assert ours[(3, 1)] == [records[3], records[1]]
    assert ours[np.array([7, 2])] == [records[7], records[2]]
    assert ours[5:9] == records[5:9]
    assert ours[[]] == []
    with pytest.raises(IndexError):
        ours[[0, len(records)]]


# -- paths: globs, lists, directories, read instructions --------------------------------


@pytest.fixture(scope="module")
def named(tmp_path_factory):
    """Shards named without and with zero padding; each record is its file's name."""
    d = tmp_path_factory.mktemp("named")
    for k in range(1, 11):
        for name in (f"x-{k}-of-10.array_record", f"y-{k:05d}-of-00010.array_record"):
            gwrite(d / name, "group_size:1", [name.encode(), b"second"])
    (d / "notes.txt").write_text("not a shard")
    return str(d)


def names_in_order(ds) -> list[str]:
    return [os.path.basename(s.path) for s in ds.shards]


def test_glob_natural_order(named):
    with arrayfs.ArrayRecordDataSource(os.path.join(named, "x-*-of-10.array_record")) as ds:
        want = [f"x-{k}-of-10.array_record" for k in range(1, 11)]
        assert names_in_order(ds) == want  # x-2-of-10 before x-10-of-10
        assert [ds[2 * j] for j in range(10)] == [n.encode() for n in want]
    with arrayfs.ArrayRecordDataSource(os.path.join(named, "y-*-of-00010.array_record")) as ds:
        assert names_in_order(ds) == [f"y-{k:05d}-of-00010.array_record" for k in range(1, 11)]
    x2 = os.path.join(named, "x-2-of-10.array_record")
    x10 = os.path.join(named, "x-10-of-10.array_record")
    with arrayfs.ArrayRecordDataSource(os.path.join(named, "x-1*-of-10.array_record")) as ds:
        assert [s.path for s in ds.shards] == [os.path.join(named, "x-1-of-10.array_record"), x10]
    with arrayfs.ArrayRecordDataSource(os.path.join(named, "x-[12]*.array_record")) as ds:
        assert names_in_order(ds) == ["x-1-of-10.array_record", "x-2-of-10.array_record", "x-10-of-10.array_record"]
    # a list keeps the caller's order
    with arrayfs.ArrayRecordDataSource([x10, x2]) as ds:
        assert [s.path for s in ds.shards] == [x10, x2]
        assert ds.__getitems__([0, 2]) == [b"x-10-of-10.array_record", b"x-2-of-10.array_record"]


def test_directory_and_mixed_list(named):
    with arrayfs.ArrayRecordDataSource(named) as ds:
        names = names_in_order(ds)
        assert len(names) == 20 and "notes.txt" not in names
        assert names[:10] == [f"x-{k}-of-10.array_record" for k in range(1, 11)]
    y1 = os.path.join(named, "y-00001-of-00010.array_record")
    with arrayfs.ArrayRecordDataSource([y1, os.path.join(named, "x-*-of-10.array_record"), y1]) as ds:
        assert names_in_order(ds)[0] == names_in_order(ds)[-1] == "y-00001-of-00010.array_record"
        assert len(ds) == 2 * 12


def test_read_instructions_against_google(shards):
    _, paths, records = shards
    offsets = np.concatenate([[0], np.cumsum([n for _, n in LAYOUT])]).tolist()

    def part(k, a, b):
        return records[offsets[k] + a : offsets[k] + b]

    instr = [f"{paths[1]}[10:260]", f"{paths[0]}[0:5]", f"{paths[4]}[100:101]", f"{paths[2]}[7:7]", paths[5]]
    want = part(1, 10, 260) + part(0, 0, 5) + part(4, 100, 101) + part(5, 0, 150)
    theirs = google_ds.ArrayRecordDataSource(instr)
    with arrayfs.ArrayRecordDataSource(instr) as ours:
        assert len(ours) == len(theirs) == len(want)
        assert list(ours) == want
        assert [theirs[i] for i in range(len(want))] == want
        idx = np.random.default_rng(3).integers(0, len(want), 300)
        assert ours.__getitems__(idx) == theirs.__getitems__(idx.tolist()) == [want[i] for i in idx]
        assert ours.locate(0) == (paths[1], 10)
        assert ours.locate(250) == (paths[0], 0)
        assert ours.locate(255) == (paths[4], 100)
        assert [s.start for s in ours.shards] == [10, 0, 100, 7, 0]
        assert ours.record_size(3) == len(want[3])
    theirs.__exit__(None, None, None)
    # open bounds and negative bounds (Grain style; Google's wheel needs both)
    with arrayfs.ArrayRecordDataSource([f"{paths[0]}[:3]", f"{paths[0]}[297:]", f"{paths[0]}[-2:]"]) as ds:
        assert list(ds) == part(0, 0, 3) + part(0, 297, 300) + part(0, 298, 300)


@dataclasses.dataclass(frozen=True)
class FileInstruction:
    """What TFDS hands Grain: records [skip, skip + take) of filename."""

    filename: str
    skip: int
    take: int
    examples_in_shard: int


def test_tfds_file_instructions(shards):
    from arrayfs.compat import array_record_data_source as compat_ds

    _, paths, records = shards
    fis = [FileInstruction(paths[1], 20, 100, 450), FileInstruction(paths[5], 0, 150, 150),
           FileInstruction(paths[0], 299, 1, 300)]
    theirs = google_ds.ArrayRecordDataSource(fis)
    for ours in (compat_ds.ArrayRecordDataSource(fis), arrayfs.ArrayRecordDataSource(fis)):
        with ours:
            assert len(ours) == len(theirs) == 100 + 150 + 1
            assert list(ours) == [theirs[i] for i in range(len(theirs))]
            assert ours.locate(0) == (paths[1], 20)
            assert ours.locate(250) == (paths[0], 299)
    single = compat_ds.ArrayRecordDataSource(FileInstruction(paths[2], 5, 3, 200))
    assert list(single) == records[750 + 5 : 750 + 8]
    assert isinstance(fis[0], compat_ds.FileInstruction)  # the runtime-checkable protocol
    theirs.__exit__(None, None, None)


def test_read_instructions_past_the_file_are_refused(shards):
    """A bound past either end of the file would lose records without a
    word (Google's source fails on the read): it is refused at open, naming
    the file. Bounds within it, negative ones and empty ranges stay."""
    _, paths, records = shards
    n = LAYOUT[0][1]
    for bad in (f"{paths[0]}[0:{n + 1}]", f"{paths[0]}[{n + 1}:]", f"{paths[0]}[-{n + 1}:]",
                FileInstruction(paths[0], n - 2, 5, n)):
        with pytest.raises(ValueError, match=f"{os.path.basename(paths[0])}.*asked of a file of {n} records"):
            arrayfs.ArrayRecordDataSource(bad)
    with arrayfs.ArrayRecordDataSource([f"{paths[0]}[0:{n}]", f"{paths[0]}[5:5]", f"{paths[0]}[-1:]",
                                        FileInstruction(paths[0], n - 2, 2, n)]) as ds:
        assert list(ds) == records[:n] + records[n - 1 : n] + records[n - 2 : n]


def test_dangling_links_and_fifos_among_shards_are_named_not_skipped(tmp_path, shards):
    """A directory or glob holding a shard that is a dangling symbolic link
    or a FIFO: the open names it (a FIFO's open no longer waits for a
    writer forever), rather than the shard being left out without a word."""
    _, paths, _ = shards
    d = tmp_path / "ds"
    d.mkdir()
    shutil.copy(paths[0], d / "train.array_record-00000-of-00002")
    os.symlink(tmp_path / "nowhere", d / "train.array_record-00001-of-00002")
    for spec in (str(d), str(d / "train.array_record-*")):
        with pytest.raises(FileNotFoundError, match="00001-of-00002"):
            arrayfs.ArrayRecordDataSource(spec)
    os.unlink(d / "train.array_record-00001-of-00002")
    os.mkfifo(d / "train.array_record-00001-of-00002")
    for spec in (str(d), str(d / "train.array_record-*"), str(d / "train.array_record-00001-of-00002")):
        with pytest.raises(OSError, match="FIFO") as e:
            arrayfs.ArrayRecordDataSource(spec)
        assert e.value.filename.endswith("00001-of-00002")


def test_missing_paths_name_themselves(tmp_path, shards):
    missing = str(tmp_path / "nope.array_record")
    with pytest.raises(FileNotFoundError, match="nope.array_record"):
        arrayfs.ArrayRecordDataSource(missing)
    empty_glob = str(tmp_path / "none-*-of-*.array_record")
    with pytest.raises(FileNotFoundError, match="none-"):
        arrayfs.ArrayRecordDataSource(empty_glob)
    with pytest.raises(FileNotFoundError, match="nope.array_record"):
        arrayfs.ArrayRecordDataSource([shards[1][0], missing])
    with pytest.raises(FileNotFoundError, match="none-"):
        arrayfs.ArrayRecordDataSource([shards[1][0], empty_glob])
    with pytest.raises(FileNotFoundError, match="nope.array_record"):
        arrayfs.ArrayRecordDataSource(missing + "[0:3]")
    os.mkdir(tmp_path / "empty_dir")
    with pytest.raises(FileNotFoundError, match="empty_dir"):
        arrayfs.ArrayRecordDataSource(str(tmp_path / "empty_dir"))


# -- bad shards -------------------------------------------------------------------------




def bad_blobs(good: bytes) -> dict:
    rng = np.random.default_rng(9)
    return {
        "random": rng.bytes(3 * 65536),
        "random_small": rng.bytes(1000),
        "empty": b"",
        "signature_only": good[:64],
        "truncated_half": good[: len(good) // 2],
        "truncated_to_blocks": good[: 2 * 65536],
        "truncated_one_byte": good[:-1],
        "zero_tail": good[: 2 * 65536] + bytes(len(good) - 2 * 65536),
    }


@pytest.mark.parametrize("kind", list(bad_blobs(b"x" * 4 * 65536)))
def test_bad_shard_in_list_names_it(tmp_path, shards, big_shard, kind):
    good_path = shards[1][0]
    blob = bad_blobs(open(big_shard[0], "rb").read())[kind]
    bad = tmp_path / f"bad-{kind}.array_record"
    bad.write_bytes(blob)
    gc.collect()
    before = fd_count()
    for paths in ([good_path, str(bad)], [str(bad), good_path], str(tmp_path / "*.array_record")):
        with pytest.raises(arrayfs.ArrayRecordError) as e:
            arrayfs.ArrayRecordDataSource(paths)
        assert str(bad) in str(e.value), str(e.value)
        assert e.value.path == str(bad)
        del e
    gc.collect()
    assert fd_count() == before
    assert mappings_of(str(tmp_path)) == 0


def test_failed_open_releases_the_file_while_the_error_is_kept(tmp_path, big_shard):
    """A caller may keep the error (a log record, a list of bad shards, a
    FUSE daemon's status); the bad file must be unmapped and its descriptor
    closed all the same."""
    bad = tmp_path / "bad.array_record"
    bad.write_bytes(open(big_shard[0], "rb").read()[: 2 * 65536])
    gc.collect()
    before = fd_count()
    kept = []
    for _ in range(5):
        try:
            arrayfs.ArrayRecordDataSource(str(bad))
        except arrayfs.ArrayRecordError as e:
            kept.append(e)
    gc.collect()
    assert len(kept) == 5
    assert mappings_of(str(bad)) == 0, "the error's traceback pins the mmap"
    # Not ==: a thread left by an earlier test (an object store's
    # connection pool) may close a descriptor meanwhile; a leak adds one.
    assert fd_count() <= before


def flip_record_byte(path: str, k: int, at: int = 12):
    """Flip one byte inside user chunk ``k``'s data (after its 40-byte header)."""
    with ArrayRecordFile(path) as f:
        off = int(f.index()[0][k])
    assert off % 65536 + 40 + at < 65536, "stay inside the block"
    with open(path, "r+b") as fh:
        fh.seek(off + 40 + at)
        b = fh.read(1)
        fh.seek(off + 40 + at)
        fh.write(bytes([b[0] ^ 0x5A]))


def test_corrupt_record_is_an_error_naming_the_shard(tmp_path, shards):
    _, paths, records = shards
    d = tmp_path / "c"
    d.mkdir()
    mine = [shutil.copy(p, d / os.path.basename(p)) for p in paths]
    flip_record_byte(str(mine[0]), 42)  # group_size 1, zstd: record 42
    flip_record_byte(str(mine[1]), 2)  # group_size 100, brotli: chunk 2 = global records 500..599
    with arrayfs.ArrayRecordDataSource(str(d / "*.array_record")) as ds:
        for read in (lambda: ds[42], lambda: ds.__getitems__([1, 42, 3]),
                     lambda: ds.__getitems__(np.arange(0, 300)), lambda: list(ds),
                     lambda: ds[300 + 205], lambda: ds.__getitems__([300 + 210, 5])):
            with pytest.raises(arrayfs.ArrayRecordError) as e:
                read()
            assert os.path.basename(paths[0]) in str(e.value) or os.path.basename(paths[1]) in str(e.value)
        assert ds[41] == records[41] and ds[43] == records[43]  # the rest still reads
        assert ds[300 + 199] == records[300 + 199]


def test_shard_sets_of_either_writer_read_alike(shard_set, records, google_writer, arrayfs_writer, tmp_path):
    # The shared fixtures, and both writers read back by both readers.
    layout = [("group_size:1", 40), ("group_size:8,brotli:3", 25), ("group_size:100,snappy", 0)]
    ours_dir, ours_paths, want = shard_set(layout, writer="arrayfs")
    google_dir, google_paths, same = shard_set(layout, writer="google")
    assert same == want and len(want) == 65
    for paths in (ours_paths, google_paths):
        with arrayfs.ArrayRecordDataSource(paths) as ds:
            assert ds[:] == want
        assert [google_ds.ArrayRecordDataSource(paths)[i] for i in range(len(want))] == want
    recs = records(30, 5, big_every=10, tag=True)
    assert len(set(recs)) == 30 and max(map(len, recs)) > 65_536
    for write in (google_writer, arrayfs_writer):
        path = write(tmp_path / f"one-{write.__name__}.array_record", "group_size:3", recs)
        with arrayfs.ArrayRecordDataSource(path) as ds:
            assert ds[:] == recs
