"""What every ``arrayfs`` command shares: the one error type, the
dataset opener, ``--storage-option``, index ranges, output helpers.

Command modules receive this module as their ``kit`` when they register
(see :mod:`arrayfs.cli.main`), so a command living elsewhere
(:mod:`arrayfs.fs.cli`, :mod:`arrayfs.beam.cli`) needs no import of the
command line.
"""

from __future__ import annotations

import argparse
import json
import re
import sys

__all__ = ["CliError", "PROG", "formatter", "human", "open_dataset", "check_sources", "add_storage_option",
           "storage_options", "write_lines", "looks_like_index", "parse_index_spec"]

PROG = "arrayfs"


class CliError(Exception):
    """An expected failure, shown as one ``arrayfs: error: ...`` line."""


Error = CliError  # what command modules raise through their kit


def formatter(prog):
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=30)


def human(n: int) -> str:
    """Bytes as a short human string (binary units)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # unreachable

def check_sources(srcs, storage_options=None) -> None:
    """Raise ``FileNotFoundError`` (path, reason) for the first SRC that
    names no file, before any shard is opened."""
    from ..paths import expand_paths

    for src in srcs:
        expand_paths(src, storage_options=storage_options)

def open_dataset(srcs, storage_options=None):
    from ..dataset import ArrayRecordDataSource

    check_sources(srcs, storage_options)
    return ArrayRecordDataSource(srcs if len(srcs) != 1 else srcs[0], verify=True, storage_options=storage_options)

def add_storage_option(p) -> None:
    """``--storage-option KEY=VALUE`` (repeatable) on parser ``p``."""
    p.add_argument(
        "--storage-option", dest="storage_option", action="append", default=[], metavar="KEY=VALUE",
        help="fsspec option for s3://, gs://, https:// sources (repeatable), e.g. "
             "endpoint_url=http://127.0.0.1:9000 or anon=true; VALUE is read as JSON when it parses",
    )

def storage_options(args) -> dict | None:
    """The ``--storage-option`` values as a dict (``None`` when none).
    Raises :class:`CliError` for an item without ``=``."""
    out = {}
    for item in getattr(args, "storage_option", None) or []:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise CliError(f"--storage-option {item!r}: expected KEY=VALUE")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out or None

def write_lines(lines) -> None:
    sys.stdout.write("\n".join(lines))
    sys.stdout.write("\n")

_INT = r"[+-]?\d+"

_INDEX_RE = re.compile(rf"(?:{_INT}|(?:{_INT})?:(?:{_INT})?)")

def looks_like_index(token: str) -> bool:
    """``True`` for ``N``, ``-N``, ``A:B``, ``A:``, ``:B``, ``:`` (the
    forms :func:`parse_index_spec` takes)."""
    return _INDEX_RE.fullmatch(token) is not None

def parse_index_spec(token: str, n: int) -> range:
    """Resolve one ``cat`` index against a dataset of ``n`` records.

    Forms: ``N`` (one record; ``-N`` counts from the end, ``-1`` is the
    last), ``A:B`` (records ``A`` to ``B - 1``), ``A:`` (to the end),
    ``:B`` (from the start), ``:`` (all). Bounds may be negative (from the
    end) but are not clipped: a bound past either end is an error rather
    than a silently shorter output.

    Returns a ``range`` of global indices. Raises :class:`CliError` for a
    malformed token, an index out of ``[0, n)``, a bound out of ``[0, n]``,
    or ``A > B``.
    """
    if not looks_like_index(token):
        raise CliError(f"bad index {token!r}: expected N, -N, A:B, A: or :B")
    if ":" not in token:
        i = int(token)
        j = i + n if i < 0 else i
        if not 0 <= j < n:
            raise CliError(f"record index {i} out of range: the dataset has {n} records (0..{n - 1})"
                           if n else f"record index {i} out of range: the dataset has no records")
        return range(j, j + 1)
    a_text, b_text = token.split(":")

    def bound(text, default):
        if not text:
            return default
        v = int(text)
        w = v + n if v < 0 else v
        if not 0 <= w <= n:
            raise CliError(f"range {token!r}: bound {v} is outside the dataset's {n} records")
        return w

    a, b = bound(a_text, 0), bound(b_text, n)
    if a > b:
        raise CliError(f"range {token!r} is backwards (start {a} > stop {b})")
    return range(a, b)
