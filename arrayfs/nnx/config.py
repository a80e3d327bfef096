"""Configuration of :class:`~arrayfs.nnx.source.ArrayRecordSourceModule`.

Field names follow datarax's ``ArrayRecordSourceConfig`` (``seed``,
``num_epochs``, ``shuffle_files``) and Grain's ``ShardOptions``
(``shard_index``, ``shard_count``, ``drop_remainder``), so code moving from
either keeps its spelling.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from .decode import DATASET_DECODERS, DECODERS

__all__ = ["ArrayRecordSourceConfig"]

_U64 = 1 << 64


def _is_int(value: Any) -> bool:
    # bool is an int subclass; True as a seed or an epoch count is a typo.
    return isinstance(value, int) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class ArrayRecordSourceConfig:
    """How an :class:`ArrayRecordSourceModule` orders, splits and decodes records.

    Attributes:
        seed: shuffle seed, integer in ``[0, 2**64)``. Every host of a job must
            use the same seed: the hosts split one global order per epoch.
            Epoch ``e`` uses the order keyed by ``(seed, e)``; distinct pairs
            give independent orders (unlike ``seed + e``; see
            :mod:`arrayfs.nnx.shuffle`).
        num_epochs: epochs to iterate, ``-1`` for no end, else ``>= 1``.
            Not part of the order: a run restored with a larger value just
            goes on for longer.
        shuffle_files: shuffle all records globally, afresh each epoch (the
            name datarax users know; despite it, records and not only files
            are shuffled). ``False`` reads in global (concatenated) order.
        shard_index: this host's share of each epoch, in
            ``[0, shard_count)``; ``None`` means ``jax.process_index()`` when
            the module is built.
        shard_count: number of hosts splitting each epoch, ``>= 1``; ``None``
            means ``jax.process_count()``. Give both or neither. A checkpoint
            taken with another ``shard_count`` still restores (the rest of
            its epoch is split among the new hosts; see
            :mod:`arrayfs.nnx.order`).
        drop_remainder: if ``True``, every host gets ``N // shard_count``
            elements per epoch (equal step counts; up to
            ``shard_count - 1`` elements of each epoch's order are skipped,
            different ones each epoch when shuffling). If ``False``, the first
            ``N % shard_count`` hosts get one element more (Grain's
            ``even_split``). An epoch restored on another host count drops
            up to ``shard_count - 1`` more of what was left, so that the new
            hosts' shares are equal too; no element is read twice.
        decode: ``None`` (``{"data": uint8 array}``), ``"msgpack"``,
            ``"json"``, ``"npy"``, ``"npz"``, ``"example"`` (a
            ``tf.train.Example`` -> ``{feature: 1-D array}``), ``"tfds"``
            (an Example decoded by the ``features.json`` beside the shards,
            to what ``tfds.data_source`` returns; see :mod:`arrayfs.tfds`),
            or a callable ``bytes -> dict of arrays``; see
            :mod:`arrayfs.encoding`.
        verify: passed to the dataset when the module opens paths: check
            chunk hashes on read (slower, catches corruption).

    Raises:
        ValueError: at construction, for any value outside the ranges above
            or of the wrong type.
    """

    seed: int = 42
    num_epochs: int = -1
    shuffle_files: bool = False
    shard_index: int | None = None
    shard_count: int | None = None
    drop_remainder: bool = False
    decode: str | Callable[[bytes], dict] | None = None
    verify: bool = True

    def __post_init__(self) -> None:
        if not _is_int(self.seed) or not 0 <= self.seed < _U64:
            raise ValueError(f"seed must be an integer in [0, 2**64), got {self.seed!r}")
        if not _is_int(self.num_epochs) or not (self.num_epochs == -1 or self.num_epochs >= 1):
            raise ValueError(
                f"num_epochs must be -1 (no end) or an integer >= 1, got {self.num_epochs!r}"
            )
        for name in ("shuffle_files", "drop_remainder", "verify"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")
        if (self.shard_index is None) != (self.shard_count is None):
            raise ValueError(
                "give both shard_index and shard_count, or neither (then they come from "
                f"jax.process_index()/process_count()); got shard_index={self.shard_index!r}, "
                f"shard_count={self.shard_count!r}"
            )
        if self.shard_count is not None:
            if not _is_int(self.shard_count) or self.shard_count < 1:
                raise ValueError(f"shard_count must be an integer >= 1, got {self.shard_count!r}")
            if not _is_int(self.shard_index) or not 0 <= self.shard_index < self.shard_count:
                raise ValueError(
                    f"shard_index must be an integer in [0, {self.shard_count}), "
                    f"got {self.shard_index!r}"
                )
        names = [*DECODERS, *DATASET_DECODERS]
        if not (self.decode is None or callable(self.decode) or self.decode in names):
            raise ValueError(
                f"decode must be None, a callable or one of {sorted(names)}, "
                f"got {self.decode!r}"
            )

    def resolved(self) -> "ArrayRecordSourceConfig":
        """This config with ``shard_index``/``shard_count`` filled in from JAX.

        Returns ``self`` when both are set; otherwise a copy with
        ``jax.process_index()`` and ``jax.process_count()`` (imports JAX).
        """
        if self.shard_count is not None:
            return self
        import jax

        return dataclasses.replace(
            self, shard_index=int(jax.process_index()), shard_count=int(jax.process_count())
        )
