"""What the fuzz targets in ``fuzz/`` found, kept as tests, and the targets
themselves run over their seeds (so that a target that rots, or a seed
that stops passing, fails here and not only in ``make fuzz``).

Each finding's input is inline (bytes) or built by code, with the target
that found it and what was wrong.
"""

from __future__ import annotations

import importlib
import os
import sys

import numpy as np
import pytest

from arrayfs.errors import CorruptChunkError
from arrayfs.riegeli.blocks import BLOCK_SIZE
from arrayfs.riegeli.chunk import (
    SIMPLE,
    decode_single_record,
    encode_chunk_header,
    encode_simple,
    read_chunk,
    single_record_zstd_frames,
)
from arrayfs.riegeli.compression import NONE, ZSTD

FUZZ = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fuzz")
TARGETS = ("file", "chunk", "transposed", "footer", "options", "tfrecord")


def _target(name):
    if FUZZ not in sys.path:
        sys.path.insert(0, FUZZ)
    return importlib.import_module(f"fuzz_{name}")


def _passes(name, data: bytes) -> None:
    """Run one input through target ``name`` under its pass rule."""
    t = _target(name)
    _target_harness().one_input(t.check, t.EXPECTED, keep_going="")(data)


def _target_harness():
    if FUZZ not in sys.path:
        sys.path.insert(0, FUZZ)
    return importlib.import_module("_harness")


def _one_record_chunk(record: bytes, compression: int) -> bytes:
    data, decoded = encode_simple([record], compression)
    return encode_chunk_header(data, SIMPLE, 1, decoded) + data


# -- fuzz_chunk: a chunk beginning inside a block header ----------------------
#
# Found by fuzz_chunk: at byte 131095 (23 bytes into the block header at
# 131072) a valid one-record zstd chunk was returned by
# decode_single_record (the read_record fast path) while read_chunk
# refused it as truncated, with arithmetic for a chunk that crosses a block
# header. No chunk can begin inside or right after a block header (spec:
# "Block header"), so a footer entry pointing there is corrupt: both paths
# now say so.

FOUND_INSIDE_BLOCK_HEADER = bytes.fromhex(
    "170002f01aa26617c125921700000000000000968e85b6ae057dfa7201000000000000000000000000"
    "00007a0b0128b52ffd2001090000000028b52ffd2000010000"
)


def test_found_chunk_inside_block_header_passes_the_target():
    _passes("chunk", FOUND_INSIDE_BLOCK_HEADER)


@pytest.mark.parametrize("r", [1, 10, 23, 24])
@pytest.mark.parametrize("compression", [NONE, ZSTD])
def test_no_chunk_begins_inside_or_right_after_a_block_header(r, compression):
    window = _one_record_chunk(b"hello, record", compression)
    offset = 2 * BLOCK_SIZE + r
    assert decode_single_record(window, offset, verify=True) is None
    sel, _, _ = single_record_zstd_frames(
        window, np.zeros(1, np.int64), np.array([offset], np.int64), np.array([len(window)], np.int64), verify=True)
    assert len(sel) == 0
    with pytest.raises(CorruptChunkError, match="no chunk can begin here") as e:
        read_chunk(window, offset, base=offset)
    assert e.value.offset == offset


@pytest.mark.parametrize("compression", [NONE, ZSTD])
def test_one_record_chunk_just_past_a_block_header_still_reads(compression):
    window = _one_record_chunk(b"hello, record", compression)
    offset = 2 * BLOCK_SIZE + 25
    assert decode_single_record(window, offset, verify=True) == b"hello, record"
    header, _, _ = read_chunk(window, offset, base=offset)
    assert header.num_records == 1


# -- every target passes its seeds ---------------------------------------------


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    if FUZZ not in sys.path:
        sys.path.insert(0, FUZZ)
    make_seeds = importlib.import_module("make_seeds")
    out = tmp_path_factory.mktemp("corpus")
    counts = make_seeds.make(str(out))
    assert all(counts[t] > 0 for t in TARGETS), counts
    return out


@pytest.mark.parametrize("name", TARGETS)
def test_target_passes_its_seeds(seeds, name):
    t = _target(name)
    run = _target_harness().one_input(t.check, t.EXPECTED, keep_going="")
    files = sorted((seeds / name).iterdir())
    assert files
    for path in files:
        run(path.read_bytes())


@pytest.mark.parametrize("name", TARGETS)
def test_target_refuses_what_is_not_documented(name):
    """The pass rule lets documented exceptions through and nothing else."""
    t = _target(name)
    assert t.EXPECTED and all(issubclass(e, Exception) for e in t.EXPECTED)
    assert not any(issubclass(e, (KeyError, IndexError, TypeError, MemoryError, AssertionError)) for e in t.EXPECTED)

    def boom(data):
        raise IndexError("not documented")

    with pytest.raises(IndexError):
        _target_harness().one_input(boom, t.EXPECTED, keep_going="")(b"")
