"""Shard file names: ``{prefix}-{k:05d}-of-{n:05d}{suffix}``.

The convention of TFDS and Beam (``train.array_record-00000-of-00004``),
written by ``arrayfs pack`` and ``arrayfs convert``; numbers wider than five
digits are written and recognised as they come. Paths are plain strings
(local paths or URLs); nothing here touches storage.
"""

from __future__ import annotations

import os
import re

__all__ = ["SHARD_TEMPLATE", "shard_names", "shard_glob", "shard_matcher", "shard_set_pattern", "temp_stem"]

#: The same name in Beam's ``shard_name_template`` syntax (``S``: shard
#: number, ``N``: shard count, each zero-padded to the letters' width).
SHARD_TEMPLATE = "-SSSSS-of-NNNNN"

_NUMBERS = r"-\d{5,}-of-\d{5,}"


def shard_names(prefix: str, count: int, suffix: str = "") -> list[str]:
    """The names of shards ``0 .. count - 1`` of ``prefix``."""
    return [f"{prefix}-{k:05d}-of-{count:05d}{suffix}" for k in range(count)]


def shard_glob(prefix: str, suffix: str = "") -> str:
    """A glob matching the shards of ``prefix`` (of any count), and possibly
    more: check each match with :func:`shard_matcher`."""
    return f"{prefix}-*-of-*{suffix}"


def shard_matcher(prefix: str, suffix: str = ""):
    """A compiled regular expression whose ``fullmatch`` accepts exactly the
    shard names of ``prefix`` and ``suffix`` (of any count)."""
    return re.compile(re.escape(prefix) + _NUMBERS + re.escape(suffix))


def shard_set_pattern(name: str) -> str:
    """``name`` with its shard number replaced by ``*`` (``x-*-of-00004``),
    for a message naming a set of shards; ``name`` itself when it is not
    a shard name. The last shard number in the name counts (a directory
    can look like one)."""
    found = list(re.finditer(r"-\d{5,}-of-(\d{5,})", name))
    if not found:
        return name
    m = found[-1]
    return f"{name[:m.start()]}-*-of-{m.group(1)}{name[m.end():]}"


def temp_stem(name: str) -> str:
    """``name`` cut to 200 bytes (``os.fsencode``), the part of it that a
    temporary file beside it carries: with the writer's and pack's prefixes
    and suffixes the temporary name stays within NAME_MAX (255 bytes)."""
    return os.fsdecode(os.fsencode(name)[:200])
