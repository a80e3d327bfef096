"""Same public names as ``array_record.python.array_record_module``.

``ArrayRecordReader(path, options="", **kwargs)`` and
``ArrayRecordWriter(path, options="")`` with the wheel's methods; see
:class:`arrayfs.reader.ArrayRecordReader` and
:class:`arrayfs.writer.ArrayRecordWriter`.
"""

from ..reader import ArrayRecordReader
from ..writer import ArrayRecordWriter

__all__ = ["ArrayRecordReader", "ArrayRecordWriter"]
