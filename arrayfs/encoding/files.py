"""One record as the files of a mount's ``.decoded/<name>/`` directory,
as plain data: a ``dict`` whose keys are file names and whose values are
``bytes`` (a file: exactly its contents, so its size is ``len``) or a
nested ``dict`` (a directory). No FUSE here; the mount serves this tree.

The rules, per feature (an Example's feature, a key of a msgpack/JSON map,
or a leaf of a TFDS record):

* a single ``bytes`` value whose signature says png, jpg, gif, webp, wav,
  flac or npy: ``<feature>.<ext>`` holding exactly the stored bytes (an
  image viewer, ``file``, ``identify`` and ``ffprobe`` open it as any such
  file);
* another single ``bytes`` or text value: ``<feature>``, its bytes (text
  as UTF-8);
* numbers (any count, any shape): ``<feature>``, a text file with one value
  per line in C order (floats in their shortest round-trip form; ``float32``
  ones as ``float32``; booleans as ``0``/``1``); no values: an empty file;
* a list of binary or text values (a ``Sequence`` of images): two or
  more are a directory ``<feature>/`` holding ``0``, ``1``, ... by the same
  rules (``0.png`` ...); exactly one is shown as that single value
  (``<feature>.png``), none as an empty file ``<feature>``;
* a map (a nested TFDS ``FeaturesDict``, a Sequence of dicts): a
  directory of its keys;
* with ``class_names`` (TFDS ``ClassLabel`` features): besides
  ``<feature>`` with the integer(s), ``<feature>.name`` with the name(s),
  one per line; where ``<feature>`` is a directory (a ``Sequence`` of
  ``Sequence`` whose rows differ in length: ``<feature>/0``, ``1``, ...),
  each numbers file ``<i>`` in it, at any depth, gets ``<i>.name``.

An Example key holding ``/`` (TFDS flattens nested features that way)
becomes nested directories. A name that is empty, ``.`` or ``..``, that
holds ``/`` or NUL, or that would clash with one already there, has ``%``,
``/`` and NUL escaped as ``%25``, ``%2F`` and ``%00`` and, if still
clashing, ``~1``, ``~2``... appended. A name longer than 255 bytes (UTF-8)
is cut to fit, before any ``~1`` and keeping its extension.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from .errors import RecordDecodeError
from .sniff import sniff_content, sniff_format

__all__ = ["decoded_tree", "DecodedFile", "tree_size", "fit_name", "MAX_NAME"]

#: A file's contents in a decoded tree.
DecodedFile = bytes


#: Values formatted at a time by :func:`_numbers_file`: the Python objects
#: of one chunk (~80 bytes a value) are all it holds beside its output.
_NUMBERS_CHUNK = 1 << 16


def _number_lines(flat: np.ndarray) -> str:
    if flat.dtype.kind == "b":
        items = map(str, flat.view(np.uint8).tolist())
    elif flat.dtype.kind == "f" and flat.dtype != np.float64:
        items = map(str, flat)  # numpy's shortest form for the value's own precision
    else:
        # Python ints, and float64 as Python floats: their repr is the
        # shortest round-trip form numpy's str gives, at a fraction of the cost.
        items = map(repr, flat.tolist())
    return "".join(f"{v}\n" for v in items)


def _numbers_file(values) -> bytes:
    """One value per line, in C order; memory beyond the output is bounded
    by :data:`_NUMBERS_CHUNK` values, however many there are."""
    flat = np.asarray(values).ravel()
    out = bytearray()
    for start in range(0, flat.size, _NUMBERS_CHUNK):
        out += _number_lines(flat[start : start + _NUMBERS_CHUNK]).encode()
    return bytes(out)


def _is_numeric(value) -> bool:
    if isinstance(value, (bool, int, float, np.number, np.bool_)):
        return True
    if isinstance(value, np.ndarray):
        return value.dtype.kind in "biuf"
    if isinstance(value, (list, tuple)) and value:
        try:
            arr = np.asarray(value)
        except ValueError:  # ragged
            return False
        return arr.dtype.kind in "biuf"
    return False


def _blob(value) -> bytes | None:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode()
    return None


#: The longest file name, in bytes (Linux's ``NAME_MAX``).
MAX_NAME = 255


def fit_name(name: str, room: int = MAX_NAME) -> str:
    """``name`` cut to at most ``room`` bytes of UTF-8, never inside a
    character (a file name's undecodable bytes, kept as surrogates by
    ``os.fsdecode``, count one byte each; another lone surrogate three)."""
    if len(name) * 4 <= room:  # short enough whatever its characters
        return name
    used = 0
    for j, ch in enumerate(name):
        try:
            used += len(ch.encode("utf-8", "surrogateescape"))
        except UnicodeEncodeError:
            used += 3
        if used > room:
            return name[:j]
    return name


def _name_bytes(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _unique(directory: dict, name: str, tail: str = "") -> str:
    """A new entry's name in ``directory``, from ``name`` and ``tail`` (an
    extension such as ``.png``, which a cut keeps): escaped where it could
    not be a file name or clashes, cut to :data:`MAX_NAME` bytes, and given
    ``~1``, ``~2``... while it clashes (see the module docstring)."""
    full = name + tail
    if full in ("", ".", "..") or "/" in full or "\0" in full or full in directory:
        full = full.replace("%", "%25").replace("/", "%2F").replace("\0", "%00") or "%"
        if full in (".", ".."):
            full = full.replace(".", "%2E")
    stem = full[: len(full) - len(tail)] if tail and full.endswith(tail) else full
    tail = full[len(stem):]
    k, suffix = 0, ""
    while True:
        name = fit_name(stem, MAX_NAME - _name_bytes(tail + suffix)) + tail + suffix
        if name not in directory:
            return name
        k += 1
        suffix = f"~{k}"


def _put_file(directory: dict, name: str, data: bytes) -> str:
    ext = sniff_content(data)
    name = _unique(directory, name, f".{ext}" if ext else "")
    directory[name] = data
    return name


def _put(directory: dict, name: str, value) -> None:
    """Add ``value`` under ``name`` to ``directory`` by the module's rules."""
    if value is None:
        return  # an optional feature that is absent has no file
    if isinstance(value, Mapping):
        sub: dict = {}
        for k, v in value.items():
            _put(sub, str(k), v)
        directory[_unique(directory, name)] = sub
        return
    if isinstance(value, np.ndarray) and value.dtype.kind == "O":
        value = value.ravel().tolist()
    blob = _blob(value)
    if blob is not None:
        _put_file(directory, name, blob)
    elif _is_numeric(value):
        directory[_unique(directory, name)] = _numbers_file(value)
    elif isinstance(value, (list, tuple)):
        if not value:
            directory[_unique(directory, name)] = b""
        elif len(value) == 1 and _blob(value[0]) is not None:
            _put_file(directory, name, _blob(value[0]))
        else:
            sub = {}
            for i, v in enumerate(value):
                _put(sub, str(i), v)
            directory[_unique(directory, name)] = sub
    else:
        raise TypeError(f"feature {name!r}: cannot show a {type(value).__name__} as a file")


def _subdir(tree: dict, dirs: list) -> dict | None:
    where = tree
    for d in dirs:
        if d in ("", ".", "..") or "\0" in d or _name_bytes(d) > MAX_NAME:
            return None  # not a directory name: the whole key is one (escaped) name
        nxt = where.setdefault(d, {})
        if not isinstance(nxt, dict):
            return None
        where = nxt
    return where


def _example_tree(record: bytes) -> dict:
    from .example import read_features

    return read_features(record, _example_files)


def _example_files(fmap) -> dict:
    from .example import feature_values

    tree: dict = {}
    for key, feature in fmap.items():
        *dirs, leaf = key.split("/")
        where = _subdir(tree, dirs) if leaf else None
        if where is None:
            where, leaf = tree, key
        _put(where, leaf, feature_values(feature, key))
    return tree


def _map_tree(obj) -> dict:
    tree: dict = {}
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            _put(tree, str(k), v)
    else:
        _put(tree, "data", obj)
    return tree


def decoded_tree(record, decode: str | Callable = "auto", *, class_names: Mapping | None = None) -> dict:
    """The ``.decoded/<name>/`` directory of one record (see the module
    docstring): ``{file name: bytes | dict}``.

    Args:
        record: the record's bytes.
        decode: ``"auto"`` (sniffed from this record), ``"example"``,
            ``"msgpack"``, ``"json"``, ``"raw"`` (one file ``data`` or
            ``data.<ext>``), or a callable ``bytes -> nested dict`` such as
            :meth:`arrayfs.tfds.TfdsFeatures.decode_for_display` (images kept
            as their stored bytes).
        class_names: ``{feature path ("label", "meta/kind"): [names]}``:
            those features also get ``<feature>.name`` files
            (:meth:`arrayfs.tfds.TfdsFeatures.class_names`).

    Raises:
        RecordDecodeError: the record is not of the format named.
    """
    if callable(decode):
        tree = _map_tree(decode(record))
    else:
        if decode == "auto":
            decode = sniff_format([record])
        if decode == "example":
            tree = _example_tree(record)
        elif decode == "msgpack":
            from .render import msgpack_values

            tree = _map_tree(msgpack_values(record))
        elif decode == "json":
            import json

            try:
                tree = _map_tree(json.loads(record))
            except (ValueError, UnicodeDecodeError) as exc:
                raise RecordDecodeError("json", str(exc)) from exc
        elif decode == "raw":
            tree = {}
            _put_file(tree, "data", bytes(record))
        else:
            raise ValueError(f"decode must be 'auto', 'example', 'msgpack', 'json', 'raw' or a callable, "
                             f"got {decode!r}")
    for path, names in (class_names or {}).items():
        _add_names(tree, path.split("/"), list(names))
    return tree


def _add_names(tree: dict, parts: list, names: list) -> None:
    *dirs, leaf = parts
    where = tree
    for d in dirs:
        where = where.get(d)
        if not isinstance(where, dict):
            return
    _name_entry(where, leaf, names)


def _name_entry(where: dict, leaf: str, names: list) -> None:
    """Beside the numbers file ``where[leaf]``, ``<leaf>.name`` with the
    class name of each of its integers, one per line (``""`` for one
    outside ``names``); for a directory (a ClassLabel in a Sequence of
    Sequence whose rows differ in length), the same for each entry in it,
    at any depth."""
    data = where.get(leaf)
    if isinstance(data, dict):
        for key in list(data):  # a snapshot: the loop adds entries
            _name_entry(data, key, names)
        return
    if not isinstance(data, bytes):
        return
    out = []
    for line in data.decode().split():
        k = int(line)
        out.append(names[k] if 0 <= k < len(names) else "")
    where[_unique(where, leaf, ".name")] = "".join(f"{n}\n" for n in out).encode()


def tree_size(tree: dict) -> int:
    """Bytes in all files of a decoded tree."""
    return sum(tree_size(v) if isinstance(v, dict) else len(v) for v in tree.values())

