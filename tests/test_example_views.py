"""What the CLI and the mount will show of a record: ``sniff_format``
(``--decode auto``), ``to_json`` (``arrayfs cat --decode``) and
``decoded_tree`` (``.decoded/<name>/``), on the TFDS-built fixture and on
records of every other format."""

from __future__ import annotations

import io
import json

import msgpack
import numpy as np
import pytest
from _tfds_fixture import VERSION_DIR, expected
from PIL import Image

from arrayfs.encoding import (
    RecordDecodeError,
    decoded_tree,
    describe_bytes,
    encode_example,
    encode_msgpack,
    json_line,
    sniff_content,
    sniff_format,
    to_json,
)
from arrayfs.encoding.files import tree_size
from arrayfs.tfds import data_source


@pytest.fixture(scope="module")
def fixture():
    src = data_source(VERSION_DIR, split="train")
    return src, [src.records[i] for i in range(8)]


def _png(shape=(5, 7), mode="L") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.arange(np.prod(shape), dtype=np.uint8).reshape(shape), mode).save(buf, "PNG")
    return buf.getvalue()


def test_sniff_format(fixture):
    _, records = fixture
    assert sniff_format(records) == "example"
    assert sniff_format([json.dumps({"a": 1}).encode(), b" [1, 2]"]) == "json"
    assert sniff_format([encode_msgpack({"a": np.arange(3)}), msgpack.packb({"b": b"x"})]) == "msgpack"
    assert sniff_format([b"\x00\x01binary", b"more"]) == "raw"
    assert sniff_format([]) == "raw" and sniff_format([b"", b""]) == "raw"
    # One record of another kind among Examples: not all of them are Examples.
    assert sniff_format(records[:3] + [b"plain text"]) == "raw"
    # Random bytes that happen to parse as some protobuf are not Examples.
    assert sniff_format([b"\x08\x96\x01"]) == "raw"
    assert sniff_format([encode_example({"x": [1.5]})]) == "example"


def test_sniff_content_signatures():
    assert sniff_content(_png()) == "png"
    buf = io.BytesIO()
    Image.new("RGB", (3, 2)).save(buf, "JPEG")
    assert sniff_content(buf.getvalue()) == "jpg"
    for fmt, ext in (("GIF", "gif"), ("WEBP", "webp")):
        buf = io.BytesIO()
        Image.new("RGB", (3, 2)).save(buf, fmt)
        assert sniff_content(buf.getvalue()) == ext
    npy = io.BytesIO()
    np.save(npy, np.zeros((2, 3)))
    assert sniff_content(npy.getvalue()) == "npy"
    assert sniff_content(b"RIFF\x24\x00\x00\x00WAVEfmt ") == "wav" and sniff_content(b"fLaC\x00") == "flac"
    assert sniff_content(b"hello") is None and sniff_content(b"") is None


def test_describe_bytes():
    assert describe_bytes(_png((5, 7))) == {"bytes": len(_png((5, 7))), "type": "png", "shape": [5, 7, 1]}
    rgb = _png((4, 6, 3), "RGB")
    assert describe_bytes(rgb)["shape"] == [4, 6, 3]
    npy = io.BytesIO()
    np.save(npy, np.zeros((2, 3), np.float32))
    assert describe_bytes(npy.getvalue()) == {"bytes": len(npy.getvalue()), "type": "npy", "shape": [2, 3]}
    assert describe_bytes(b"\x00\x01") == {"bytes": 2, "type": "binary"}
    assert describe_bytes(b"\x89PNG\r\n\x1a\ntruncated") == {"bytes": 17, "type": "png"}  # no shape, no error


def test_to_json_of_tfds_example(fixture):
    src, records = fixture
    want = expected()["train"][0]
    out = to_json(records[0], "example")
    assert json.loads(json.dumps(out)) == out  # plain JSON
    assert out["label"] == want["label"] and out["meta/index"] == want["meta"]["index"]
    assert out["text"] == want["text"].decode() and out["meta/source"] == "sklearn.datasets.load_digits"
    assert out["image"] == {"bytes": len(records[0]) and out["image"]["bytes"], "type": "png", "shape": [8, 8, 1]}
    assert out["meta/inner/photo"]["type"] == "jpg" and out["meta/inner/photo"]["shape"][1:] == [8, 3]
    assert isinstance(out["pixels"], list) and len(out["pixels"]) == 64
    assert out["mean"] == pytest.approx(want["mean"]) and isinstance(out["mean"], float)
    assert [t["type"] for t in out["thumbs"]] == ["png", "png"]
    assert to_json(records[0]) == out  # auto
    line = json_line(out)
    assert line.endswith(b"\n") and line.count(b"\n") == 1 and json.loads(line) == out
    assert "–".encode() in line  # text as itself, not \u escapes


def test_to_json_with_tfds_features_is_nested(fixture):
    src, records = fixture
    want = expected()["train"][3]
    out = to_json(records[3], src.features.decode_for_display)
    assert json.loads(json.dumps(out)) == out
    assert out["label"] == want["label"] and out["text"] == want["text"].decode()
    assert out["meta"]["inner"]["odd"] == want["meta"]["inner"]["odd"]
    assert out["image"]["type"] == "png" and out["image"]["shape"] == [8, 8, 1]
    assert out["pixels"] == want["pixels"].tolist() and out["checksum"] == want["checksum"]
    assert out["strokes"] == {"kind": [int(k) for k in want["strokes"]["kind"]],
                              "x": [float(x) for x in want["strokes"]["x"]]}
    assert out["ragged"] == [r.tolist() for r in want["ragged"]]


def test_to_json_of_other_formats():
    arr = np.arange(6, dtype=np.int16).reshape(2, 3)
    rec = encode_msgpack({"a": arr, "s": "text", "b": b"\x00\x9f", "f": float("nan"), "l": [1, 2]})
    assert to_json(rec, "msgpack") == {"a": [[0, 1, 2], [3, 4, 5]], "s": "text", "b": {"bytes": 2, "type": "binary"},
                                      "f": "nan", "l": [1, 2]}
    assert to_json(b'{"x": [1, {"y": null}]}', "json") == {"x": [1, {"y": None}]}
    assert to_json(_png(), "raw")["type"] == "png"
    assert to_json(encode_example({"inf": [np.inf, -np.inf], "one": [7]})) == {"inf": ["inf", "-inf"], "one": 7}
    with pytest.raises(RecordDecodeError):
        to_json(b"\xc1", "msgpack")
    with pytest.raises(RecordDecodeError):
        to_json(b"{", "json")
    with pytest.raises(ValueError, match="decode must be"):
        to_json(b"", "xml")


def test_decoded_tree_of_an_example(fixture):
    _, records = fixture
    want = expected()["train"][1]
    tree = decoded_tree(records[1], "example")
    assert tree["image.png"].startswith(b"\x89PNG")
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(tree["image.png"]))), want["image"][..., 0])
    assert tree["label"] == f"{want['label']}\n".encode()
    assert tree["text"] == want["text"]
    assert set(tree["thumbs"]) == {"0.png", "1.png"}
    assert tree["meta"]["inner"]["photo.jpg"].startswith(b"\xff\xd8\xff")
    assert tree["meta"]["index"] == f"{want['meta']['index']}\n".encode()
    pixels = np.array(tree["pixels"].decode().split(), dtype=np.float32)  # shortest float32 forms
    assert np.array_equal(pixels, want["pixels"].astype(np.float32).ravel())
    assert tree_size(tree) == sum(len(v) for v in _files(tree))


def _files(tree):
    for v in tree.values():
        if isinstance(v, dict):
            yield from _files(v)
        else:
            yield v


def test_decoded_tree_with_tfds_features_and_class_names(fixture):
    src, records = fixture
    want = expected()["train"][2]
    tree = decoded_tree(records[2], src.features.decode_for_display, class_names=src.features.class_names())
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    assert tree["label"] == f"{want['label']}\n".encode() and tree["label.name"] == f"{names[want['label']]}\n".encode()
    kinds = [int(k) for k in want["strokes"]["kind"]]
    assert tree["strokes"]["kind"] == "".join(f"{k}\n" for k in kinds).encode()
    assert tree["strokes"]["kind.name"] == "".join(f"{k}\n" for k in kinds).encode()
    assert tree["image.png"].startswith(b"\x89PNG") and tree["meta"]["inner"]["photo.jpg"][:3] == b"\xff\xd8\xff"
    assert tree["moments"] == "".join(f"{v}\n" for v in want["moments"].ravel().tolist()).encode()
    assert tree["checksum"] == f"{want['checksum']}\n".encode()
    assert tree["meta"]["inner"]["odd"] == (b"1\n" if want["meta"]["inner"]["odd"] else b"0\n")
    assert tree["mean"] == f"{np.float32(want['mean'])}\n".encode()


def _sequences_of_class_labels_and_images():
    from arrayfs.tfds import TfdsFeatures
    from arrayfs.tfds.features import parse_features_json

    p = "tensorflow_datasets.core.features."
    label = {"pythonClassName": p + "class_label_feature.ClassLabel",
             "classLabel": {"numClasses": "3", "names": ["cat", "dog", "owl"]}}
    image = {"pythonClassName": p + "image_feature.Image",
             "image": {"dtype": "uint8", "shape": {"dimensions": ["-1", "-1", "1"]}}}

    def seq(feature):
        return {"pythonClassName": p + "sequence_feature.Sequence", "sequence": {"feature": feature}}

    return TfdsFeatures(parse_features_json({"pythonClassName": p + "features_dict.FeaturesDict", "featuresDict": {
        "features": {"rr": seq(seq(label)), "rrr": seq(seq(seq(label))), "img": seq(image)}}}))


def test_class_labels_in_ragged_sequences_get_names_beside_each_row():
    features = _sequences_of_class_labels_and_images()
    record = encode_example({"rr/ragged_flat_values": [0, 1, 2], "rr/ragged_row_lengths_0": [2, 1],
                             "rrr/ragged_flat_values": [2, 0, 1, 0], "rrr/ragged_row_lengths_0": [2, 1],
                             "rrr/ragged_row_lengths_1": [1, 2, 1], "img": [_png((2, 2))]})
    tree = decoded_tree(record, features.decode_for_display, class_names=features.class_names())
    assert tree["rr"] == {"0": b"0\n1\n", "0.name": b"cat\ndog\n", "1": b"2\n", "1.name": b"owl\n"}
    # [[[2], [0, 1]], [[0]]]: rows of one length are one numbers file, as without names.
    assert tree["rrr"] == {"0": {"0": b"2\n", "0.name": b"owl\n", "1": b"0\n1\n", "1.name": b"cat\ndog\n"},
                           "1": b"0\n", "1.name": b"cat\n"}


@pytest.mark.parametrize("count", [0, 1, 2])
def test_a_sequence_of_images_is_a_directory_a_file_or_empty_by_its_length(count):
    # The layouts docs/tfds.md states: two or more a directory, one a file, none an empty file.
    features = _sequences_of_class_labels_and_images()
    from arrayfs.encoding.example import Example

    msg = Example()
    for key, values in {"rr/ragged_flat_values": [0], "rr/ragged_row_lengths_0": [1], "rrr/ragged_flat_values": [0],
                        "rrr/ragged_row_lengths_0": [1], "rrr/ragged_row_lengths_1": [1]}.items():
        msg.features.feature[key].int64_list.value.extend(values)
    msg.features.feature["img"].bytes_list.SetInParent()  # as TFDS writes no images: an empty bytes_list
    msg.features.feature["img"].bytes_list.value.extend([_png((2, 2))] * count)
    record = msg.SerializeToString()
    tree = decoded_tree(record, features.decode_for_display)
    want = {0: {"img": b""}, 1: {"img.png": _png((2, 2))}, 2: {"img": {"0.png": _png((2, 2)), "1.png": _png((2, 2))}}}
    assert {k: v for k, v in tree.items() if k.startswith("img")} == want[count]


def test_decoded_tree_of_other_formats():
    rec = msgpack.packb({"photo": _png(), "note": "hi", "nums": [1, 2, 3], "blobs": [b"\x00", b"\x01"],
                        "nested": {"k": 1.5}, "bad/name": b"x", "..": b"y"})
    tree = decoded_tree(rec, "msgpack")
    assert tree["photo.png"] == _png() and tree["note"] == b"hi" and tree["nums"] == b"1\n2\n3\n"
    assert tree["blobs"] == {"0": b"\x00", "1": b"\x01"} and tree["nested"] == {"k": b"1.5\n"}
    assert tree["bad%2Fname"] == b"x" and tree["%2E%2E"] == b"y"
    assert decoded_tree(json.dumps({"a": [[1, 2], [3, 4]], "e": []}).encode(), "json") == {"a": b"1\n2\n3\n4\n",
                                                                                          "e": b""}
    assert decoded_tree(_png(), "raw") == {"data.png": _png()}
    assert decoded_tree(b"\x00\x01", "auto") == {"data": b"\x00\x01"}
    nul = decoded_tree(json.dumps({"nul\u0000key": 1, "nul": 2, "%": 3}).encode(), "json")
    assert nul == {"nul%00key": b"1\n", "nul": b"2\n", "%": b"3\n"}
    long = "k" * 300
    tree = decoded_tree(msgpack.packb({long: 1, long + "2": 2, long + "p": _png(), "n/" * 200: b"x"}), "msgpack")
    assert list(tree) == ["k" * 255, "k" * 253 + "~1", "k" * 251 + ".png", ("n%2F" * 64)[:255]]
    # An Example key's directory part that no directory can be named: one escaped name.
    tree = decoded_tree(encode_example({"d\0ir/leaf": [1]}), "example")
    assert tree == {"d%00ir%2Fleaf": b"1\n"}
    clash = encode_example({"a": [1], "a/b": [2]})
    # A feature and a directory of the same name: both stay, under distinct names.
    tree = decoded_tree(clash, "example")
    assert tree in ({"a": {"b": b"2\n"}, "a~1": b"1\n"}, {"a": b"1\n", "a%2Fb": b"2\n"})


def test_numbers_files_are_rendered_in_bounded_memory(monkeypatch):
    # A 2 MB uint8 array made ~160 MB of Python objects (tolist, repr, join):
    # a 19 KB zlib tensor record took 1.6 GB to show in the mount.
    import tracemalloc

    import arrayfs.encoding.files as files

    values = np.arange(2_000_000, dtype=np.uint8)
    tracemalloc.start()
    try:
        data = decoded_tree(encode_msgpack({"t": values}), "msgpack")["t"]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert data == "".join(f"{v}\n" for v in values.tolist()).encode()
    assert peak < 4 * len(data), peak
    # Chunk boundaries change nothing, for every kind of number.
    monkeypatch.setattr(files, "_NUMBERS_CHUNK", 3)
    for arr in (np.array([True, False] * 4), np.linspace(-1, 1, 7, dtype=np.float32), np.arange(-5, 5),
                np.array([0.1, 1e300, -0.0, np.nan, np.inf])):
        want = "".join(f"{v}\n" for v in (arr.view(np.uint8).tolist() if arr.dtype == bool else
                                          list(map(str, arr)) if arr.dtype == np.float32 else
                                          list(map(repr, arr.tolist())))).encode()
        assert files._numbers_file(arr) == want
