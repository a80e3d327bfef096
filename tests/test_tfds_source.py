"""``arrayfs.tfds.data_source`` and ``decode="tfds"`` against what TFDS's own
``tfds.data_source`` returned for every record of a dataset TFDS built
(``tests/data/tfds/``; no TensorFlow needed here)."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import uuid

import numpy as np
import pytest
from _tfds_fixture import DATA, VERSION_DIR, assert_same, expected, shards

import arrayfs.tfds as tfds_
from arrayfs.encoding import RecordDecodeError, encode_example
from arrayfs.tfds import UnsupportedFeatureError, data_source
from arrayfs.tfds.splits import SplitInfo, parse_split


@pytest.mark.parametrize("split", ["train", "test"])
def test_every_record_is_what_tfds_returned(split):
    want = expected()[split]
    src = data_source(VERSION_DIR, split=split)
    assert len(src) == len(want)
    for i, w in enumerate(want):
        assert_same(src[i], w, f"{split}[{i}]")
    batch = src.__getitems__(np.arange(len(want))[::-1])
    for i, got in enumerate(batch):
        assert_same(got, want[len(want) - 1 - i], f"{split} batched [{i}]")
    for i, got in enumerate(src):
        assert_same(got, want[i], f"{split} iterated [{i}]")
    src.close()


def test_fixture_covers_every_feature_kind():
    src = data_source(VERSION_DIR, split="train")
    classes = {e["class"] for e in src.features.summary()}
    assert classes == {"Image", "ClassLabel", "Text", "Tensor", "Scalar"}
    summary = {e["feature"]: e for e in src.features.summary()}
    assert summary["thumbs"]["sequence"] == [2] and summary["strokes/kind"]["sequence"] == [None]
    assert summary["ragged"]["sequence"] == [None, None] and summary["meta/inner/photo"]["encoding"] == "jpeg"
    assert summary["blob"]["encoding"] == "bytes" and summary["rows16"]["encoding"] == "zlib"
    # Some records have empty sequences and some full ones.
    want = expected()["train"]
    assert any(len(w["ragged"]) and len(w["ragged"][-1]) for w in want) and any(not w["row_sums"] for w in want)


def test_by_name_under_data_dir_and_tfds_data_dir(monkeypatch):
    want = expected()["test"]
    for name in ("arrayfs_digits", "arrayfs_digits:1.0.0"):
        src = data_source(name, split="test", data_dir=DATA)
        assert_same(src[3], want[3])
    monkeypatch.setenv("TFDS_DATA_DIR", DATA)
    assert len(data_source("arrayfs_digits", split="test")) == 16
    with pytest.raises(FileNotFoundError, match="no prepared version"):
        data_source("no_such_dataset", split="train", data_dir=DATA)
    with pytest.raises(FileNotFoundError, match="dataset_info.json"):
        data_source(os.path.join(DATA, "nowhere"), split="train")


def test_split_none_and_split_trees():
    every = data_source(VERSION_DIR)
    assert list(every) == ["train", "test"] and [len(s) for s in every.values()] == [64, 16]
    pair = data_source(VERSION_DIR, split=["train[:10]", "test"])
    assert isinstance(pair, list) and [len(s) for s in pair] == [10, 16]
    tup = data_source(VERSION_DIR, split=("test",))
    assert isinstance(tup, tuple) and len(tup[0]) == 16
    named = data_source(VERSION_DIR, split={"a": "train[-4:]", "b": "test[1shard]"})
    assert [len(named["a"]), len(named["b"])] == [4, 8]
    assert_same(named["a"][0], expected()["train"][60])
    assert_same(named["b"][0], expected()["test"][8])


@pytest.mark.parametrize("spec,rows", [
    ("train[:80%]", [("train", 0, 51)]),  # round(0.8 * 64) = 51
    ("train[80%:]", [("train", 51, 64)]),
    ("train[-10%:]", [("train", 58, 64)]),  # round(-6.4) = -6
    ("train[10:20]+test[-4:]", [("train", 10, 20), ("test", 12, 16)]),
    ("train[1shard:]", [("train", 32, 64)]),
    ("train[:-1shard]", [("train", 0, 32)]),
    ("all", [("train", 0, 64), ("test", 0, 16)]),
    ("test[5:2]", [("test", 5, 5)]),
])
def test_split_slices(spec, rows):
    src = data_source(VERSION_DIR, split=spec)
    want = [r for split, a, b in rows for r in expected()[split][a:b]]
    assert len(src) == len(want)
    for i, w in enumerate(want):
        assert_same(src[i], w, f"{spec}[{i}]")


def test_split_rules_on_a_bigger_split():
    splits = {"train": SplitInfo("train", (400, 350, 250), ("a", "b", "c")), "val": SplitInfo("val", (7,), ("v",))}
    assert parse_split("train[:33%]", splits)[0][1:] == (0, 330)
    assert parse_split("train[:0.5%]", splits)[0][1:] == (0, 5)  # round(5.0)
    assert parse_split("train[:50%](pct1_dropremainder)", splits)[0][1:] == (0, 500)
    assert parse_split("train[2shard]", splits)[0][1:] == (750, 1000)
    assert parse_split("train[1_0:20] + val", splits) == [("train", 10, 20), ("val", 0, 7)]
    with pytest.raises(ValueError, match="fewer than 100"):
        parse_split("val[:50%](pct1_dropremainder)", splits)
    for bad in ("train[:1001]", "nope", "train[5]", "train[:101%]", "all[:5]", "train[a:b]", "train[1:2:3]"):
        with pytest.raises(ValueError):
            parse_split(bad, splits)


def test_pickles_and_reopens(tmp_path):
    src = data_source(VERSION_DIR, split="train[5:9]")
    copy = pickle.loads(pickle.dumps(src))
    assert repr(copy) == repr(src) and len(copy) == 4
    for i in range(4):
        assert_same(copy[i], expected()["train"][5 + i])


def test_grain_map_dataset_and_data_loader():
    import grain
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()  # DataLoader reads absl flags

    src = data_source(VERSION_DIR, split="test")
    ds = grain.MapDataset.source(src).map(lambda el: (el["label"], el["image"]))
    got = [ds[i] for i in range(len(ds))]
    for (label, image), w in zip(got, expected()["test"]):
        assert label == w["label"] and np.array_equal(image, w["image"])
    loader = grain.DataLoader(data_source=src, sampler=grain.samplers.IndexSampler(
        num_records=len(src), shuffle=False, num_epochs=1, shard_options=grain.sharding.NoSharding()),
        operations=[], worker_count=1)
    labels = [el["label"] for el in loader]  # decoded in a worker process: the source was pickled
    assert labels == [w["label"] for w in expected()["test"]]


def test_nnx_source_with_decode_tfds_and_with_the_data_source():
    from arrayfs.nnx import ArrayRecordSourceConfig, ArrayRecordSourceModule

    config = ArrayRecordSourceConfig(decode="tfds", shard_index=0, shard_count=1, num_epochs=1)
    want = expected()["train"]
    module = ArrayRecordSourceModule(config, shards("train"))
    for i, got in enumerate(module):
        assert_same(got, want[i], f"[{i}]")
    module.close()
    src = data_source(VERSION_DIR, split="train")
    module = ArrayRecordSourceModule(config, src.paths)
    assert_same(next(iter(module)), want[0])
    module.close()
    for decode in (None, "tfds"):
        module = ArrayRecordSourceModule(ArrayRecordSourceConfig(decode=decode, shard_index=0, shard_count=1,
                                                                 num_epochs=1), src)
        assert_same(list(module)[7], want[7])


def test_decode_tfds_trains_a_model():
    import jax
    import optax
    from flax import nnx

    from arrayfs.nnx import ArrayRecordSourceConfig, ArrayRecordSourceModule, from_source

    class MLP(nnx.Module):
        def __init__(self, rngs):
            self.hidden = nnx.Linear(64, 32, rngs=rngs)
            self.out = nnx.Linear(32, 10, rngs=rngs)

        def __call__(self, x):
            return self.out(jax.nn.relu(self.hidden(x)))

    def collate(elements):
        image = np.stack([e["image"] for e in elements]).reshape(len(elements), -1) / 255.0
        return {"image": image.astype(np.float32), "label": np.array([e["label"] for e in elements])}

    model = MLP(nnx.Rngs(0))
    graphdef, params = nnx.split(model, nnx.Param)
    tx = optax.adam(0.05)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, image, label):
        def loss_fn(p):
            return optax.softmax_cross_entropy_with_integer_labels(nnx.merge(graphdef, p)(image), label).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    config = ArrayRecordSourceConfig(decode="tfds", num_epochs=15, shuffle_files=True, seed=1,
                                     shard_index=0, shard_count=1)
    pattern = os.path.join(VERSION_DIR, "arrayfs_digits-train.array_record-*")
    losses = []
    with from_source(ArrayRecordSourceModule(config, pattern), 16, drop_remainder=True, collate=collate) as batches:
        for batch in batches:
            params, opt_state, loss = step(params, opt_state, batch["image"], batch["label"])
            losses.append(float(loss))
    assert len(losses) == 15 * 4
    assert np.mean(losses[-4:]) < 0.5 * np.mean(losses[:4])  # it learns


def _copy_fixture(tmp_path, edit_features=None, edit_info=None):
    target = tmp_path / "ds" / "1.0.0"
    shutil.copytree(VERSION_DIR, target)
    for name, edit in (("features.json", edit_features), ("dataset_info.json", edit_info)):
        if edit:
            doc = json.loads((target / name).read_text())
            edit(doc)
            (target / name).write_text(json.dumps(doc))
    return str(target)


def test_unsupported_feature_names_the_feature_and_class(tmp_path):
    def to_video(doc):
        photo = doc["featuresDict"]["features"]["meta"]["featuresDict"]["features"]["inner"]["featuresDict"][
            "features"]["photo"]
        photo["pythonClassName"] = "tensorflow_datasets.core.features.video_feature.Video"

    d = _copy_fixture(tmp_path, to_video)
    with pytest.raises(UnsupportedFeatureError, match=r"'meta/inner/photo' of class .*video_feature\.Video") as e:
        data_source(d, split="train")
    assert e.value.feature == "meta/inner/photo" and e.value.class_name.endswith("Video")

    def nested_image(doc):
        doc["featuresDict"]["features"]["thumbs"] = {
            "pythonClassName": "tensorflow_datasets.core.features.sequence_feature.Sequence",
            "sequence": {"feature": doc["featuresDict"]["features"]["thumbs"], "length": "-1"}}

    with pytest.raises(UnsupportedFeatureError, match="'thumbs'.*Sequence of Sequence"):
        data_source(_copy_fixture(tmp_path / "2", nested_image), split="train")


def test_tfrecord_only_dataset_is_refused(tmp_path):
    d = _copy_fixture(tmp_path, edit_info=lambda doc: doc.update(fileFormat="tfrecord"))
    with pytest.raises(ValueError, match="stored as tfrecord"):
        data_source(d, split="train")


def _legacy(feature: dict) -> dict:
    """The proto-JSON form of a feature in the older ``type``/``content`` form."""
    cls = feature["pythonClassName"]
    if "featuresDict" in feature:
        content = {k: _legacy(v) for k, v in feature["featuresDict"]["features"].items()}
    elif "sequence" in feature:
        content = {"feature": _legacy(feature["sequence"]["feature"]), "length": int(feature["sequence"]["length"])}
        content["length"] = None if content["length"] < 0 else content["length"]
    elif "image" in feature:
        im = feature["image"]
        content = {"shape": [None if int(d) < 0 else int(d) for d in im["shape"]["dimensions"]], "dtype": im["dtype"],
                   "encoding_format": im.get("encodingFormat")}
    elif "tensor" in feature:
        t = feature["tensor"]
        content = {"shape": [None if int(d) < 0 else int(d) for d in t["shape"].get("dimensions", [])],
                   "dtype": t["dtype"], "encoding": t.get("encoding", "none")}
    elif "classLabel" in feature:
        content = {"num_classes": int(feature["classLabel"]["numClasses"])}
    else:
        content = {}
    return {"type": cls, "content": content}


def test_legacy_features_json_decodes_alike(tmp_path):
    d = _copy_fixture(tmp_path, lambda doc: (doc.clear(), doc.update(_legacy(json.loads(
        open(os.path.join(VERSION_DIR, "features.json")).read())))))
    src = data_source(d, split="test")
    for i, w in enumerate(expected()["test"]):
        assert_same(src[i], w, f"legacy [{i}]")


def test_malformed_records_name_the_feature():
    features = tfds_.decoder(VERSION_DIR)
    good = data_source(VERSION_DIR, split="train").records[0]
    from arrayfs.encoding.example import Example

    def edited(fn):
        msg = Example.FromString(good)
        fn(msg.features.feature)
        return msg.SerializeToString()

    cases = [
        (lambda f: f.__delitem__("label"), "'label': missing from the record"),
        (lambda f: f["image"].bytes_list.value.__setitem__(0, b"\x89PNG\r\n\x1a\nnot really"), "'image': not a decodable"),
        (lambda f: f["label"].CopyFrom(type(f["label"])(float_list={"value": [1.0]})), "'label': stored as float_list"),
        (lambda f: f["pixels"].float_list.value.append(0.0) if False else f["pixels"].CopyFrom(
            type(f["pixels"])(float_list={"value": [0.0] * 63})), "'pixels': 63 values do not make shape"),
        (lambda f: f["rows16"].bytes_list.value.__setitem__(0, b"not zlib"), "'rows16': zlib data"),
        (lambda f: f["blob/shape"].int64_list.value.append(3), "'blob'"),
        (lambda f: f["ragged/ragged_row_lengths_0"].int64_list.value.append(99), "'ragged': ragged row lengths"),
        (lambda f: f["ragged/ragged_row_lengths_0"].CopyFrom(type(f["label"])(float_list={"value": [1.0]})),
         "'ragged': stored as float_list"),
        (lambda f: f["moments"].int64_list.value.__setitem__(0, 2**31), "'moments': a value outside the range of int32"),
    ]
    for fn, match in cases:
        with pytest.raises(RecordDecodeError, match=match) as e:
            features(edited(fn))
        assert e.value.decoder == "tfds"
    with pytest.raises(RecordDecodeError, match="example"):
        features(b"\xff\xff")
    assert features(encode_example({"unrelated": 1}) + good)["label"] == expected()["train"][0]["label"]


def _two_int_dataset(root, records: list[bytes]) -> tuple[str, list[str]]:
    """A TFDS dataset of int64 features ``a`` and ``b``, split ``train`` in
    two shards of half of ``records`` each: its directory and shards."""
    from arrayfs.writer import ArrayRecordWriter

    d = os.path.join(root, "two", "1.0.0")
    os.makedirs(d)
    half = len(records) // 2
    paths = [os.path.join(d, f"two-train.array_record-{i:05d}-of-00002") for i in range(2)]
    for path, part in zip(paths, (records[:half], records[half:])):
        with ArrayRecordWriter(path) as w:
            for r in part:
                w.write(r)
    with open(os.path.join(d, "dataset_info.json"), "w") as f:
        json.dump({"name": "two", "version": "1.0.0", "fileFormat": "array_record",
                   "splits": [{"name": "train", "shardLengths": [str(half), str(len(records) - half)]}]}, f)
    p = "tensorflow_datasets.core.features."
    tensor = {"pythonClassName": p + "tensor_feature.Tensor", "tensor": {"dtype": "int64", "shape": {}}}
    with open(os.path.join(d, "features.json"), "w") as f:
        json.dump({"pythonClassName": p + "features_dict.FeaturesDict",
                   "featuresDict": {"features": {"a": tensor, "b": tensor}}}, f)
    return d, paths


def test_decode_errors_name_the_record_its_shard_and_position(tmp_path):
    records = [encode_example({"a": k, "b": k}) for k in range(6)]
    records[2] = encode_example({"a": 2, "b": [1.0]})  # shard 0, position 2: 'b' is a float_list
    records[4] = encode_example({"a": [1.0], "b": 4})  # shard 1, position 1: 'a' is a float_list
    d, paths = _two_int_dataset(str(tmp_path), records)
    src = data_source(d, split="train")

    def error(fn) -> RecordDecodeError:
        with pytest.raises(RecordDecodeError) as e:
            fn()
        return e.value

    def where(e: RecordDecodeError) -> tuple:
        return e.index, e.path, e.position, e.decoder, e.reason.split(":")[0]

    first = error(lambda: src[2])
    assert where(first) == (2, paths[0], 2, "tfds", "feature 'b'")
    assert str(first).startswith(f"record 2 ({paths[0]} record 2): cannot decode record as tfds: feature 'b'")
    # A batch names its first bad record in batch order, though feature by
    # feature record 4's 'a' is met before record 2's 'b'.
    assert where(error(lambda: src.__getitems__([0, 2, 4]))) == where(first)
    assert where(error(lambda: src.__getitems__(np.array([5, 4, 2])))) == (4, paths[1], 1, "tfds", "feature 'a'")
    assert where(error(lambda: list(src))) == where(first)
    assert [r["a"] for r in src.__getitems__([0, 1, 3, 5])] == [0, 1, 3, 5]
    # The index is the split's, the position the shard file's.
    assert where(error(lambda: data_source(d, split="train[4:]")[0])) == (0, paths[1], 1, "tfds", "feature 'a'")
    with pytest.raises(RecordDecodeError, match="^cannot decode record as tfds: feature 'b'"):
        src.features.decode_batch([records[0], records[2], records[4]])
    back = pickle.loads(pickle.dumps(first))
    assert type(back) is RecordDecodeError and str(back) == str(first) and back.__dict__ == first.__dict__


def test_decoder_from_a_shard_path_and_its_extras():
    features = tfds_.decoder(shards("test")[0])
    assert features.class_names()["label"][:3] == ["zero", "one", "two"]
    assert features.class_names()["strokes/kind"] == ["0", "1", "2"]
    copy = pickle.loads(pickle.dumps(features))
    record = data_source(VERSION_DIR, split="test").records[2]
    assert_same(copy(record), expected()["test"][2])
    shown = features.decode_for_display(record)
    assert shown["image"].startswith(b"\x89PNG") and all(t.startswith(b"\x89PNG") for t in shown["thumbs"])
    assert shown["label"] == expected()["test"][2]["label"]


@pytest.fixture()
def s3_dataset(s3):
    name = s3.make_bucket(f"arrayfs-tfds-{uuid.uuid4().hex[:8]}")
    fs = s3.filesystem()
    for file in os.listdir(VERSION_DIR):
        fs.put(os.path.join(VERSION_DIR, file), f"{name}/arrayfs_digits/1.0.0/{file}")
    return f"s3://{name}", {"endpoint_url": s3.endpoint}


def test_object_storage(s3_dataset):
    bucket, opts = s3_dataset
    src = data_source(f"{bucket}/arrayfs_digits/1.0.0", split="test[4:12]", storage_options=opts)
    for i, w in enumerate(expected()["test"][4:12]):
        assert_same(src[i], w, f"s3 [{i}]")
    named = data_source("arrayfs_digits", split="train", data_dir=bucket, storage_options=opts)
    assert_same(named.__getitems__([63])[0], expected()["train"][63])
    features = tfds_.decoder(f"{bucket}/arrayfs_digits/1.0.0/arrayfs_digits-test.array_record-00000-of-00002",
                             storage_options=opts)
    assert features.class_names()["label"][9] == "nine"


def _tensor_features(**tensors):
    """A TfdsFeatures of float32 Tensors ``{name: shape}``."""
    from arrayfs.tfds import TfdsFeatures
    from arrayfs.tfds.features import parse_features_json

    p = "tensorflow_datasets.core.features."
    doc = {"pythonClassName": p + "features_dict.FeaturesDict", "featuresDict": {"features": {
        name: {"pythonClassName": p + "tensor_feature.Tensor",
               "tensor": {"dtype": "float32", "shape": {"dimensions": [str(d) for d in shape]}}}
        for name, shape in tensors.items()}}}
    return TfdsFeatures(parse_features_json(doc))


def test_float_list_written_twice_decodes_all_its_values():
    # protobuf merges repeated occurrences of a message field: Feature
    # {float_list {1.0} float_list {2.0}} holds [1.0, 2.0], as TFDS's parse has it.
    import struct

    def ld(field, payload):
        return bytes([field << 3 | 2, len(payload)]) + payload

    def record(key, *runs):
        feature = b"".join(ld(2, ld(1, struct.pack(f"<{len(r)}f", *r))) for r in runs)
        return ld(1, ld(1, ld(1, key) + ld(2, feature)))

    features = _tensor_features(v=[-1])
    twice = record(b"v", [1.0], [2.0, 3.0])
    assert features(twice)["v"].tolist() == [1.0, 2.0, 3.0]
    assert [b["v"].tolist() for b in features.decode_batch([twice, twice])] == [[1.0, 2.0, 3.0]] * 2
    scalar = _tensor_features(s=[])
    with pytest.raises(RecordDecodeError, match="'s': 2 values for a scalar"):
        scalar(record(b"s", [1.0], [2.0]))
    assert scalar(record(b"s", [2.5]))["s"] == 2.5


@pytest.mark.parametrize("tree,what", [
    ({"pythonClassName": "Sequence", "sequence": {}}, "a Sequence without its feature"),
    ({"pythonClassName": "Sequence", "sequence": {"feature": [1]}}, "a list where a feature object belongs"),
    ({"pythonClassName": "FeaturesDict", "featuresDict": {"features": [1]}}, "its features are not an object"),
    ({"pythonClassName": "Tensor", "tensor": "x"}, "its content is a str"),
    ({"pythonClassName": "Tensor", "tensor": {"dtype": "int64", "shape": {"dimensions": [{}]}}}, "a dimension"),
    ({"pythonClassName": "Tensor", "tensor": {"dtype": "int64", "shape": {"dimensions": 3}}}, "a shape"),
    ({"pythonClassName": "ClassLabel", "classLabel": {"numClasses": [3]}}, "the number of classes"),
    ({"pythonClassName": "Sequence", "sequence": {"length": "x", "feature": {}}}, "the length"),
    ({"pythonClassName": 3}, "a class name that is a int"),
])
def test_malformed_features_json_names_the_feature_and_what_is_wrong(tree, what):
    from arrayfs.tfds.features import parse_features_json

    doc = {"pythonClassName": "FeaturesDict", "featuresDict": {"features": {"f": tree}}}
    with pytest.raises(UnsupportedFeatureError, match="malformed") as e:
        parse_features_json(doc)
    assert e.value.feature == "f" and what in str(e.value)


def test_zlib_tensors_decompress_only_as_far_as_allowed(monkeypatch):
    # A zlib bomb is a decode error naming the feature, never an allocation.
    import zlib

    import arrayfs.tfds.decode as decode
    from arrayfs.tfds import TfdsFeatures
    from arrayfs.tfds.features import parse_features_json

    def zlib_features(shape):
        p = "tensorflow_datasets.core.features."
        return TfdsFeatures(parse_features_json({"pythonClassName": p + "features_dict.FeaturesDict", "featuresDict": {
            "features": {"t": {"pythonClassName": p + "tensor_feature.Tensor", "tensor": {
                "dtype": "uint8", "encoding": "zlib", "shape": {"dimensions": [str(d) for d in shape]}}}}}}))

    record = encode_example({"t": zlib.compress(bytes(1000), 9)})
    assert zlib_features([1000])(record)["t"].tolist() == [0] * 1000
    with pytest.raises(RecordDecodeError, match="'t': zlib data decompresses to more than 999 bytes"):
        zlib_features([999])(record)
    assert zlib_features([-1])(record)["t"].size == 1000
    monkeypatch.setattr(decode, "MAX_DECOMPRESSED_BYTES", 999)
    with pytest.raises(RecordDecodeError, match="'t': zlib data decompresses to more than 999 bytes"):
        zlib_features([-1])(record)
    with pytest.raises(RecordDecodeError, match="'t': zlib data does not decompress"):
        zlib_features([-1])(encode_example({"t": zlib.compress(bytes(10))[:-3]}))
