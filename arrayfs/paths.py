"""Turning what users pass as ``paths`` into an ordered list of shard files.

Accepted forms, alone or in a list: a file path, a glob pattern
(``data/train-*.array_record``), a directory (its files whose names contain
``array_record``), and Grain-style read instructions ``"path[start:end]"``
that keep records ``[start, end)`` of one file (either bound may be omitted;
negative bounds count from the end), and TFDS ``FileInstruction`` objects
(``filename``, ``skip``, ``take``).

Glob matches are sorted in *natural* order: runs of digits compare as
numbers, so ``x-2-of-10`` comes before ``x-10-of-10`` even without zero
padding; zero-padded names (``-00002-of-00010``) sort as they read. The
order of the list given by the user is kept.
"""

from __future__ import annotations

import errno
import glob
import os
import re
from typing import NamedTuple

__all__ = ["ShardSpec", "natural_key", "expand_paths", "has_magic"]

_INSTRUCTION = re.compile(r"^(?P<path>.+)\[(?P<start>-?\d*):(?P<stop>-?\d*)\]$")
_DIGITS = re.compile(r"(\d+)")


class ShardSpec(NamedTuple):
    """One shard to open: the file and the slice of its records to use
    (``None`` bounds mean the whole file)."""

    path: str
    start: int | None = None
    stop: int | None = None


def natural_key(path: str):
    """Sort key comparing digit runs as integers (see module docstring)."""
    return [(0, int(p), p) if p.isdigit() else (1, 0, p) for p in _DIGITS.split(path)]


def has_magic(path: str) -> bool:
    return glob.has_magic(path)


def _one(entry) -> list[ShardSpec]:
    if hasattr(entry, "filename") and hasattr(entry, "skip") and hasattr(entry, "take"):
        # A TFDS FileInstruction: records [skip, skip + take) of filename.
        skip = int(entry.skip)
        take = int(entry.take)
        return [ShardSpec(os.fspath(entry.filename), skip, None if take < 0 else skip + take)]
    text = os.fspath(entry)
    if not isinstance(text, str):
        text = os.fsdecode(text)
    start = stop = None
    m = _INSTRUCTION.match(text)
    if m and not os.path.exists(text):
        text = m.group("path")
        start = int(m.group("start")) if m.group("start") else None
        stop = int(m.group("stop")) if m.group("stop") else None
    text = os.path.expanduser(text)
    if os.path.isdir(text):
        names = [os.path.join(text, n) for n in os.listdir(text) if "array_record" in n and not n.startswith(".")]
        return [ShardSpec(p) for p in sorted(names, key=natural_key) if os.path.isfile(p)]
    if has_magic(text) and not os.path.exists(text):
        return [ShardSpec(p, start, stop) for p in sorted(glob.glob(text), key=natural_key) if os.path.isfile(p)]
    return [ShardSpec(text, start, stop)]


def expand_paths(paths, *, allow_missing: bool = False) -> list[ShardSpec]:
    """Expand ``paths`` (one entry or a list; see module docstring) into
    shard specs, in order.

    Raises ``FileNotFoundError`` naming the entry when a literal path does
    not exist or a pattern matches no file, unless ``allow_missing`` (used
    by refresh, where shards may come and go).
    """
    if isinstance(paths, (str, bytes, os.PathLike)):
        paths = [paths]
    out: list[ShardSpec] = []
    for entry in paths:
        specs = _one(entry)
        if not allow_missing:
            if not specs:
                name = os.fspath(entry.filename if hasattr(entry, "filename") else entry)
                if os.path.isdir(name):
                    reason = "directory holds no file whose name contains 'array_record'"
                else:
                    reason = "no file matches this pattern"
                raise FileNotFoundError(errno.ENOENT, reason, name)
            for s in specs:
                if not os.path.exists(s.path):
                    raise FileNotFoundError(errno.ENOENT, "no such file", s.path)
        out.extend(s for s in specs if allow_missing is False or os.path.isfile(s.path))
    return out
