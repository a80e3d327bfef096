"""Batched reads of one ArrayRecord file: many records, few calls.

For a batch the work per record is index arithmetic in numpy, one library
call per chunk (a hash, a decompression) and one ``bytes`` object; the
chunks' bytes are read in as few system calls as the source allows (none
from a memory map, one ``pread`` per run of nearby chunks otherwise, one
concurrent round of requests for an object store), and the file's identity
is checked once per batch.
"""

from __future__ import annotations

import numpy as np

from .errors import FileChangedError, TruncatedFileError
from .riegeli.chunk import decompress_zstd_frames, single_record_zstd_frames
from .storage import SourceChangedError, SourceTruncatedError

__all__ = ["BatchReads"]

# One-record chunks decoded per step of a long batched read.
_SCAN_BLOCK = 8192


def _storage_error(e: Exception, path: str, offset, records=None, opened_size=None) -> Exception:
    """The ArrayRecord error for a storage failure during a read."""
    if isinstance(e, SourceTruncatedError):
        since = (f" (it had {opened_size} bytes when opened: truncated since)"
                 if opened_size is not None and e.size < opened_size else "")
        return TruncatedFileError(
            f"the file ends at byte {e.size}, the read needs bytes up to {e.offset + e.length}{since}",
            path=path, offset=offset, records=records,
        )
    if isinstance(e, SourceChangedError):
        cls = TruncatedFileError if e.truncated else FileChangedError
        reason = str(e)
        if reason.startswith(path + ": "):
            reason = reason[len(path) + 2 :]
        return cls(reason, path=path, offset=offset, records=records)
    return e


class BatchReads:
    """The batched reads of :class:`arrayfs.file.ArrayRecordFile` (a mixin:
    uses its index, ``read_record``, ``decode_chunks`` and source)."""

    def read_chunk_windows(self, chunks: np.ndarray, *, view=None) -> tuple:
        """The byte windows of ``chunks`` (``int64``: chunk ``k``'s bytes
        from its offset to the next chunk's) read as one batch:
        ``(buf, positions, begins, lengths)`` with window ``j`` at
        ``buf[positions[j]:positions[j] + lengths[j]]`` (``int64`` arrays).
        Runs of consecutive chunks are read as one range (a sequential scan
        is one read per run, however many chunks). With ``view`` (the
        source's :meth:`map_view`) nothing is read: the windows are in it."""
        offsets = self._get_index().offsets
        n = len(offsets)
        begins = offsets[chunks]
        nxt = chunks + 1
        ends = np.where(nxt < n, offsets[np.minimum(nxt, n - 1)], self.footer_offset)
        lengths = ends - begins
        if view is not None:
            return view, begins, begins, lengths
        steps = np.diff(chunks)
        uniq = chunks if (steps > 0).all() else np.unique(chunks)
        cut = np.flatnonzero(np.diff(uniq) != 1) + 1
        run_first = uniq[np.concatenate(([0], cut))]
        run_last = uniq[np.concatenate((cut - 1, [len(uniq) - 1]))]
        run_begin = offsets[run_first]
        run_end = np.where(run_last + 1 < n, offsets[np.minimum(run_last + 1, n - 1)], self.footer_offset)
        src = self._source
        if src is None:
            raise ValueError(f"{self.path}: I/O on a closed ArrayRecord file")
        try:
            buf, run_base = src.read_joined(run_begin, run_end)
        except (SourceTruncatedError, SourceChangedError) as e:
            at = getattr(e, "offset", None)
            raise _storage_error(e, self.path, int(run_begin[0]) if at is None else at, None, self.size) from None
        run = np.searchsorted(run_first, chunks, side="right") - 1
        positions = run_base[run] + (begins - run_begin[run])
        return buf, positions, begins, lengths

    def single_record_frames(self, indices, *, view=None):
        """For batched reads of ``group_size:1`` zstd files across shards.

        ``indices`` (``int64`` array of valid local indices). Returns
        ``(sel, group)``: the positions in ``indices`` whose record is a
        checked zstd frame, and ``group = (buffer, segments, sizes)`` for
        :func:`arrayfs.riegeli.chunk.decompress_zstd_frames`. The other
        positions must be read with :meth:`read_record`. Requires
        ``group_size == 1``.
        """
        buf, positions, begins, lengths = self.read_chunk_windows(indices, view=view)
        sel, segs, sizes = single_record_zstd_frames(buf, positions, begins, lengths, verify=self.verify)
        agree = sizes == self._get_index().decoded[indices[sel]]
        if not agree.all():  # the general path names the disagreement
            sel, segs, sizes = sel[agree], segs[agree], sizes[agree]
        return sel, (buf, segs, sizes)

    def group_by_chunk(self, indices) -> list:
        """``[(chunk, positions), ...]``: the positions in ``indices`` (an
        ``int64`` array of valid local indices, not empty) of the records of
        each chunk they touch, chunks in increasing order."""
        idx = self._get_index()
        g = idx.group_size
        chunks = indices // g if g is not None else np.searchsorted(idx.first, indices, side="right") - 1
        order = np.argsort(chunks, kind="stable")
        cuts = np.flatnonzero(np.diff(chunks[order])) + 1
        return [(int(chunks[grp[0]]), grp) for grp in np.split(order, cuts)]

    def read_records(self, indices, *, decode=None, threads: int = 0) -> list[bytes]:
        """Records at ``indices`` (``int64`` array of valid local indices), in
        that order, as ``list[bytes]``; each chunk involved is read and
        decoded once, and the chunks' bytes are fetched as one batch.

        ``decode(k)`` replaces :meth:`decode_chunk` for multi-record chunks
        (the dataset passes its cached one). One-record zstd chunks are
        decompressed together on ``threads`` threads outside the GIL (0: the
        calling thread); other chunks are decoded on the calling thread and
        callers split large batches of them across threads.
        """
        if len(indices) == 0:
            return []
        idx = self._get_index()
        if idx.group_size == 1:
            read = self.read_record
            if len(indices) < 16:
                return [read(i) for i in indices.tolist()]
            if len(indices) > _SCAN_BLOCK:
                # A long scan (read_all) goes a block at a time: the bytes
                # held at once stay bounded whatever the file size.
                out = []
                for a in range(0, len(indices), _SCAN_BLOCK):
                    out.extend(self.read_records(indices[a : a + _SCAN_BLOCK], threads=threads))
                return out
            src = self._source
            view = src.map_view() if src is not None else None
            try:
                sel, group = self.single_record_frames(indices, view=view)
                out: list = [None] * len(indices)
                recs = decompress_zstd_frames([group], threads=threads)
                del group
            finally:
                if view is not None:
                    src.end_view()
            if recs:
                for slot, rec in zip(sel.tolist(), recs):
                    out[slot] = rec
            for j in [j for j, rec in enumerate(out) if rec is None]:
                out[j] = read(int(indices[j]))  # other codecs, or the precise error
            return out
        groups = self.group_by_chunk(indices)
        wanted = [k for k, _ in groups]
        if decode is None:
            decoded = self.decode_chunks(wanted)
        else:
            decoded = map(decode, wanted)
        out = [None] * len(indices)
        for (k, grp), (values, offsets) in zip(groups, decoded):
            local = indices[grp] - self.chunk_first(k)
            if len(offsets) == 2 and isinstance(values, bytes):
                for slot in grp.tolist():
                    out[slot] = values
                continue
            for slot, a, b in zip(grp.tolist(), offsets[local].tolist(), offsets[local + 1].tolist()):
                out[slot] = bytes(values[a:b])
        return out
