"""HighwayHash-64 with Riegeli's key (spec: "Conventions").

Riegeli hashes block headers, chunk headers and chunk data with HighwayHash-64
keyed by ``('Riegeli/', 'records\\n')`` twice, as four little-endian u64.

The hashing itself is highwayhash-cffi's C library. Its Python wrapper copies
the key into a fresh buffer and demands ``bytes`` on every call; here the key
is allocated once and the data is passed as a pointer into whatever buffer
holds it (an mmap slice, a bytearray), so hashing a chunk in place costs one
C call. cffi releases the GIL during the call, so threads hash in parallel.
"""

from __future__ import annotations

import struct
from itertools import repeat

import numpy as np
from highwayhash import _highwayhash

__all__ = ["RIEGELI_HASH_KEY", "highway_hash64", "buffer_pointer", "release_pointer", "hash_at", "hashes_at",
           "stored_hashes_match"]

RIEGELI_HASH_KEY = b"Riegeli/records\nRiegeli/records\n"

_ffi = _highwayhash.ffi
_lib = _highwayhash.lib
_key = _ffi.new("uint64_t[4]", list(struct.unpack("<4Q", RIEGELI_HASH_KEY)))
_from_buffer = _ffi.from_buffer
_hash64 = _lib.HighwayHash64


def highway_hash64(data) -> int:
    """HighwayHash-64 of ``data`` (any C-contiguous bytes-like) with Riegeli's key.

    Returns the hash as an unsigned 64-bit ``int``, the value Riegeli stores
    little-endian in its headers.
    """
    n = len(data)  # not ``not data``: a numpy uint8 array has no truth value
    if not n:
        return _hash64(_ffi.NULL, 0, _key)
    return _hash64(_from_buffer("char[]", data), n, _key)


def buffer_pointer(buf):
    """A C pointer to the start of ``buf`` (e.g. a whole-file mmap) for
    :func:`hash_at`. It holds a buffer export on ``buf`` until passed to
    :func:`release_pointer`."""
    return _from_buffer("char[]", buf)


def release_pointer(ptr) -> None:
    _ffi.release(ptr)


def hash_at(ptr, offset: int, length: int) -> int:
    """HighwayHash-64 of ``length`` bytes at ``offset`` of the buffer behind
    ``ptr``; no slicing, no copy: one C call. The caller checks bounds."""
    return _hash64(ptr + offset, length, _key)


def hashes_at(ptr, offsets, lengths) -> np.ndarray:
    """HighwayHash-64 (``uint64``, shape ``(n,)``) of ``lengths[i]`` bytes at
    ``offsets[i]`` of the buffer behind ``ptr`` (sequences of ``int``): one
    C call each with no Python frame between them."""
    n = len(offsets)
    calls = map(_hash64, map(ptr.__add__, offsets), lengths, repeat(_key, n))
    return np.fromiter(calls, dtype=np.uint64, count=n)


def stored_hashes_match(buf, positions: np.ndarray, size: int) -> np.ndarray:
    """For headers of ``size`` bytes at ``positions`` (``int64`` offsets into
    ``buf``, each header wholly inside it) that begin with the hash of
    their other ``size - 8`` bytes, as a little-endian u64 (block headers,
    chunk headers): which of those hashes match (``bool``, shape ``(n,)``).
    One C call per header."""
    if not len(positions):
        return np.zeros(0, dtype=bool)
    view = np.frombuffer(buf, dtype=np.uint8)
    try:
        stored = np.ascontiguousarray(view[positions[:, None] + np.arange(8)]).view("<u8").ravel()
    finally:
        del view  # a map cannot close while numpy holds its buffer
    ptr = buffer_pointer(buf)
    try:
        computed = hashes_at(ptr, (positions + 8).tolist(), [size - 8] * len(positions))
    finally:
        release_pointer(ptr)
    return computed == stored
