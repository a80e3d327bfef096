"""Fuzz target: open an ArrayRecord file and read every record.

Input: the bytes of a whole file, served by an in-memory
:class:`arrayfs.storage.ByteSource`. Passes when opening and reading end
in records or in an :class:`arrayfs.ArrayRecordError` naming the file, and
what is read agrees with itself: the sizes from :meth:`record_sizes` (what
the mount's ``stat`` shows) are the lengths of the records served, and the
batched and one-by-one reads return the same bytes.

Run: ``python fuzz/fuzz_file.py [libFuzzer flags] fuzz/corpus/file``.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _harness  # noqa: E402

with _harness.instrumented():
    import numpy as np

    from arrayfs.errors import ArrayRecordError
    from arrayfs.file import ArrayRecordFile
    from arrayfs.storage import ByteSource, SourceChangedError, SourceTruncatedError, StorageError


class MemorySource(ByteSource):
    """A file held in memory: the storage seam with no storage."""

    def __init__(self, data: bytes, name: str = "<fuzz input>"):
        self.name = name
        self.size = len(data)
        self._data = data

    def read(self, offset: int, length: int) -> bytes:
        self._check_range(offset, length)
        return self._data[offset : offset + length]


NAME = "<fuzz input>"


def _read_everything(data: bytes) -> None:
    with ArrayRecordFile(MemorySource(data, NAME)) as f:
        n = f.num_records
        idx = f.index()
        assert len(idx.offsets) == f.num_chunks and int(idx.first[-1]) == n, (idx, n)
        sizes = f.record_sizes(0, n)
        records = f.read_records(np.arange(n, dtype=np.int64))
        assert len(records) == n
        got = [len(r) for r in records]
        assert got == sizes.tolist(), f"record_sizes {sizes.tolist()[:8]} != lengths served {got[:8]}"
        for i in sorted({0, n // 2, n - 1}):
            if 0 <= i < n:
                assert f.read_record(i) == records[i], f"read_record({i}) != read_records()[{i}]"
        f.read_metadata_chunk()


def check(data: bytes) -> None:
    try:
        _read_everything(data)
    except (SourceTruncatedError, SourceChangedError) as e:
        # The file layer turns these into ArrayRecordErrors naming the file.
        raise AssertionError(f"storage error escaped the file layer: {e!r}") from e
    except ArrayRecordError as e:
        assert e.path == NAME, f"error does not name the file: {e!r}"
        raise


# A memory source raises no other StorageError; the file layer documents
# them (OSErrors) for real storage.
EXPECTED = (ArrayRecordError, StorageError)

if __name__ == "__main__":
    _harness.main(check, EXPECTED, mutator=_harness.riegeli_mutator())
