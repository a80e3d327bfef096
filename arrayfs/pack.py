"""Packing plain files and text lines into ArrayRecord shards.

Two sources of records:

* :func:`pack_files`: every regular file under the given paths is one
  record (its bytes, unchanged). A directory is walked recursively and its
  files are taken in sorted order of their path relative to that directory
  (plain code-point order, the order of ``find DIR -type f | LC_ALL=C sort``);
  a file given directly is one record. The given paths keep their order.
* :func:`pack_lines`: every line of the given text files is one record, the
  line's bytes without its final ``"\\n"`` (a ``"\\r"`` before it is kept,
  so records are byte-exact; a last line without ``"\\n"`` is a record too).
  ``"-"`` reads standard input; a file ending in ``.gz`` or ``.bz2`` is
  decompressed first, as ``arrayfs convert`` does. With ``jsonl=True``
  each line must be one JSON value; blank lines (only whitespace) are
  skipped, since they are not JSON values.

Output names (:func:`shard_paths`): with ``shard_size=None`` everything goes
into one file named exactly ``out_pattern``; with ``shard_size=N`` records
are cut into shards of ``N`` records (the last one holds the rest), named
``{out_pattern}-{k:05d}-of-{n:05d}`` (the TFDS convention, e.g.
``out/train.array_record-00000-of-00004``), which ``arrayfs``'s glob and
directory expansion list in order.

Shards are written under hidden temporary names in the output directory and
renamed to their final names only when every shard is complete, so a crash
leaves no file that looks like part of the dataset, and a live ``arrayfs
mount`` over the output directory never shows a half-finished set.
"""

from __future__ import annotations

import bz2
import gzip
import json
import os
import sys
import zlib
from collections.abc import Iterable, Iterator

from .naming import shard_matcher, shard_names, temp_stem
from .options import parse_writer_options
from .writer import ArrayRecordWriter

__all__ = [
    "PackError",
    "shard_paths",
    "iter_files",
    "iter_lines",
    "pack_records",
    "pack_files",
    "pack_lines",
]


class PackError(ValueError):
    """The inputs or options of a pack cannot be used (no records, a line
    that is not JSON, bad writer options, outputs that exist). The message
    names the path (and line) involved."""


def shard_paths(out_pattern, num_shards: int | None) -> list[str]:
    """Output file names for ``num_shards`` shards (see module docstring).

    ``num_shards=None`` means "not sharded": the one name ``out_pattern``.
    """
    out = os.fspath(out_pattern)
    if num_shards is None:
        return [out]
    return shard_names(out, num_shards)


def _existing_shards(out: str) -> list[str]:
    """Files beside ``out`` named like shards of it (``out-NNNNN-of-NNNNN``)."""
    directory, name = os.path.split(os.path.abspath(out))
    rx = shard_matcher(name)
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return sorted(os.path.join(os.path.dirname(out), n) for n in names if rx.fullmatch(n))


def _check_options(options: str) -> None:
    try:
        parsed = parse_writer_options(options)
    except (TypeError, ValueError) as e:
        raise PackError(f"bad writer options {options!r}: {e}") from None
    if parsed.transpose:
        raise PackError("bad writer options: transpose:true is not supported for writing")


# -- record sources --------------------------------------------------------


def _walk_files(root: str) -> list[str]:
    found = []
    for dirpath, _dirnames, filenames in os.walk(root, onerror=_raise):
        for n in filenames:
            p = os.path.join(dirpath, n)
            # Only regular files (symlinks to them included): a FIFO or a
            # socket would block or fail the read.
            if os.path.isfile(p):
                found.append(p)
    # Sort on the bytes of the path relative to root, with "/" separators,
    # so the order is the same on every platform and reproducible with
    # `LC_ALL=C sort` (names that are not UTF-8 too: their str forms do not
    # sort as their bytes).
    return sorted(found, key=lambda p: os.fsencode(os.path.relpath(p, root).replace(os.sep, "/")))


def _raise(err: OSError):
    raise err


def list_files(paths, output=None) -> list[str]:
    """The files :func:`pack_files` packs, in record order. Files that are
    ``output`` (a pack's output name), its shards, or the temporary files
    of a pack or writer of it are left out of walked directories: a pack
    into its own input directory packs the same files each time.

    Raises ``FileNotFoundError`` for a path that does not exist.
    """
    own = _own_outputs(output)
    out = []
    for p in [paths] if isinstance(paths, (str, os.PathLike)) else paths:
        p = os.fspath(p)
        if os.path.isdir(p):
            out.extend(f for f in _walk_files(p) if not own(f))
        elif os.path.exists(p):
            out.append(p)
        else:
            raise FileNotFoundError(2, "No such file or directory", p)
    return out


def _own_outputs(output):
    """A test for paths that are ``output``, its shards
    (``output-NNNNN-of-NNNNN``) or temporary files of them (``.output.*``
    with the suffix of this module or of the writer); none without one."""
    if output is None:
        return lambda path: False
    directory, name = os.path.split(os.path.abspath(os.fspath(output)))
    shard = shard_matcher(name)
    temp_prefix = "." + temp_stem(name)

    def own(path: str) -> bool:
        d, n = os.path.split(os.path.abspath(path))
        if d != directory:
            return False
        temp = n.startswith(temp_prefix) and n.endswith((".arrayfs-pack", ".arrayfs-tmp"))
        return n == name or shard.fullmatch(n) is not None or temp

    return own


def iter_files(files) -> Iterator[tuple[bytes, int]]:
    """``(record, input bytes consumed)`` for each file of ``files``."""
    for p in files:
        with open(p, "rb") as fh:
            data = fh.read()
        yield data, len(data)


def iter_lines(paths, *, jsonl: bool = False) -> Iterator[tuple[bytes, int]]:
    """``(record, input bytes consumed)`` for each line of each file.

    Raises :class:`PackError` (``path:line: ...``) for a line that is not
    JSON when ``jsonl``.
    """
    for p in [paths] if isinstance(paths, (str, os.PathLike)) else paths:
        p = os.fspath(p)
        if p == "-":
            yield from lines_of(sys.stdin.buffer, "<stdin>", jsonl)
        else:
            if os.path.isdir(p):
                raise IsADirectoryError(21, "Is a directory (use --files to pack a directory tree)", p)
            try:
                with open_text_input(p) as fh:
                    yield from lines_of(fh, p, jsonl)
            except (EOFError, OSError, zlib.error) as e:
                suffix = compression_suffix(p)
                if not suffix or isinstance(e, (FileNotFoundError, PermissionError)):
                    raise
                raise PackError(f"{p}: not a whole {suffix} stream: {e}") from None


#: Compressed text inputs, by suffix, and how to open them.
_DECOMPRESSORS = {".gz": gzip.open, ".bz2": bz2.open}


def compression_suffix(path: str) -> str:
    """The suffix (``".gz"``, ``".bz2"``) for which :func:`open_text_input`
    decompresses ``path``, or ``""``."""
    low = path.lower()
    return next((s for s in _DECOMPRESSORS if low.endswith(s)), "")


def open_text_input(path: str):
    """``path`` opened for reading as bytes, decompressed when it ends in
    ``.gz`` or ``.bz2`` (a corrupt stream raises ``OSError`` or
    ``EOFError`` while reading)."""
    suffix = compression_suffix(path)
    return _DECOMPRESSORS[suffix](path, "rb") if suffix else open(path, "rb")


def lines_of(fh, name: str, jsonl: bool):
    """``(record, bytes consumed)`` for each line of binary file ``fh``:
    the line without its final ``\n`` (a ``\r`` before it is kept). With
    ``jsonl`` every line must parse as JSON (:class:`PackError` naming
    ``name:line`` otherwise) and blank lines give ``(None, consumed)``.
    The one place the lines and JSON-lines rules live (``pack`` and
    ``convert`` both read through it)."""
    for lineno, line in enumerate(fh, 1):
        consumed = len(line)
        if line.endswith(b"\n"):
            line = line[:-1]
        if jsonl:
            if not line.strip():
                yield None, consumed
                continue
            try:
                json.loads(line)
            except ValueError as e:
                msg = getattr(e, "msg", None) or str(e)
                raise PackError(f"{name}:{lineno}: not a JSON value ({msg})") from None
        yield line, consumed


# -- writing ---------------------------------------------------------------


def pack_records(
    records: Iterable,
    out_pattern,
    options: str = "",
    shard_size: int | None = None,
    *,
    progress: bool = True,
    total_bytes: int | None = None,
    overwrite: bool = False,
    desc: str = "packing",
) -> list[tuple[str, int]]:
    """Write ``records`` into shards; the engine of :func:`pack_files` and
    :func:`pack_lines`.

    Args:
        records: an iterable of ``bytes``, or of ``(bytes | None, n)`` pairs
            where ``n`` is the input bytes consumed (for the progress bar)
            and ``None`` means "consumed input, no record".
        out_pattern: output name (see :func:`shard_paths`).
        options: writer options string (e.g. ``"group_size:1,zstd:3"``).
        shard_size: records per shard (``>= 1``), or ``None`` for one file.
        progress: show a tqdm bar on stderr (only when stderr is a terminal).
        total_bytes: input bytes expected, for the bar's total.
        overwrite: replace existing outputs, and remove other shards of
            ``out_pattern`` (``out_pattern-NNNNN-of-NNNNN``) left by an
            earlier pack with a different shard count, or the unsharded
            ``out_pattern`` itself. Without it, existing outputs raise
            :class:`PackError`.

    Returns:
        ``[(path, num_records)]`` of the files written, in order.

    Raises:
        PackError: bad options or ``shard_size``, no records, outputs exist.
        OSError: an input cannot be read or the output cannot be written
            (nothing is left under the output names then).
    """
    from tqdm import tqdm

    _check_options(options)
    if shard_size is not None and (not isinstance(shard_size, int) or shard_size < 1):
        raise PackError(f"shard size must be a positive number of records, got {shard_size!r}")
    out = os.fspath(out_pattern)
    is_dir = os.path.isdir(out)
    if is_dir or out.endswith(("/", os.sep)):
        what = "is a directory" if is_dir else "ends in a path separator"
        raise PackError(f"{out}: {what}; give a file name such as {os.path.join(out, 'train.array_record')}")
    if not overwrite:
        existing = ([out] if os.path.exists(out) else []) + _existing_shards(out)
        if existing:
            more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
            raise PackError(f"{existing[0]}: output exists{more}; remove it or pass --force")
    directory = os.path.dirname(os.path.abspath(out))
    os.makedirs(directory, exist_ok=True)
    base = os.path.basename(out)
    pid = os.getpid()

    temps: list[tuple[str, int]] = []  # (hidden path, records) of finished shards
    writer = None
    count = 0
    bar = tqdm(
        total=total_bytes, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
        file=sys.stderr, disable=None if progress else True, leave=False,
    )
    try:
        pending_bytes = 0
        for item in records:
            if isinstance(item, tuple):
                rec, consumed = item
            else:
                rec, consumed = item, len(item)
            pending_bytes += consumed
            # tqdm.update costs about a microsecond; batch it for small lines.
            if pending_bytes >= 1 << 20:
                bar.update(pending_bytes)
                pending_bytes = 0
            if rec is None:
                continue
            if writer is None:
                tmp = os.path.join(directory, f".{temp_stem(base)}.{pid}-{len(temps):05d}.arrayfs-pack")
                writer = ArrayRecordWriter(tmp, options)
            writer.write(rec)
            count += 1
            if shard_size is not None and count == shard_size:
                writer.close()
                temps.append((writer.path, count))
                writer, count = None, 0
        bar.update(pending_bytes)
        if writer is not None:
            writer.close()
            temps.append((writer.path, count))
            writer = None
        if not temps:
            raise PackError("no records to pack: the inputs hold no files or lines")
        finals = shard_paths(out, None if shard_size is None else len(temps))
        for (tmp, _), final in zip(temps, finals):
            os.replace(tmp, final)
        done = list(zip(finals, (n for _, n in temps)))
        temps = []
        if overwrite:
            # The outputs of an earlier pack with another shard count (or
            # none): left beside the new ones, a glob of OUT would read
            # their records twice.
            keep = {os.path.abspath(p) for p in finals}
            for stale in ([out] if os.path.isfile(out) else []) + _existing_shards(out):
                if os.path.abspath(stale) not in keep:
                    os.unlink(stale)
        return done
    finally:
        bar.close()
        if writer is not None:
            # An unfinished shard: drop its temporary file (the writer has
            # no public abort; leaving it to __del__ would be late on PyPy).
            writer.abort()
        for tmp, _ in temps:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass


def pack_files(
    paths, out_pattern, options: str = "", shard_size: int | None = None, progress: bool = True,
    *, overwrite: bool = False,
) -> list[str]:
    """Pack every file under ``paths`` (one record per file, order in the
    module docstring) into ArrayRecord shards.

    Args:
        paths: a path or a list of paths (directories are walked).
        out_pattern: output name; see :func:`shard_paths`.
        options: writer options string (default: arrayfs's writer default,
            ``group_size:1,zstd:3``).
        shard_size: records per shard, or ``None`` for one output file.
        progress: tqdm bar on stderr (input bytes) when stderr is a terminal.
        overwrite: see :func:`pack_records`.

    Returns:
        The paths written, in order.

    Raises:
        PackError: bad options, no files found, outputs exist.
        OSError: a path does not exist or cannot be read; the output
            cannot be written.
    """
    _check_options(options)
    files = list_files(paths, out_pattern)
    total = 0
    for p in files:
        total += os.path.getsize(p)
    written = pack_records(
        iter_files(files), out_pattern, options, shard_size,
        progress=progress, total_bytes=total, overwrite=overwrite, desc="packing files",
    )
    return [p for p, _ in written]


def pack_lines(
    paths, out_pattern, options: str = "", shard_size: int | None = None, progress: bool = True,
    *, jsonl: bool = False, overwrite: bool = False,
) -> list[str]:
    """Pack every line of the text files ``paths`` (one record per line,
    rules in the module docstring) into ArrayRecord shards.

    Args:
        paths: a path or a list of paths; ``"-"`` is standard input.
        out_pattern, options, shard_size, progress, overwrite: as in
            :func:`pack_files`.
        jsonl: require each non-blank line to be a JSON value; skip blank
            lines.

    Returns:
        The paths written, in order.

    Raises:
        PackError: bad options, a line that is not JSON (``path:line``),
            no lines, outputs exist.
        OSError: a path does not exist, is a directory, or cannot be read.
    """
    _check_options(options)
    plist = [paths] if isinstance(paths, (str, os.PathLike)) else [os.fspath(p) for p in paths]
    total = 0
    for p in plist:
        p = os.fspath(p)
        if p == "-":
            total = None
            break
        if not os.path.exists(p):
            raise FileNotFoundError(2, "No such file or directory", p)
        if compression_suffix(p):
            total = None  # the bar counts decoded bytes: their total is unknown
            continue
        if total is not None:
            total += os.path.getsize(p)
    written = pack_records(
        iter_lines(plist, jsonl=jsonl), out_pattern, options, shard_size,
        progress=progress, total_bytes=total, overwrite=overwrite,
        desc="packing JSONL" if jsonl else "packing lines",
    )
    return [p for p, _ in written]
