"""The byte-source interface the Riegeli container reads through.

A :class:`ByteSource` is one immutable file: its size and identity are
fixed when it is opened, and every read either returns exactly the bytes
asked for, as they were at open, or raises. Implementations: local files
(:mod:`.local`, ``pread``) and fsspec objects (:mod:`.remote`, ranged
requests). Nothing here knows about Riegeli or ArrayRecord.
"""

from __future__ import annotations

from .urls import StorageError

__all__ = ["ByteSource", "SourceChangedError", "SourceTruncatedError", "StorageError"]


class SourceChangedError(StorageError):
    """The file or object is no longer the one opened: replaced, rewritten
    or resized (local: device, inode, size or mtime differ; remote: size,
    ETag or generation differ). ``reason`` says how (without the path),
    ``path`` names it; ``truncated`` is ``True`` when it is now shorter than
    at open; ``size`` is its size now (bytes) when known."""

    def __init__(self, reason: str, *, path: str, truncated: bool = False, size: int | None = None):
        super().__init__(reason, path=path)
        self.truncated = truncated
        self.size = size


class SourceTruncatedError(StorageError):
    """A read reached past the end of the file: ``offset`` and ``length``
    (bytes) of the read, ``size`` the bytes there are; ``reason`` and
    ``path`` as in :class:`StorageError`."""

    def __init__(self, reason: str, *, path: str, offset: int, length: int, size: int):
        super().__init__(reason, path=path)
        self.offset = offset
        self.length = length
        self.size = size


class ByteSource:
    """Random access to the bytes of one file, safe to call from many threads.

    Attributes:
        name: the path or URL, for messages.
        size: bytes in the file when it was opened.
        mtime_ns: modification time (ns since the epoch; 0 when the store
            has none).
        identity: a tuple that differs when the file is replaced or changed
            (compare two opens of the same name).
        remote: ``True`` for object stores (reads are requests: batch them).
    """

    name: str
    size: int
    mtime_ns: int = 0
    identity: tuple = ()
    remote: bool = False

    def read(self, offset: int, length: int) -> bytes:
        """Exactly ``length`` bytes at ``offset``.

        Raises :class:`SourceTruncatedError` when ``[offset, offset +
        length)`` reaches past :attr:`size` or past the file's end now,
        :class:`SourceChangedError` when the file changed since it was
        opened, :class:`StorageError` (an ``OSError``) when it cannot be
        read. Never returns fewer bytes, or bytes of another version.
        """
        raise NotImplementedError

    def read_ranges(self, ranges) -> list:
        """``[read(a, b - a) for a, b in ranges]``, done as one batch: local
        files in one pass, object stores with concurrent, coalesced
        requests. Raises as :meth:`read`, for the first range that fails."""
        return [self.read(a, b - a) for a, b in ranges]

    def read_joined(self, starts, ends) -> tuple:
        """The ranges ``[starts[j], ends[j])`` (``int64`` arrays, sorted by
        start) fetched as one batch and returned as ``(buf, positions)``:
        one buffer holding them all, range ``j`` at ``buf[positions[j]:
        positions[j] + ends[j] - starts[j]]`` (overlapping ranges may share
        bytes). Raises as :meth:`read`."""
        import numpy as np

        parts = self.read_ranges(list(zip(starts.tolist(), ends.tolist())))
        lengths = np.asarray(ends) - np.asarray(starts)
        positions = np.zeros(len(parts), dtype=np.int64)
        if len(parts) > 1:
            np.cumsum(lengths[:-1], out=positions[1:])
        buf = parts[0] if len(parts) == 1 else b"".join(parts)
        return buf, positions

    def prefetch(self, ranges):
        """Hint that the byte ranges ``[(start, end), ...]`` will be read
        soon, in that order: object stores start fetching them within the
        read-ahead budget (:mod:`.readahead`) and serve the reads they
        cover; local files need no hint. Returns a
        :class:`.readahead.Prefetch` handle: closing or dropping it gives up
        what was not read."""
        from .readahead import Prefetch

        return Prefetch()

    def map_view(self):
        """A buffer of the whole file for zero-copy reads, valid until
        :meth:`end_view` (which must follow), or ``None`` when the source
        has none (the default: read with :meth:`read_joined`)."""
        return None

    def end_view(self) -> None:
        """Ends a :meth:`map_view` that returned a buffer."""

    def check(self) -> None:
        """Raise :class:`SourceChangedError` if the file changed since it
        was opened (one ``fstat`` or one metadata request)."""

    def pin(self) -> bool:
        """Keep what reads need (a local descriptor) until :meth:`close`,
        so that reads go on after the file leaves its path. Returns whether
        that was possible (object stores keep nothing: ``False``)."""
        return False

    def close(self) -> None:
        """Release what the source holds (descriptors, cached blocks)."""

    @property
    def closed(self) -> bool:
        return False

    def _check_range(self, offset: int, length: int) -> None:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise SourceTruncatedError(
                f"read of {length} bytes at byte {offset} reaches past the end of the file ({self.size} bytes)",
                path=self.name, offset=offset, length=length, size=self.size,
            )

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"{type(self).__name__}({self.name!r}, size={self.size})"
