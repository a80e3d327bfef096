"""A TFDS dataset directory: where it is, and what its ``dataset_info.json``
says (splits, shard lengths, file names).

Facts from TFDS's ``core/dataset_info.py``, ``core/splits.py`` and
``core/naming.py``: ``dataset_info.json`` is the JSON form of a
``DatasetInfo`` message (int64 fields as strings); each split has
``shardLengths`` and a ``filepathTemplate`` (default
``{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}``) whose ``SHARD_INDEX`` and
``NUM_SHARDS`` are zero-padded to 5 digits; ``fileFormat`` (with
``alternativeFileFormats``) names the shards' format. A dataset version
directory is ``<data_dir>/<name>[/<config>]/<version>``.

Files are read through arrayfs's storage layer: local paths and fsspec
URLs alike, with ``storage_options``.
"""

from __future__ import annotations

import json
import os
import re

from .. import storage
from .splits import SplitInfo

__all__ = ["DatasetDir", "resolve_directory", "read_text", "DEFAULT_TEMPLATE"]

DEFAULT_TEMPLATE = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"
_VERSION = re.compile(r"^\d+\.\d+\.\d+$")


def _join(directory: str, name: str) -> str:
    return directory.rstrip("/") + "/" + name if storage.is_remote(directory) else os.path.join(directory, name)


def read_text(path: str, storage_options=None) -> str | None:
    """A small file's text (UTF-8), or ``None`` when it does not exist.

    Raises:
        StorageError: the store fails; ``UnicodeDecodeError`` for a file
            that is not UTF-8.
    """
    try:
        entry = storage.stat(path, storage_options)
    except FileNotFoundError:
        return None
    if entry.is_dir:
        return None
    with storage.open_source(path, storage_options, entry=entry) as src:
        return src.read(0, src.size).decode("utf-8")


def _subdirs(path: str, storage_options) -> list[str]:
    if not storage.is_remote(path):
        local = storage.local_path(path)
        try:
            return [n for n in os.listdir(local) if os.path.isdir(os.path.join(local, n))]
        except FileNotFoundError:
            return []
    fs, p = storage.filesystem(path, storage_options)
    try:
        return [e["name"].rstrip("/").rsplit("/", 1)[-1] for e in fs.ls(p, detail=True) if e.get("type") == "directory"]
    except FileNotFoundError:
        return []


def default_data_dir() -> str:
    """TFDS's default: ``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets``."""
    return os.environ.get("TFDS_DATA_DIR") or os.path.join(os.path.expanduser("~"), "tensorflow_datasets")


def resolve_directory(name_or_dir: str, data_dir: str | None = None, storage_options=None) -> str:
    """The version directory (the one holding ``dataset_info.json``) of
    ``name_or_dir``: that directory itself, or ``name[/config][:version]``
    under ``data_dir`` (default :func:`default_data_dir`; the highest
    version there when none is given).

    Raises:
        FileNotFoundError: no such dataset directory.
    """
    name_or_dir = os.fspath(name_or_dir)
    if read_text(_join(name_or_dir, "dataset_info.json"), storage_options) is not None:
        return name_or_dir
    if storage.is_remote(name_or_dir) or os.path.isabs(name_or_dir) or name_or_dir.startswith((".", "~")):
        raise FileNotFoundError(f"{name_or_dir}: no dataset_info.json (not a TFDS dataset version directory)")
    base = os.fspath(data_dir) if data_dir is not None else default_data_dir()
    name, _, version = name_or_dir.partition(":")
    directory = _join(base, name.strip("/"))
    if not version:
        versions = sorted((v for v in _subdirs(directory, storage_options) if _VERSION.match(v)),
                          key=lambda v: tuple(map(int, v.split("."))))
        for v in reversed(versions):
            if read_text(_join(_join(directory, v), "dataset_info.json"), storage_options) is not None:
                version = v
                break
        else:
            raise FileNotFoundError(f"{directory}: no prepared version of {name!r} (no <version>/dataset_info.json); "
                                    "arrayfs reads prepared datasets and never downloads")
    path = _join(directory, version)
    if read_text(_join(path, "dataset_info.json"), storage_options) is None:
        raise FileNotFoundError(f"{path}: no dataset_info.json (is {name_or_dir!r} prepared under {base}?)")
    return path


def _filename(template: str, dataset: str, split: str, suffix: str, index: int, count: int) -> str:
    values = {
        "DATASET": dataset, "SPLIT": split, "FILEFORMAT": suffix,
        "SHARD_INDEX": f"{index:05d}", "NUM_SHARDS": f"{count:05d}",
        "SHARD_X_OF_Y": f"{index:05d}-of-{count:05d}",
    }
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m[1], m[0]), template)


class DatasetDir:
    """A TFDS dataset version directory: its ``dataset_info.json`` and the
    shard files of each split.

    Attributes:
        path: the directory (path or URL).
        info: the parsed ``dataset_info.json``.
        name: the dataset's name.
        splits: ``{split name: SplitInfo}`` with full shard paths, in the
            file's order.

    Raises:
        FileNotFoundError: no ``dataset_info.json`` in ``path``.
        ValueError: the shards are not ArrayRecord files (TFRecord only).
    """

    def __init__(self, path: str, storage_options=None):
        self.path = os.fspath(path)
        self.storage_options = storage_options
        text = read_text(_join(self.path, "dataset_info.json"), storage_options)
        if text is None:
            raise FileNotFoundError(f"{self.path}: no dataset_info.json (not a TFDS dataset version directory)")
        self.info = json.loads(text)
        self.name = self.info.get("name", "")
        formats = [self.info.get("fileFormat") or "tfrecord", *self.info.get("alternativeFileFormats", [])]
        if "array_record" not in formats:
            raise ValueError(f"{self.path}: the dataset is stored as {formats[0]}, not array_record; prepare it with "
                             "file_format='array_record' (tfds build --file_format=array_record)")
        self.splits = {}
        for s in self.info.get("splits", []):
            lengths = tuple(int(n) for n in s.get("shardLengths", s.get("shard_lengths", [])))
            template = s.get("filepathTemplate") or s.get("filepath_template") or DEFAULT_TEMPLATE
            files = tuple(_join(self.path, _filename(template, self.name, s["name"], "array_record", i, len(lengths)))
                          for i in range(len(lengths)))
            self.splits[s["name"]] = SplitInfo(s["name"], lengths, files)

    def join(self, name: str) -> str:
        return _join(self.path, name)

    def read_text(self, name_or_path: str) -> str | None:
        path = name_or_path if name_or_path.startswith(self.path) else self.join(name_or_path)
        return read_text(path, self.storage_options)

    def __repr__(self):
        return f"DatasetDir({self.path!r}, name={self.name!r}, splits={list(self.splits)})"
