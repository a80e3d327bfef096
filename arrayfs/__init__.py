"""arrayfs: ArrayRecord datasets as Python objects, a FUSE directory, and an NNX source.

``import arrayfs`` needs numpy and the codecs only; the FUSE daemon and the
Flax NNX source load their dependencies when first used.
"""

from .dataset import ArrayRecordDataSource, DatasetSnapshot, RecordKeyError, RefreshResult, ShardInfo
from .errors import (
    ArrayRecordError,
    CorruptChunkError,
    FileChangedError,
    NotArrayRecordError,
    PendingShardWarning,
    TruncatedFileError,
    UnsupportedChunkError,
)
from .reader import ArrayRecordReader, RecordIndexError
from .storage import StorageError
from .writer import ArrayRecordWriter

__version__ = "0.1.0"

# The NNX source needs jax and flax; they load on first use, so that
# `import arrayfs` stays light for the reader, the dataset and the mount.
_NNX_NAMES = ("ArrayRecordSourceModule", "ArrayRecordSourceConfig", "from_source", "Pipeline")


def __getattr__(name):
    if name in _NNX_NAMES:
        from . import nnx  # without jax or flax: an ImportError naming arrayfs[jax]

        return getattr(nnx, name)
    raise AttributeError(f"module 'arrayfs' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_NNX_NAMES))

__all__ = [
    "ArrayRecordError",
    "CorruptChunkError",
    "FileChangedError",
    "NotArrayRecordError",
    "PendingShardWarning",
    "TruncatedFileError",
    "UnsupportedChunkError",
    "ArrayRecordReader",
    "ArrayRecordDataSource",
    "DatasetSnapshot",
    "ShardInfo",
    "RefreshResult",
    "ArrayRecordWriter",
    "RecordIndexError",
    "RecordKeyError",
    "StorageError",
    *_NNX_NAMES,
]
