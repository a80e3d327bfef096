"""Turning what users pass as ``paths`` into an ordered list of shard files.

Accepted forms, alone or in a list: a file path, a glob pattern
(``data/train-*.array_record``), a directory (its files whose names contain
``array_record``), Grain-style read instructions ``"path[start:end]"`` that
keep records ``[start, end)`` of one file (either bound may be omitted;
negative bounds count from the end), and TFDS ``FileInstruction`` objects
(``filename``, ``skip``, ``take``). Each form works with fsspec URLs as
well (``s3://bucket/train-*.array_record``, ``gs://...``, ``memory://...``).

Glob matches are sorted in *natural* order: runs of digits compare as
numbers, so ``x-2-of-10`` comes before ``x-10-of-10`` even without zero
padding; zero-padded names (``-00002-of-00010``) sort as they read. The
order of the list given by the user is kept.
"""

from __future__ import annotations

import errno
import os
import re
from typing import NamedTuple

from . import storage
from .storage import Entry, is_remote

__all__ = ["ShardSpec", "natural_key", "expand_paths", "expand_entries", "has_magic", "has_remote", "split_instruction"]

_INSTRUCTION = re.compile(r"^(?P<path>.+)\[(?P<start>-?\d*):(?P<stop>-?\d*)\]$")
_DIGITS = re.compile(r"(\d+)")


class ShardSpec(NamedTuple):
    """One shard to open: the file (path or URL) and the slice of its
    records to use (``None`` bounds mean the whole file)."""

    path: str
    start: int | None = None
    stop: int | None = None


def natural_key(path: str):
    """Sort key comparing digit runs as integers (see module docstring)."""
    return [(0, int(p), p) if p.isdigit() else (1, 0, p) for p in _DIGITS.split(path)]


has_magic = storage.has_magic


def has_remote(entries) -> bool:
    """``True`` when any of ``entries`` (what a dataset's ``paths`` take)
    is a URL served by fsspec; a TFDS ``FileInstruction`` by its
    ``filename``."""
    if isinstance(entries, (str, bytes, os.PathLike)) or hasattr(entries, "filename"):
        entries = [entries]
    return any(is_remote(getattr(e, "filename", e)) for e in entries)


def split_instruction(text: str) -> tuple[str, int | None, int | None] | None:
    """``(path, start, stop)`` of a read instruction ``"path[start:stop]"``
    (an omitted bound is ``None``), or ``None`` when ``text`` is not one.
    A file whose name has that form is still that file: callers check."""
    m = _INSTRUCTION.match(text)
    if m is None:
        return None
    start, stop = m.group("start"), m.group("stop")
    return m.group("path"), int(start) if start else None, int(stop) if stop else None


def _exists(text: str, storage_options, fresh: bool = False) -> Entry | None:
    try:
        return storage.stat(text, storage_options, fresh=fresh)
    except FileNotFoundError:
        return None
    except OSError:
        if is_remote(text):
            raise
        return None


def _one(entry, storage_options, fresh: bool) -> list[tuple[ShardSpec, Entry | None]]:
    if hasattr(entry, "filename") and hasattr(entry, "skip") and hasattr(entry, "take"):
        # A TFDS FileInstruction: records [skip, skip + take) of filename.
        skip = int(entry.skip)
        take = int(entry.take)
        return [(ShardSpec(os.fspath(entry.filename), skip, None if take < 0 else skip + take), None)]
    text = os.fspath(entry)
    if not isinstance(text, str):
        text = os.fsdecode(text)
    start = stop = None
    remote = is_remote(text)
    instruction = split_instruction(text)
    found = None
    if instruction is not None:
        found = _exists(text, storage_options, fresh)
        if found is None:
            text, start, stop = instruction
    if not remote:
        text = os.path.expanduser(text)
    if found is None and not (has_magic(text) and (remote or not os.path.exists(text))):
        found = _exists(text, storage_options, fresh)
    if found is not None and found.is_dir:
        listed = [e for e in storage.listdir(text, storage_options, fresh=fresh)
                  if "array_record" in _name(e.path) and not _name(e.path).startswith(".")]
        return [(ShardSpec(e.path), e) for e in sorted(listed, key=lambda e: natural_key(e.path))]
    if found is None and has_magic(text):
        matched = storage.glob(text, storage_options, fresh=fresh)
        return [(ShardSpec(e.path, start, stop), e) for e in sorted(matched, key=lambda e: natural_key(e.path))]
    return [(ShardSpec(text, start, stop), found)]


def _name(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1].rsplit(os.sep, 1)[-1]


def expand_entries(paths, *, allow_missing: bool = False, storage_options=None, fresh: bool = False):
    """Expand ``paths`` (one entry or a list; see module docstring) into
    ``[(ShardSpec, Entry or None), ...]`` in order; the
    :class:`arrayfs.storage.Entry` (size, identity, backend info) is there
    when the file was listed or looked up on the way.

    ``fresh`` lists object stores afresh rather than from fsspec's cached
    listings (a refresh must see new objects).

    Raises ``FileNotFoundError`` naming the entry when a literal path or
    URL does not exist or a pattern matches no file, unless
    ``allow_missing`` (used by refresh, where shards come and go);
    :class:`arrayfs.storage.StorageError` when a store cannot be listed.
    """
    if isinstance(paths, (str, bytes, os.PathLike)) or hasattr(paths, "filename"):
        paths = [paths]
    out = []
    for entry in paths:
        specs = _one(entry, storage_options, fresh)
        if not allow_missing:
            name = os.fspath(entry.filename if hasattr(entry, "filename") else entry)
            if not specs:
                found = _exists(name, storage_options)
                if found is not None and found.is_dir:
                    reason = "directory holds no file whose name contains 'array_record'"
                else:
                    reason = "no file matches this pattern"
                raise FileNotFoundError(errno.ENOENT, reason, name)
            for spec, found in specs:
                if found is None and _exists(spec.path, storage_options) is None:
                    raise FileNotFoundError(errno.ENOENT, "no such file" if not is_remote(spec.path)
                                            else "no such object", spec.path)
        out.extend(specs)
    return out


def expand_paths(paths, *, allow_missing: bool = False, storage_options=None) -> list[ShardSpec]:
    """The :class:`ShardSpec` part of :func:`expand_entries`."""
    return [spec for spec, _ in expand_entries(paths, allow_missing=allow_missing, storage_options=storage_options)]
