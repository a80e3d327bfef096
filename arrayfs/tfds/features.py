"""TFDS feature specs: ``features.json`` read into a tree of specs.

Facts from TFDS's ``tensorflow_datasets/core/features/`` (``feature.py``:
``FeatureConnector.from_json``/``from_proto``, ``dtype_from_str``,
``from_shape_proto``; ``features_dict.py``; ``sequence_feature.py``;
``image_feature.py``; ``tensor_feature.py``; ``class_label_feature.py``;
``text_feature.py``; ``scalar.py``; ``bounding_boxes.py``) and its
``core/proto/feature.proto``:

* ``features.json`` is the JSON form of a ``Feature`` message:
  ``pythonClassName`` names the class, one content field (``featuresDict``,
  ``sequence``, ``image``, ``tensor``, ``classLabel``, ``text``,
  ``boundingBox``, or ``jsonFeature`` holding JSON text) describes it;
  int64 fields are JSON strings; a shape's unknown dimension is ``-1``.
  Older files use ``{"type": class name, "content": ..., "proto_cls": ...}``.
* The class decides the decoding, not the content field (a
  ``tfds.features.Dataset`` has a ``sequence`` content, a ``Video`` an
  image-like one): classes other than those below raise
  :class:`UnsupportedFeatureError` naming the feature and its class.
* ``ClassLabel`` names live in ``<name>.labels.txt`` beside the shards,
  ``<name>`` being the feature's path with nested ``FeaturesDict`` names
  joined by ``-`` (``meta-kind.labels.txt``); without one, names are
  ``"0"``, ``"1"``, ...
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "UnsupportedFeatureError",
    "FeatureSpec",
    "DictSpec",
    "SequenceSpec",
    "ImageSpec",
    "TensorSpec",
    "TextSpec",
    "ClassLabelSpec",
    "parse_features_json",
    "SUPPORTED_CLASSES",
]


class UnsupportedFeatureError(ValueError):
    """A feature whose class (or setting) arrayfs does not decode.

    Attributes:
        feature: the feature's path (``"meta/photo"``).
        class_name: its TFDS class (``"tensorflow_datasets...Video"``).
    """

    def __init__(self, feature: str, class_name: str, reason: str = "is not supported"):
        self.feature = feature
        self.class_name = class_name
        super().__init__(f"TFDS feature {feature!r} of class {class_name} {reason} by arrayfs.tfds "
                         f"(supported: {', '.join(SUPPORTED_CLASSES)})")


@dataclass(frozen=True)
class FeatureSpec:
    """One node of a features tree: its path from the root (``"a/b"``;
    ``""`` for the root) and its TFDS class name."""

    path: str
    class_name: str


@dataclass(frozen=True)
class DictSpec(FeatureSpec):
    """A ``FeaturesDict``: children in ``features.json``'s order."""

    children: dict = field(default_factory=dict)


@dataclass(frozen=True)
class SequenceSpec(FeatureSpec):
    """A ``Sequence`` of ``feature``, of ``length`` elements (``None``:
    any)."""

    feature: FeatureSpec = None
    length: int | None = None


@dataclass(frozen=True)
class ImageSpec(FeatureSpec):
    """An ``Image``: stored encoded (PNG, JPEG, ...; whatever the builder
    gave), decoded to ``dtype`` of ``shape`` (``None`` for an unknown
    dimension). ``float32`` images are 4-channel ``uint8`` PNGs bitcast."""

    shape: tuple = (None, None, 3)
    dtype: np.dtype = np.dtype(np.uint8)
    encoding_format: str | None = None


@dataclass(frozen=True)
class TensorSpec(FeatureSpec):
    """A ``Tensor`` (also ``Scalar``, ``BBoxFeature``) of ``dtype`` and
    ``shape``; ``encoding`` ``"none"`` (values in the Example's lists),
    ``"bytes"`` (the raw array bytes) or ``"zlib"`` (those, compressed).
    With two or more unknown dimensions the Example holds ``<path>/value``
    and ``<path>/shape``."""

    shape: tuple = ()
    dtype: np.dtype = np.dtype(np.int64)
    encoding: str = "none"
    optional: bool = False

    @property
    def dynamic(self) -> bool:
        return self.shape.count(None) > 1


@dataclass(frozen=True)
class TextSpec(FeatureSpec):
    """A ``Text``: UTF-8 ``bytes`` (TFDS returns them undecoded)."""

    optional: bool = False


@dataclass(frozen=True)
class ClassLabelSpec(FeatureSpec):
    """A ``ClassLabel``: an ``int64`` in ``[0, num_classes)`` (``-1`` for
    none), with ``names``."""

    num_classes: int | None = None
    names: tuple = ()


# Short class name -> builder; TFDS's module paths moved over the years,
# the class names did not.
SUPPORTED_CLASSES = ("FeaturesDict", "Sequence", "Image", "Tensor", "Scalar", "ClassLabel", "Text", "BBoxFeature")
_CONTENT_FIELDS = {
    "featuresDict": "featuresDict", "features_dict": "featuresDict", "sequence": "sequence", "image": "image",
    "tensor": "tensor", "classLabel": "classLabel", "class_label": "classLabel", "text": "text",
    "boundingBox": "boundingBox", "bounding_box": "boundingBox", "jsonFeature": "jsonFeature",
    "json_feature": "jsonFeature",
}


def _dtype(path: str, class_name: str, text) -> np.dtype:
    if text in (None, ""):
        raise UnsupportedFeatureError(path, class_name, "has no dtype in features.json and is not readable")
    if text == "string":
        return np.dtype(object)
    try:
        return np.dtype(text)
    except TypeError:
        try:
            import ml_dtypes  # bfloat16 and friends, where installed (JAX brings it)

            return np.dtype(getattr(ml_dtypes, text))
        except (ImportError, AttributeError, TypeError):
            raise UnsupportedFeatureError(path, class_name, f"has dtype {text!r}, which numpy does not know,") from None


def _int(text, path: str, class_name: str, what: str) -> int:
    """An int64 field of features.json (a JSON string or number)."""
    try:
        return int(text)
    except (TypeError, ValueError):
        _malformed(path, class_name, f"{what} {text!r} is not an integer")


def _shape(value, path: str, class_name: str) -> tuple:
    """A shape from a ``Shape`` message (``{"dimensions": ["8", "-1"]}``)
    or a legacy list (``[8, null]``)."""
    dims = value.get("dimensions", []) if isinstance(value, dict) else (value or [])
    if not isinstance(dims, (list, tuple)):
        _malformed(path, class_name, f"a shape {value!r}")
    out = []
    for d in dims:
        d = None if d is None else _int(d, path, class_name, "a dimension")
        out.append(None if d is None or d < 0 else d)
    return tuple(out)


def _get(content: dict, *names, default=None):
    for n in names:
        if n in content:
            return content[n]
    return default


def _names_from_file(labels_dir: str | None, path: str, read_text) -> tuple | None:
    if labels_dir is None or read_text is None:
        return None
    stem = "-".join(path.split("/"))
    text = read_text(f"{labels_dir.rstrip('/')}/{stem}.labels.txt")
    if text is None:
        return None
    return tuple(n.strip() for n in text.split("\n") if n.strip())


def _malformed(path: str, class_name: str, what: str):
    raise UnsupportedFeatureError(path or "<root>", class_name or "<unnamed>", f"is malformed in features.json ({what}) "
                                  "and is not readable")


def _build(value: dict, path: str, labels_dir, read_text) -> FeatureSpec:
    if not isinstance(value, dict):
        _malformed(path, "", f"a {type(value).__name__} where a feature object belongs")
    if "type" in value and "content" in value:  # the legacy form
        class_name, content, field_name = value["type"], value["content"], None
        if value.get("proto_cls") and isinstance(content, str):
            content = json.loads(content)
    else:
        class_name = _get(value, "pythonClassName", "python_class_name", default="")
        present = [k for k in value if k in _CONTENT_FIELDS]
        field_name = _CONTENT_FIELDS[present[0]] if present else None
        content = value[present[0]] if present else {}
        if field_name == "jsonFeature":
            content = json.loads(_get(content, "json", default="{}"))
    if not isinstance(class_name, str):
        _malformed(path, "", f"a class name that is a {type(class_name).__name__}")
    if not isinstance(content, dict):
        _malformed(path, class_name, f"its content is a {type(content).__name__}, not an object")
    short = class_name.rsplit(".", 1)[-1]
    if short not in SUPPORTED_CLASSES:
        raise UnsupportedFeatureError(path or "<root>", class_name or "<unnamed>")
    if short == "FeaturesDict":
        items = _get(content, "features", default=content if field_name is None else {})
        if not isinstance(items, dict):
            _malformed(path, class_name, "its features are not an object")
        children = {}
        for name, sub in items.items():
            children[name] = _build(sub, f"{path}/{name}" if path else name, labels_dir, read_text)
        return DictSpec(path, class_name, children)
    if short == "Sequence":
        length = _get(content, "length")
        length = None if length is None else _int(length, path, class_name, "the length")
        length = None if length is None or length < 0 else length
        if "feature" not in content:
            _malformed(path, class_name, "a Sequence without its feature")
        inner = _build(content["feature"], path, labels_dir, read_text)
        return SequenceSpec(path, class_name, inner, length)
    if short == "Image":
        encoding = _get(content, "encodingFormat", "encoding_format") or None
        return ImageSpec(path, class_name, _shape(content.get("shape"), path, class_name) or (None, None, 3),
                         _dtype(path, class_name, content.get("dtype", "uint8")), encoding)
    if short == "ClassLabel":
        names = _get(content, "names")
        num = _get(content, "numClasses", "num_classes")
        num = None if num is None else _int(num, path, class_name, "the number of classes")
        if names is None:
            names = _names_from_file(labels_dir, path, read_text)
        if names is None and num is not None:
            names = tuple(str(i) for i in range(num))
        names = tuple(names or ())
        return ClassLabelSpec(path, class_name, num if num is not None else len(names), names)
    if short == "Text":
        if "use_encoder" in content:
            raise UnsupportedFeatureError(path, class_name, "uses a deprecated text encoder and is not supported")
        return TextSpec(path, class_name, bool(content.get("optional", False)))
    if short == "BBoxFeature":
        return TensorSpec(path, class_name, _shape(content.get("shape"), path, class_name) or (4,),
                          _dtype(path, class_name, content.get("dtype", "float32")))
    # Tensor, Scalar
    encoding = str(content.get("encoding") or "none").lower()
    if encoding not in ("none", "bytes", "zlib"):
        raise UnsupportedFeatureError(path, class_name, f"has encoding {encoding!r}, which is not supported")
    spec = TensorSpec(path, class_name, _shape(content.get("shape"), path, class_name), _dtype(path, class_name, content.get("dtype")),
                      encoding, bool(content.get("optional", False)))
    if spec.dtype.kind == "O" and encoding != "none":
        raise UnsupportedFeatureError(path, class_name, "is a string tensor with an encoding (TFDS refuses those too)")
    return spec


def parse_features_json(doc: dict, *, labels_dir: str | None = None, read_text=None) -> FeatureSpec:
    """The spec tree of a parsed ``features.json``.

    Args:
        doc: the JSON document.
        labels_dir: where ``<name>.labels.txt`` files are (the dataset's
            directory), with ``read_text(path) -> str | None`` reading one
            (``None`` when it does not exist).

    Raises:
        UnsupportedFeatureError: a feature class or setting not handled, or
            a document that is not a features tree (naming the feature and
            what is wrong).
    """
    return _build(doc, "", labels_dir, read_text)
