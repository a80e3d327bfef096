"""Google's array_record wheel, the oracle of the tests: write a file with
its writer, read one with its reader."""

from __future__ import annotations

import pytest

google = pytest.importorskip("array_record.python.array_record_module")


def gwrite(path, options: str, records) -> str:
    """Write ``records`` with Google's writer; returns the path as ``str``."""
    w = google.ArrayRecordWriter(str(path), options)
    for r in records:
        w.write(r)
    w.close()
    return str(path)


def gread(path) -> list[bytes]:
    """Every record of ``path``, read by Google's reader."""
    r = google.ArrayRecordReader(str(path))
    try:
        return r.read_all()
    finally:
        r.close()
