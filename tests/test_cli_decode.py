"""``arrayfs cat --decode`` and what ``arrayfs info`` says of the record
format and a TFDS dataset's features, run as users run them (the console
script in subprocesses), on the TFDS-built fixture (checked against what
``tfds.data_source`` returned when it was built) and on datasets of every
other format."""

from __future__ import annotations

import io
import json
import os

import msgpack
import numpy as np
import pytest
from _tfds_fixture import VERSION_DIR, expected
from PIL import Image
from test_cli import one_line_error, run

import arrayfs
from arrayfs.encoding import encode_example, encode_msgpack
from arrayfs.file import ArrayRecordFile
from arrayfs.tfds import decoder

TRAIN = os.path.join(VERSION_DIR, "arrayfs_digits-train.array_record-*")


def _write(path, records, options="group_size:1"):
    with arrayfs.ArrayRecordWriter(path, options) as w:
        for r in records:
            w.write(r)
    return path


def _png(shape=(5, 7)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.zeros(shape, np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _lines(proc) -> list:
    assert proc.returncode == 0, proc.stderr.decode()
    out = proc.stdout.decode("utf-8")
    assert out.endswith("\n")
    return [json.loads(line) for line in out.splitlines()]


# -- cat --decode ------------------------------------------------------------------------------


def test_cat_decode_tfds_prints_each_record_as_tfds_returned_it():
    want = expected()["train"]
    lines = _lines(run("cat", "--decode", "tfds", TRAIN, "0:3", "-1"))
    assert len(lines) == 4
    for doc, w in zip(lines, [want[0], want[1], want[2], want[-1]]):
        assert doc["label"] == w["label"] and doc["text"] == w["text"].decode()
        assert doc["image"] == {"bytes": doc["image"]["bytes"], "type": "png", "shape": [8, 8, 1]}
        assert doc["meta"]["index"] == w["meta"]["index"] and doc["meta"]["inner"]["odd"] == w["meta"]["inner"]["odd"]
        assert doc["meta"]["inner"]["photo"]["type"] == "jpg"
        assert doc["pixels"] == w["pixels"].tolist() and doc["moments"] == w["moments"].tolist()
        assert doc["checksum"] == int(w["checksum"]) and doc["mean"] == pytest.approx(float(w["mean"]))
        assert doc["strokes"]["kind"] == [int(k) for k in w["strokes"]["kind"]]
        assert [t["shape"] for t in doc["thumbs"]] == [[4, 4, 1], [4, 4, 1]]
    # auto: Examples with a features.json beside the shards are shown by it;
    # the version directory itself works as SRC.
    assert run("cat", "--decode", "auto", TRAIN, "0:3", "-1").stdout == run("cat", "--decode", "tfds", TRAIN, "0:3",
                                                                          "-1").stdout
    test = _lines(run("cat", "--decode", "auto", VERSION_DIR, "0"))[0]
    assert test["label"] == expected()["test"][0]["label"]
    # example: the Example's own keys, flat, one value as a scalar.
    flat = _lines(run("cat", "--decode", "example", TRAIN, "1"))[0]
    assert flat["meta/index"] == want[1]["meta"]["index"] and flat["label"] == want[1]["label"]
    assert flat["image"]["shape"] == [8, 8, 1] and "meta" not in flat


def test_cat_decode_of_other_formats(tmp_path):
    ex = _write(tmp_path / "ex.array_record",
                [encode_example({"label": i, "x": [0.5, 1.5], "name": "n", "img": [_png()]}) for i in range(3)])
    assert _lines(run("cat", "--decode", "auto", ex, ":")) == [
        {"label": i, "x": [0.5, 1.5], "name": "n", "img": {"bytes": len(_png()), "type": "png", "shape": [5, 7, 1]}}
        for i in range(3)]
    js = _write(tmp_path / "j.array_record", [json.dumps({"a": [1, {"b": None}], "t": "é"}).encode()] * 2)
    out = run("cat", "--decode", "auto", js, "1")
    assert out.stdout.decode() == '{"a":[1,{"b":null}],"t":"é"}\n' and _lines(out) == [{"a": [1, {"b": None}],
                                                                                          "t": "é"}]
    mp = _write(tmp_path / "m.array_record", [encode_msgpack({"arr": np.arange(4, dtype=np.uint8), "b": b"\x00\xff"}),
                                             msgpack.packb({"f": float("nan"), "l": [1, 2]})])
    assert _lines(run("cat", "--decode", "msgpack", mp, "0", "1")) == [
        {"arr": [0, 1, 2, 3], "b": {"bytes": 2, "type": "binary"}}, {"f": "nan", "l": [1, 2]}]
    assert _lines(run("cat", "--decode", "auto", mp, "1")) == [{"f": "nan", "l": [1, 2]}]
    raw = _write(tmp_path / "r.array_record", [_png(), b"\x00\x01\x02"])
    assert _lines(run("cat", "--decode", "auto", raw, ":")) == [
        {"bytes": len(_png()), "type": "png", "shape": [5, 7, 1]}, {"bytes": 3, "type": "binary"}]
    # Without --decode, cat is unchanged: the raw bytes.
    assert run("cat", raw, "1").stdout == b"\x00\x01\x02"
    assert run("cat", "-n", js, "0").stdout == json.dumps({"a": [1, {"b": None}], "t": "é"}).encode() + b"\n"


def test_cat_decode_errors_are_one_line(tmp_path):
    plain = _write(tmp_path / "p.array_record", [b'{"ok": 1}', b"not json", b'{"ok": 3}'])
    p = run("cat", "--decode", "json", plain, "0:3")
    err = one_line_error(p)
    assert f"record 1 ({plain} record 1)" in err and "cannot decode record as json" in err
    assert p.stdout == b'{"ok":1}\n'  # the records before it were printed
    err = one_line_error(run("cat", "--decode", "tfds", plain, "0"))
    assert "--decode tfds" in err and "features.json" in err and str(tmp_path) in err
    err = one_line_error(run("cat", "--decode", "example", plain, "1"))
    assert f"record 1 ({plain} record 1): cannot decode record as example: " in err
    p = run("cat", "--decode", "xml", plain, "0")
    assert p.returncode == 2 and b"invalid choice" in p.stderr


# -- info ----------------------------------------------------------------------------------------


def test_info_of_a_tfds_dataset_lists_its_features():
    for src in (VERSION_DIR, TRAIN):
        p = run("info", src)
        assert p.returncode == 0, p.stderr
        out = p.stdout.decode()
        assert "record format  tfds: tf.train.Example of a TFDS dataset (features.json), records sniffed as " \
               "example" in out
        assert f"TFDS dataset   arrayfs_digits 1.0.0 in {VERSION_DIR}: splits train 64, test 16" in out
        assert "features       19" in out
        rows = {ln.split()[0]: ln.split()[1:] for ln in out.splitlines() if ln.startswith("  ") and
                not ln.startswith("   ")}
        assert rows["image"] == ["Image", "uint8", "(8,", "8,", "1)", "encoding", "png"]
        assert rows["label"] == ["ClassLabel", "int64", "()", "10", "classes"]
        assert rows["thumbs"][-3:] == ["png,", "in", "Sequence[2]"]
        assert rows["meta/inner/photo"][:5] == ["Image", "uint8", "(?,", "?,", "3)"]
    info = json.loads(run("info", "--json", VERSION_DIR).stdout)
    assert info["format"] == {"format": "tfds", "sniffed": "example",
                              "description": "tf.train.Example of a TFDS dataset (features.json)"}
    assert info["tfds"]["features"] == decoder(VERSION_DIR).summary()
    assert info["tfds"]["splits"] == {"train": 64, "test": 16} and info["tfds"]["name"] == "arrayfs_digits"
    assert info["tfds"]["directory"] == VERSION_DIR and info["num_records"] == 80


def test_info_names_the_format_of_other_datasets(tmp_path):
    cases = {
        "ex": ([encode_example({"a": [1]})] * 3, "example", "tf.train.Example"),
        "js": ([b'{"a": 1}'] * 3, "json", "JSON"),
        "mp": ([msgpack.packb({"a": 1})] * 3, "msgpack", "msgpack map"),
        "raw": ([b"\x00\x01", b""], "raw", "raw bytes (no structure recognised)"),
    }
    for name, (records, fmt, words) in cases.items():
        path = _write(tmp_path / f"{name}.array_record", records)
        info = json.loads(run("info", "--json", path).stdout)
        assert info["format"] == {"format": fmt, "sniffed": fmt, "description": words} and info["tfds"] is None
        assert f"record format  {fmt}: {words}\n" in run("info", path).stdout.decode()
    # A features.json arrayfs cannot use: the records still show as Examples, and info says why.
    d = tmp_path / "odd"
    d.mkdir()
    path = _write(d / "x.array_record", [encode_example({"a": [1]})])
    (d / "features.json").write_text(json.dumps({"pythonClassName": "tensorflow_datasets.core.features.Video"}))
    info = json.loads(run("info", "--json", path).stdout)
    assert info["format"]["format"] == "example" and "Video" in info["format"]["note"]
    # A features.json that is not a features tree: the same, never a traceback.
    p = "tensorflow_datasets.core.features."
    (d / "features.json").write_text(json.dumps({"pythonClassName": p + "features_dict.FeaturesDict", "featuresDict": {
        "features": {"a": {"pythonClassName": p + "sequence_feature.Sequence", "sequence": {}}}}}))
    info = json.loads(run("info", "--json", path).stdout)
    assert info["format"]["format"] == "example" and "'a'" in info["format"]["note"]
    assert "a Sequence without its feature" in info["format"]["note"]
    assert _lines(run("cat", "--decode", "auto", path, "0")) == [{"a": 1}]


def test_info_describes_shards_whose_first_record_is_corrupt(tmp_path):
    path = _write(tmp_path / "c.array_record", [b"x" * 3000, b"y" * 3000], "group_size:1,uncompressed")
    f = ArrayRecordFile(str(path))
    off = int(f.index()[0][0])
    f.close()
    raw = bytearray(path.read_bytes())
    raw[off + 40 + 1500] ^= 0xFF
    path.write_bytes(bytes(raw))
    p = run("info", "--json", path)
    assert p.returncode == 0, p.stderr
    info = json.loads(p.stdout)
    assert info["format"]["format"] is None and str(path) in info["format"]["error"]
    assert info["num_records"] == 2
    assert "record format  unknown (the first records cannot be read: " in run("info", path).stdout.decode()


def test_auto_reads_at_most_sniff_bytes_of_records(tmp_path, monkeypatch):
    import arrayfs.display as display

    path = _write(tmp_path / "a.array_record", [b'{"a": 1}', b"\x00" * 5000, b'{"a": 2}'])
    with arrayfs.ArrayRecordDataSource(str(path)) as ds:
        assert display.choose_display("auto", ds).format == "raw"  # the binary record is sniffed too
        monkeypatch.setattr(display, "SNIFF_BYTES", 1000)
        assert display.choose_display("auto", ds).format == "json"  # it is past the budget: not read
        monkeypatch.setattr(display, "SNIFF_BYTES", 5)
        assert display.choose_display("auto", ds) == display.RecordDisplay("raw", "raw", sniffed="raw")
