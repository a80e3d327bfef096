#!/usr/bin/env python3
"""Soak the mount: readers cat records while the shards change under them.

``python benchmarks/soak_mount.py --minutes M``

A watching mount (``--watch``, the default) of ``shard-*.array_record`` in a
scratch directory; ``--readers`` processes (16) read random records through
it, by root name and by ``.shards/`` name, while this process changes the
shards every few seconds, in turn:

- adds a shard (written under a hidden name, then renamed in);
- adds a shard written in place by Google's writer (visible half-written);
- deletes one;
- truncates one in place (to half its size);
- corrupts bytes of one record in one (in place);
- replaces one by rename (new contents under the same name).

Every record is self-describing: a header (shard tag, index in its file,
size) and bytes derived from them, so any bytes a read returns can be
checked. A registry (``registry.json``, replaced atomically) maps each
shard file's identity as the summary shows it (path, size, mtime) to its
tag, and lists the records corrupted in it. Each read is checked so:

1. read ``.arrayfs.json``, then the record, then ``.arrayfs.json`` again;
2. any bytes returned must be an intact record written by this script
   (else: *garbage*, must be 0);
3. when the two summaries are equal (*stable*), the bytes must be exactly
   the record the summary names at that index, of the file identity it
   names (else: *wrong bytes*, must be 0), and an error is only allowed for
   a record the registry says is corrupt (``EIO``);
4. while the summary changes, ``EIO``, ``ENOENT`` and ``ESTALE`` (a file
   whose shard left the view) are expected and counted.

Each minute it prints reads, errors by kind, wrong bytes, garbage, the
daemon's memory (PSS of the coordinator and its worker processes, so
shared pages count once) and open descriptors (all processes; those of
deleted shard files apart), and whether it lives; at the end the same
against the first minute's figures. Then, with the readers stopped, it
makes two more changes (two refreshes: a deleted shard leaves the snapshot
before the current one only at the second) and counts the descriptors
still open on deleted shard files: the goal is 0.

Exit status: 0 when the daemon lived and there were no wrong bytes, no
garbage and no descriptor of a deleted shard left, else 1.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import json
import multiprocessing as mp
import os
import random
import shutil
import struct
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from arrayfs import ArrayRecordWriter  # noqa: E402
from arrayfs.fs import is_mounted, mount, unmount  # noqa: E402

_HEADER = struct.Struct("<QQI")  # tag, index in the file, size
BIG = 200_000  # bytes: more than one read request

# Counters shared by the readers (one slot each per reader).
COUNTERS = ("reads", "ok", "stable", "unstable", "eio", "enoent", "estale", "other_errors", "expected_eio",
            "stable_errors", "wrong", "garbage", "summary_errors")


# -- records ------------------------------------------------------------------------


def record(tag: int, index: int) -> bytes:
    """The record ``index`` of the shard file tagged ``tag``."""
    h = hashlib.blake2b(struct.pack("<QQ", tag, index), digest_size=32).digest()
    size = BIG if h[0] == 0 else _HEADER.size + h[1] * 8 + h[2]
    body = (h * (size // 32 + 1))[: size - _HEADER.size]
    return _HEADER.pack(tag, index, size) + body


def intact(data: bytes) -> bool:
    """Whether ``data`` is exactly some record written by this script."""
    if len(data) < _HEADER.size:
        return False
    tag, index, size = _HEADER.unpack_from(data)
    return size == len(data) and record(tag, index) == data


def identity_key(path, size, mtime_ns) -> str:
    return f"{path}|{size}|{mtime_ns}"


class Registry:
    """What each shard file identity holds, as the summary names it
    (``path|size|mtime_ns``): ``{"tag": int, "corrupt": [indices],
    "changed": bool}``. ``changed``: the file at that path has been changed
    since (deleted, truncated, corrupted, replaced): a snapshot that still
    names this identity may answer EIO or ENOENT for its records (never
    other bytes)."""

    def __init__(self, path):
        self.path = path
        self.items: dict = {}

    def changed(self, path, *, corrupt_tag=None, corrupt=()):
        """Mark every identity of ``path`` changed (and, for ``corrupt_tag``,
        the records ``corrupt`` corrupt in it)."""
        for key, entry in self.items.items():
            if key.rsplit("|", 2)[0] == path:
                entry["changed"] = True
                if corrupt_tag is not None and entry["tag"] == corrupt_tag:
                    entry["corrupt"] = sorted(set(entry.get("corrupt", [])) | set(corrupt))
        self._save()

    def add(self, path, tag, corrupt=()):
        st = os.stat(path)
        self.items[identity_key(path, st.st_size, st.st_mtime_ns)] = {
            "tag": tag, "corrupt": sorted(corrupt), "changed": False}
        self._save()

    def _save(self):
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.items, f)
        os.replace(tmp, self.path)

    @staticmethod
    def load(path) -> dict:
        with open(path) as f:
            return json.load(f)


# -- the readers ---------------------------------------------------------------------


def _read(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def reader(k: int, mnt: str, registry_path: str, deadline: float, counters, bad_log: str) -> None:
    rnd = random.Random(k)
    reg: dict = {}
    local = dict.fromkeys(COUNTERS, 0)
    last_flush = time.monotonic()
    summary_path = os.path.join(mnt, ".arrayfs.json")

    def note(kind_, **detail):
        with open(bad_log, "a") as f:
            f.write(json.dumps({"reader": k, "kind": kind_, "time": round(time.time(), 3),
                                "generation": doc.get("generation"), **detail}) + "\n")

    while time.time() < deadline:
        if time.monotonic() - last_flush > 1.0:
            for j, name in enumerate(COUNTERS):
                counters[k * len(COUNTERS) + j] = local[name]
            last_flush = time.monotonic()
        try:
            s1 = _read(summary_path)
        except OSError:
            local["summary_errors"] += 1  # ESTALE while a refresh is applied
            time.sleep(0.01)
            continue
        doc = json.loads(s1)
        n = doc["num_records"]
        if n == 0:
            time.sleep(0.05)
            continue
        i = rnd.randrange(n)
        shard = next(s for s in doc["shards"] if s["first_index"] <= i < s["first_index"] + s["num_records"])
        idx = shard["start"] + i - shard["first_index"]
        if rnd.random() < 0.5:
            name = str(i).zfill(doc["name_width"]) if rnd.random() < 0.5 else str(i)
        else:
            name = f".shards/{shard['name']}/{idx}"
        data, err = None, None
        try:
            data = _read(os.path.join(mnt, name))
        except OSError as e:
            err = e.errno
        try:
            s2 = _read(summary_path)
        except OSError:
            s2 = None
        local["reads"] += 1
        if data is not None:
            local["ok"] += 1
            if not intact(data):
                local["garbage"] += 1
                note("garbage", name=name, size=len(data), head=data[:32].hex())
        else:
            key = {errno.EIO: "eio", errno.ENOENT: "enoent", errno.ESTALE: "estale"}.get(err, "other_errors")
            local[key] += 1
        if s2 != s1:
            local["unstable"] += 1
            continue
        local["stable"] += 1
        ident = identity_key(shard["path"], shard["file_size"], shard["mtime_ns"])
        entry = reg.get(ident)
        expected = None if entry is None else record(entry["tag"], idx)
        if entry is None or (data is None) or data != expected:
            # Judge on the latest registry: the shard may have changed since.
            reg = Registry.load(registry_path)
            entry = reg.get(ident)
            expected = None if entry is None else record(entry["tag"], idx)
        if entry is None:
            note("unknown identity", ident=ident)
            local["wrong"] += 1
            continue
        gone = entry["changed"] or idx in entry["corrupt"]
        if data is None:
            if err in (errno.EIO, errno.ENOENT, errno.ESTALE) and gone:
                local["expected_eio"] += 1
            else:
                local["stable_errors"] += 1
                note("error while stable", name=name, errno=err, ident=ident, index=idx)
        elif data != expected:
            local["wrong"] += 1
            tag, got, size = _HEADER.unpack_from(data) if len(data) >= _HEADER.size else (None, None, None)
            note("wrong bytes", name=name, ident=ident, index=idx, want_tag=entry["tag"], got_tag=tag,
                 got_index=got, entry=entry)
    for j, name in enumerate(COUNTERS):
        counters[k * len(COUNTERS) + j] = local[name]


# -- the changes ----------------------------------------------------------------------------


class Shards:
    """The scratch directory of shards, and every change the soak makes."""

    def __init__(self, directory: str, registry: Registry, rnd: random.Random, records: int):
        self.dir = directory
        self.registry = registry
        self.rnd = rnd
        self.records = records
        self.seq = 0
        self.log = []

    def names(self) -> list:
        return sorted(n for n in os.listdir(self.dir) if n.startswith("shard-") and n.endswith(".array_record"))

    def live(self) -> int:
        """Shard files that are valid (not truncated)."""
        truncated = {key.rsplit("|", 2)[0] for key, entry in self.registry.items.items() if entry.get("truncated")}
        return sum(os.path.join(self.dir, n) not in truncated for n in self.names())

    def _tag(self) -> int:
        return self.rnd.getrandbits(63)

    def _write(self, path, tag, n):
        with ArrayRecordWriter(path, self.rnd.choice(["group_size:1", "group_size:16", "group_size:4,brotli"])) as w:
            for i in range(n):
                w.write(record(tag, i))

    def _new_name(self) -> str:
        self.seq += 1
        return os.path.join(self.dir, f"shard-{self.seq:06d}.array_record")

    def add(self):
        path, tag = self._new_name(), self._tag()
        tmp = os.path.join(self.dir, f".tmp-{self.seq}")
        self._write(tmp, tag, self.rnd.randrange(1, self.records))
        os.replace(tmp, path)
        self.registry.add(path, tag)
        return f"added {os.path.basename(path)}"

    def add_in_place(self):
        try:
            from array_record.python.array_record_module import ArrayRecordWriter as GoogleWriter
        except ImportError:
            return self.add()
        path, tag = self._new_name(), self._tag()
        w = GoogleWriter(path, "group_size:1")
        for i in range(self.rnd.randrange(1, self.records)):
            w.write(record(tag, i))
        w.close()
        self.registry.add(path, tag)
        return f"added {os.path.basename(path)} in place"

    def delete(self):
        names = self.names()
        if len(names) < 3:
            return self.add()
        name = self.rnd.choice(names)
        path = os.path.join(self.dir, name)
        self.registry.changed(path)
        os.unlink(path)
        return f"deleted {name}"

    def truncate(self):
        names = self.names()
        if len(names) < 3:
            return self.add()
        name = self.rnd.choice(names)
        path = os.path.join(self.dir, name)
        size = os.path.getsize(path)
        self.registry.changed(path)
        os.truncate(path, size // 2)
        self.registry.add(path, 0)
        self.registry.items[identity_key(path, size // 2, os.stat(path).st_mtime_ns)]["truncated"] = True
        self.registry._save()
        return f"truncated {name} in place to {size // 2} bytes"

    def corrupt(self):
        from arrayfs.file import ArrayRecordFile

        names = self.names()
        if not names:
            return self.add()
        name = self.rnd.choice(names)
        path = os.path.join(self.dir, name)
        try:
            f = ArrayRecordFile(path)
        except Exception:  # noqa: BLE001 - a shard truncated earlier: not valid, nothing to corrupt
            return f"left {name} alone (not a valid shard)"
        try:
            idx = self.rnd.randrange(f.num_records)
            tag = _HEADER.unpack_from(f.read_record(idx))[0]
            chunk = f.chunk_of(idx)
            index = f.index()
            offset = int(index.offsets[chunk])
            members = range(int(index.first[chunk]), int(index.first[chunk + 1]))
        finally:
            f.close()
        # Say so first: a reader may see the damage before this process
        # could write the registry after it.
        self.registry.changed(path, corrupt_tag=tag, corrupt=members)
        with open(path, "r+b") as fh:
            fh.seek(offset + 40 + 8)  # inside the chunk's data, past its header
            b = fh.read(4)
            fh.seek(offset + 40 + 8)
            fh.write(bytes(x ^ 0x5A for x in b))
        still = set(members)  # earlier damage to this file stays
        for key, entry in self.registry.items.items():
            if key.rsplit("|", 2)[0] == path and entry["tag"] == tag:
                still |= set(entry.get("corrupt", ()))
        self.registry.add(path, tag, corrupt=still)
        return f"corrupted chunk {chunk} (records {members.start}..{members.stop - 1}) of {name}"

    def replace(self):
        names = self.names()
        if not names:
            return self.add()
        name = self.rnd.choice(names)
        path, tag = os.path.join(self.dir, name), self._tag()
        tmp = os.path.join(self.dir, f".tmp-r{self.seq}")
        self._write(tmp, tag, self.rnd.randrange(1, self.records))
        self.registry.changed(path)
        os.replace(tmp, path)
        self.registry.add(path, tag)
        return f"replaced {name} by rename"

    ACTIONS = ("add", "add_in_place", "delete", "truncate", "corrupt", "replace")


# -- the daemon ----------------------------------------------------------------------------


def daemon_processes(pid) -> list:
    """The daemon's coordinator ``pid`` and its worker processes (its
    children forked from it: same command line; not its unmount helpers)."""
    out = [pid]
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
    except OSError:
        return out
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/stat") as f:
                    parent = int(f.read().rsplit(")", 1)[1].split()[1])
                with open(f"/proc/{p}/cmdline", "rb") as f:
                    if parent == pid and f.read() == cmdline:
                        out.append(int(p))
            except OSError:
                pass
    return out


def daemon_stats(pid) -> tuple:
    """``(PSS MiB, open descriptors, worker processes)`` of the daemon (all
    its processes), or ``None`` if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                return None
    except OSError:
        return None
    pss = fds = 0
    procs = daemon_processes(pid)
    for p in procs:
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                pss += next(int(line.split()[1]) for line in f if line.startswith("Pss:")) / 1024
            fds += len(os.listdir(f"/proc/{p}/fd"))
        except (OSError, StopIteration):
            pass
    return pss, fds, len(procs) - 1


def daemon_files(pid, data_dir) -> dict:
    """What the descriptors of the daemon's processes point at: shard
    files in the data directory (``shards``), such files already deleted
    (``deleted``), other; and ``mapped_deleted``: deleted shard files a
    process still maps (a map keeps a file's space as a descriptor does)."""
    out = {"shards": 0, "deleted": 0, "other": 0, "mapped_deleted": 0}
    for p in daemon_processes(pid):
        try:
            with open(f"/proc/{p}/maps") as f:
                out["mapped_deleted"] += len({line.split(None, 5)[-1] for line in f
                                              if data_dir in line and line.rstrip().endswith("(deleted)")})
        except OSError:
            pass
        try:
            names = os.listdir(f"/proc/{p}/fd")
        except OSError:
            continue
        for fd in names:
            try:
                target = os.readlink(f"/proc/{p}/fd/{fd}")
            except OSError:
                continue
            if target.startswith(data_dir):
                out["deleted" if target.endswith(" (deleted)") else "shards"] += 1
            else:
                out["other"] += 1
    return out


def settle(shards, mnt, pid, data) -> dict:
    """Two more changes, one refresh each, then what the daemon's
    descriptors point at: a shard deleted before them has left both
    snapshots the daemon keeps, so none may point at a deleted file."""
    summary = os.path.join(mnt, ".arrayfs.json")

    def generation():
        while True:
            try:
                with open(summary, "rb") as f:
                    return json.loads(f.read())["generation"]
            except OSError:  # ESTALE while a refresh is applied
                time.sleep(0.05)

    for _ in range(2):
        g = generation()
        shards.add()
        deadline = time.time() + 30
        while generation() == g and time.time() < deadline:
            time.sleep(0.1)
    return daemon_files(pid, data)


def totals(counters, readers) -> dict:
    out = dict.fromkeys(COUNTERS, 0)
    for k in range(readers):
        for j, name in enumerate(COUNTERS):
            out[name] += counters[k * len(COUNTERS) + j]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=1.0)
    ap.add_argument("--readers", type=int, default=16)
    ap.add_argument("--shards", type=int, default=8, help="shards at the start")
    ap.add_argument("--records", type=int, default=2000, help="most records per shard")
    ap.add_argument("--every", type=float, default=3.0, help="seconds between changes")
    ap.add_argument("--workdir", default="/tmp/arrayfs-soak")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--actions", default=",".join(Shards.ACTIONS),
                    help=f"changes to make, in turn (default: all of {','.join(Shards.ACTIONS)})")
    ap.add_argument("--report-every", type=float, default=60.0, help="seconds between progress lines")
    ap.add_argument("--json", metavar="OUT", help="also write the final figures as JSON")
    args = ap.parse_args(argv)

    actions = [a.strip() for a in args.actions.split(",") if a.strip()]
    unknown = set(actions) - set(Shards.ACTIONS)
    if unknown or not actions:
        ap.error(f"--actions: unknown {sorted(unknown)}; choose from {','.join(Shards.ACTIONS)}")
    work = os.path.abspath(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    data, mnt = os.path.join(work, "data"), os.path.join(work, "mnt")
    os.makedirs(data)
    os.makedirs(mnt)
    registry = Registry(os.path.join(work, "registry.json"))
    bad_log = os.path.join(work, "bad.jsonl")
    rnd = random.Random(args.seed)
    shards = Shards(data, registry, rnd, args.records)
    for _ in range(args.shards):
        shards.add()
    log_file = os.path.join(work, "daemon.log")
    pid = mount(os.path.join(data, "shard-*.array_record"), mnt, watch=True, log_file=log_file)
    print(f"mounted {mnt} (daemon {pid}); {args.readers} readers for {args.minutes:g} min; daemon log {log_file}",
          flush=True)
    start = time.time()
    deadline = start + 60 * args.minutes
    ctx = mp.get_context("fork")
    counters = ctx.Array("q", args.readers * len(COUNTERS), lock=False)
    procs = [ctx.Process(target=reader, args=(k, mnt, registry.path, deadline, counters, bad_log), daemon=True)
             for k in range(args.readers)]
    for p in procs:
        p.start()
    first = daemon_stats(pid)
    stats = [first]
    alive = first is not None
    next_report = start + args.report_every
    next_change = start + args.every
    changes = 0
    try:
        while time.time() < deadline and alive:
            now = time.time()
            if now >= next_change:
                action = actions[changes % len(actions)]
                # Keep the dataset about its starting size, so that RSS and
                # descriptors can stay flat: a new shard replaces a removed one.
                live = shards.live()
                if action in ("add", "add_in_place") and live > args.shards + 2 and "delete" in actions:
                    action = "delete"
                elif action in ("delete", "truncate") and live < args.shards - 2:
                    action = "add"
                what = getattr(shards, action)()
                changes += 1
                shards.log.append((round(now - start, 1), what))
                next_change = now + args.every
            if now >= next_report:
                st = daemon_stats(pid)
                alive = st is not None and is_mounted(mnt) is not None
                stats.append(st)
                t = totals(counters, args.readers)
                held = daemon_files(pid, data)
                print(f"[{(now - start) / 60:5.1f} min] reads {t['reads']:,} (stable {t['stable']:,}), "
                      f"EIO {t['eio']:,} (allowed {t['expected_eio']:,}), ENOENT {t['enoent']:,}, "
                      f"ESTALE {t['estale']:,}, other errors {t['other_errors']:,}, errors while stable "
                      f"{t['stable_errors']:,}, wrong bytes {t['wrong']:,}, garbage {t['garbage']:,}; daemon "
                      + (f"PSS {st[0]:.1f} MiB, {st[1]} fds ({held['deleted']} on deleted shards), {st[2]} workers"
                         if st else "DEAD") + f"; {changes} changes",
                      flush=True)
                next_report = now + args.report_every
            time.sleep(0.05)
        alive = alive and daemon_stats(pid) is not None and is_mounted(mnt) is not None
    finally:
        for p in procs:
            p.join(timeout=30 if alive else 0.1)
            if p.is_alive():
                p.kill()
        last = daemon_stats(pid)
        held = daemon_files(pid, data)
        settled = settle(shards, mnt, pid, data) if alive else None
        if is_mounted(mnt):
            try:
                unmount(mnt, lazy=True)
            except Exception as e:  # noqa: BLE001 - report, do not hide the figures
                print(f"unmount failed: {e}", file=sys.stderr)
    t = totals(counters, args.readers)
    print("\nchanges made:")
    for when, what in shards.log:
        print(f"  {when:7.1f} s  {what}")
    print(f"\nreads {t['reads']:,}: ok {t['ok']:,}, EIO {t['eio']:,}, ENOENT {t['enoent']:,}, ESTALE {t['estale']:,}, "
          f"other errors {t['other_errors']:,}; errors allowed while stable (changed or corrupt shard): "
          f"{t['expected_eio']:,}; summary reads refused during a refresh: {t['summary_errors']:,}")
    print(f"stable reads {t['stable']:,}, unstable {t['unstable']:,}; errors while stable {t['stable_errors']:,}; "
          f"WRONG BYTES {t['wrong']:,}; GARBAGE {t['garbage']:,}")
    if first and last:
        print(f"daemon PSS {first[0]:.1f} -> {last[0]:.1f} MiB, open fds {first[1]} -> {last[1]}, {last[2]} workers "
              f"(at the end: {held['shards']} shard files, {held['deleted']} deleted shard files, {held['other']} "
              f"other; {len(shards.names())} shard files in the directory)")
    if settled is not None:
        print(f"descriptors of deleted shards after two more refreshes: {settled['deleted']} (goal 0), maps of "
              f"them: {settled['mapped_deleted']}; descriptors of shard files: {settled['shards']}")
    print("daemon lived" if alive else "DAEMON DIED (see the daemon log; a SIGBUS here is a truncated shard read "
          "through mmap)")
    if os.path.exists(bad_log):
        with open(bad_log) as f:
            lines = f.readlines()
        print(f"{len(lines)} notes in {bad_log}; first ones:")
        for line in lines[:10]:
            print("  " + line.rstrip())
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"minutes": args.minutes, "readers": args.readers, "totals": t, "changes": shards.log,
                       "daemon_first": first, "daemon_last": last, "alive": alive, "files_at_end": held,
                       "files_settled": settled, "stats": stats}, f, indent=1)
    ok = (alive and t["wrong"] == 0 and t["garbage"] == 0 and settled is not None
          and settled["deleted"] == settled["mapped_deleted"] == 0)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
