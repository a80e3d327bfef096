"""The record decoders of the NNX source; they live in :mod:`arrayfs.encoding`
(no JAX needed there, so Beam conversion and tools share them), except
``"tfds"``, which needs the dataset's directory and is resolved here with
the dataset in hand."""

from ..encoding import (  # noqa: F401
    DATASET_DECODERS,
    DECODERS,
    Decoder,
    RecordDecodeError,
    __all__,  # noqa: F401
    decode_example,
    decode_json,
    decode_msgpack,
    decode_npy,
    decode_npz,
    decode_raw,
    encode_example,
    encode_msgpack,
    encode_npz,
    get_decoder,
)


def _as_is(element):
    return element


def decoder_for(decode, dataset) -> Decoder:
    """The decoder for a ``decode`` setting and an open dataset.

    ``"tfds"`` reads ``features.json`` from the directory of the dataset's
    first shard (:func:`arrayfs.tfds.decoder`); a source whose elements are
    decoded already (``dataset.decoded``, as :func:`arrayfs.tfds.data_source`'s)
    is used as it is with ``None`` or ``"tfds"``; every other setting is
    :func:`get_decoder`'s.

    Raises:
        ValueError: an unknown setting; ``"tfds"`` for a source that has no
            shard paths (give ``paths``, or decode yourself with a callable).
        FileNotFoundError: no ``features.json`` beside the shards.
    """
    if getattr(dataset, "decoded", False) and (decode is None or decode in DATASET_DECODERS):
        return _as_is  # an arrayfs.tfds source: its elements are decoded already
    if decode not in DATASET_DECODERS:
        return get_decoder(decode)
    shards = getattr(dataset, "shards", None)
    if not shards:
        raise ValueError(
            f"decode={decode!r} needs the shards' directory, and this source ({type(dataset).__name__}) has "
            "no shard paths: pass paths to ArrayRecordSourceModule, or decode=arrayfs.tfds.decoder(directory)"
        )
    from ..tfds import decoder

    return decoder(shards[0].path, storage_options=getattr(dataset, "storage_options", None))
