"""How examples become record bytes and back: encoders (msgpack, npz,
``tf.train.Example``) for writers such as ``arrayfs convert --from
parquet``, and decoders ``bytes`` of one record -> ``dict`` of numpy arrays
for readers such as the NNX source. numpy, msgpack and (for Examples)
protobuf only: no JAX, no TensorFlow, no files.

A decoder is chosen by :func:`get_decoder` from the ``decode`` setting of
:class:`~arrayfs.nnx.config.ArrayRecordSourceConfig`:

| ``decode`` | record is decoded as |
| --- | --- |
| ``None`` | ``{"data": np.frombuffer(record, np.uint8)}``: shape ``(len(record),)``, dtype ``uint8``, a read-only view of the record's bytes (no copy) |
| ``"msgpack"`` | a msgpack map; values become arrays with ``np.asarray``, except ``bytes`` (``uint8`` arrays) and maps in the msgpack-numpy layout ``{"nd": True, "type": dtype.str, "shape": [...], "data": raw bytes}`` (the exact array), which :func:`encode_msgpack` writes |
| ``"json"`` | a JSON object (UTF-8); values through ``np.asarray`` |
| ``"npy"`` | one ``.npy`` file -> ``{"data": array}`` |
| ``"npz"`` | one ``.npz`` file -> one entry per member array |
| ``"example"`` | a serialized ``tf.train.Example`` -> ``{feature: array}``: ``int64_list`` -> ``int64`` ``(n,)``, ``float_list`` -> ``float32`` ``(n,)``, ``bytes_list`` -> ``object`` array of ``bytes`` ``(n,)`` (:mod:`.example`; needs ``protobuf``: ``pip install 'arrayfs[tfds]'``) |
| ``"tfds"`` | an Example decoded by the dataset's TFDS ``features.json`` to what ``tfds.data_source`` returns; needs the dataset's directory, so it is resolved by the NNX source (see :mod:`arrayfs.tfds`), not here |
| callable | ``fn(record: bytes) -> Mapping[str, array-like]``; values go through ``np.asarray`` |

A top-level msgpack/JSON value that is not a map is returned as
``{"data": np.asarray(value)}``. ``.npy``/``.npz`` are read with
``allow_pickle=False``: a record can never run code.

For tools: :func:`sniff_format` guesses a record format from the first
records, :func:`to_json` turns a record into the object ``arrayfs cat
--decode`` prints (:func:`json_line` its bytes), and :func:`decoded_tree`
into the files of a mount's ``.decoded/<name>/`` directory.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from .basic import decode_json, decode_msgpack, decode_npy, decode_npz, decode_raw, encode_msgpack, encode_npz
from .errors import RecordDecodeError
from .files import DecodedFile, decoded_tree
from .render import describe_bytes, json_line, to_json
from .sniff import FORMATS, sniff_content, sniff_format

__all__ = [
    "DECODERS",
    "Decoder",
    "get_decoder",
    "decode_raw",
    "decode_msgpack",
    "decode_json",
    "decode_npy",
    "decode_npz",
    "decode_example",
    "encode_msgpack",
    "encode_npz",
    "encode_example",
    "RecordDecodeError",
    "sniff_format",
    "sniff_content",
    "FORMATS",
    "to_json",
    "json_line",
    "describe_bytes",
    "decoded_tree",
    "DecodedFile",
]

Decoder = Callable[[bytes], dict]


def decode_example(record: bytes) -> dict:
    """Decode a serialized ``tf.train.Example`` (see :mod:`.example`).

    Raises:
        RecordDecodeError: not an Example.
        ImportError: protobuf is not installed (names the extra).
    """
    from .example import decode_example as decode

    return decode(record)


def encode_example(example: Mapping) -> bytes:
    """Encode ``{name: values}`` as a serialized ``tf.train.Example`` (see
    :func:`.example.encode_example`)."""
    from .example import encode_example as encode

    return encode(example)


DECODERS: dict[str, Decoder] = {
    "msgpack": decode_msgpack,
    "json": decode_json,
    "npy": decode_npy,
    "npz": decode_npz,
    "example": decode_example,
}

#: ``decode`` names resolved with the dataset in hand (by the NNX source),
#: beside those of :data:`DECODERS`.
DATASET_DECODERS = ("tfds",)


def _wrap_callable(fn: Callable) -> Decoder:
    name = getattr(fn, "__name__", repr(fn))

    def decode(record: bytes) -> dict:
        out = fn(record)
        if not isinstance(out, Mapping):
            raise RecordDecodeError(
                name, f"decoder returned {type(out).__name__}, expected a dict of arrays"
            )
        return {k: v if isinstance(v, np.ndarray) else np.asarray(v) for k, v in out.items()}

    decode.__name__ = name
    return decode


def get_decoder(decode: str | Callable | None) -> Decoder:
    """The decoder for a ``decode`` setting (``None``, a name, or a callable).

    Raises:
        ValueError: an unknown name, ``"tfds"`` (which needs the dataset's
            directory: see :func:`arrayfs.tfds.decoder`), or a non-callable
            value.
        ImportError: ``"example"`` without protobuf installed.
    """
    if decode is None:
        return decode_raw
    if isinstance(decode, str):
        if decode == "example":
            from .example import decode_example as real

            return real
        if decode in DATASET_DECODERS:
            raise ValueError(
                f"decode={decode!r} needs the dataset's directory (features.json): pass it to "
                "ArrayRecordSourceModule, or use arrayfs.tfds.decoder(directory)"
            )
        try:
            return DECODERS[decode]
        except KeyError:
            raise ValueError(
                f"decode must be None, a callable or one of {sorted([*DECODERS, *DATASET_DECODERS])}, "
                f"got {decode!r}"
            ) from None
    if callable(decode):
        return _wrap_callable(decode)
    raise ValueError(f"decode must be None, a str or a callable, got {type(decode).__name__}")
