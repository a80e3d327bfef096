"""The compat modules have Google's public names and run code written for
the wheel."""

from __future__ import annotations

import dataclasses
import pickle

import pytest
from _dataset_shards import google_ds

google = pytest.importorskip("array_record.python.array_record_module", reason="array-record wheel not installed")

pytestmark = pytest.mark.usefixtures("quiet_absl")


# -- compat modules ----------------------------------------------------------------------------


def public_names(module) -> set:
    """Names a user imports from ``module``: not private, not modules, and
    defined by that module (classes, functions, type aliases)."""
    import types
    import typing

    out = set()
    for name in dir(module):
        if name.startswith("_"):
            continue
        obj = getattr(module, name)
        if isinstance(obj, (types.ModuleType, typing.TypeVar)):
            continue
        home = getattr(obj, "__module__", None)
        if home == module.__name__ or (
            typing.get_origin(obj) is typing.Union and not hasattr(typing, name)
        ):
            out.add(name)
    return out


def test_compat_modules_have_googles_public_names():
    from arrayfs.compat import array_record_data_source as compat_ds
    from arrayfs.compat import array_record_module as compat_m

    assert {"ArrayRecordReader", "ArrayRecordWriter"} <= public_names(google)
    assert public_names(google) <= set(dir(compat_m))
    assert {"ArrayRecordDataSource", "FileInstruction"} <= public_names(google_ds)
    for cls in ("ArrayRecordReader", "ArrayRecordWriter"):
        theirs = {n for n in dir(getattr(google, cls)) if not n.startswith("_")}
        assert theirs <= set(dir(getattr(compat_m, cls))), cls
    theirs = {n for n in dir(google_ds.ArrayRecordDataSource) if not n.startswith("_")}
    assert theirs <= set(dir(compat_ds.ArrayRecordDataSource))
    for dunder in ("__len__", "__getitem__", "__getitems__", "__enter__", "__exit__", "__iter__",
                   "__getstate__", "__setstate__", "__repr__"):
        assert hasattr(compat_ds.ArrayRecordDataSource, dunder)


def test_compat_data_source_module_has_the_type_aliases():
    """Grain's own data_sources.py does
    ``from array_record.python.array_record_data_source import ArrayRecordDataSource, PathLikeOrFileInstruction``."""
    from arrayfs.compat import array_record_data_source as compat_ds

    missing = public_names(google_ds) - set(dir(compat_ds))
    assert not missing, f"missing from arrayfs.compat.array_record_data_source: {sorted(missing)}"


def wheel_code(m, d, path: str) -> list:
    """Code written against the wheel's two modules (``m``: array_record_module,
    ``d``: array_record_data_source); returns what it saw."""
    out = []
    w = m.ArrayRecordWriter(path, "group_size:1")
    for i in range(20):
        w.write(b"rec%03d" % i + bytes(i))
    out.append(("writer", w.ok(), w.is_open()))
    w.close()
    out.append(("writer closed", w.is_open()))
    r = m.ArrayRecordReader(path, options="readahead_buffer_size:0", file_reader_buffer_size=32768)
    out.append(("reader", r.num_records(), r.ok(), r.is_open(), r.writer_options_string()))
    out.append(("sequential", r.read(), r.read(), r.record_index()))
    r.seek(5)
    out.append(("seek", r.record_index(), r.read()))
    out.append(("indices", r.read([3, 1, 19])))
    out.append(("range", r.read(2, 5)))
    out.append(("all", r.read_all()))
    r.close()
    out.append(("reader closed", r.is_open()))
    ds = d.ArrayRecordDataSource([path, path + "[2:7]"])
    out.append(("source", len(ds), ds[0], ds[21], ds.__getitems__([24, 0, 3])))
    ds.__exit__(None, None, None)
    with d.ArrayRecordDataSource(path) as ds2:
        out.append(("with", len(ds2), list(ds2)[-1]))
    import pathlib

    ds3 = d.ArrayRecordDataSource(pathlib.Path(path), reader_options={"index_storage_option": "in_memory"})
    out.append(("pathlib", len(ds3), ds3[19]))
    for bad in ([], 42):
        try:
            d.ArrayRecordDataSource(bad)
            out.append(("no error", bad))
        except ValueError:
            out.append(("ValueError", bad))
    return out


def test_compat_source_after_exit_like_googles(shards):
    """Google's ``__exit__`` closes the readers and reopens them on the next
    read; a source used after its ``with`` block keeps working there. Ours
    must not silently turn into an empty dataset."""
    from arrayfs.compat import array_record_data_source as compat_ds

    _, paths, records = shards
    seen = []
    for d in (google_ds, compat_ds):
        with d.ArrayRecordDataSource(paths) as ds:
            ds[0]
        try:
            seen.append((len(ds), ds[1], ds.__getitems__([2, 3])))
        except Exception as e:  # noqa: BLE001
            seen.append(("error", type(e).__name__, str(e)))
    assert seen[0] == (len(records), records[1], records[2:4])
    assert seen[1] == seen[0]


def test_out_of_range_keys_raise_what_the_wheel_raises(shards):
    """The wheel raises ValueError for a key outside [0, num_records); ours
    raises an error that is both that and an IndexError."""
    import arrayfs
    from arrayfs.compat import array_record_data_source as compat_ds

    _, paths, records = shards
    n = len(records)
    for make in (google_ds.ArrayRecordDataSource, compat_ds.ArrayRecordDataSource, arrayfs.ArrayRecordDataSource):
        ds = make(paths)
        for key in (n, -1):
            with pytest.raises(ValueError):
                ds[key]
        with pytest.raises(ValueError):
            ds.__getitems__([1, n + 7])
        if make is not google_ds.ArrayRecordDataSource:
            with pytest.raises(IndexError):
                ds[n]
            with pytest.raises(arrayfs.RecordKeyError, match=f"record index {n} out of range"):
                ds.__getitems__([n])


def test_code_written_for_the_wheel_runs_with_the_import_changed(tmp_path):
    from array_record.python import array_record_data_source as gd
    from array_record.python import array_record_module as gm

    from arrayfs.compat import array_record_data_source as od
    from arrayfs.compat import array_record_module as om

    theirs = wheel_code(gm, gd, str(tmp_path / "g.array_record"))
    ours = wheel_code(om, od, str(tmp_path / "o.array_record"))
    assert ours == theirs
    # and each side reads what the other wrote
    assert wheel_code(gm, od, str(tmp_path / "x.array_record")) == theirs
    assert wheel_code(om, gd, str(tmp_path / "y.array_record")) == theirs


@dataclasses.dataclass
class _FileInstruction:
    filename: str
    skip: int
    take: int
    examples_in_shard: int


def test_compat_repr_is_googles(shards):
    """Grain stores ``repr(source)`` in checkpoints: the compat source's repr
    is the wheel's, character for character, for every form of ``paths``
    (array_record's own ``test_repr`` regex included)."""
    import pathlib
    import re

    from arrayfs.compat import array_record_data_source as compat_ds

    _, paths, _ = shards

    forms = [
        paths,
        [pathlib.Path(p) for p in paths],
        paths[0],
        [paths[0] + "[2:7]", paths[1]],
        [_FileInstruction(paths[0], 1, 3, 10), _FileInstruction(paths[1], 0, 2, 10)],
    ]
    for form in forms:
        with google_ds.ArrayRecordDataSource(form) as theirs, compat_ds.ArrayRecordDataSource(form) as mine:
            assert re.fullmatch(r"ArrayRecordDataSource\(hash_of_paths=[\w]+\)", repr(mine))
            assert repr(mine) == repr(theirs), form
            assert repr(pickle.loads(pickle.dumps(mine))) == repr(theirs)
    one = compat_ds.ArrayRecordDataSource(paths[:1])
    two = compat_ds.ArrayRecordDataSource(paths[:2])
    assert repr(one) != repr(two)
    one.close()
    two.close()
