"""Simple chunks (spec: "Simple chunk with records"): their layout, parsed here only.

Simple chunk data is a compression byte, ``varint64`` the length of the
compressed sizes block, the sizes block (``num_records`` ``varint64``
record sizes) and the values block (the records back to back), each block
compressed as :mod:`.compression` describes. :func:`split_simple` parses
that layout; the decoders, the encoder and the one-record fast paths (the
scalar :func:`decode_single_record` and the vectorised
:func:`single_record_zstd_frames`, which read the same fields at their
fixed places) all live here.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

import numpy as np
from zstandard import BufferWithSegments, ZstdError
from zstandard import frame_content_size as _frame_content_size

from .blocks import BLOCK_HEADER_SIZE, BLOCK_SIZE
from .compression import (
    COMPRESSION_NAMES,
    NONE,
    ZSTD,
    CompressionError,
    _local,
    compress_block,
    decompress_block,
    zstd_decompress_exact,
    zstd_decompressor,
)
from .compression import zstd_decompressor as _zstd_decompressor
from .errors import CorruptChunkError
from .hashing import _from_buffer, _hash64, buffer_pointer, hashes_at, release_pointer
from .hashing import _key as _hash_key
from .header import _HEADER, CHUNK_HEADER_SIZE, SIMPLE, parse_chunk_headers, type_and_count
from .varint import VarintError, decode_varints, encode_varint, encode_varints, read_varint

__all__ = [
    "split_simple",
    "decode_record_sizes",
    "decode_simple",
    "encode_simple",
    "decode_single_record",
    "single_record_zstd_frames",
    "decompress_zstd_frames",
    "ZSTD_LOOP_MAX",
    "ZstdFrames",
    "locate_zstd_frames",
    "check_frame_hashes",
    "decode_zstd_frames",
]

_SIMPLE_ONE = type_and_count(SIMPLE, 1)
_unpack_header = _HEADER.unpack_from
_unpack_u64 = struct.Struct("<Q").unpack_from
# A varint64 record size takes at most 10 bytes: bounds the sizes block.
_MAX_VARINT_BYTES = 10


def split_simple(data, *, offset: int):
    """The parts of simple chunk data (spec: "Simple chunk with records"):
    ``(compression_type, sizes_block, values_block)``, the two blocks as
    zero-copy ``memoryview`` slices of ``data``, still compressed. The one
    place this layout is parsed (the one-record fast paths below read the
    same fields at their fixed places). Raises :class:`CorruptChunkError`."""
    if len(data) < 1:
        raise CorruptChunkError("simple chunk has no compression byte", offset=offset)
    ctype = data[0]
    if ctype not in COMPRESSION_NAMES:
        raise CorruptChunkError(f"unknown compression type {ctype:#04x}", offset=offset)
    try:
        sizes_len, pos = read_varint(data, 1)
    except VarintError as e:
        raise CorruptChunkError(f"record sizes: {e}", offset=offset) from None
    if pos + sizes_len > len(data):
        raise CorruptChunkError(
            f"sizes block of {sizes_len} bytes overruns the chunk data ({len(data)} bytes)", offset=offset
        )
    view = memoryview(data)
    return ctype, view[pos : pos + sizes_len], view[pos + sizes_len :]


def decode_record_sizes(data, num_records: int, decoded_data_size: int, *, offset: int):
    """Decode only the record sizes of a simple chunk (not the values).

    Returns ``(compression_type, sizes, values_block)``: the compression
    byte, a ``uint64`` array of shape ``(num_records,)`` and the
    still-compressed values block. Used to stat
    records without decompressing them.
    """
    ctype, sizes_block, values_block = split_simple(data, offset=offset)
    try:
        if num_records == 1:
            raw = sizes_block if ctype == NONE else decompress_block(ctype, sizes_block, max_size=_MAX_VARINT_BYTES)
            size, n = read_varint(raw, 0)
            if n != len(raw):
                raise CorruptChunkError("sizes block has trailing bytes", offset=offset)
            sizes = np.array([size], dtype=np.uint64)
        else:
            raw_sizes = decompress_block(ctype, sizes_block, max_size=num_records * _MAX_VARINT_BYTES)
            sizes = decode_varints(raw_sizes, num_records)
    except CompressionError as e:
        raise e.chunk_error(f"record sizes: {e}", offset=offset) from None
    except VarintError as e:
        raise CorruptChunkError(f"record sizes: {e}", offset=offset) from None
    return ctype, sizes, values_block


def decode_simple(data, num_records: int, decoded_data_size: int, *, offset: int):
    """Decode a simple chunk (type ``'r'``) into ``(values, offsets)``.

    ``values`` is a zero-copy view into ``data`` when uncompressed. The sum
    of record sizes must equal ``decoded_data_size`` and the values block
    must decode to exactly that many bytes; anything else raises
    :class:`CorruptChunkError`.
    """
    ctype, sizes, values_block = decode_record_sizes(data, num_records, decoded_data_size, offset=offset)
    offsets = np.empty(num_records + 1, dtype=np.int64)
    offsets[0] = 0
    np.cumsum(sizes, out=offsets[1:], dtype=np.int64) if num_records else None
    if num_records and (int(offsets[-1]) != decoded_data_size or int(sizes.max()) > decoded_data_size):
        raise CorruptChunkError(
            f"record sizes sum to {int(sizes.sum())} bytes, the header says {decoded_data_size}",
            offset=offset,
        )
    try:
        values = decompress_block(ctype, values_block, max_size=decoded_data_size)
    except CompressionError as e:
        raise e.chunk_error(f"record values: {e}", offset=offset) from None
    if len(values) != decoded_data_size:
        raise CorruptChunkError(
            f"values decode to {len(values)} bytes, the header says {decoded_data_size}",
            offset=offset,
        )
    return values, offsets


def encode_simple(records, compression_type: int, *, level=None, window_log=None) -> tuple[bytes, int]:
    """Encode ``records`` (a sequence of bytes-likes) as simple chunk data.

    Returns ``(data, decoded_data_size)``; the caller builds the header with
    :func:`encode_chunk_header` (type ``'r'``, ``len(records)`` records).
    """
    sizes = encode_varints([len(r) for r in records])
    values = b"".join(records)
    sizes_block = compress_block(compression_type, sizes, level=level, window_log=window_log)
    values_block = compress_block(compression_type, values, level=level, window_log=window_log)
    data = b"".join((bytes((compression_type,)), encode_varint(len(sizes_block)), sizes_block, values_block))
    return data, len(values)


def decode_single_record(window, offset: int, verify: bool, decoded: int | None = None):
    """Fast path for a chunk of exactly one record lying within one block.

    ``window`` (``bytes``) holds the file's physical bytes from the chunk's
    ``offset`` on, at least to its end. Checks the header hash (and the
    data hash with ``verify``) and returns the record as ``bytes``,
    decoding only the values block: the size of a lone record is the
    chunk's ``decoded_data_size`` (which must equal ``decoded`` when
    given: the footer's). Returns ``None`` whenever the chunk is not this
    simple case or anything is off, so that the caller takes the general
    path, which raises the precise error. This is the hot path of every
    single-record read: few Python operations, one C call per hash and
    one for the frame.
    """
    r = offset % BLOCK_SIZE
    if r <= BLOCK_HEADER_SIZE or BLOCK_SIZE - r < len(window):
        if 0 < r <= BLOCK_HEADER_SIZE:
            return None  # no chunk can begin here (read_chunk says why)
        q = BLOCK_SIZE - r if r else 0  # where the window meets the next block header
        # One block header inside the window (about 1% of 1 KB records):
        # hash-checked as the general path does, and cut out, unless it
        # splits the chunk header or a second one follows.
        if (q and q < CHUNK_HEADER_SIZE) or q + BLOCK_SIZE < len(window) or len(window) < q + BLOCK_HEADER_SIZE:
            return None
        if _hash64(_from_buffer(window) + (q + 8), 16, _hash_key) != _unpack_u64(window, q)[0]:
            return None
        window = window[:q] + window[q + BLOCK_HEADER_SIZE :]
    if len(window) < CHUNK_HEADER_SIZE + 3:
        return None
    header_hash, data_size, data_hash, tc, size = _unpack_header(window)
    end = CHUNK_HEADER_SIZE + data_size
    if tc != _SIMPLE_ONE or data_size < 3 or end > len(window) or (decoded is not None and size != decoded):
        return None
    ptr = _from_buffer(window)
    if _hash64(ptr + 8, 32, _hash_key) != header_hash or (
        verify and _hash64(ptr + CHUNK_HEADER_SIZE, data_size, _hash_key) != data_hash
    ):
        return None
    ctype = window[CHUNK_HEADER_SIZE]
    sizes_len = window[CHUNK_HEADER_SIZE + 1]
    vstart = CHUNK_HEADER_SIZE + 2 + sizes_len
    if sizes_len >= 0x80 or vstart + 1 > end:
        return None
    if ctype == ZSTD:
        # The values block: varint64 of the record's size (1 or 2 bytes for
        # records under 16 KiB), then one zstd frame that must declare it.
        b0 = window[vstart]
        if b0 < 0x80:
            n, p = b0, vstart + 1
        elif vstart + 2 <= end and window[vstart + 1] < 0x80:
            n, p = (b0 & 0x7F) | (window[vstart + 1] << 7), vstart + 2
        else:
            n, p = -1, vstart
        # The declared content size is what zstd allocates: it must be the
        # record's, and one that a frame this long can hold (_zstd_most).
        if n == size:
            frame = memoryview(window)[p:end]
            try:
                # frame_content_size raises for a header that is not zstd's
                # (the data hash vouches only for the bytes, not that they
                # are zstd). decompress takes (frame, max_output_size,
                # read_across_frames, allow_extra_data) by position:
                # keywords cost 0.3 us of a 2.2 us call on a 1 KB record.
                if _frame_content_size(frame) == size and size <= ((end - p) // 4 + 1) << 17:
                    out = (getattr(_local, "zstd", None) or _zstd_decompressor()).decompress(frame, 0, False, False)
                    return out if len(out) == size else None
            except ZstdError:
                return None
    mv = memoryview(window)
    if ctype == NONE:
        return bytes(mv[vstart:end]) if end - vstart == size else None
    try:
        n, p = read_varint(window, vstart)
        if n != size or p > end:
            return None
        if ctype == ZSTD:
            out = zstd_decompress_exact(mv[p:end], size)
        else:
            out = decompress_block(ctype, mv[vstart:end], max_size=size)
    except (CompressionError, ZstdError, VarintError):
        return None
    return out if len(out) == size else None


# Bytes gathered per chunk: the header, the compression byte and the
# sizes-block length.
_WINDOW = CHUNK_HEADER_SIZE + 2

def single_record_zstd_frames(buf, positions: np.ndarray, offsets: np.ndarray, lengths: np.ndarray, *,
                              verify: bool):
    """Locate and check the values frames of zstd chunks of one record.

    ``buf`` holds chunk windows back to back: window ``j`` is
    ``buf[positions[j]:positions[j] + lengths[j]]`` and holds the file's
    bytes from chunk offset ``offsets[j]`` on (``int64`` arrays of shape
    ``(n,)``; block boundaries are reckoned on the file offsets). Returns
    ``(sel, segments, sizes)``: the positions in ``offsets`` that are this
    simple case with good hashes (``int64``), their frames as ``uint64``
    ``(offset in buf, length)`` pairs of shape ``(len(sel), 2)``, and their
    decoded sizes (``uint64``). Chunks left out (other codecs, chunks
    crossing a block header, bad hashes) are for the caller's general
    path, which raises the precise error. (:func:`locate_zstd_frames` and
    :func:`check_frame_hashes` in one call.)
    """
    frames = locate_zstd_frames(buf, positions, offsets, lengths)
    ok = check_frame_hashes(buf, frames, verify=verify)
    return frames.sel[ok], frames.segments[ok], frames.sizes[ok]


class ZstdFrames(NamedTuple):
    """One-record zstd chunks found in a buffer by :func:`locate_zstd_frames`,
    their hashes not yet checked: ``sel`` (``int64``) the positions in the
    caller's arrays, ``segments`` (``uint64``, ``(n, 2)``) each values
    frame's ``(offset in buf, length)``, ``sizes`` (``uint64``) the decoded
    sizes, and for :func:`check_frame_hashes` each chunk's position in
    ``buf`` (``positions``, ``int64``), data size (``data_sizes``, ``int64``)
    and stored hashes (``header_hashes``, ``data_hashes``, ``uint64``)."""

    sel: np.ndarray
    segments: np.ndarray
    sizes: np.ndarray
    positions: np.ndarray
    data_sizes: np.ndarray
    header_hashes: np.ndarray
    data_hashes: np.ndarray


def locate_zstd_frames(buf, positions: np.ndarray, offsets: np.ndarray, lengths: np.ndarray) -> ZstdFrames:
    """The header and frame checks of :func:`single_record_zstd_frames`,
    done with numpy (no call per chunk), without the hashes: a caller
    checks those with :func:`check_frame_hashes` (while another thread
    decompresses, for instance) before it trusts any frame."""
    empty_i = np.zeros(0, dtype=np.int64)
    empty_u = np.zeros(0, dtype=np.uint64)
    empty = ZstdFrames(empty_i, np.zeros((0, 2), dtype=np.uint64), empty_u, empty_i, empty_i, empty_u, empty_u)
    size = len(buf)
    if size < _WINDOW or len(offsets) == 0:
        return empty
    # Row gathers from a strided view of the buffer: one index per chunk.
    windows = np.lib.stride_tricks.as_strided(
        np.frombuffer(buf, dtype=np.uint8), shape=(size - _WINDOW + 1, _WINDOW), strides=(1, 1), writeable=False
    )
    r = offsets % BLOCK_SIZE
    ok = (r > BLOCK_HEADER_SIZE) & (lengths >= _WINDOW) & (positions + _WINDOW <= size)
    rows = windows[np.where(ok, positions, 0)]
    h = parse_chunk_headers(rows)
    data_size = np.minimum(h["data_size"], np.uint64(1 << 40)).astype(np.int64)
    decoded = np.minimum(h["decoded_data_size"], np.uint64(1 << 40)).astype(np.int64)
    start = positions + CHUNK_HEADER_SIZE
    end = start + data_size
    ctype = rows[:, CHUNK_HEADER_SIZE].astype(np.int64)
    sizes_len = rows[:, CHUNK_HEADER_SIZE + 1].astype(np.int64)
    ok &= (h["type_and_count"] == _SIMPLE_ONE) & (ctype == ZSTD) & (sizes_len < 0x80) & (decoded > 0)
    ok &= (data_size >= 4) & (r + CHUNK_HEADER_SIZE + data_size <= BLOCK_SIZE)
    ok &= CHUNK_HEADER_SIZE + data_size <= lengths
    vstart = start + 2 + sizes_len
    flat = np.frombuffer(buf, dtype=np.uint8)
    vs = np.where(ok & (vstart + 2 <= end), vstart, 0)
    b0 = flat[vs].astype(np.int64)
    b1 = flat[vs + 1].astype(np.int64)
    one = b0 < 0x80
    declared = np.where(one, b0, (b0 & 0x7F) | (b1 << 7))
    ok &= (one | (b1 < 0x80)) & (declared == decoded) & (vstart + 2 <= end)
    # The values block must be one zstd frame of one block, ending where the
    # chunk data ends (the general path refuses trailing bytes; zstd would
    # ignore them): its end is read from the frame header and the block
    # header (RFC 8878, 3.1.1.1 and 3.1.1.2). Other frames take the general path.
    fs = np.where(ok, vs + np.where(one, 1, 2), 0)
    fhd = flat[np.minimum(fs + 4, size - 1)].astype(np.int64)
    single = (fhd >> 5) & 1
    fcs = np.where((fhd >> 6) == 0, single, 1 << (fhd >> 6))
    did = np.where((fhd & 3) == 3, 4, fhd & 3)
    bh = fs + 6 - single + did + fcs
    bi = np.minimum(bh, size - 3)
    block = flat[bi].astype(np.int64) | (flat[bi + 1].astype(np.int64) << 8) | (flat[bi + 2].astype(np.int64) << 16)
    btype = (block >> 1) & 3
    frame_end = bh + 3 + np.where(btype == 1, 1, block >> 3) + 4 * ((fhd >> 2) & 1)
    ok &= ((block & 1) == 1) & (btype != 3) & (bh + 3 <= end) & (frame_end == end)
    # A declared content size must be the chunk's: it is what zstd
    # allocates (RFC 8878, 3.1.1.1.4; 8-byte sizes go the general way); and
    # no frame decodes to more than _zstd_most of its length.
    cs = fs + 5 + (1 - single) + did
    ci = np.minimum(cs, size - 4)
    b = [flat[ci + j].astype(np.int64) for j in range(4)]
    content = np.where(fcs == 1, b[0], np.where(fcs == 2, (b[0] | (b[1] << 8)) + 256,
                                               b[0] | (b[1] << 8) | (b[2] << 16) | (b[3] << 24)))
    ok &= (fcs < 8) & ((fcs == 0) | (content == decoded))
    ok &= decoded <= (((end - fs) // 4 + 1) << 17)
    good = np.flatnonzero(ok)
    if good.size == 0:
        return empty
    frame_start = fs[good]
    segs = np.empty((good.size, 2), dtype=np.uint64)
    segs[:, 0] = frame_start
    segs[:, 1] = end[good] - frame_start
    return ZstdFrames(good, segs, decoded[good].astype(np.uint64), positions[good], data_size[good],
                      h["header_hash"][good], h["data_hash"][good])


def check_frame_hashes(buf, frames: ZstdFrames, *, verify: bool) -> np.ndarray:
    """Which of ``frames`` (found in ``buf``) have a good header hash, and
    with ``verify`` a good data hash: a ``bool`` array. One C call per
    hash, with no Python frame between them; cffi drops the GIL in each."""
    n = frames.sel.size
    if n == 0:
        return np.zeros(0, dtype=bool)
    ptr = buffer_pointer(buf)
    try:
        pos = frames.positions
        ok = hashes_at(ptr, (pos + 8).tolist(), [32] * n) == frames.header_hashes
        if verify:
            ok &= hashes_at(ptr, (pos + CHUNK_HEADER_SIZE).tolist(), frames.data_sizes.tolist()) == frames.data_hashes
    finally:
        release_pointer(ptr)
    return ok


#: Below this many frames a plain loop of ``decompress`` calls is the
#: cheapest entry point; above it ``multi_decompress_to_buffer`` on several
#: threads wins (``benchmarks/zstd_entry_points.py``: 256 frames of 1 KB,
#: 3.6 us per frame in the loop against 3.7 and 4.8 us for it on 0 and 2
#: threads; 8,192 frames, 4.0 against 2.2 us on 2 threads).
ZSTD_LOOP_MAX = 1024


def decompress_zstd_frames(groups, *, threads: int = 0) -> list:
    """Decompress many zstd frames, each declaring its content size.

    ``groups`` is a list of ``(buf, segments, sizes)`` as returned (with
    their buffer) by :func:`single_record_zstd_frames`. Fewer than
    :data:`ZSTD_LOOP_MAX` frames (or ``threads <= 1``) are decoded by a
    plain loop; more go through one ``multi_decompress_to_buffer`` call on
    ``threads`` threads outside the GIL. Returns the decoded frames as
    ``bytes``, group after group, or ``None`` if any frame is corrupt (the
    caller then takes the general path, frame by frame, to name the bad
    one).
    """
    groups = [g for g in groups if len(g[2])]
    if not groups:
        return []
    total = sum(len(g[2]) for g in groups)
    if total < ZSTD_LOOP_MAX or threads <= 1:
        dec = zstd_decompressor().decompress
        out: list = []
        for buf, segs, sizes in groups:
            mv = memoryview(buf)
            try:
                out += [dec(mv[a : a + n]) for a, n in segs.tolist()]
            except ZstdError:
                # A frame without a content size (zstd then needs a bound),
                # or a corrupt one: this group again, bounded.
                try:
                    part = [dec(mv[a : a + n], max_output_size=int(m))
                            for (a, n), m in zip(segs.tolist(), sizes.tolist())]
                except ZstdError:
                    return None
                if list(map(len, part)) != sizes.tolist():
                    return None
                out += part
        return out
    if len(groups) == 1:
        buf, segs, sizes = groups[0]
        frames = BufferWithSegments(buf, segs.tobytes())
    else:
        # zstandard 0.25 rejects decompressed_sizes for a
        # BufferWithSegmentsCollection, so the frames of several files are
        # copied into one buffer (they are small: compressed records).
        pieces = []
        for buf, segs, _ in groups:
            mv = memoryview(buf)
            pieces.extend(mv[a : a + n] for a, n in segs.tolist())
        lengths = np.concatenate([g[1][:, 1] for g in groups])
        joined = np.empty((lengths.size, 2), dtype=np.uint64)
        joined[:, 1] = lengths
        joined[:, 0] = np.cumsum(lengths) - lengths
        frames = BufferWithSegments(b"".join(pieces), joined.tobytes())
        sizes = np.concatenate([g[2] for g in groups])
    sizes = sizes.tobytes()
    try:
        result = zstd_decompressor().multi_decompress_to_buffer(frames, decompressed_sizes=sizes, threads=threads)
    except ZstdError:
        return None
    return [result[i].tobytes() for i in range(len(result))]


#: Fewest frames worth handing a share to a helper thread.
OVERLAP_MIN = 64
#: The share of a batch's frames that the helper thread decompresses (in
#: one ``multi_decompress_to_buffer`` call, outside the GIL) while the
#: calling thread checks every frame's hashes and decompresses the rest:
#: the hashes cost about half a frame's decompression, so the helper
#: takes a little more than half (``benchmarks/zstd_entry_points.py``).
HELPER_SHARE = 0.85


def _decompress_loop(buf, segs, sizes) -> list:
    """Each frame of ``segs`` in ``buf`` through ``decompress`` (the
    cheapest entry point for one small frame); a frame that fails is
    ``None``."""
    dec = zstd_decompressor().decompress
    mv = memoryview(buf)
    try:
        return [dec(mv[a : a + n]) for a, n in segs.tolist()]
    except ZstdError:
        pass
    out = []
    for (a, n), m in zip(segs.tolist(), sizes.tolist()):
        try:
            rec = dec(mv[a : a + n], max_output_size=m)
        except ZstdError:
            rec = None
        out.append(rec if rec is not None and len(rec) == m else None)
    return out


def _decompress_pieces(pieces) -> list:
    """On the helper thread: one ``multi_decompress_to_buffer`` call per
    piece (the GIL is released for the whole piece); ``None`` for a piece
    holding a corrupt frame."""
    dec = zstd_decompressor()
    out = []
    for buf, segs, sizes in pieces:
        try:
            out.append(dec.multi_decompress_to_buffer(BufferWithSegments(buf, segs.tobytes()),
                                                      decompressed_sizes=sizes.tobytes(), threads=0))
        except ZstdError:
            out.append(None)
    return out


def decode_zstd_frames(groups, *, helper=None, check=None):
    """Decompress one-record zstd frames, on two threads when ``helper``
    (a :class:`concurrent.futures.Executor`) is given and the batch is
    large enough.

    ``groups``: ``[(buf, segments, sizes), ...]`` as
    :class:`ZstdFrames` gives them (``uint64`` ``(offset, length)`` pairs
    and decoded sizes; sizes already checked against the frames' declared
    content sizes and bounded). ``check()``, if given, runs on the calling
    thread while the helper decompresses its share (the hash checks), and
    its result is returned. Returns ``(records, checked)``: ``records`` a
    flat list, group after group, of ``bytes`` (``None`` for a frame that
    failed to decode: the caller's general path names it). Memory: the
    batch's records, nothing ahead.
    """
    groups = [g for g in groups if len(g[2])]
    total = sum(len(g[2]) for g in groups)
    if helper is None or total < OVERLAP_MIN:
        checked = check() if check is not None else None
        out: list = []
        for buf, segs, sizes in groups:
            out += _decompress_loop(buf, segs, sizes)
        return out, checked
    # The helper takes the last frames; the calling thread the first.
    keep = total - int(total * HELPER_SHARE)
    front, back = [], []
    seen = 0
    for buf, segs, sizes in groups:
        n = len(sizes)
        cut = min(max(keep - seen, 0), n)
        if cut:
            front.append((buf, segs[:cut], sizes[:cut]))
        if cut < n:
            back.append((buf, segs[cut:], sizes[cut:]))
        seen += n
    future = helper.submit(_decompress_pieces, back)
    try:
        checked = check() if check is not None else None
        out = []
        for buf, segs, sizes in front:
            out += _decompress_loop(buf, segs, sizes)
    finally:
        done = future.result()
    for (buf, segs, sizes), result in zip(back, done):
        if result is None:
            out += _decompress_loop(buf, segs, sizes)
        else:
            out += [result[i].tobytes() for i in range(len(result))]
    return out, checked
