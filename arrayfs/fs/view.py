"""The filesystem view of a dataset: names, attributes, listings, contents.

Plain Python (no FUSE): the daemon (:mod:`arrayfs.fs.daemon`) is a thin
adapter over this module, and the tests call it directly.

Layout of a mount of ``N`` records in shards ``a.array_record``,
``b.array_record``::

    /                       directory, every record of the dataset
    /000 ... /<N-1>         record i, named by its global index zero-padded
                            to the width of N - 1 (so ``ls`` sorts in order);
                            the unpadded decimal name (``/42``) also works
    /.arrayfs.json          summary: shards, record counts, first global
                            index, writer options, exact total bytes
    /.shards/               one directory per shard
    /.shards/a.array_record/0 ...
                            record i of that file, named by its index in the
                            file (padded to that shard's widest index);
                            a shard used through a read instruction
                            ``path[a:b]`` is named ``<file>[a:b]``, and a
                            name used twice gets ``@<position>`` appended

Every name that is not one of these (``-1``, ``abc``, ``00x``, an index
``>= N``, a padding other than the canonical one, ``..`` tricks) is
``ENOENT``. Names never reach the host file system, so no path can escape
the dataset.

Attributes: records are read-only regular files (``0444``), directories
``0555``; ``st_size`` is the exact record size in bytes (from the footer:
no decoding for ``group_size:1``, only the sizes block otherwise);
``st_mtime`` is the shard file's modification time; inode numbers are
stable for a record across remounts and refreshes (derived from the order
the shard was first seen and the record's index in its file). A record's
two names (root and ``.shards``) are one inode with ``st_nlink == 2``, like
a hard link, so ``du`` counts its bytes once and ``tar`` stores it once.

Inode numbers are also the handles of the low-level daemon
(:meth:`ViewSnapshot.node_of_ino`), so the contents of an inode never
change: a shard that is rewritten is a new shard (new inodes), and the
summary has a new inode in every snapshot. Only *names* change meaning on a
refresh.

Consistency: a :class:`ViewSnapshot` is immutable and reads one pinned
dataset snapshot; :meth:`FsView.refresh` installs a new one and returns a
:class:`ViewChange` naming the paths whose meaning changed (for the kernel
cache invalidation of the daemon).
"""

from __future__ import annotations

import bisect
import errno
import json
import os
import stat
import threading
import time
from typing import Iterator, NamedTuple

from ..dataset import ArrayRecordDataSource
from ..errors import ArrayRecordError
from .source import PinnedSource, ShardKey

__all__ = [
    "FsView",
    "ViewSnapshot",
    "ViewChange",
    "Node",
    "Attr",
    "DirBatch",
    "ROOT",
    "SHARDS",
    "SHARD_DIR",
    "SUMMARY",
    "RECORD",
    "SUMMARY_NAME",
    "SHARDS_NAME",
]

SUMMARY_NAME = ".arrayfs.json"
SHARDS_NAME = ".shards"

# Node kinds.
ROOT, SHARDS, SHARD_DIR, SUMMARY, RECORD = range(5)

# Inode numbers. Fixed ones for the fixed names; a directory per shard at
# _SHARD_DIR_INO + serial; records at (serial + 1) << _RECORD_SHIFT | local,
# which leaves 40 bits (10^12 records) per file and 2^23 shard serials
# before the numbers wrap (then collisions are possible, never errors).
# The summary's inode is _SUMMARY_INO | generation (bit 63: above every
# record inode).
ROOT_INO, SHARDS_INO = 1, 2
_SUMMARY_INO = 1 << 63
_SHARD_DIR_INO = 16
_RECORD_SHIFT = 40
_LOCAL_MASK = (1 << _RECORD_SHIFT) - 1
_SERIAL_MASK = (1 << 23) - 1

_DIR_MODE = stat.S_IFDIR | 0o555
_FILE_MODE = stat.S_IFREG | 0o444
_MAX_NAME = 255
# st_blksize of records: large, so that ``cat`` and ``cp`` read big records
# in big requests (coreutils size their buffer from it).
_BLKSIZE = 1 << 20


class Node(NamedTuple):
    """What a path names.

    ``kind`` is one of ``ROOT, SHARDS, SHARD_DIR, SUMMARY, RECORD``;
    ``shard`` the shard position in the snapshot (``SHARD_DIR``,
    ``RECORD``; else -1); ``index`` the global record index (``RECORD``;
    else -1); ``local`` the record's index in its file (``RECORD``; else -1).
    """

    kind: int
    shard: int = -1
    index: int = -1
    local: int = -1


class Attr(NamedTuple):
    """``stat`` fields of a node: mode, inode, link count, size in bytes,
    modification time in ns, preferred I/O size in bytes."""

    mode: int
    ino: int
    nlink: int
    size: int
    mtime_ns: int
    blksize: int = 4096

    def as_dict(self, uid: int = 0, gid: int = 0) -> dict:
        """The attributes as an ``os.stat``-style dict (times in ns)."""
        return {
            "st_mode": self.mode,
            "st_ino": self.ino,
            "st_nlink": self.nlink,
            "st_size": self.size,
            "st_blocks": (self.size + 511) // 512,
            "st_blksize": self.blksize,
            "st_mtime": self.mtime_ns,
            "st_ctime": self.mtime_ns,
            "st_atime": self.mtime_ns,
            "st_uid": uid,
            "st_gid": gid,
        }


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


class DirBatch(NamedTuple):
    """Consecutive directory entries sharing one attribute template.

    Entry ``j`` has name ``name_list()[j]``, inode ``inos[j]``, size
    ``sizes[j]`` (bytes; ``sizes`` is ``None`` when sizes were not asked
    for) and next offset ``next_offset + j``; every other field is
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
    ``shard_records``: ``(dir path, lo, hi, width)`` per vanished shard:
    its record names.
    ``added``/``removed``/``pending``: from :meth:`ArrayRecordDataSource.refresh`.
    ``old_summary_ino``: the inode of the summary before the refresh (0: none).
    ``old_width``: the padding width of root names before the refresh.
    """

    fixed: tuple
    records: tuple
    shard_records: tuple
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
        if f"/{SUMMARY_NAME}" in self.fixed:
            yield ROOT_INO, SUMMARY_NAME

    def stale_inodes(self) -> tuple:
        """Inodes whose cached pages must go *before* any name changes
        meaning: the old summary's. The kernel would otherwise keep serving
        the old summary from its page cache while record names already mean
        what the new one says (its inode is then ``ESTALE`` until the
        summary's name is invalidated, last)."""
        return (self.old_summary_ino,) if self.old_summary_ino else ()

    def inodes(self) -> tuple:
        """Inodes whose attributes changed (the directories), to invalidate
        after :meth:`entries`."""
        out = []
        if "/" in self.fixed:
            out.append(ROOT_INO)
        if f"/{SHARDS_NAME}" in self.fixed:
            out.append(SHARDS_INO)
        return tuple(out)

    def paths(self) -> Iterator[str]:
        """Every path to invalidate, generated lazily (a refresh that
        shifts a 10-million-record dataset yields tens of millions)."""
        yield from self.fixed
        lo, hi, widths = self.records
        for i in range(lo, hi):
            plain = str(i)
            yield "/" + plain
            for w in widths:
                if w > len(plain):
                    yield "/" + plain.zfill(w)
        for base, a, b, w in self.shard_records:
            for i in range(a, b):
                plain = str(i)
                yield f"{base}/{plain}"
                if w > len(plain):
                    yield f"{base}/{plain.zfill(w)}"


class ViewSnapshot:
    """An immutable filesystem view of one pinned dataset snapshot.

    Args:
        source: the pinned dataset snapshot.
        serials: shard key -> serial number (inode numbering), shared by
            the snapshots of one :class:`FsView`; new keys are added.
        changed_ns: when this snapshot was installed by a refresh (ns since
            the epoch), 0 for the first one. Directories' mtime is the
            newest of this and the shards' mtimes.
        uid, gid: owner reported for every node.
        generation: number of this snapshot in its :class:`FsView` (0, 1, ...).

    Thread-safe: every method may be called from many threads.
    """

    def __init__(self, source: PinnedSource, serials: dict, *, changed_ns: int = 0, uid: int = 0, gid: int = 0,
                 generation: int = 0):
        self.source = source
        self.generation = generation
        self.uid = uid
        self.gid = gid
        self.shards = source.shards
        n = len(source)
        self.num_records = n
        self.width = len(str(n - 1)) if n > 1 else 1
        self._firsts = source.firsts.tolist()
        self._serials = []
        for key in source.keys:
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
            name = os.path.basename(info.path) or info.path.replace("/", "_")
            if info.start != 0 or info.num_records != source.file_num_records(k):
                name += f"[{info.start}:{info.start + info.num_records}]"
            if name in seen:
                name += f"@{k}"
            name = name[:_MAX_NAME]
            seen.add(name)
            names.append(name)
        self.shard_names = tuple(names)
        self._by_name = {name: k for k, name in enumerate(names)}
        self._local_width = tuple(
            len(str(info.start + info.num_records - 1)) if info.num_records > 1 else 1 for info in self.shards
        )
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
            return Node(SUMMARY) if ino == self.summary_ino else None
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

    def record_name(self, index: int) -> str:
        """Root name (zero-padded) of global record ``index``."""
        return str(index).zfill(self.width)

    def shard_path(self, k: int) -> str:
        """Path of shard ``k``'s directory in the mount."""
        return f"/{SHARDS_NAME}/{self.shard_names[k]}"

    # -- attributes ------------------------------------------------------------

    def record_ino(self, k: int, local: int) -> int:
        return self._rec_base[k] | local

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
                self.source.record_size(k, node.local),
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
        they are exact (for ``readdirplus``).

        Raises ``NotADirectoryError`` for a file node.
        """
        for b in self.readdir_batches(node, offset, sizes=sizes):
            a = b.attr
            off = b.next_offset
            if b.sizes is None:
                for name, ino in zip(b.name_list(), b.inos):
                    yield name, a._replace(ino=ino), off
                    off += 1
            else:
                for name, ino, size in zip(b.name_list(), b.inos, [int(x) for x in b.sizes]):
                    yield name, a._replace(ino=ino, size=size), off
                    off += 1

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
        fixed.append(("..", Node(ROOT) if kind != SHARD_DIR else Node(SHARDS)))
        if kind == ROOT:
            fixed += [(SUMMARY_NAME, Node(SUMMARY)), (SHARDS_NAME, Node(SHARDS))]
        elif kind == SHARDS:
            fixed += [(name, Node(SHARD_DIR, k)) for k, name in enumerate(self.shard_names)]
        for j in range(pos, len(fixed)):
            name, n = fixed[j]
            # The summary's size means reading every shard's footer: only
            # when the listing carries sizes.
            a = self.attr(n) if sizes or n.kind != SUMMARY else Attr(_FILE_MODE, self.summary_ino, 1, 0, self.mtime_ns)
            yield DirBatch([name], a, (a.ino,), None if not sizes else (a.size,), j + 1)
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
                sz = self.source.record_sizes(k, lo, hi) if sizes else None
                yield DirBatch(None, template, range(rec_base | lo, rec_base | hi), sz, i + base,
                               i if local_names is None else lo, width)
                i = j
            k += 1

    # -- contents ------------------------------------------------------------------

    def read(self, node: Node, expected: int | None = None) -> bytes:
        """Whole contents of file ``node`` (a record, decoded once, or the
        summary). ``expected``: the record's size if the caller has it
        already (bytes). Raises ``IsADirectoryError`` for a directory,
        :class:`ArrayRecordError` for a corrupt record or one whose decoded
        size differs from the size its footer gave (never short data)."""
        if node.kind == SUMMARY:
            return self.summary()
        if node.kind != RECORD:
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
        data = self.source.read(node.index)
        if expected is None:
            expected = self.source.record_size(node.shard, node.local)
        if len(data) != expected:
            _, offset = self.source.locate_chunk(node.shard, node.local)
            raise ArrayRecordError(
                f"record {node.local} decodes to {len(data)} bytes, its chunk's sizes say {expected}",
                path=self.shards[node.shard].path,
                offset=offset,
                records=(node.local, node.local + 1),
            )
        return data

    def describe(self, node: Node) -> str:
        """Where a record lives, for log messages: shard, chunk, byte offset."""
        if node.kind != RECORD:
            return "?"
        try:
            c, off = self.source.locate_chunk(node.shard, node.local)
            where = f"chunk {c} at byte {off}"
        except Exception:  # the index itself may be what is corrupt
            where = "chunk ?"
        return f"record {node.index} = {self.shards[node.shard].path} record {node.local}, {where}"

    def summary(self) -> bytes:
        """The ``.arrayfs.json`` contents (UTF-8 JSON, computed once per
        snapshot): the snapshot's generation (0, 1, ... one per refresh that
        changed the view), shards with path, mount directory name, record count,
        first global index, start in the file, exact record bytes, file size,
        mtime and writer options; totals."""
        s = self._summary
        if s is not None:
            return s
        with self._summary_lock:
            if self._summary is None:
                shards = []
                total = 0
                for k, info in enumerate(self.shards):
                    nbytes = self.source.shard_bytes(k)
                    total += nbytes
                    shards.append(
                        {
                            "name": self.shard_names[k],
                            "path": info.path,
                            "num_records": info.num_records,
                            "first_index": info.first_index,
                            "start": info.start,
                            "total_bytes": nbytes,
                            "file_size": info.size_bytes,
                            "mtime_ns": info.mtime_ns,
                            "writer_options": info.writer_options,
                        }
                    )
                doc = {
                    "format": "arrayfs-mount",
                    "version": 1,
                    "generation": self.generation,
                    "num_records": self.num_records,
                    "num_shards": len(self.shards),
                    "total_bytes": total,
                    "name_width": self.width,
                    "shards": shards,
                }
                self._summary = (json.dumps(doc, indent=2) + "\n").encode()
            return self._summary

    def statfs(self) -> dict:
        """``statvfs`` fields: sizes in 4 KiB blocks of the summary's total
        bytes, file count, name length limit, read-only flag."""
        total = json.loads(self.summary())["total_bytes"]
        bsize = 4096
        return {
            "f_bsize": bsize,
            "f_frsize": bsize,
            "f_blocks": (total + bsize - 1) // bsize,
            "f_bfree": 0,
            "f_bavail": 0,
            "f_files": self.num_records + len(self.shards) + 3,
            "f_ffree": 0,
            "f_favail": 0,
            "f_namemax": _MAX_NAME,
            "f_flag": os.ST_RDONLY,
        }


class FsView:
    """The mount's view of a dataset: the current :class:`ViewSnapshot`
    and its replacement on refresh.

    Args:
        ds: the dataset (the view does not close it).
        uid, gid: owner reported for every node (default: this process's).

    Thread-safe. Callers take :attr:`snapshot` once per operation and use
    it for the whole operation, so a concurrent refresh never mixes two
    snapshots in one answer.
    """

    def __init__(self, ds: ArrayRecordDataSource, *, uid: int | None = None, gid: int | None = None):
        self.ds = ds
        self._uid = os.getuid() if uid is None else uid
        self._gid = os.getgid() if gid is None else gid
        self._serials: dict[ShardKey, int] = {}
        self._lock = threading.Lock()
        self._generation = 0
        self.snapshot = self._build(0)
        # The snapshot before the current one: files opened before a refresh
        # (by inode, in the low-level daemon) keep reading their record.
        self.previous: ViewSnapshot | None = None

    def _build(self, changed_ns: int) -> ViewSnapshot:
        snap = ViewSnapshot(PinnedSource(self.ds), self._serials, changed_ns=changed_ns, uid=self._uid,
                            gid=self._gid, generation=self._generation)
        self._generation += 1
        return snap

    def refresh(self, prepare=None) -> ViewChange | None:
        """Refresh the dataset (:meth:`ArrayRecordDataSource.refresh`) and,
        when shards were added or removed, install a new snapshot.

        Args:
            prepare: called with the :class:`ViewChange` after the new
                snapshot is built and before it is installed (the daemon
                retires the old summary there, so that no one reads it once
                names mean what the new one says).

        Returns the :class:`ViewChange`, or ``None`` when nothing changed
        (``pending`` shards, still being written, are then only retried on a
        later call). Raises what the dataset's refresh raises.
        """
        with self._lock:
            result = self.ds.refresh()
            old = self.snapshot
            if not result.changed and old.source.keys == PinnedSource(self.ds).keys:
                if result.pending:
                    return ViewChange((), (0, 0, ()), (), (), (), result.pending)
                return None
            new = self._build(time.time_ns())
            change = diff(old, new)._replace(added=result.added, removed=result.removed, pending=result.pending)
            if prepare is not None:
                prepare(change)
            self.previous = old
            self.snapshot = new
            return change

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
    """Paths whose meaning differs between two snapshots (see
    :class:`ViewChange`)."""
    ok, nk = old.source.keys, new.source.keys
    common = 0
    while common < min(len(ok), len(nk)) and ok[common] == nk[common]:
        common += 1
    lo = int(old.source.firsts[common])
    widths = {old.width, new.width}
    if old.width != new.width:
        lo = 0
    # Names >= the old count did not exist, so nothing of them is cached
    # (no negative caching while watching).
    hi = old.num_records
    fixed = ["/", f"/{SUMMARY_NAME}", f"/{SHARDS_NAME}"]
    shard_records = []
    new_dirs = {(name, key) for name, key in zip(new.shard_names, nk)}
    old_dirs = {(name, key) for name, key in zip(old.shard_names, ok)}
    for k, (name, key) in enumerate(zip(old.shard_names, ok)):
        if (name, key) not in new_dirs:
            base = old.shard_path(k)
            fixed.append(base)
            info = old.shards[k]
            shard_records.append((base, info.start, info.start + info.num_records, old._local_width[k]))
    for k, (name, key) in enumerate(zip(new.shard_names, nk)):
        if (name, key) not in old_dirs:
            fixed.append(new.shard_path(k))
    return ViewChange(tuple(fixed), (lo, max(hi, lo), tuple(sorted(widths))), tuple(shard_records),
                      old_summary_ino=old.summary_ino, old_width=old.width)
