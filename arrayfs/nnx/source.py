"""``ArrayRecordSourceModule``: a stateful, shuffled, epoch-aware record source.

A ``flax.nnx.Module`` whose only state is three :class:`IterationState`
variables: ``epoch``, ``position`` (elements of this host's share of the
epoch already yielded) and ``resized_from`` (the host counts an epoch resumed
on a different number of hosts ran on before, see
:mod:`arrayfs.nnx.order`). Everything else (the dataset, the order, the
decoder) is rebuilt from the config and the paths, so a checkpoint is a few
hundred bytes for any dataset size, and one host's checkpoint restores on
every host of a job with the same or a different host count.

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
from .decode import decode_raw, decoder_for
from .order import MAX_RESIZES, EpochOrder, longest_slice, remaining_after, resume_levels

__all__ = ["ArrayRecordSourceModule", "IterationState", "STATE_FORMAT"]

#: Tag of :meth:`ArrayRecordSourceModule.get_state` dicts; bumped if the
#: meaning of a field (or the shuffle) ever changes, so a checkpoint is
#: refused rather than silently read in a different order. Version 2 added
#: ``resized_from`` (which version 1 readers must not ignore) and datarax's
#: key names.
STATE_FORMAT = "arrayfs.source/2"

#: Earlier formats :meth:`ArrayRecordSourceModule.set_state` still restores.
#: Version 1 is version 2 without ``resized_from`` and the datarax names.
OLD_STATE_FORMATS = ("arrayfs.source/1",)

#: Records read per ``__getitems__`` call when iterating element by element.
READ_AHEAD = 64


class IterationState(nnx.Variable):
    """An ``nnx.Variable`` holding a source's epoch or position (a Python ``int``).

    A 0-d integer numpy or jax array, as NNX checkpoint tooling may restore,
    is read as that integer; other values (floats) make iteration raise
    ``ValueError``.

    Filter on this type (``nnx.state(module, IterationState)``) to save or
    restore only iteration state with NNX tooling.
    """


def _is_data_source(obj) -> bool:
    # A list of paths also has __len__/__getitem__; a data source is anything
    # else that reads records by index.
    if isinstance(obj, (str, bytes, os.PathLike, list, tuple)):
        return False
    return hasattr(obj, "__len__") and hasattr(obj, "__getitem__")


def _fingerprints(dataset) -> tuple[str, ...]:
    """sha256 (hex) of the dataset's shards, then earlier forms that restore.

    The first is what a checkpoint stores: each shard's path relative to
    the shards' deepest common directory (its file name when they share
    one directory), first record and record count. Not full paths: a
    dataset copied to another directory (local SSD, another mount point) is
    the same dataset and its checkpoint should restore; but ``en/train`` and
    ``de/train`` are different shards. The second, present only when it
    differs, is the form of arrayfs before that distinction (file names
    only), so that its checkpoints still restore. Sources without
    ``shards`` are hashed by their name (:func:`_source_name`) and ``len``.
    """
    shards = getattr(dataset, "shards", None)
    if shards is None:
        return (_sha256([_source_name(dataset), len(dataset)]),)
    paths = [str(s.path) for s in shards]
    extents = [(int(getattr(s, "start", 0)), int(s.num_records)) for s in shards]
    current = _sha256([[name, *extent] for name, extent in zip(_below_common_dir(paths), extents)])
    legacy = _sha256([[os.path.basename(p), *extent] for p, extent in zip(paths, extents)])
    return (current,) if legacy == current else (current, legacy)


def _sha256(ident) -> str:
    return hashlib.sha256(json.dumps(ident).encode()).hexdigest()


def _below_common_dir(paths: list[str]) -> list[str]:
    """Each path relative to the deepest directory holding them all, with
    ``/`` separators (the file name alone when they share one directory).

    Local paths are made absolute first, so the answer does not depend on
    how they were spelled; URLs (``s3://...``) are split as they are.
    """
    parts = [_path_parts(p) for p in paths]
    dirs = [p[:-1] for p in parts]
    depth = 0
    while dirs and all(len(d) > depth and d[depth] == dirs[0][depth] for d in dirs):
        depth += 1
    return ["/".join(p[depth:]) for p in parts]


def _path_parts(path: str) -> list[str]:
    if "://" not in path:
        path = os.path.abspath(path).replace(os.sep, "/")
    return path.split("/")


def _source_name(dataset) -> str:
    """``repr(dataset)`` if its class defines one, else the class's qualified name.

    object's default repr holds the memory address, which differs for the
    same data in every process: a checkpoint would never restore. A class's
    own repr (grain's, for example) is kept, so that its existing
    checkpoints still restore.
    """
    cls = type(dataset)
    if cls.__repr__ is object.__repr__:
        return cls.__qualname__
    return repr(dataset)


class _Core:
    """The non-state machinery of a source, kept out of the NNX pytree."""

    def __init__(self, dataset, owns: bool, order: EpochOrder, decode, fingerprints: tuple[str, ...]):
        self.dataset = dataset
        self.owns = owns
        self.order = order
        self.decode = decode
        self.raw = decode is decode_raw
        # What get_state stores, then earlier forms set_state also accepts.
        self.fingerprint = fingerprints[0]
        self.fingerprints = fingerprints
        self.closed = False
        # ((epoch, resized_from), first position, records) read ahead for
        # element iteration.
        self.ahead: tuple[tuple, int, list] | None = None
        # (rows array, pairs) of the last resized_from decoded.
        self.resized: tuple[Any, tuple] = (None, ())

    def read(self, epoch: int, position: int, count: int, resized_from=()) -> list[bytes]:
        if self.closed:
            raise ValueError("read from a closed ArrayRecordSourceModule")
        indices = self.order.indices(epoch, position, count, resized_from)
        getitems = getattr(self.dataset, "__getitems__", None)
        if getitems is not None:
            return list(getitems(indices))
        return [self.dataset[int(i)] for i in indices]


def _index(name: str, value) -> int:
    """An iteration variable's value as an ``int``.

    NNX state restored with ``nnx.update`` may hold 0-d numpy or jax integer
    arrays (from ``np.load``, ``jax.tree.map(jnp.asarray, ...)`` or
    ``broadcast_one_to_all``) instead of ints; ``operator.index`` takes
    those, and refuses floats, which would name no element exactly.

    Raises:
        ValueError: ``value`` is not an integer.
    """
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"IterationState {name} must be an integer, got {value!r}") from None


def _state_int(state: dict, names: tuple[str, str]) -> int:
    """The value stored under the arrayfs name and/or the datarax name."""
    present = [(n, state[n]) for n in names if n in state]
    if not present:
        raise ValueError(f"checkpoint has no {names[0]!r} (or {names[1]!r})")
    for name, value in present:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"checkpoint {name} must be an integer >= 0, got {value!r}")
    if len({v for _, v in present}) > 1:
        raise ValueError(f"checkpoint {names[0]} and {names[1]} differ: "
                         + ", ".join(f"{n}={v!r}" for n, v in present))
    return present[0][1]


class ArrayRecordSourceModule(nnx.Module):
    """Shuffled, epoch-aware, host-sharded iteration over ArrayRecord records.

    Args:
        config: :class:`ArrayRecordSourceConfig`; ``None`` for the defaults
            (datarax's: ``seed=42``, ``num_epochs=-1``,
            ``shuffle_files=False``). ``shard_index`` and ``shard_count`` left
            ``None`` are taken from ``jax.process_index()``/
            ``jax.process_count()`` here. ``ArrayRecordSourceModule(paths)``
            with a single positional argument that is not a config means
            ``ArrayRecordSourceModule(None, paths)``.
        paths: what :class:`arrayfs.ArrayRecordDataSource` accepts (a path,
            glob, directory, ``"path[a:b]"``, or a list of them), opened with
            ``verify=config.verify`` and closed by :meth:`close`; or an
            already-open data source (``len``, ``[i]``, ideally batched
            ``__getitems__``), used as is and not closed.
        storage_options: fsspec options for URL ``paths`` (``s3://``,
            ``gs://``, ...): credentials, ``endpoint_url``; the backend's
            usual environment applies otherwise.
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
    at most ``shard_count - 1`` elements with ``drop_remainder``). An epoch
    restored from a checkpoint taken on another host count is split as
    :mod:`arrayfs.nnx.order` describes; later epochs as above.

    Raises:
        ValueError: ``config`` is not a config; the dataset has no records;
            or this host's slice is empty (fewer records than hosts) and
            ``num_epochs`` is ``-1`` (it would never yield).
        FileNotFoundError, arrayfs.ArrayRecordError: from opening ``paths``.
    """

    def __init__(self, config: ArrayRecordSourceConfig | None = None, paths=None, *,
                 rngs: nnx.Rngs | None = None, name: str | None = None, storage_options: dict | None = None):
        if paths is None and config is not None and not isinstance(config, ArrayRecordSourceConfig):
            config, paths = None, config  # ArrayRecordSourceModule("path/to/file")
        if paths is None:
            raise ValueError("no paths given: ArrayRecordSourceModule(config, paths) or "
                             "ArrayRecordSourceModule(paths)")
        if config is None:
            config = ArrayRecordSourceConfig()
        if not isinstance(config, ArrayRecordSourceConfig):
            raise ValueError(
                f"config must be an ArrayRecordSourceConfig, got {type(config).__name__}"
            )
        config = config.resolved()
        if _is_data_source(paths):
            dataset, owns = paths, False
        else:
            from ..dataset import ArrayRecordDataSource

            dataset, owns = ArrayRecordDataSource(paths, verify=config.verify, storage_options=storage_options), True
        try:
            num_records = len(dataset)
            if num_records < 1:
                raise ValueError(f"the dataset has no records: {dataset!r}")
            order = EpochOrder(
                num_records, seed=config.seed, shuffle=config.shuffle_files,
                shard_index=config.shard_index, shard_count=config.shard_count,
                drop_remainder=config.drop_remainder,
            )
            if order.length < 1 and config.num_epochs == -1:
                raise ValueError(
                    f"host {config.shard_index} of {config.shard_count} gets no records of "
                    f"{num_records} (drop_remainder={config.drop_remainder}) and num_epochs=-1 "
                    "would never yield; use fewer hosts or more records"
                )
            core = _Core(dataset, owns, order, decoder_for(config.decode, dataset), _fingerprints(dataset))
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
        # Fixed shape, so the NNX state has one structure whatever happened:
        # rows (host_count, position) of the current epoch's earlier levels,
        # then rows of zeros.
        self.resized_from = IterationState(np.zeros((MAX_RESIZES, 2), np.int64))

    # -- sizes -----------------------------------------------------------------

    def __len__(self) -> int:
        """Elements this host reads per epoch (``N`` with one host).

        An epoch resumed on a different host count may differ; see
        :meth:`epoch_length`.
        """
        return self._core.order.length

    def epoch_length(self, epoch: int | None = None, *, resized_from=None) -> int:
        """Elements this host reads in ``epoch`` (default: the current one).

        ``len(self)``, except in the epoch a checkpoint taken on another
        host count was restored into: there, this host's share of what the
        earlier hosts left. ``resized_from`` (``(host_count, position)``
        pairs, as in :attr:`cursor`) gives those earlier levels instead of
        the stored ones (then ``epoch`` is not used).
        """
        if resized_from is None:
            cur = self._epoch()
            epoch = cur if epoch is None else int(epoch)
            resized_from = self._resized() if epoch == cur else ()
        return self._core.order.epoch_length(tuple(resized_from))

    @property
    def num_records(self) -> int:
        """Records in the whole dataset, ``N``."""
        return self._core.order.num_records

    @property
    def dataset(self):
        """The underlying data source (``len``, ``[i] -> bytes``, ``__getitems__``)."""
        return self._core.dataset

    # -- order -----------------------------------------------------------------

    def _resized(self) -> tuple[tuple[int, int], ...]:
        """``resized_from`` as a tuple of ``(host_count, position)`` pairs."""
        rows = self.resized_from.get_value()
        cached = self._core.resized
        if cached[0] is rows:  # the rows are replaced, never changed in place
            return cached[1]
        pairs = tuple((int(a), int(p)) for a, p in np.asarray(rows).reshape(-1, 2) if a > 0)
        self._core.resized = (rows, pairs)
        return pairs

    def _epoch(self) -> int:
        """The stored epoch as an ``int`` (see :func:`_index`)."""
        return _index("epoch", self.epoch.get_value())

    def _layout(self, epoch: int) -> tuple:
        """Earlier levels of ``epoch``: the stored ones if it is the current epoch."""
        return self._resized() if epoch == self._epoch() else ()

    def global_indices(self, epoch: int, position: int, count: int) -> np.ndarray:
        """Global record indices read at ``[position, position + count)`` of ``epoch``.

        Returns:
            ``int64`` array of shape ``(count,)``.

        Raises:
            IndexError: the range leaves ``[0, epoch_length(epoch))``.
        """
        epoch = int(epoch)
        return self._core.order.indices(epoch, int(position), int(count), self._layout(epoch))

    def read_records(self, epoch: int, position: int, count: int, *, resized_from=None) -> list[bytes]:
        """Undecoded records at ``[position, position + count)`` of ``epoch``.

        One batched dataset read; does not move the source's position.
        ``resized_from`` gives the epoch's earlier levels (as in
        :attr:`cursor`; default: the stored ones if ``epoch`` is the
        current epoch), for a reader that captured the cursor earlier.

        Raises:
            IndexError: the range leaves ``[0, epoch_length(epoch))``.
            ValueError: the source is closed.
        """
        epoch = int(epoch)
        layout = self._layout(epoch) if resized_from is None else tuple(resized_from)
        return self._core.read(epoch, int(position), int(count), layout)

    def decode(self, record: bytes) -> dict:
        """Decode one record with the config's decoder (a ``dict`` of arrays)."""
        return self._core.decode(record)

    @property
    def decodes_raw(self) -> bool:
        """``True`` when elements are ``{"data": uint8 array}`` (``decode=None``)."""
        return self._core.raw

    def __getitem__(self, i) -> dict:
        """Element ``i`` of the current epoch's order for this host.

        ``i`` is an int in ``[-n, n)``, ``n`` the current epoch's
        :meth:`epoch_length`. The current epoch is the one the next element
        comes from (after the last element of an epoch, the next epoch).
        Does not move the position.

        Raises:
            IndexError: ``i`` out of range. TypeError: ``i`` not an integer.
        """
        i = operator.index(i)
        cursor = self._normalized()
        if cursor is None:
            epoch, resized = self._epoch(), self._resized()
        else:
            epoch, _, resized = cursor
        n = self._core.order.epoch_length(resized)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"element {i} out of range for {n} elements in epoch {epoch}")
        return self.decode(self._core.read(epoch, i, 1, resized)[0])

    # -- iteration -------------------------------------------------------------

    def _cursor(self) -> tuple[int, int, tuple]:
        """The stored ``(epoch, position, resized_from)``, each variable read
        once (an NNX variable read costs microseconds; this is per element)."""
        return self._epoch(), _index("position", self.position.get_value()), self._resized()

    @property
    def cursor(self) -> tuple[int, int, tuple]:
        """The stored ``(epoch, position, resized_from)``: the epoch and
        position of the next element (before rolling over a finished epoch)
        and that epoch's earlier levels as ``(host_count, position)`` pairs
        (``()`` unless a checkpoint from another host count was restored
        into it). Set it with :meth:`move_to`."""
        return self._cursor()

    def move_to(self, epoch: int, position: int, resized_from=None) -> None:
        """Make ``(epoch, position)`` the next element; a new epoch forgets
        the earlier levels unless ``resized_from`` gives that epoch's (as in
        :attr:`cursor`). For a reader that consumed elements itself (the
        :class:`arrayfs.nnx.Pipeline`)."""
        self._set_cursor(epoch, position, resized_from)

    def _normalized(self, cursor: tuple | None = None) -> tuple[int, int, tuple] | None:
        """``(epoch, position, resized_from)`` of the next element, finished
        epochs rolled over, or ``None`` when all ``num_epochs`` are done."""
        epoch, position, resized = self._cursor() if cursor is None else cursor
        order = self._core.order
        while position >= order.epoch_length(resized):
            if not resized and order.length == 0:
                return None  # no element in any epoch (only with finite num_epochs)
            epoch, position, resized = epoch + 1, 0, ()
        if self.config.num_epochs != -1 and epoch >= self.config.num_epochs:
            return None
        return epoch, position, resized

    def _set_cursor(self, epoch: int, position: int, resized_from=None, was=None) -> None:
        """Move to ``(epoch, position)``; a new epoch forgets the earlier
        levels unless ``resized_from`` gives that epoch's. ``was`` is the
        stored cursor if the caller has just read it."""
        epoch = int(epoch)
        old_epoch, _, old_resized = self._cursor() if was is None else was
        if resized_from is None and epoch != old_epoch:
            resized_from = ()
        if resized_from is not None and tuple(resized_from) != old_resized:
            rows = np.zeros((MAX_RESIZES, 2), np.int64)
            if resized_from:
                rows[:len(resized_from)] = resized_from
            self.resized_from.set_value(rows)
        if epoch != old_epoch:
            self.epoch.set_value(epoch)
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
        was = self._cursor()
        cursor = self._normalized(was)
        if cursor is None:
            raise StopIteration
        epoch, position, resized = cursor
        core = self._core
        ahead = core.ahead
        if (ahead is None or ahead[0] != (epoch, resized)
                or not ahead[1] <= position < ahead[1] + len(ahead[2])):
            count = min(READ_AHEAD, core.order.epoch_length(resized) - position)
            ahead = core.ahead = ((epoch, resized), position,
                                  core.read(epoch, position, count, resized))
        element = core.decode(ahead[2][position - ahead[1]])
        self._set_cursor(epoch, position + 1, resized, was)
        return element

    # -- state -----------------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        """A small JSON-serialisable checkpoint of the iteration state.

        Returns:
            ``{"format", "epoch", "position", "current_epoch",
            "current_index", "resized_from", "seed", "shuffle_files",
            "shard_index", "shard_count", "drop_remainder", "dataset"}``:
            ``position`` is the number of this host's elements of ``epoch``
            already yielded (``current_epoch``/``current_index`` repeat
            ``epoch``/``position`` under datarax's names), ``resized_from``
            the ``[host_count, position]`` pairs of the epoch's earlier
            levels (empty unless the epoch was resumed on another host
            count; at most :data:`~arrayfs.nnx.order.MAX_RESIZES`),
            ``dataset`` a sha256 hex of the shards' paths below their
            common directory and record counts (see :func:`_fingerprints`).
            Its size does not depend on the number of records.
        """
        c = self.config
        epoch, position, _ = self._cursor()
        return {
            "format": STATE_FORMAT,
            "epoch": epoch,
            "position": position,
            "current_epoch": epoch,
            "current_index": position,
            "resized_from": [list(pair) for pair in self._resized()],
            "seed": c.seed,
            "shuffle_files": c.shuffle_files,
            "shard_index": c.shard_index,
            "shard_count": c.shard_count,
            "drop_remainder": c.drop_remainder,
            "dataset": self._core.fingerprint,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`get_state` output (also after a JSON round trip).

        The state of any one host of a lockstep job (every host had yielded
        the same number of elements of the current epoch) restores on every
        host of a job with the same or a different ``shard_count``:

        * same ``shard_count``: this host continues at the checkpoint's
          position of its own slice, as the uninterrupted run would;
        * different ``shard_count``: the elements of the interrupted epoch
          that no host had yielded are split among the new hosts (see
          :mod:`arrayfs.nnx.order`), so that over all hosts, before and
          after, every record of the epoch is yielded exactly once (at most
          once with ``drop_remainder``). Later epochs are split normally.

        States of format ``arrayfs.source/1`` (earlier arrayfs) restore too.

        Raises:
            ValueError: the state is malformed; or was taken with a different
                dataset, seed (when shuffling), ``shuffle_files`` or
                ``drop_remainder``, any of which would silently read a
                different order (the message lists every mismatch); or the
                epoch already changed host count
                :data:`~arrayfs.nnx.order.MAX_RESIZES` times and this would
                be one more.
        """
        fmt = state.get("format") if isinstance(state, dict) else None
        if fmt != STATE_FORMAT and fmt not in OLD_STATE_FORMATS:
            got = fmt if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"not an ArrayRecordSourceModule state (format {got!r}, "
                             f"expected {STATE_FORMAT!r})")
        mine = self.get_state()
        keys = ["shuffle_files", "drop_remainder", "dataset"]
        if self.config.shuffle_files:
            keys.insert(0, "seed")
        accepted = {k: (mine[k],) for k in keys}
        accepted["dataset"] = self._core.fingerprints
        wrong = [
            f"{k}: checkpoint has {state.get(k)!r}, this source has {mine[k]!r}"
            for k in keys if state.get(k) not in accepted[k]
        ]
        if wrong:
            where = f"this dataset: {self.num_records} records in " \
                    f"{len(getattr(self.dataset, 'shards', ()) or ()) or '?'} shards"
            raise ValueError(
                "checkpoint does not match this source (restoring it would read a different "
                "order): " + "; ".join(wrong) + f" ({where})"
            )
        epoch = _state_int(state, ("epoch", "current_epoch"))
        position = _state_int(state, ("position", "current_index"))
        count = state.get("shard_count")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"checkpoint shard_count must be an integer >= 1, got {count!r}")
        resized = state.get("resized_from", [])
        if not isinstance(resized, (list, tuple)):
            raise ValueError(f"checkpoint resized_from must be a list of [host_count, position] "
                             f"pairs, got {resized!r}")
        drop = self.config.drop_remainder
        levels = resume_levels(self.num_records, resized, drop)
        resized = tuple((lv.host_count, lv.position) for lv in levels)
        size = levels[-1].remaining if levels else self.num_records
        longest = longest_slice(size, count, drop)
        if position > longest:
            raise ValueError(
                f"checkpoint position {position} is past the {longest} elements per host "
                f"when {count} hosts split {size} elements of epoch {epoch}"
            )
        me = self.config.shard_count
        if count == me:
            # Same split: continue at `position` of this host's own slice (a
            # shorter slice than the saving host's may already be done).
            position = min(position, self._core.order.epoch_length(resized))
        elif remaining_after(size, count, position, drop) == 0:
            epoch, position, resized = epoch + 1, 0, ()  # that epoch is finished
        elif position == 0:
            pass  # no progress at that level: split it among the new hosts instead
        else:
            if len(resized) >= MAX_RESIZES:
                raise ValueError(
                    f"epoch {epoch} of this checkpoint already changed host count "
                    f"{len(resized)} times (the most a state keeps); restore it on "
                    f"{count} hosts, the count it was taken with, to finish the epoch; "
                    "later epochs may use any host count"
                )
            resized, position = resized + ((count, position),), 0
        self._set_cursor(epoch, position, resized)
        self._core.ahead = None

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
