"""The record decoders of the NNX source; they live in :mod:`arrayfs.encoding`
(no JAX needed there, so Beam conversion and tools share them)."""

from ..encoding import (  # noqa: F401
    DECODERS,
    Decoder,
    RecordDecodeError,
    __all__,  # noqa: F401
    decode_json,
    decode_msgpack,
    decode_npy,
    decode_npz,
    decode_raw,
    encode_msgpack,
    encode_npz,
    get_decoder,
)
