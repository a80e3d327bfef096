"""TFDS split strings to shard read instructions, as TFDS's ``splits.py``
reads them (``ReadInstruction``, ``_str_to_relative_instruction``,
``_rel_to_abs_instr``, ``_pct_to_abs_closest``):

* ``"train"``, ``"train+test"``, ``"all"`` (every split, in
  ``dataset_info.json``'s order);
* ``"train[a:b]"`` with record counts (negative from the end),
  percentages (``"train[:80%]"``, ``"train[-10%:]"``, rounded to the
  nearest record, ties to even, as Python's ``round``) or shards
  (``"train[1shard:3shard]"``; ``"train[2shard]"`` is one shard);
* ``"train[:50%](pct1_dropremainder)"``: percentages as multiples of 1%
  of the split (``len(5%) == 5 * len(1%)``; splits of fewer than 100
  records refused).

A bound past the split's size raises ``ValueError``, as in TFDS.
"""

from __future__ import annotations

import math
import re
from typing import NamedTuple

__all__ = ["SplitInfo", "Instruction", "parse_split", "file_instructions"]

_SUB = re.compile(r"^\s*(?P<name>[\w-]+)(\[(?P<sel>[\d\w%:.-]+)\])?(\((?P<rounding>[\w]+)\))?\s*$")
_BOUND = re.compile(r"^\s*((?P<val>-?[\d_.]+)(?P<unit>%|shard)?)?\s*$")


class SplitInfo(NamedTuple):
    """One split of ``dataset_info.json``: ``name``, records per shard
    (``shard_lengths``), and the shards' file names in order."""

    name: str
    shard_lengths: tuple
    filenames: tuple

    @property
    def num_examples(self) -> int:
        return sum(self.shard_lengths)


class Instruction(NamedTuple):
    """Records ``[start, stop)`` of one split."""

    split: str
    start: int
    stop: int


def _pct(boundary: float, n: int, rounding: str) -> int:
    if rounding == "pct1_dropremainder":
        if n < 100:
            raise ValueError('"pct1_dropremainder" rounding on a split of fewer than 100 records is always empty')
        return int(boundary * math.trunc(n / 100.0))
    return int(round(boundary * n / 100.0))


def _bound(text: str, spec: str):
    m = _BOUND.match(text)
    if not m:
        raise ValueError(f"unrecognized split {spec!r}: bad bound {text!r}")
    if m["val"] is None:
        return None, None
    return m["val"].replace("_", ""), m["unit"]


def _one(sub: str, spec: str, splits: dict) -> list[Instruction]:
    m = _SUB.match(sub)
    if not m:
        raise ValueError(f"unrecognized split {spec!r} (see https://www.tensorflow.org/datasets/splits)")
    name, sel, rounding = m["name"], m["sel"], m["rounding"] or "closest"
    if rounding not in ("closest", "pct1_dropremainder"):
        raise ValueError(f"split {spec!r}: rounding must be 'closest' or 'pct1_dropremainder', got {rounding!r}")
    if name == "all":
        if sel:
            raise ValueError(f"split {spec!r}: 'all' cannot be sliced")
        return [Instruction(s.name, 0, s.num_examples) for s in splits.values()]
    if name not in splits:
        raise ValueError(f"unknown split {name!r} in {spec!r}; the dataset has {list(splits)}")
    info = splits[name]
    n = info.num_examples
    if sel is None:
        return [Instruction(name, 0, n)]
    parts = sel.split(":")
    if len(parts) == 1:
        val, unit = _bound(parts[0], spec)
        if unit != "shard" or val is None:
            raise ValueError(f"split {spec!r}: a single index needs the shard unit ('{name}[2shard]')")
        start, stop, unit = int(val), int(val) + 1, "shard"
    elif len(parts) == 2:
        (a, ua), (b, ub) = _bound(parts[0], spec), _bound(parts[1], spec)
        if a is None and b is None:
            raise ValueError(f"unrecognized split {spec!r}")
        if ua and ub and ua != ub:
            raise ValueError(f"split {spec!r} mixes units")
        unit = ua or ub or "abs"
        conv = float if unit == "%" else int
        start = None if a is None else conv(a)
        stop = None if b is None else conv(b)
    else:
        raise ValueError(f"unrecognized split {spec!r}")
    if unit == "%":
        if abs(start or 0) > 100 or abs(stop or 0) > 100:
            raise ValueError(f"split {spec!r}: percent bounds must be within [-100, 100]")
        start = 0 if start is None else _pct(start, n, rounding)
        stop = n if stop is None else _pct(stop, n, rounding)
    elif unit == "shard":
        lengths = info.shard_lengths
        start = 0 if start is None else sum(lengths[:start])
        if stop is not None and stop <= 0:
            stop = len(lengths) + stop
        stop = n if stop is None else sum(lengths[:stop])
    else:
        start = 0 if start is None else start
        stop = n if stop is None else stop
    if abs(start) > n or abs(stop) > n:
        raise ValueError(f"split {spec!r}: slice [{start}:{stop}] is outside the {n} records of {name!r}")
    start = start + n if start < 0 else start
    stop = stop + n if stop < 0 else stop
    return [Instruction(name, start, max(start, stop))]


def parse_split(spec: str, splits: dict) -> list[Instruction]:
    """The record ranges a split string selects, in order.

    Args:
        spec: e.g. ``"train[:80%]+test"``.
        splits: ``{name: SplitInfo}`` of the dataset.

    Raises:
        ValueError: a malformed string, an unknown split, a bound outside
            the split.
    """
    subs = re.split(r"\s*\+\s*", spec.strip())
    return [ins for sub in subs for ins in _one(sub, spec, splits)]


def file_instructions(instructions, splits: dict) -> list[tuple[str, int, int]]:
    """``(filename, start, stop)`` per shard read, in order: the local
    record range of each shard the instructions touch (shards they do not
    touch are left out)."""
    out = []
    for ins in instructions:
        info = splits[ins.split]
        offset = 0
        for filename, length in zip(info.filenames, info.shard_lengths):
            a, b = max(ins.start, offset), min(ins.stop, offset + length)
            if a < b:
                out.append((filename, a - offset, b - offset))
            offset += length
    return out
