"""``arrayfs.tfds.data_source``: TFDS's ``tfds.data_source`` without
TensorFlow, TFDS or array_record's C++ reader.

Facts from TFDS's ``core/load.py`` (``data_source``: the split argument,
``split=None`` giving every split), ``core/data_sources/base.py`` and
``array_record.py`` (a random-access source over the split's file
instructions whose elements are ``features.deserialize_example_np``).
"""

from __future__ import annotations

import operator
import os
from collections.abc import Mapping, Sequence

from ..dataset import ArrayRecordDataSource
from ..encoding.errors import RecordDecodeError
from .codec import TfdsFeatures
from .info import DatasetDir, resolve_directory
from .splits import file_instructions, parse_split

__all__ = ["TfdsDataSource", "data_source"]


class TfdsDataSource:
    """The records of one TFDS split, decoded as ``tfds.data_source`` does.

    A random-access source (``len``, ``[i]``, batched ``__getitems__``,
    iteration) that Grain's ``MapDataset.source``, PyTorch's ``DataLoader``
    and :class:`arrayfs.ArrayRecordSourceModule` take; picklable for worker
    processes (shards reopen lazily there). Reads go through
    :class:`arrayfs.ArrayRecordDataSource` (parallel batched reads, local
    or object storage).

    Attributes:
        directory: the dataset version directory.
        split: the split string it was opened with.
        features: :class:`~arrayfs.tfds.TfdsFeatures` (the decoder).
        dataset_info: the parsed ``dataset_info.json``.
        paths: the shard read instructions (``"file[start:stop]"``) that
            :class:`~arrayfs.ArrayRecordDataSource` and
            ``ArrayRecordSourceModule(config, paths)`` take.
        records: the undecoded source (``bytes`` per index).

    Raises:
        FileNotFoundError: a missing ``dataset_info.json``,
            ``features.json`` or shard.
        ValueError: a bad split string; a dataset not stored as ArrayRecord.
        UnsupportedFeatureError: a feature arrayfs does not decode.
    """

    #: Elements are decoded already (ArrayRecordSourceModule applies no
    #: decoder of its own to them).
    decoded = True

    def __init__(self, directory: str, split: str, *, storage_options=None, verify: bool = True,
                 _dataset: DatasetDir | None = None, _features: TfdsFeatures | None = None):
        self.directory = os.fspath(directory)
        self.split = split
        self.storage_options = storage_options
        self.verify = verify
        ds = _dataset or DatasetDir(self.directory, storage_options)
        self.dataset_info = ds.info
        self.name = ds.name
        self.features = _features or TfdsFeatures.from_directory(self.directory, storage_options)
        shards = file_instructions(parse_split(split, ds.splits), ds.splits)
        self.paths = [f"{f}[{a}:{b}]" for f, a, b in shards]
        self.records = ArrayRecordDataSource(self.paths, verify=verify, storage_options=storage_options) \
            if self.paths else None

    def __len__(self) -> int:
        return len(self.records) if self.records is not None else 0

    def __getitem__(self, index):
        """The decoded record at global ``index``.

        Raises:
            IndexError: ``index`` outside ``[0, len)``.
            RecordDecodeError: a malformed record, naming it (``index``,
                its shard ``path`` and ``position`` there) and the feature.
        """
        if self.records is None:
            raise IndexError(f"index {index} out of range for an empty split {self.split!r}")
        return self._decode(index, self.records[index])

    def __getitems__(self, indices) -> list:
        """Decoded records at ``indices`` (any integer sequence or array),
        read as one batch.

        Raises:
            IndexError: an index outside ``[0, len)``.
            RecordDecodeError: as ``[i]``, for the first malformed record
                in the order of ``indices``.
        """
        if self.records is None:
            if len(indices):
                raise IndexError(f"indices out of range for an empty split {self.split!r}")
            return []
        records = self.records.__getitems__(indices)
        try:
            return self.features.decode_batch(records)
        except RecordDecodeError:
            pass
        # The batch decodes feature by feature, so its error may be a later
        # record's: one record at a time finds the first bad one, to name it.
        return [self._decode(i, r) for i, r in zip(indices, records)]

    def __iter__(self):
        """The decoded records in order; raises as ``[i]``."""
        if self.records is not None:
            for i, r in enumerate(self.records):
                yield self._decode(i, r)

    def _decode(self, index, record):
        """``record`` (the one at global ``index``) decoded; a decode error
        re-raised naming the record's index, shard and position there."""
        try:
            return self.features(record)
        except RecordDecodeError as e:
            index = operator.index(index)
            path, position = self.records.locate(index)
            raise e.at(index, path, position).with_traceback(e.__traceback__) from None

    @property
    def shards(self):
        """The underlying shards (:class:`arrayfs.ShardInfo`)."""
        return self.records.shards if self.records is not None else ()

    def close(self) -> None:
        if self.records is not None:
            self.records.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"TfdsDataSource(name={self.name!r}, split={self.split!r}, directory={self.directory!r})"


def _map_tree(split, fn):
    if isinstance(split, str):
        return fn(split)
    if isinstance(split, Mapping):
        return {k: _map_tree(v, fn) for k, v in split.items()}
    if isinstance(split, Sequence):
        return type(split)(_map_tree(v, fn) for v in split) if isinstance(split, tuple) else \
            [_map_tree(v, fn) for v in split]
    return fn(str(split))  # a tfds.Split or ReadInstruction-like object prints as its string


def data_source(name_or_dir, *, split=None, data_dir=None, storage_options: dict | None = None,
                verify: bool = True, decoders=None, download: bool = False, **_unused):
    """Open a prepared TFDS dataset as random-access sources, without
    TensorFlow: a drop-in for ``tfds.data_source(name, split=...,
    data_dir=...)`` with the same element structure, types and values.

    Args:
        name_or_dir: a dataset version directory (local, or a URL such as
            ``gs://bucket/mnist/3.0.1``), or ``"name[/config][:version]"``
            under ``data_dir`` (the highest prepared version when none is
            given).
        split: a split string (``"train"``, ``"train[:80%]"``,
            ``"train[10:20]+test"``, ``"all"``; see
            :mod:`arrayfs.tfds.splits`), a list/tuple/dict of them (the
            result has that structure), or ``None`` for ``{split name:
            source}`` of every split.
        data_dir: where named datasets live (default ``$TFDS_DATA_DIR`` or
            ``~/tensorflow_datasets``), local or a URL.
        storage_options: fsspec options for URLs (credentials,
            ``endpoint_url``).
        verify: check chunk hashes on read.
        decoders: only ``None`` (TFDS's custom decoders are TensorFlow
            objects).
        download: accepted for compatibility; arrayfs reads prepared
            datasets and never downloads.

    Returns:
        :class:`TfdsDataSource`, or the structure of ``split`` of them.

    Raises:
        FileNotFoundError: no such prepared dataset.
        ValueError: a bad split string; a dataset not stored as ArrayRecord.
        NotImplementedError: ``decoders`` given.
        UnsupportedFeatureError: a feature arrayfs does not decode.
    """
    if decoders is not None:
        raise NotImplementedError("arrayfs.tfds.data_source takes no decoders (TFDS's are TensorFlow objects)")
    directory = resolve_directory(name_or_dir, data_dir, storage_options)
    ds = DatasetDir(directory, storage_options)
    features = TfdsFeatures.from_directory(directory, storage_options)

    def one(s):
        return TfdsDataSource(directory, s, storage_options=storage_options, verify=verify, _dataset=ds,
                              _features=features)

    if split is None:
        return {name: one(name) for name in ds.splits}
    return _map_tree(split, one)
