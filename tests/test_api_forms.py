"""The API forms users copy from datarax's and array_record's documentation,
written here as those documents write them (paths aside)."""

from __future__ import annotations

import glob
import json
import os

import numpy as np
import pytest
from array_record.python import array_record_data_source as google_data_source
from array_record.python import array_record_module as google_module
from flax import nnx

import arrayfs
from arrayfs import ArrayRecordSourceConfig, ArrayRecordSourceModule
from arrayfs.compat import array_record_data_source
from arrayfs.nnx import Pipeline

N = 100


@pytest.fixture(scope="module")
def path(tmp_path_factory):
    """One file of N 16-byte records, record i starting with i (8 bytes LE)."""
    p = str(tmp_path_factory.mktemp("forms") / "file.array_record")
    with arrayfs.ArrayRecordWriter(p) as w:
        for i in range(N):
            w.write(i.to_bytes(8, "little") + bytes(8))
    return p


@pytest.fixture(scope="module")
def docs_files(tmp_path_factory):
    """array_record's index.rst example: 5 files of 100 records, Google's writer."""
    root = tmp_path_factory.mktemp("docs_files")
    num_files = 5
    for i in range(num_files):
        writer = google_module.ArrayRecordWriter(
            str(root / f"output.array_record-{i:05d}-of-{num_files:05d}"), "group_size:1")
        for j in range(100):
            writer.write(f"File {i:05d}, Record {j}".encode("utf-8"))
        writer.close()
    return str(root)


def first_ids(batch) -> list[int]:
    return np.ascontiguousarray(batch["data"][:, :8]).view("<u8").ravel().tolist()


# -- datarax -------------------------------------------------------------------


def test_datarax_guide_source_and_pipeline(path):
    # datarax docs/user_guide/data_sources.md, "ArrayRecordSourceModule".
    config = ArrayRecordSourceConfig()
    source = ArrayRecordSourceModule(config, path)

    pipeline = Pipeline(source=source, stages=[], batch_size=32, rngs=nnx.Rngs(0))
    with pipeline:
        batch = next(pipeline)
        assert batch["data"].shape == (32, 16)
        assert first_ids(batch) == list(range(32))  # shuffle_files=False: global order
        assert [len(b["data"]) for b in (next(pipeline), next(pipeline), next(pipeline))] == [32, 32, 4]
        assert first_ids(next(pipeline)) == list(range(32))  # num_epochs=-1 goes on
        assert isinstance(pipeline.rngs, nnx.Rngs) and pipeline.stages == []


def test_source_with_no_config_has_dataraxs_defaults(path):
    import jax

    source = ArrayRecordSourceModule(path)
    c = source.config
    assert (c.seed, c.num_epochs, c.shuffle_files) == (42, -1, False)
    assert (c.shard_index, c.shard_count) == (jax.process_index(), jax.process_count())
    assert [int(next(source)["data"][0]) for _ in range(3)] == [0, 1, 2]
    source.close()
    with ArrayRecordSourceModule(paths=path) as source:
        assert source.config.seed == 42 and len(source) == N
    with pytest.raises(ValueError, match="no paths"):
        ArrayRecordSourceModule()


def test_datarax_quickref_forms(path):
    # datarax docs/examples/integration/arrayrecord/arrayrecord-quickref.md
    source = ArrayRecordSourceModule(
        ArrayRecordSourceConfig(seed=42),
        paths=path,
        rngs=nnx.Rngs(0),
    )
    assert len(source) == N and isinstance(source.rngs, nnx.Rngs)
    source.close()
    source = ArrayRecordSourceModule(
        ArrayRecordSourceConfig(num_epochs=10),
        paths=[
            path,
            path,
        ],
        rngs=nnx.Rngs(0),
    )
    assert len(source) == 2 * N
    source.close()
    config = ArrayRecordSourceConfig(num_epochs=10)
    source = ArrayRecordSourceModule(config, paths=path, rngs=nnx.Rngs(0))
    pipeline = Pipeline(source=source, stages=[], batch_size=32, rngs=nnx.Rngs(0))
    with pipeline:
        assert sum(len(b["data"]) for b in pipeline) == 10 * N


class Normalize(nnx.Module):
    """A datarax-style stage: an NNX module called on each batch."""

    def __init__(self, scale: float):
        self.scale = nnx.Param(np.float32(scale))

    def __call__(self, batch):
        return {"x": batch["x"] * self.scale.get_value()}


def test_stages_are_callables_or_nnx_modules_applied_in_order(path):
    def to_float(batch):
        return {"x": np.asarray(first_ids(batch), np.float32)}

    def plus_one(batch):
        return {"x": batch["x"] + 1}

    source = ArrayRecordSourceModule(ArrayRecordSourceConfig(num_epochs=1), path)
    transform = Normalize(2.0)
    # datarax docs/batching/index.md: "Stages receive already-batched data".
    pipeline = Pipeline(source=source, stages=[to_float, transform, plus_one], batch_size=32,
                        rngs=nnx.Rngs(0))
    with pipeline:
        assert pipeline.stages == [to_float, transform, plus_one]
        out = np.concatenate([b["x"] for b in pipeline])
    assert out.tolist() == [2.0 * i + 1 for i in range(N)]
    with pytest.raises(TypeError, match=r"stages\[1\]"):
        Pipeline(source=ArrayRecordSourceModule(ArrayRecordSourceConfig(), path),
                 stages=[to_float, 3], batch_size=32, rngs=nnx.Rngs(0))
    with pytest.raises(TypeError):
        Pipeline(ArrayRecordSourceModule(ArrayRecordSourceConfig(), path), 32)  # keywords only


def test_state_has_dataraxs_key_names(path):
    with ArrayRecordSourceModule(ArrayRecordSourceConfig(shuffle_files=True), path) as source:
        for _ in range(7):
            next(source)
        state = source.get_state()
        assert state["current_index"] == 7 and state["current_epoch"] == 0
        expected = next(source)
    # A state carrying only datarax's names restores too.
    datarax_named = {k: v for k, v in state.items() if k not in ("epoch", "position")}
    with ArrayRecordSourceModule(ArrayRecordSourceConfig(shuffle_files=True), path) as source:
        source.set_state(json.loads(json.dumps(datarax_named)))
        assert np.array_equal(next(source)["data"], expected["data"])
    pipeline = Pipeline(source=ArrayRecordSourceModule(ArrayRecordSourceConfig(), path), stages=[],
                        batch_size=32, rngs=nnx.Rngs(0))
    with pipeline:
        next(pipeline)
        inner = pipeline.get_state()["source"]
        assert (inner["current_index"], inner["current_epoch"]) == (32, 0)


# -- array_record ---------------------------------------------------------------


def test_array_record_index_example_on_the_compat_source(docs_files, monkeypatch):
    # array_record docs/index.rst, with arrayfs's compat module in place of the wheel's.
    monkeypatch.chdir(docs_files)
    with array_record_data_source.ArrayRecordDataSource(glob.glob("output.array_record*")) as ds:
        total_records = len(ds)
        record_1000 = ds[150]
        batch = ds.__getitems__([10, 100, 200])
        listed = ds[[10, 50, 100]]
    with google_data_source.ArrayRecordDataSource(glob.glob("output.array_record*")) as google:
        assert total_records == len(google) == 500
        assert record_1000 == google[150]
        assert batch == google.__getitems__([10, 100, 200])
        assert isinstance(listed, list) and listed == google.__getitems__([10, 50, 100])
    assert listed[1].startswith(b"File ") and len(listed) == 3


def test_list_index_on_both_data_sources(docs_files):
    files = sorted(glob.glob(os.path.join(docs_files, "output.array_record*")))
    with google_data_source.ArrayRecordDataSource(files) as google:
        expected = google.__getitems__([10, 50, 100])
    for ds in (arrayfs.ArrayRecordDataSource(files), array_record_data_source.ArrayRecordDataSource(files)):
        with ds:
            assert ds[[10, 50, 100]] == expected
            assert ds[(10, 50, 100)] == expected
            assert ds[np.array([10, 50, 100])] == expected
            assert ds[[]] == []


@pytest.mark.parametrize("reader_options", [
    {"readahead_buffer_size": "0", "index_storage_option": "in_memory"},  # as Grain passes them
    {"readahead_buffer_size": "64MB"},  # sizes as array_record's docs write them
    {"readahead_buffer_size": "16MB", "max_parallelism": "1"},
    {"readahead_buffer_size": "4MB", "index_storage_option": "in_memory"},
    {"readahead_buffer_size": "64M"},
])
def test_reader_options_dicts(docs_files, reader_options):
    files = sorted(glob.glob(os.path.join(docs_files, "output.array_record*")))
    ds = array_record_data_source.ArrayRecordDataSource(files, reader_options=reader_options)
    with ds:
        assert ds[[0, 499]] == [b"File 00000, Record 0", b"File 00004, Record 99"]


@pytest.mark.parametrize("value", ["64mb", "64MiB", "MB", "64MBB", "2GB"])
def test_reader_option_sizes_that_mean_nothing_are_refused(docs_files, value):
    files = sorted(glob.glob(os.path.join(docs_files, "output.array_record*")))
    with pytest.raises(ValueError, match="readahead_buffer_size: invalid value"):
        array_record_data_source.ArrayRecordDataSource(
            files, reader_options={"readahead_buffer_size": value})
