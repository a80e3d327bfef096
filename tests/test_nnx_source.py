"""ArrayRecordSourceModule on real shards written by arrayfs.ArrayRecordWriter.

Each record carries its global index (8 bytes, little-endian) so a sequence
of elements can be checked against the expected order exactly.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from flax import nnx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import arrayfs
from arrayfs.nnx import ArrayRecordSourceConfig, ArrayRecordSourceModule, IterationState
from arrayfs.nnx.shuffle import epoch_permutation

RECORD_BYTES = 16


def write_shards(directory, counts, options="group_size:1,zstd:3"):
    """Shards holding records 0..sum(counts)-1 in global order; returns the glob."""
    os.makedirs(directory, exist_ok=True)
    first = 0
    for k, count in enumerate(counts):
        path = os.path.join(directory, f"data-{k:05d}-of-{len(counts):05d}.array_record")
        with arrayfs.ArrayRecordWriter(path, options) as w:
            for i in range(first, first + count):
                w.write(i.to_bytes(8, "little") + (3 * i % 256).to_bytes(1, "little") * 8)
        first += count
    return os.path.join(directory, "data-*.array_record")


def ids(elements) -> list[int]:
    return [int(np.asarray(e["data"][:8]).view("<u8")[0]) for e in elements]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("nnx_source")
    return {
        "three": write_shards(root / "three", [40, 1, 60]),  # N = 101
        "one": write_shards(root / "one", [300], options="group_size:16,zstd:3").replace("*", "00000-of-00001"),
        "other": write_shards(root / "other", [101]),
    }


def cfg(**kw):
    kw.setdefault("shard_index", 0)
    kw.setdefault("shard_count", 1)
    return ArrayRecordSourceConfig(**kw)


def test_unshuffled_epochs_then_stop(data):
    with ArrayRecordSourceModule(cfg(num_epochs=2), data["three"]) as src:
        assert len(src) == src.num_records == 101
        out = ids(src)
        assert out == list(range(101)) * 2
        with pytest.raises(StopIteration):
            next(src)
        assert src.get_state()["epoch"] == 1 and src.get_state()["position"] == 101


def test_shuffled_epochs_are_fresh_permutations(data):
    with ArrayRecordSourceModule(cfg(num_epochs=3, shuffle_files=True, seed=7), data["three"]) as src:
        out = ids(src)
    epochs = [out[i * 101:(i + 1) * 101] for i in range(3)]
    for e, order in enumerate(epochs):
        assert sorted(order) == list(range(101))
        assert order == epoch_permutation(101, 7, e)(np.arange(101)).tolist()
    assert epochs[0] != epochs[1] != epochs[2]


def test_infinite_epochs(data):
    with ArrayRecordSourceModule(cfg(shuffle_files=True), data["three"]) as src:
        out = [next(src) for _ in range(101 * 5 + 3)]
        assert src.epoch.get_value() == 5 and src.position.get_value() == 3
    assert sorted(ids(out[101 * 4: 101 * 5])) == list(range(101))


def test_getitem_is_the_current_epochs_order(data):
    with ArrayRecordSourceModule(cfg(shuffle_files=True, seed=3), data["three"]) as src:
        order = epoch_permutation(101, 3, 0)(np.arange(101)).tolist()
        assert ids([src[0], src[50], src[-1]]) == [order[0], order[50], order[-1]]
        with pytest.raises(IndexError):
            src[101]
        with pytest.raises(IndexError):
            src[-102]
        with pytest.raises(TypeError):
            src[1.0]
        assert src.position.get_value() == 0  # indexing does not move
        for _ in range(101):
            next(src)
        # Epoch 0 is done: "current" is the epoch the next element comes from.
        assert ids([src[0]]) == [epoch_permutation(101, 3, 1)(0)]
        next(src)
        assert ids([src[0]]) == [epoch_permutation(101, 3, 1)(0)]


def test_paths_forms(data):
    one = data["one"]
    for paths, expected in [
        ([one], list(range(300))),
        (f"{one}[10:20]", list(range(10, 20))),
        ([f"{one}[0:5]", f"{one}[295:300]"], [0, 1, 2, 3, 4, 295, 296, 297, 298, 299]),
    ]:
        with ArrayRecordSourceModule(cfg(num_epochs=1), paths) as src:
            assert ids(src) == expected


def test_open_data_source_is_used_and_not_closed(data):
    ds = arrayfs.ArrayRecordDataSource(data["three"])
    src = ArrayRecordSourceModule(cfg(num_epochs=1), ds)
    assert src.dataset is ds
    src.close()
    assert len(ds[5]) == RECORD_BYTES  # still open
    with pytest.raises(ValueError, match="closed"):
        next(src)
    ds.close()


def test_close_is_idempotent_and_reads_fail(data):
    src = ArrayRecordSourceModule(cfg(), data["three"])
    src.close()
    src.close()
    with pytest.raises(ValueError, match="closed"):
        src[0]


def test_decoders_apply(data, tmp_path):
    path = str(tmp_path / "mp.array_record")
    with arrayfs.ArrayRecordWriter(path) as w:
        for i in range(5):
            w.write(arrayfs.nnx.encode_msgpack({"x": np.full((2,), i, np.float32), "y": i}))
    with ArrayRecordSourceModule(cfg(num_epochs=1, decode="msgpack"), path) as src:
        out = list(src)
    assert [int(e["y"]) for e in out] == list(range(5))
    assert out[3]["x"].dtype == np.float32 and out[3]["x"].tolist() == [3.0, 3.0]


def test_shard_defaults_come_from_jax(data):
    import jax

    with ArrayRecordSourceModule(ArrayRecordSourceConfig(), data["three"]) as src:
        assert src.config.shard_index == jax.process_index()
        assert src.config.shard_count == jax.process_count()


def test_empty_host_slice_is_an_error(data, tmp_path):
    path = str(tmp_path / "two.array_record")
    with arrayfs.ArrayRecordWriter(path) as w:
        w.write(b"a")
        w.write(b"b")
    with pytest.raises(ValueError, match="gets no records"):
        ArrayRecordSourceModule(cfg(shard_index=2, shard_count=3), path)
    with pytest.raises(ValueError, match="gets no records"):
        ArrayRecordSourceModule(cfg(shard_index=0, shard_count=3, drop_remainder=True), path)
    with pytest.raises(ValueError, match="ArrayRecordSourceConfig"):
        ArrayRecordSourceModule({"seed": 1}, path)


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("count", [1, 2, 3, 7])
@pytest.mark.parametrize("drop", [False, True])
def test_hosts_are_disjoint_and_cover_each_epoch(data, shuffle, count, drop):
    per_host = []
    for i in range(count):
        c = cfg(num_epochs=2, shuffle_files=shuffle, shard_index=i, shard_count=count,
                drop_remainder=drop, seed=11)
        with ArrayRecordSourceModule(c, data["three"]) as src:
            per_host.append((len(src), ids(src)))
    lengths = [n for n, _ in per_host]
    if drop:
        assert set(lengths) == {101 // count}
    else:
        assert sum(lengths) == 101
    for epoch in range(2):
        parts = [out[epoch * n:(epoch + 1) * n] for n, out in per_host]
        joined = [x for p in parts for x in p]
        assert len(set(joined)) == len(joined)  # disjoint
        if not drop:
            assert sorted(joined) == list(range(101))  # union is the epoch
        # The hosts' slices, in host order, are the epoch's global order.
        expected = epoch_permutation(101, 11, epoch)(np.arange(101)).tolist() if shuffle else list(range(101))
        assert joined == expected[:len(joined)]


# -- state -------------------------------------------------------------------------


def test_state_is_small_json_and_does_not_grow(data):
    with ArrayRecordSourceModule(cfg(shuffle_files=True), data["three"]) as a, \
            ArrayRecordSourceModule(cfg(shuffle_files=True), data["one"]) as b:
        for _ in range(7):
            next(a)
            next(b)
        sa, sb = json.dumps(a.get_state()), json.dumps(b.get_state())
        assert len(sa) == len(sb) < 400
        assert json.loads(sa) == a.get_state()


def test_nnx_state_holds_the_position(data):
    with ArrayRecordSourceModule(cfg(shuffle_files=True), data["three"]) as src:
        for _ in range(5):
            next(src)
        state = nnx.state(src, IterationState)
        assert state["position"].get_value() == 5 and state["epoch"].get_value() == 0
        graphdef, full = nnx.split(src)
        clone = nnx.merge(graphdef, full)
        assert clone.position.get_value() == 5


@pytest.mark.parametrize("shuffle", [False, True])
def test_nnx_state_with_array_leaves_restores(data, shuffle):
    """np.load, jax.tree.map(jnp.asarray, ...) and broadcast_one_to_all give
    0-d array leaves; they restore like ints (they broke the shuffle)."""
    import jax
    import jax.numpy as jnp

    from arrayfs.nnx import from_source

    config = cfg(num_epochs=2, shuffle_files=shuffle, seed=6)
    with ArrayRecordSourceModule(config, data["three"]) as src:
        for _ in range(7):
            next(src)
        saved = jax.tree.map(np.asarray, nnx.state(src, IterationState))
        state = src.get_state()
        expected = ids(src)
    for leaves in (saved, jax.tree.map(jnp.asarray, saved)):
        with ArrayRecordSourceModule(config, data["three"]) as fresh:
            nnx.update(fresh, leaves)
            assert fresh.get_state() == state
            assert ids([fresh[7]]) == expected[:1]
            assert fresh.global_indices(leaves["epoch"].get_value(), 7, 2).tolist() == expected[:2]
            assert ids(fresh) == expected
        with from_source(ArrayRecordSourceModule(config, data["three"]), 10) as pipe:
            nnx.update(pipe.source, leaves)
            got = [x for batch in pipe
                   for x in np.ascontiguousarray(batch["data"][:, :8]).view("<u8").ravel().tolist()]
            assert got == expected
    with ArrayRecordSourceModule(config, data["three"]) as bad:
        nnx.update(bad, {"epoch": IterationState(np.float64(0.0))})
        with pytest.raises(ValueError, match="epoch must be an integer"):
            next(bad)


def test_set_state_refuses_a_different_order(data, tmp_path):
    with ArrayRecordSourceModule(cfg(shuffle_files=True, seed=1), data["three"]) as src:
        next(src)
        state = src.get_state()
    cases = [
        (cfg(shuffle_files=True, seed=2), data["three"], "seed"),
        (cfg(shuffle_files=False, seed=1), data["three"], "shuffle_files"),
        (cfg(shuffle_files=True, seed=1, drop_remainder=True), data["three"], "drop_remainder"),
        (cfg(shuffle_files=True, seed=1), data["other"], "dataset"),  # one shard of 101, not three
        (cfg(shuffle_files=True, seed=1), f"{data['one']}[0:101]", "dataset"),
    ]
    for config, paths, field in cases:
        with ArrayRecordSourceModule(config, paths) as other:
            with pytest.raises(ValueError, match=field):
                other.set_state(state)
    # Another shard_count is not in the list: it restores (tests/test_elastic_resume.py).
    with ArrayRecordSourceModule(cfg(shuffle_files=True, seed=1), data["three"]) as same:
        for bad in [{}, [], {**state, "format": "x"}, {**state, "position": -1},
                    {**state, "position": 102}, {**state, "epoch": "0"},
                    {**state, "current_index": 3}, {**state, "shard_count": 0},
                    {**state, "resized_from": [[2]]}, {**state, "resized_from": [[2, 60]]},
                    {**state, "resized_from": 7}]:
            with pytest.raises(ValueError):
                same.set_state(bad)


def test_seed_does_not_matter_unshuffled_and_data_may_move(data, tmp_path):
    with ArrayRecordSourceModule(cfg(seed=1), data["three"]) as src:
        next(src)
        state = src.get_state()
    moved = tmp_path / "moved"
    os.makedirs(moved)
    for name in os.listdir(os.path.dirname(data["three"])):
        os.link(os.path.join(os.path.dirname(data["three"]), name), moved / name)
    with ArrayRecordSourceModule(cfg(seed=2), str(moved / "data-*.array_record")) as src:
        src.set_state(state)
        assert ids([next(src)]) == [1]


class _Records:
    """A minimal open data source, as the docs allow: no ``shards``, no ``__repr__``."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return int(i).to_bytes(8, "little") + bytes(8)


class _NamedRecords(_Records):
    def __repr__(self):
        return f"NamedRecords({self.n})"


def test_checkpoint_over_an_open_source_without_repr_restores(data):
    config = cfg(num_epochs=1, shuffle_files=True, seed=4)
    with ArrayRecordSourceModule(config, _Records(101)) as src:
        for _ in range(10):
            next(src)
        state = json.loads(json.dumps(src.get_state()))
        expected = ids(src)
    with ArrayRecordSourceModule(config, _Records(101)) as fresh:  # a new object: a new address
        fresh.set_state(state)
        assert ids(fresh) == expected
    with ArrayRecordSourceModule(config, _Records(102)) as longer:
        with pytest.raises(ValueError, match="dataset"):
            longer.set_state(state)
    with ArrayRecordSourceModule(config, _NamedRecords(101)) as other_class:
        with pytest.raises(ValueError, match="dataset"):
            other_class.set_state(state)


def test_dataset_fingerprints_are_unchanged(data):
    """Checkpoints of earlier versions must keep restoring: the fingerprint of
    shards and of sources with their own ``repr`` is the same as it was."""
    with ArrayRecordSourceModule(cfg(), data["three"]) as src:
        # data-0000k-of-00003.array_record: 40, 1 and 60 records.
        assert src.get_state()["dataset"] == \
            "41129922a898585969591adf3994066df0c747564dcdfcaa8483d4a41ccc93a6"
    with ArrayRecordSourceModule(cfg(), _NamedRecords(7)) as src:
        ident = json.dumps(["NamedRecords(7)", 7]).encode()
        assert src.get_state()["dataset"] == hashlib.sha256(ident).hexdigest()


def test_same_named_shards_in_different_directories_are_told_apart(tmp_path):
    """en/train and de/train: the fingerprint holds the paths below the
    shards' common directory, so a swapped list is refused, while the whole
    tree may still move; a checkpoint of the earlier fingerprint (file names
    only) still restores."""
    for lang, first in (("en", 0), ("de", 1000)):
        os.makedirs(tmp_path / "a" / lang)
        with arrayfs.ArrayRecordWriter(str(tmp_path / "a" / lang / "train.array_record")) as w:
            for i in range(first, first + 10):
                w.write(i.to_bytes(8, "little") + bytes(8))

    def shards(root, langs):
        return [str(root / lang / "train.array_record") for lang in langs]

    config = cfg(num_epochs=1)
    with ArrayRecordSourceModule(config, shards(tmp_path / "a", ["en", "de"])) as src:
        for _ in range(3):
            next(src)
        state = json.loads(json.dumps(src.get_state()))
        expected = ids(src)
    with ArrayRecordSourceModule(config, shards(tmp_path / "a", ["de", "en"])) as swapped:
        with pytest.raises(ValueError, match="dataset"):
            swapped.set_state(state)
    os.rename(tmp_path / "a", tmp_path / "b")
    with ArrayRecordSourceModule(config, shards(tmp_path / "b", ["en", "de"])) as moved:
        moved.set_state(state)
        assert ids(moved) == expected
    ident = json.dumps([["train.array_record", 0, 10], ["train.array_record", 0, 10]])
    old = {**state, "dataset": hashlib.sha256(ident.encode()).hexdigest()}
    with ArrayRecordSourceModule(config, shards(tmp_path / "b", ["en", "de"])) as src:
        src.set_state(old)
        assert ids(src) == expected


def _run(config, paths, k=None, state=None, limit=10_000):
    """Elements from a fresh source: restore ``state``, then take ``k`` (or all)."""
    with ArrayRecordSourceModule(config, paths) as src:
        if state is not None:
            src.set_state(json.loads(json.dumps(state)))
        out = []
        for el in src:
            out.append(el)
            if len(out) == k or len(out) >= limit:
                break
        return ids(out), src.get_state()


@given(n=st.integers(1, 120), epochs=st.integers(1, 3), shuffle=st.booleans(),
       count=st.integers(1, 4), drop=st.booleans(), seed=st.integers(0, 2**64 - 1),
       cut=st.floats(0, 1), data_=st.data())
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_exact_resume_anywhere(data, n, epochs, shuffle, count, drop, seed, cut, data_):
    paths = f"{data['one']}[0:{n}]"
    index = data_.draw(st.integers(0, count - 1))
    if (n // count if drop else len(range(index, n, count))) == 0 or (drop and n < count):
        return  # that host would get nothing: refused at construction (tested above)
    config = cfg(num_epochs=epochs, shuffle_files=shuffle, shard_index=index, shard_count=count,
                 drop_remainder=drop, seed=seed)
    full, _ = _run(config, paths)
    k = round(cut * len(full))  # 0 .. all, epoch boundaries included
    head, state = _run(config, paths, k=k)
    tail, _ = _run(config, paths, state=state)
    assert head + tail == full


def test_resume_across_a_real_process_restart(data):
    """Iterate, save, exit; restore in a new process and finish. The first
    process also exits with a pipeline's prefetch thread still running (not
    closed): interpreter exit must stop it, not hang."""
    config = dict(seed=5, num_epochs=2, shuffle_files=True, shard_index=1, shard_count=3)
    script = textwrap.dedent("""
        import json, sys
        import numpy as np
        from arrayfs.nnx import ArrayRecordSourceConfig, ArrayRecordSourceModule, from_source
        config, paths, k, state = json.loads(sys.argv[1])
        src = ArrayRecordSourceModule(ArrayRecordSourceConfig(**config), paths)
        if state is not None:
            src.set_state(state)
        out = []
        for el in src:
            out.append(int(np.asarray(el["data"][:8]).view("<u8")[0]))
            if len(out) == k:
                break
        print(json.dumps([out, src.get_state()]), flush=True)
        if k is not None:
            other = ArrayRecordSourceModule(ArrayRecordSourceConfig(shard_index=0, shard_count=1), paths)
            pipe = from_source(other, 4, prefetch=2)
            assert next(pipe)["data"].shape == (4, 16)
    """)

    def proc(k, state):
        arg = json.dumps([config, data["three"], k, state])
        res = subprocess.run([sys.executable, "-c", script, arg], capture_output=True, text=True,
                             timeout=120)
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout.strip().splitlines()[-1])

    full, _ = _run(ArrayRecordSourceConfig(**config), data["three"])
    head, state = proc(40, None)  # 40 of 34 per epoch: stops inside epoch 1
    assert len(json.dumps(state)) < 400
    tail, _ = proc(None, state)
    assert head + tail == full and len(full) == 68
