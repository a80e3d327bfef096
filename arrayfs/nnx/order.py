"""Which record a host reads at each position of each epoch.

Pure index arithmetic, no I/O. Each epoch has one global order of the
``N`` records (the identity, or the keyed permutation of
:mod:`arrayfs.nnx.shuffle` for ``(seed, epoch)``); that order is cut into
``shard_count`` contiguous slices with Grain's ``even_split`` rule, and host
``shard_index`` reads its slice. The slices are disjoint and, without
``drop_remainder``, cover the whole epoch.

Resuming an epoch on a different host count
-------------------------------------------
Hosts run in *lockstep*: when a checkpoint is taken, every host of the job
has yielded the same number ``p`` of elements of the current epoch (a host
whose slice is shorter, ``min(p, its length)``). The elements yielded so far
are then a function of ``(N, shard_count, p)`` alone, so one host's state
tells every host what is left.

Call the epoch's global order the level-0 sequence ``S_0``. A job of ``A``
hosts splits ``S_k`` with ``even_split`` and stops after ``p`` steps; what
it has not yielded is the suffix of each host's slice. ``S_{k+1}`` is those
suffixes concatenated in host order. A job restored on ``B`` hosts splits
``S_{k+1}`` with ``even_split`` in turn. Each level holds exactly the
elements the levels before it left unread, once each, and the new hosts'
slices are disjoint and cover it, so over all levels every element of the
epoch is yielded exactly once (without ``drop_remainder``; with it, each
level leaves out the tail of its sequence, at most ``hosts - 1`` elements,
and no element is yielded twice). The state needs only the list of
``(host_count, position)`` pairs of the earlier levels of the current epoch,
whatever ``N`` is; a position maps back to the global order through one
O(1) step per level. The next epoch starts afresh at level 0.
"""

from __future__ import annotations

import operator
import threading

import numpy as np

from .shuffle import FeistelPermutation, epoch_round_keys

__all__ = ["EpochOrder", "even_split", "Level", "resume_levels", "remaining_after", "longest_slice", "MAX_RESIZES"]

#: Positions whose permuted indices are computed together and cached. The
#: permutation's cost is dominated by numpy's per-call overhead (tens of
#: calls per Feistel evaluation, more for cycle walking), so a block of 16 Ki
#: positions costs about as much as a few hundred; 128 KiB of int64 whatever
#: N is.
BLOCK = 16384

#: Most host-count changes within one epoch a state may record. Each costs a
#: few bytes of state and one O(1) step per index; past the bound a restore on
#: yet another host count is refused (the epoch can still be finished on the
#: host count the checkpoint was taken with).
MAX_RESIZES = 16


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


def longest_slice(num_elements: int, host_count: int, drop_remainder: bool) -> int:
    """Elements of the longest slice (host 0's) of ``num_elements``."""
    start, stop = even_split(num_elements, 0, host_count, drop_remainder)
    return stop - start


def remaining_after(num_elements: int, host_count: int, position: int, drop_remainder: bool) -> int:
    """Elements of a sequence not yet yielded after ``position`` lockstep steps.

    ``host_count`` hosts split ``num_elements`` with :func:`even_split`; each
    has yielded ``min(position, its slice length)``. With
    ``drop_remainder`` the dropped tail does not count as remaining.
    """
    per, extra = divmod(num_elements, host_count)
    if drop_remainder:
        extra = 0
    return extra * max(0, per + 1 - position) + (host_count - extra) * max(0, per - position)


class Level:
    """One earlier part of an epoch: ``host_count`` hosts split a sequence of
    ``size`` elements and stopped after ``position`` lockstep steps; the next
    level is the ``remaining`` elements they left, suffixes in host order."""

    __slots__ = ("size", "host_count", "position", "remaining", "_per", "_extra")

    def __init__(self, size: int, host_count: int, position: int, drop_remainder: bool):
        self.size, self.host_count, self.position = size, host_count, position
        self._per, extra = divmod(size, host_count)
        self._extra = 0 if drop_remainder else extra
        self.remaining = remaining_after(size, host_count, position, drop_remainder)

    def to_parent(self, r: np.ndarray) -> np.ndarray:
        """Positions in this level's sequence of elements ``r`` (int64 array,
        values in ``[0, remaining)``) of the next level's sequence."""
        per, extra, p = self._per, self._extra, self.position
        long_tail = max(0, per + 1 - p)  # suffix of each of the first `extra` slices
        short_tail = max(0, per - p)     # suffix of each other slice
        cut = extra * long_tail
        in_long = r < cut
        # Hosts [0, extra) have slices of per + 1 starting at h * (per + 1);
        # the others have per, starting at extra * (per + 1) + (h - extra) * per.
        h_long, o_long = np.divmod(r, max(long_tail, 1))
        h_short, o_short = np.divmod(r - cut, max(short_tail, 1))
        return np.where(
            in_long,
            h_long * (per + 1) + p + o_long,
            extra * (per + 1) + h_short * per + p + o_short,
        )


def resume_levels(num_records: int, resized_from, drop_remainder: bool) -> tuple[Level, ...]:
    """The earlier levels of an epoch from ``(host_count, position)`` pairs.

    Args:
        num_records: records in the dataset, ``N >= 1``.
        resized_from: sequence of ``(host_count, position)`` pairs, oldest
            first, at most :data:`MAX_RESIZES`.
        drop_remainder: the split rule of every level.

    Returns:
        One :class:`Level` per pair; the current level's sequence has
        ``levels[-1].remaining`` elements (``N`` when there are none).

    Raises:
        ValueError: a pair is not two integers, a host count is below 1, a
            position is negative or past the longest slice of its level, a
            level other than the last leaves nothing, or there are more than
            :data:`MAX_RESIZES` pairs.
    """
    pairs = list(resized_from)
    if len(pairs) > MAX_RESIZES:
        raise ValueError(
            f"resized_from lists {len(pairs)} host-count changes in one epoch; at most "
            f"{MAX_RESIZES} are kept"
        )
    levels = []
    size = int(num_records)
    for k, pair in enumerate(pairs):
        try:
            count, position = pair
        except (TypeError, ValueError):
            raise ValueError(f"resized_from[{k}] must be a [host_count, position] pair, "
                             f"got {pair!r}") from None
        if not _is_int(count) or count < 1 or not _is_int(position) or position < 0:
            raise ValueError(f"resized_from[{k}] must be [host_count >= 1, position >= 0], "
                             f"got {pair!r}")
        if size == 0:
            raise ValueError(f"resized_from[{k}]: the levels before it left no element of "
                             "the epoch")
        longest = longest_slice(size, count, drop_remainder)
        if position > longest:
            raise ValueError(
                f"resized_from[{k}]: position {position} is past the {longest} elements of "
                f"the longest slice when {count} hosts split {size}"
            )
        level = Level(size, int(count), int(position), drop_remainder)
        levels.append(level)
        size = level.remaining
    return tuple(levels)


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


class EpochOrder:
    """Map ``(epoch, position)`` of one host to global record indices.

    Args:
        num_records: records in the dataset, ``N >= 1``.
        seed: shuffle seed in ``[0, 2**64)``.
        shuffle: ``False`` for the global (concatenated) order every epoch.
        shard_index: this host's index, as in Grain's ``ShardOptions``.
        shard_count: the number of hosts.
        drop_remainder: drop the records that do not divide evenly.

    Attributes:
        length: elements this host reads per epoch (may be 0 when
            ``N < shard_count``).
        start: offset of this host's slice in each epoch's global order.

    Methods take ``resized_from``, the ``(host_count, position)`` pairs of
    the earlier levels of that epoch (see the module docstring); ``()`` for
    an epoch that ran on this host count from its start.

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
        self.shard_index = int(shard_index)
        self.shard_count = int(shard_count)
        self.drop_remainder = bool(drop_remainder)
        self.start, stop = even_split(self.num_records, shard_index, shard_count, drop_remainder)
        self.length = stop - self.start
        self._perm: tuple[int, FeistelPermutation] | None = None
        self._block: tuple[int, int, np.ndarray] | None = None
        self._plan: tuple[tuple, tuple, int, int] | None = None
        self._lock = threading.Lock()

    def permutation(self, epoch: int) -> FeistelPermutation:
        """The global order of ``epoch`` (only meaningful when shuffling)."""
        cached = self._perm
        if cached is not None and cached[0] == epoch:
            return cached[1]
        perm = FeistelPermutation(self.num_records, epoch_round_keys(self.seed, epoch))
        self._perm = (epoch, perm)
        return perm

    def plan(self, resized_from=()) -> tuple[tuple[Level, ...], int, int]:
        """``(levels, start, length)``: the earlier levels, and this host's
        slice of the current level's sequence.

        Raises:
            ValueError: ``resized_from`` is malformed (see :func:`resume_levels`).
        """
        key = tuple(tuple(int(v) for v in pair) for pair in resized_from)
        if not key:
            return (), self.start, self.length
        cached = self._plan
        if cached is not None and cached[0] == key:
            return cached[1], cached[2], cached[3]
        levels = resume_levels(self.num_records, key, self.drop_remainder)
        start, stop = even_split(levels[-1].remaining, self.shard_index, self.shard_count,
                                 self.drop_remainder)
        self._plan = (key, levels, start, stop - start)
        return levels, start, stop - start

    def epoch_length(self, resized_from=()) -> int:
        """Elements this host reads in an epoch with these earlier levels."""
        return self.plan(resized_from)[2]

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

    def indices(self, epoch: int, position: int, count: int, resized_from=()) -> np.ndarray:
        """Global record indices of positions ``[position, position + count)``.

        Args:
            epoch: epoch number, ``>= 0``.
            position: first position in this host's slice, ``>= 0``.
            count: number of positions; ``position + count`` at most the
                host's elements in that epoch (:meth:`epoch_length`).
            resized_from: earlier levels of ``epoch``, ``()`` for none.

        Returns:
            ``int64`` array of shape ``(count,)``, values in ``[0, N)``.

        Raises:
            IndexError: the range leaves this host's elements of the epoch.
            TypeError: ``epoch``, ``position`` or ``count`` is not an
                integer (0-d integer arrays are: NNX state may hold them).
        """
        epoch, position, count = map(operator.index, (epoch, position, count))
        levels, start, length = self.plan(resized_from)
        if position < 0 or count < 0 or position + count > length:
            raise IndexError(
                f"positions [{position}, {position + count}) outside this host's "
                f"{length} elements of epoch {epoch}"
            )
        if levels:
            pos = np.arange(start + position, start + position + count, dtype=np.int64)
            for level in reversed(levels):
                pos = level.to_parent(pos)
            return self.permutation(epoch)(pos) if self.shuffle else pos
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
