"""Apache Beam IO for ArrayRecord, and dataset conversion (``arrayfs[beam]``).

* :class:`WriteToArrayRecord`: an atomic file sink writing ArrayRecord shards
  through Beam's ``FileSystems`` (``gs://``, ``s3://``, local), with any
  writer options.
* :class:`ReadFromArrayRecord`: a splittable source; bundles are record
  ranges aligned to chunks.
* :func:`convert`: TFRecord, JSON lines, text lines, parquet or plain files
  into ArrayRecord shards on any Beam runner (``arrayfs convert``).
"""

from .convert import ConvertError, ConvertResult, convert
from .sink import WriteToArrayRecord
from .source import ReadFromArrayRecord

__all__ = ["WriteToArrayRecord", "ReadFromArrayRecord", "convert", "ConvertResult", "ConvertError"]
