"""``from_source``: batches from an ``ArrayRecordSourceModule``, prefetched.

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
    the Pipeline (so the Pipeline can be garbage-collected while it runs)."""

    def __init__(self, source: ArrayRecordSourceModule, batch_size: int, drop_remainder: bool,
                 collate, transforms: tuple, device_put):
        self.source = source
        self.batch_size = batch_size
        self.drop_remainder = drop_remainder
        self.collate = collate
        self.transforms = transforms
        self.device_put = device_put
        self.length = len(source)
        self.num_epochs = source.config.num_epochs

    def plan(self, epoch: int, position: int):
        """``(epoch, position, count)`` of the batch after cursor ``(epoch,
        position)``, or ``None`` when every epoch is done."""
        while True:
            if self.num_epochs != -1 and epoch >= self.num_epochs:
                return None
            remaining = self.length - position
            if remaining <= 0 or (self.drop_remainder and remaining < self.batch_size):
                epoch, position = epoch + 1, 0
                continue
            return epoch, position, min(self.batch_size, remaining)

    def build(self, epoch: int, position: int, count: int):
        records = self.source.read_records(epoch, position, count)
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

    def __init__(self, builder: _Builder, cursor: tuple[int, int], depth: int):
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

    def _run(self, builder: _Builder, cursor: tuple[int, int]) -> None:
        epoch, position = cursor
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


class Pipeline:
    """Batches of a source; made by :func:`from_source`.

    Iterating yields one batch per step (see :func:`from_source` for its
    structure) until the source's ``num_epochs`` are done (never, for
    ``-1``). The pipeline is its own iterator: a new ``for`` loop continues
    where the last one stopped.
    """

    def __init__(self, source: ArrayRecordSourceModule, batch_size: int, drop_remainder: bool,
                 prefetch: int, collate, device_put):
        self._source = source
        self.batch_size = batch_size
        self.drop_remainder = drop_remainder
        self.prefetch = prefetch
        self._collate = collate
        self._device_put = device_put
        self._transforms: list[Callable] = []
        self._holder: list[_Worker] = []  # the running worker, if any
        self._cursor: tuple[int, int] | None = None  # source cursor the worker continues from
        self._finished = False
        self._closed = False
        self._finalizer = weakref.finalize(self, _stop_worker, self._holder)

    # -- building --------------------------------------------------------------

    @property
    def source(self) -> ArrayRecordSourceModule:
        """The source whose position this pipeline advances."""
        return self._source

    def add(self, fn: Callable[[Any], Any]) -> "Pipeline":
        """Append a batch transform ``fn(batch) -> batch``; returns ``self``.

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

    def _builder(self) -> _Builder:
        return _Builder(self._source, self.batch_size, self.drop_remainder, self._collate,
                        tuple(self._transforms), self._device_put)

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
        cursor = (source.epoch.get_value(), source.position.get_value())
        if cursor != self._cursor:
            # First call, a set_state, or someone moved the source directly:
            # batches prefetched from another position are not the next ones.
            self._restart()
            self._cursor = cursor
        if self._finished:
            raise StopIteration
        if self.prefetch == 0:
            builder = self._builder()
            step = builder.plan(*cursor)
            if step is None:
                self._finished = True
                raise StopIteration
            epoch, position, count = step
            batch = builder.build(epoch, position, count)
            item = ("batch", batch, (epoch, position + count))
        else:
            if not self._holder:
                self._holder.append(_Worker(self._builder(), cursor, self.prefetch))
            item = self._holder[0].get()
        kind = item[0]
        if kind == "end":
            self._finished = True
            _stop_worker(self._holder)
            raise StopIteration
        if kind == "error":
            self._restart()
            raise item[1]
        _, batch, after = item
        source._set_cursor(*after)
        self._cursor = after
        return batch

    # -- state -----------------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        """JSON-serialisable state naming the next batch the caller has not seen.

        Returns:
            ``{"format", "batch_size", "source"}`` with ``source`` the
            source's :meth:`~ArrayRecordSourceModule.get_state` as of the last
            batch yielded (batches prefetched beyond it are not counted).
        """
        return {
            "format": PIPELINE_STATE_FORMAT,
            "batch_size": self.batch_size,
            "source": self._source.get_state(),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`get_state`: the next batch is the first unseen one.

        A different ``batch_size`` is allowed (positions count elements, not
        batches); batches then start at the first unseen element.

        Raises:
            ValueError: not a pipeline state, or the source refuses it (see
                :meth:`ArrayRecordSourceModule.set_state`).
        """
        if not isinstance(state, dict) or state.get("format") != PIPELINE_STATE_FORMAT:
            got = state.get("format") if isinstance(state, dict) else type(state).__name__
            raise ValueError(
                f"not a pipeline state (format {got!r}, expected {PIPELINE_STATE_FORMAT!r})"
            )
        self._restart()
        self._source.set_state(state["source"])

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
                device_put: Any = None) -> Pipeline:
    """Batch a source, reading ahead on a background thread.

    Args:
        source: an :class:`ArrayRecordSourceModule`; the pipeline advances its
            ``epoch``/``position`` as batches are yielded, and closes it in
            :meth:`Pipeline.close`.
        batch_size: elements per batch, ``>= 1``.
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

    Returns:
        A :class:`Pipeline`. With the default collate each batch is a
        ``dict`` of arrays of shape ``(b, *field_shape)``, ``b`` =
        ``batch_size`` except for a short last batch of an epoch; with
        ``decode=None`` and fixed-size records, ``batch["data"]`` is ``uint8``
        of shape ``(b, record_bytes)``.

    Raises:
        ValueError: ``batch_size < 1``, ``prefetch < 0``, a non-callable
            ``collate``, or ``drop_remainder`` with fewer elements per epoch
            than ``batch_size`` (it would never yield a batch).
        TypeError: ``source`` is not an :class:`ArrayRecordSourceModule`.
    """
    if not isinstance(source, ArrayRecordSourceModule):
        raise TypeError(f"source must be an ArrayRecordSourceModule, got {type(source).__name__}")
    for name, value, low in (("batch_size", batch_size, 1), ("prefetch", prefetch, 0)):
        try:
            ok = not isinstance(value, bool) and operator.index(value) >= low
        except TypeError:
            ok = False
        if not ok:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if collate is not None and not callable(collate):
        raise ValueError(f"collate must be callable, got {type(collate).__name__}")
    if not isinstance(drop_remainder, bool):
        raise ValueError(f"drop_remainder must be a bool, got {drop_remainder!r}")
    if drop_remainder and len(source) < batch_size:
        raise ValueError(
            f"drop_remainder=True with batch_size {batch_size} but only {len(source)} elements "
            "per epoch on this host: no batch would ever be yielded"
        )
    if device_put is False:
        device_put = None
    return Pipeline(source, int(batch_size), drop_remainder, int(prefetch), collate, device_put)
