"""Grain ``DataLoader`` checkpoints over an arrayfs data source of 10,000 shards.

Grain stores ``repr(data_source)`` in every checkpoint and compares it on
restore. The checkpoint must stay small at 10,000 shards, restore on a fresh
source over the same files and on a copy of the files in another directory,
and be refused for a different dataset.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import grain
import pytest
from _google import gwrite

import arrayfs

NUM_SHARDS = 10_000
PER_SHARD = 2
TOTAL = NUM_SHARDS * PER_SHARD


def _sparse_copy_tree(src: str, dst: str) -> None:
    """Copy a directory byte for byte, zero blocks left as holes: a 2-record
    shard is 128 KiB, nearly all zero padding to 64 KiB block boundaries, so
    10,000 shards take ~80 MB of disk instead of 1.3 GB."""
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    subprocess.run(["cp", "-r", "--sparse=always", src, dst], check=True)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """10,000 shards of 2 records each (record i holds i, 8 bytes LE), written
    by Google's writer (the fastest at this count), and a copy of them in
    another directory."""
    root = tmp_path_factory.mktemp("grain_ckpt")
    raw, data, moved = str(root / "raw"), str(root / "data"), str(root / "elsewhere" / "data")
    os.makedirs(raw)
    for k in range(NUM_SHARDS):
        path = os.path.join(raw, f"train.array_record-{k:05d}-of-{NUM_SHARDS:05d}")
        gwrite(path, "group_size:1,uncompressed", [i.to_bytes(8, "little") for i in range(k * PER_SHARD, (k + 1) * PER_SHARD)])
    _sparse_copy_tree(raw, data)
    shutil.rmtree(raw)
    _sparse_copy_tree(data, moved)
    return {"data": data, "moved": moved}


def _files(directory, count=NUM_SHARDS) -> list[str]:
    return [os.path.join(directory, f"train.array_record-{k:05d}-of-{NUM_SHARDS:05d}")
            for k in range(count)]


def _loader(ds) -> grain.DataLoader:
    sampler = grain.samplers.IndexSampler(
        num_records=len(ds), shard_options=grain.sharding.NoSharding(), shuffle=True,
        num_epochs=1, seed=7)
    return grain.DataLoader(data_source=ds, sampler=sampler, worker_count=0)


def _take(iterator, k) -> list[int]:
    return [int.from_bytes(next(iterator), "little") for _ in range(k)]


def test_dataloader_checkpoint_round_trip_and_relocation(shards):
    ds = arrayfs.ArrayRecordDataSource(_files(shards["data"]))
    with ds:
        assert len(ds) == TOTAL
        source_repr = repr(ds)
        it = iter(_loader(ds))
        head = _take(it, 40)
        state = it.get_state()
        expected = _take(it, 40)
    assert len(set(head + expected)) == 80 and set(head + expected) <= set(range(TOTAL))
    # The whole Grain checkpoint, data source included, is a few hundred bytes.
    assert len(source_repr) < 100 and len(state) < 1000, state
    assert json.loads(state)["data_source"] == source_repr

    # The same files, a fresh source; then the copy elsewhere (the native
    # repr hashes file names, not directories). The array_record-compatible
    # class has the wheel's repr, which hashes whole paths as the wheel's
    # does: a checkpoint moves between the wheel and it, not across
    # directories (tests/test_dataset.py::test_compat_repr_is_googles).
    for make, directory in [(arrayfs.ArrayRecordDataSource, shards["data"]),
                            (arrayfs.ArrayRecordDataSource, shards["moved"])]:
        with make(_files(directory)) as again:
            assert repr(again) == source_repr
            it = iter(_loader(again))
            it.set_state(state)
            assert _take(it, 40) == expected

    # A different dataset is refused by Grain's check of the repr.
    with arrayfs.ArrayRecordDataSource(_files(shards["data"], 10)) as other:
        sampler = grain.samplers.IndexSampler(num_records=TOTAL, shuffle=True, num_epochs=1,
                                              seed=7, shard_options=grain.sharding.NoSharding())
        loader = grain.DataLoader(data_source=other, sampler=sampler, worker_count=0)
        with pytest.raises(ValueError, match="DataSource in checkpoint does not match"):
            iter(loader).set_state(state)
