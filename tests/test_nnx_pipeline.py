"""from_source pipelines: batching, ragged fields, transforms, prefetch, resume."""

from __future__ import annotations

import gc
import itertools
import json
import threading
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import arrayfs
from arrayfs.nnx import ArrayRecordSourceConfig, ArrayRecordSourceModule, encode_msgpack, from_source

N = 103
RECORD_BYTES = 16


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("nnx_pipeline")
    fixed = []
    for k, (lo, hi) in enumerate([(0, 50), (50, N)]):
        path = str(root / f"fixed-{k:05d}-of-00002.array_record")
        with arrayfs.ArrayRecordWriter(path) as w:
            for i in range(lo, hi):
                w.write(i.to_bytes(8, "little") + bytes(RECORD_BYTES - 8))
        fixed.append(path)
    ragged = str(root / "ragged.array_record")
    mixed = str(root / "mixed.array_record")
    with arrayfs.ArrayRecordWriter(ragged) as w, arrayfs.ArrayRecordWriter(mixed) as m:
        for i in range(20):
            w.write(bytes(8 + i % 3))
            m.write(encode_msgpack({"label": i, "tokens": np.arange(1 + i % 2, dtype=np.int32),
                                    "image": np.full((2, 2), i, np.uint8)}))
    return {"fixed": str(root / "fixed-*.array_record"), "ragged": ragged, "mixed": mixed}


def cfg(**kw):
    kw.setdefault("shard_index", 0)
    kw.setdefault("shard_count", 1)
    return ArrayRecordSourceConfig(**kw)


def batch_ids(batch) -> list[int]:
    return np.ascontiguousarray(batch["data"][:, :8]).view("<u8").ravel().tolist()


def prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "arrayfs-prefetch"]


def wait_no_prefetch_threads(timeout=10.0) -> bool:
    deadline = time.monotonic() + timeout
    while prefetch_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    return not prefetch_threads()


def test_fixed_size_raw_records_batch_to_2d_uint8(data):
    src = ArrayRecordSourceModule(cfg(num_epochs=2, shuffle_files=True, seed=3), data["fixed"])
    expected = [int(np.asarray(e["data"][:8]).view("<u8")[0])
                for e in ArrayRecordSourceModule(cfg(num_epochs=2, shuffle_files=True, seed=3), data["fixed"])]
    with from_source(src, batch_size=32) as pipe:
        assert len(pipe) == 4  # ceil(103 / 32) per epoch
        batches = list(pipe)
    assert [b["data"].shape for b in batches] == [(32, 16)] * 3 + [(7, 16)] + [(32, 16)] * 3 + [(7, 16)]
    assert batches[0]["data"].dtype == np.uint8 and batches[0]["data"].flags.writeable
    assert [i for b in batches for i in batch_ids(b)] == expected


def test_drop_remainder_gives_full_batches(data):
    with from_source(ArrayRecordSourceModule(cfg(num_epochs=3), data["fixed"]), 25,
                     drop_remainder=True) as pipe:
        assert len(pipe) == 4
        batches = list(pipe)
    assert len(batches) == 12 and {b["data"].shape for b in batches} == {(25, 16)}
    assert batch_ids(batches[4])[0] == 0  # epoch 1 starts afresh; records 100-102 dropped


def test_ragged_fields_name_the_field(data):
    with from_source(ArrayRecordSourceModule(cfg(), data["ragged"]), 4) as pipe:
        with pytest.raises(ValueError, match="'data' is ragged.*collate"):
            next(pipe)
    with from_source(ArrayRecordSourceModule(cfg(decode="msgpack"), data["mixed"]), 4) as pipe:
        with pytest.raises(ValueError, match="'tokens' is ragged"):
            next(pipe)


def test_collate_handles_ragged_fields(data):
    def pad(elements):
        width = max(e["tokens"].size for e in elements)
        return {
            "tokens": np.stack([np.pad(e["tokens"], (0, width - e["tokens"].size)) for e in elements]),
            "label": np.array([int(e["label"]) for e in elements]),
            "image": np.stack([e["image"] for e in elements]),
        }

    with from_source(ArrayRecordSourceModule(cfg(num_epochs=1, decode="msgpack"), data["mixed"]), 8,
                     collate=pad) as pipe:
        batches = list(pipe)
    assert batches[0]["tokens"].shape == (8, 2) and batches[0]["image"].shape == (8, 2, 2)
    assert np.concatenate([b["label"] for b in batches]).tolist() == list(range(20))


def test_default_collate_of_decoded_fields(data):
    with from_source(ArrayRecordSourceModule(cfg(num_epochs=1, decode=lambda b: {"n": len(b)}),
                                             data["ragged"]), 6) as pipe:
        out = np.concatenate([b["n"] for b in pipe])
    assert out.tolist() == [8 + i % 3 for i in range(20)]


def test_transforms_run_in_order(data):
    src = ArrayRecordSourceModule(cfg(num_epochs=1), data["fixed"])
    pipe = from_source(src, 10)
    out = pipe >> (lambda b: {"ids": np.ascontiguousarray(b["data"][:, :8]).view("<u8").ravel()})
    assert out is pipe
    pipe.add(lambda b: {"ids": b["ids"] * 2})
    with pytest.raises(TypeError):
        pipe.add(3)
    with pipe:
        first = next(pipe)
        pipe >> (lambda b: {"ids": b["ids"] + 1})  # discards prefetched batches, loses none
        rest = list(pipe)
    assert first["ids"].tolist() == [2 * i for i in range(10)]
    assert np.concatenate([b["ids"] for b in rest]).tolist() == [2 * i + 1 for i in range(10, N)]


def test_prefetch_overlaps_the_consumer(data):
    built = []
    with from_source(ArrayRecordSourceModule(cfg(), data["fixed"]), 8, prefetch=3) as pipe:
        pipe.add(lambda b: built.append(1) or b)
        next(pipe)
        deadline = time.monotonic() + 10
        while len(built) < 1 + 3 and time.monotonic() < deadline:
            time.sleep(0.005)
        # While the caller holds batch 0, batches 1-3 were built ahead of it.
        assert len(built) >= 4
        assert pipe.get_state()["source"]["position"] == 8


def test_prefetch_thread_stops(data):
    assert wait_no_prefetch_threads()
    pipe = from_source(ArrayRecordSourceModule(cfg(), data["fixed"]), 8, prefetch=2)
    next(pipe)
    assert len(prefetch_threads()) == 1
    pipe.close()
    assert not prefetch_threads()
    pipe.close()
    with pytest.raises(ValueError, match="closed"):
        next(pipe)
    with pytest.raises(ValueError, match="closed"):  # close() closed the source too
        pipe.source[0]

    with from_source(ArrayRecordSourceModule(cfg(), data["fixed"]), 8) as pipe:
        next(pipe)
    assert not prefetch_threads()

    pipe = from_source(ArrayRecordSourceModule(cfg(), data["fixed"]), 8)
    next(pipe)
    del pipe  # garbage collection stops it
    gc.collect()
    assert wait_no_prefetch_threads()

    pipe = from_source(ArrayRecordSourceModule(cfg(num_epochs=1), data["fixed"]), 50)
    assert len(list(pipe)) == 3
    with pytest.raises(StopIteration):
        next(pipe)
    assert wait_no_prefetch_threads()  # the end of the data ends it


def test_errors_surface_in_order_and_keep_the_state(data):
    calls = []

    def fail_third(batch):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("boom")
        return batch

    with from_source(ArrayRecordSourceModule(cfg(), data["fixed"]), 10, prefetch=4) as pipe:
        pipe.add(fail_third)
        next(pipe), next(pipe)
        with pytest.raises(RuntimeError, match="boom"):
            next(pipe)
        assert pipe.get_state()["source"]["position"] == 20
        assert batch_ids(next(pipe)) == list(range(20, 30))  # retried after the failure


def test_device_put(data):
    import jax

    with from_source(ArrayRecordSourceModule(cfg(), data["fixed"]), 8, device_put=True) as pipe:
        batch = next(pipe)
    assert isinstance(batch["data"], jax.Array) and batch["data"].shape == (8, 16)
    device = jax.devices()[0]
    with from_source(ArrayRecordSourceModule(cfg(), data["fixed"]), 8, device_put=device) as pipe:
        assert next(pipe)["data"].devices() == {device}


def test_invalid_arguments(data):
    src = ArrayRecordSourceModule(cfg(), data["fixed"])
    for kw in [{"batch_size": 0}, {"batch_size": 2.5}, {"batch_size": True}, {"prefetch": -1},
               {"collate": 3}, {"drop_remainder": 1}, {"batch_size": N + 1, "drop_remainder": True}]:
        with pytest.raises(ValueError):
            from_source(src, **kw)
    with pytest.raises(TypeError):
        from_source([1, 2, 3])
    src.close()


def test_moving_the_source_directly_is_followed(data):
    with from_source(ArrayRecordSourceModule(cfg(), data["fixed"]), 10, prefetch=3) as pipe:
        next(pipe)
        pipe.source.set_state({**pipe.source.get_state(), "position": 55, "current_index": 55})
        assert batch_ids(next(pipe)) == list(range(55, 65))


def _pipeline_ids(config, paths, batch_size, prefetch, drop, state=None, take=None):
    pipe = from_source(ArrayRecordSourceModule(config, paths), batch_size, prefetch=prefetch,
                       drop_remainder=drop)
    with pipe:
        if state is not None:
            pipe.set_state(json.loads(json.dumps(state)))
        # islice stops before asking for batch `take`: asking consumes it.
        out = [batch_ids(b) for b in itertools.islice(pipe, take)]
        return out, pipe.get_state()


@given(batch_size=st.integers(3, 40), prefetch=st.integers(0, 4), drop=st.booleans(),
       shuffle=st.booleans(), count=st.integers(1, 3), cut=st.floats(0, 1), data_=st.data())
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_resume_at_the_next_unseen_batch(data, batch_size, prefetch, drop, shuffle, count, cut, data_):
    index = data_.draw(st.integers(0, count - 1))
    config = cfg(num_epochs=2, shuffle_files=shuffle, seed=9, shard_index=index, shard_count=count,
                 drop_remainder=drop)
    if drop and N // count < batch_size:
        return
    full, _ = _pipeline_ids(config, data["fixed"], batch_size, prefetch, drop)
    k = round(cut * len(full))
    head, state = _pipeline_ids(config, data["fixed"], batch_size, prefetch, drop, take=k)
    assert len(head) == k
    tail, _ = _pipeline_ids(config, data["fixed"], batch_size, 2, drop, state=state)
    assert head + tail == full


def test_set_state_validation(data):
    with from_source(ArrayRecordSourceModule(cfg(), data["fixed"]), 8) as pipe:
        state = pipe.get_state()
        with pytest.raises(ValueError, match="pipeline state"):
            pipe.set_state(state["source"])
    with from_source(ArrayRecordSourceModule(cfg(shuffle_files=True), data["fixed"]), 8) as pipe:
        with pytest.raises(ValueError, match="shuffle_files"):
            pipe.set_state(state)
