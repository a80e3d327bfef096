"""``ArrayRecordSourceModule``: a stateful, shuffled, epoch-aware record source.

A ``flax.nnx.Module`` whose only state is two :class:`IterationState`
variables, ``epoch`` and ``position`` (elements of this host's slice of the
epoch already yielded). Everything else (the dataset, the order, the decoder)
is rebuilt from the config and the paths, so a checkpoint is a few hundred
bytes for any dataset size.

Reads go through the dataset's batched ``__getitems__``: one call per batch
(and per read-ahead window when iterating element by element), so chunk
decoding is shared and parallel rather than one call per record.
"""

from __future__ import annotations

import hashlib
import json
import operator
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
from flax import nnx

from .config import ArrayRecordSourceConfig
from .decode import decode_raw, get_decoder
from .order import EpochOrder

__all__ = ["ArrayRecordSourceModule", "IterationState", "STATE_FORMAT"]

#: Tag of :meth:`ArrayRecordSourceModule.get_state` dicts; bumped if the
#: meaning of a field (or the shuffle) ever changes, so an old checkpoint is
#: refused rather than silently read in a different order.
STATE_FORMAT = "arrayfs.source/1"

#: Records read per ``__getitems__`` call when iterating element by element.
READ_AHEAD = 64


class IterationState(nnx.Variable):
    """An ``nnx.Variable`` holding a source's epoch or position (a Python ``int``).

    Filter on this type (``nnx.state(module, IterationState)``) to save or
    restore only iteration state with NNX tooling.
    """


def _is_data_source(obj) -> bool:
    # A list of paths also has __len__/__getitem__; a data source is anything
    # else that reads records by index.
    if isinstance(obj, (str, bytes, os.PathLike, list, tuple)):
        return False
    return hasattr(obj, "__len__") and hasattr(obj, "__getitem__")


def _fingerprint(dataset) -> str:
    """sha256 (hex) of the dataset's shard file names and record counts.

    File names, not full paths: a dataset copied to another directory (local
    SSD, another mount point) is the same dataset and its checkpoint should
    restore. Sources without ``shards`` fall back to ``repr`` and ``len``.
    """
    shards = getattr(dataset, "shards", None)
    if shards is not None:
        ident = [
            [os.path.basename(str(s.path)), int(getattr(s, "start", 0)), int(s.num_records)]
            for s in shards
        ]
    else:
        ident = [repr(dataset), len(dataset)]
    return hashlib.sha256(json.dumps(ident).encode()).hexdigest()


class _Core:
    """The non-state machinery of a source, kept out of the NNX pytree."""

    def __init__(self, dataset, owns: bool, order: EpochOrder, decode, fingerprint: str):
        self.dataset = dataset
        self.owns = owns
        self.order = order
        self.decode = decode
        self.raw = decode is decode_raw
        self.fingerprint = fingerprint
        self.closed = False
        # (epoch, first position, records) read ahead for element iteration.
        self.ahead: tuple[int, int, list] | None = None

    def read(self, epoch: int, position: int, count: int) -> list[bytes]:
        if self.closed:
            raise ValueError("read from a closed ArrayRecordSourceModule")
        indices = self.order.indices(epoch, position, count)
        getitems = getattr(self.dataset, "__getitems__", None)
        if getitems is not None:
            return list(getitems(indices))
        return [self.dataset[int(i)] for i in indices]


class ArrayRecordSourceModule(nnx.Module):
    """Shuffled, epoch-aware, host-sharded iteration over ArrayRecord records.

    Args:
        config: :class:`ArrayRecordSourceConfig`. ``shard_index`` and
            ``shard_count`` left ``None`` are taken from
            ``jax.process_index()``/``jax.process_count()`` here.
        paths: what :class:`arrayfs.ArrayRecordDataSource` accepts (a path,
            glob, directory, ``"path[a:b]"``, or a list of them), opened with
            ``verify=config.verify`` and closed by :meth:`close`; or an
            already-open data source (``len``, ``[i]``, ideally batched
            ``__getitems__``), used as is and not closed.
        rngs: accepted for datarax compatibility and kept as ``self.rngs``;
            the order does not use it. It comes from ``config.seed`` only,
            because every host must compute the same global order.
        name: optional label, kept as ``self.name``.

    Elements are what the config's decoder returns for one record: a
    ``dict`` of numpy arrays (``{"data": uint8 array of shape
    (record_bytes,)}`` with ``decode=None``).

    Each epoch ``e`` has one global order of the ``N`` records (identity, or
    the permutation keyed by ``(seed, e)`` when ``shuffle_files``); it is cut
    into ``shard_count`` contiguous slices and this host reads slice
    ``shard_index``: hosts are disjoint and together cover the epoch (all but
    at most ``shard_count - 1`` elements with ``drop_remainder``).

    Raises:
        ValueError: this host's slice is empty (fewer records than hosts), or
            the dataset has no records.
        FileNotFoundError, arrayfs.ArrayRecordError: from opening ``paths``.
    """

    def __init__(self, config: ArrayRecordSourceConfig, paths, *, rngs: nnx.Rngs | None = None,
                 name: str | None = None):
        if not isinstance(config, ArrayRecordSourceConfig):
            raise ValueError(
                f"config must be an ArrayRecordSourceConfig, got {type(config).__name__}"
            )
        config = config.resolved()
        if _is_data_source(paths):
            dataset, owns = paths, False
        else:
            from ..dataset import ArrayRecordDataSource

            dataset, owns = ArrayRecordDataSource(paths, verify=config.verify), True
        try:
            num_records = len(dataset)
            if num_records < 1:
                raise ValueError(f"the dataset has no records: {dataset!r}")
            order = EpochOrder(
                num_records, seed=config.seed, shuffle=config.shuffle_files,
                shard_index=config.shard_index, shard_count=config.shard_count,
                drop_remainder=config.drop_remainder,
            )
            if order.length < 1:
                raise ValueError(
                    f"host {config.shard_index} of {config.shard_count} gets no records of "
                    f"{num_records} (drop_remainder={config.drop_remainder}); use fewer hosts "
                    "or more records"
                )
            core = _Core(dataset, owns, order, get_decoder(config.decode), _fingerprint(dataset))
        except BaseException:
            if owns:
                dataset.close()
            raise
        self.config = config
        self.name = name
        self.rngs = rngs
        self._core = core
        self.epoch = IterationState(0)
        self.position = IterationState(0)

    # -- sizes -----------------------------------------------------------------

    def __len__(self) -> int:
        """Elements this host reads per epoch (``N`` with one host)."""
        return self._core.order.length

    @property
    def num_records(self) -> int:
        """Records in the whole dataset, ``N``."""
        return self._core.order.num_records

    @property
    def dataset(self):
        """The underlying data source (``len``, ``[i] -> bytes``, ``__getitems__``)."""
        return self._core.dataset

    # -- order -----------------------------------------------------------------

    def global_indices(self, epoch: int, position: int, count: int) -> np.ndarray:
        """Global record indices read at ``[position, position + count)`` of ``epoch``.

        Returns:
            ``int64`` array of shape ``(count,)``.

        Raises:
            IndexError: the range leaves ``[0, len(self))``.
        """
        return self._core.order.indices(int(epoch), int(position), int(count))

    def read_records(self, epoch: int, position: int, count: int) -> list[bytes]:
        """Undecoded records at ``[position, position + count)`` of ``epoch``.

        One batched dataset read; does not move the source's position.

        Raises:
            IndexError: the range leaves ``[0, len(self))``.
            ValueError: the source is closed.
        """
        return self._core.read(int(epoch), int(position), int(count))

    def decode(self, record: bytes) -> dict:
        """Decode one record with the config's decoder (a ``dict`` of arrays)."""
        return self._core.decode(record)

    @property
    def decodes_raw(self) -> bool:
        """``True`` when elements are ``{"data": uint8 array}`` (``decode=None``)."""
        return self._core.raw

    def __getitem__(self, i) -> dict:
        """Element ``i`` of the current epoch's order for this host.

        ``i`` is an int in ``[-len(self), len(self))``. The current epoch is
        the one the next element comes from (after the last element of an
        epoch, the next epoch). Does not move the position.

        Raises:
            IndexError: ``i`` out of range. TypeError: ``i`` not an integer.
        """
        i = operator.index(i)
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"element {i} out of range for {n} elements per epoch")
        cursor = self._normalized()
        epoch = self.epoch.get_value() if cursor is None else cursor[0]
        return self.decode(self._core.read(epoch, i, 1)[0])

    # -- iteration -------------------------------------------------------------

    def _normalized(self) -> tuple[int, int] | None:
        """Current (epoch, position) with a finished epoch rolled over, or
        ``None`` when all ``num_epochs`` are done."""
        epoch, position = self.epoch.get_value(), self.position.get_value()
        if position >= len(self):
            epoch, position = epoch + 1, 0
        if self.config.num_epochs != -1 and epoch >= self.config.num_epochs:
            return None
        return epoch, position

    def _set_cursor(self, epoch: int, position: int) -> None:
        self.epoch.set_value(int(epoch))
        self.position.set_value(int(position))

    def __iter__(self) -> Iterator[dict]:
        """The source itself: iteration continues from the current position
        (it does not restart the epoch), so a restored source resumes."""
        return self

    def __next__(self) -> dict:
        """The next element; rolls over to the next epoch at the end of one.

        Raises:
            StopIteration: after ``num_epochs`` epochs (never for ``-1``).
        """
        cursor = self._normalized()
        if cursor is None:
            raise StopIteration
        epoch, position = cursor
        core = self._core
        ahead = core.ahead
        if ahead is None or ahead[0] != epoch or not ahead[1] <= position < ahead[1] + len(ahead[2]):
            count = min(READ_AHEAD, len(self) - position)
            ahead = core.ahead = (epoch, position, core.read(epoch, position, count))
        element = core.decode(ahead[2][position - ahead[1]])
        self._set_cursor(epoch, position + 1)
        return element

    # -- state -----------------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        """A small JSON-serialisable checkpoint of the iteration state.

        Returns:
            ``{"format", "epoch", "position", "seed", "shuffle_files",
            "shard_index", "shard_count", "drop_remainder", "dataset"}``:
            ``position`` is the number of this host's elements of ``epoch``
            already yielded, ``dataset`` a sha256 hex of the shard file names
            and record counts. Its size does not depend on the number of
            records.
        """
        c = self.config
        return {
            "format": STATE_FORMAT,
            "epoch": int(self.epoch.get_value()),
            "position": int(self.position.get_value()),
            "seed": c.seed,
            "shuffle_files": c.shuffle_files,
            "shard_index": c.shard_index,
            "shard_count": c.shard_count,
            "drop_remainder": c.drop_remainder,
            "dataset": self._core.fingerprint,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`get_state` output (also after a JSON round trip).

        The next element is the one that followed when the state was taken.

        Raises:
            ValueError: the state is malformed, or was taken with a different
                dataset, seed (when shuffling), ``shuffle_files``, shard
                settings or ``drop_remainder``, any of which would silently
                read a different order; the message lists every mismatch.
        """
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            got = state.get("format") if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"not an ArrayRecordSourceModule state (format {got!r}, "
                             f"expected {STATE_FORMAT!r})")
        mine = self.get_state()
        keys = ["shuffle_files", "shard_index", "shard_count", "drop_remainder", "dataset"]
        if self.config.shuffle_files:
            keys.insert(0, "seed")
        wrong = [
            f"{k}: checkpoint has {state.get(k)!r}, this source has {mine[k]!r}"
            for k in keys if state.get(k) != mine[k]
        ]
        if wrong:
            where = f"this dataset: {self.num_records} records in " \
                    f"{len(getattr(self.dataset, 'shards', ()) or ()) or '?'} shards"
            raise ValueError(
                "checkpoint does not match this source (restoring it would read a different "
                "order): " + "; ".join(wrong) + f" ({where})"
            )
        epoch, position = state.get("epoch"), state.get("position")
        for key, value in (("epoch", epoch), ("position", position)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"checkpoint {key} must be an integer >= 0, got {value!r}")
        if position > len(self):
            raise ValueError(
                f"checkpoint position {position} is past this host's {len(self)} elements per epoch"
            )
        self._set_cursor(epoch, position)

    # -- resources -------------------------------------------------------------

    def close(self) -> None:
        """Close the dataset if this module opened it; idempotent.

        Reads after ``close()`` raise ``ValueError``.
        """
        core = self._core
        if core.closed:
            return
        core.closed = True
        core.ahead = None
        if core.owns:
            core.dataset.close()

    def __enter__(self) -> "ArrayRecordSourceModule":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
