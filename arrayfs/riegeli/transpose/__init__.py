"""Transposed chunks (type ``'t'``) and the file metadata chunk (type ``'m'``).

Upstream: riegeli ``riegeli/chunk_encoding/transpose_decoder.cc``,
``transpose_encoder.cc`` (what it writes) and ``transpose_internal.h``;
``doc/riegeli_records_file_format.md`` ("Transposed chunk").

One job per module:

- ``chunk_data``: compression type, header, buckets and transitions;
- ``machine``: the state machine (what each state does, implicit chains);
- ``transitions``: transition bytes to the sequence of visited states;
- ``strings``: entries of string buffers;
- ``interpreter``: the state machine run state by state (small chunks);
- ``vector``: the numpy decoder over blocks of visits (everything else);
- ``gather``: slices of one array concatenated into another;
- ``varints``: varints one at a time and whole streams;
- ``decode``: :func:`decode_transposed_chunk`, which picks a decoder;
- ``metadata``: the ``RecordsMetadata`` of a file metadata chunk.

Functions here keep no state between calls but bounded caches, safe to
share between threads.
"""

from .decode import decode_transposed_chunk
from .errors import TransposeError
from .metadata import decode_records_metadata, parse_records_metadata

__all__ = [
    "TransposeError",
    "decode_transposed_chunk",
    "decode_records_metadata",
    "parse_records_metadata",
]
