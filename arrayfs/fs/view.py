"""The filesystem view of a dataset: names, attributes, listings, contents.

Plain Python (no FUSE): the core (:mod:`arrayfs.fs.core`) serves it, and
the tests call it directly. The layout (``/<global index>``,
``/.arrayfs.json``, ``/.shards/<shard>/<local index>``, a
:class:`Subtree` plugged in under the root) and the attributes are those
of docs/mounting.md ("Layout"). Every other name (``-1``, ``abc``,
``00x``, an index ``>= N``, another padding, ``..`` tricks) is ``ENOENT``:
names never reach the host file system.

Inode numbers (what libfuse 3 addresses files by:
:meth:`ViewSnapshot.node_of_ino`) derive from the order a shard was first
seen and the record's index in its file, so an inode's contents never
change: only *names* change meaning on a refresh. A :class:`ViewSnapshot`
is immutable; :meth:`FsView.refresh` installs a new one and returns a
:class:`ViewChange` (the names whose meaning changed).
"""

from __future__ import annotations

import bisect
import errno
import itertools
import json
import logging
import os
import stat
import threading
import time
from typing import Iterator, NamedTuple

import numpy as np

from ..dataset import ArrayRecordDataSource, DatasetSnapshot
from ..encoding.files import MAX_NAME, fit_name
from ..errors import ArrayRecordError

__all__ = ["FsView", "ViewSnapshot", "Subtree", "ShardKey", "ViewChange", "Node", "Attr", "DirBatch", "st_blocks",
           "ROOT", "SHARDS", "SHARD_DIR", "SUMMARY", "RECORD", "SUBTREE", "SUMMARY_NAME", "SHARDS_NAME"]

log = logging.getLogger("arrayfs.fs")

SUMMARY_NAME = ".arrayfs.json"
SHARDS_NAME = ".shards"

# Node kinds.
ROOT, SHARDS, SHARD_DIR, SUMMARY, RECORD, SUBTREE = range(6)

# Inode numbers. Fixed ones for the fixed names; a directory per shard at
# _SHARD_DIR_INO + serial; records at (serial + 1) << _RECORD_SHIFT | local,
# which leaves 40 bits (10^12 records) per file and 2^23 shard serials
# before the numbers wrap (then collisions are possible, never errors).
# Inodes with bit 63 set: the summary's, _SUMMARY_INO | generation, and
# subtree t's, _SUMMARY_INO | (t + 1) << _TREE_SHIFT | n.
ROOT_INO, SHARDS_INO = 1, 2
_SUMMARY_INO = 1 << 63
_SHARD_DIR_INO = 16
_RECORD_SHIFT = 40
_LOCAL_MASK = (1 << _RECORD_SHIFT) - 1
_SERIAL_MASK = (1 << 23) - 1
_TREE_SHIFT = 56
# Record sizes kept per snapshot: blocks of 2**_SIZE_BLOCK records of
# one-record chunks, or a chunk's records; at most _SIZE_BLOCKS blocks.
_SIZE_BLOCK = 12
_SIZE_BLOCKS = 256

_DIR_MODE = stat.S_IFDIR | 0o555
_FILE_MODE = stat.S_IFREG | 0o444
_MAX_NAME = MAX_NAME
# st_blksize of records: large, so that ``cat`` and ``cp`` read big records
# in big requests (coreutils size their buffer from it).
_BLKSIZE = 1 << 20


class Node(NamedTuple):
    """What a path names.

    ``kind`` is one of ``ROOT, SHARDS, SHARD_DIR, SUMMARY, RECORD,
    SUBTREE``; ``shard`` the shard position in the snapshot (``SHARD_DIR``,
    ``RECORD``; a :class:`Subtree`'s position for ``SUBTREE``; else -1);
    ``index`` the global record index (``RECORD``; else -1); ``local`` the
    record's index in its file (``RECORD``; else -1); ``part``: free for a
    subtree.
    """

    kind: int
    shard: int = -1
    index: int = -1
    local: int = -1
    part: int = -1


class ShardKey(NamedTuple):
    """What makes two snapshots' shards the same shard: the file's identity
    (``st_dev``, ``st_ino``, size, mtime; size and ETag for an object) and
    the slice of it used."""

    path: str
    start: int
    num_records: int
    identity: tuple


class Attr(NamedTuple):
    """``stat`` fields of a node: mode, inode, link count, size in bytes,
    modification time in ns, preferred I/O size in bytes."""

    mode: int
    ino: int
    nlink: int
    size: int
    mtime_ns: int
    blksize: int = 4096


def st_blocks(size):
    """``st_blocks`` of a file of ``size`` bytes: 512-byte units, rounded
    up (``size`` an ``int`` or an unsigned numpy array)."""
    return (size + 511) >> 9


def _enoent(path) -> FileNotFoundError:
    return FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)


def _parse_index(name: str, lo: int, hi: int, width: int) -> int:
    """The index that ``name`` names in ``[lo, hi)`` or -1: ASCII digits,
    either zero-padded to exactly ``width`` or without leading zeros."""
    n = len(name)
    if not 0 < n <= width or not (name.isascii() and name.isdigit()):
        return -1
    if n != width and n > 1 and name[0] == "0":
        return -1
    i = int(name)
    return i if lo <= i < hi else -1


def _unique_name(stem: str, tail: str, seen: set, k: int) -> str:
    """Shard ``k``'s directory name: ``stem + tail`` (``tail``: the slice,
    kept whole), else with ``@k`` appended, else ``@k~1``, ``@k~2``...,
    whichever is first not in ``seen``; ``stem`` is cut first so that the
    name fits in 255 bytes (the suffixes must survive the cut, or two
    shards with long names would get one name)."""
    for suffix in itertools.chain(("", f"@{k}"), (f"@{k}~{n}" for n in itertools.count(1))):
        end = tail + suffix
        name = fit_name(stem, _MAX_NAME - len(end.encode())) + end
        if name not in seen:
            return name
    raise AssertionError("unreachable")


class DirBatch(NamedTuple):
    """Consecutive directory entries sharing one attribute template.

    Entry ``j`` has name ``name_list()[j]``, inode ``inos[j]``, size
    ``sizes[j]`` (bytes; ``sizes`` is ``None`` when sizes were not asked
    for, or could not be read: a corrupt chunk, whose entries then go out
    without attributes) and next offset ``next_offset + j``; every other field is
    ``attr``'s. Records come in runs named by consecutive numbers:
    ``first_name`` (the first entry's number) zero-padded to ``width``
    digits, with ``names`` ``None`` (built on demand by :meth:`name_list`)
    and ``sizes`` an ``int64`` array; other entries have ``first_name`` -1.
    """

    names: list | None
    attr: Attr
    inos: object
    sizes: object
    next_offset: int
    first_name: int = -1
    width: int = 0

    def name_list(self) -> list:
        """The entries' names (``str``)."""
        if self.names is not None:
            return self.names
        fmt = f"%0{self.width}d"
        return [fmt % g for g in range(self.first_name, self.first_name + len(self.inos))]


class ViewChange(NamedTuple):
    """What a refresh changed, for invalidating the kernel's caches.

    ``fixed``: paths whose contents or attributes changed (directories,
    the summary, shard directories that vanished or appeared).
    ``records``: ``(lo, hi, widths)``: root names of global indices
    ``[lo, hi)`` in each padding width of ``widths`` (old and new), and
    unpadded, may now name another record or nothing (``hi`` is the old
    record count: larger names did not exist before).
    ``added``/``removed``/``pending``: from :meth:`ArrayRecordDataSource.refresh`.
    ``old_summary_ino``: the inode of the summary before the refresh (0: none).
    ``old_width``: the padding width of root names before the refresh.
    """

    fixed: tuple
    records: tuple
    added: tuple = ()
    removed: tuple = ()
    pending: tuple = ()
    old_summary_ino: int = 0
    old_width: int = 0

    def entries(self, records: bool = True) -> Iterator[tuple[int, str]]:
        """``(parent inode, name)`` of every directory entry whose meaning
        changed, for a daemon that invalidates by inode (libfuse's low-level
        API), generated lazily: record names first, then shard directory
        names, and the summary's name last, so that whoever reads the new
        summary resolves every record name anew. Entries below a vanished
        shard directory are left out: invalidating the directory's own
        entry drops them. ``records=False``: without the record names (a
        caller that knows which ones the kernel has)."""
        lo, hi, widths = self.records
        for i in range(lo, hi) if records else ():
            plain = str(i)
            yield ROOT_INO, plain
            for w in widths:
                if w > len(plain):
                    yield ROOT_INO, plain.zfill(w)
        prefix = f"/{SHARDS_NAME}/"
        for p in self.fixed:
            if p.startswith(prefix):
                yield SHARDS_INO, p[len(prefix):]
            elif p.count("/") == 1 and p not in ("/", f"/{SHARDS_NAME}", f"/{SUMMARY_NAME}"):
                yield ROOT_INO, p[1:]  # a subtree: its cached entries go with it
        if f"/{SUMMARY_NAME}" in self.fixed:
            yield ROOT_INO, SUMMARY_NAME

    def inodes(self) -> tuple:
        """Inodes whose attributes changed (the directories), to invalidate
        after :meth:`entries`."""
        return tuple(ino for ino, p in ((ROOT_INO, "/"), (SHARDS_INO, f"/{SHARDS_NAME}")) if p in self.fixed)


class Subtree:
    """A directory under the root whose nodes a plug-in defines (such as a
    ``.decoded/`` view of the records' features): the root lists and looks
    up :attr:`name`; everything below it is the subtree's.

    The view makes one per snapshot, ``cls(snap, position, ino_base)``.
    Its nodes are :class:`Node`\\s of kind :data:`SUBTREE` whose ``shard`` is
    ``position`` (the view dispatches on it); ``index``, ``local`` and
    ``part`` are the subtree's to use. Its inode numbers are ``ino_base | n``
    for ``n < 2**56``; like every inode of the mount, each must name
    contents that never change. Methods raise as the view's do
    (``FileNotFoundError``, ``NotADirectoryError``, ``IsADirectoryError``,
    :class:`ArrayRecordError`).
    """

    name = ""

    def __init__(self, snap: "ViewSnapshot", position: int, ino_base: int):
        self.snap, self.position, self.ino_base = snap, position, ino_base

    def root(self) -> "Node":  # the node of the subtree's own directory
        raise NotImplementedError

    def lookup(self, parent: "Node", name: str) -> "Node":
        raise NotImplementedError

    def attr(self, node: "Node") -> "Attr":
        raise NotImplementedError

    def readdir(self, node: "Node", offset: int, sizes: bool) -> Iterator[tuple]:
        """``(name, attr, next offset)`` of directory ``node``'s entries from
        ``offset`` on (``.`` and ``..`` are the view's: the first here is 2)."""
        raise NotImplementedError

    def read(self, node: "Node") -> bytes:
        raise NotImplementedError

    def node_of_ino(self, ino: int) -> "Node | None":
        raise NotImplementedError

    def is_dir(self, node: "Node") -> bool:
        """Whether ``node`` is a directory (the core checks ``open`` and
        ``opendir`` with it)."""
        return stat.S_ISDIR(self.attr(node).mode)

    def listing_attrs(self, node: "Node") -> bool:
        """Whether a listing of directory ``node`` may carry its entries'
        attributes (READDIRPLUS); ``False`` where exact sizes would cost
        too much per entry: the kernel then looks each entry up when it
        needs its attributes."""
        return True

    def describe(self, node: "Node") -> str:
        """What ``node`` is, for log lines (which record, which shard)."""
        return self.name


class ViewSnapshot:
    """An immutable filesystem view of one dataset snapshot.

    Args:
        snap: the :class:`arrayfs.dataset.DatasetSnapshot` read (held, so
            its shards stay readable while this view is used).
        serials: shard key -> serial number (inode numbering), shared by
            the snapshots of one :class:`FsView`; new keys are added.
        changed_ns: when this snapshot was installed by a refresh (ns since
            the epoch), 0 for the first one. Directories' mtime is the
            newest of this and the shards' mtimes.
        uid, gid: owner reported for every node.
        generation: number of this snapshot in its :class:`FsView` (0, 1, ...).
        subtrees: :class:`Subtree` classes plugged in under the root.

    Thread-safe: every method may be called from many threads.
    """

    def __init__(self, snap: DatasetSnapshot, serials: dict, *, changed_ns: int = 0, uid: int = 0, gid: int = 0,
                 generation: int = 0, subtrees=()):
        self.data = snap
        self.generation = generation
        self.uid = uid
        self.gid = gid
        self.shards = snap.shards
        n = len(snap)
        self.num_records = n
        self.width = len(str(n - 1)) if n > 1 else 1
        self.firsts = snap.firsts
        self._firsts = snap.firsts.tolist()
        self.keys = tuple(ShardKey(s.path, s.start, s.num_records, ident)
                          for s, ident in zip(snap.shards, snap.identities))
        self._serials = []
        for key in self.keys:
            if key not in serials:
                serials[key] = len(serials)
            self._serials.append(serials[key])
        self._rec_base = [((s + 1) & _SERIAL_MASK) << _RECORD_SHIFT for s in self._serials]
        # Inode -> shard position (records: by the bits above the local index).
        self._by_rec_slot = {((s + 1) & _SERIAL_MASK): k for k, s in enumerate(self._serials)}
        self._by_dir_ino = {_SHARD_DIR_INO + s: k for k, s in enumerate(self._serials)}
        self.summary_ino = _SUMMARY_INO | (generation & _LOCAL_MASK)
        self._mtimes = [s.mtime_ns for s in self.shards]
        self.mtime_ns = max([changed_ns, *self._mtimes])
        # Shard directory names: the file name, the slice when one is used,
        # and the position when a name would repeat.
        names, seen = [], set()
        for k, info in enumerate(self.shards):
            stem = os.path.basename(info.path) or info.path.replace("/", "_")
            tail = ""
            if info.start != 0 or info.num_records != snap.file(k).num_records:
                tail = f"[{info.start}:{info.start + info.num_records}]"
            name = _unique_name(stem, tail, seen, k)
            seen.add(name)
            names.append(name)
        self.shard_names = tuple(names)
        self._by_name = {name: k for k, name in enumerate(names)}
        self._local_width = tuple(
            len(str(info.start + info.num_records - 1)) if info.num_records > 1 else 1 for info in self.shards
        )
        self.subtrees = tuple(cls(self, t, _SUMMARY_INO | ((t + 1) << _TREE_SHIFT)) for t, cls in enumerate(subtrees))
        self._tree_by_name = {tree.name: tree for tree in self.subtrees}
        self._largest: dict = {}
        self._group1: dict = {}
        self._size_blocks: dict = {}
        # Shard -> chunks whose record sizes could not be read (logged once,
        # then listed without attributes instead of decoded again).
        self._bad_sizes: dict = {}
        self._summary_failed = False
        self._summary = None
        self._summary_lock = threading.Lock()

    # -- names ---------------------------------------------------------------

    def _shard_of(self, i: int) -> int:
        return bisect.bisect_right(self._firsts, i) - 1

    def lookup(self, parent: Node, name: str) -> Node:
        """The node that ``name`` names in directory ``parent`` (one path
        component). Raises ``FileNotFoundError`` (``ENOENT``) for a name that
        is not there, ``NotADirectoryError`` when ``parent`` is a file."""
        kind = parent.kind
        if kind == ROOT:
            i = _parse_index(name, 0, self.num_records, self.width)
            if i >= 0:
                k = self._shard_of(i)
                return Node(RECORD, k, i, i - self._firsts[k] + self.shards[k].start)
            if name == SUMMARY_NAME:
                return Node(SUMMARY)
            if name == SHARDS_NAME:
                return Node(SHARDS)
            tree = self._tree_by_name.get(name)
            if tree is not None:
                return tree.root()
        elif kind == SHARD_DIR:
            k = parent.shard
            info = self.shards[k]
            local = _parse_index(name, info.start, info.start + info.num_records, self._local_width[k])
            if local >= 0:
                return Node(RECORD, k, self._firsts[k] + local - info.start, local)
        elif kind == SHARDS:
            k = self._by_name.get(name, -1)
            if k >= 0:
                return Node(SHARD_DIR, k)
        elif kind == SUBTREE:
            return self.subtrees[parent.shard].lookup(parent, name)
        else:
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), name)
        raise _enoent(name)

    def resolve(self, path: str) -> Node:
        """The node ``path`` names (``"/"``-separated, absolute, as FUSE
        passes it). Raises ``FileNotFoundError`` (``ENOENT``) for anything
        else."""
        if path == "/":
            return Node(ROOT)
        if path[:1] != "/":
            raise _enoent(path)
        node = Node(ROOT)
        try:
            for name in path[1:].split("/"):
                node = self.lookup(node, name)
        except (FileNotFoundError, NotADirectoryError):
            raise _enoent(path) from None
        return node

    def node_of_ino(self, ino: int) -> Node | None:
        """The node whose inode number is ``ino`` in this snapshot, or
        ``None`` (a shard no longer here, a summary of another snapshot,
        a number never given out)."""
        if ino >= _SUMMARY_INO:
            t = ((ino >> _TREE_SHIFT) & 0x7F) - 1
            if t < 0:
                return Node(SUMMARY) if ino == self.summary_ino else None
            return self.subtrees[t].node_of_ino(ino) if t < len(self.subtrees) else None
        if ino >> _RECORD_SHIFT:
            k = self._by_rec_slot.get(ino >> _RECORD_SHIFT)
            if k is None:
                return None
            local = ino & _LOCAL_MASK
            info = self.shards[k]
            if not info.start <= local < info.start + info.num_records:
                return None
            return Node(RECORD, k, self._firsts[k] + local - info.start, local)
        if ino == ROOT_INO:
            return Node(ROOT)
        if ino == SHARDS_INO:
            return Node(SHARDS)
        k = self._by_dir_ino.get(ino)
        return None if k is None else Node(SHARD_DIR, k)

    def shard_path(self, k: int) -> str:
        """Path of shard ``k``'s directory in the mount."""
        return f"/{SHARDS_NAME}/{self.shard_names[k]}"

    # -- attributes ------------------------------------------------------------

    def shard_serial(self, k: int) -> int:
        """Shard ``k``'s serial number in its :class:`FsView`: the order in
        which the view first saw it (the same in every snapshot holding it;
        inode numbers derive from it)."""
        return self._serials[k]

    def record_ino(self, k: int, local: int) -> int:
        return self._rec_base[k] | local

    def record_size(self, k: int, local: int) -> int:
        """Size in bytes of file-local record ``local`` of shard ``k``.
        Sizes are fetched a block at a time and kept, bounded: a chunk's
        records (its sizes block is decoded once), or 4,096 records of
        one-record chunks (the footer has their sizes); a lookup then costs
        no call into the dataset."""
        f = self.data.file(k)
        if self._footer_sizes(k):
            block = local >> _SIZE_BLOCK
            lo = block << _SIZE_BLOCK
            hi = min(lo + (1 << _SIZE_BLOCK), f.num_records)
        else:
            block = -1 - f.chunk_of(local)
            lo, hi = f.chunk_records(-1 - block)
        sizes = self._size_blocks.get((k, block))
        if sizes is None:
            sizes = self.data.record_sizes(k, lo, hi)
            if len(self._size_blocks) >= _SIZE_BLOCKS:
                try:  # the oldest goes (another thread may have taken it)
                    del self._size_blocks[next(iter(self._size_blocks))]
                except (KeyError, RuntimeError):
                    pass
            self._size_blocks[(k, block)] = sizes
        return sizes.item(local - lo)

    def _footer_sizes(self, k: int) -> bool:
        g = self._group1.get(k)
        if g is None:
            g = self._group1[k] = self.data.file(k).group_size == 1
        return g

    def preload(self) -> None:
        """Decode every shard's chunk index now (footers of huge shards are
        otherwise decoded on first use): a process about to fork workers
        then shares the indexes with them instead of each decoding its own."""
        for k in range(len(self.shards)):
            self.largest_record(k)

    def largest_record(self, k: int) -> int:
        """A bound (bytes) on the size of every record of shard ``k``: its
        largest chunk's decoded size (no record is bigger than its chunk)."""
        n = self._largest.get(k)
        if n is None:
            sizes = self.data.file(k).chunk_decoded_sizes
            n = self._largest[k] = int(sizes.max()) if len(sizes) else 0
        return n

    def attr(self, node: Node) -> Attr:
        """Attributes of ``node``. Raises :class:`ArrayRecordError` when the
        record's size cannot be read (corrupt footer or sizes block)."""
        kind = node.kind
        if kind == RECORD:
            k = node.shard
            return Attr(
                _FILE_MODE,
                self._rec_base[k] | node.local,
                2,
                self.record_size(k, node.local),
                self._mtimes[k],
                _BLKSIZE,
            )
        if kind == ROOT:
            return Attr(_DIR_MODE, ROOT_INO, 3, 0, self.mtime_ns)
        if kind == SHARD_DIR:
            k = node.shard
            return Attr(_DIR_MODE, _SHARD_DIR_INO + self._serials[k], 2, 0, self._mtimes[k])
        if kind == SHARDS:
            return Attr(_DIR_MODE, SHARDS_INO, 2 + len(self.shards), 0, self.mtime_ns)
        if kind == SUBTREE:
            return self.subtrees[node.shard].attr(node)
        return Attr(_FILE_MODE, self.summary_ino, 1, len(self.summary()), self.mtime_ns)

    def getattr(self, path: str) -> Attr:
        """:meth:`attr` of :meth:`resolve` of ``path``."""
        return self.attr(self.resolve(path))

    # -- listings ----------------------------------------------------------------

    def readdir(self, node: Node, offset: int = 0, *, sizes: bool = False) -> Iterator[tuple[str, Attr, int]]:
        """Entries of directory ``node`` from position ``offset`` on, as
        ``(name, attr, next offset)``, streamed (nothing is built for the
        whole directory). Entry ``j`` (``.`` is 0, ``..`` 1) has next offset
        ``j + 1``; pass the last one received to continue.

        With ``sizes=False`` the attributes of records have ``size`` 0 (a
        plain ``readdir`` reports only type and inode); with ``sizes=True``
        they are exact (for ``readdirplus``), or -1 for a record whose size
        cannot be read (its chunk is corrupt; logged once).

        Raises ``NotADirectoryError`` for a file node.
        """
        for b in self.readdir_batches(node, offset, sizes=sizes):
            a = b.attr
            if b.sizes is not None:
                all_sizes = [int(x) for x in b.sizes]
            else:
                all_sizes = itertools.repeat(-1 if sizes else a.size)
            for j, (name, ino, size) in enumerate(zip(b.name_list(), b.inos, all_sizes)):
                yield name, a._replace(ino=ino, size=size), b.next_offset + j

    def readdir_batches(self, node: Node, offset: int = 0, *, sizes: bool = False,
                        batch: int = 1024) -> Iterator["DirBatch"]:
        """:meth:`readdir` in batches of entries that share mode, link count
        and mtime (records of one shard), for callers that want to spend
        as little per entry as possible (the daemon). ``batch`` bounds the
        records per batch."""
        kind = node.kind
        if kind in (RECORD, SUMMARY):
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
        pos = max(int(offset), 0)
        fixed = [(".", node)]
        # ".." of the root is outside the mount; the kernel fills it in.
        fixed.append(("..", Node(SHARDS) if kind == SHARD_DIR else Node(ROOT)))
        if kind == SUBTREE:
            entries = self.subtrees[node.shard].readdir(node, max(pos, 2), sizes)
            first = next(entries, None)  # a file, or an error, before any entry goes out
            yield from (self._fixed_batch(fixed, i, sizes) for i in range(pos, 2))
            for name, a, nxt in () if first is None else itertools.chain((first,), entries):
                yield DirBatch([name], a, (a.ino,), (a.size,) if sizes else None, nxt)
            return
        if kind == ROOT:
            fixed += [(SUMMARY_NAME, Node(SUMMARY)), (SHARDS_NAME, Node(SHARDS))]
            fixed += [(tree.name, tree.root()) for tree in self.subtrees]
        elif kind == SHARDS:
            fixed += [(name, Node(SHARD_DIR, k)) for k, name in enumerate(self.shard_names)]
        for j in range(pos, len(fixed)):
            yield self._fixed_batch(fixed, j, sizes)
        if kind == SHARDS:
            return
        nfixed = len(fixed)
        if kind == ROOT:
            start, stop, k, width = max(pos - nfixed, 0), self.num_records, None, self.width
        else:  # one shard: its records, named by their index in the file
            k = node.shard
            first = self._firsts[k]
            start, stop, width = first + max(pos - nfixed, 0), first + self.shards[k].num_records, self._local_width[k]
        base = nfixed + 1 - (0 if kind == ROOT else self._firsts[k])  # next offset of global index g: g + base
        yield from self._record_batches(start, stop, base, sizes, k, width, batch)

    def _fixed_batch(self, fixed, j, sizes) -> DirBatch:
        name, n = fixed[j]
        # The summary's size means reading every shard's footer: only when
        # the listing carries sizes.
        plain = Attr(_FILE_MODE, self.summary_ino, 1, 0, self.mtime_ns)
        if not sizes and n.kind == SUMMARY:
            return DirBatch([name], plain, (plain.ino,), None, j + 1)
        try:
            a = self.attr(n)
        except (ArrayRecordError, OSError, ValueError) as e:
            if n.kind != SUMMARY:
                raise
            # A shard's slice cuts a corrupt chunk: the summary reads as EIO,
            # but the listing holding it must not fail.
            if not self._summary_failed:
                self._summary_failed = True
                log.error("EIO on the size of %s, listed without attributes: %s", SUMMARY_NAME, e)
            return DirBatch([name], plain, (plain.ino,), None, j + 1)
        return DirBatch([name], a, (a.ino,), (a.size,) if sizes else None, j + 1)

    def _record_batches(self, start, stop, base, sizes, local_names, width, batch):
        """Batches of records ``[start, stop)`` (global indices), named by
        global index or, for ``local_names`` = shard ``k``, by index in
        that shard's file."""
        if start >= stop:
            return
        step = 64
        k = self._shard_of(start)
        i = start
        while i < stop:
            end = min(stop, self._firsts[k + 1])
            if end <= i:
                k += 1
                continue
            delta = self.shards[k].start - self._firsts[k]  # global -> file-local
            rec_base = self._rec_base[k]
            template = Attr(_FILE_MODE, 0, 2, 0, self._mtimes[k], _BLKSIZE)
            while i < end:
                # Small first batches: a listing request fits a few hundred
                # entries, and the caller resumes from an offset next time.
                j = min(end, i + min(step, batch))
                step *= 2
                lo, hi = i + delta, j + delta
                for a, b, sz in self._sized_runs(k, lo, hi) if sizes else ((lo, hi, None),):
                    g = a - delta  # global index of the run's first record
                    yield DirBatch(None, template, range(rec_base | a, rec_base | b), sz, g + base,
                                   g if local_names is None else a, width)
                i = j
            k += 1

    def _sized_runs(self, k: int, lo: int, hi: int) -> list:
        """``(a, b, sizes)`` runs covering file-local records ``[lo, hi)`` of
        shard ``k``, ``sizes`` the records' sizes in bytes (``int64``): one
        run, unless a chunk's sizes cannot be read (corrupt). Then one run
        per chunk, ``sizes`` ``None`` for each unreadable one: a listing
        must not fail for one bad record, so those entries go out without
        attributes (the kernel looks them up, and that lookup is ``EIO``),
        and every other record keeps its exact size. Raises nothing for
        corrupt input."""
        if k not in self._bad_sizes:
            try:
                return [(lo, hi, self.data.record_sizes(k, lo, hi))]
            except (ArrayRecordError, OSError, ValueError) as e:
                self._size_error(k, None, e)
        f = self.data.file(k)
        try:
            c0, c1 = f.chunk_of(lo), f.chunk_of(hi - 1) + 1
        except (ArrayRecordError, OSError, ValueError) as e:  # the chunk index itself
            self._size_error(k, -1, e)
            return [(lo, hi, None)]
        bad = self._bad_sizes[k]
        runs = []
        for c in range(c0, c1):
            a, b = f.chunk_records(c)
            a, b = max(a, lo), min(b, hi)
            sz = None
            if c not in bad and -1 not in bad:
                try:
                    sz = self.data.record_sizes(k, a, b)
                except (ArrayRecordError, OSError, ValueError) as e:
                    self._size_error(k, c, e)
            if runs and sz is not None and runs[-1][2] is not None:  # good chunks stay one run
                runs[-1] = (runs[-1][0], b, np.concatenate((runs[-1][2], sz)))
            else:
                runs.append((a, b, sz))
        return runs

    def _size_error(self, k: int, chunk, e: Exception) -> None:
        """Note that chunk ``chunk`` of shard ``k`` (``None``: not known yet;
        -1: the whole shard) has no readable sizes, logging it the first
        time in this snapshot (``e`` names the file, the chunk's byte
        offset and its records). Two threads may both log it: harmless."""
        bad = self._bad_sizes.setdefault(k, set())
        if chunk is None or chunk in bad:
            return
        bad.add(chunk)
        log.error("EIO on the sizes of records of %s, listed without attributes: %s", self.shards[k].path, e)

    # -- contents ------------------------------------------------------------------

    def read(self, node: Node) -> bytes:
        """Whole contents of file ``node`` (a record, or the summary).
        Raises ``IsADirectoryError`` for a directory,
        :class:`ArrayRecordError` for a corrupt record (the file layer
        checks that it decodes to the size its footer gives)."""
        kind = node.kind
        if kind == RECORD:
            # By global index: records of a chunk of many come from the
            # dataset's chunk cache, decoded once for all of them.
            return self.data[node.index]
        if kind == SUMMARY:
            return self.summary()
        if kind == SUBTREE:
            return self.subtrees[node.shard].read(node)
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))

    def alone_in_chunk(self, node: Node) -> bool:
        """Whether record ``node`` is the only record of its chunk (it can
        then be decoded into a buffer: :meth:`read_into`)."""
        f = self.data.file(node.shard)
        return f.chunk_records(f.chunk_of(node.local)) == (node.local, node.local + 1)

    def read_into(self, node: Node, out) -> None:
        """Decode record ``node``, alone in its chunk, into the writable
        buffer ``out`` of its size, reading, hashing and decompressing at
        once (:meth:`arrayfs.file.ArrayRecordFile.read_big_record`)."""
        self.data.file(node.shard).read_big_record(node.local, out)

    def describe(self, node: Node) -> str:
        """Where a record lives, for log messages: shard, chunk, byte offset
        (a subtree's node: what the subtree says)."""
        if node.kind == SUBTREE:
            return self.subtrees[node.shard].describe(node)
        if node.kind != RECORD:
            return "?"
        try:
            c, off = self.data.chunk_location(node.shard, node.local)
            where = f"chunk {c} at byte {off}"
        except Exception:  # the index itself may be what is corrupt
            where = "chunk ?"
        return f"record {node.index} = {self.shards[node.shard].path} record {node.local}, {where}"

    def summary(self) -> bytes:
        """The ``.arrayfs.json`` contents (UTF-8 JSON, computed once per
        snapshot): the generation (0, then one more per refresh that changed
        the view), shards with path, mount directory name, record count,
        first global index, start in the file, exact record bytes, file
        size, mtime and writer options; totals."""
        with self._summary_lock:
            if self._summary is None:
                shards = [{"name": self.shard_names[k], "path": s.path, "num_records": s.num_records,
                           "first_index": s.first_index, "start": s.start,
                           "total_bytes": self.data.shard_record_bytes(k), "file_size": s.size_bytes,
                           "mtime_ns": s.mtime_ns, "writer_options": s.writer_options}
                          for k, s in enumerate(self.shards)]
                doc = {"format": "arrayfs-mount", "version": 1, "generation": self.generation,
                       "num_records": self.num_records, "num_shards": len(self.shards),
                       "total_bytes": sum(s["total_bytes"] for s in shards), "name_width": self.width,
                       "shards": shards}
                self._summary = (json.dumps(doc, indent=2) + "\n").encode()
            return self._summary

    def statfs(self) -> dict:
        """``statvfs`` fields: the summary's total bytes in 4 KiB blocks,
        the file count, the name length limit, read-only."""
        blocks = (json.loads(self.summary())["total_bytes"] + 4095) // 4096
        return {"f_bsize": 4096, "f_frsize": 4096, "f_blocks": blocks, "f_bfree": 0, "f_bavail": 0,
                "f_files": self.num_records + len(self.shards) + 3, "f_ffree": 0, "f_favail": 0,
                "f_namemax": _MAX_NAME, "f_flag": os.ST_RDONLY}


class FsView:
    """The mount's view of a dataset: the current :class:`ViewSnapshot`,
    the one before it, and their replacement on refresh.

    Args:
        ds: the dataset (the view does not close it).
        uid, gid: owner reported for every node (default: this process's).
        subtrees: :class:`Subtree` classes plugged in under the root of
            every snapshot.

    Callers take :attr:`snapshot` once per operation and use it for the
    whole operation, so a concurrent refresh never mixes two snapshots in
    one answer.
    """

    def __init__(self, ds: ArrayRecordDataSource, *, uid: int | None = None, gid: int | None = None, subtrees=()):
        self.ds = ds
        self._uid = os.getuid() if uid is None else uid
        self._gid = os.getgid() if gid is None else gid
        self._subtrees = tuple(subtrees)
        self._serials: dict[ShardKey, int] = {}
        self._lock = threading.Lock()
        self._generation = 0
        self.snapshot = self._build(0)
        # The snapshot before the current one: files opened before a refresh
        # (by inode) keep reading their record.
        self.previous: ViewSnapshot | None = None

    def _build(self, changed_ns: int) -> ViewSnapshot:
        snap = ViewSnapshot(self.ds.snapshot(), self._serials, changed_ns=changed_ns, uid=self._uid, gid=self._gid,
                            generation=self._generation, subtrees=self._subtrees)
        self._generation += 1
        return snap

    def refresh(self, prepare=None) -> ViewChange | None:
        """Refresh the dataset (:meth:`ArrayRecordDataSource.refresh`) and,
        when shards were added or removed, install a new snapshot. The
        snapshot that stops being :attr:`previous` gives back the files no
        newer snapshot uses (their descriptors close now).

        Args:
            prepare: called with the :class:`ViewChange` after the new
                snapshot is built and before it is installed (the core
                retires the old summary there).

        Returns the :class:`ViewChange`, or ``None`` when nothing changed
        (``pending`` shards, still being written, are then only retried on a
        later call). Raises what the dataset's refresh raises.
        """
        with self._lock:
            result = self.ds.refresh()
            old = self.snapshot
            if not result.changed and self.ds.snapshot() is old.data:
                return ViewChange((), (0, 0, ()), pending=result.pending) if result.pending else None
            new = self._build(time.time_ns())
            change = diff(old, new)._replace(added=result.added, removed=result.removed, pending=result.pending)
            if prepare is not None:
                prepare(change)
            older, self.previous, self.snapshot = self.previous, old, new
            if older is not None:
                self.ds.release(older.data, keep=(old.data,))
            return change

    def after_fork(self) -> None:
        """In a forked process: nothing to redo. Shards keep what the fork
        inherited (local descriptors; a file on object storage makes its
        own client in the child on its first read), so workers share the
        chunk indexes decoded before the fork."""

    # Conveniences over the current snapshot (tests, tools).

    def resolve(self, path: str) -> Node:
        return self.snapshot.resolve(path)

    def getattr(self, path: str) -> Attr:
        return self.snapshot.getattr(path)

    def listdir(self, path: str) -> list[str]:
        """Names in directory ``path`` (without ``.`` and ``..``); builds the
        whole list, so for tests and small directories only."""
        snap = self.snapshot
        return [name for name, _, _ in snap.readdir(snap.resolve(path)) if name not in (".", "..")]

    def read(self, path: str) -> bytes:
        snap = self.snapshot
        return snap.read(snap.resolve(path))


def diff(old: ViewSnapshot, new: ViewSnapshot) -> ViewChange:
    """Names whose meaning differs between two snapshots (see
    :class:`ViewChange`)."""
    ok, nk = old.keys, new.keys
    common = 0
    while common < min(len(ok), len(nk)) and ok[common] == nk[common]:
        common += 1
    lo = int(old.firsts[common])
    widths = {old.width, new.width}
    if old.width != new.width:
        lo = 0
    # Names >= the old count did not exist, so nothing of them is cached
    # (no negative caching while watching).
    hi = old.num_records
    fixed = ["/", f"/{SUMMARY_NAME}", f"/{SHARDS_NAME}"] + [f"/{tree.name}" for tree in old.subtrees]
    new_dirs = set(zip(new.shard_names, nk))
    old_dirs = set(zip(old.shard_names, ok))
    fixed += [old.shard_path(k) for k, d in enumerate(zip(old.shard_names, ok)) if d not in new_dirs]
    fixed += [new.shard_path(k) for k, d in enumerate(zip(new.shard_names, nk)) if d not in old_dirs]
    return ViewChange(tuple(fixed), (lo, max(hi, lo), tuple(sorted(widths))), old_summary_ino=old.summary_ino,
                      old_width=old.width)
