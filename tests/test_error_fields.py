"""Errors carry their reason and path as fields: callers branch on those
(and on the type), never on the message text."""

from __future__ import annotations

import os
import pickle

import pytest

from arrayfs import ArrayRecordWriter, FileChangedError, StorageError
from arrayfs.file import ArrayRecordFile
from arrayfs.storage import SourceChangedError, SourceTruncatedError
from arrayfs.storage.local import LocalFile


def test_storage_errors_carry_reason_and_path_and_pickle_with_them():
    for e in (StorageError("store refused", path="s3://b/k"),
              SourceChangedError("replaced", path="/d/a: b", truncated=True, size=3),
              SourceTruncatedError("ends early", path="/d/x", offset=10, length=5, size=12)):
        assert str(e) == f"{e.path}: {e.reason}"
        back = pickle.loads(pickle.dumps(e))
        assert type(back) is type(e) and str(back) == str(e) and back.__dict__ == e.__dict__
    assert StorageError("no path").path is None and str(StorageError("no path")) == "no path"


def test_a_changed_file_reports_the_reason_without_the_path(tmp_path):
    # A path that contains ": " must not leak into the reason, nor be cut.
    d = tmp_path / "a: b"
    d.mkdir()
    path = str(d / "x.array_record")
    with ArrayRecordWriter(path, "group_size:1,uncompressed") as w:
        for i in range(50):
            w.write(bytes([i]) * 100)
    src = LocalFile(path, mmap="never")
    try:
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
        with pytest.raises(SourceChangedError) as got:
            src.check()
        assert got.value.path == path and path not in got.value.reason and got.value.truncated
    finally:
        src.close()
    with ArrayRecordWriter(path, "group_size:1,uncompressed") as w:
        w.write(b"x" * 100)
    f = ArrayRecordFile(LocalFile(path, mmap="never"))
    try:
        os.utime(path, ns=(1, 1))
        with pytest.raises(FileChangedError) as got:
            f.check()
        assert got.value.path == path and got.value.reason == "the file was modified (its mtime changed) since it was opened"
    finally:
        f.close()
