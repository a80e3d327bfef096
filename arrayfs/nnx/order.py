"""Which record a host reads at each position of each epoch.

Pure index arithmetic, no I/O. Each epoch has one global order of the
``N`` records (the identity, or the keyed permutation of
:mod:`arrayfs.nnx.shuffle` for ``(seed, epoch)``); that order is cut into
``shard_count`` contiguous slices with Grain's ``even_split`` rule, and host
``shard_index`` reads its slice. The slices are disjoint and, without
``drop_remainder``, cover the whole epoch.
"""

from __future__ import annotations

import threading

import numpy as np

from .shuffle import FeistelPermutation, epoch_round_keys

__all__ = ["EpochOrder", "even_split"]

#: Positions whose permuted indices are computed together and cached. The
#: permutation's cost is dominated by numpy's per-call overhead (tens of
#: calls per Feistel evaluation, more for cycle walking), so a block of 16 Ki
#: positions costs about as much as a few hundred; 128 KiB of int64 whatever
#: N is.
BLOCK = 16384


def even_split(num_elements: int, shard_index: int, shard_count: int, drop_remainder: bool):
    """``(start, stop)`` of host ``shard_index``'s slice of ``num_elements``.

    Grain's ``even_split``: with ``drop_remainder`` every slice has
    ``num_elements // shard_count`` elements; otherwise the first
    ``num_elements % shard_count`` slices have one more.
    """
    per = num_elements // shard_count
    start, stop = per * shard_index, per * (shard_index + 1)
    extra = num_elements % shard_count
    if extra and not drop_remainder:
        start += min(shard_index, extra)
        stop += min(shard_index + 1, extra)
    return start, stop


class EpochOrder:
    """Map ``(epoch, position)`` of one host to global record indices.

    Args:
        num_records: records in the dataset, ``N >= 1``.
        seed: shuffle seed in ``[0, 2**64)``.
        shuffle: ``False`` for the global (concatenated) order every epoch.
        shard_index, shard_count, drop_remainder: as in Grain's
            ``ShardOptions``.

    Attributes:
        length: elements this host reads per epoch.
        start: offset of this host's slice in each epoch's global order.

    Thread-safe: a lock guards the one-block cache (the pipeline's prefetch
    thread and the training thread may both ask).
    """

    def __init__(self, num_records: int, *, seed: int, shuffle: bool,
                 shard_index: int, shard_count: int, drop_remainder: bool):
        if num_records < 1:
            raise ValueError(f"the dataset has no records (N = {num_records})")
        self.num_records = int(num_records)
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.start, stop = even_split(self.num_records, shard_index, shard_count, drop_remainder)
        self.length = stop - self.start
        self._perm: tuple[int, FeistelPermutation] | None = None
        self._block: tuple[int, int, np.ndarray] | None = None
        self._lock = threading.Lock()

    def permutation(self, epoch: int) -> FeistelPermutation:
        """The global order of ``epoch`` (only meaningful when shuffling)."""
        cached = self._perm
        if cached is not None and cached[0] == epoch:
            return cached[1]
        perm = FeistelPermutation(self.num_records, epoch_round_keys(self.seed, epoch))
        self._perm = (epoch, perm)
        return perm

    def _block_indices(self, epoch: int, block: int) -> np.ndarray:
        cached = self._block
        if cached is not None and cached[0] == epoch and cached[1] == block:
            return cached[2]
        lo = block * BLOCK
        hi = min(lo + BLOCK, self.num_records)
        out = self.permutation(epoch)(np.arange(lo, hi, dtype=np.int64))
        out.flags.writeable = False
        self._block = (epoch, block, out)
        return out

    def indices(self, epoch: int, position: int, count: int) -> np.ndarray:
        """Global record indices of positions ``[position, position + count)``.

        Args:
            epoch: epoch number, ``>= 0``.
            position: first position in this host's slice, ``>= 0``.
            count: number of positions; ``position + count <= length``.

        Returns:
            ``int64`` array of shape ``(count,)``, values in ``[0, N)``.

        Raises:
            IndexError: the range leaves ``[0, length)``.
        """
        if position < 0 or count < 0 or position + count > self.length:
            raise IndexError(
                f"positions [{position}, {position + count}) outside this host's "
                f"{self.length} elements per epoch"
            )
        lo = self.start + position
        if not self.shuffle:
            return np.arange(lo, lo + count, dtype=np.int64)
        hi = lo + count
        parts = []
        with self._lock:
            # One block at a time; a batch spans at most two blocks.
            while lo < hi:
                block = lo // BLOCK
                base = block * BLOCK
                top = min(hi, base + BLOCK)
                parts.append(self._block_indices(epoch, block)[lo - base: top - base])
                lo = top
        if len(parts) == 1:
            return parts[0].copy()
        return np.concatenate(parts) if parts else np.empty(0, np.int64)
