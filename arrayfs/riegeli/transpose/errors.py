"""The one exception of the transposed-chunk decoder."""

from __future__ import annotations

from typing import NoReturn

__all__ = ["TransposeError", "fail"]


class TransposeError(ValueError):
    """A transposed chunk is malformed. The message gives the byte position
    within the chunk data (or within a decompressed part of it); the chunk
    layer adds the file and the chunk offset."""


def fail(msg: str) -> NoReturn:
    raise TransposeError(msg)
