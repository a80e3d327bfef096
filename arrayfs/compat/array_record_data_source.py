"""Same public names as ``array_record.python.array_record_data_source``.

``ArrayRecordDataSource(paths, reader_options=None, reader_pool_size=None)``
takes what the wheel's takes: a path, a ``pathlib.Path``, a TFDS-style
``FileInstruction`` (``filename``, ``skip``, ``take``), or a sequence of
them, and reads through :class:`arrayfs.dataset.ArrayRecordDataSource`.
``reader_options`` and ``reader_pool_size`` are accepted: an mmap reader
needs no reader pool, and the options only tune the wheel's C++ buffers.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import re
import typing
from typing import Protocol, Sequence, SupportsIndex, TypeVar, Union

from .. import dataset as _dataset
from ..options import parse_reader_options

__all__ = [
    "ArrayRecordDataSource",
    "RandomAccessDataSource",
    "FileInstruction",
    "PathLikeOrFileInstruction",
    "ArrayRecordDataSourcePaths",
]

T = TypeVar("T")


@typing.runtime_checkable
class RandomAccessDataSource(Protocol[T]):
    """What Grain calls a data source: ``len``, ``[i]`` and batched ``__getitems__``."""

    def __len__(self) -> int: ...

    def __getitem__(self, record_key: SupportsIndex) -> T: ...

    def __getitems__(self, record_keys: Sequence[SupportsIndex]) -> Sequence[T]: ...


@typing.runtime_checkable
class FileInstruction(Protocol):
    """TFDS's file instruction: records ``[skip, skip + take)`` of ``filename``."""

    filename: str
    skip: int
    take: int
    examples_in_shard: int


PathLikeOrFileInstruction = Union[str, os.PathLike, FileInstruction]
ArrayRecordDataSourcePaths = Union[PathLikeOrFileInstruction, Sequence[PathLikeOrFileInstruction]]


def _file_name(path) -> str:
    """The name the wheel hashes for one element of ``paths``."""
    if isinstance(path, FileInstruction):
        return os.fspath(path.filename)
    name = os.fspath(path)
    m = re.fullmatch(r"(.*)\[(\d+):(\d+)\]", name)
    return m.group(1) if m else name


class ArrayRecordDataSource(_dataset.ArrayRecordDataSource):
    """The wheel's constructor signature over arrayfs's dataset.

    Raises ``ValueError`` for an empty sequence or an unsupported element
    type, as the wheel does, and for unknown ``reader_options`` keys.
    """

    def __init__(self, paths, reader_options: dict | None = None, reader_pool_size: int | None = None):
        if isinstance(paths, (str, pathlib.PurePath, FileInstruction)):
            paths = [paths]
        elif isinstance(paths, Sequence):
            if len(paths) == 0:
                raise ValueError("Paths sequence can not be of 0 length")
            if not all(isinstance(p, (str, pathlib.PurePath, FileInstruction)) for p in paths):
                raise ValueError(
                    "All elements in a path sequence must be of type: String, pathlib.Path, or FileInstruction."
                )
        else:
            raise ValueError(
                "Unsupported path format was used. Path format must be a Sequence, String, pathlib.Path or "
                "FileInstruction."
            )
        if reader_options:
            parse_reader_options(",".join(f"{k}:{v}" for k, v in reader_options.items()))
        super().__init__(paths)
        self._repr_names = [_file_name(p) for p in paths]

    def __repr__(self) -> str:
        """``ArrayRecordDataSource(hash_of_paths=<40 hex>)``, the wheel's
        repr for the same ``paths``: SHA-1 over each file name as given
        (a ``[start:stop]`` suffix dropped, a ``FileInstruction``'s
        ``filename``), so that a Grain checkpoint taken with the wheel
        restores here and the other way round (array_record
        ``python/array_record_data_source.py``, ``__repr__``)."""
        h = hashlib.sha1()
        for name in self._repr_names:
            h.update(name.encode())
        return f"ArrayRecordDataSource(hash_of_paths={h.hexdigest()})"

    def __setstate__(self, state):
        super().__setstate__(state)
        self._repr_names = state["repr_names"]

    def __getstate__(self):
        state = super().__getstate__()
        state["repr_names"] = self._repr_names
        return state

    def __exit__(self, *exc):
        # The wheel's source closes its readers on exit and opens them again
        # on the next read; code relies on that, so release the mappings but
        # keep the source usable (each shard reopens on its next read).
        self.release_files()
