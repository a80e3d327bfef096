"""ArrayRecord writer and reader options strings (array_record grammar).

Grammar, as array_record's ``ArrayRecordWriterBase::Options::FromString`` and
riegeli's ``CompressorOptions::FromString`` define it::

    options ::= option? ("," option?)*
    option  ::= "default" | "group_size:" N | "max_parallelism:" (N | "auto")
              | "saturation_delay_ms:" N | "transpose" (":" bool)?
              | "transpose_bucket_size:" (bytes | "auto")
              | "uncompressed" | "brotli" (":" 0..11)? | "zstd" (":" -131072..22)?
              | "snappy" (":" 1..2)? | "window_log:" (N | "auto")
              | "pad_to_block_boundary" (":" bool)?

Defaults match today's array_record: ``group_size:1``, ``zstd:3`` with
``window_log:20``. :meth:`WriterOptions.to_string` renders the canonical form
array_record stores in the footer, so a file written here carries the same
``writer_options`` string as one written by Google's writer.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass

from .riegeli.compression import BROTLI, NONE, SNAPPY, ZSTD

__all__ = ["WriterOptions", "ReaderOptions", "parse_writer_options", "parse_reader_options"]

_INT32_MAX = 2**31 - 1
_DEFAULT_TRANSPOSE_BUCKET = 256
_ZSTD_DEFAULT_WINDOW_LOG = 20
_LEVELS = {BROTLI: (0, 11, 6), ZSTD: (-131072, 22, 3), SNAPPY: (1, 2, 1), NONE: (0, 0, 0)}
_WINDOW_LOGS = {BROTLI: (10, 30), ZSTD: (10, 31)}
_COMPRESSION_KEYS = {"uncompressed": NONE, "brotli": BROTLI, "zstd": ZSTD, "snappy": SNAPPY}
_SUFFIX = {"": 1, "B": 1, "k": 2**10, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40, "P": 2**50, "E": 2**60}


@dataclass(frozen=True)
class WriterOptions:
    """Parsed writer options; sizes in records (``group_size``) or bytes."""

    group_size: int = 1
    compression: int = ZSTD
    level: int = 3
    window_log: int | None = _ZSTD_DEFAULT_WINDOW_LOG
    transpose: bool = False
    transpose_bucket_size: int = _DEFAULT_TRANSPOSE_BUCKET
    pad_to_block_boundary: bool = False
    max_parallelism: int = 1
    saturation_delay_ms: int | None = None

    def to_string(self) -> str:
        """The canonical string array_record writes into the footer."""
        parts = [
            f"group_size:{self.group_size}",
            f"transpose:{'true' if self.transpose else 'false'}",
            f"pad_to_block_boundary:{'true' if self.pad_to_block_boundary else 'false'}",
        ]
        if self.transpose:
            parts.append(f"transpose_bucket_size:{self.transpose_bucket_size}")
        if self.compression == NONE:
            parts.append("uncompressed")
        elif self.compression == BROTLI:
            parts.append(f"brotli:{self.level}")
        elif self.compression == ZSTD:
            parts.append(f"zstd:{self.level}")
        else:
            parts.append("snappy")
        if self.window_log is not None:
            parts.append(f"window_log:{self.window_log}")
        parts.append(f"max_parallelism:{self.max_parallelism}")
        return ",".join(parts)


@dataclass(frozen=True)
class ReaderOptions:
    """Parsed reader options (array_record ``ArrayRecordReaderBase::Options``).

    An mmap reader has no read-ahead buffer to size: ``max_parallelism``
    bounds the threads used for batched reads; ``readahead_buffer_size``,
    ``index_storage_option`` and ``footer_prefetch_bytes`` are parsed and
    validated as array_record does, and have no effect.
    """

    readahead_buffer_size: int = 16 * 2**20
    max_parallelism: int | None = None
    index_storage_option: str = "in_memory"
    footer_prefetch_bytes: int | None = None


_ASCII_SPACE = " \t\n\v\f\r"
_INT_RE = re.compile(r"[+-]?[0-9]+")
_HEX_FLOAT_RE = re.compile(r"[+-]?0[xX](?:[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)(?:[pP][+-]?[0-9]+)?")
_DEC_FLOAT_RE = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[+-]?(?:inf|infinity|nan)", re.I)


def _options(text: str, valid_keys):
    """``(key, value)`` pairs of ``text`` as riegeli's ``OptionsParser`` splits
    them: empty items skipped, unknown keys and repeated keys rejected."""
    seen: set[str] = set()
    for item in text.split(","):
        if not item:
            continue
        key, _, value = item.partition(":")
        if key not in valid_keys:
            raise ValueError(f"Unknown option {key}, valid options: {', '.join(valid_keys)}")
        if key in seen:
            raise ValueError(f"Option {key} is present more than once")
        yield key, value, seen
        seen.add(key)


def _invalid(key: str, value: str, valid: str) -> ValueError:
    return ValueError(f"Option {key}: invalid value: {value if value else '(empty)'}, valid values: {valid}")


def _atoi(value: str):
    """absl ``SimpleAtoi``: ASCII whitespace around, optional sign, decimal digits."""
    v = value.strip(_ASCII_SPACE)
    return int(v) if _INT_RE.fullmatch(v) else None


def _atod(value: str):
    """absl ``SimpleAtod``: ASCII whitespace around, decimal or hex float, inf, nan."""
    v = value.strip(_ASCII_SPACE)
    if _HEX_FLOAT_RE.fullmatch(v):
        return float.fromhex(v)
    if _DEC_FLOAT_RE.fullmatch(v):
        return float(v)
    return None


def _int(key: str, value: str, lo: int, hi: int, *, also: str = "") -> int:
    n = _atoi(value)
    if n is None or not lo <= n <= hi:
        raise _invalid(key, value, f"{also}integers in the range [{lo}..{hi}]")
    return n


def _bool(key: str, value: str, empty: bool) -> bool:
    table = {"": empty, "true": True, "false": False}
    if value not in table:
        raise _invalid(key, value, "(empty), true, false")
    return table[value]


def _bytes(key: str, value: str, lo: int, hi: int, *, also: str = "", unit_b: bool = False) -> int:
    """riegeli ``ValueParser::Bytes``: a real with an optional ``[BkKMGTPE]``
    suffix, rounded half away from zero, saturating at 2**64 - 1.

    With ``unit_b``, a multiplier may also be followed by ``B`` (``64MB``
    is ``64M``, 64 * 2**20 bytes): array_record documents its reader sizes
    that way (``array_record_reader.h``: "Example 16MB"; the module's
    docstring: "Default 16MB") although its parser refuses them.
    """
    if unit_b and len(value) >= 2 and value[-1] == "B" and value[-2] in "kKMGTPE":
        value = value[:-1]
    number, scale = value, 1
    if value and value[-1] in _SUFFIX:
        number, scale = value[:-1], _SUFFIX[value[-1]]
    x = _atod(number)
    n = None
    if x is not None and x == x and x >= 0.0:
        x = math.floor(x * scale + 0.5) if x * scale < 2.0**64 else 2**64 - 1
        n = min(int(x), 2**64 - 1)
    if n is None or not lo <= n <= hi:
        raise _invalid(
            key, value, f"{also}integers expressed as reals with optional suffix [BkKMGTPE], in the range [{lo}..{hi}]"
        )
    return n


_WRITER_KEYS = (
    "default", "group_size", "max_parallelism", "saturation_delay_ms", "transpose",
    "transpose_bucket_size", "uncompressed", "brotli", "zstd", "snappy", "window_log",
    "pad_to_block_boundary",
)


def parse_writer_options(text: str = "") -> WriterOptions:
    """Parse an array_record writer options string.

    Follows array_record's ``ArrayRecordWriterBase::Options::FromString``:
    a first pass over every option (unknown keys, repeated keys, ``default``
    not first, bad values of the non-compression options), then the
    compression options in a second pass as riegeli's
    ``CompressorOptions::FromString`` (conflicting compressions, levels,
    ``window_log``). Raises ``ValueError`` with array_record's message.
    ``max_parallelism:auto`` resolves to the CPU count.
    """
    if not isinstance(text, str):
        raise TypeError(f"options must be a str, got {type(text).__name__}")
    kw: dict = {}
    compressor: list[tuple[str, str]] = []
    for key, value, seen in _options(text, _WRITER_KEYS):
        if key == "default":
            if seen:
                raise ValueError("Option default must be first")
        elif key == "group_size":
            kw["group_size"] = _int(key, value, 1, _INT32_MAX)
        elif key == "max_parallelism":
            kw["max_parallelism"] = (
                (os.cpu_count() or 1) if value == "auto" else _int(key, value, 1, _INT32_MAX, also="auto, ")
            )
        elif key == "saturation_delay_ms":
            kw["saturation_delay_ms"] = _int(key, value, 1, _INT32_MAX)
        elif key == "transpose":
            kw["transpose"] = _bool(key, value, True)
        elif key == "transpose_bucket_size":
            kw["transpose_bucket_size"] = (
                _DEFAULT_TRANSPOSE_BUCKET if value == "auto" else _bytes(key, value, 1, 2**64 - 1, also="auto, ")
            )
        elif key == "pad_to_block_boundary":
            # array_record (unlike riegeli's RecordWriter) reads a bare
            # "pad_to_block_boundary" as false.
            kw["pad_to_block_boundary"] = _bool(key, value, False)
        else:  # compression and window_log: parsed in the second pass
            compressor.append((key, value))
    if not any(k in _COMPRESSION_KEYS for k, _ in compressor):
        compressor.append(("zstd", "3"))
    # Second pass, part 1: the compression type; two types conflict.
    compression = None
    for key, _ in compressor:
        if key in _COMPRESSION_KEYS:
            if compression is not None:
                raise ValueError(f"Option {key} conflicts with option {compression}")
            compression = key
    ctype = _COMPRESSION_KEYS[compression]
    # Part 2: levels and window_log, in the order given.
    level = _LEVELS[ctype][2]
    window_log = None
    seen2: set[str] = set()
    for key, value in compressor:
        if key == "window_log":
            if ctype in (NONE, SNAPPY):
                if compression in seen2:
                    raise ValueError(f"Option window_log conflicts with option {compression}")
            elif value != "auto":
                window_log = _int(key, value, *_WINDOW_LOGS[ctype], also="auto, ")
        elif ctype in (NONE, SNAPPY) and "window_log" in seen2:
            raise ValueError(f"Option {key} conflicts with option window_log")
        elif ctype == NONE:
            if value:
                raise _invalid(key, value, "(empty)")
        elif value:
            lo, hi, _ = _LEVELS[ctype]
            level = _int(key, value, lo, hi, also="(empty), ")
        seen2.add(key)
    if ctype == SNAPPY:
        level = _LEVELS[SNAPPY][2]
    if ctype == ZSTD and window_log is None:
        window_log = _ZSTD_DEFAULT_WINDOW_LOG
    return WriterOptions(compression=ctype, level=level, window_log=window_log, **kw)


_READER_KEYS = ("max_parallelism", "readahead_buffer_size", "index_storage_option", "footer_prefetch_bytes")


def parse_reader_options(text: str = "") -> ReaderOptions:
    """Parse an array_record reader options string.

    Keys: ``readahead_buffer_size`` (bytes, ``auto`` = 16 MiB, 0 to optimise
    random access), ``max_parallelism`` (``auto`` or N >= 0),
    ``index_storage_option`` (``in_memory`` or ``offloaded``),
    ``footer_prefetch_bytes`` (bytes; accepted, the footer is mapped). Sizes
    take riegeli's suffixes ``[BkKMGTPE]`` (powers of 1024) and, as
    array_record's documentation writes them, ``kB``/``KB``/``MB``/``GB``/...
    for the same sizes (``64MB`` == ``64M`` == 67108864 bytes); Google's
    parser refuses the second form. Raises
    ``ValueError`` on an unknown or repeated key, a bad value, or
    ``index_storage_option:offloaded`` without ``footer_prefetch_bytes:0``,
    as array_record does.
    """
    if not isinstance(text, str):
        raise TypeError(f"options must be a str, got {type(text).__name__}")
    kw: dict = {}
    for key, value, _ in _options(text, _READER_KEYS):
        if key == "max_parallelism":
            kw[key] = None if value == "auto" else _int(key, value, 0, _INT32_MAX, also="auto, ")
        elif key == "readahead_buffer_size":
            kw[key] = 16 * 2**20 if value == "auto" else _bytes(
                key, value, 0, 2**30, also="auto, ", unit_b=True)
        elif key == "footer_prefetch_bytes":
            kw[key] = None if value == "auto" else _bytes(
                key, value, 0, 2**30, also="auto, ", unit_b=True)
        else:
            if value not in ("", "in_memory", "offloaded"):
                raise _invalid(key, value, "(empty), in_memory, offloaded")
            kw[key] = value or "in_memory"
    if kw.get("index_storage_option") == "offloaded" and kw.get("footer_prefetch_bytes") != 0:
        raise ValueError("footer_prefetch_bytes > 0 is only supported with index_storage_option:in_memory.")
    return ReaderOptions(**kw)
