"""Full integrity check of ArrayRecord shards (``arrayfs verify``).

For every shard, :func:`verify_shards` checks what a read of every record
would check, and a little more, and keeps going past a bad chunk so one run
lists every problem:

* the signature, the postscript (hash and magic), the footer chunk (header
  and data hashes) and its metadata, and the per-chunk footer index
  (:class:`arrayfs.file.ArrayRecordFile`);
* the file metadata chunk, when there is one (header and data hashes);
* every user chunk: header hash, data hash, chunk type and record count
  against the footer, ``decoded_data_size`` against the footer, the chunk
  not overlapping the next one, and a full decode (sizes sum to
  ``decoded_data_size``, the values decompress to exactly that many bytes);
* every block header (spec "Block header"): its hash, and for a block
  header inside a user chunk, ``previous_chunk``/``next_chunk`` against
  that chunk's position. arrayfs's reader skips block headers, but riegeli's
  reader checks them, so a bad one makes Google's reader fail on that chunk.

A read instruction (``path[a:b]``) still verifies the whole file: corruption
anywhere in a shard is worth knowing about.
"""

from __future__ import annotations

import bisect
import collections
import functools
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from .errors import ArrayRecordError, CorruptChunkError
from .file import ArrayRecordFile
from .paths import expand_paths
from .riegeli.blocks import BLOCK_HEADER_SIZE, BLOCK_SIZE, chunk_end, chunk_ends, parse_block_header
from .riegeli.chunk import decode_chunk
from .riegeli.header import CHUNK_HEADER_SIZE, parse_chunk_headers
from .storage import stat as stat_path

__all__ = ["BadChunk", "ShardReport", "VerifyReport", "verify_shards", "verify_file"]


@dataclass(frozen=True)
class BadChunk:
    """One problem found.

    Attributes:
        path: the shard.
        chunk: index of the user chunk (0-based, in footer order), or
            ``None`` for a problem outside the user chunks (the file cannot
            be opened, the footer, the postscript, the metadata chunk, a
            block header in the footer area).
        offset: byte offset in the file of the chunk (of the block header
            for one outside the user chunks), or ``None`` when unknown.
        records: ``(start, stop)`` half-open range of local record indices
            (in the file) that cannot be trusted, or ``None`` when unknown
            (then the whole shard is suspect).
        global_records: the same range as global indices of the
            concatenated dataset, or ``None`` when not known (an earlier
            shard could not be opened, or read instructions were used).
        reason: what is wrong.
        kind: the error class name (``CorruptChunkError``,
            ``TruncatedFileError``, ``NotArrayRecordError``,
            ``UnsupportedChunkError``, ``OSError``).
    """

    path: str
    chunk: int | None
    offset: int | None
    records: tuple | None
    global_records: tuple | None
    reason: str
    kind: str = "CorruptChunkError"

    def __str__(self) -> str:
        where = []
        if self.chunk is not None:
            where.append(f"chunk {self.chunk}")
        if self.offset is not None:
            where.append(f"at byte {self.offset}")
        if self.records is not None:
            rng = f"records [{self.records[0]}, {self.records[1]})"
            if self.global_records is not None:
                rng += f" (global [{self.global_records[0]}, {self.global_records[1]}))"
            where.append(rng)
        loc = " ".join(where[:2]) + (", " if len(where) > 2 else "") + " ".join(where[2:])
        return f"{self.path}: {loc + ': ' if loc else ''}{self.reason}"


@dataclass
class ShardReport:
    """Per-shard totals. ``num_records``/``num_chunks`` are ``None`` when
    the file could not be opened; ``first_index`` is the global index of
    its first record when known."""

    path: str
    size_bytes: int
    num_records: int | None = None
    num_chunks: int | None = None
    first_index: int | None = None
    bad: int = 0

    @property
    def ok(self) -> bool:
        return self.bad == 0


@dataclass
class VerifyReport:
    """What :func:`verify_shards` found.

    Attributes:
        shards: one :class:`ShardReport` per distinct file, in order.
        bad_chunks: every problem, in file order (see :class:`BadChunk`).
    """

    shards: list = field(default_factory=list)
    bad_chunks: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """``True`` when no problem was found."""
        return not self.bad_chunks

    @property
    def num_records(self) -> int:
        return sum(s.num_records or 0 for s in self.shards)

    @property
    def num_chunks(self) -> int:
        return sum(s.num_chunks or 0 for s in self.shards)

    @property
    def size_bytes(self) -> int:
        return sum(s.size_bytes for s in self.shards)

    @property
    def bad_shards(self) -> list:
        """Paths of the shards with at least one problem, in order."""
        return [s.path for s in self.shards if s.bad]

    def to_dict(self) -> dict:
        """JSON-ready summary (tuples become lists)."""
        return {
            "ok": self.ok,
            "num_shards": len(self.shards),
            "num_records": self.num_records,
            "num_chunks": self.num_chunks,
            "size_bytes": self.size_bytes,
            "shards": [dict(asdict(s), ok=s.ok) for s in self.shards],
            "bad_chunks": [
                {**asdict(b), "records": list(b.records) if b.records else None,
                 "global_records": list(b.global_records) if b.global_records else None}
                for b in self.bad_chunks
            ],
        }


class _Progress:
    """Batches tqdm updates: a dataset of single-record chunks has millions
    of chunks, and ``tqdm.update`` costs about a microsecond each."""

    def __init__(self, bar):
        self.bar = bar
        self.pending = 0

    def add(self, n: int) -> None:
        self.pending += n
        if self.pending >= 4 << 20:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.bar.update(self.pending)
            self.pending = 0


def verify_file(path, *, progress=None, storage_options=None) -> tuple[ShardReport, list]:
    """Check one file (a path or a URL); returns ``(ShardReport, [BadChunk, ...])``.

    ``global_records`` of the problems is ``None`` (the file alone has no
    place in a dataset; :func:`verify_shards` fills it in). ``progress`` is
    called with byte counts as the check advances (they add up to the file
    size). Never raises for a bad file (problems are returned); raises only
    ``KeyboardInterrupt`` and the like.
    """
    step = progress or (lambda n: None)
    try:
        size = stat_path(path, storage_options).size
    except OSError as e:
        return ShardReport(path, 0, bad=1), [BadChunk(path, None, None, None, None, e.strerror or str(e), "OSError")]
    report = ShardReport(path, size)
    bad: list[BadChunk] = []

    def add(chunk, offset, records, reason, kind):
        bad.append(BadChunk(path, chunk, offset, None if records is None else tuple(records), None, reason, kind))

    try:
        f = ArrayRecordFile(path, verify=True, storage_options=storage_options)
    except ArrayRecordError as e:
        add(None, e.offset, None, e.reason, type(e).__name__)
        step(size)
        report.bad = len(bad)
        return report, bad
    except OSError as e:
        add(None, None, None, e.strerror or str(e), "OSError")
        step(size)
        report.bad = len(bad)
        return report, bad
    with f:
        report.num_records = f.num_records
        report.num_chunks = f.num_chunks
        try:
            offsets, counts, first = f.index()
        except ArrayRecordError as e:
            add(None, e.offset, None, f"footer index: {e.reason}", type(e).__name__)
            step(size)
            report.bad = len(bad)
            return report, bad
        offsets = offsets.tolist()
        counts = counts.tolist()
        first = first.tolist()
        decoded_sizes = f.chunk_decoded_sizes.tolist()
        footer = f.footer_offset
        # Whatever sits between the signature and the first user chunk
        # (a metadata chunk, or padding) is checked as well.
        if (offsets[0] if offsets else footer) != 64:
            try:
                f.read_metadata_chunk()
            except ArrayRecordError as e:
                add(None, 64, None, f"file metadata chunk: {e.reason}", type(e).__name__)
        spans = {}  # chunk index -> (begin, end) of chunks whose header is sound
        nexts = offsets[1:] + [footer]
        step(offsets[0] if offsets else footer)

        def check_chunk(k):
            off = offsets[k]
            try:
                # Header hash, data hash, type, count, and the chunk ending
                # by the next one's offset.
                header, data = f.read_chunk_header(k)
                end = chunk_end(off, header.data_size, header.num_records)
                spans[k] = (off, end)
                if header.decoded_data_size != decoded_sizes[k]:
                    raise CorruptChunkError(
                        f"chunk header says {header.decoded_data_size} decoded bytes, "
                        f"the footer says {decoded_sizes[k]}"
                    )
                values, offs = decode_chunk(header, data, offset=off)
                if len(offs) - 1 != counts[k] or int(offs[-1]) != header.decoded_data_size:
                    raise CorruptChunkError(
                        f"chunk decodes to {len(offs) - 1} records of {int(offs[-1])} bytes, "
                        f"expected {counts[k]} records of {header.decoded_data_size} bytes"
                    )
            except ArrayRecordError as e:
                add(k, off, (first[k], first[k + 1]), e.reason, type(e).__name__)

        n = len(offsets)
        if f.group_size == 1 and n > 1:
            # group_size:1 (today's default) has a chunk per record: check
            # them in batches on the reader's batched path, and go chunk by
            # chunk only where a batch has a problem.
            _single_record_chunks(f, np.asarray(offsets, dtype=np.int64), np.asarray(nexts, dtype=np.int64),
                                  np.asarray(decoded_sizes, dtype=np.int64), spans, check_chunk, step)
        elif n > 1 and (os.cpu_count() or 1) > 1:
            # Chunks of many records: hashes and decompression release the
            # GIL, so chunks are checked on a pool, at most one per worker
            # in flight (bounded memory), progress in file order.
            workers = os.cpu_count() or 1
            with ThreadPoolExecutor(workers, thread_name_prefix="arrayfs-verify") as pool:
                pending: collections.deque = collections.deque()
                for k in range(n):
                    pending.append((k, pool.submit(check_chunk, k)))
                    while len(pending) > workers or (k == n - 1 and pending):
                        j, fut = pending.popleft()
                        fut.result()
                        step(nexts[j] - offsets[j])
        else:
            for k in range(n):
                check_chunk(k)
                step(nexts[k] - offsets[k])
        step(size - footer)
        _check_block_headers(f, size, offsets, first, footer, spans, add)
    report.bad = len(bad)
    # Problems in file order, so the report reads top to bottom.
    bad.sort(key=lambda b: (-1 if b.offset is None else b.offset))
    return report, bad


_BATCH = 8192


def _single_record_chunks(f, offsets, nexts, decoded, spans, check_chunk, step) -> None:
    """The chunk checks of :func:`verify_file` for a file of one-record
    chunks, a batch at a time.

    ``f.read_records`` checks each chunk's header hash, data hash, type,
    record count, extent within its window and decoding (falling back to
    the general path, which raises, on anything unusual). What it does not
    check, the decoded size against the footer, is done here with numpy on
    the headers; a batch with any problem is checked again chunk by chunk
    for precise reports.
    """
    for a in range(0, len(offsets), _BATCH):
        b = min(a + _BATCH, len(offsets))
        idx = np.arange(a, b, dtype=np.int64)
        try:
            recs = f.read_records(idx)
            buf, positions, off, lengths = f.read_chunk_windows(idx)
        except ArrayRecordError:
            slow = idx.tolist()
        else:
            view = np.frombuffer(buf, dtype=np.uint8)
            # The header follows the block header when the chunk starts on
            # a block boundary; headers split by a block header (rare) take
            # the slow path.
            skip = np.where(off % BLOCK_SIZE == 0, BLOCK_HEADER_SIZE, 0)
            hp = off + skip
            whole = (hp % BLOCK_SIZE + CHUNK_HEADER_SIZE <= BLOCK_SIZE) & (skip + CHUNK_HEADER_SIZE <= lengths)
            at = np.where(whole, positions + skip, 0)
            h = parse_chunk_headers(view[at[:, None] + np.arange(CHUNK_HEADER_SIZE)])
            data_size = np.minimum(h["data_size"], np.uint64(1 << 50)).astype(np.int64)
            num_records = np.minimum(h["num_records"], np.uint64(1 << 50)).astype(np.int64)
            end = chunk_ends(off, data_size, num_records)
            lens = np.fromiter(map(len, recs), dtype=np.int64, count=len(recs))
            bad = ~whole | (lens != decoded[a:b]) | (end > nexts[a:b])
            # Chunks that a block header interrupts: their extent is needed
            # to check that block header's distances.
            boundary = (off + BLOCK_SIZE - 1) // BLOCK_SIZE * BLOCK_SIZE
            crossing = ~bad & (boundary < end)
            for k, s, e in zip(idx[crossing].tolist(), off[crossing].tolist(), end[crossing].tolist()):
                spans[k] = (s, e)
            slow = idx[bad].tolist()
            del recs, view, buf
        for k in slow:
            check_chunk(k)
        step(int(nexts[b - 1] - offsets[a]))


def _check_block_headers(f, size, offsets, first, footer, spans, add) -> None:
    """Hash of every block header (the one at 0 belongs to the signature,
    already compared byte for byte), and its chunk distances where the
    interrupted user chunk's header was sound."""
    if size <= BLOCK_SIZE:
        return
    starts = list(range(BLOCK_SIZE, size, BLOCK_SIZE))
    for i in range(0, len(starts), 4096):
        part = starts[i : i + 4096]
        try:
            raws = f.read_ranges([(b, b + BLOCK_HEADER_SIZE) for b in part])
        except ArrayRecordError as e:
            add(None, e.offset, None, f"block headers: {e.reason}", type(e).__name__)
            return
        for b, raw in zip(part, raws):
            # The user chunk this block header interrupts, if any (it may
            # also sit in padding, the metadata chunk or the footer area).
            k = bisect.bisect_right(offsets, b) - 1
            span = spans.get(k)
            chunk = None
            if 0 <= k < len(offsets):
                limit = span[1] if span else (offsets[k + 1] if k + 1 < len(offsets) else footer)
                if b < limit:
                    chunk = k
            rng = (first[k], first[k + 1]) if chunk is not None else None
            try:
                prev, nxt = parse_block_header(raw, b)
            except CorruptChunkError:
                if chunk is not None:
                    add(chunk, offsets[chunk], rng, f"block header at byte {b}: hash mismatch", "CorruptChunkError")
                else:
                    add(None, b, None, "block header hash mismatch", "CorruptChunkError")
                continue
            if chunk is not None and span is not None and (prev != b - span[0] or nxt != span[1] - b):
                add(
                    chunk, offsets[chunk], rng,
                    f"block header at byte {b}: previous_chunk={prev}, next_chunk={nxt}, expected "
                    f"{b - span[0]} and {span[1] - b} for the chunk at byte {span[0]}",
                    "CorruptChunkError",
                )


def verify_shards(paths, progress: bool = True, *, jobs: int = 1, storage_options=None) -> VerifyReport:
    """Verify every shard ``paths`` names (a path, glob, directory, read
    instruction, or a list of these; see :mod:`arrayfs.paths`).

    Args:
        paths: what to check. Each distinct file is checked once, whole.
        progress: show a tqdm bar on stderr (bytes checked; only when
            stderr is a terminal).
        jobs: shards checked at once, in separate processes (hashing holds
            the GIL, so threads would not help). With ``jobs > 1`` the bar
            advances a shard at a time.
        storage_options: fsspec options for URLs.

    Returns:
        A :class:`VerifyReport`; ``report.ok`` is ``False`` when anything
        is wrong, and ``report.bad_chunks`` lists every problem with its
        shard, chunk offset and record range, in shard order.

    Raises:
        FileNotFoundError: a path does not exist or a pattern matches no
            file. Bad files do not raise: they are reported.
        ValueError: ``jobs < 1``.
    """
    from tqdm import tqdm

    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    specs = expand_paths(paths, storage_options=storage_options)
    sliced = any(s.start is not None or s.stop is not None for s in specs)
    files = list(dict.fromkeys(s.path for s in specs))
    sizes = []
    for p in files:
        try:
            sizes.append(stat_path(p, storage_options).size)
        except OSError:
            sizes.append(0)
    report = VerifyReport()
    bar = tqdm(
        total=sum(sizes), desc="verifying", unit="B", unit_scale=True, unit_divisor=1024,
        file=sys.stderr, disable=None if progress else True, leave=False,
    )
    prog = _Progress(bar)
    try:
        if jobs > 1 and len(files) > 1:
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(min(jobs, len(files))) as pool:
                results = []
                check = functools.partial(verify_file, storage_options=storage_options)
                for size, res in zip(sizes, pool.map(check, files)):
                    results.append(res)
                    bar.update(size)
                    _postfix(bar, results)
        else:
            results = []
            for p in files:
                results.append(verify_file(p, progress=prog.add, storage_options=storage_options))
                _postfix(bar, results)
            prog.flush()
    finally:
        bar.close()
    # Global indices are only meaningful while every earlier shard opened
    # and records are not sliced by read instructions.
    first_index = None if sliced else 0
    for shard, bad in results:
        if first_index is not None:
            shard.first_index = first_index
            bad = [
                replace(b, global_records=(first_index + b.records[0], first_index + b.records[1]))
                if b.records is not None else b
                for b in bad
            ]
            first_index = None if shard.num_records is None else first_index + shard.num_records
        report.shards.append(shard)
        report.bad_chunks.extend(bad)
    return report


def _postfix(bar, results) -> None:
    n = sum(len(bad) for _, bad in results)
    if n:
        bar.set_postfix(bad=n, refresh=False)
