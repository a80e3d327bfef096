"""The one exception family arrayfs raises for bad files and bad options.

The family's base is the Riegeli container's :class:`RiegeliError`, named
here :class:`ArrayRecordError` (the two names are one class), so that the
container raises its own errors without knowing about ArrayRecord and
``except arrayfs.ArrayRecordError`` catches every one of them. Every error
about a file names the file and, where known, the byte offset of the chunk
and the range of records involved.
"""

from __future__ import annotations

from .riegeli.errors import CorruptChunkError, RiegeliError, TruncatedFileError, UnsupportedChunkError

__all__ = [
    "ArrayRecordError",
    "CorruptChunkError",
    "TruncatedFileError",
    "NotArrayRecordError",
    "UnsupportedChunkError",
    "FileChangedError",
    "PendingShardWarning",
]

#: The base of every arrayfs error about a file; a ``ValueError``. Its
#: attributes: ``path``, ``offset`` (byte offset of the chunk), ``records``
#: (half-open range of record indices) and ``reason``.
ArrayRecordError = RiegeliError


class NotArrayRecordError(ArrayRecordError):
    """The file is not a Riegeli file, or is Riegeli but has no ArrayRecord
    footer and postscript (for example a plain Riegeli records file, or a
    file still being written)."""


class FileChangedError(ArrayRecordError):
    """The file was replaced, rewritten or resized since it was opened
    (local: device, inode, size or mtime differ; remote: size, ETag or
    generation differ). Reads of it raise this rather than return bytes of
    another version; a dataset's :meth:`refresh` picks up the new file."""


class PendingShardWarning(UserWarning):
    """A shard matched by a dataset's patterns could not be opened at a
    :meth:`~arrayfs.ArrayRecordDataSource.refresh` (for example, a file
    still being written, with no footer yet) and is left out until a later
    refresh opens it. The message names the file and the reason; filter
    by this class, not by the message."""
