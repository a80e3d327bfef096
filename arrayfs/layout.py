"""ArrayRecord's footer and postscript messages (array_record ``cpp/layout.proto``).

The three messages are tiny proto2 messages of varint fields (plus one
string), so they are encoded and decoded here directly in the protobuf wire
format rather than through generated code:

* ``RiegeliPostscript {footer_offset = 1; magic = 2}``
* ``RiegeliFooterMetadata {array_record_metadata = 1 {version = 1;
  num_chunks = 2; num_records = 3; writer_options = 4 (string)}}``
* ``ArrayRecordFooter {chunk_offset = 1; decoded_data_size = 2;
  num_records = 3}``

The per-chunk footers are decoded for a whole file at once with numpy.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np

from .riegeli.varint import VarintError, decode_varints, encode_varint, encode_varints, read_varint

__all__ = [
    "uniform_counts",
    "POSTSCRIPT_MAGIC",
    "ARRAY_RECORD_VERSION",
    "FooterMetadata",
    "encode_postscript",
    "decode_postscript",
    "encode_footer_metadata",
    "decode_footer_metadata",
    "encode_chunk_footer",
    "encode_chunk_footers",
    "FooterEncoder",
    "decode_chunk_footers",
    "decode_footer_index",
    "footer_record_sizes",
    "LayoutError",
]

POSTSCRIPT_MAGIC = 0x71930E704FDAE05E
ARRAY_RECORD_VERSION = 1

_VARINT = 0
_LEN = 2


class LayoutError(ValueError):
    """A footer or postscript message is malformed."""


class FooterMetadata(NamedTuple):
    version: int | None
    num_chunks: int | None
    num_records: int | None
    writer_options: str | None


def _varint_field(number: int, value: int) -> bytes:
    return encode_varint(number << 3 | _VARINT) + encode_varint(value)


def _parse_fields(buf) -> dict[int, object]:
    """Fields of one message: varint fields as int, length-delimited as a
    memoryview. Unknown fields are kept; a later occurrence wins, as in
    protobuf."""
    fields: dict[int, object] = {}
    pos = 0
    end = len(buf)
    try:
        while pos < end:
            key, pos = read_varint(buf, pos)
            number, wire = key >> 3, key & 7
            if number == 0:
                raise LayoutError(f"field number 0 at byte {pos}")
            if wire == _VARINT:
                fields[number], pos = read_varint(buf, pos)
            elif wire == _LEN:
                n, pos = read_varint(buf, pos)
                if pos + n > end:
                    raise LayoutError(f"field {number} overruns the message")
                fields[number] = memoryview(buf)[pos : pos + n]
                pos += n
            elif wire == 1:
                pos += 8
            elif wire == 5:
                pos += 4
            else:
                raise LayoutError(f"unsupported wire type {wire} for field {number}")
        if pos != end:
            raise LayoutError("message ends inside a field")
    except VarintError as e:
        raise LayoutError(str(e)) from None
    return fields


def encode_postscript(footer_offset: int) -> bytes:
    return _varint_field(1, footer_offset) + _varint_field(2, POSTSCRIPT_MAGIC)


def decode_postscript(buf) -> tuple[int | None, int | None]:
    """``(footer_offset, magic)``; either is ``None`` when absent. Raises
    :class:`LayoutError` when ``buf`` is not such a message."""
    return _decode_postscript_cached(bytes(buf)) if len(buf) <= _CACHED_BYTES else _decode_postscript(buf)


# Shards written alike have the same postscript and metadata bytes, and a
# dataset opens thousands: parsed once, looked up after (the results are
# tuples, and an error is raised each time, never cached). Only messages of
# the usual size are kept: a forged footer must not fill memory.
_CACHED_BYTES = 1024


def _decode_postscript(buf) -> tuple[int | None, int | None]:
    f = _parse_fields(buf)
    offset, magic = f.get(1), f.get(2)
    if not (offset is None or isinstance(offset, int)) or not (magic is None or isinstance(magic, int)):
        raise LayoutError("postscript fields have the wrong wire type")
    return offset, magic


def encode_footer_metadata(num_chunks: int, num_records: int, writer_options: str) -> bytes:
    opts = writer_options.encode()
    inner = (
        _varint_field(1, ARRAY_RECORD_VERSION)
        + _varint_field(2, num_chunks)
        + _varint_field(3, num_records)
        + encode_varint(4 << 3 | _LEN)
        + encode_varint(len(opts))
        + opts
    )
    return encode_varint(1 << 3 | _LEN) + encode_varint(len(inner)) + inner


def decode_footer_metadata(buf) -> FooterMetadata | None:
    """The ArrayRecord metadata, or ``None`` when the footer has none
    (a Riegeli file that is not ArrayRecord). Raises :class:`LayoutError`
    when ``buf`` is not such a message."""
    return _decode_footer_metadata_cached(bytes(buf)) if len(buf) <= _CACHED_BYTES else _decode_footer_metadata(buf)


def _decode_footer_metadata(buf) -> FooterMetadata | None:
    outer = _parse_fields(buf)
    inner = outer.get(1)
    if inner is None:
        return None
    if not isinstance(inner, memoryview):
        raise LayoutError("array_record_metadata has the wrong wire type")
    f = _parse_fields(inner)
    opts = f.get(4)
    if opts is not None:
        if not isinstance(opts, memoryview):
            raise LayoutError("writer_options has the wrong wire type")
        try:
            opts = bytes(opts).decode()
        except UnicodeDecodeError:
            raise LayoutError("writer_options is not UTF-8") from None
    for k in (1, 2, 3):
        if k in f and not isinstance(f[k], int):
            raise LayoutError(f"array_record_metadata field {k} has the wrong wire type")
    return FooterMetadata(f.get(1), f.get(2), f.get(3), opts)


_decode_postscript_cached = lru_cache(maxsize=1024)(_decode_postscript)
_decode_footer_metadata_cached = lru_cache(maxsize=1024)(_decode_footer_metadata)


def encode_chunk_footer(chunk_offset: int, decoded_data_size: int, num_records: int) -> bytes:
    return _varint_field(1, chunk_offset) + _varint_field(2, decoded_data_size) + _varint_field(3, num_records)


def encode_chunk_footers(chunk_offsets, decoded_data_sizes, num_records) -> tuple[bytes, np.ndarray]:
    """All ``ArrayRecordFooter`` records of a file at once (vectorised).

    Takes three equal-length integer sequences; returns the concatenated
    serialized messages and the byte length of each (``int64``, shape
    ``(n,)``), as a simple chunk's values and sizes need them.
    """
    fields = np.stack(
        [np.asarray(chunk_offsets, np.uint64), np.asarray(decoded_data_sizes, np.uint64), np.asarray(num_records, np.uint64)],
        axis=1,
    )
    n = len(fields)
    if n == 0:
        return b"", np.zeros(0, dtype=np.int64)
    tagged = np.empty((n, 6), dtype=np.uint64)
    tagged[:, 0::2] = np.array([8, 16, 24], dtype=np.uint64)
    tagged[:, 1::2] = fields
    # Each varint takes 1 + floor(bits / 7) bytes; tags take one.
    lengths = np.ones(fields.shape, dtype=np.int64)
    for k in range(1, 10):
        lengths += fields >= np.uint64(1 << (7 * k))
    return encode_varints(tagged.ravel()), 3 + lengths.sum(axis=1)


def _fixed_layout_block(region, n: int, length: int):
    """``(n, 3)`` fields of ``n`` footers of ``length`` bytes each laid out
    alike (same varint widths), or ``None`` when they are not.

    The region is viewed as an ``(n, length)`` matrix without copying; the
    first row gives the layout (where each varint ends), every row must
    end its varints in the same columns and carry the tags 8, 16, 24 in the
    same places, and each value is combined from its columns. A footer
    index is mostly such runs: offsets change width only at powers of 128.
    """
    m = np.frombuffer(region, dtype=np.uint8, count=n * length).reshape(n, length)
    pattern = m[0] < 0x80
    ends = np.flatnonzero(pattern)
    if ends.size != 6 or ends[-1] != length - 1:
        return None
    starts = np.concatenate(([0], ends[:-1] + 1))
    if not (ends[0::2] == starts[0::2]).all():
        return None  # tags are one byte
    if not ((m < 0x80) == pattern).all() or not (m[:, ends[0::2]] == _TAGS).all():
        return None
    out = np.empty((n, 3), dtype=np.uint64)
    for f in range(3):
        a, b = int(starts[2 * f + 1]), int(ends[2 * f + 1])
        if b - a >= 9 and (m[:, b] > 1).any():
            return None  # more than 64 bits
        v = (m[:, a] & 0x7F).astype(np.uint64)
        for j in range(1, b - a + 1):
            v |= (m[:, a + j] & 0x7F).astype(np.uint64) << np.uint64(7 * j)
        out[:, f] = v
    return out


def _runs_block(region, lengths: np.ndarray):
    """:func:`_canonical_block` by runs of footers of equal length laid out
    alike (see :func:`_fixed_layout_block`), or ``None`` when there are too
    many runs for it to pay or a run is laid out otherwise."""
    n = len(lengths)
    cuts = np.flatnonzero(np.diff(lengths)) + 1
    if len(cuts) > max(8, n // 256):
        return None
    bounds = np.concatenate(([0], cuts, [n])).tolist()
    out = np.empty((n, 3), dtype=np.uint64)
    pos = 0
    mv = memoryview(region)
    for i, j in zip(bounds[:-1], bounds[1:]):
        length = int(lengths[i])
        fields = _fixed_layout_block(mv[pos : pos + (j - i) * length], j - i, length)
        if fields is None:
            return None
        out[i:j] = fields
        pos += (j - i) * length
    return out


def _canonical_block(region, lengths: np.ndarray):
    """``(n, 3)`` fields (``uint64``) of the footers in ``region`` when all
    are encoded as array_record writes them (fields 1, 2, 3 once each, in
    order, as varints: ``08 v 10 v 18 v``), else ``None``.

    Vectorised over the whole region: the varints end where a byte is below
    0x80; the tags must be the single bytes 8, 16, 24; each field's value
    bytes are gathered as rows of a sliding window and combined 7 bits at a
    time (one column for one-byte values, the common case of counts and
    small sizes).
    """
    n = len(lengths)
    a = np.frombuffer(region, dtype=np.uint8)
    ends = np.flatnonzero(a < 0x80)
    if ends.size != 6 * n or (n and ends[-1] != a.size - 1):
        return None
    size = np.diff(ends, prepend=-1).reshape(n, 6)
    ends = ends.reshape(n, 6)
    # Tags: one byte each, 8, 16, 24; each footer ends where its record does.
    if not ((size[:, 0::2] == 1).all() and (a[ends[:, 0::2]] == _TAGS).all()):
        return None
    if not (size.sum(axis=1) == lengths).all():
        return None
    out = np.empty((n, 3), dtype=np.uint64)
    window = None
    for f in range(3):
        vlen = size[:, 2 * f + 1]
        vend = ends[:, 2 * f + 1]
        width = int(vlen.max()) if n else 1
        if width == 1:
            out[:, f] = a[vend]
            continue
        if width > 10 or (width == 10 and (a[vend[vlen == 10]] > 1).any()):
            return None  # more than 64 bits
        if window is None:
            padded = np.zeros(a.size + 10, dtype=np.uint8)
            padded[: a.size] = a
            window = np.lib.stride_tricks.sliding_window_view(padded, 10)
        cols = np.arange(width)
        g = window[vend - vlen + 1, :width] & np.uint8(0x7F)
        g[cols >= vlen[:, None]] = 0
        v = g[:, 0].astype(np.uint64)
        for j in range(1, width):
            v |= g[:, j].astype(np.uint64) << np.uint64(7 * j)
        out[:, f] = v
    return out


_TAGS = np.array([8, 16, 24], dtype=np.uint8)


def _scalar_rows(region, lengths: list):
    """:func:`_canonical_block` one footer at a time, for a handful of them:
    a list of ``(offset, decoded size, records)``, or ``None`` if one is
    encoded otherwise (or holds a value of 2**64 or more)."""
    rows = []
    pos = 0
    try:
        for n in lengths:
            end = pos + n
            if region[pos] != 8:
                return None
            a, p = read_varint(region, pos + 1)
            if region[p] != 16:
                return None
            b, p = read_varint(region, p + 1)
            if region[p] != 24:
                return None
            c, p = read_varint(region, p + 1)
            if p != end:
                return None
            rows.append((a, b, c))
            pos = end
    except (IndexError, VarintError):
        return None
    return rows


def _parsed_block(region, lengths: np.ndarray, first: int) -> np.ndarray:
    """Field-by-field parse of footers (any valid proto encoding)."""
    out = np.zeros((len(lengths), 3), dtype=np.uint64)
    rows = []
    pos = 0
    for i, n in enumerate(lengths.tolist()):
        f = _parse_fields(region[pos : pos + n])
        pos += n
        row = []
        for k in (1, 2, 3):
            x = f.get(k, 0)
            if not isinstance(x, int) or x >= 1 << 64:
                raise LayoutError(f"footer of chunk {first + i}: field {k} has the wrong wire type")
            row.append(x)
        rows.append(row)
    if rows:
        out[:] = rows
    return out


def footer_record_sizes(sizes_raw, num_chunks: int) -> tuple[int, np.ndarray]:
    """Sizes (bytes) of the footer chunk's records from its decoded sizes
    block: ``(size of record 0, sizes of the num_chunks footers)``.

    Footers are shorter than 128 bytes, so their sizes are one byte each
    and come back as a zero-copy ``uint8`` view; other encodings decode to
    ``uint64``. Raises :class:`LayoutError` when the block does not hold
    ``num_chunks + 1`` varints.
    """
    try:
        size0, pos = read_varint(sizes_raw, 0)
        rest = memoryview(sizes_raw)[pos:]
        if len(rest) == num_chunks:
            a = np.frombuffer(rest, dtype=np.uint8)
            if num_chunks == 0 or int(a.max()) < 0x80:
                return size0, a
        return size0, decode_varints(rest, num_chunks)
    except VarintError as e:
        raise LayoutError(f"footer record sizes: {e}") from None


#: Footers decoded per step: bounds the temporary arrays to a few MiB.
_STEP = 1 << 16
#: Up to this many footers are parsed one by one.
_SMALL = 64


def uniform_counts(counts, group: int | None = None, *, final: bool = True) -> bool:
    """Whether chunk record counts are "``group_size`` records in every
    chunk, at least one and at most ``group_size`` in the last": the one
    test by which a file's index keeps its counts as one number.

    ``counts`` are the record counts of a run of consecutive chunks (a
    sequence or integer array), ``group`` is the group size (default:
    ``counts[0]``; it must be positive), ``final`` says whether the run
    ends with the file's last chunk (if not, its last chunk must be full
    too). An empty run is uniform.
    """
    n = len(counts)
    if n == 0:
        return True
    g = int(counts[0]) if group is None else int(group)
    if g <= 0:
        return False
    last = int(counts[-1])
    head = counts[:-1]
    full = bool((head == g).all()) if isinstance(head, np.ndarray) else all(c == g for c in head)
    return full and (last == g or (final and 0 < last <= g))


def decode_footer_index(pieces, lengths: np.ndarray, skip: int, *, total: int):
    """Decode the ``ArrayRecordFooter`` records of a footer chunk into
    ``(chunk_offsets, decoded_sizes, num_records)``, three ``int64`` arrays
    of shape ``(num_chunks,)`` (bytes, bytes, records).

    ``pieces`` yields the chunk's decoded values block in order (as
    :func:`arrayfs.riegeli.compression.decompress_pieces` does), ``skip``
    is the size of record 0 (the footer metadata), ``lengths`` the size of
    each footer record and ``total`` the whole values size (bytes). The
    values are folded over a step of footers at a time, so memory stays at
    the output arrays plus one piece: a footer of 10^7 chunks needs no
    10^7-element temporaries. Footers as array_record writes them decode
    with numpy; others are parsed field by field. Raises
    :class:`LayoutError` for a malformed footer.
    """
    n = len(lengths)
    if skip + int(lengths.sum(dtype=np.int64)) != total:
        raise LayoutError(f"footer record sizes add up to {skip + int(lengths.sum(dtype=np.int64))} bytes, "
                          f"the values hold {total}")
    if n <= _SMALL:
        # A few footers (a shard of a few chunks): numpy's per-call cost
        # would outweigh the work; parse them one by one.
        values = b"".join(bytes(p) for p in pieces)
        region = memoryview(values)[skip:]
        rows = _scalar_rows(region, lengths.tolist())
        if rows is None:
            rows = _parsed_block(region, lengths, 0).tolist()
        if not rows:
            return np.zeros(0, np.uint64), np.zeros(0, np.uint64), (1, 0)
        offs, sizes, counts = zip(*rows)
        return (np.array(offs, dtype=np.uint64), np.array(sizes, dtype=np.uint64),
                (counts[0], counts[-1]) if uniform_counts(counts) else np.array(counts, dtype=np.uint64))
    offsets = np.empty(n, dtype=np.uint64)
    decoded = np.empty(n, dtype=np.uint64)
    counts = group = last = None
    ends = np.empty(0, dtype=np.int64)
    carry = b""
    done = 0  # footers decoded
    base = 0  # lengths[done:] start at this byte of carry
    skipping = skip
    for piece in pieces:
        if skipping:
            take = min(skipping, len(piece))
            piece = memoryview(piece)[take:]
            skipping -= take
        buf = carry + bytes(piece) if carry else piece
        pos = 0
        while done < n:
            if ends.size == 0:
                step = lengths[done : done + _STEP]
                ends = np.cumsum(step, dtype=np.int64)
                base = 0
            fit = int(np.searchsorted(ends, len(buf) - pos + base, side="right"))
            if fit == 0:
                break
            nbytes = int(ends[fit - 1]) - base
            region = memoryview(buf)[pos : pos + nbytes]
            block_lengths = np.diff(ends[:fit], prepend=base).astype(np.int64)
            fields = _runs_block(region, block_lengths)
            if fields is None:
                fields = _canonical_block(region, block_lengths)
            if fields is None:
                fields = _parsed_block(region, block_lengths, done)
            offsets[done : done + fit] = fields[:, 0]
            decoded[done : done + fit] = fields[:, 1]
            c = fields[:, 2]
            if counts is None:
                # Kept as one number while every chunk holds group_size
                # records (the last may hold fewer): 8 bytes per chunk saved.
                if group is None:
                    group = int(c[0])
                if not uniform_counts(c, group, final=done + fit == n):
                    counts = np.empty(n, dtype=np.uint64)
                    counts[:done] = group
            if counts is not None:
                counts[done : done + fit] = c
            last = int(c[-1])
            done += fit
            pos += nbytes
            base = int(ends[fit - 1])
            ends = ends[fit:]
        carry = bytes(memoryview(buf)[pos:])
    if done != n or carry:
        raise LayoutError(f"footer values end after {done} of {n} chunk footers")
    if counts is None:
        return offsets, decoded, (group, last) if n else (1, 0)
    return offsets, decoded, counts


class FooterEncoder:
    """The footer chunk's records, serialized as the chunks are written.

    array_record writes one ``ArrayRecordFooter`` per chunk after the
    ``RiegeliFooterMetadata`` record. Keeping each footer as its serialized
    bytes (12 to 15 bytes for a typical chunk, 33 at most) plus one byte for
    its length is smaller than any per-chunk Python object or fixed-width
    array, and leaves nothing to encode at close but the metadata.

    :meth:`add` appends footers; :meth:`finish` returns the footer chunk's
    ``values`` (metadata, then every footer) and ``sizes`` (each record's
    length as a varint) as zero-copy views: room for the largest possible
    metadata record is kept in front of the footers, so the metadata is
    written in place and nothing is copied.
    """

    # Footers of this many chunks wait in fixed-width arrays (24 bytes each)
    # and are serialized together: few numpy calls per chunk written.
    _STAGE = 4096

    def __init__(self, writer_options: str):
        self._options = writer_options
        self._room = len(encode_footer_metadata(2**64 - 1, 2**64 - 1, writer_options))
        self._values = bytearray(self._room)
        # Every footer is at most 33 bytes, so its length is a one-byte varint;
        # the metadata's length (any size) goes in the reserved front.
        self._sizes = bytearray(10)
        self._stage = np.empty((3, self._STAGE), dtype=np.uint64)
        self._staged = 0
        self.num_chunks = 0

    @property
    def nbytes(self) -> int:
        """Bytes held (footers, their lengths, the staging arrays)."""
        return len(self._values) + len(self._sizes) + self._stage.nbytes

    def add(self, chunk_offsets, decoded_data_sizes, num_records) -> None:
        """Append the footers of chunks written at ``chunk_offsets`` (bytes)
        with ``decoded_data_sizes`` (bytes) and ``num_records`` (records);
        equal-length integer sequences, in file order."""
        n = len(chunk_offsets)
        if self._staged + n > self._STAGE:
            self._serialize()
        if n >= self._STAGE:
            self._append(chunk_offsets, decoded_data_sizes, num_records)
        else:
            at = self._staged
            stage = self._stage
            stage[0, at : at + n] = chunk_offsets
            stage[1, at : at + n] = decoded_data_sizes
            stage[2, at : at + n] = num_records
            self._staged += n
        self.num_chunks += n

    def _serialize(self) -> None:
        if self._staged:
            k = self._staged
            self._staged = 0
            self._append(self._stage[0, :k], self._stage[1, :k], self._stage[2, :k])

    def _append(self, chunk_offsets, decoded_data_sizes, num_records) -> None:
        encoded, lengths = encode_chunk_footers(chunk_offsets, decoded_data_sizes, num_records)
        self._values += encoded
        self._sizes += lengths.astype(np.uint8).tobytes()

    def finish(self, num_records: int) -> tuple[memoryview, memoryview, int]:
        """``(values, sizes, count)`` of the footer chunk for a file of
        ``num_records`` records: ``count`` records (the metadata and one
        footer per chunk) concatenated in ``values``, their lengths as
        varints in ``sizes``. Call once, after the last :meth:`add`."""
        self._serialize()
        self._stage = np.empty((3, 0), dtype=np.uint64)
        meta = encode_footer_metadata(self.num_chunks, num_records, self._options)
        start = self._room - len(meta)
        self._values[start : self._room] = meta
        size = encode_varint(len(meta))
        self._sizes[10 - len(size) : 10] = size
        return (
            memoryview(self._values)[start:],
            memoryview(self._sizes)[10 - len(size) :],
            self.num_chunks + 1,
        )


def decode_chunk_footers(values, offsets: np.ndarray) -> np.ndarray:
    """Decode ``ArrayRecordFooter`` records ``values[offsets[i]:offsets[i+1]]``.

    Returns a ``uint64`` array of shape ``(n, 3)``: chunk offset (bytes),
    decoded data size (bytes), number of records. (One-buffer form of
    :func:`decode_footer_index`, for tools holding a decoded footer.)
    """
    lengths = np.diff(offsets).astype(np.int64)
    start = int(offsets[0]) if len(offsets) else 0
    o, d, c = decode_footer_index([memoryview(values)[start:]], lengths, 0, total=len(values) - start)
    if isinstance(c, tuple):
        group, last = c
        c = np.full(len(o), group, dtype=np.uint64)
        if len(c):
            c[-1] = last
    return np.stack([o, d, c], axis=1).astype(np.uint64)
