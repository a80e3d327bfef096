"""``TfdsFeatures``: a dataset's ``features.json`` ready to decode records."""

from __future__ import annotations

import json
import os

from .decode import compile_features
from .features import ClassLabelSpec, FeatureSpec, ImageSpec, TensorSpec, parse_features_json
from .info import read_text

__all__ = ["TfdsFeatures", "decoder"]


def _is_remote(path: str) -> bool:
    from ..storage import is_remote

    return is_remote(path)


def _parent(path: str) -> str:
    if _is_remote(path):
        return path.rstrip("/").rsplit("/", 1)[0]
    return os.path.dirname(os.path.abspath(path))


class TfdsFeatures:
    """The features of a TFDS dataset, compiled to decode its records.

    Calling it decodes one serialized ``tf.train.Example`` to what
    ``tfds.data_source`` returns for it (see :mod:`arrayfs.tfds.decode`).
    Picklable (the spec tree travels; the decoder is rebuilt).

    Args:
        spec: the root feature (:func:`~arrayfs.tfds.features.parse_features_json`).
        directory: where its ``features.json`` is (``None``: not from a
            file); kept as :attr:`directory`.

    Raises:
        UnsupportedFeatureError: a feature arrayfs does not decode, naming
            it and its class.
    """

    def __init__(self, spec: FeatureSpec, directory: str | None = None):
        self.spec = spec
        self.directory = directory
        self._decode, self._decode_batch, self.leaves = compile_features(spec)
        self._display = None

    @classmethod
    def from_directory(cls, directory: str, storage_options=None) -> "TfdsFeatures":
        """Read ``features.json`` (and ``*.labels.txt``) from a dataset
        directory, local or a URL.

        Raises:
            FileNotFoundError: no ``features.json`` there.
        """
        directory = os.fspath(directory)
        sep = "/" if _is_remote(directory) else os.sep
        text = read_text(directory.rstrip("/") + sep + "features.json", storage_options)
        if text is None:
            raise FileNotFoundError(f"{directory}: no features.json (not a TFDS dataset directory)")
        spec = parse_features_json(json.loads(text), labels_dir=directory,
                                   read_text=lambda p: read_text(p, storage_options))
        return cls(spec, directory)

    def __call__(self, record) -> dict:
        """Decode one record (``bytes``) to a nested ``dict``.

        Raises:
            RecordDecodeError: a malformed record (decoder ``"tfds"``),
                naming the feature and the reason.
        """
        return self._decode(record)

    decode = __call__

    def decode_batch(self, records) -> list:
        """Decode several records (the same values as one by one, decoded
        feature by feature across them: faster).

        Raises:
            RecordDecodeError: as decoding one record.
        """
        return self._decode_batch(records)

    def decode_for_display(self, record) -> dict:
        """As decoding, but images stay their stored (encoded) bytes: what
        ``arrayfs cat --decode tfds`` describes and ``.decoded/`` serves."""
        if self._display is None:
            self._display = compile_features(self.spec, display=True)[0]
        return self._display(record)

    def class_names(self) -> dict:
        """``{feature path: [names]}`` of every ``ClassLabel``."""
        return {leaf.path: list(leaf.spec.names) for leaf in self.leaves if isinstance(leaf.spec, ClassLabelSpec)}

    def summary(self) -> list[dict]:
        """One entry per stored feature, for ``arrayfs info``:
        ``{"feature", "class", "dtype", "shape", "sequence"}`` (``shape``
        with ``None`` for unknown dimensions; ``sequence``: the lengths of
        the enclosing Sequences)."""
        out = []
        for leaf in self.leaves:
            spec = leaf.spec
            entry = {"feature": leaf.path, "class": spec.class_name.rsplit(".", 1)[-1]}
            if isinstance(spec, ImageSpec):
                entry.update(dtype=str(spec.dtype), shape=list(spec.shape), encoding=spec.encoding_format or "png")
            elif isinstance(spec, TensorSpec):
                entry.update(dtype="string" if spec.dtype.kind == "O" else str(spec.dtype), shape=list(spec.shape),
                             encoding=spec.encoding)
            elif isinstance(spec, ClassLabelSpec):
                entry.update(dtype="int64", shape=[], num_classes=spec.num_classes)
            else:
                entry.update(dtype="string", shape=[])
            if leaf.lengths:
                entry["sequence"] = list(leaf.lengths)
            out.append(entry)
        return out

    def __getstate__(self):
        return {"spec": self.spec, "directory": self.directory}

    def __setstate__(self, state):
        self.__init__(state["spec"], state.get("directory"))

    def __repr__(self):
        return f"TfdsFeatures({', '.join(leaf.path for leaf in self.leaves)})"


def decoder(path: str, storage_options=None) -> TfdsFeatures:
    """The ``decode="tfds"`` decoder for a dataset: ``path`` is its
    directory, or one of its shards (``features.json`` is beside it).

    Raises:
        FileNotFoundError: no ``features.json`` there.
    """
    path = os.fspath(path)
    from ..storage import stat

    try:
        is_dir = stat(path, storage_options).is_dir
    except FileNotFoundError:
        is_dir = False
    return TfdsFeatures.from_directory(path if is_dir else _parent(path), storage_options)

