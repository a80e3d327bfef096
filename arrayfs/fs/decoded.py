"""The mount's ``.decoded/`` directory: every record's features as files.

A :class:`~arrayfs.fs.view.Subtree` (made by :func:`decoded_subtree` for
one :class:`~arrayfs.display.RecordDisplay`) under the root::

    /.decoded/                  a directory and a JSON file per record
    /.decoded/<name>.json       the record as ``arrayfs cat --decode`` prints it
    /.decoded/<name>/           one file per feature (see
                                :mod:`arrayfs.encoding.files`): image.png with
                                the stored bytes, label, label.name, ...

``<name>`` is the record's name in the root (its global index, padded as
there; the unpadded form resolves too). Nothing is decoded to list
``.decoded/`` or to look up ``<name>/``: the record is decoded when
something inside ``<name>/``, or ``<name>.json``, is looked up, listed or
read. So that every size the kernel sees is exact, ``.decoded/`` itself is
listed without attributes (``ls`` costs nothing per record; ``ls -l``
looks up each entry, which decodes the record for its ``.json`` size).

Each process keeps the decoded records it served in an LRU of its own
(:data:`DECODED_CACHE_BYTES`, keyed by the record's inode, whose contents
never change): worker processes decode independently. A record that cannot
be decoded (or holds a value no file can show) is ``EIO`` on everything
below ``<name>/`` and on ``<name>.json``, with one log line naming the
shard and the record; the record itself, at the root, reads as ever.

Inode numbers (within the subtree's ``2**56``): 0 is ``.decoded/``; a
record's nodes are ``slot << 36 | local << bits | part``, where ``slot``
(20 bits) stands for the shard (its serial in the view, which numbers the
shards in the order it first saw them, wrapping after 1,048,575), ``local``
is the record's index in its file, ``bits`` is ``36`` minus the bits of the
shard's largest index, and ``part`` numbers the record's nodes: 0
``<name>/``, 1 ``<name>.json``, then its files and directories depth first
in listing order. A record with more nodes than ``2**bits`` (65,536 for a
shard of a million records, 512 for one of 100 million) is ``EIO``, and so
are the decoded files of two shards of one snapshot whose serials wrapped
onto one slot (a watching mount that saw more than a million shards come
and go: remount).
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from bisect import bisect_right
from typing import NamedTuple

from ..storage.lru import BoundedLRU
from .view import RECORD, ROOT, SUBTREE, Attr, Node, Subtree

__all__ = ["decoded_subtree", "DecodedTree", "DecodedRecordError", "DECODED_NAME", "DECODED_CACHE_BYTES"]

log = logging.getLogger("arrayfs.fs")

DECODED_NAME = ".decoded"
#: Decoded records kept per process (bytes of their files and JSON).
DECODED_CACHE_BYTES = 32 << 20

_DIR_MODE = stat.S_IFDIR | 0o555
_FILE_MODE = stat.S_IFREG | 0o444
_SLOT_SHIFT = 36
_SLOT_SPAN = (1 << 20) - 1
_REST_MASK = (1 << _SLOT_SHIFT) - 1
_TREE_MASK = (1 << 56) - 1
_ENTRY_BYTES = 96  # bookkeeping counted per node in the cache bound
_DIR, _JSON = 0, 1


class DecodedRecordError(ValueError):
    """A record's decoded view cannot be made: the message says why (the
    decoder's :class:`~arrayfs.encoding.RecordDecodeError`, a value no
    file can show, too many files)."""


class _Decoded(NamedTuple):
    """A record's JSON (``value``: ``bytes``) or its files (``value``: a
    list, ``value[0]`` the record's directory, ``value[part]`` for parts
    from 2 a file's ``bytes`` or a directory's ``dict`` name -> part), or
    the ``error`` that kept it from being made."""

    value: object
    error: str | None = None


def _flatten(tree: dict) -> tuple[list, int]:
    """The list of :class:`_Decoded` for a record's files, and its bytes."""
    items: list = [None, None]
    nbytes = 2 * _ENTRY_BYTES

    def walk(directory: dict) -> dict:
        nonlocal nbytes
        parts: dict = {}
        for name, value in directory.items():
            part = len(items)
            items.append(None)
            parts[name] = part
            items[part] = walk(value) if isinstance(value, dict) else value
            nbytes += _ENTRY_BYTES + len(name) + (0 if isinstance(value, dict) else len(value))
        return parts

    items[_DIR] = walk(tree)
    return items, nbytes


class DecodedTree(Subtree):
    """``.decoded/`` of one snapshot (see the module docstring). A class
    made by :func:`decoded_subtree` sets :attr:`display` and the cache
    bound; the view makes one instance per snapshot."""

    name = DECODED_NAME
    display = None
    cache_bytes = DECODED_CACHE_BYTES
    _cache: BoundedLRU | None = None
    _cache_pid = 0

    def __init__(self, snap, position, ino_base):
        super().__init__(snap, position, ino_base)
        self._firsts = snap.firsts.tolist()
        self._slots = tuple(snap.shard_serial(k) % _SLOT_SPAN + 1 for k in range(len(snap.shards)))
        self._by_slot = {}
        for k, slot in enumerate(self._slots):
            self._by_slot[slot] = k if slot not in self._by_slot else -1  # -1: two shards, so neither
        self._bits = tuple(_SLOT_SHIFT - max(1, (s.start + s.num_records - 1).bit_length()) for s in snap.shards)
        for k, bits in enumerate(self._bits):
            if bits < 2:  # more than 2**34 records in the file: no room for a record's parts
                self._by_slot[self._slots[k]] = -1

    # -- the decoded records ---------------------------------------------------------

    @classmethod
    def _lru(cls) -> BoundedLRU:
        # One cache per process: a forked worker starts its own (no lock
        # inherited in whatever state the parent's was).
        pid = os.getpid()
        if cls._cache is None or cls._cache_pid != pid:
            cls._cache, cls._cache_pid = BoundedLRU(cls.cache_bytes, keep_newest=True), pid
        return cls._cache

    def _record_node(self, k: int, local: int) -> Node:
        return Node(RECORD, k, self._firsts[k] + local - self.snap.shards[k].start, local)

    def _decoded(self, node: Node, which: int):
        """The JSON (``which`` 1) or the files (0: :func:`_flatten`'s list)
        of ``node``'s record, each made when first asked for. Raises
        :class:`DecodedRecordError` (cached: a record's bytes never change),
        or what reading the record raises (:class:`ArrayRecordError`,
        ``OSError``: not cached, the shard may come back)."""
        k, local = node.index, node.local
        key = (self.snap.record_ino(k, local), which)
        lru = self._lru()
        found = lru.get(key)
        if found is None:
            record = self.snap.read(self._record_node(k, local))
            try:
                if which == _JSON:
                    value = self.display.json_bytes(record)
                    found, nbytes = _Decoded(value), len(value) + _ENTRY_BYTES
                else:
                    items, nbytes = _flatten(self.display.tree(record))
                    found = _Decoded(items)
                    if len(items) > 1 << self._bits[k]:
                        found = _Decoded(None, f"{len(items)} decoded files are more than this mount numbers for "
                                               f"a record of this shard ({1 << self._bits[k]})")
            except Exception as e:  # noqa: BLE001 - any value of a record's bytes: EIO, never a dead daemon
                nbytes = _ENTRY_BYTES
                found = _Decoded(None, str(e) if isinstance(e, ValueError) else f"{type(e).__name__}: {e}")
            lru.put(key, found, nbytes)
        if found.error is not None:
            raise DecodedRecordError(found.error)
        return found.value

    def _items(self, node: Node) -> list:
        return self._decoded(node, _DIR)

    # -- nodes --------------------------------------------------------------------------

    def root(self) -> Node:
        return Node(SUBTREE, self.position)

    def _node(self, k: int, local: int, part: int) -> Node:
        return Node(SUBTREE, self.position, k, local, part)

    def _ino(self, node: Node) -> int:
        if node.index < 0:
            return self.ino_base
        k = node.index
        return self.ino_base | self._slots[k] << _SLOT_SHIFT | node.local << self._bits[k] | node.part

    def _name(self, k: int, local: int) -> str:
        return str(self._firsts[k] + local - self.snap.shards[k].start).zfill(self.snap.width)

    def lookup(self, parent: Node, name: str) -> Node:
        if parent.index < 0:
            base, part = (name[:-5], _JSON) if name.endswith(".json") else (name, _DIR)
            try:
                rec = self.snap.lookup(Node(ROOT), base)
            except FileNotFoundError:
                rec = None
            if rec is None or rec.kind != RECORD:
                raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), name)
            if self._by_slot[self._slots[rec.shard]] != rec.shard:
                raise DecodedRecordError("this mount cannot number the decoded files of this shard (more than a "
                                         "million shards seen, or more than 2**34 records in it): remount")
            return self._node(rec.shard, rec.local, part)
        if parent.part == _JSON:
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), name)
        directory = self._items(parent)[parent.part]
        if not isinstance(directory, dict):
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), name)
        part = directory.get(name)
        if part is None:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), name)
        return self._node(parent.index, parent.local, part)

    def node_of_ino(self, ino: int) -> Node | None:
        n = ino & _TREE_MASK
        if n == 0:
            return self.root()
        k = self._by_slot.get(n >> _SLOT_SHIFT, -1)
        if k < 0:
            return None
        bits = self._bits[k]
        rest = n & _REST_MASK
        local, part = rest >> bits, rest & ((1 << bits) - 1)
        info = self.snap.shards[k]
        if not info.start <= local < info.start + info.num_records:
            return None
        return self._node(k, local, part)

    def is_dir(self, node: Node) -> bool:
        if node.index < 0 or node.part == _DIR:
            return True
        return node.part != _JSON and isinstance(self._item(node), dict)

    def _item(self, node: Node):
        if node.part == _JSON:
            return self._decoded(node, _JSON)
        items = self._items(node)
        if node.part >= len(items):
            raise FileNotFoundError(errno.ENOENT, "no such decoded file")
        return items[node.part]

    # -- attributes, listings, contents -----------------------------------------------

    def attr(self, node: Node) -> Attr:
        if node.index < 0:
            return Attr(_DIR_MODE, self.ino_base, 2 + self.snap.num_records, 0, self.snap.mtime_ns)
        mtime = self.snap.shards[node.index].mtime_ns
        ino = self._ino(node)
        if node.part == _DIR:
            # Link count 1: subdirectories not counted (as btrfs does), so
            # that looking the directory up needs no decoding.
            return Attr(_DIR_MODE, ino, 1, 0, mtime)
        item = self._item(node)
        if isinstance(item, dict):
            return Attr(_DIR_MODE, ino, 2 + sum(isinstance(self._items(node)[p], dict) for p in item.values()), 0,
                        mtime)
        return Attr(_FILE_MODE, ino, 1, len(item), mtime)

    def listing_attrs(self, node: Node) -> bool:
        # .decoded/ is listed without attributes: a .json's size needs its
        # record decoded, which a listing must not do.
        return node.index >= 0

    def readdir(self, node: Node, offset: int, sizes: bool):
        if node.index < 0:
            yield from self._records(offset, sizes)
            return
        directory = self._item(node) if node.part != _JSON else None
        if not isinstance(directory, dict):
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
        names = list(directory)
        for j in range(offset - 2, len(names)):
            name = names[j]
            yield name, self.attr(self._node(node.index, node.local, directory[name])), j + 3

    def _records(self, offset: int, sizes: bool):
        """Entries of ``.decoded/`` from ``offset``: per record (global
        order) its directory, then its JSON. Sizes only when asked for
        (each decodes its record)."""
        snap = self.snap
        start = (offset - 2) // 2
        if start >= snap.num_records:
            return
        nxt = offset + 1
        which = (offset - 2) % 2
        for k in range(bisect_right(self._firsts, start) - 1, len(snap.shards)):
            info = snap.shards[k]
            first = self._firsts[k]
            delta = info.start - first
            mtime = info.mtime_ns
            for g in range(max(start, first), first + info.num_records):
                local = g + delta
                name = self._name(k, local)
                if which == _DIR:
                    yield name, Attr(_DIR_MODE, self._ino(self._node(k, local, _DIR)), 1, 0, mtime), nxt
                    nxt += 1
                node = self._node(k, local, _JSON)
                size = len(self._decoded(node, _JSON)) if sizes else 0
                yield f"{name}.json", Attr(_FILE_MODE, self._ino(node), 1, size, mtime), nxt
                nxt += 1
                which = _DIR

    def read(self, node: Node) -> bytes:
        if self.is_dir(node):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
        return self._item(node)

    def describe(self, node: Node) -> str:
        if node.index < 0:
            return DECODED_NAME
        k = node.index
        return (f"{DECODED_NAME}/{self._name(k, node.local)} of record {self._record_node(k, node.local).index} = "
                f"{self.snap.shards[k].path} record {node.local}")


def decoded_subtree(display, *, cache_bytes: int = DECODED_CACHE_BYTES) -> type:
    """A :class:`DecodedTree` class showing records by ``display`` (an
    :class:`arrayfs.display.RecordDisplay`), keeping at most
    ``cache_bytes`` of decoded records per process; pass it to
    :class:`~arrayfs.fs.view.FsView` in ``subtrees``."""
    return type("DecodedTree", (DecodedTree,), {"display": display, "cache_bytes": int(cache_bytes)})

