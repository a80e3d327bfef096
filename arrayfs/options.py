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
_BYTES_RE = re.compile(r"^([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)([BkKMGTPE]?)$")
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

    An mmap reader has no read-ahead buffer to size: ``readahead_buffer_size``
    (bytes) only decides whether sequential reads decode ahead, and
    ``max_parallelism`` bounds the threads used for batched reads.
    """

    readahead_buffer_size: int = 16 * 2**20
    max_parallelism: int | None = None
    index_storage_option: str = "in_memory"
    footer_prefetch_bytes: int | None = None


def _split(text: str, where: str):
    seen: dict[str, str | None] = {}
    for item in text.split(","):
        if not item:
            continue
        key, sep, value = item.partition(":")
        seen[key] = value if sep else None
        yield key, (value if sep else ""), seen


def _int(key: str, value: str, lo: int, hi: int) -> int:
    try:
        if not re.fullmatch(r"[+-]?[0-9]+", value):
            raise ValueError
        n = int(value)
    except ValueError:
        n = None
    if n is None or not lo <= n <= hi:
        raise ValueError(
            f"Option {key}: invalid value: {value}, valid values: integers in the range [{lo}..{hi}]"
        )
    return n


def _bool(key: str, value: str, empty: bool) -> bool:
    table = {"": empty, "true": True, "false": False}
    if value not in table:
        raise ValueError(f"Option {key}: invalid value: {value}, valid values: (empty), true, false")
    return table[value]


def _bytes(key: str, value: str, lo: int, hi: int) -> int:
    m = _BYTES_RE.match(value)
    if not m:
        raise ValueError(f"Option {key}: invalid value: {value}, valid values: a size in bytes like 4M")
    n = int(float(m.group(1)) * _SUFFIX[m.group(2)])
    if not lo <= n <= hi:
        raise ValueError(f"Option {key}: invalid value: {value}, valid values: sizes in [{lo}..{hi}]")
    return n


_WRITER_KEYS = (
    "default", "group_size", "max_parallelism", "saturation_delay_ms", "transpose",
    "transpose_bucket_size", "uncompressed", "brotli", "zstd", "snappy", "window_log",
    "pad_to_block_boundary",
)


def parse_writer_options(text: str = "") -> WriterOptions:
    """Parse an array_record writer options string.

    Raises ``ValueError`` naming the option for unknown keys, out-of-range
    values, and conflicting compressions, with the same acceptance rules as
    array_record. ``max_parallelism:auto`` resolves to the CPU count.
    """
    if not isinstance(text, str):
        raise TypeError(f"options must be a str, got {type(text).__name__}")
    kw: dict = {}
    compression = None
    level = None
    window_log_text = None
    for key, value, _ in _split(text, "writer"):
        if key not in _WRITER_KEYS:
            raise ValueError(f"Unknown option {key}, valid options: {', '.join(_WRITER_KEYS)}")
        if key == "default":
            if value:
                raise ValueError(f"Option default: invalid value: {value}, valid values: (empty)")
        elif key == "group_size":
            kw["group_size"] = _int(key, value, 1, _INT32_MAX)
        elif key == "max_parallelism":
            kw["max_parallelism"] = (os.cpu_count() or 1) if value == "auto" else _int(key, value, 1, _INT32_MAX)
        elif key == "saturation_delay_ms":
            kw["saturation_delay_ms"] = _int(key, value, 1, _INT32_MAX)
        elif key == "transpose":
            kw["transpose"] = _bool(key, value, True)
        elif key == "transpose_bucket_size":
            kw["transpose_bucket_size"] = (
                _DEFAULT_TRANSPOSE_BUCKET if value == "auto" else _bytes(key, value, 1, 2**64 - 1)
            )
        elif key == "pad_to_block_boundary":
            kw["pad_to_block_boundary"] = _bool(key, value, False)
        elif key in _COMPRESSION_KEYS:
            ctype = _COMPRESSION_KEYS[key]
            if compression is not None and compression != ctype:
                other = next(k for k, v in _COMPRESSION_KEYS.items() if v == compression)
                raise ValueError(f"Option {key} conflicts with option {other}")
            compression = ctype
            lo, hi, default = _LEVELS[ctype]
            if ctype == NONE:
                if value:
                    raise ValueError(f"Option uncompressed: invalid value: {value}, valid values: (empty)")
                level = 0
            else:
                level = default if value == "" else _int(key, value, lo, hi)
        else:  # window_log
            window_log_text = value
    if compression is None:
        compression, level = ZSTD, 3
    window_log = None
    if window_log_text is not None:
        if compression == NONE:
            raise ValueError("Option window_log conflicts with option uncompressed")
        if compression == SNAPPY:
            raise ValueError("Option window_log conflicts with option snappy")
        if window_log_text != "auto":
            window_log = _int("window_log", window_log_text, *_WINDOW_LOGS[compression])
    if compression == ZSTD and window_log is None:
        window_log = _ZSTD_DEFAULT_WINDOW_LOG
    return WriterOptions(compression=compression, level=level, window_log=window_log, **kw)


_READER_KEYS = ("max_parallelism", "readahead_buffer_size", "index_storage_option", "footer_prefetch_bytes")


def parse_reader_options(text: str = "") -> ReaderOptions:
    """Parse an array_record reader options string.

    Keys: ``readahead_buffer_size`` (bytes, ``auto`` = 16 MiB, 0 to optimise
    random access), ``max_parallelism`` (``auto`` or N >= 0),
    ``index_storage_option`` (``in_memory`` or ``offloaded``),
    ``footer_prefetch_bytes`` (bytes; accepted, the footer is mapped). Raises
    ``ValueError`` on an unknown key or bad value.
    """
    if not isinstance(text, str):
        raise TypeError(f"options must be a str, got {type(text).__name__}")
    kw: dict = {}
    for key, value, _ in _split(text, "reader"):
        if key not in _READER_KEYS:
            raise ValueError(f"Unknown option {key}, valid options: {', '.join(_READER_KEYS)}")
        if key == "max_parallelism":
            kw[key] = None if value == "auto" else _int(key, value, 0, _INT32_MAX)
        elif key == "readahead_buffer_size":
            kw[key] = 16 * 2**20 if value == "auto" else _bytes(key, value, 0, 2**30)
        elif key == "footer_prefetch_bytes":
            kw[key] = None if value == "auto" else _bytes(key, value, 0, 2**30)
        else:
            if value not in ("", "in_memory", "offloaded"):
                raise ValueError(
                    f"Option index_storage_option: invalid value: {value}, valid values: in_memory, offloaded"
                )
            kw[key] = value or "in_memory"
    return ReaderOptions(**kw)
