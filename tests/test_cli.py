"""The ``arrayfs`` command line, run as users run it: the installed console
script (and ``python mount_cli.py``) in subprocesses, on shards written by
Google's ``array_record`` writer and by ours, read back with Google's reader.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from _google import gread, gwrite
from _records import awrite, make_records
from array_record.python.array_record_data_source import ArrayRecordDataSource as GoogleSource

import arrayfs
from arrayfs.cli import CliError, parse_index_spec
from arrayfs.file import ArrayRecordFile
from arrayfs.pack import PackError, pack_files, pack_lines
from arrayfs.verify import verify_shards

REPO = Path(__file__).resolve().parents[1]
ARRAYFS = Path(sys.executable).with_name("arrayfs")
SUBCOMMANDS = ["ls", "cat", "info", "verify", "pack"]


def run(*args, input=None, script=False, cwd=None):
    """Run ``arrayfs ARGS`` (or ``python mount_cli.py ARGS``); bytes out."""
    cmd = [sys.executable, str(REPO / "mount_cli.py")] if script else [str(ARRAYFS)]
    return subprocess.run(
        cmd + [str(a) for a in args], input=input, capture_output=True, timeout=60, cwd=cwd,
    )


def run_many(calls):
    """Run several ``arrayfs`` invocations at once (each is a fresh
    interpreter; running them side by side keeps the suite fast)."""
    with ThreadPoolExecutor(max(2, os.cpu_count() or 2)) as pool:
        return list(pool.map(lambda args: run(*args), calls))


def one_line_error(proc) -> str:
    """Assert the run failed with exactly one ``arrayfs: error:`` line."""
    err = proc.stderr.decode()
    assert proc.returncode != 0, err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("arrayfs: error: "), err
    return lines[0]


def _records(seed: int, n: int) -> list[bytes]:
    # Empty, tiny, and bigger than a 64 KiB block (chunks cross block headers).
    return make_records(n, seed, size=(0, 300), empty_every=5, big_every=4, big_size=(70_000, 70_001), tag=True)


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """Datasets, each a list of (path, records): three shards from Google's
    writer (group_size 4, zstd), two from ours (group_size 3, brotli), two
    from Google's writer with one record per chunk."""
    root = tmp_path_factory.mktemp("cli")
    g_dir, a_dir = root / "google", root / "ours"
    g_dir.mkdir()
    a_dir.mkdir()
    g = []
    for s, n in enumerate([10, 7, 13]):
        path = g_dir / f"train.array_record-{s:05d}-of-00003"
        recs = _records(s, n)
        gwrite(path, "group_size:4", recs)
        g.append((path, recs))
    a = []
    for s, n in enumerate([9, 5]):
        path = a_dir / f"part-{s}.array_record"
        recs = _records(100 + s, n)
        awrite(path, "group_size:3,brotli:5", recs)
        a.append((path, recs))
    # group_size:1 (today's default): verify checks these a batch at a time.
    one_dir = root / "single"
    one_dir.mkdir()
    one = []
    for s, n in enumerate([40, 25]):
        path = one_dir / f"one-{s}.array_record"
        recs = _records(200 + s, n)
        gwrite(path, "group_size:1", recs)
        one.append((path, recs))
    return {"google": g, "ours": a, "single": one, "root": root}


def _flat(shards):
    return [r for _, recs in shards for r in recs]


# -- help --------------------------------------------------------------------


def test_top_level_help_lists_commands_and_examples():
    p = run("--help")
    assert p.returncode == 0
    out = p.stdout.decode()
    for cmd in SUBCOMMANDS:
        assert f"    {cmd} " in out
    assert "examples:" in out


def test_every_subcommand_help_shows_an_example():
    out = run("--help").stdout.decode()
    fs_cmds = [c for c in ("mount", "unmount") if f"    {c} " in out]
    procs = run_many([(cmd, "--help") for cmd in SUBCOMMANDS + fs_cmds])
    for cmd, p in zip(SUBCOMMANDS + fs_cmds, procs):
        assert p.returncode == 0, (cmd, p.stderr)
        text = p.stdout.decode()
        assert "example" in text, cmd
        if cmd in SUBCOMMANDS:
            assert f"\n  arrayfs {cmd} " in text, cmd  # an example line of this very command


# -- ls ------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["google", "ours"])
def test_ls_lists_every_record_with_sizes(datasets, which):
    shards = datasets[which]
    pattern = str(shards[0][0].parent / "*")
    p = run("ls", "-l", pattern)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.decode().splitlines()
    want = [(str(path), j, len(r)) for path, recs in shards for j, r in enumerate(recs)]
    assert len(lines) == len(want)
    width = len(str(len(want) - 1))
    for i, (line, (path, local, size)) in enumerate(zip(lines, want)):
        g, shard, loc, sz = line.split("\t")
        assert g == f"{i:0{width}d}"
        assert (shard, int(loc), int(sz)) == (path, local, size)


def test_ls_shards_and_read_instruction(datasets):
    shards = datasets["google"]
    p = run("ls", "--shards", *[s for s, _ in shards])
    rows = [line.split("\t") for line in p.stdout.decode().splitlines()]
    assert [(int(r[0]), int(r[1]), r[-1]) for r in rows] == [(0, 10, str(shards[0][0])), (10, 7, str(shards[1][0])),
                                                            (17, 13, str(shards[2][0]))]
    # A read instruction keeps records [2, 5) of the file, global 0..2.
    p = run("ls", f"{shards[0][0]}[2:5]")
    assert [line.split("\t")[2] for line in p.stdout.decode().splitlines()] == ["2", "3", "4"]


# -- cat -------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["google", "ours"])
def test_cat_writes_exact_bytes(datasets, which):
    shards = datasets[which]
    flat = _flat(shards)
    srcs = [s for s, _ in shards]
    cases = [
        (["5", "0", "5", "3:9", "-1", ":2"], flat[5] + flat[0] + flat[5] + b"".join(flat[3:9]) + flat[-1]
         + flat[0] + flat[1]),
        ([":"], b"".join(flat)),
        (["--", "-3:"], b"".join(flat[-3:])),
    ]
    for (args, want), p in zip(cases, run_many([["cat", *srcs, *a] for a, _ in cases])):
        assert p.returncode == 0, (args, p.stderr)
        assert p.stdout == want, args


def test_cat_index_option_newline_and_script(datasets):
    shards = datasets["ours"]
    flat = _flat(shards)
    d = shards[0][0].parent
    p = run("cat", "-i", "2", "-i", "7:9", "-n", d)
    assert p.stdout == flat[2] + b"\n" + flat[7] + b"\n" + flat[8] + b"\n"
    # mount_cli.py at the top of the repo runs the same entry point.
    q = run("cat", d, "2", script=True)
    assert q.returncode == 0 and q.stdout == flat[2]


# -- info ------------------------------------------------------------------------


def test_info_json_counts(datasets):
    shards = datasets["google"]
    p = run("info", "--json", shards[0][0].parent)
    assert p.returncode == 0, p.stderr
    info = json.loads(p.stdout)
    flat = _flat(shards)
    assert info["num_shards"] == 3
    assert info["num_records"] == len(flat)
    assert info["record_bytes"] == sum(map(len, flat))
    assert info["num_chunks"] == sum(-(-len(r) // 4) for _, r in shards)
    for s, (path, recs) in zip(info["shards"], shards):
        assert s["path"] == str(path)
        assert s["num_records"] == len(recs)
        assert s["group_size"] == 4
        assert s["writer_options"].startswith("group_size:4,")
        assert s["compression"] == "zstd:3"
        assert s["file_bytes"] == os.path.getsize(path)
        assert s["metadata"] is None
    assert [s["first_index"] for s in info["shards"]] == [0, 10, 17]
    # Read instruction: exactly the bytes of the records kept.
    p = run("info", "--json", f"{shards[2][0]}[3:11]")
    s = json.loads(p.stdout)["shards"][0]
    assert (s["num_records"], s["start"], s["record_bytes"]) == (8, 3, sum(map(len, shards[2][1][3:11])))


def test_info_text(datasets):
    shards = datasets["ours"]
    p = run("info", *[s for s, _ in shards])
    out = p.stdout.decode()
    assert p.returncode == 0
    assert out.startswith("2 shards, 14 records, 5 chunks")
    assert "group_size 3" in out and "brotli:5" in out and "metadata       none" in out


def _file_with_metadata_chunk(path, records, meta: bytes) -> None:
    """An ArrayRecord file with a Riegeli file metadata chunk ('m') after
    the signature, as array_record writes when metadata is set (its Python
    binding cannot set it): the chunk's data is the one-record transposed
    chunk Google's writer makes of ``meta`` with ``transpose:true``."""
    import io

    from _arfile import postscript_record, simple_chunk
    from _transpose_helpers import google_write, transposed_chunks

    from arrayfs.layout import encode_chunk_footer, encode_footer_metadata
    from arrayfs.riegeli.chunk import METADATA, encode_chunk_header
    from arrayfs.riegeli.chunk_writer import ChunkWriter

    google_write(path, [meta], "group_size:1,transpose:true,uncompressed")
    ((_, decoded, data),) = transposed_chunks(path)
    stream = io.BytesIO()
    cw = ChunkWriter(stream)
    cw.write_chunk(encode_chunk_header(data, METADATA, 0, decoded), data)
    entries = []
    for r in records:
        header, body, n, size = simple_chunk([r])
        entries.append(encode_chunk_footer(cw.write_chunk(header, body), size, n))
    options = "group_size:1,transpose:false,pad_to_block_boundary:false,uncompressed,max_parallelism:1"
    footer = cw.write_chunk(*simple_chunk([encode_footer_metadata(len(records), len(records), options), *entries])[:2])
    cw.pad_to_block_boundary()
    cw.write_chunk(*simple_chunk([postscript_record(footer)] * 3)[:2])
    cw.pad_to_block_boundary()
    Path(path).write_bytes(stream.getvalue())


def test_info_shows_file_metadata(tmp_path):
    path = tmp_path / "m.array_record"
    records = [b"alpha", b"beta", b""]
    # RecordsMetadata{file_comment: "hi", record_type_name: "my.Rec"}
    _file_with_metadata_chunk(path, records, b"\x0a\x02hi\x12\x06my.Rec")
    info, text, ver, cat = run_many([
        ["info", "--json", path], ["info", path], ["verify", "--no-progress", path], ["cat", path, ":"],
    ])
    md = json.loads(info.stdout)["shards"][0]["metadata"]
    assert md["present"] is True
    if md["decoded"]:  # arrayfs.riegeli.transpose is part of arrayfs
        assert md["fields"]["record_type_name"] == "my.Rec"
        assert "record type my.Rec; comment 'hi'" in text.stdout.decode()
    else:
        assert "present (not decoded" in text.stdout.decode()
    assert ver.returncode == 0, ver.stdout
    assert cat.stdout == b"".join(records)


# -- verify ------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["google", "ours", "single"])
def test_verify_clean(datasets, which):
    d = datasets[which][0][0].parent
    p = run("verify", "--no-progress", d)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.decode().startswith("OK: ")


def _corrupt_chunk_data(path, k):
    """Flip one byte inside the data of user chunk ``k``."""
    with ArrayRecordFile(path) as f:
        offset = int(f.index()[0][k])
        first = f.index()[2]
        rng = (int(first[k]), int(first[k + 1]))
    b = bytearray(Path(path).read_bytes())
    b[offset + 40 + 3] ^= 0x40  # past the 40-byte chunk header
    Path(path).write_bytes(bytes(b))
    return rng


def test_cat_writes_every_record_before_a_corrupt_one(tmp_path):
    recs = [b"rec%03d\n" % i for i in range(100)]
    path = tmp_path / "d.array_record"
    with arrayfs.ArrayRecordWriter(str(path), "group_size:1,uncompressed") as w:
        for r in recs:
            w.write(r)
    bad = _corrupt_chunk_data(path, 32)
    assert bad == (32, 33)
    for lo, hi in ((20, 34), (0, 34), (31, 33)):
        p = run("cat", path, f"{lo}:{hi}")
        assert p.returncode == 1
        assert p.stdout == b"".join(recs[lo:32])  # nothing before the bad record is lost
        assert "records [32, 33)" in p.stderr.decode() and str(path) in p.stderr.decode()


@pytest.mark.parametrize("which", ["google", "ours", "single"])
def test_verify_reports_every_bad_chunk(datasets, which, tmp_path):
    shards = datasets[which]
    for path, _ in shards:
        shutil.copy(path, tmp_path / path.name)
    first_bad = tmp_path / shards[0][0].name
    last_bad = tmp_path / shards[-1][0].name
    r1 = _corrupt_chunk_data(first_bad, 1)
    r2 = _corrupt_chunk_data(last_bad, 0)
    p = run("verify", "--no-progress", tmp_path)
    assert p.returncode == 1
    out = p.stdout.decode()
    # Keeps going past the first bad chunk: both are named, with shard and range.
    assert f"BAD {first_bad}: chunk 1 at byte" in out
    assert f"records [{r1[0]}, {r1[1]})" in out
    assert f"BAD {last_bad}: chunk 0 at byte" in out
    assert f"records [{r2[0]}, {r2[1]})" in out
    assert "CORRUPT: 2 problems in 2 of" in out
    rep = json.loads(run("verify", "--json", "--no-progress", tmp_path).stdout)
    assert not rep["ok"]
    assert [(b["path"], b["chunk"], b["records"]) for b in rep["bad_chunks"]] == [
        (str(first_bad), 1, list(r1)), (str(last_bad), 0, list(r2))
    ]
    # The same through the library.
    report = verify_shards(str(tmp_path), progress=False)
    assert report.bad_shards == [str(first_bad), str(last_bad)]


def test_verify_bad_and_unreadable_files(tmp_path, datasets):
    path, recs = datasets["ours"][0]
    shutil.copy(path, tmp_path / "a.array_record")
    (tmp_path / "b.array_record").write_bytes(b"not an array record\n" * 100)
    data = path.read_bytes()
    (tmp_path / "c.array_record").write_bytes(data[: len(data) - 1000])  # truncated
    p = run("verify", "--no-progress", tmp_path)
    out = p.stdout.decode()
    assert p.returncode == 1
    assert f"BAD {tmp_path / 'b.array_record'}" in out and "not a Riegeli/ArrayRecord file" in out
    assert f"BAD {tmp_path / 'c.array_record'}" in out and "truncated" in out
    assert "2 problems in 2 of 3 shards" in out


# -- pack --------------------------------------------------------------------------


def _tree(root: Path) -> list[bytes]:
    """A small tree; returns file contents in the documented record order."""
    files = {
        "b/z.bin": bytes(range(256)) * 300,
        "a/f10.txt": b"ten\n",
        "a/f2.txt": b"two\n",
        "a/deep/x/y.json": b'{"k": 1}',
        "empty": b"",
        "c.txt": "caf\u00e9\n".encode(),
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return [files[k] for k in sorted(files)]


def test_pack_directory_tree_reads_back_with_google(tmp_path):
    want = _tree(tmp_path / "tree")
    out = tmp_path / "out" / "train.array_record"
    p = run("pack", tmp_path / "tree", "-o", out, "--shard-size", "4", "--options", "group_size:2,zstd:5")
    assert p.returncode == 0, p.stderr
    names = [f"train.array_record-{k:05d}-of-00002" for k in range(2)]
    assert sorted(os.listdir(out.parent)) == names  # no temporary files left
    printed = p.stdout.decode()
    assert f"{out.parent / names[0]}\t4 records" in printed and "packed 6 records into 2 shards" in printed
    src = GoogleSource([str(out.parent / n) for n in names])
    assert len(src) == len(want)
    assert [src[i] for i in range(len(src))] == want
    # ... and arrayfs itself reads the directory of shards in the same order.
    assert run("cat", out.parent, ":").stdout == b"".join(want)


def test_pack_jsonl_and_lines(tmp_path):
    lines = ['{"text": "h\u00e9llo", "n": 1}', "[1, 2, 3]", '"just a string"', "{}"]
    src = tmp_path / "data.jsonl"
    src.write_bytes(("\n".join(lines[:2]) + "\n\n  \n" + "\n".join(lines[2:]) + "\n").encode())
    out = tmp_path / "j.array_record"
    p = run("pack", src, "-o", out)  # *.jsonl: --jsonl implied; blank lines skipped
    assert p.returncode == 0, p.stderr
    got = GoogleSource([str(out)])
    assert [got[i] for i in range(len(got))] == [s.encode() for s in lines]
    # --lines keeps every line, empty ones included, "\r" kept; stdin as '-'.
    out2 = tmp_path / "lines.array_record"
    p = run("pack", "--lines", "-", "-o", out2, "--shard-size", "2", input=b"a\r\n\nccc")
    assert p.returncode == 0, p.stderr
    shards = sorted(str(x) for x in tmp_path.glob("lines.array_record-*"))
    got = GoogleSource(shards)
    assert [got[i] for i in range(len(got))] == [b"a\r", b"", b"ccc"]


def test_pack_refuses_to_overwrite_and_force_removes_stale_shards(tmp_path):
    _tree(tmp_path / "tree")
    out = tmp_path / "o" / "d.array_record"
    assert run("pack", tmp_path / "tree", "-o", out, "--shard-size", "2").returncode == 0
    assert len(os.listdir(out.parent)) == 3
    one_line_error(run("pack", tmp_path / "tree", "-o", out, "--shard-size", "2"))
    p = run("pack", tmp_path / "tree", "-o", out, "--shard-size", "4", "--force")
    assert p.returncode == 0, p.stderr
    assert sorted(os.listdir(out.parent)) == ["d.array_record-00000-of-00002", "d.array_record-00001-of-00002"]
    # From shards to one file and back: the other form's files go too, so
    # the directory holds each record once.
    p = run("pack", tmp_path / "tree", "-o", out, "--force")
    assert p.returncode == 0, p.stderr
    assert os.listdir(out.parent) == ["d.array_record"]
    p = run("pack", tmp_path / "tree", "-o", out, "--shard-size", "4", "--force")
    assert p.returncode == 0, p.stderr
    assert sorted(os.listdir(out.parent)) == ["d.array_record-00000-of-00002", "d.array_record-00001-of-00002"]
    with arrayfs.ArrayRecordDataSource(str(out.parent)) as ds:
        assert len(ds) == len(_tree(tmp_path / "tree2"))


def test_pack_output_that_is_a_directory_or_ends_in_a_separator(tmp_path):
    (tmp_path / "l.txt").write_bytes(b"a\nb\n")
    (tmp_path / "adir").mkdir()
    p = run("pack", "--lines", tmp_path / "l.txt", "-o", tmp_path / "adir")
    assert p.returncode != 0 and b"adir: is a directory; give a file name" in p.stderr
    p = run("pack", "--lines", tmp_path / "l.txt", "-o", f"{tmp_path / 'nodir'}/")
    assert p.returncode != 0 and b"nodir/: ends in a path separator; give a file name" in p.stderr
    assert not (tmp_path / "nodir").exists()


def test_pack_decompresses_gz_and_bz2_text(tmp_path):
    import bz2
    import gzip

    (tmp_path / "a.txt.gz").write_bytes(gzip.compress(b"one\ntwo\r\n\nthree"))
    (tmp_path / "b.jsonl.bz2").write_bytes(bz2.compress(b'{"k": 1}\n\n[2]\n'))
    out = tmp_path / "o" / "a.array_record"
    p = run("pack", "--lines", tmp_path / "a.txt.gz", "-o", out)
    assert p.returncode == 0, p.stderr
    assert gread(out) == [b"one", b"two\r", b"", b"three"]
    p = run("pack", tmp_path / "b.jsonl.bz2", "-o", tmp_path / "o" / "b.array_record")  # found to be JSONL
    assert p.returncode == 0, p.stderr
    assert gread(tmp_path / "o" / "b.array_record") == [b'{"k": 1}', b"[2]"]
    (tmp_path / "cut.txt.gz").write_bytes(gzip.compress(b"x\n" * 1000)[:-12])
    p = run("pack", "--lines", tmp_path / "cut.txt.gz", "-o", tmp_path / "o" / "c.array_record")
    assert p.returncode == 1
    err = p.stderr.decode()
    assert err.count("\n") == 1 and f"{tmp_path / 'cut.txt.gz'}: not a whole .gz stream" in err, err
    assert not (tmp_path / "o" / "c.array_record").exists()


def test_pack_into_its_own_input_directory_packs_the_same_files_again(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    (d / "a").write_bytes(b"A")
    (d / "b").write_bytes(b"B")
    for _ in range(2):
        pack_files([d], d / "out.array_record", progress=False, overwrite=True)
        assert gread(d / "out.array_record") == [b"A", b"B"]
    pack_files([d], d / "sh.array_record", "", 1, progress=False)
    pack_files([d], d / "sh.array_record", "", 1, progress=False, overwrite=True)  # its shards left out too
    assert gread(d / "sh.array_record-00000-of-00003") == [b"A"]


def test_pack_order_is_the_bytes_order_of_the_names(tmp_path):
    """`find DIR -type f | LC_ALL=C sort`: names that are not UTF-8 sort by
    their bytes, as the documented command sorts them."""
    d = tmp_path / "in"
    d.mkdir()
    names = [b"\xee\x80\x80", b"\xf0x", b"\xfe"]  # U+E000 in UTF-8, then two names that are not UTF-8
    for k, n in enumerate(reversed(names)):
        (d / os.fsdecode(n)).write_bytes(b"%d" % k)
    pack_files([d], tmp_path / "o.array_record", progress=False)
    assert gread(tmp_path / "o.array_record") == [b"2", b"1", b"0"]


def test_pack_output_names_up_to_255_bytes(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    (d / "a").write_bytes(b"a")
    out = tmp_path / ("z" * 240)
    pack_files([d], out, progress=False)
    assert gread(out) == [b"a"] and sorted(os.listdir(tmp_path)) == sorted(["in", out.name])


def test_pack_library_api(tmp_path):
    want = _tree(tmp_path / "tree")
    written = pack_files([tmp_path / "tree"], tmp_path / "x.array_record", "group_size:3", None, progress=False)
    assert written == [str(tmp_path / "x.array_record")]
    with arrayfs.ArrayRecordDataSource(written) as ds:
        assert [ds[i] for i in range(len(ds))] == want
    (tmp_path / "bad.jsonl").write_text('{"ok": 1}\n{nope\n')
    with pytest.raises(PackError, match=r"bad.jsonl:2: not a JSON value"):
        pack_lines([tmp_path / "bad.jsonl"], tmp_path / "y.array_record", jsonl=True, progress=False)
    assert not list(tmp_path.glob("*y.array_record*"))  # nothing half-written left behind


# -- errors --------------------------------------------------------------------------


def test_error_cases_are_one_line(datasets, tmp_path):
    path = datasets["google"][0][0]
    text = tmp_path / "notes.array_record"
    text.write_text("hello\n" * 50)
    cases = {
        "no match": (["ls", str(tmp_path / "missing-*.array_record")], "no file matches"),
        "no file": (["info", str(tmp_path / "nope.array_record")], "no such file"),
        "bad index": (["cat", str(path), "99"], "out of range"),
        "bad range": (["cat", str(path), "5:2"], "backwards"),
        "not an index": (["cat", str(path), "x"], "not an index"),
        "not ArrayRecord": (["ls", str(text)], "not a Riegeli/ArrayRecord file"),
        "verify no match": (["verify", str(tmp_path / "zzz*")], "no file matches"),
        "bad options": (["pack", str(tmp_path), "--files", "-o", str(tmp_path / "o.ar"), "--options", "zstd:99"],
                        "bad writer options"),
        "bad jsonl": (["pack", "--jsonl", str(text), "-o", str(tmp_path / "o.ar")], "not a JSON value"),
        "unknown command": (["frobnicate"], "invalid choice"),
        "missing SRC": (["ls"], "required"),
    }
    cases["names the file"] = (["info", str(text)], str(text))
    cases["says how many"] = (["cat", str(path), "99"], "has 10 records")
    for (name, (_args, needle)), p in zip(cases.items(), run_many([a for a, _ in cases.values()])):
        line = one_line_error(p)
        assert needle in line, (name, line)


def test_closed_stdout_is_one_line_error(datasets, tmp_path):
    # With fd 1 closed Python's sys.stdout is None: cat, ls, info and verify
    # died with a traceback ('NoneType' object has no attribute 'buffer'),
    # and pack would have failed only after writing its shards.
    path = str(datasets["google"][0][0])
    (tmp_path / "s.txt").write_bytes(b"1\n2\n")
    calls = [["cat", path, "0"], ["ls", path], ["info", path], ["verify", path],
             ["pack", "--lines", str(tmp_path / "s.txt"), "-o", str(tmp_path / "s.ar")]]
    for args in calls:
        p = subprocess.run(["/bin/sh", "-c", 'exec "$@" >&-', "sh", str(ARRAYFS), *args],
                           stderr=subprocess.PIPE, timeout=60)
        line = one_line_error(p)
        assert p.returncode == 1
        assert line == f"arrayfs: error: {args[0]}: standard output is closed; redirect it instead (e.g. >/dev/null)"
    assert sorted(os.listdir(tmp_path)) == ["s.txt"]


def test_unmount_flag_never_tracebacks(tmp_path):
    # Works whether or not arrayfs.fs is installed: unmounting a directory
    # that is not a mount point is an error either way.
    p = run("-u", tmp_path)
    assert p.returncode != 0
    assert b"Traceback" not in p.stderr


# -- index grammar (in process) --------------------------------------------------------


def test_parse_index_spec():
    assert parse_index_spec("3", 10) == range(3, 4)
    assert parse_index_spec("-1", 10) == range(9, 10)
    assert parse_index_spec("2:5", 10) == range(2, 5)
    assert parse_index_spec(":", 10) == range(0, 10)
    assert parse_index_spec("-3:", 10) == range(7, 10)
    assert parse_index_spec("4:4", 10) == range(4, 4)
    for bad in ["10", "-11", "0:11", "5:2", "a", "1:2:3", "1.5"]:
        with pytest.raises(CliError):
            parse_index_spec(bad, 10)
