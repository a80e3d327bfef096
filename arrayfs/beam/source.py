"""``ReadFromArrayRecord``: a splittable Beam source of ArrayRecord shards.

Built on Beam's ``apache_beam.io.filebasedsource.FileBasedSource``: the file
pattern is matched through Beam's ``FileSystems`` and every shard is split
into byte ranges that runners can split further while reading (dynamic work
rebalancing). An ArrayRecord chunk belongs to the range holding its first
byte (the chunk offsets of the footer, array_record ``cpp/layout.proto``
``ArrayRecordFooter.chunk_offset``), and a range yields the records of its
chunks. So every bundle is a run of whole chunks, that is a record range
aligned to chunk boundaries, the ranges of one shard are disjoint and cover
all of its records, and one big shard spreads over many workers.

Shards are opened with :class:`arrayfs.file.ArrayRecordFile`, which checks
every chunk's hashes; a corrupt chunk fails the bundle with an
:class:`arrayfs.ArrayRecordError` naming the file and the chunk offset.
"""

from __future__ import annotations

import apache_beam as beam
import numpy as np
from apache_beam.coders import coders
from apache_beam.io import filebasedsource
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.metrics import Metrics

from ..file import ArrayRecordFile
from .inputs import local_absolute
from .sink import METRICS_NAMESPACE

__all__ = ["ReadFromArrayRecord", "ArrayRecordSource"]

# Records decoded per call to ArrayRecordFile.read_records: enough to use
# its batched path for one-record chunks, small enough to stay near the
# range's end when a runner splits it.
_RECORDS_PER_READ = 1024

_RECORDS_READ = Metrics.counter(METRICS_NAMESPACE, "records_read")


class ArrayRecordSource(filebasedsource.FileBasedSource):
    """A ``FileBasedSource`` of the records of ArrayRecord shards.

    Positions are byte offsets in a shard; a chunk is claimed at its offset
    (``OffsetRangeTracker.try_claim``), so splits fall between chunks.

    Args:
        file_pattern: a path, glob or URL pattern (``gs://b/train-*``); a
            local one relative to the working directory.
        min_bundle_size: smallest initial split, in bytes.
        validate: check at construction that the pattern matches a file.
    """

    def __init__(self, file_pattern, *, min_bundle_size: int = 0, validate: bool = True):
        super().__init__(
            local_absolute(file_pattern),
            min_bundle_size=min_bundle_size,
            # Chunks are compressed inside the file; never gunzip a shard
            # because of its name.
            compression_type=CompressionTypes.UNCOMPRESSED,
            splittable=True,
            validate=validate,
        )

    def read_records(self, file_name, offset_range_tracker):
        """Yield the records (``bytes``) of the chunks of ``file_name`` whose
        offset the tracker lets us claim, in file order.

        Raises :class:`arrayfs.ArrayRecordError` for a bad or corrupt
        shard, ``OSError`` if it cannot be opened.
        """
        tracker = offset_range_tracker
        with ArrayRecordFile(file_name) as f:
            offsets, counts, first = f.index()
            num_chunks = len(counts)
            k = int(np.searchsorted(offsets, tracker.start_position(), side="left"))
            while k < num_chunks:
                stop = tracker.stop_position()
                if offsets[k] >= stop:
                    tracker.try_claim(int(offsets[k]))  # records the attempt; returns False
                    return
                # Decode a run of chunks at once, none past the current stop.
                end = k + 1
                while end < num_chunks and first[end + 1] - first[k] <= _RECORDS_PER_READ and offsets[end] < stop:
                    end += 1
                base = int(first[k])
                records = f.read_records(np.arange(base, first[end], dtype=np.int64))
                for j in range(k, end):
                    if not tracker.try_claim(int(offsets[j])):
                        return
                    a, b = int(first[j]) - base, int(first[j + 1]) - base
                    _RECORDS_READ.inc(b - a)
                    yield from records[a:b]
                k = end

    def default_output_coder(self):
        return coders.BytesCoder()


class ReadFromArrayRecord(beam.PTransform):
    """Read every record of the ArrayRecord shards matching ``file_pattern``
    once, as ``bytes``.

    A splittable read (see the module docstring): bundles are chunk-aligned
    record ranges, so one shard is read by many workers. No order is
    promised across bundles.

    Args:
        file_pattern: a path, glob or URL pattern Beam's ``FileSystems``
            matches; the shards themselves are opened with
            :class:`arrayfs.file.ArrayRecordFile` (local paths; URLs once
            the file layer reads them).
        min_bundle_size: smallest initial split, in bytes.
        validate: raise ``OSError`` at construction when nothing matches.

    Metrics (namespace ``"arrayfs"``): ``records_read``.
    """

    def __init__(self, file_pattern, *, min_bundle_size: int = 0, validate: bool = True):
        super().__init__()
        self.source = ArrayRecordSource(file_pattern, min_bundle_size=min_bundle_size, validate=validate)

    def expand(self, pbegin):
        return pbegin | beam.io.Read(self.source)
