"""``arrayfs convert`` and :func:`arrayfs.beam.convert` on Beam's DirectRunner;
outputs read back with Google's array_record wheel."""

import bz2
import gzip
import io
import json
import os
import pty
import random
import select
import subprocess
import sys
import zlib

import apache_beam as beam
import numpy as np
import pytest
from _google import gread
from _records import make_records

import arrayfs
from arrayfs.beam import ConvertError, ReadRecords, WriteToArrayRecord, convert
from arrayfs.beam.conversion import file_groups
from arrayfs.cli import main
from arrayfs.nnx.decode import get_decoder
from arrayfs.tfrecord import write_tfrecords

# In-process pipelines keep their temporary directories under pytest's basetemp.
pytestmark = pytest.mark.usefixtures("beam_tempdir")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(arrayfs.__file__)))


def google_read(path) -> list[bytes]:
    return gread(path)


def read_shards(shards) -> list[bytes]:
    return [r for s in shards for r in google_read(s)]


def run_cli(*args, tmp, **kw):
    """``arrayfs ARGS`` in a fresh process (real stderr, real exit code);
    its temporary files (Beam's log on failure) go under ``tmp``."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), TMPDIR=str(tmp))
    return subprocess.run([sys.executable, "-m", "arrayfs", *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=300, **kw)


def listing(d):
    return sorted(str(p.relative_to(d)) for p in d.rglob("*"))


# -- TFRecord ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def beam_tfrecords(tmp_path_factory):
    """3 TFRecord shards written by Beam's own WriteToTFRecord."""
    d = tmp_path_factory.mktemp("tf")
    recs = make_records(3000, size=(0, 200), tag=True)
    with beam.Pipeline() as p:
        _ = p | beam.Create(recs) | beam.io.WriteToTFRecord(str(d / "in"), num_shards=3,
                                                              file_name_suffix=".tfrecord")
    assert len(list(d.glob("in-*.tfrecord"))) == 3
    return d, recs


def test_beam_tfrecords_to_two_shards(beam_tfrecords, tmp_path, capfd):
    src, recs = beam_tfrecords
    rc = main(["convert", "--from", "tfrecord", str(src / "in-*.tfrecord"), "-o", str(tmp_path / "out" / "train"),
               "--num-shards", "2", "--no-progress"])
    out, err = capfd.readouterr()
    assert rc == 0, err
    assert err == ""
    names = [f"train-{k:05d}-of-00002.array_record" for k in range(2)]
    assert sorted(os.listdir(tmp_path / "out")) == names
    got = read_shards(tmp_path / "out" / n for n in names)
    assert len(got) == len(recs) and sorted(got) == sorted(recs)
    (line,) = out.splitlines()
    assert line.startswith("converted 3,000 records from 3 files: ") and "train-*-of-00002.array_record" in line


def test_one_tfrecord_file_into_more_shards_than_files(tmp_path):
    recs = make_records(2000, seed=1, size=(0, 200), tag=True)
    with open(tmp_path / "one.tfrecord", "wb") as f:
        write_tfrecords(f, recs)
    res = convert("tfrecord", str(tmp_path / "one.tfrecord"), str(tmp_path / "o" / "x"), num_shards=3,
                  writer_options="group_size:16,zstd:1")
    assert res.num_shards == 3 and len(res.shards) == 3
    assert sorted(os.listdir(tmp_path / "o")) == [f"x-{k:05d}-of-00003.array_record" for k in range(3)]
    got = read_shards(res.shards)
    assert sorted(got) == sorted(recs) and len(got) == len(recs)
    assert res.records == len(recs)


@pytest.mark.parametrize("num_shards", [1, 2, 5])
def test_retried_bundles_leave_every_shard_in_place(tmp_path, num_shards):
    # --direct_runner_bundle_repeat=1 runs every bundle twice, as a runner's
    # retry does. With 1 or 2 shards (the file-group path) pre_finalize and
    # finalize ran in one step: the retry deleted the shards the first
    # attempt had renamed into place, then failed ("src and dst files do not
    # exist"). 5 shards > 3 files is Beam's own iobase.Write.
    recs = [[b"%d-%d" % (i, j) for j in range(100)] for i in range(3)]
    paths = []
    for i, r in enumerate(recs):
        paths.append(str(tmp_path / f"in{i}.tfrecord"))
        with open(paths[-1], "wb") as f:
            write_tfrecords(f, r)
    out = tmp_path / "out" / "x"
    flag = ["--direct_runner_bundle_repeat=1"]
    for overwrite in (False, True):  # the second run replaces shards of the same count
        res = convert("tfrecord", paths, str(out), num_shards=num_shards, pipeline_args=flag, overwrite=overwrite)
        assert res.records == 300
        assert listing(tmp_path / "out") == [f"x-{k:05d}-of-{num_shards:05d}.array_record" for k in range(num_shards)]
        got = read_shards(res.shards)
        assert sorted(got) == sorted(r for rs in recs for r in rs)
        if num_shards <= 3:
            assert got == [r for rs in recs for r in rs]  # input order


def test_result_counts_and_sizes(tmp_path):
    recs = make_records(500, seed=2, size=(0, 200), tag=True)
    paths = []
    for k in range(2):
        paths.append(tmp_path / f"t{k}.tfrecord")
        with open(paths[-1], "wb") as f:
            write_tfrecords(f, recs[k::2])
    res = convert("tfrecord", [str(p) for p in paths], str(tmp_path / "r"), num_shards=2)
    assert res.records == 500 and res.num_inputs == 2 and res.num_shards == 2
    assert res.bytes_in == sum(os.path.getsize(p) for p in paths)
    assert res.bytes_out == sum(os.path.getsize(s) for s in res.shards)
    assert res.seconds > 0
    # With as many files as shards, shard k holds file k, in order.
    assert [google_read(s) for s in res.shards] == [recs[0::2], recs[1::2]]


# -- order --------------------------------------------------------------------------


def _jsonl_inputs(d, n_files=3, per_file=1500, blank_every=97):
    lines, files = [], []
    for k in range(n_files):
        body = []
        for i in range(per_file):
            line = json.dumps({"file": k, "i": i, "pad": "x" * (i % 13)}).encode()
            body.append(line)
            lines.append(line)
            if i % blank_every == 0:
                body.append(b"   ")  # blank: skipped, as arrayfs pack --jsonl does
        data = b"\n".join(body) + b"\n"
        if k == 1:
            path = d / f"part-{k}.jsonl.gz"
            path.write_bytes(gzip.compress(data))
        else:
            path = d / f"part-{k}.jsonl"
            path.write_bytes(data)
        files.append(path)
    return files, lines


def test_jsonl_keeps_order_with_one_shard(tmp_path, capfd):
    files, lines = _jsonl_inputs(tmp_path)
    rc = main(["convert", "--from", "jsonl", *map(str, files), "-o", str(tmp_path / "o" / "j"), "--no-progress"])
    assert rc == 0, capfd.readouterr().err
    (shard,) = list((tmp_path / "o").iterdir())
    assert shard.name == "j-00000-of-00001.array_record"
    assert google_read(shard) == lines


def test_order_across_shards_when_there_are_enough_files(tmp_path):
    files, lines = _jsonl_inputs(tmp_path, n_files=5, per_file=300)
    res = convert("jsonl", [str(f) for f in files], str(tmp_path / "o" / "j"), num_shards=3)
    assert read_shards(res.shards) == lines
    assert all(google_read(s) for s in res.shards)


def test_relative_glob_in_the_working_directory(tmp_path):
    # The usual call from the data's own directory: 'in-*.txt' has no
    # directory part, which Beam's local match alone cannot expand.
    for k in range(3):
        (tmp_path / f"in-{k}.txt").write_bytes(b"".join(b"%d:%d\n" % (k, i) for i in range(50)))
    r = run_cli("convert", "--from", "lines", "in-*.txt", "-o", "out/data", "--no-progress", tmp=tmp_path,
                cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    (shard,) = (tmp_path / "out").iterdir()
    assert google_read(shard) == [b"%d:%d" % (k, i) for k in range(3) for i in range(50)]
    r = run_cli("convert", "--from", "lines", "nothing-*.txt", "-o", "out2/data", "--no-progress", tmp=tmp_path,
                cwd=tmp_path)
    assert r.returncode != 0 and "nothing-*.txt: no file matches this input" in r.stderr


@pytest.mark.parametrize("workers", [[], ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]],
                         ids=["in-process", "2-processes"])
def test_nothing_left_in_the_temporary_directory(tmp_path, workers):
    # Beam's runners leave a job server's beam-temp*, staging directories
    # and a requirements cache in the temporary directory on every run.
    (tmp_path / "a.txt").write_bytes(b"one\ntwo\n")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    r = run_cli("convert", "--from", "lines", tmp_path / "a.txt", "-o", tmp_path / "o" / "d", "--no-progress",
                *workers, tmp=scratch)
    assert r.returncode == 0, r.stderr
    assert listing(scratch) == []
    assert google_read(tmp_path / "o" / "d-00000-of-00001.array_record") == [b"one", b"two"]


def test_an_existing_file_with_glob_characters_in_its_name(tmp_path):
    (tmp_path / "x[1].txt").write_bytes(b"q\n")
    res = convert("lines", str(tmp_path / "x[1].txt"), str(tmp_path / "o" / "x"))
    assert google_read(res.shards[0]) == [b"q"]


def test_jsonl_that_is_not_json_names_file_and_line(tmp_path):
    (tmp_path / "bad.jsonl").write_bytes(b'{"a": 1}\n{"a": 2}\n{oops\n')
    with pytest.raises(ConvertError, match=r"bad\.jsonl:3: not a JSON value"):
        convert("jsonl", str(tmp_path / "bad.jsonl"), str(tmp_path / "o" / "j"))
    assert not (tmp_path / "o").exists()


def test_lines_are_byte_exact(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"one\r\n\ntwo\nlast without newline")
    (tmp_path / "b.txt").write_bytes(b"")
    (tmp_path / "c.txt").write_bytes(b"\xff\xfe binary ok\n")
    res = convert("lines", [str(tmp_path / n) for n in ("a.txt", "b.txt", "c.txt")], str(tmp_path / "l"))
    assert google_read(res.shards[0]) == [b"one\r", b"", b"two", b"last without newline", b"\xff\xfe binary ok"]


def test_files_one_record_per_file_in_sorted_order(tmp_path):
    tree = tmp_path / "tree"
    contents = {}
    for rel in ["b/2.bin", "a/10.bin", "a/9.bin", "c.bin", "a/sub/z.bin"]:
        p = tree / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        data = os.urandom(random.Random(rel).randrange(0, 5000))
        p.write_bytes(data)
        contents[rel] = data
    res = convert("files", str(tree), str(tmp_path / "f"))
    assert google_read(res.shards[0]) == [contents[k] for k in sorted(contents)]


def test_read_records_composes_with_the_sink(tmp_path):
    files, lines = _jsonl_inputs(tmp_path, n_files=2, per_file=200)
    with beam.Pipeline() as p:
        _ = (p | ReadRecords("jsonl", [str(f) for f in files])
             | beam.Map(lambda r: r.upper())
             | WriteToArrayRecord(str(tmp_path / "c"), num_shards=2))
    got = read_shards(sorted(tmp_path.glob("c-*")))
    assert sorted(got) == sorted(line.upper() for line in lines)


# -- parquet -----------------------------------------------------------------------


def test_parquet_rows_decode_with_msgpack(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = 3000
    rng = np.random.default_rng(0)
    table = pa.table({
        "i32": pa.array(rng.integers(-1000, 1000, n, dtype=np.int32)),
        "f32": pa.array(rng.random(n, dtype=np.float32)),
        "flag": pa.array(rng.random(n) < 0.5),
        "name": pa.array([f"row {i}" for i in range(n)]),
        "blob": pa.array([bytes([i % 256]) * (i % 7) for i in range(n)], type=pa.binary()),
        "vec": pa.array([rng.random(i % 5, dtype=np.float32) for i in range(n)], type=pa.list_(pa.float32())),
        "ts": pa.array(np.arange(n).astype("datetime64[us]")),
        "cat": pa.array([("a", "b", "c")[i % 3] for i in range(n)]).dictionary_encode(),
    })
    pq.write_table(table.slice(0, 1000), tmp_path / "p0.parquet", row_group_size=300)
    pq.write_table(table.slice(1000), tmp_path / "p1.parquet", row_group_size=700)
    res = convert("parquet", str(tmp_path / "p*.parquet"), str(tmp_path / "o" / "rows"))
    decode = get_decoder("msgpack")  # what the NNX source uses for decode="msgpack"
    rows = [decode(r) for r in google_read(res.shards[0])]
    assert len(rows) == n
    cols = table.to_pydict()
    for i in (0, 1, 999, 1000, 2999):
        row = rows[i]
        assert row["i32"].dtype == np.int32 and row["i32"] == cols["i32"][i]
        assert row["f32"].dtype == np.float32 and row["f32"] == np.float32(cols["f32"][i])
        assert row["flag"] == cols["flag"][i]
        assert str(row["name"]) == cols["name"][i]
        assert row["blob"].dtype == np.uint8 and row["blob"].tobytes() == cols["blob"][i]
        assert row["vec"].dtype == np.float32 and row["vec"].tolist() == pytest.approx(cols["vec"][i])
        assert row["ts"].dtype == np.dtype("datetime64[us]") and row["ts"] == np.datetime64(i, "us")
        assert str(row["cat"]) == ("a", "b", "c")[i % 3]


def test_parquet_column_without_msgpack_form_is_refused(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"ok": [1, 2], "nested": [{"x": 1}, {"x": 2}]}), tmp_path / "s.parquet")
    with pytest.raises(ConvertError, match=r"s\.parquet: column 'nested' has type struct<x: int64>"):
        convert("parquet", str(tmp_path / "s.parquet"), str(tmp_path / "o" / "s"))
    assert not (tmp_path / "o").exists()


# -- bad input and the command line ------------------------------------------------


def _tfrecord_file(path, n=300, seed=3):
    with open(path, "wb") as f:
        write_tfrecords(f, make_records(n, seed, size=(0, 200), tag=True))


@pytest.mark.parametrize("multi", [False, True], ids=["in-process", "2-worker-processes"])
def test_not_a_tfrecord_fails_briefly_and_writes_nothing(tmp_path, multi):
    src = tmp_path / "in"
    src.mkdir()
    _tfrecord_file(src / "good.tfrecord")
    (src / "bad.tfrecord").write_bytes(b"this is not a TFRecord file\n" * 100)
    out = tmp_path / "out"
    extra = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"] if multi else []
    r = run_cli("convert", "--from", "tfrecord", src / "good.tfrecord", src / "bad.tfrecord", "-o", out / "x",
                "--num-shards", "2", *extra, tmp=tmp_path)
    assert r.returncode == 1
    lines = r.stderr.splitlines()
    assert 1 <= len(lines) <= 3, r.stderr
    assert lines[0] == (f"arrayfs: error: {src / 'bad.tfrecord'}: byte 0: bad length checksum: "
                        "not a TFRecord file, or a corrupt record")
    assert r.stdout == ""
    assert not out.exists()  # created for the run, removed with everything in it


def test_truncated_tfrecord_fails_naming_the_offset(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    recs = make_records(100, seed=4, size=(0, 200), tag=True)
    with open(src / "t.tfrecord", "wb") as f:
        write_tfrecords(f, recs)
    data = (src / "t.tfrecord").read_bytes()
    (src / "t.tfrecord").write_bytes(data[:-7])
    last = len(data) - (16 + len(recs[-1]))
    (tmp_path / "out").mkdir()
    r = run_cli("convert", "--from", "tfrecord", src / "t.tfrecord", "-o", tmp_path / "out" / "x", tmp=tmp_path)
    assert r.returncode == 1
    lines = r.stderr.splitlines()
    assert 1 <= len(lines) <= 3, r.stderr
    assert lines[0].startswith(f"arrayfs: error: {src / 't.tfrecord'}: byte {last}: truncated file")
    assert listing(tmp_path / "out") == []  # no shard, no beam-temp directory


def _flushed_gzip(frames, cut_after):
    """A gzip stream with a full flush after each frame (so every prefix
    ending at a flush decompresses cleanly), and its length up to the
    flush after frame ``cut_after``."""
    co = zlib.compressobj(6, zlib.DEFLATED, 31)
    out, cut = [], None
    for i, frame in enumerate(frames):
        out.append(co.compress(frame) + co.flush(zlib.Z_FULL_FLUSH))
        if i == cut_after:
            cut = sum(map(len, out))
    out.append(co.flush())
    return b"".join(out), cut


def test_truncated_gz_and_bz2_inputs_fail_naming_the_file(tmp_path):
    # Beam's CompressedFile takes the end of the raw file for the end of the
    # stream: a gzip cut at a flush point gave "converted 500 records", a
    # cut bz2 gave 0 records, both with exit status 0.
    recs = make_records(1000, seed=8, size=(50, 100), tag=True)
    frames = []
    for r in recs:
        buf = io.BytesIO()
        write_tfrecords(buf, [r])
        frames.append(buf.getvalue())
    whole, cut = _flushed_gzip(frames, 499)
    (tmp_path / "whole.tfrecord.gz").write_bytes(whole)
    (tmp_path / "cut.tfrecord.gz").write_bytes(whole[:cut])
    full = bz2.compress(b"".join(frames))
    (tmp_path / "cut.tfrecord.bz2").write_bytes(full[:len(full) // 2])
    res = convert("tfrecord", str(tmp_path / "whole.tfrecord.gz"), str(tmp_path / "w" / "x"))
    assert google_read(res.shards[0]) == recs
    for name, size in (("cut.tfrecord.gz", cut), ("cut.tfrecord.bz2", len(full) // 2)):
        suffix = name.rsplit(".", 1)[1]
        with pytest.raises(ConvertError) as e:
            convert("tfrecord", str(tmp_path / name), str(tmp_path / "o" / "x"))
        assert str(e.value) == (f"{tmp_path / name}: truncated .{suffix} file: its compressed data ends after "
                                f"byte {size}, before the end-of-stream marker")
        assert not (tmp_path / "o").exists()


def test_truncated_gz_lines_fail_in_the_cli_as_in_pack(tmp_path):
    data = gzip.compress(b"".join(b"%d\n" % i for i in range(100_000)))
    (tmp_path / "cut.txt.gz").write_bytes(data[:20_000])
    (tmp_path / "out").mkdir()
    r = run_cli("convert", "--from", "lines", tmp_path / "cut.txt.gz", "-o", tmp_path / "out" / "x", tmp=tmp_path)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.splitlines()[0] == (
        f"arrayfs: error: {tmp_path / 'cut.txt.gz'}: truncated .gz file: its compressed data ends after "
        "byte 20000, before the end-of-stream marker")
    assert listing(tmp_path / "out") == []


@pytest.mark.parametrize("multi", [False, True], ids=["in-process", "2-worker-processes"])
def test_a_gz_input_that_is_not_gzip_names_the_file(tmp_path, multi):
    # zlib's own message ("Error -3 while decompressing data: incorrect
    # header check") named no file.
    (tmp_path / "notgzip.jsonl.gz").write_bytes(b"this is not gzip data\n")
    extra = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"] if multi else []
    r = run_cli("convert", "--from", "jsonl", tmp_path / "notgzip.jsonl.gz", "-o", tmp_path / "o" / "x", *extra,
                tmp=tmp_path)
    assert r.returncode == 1
    lines = r.stderr.splitlines()
    assert 1 <= len(lines) <= 2, r.stderr
    assert lines[0] == (f"arrayfs: error: {tmp_path / 'notgzip.jsonl.gz'}: not valid .gz data between bytes 0 "
                        "and 22 of the file (Error -3 while decompressing data: incorrect header check)")
    assert not (tmp_path / "o").exists()


def test_every_compression_beam_names_is_read_whole(tmp_path):
    import lzma

    import zstandard

    lines = [b"line %d" % i for i in range(2000)]
    text = b"\n".join(lines) + b"\n"
    half = len(text) // 2
    # Two concatenated streams each, as `cat a.gz b.gz` makes.
    made = {
        "a.txt.gz": gzip.compress(text[:half]) + gzip.compress(text[half:]),
        "a.txt.bz2": bz2.compress(text[:half]) + bz2.compress(text[half:]),
        "a.txt.xz": lzma.compress(text),
        "a.txt.deflate": zlib.compress(text),
        "a.txt.zst": zstandard.ZstdCompressor().compress(text[:half]) + zstandard.ZstdCompressor().compress(text[half:]),
    }
    for name, data in made.items():
        (tmp_path / name).write_bytes(data)
    res = convert("lines", [str(tmp_path / n) for n in made], str(tmp_path / "o" / "x"))
    assert google_read(res.shards[0]) == lines * len(made)


def test_glob_characters_in_the_output_prefix_are_refused(tmp_path):
    # 'out/train[1]' made Beam's sink delete out/train1-00000-of-00001 (another
    # dataset) by glob, fail, and leave out/beam-temp-train[1]-*.
    _tfrecord_file(tmp_path / "a.tfrecord", seed=1)
    _tfrecord_file(tmp_path / "b.tfrecord", seed=2)
    out = tmp_path / "out"
    first = run_cli("convert", "--from", "tfrecord", tmp_path / "a.tfrecord", "-o", out / "train1", tmp=tmp_path)
    assert first.returncode == 0, first.stderr
    other = out / "train1-00000-of-00001.array_record"
    before = other.read_bytes()
    r = run_cli("convert", "--from", "tfrecord", tmp_path / "b.tfrecord", "-o", out / "train[1]", tmp=tmp_path)
    assert r.returncode == 1
    assert r.stderr.splitlines() == [
        f"arrayfs: error: {out / 'train[1]'}: the output prefix holds the glob characters [ ], which Beam's file "
        "sink would match other files with (it deletes existing shards by glob); choose a name without any of "
        "* ? [ ] { }"]
    assert listing(out) == [other.name] and other.read_bytes() == before
    # Refused before anything is made: no output directory either.
    with pytest.raises(ConvertError, match=r"new\*/x: the output prefix holds the glob character \*,"):
        convert("tfrecord", str(tmp_path / "b.tfrecord"), str(tmp_path / "new*" / "x"))
    assert not (tmp_path / "new*").exists()


def test_the_bundle_based_direct_runner_converts_and_fails_cleanly(tmp_path):
    # Its result refuses wait_until_finish(duration=...): every run failed
    # ("DirectRunner does not support duration argument") and the cleanup,
    # run while the job went on, left out/beam-temp-*.
    _tfrecord_file(tmp_path / "a.tfrecord", n=100)
    out = tmp_path / "out"
    runner = "--runner=BundleBasedDirectRunner"
    r = run_cli("convert", "--from", "tfrecord", tmp_path / "a.tfrecord", "-o", out / "x", runner, tmp=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("converted 100 records from 1 file: ")
    assert listing(out) == ["x-00000-of-00001.array_record"]
    assert google_read(out / "x-00000-of-00001.array_record") == make_records(100, 3, size=(0, 200), tag=True)
    (tmp_path / "bad.tfrecord").write_bytes(b"not a TFRecord file\n" * 10)
    r = run_cli("convert", "--from", "tfrecord", tmp_path / "bad.tfrecord", "-o", out / "y", runner, tmp=tmp_path)
    assert r.returncode == 1
    assert r.stderr.splitlines()[0] == (f"arrayfs: error: {tmp_path / 'bad.tfrecord'}: byte 0: bad length checksum: "
                                        "not a TFRecord file, or a corrupt record")
    assert listing(out) == ["x-00000-of-00001.array_record"]


def test_unknown_from_is_refused(tmp_path):
    r = run_cli("convert", "--from", "csv", tmp_path / "x.csv", "-o", tmp_path / "o", tmp=tmp_path)
    assert r.returncode == 2
    assert r.stderr.splitlines() == [
        "arrayfs: error: argument --from: invalid choice: 'csv' (choose from 'tfrecord', 'jsonl', 'lines', "
        "'parquet', 'files') (see 'arrayfs convert --help')"]


def test_missing_output_directory_is_created(tmp_path, capfd):
    _tfrecord_file(tmp_path / "a.tfrecord")
    out = tmp_path / "new" / "deeper" / "x"
    assert main(["convert", "--from", "tfrecord", str(tmp_path / "a.tfrecord"), "-o", str(out), "--no-progress"]) == 0
    assert os.listdir(tmp_path / "new" / "deeper") == ["x-00000-of-00001.array_record"]


def test_output_under_a_file_is_refused(tmp_path, capfd):
    _tfrecord_file(tmp_path / "a.tfrecord")
    (tmp_path / "afile").write_bytes(b"")
    rc = main(["convert", "--from", "tfrecord", str(tmp_path / "a.tfrecord"), "-o", str(tmp_path / "afile" / "x")])
    err = capfd.readouterr().err
    assert rc == 1
    assert err.splitlines() == [f"arrayfs: error: cannot create the output directory {tmp_path / 'afile'}: "
                                f"{tmp_path / 'afile'} is not a directory"]


def test_existing_outputs_need_force_and_force_drops_stale_shards(tmp_path, capfd):
    _tfrecord_file(tmp_path / "a.tfrecord", seed=5)
    _tfrecord_file(tmp_path / "b.tfrecord", seed=6)
    prefix = str(tmp_path / "o" / "x")
    ins = [str(tmp_path / "a.tfrecord"), str(tmp_path / "b.tfrecord")]
    assert main(["convert", "--from", "tfrecord", *ins, "-o", prefix, "--num-shards", "2", "--no-progress"]) == 0
    capfd.readouterr()
    assert main(["convert", "--from", "tfrecord", *ins, "-o", prefix, "--no-progress"]) == 1
    err = capfd.readouterr().err
    assert err.startswith(f"arrayfs: error: {prefix}-00000-of-00002.array_record: output exists (and 1 more)")
    assert main(["convert", "--from", "tfrecord", *ins, "-o", prefix, "--no-progress", "--force"]) == 0
    assert os.listdir(tmp_path / "o") == ["x-00000-of-00001.array_record"]
    assert len(google_read(tmp_path / "o" / "x-00000-of-00001.array_record")) == 600


def test_bad_options_and_flags_are_refused_before_running(tmp_path, capfd):
    _tfrecord_file(tmp_path / "a.tfrecord")
    base = ["convert", "--from", "tfrecord", str(tmp_path / "a.tfrecord"), "-o", str(tmp_path / "o" / "x")]
    assert main(base + ["--options", "transpose:true"]) == 1
    assert "transpose:true is not supported" in capfd.readouterr().err
    assert main(base + ["--options", "zstd:99"]) == 1
    assert "Option zstd: invalid value: 99" in capfd.readouterr().err
    assert main(base + ["--not_a_beam_flag=3"]) == 1
    assert capfd.readouterr().err.splitlines() == [
        "arrayfs: error: unknown option --not_a_beam_flag: not an arrayfs convert option nor a Beam pipeline option"]
    assert main(base + ["--num-shards", "-1"]) == 2
    capfd.readouterr()
    assert main(["convert", "--from", "tfrecord", str(tmp_path / "nope-*.tfrecord"), "-o", str(tmp_path / "x")]) == 1
    assert "nope-*.tfrecord: no file matches this input" in capfd.readouterr().err
    assert not (tmp_path / "o").exists()


def test_progress_bar_on_a_terminal_only(tmp_path):
    _tfrecord_file(tmp_path / "a.tfrecord", n=2000)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), TMPDIR=str(tmp_path))
    cmd = [sys.executable, "-m", "arrayfs", "convert", "--from", "tfrecord", str(tmp_path / "a.tfrecord")]
    # stderr a real terminal (a pty): the bar is drawn there.
    master, slave = pty.openpty()
    proc = subprocess.Popen(cmd + ["-o", str(tmp_path / "t" / "x")], stdout=subprocess.PIPE, stderr=slave, env=env)
    os.close(slave)
    shown = b""
    while True:
        ready, _, _ = select.select([master], [], [], 120)
        if not ready:
            break
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    proc.wait(timeout=120)
    os.close(master)
    assert proc.returncode == 0
    assert b"converting tfrecord" in shown and b"%" in shown
    assert proc.stdout.read().decode().startswith("converted 2,000 records")
    # stderr a pipe: nothing but the summary on stdout.
    r = subprocess.run(cmd + ["-o", str(tmp_path / "p" / "x")], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0 and r.stderr == ""
    assert r.stdout.startswith("converted 2,000 records")


def test_kinds_agree():
    from arrayfs.beam import cli, inputs

    assert cli.KINDS == inputs.KINDS


def test_file_groups_are_contiguous_balanced_and_cover():
    rng = random.Random(0)
    for _ in range(300):
        n = rng.randrange(1, 40)
        sizes = [rng.choice([0, 1, 10, 1000, rng.randrange(10**6)]) for _ in range(n)]
        k = rng.randrange(1, n + 1)
        groups = file_groups(sizes, k)
        assert len(groups) == k and all(len(g) for g in groups)
        assert [i for g in groups for i in g] == list(range(n))
        total = sum(sizes)
        # No group exceeds an even share by more than its largest file.
        for g in groups:
            assert sum(sizes[i] for i in g) <= total / k + max(sizes) + 1e-9
    with pytest.raises(ValueError):
        file_groups([1, 2], 3)


def test_other_commands_do_not_import_beam():
    code = ("import sys, arrayfs.cli; arrayfs.cli.build_parser(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('apache_beam', 'pyarrow', 'jax')))")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
