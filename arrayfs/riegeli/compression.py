"""Compressed blocks inside Riegeli chunk data (spec: "Chunk data").

A compressed block is ``varint64(decompressed_size)`` followed by the codec's
stream: Brotli as a raw stream, Zstd as a normal frame, Snappy in its raw
(unframed) format. With compression type 0 the block is the bytes themselves,
with no prefix.

Decompression is bounded: the caller passes the most bytes the block may
decode to (known from the chunk header), the declared size is checked against
it before anything is allocated, and the codec is stopped at that size, so a
corrupt or hostile prefix cannot make the reader allocate more than the chunk
header admits. The codecs are the registry packages (brotli, zstandard,
python-snappy); each releases the GIL while it works.
"""

from __future__ import annotations

import threading

import brotli
import snappy
import zstandard

from .errors import CorruptChunkError, UnsupportedChunkError
from .varint import VarintError, encode_varint, read_varint

__all__ = [
    "NONE",
    "BROTLI",
    "ZSTD",
    "SNAPPY",
    "COMPRESSION_NAMES",
    "CompressionError",
    "UnsupportedCompressionError",
    "compress_block",
    "decompress_block",
    "block_decompressed_size",
    "decompress_pieces",
    "zstd_decompress_into",
    "zstd_fitted",
]

NONE = 0
BROTLI = ord("b")
ZSTD = ord("z")
SNAPPY = ord("s")

COMPRESSION_NAMES = {NONE: "uncompressed", BROTLI: "brotli", ZSTD: "zstd", SNAPPY: "snappy"}


class CompressionError(ValueError):
    """A compressed block is malformed, exceeds its bound, or decodes to a
    size other than its prefix declares. Callers add the file and chunk,
    raising :attr:`chunk_error`."""

    chunk_error = CorruptChunkError


class UnsupportedCompressionError(CompressionError):
    """A valid block this reader's codec library cannot decode."""

    chunk_error = UnsupportedChunkError


def _brotli_failed(stream, e) -> CompressionError:
    """The error for a Brotli stream the decoder refused. Riegeli writes
    Brotli's large-window format for ``window_log`` above 24 (its stream
    header's first 7 bits are 0010001, reserved in RFC 7932 9.1), which the
    ``brotli`` package cannot decode: that is not corruption."""
    if len(stream) and stream[0] & 0x7F == 0x11:
        return UnsupportedCompressionError(
            "brotli stream in the large-window format (riegeli's brotli window_log above 24), which the "
            "brotli package cannot decode; rewrite the file with window_log:24 or less")
    return CompressionError(f"brotli stream is corrupt: {e}")


_local = threading.local()


def zstd_decompressor() -> zstandard.ZstdDecompressor:
    # ZstdDecompressor objects are not safe to share between threads, and
    # making one per call costs more than decompressing a small frame.
    d = getattr(_local, "zstd", None)
    if d is None:
        d = _local.zstd = zstandard.ZstdDecompressor()
    return d


# zstd's decoders refuse a window above 2^27 bytes unless told to accept more
# (ZSTD_d_windowLogMax); riegeli's writer goes up to window_log:31.
_ZSTD_WINDOW_USUAL = 1 << 27
_ZSTD_WINDOW_MAX = 1 << 31


def zstd_fitted(stream, size: int):
    """``(stream, decompressor)`` for a zstd frame that decodes to at most
    ``size`` bytes (the block's declared size), whatever window it claims.

    A frame that declares no content size makes zstd's streaming decoder
    allocate its whole window first: 2 GiB for riegeli's
    ``window_log:31``, which Google's writer puts in the frame header of
    every chunk it compresses with it. No match reaches back past the
    bytes decoded so far, and no block is larger than the frame's output,
    so a window of ``size`` bytes decodes the frame alike (RFC 8878,
    3.1.1.1.2 and 3.1.1.2.3): such a frame is given a copy of ``stream``
    with its window descriptor rewritten, and memory follows the block's
    size, not the frame's claim. Frames within zstd's usual window (2^27)
    come back as they are, with the thread's decompressor; only a block
    above 128 MiB gets a decompressor that accepts a larger window.
    """
    try:
        window = zstandard.get_frame_parameters(stream).window_size
    except zstandard.ZstdError:
        return stream, zstd_decompressor()  # the decoder names what is wrong
    if window <= _ZSTD_WINDOW_USUAL:
        return stream, zstd_decompressor()
    log = max(10, (max(size, 1) - 1).bit_length())
    if 1 << log < window and not stream[4] & 0x20:
        # No Single_Segment flag: byte 5 is the window descriptor
        # (exponent above, mantissa below; 2^(10 + exponent) with mantissa 0).
        fitted = bytearray(stream)
        fitted[5] = (log - 10) << 3
        stream, window = fitted, 1 << log
    if window <= _ZSTD_WINDOW_USUAL:
        return stream, zstd_decompressor()
    return stream, zstandard.ZstdDecompressor(max_window_size=min(window, _ZSTD_WINDOW_MAX))


def zstd_decompress_exact(stream, size: int) -> bytes:
    """Decode one zstd frame that must hold ``size`` bytes, allocating no
    more than ``size`` (checked by the caller) whatever the frame claims.

    python-zstandard allocates the frame's own content size when the frame
    header has one, whatever ``max_output_size`` says, and
    ``max_output_size`` when it has none: the first is checked against
    ``size`` before decoding, frames without one are decoded in bounded
    pieces, so neither header field can drive an allocation. Raises
    :class:`CompressionError` or ``zstandard.ZstdError``; the caller checks
    the output length.
    """
    content_size = zstandard.frame_content_size(stream)
    if content_size >= 0:
        if content_size != size:
            raise CompressionError(f"zstd frame declares {content_size} decompressed bytes, the block prefix {size}")
        if content_size > _zstd_most(len(stream)):
            raise CompressionError(f"zstd frame of {len(stream)} bytes cannot hold the {content_size} bytes it declares")
        # Bytes after the frame are corrupt data, as riegeli reads it.
        return zstd_decompressor().decompress(stream, allow_extra_data=False)
    stream, dctx = zstd_fitted(stream, size)
    if size <= _zstd_most(len(stream)):
        # No declared size (riegeli's streaming writer): one call into a
        # buffer of the block's size, as plausible as a declared one would
        # have to be; a frame decoding to more fails ("did not decompress
        # full frame").
        return dctx.decompress(stream, max_output_size=max(size, 1), allow_extra_data=False)
    return _zstd_decompress_unsized(stream, size, dctx)


def zstd_decompress_into(stream, out, *, exact: bool, block_size: int | None = None) -> int:
    """Decode one zstd frame into the writable buffer ``out`` (a
    ``memoryview``), with no temporary copy and nothing written beyond it,
    whatever the frame claims. Returns the bytes written. With ``exact``
    the frame must hold exactly ``len(out)`` bytes (its declared content
    size, when it has one, is checked first); without, it may hold more
    (a prefix is wanted), up to ``block_size`` bytes (the block's declared
    size: the window it is decoded with, see :func:`zstd_fitted`). Raises
    :class:`CompressionError`."""
    size = len(out)
    got = 0
    more = b""
    try:
        if exact:
            declared = zstandard.frame_content_size(stream)
            if declared >= 0 and declared != size:
                raise CompressionError(f"zstd frame declares {declared} decompressed bytes, the block prefix {size}")
        stream, dctx = zstd_fitted(stream, size if block_size is None else max(size, block_size))
        with dctx.stream_reader(stream, read_across_frames=False) as r:
            while got < size:
                n = r.readinto(out[got:])
                if not n:
                    break
                got += n
            if exact and got == size:
                more = r.read(1)
    except zstandard.ZstdError as e:
        raise CompressionError(f"zstd stream is corrupt: {e}") from None
    if (exact and got != size) or more:
        raise CompressionError(f"block decoded to {'more than ' if more else ''}{got} bytes, its prefix "
                               f"declares {size}")
    return got


def _zstd_most(n: int) -> int:
    """The most bytes a zstd frame of ``n`` bytes can decode to: every
    block takes a 3-byte header and at least one byte, and yields at most
    128 KiB (RFC 8878, 3.1.1.2), so that a declared size is checked before
    python-zstandard allocates it."""
    return (n // 4 + 1) << 17


def _snappy_most(n: int) -> int:
    """The most bytes a raw snappy stream of ``n`` bytes can decode to:
    the densest element, a 3-byte copy, yields 64 bytes (snappy
    ``format_description.txt``)."""
    return 22 * n + 64


def _zstd_decompress_unsized(stream, size: int, dctx) -> bytes:
    """Decode a zstd frame that does not declare its size (its window fitted
    by :func:`zstd_fitted`, ``dctx`` the decompressor it gave), reading at
    most ``size + 1`` bytes in pieces of at most 1 MiB (memory follows the
    real output, not a claim)."""
    parts = []
    got = 0
    with dctx.stream_reader(stream, read_across_frames=False) as r:
        while got <= size:
            piece = r.read(min(1 << 20, size + 1 - got))
            if not piece:
                break
            parts.append(piece)
            got += len(piece)
    return b"".join(parts)


def block_decompressed_size(compression_type: int, block) -> tuple[int, int]:
    """Declared decompressed size of ``block`` and where its stream starts.

    Returns ``(size_in_bytes, stream_offset)``. For type 0 the size is the
    block length and the offset 0.
    """
    if compression_type == NONE:
        return len(block), 0
    if compression_type not in COMPRESSION_NAMES:
        raise CompressionError(f"unknown compression type {compression_type:#04x}")
    try:
        return read_varint(block, 0)
    except VarintError as e:
        raise CompressionError(f"bad decompressed-size prefix: {e}") from None


def decompress_block(compression_type: int, block, *, max_size: int):
    """Decompress one prefixed block.

    Args:
        compression_type: 0, ``ord('b')``, ``ord('z')`` or ``ord('s')``.
        block: bytes-like holding the prefix and the stream (a memoryview of
            an mmap works and is not copied for type 0).
        max_size: the most bytes the block may decode to; a larger declared
            size raises before any allocation.

    Returns:
        The decoded bytes: ``block`` itself (a zero-copy view) for type 0,
        otherwise a new ``bytes`` of exactly the declared size.

    Raises:
        CompressionError: unknown type, bad prefix, declared size above
            ``max_size``, a corrupt stream, or output of the wrong size.
    """
    size, start = block_decompressed_size(compression_type, block)
    if size > max_size:
        raise CompressionError(
            f"block declares {size} decompressed bytes, more than the {max_size} its chunk allows"
        )
    if compression_type == NONE:
        return block
    stream = memoryview(block)[start:]
    try:
        if compression_type == ZSTD:
            if size == 0 and len(stream) == 0:
                return b""
            out = zstd_decompress_exact(stream, size)
        elif compression_type == BROTLI:
            d = brotli.Decompressor()
            out = d.process(stream, output_buffer_limit=size + 1)
            if not d.is_finished() and len(out) <= size:
                raise CompressionError("brotli stream is truncated")
        else:
            declared, _ = read_varint(stream, 0)
            if declared != size:
                raise CompressionError(
                    f"snappy stream declares {declared} bytes, the block prefix {size}"
                )
            if declared > _snappy_most(len(stream)):
                raise CompressionError(f"snappy stream of {len(stream)} bytes cannot hold the {declared} it declares")
            out = snappy.uncompress(stream)
    except CompressionError:
        raise
    except brotli.error as e:
        raise _brotli_failed(stream, e) from None
    except (zstandard.ZstdError, snappy.UncompressError, VarintError) as e:
        name = COMPRESSION_NAMES[compression_type]
        raise CompressionError(f"{name} stream is corrupt: {e}") from None
    except MemoryError:
        raise  # not a verdict on the stream
    except Exception as e:  # python-snappy raises plain Exception on some inputs
        name = COMPRESSION_NAMES[compression_type]
        raise CompressionError(f"{name} stream is corrupt: {type(e).__name__}: {e}") from None
    if len(out) != size:
        raise CompressionError(f"block decoded to {len(out)} bytes, its prefix declares {size}")
    return out


def compress_block(compression_type: int, data, *, level: int | None = None, window_log: int | None = None) -> bytes:
    """Compress ``data`` into one block, with the size prefix when compressed.

    ``level`` is the codec's level (Brotli 0–11, default 6; Zstd −131072–22,
    default 3); ``window_log`` is passed to the codec when given (Brotli's
    ``lgwin``, Zstd's window log). Snappy ignores both.
    """
    if compression_type == NONE:
        return bytes(data)
    n = len(data)
    if compression_type == ZSTD:
        params = zstandard.ZstdCompressionParameters.from_level(
            3 if level is None else level,
            source_size=n,
            window_log=window_log or 0,
            write_content_size=True,
        )
        payload = zstandard.ZstdCompressor(compression_params=params).compress(data)
    elif compression_type == BROTLI:
        kwargs = {"quality": 6 if level is None else level}
        if window_log is not None:
            kwargs["lgwin"] = window_log
        payload = brotli.compress(bytes(data), **kwargs)
    elif compression_type == SNAPPY:
        payload = snappy.compress(bytes(data))
    else:
        raise ValueError(f"unknown compression type {compression_type:#04x}")
    return encode_varint(n) + payload


def decompress_pieces(compression_type: int, block, *, max_size: int, piece: int = 4 << 20):
    """Decompress one prefixed block as a stream of pieces of at most
    ``piece`` bytes (Zstd and Brotli; Snappy and type 0 in one piece), so
    that a caller folding over a large block (a footer of 10^7 chunks)
    never holds all of it. The pieces add up to exactly the declared size,
    checked against ``max_size`` first; raises like :func:`decompress_block`.
    """
    size, start = block_decompressed_size(compression_type, block)
    if size > max_size:
        raise CompressionError(
            f"block declares {size} decompressed bytes, more than the {max_size} its chunk allows"
        )
    if compression_type not in (ZSTD, BROTLI) or size <= piece:
        yield decompress_block(compression_type, block, max_size=max_size)
        return
    stream = memoryview(block)[start:]
    got = 0
    name = COMPRESSION_NAMES[compression_type]
    try:
        if compression_type == ZSTD:
            stream, dctx = zstd_fitted(stream, size)
            with dctx.stream_reader(stream, read_across_frames=False) as r:
                while got <= size:
                    out = r.read(min(piece, size + 1 - got))
                    if not out:
                        break
                    got += len(out)
                    if got > size:
                        break
                    yield out
        else:
            d = brotli.Decompressor()
            fed = False
            while got <= size:
                out = d.process(b"" if fed else stream, output_buffer_limit=min(piece, size + 1 - got))
                fed = True
                if not out:
                    break
                got += len(out)
                if got > size:
                    break
                yield out
    except brotli.error as e:
        raise _brotli_failed(stream, e) from None
    except zstandard.ZstdError as e:
        raise CompressionError(f"{name} stream is corrupt: {e}") from None
    if got != size:
        raise CompressionError(f"block decoded to {'more than ' if got > size else ''}{got} bytes, its prefix "
                               f"declares {size}")


def decompress_prefix(compression_type: int, block, n: int, *, max_size: int):
    """The first ``min(n, size)`` decoded bytes of a block, decoding no more
    than the codec needs for them (the whole block for Snappy).

    Lets a reader take the first record of a large chunk (ArrayRecord's
    footer metadata) without decoding the rest. Raises like
    :func:`decompress_block`.
    """
    size, start = block_decompressed_size(compression_type, block)
    if size > max_size:
        raise CompressionError(
            f"block declares {size} decompressed bytes, more than the {max_size} its chunk allows"
        )
    want = min(n, size)
    if compression_type == NONE:
        return block[:want]
    stream = block[start:]
    try:
        if compression_type == ZSTD:
            # Into one buffer of exactly ``want`` bytes: no piece is
            # allocated or copied twice.
            out = bytearray(want)
            got = zstd_decompress_into(stream, memoryview(out), exact=False, block_size=size)
            if got < want:
                raise CompressionError(f"block ends after {got} of {want} bytes")
            return out
        elif compression_type == BROTLI:
            out = brotli.Decompressor().process(stream, output_buffer_limit=want)
        else:
            return decompress_block(compression_type, block, max_size=max_size)[:want]
    except brotli.error as e:
        raise _brotli_failed(stream, e) from None
    except zstandard.ZstdError as e:
        raise CompressionError(f"zstd stream is corrupt: {e}") from None
    if len(out) < want:
        raise CompressionError(f"block ends after {len(out)} of {want} bytes")
    return out[:want]
