"""Byte sources: where a file's bytes live (local files, fsspec URLs).

The bottom layer of arrayfs: nothing here knows about Riegeli or
ArrayRecord. :func:`open_source` gives a :class:`ByteSource` for a path or
URL; :mod:`.listing` finds files; :mod:`.handles` bounds the descriptors
local files keep open.
"""

from .base import ByteSource, SourceChangedError, SourceTruncatedError
from .handles import POOL, set_max_open_files
from .listing import Entry, glob, has_magic, listdir, open_source, stat
from .urls import StorageError, filesystem, is_remote, local_path, scheme

__all__ = [
    "ByteSource",
    "SourceChangedError",
    "SourceTruncatedError",
    "StorageError",
    "Entry",
    "POOL",
    "set_max_open_files",
    "open_source",
    "stat",
    "glob",
    "listdir",
    "has_magic",
    "filesystem",
    "is_remote",
    "local_path",
    "scheme",
]
