"""arrayfs: ArrayRecord datasets as Python objects, a FUSE directory, and an NNX source.

``import arrayfs`` needs numpy and the codecs only; the FUSE daemon and the
Flax NNX source load their dependencies when first used.
"""

from .errors import (
    ArrayRecordError,
    CorruptChunkError,
    NotArrayRecordError,
    TruncatedFileError,
    UnsupportedChunkError,
)
from .dataset import ArrayRecordDataSource, RefreshResult, ShardInfo
from .reader import ArrayRecordReader, RecordIndexError
from .writer import ArrayRecordWriter

__version__ = "0.1.0"

__all__ = [
    "ArrayRecordError",
    "CorruptChunkError",
    "NotArrayRecordError",
    "TruncatedFileError",
    "UnsupportedChunkError",
    "ArrayRecordReader",
    "ArrayRecordDataSource",
    "ShardInfo",
    "RefreshResult",
    "ArrayRecordWriter",
    "RecordIndexError",
]
