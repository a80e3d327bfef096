"""Records and shards for the tests: one generator of records (sizes,
seeds, empty and big ones), arrayfs's writer, and a shard-set builder
(Google's writer is in ``_google.py``). ``conftest.py`` offers them as
fixtures too."""

from __future__ import annotations

import os

import numpy as np

import arrayfs

__all__ = ["make_records", "sized_records", "awrite", "write_shards", "SHARD_NAME"]

#: Shard names of a built set (``part-00000-of-00004.array_record``).
SHARD_NAME = "part-{:05d}-of-{:05d}.array_record"


def _body(rng, i: int, size: int, compressible: bool) -> bytes:
    # Odd records random, even ones compressible text (when asked): both
    # kinds of chunk a codec sees.
    if compressible and i % 2 == 0:
        return (b"record %d " % i * (size // 8 + 1))[:size]
    return rng.bytes(size)


def make_records(n: int, seed: int = 0, *, size=(0, 2000), empty_every: int = 0, big_every: int = 0,
                 big_size=(70_000, 140_000), tag: bool = False, compressible: bool = True) -> list[bytes]:
    """``n`` records from a seeded generator (the same arguments give the
    same records).

    Args:
        size: ``(low, high)``: each record has ``low`` to ``high - 1`` bytes.
        empty_every: with ``k > 0``, records ``0, k, 2k, ...`` are empty
            (no tag either).
        big_every: with ``k > 0``, records ``k - 1, 2k - 1, ...`` have
            ``big_size`` bytes (``(low, high)``; the default crosses one or
            two 64 KiB block boundaries).
        tag: begin each record (but the ``empty_every`` ones) with
            ``s{seed}/r{i};`` before its ``size`` bytes, so that every
            record is distinct and names itself.
        compressible: even records are repeated text, odd ones random
            (``False``: all random).
    """
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        nbytes = int(rng.integers(size[0], size[1]))
        if big_every and i % big_every == big_every - 1:
            nbytes = int(rng.integers(big_size[0], big_size[1]))
        if empty_every and i % empty_every == 0:
            out.append(b"")
            continue
        head = b"s%d/r%d;" % (seed, i) if tag else b""
        out.append(head + _body(rng, i, nbytes, compressible))
    return out


def sized_records(sizes, seed: int = 0, *, compressible: bool = True) -> list[bytes]:
    """Records of exactly the given ``sizes`` (bytes), odd ones random and
    even ones compressible text."""
    rng = np.random.default_rng(seed)
    return [_body(rng, i, int(n), compressible) for i, n in enumerate(sizes)]


def awrite(path, options: str, records, **kw) -> str:
    """Write ``records`` with arrayfs's writer (``kw``: e.g.
    ``storage_options``); returns the path as ``str``."""
    with arrayfs.ArrayRecordWriter(path, options, **kw) as w:
        for r in records:
            w.write(r)
    return os.fspath(path) if not isinstance(path, str) else path


def write_shards(directory, layout, *, writer: str = "google", name: str = SHARD_NAME, seed: int = 1,
                 records=make_records) -> tuple[list[str], list[bytes]]:
    """Write one shard per ``(options, num_records)`` of ``layout`` into
    ``directory``, shard ``k``'s records from ``records(n, seed=seed + k)``,
    with Google's writer (``writer="google"``) or arrayfs's (``"arrayfs"``).
    Returns ``(paths in order, every record in global order)``."""
    write = awrite
    if writer == "google":
        from _google import gwrite as write
    paths, everything = [], []
    for k, (options, n) in enumerate(layout):
        recs = records(n, seed=seed + k)
        paths.append(write(os.path.join(os.fspath(directory), name.format(k, len(layout))), options, recs))
        everything.extend(recs)
    return paths, everything
