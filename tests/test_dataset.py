"""The sharded ``ArrayRecordDataSource`` (issue 3) against Google's.

Oracle: ``array_record.python.array_record_data_source.ArrayRecordDataSource``
(array_record 0.8.6) over the same shards, all written by Google's
``ArrayRecordWriter``: several shards, group_size 1 and 100, zstd, brotli,
snappy and uncompressed, an empty shard, records of 0 bytes to 100 KB.

Covered: len and bytes of every index; random single and batched reads
(lists, numpy arrays, numpy integer scalars); iteration; IndexError at the
edges; glob natural order and the read-instruction forms; locate, shards,
repr, record_size; Grain's MapDataset and DataLoader (2 worker processes)
give what they give with Google's source; pickling into a spawned process;
PyTorch's DataLoader with 2 workers (when torch is installed); refresh with
shards added, removed, half written and rewritten, and a read in flight over
a refresh; 16 reading threads; no descriptor, mapping or thread leaks over
1,000 open/close cycles of 100 shards; bad shards and missing paths give
errors naming them; the compat modules have Google's public names and run
code written for the wheel.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import gc
import glob
import logging
import multiprocessing
import operator
import os
import pickle
import random
import shutil
import threading
import time
import warnings

import numpy as np
import pytest
from _google import gwrite

import arrayfs
from arrayfs.file import ArrayRecordFile

google = pytest.importorskip("array_record.python.array_record_module", reason="array-record wheel not installed")
google_ds = pytest.importorskip(
    "array_record.python.array_record_data_source", reason="array-record wheel not installed"
)


@pytest.fixture(autouse=True, scope="module")
def quiet_absl():
    # Google's data source logs an ERROR for every shard with group_size > 1.
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    yield
    logger.setLevel(level)


# -- the shards -----------------------------------------------------------------

# (writer options, number of records); shard 3 is empty.
LAYOUT = [
    ("group_size:1", 300),  # today's default: zstd:3
    ("group_size:100,brotli:6", 450),
    ("group_size:1,snappy", 200),
    ("group_size:100,uncompressed", 0),
    ("group_size:100,zstd:1", 333),
    ("group_size:1,uncompressed", 150),
    ("group_size:100,snappy", 120),
]
NAME = "train-{:05d}-of-{:05d}.array_record"


def make_records(n: int, seed: int) -> list[bytes]:
    """Self-describing records of mixed sizes: random and compressible, a few
    empty, a few larger than a 64 KiB block."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        tag = b"s%d/r%d;" % (seed, i)
        kind = i % 7
        if kind == 0:
            size = 0
            rec = b""
        elif kind == 3 and i % 70 == 3:
            size = int(rng.integers(65_000, 100_000))
            rec = tag + rng.bytes(size)
        elif kind % 2:
            rec = tag + rng.bytes(int(rng.integers(0, 3000)))
        else:
            rec = (tag * 400)[: int(rng.integers(len(tag), 3000))]
        out.append(rec)
    return out


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """``(directory, [paths in order], [every record in global order])``."""
    d = tmp_path_factory.mktemp("shards")
    paths, records = [], []
    for k, (options, n) in enumerate(LAYOUT):
        recs = make_records(n, seed=k + 1)
        paths.append(gwrite(d / NAME.format(k, len(LAYOUT)), options, recs))
        records.extend(recs)
    return str(d), paths, records


@pytest.fixture(scope="module")
def pattern(shards):
    return os.path.join(shards[0], "train-*-of-*.array_record")


@pytest.fixture(scope="module")
def ours(pattern):
    ds = arrayfs.ArrayRecordDataSource(pattern)
    yield ds
    ds.close()


@pytest.fixture(scope="module")
def theirs(shards):
    ds = google_ds.ArrayRecordDataSource(shards[1])
    yield ds
    ds.__exit__(None, None, None)


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def mappings_of(directory: str) -> int:
    """Mappings and descriptors this process holds on files under
    ``directory`` (a file read with pread holds a descriptor; a mapped one
    a map and one or two descriptors)."""
    with open("/proc/self/maps") as f:
        n = sum(1 for line in f if directory in line)
    for fd in os.listdir("/proc/self/fd"):
        try:
            n += os.readlink(f"/proc/self/fd/{fd}").startswith(directory)
        except OSError:
            pass
    return n


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


@pytest.fixture(scope="module")
def big_shard(tmp_path_factory):
    """A 5-block shard (group_size 1, zstd) to cut in pieces."""
    d = tmp_path_factory.mktemp("big")
    recs = [np.random.default_rng(i).bytes(900) for i in range(300)]
    path = gwrite(d / "big.array_record", "group_size:1", recs)
    assert os.path.getsize(path) >= 4 * 65536
    return path, recs


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
    assert fd_count() == before


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


# -- Grain ------------------------------------------------------------------------------


def test_grain_map_dataset_drop_in(ours, theirs):
    grain = pytest.importorskip("grain")
    a = list(grain.MapDataset.source(ours).shuffle(seed=0).batch(8))
    b = list(grain.MapDataset.source(theirs).shuffle(seed=0).batch(8))
    assert len(a) == len(b) == -(-len(ours) // 8)
    for x, y in zip(a, b):
        assert x.dtype == y.dtype and np.array_equal(x, y)
    # exact bytes (np.stack of bytes drops trailing NULs)
    a = list(grain.MapDataset.source(ours).shuffle(seed=0).batch(8, batch_fn=list))
    b = list(grain.MapDataset.source(theirs).shuffle(seed=0).batch(8, batch_fn=list))
    assert a == b
    # slices and threads reading (to_iter_dataset prefetches on a thread pool)
    opts = grain.ReadOptions(num_threads=8, prefetch_buffer_size=32)
    a = list(grain.MapDataset.source(ours).seed(3).shuffle()[100:900].to_iter_dataset(opts))
    b = list(grain.MapDataset.source(theirs).seed(3).shuffle()[100:900].to_iter_dataset(opts))
    assert a == b


def grain_loader(grain, source):
    sampler = grain.samplers.IndexSampler(
        num_records=len(source), shard_options=grain.sharding.NoSharding(), shuffle=True, num_epochs=1, seed=0
    )
    return grain.DataLoader(
        data_source=source, sampler=sampler, worker_count=2,
        operations=[grain.transforms.Batch(batch_size=16, batch_fn=list)],
    )


@pytest.mark.slow
def test_grain_data_loader_with_workers(ours, theirs):
    grain = pytest.importorskip("grain")
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()  # DataLoader reads absl flags
    # Most of this test's time is the start of 2 x 2 spawned interpreters
    # that import grain.
    a = list(grain_loader(grain, ours))
    b = list(grain_loader(grain, theirs))
    assert a == b
    assert sum(map(len, a)) == len(ours)
    assert sorted(r for batch in a for r in batch) == sorted(ours)


# -- pickling and worker processes ----------------------------------------------------------


def test_pickle_round_trip_in_process(shards, pattern):
    records = shards[2]
    with arrayfs.ArrayRecordDataSource(pattern) as ds:
        ds.__getitems__(np.arange(500))  # open the thread pool and fill the cache
        blob = pickle.dumps(ds)
        assert len(blob) < 10_000, "the pickle carries paths and counts, not data"
    before = mappings_of(shards[0])
    copy = pickle.loads(blob)
    assert mappings_of(shards[0]) == before, "files are opened lazily after unpickling"
    assert len(copy) == len(records)
    assert copy[len(records) - 1] == records[-1]
    assert copy.__getitems__(np.arange(len(records))) == records
    assert list(copy) == records
    copy.close()


def test_pickle_into_spawned_worker(shards, ours):
    records = shards[2]
    ours.__getitems__(np.arange(200))  # the parent's pool and cache exist
    idx = np.random.default_rng(5).integers(0, len(records), 700)
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as pool:
        batch = pool.submit(operator.methodcaller("__getitems__", idx), ours)
        single = pool.submit(operator.getitem, ours, 333)
        everything = pool.submit(list, ours)
        n = pool.submit(len, ours)
        assert batch.result(timeout=120) == [records[i] for i in idx]
        assert single.result(timeout=60) == records[333]
        assert everything.result(timeout=60) == records
        assert n.result(timeout=60) == len(records)


def _torch_batches(source, batch_size, timeout, num_workers=2):
    """Batches of a seeded, shuffled ``torch.utils.data.DataLoader`` over
    ``source`` (workers forked, the Linux default). Hung workers are killed
    on the way out so that a failure costs ``timeout`` seconds, no more."""
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader

    loader = DataLoader(
        source, batch_size=batch_size, num_workers=num_workers, shuffle=True,
        generator=torch.Generator().manual_seed(0), timeout=timeout if num_workers else 0,
    )
    it = iter(loader)
    try:
        return [list(b) for b in it]
    except BaseException:
        # Stop hung workers now (torch would join each for 5 s, later, from
        # a garbage collection in some other test). Unregister them first so
        # torch's SIGCHLD handler does not report the kill.
        from torch.utils.data import _utils

        if getattr(it, "_worker_pids_set", False):
            _utils.signal_handling._remove_worker_pids(id(it))
            it._worker_pids_set = False
        for w in getattr(it, "_workers", []):
            if w.is_alive():
                w.kill()
                w.join(5)
        if hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()
        raise


def test_torch_data_loader_two_workers(ours, theirs):
    """Google's source cannot be the oracle with forked workers (its C++
    readers segfault in them, array_record 0.8.6); it runs in-process with
    the same sampler seed instead, which yields the same batches."""
    pytest.importorskip("torch")
    a = _torch_batches(ours, 8, timeout=120)
    b = _torch_batches(theirs, 8, timeout=0, num_workers=0)
    assert a == b and sum(map(len, a)) == len(ours)


def test_torch_data_loader_after_parent_used_thread_pool(shards, pattern):
    """PyTorch forks its workers (Linux default). A source whose parent has
    already read a large batch (thread pool started) must still work in the
    forked workers, with batches large enough to use the pool there."""
    pytest.importorskip("torch")
    records = shards[2]
    with arrayfs.ArrayRecordDataSource(pattern) as ds:
        assert ds.__getitems__(np.arange(300)) == records[:300]
        got = _torch_batches(ds, 128, timeout=10)
    assert sorted(r for b in got for r in b) == sorted(records)


# -- refresh ---------------------------------------------------------------------------------


@pytest.fixture
def live(tmp_path, shards):
    """A directory holding copies of shards 0..2 (of the module's shards)."""
    d = tmp_path / "live"
    d.mkdir()
    for p in shards[1][:3]:
        shutil.copy(p, d / os.path.basename(p))
    return d


def live_records(shards, ks):
    n = [n for _, n in LAYOUT]
    offsets = np.concatenate([[0], np.cumsum(n)]).tolist()
    return [r for k in ks for r in shards[2][offsets[k] : offsets[k + 1]]]


def test_refresh_added_removed_half_written(live, shards):
    _, paths, _ = shards
    pat = str(live / "train-*-of-*.array_record")
    with arrayfs.ArrayRecordDataSource(pat) as ds:
        assert list(ds) == live_records(shards, [0, 1, 2])
        r = ds.refresh()
        assert not r.changed and r.added == r.removed == ()

        # a shard added
        added = shutil.copy(paths[4], live / os.path.basename(paths[4]))
        r = ds.refresh()
        assert r.added == (str(added),) and r.removed == () and r.changed
        want = live_records(shards, [0, 1, 2, 4])
        assert len(ds) == len(want) and list(ds) == want
        theirs = google_ds.ArrayRecordDataSource(sorted(glob.glob(pat)))
        idx = np.random.default_rng(0).integers(0, len(want), 300)
        assert ds.__getitems__(idx) == theirs.__getitems__(idx.tolist()) == [want[i] for i in idx]

        # a shard removed
        os.remove(live / os.path.basename(paths[1]))
        r = ds.refresh()
        assert r.removed == (str(live / os.path.basename(paths[1])),) and r.added == ()
        want = live_records(shards, [0, 2, 4])
        assert list(ds) == want and ds.__getitems__(np.arange(len(want))) == want
        assert [s.path for s in ds.shards] == [str(live / os.path.basename(paths[k])) for k in (0, 2, 4)]

        # a shard being written: the first half of a valid shard's bytes
        blob = open(paths[5], "rb").read()
        half = live / os.path.basename(paths[5])
        half.write_bytes(blob[: len(blob) // 2])
        with pytest.warns(UserWarning, match=os.path.basename(paths[5])):
            r = ds.refresh()
        assert r.added == () and r.removed == ()
        assert [p for p, _ in r.pending] == [str(half)]
        assert list(ds) == want
        # still being written: tried again, left out again
        with pytest.warns(UserWarning, match=os.path.basename(paths[5])):
            r = ds.refresh()
        assert [p for p, _ in r.pending] == [str(half)] and not r.changed

        # the writer finishes
        half.write_bytes(blob)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            r = ds.refresh()
        assert r.added == (str(half),) and r.pending == ()
        want = live_records(shards, [0, 2, 4, 5])
        assert list(ds) == want
        assert ds.shards[-1].first_index == len(want) - LAYOUT[5][1]


def test_refresh_half_written_on_block_boundary(live, big_shard):
    """A writer's partial file usually ends on a 64 KiB boundary; it must
    still be recognised as incomplete."""
    path, recs = big_shard
    blob = open(path, "rb").read()
    pat = str(live / "*.array_record")
    with arrayfs.ArrayRecordDataSource(pat) as ds:
        n0 = len(ds)
        target = live / "zzz-big.array_record"
        for cut in range(2 * 65536, len(blob), 65536):
            target.write_bytes(blob[:cut])
            with pytest.warns(UserWarning, match="zzz-big"):
                r = ds.refresh()
            assert not r.changed and len(ds) == n0
        target.write_bytes(blob)
        assert ds.refresh().added == (str(target),)
        assert ds.__getitems__(np.arange(n0, n0 + len(recs))) == recs


def test_refresh_rewritten_shard(live, shards):
    _, paths, _ = shards
    with arrayfs.ArrayRecordDataSource(str(live / "*.array_record")) as ds:
        ds.__getitems__(np.arange(len(ds)))  # cache chunks of the old file
        target = live / os.path.basename(paths[1])
        new = [b"new %d" % i for i in range(70)]
        tmp = live / "tmp.partial"
        gwrite(tmp, "group_size:100,brotli:6", new)
        os.replace(tmp, target)  # atomic replace, as writers should
        r = ds.refresh()
        assert str(target) in r.added and str(target) in r.removed
        want = live_records(shards, [0]) + new + live_records(shards, [2])
        assert list(ds) == want
        assert ds.__getitems__(np.arange(len(want))) == want
        assert [ds[i] for i in range(len(want))] == want


def test_read_in_flight_finishes_on_old_snapshot(live, shards):
    _, paths, _ = shards
    want = live_records(shards, [0, 1, 2])
    with arrayfs.ArrayRecordDataSource(str(live / "*.array_record")) as ds:
        it = iter(ds)
        head = [next(it) for _ in range(10)]
        os.remove(live / os.path.basename(paths[2]))  # not read yet
        os.remove(live / os.path.basename(paths[1]))
        assert len(ds.refresh().removed) == 2
        gc.collect()
        rest = list(it)
        assert head + rest == want
        assert list(ds) == live_records(shards, [0])


def test_refresh_releases_mappings_of_removed_shards(live, shards):
    _, paths, _ = shards
    with arrayfs.ArrayRecordDataSource(str(live / "*.array_record")) as ds:
        ds.__getitems__(np.arange(len(ds)))
        gone = str(live / os.path.basename(paths[1]))
        assert mappings_of(gone) >= 1
        fds = fd_count()
        os.remove(gone)
        ds.refresh()
        gc.collect()
        assert mappings_of(gone) == 0
        assert fd_count() <= fds
    assert mappings_of(str(live)) == 0


def test_reads_during_refreshes(tmp_path):
    """Readers in 4 threads while the main thread removes, re-adds and
    refreshes shards 30 times: every read returns a valid record or a
    clean IndexError, never another error."""
    d = tmp_path / "churn"
    d.mkdir()
    recs = {}
    for k in range(6):
        rs = [b"shard%d:%d:" % (k, i) + bytes(i % 50) for i in range(200)]
        recs[k] = rs
        gwrite(d / f"c-{k}.array_record", "group_size:1" if k % 2 else "group_size:100,zstd:1", rs)
    valid = {r for rs in recs.values() for r in rs}
    stash = tmp_path / "stash"
    stash.mkdir()
    errors, stop = [], threading.Event()
    with arrayfs.ArrayRecordDataSource(str(d / "*.array_record"), cache_bytes=1 << 14) as ds:

        def reader(seed):
            rng = np.random.default_rng(seed)
            try:
                while not stop.is_set():
                    n = 4 * 200  # at least 4 of the 6 shards are always there
                    got = ds.__getitems__(rng.integers(0, n, 100)) + [ds[int(rng.integers(0, n))]]
                    assert all(r in valid for r in got)
                    # each in-order read sees one snapshot: one shard's records in order
                    first = ds.__getitems__(np.arange(0, 200))
                    k = int(first[0].split(b":")[0][5:])
                    assert first == recs[k]
            except Exception as e:  # noqa: BLE001
                errors.append(e)

        threads = [threading.Thread(target=reader, args=(s,)) for s in range(4)]
        for t in threads:
            t.start()
        try:
            rng = random.Random(0)
            for _ in range(30):
                k = rng.randrange(6)
                a, b = d / f"c-{k}.array_record", stash / f"c-{k}.array_record"
                if a.exists() and len(os.listdir(d)) > 4:
                    os.replace(a, b)
                elif b.exists():
                    os.replace(b, a)
                ds.refresh()
                time.sleep(0.005)
        finally:
            stop.set()
            for t in threads:
                t.join(60)
        assert not errors, errors[:3]


# -- threads ----------------------------------------------------------------------------------


def test_sixteen_threads_equal_serial(shards, pattern):
    records = shards[2]
    n = len(records)
    rng = np.random.default_rng(7)
    jobs = []
    for t in range(16):
        ops = []
        for _ in range(14):
            kind = rng.integers(0, 4)
            if kind == 0:
                ops.append(("one", int(rng.integers(0, n))))
            elif kind == 1:
                ops.append(("batch", rng.integers(0, n, int(rng.integers(1, 40)))))
            elif kind == 2:
                ops.append(("batch", rng.integers(0, n, int(rng.integers(64, 400)))))
            else:
                ops.append(("size", int(rng.integers(0, n))))
        if t % 8 == 0:
            ops.append(("iter", None))
        jobs.append(ops)

    def expected(op):
        kind, arg = op
        if kind == "one":
            return records[arg]
        if kind == "batch":
            return [records[i] for i in arg]
        if kind == "size":
            return len(records[arg])
        return records

    # a cache smaller than the data, so that chunks are evicted and decoded
    # again while other threads read them
    with arrayfs.ArrayRecordDataSource(pattern, cache_bytes=1 << 20, max_workers=2) as ds:
        def run(ops):
            barrier.wait()
            out = []
            for kind, arg in ops:
                if kind == "one":
                    out.append(ds[arg])
                elif kind == "batch":
                    out.append(ds.__getitems__(arg))
                elif kind == "size":
                    out.append(ds.record_size(arg))
                else:
                    out.append(list(ds))
            return out

        serial = [[expected(op) for op in ops] for ops in jobs]
        barrier = threading.Barrier(16)
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            results = list(pool.map(run, jobs))
        assert results == serial


# -- resources --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hundred(tmp_path_factory):
    d = tmp_path_factory.mktemp("hundred")
    for k in range(100):
        # half zstd group_size 1, half uncompressed group_size 10 (zero-copy chunks in the cache)
        gwrite(d / f"h-{k:05d}-of-00100.array_record", "group_size:1" if k % 2 else "group_size:10,uncompressed",
               [b"%d:%d" % (k, i) for i in range(12)])
    return str(d)


@pytest.mark.slow
def test_open_close_1000_times_leaks_nothing(hundred):
    pat = os.path.join(hundred, "*.array_record")
    firsts = None

    def cycle(read):
        nonlocal firsts
        ds = arrayfs.ArrayRecordDataSource(pat)
        try:
            assert len(ds) == 1200
            if read:
                if firsts is None:
                    firsts = np.array([s.first_index for s in ds.shards])
                assert ds.__getitems__(firsts + 11)[7] == b"7:11"
                assert ds[1199] == b"99:11"
        finally:
            ds.close()

    for _ in range(3):  # warm up: lazily created module state
        cycle(True)
    gc.collect()
    fds, maps, threads = fd_count(), mappings_of(hundred), threading.active_count()
    assert maps == 0
    t0 = time.perf_counter()
    for k in range(1000):
        cycle(k % 10 == 0)
    elapsed = time.perf_counter() - t0
    with arrayfs.ArrayRecordDataSource(pat) as ds:  # the with form too
        ds.__getitems__(np.arange(1200))
    gc.collect()
    assert fd_count() == fds
    assert mappings_of(hundred) == 0
    assert threading.active_count() == threads
    print(f"1,000 open/close cycles of 100 shards: {elapsed:.1f} s")


def test_closed_source_reads_fail_cleanly(pattern):
    ds = arrayfs.ArrayRecordDataSource(pattern)
    ds.close()
    ds.close()  # twice is fine
    with pytest.raises((IndexError, ValueError)):
        ds[0]


# -- compat modules ----------------------------------------------------------------------------


def public_names(module) -> set:
    """Names a user imports from ``module``: not private, not modules, and
    defined by that module (classes, functions, type aliases)."""
    import types
    import typing

    out = set()
    for name in dir(module):
        if name.startswith("_"):
            continue
        obj = getattr(module, name)
        if isinstance(obj, (types.ModuleType, typing.TypeVar)):
            continue
        home = getattr(obj, "__module__", None)
        if home == module.__name__ or (
            typing.get_origin(obj) is typing.Union and not hasattr(typing, name)
        ):
            out.add(name)
    return out


def test_compat_modules_have_googles_public_names():
    from arrayfs.compat import array_record_data_source as compat_ds
    from arrayfs.compat import array_record_module as compat_m

    assert {"ArrayRecordReader", "ArrayRecordWriter"} <= public_names(google)
    assert public_names(google) <= set(dir(compat_m))
    assert {"ArrayRecordDataSource", "FileInstruction"} <= public_names(google_ds)
    for cls in ("ArrayRecordReader", "ArrayRecordWriter"):
        theirs = {n for n in dir(getattr(google, cls)) if not n.startswith("_")}
        assert theirs <= set(dir(getattr(compat_m, cls))), cls
    theirs = {n for n in dir(google_ds.ArrayRecordDataSource) if not n.startswith("_")}
    assert theirs <= set(dir(compat_ds.ArrayRecordDataSource))
    for dunder in ("__len__", "__getitem__", "__getitems__", "__enter__", "__exit__", "__iter__",
                   "__getstate__", "__setstate__", "__repr__"):
        assert hasattr(compat_ds.ArrayRecordDataSource, dunder)


def test_compat_data_source_module_has_the_type_aliases():
    """Grain's own data_sources.py does
    ``from array_record.python.array_record_data_source import ArrayRecordDataSource, PathLikeOrFileInstruction``."""
    from arrayfs.compat import array_record_data_source as compat_ds

    missing = public_names(google_ds) - set(dir(compat_ds))
    assert not missing, f"missing from arrayfs.compat.array_record_data_source: {sorted(missing)}"


def wheel_code(m, d, path: str) -> list:
    """Code written against the wheel's two modules (``m``: array_record_module,
    ``d``: array_record_data_source); returns what it saw."""
    out = []
    w = m.ArrayRecordWriter(path, "group_size:1")
    for i in range(20):
        w.write(b"rec%03d" % i + bytes(i))
    out.append(("writer", w.ok(), w.is_open()))
    w.close()
    out.append(("writer closed", w.is_open()))
    r = m.ArrayRecordReader(path, options="readahead_buffer_size:0", file_reader_buffer_size=32768)
    out.append(("reader", r.num_records(), r.ok(), r.is_open(), r.writer_options_string()))
    out.append(("sequential", r.read(), r.read(), r.record_index()))
    r.seek(5)
    out.append(("seek", r.record_index(), r.read()))
    out.append(("indices", r.read([3, 1, 19])))
    out.append(("range", r.read(2, 5)))
    out.append(("all", r.read_all()))
    r.close()
    out.append(("reader closed", r.is_open()))
    ds = d.ArrayRecordDataSource([path, path + "[2:7]"])
    out.append(("source", len(ds), ds[0], ds[21], ds.__getitems__([24, 0, 3])))
    ds.__exit__(None, None, None)
    with d.ArrayRecordDataSource(path) as ds2:
        out.append(("with", len(ds2), list(ds2)[-1]))
    import pathlib

    ds3 = d.ArrayRecordDataSource(pathlib.Path(path), reader_options={"index_storage_option": "in_memory"})
    out.append(("pathlib", len(ds3), ds3[19]))
    for bad in ([], 42):
        try:
            d.ArrayRecordDataSource(bad)
            out.append(("no error", bad))
        except ValueError:
            out.append(("ValueError", bad))
    return out


def test_compat_source_after_exit_like_googles(shards):
    """Google's ``__exit__`` closes the readers and reopens them on the next
    read; a source used after its ``with`` block keeps working there. Ours
    must not silently turn into an empty dataset."""
    from arrayfs.compat import array_record_data_source as compat_ds

    _, paths, records = shards
    seen = []
    for d in (google_ds, compat_ds):
        with d.ArrayRecordDataSource(paths) as ds:
            ds[0]
        try:
            seen.append((len(ds), ds[1], ds.__getitems__([2, 3])))
        except Exception as e:  # noqa: BLE001
            seen.append(("error", type(e).__name__, str(e)))
    assert seen[0] == (len(records), records[1], records[2:4])
    assert seen[1] == seen[0]


def test_code_written_for_the_wheel_runs_with_the_import_changed(tmp_path):
    from array_record.python import array_record_data_source as gd
    from array_record.python import array_record_module as gm

    from arrayfs.compat import array_record_data_source as od
    from arrayfs.compat import array_record_module as om

    theirs = wheel_code(gm, gd, str(tmp_path / "g.array_record"))
    ours = wheel_code(om, od, str(tmp_path / "o.array_record"))
    assert ours == theirs
    # and each side reads what the other wrote
    assert wheel_code(gm, od, str(tmp_path / "x.array_record")) == theirs
    assert wheel_code(om, gd, str(tmp_path / "y.array_record")) == theirs


@dataclasses.dataclass
class _FileInstruction:
    filename: str
    skip: int
    take: int
    examples_in_shard: int


def test_compat_repr_is_googles(shards):
    """Grain stores ``repr(source)`` in checkpoints: the compat source's repr
    is the wheel's, character for character, for every form of ``paths``
    (array_record's own ``test_repr`` regex included)."""
    import pathlib
    import re

    from arrayfs.compat import array_record_data_source as compat_ds

    _, paths, _ = shards

    forms = [
        paths,
        [pathlib.Path(p) for p in paths],
        paths[0],
        [paths[0] + "[2:7]", paths[1]],
        [_FileInstruction(paths[0], 1, 3, 10), _FileInstruction(paths[1], 0, 2, 10)],
    ]
    for form in forms:
        with google_ds.ArrayRecordDataSource(form) as theirs, compat_ds.ArrayRecordDataSource(form) as mine:
            assert re.fullmatch(r"ArrayRecordDataSource\(hash_of_paths=[\w]+\)", repr(mine))
            assert repr(mine) == repr(theirs), form
            assert repr(pickle.loads(pickle.dumps(mine))) == repr(theirs)
    one = compat_ds.ArrayRecordDataSource(paths[:1])
    two = compat_ds.ArrayRecordDataSource(paths[:2])
    assert repr(one) != repr(two)
    one.close()
    two.close()
