"""The shard set of the dataset tests (``test_dataset*.py``): seven shards
written by Google's writer (group_size 1 and 100, every codec, one empty),
Google's data source and ours over them, and a big shard to cut.

Fixtures are imported by name into each test module that uses them.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
from _records import make_records, write_shards

import arrayfs

try:
    from array_record.python import array_record_data_source as google_ds
except ImportError:  # the modules that need it skip (a failure in CI)
    google_ds = None


@pytest.fixture(scope="module")
def quiet_absl():
    # Google's data source logs an ERROR for every shard with group_size > 1 (used by
    # test_compat.py too).
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



def shard_records(n: int, seed: int) -> list[bytes]:
    """Self-describing records of mixed sizes: random and compressible,
    every 7th empty, every 70th larger than a 64 KiB block."""
    return make_records(n, seed, size=(0, 3000), empty_every=7, big_every=70, big_size=(65_000, 100_000), tag=True)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """``(directory, [paths in order], [every record in global order])``."""
    d = tmp_path_factory.mktemp("shards")
    paths, records = write_shards(d, LAYOUT, name=NAME, records=shard_records)
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
    """Descriptors this process holds, sockets left out: the object-store
    clients and loopback servers of earlier tests close theirs on their own
    timers, which made a count around a local open fail by chance when the
    S3 tests ran first."""
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if not os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                n += 1
        except OSError:  # closed meanwhile (the listing's own descriptor too)
            pass
    return n


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


@pytest.fixture(scope="module")
def big_shard(tmp_path_factory):
    """A 5-block shard (group_size 1, zstd) to cut in pieces."""
    from _google import gwrite

    d = tmp_path_factory.mktemp("big")
    recs = [np.random.default_rng(i).bytes(900) for i in range(300)]
    path = gwrite(d / "big.array_record", "group_size:1", recs)
    assert os.path.getsize(path) >= 4 * 65536
    return path, recs

