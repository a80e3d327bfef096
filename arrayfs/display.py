"""How the tools show a dataset's records: ``arrayfs cat --decode``,
``arrayfs info`` and the mount's ``.decoded/`` directory.

:func:`choose_display` turns a ``--decode`` setting and an open dataset
into a :class:`RecordDisplay`: the record format (named, or sniffed from
the first records with :func:`arrayfs.encoding.sniff_format`) and, for a
TFDS dataset, its features (``features.json`` beside the first shard, read
by :func:`arrayfs.tfds.decoder`). The display then gives each record as
the JSON line ``cat`` prints (:meth:`RecordDisplay.json_bytes`) and as the
files of ``.decoded/<name>/`` (:meth:`RecordDisplay.tree`).

It sits above the encodings and :mod:`arrayfs.tfds` and below the command
line and the mount, which both use it, so that ``cat`` and the mount show
the same thing. ``arrayfs.tfds`` (protobuf) is imported only when a TFDS
or Example dataset asks for it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .encoding.files import decoded_tree
from .encoding.render import json_line, to_json
from .encoding.sniff import SNIFF_RECORDS, sniff_format

__all__ = ["MODES", "RecordDisplay", "choose_display", "FORMAT_NAMES", "SNIFF_BYTES"]

#: ``--decode`` settings, ``"auto"`` first.
MODES = ("auto", "example", "tfds", "msgpack", "json", "raw")

#: What each format is, in words (``arrayfs info``).
FORMAT_NAMES = {
    "example": "tf.train.Example",
    "tfds": "tf.train.Example of a TFDS dataset (features.json)",
    "msgpack": "msgpack map",
    "json": "JSON",
    "raw": "raw bytes (no structure recognised)",
}


@dataclass(frozen=True)
class RecordDisplay:
    """One way to show records (immutable; safe to share between threads
    and to carry across ``fork``).

    Attributes:
        format: ``"tfds"``, ``"example"``, ``"msgpack"``, ``"json"`` or
            ``"raw"``.
        decode: what :func:`~arrayfs.encoding.to_json` and
            :func:`~arrayfs.encoding.decoded_tree` take: the format's name,
            or for ``tfds`` the features' ``decode_for_display`` (images
            kept as their stored bytes).
        class_names: ``{feature path: [names]}`` of a TFDS dataset's
            ``ClassLabel`` features (``<feature>.name`` files), else ``None``.
        features: the :class:`arrayfs.tfds.TfdsFeatures` (``tfds`` only).
        directory: where ``features.json`` was found (``tfds`` only).
        sniffed: the format :func:`~arrayfs.encoding.sniff_format` found
            (``"auto"`` only; else ``None``).
        note: why ``"auto"`` did not use a ``features.json`` it found.
    """

    format: str
    decode: str | Callable
    class_names: Mapping | None = None
    features: object = None
    directory: str | None = None
    sniffed: str | None = None
    note: str | None = None

    def json_value(self, record):
        """The object ``arrayfs cat --decode`` prints for ``record`` (bytes).

        Raises:
            RecordDecodeError: the record is not of this format (and, for
                ``tfds``, what its features say).
        """
        return to_json(record, self.decode)

    def json_bytes(self, record) -> bytes:
        """:meth:`json_value` as its one line of UTF-8 JSON
        (:func:`~arrayfs.encoding.json_line`). Raises as :meth:`json_value`."""
        return json_line(self.json_value(record))

    def tree(self, record) -> dict:
        """The files of ``.decoded/<name>/`` for ``record``
        (:func:`~arrayfs.encoding.decoded_tree`). Raises as :meth:`json_value`,
        and ``TypeError`` for a value no file can show."""
        return decoded_tree(record, self.decode, class_names=self.class_names)


#: Bytes of records :func:`choose_display` reads at most to sniff them.
SNIFF_BYTES = 64 << 20


def _first_records(dataset, limit: int) -> list:
    """The first ``limit`` records, fewer when more would pass
    :data:`SNIFF_BYTES` (a dataset of huge records is not read to sniff it)."""
    n, total = 0, 0
    sizes = getattr(dataset, "record_size", None)
    while n < min(limit, len(dataset)):
        total += sizes(n) if sizes is not None else 0
        if total > SNIFF_BYTES:
            break
        n += 1
    return list(dataset.__getitems__(list(range(n)))) if n else []


def _tfds_display(dataset, storage_options, sniffed=None) -> RecordDisplay:
    """The ``tfds`` display from ``features.json`` beside the first shard.
    Raises ``FileNotFoundError`` (none there) and what
    :func:`arrayfs.tfds.decoder` raises."""
    shards = getattr(dataset, "shards", None)
    if not shards:
        raise FileNotFoundError("the dataset has no shard beside which to look for features.json")
    from .tfds import decoder

    features = decoder(shards[0].path, storage_options=storage_options)
    return RecordDisplay("tfds", features.decode_for_display, class_names=features.class_names() or None,
                         features=features, directory=features.directory, sniffed=sniffed)


def choose_display(mode: str, dataset, *, storage_options=None, limit: int = SNIFF_RECORDS) -> RecordDisplay:
    """The display for a ``--decode`` setting and an open dataset.

    Errors say why without naming the setting: the caller adds which one.

    Args:
        mode: one of :data:`MODES`. ``"auto"`` sniffs the first ``limit``
            records (:func:`~arrayfs.encoding.sniff_format`; at most
            :data:`SNIFF_BYTES` of them: records past that are not read,
            and none read is ``"raw"``) and, when they
            are Examples and a TFDS ``features.json`` is beside the first
            shard, shows them by it (as ``"tfds"``); a ``features.json``
            arrayfs cannot use leaves them plain Examples (``note`` says
            why). ``"tfds"`` needs the ``features.json``.
        dataset: an :class:`arrayfs.ArrayRecordDataSource` (or anything
            with ``shards`` (``.path``), ``len`` and ``__getitems__``).
        storage_options: fsspec options for a dataset on object storage.
        limit: records sniffed by ``"auto"``.

    Raises:
        ValueError: an unknown ``mode``; ``"tfds"`` without a
            ``features.json`` beside the first shard (naming where it was
            looked for), or with a feature arrayfs does not decode
            (:class:`arrayfs.tfds.UnsupportedFeatureError`).
        ImportError: ``"example"``/``"tfds"`` without protobuf,
            ``"msgpack"`` without msgpack (naming what to install).
        ArrayRecordError: ``"auto"`` could not read the first records.
    """
    if mode not in MODES:
        raise ValueError(f"the decoding must be one of {', '.join(MODES)}, not {mode!r}")
    if mode == "tfds":
        try:
            return _tfds_display(dataset, storage_options)
        except FileNotFoundError as e:
            raise ValueError(str(e)) from None
    if mode == "example":
        from .encoding import example  # noqa: F401 - protobuf, or an ImportError naming the extra
    elif mode == "msgpack":
        try:
            import msgpack  # noqa: F401
        except ImportError:
            raise ImportError("decoding msgpack needs msgpack: pip install msgpack") from None
    if mode != "auto":
        return RecordDisplay(mode, mode)
    sniffed = sniff_format(_first_records(dataset, limit), limit=limit)
    if sniffed == "example":
        try:
            return _tfds_display(dataset, storage_options, sniffed=sniffed)
        except FileNotFoundError:
            pass  # Examples, but not of a TFDS dataset
        except ValueError as e:  # a features.json arrayfs cannot use: the plain Examples still show
            return RecordDisplay("example", "example", sniffed=sniffed, note=str(e))
    return RecordDisplay(sniffed, sniffed, sniffed=sniffed)
