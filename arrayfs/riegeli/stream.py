"""One big single-record chunk, read, hashed and decompressed at once.

Decoding a record of hundreds of MiB one step after another costs the sum
of reading it, joining its bytes across block headers, hashing them and
decompressing them. Here the three overlap: a thread reads the chunk in
pieces of a few MiB ahead of use; the data hash is computed piece by piece
on another thread (HighwayHash's streaming form, ``HighwayHashCat*`` in
highwayhash's C library, which highwayhash-cffi exports but does not wrap;
without it the data is joined and hashed at the end); the values are
decompressed as their bytes arrive, straight into the output buffer (zstd
and uncompressed; brotli and snappy as a whole at the end). Nothing is
returned before the hash is checked, so a corrupt chunk gives no bytes.

The format facts are the container's own functions: block headers
(:func:`.blocks.parse_block_header`), the chunk header
(:func:`.header.parse_chunk_header`), the simple chunk's layout
(:func:`.simple.decode_record_sizes`), bounded decompression
(:mod:`.compression`).
"""

from __future__ import annotations

import ctypes
import itertools
import mmap
import queue
import struct
import threading

import zstandard

from .blocks import BLOCK_HEADER_SIZE, BLOCK_SIZE, chunk_end, parse_block_header
from .compression import NONE, ZSTD, CompressionError, decompress_block, zstd_fitted
from .errors import CorruptChunkError
from .hashing import RIEGELI_HASH_KEY, highway_hash64
from .header import CHUNK_HEADER_SIZE, SIMPLE, parse_chunk_header
from .simple import decode_record_sizes
from .varint import VarintError, read_varint

__all__ = ["decode_single_record_stream", "PIECE"]

PIECE = 8 << 20  # bytes read per request to the byte source
_AHEAD = 3  # pieces read ahead of use


def _cat():
    """``(start, append, finish64)`` of highwayhash's C streaming API, or
    ``None`` when the library does not export it."""
    try:
        from highwayhash import _highwayhash

        lib = ctypes.CDLL(_highwayhash.__file__)
        fns = lib.HighwayHashCatStart, lib.HighwayHashCatAppend, lib.HighwayHashCatFinish64
    except (ImportError, OSError, AttributeError):
        return None
    v = ctypes.c_void_p
    for fn, res, args in zip(fns, (None, None, ctypes.c_uint64), ([v, v], [v, ctypes.c_size_t, v], [v])):
        fn.restype, fn.argtypes = res, args
    return fns


_CAT = _cat()
_KEY = (ctypes.c_uint64 * 4)(*struct.unpack("<4Q", RIEGELI_HASH_KEY))


class _Hasher(threading.Thread):
    """HighwayHash-64 of the segments queued, in order, on its own thread
    (each C call releases the GIL)."""

    def __init__(self):
        super().__init__(name="arrayfs-hash", daemon=True)
        self.q = queue.SimpleQueue()
        self.state = ctypes.create_string_buffer(256)  # struct HighwayHashCat: 164 bytes
        _CAT[0](_KEY, self.state)
        self.start()

    def run(self):
        append, state = _CAT[1], self.state
        while True:
            item = self.q.get()
            if item is None:
                return
            keep, address, n = item  # keep: the bytes behind the address
            append(address, n, state)

    def finish(self) -> int:
        self.q.put(None)
        self.join()
        return _CAT[2](self.state)


def _address(data: bytes) -> int:
    return ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value


def decode_single_record_stream(read, begin: int, end: int, *, size: int, verify: bool = True, out=None):
    """The record of the one-record simple chunk at physical ``[begin,
    end)`` (its span up to the next chunk), which must decode to ``size``
    bytes.

    ``read(offset, length) -> bytes`` reads physical bytes (it raises what
    the byte source raises). The record goes into ``out`` (a writable
    buffer of ``size`` bytes) when given, else into new anonymous memory (a
    ``mmap.mmap``: its pages are made as they are written, on this thread,
    while the others read and hash; a ``bytearray`` would zero them all
    first); returns that buffer. Raises :class:`CorruptChunkError` for a bad block
    header, chunk header or data hash (with ``verify``), a chunk that is
    not one record of ``size`` bytes, or values that do not decode to it.
    """
    if out is None:
        out = mmap.mmap(-1, size) if size else bytearray()
    pieces: queue.Queue = queue.Queue(_AHEAD)
    stop = threading.Event()

    def reader():
        pos = begin
        try:
            while pos < end and not stop.is_set():
                # Pieces end on block boundaries: no block header is cut.
                stop_at = min(end, (pos // BLOCK_SIZE + PIECE // BLOCK_SIZE) * BLOCK_SIZE)
                pieces.put((pos, bytes(read(pos, stop_at - pos))))
                pos = stop_at
        except BaseException as e:  # noqa: BLE001 - raised again by the consumer
            pieces.put((pos, e))
        pieces.put((end, None))

    thread = threading.Thread(target=reader, name="arrayfs-read", daemon=True)
    thread.start()
    hasher = _Hasher() if verify and _CAT is not None else None
    try:
        return _decode(_segments(pieces), begin, end, size, verify, out, hasher)
    finally:
        stop.set()
        while thread.is_alive():  # let the reader finish its put, drop what it read
            try:
                pieces.get_nowait()
            except queue.Empty:
                thread.join(0.001)
        if hasher is not None and hasher.is_alive():
            hasher.q.put(None)


def _segments(pieces):
    """Logical bytes in order, as ``(piece, start, stop)``: each piece's
    bytes between block headers (each header checked)."""
    while True:
        pos, data = pieces.get()
        if data is None:
            return
        if isinstance(data, BaseException):
            raise data
        a, n = 0, len(data)
        while a < n:
            if (pos + a) % BLOCK_SIZE == 0:
                parse_block_header(memoryview(data)[a : a + BLOCK_HEADER_SIZE], pos + a)
                a += BLOCK_HEADER_SIZE
                continue
            b = min(n, a + BLOCK_SIZE - (pos + a) % BLOCK_SIZE)
            yield data, a, b
            a = b


def _take(segments, n: int, carry: list) -> bytes:
    """The next ``n`` logical bytes, joined; what is left of the last
    segment goes back to ``carry``."""
    parts, got = [], 0
    while got < n:
        data, a, b = carry.pop() if carry else next(segments)
        take = min(b - a, n - got)
        parts.append(data[a : a + take])
        got += take
        if a + take < b:
            carry.append((data, a + take, b))
    return b"".join(parts)


def _decode(segments, begin, end, size, verify, out, hasher):
    carry: list = []
    try:
        header = parse_chunk_header(_take(segments, CHUNK_HEADER_SIZE, carry), offset=begin)
    except StopIteration:
        raise CorruptChunkError("chunk ends inside its header", offset=begin) from None
    if header.chunk_type != SIMPLE or header.num_records != 1 or header.decoded_data_size != size:
        raise CorruptChunkError(f"expected a simple chunk of one record of {size} bytes, found type "
                                f"{header.chunk_type:#04x} with {header.num_records} records of "
                                f"{header.decoded_data_size} bytes", offset=begin)
    if chunk_end(begin, header.data_size, 1) > end:
        raise CorruptChunkError(f"chunk of {header.data_size} data bytes runs past byte {end}", offset=begin)
    # The data: compression byte, sizes block, values block (its varint
    # size first when compressed); the head is parsed from a prefix.
    left = header.data_size
    head = _take(segments, min(left, 64 << 10), carry)
    ctype, sizes, values = decode_record_sizes(head, 1, size, offset=begin)
    start = len(head) - len(values)  # the values block: all of it for an uncompressed or non-zstd one
    if ctype == ZSTD:  # the zstd frame: after the block's varint size
        try:
            declared, start = read_varint(head, start)
        except VarintError as e:
            raise CorruptChunkError(f"values block: {e}", offset=begin) from None
        if declared != size:
            raise CorruptChunkError(f"values block declares {declared} bytes, the header says {size}", offset=begin)
    hashed = [head] if verify and hasher is None else None
    if hasher is not None:
        hasher.q.put((head, _address(head), len(head)))
    left -= len(head)

    def stream():
        """The values block's bytes as memoryviews, hashing every data
        segment on the way."""
        nonlocal left
        yield memoryview(head)[start:]
        while left > 0:
            try:
                data, a, b = carry.pop() if carry else next(segments)
            except StopIteration:
                raise CorruptChunkError("chunk data ends early", offset=begin) from None
            b = min(b, a + left)
            left -= b - a
            if hasher is not None:
                hasher.q.put((data, _address(data) + a, b - a))
            elif hashed is not None:
                hashed.append(data[a:b])
            yield memoryview(data)[a:b]

    _decompress(ctype, stream(), out, size, begin)
    if verify:
        got = hasher.finish() if hasher is not None else highway_hash64(b"".join(hashed))
        if got != header.data_hash:
            raise CorruptChunkError("chunk data hash mismatch", offset=begin)
    return out


class _Source:
    """A file-like ``read()`` over memoryviews, for zstd's stream reader."""

    def __init__(self, parts):
        self.parts = parts

    def read(self, n):
        return next(self.parts, b"")


def _decompress(ctype, parts, out, size, begin) -> None:
    """Decode the values block's stream ``parts`` into ``out`` (exactly
    ``size`` bytes), draining ``parts``."""
    mv = memoryview(out).cast("B")
    got = 0
    try:
        if ctype == NONE:
            for p in parts:
                if got + len(p) > size:
                    raise CompressionError(f"values block holds more than {size} bytes")
                mv[got : got + len(p)] = p
                got += len(p)
        elif ctype == ZSTD:
            first, dctx = zstd_fitted(next(parts, b""), size)
            parts = itertools.chain((first,), parts)
            with dctx.stream_reader(_Source(parts), read_across_frames=False) as r:
                while got < size:
                    n = r.readinto(mv[got:])
                    if not n:
                        break
                    got += n
                extra = r.read(1)
            for p in parts:  # bytes after the frame are corrupt data
                extra = extra or bytes(p)
            if extra:
                raise CompressionError("bytes after the zstd frame")
        else:  # brotli and snappy: as a whole (their block has its varint size first)
            data = decompress_block(ctype, b"".join(parts), max_size=size)
            got = len(data)
            mv[:got] = data
    except (CompressionError, zstandard.ZstdError) as e:
        raise CorruptChunkError(f"record values: {e}", offset=begin) from None
    if got != size:
        raise CorruptChunkError(f"values decode to {got} bytes, the header says {size}", offset=begin)
