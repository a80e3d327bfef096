"""``Pipeline``: batches from an ``ArrayRecordSourceModule``, prefetched.

Built as datarax writes it, ``Pipeline(source=source, stages=[...],
batch_size=32, rngs=nnx.Rngs(0))``, or with ``from_source(source, 32)``.
A background thread reads, decodes, collates and transforms the next
``prefetch`` batches while the training step runs. Checkpoint semantics are
those of the *consumer*: the source's ``epoch``/``position`` move only when a
batch is handed to the caller, so ``get_state()`` names the next unseen batch
and prefetched-but-unconsumed batches are read again after a restore rather
than lost.

Batches never span epochs: each epoch of ``n`` elements gives
``ceil(n / batch_size)`` batches, the last one smaller, or
``n // batch_size`` with ``drop_remainder=True``.
"""

from __future__ import annotations

import operator
import queue
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from .order import resume_levels
from .source import ArrayRecordSourceModule

__all__ = ["from_source", "Pipeline", "default_collate", "PIPELINE_STATE_FORMAT"]

PIPELINE_STATE_FORMAT = "arrayfs.pipeline/1"

# Seconds between checks of the stop flag while blocked on the queue; bounds
# how long close() waits for a thread blocked on a full queue.
_POLL = 0.05


def default_collate(elements: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """Stack a list of element dicts into one dict of arrays.

    Args:
        elements: ``k >= 1`` dicts with the same keys; each field's arrays
            must share one shape ``S`` (and be stackable dtypes).

    Returns:
        ``{field: array of shape (k, *S)}``.

    Raises:
        ValueError: an element has different keys, or a field is ragged
            (the message names the field and the shapes seen, and suggests
            passing ``collate=``).
    """
    first = elements[0]
    keys = list(first.keys())
    out = {}
    for i, el in enumerate(elements):
        if el.keys() != first.keys():
            raise ValueError(
                f"elements have different fields: element 0 has {sorted(first)}, element {i} "
                f"has {sorted(el)}; pass collate= to from_source to batch them"
            )
    for key in keys:
        values = [np.asarray(el[key]) for el in elements]
        shape = values[0].shape
        if any(v.shape != shape for v in values):
            seen = sorted({v.shape for v in values})
            shown = ", ".join(map(str, seen[:5])) + (", ..." if len(seen) > 5 else "")
            raise ValueError(
                f"field {key!r} is ragged: its arrays have shapes {shown} within one batch; "
                "pass collate= to from_source (for example one that pads) to batch it"
            )
        out[key] = np.stack(values)
    return out


def _collate_raw(records: list[bytes]) -> dict[str, np.ndarray]:
    """``{"data": uint8 (k, record_bytes)}`` straight from the bytes: one copy,
    no per-record arrays (the fast path for ``decode=None``)."""
    sizes = set(map(len, records))
    if len(sizes) != 1:
        seen = sorted(sizes)
        shown = ", ".join(map(str, seen[:5])) + (", ..." if len(seen) > 5 else "")
        raise ValueError(
            f"field 'data' is ragged: records of {shown} bytes within one batch; pass "
            "collate= to from_source (for example one that pads) to batch them"
        )
    # bytearray.join gives one writable buffer; frombuffer over bytes would
    # hand the user a read-only array.
    buf = bytearray().join(records)
    return {"data": np.frombuffer(buf, dtype=np.uint8).reshape(len(records), sizes.pop())}


class _Builder:
    """Everything the prefetch thread needs, and nothing that refers back to
    the Pipeline (so the Pipeline can be garbage-collected while it runs).

    ``cursor`` is the source's ``(epoch, position, resized_from)`` when the
    builder was made: the earlier levels apply to that epoch only, and are
    captured here so the consumer moving the source on cannot change them
    under the thread."""

    def __init__(self, source: ArrayRecordSourceModule, batch_size: int, drop_remainder: bool,
                 collate, transforms: tuple, device_put, cursor: tuple):
        self.source = source
        self.batch_size = batch_size
        self.drop_remainder = drop_remainder
        self.collate = collate
        self.transforms = transforms
        self.device_put = device_put
        self.num_epochs = source.config.num_epochs
        self.resized_epoch, _, self.resized = cursor

    def layout(self, epoch: int) -> tuple:
        return self.resized if epoch == self.resized_epoch else ()

    def plan(self, epoch: int, position: int):
        """``(epoch, position, count)`` of the batch after cursor ``(epoch,
        position)``, or ``None`` when every epoch is done."""
        while True:
            if self.num_epochs != -1 and epoch >= self.num_epochs:
                return None
            layout = self.layout(epoch)
            length = self.source.epoch_length(resized_from=layout)
            if not layout and (length == 0 or (self.drop_remainder and length < self.batch_size)):
                return None  # no epoch from here on has a batch (only with finite num_epochs)
            remaining = length - position
            if remaining <= 0 or (self.drop_remainder and remaining < self.batch_size):
                epoch, position = epoch + 1, 0
                continue
            return epoch, position, min(self.batch_size, remaining)

    def build(self, epoch: int, position: int, count: int):
        records = self.source.read_records(epoch, position, count, resized_from=self.layout(epoch))
        if self.collate is None:
            if self.source.decodes_raw:
                batch = _collate_raw(records)
            else:
                batch = default_collate([self.source.decode(r) for r in records])
        else:
            batch = self.collate([self.source.decode(r) for r in records])
        for fn in self.transforms:
            batch = fn(batch)
        if self.device_put is not None:
            import jax

            batch = jax.device_put(batch) if self.device_put is True else jax.device_put(
                batch, self.device_put)
        return batch


class _Worker:
    """One prefetch thread: produces ``("batch", batch, cursor_after)``,
    then ``("end",)`` or ``("error", exc)``, into a bounded queue."""

    def __init__(self, builder: _Builder, cursor: tuple, depth: int):
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.stop_event = threading.Event()
        self.thread = threading.Thread(
            target=self._run, args=(builder, cursor), name="arrayfs-prefetch", daemon=True
        )
        self.thread.start()

    def _put(self, item) -> bool:
        while not self.stop_event.is_set():
            try:
                self.queue.put(item, timeout=_POLL)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, builder: _Builder, cursor: tuple) -> None:
        epoch, position, _ = cursor
        try:
            while not self.stop_event.is_set():
                step = builder.plan(epoch, position)
                if step is None:
                    self._put(("end",))
                    return
                epoch, position, count = step
                batch = builder.build(epoch, position, count)
                position += count
                if not self._put(("batch", batch, (epoch, position))):
                    return
        except BaseException as exc:  # handed to the consumer, re-raised there
            self._put(("error", exc))

    def get(self):
        while True:
            try:
                return self.queue.get(timeout=_POLL)
            except queue.Empty:
                if not self.thread.is_alive() and self.queue.empty():
                    # Only reachable if the thread was stopped under us.
                    return ("error", RuntimeError("prefetch thread ended without a result"))

    def stop(self, timeout: float = 10.0) -> None:
        self.stop_event.set()
        # Drain so a producer blocked in put() sees the flag promptly.
        try:
            while True:
                self.queue.get_nowait()
        except queue.Empty:
            pass
        if self.thread is not threading.current_thread():
            self.thread.join(timeout)


def _stop_worker(holder: list) -> None:
    # Called by close(), by weakref.finalize when the Pipeline is collected,
    # and at interpreter exit (finalize's atexit hook).
    worker = holder[0] if holder else None
    holder.clear()
    if worker is not None:
        worker.stop()


def _batches(length: int, batch_size: int, drop_remainder: bool) -> int:
    """Batches of an epoch of ``length`` elements."""
    return length // batch_size if drop_remainder else -(-length // batch_size)


def _steps_differ(source: ArrayRecordSourceModule, state: dict, drop_remainder: bool) -> str | None:
    """Why the hosts that saved ``state`` were out of lockstep, or ``None``.

    One host's state tells the others what they read only if every host of
    the saving job takes the same number of batches per epoch: otherwise a
    host with a shorter share finishes the epoch a step early and starts the
    next one while the others are still in this one, and drifts one step
    further each epoch. That happens without the config's
    ``drop_remainder`` when the epoch's elements do not divide evenly among
    the hosts and the shares need different numbers of batches (for
    example 6 and 5 elements in batches of 5). ``state`` is a pipeline
    state whose source state ``source`` has already accepted;
    ``drop_remainder`` is the saving pipeline's (this one's if the state
    predates that key).
    """
    saved = state["source"]
    count, batch_size = saved["shard_count"], state.get("batch_size")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"pipeline state batch_size must be an integer >= 1, got {batch_size!r}")
    levels = resume_levels(source.num_records, saved.get("resized_from", []),
                           source.config.drop_remainder)
    size = levels[-1].remaining if levels else source.num_records
    short, extra = divmod(size, count)
    if source.config.drop_remainder or not extra:
        return None  # equal shares
    steps = _batches(short + 1, batch_size, drop_remainder), _batches(short, batch_size, drop_remainder)
    if steps[0] == steps[1]:
        return None
    longer = "host 0" if extra == 1 else f"hosts 0-{extra - 1}"
    return (f"its {count} hosts take different numbers of batches per epoch ({steps[0]} "
            f"of {short + 1} elements on {longer}, {steps[1]} of {short} on the others, "
            f"in batches of {batch_size}{' dropping short ones' if drop_remainder else ''})")


def _check_int(name: str, value, low: int) -> int:
    try:
        ok = not isinstance(value, bool) and operator.index(value) >= low
    except TypeError:
        ok = False
    if not ok:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


class Pipeline:
    """Batches of a source, read ahead on a background thread.

    The constructor takes datarax's form, keyword arguments only::

        Pipeline(source=source, stages=[...], batch_size=32, rngs=nnx.Rngs(0))

    :func:`from_source` is the same with positional ``source`` and
    ``batch_size``.

    Args:
        source: an :class:`ArrayRecordSourceModule`; the pipeline advances its
            ``epoch``/``position`` as batches are yielded, and closes it in
            :meth:`close`.
        batch_size: elements per batch, ``>= 1``.
        stages: callables (functions or ``flax.nnx.Module`` instances)
            applied to each batch in order, ``stage(batch) -> batch``, on the
            prefetch thread after collation and before ``device_put``;
            :meth:`add` appends more.
        rngs: accepted for datarax compatibility and kept as ``self.rngs``
            (for stages that want randomness); the order of records does not
            use it.
        drop_remainder: drop each epoch's last batch when it is short, so
            every batch has ``batch_size`` elements (static shapes for
            ``jax.jit``).
        prefetch: batches built ahead of the caller, ``>= 0``; ``0`` builds
            each batch on the caller's thread.
        collate: ``fn(list of element dicts) -> batch``; default stacks each
            field (:func:`default_collate`).
        device_put: ``None`` to yield numpy arrays; ``True`` for
            ``jax.device_put(batch)`` onto the default device; or a
            ``jax.Device``/``jax.sharding.Sharding`` to place batches there
            (done on the prefetch thread, so the copy overlaps the step).

    Iterating yields one batch per step until the source's ``num_epochs``
    are done (never, for ``-1``). With the default collate each batch is a
    ``dict`` of arrays of shape ``(b, *field_shape)``, ``b`` = ``batch_size``
    except for a short last batch of an epoch; with ``decode=None`` and
    fixed-size records, ``batch["data"]`` is ``uint8`` of shape
    ``(b, record_bytes)``. The pipeline is its own iterator: a new ``for``
    loop continues where the last one stopped.

    Raises:
        ValueError: ``batch_size < 1``, ``prefetch < 0``, a non-callable
            ``collate``, or ``drop_remainder`` with fewer elements per epoch
            than ``batch_size`` (it would never yield a batch).
        TypeError: ``source`` is not an :class:`ArrayRecordSourceModule`, or
            a stage is not callable.
    """

    def __init__(self, *, source: ArrayRecordSourceModule, batch_size: int = 32,
                 stages: Sequence[Callable[[Any], Any]] | None = None, rngs: Any = None,
                 drop_remainder: bool = False, prefetch: int = 2,
                 collate: Callable[[list[dict]], Any] | None = None, device_put: Any = None):
        if not isinstance(source, ArrayRecordSourceModule):
            raise TypeError(
                f"source must be an ArrayRecordSourceModule, got {type(source).__name__}"
            )
        batch_size = _check_int("batch_size", batch_size, 1)
        prefetch = _check_int("prefetch", prefetch, 0)
        if collate is not None and not callable(collate):
            raise ValueError(f"collate must be callable, got {type(collate).__name__}")
        if not isinstance(drop_remainder, bool):
            raise ValueError(f"drop_remainder must be a bool, got {drop_remainder!r}")
        if drop_remainder and len(source) < batch_size:
            raise ValueError(
                f"drop_remainder=True with batch_size {batch_size} but only {len(source)} "
                "elements per epoch on this host: no batch would ever be yielded"
            )
        stages = list(stages or ())
        for k, stage in enumerate(stages):
            if not callable(stage):
                raise TypeError(f"stages[{k}] must be callable (batch -> batch), "
                                f"got {type(stage).__name__}")
        self._source = source
        self.batch_size = batch_size
        self.drop_remainder = drop_remainder
        self.prefetch = prefetch
        self.rngs = rngs
        self._collate = collate
        self._device_put = None if device_put is False else device_put
        self._transforms: list[Callable] = stages
        self._holder: list[_Worker] = []  # the running worker, if any
        # Source cursor (epoch, position, resized_from) the worker continues from.
        self._cursor: tuple | None = None
        self._finished = False
        self._closed = False
        self._finalizer = weakref.finalize(self, _stop_worker, self._holder)

    # -- building --------------------------------------------------------------

    @property
    def source(self) -> ArrayRecordSourceModule:
        """The source whose position this pipeline advances."""
        return self._source

    @property
    def stages(self) -> list[Callable]:
        """The batch stages, in the order they run (a copy)."""
        return list(self._transforms)

    def add(self, fn: Callable[[Any], Any]) -> "Pipeline":
        """Append a batch stage ``fn(batch) -> batch``; returns ``self``.

        Transforms run in order on the prefetch thread, after collation and
        before ``device_put``. Adding one discards prefetched batches (they
        are rebuilt with it; none is lost or skipped).

        Raises:
            TypeError: ``fn`` is not callable.
        """
        if not callable(fn):
            raise TypeError(f"a batch transform must be callable, got {type(fn).__name__}")
        self._restart()
        self._transforms.append(fn)
        return self

    def __rshift__(self, fn: Callable[[Any], Any]) -> "Pipeline":
        """``pipeline >> fn`` is ``pipeline.add(fn)`` (appends in place, returns it)."""
        return self.add(fn)

    def __len__(self) -> int:
        """Batches per epoch for this host."""
        n = len(self._source)
        return n // self.batch_size if self.drop_remainder else -(-n // self.batch_size)

    # -- iteration -------------------------------------------------------------

    def _builder(self, cursor: tuple) -> _Builder:
        return _Builder(self._source, self.batch_size, self.drop_remainder, self._collate,
                        tuple(self._transforms), self._device_put, cursor)

    def _restart(self) -> None:
        _stop_worker(self._holder)
        self._cursor = None
        self._finished = False

    def __iter__(self) -> "Pipeline":
        return self

    def __next__(self):
        """The next batch.

        Raises:
            StopIteration: all ``num_epochs`` epochs are done.
            ValueError: the pipeline is closed, or a ragged field (see
                :func:`default_collate`).
            Exception: whatever reading, decoding or a transform raised; the
                state still names the batch that failed, so fixing the cause
                and iterating again retries it.
        """
        if self._closed:
            raise ValueError("iteration over a closed pipeline")
        source = self._source
        cursor = source.cursor
        if cursor != self._cursor:
            # First call, a set_state, or someone moved the source directly:
            # batches prefetched from another position are not the next ones.
            self._restart()
            self._cursor = cursor
        if self._finished:
            raise StopIteration
        if self.prefetch == 0:
            builder = self._builder(cursor)
            step = builder.plan(*cursor[:2])
            if step is None:
                self._finished = True
                raise StopIteration
            epoch, position, count = step
            batch = builder.build(epoch, position, count)
            item = ("batch", batch, (epoch, position + count))
        else:
            if not self._holder:
                self._holder.append(_Worker(self._builder(cursor), cursor, self.prefetch))
            item = self._holder[0].get()
        kind = item[0]
        if kind == "end":
            self._finished = True
            _stop_worker(self._holder)
            raise StopIteration
        if kind == "error":
            self._restart()
            raise item[1]
        _, batch, (epoch, position) = item
        # The earlier levels belong to the epoch the worker started in.
        resized = self._cursor[2] if epoch == self._cursor[0] else ()
        source.move_to(epoch, position, resized)
        self._cursor = (epoch, position, resized)
        return batch

    # -- state -----------------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        """JSON-serialisable state naming the next batch the caller has not seen.

        Returns:
            ``{"format", "batch_size", "drop_remainder", "source"}`` with
            ``source`` the source's
            :meth:`~ArrayRecordSourceModule.get_state` as of the last batch
            yielded (batches prefetched beyond it are not counted).
        """
        return {
            "format": PIPELINE_STATE_FORMAT,
            "batch_size": self.batch_size,
            "drop_remainder": self.drop_remainder,
            "source": self._source.get_state(),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`get_state`: the next batch is the first unseen one.

        A different ``batch_size`` is allowed (positions count elements, not
        batches); batches then start at the first unseen element. So is a
        different ``shard_count``: one host's state of a lockstep job
        restores on every host of the new job, which split the rest of the
        epoch between them (see :meth:`ArrayRecordSourceModule.set_state`).
        That needs the saving job's hosts to take the same number of batches
        per epoch; when they did not (shares of different lengths without
        the config's ``drop_remainder``, whose batch counts differ), a
        state restores only on the host that saved it (same
        ``shard_index`` and ``shard_count``).

        Raises:
            ValueError: not a pipeline state; the source refuses it (see
                :meth:`ArrayRecordSourceModule.set_state`); or it comes from
                another host of a job whose hosts took different numbers of
                batches per epoch, so it does not say what this host read
                (restoring it would read records twice or skip them). A
                refused state leaves the pipeline where it was.
        """
        if not isinstance(state, dict) or state.get("format") != PIPELINE_STATE_FORMAT:
            got = state.get("format") if isinstance(state, dict) else type(state).__name__
            raise ValueError(
                f"not a pipeline state (format {got!r}, expected {PIPELINE_STATE_FORMAT!r})"
            )
        self._restart()
        source = self._source
        was = source.cursor
        source.set_state(state["source"])  # validates the source state first
        try:
            self._check_lockstep(state)
        except BaseException:
            source.move_to(*was)
            raise

    def _check_lockstep(self, state: dict) -> None:
        """Refuse another host's state when the saving hosts were out of step
        (see :func:`_steps_differ`); a host's own state is always exact."""
        saved, config = state["source"], self._source.config
        if (saved["shard_count"], saved.get("shard_index")) == (config.shard_count, config.shard_index):
            return
        drop = state.get("drop_remainder", self.drop_remainder)
        why = _steps_differ(self._source, state, drop is True)
        if why is not None:
            raise ValueError(
                f"this state was saved by host {saved.get('shard_index')!r} of "
                f"{saved['shard_count']}, and {why}: a host with fewer batches starts the next "
                "epoch while the others finish this one, so no one host's state says what the "
                f"others read, and restoring it on host {config.shard_index} of "
                f"{config.shard_count} would read records twice or skip them. Restore each "
                "host's own state on that host; to restore one state on every host or on "
                "another host count, give every host the same number of batches per epoch "
                "(drop_remainder=True in ArrayRecordSourceConfig, or a batch_size with which "
                "the longer and shorter shares need as many batches)"
            )

    # -- resources -------------------------------------------------------------

    def close(self) -> None:
        """Stop the prefetch thread (waits for it) and close the source; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._finalizer()
        self._source.close()

    def __enter__(self) -> "Pipeline":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def from_source(source: ArrayRecordSourceModule, batch_size: int = 32, *,
                drop_remainder: bool = False, prefetch: int = 2,
                collate: Callable[[list[dict]], Any] | None = None,
                device_put: Any = None, stages: Sequence[Callable[[Any], Any]] | None = None,
                rngs: Any = None) -> Pipeline:
    """Batch a source, reading ahead on a background thread.

    ``from_source(source, 32, ...)`` is ``Pipeline(source=source,
    batch_size=32, ...)``; see :class:`Pipeline` for every argument, the
    batches and the errors.
    """
    return Pipeline(source=source, batch_size=batch_size, stages=stages, rngs=rngs,
                    drop_remainder=drop_remainder, prefetch=prefetch, collate=collate,
                    device_put=device_put)
