#!/usr/bin/env python3
"""The FUSE mount against plain files and ratarmount, in one run, against the goals.

Prints the goals table of the mount (issue 20) and writes the figures as
JSON. Everything is measured side by side in one run, ``--repeat`` times;
the table quotes medians and their ratios.

**Reading many small files, cold.** Two data sets of ``--records``
records, each written three ways: arrayfs shards (4 files), the same bytes
as plain files in a directory, and a tar of those files mounted with
ratarmount (its index built before timing):

- *cheap*: records of ``--size`` random bytes (default 1,000), one per
  chunk (``group_size:1``, zstd: today's array_record default): decoding
  costs little next to the FUSE round trips;
- *costly*: records of 8 KiB of compressible text in chunks of 16
  (``group_size:16``, zstd): a read in random order decodes a 128 KiB chunk.

Each is read with open/read/close of every file by 1 reader and by
``--readers`` readers (4), as threads of one process or as processes, in
name order or in a random order, each time from a fresh mount (the kernel
knows no name) with the files' pages dropped (``posix_fadvise``). The goal
rows: 4 readers at least 1.7x arrayfs's own 1 reader and 2x ratarmount's 4
readers; 1 reader at least 2x ratarmount and 0.7x plain files.

**A 200 MiB record** (``--big-mib``), ``cat`` cold, against its *floor*:
reading the shard cold and hashing it (``highway_hash64``), in this
process; goal at most 1.3x the floor and 3x plain files.

**Also**: warm rereads, ``ls -l`` of the directory, ``find | xargs cat``,
the line count of ``arrayfs/fs/`` and whether it has an import cycle, the
figures of a soak run (``--soak-json``, from ``benchmarks/soak_mount.py
--json``), and the listing scale table (``--only listing``: ``ls -l`` of a
fresh mount of 10^5..10^7 records against a plain directory, and the
daemon's memory).

Other load on the machine moves every figure (the load average is printed
at the start and end); the ratios of one run are what to compare.

Usage::

    python benchmarks/bench_mount.py                   # goals (about 15 minutes with --repeat 3)
    python benchmarks/bench_mount.py --quick           # 5,000 records, 50 MiB, listing at 10^4, 10^5
    python benchmarks/bench_mount.py --only listing --listing 100000,1000000,10000000
    python benchmarks/bench_mount.py --json docs/benchmarks/mount.json --soak-json soak.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import shutil
import statistics
import subprocess
import sys
import tarfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

from arrayfs import ArrayRecordWriter  # noqa: E402
from arrayfs.fs import is_mounted, mount, unmount  # noqa: E402
from arrayfs.riegeli.hashing import highway_hash64  # noqa: E402

VENV_BIN = os.path.dirname(sys.executable)
KINDS = {"cheap": "group_size:1", "costly": "group_size:16"}
_WORDS = [w.encode() for w in "record chunk shard footer block header epoch seed batch sink source the a of".split()]


# -- data ------------------------------------------------------------------------


def _record(rnd, kind, size):
    if kind == "cheap":
        return rnd.randbytes(size)
    out = bytearray()
    while len(out) < 8192:
        out += rnd.choice(_WORDS) + b" "
    return bytes(out[:8192])


def build(work: str, n: int, size: int, big_mib: int) -> dict:
    """Create (or reuse) every copy of the data under ``work``: per kind,
    ``shards``, ``plain`` and ``tar``; and the big record's."""
    stamp = os.path.join(work, f"ready-{n}-{size}-{big_mib}")
    paths = {kind: {x: os.path.join(work, kind, x) for x in ("shards", "plain")} for kind in KINDS}
    for kind in KINDS:
        paths[kind]["tar"] = os.path.join(work, kind, "plain.tar")
    paths["big"] = {"shards": os.path.join(work, "big", "shards"), "plain": os.path.join(work, "big", "plain"),
                    "tar": os.path.join(work, "big", "big.tar")}
    if os.path.exists(stamp):
        return paths
    shutil.rmtree(work, ignore_errors=True)
    t = time.perf_counter()
    width = len(str(n - 1))
    for kind, options in KINDS.items():
        p = paths[kind]
        os.makedirs(p["shards"])
        os.makedirs(p["plain"])
        rnd = random.Random(kind)
        per = -(-n // 4)
        i = 0
        for s in range(4):
            with ArrayRecordWriter(os.path.join(p["shards"], f"train-{s:05d}-of-00004.array_record"),
                                   options) as w:
                for _ in range(min(per, n - i)):
                    rec = _record(rnd, kind, size)
                    w.write(rec)
                    with open(os.path.join(p["plain"], str(i).zfill(width)), "wb") as f:
                        f.write(rec)
                    i += 1
        with tarfile.open(p["tar"], "w") as tar:
            for name in sorted(os.listdir(p["plain"])):
                tar.add(os.path.join(p["plain"], name), arcname=name)
    p = paths["big"]
    os.makedirs(p["shards"])
    os.makedirs(p["plain"])
    big = random.Random(0).randbytes(big_mib << 20)
    with ArrayRecordWriter(os.path.join(p["shards"], "big.array_record"), "group_size:1") as w:
        w.write(big)
    with open(os.path.join(p["plain"], "0"), "wb") as f:
        f.write(big)
    with tarfile.open(p["tar"], "w") as tar:
        tar.add(os.path.join(p["plain"], "0"), arcname="0")
    os.sync()  # dirty pages cannot be dropped: "cold" must mean cold
    print(f"built data in {time.perf_counter() - t:.1f} s under {work}", flush=True)
    open(stamp, "w").close()
    return paths


def build_listing(work: str, n: int, group_size: int) -> str:
    """A directory holding one shard of ``n`` 13-byte records (Google's
    writer, zstd); reused when present."""
    d = os.path.join(work, f"listing-{n}-g{group_size}")
    stamp = os.path.join(work, f"listing-{n}-g{group_size}.ready")
    if os.path.exists(stamp):
        return d
    from array_record.python.array_record_module import ArrayRecordWriter as GoogleWriter

    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    t = time.perf_counter()
    w = GoogleWriter(os.path.join(d, "tiny.array_record"), f"group_size:{group_size}")
    for i in range(n):
        w.write(b"rec%010d" % i)
    w.close()
    print(f"wrote {n:,} records (group_size:{group_size}) in {time.perf_counter() - t:.1f} s", flush=True)
    open(stamp, "w").close()
    return d


def build_plain_dir(work: str, n: int) -> str:
    """A directory of ``n`` empty files named like the mount's records."""
    d = os.path.join(work, f"plain-{n}")
    stamp = os.path.join(work, f"plain-{n}.ready")
    if os.path.exists(stamp):
        return d
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    width = len(str(n - 1))
    t = time.perf_counter()
    for i in range(n):
        os.mknod(os.path.join(d, str(i).zfill(width)), 0o444 | 0o100000)
    print(f"made {n:,} empty files in {time.perf_counter() - t:.1f} s", flush=True)
    open(stamp, "w").close()
    return d


# -- mounts ----------------------------------------------------------------------


def _wait_mounted(mnt, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if is_mounted(mnt):
            try:
                os.listdir(mnt)
                return
            except OSError:
                pass
        time.sleep(0.05)
    raise RuntimeError(f"{mnt} did not come up")


def _umount(mnt):
    if is_mounted(mnt):
        try:
            unmount(mnt)
        except Exception:
            subprocess.run(["fusermount3", "-u", "-z", mnt], capture_output=True)
            subprocess.run(["fusermount", "-u", "-z", mnt], capture_output=True)
        deadline = time.monotonic() + 10
        while is_mounted(mnt) and time.monotonic() < deadline:
            time.sleep(0.05)


def _drop(path):
    """Drop ``path``'s pages (a file, or every file under a directory)."""
    files = [path] if os.path.isfile(path) else [os.path.join(path, f) for f in os.listdir(path)]
    for p in files:
        try:
            fd = os.open(p, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def rss_mib(pid) -> float:
    """Memory of the daemon whose coordinator is ``pid``: the proportional
    set size (shared pages counted once) of it and its worker processes
    (its children with its command line), MiB."""
    from soak_mount import daemon_processes

    total = 0.0
    for p in daemon_processes(pid):
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("Pss:")) / 1024
        except (OSError, StopIteration):
            pass
    return total


class System:
    """One way of serving the files: ``fresh(kind)`` gives a directory
    whose caches (kernel, page cache of the data) are cold."""

    def __init__(self, name, work, paths):
        self.name = name
        self.paths = paths
        self.mnt = os.path.join(work, f"mnt-{name}")
        os.makedirs(self.mnt, exist_ok=True)

    def fresh(self, kind) -> str:
        raise NotImplementedError

    def close(self):
        _umount(self.mnt)


class Plain(System):
    def __init__(self, work, paths):
        super().__init__("plain", work, paths)

    def fresh(self, kind):
        # Plain files: the page cache is the only cache to empty; dentries
        # and inodes stay (no portable way to drop just those).
        _drop(self.paths[kind]["plain"])
        return self.paths[kind]["plain"]


class ArrayFs(System):
    def __init__(self, work, paths, options=None):
        super().__init__("arrayfs", work, paths)
        self.options = options
        self.pid = None

    def fresh(self, kind):
        _umount(self.mnt)
        src = self.paths[kind]["shards"]
        _drop(src)
        self.pid = mount(src, self.mnt, watch=False, fuse_options=self.options)
        return self.mnt


class Ratarmount(System):
    def __init__(self, work, paths):
        super().__init__("ratarmount", work, paths)
        self.exe = os.path.join(VENV_BIN, "ratarmount")
        if not os.path.exists(self.exe):
            self.exe = shutil.which("ratarmount")
        for kind in paths:  # build the indexes now, outside of any timing
            self._mount(paths[kind]["tar"])
            _umount(self.mnt)

    def _mount(self, tar):
        subprocess.run([self.exe, tar, self.mnt], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_mounted(self.mnt)

    def fresh(self, kind):
        _umount(self.mnt)
        tar = self.paths[kind]["tar"]
        _drop(tar)
        self._mount(tar)
        return self.mnt


# -- measurements ----------------------------------------------------------------------


def _read_files(paths) -> None:
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            while os.read(fd, 1 << 20):
                pass
        finally:
            os.close(fd)


def read_all(d, names, readers, how="threads") -> float:
    """open/read/close every name of ``names`` in ``d`` (in that order,
    split round-robin between ``readers`` threads or processes); files/s."""
    paths = [os.path.join(d, n) for n in names]
    parts = [paths[i::readers] for i in range(readers)]
    errors = []

    def work(part):
        try:
            _read_files(part)
        except OSError as e:
            errors.append(e)

    if how == "processes":
        ctx = mp.get_context("fork")
        workers = [ctx.Process(target=_read_files, args=(p,)) for p in parts]
    else:
        workers = [threading.Thread(target=work, args=(p,)) for p in parts]
    t = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    dt = time.perf_counter() - t
    if errors or any(getattr(w, "exitcode", 0) for w in workers):
        raise RuntimeError(f"a reader failed reading {d}: {errors[:1]}")
    return len(paths) / dt


def shell(cmd, cwd=None) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, shell=True, check=True, cwd=cwd, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def names_of(d, n):
    names = sorted(x for x in os.listdir(d) if not x.startswith("."))
    assert len(names) == n, (d, len(names), n)
    return names


def big_floor(shard) -> float:
    """Seconds to read the big record's shard cold and hash it, in this
    process: what any reader of the record must do."""
    _drop(shard)
    t = time.perf_counter()
    with open(shard, "rb", buffering=0) as f:
        data = f.read()
    highway_hash64(data)
    return time.perf_counter() - t


def fs_lines() -> dict:
    """Lines of each module of arrayfs/fs/, and the import cycles among
    arrayfs's modules (tests/test_imports.py checks the same)."""
    fs = os.path.join(ROOT, "arrayfs", "fs")
    lines = {f: sum(1 for _ in open(os.path.join(fs, f))) for f in sorted(os.listdir(fs)) if f.endswith(".py")}
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    try:
        import test_imports

        test_imports.test_no_import_cycles()
        cycles = "none"
    except AssertionError as e:
        cycles = str(e)
    except ImportError:
        cycles = "not checked"
    return {"modules": lines, "total": sum(lines.values()), "import_cycles": cycles}


# -- the goals --------------------------------------------------------------------------

ORDERS = ("order", "random")
READS = ((1, "threads"), (4, "threads"), (4, "processes"))  # (readers, how); readers 4 stands for --readers


def run_rows(args, work) -> dict:
    """Every measurement, ``--repeat`` rounds, the systems side by side in
    each; returns ``{system: {key: [samples]}}``."""
    n = args.records
    paths = build(os.path.join(work, "rows"), n, args.size, args.big_mib)
    print(f"arrayfs mount options: {args.arrayfs_options or '(defaults)'}", flush=True)
    systems = [Plain(work, paths), ArrayFs(work, paths, args.arrayfs_options)]
    if not args.no_ratarmount:
        systems.append(Ratarmount(work, paths))
    res = {s.name: {} for s in systems}
    names = {kind: names_of(paths[kind]["plain"], n) for kind in KINDS}
    shuffled = {}
    for kind, ns in names.items():
        shuffled[kind] = list(ns)
        random.Random(1).shuffle(shuffled[kind])
    rows = set(args.rows)

    def note(system, key, value):
        res[system.name].setdefault(key, []).append(value)
        return value

    try:
        for rep in range(args.repeat):
            print(f"-- round {rep + 1} of {args.repeat}", flush=True)
            if "read" in rows:
                for kind in KINDS:
                    for order in ORDERS:
                        ns = names[kind] if order == "order" else shuffled[kind]
                        for readers, how in READS:
                            readers = readers if readers == 1 else args.readers
                            line = []
                            for s in systems:
                                d = s.fresh(kind)
                                v = note(s, f"{kind}/{order}/{how}/{readers}", read_all(d, ns, readers, how))
                                line.append(f"{s.name} {v:7.0f}")
                                if kind == "cheap" and order == "order" and how == "threads":
                                    w = note(s, f"read{readers if readers == 1 else 4}_warm",
                                             read_all(d, ns, readers, how))
                                    line[-1] += f" (warm {w:.0f})"
                            print(f"   {kind:6} {order:6} {readers} {how:9}: " + ", ".join(line) + " files/s", flush=True)
            if "ls" in rows:
                for s in systems:
                    d = s.fresh("cheap")
                    a = note(s, "ls_cold", shell(f"ls -l '{d}' > /dev/null"))
                    b = note(s, "ls_warm", shell(f"ls -l '{d}' > /dev/null"))
                    print(f"   {s.name}: ls -l {a:.2f} s, again {b:.2f} s", flush=True)
            if "find" in rows:
                for s in systems:
                    d = s.fresh("cheap")
                    a = note(s, "find", shell(f"find '{d}' -maxdepth 1 -type f -print0 | xargs -0 cat > /dev/null"))
                    print(f"   {s.name}: find | xargs cat {a:.2f} s", flush=True)
            if "big" in rows:
                shard = os.path.join(paths["big"]["shards"], "big.array_record")
                for s in systems:
                    d = s.fresh("big")
                    big = os.path.join(d, "0")
                    cold = note(s, "big_cold", shell(f"cat '{big}' > /dev/null"))
                    warm = note(s, "big_warm", min(shell(f"cat '{big}' > /dev/null") for _ in range(3)))
                    print(f"   {s.name}: cat {args.big_mib} MiB cold {cold:.2f} s, warm {warm:.3f} s", flush=True)
                    s.close()
                f = note(systems[1], "big_floor", big_floor(shard))
                print(f"   floor: read the shard cold and hash it: {f:.2f} s", flush=True)
            for s in systems:
                s.close()
    finally:
        for s in systems:
            s.close()
    return res


def _med(res, system, key):
    v = res.get(system, {}).get(key)
    return statistics.median(v) if v else None


def goals(res, args, lines, soak) -> list:
    """The goal rows: ``{"name", "arrayfs", "peer", "peer_value", "ratio",
    "goal", "ok"}``; ratios are "how many times better arrayfs is" for
    rates and "arrayfs / peer" for times."""
    out = []
    r4 = args.readers

    def row(name, a, peer, b, goal, higher=True, key=None):
        if a is None or b is None:
            return
        ratio = a / b
        ok = ratio >= goal if higher else ratio <= goal
        out.append({"name": name, "arrayfs": a, "peer": peer, "peer_value": b, "ratio": ratio,
                    "goal": f"{'>=' if higher else '<='} {goal:g}x", "ok": ok, "key": key})

    for kind in KINDS:
        for order in ORDERS:
            for _, how in READS[1:]:
                a4 = _med(res, "arrayfs", f"{kind}/{order}/{how}/{r4}")
                name = f"{r4} {how}, cold, {kind}, in {order if order == 'random' else 'name order'} (files/s)"
                key = "read4_cold" if (kind, order, how) == ("cheap", "order", "threads") else None
                row(name, a4, "arrayfs, 1 reader", _med(res, "arrayfs", f"{kind}/{order}/threads/1"), 1.7, key=key)
                row(name, a4, f"ratarmount, {r4} {how}", _med(res, "ratarmount", f"{kind}/{order}/{how}/{r4}"), 2.0,
                    key=key)
    for kind in KINDS:
        for order in ORDERS:
            a1 = _med(res, "arrayfs", f"{kind}/{order}/threads/1")
            name = f"1 reader, cold, {kind}, in {order if order == 'random' else 'name order'} (files/s)"
            key = "read1_cold" if (kind, order) == ("cheap", "order") else None
            row(name, a1, "ratarmount, 1 reader", _med(res, "ratarmount", f"{kind}/{order}/threads/1"), 2.0, key=key)
            row(name, a1, "plain files, 1 reader", _med(res, "plain", f"{kind}/{order}/threads/1"), 0.7, key=key)
    name = f"cat of a {args.big_mib} MiB record, cold (s)"
    row(name, _med(res, "arrayfs", "big_cold"), "floor: read the shard cold + hash", _med(res, "arrayfs", "big_floor"),
        1.3, higher=False, key="big_cold")
    row(name, _med(res, "arrayfs", "big_cold"), "plain files", _med(res, "plain", "big_cold"), 3.0, higher=False,
        key="big_cold")
    out.append({"name": "arrayfs/fs/ lines", "arrayfs": lines["total"], "peer": "goal", "peer_value": 2500,
                "ratio": lines["total"] / 2500, "goal": "<= 2500 lines, no import cycle",
                "ok": lines["total"] <= 2500 and lines["import_cycles"] == "none"})
    if soak:
        t = soak.get("totals", {})
        settled = (soak.get("files_settled") or {}).get("deleted")
        out.append({"name": f"soak, {soak.get('minutes')} min, {soak.get('readers')} readers", "arrayfs":
                    t.get("wrong", 0) + t.get("garbage", 0), "peer": "wrong bytes + garbage", "peer_value": 0,
                    "ratio": 0, "goal": "0 wrong bytes; 0 descriptors of deleted shards",
                    "ok": soak.get("alive") and t.get("wrong") == 0 and t.get("garbage") == 0 and settled == 0,
                    "reads": t.get("reads"), "deleted_descriptors": settled})
    return out


def print_goals(rows, res, lines, soak) -> None:
    print()
    hdr = f"{'goal row':62} {'arrayfs':>10} {'peer':>10} {'ratio':>7}  {'goal':>8}  {'':6} peer"
    print(hdr)
    print("-" * (len(hdr) + 30))
    for r in rows:
        a, b = r["arrayfs"], r["peer_value"]
        fa = f"{a:10.0f}" if a >= 100 else f"{a:10.3f}"
        fb = f"{b:10.0f}" if b >= 100 else f"{b:10.3f}"
        print(f"{r['name']:62} {fa} {fb} {r['ratio']:7.2f}  {r['goal']:>8}  {'ok' if r['ok'] else 'MISSED':6} "
              f"{r['peer']}")
    mods = ", ".join(f"{k[:-3]} {v}" for k, v in lines["modules"].items())
    print(f"\narrayfs/fs/: {lines['total']} lines ({mods}); import cycles: {lines['import_cycles']}")
    if soak:
        t = soak["totals"]
        first, last = soak.get("daemon_first"), soak.get("daemon_last")
        print(f"soak ({soak.get('minutes')} min, {soak.get('readers')} readers, {len(soak.get('changes', []))} changes):"
              f" {t['reads']:,} reads, {t['ok']:,} ok, EIO {t['eio']:,} (allowed {t['expected_eio']:,}), "
              f"errors while stable {t['stable_errors']:,}, wrong bytes {t['wrong']:,}, garbage {t['garbage']:,}; "
              f"daemon {'lived' if soak.get('alive') else 'DIED'}"
              + (f", PSS {first[0]:.0f} -> {last[0]:.0f} MiB, fds {first[1]} -> {last[1]}" if first and last else "")
              + f"; descriptors of deleted shards after two more refreshes: "
              f"{(soak.get('files_settled') or {}).get('deleted')}")
    print("(medians of every round; ratios > 1 favour arrayfs for files/s, times are arrayfs / peer)")


# The rows of docs/benchmarks/mount.json as before: key, label, higher is better.
LEGACY = [
    ("read1_cold", "open/read/close 1 thread, cold (files/s)", True),
    ("read1_warm", "open/read/close 1 thread, warm (files/s)", True),
    ("read4_cold", "open/read/close 4 threads, cold (files/s)", True),
    ("read4_warm", "open/read/close 4 threads, warm (files/s)", True),
    ("ls_cold", "ls -l of the directory, fresh mount (s)", False),
    ("ls_warm", "ls -l of the directory, again (s)", False),
    ("find", "find -type f | xargs cat (s)", False),
    ("big_cold", "cat 200 MiB record, cold (s)", False),
    ("big_warm", "cat 200 MiB record, warm (s)", False),
]


def legacy(res, args, goal_rows) -> tuple:
    """``(rows, raw)`` in the schema of the earlier mount.json."""
    alias = {"read1_cold": "cheap/order/threads/1", "read4_cold": f"cheap/order/threads/{args.readers}"}
    raw = {s: {k: statistics.median(v) for k, v in d.items()} for s, d in res.items()}
    for d in raw.values():
        for k, src in alias.items():
            if src in d:
                d[k] = d[src]
    rows = []
    for key, label, higher in LEGACY:
        av, pv, tv = (raw.get(s, {}).get(key) for s in ("arrayfs", "plain", "ratarmount"))
        if av is None:
            continue
        label = label.replace("200 MiB", f"{args.big_mib} MiB")
        rp = (av / pv if higher else pv / av) if pv else float("nan")
        rt = (av / tv if higher else tv / av) if tv else float("nan")
        # The ratarmount goal first: plot.py reads the first "x ratarmount".
        mine = sorted((g for g in goal_rows if g.get("key") == key), key=lambda g: "ratarmount" not in g["peer"])
        target = "; ".join(f"{g['goal']} {g['peer']}: {'ok' if g['ok'] else 'MISSED'} ({g['ratio']:.2f}x)"
                           for g in mine)
        rows.append({"measurement": label, "plain": pv, "arrayfs": av, "ratarmount": tv, "arrayfs_vs_plain": rp,
                     "arrayfs_vs_ratarmount": rt, "target": target})
    return rows, raw


# -- listing scale -------------------------------------------------------------------------


def run_listing(args, work) -> list:
    sizes = [int(float(x)) for x in args.listing.split(",") if x.strip()]
    mnt = os.path.join(work, "mnt-listing")
    os.makedirs(mnt, exist_ok=True)
    out = []
    plain_times = {}
    for n in sizes:
        plain_t = None
        estimated = n > args.plain_max
        if not estimated:
            d = build_plain_dir(work, n)
            shell(f"ls -l '{d}' > /dev/null")  # warm the dentry and inode caches: plain at its best
            plain_t = min(shell(f"ls -l '{d}' > /dev/null") for _ in range(2))
            plain_times[n] = plain_t
        for g in args.listing_group_sizes:
            src = build_listing(work, n, g)
            _umount(mnt)
            pid = mount(src, mnt, watch=False)
            try:
                rss0 = rss_mib(pid)
                os.stat(os.path.join(mnt, "0"))  # loads the shard's index
                rss1 = rss_mib(pid)
                t = shell(f"ls -l '{mnt}' > /dev/null")
                rss2 = rss_mib(pid)
                t2 = shell(f"ls -l '{mnt}' > /dev/null")
                rss3 = rss_mib(pid)
            finally:
                _umount(mnt)
            if estimated and plain_t is None and plain_times:
                m = max(plain_times)
                plain_t = plain_times[m] * n / m
            row = {
                "records": n, "group_size": g, "ls_fresh_s": t, "ls_again_s": t2,
                "plain_s": plain_t, "plain_estimated": estimated,
                "ratio_to_plain": t / plain_t if plain_t else float("nan"),
                "us_per_entry": 1e6 * t / n,
                "rss_mounted_mib": rss0, "rss_index_mib": rss1, "rss_after_ls_mib": rss2, "rss_after_2nd_ls_mib": rss3,
                "bytes_per_record_over_index": (max(rss2, rss3) - rss1) * 2**20 / n,
            }
            out.append(row)
            print(f"   {n:>11,} records g{g}: ls -l {t:7.2f} s (again {t2:6.2f}), plain "
                  f"{'~' if estimated else ''}{plain_t or float('nan'):6.2f} s, ratio {row['ratio_to_plain']:5.2f}, "
                  f"PSS {rss0:.0f} -> {rss1:.0f} (index) -> {rss2:.0f} MiB, "
                  f"{row['bytes_per_record_over_index']:.1f} B/record", flush=True)
    args.listing_lines = print_listing(out)
    return out


def print_listing(rows) -> list:
    """Print the listing scale table; returns its lines."""
    lines = []
    hdr = (f"{'records':>11} {'group':>6} {'ls -l (s)':>10} {'plain (s)':>10} {'ratio':>6} {'us/entry':>9} "
           f"{'growth':>7} {'plain gr':>8} {'PSS idx':>8} {'PSS end':>8} {'B/rec':>7}  goals: ratio <= 5, "
           "B/rec <= 200, growth as plain's")
    lines += [hdr, "-" * len(hdr)]
    prev = {}
    for r in rows:
        g = r["group_size"]
        growth = pgrowth = ""
        if g in prev:
            p = prev[g]
            scale = r["records"] / p["records"]
            growth = f"{(r['ls_fresh_s'] / p['ls_fresh_s']) / scale:6.2f}x"
            if r["plain_s"] and p["plain_s"] and not r["plain_estimated"]:
                pgrowth = f"{(r['plain_s'] / p['plain_s']) / scale:6.2f}x"
        prev[g] = r
        plain = f"{'~' if r['plain_estimated'] else ''}{r['plain_s']:.2f}" if r["plain_s"] else "n/a"
        ok = ("ok" if r["ratio_to_plain"] <= 5 else "MISSED") + "/" + (
            "ok" if r["bytes_per_record_over_index"] <= 200 else "MISSED")
        lines.append(f"{r['records']:>11,} {g:>6} {r['ls_fresh_s']:>10.2f} {plain:>10} {r['ratio_to_plain']:>6.2f} "
                     f"{r['us_per_entry']:>9.2f} {growth:>7} {pgrowth:>8} {r['rss_index_mib']:>8.0f} {r['rss_after_ls_mib']:>8.0f} "
                     f"{r['bytes_per_record_over_index']:>7.1f}  {ok}")
    lines.append("(growth: time ratio over record ratio between sizes, 1.00x is linear; `ls -l` itself sorts, so the "
                 "plain directory's growth is the reference; ~: plain time extrapolated linearly, which understates it; "
                 "PSS of the daemon's processes in MiB)")
    print()
    print("\n".join(lines))
    return lines



def run(args):
    work = os.path.abspath(args.workdir)
    os.makedirs(work, exist_ok=True)
    load_start = os.getloadavg()
    print(f"load average at start: {load_start}", flush=True)
    result = {"records": args.records, "record_bytes": args.size, "big_mib": args.big_mib,
              "arrayfs_options": args.arrayfs_options, "readers": args.readers, "repeat": args.repeat}
    soak = None
    if args.soak_json:
        with open(args.soak_json) as f:
            soak = json.load(f)
    lines = fs_lines()
    result["fs_lines"] = lines
    if soak:  # its figures, not every change it made
        result["soak"] = {k: v for k, v in soak.items() if k not in ("changes", "stats")}
        result["soak"]["num_changes"] = len(soak.get("changes", ()))
    result["rows"] = []
    if "rows" in args.only:
        res = run_rows(args, work)
        goal_rows = goals(res, args, lines, soak)
        print_goals(goal_rows, res, lines, soak)
        result["goals"] = goal_rows
        result["rows"], result["raw"] = legacy(res, args, goal_rows)
        result["samples"] = res
    if "listing" in args.only:
        print("\n-- listing scale", flush=True)
        result["listing"] = run_listing(args, work)
    load_end = os.getloadavg()
    print(f"load average at end: {load_end}")
    if args.json:
        from _common import dump_json, machine_info

        result["machine"] = machine_info()
        result["loadavg"] = {"start": load_start, "end": load_end}
        dump_json(args.json, result)
    if args.markdown and getattr(args, "listing_lines", None):
        load = ", ".join(f"{x:.2f}" for x in load_end)
        with open(args.markdown, "w") as f:
            f.write(f"Measured {time.strftime('%Y-%m-%d', time.gmtime())} on {os.cpu_count()} CPUs (load average "
                    f"at the end {load}) by `benchmarks/bench_mount.py --only listing --listing {args.listing}`: "
                    "`ls -l` of a fresh mount of one shard of N 13-byte records against a plain directory "
                    "of N empty files (tmpfs or disk, dentries warm), and the daemon's memory (PSS of its processes).\n\n```text\n")
            f.write("\n".join(args.listing_lines) + "\n```\n")


ROWS = ("read", "ls", "find", "big")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=20_000, help="records (files) per data set")
    ap.add_argument("--size", type=int, default=1000, help="bytes per cheap record")
    ap.add_argument("--big-mib", type=int, default=200, help="size of the big record (MiB)")
    ap.add_argument("--readers", type=int, default=4, help="readers of the parallel rows")
    ap.add_argument("--repeat", type=int, default=3, help="rounds; the table quotes medians")
    ap.add_argument("--quick", action="store_true", help="5,000 records, a 50 MiB record, 1 round, listing at 10^4, 10^5")
    ap.add_argument("--workdir", default="/tmp/arrayfs-bench-mount")
    ap.add_argument("--no-ratarmount", action="store_true")
    ap.add_argument("--only", nargs="+", choices=("rows", "listing"), default=["rows", "listing"])
    ap.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS), help="which mount rows to measure")
    ap.add_argument("--listing", default="100000,1000000", help="record counts of the listing scale table")
    ap.add_argument("--listing-group-sizes", type=lambda s: [int(x) for x in s.split(",")], default=[1, 1024])
    ap.add_argument("--plain-max", type=int, default=1_000_000,
                    help="largest plain directory to create (files); larger ones are extrapolated")
    ap.add_argument("--soak-json", metavar="FILE", help="include the figures of a soak run (soak_mount.py --json)")
    ap.add_argument("--json", metavar="OUT", help="also write the results as JSON to OUT")
    ap.add_argument("--markdown", metavar="OUT", help="write the listing scale table as markdown to OUT")
    ap.add_argument("--arrayfs-options", metavar="OPT[,OPT...]",
                    help="mount options for arrayfs, e.g. workers=4 or max_threads=2")
    args = ap.parse_args(argv)
    if args.quick:
        args.records = min(args.records, 5_000)
        args.big_mib = min(args.big_mib, 50)
        args.repeat = 1
        if args.listing == ap.get_default("listing"):
            args.listing = "10000,100000"
        if args.workdir == ap.get_default("workdir"):
            args.workdir += "-quick"
    run(args)


if __name__ == "__main__":
    main()
