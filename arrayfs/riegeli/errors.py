"""The errors of the Riegeli container (and, re-exported by
:mod:`arrayfs.errors`, of all of arrayfs).

Every error about a file names the file and, where known, the byte offset of
the chunk and the range of records involved, so that a message read in a log
of a job over thousands of shards says where to look. The container knows
offsets, not paths: layers above fill the path in with
:meth:`RiegeliError.located`.
"""

from __future__ import annotations

__all__ = ["RiegeliError", "CorruptChunkError", "TruncatedFileError", "UnsupportedChunkError"]


class RiegeliError(ValueError):
    """A file is not a readable Riegeli file, or a read of it failed.

    A subclass of ``ValueError`` (the input is bad, not the system), so code
    that catches ``ValueError`` around a reader keeps working.

    Attributes:
        path: the file (``str``) or ``None`` when reading from memory.
        offset: byte offset in the file of the chunk involved, or ``None``.
        records: ``(start, stop)`` half-open range of record indices the
            error affects, or ``None``.
        reason: the bare description, without the location.
    """

    def __init__(self, reason: str, *, path=None, offset=None, records=None):
        self.reason = reason
        self.path = None if path is None else str(path)
        self.offset = offset
        self.records = records
        super().__init__(self._format())

    def _format(self) -> str:
        where = []
        if self.path is not None:
            where.append(self.path)
        if self.offset is not None:
            where.append(f"chunk at byte {self.offset}")
        if self.records is not None:
            start, stop = self.records
            where.append(f"records [{start}, {stop})")
        return f"{': '.join([', '.join(where)] if where else [])}{': ' if where else ''}{self.reason}"

    def __reduce__(self):
        # Exceptions cross process boundaries (Grain and PyTorch workers);
        # keyword-only arguments need an explicit reduce.
        return (_rebuild, (type(self), self.reason, self.path, self.offset, self.records))

    def located(self, *, path=None, offset=None, records=None) -> "RiegeliError":
        """A copy of this error with missing location fields filled in."""
        return type(self)(
            self.reason,
            path=self.path if self.path is not None else path,
            offset=self.offset if self.offset is not None else offset,
            records=self.records if self.records is not None else records,
        )


def _rebuild(cls, reason, path, offset, records):
    return cls(reason, path=path, offset=offset, records=records)


class CorruptChunkError(RiegeliError):
    """A hash did not match or a chunk's contents contradict its header."""


class TruncatedFileError(RiegeliError):
    """The file ends before a structure that its headers say is there."""


class UnsupportedChunkError(RiegeliError):
    """The chunk is valid Riegeli but uses an encoding this reader lacks."""
