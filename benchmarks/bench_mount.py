#!/usr/bin/env python3
"""The FUSE mount against plain files and ratarmount, in one run.

Two parts; every row prints beside its peers, with the ratio and the goal.

**Mount rows** (``--records`` records of ``--size`` random bytes, default
100,000 of 1,000, written three ways: arrayfs shards (4 files,
``group_size:1``, zstd, today's array_record default), the same bytes as
plain files in a directory, and a tar of those files mounted with
ratarmount, its index built before timing; plus one record of ``--big-mib``
MiB, default 200). Each measured on a fresh mount (the kernel's caches of
the mount start empty; for plain files and the tar, the page cache of the
files is dropped with ``posix_fadvise(DONTNEED)``):

- open/read/close of every file, 1 thread and 4 threads, files/s: *cold*
  (fresh mount: the kernel looks every name up) and *warm* (second pass);
- ``ls -l`` of the whole directory (s), fresh mount and again;
- ``find DIR -maxdepth 1 -type f | xargs cat`` (s), fresh mount;
- the *floor* of the cold reads: every record decoded in this process
  from a cold page cache (records/s): what is left once FUSE is taken away;
- ``cat`` of the big record (s), cold and warm. Its *floor* is the same
  record decoded in this process from a cold page cache
  (``ArrayRecordDataSource[0]``): the file layer's work, which no mount can
  avoid; the row prints the mount's time over that floor.

**Listing scale** (``--listing 100000,1000000,10000000``): one shard of tiny
records (13 bytes; ``group_size:1`` and ``group_size:1024``, written with
Google's writer, the fastest to generate) per size, against a plain
directory of as many empty files (up to ``--plain-max`` files; above it the
plain time is extrapolated linearly from the largest plain directory and
marked ``~``). Per size: ``ls -l`` of a fresh mount (s), its ratio to the
plain directory (goal: <= 5x), the time per entry (goal: no growth with
size: linear listing), and the daemon's RSS after mounting, after its
dataset index is loaded (one ``stat``), and after the listing: the growth
over the listing per record (goal: <= 200 bytes per record beyond the
index).

Other load on the machine moves every figure (the load average is printed
at the start and end); the ratios are what to compare.

Usage::

    python benchmarks/bench_mount.py                   # mount rows (several minutes)
    python benchmarks/bench_mount.py --quick           # 10,000 records, 50 MiB, listing at 10^4, 10^5
    python benchmarks/bench_mount.py --only listing --listing 100000,1000000,10000000
    python benchmarks/bench_mount.py --json bench-out/mount.json
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tarfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from arrayfs import ArrayRecordDataSource, ArrayRecordWriter  # noqa: E402
from arrayfs.fs import is_mounted, mount, unmount  # noqa: E402

VENV_BIN = os.path.dirname(sys.executable)


# -- data ------------------------------------------------------------------------


def build(work: str, n: int, size: int, big_mib: int) -> dict:
    """Create (or reuse) the three copies of the data under ``work``."""
    stamp = os.path.join(work, f"ready-{n}-{size}-{big_mib}")
    paths = {
        "shards": os.path.join(work, "shards"),
        "plain": os.path.join(work, "plain"),
        "tar": os.path.join(work, "plain.tar"),
        "big_shard": os.path.join(work, "big", "big.array_record"),
        "big_plain": os.path.join(work, "big_plain", "big.bin"),
        "big_tar": os.path.join(work, "big.tar"),
    }
    if os.path.exists(stamp):
        return paths
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(paths["shards"])
    os.makedirs(paths["plain"])
    os.makedirs(os.path.dirname(paths["big_shard"]))
    os.makedirs(os.path.dirname(paths["big_plain"]))
    rnd = random.Random(0)
    width = len(str(n - 1))
    nshards = 4
    per = -(-n // nshards)
    t = time.perf_counter()
    i = 0
    for s in range(nshards):
        w = ArrayRecordWriter(os.path.join(paths["shards"], f"train-{s:05d}-of-{nshards:05d}.array_record"),
                              "group_size:1")
        for _ in range(min(per, n - i)):
            rec = rnd.randbytes(size)
            w.write(rec)
            with open(os.path.join(paths["plain"], str(i).zfill(width)), "wb") as f:
                f.write(rec)
            i += 1
        w.close()
    with tarfile.open(paths["tar"], "w") as tar:
        for name in sorted(os.listdir(paths["plain"])):
            tar.add(os.path.join(paths["plain"], name), arcname=name)
    big = rnd.randbytes(big_mib << 20)
    with ArrayRecordWriter(paths["big_shard"], "group_size:1") as w:
        w.write(big)
    with open(paths["big_plain"], "wb") as f:
        f.write(big)
    with tarfile.open(paths["big_tar"], "w") as tar:
        tar.add(paths["big_plain"], arcname="big.bin")
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
    """Resident set size of process ``pid`` (MiB)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class System:
    """One way of serving the files: ``fresh()`` gives a directory whose
    kernel caches are cold."""

    def __init__(self, name, work):
        self.name = name
        self.mnt = os.path.join(work, f"mnt-{name}")
        os.makedirs(self.mnt, exist_ok=True)

    def fresh(self, big=False) -> str:
        raise NotImplementedError

    def close(self):
        _umount(self.mnt)


class Plain(System):
    def __init__(self, work, paths):
        super().__init__("plain", work)
        self.paths = paths

    def fresh(self, big=False):
        # Plain files: the page cache is the only cache to empty; dentries
        # and inodes stay (no portable way to drop just those).
        p = os.path.dirname(self.paths["big_plain"]) if big else self.paths["plain"]
        _drop(p)
        return p


class ArrayFs(System):
    def __init__(self, work, paths, options=None):
        super().__init__("arrayfs", work)
        self.paths = paths
        self.options = options
        self.pid = None

    def fresh(self, big=False):
        _umount(self.mnt)
        src = os.path.dirname(self.paths["big_shard"]) if big else self.paths["shards"]
        _drop(src)
        self.pid = mount(src, self.mnt, watch=False, fuse_options=self.options)
        return self.mnt


class Ratarmount(System):
    def __init__(self, work, paths):
        super().__init__("ratarmount", work)
        self.paths = paths
        self.exe = os.path.join(VENV_BIN, "ratarmount")
        if not os.path.exists(self.exe):
            self.exe = shutil.which("ratarmount")
        # Build the indexes now, outside of any timing.
        for key in ("tar", "big_tar"):
            self._mount(self.paths[key])
            _umount(self.mnt)

    def _mount(self, tar):
        subprocess.run([self.exe, tar, self.mnt], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_mounted(self.mnt)

    def fresh(self, big=False):
        _umount(self.mnt)
        tar = self.paths["big_tar"] if big else self.paths["tar"]
        _drop(tar)
        self._mount(tar)
        return self.mnt


# -- measurements ----------------------------------------------------------------------


def read_all(d, names, threads) -> float:
    """open/read/close every name of ``names`` in ``d``; files/s."""
    paths = [os.path.join(d, n) for n in names]
    parts = [paths[i::threads] for i in range(threads)]
    errors = []

    def work(part):
        try:
            for p in part:
                fd = os.open(p, os.O_RDONLY)
                try:
                    while os.read(fd, 1 << 20):
                        pass
                finally:
                    os.close(fd)
        except OSError as e:
            errors.append(e)

    t = time.perf_counter()
    ts = [threading.Thread(target=work, args=(p,)) for p in parts]
    for th in ts:
        th.start()
    for th in ts:
        th.join()
    dt = time.perf_counter() - t
    if errors:
        raise errors[0]
    return len(paths) / dt


def shell(cmd, cwd=None) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, shell=True, check=True, cwd=cwd, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def names_of(d, n):
    names = sorted(x for x in os.listdir(d) if not x.startswith("."))
    assert len(names) == n, (d, len(names), n)
    return names


def read_floor(shards_dir) -> float:
    """Records/s of decoding every record in this process (one thread, page
    cache cold): the file layer's share of open/read/close, FUSE aside."""
    _drop(shards_dir)
    with ArrayRecordDataSource(shards_dir) as ds:
        n = len(ds)
        t = time.perf_counter()
        for i in range(n):
            ds[i]
        return n / (time.perf_counter() - t)


def decode_floor(path) -> float:
    """Seconds to decode the big record in this process, page cache cold:
    what the file layer costs, mount or not."""
    _drop(path)
    with ArrayRecordDataSource(path) as ds:
        t = time.perf_counter()
        ds[0]
        return time.perf_counter() - t


ROWS = ("read", "ls", "find", "big")


def run_rows(args, work) -> dict:
    n = args.records
    paths = build(os.path.join(work, "rows"), n, args.size, args.big_mib)
    print(f"arrayfs mount options: {args.arrayfs_options or '(defaults)'}", flush=True)
    systems = [Plain(work, paths), ArrayFs(work, paths, args.arrayfs_options)]
    if not args.no_ratarmount:
        systems.append(Ratarmount(work, paths))
    res = {s.name: {} for s in systems}
    rows = set(args.rows)
    try:
        for rep in range(args.repeat):
            for s in systems:
                r = res[s.name]
                print(f"-- {s.name}" + (f" (round {rep + 1})" if args.repeat > 1 else ""), flush=True)

                def keep(key, value, higher, r=r):
                    old = r.get(key)
                    r[key] = value if old is None else (max(old, value) if higher else min(old, value))
                    return value

                if "read" in rows:
                    d = s.fresh()
                    names = names_of(d, n)
                    for threads in (1, 4):
                        d = s.fresh()
                        cold = keep(f"read{threads}_cold", read_all(d, names, threads), True)
                        warm = keep(f"read{threads}_warm", read_all(d, names, threads), True)
                        print(f"   read {threads} thread(s): cold {cold:.0f} files/s, warm {warm:.0f} files/s",
                              flush=True)
                    if s.name == "arrayfs":
                        f = keep("read_floor", read_floor(paths["shards"]), True)
                        print(f"   floor: decoding every record in-process, 1 thread, cold: {f:.0f} records/s",
                              flush=True)
                if "ls" in rows:
                    d = s.fresh()
                    a = keep("ls_cold", shell(f"ls -l '{d}' > /dev/null"), False)
                    b = keep("ls_warm", shell(f"ls -l '{d}' > /dev/null"), False)
                    print(f"   ls -l: {a:.2f} s, again {b:.2f} s", flush=True)
                if "find" in rows:
                    d = s.fresh()
                    a = keep("find", shell(f"find '{d}' -maxdepth 1 -type f -print0 | xargs -0 cat > /dev/null"),
                             False)
                    print(f"   find | xargs cat: {a:.2f} s", flush=True)
                if "big" in rows:
                    d = s.fresh(big=True)
                    big = os.path.join(d, "0" if s.name == "arrayfs" else "big.bin")
                    cold = keep("big_cold", shell(f"cat '{big}' > /dev/null"), False)
                    warm = keep("big_warm", min(shell(f"cat '{big}' > /dev/null") for _ in range(3)), False)
                    mib = args.big_mib
                    print(f"   cat {mib} MiB record: cold {cold:.2f} s ({mib / cold:.0f} MiB/s), "
                          f"warm {warm:.3f} s ({mib / warm:.0f} MiB/s)", flush=True)
                    if s.name == "arrayfs":
                        f = keep("big_floor", decode_floor(paths["big_shard"]), False)
                        print(f"   floor: decoding it in-process, cold: {f:.2f} s", flush=True)
                s.close()
    finally:
        for s in systems:
            s.close()
    return res


def table(res, args):
    a, p, t = res["arrayfs"], res["plain"], res.get("ratarmount") or {}
    n = args.records
    mib = args.big_mib
    # key, label, higher is better, goals: list of (kind, value)
    rows = [
        ("read1_cold", "open/read/close 1 thread, cold (files/s)", True, [("rat", 2.0)]),
        ("read1_warm", "open/read/close 1 thread, warm (files/s)", True, [("rat", 2.0)]),
        ("read4_cold", "open/read/close 4 threads, cold (files/s)", True,
         [("self1", 1.0), ("rat", 1.5), ("rfloor", 1.3)]),
        ("read4_warm", "open/read/close 4 threads, warm (files/s)", True, [("abs", 12000)]),
        ("ls_cold", f"ls -l of {n} entries, fresh mount (s)", False, [("plainx", 5.0)]),
        ("ls_warm", f"ls -l of {n} entries, again (s)", False, [("plainx", 5.0)]),
        ("find", "find -type f | xargs cat (s)", False, []),
        ("big_cold", f"cat {mib} MiB record, cold (s)", False, [("rat", 1.0), ("floor", 1.3)]),
        ("big_warm", f"cat {mib} MiB record, warm (s)", False, [("plain", 0.5)]),
    ]
    hdr = (f"{'measure':44} {'plain':>9} {'arrayfs':>9} {'ratarmt':>9} {'af/plain':>8} {'af/ratar':>8}  "
           "goal")
    out = []
    print()
    print(hdr)
    print("-" * (len(hdr) + 40))
    for key, label, higher, goals in rows:
        if key not in a:
            continue
        av, pv, tv = a[key], p.get(key), t.get(key)
        # Ratios are "how many times better arrayfs is": speed / speed, or time / time.
        rp = (av / pv if higher else pv / av) if pv else float("nan")
        rt = (av / tv if higher else tv / av) if tv else float("nan")
        fmt = (lambda v: f"{v:9.0f}") if higher else (lambda v: f"{v:9.3f}")
        verdicts = []
        for kind, val in goals:
            if kind == "rat":
                if tv:
                    verdicts.append(f">= {val:g}x ratarmount: {'ok' if rt >= val else 'MISSED'}")
            elif kind == "self1":
                one = a.get("read1_cold")
                if one:
                    verdicts.append(f">= 1-thread cold ({one:.0f}): {'ok' if av >= val * one else 'MISSED'}"
                                    f" ({av / one:.2f}x)")
            elif kind == "abs":
                verdicts.append(f">= {val} files/s: {'ok' if av >= val else 'MISSED'}")
            elif kind == "plainx":
                if pv:
                    verdicts.append(f"<= {val:g}x plain: {'ok' if av <= val * pv else 'MISSED'} ({av / pv:.2f}x)")
            elif kind == "plain":
                if pv:
                    verdicts.append(f">= {val:g}x plain: {'ok' if rp >= val else 'MISSED'}")
            elif kind == "rfloor":
                fl = a.get("read_floor")
                if fl:
                    verdicts.append(f"<= {val:g}x floor ({fl:.0f}/s): {'ok' if fl <= val * av else 'MISSED'}"
                                    f" ({fl / av:.1f}x)")
            elif kind == "floor":
                fl = a.get("big_floor")
                if fl:
                    verdicts.append(f"<= {val:g}x floor {fl:.2f} s: {'ok' if av <= val * fl else 'MISSED'}"
                                    f" ({av / fl:.2f}x)")
        verdict = "; ".join(verdicts)
        print(f"{label:44} {fmt(pv) if pv else '      n/a'} {fmt(av)} {fmt(tv) if tv else '      n/a'} "
              f"{rp:8.2f} {rt:8.2f}  {verdict}")
        out.append({"measurement": label, "plain": pv, "arrayfs": av, "ratarmount": tv,
                    "arrayfs_vs_plain": rp, "arrayfs_vs_ratarmount": rt, "target": verdict})
    print("(ratios > 1: arrayfs faster; floors: the same records, or the big record, decoded in this process "
          "from a cold page cache: the file layer's work without FUSE)")
    return out


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
                  f"RSS {rss0:.0f} -> {rss1:.0f} (index) -> {rss2:.0f} MiB, "
                  f"{row['bytes_per_record_over_index']:.1f} B/record", flush=True)
    args.listing_lines = print_listing(out)
    return out


def print_listing(rows) -> list:
    """Print the listing scale table; returns its lines."""
    lines = []
    hdr = (f"{'records':>11} {'group':>6} {'ls -l (s)':>10} {'plain (s)':>10} {'ratio':>6} {'us/entry':>9} "
           f"{'growth':>7} {'plain gr':>8} {'RSS idx':>8} {'RSS end':>8} {'B/rec':>7}  goals: ratio <= 5, "
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
                 "RSS in MiB)")
    print()
    print("\n".join(lines))
    return lines


def run(args):
    work = os.path.abspath(args.workdir)
    os.makedirs(work, exist_ok=True)
    load_start = os.getloadavg()
    print(f"load average at start: {load_start}", flush=True)
    result = {"records": args.records, "record_bytes": args.size, "big_mib": args.big_mib,
              "arrayfs_options": args.arrayfs_options}
    rows = None
    if "rows" in args.only:
        res = run_rows(args, work)
        rows = table(res, args)
        result["rows"] = rows
        result["raw"] = res
    if "listing" in args.only:
        print("\n-- listing scale", flush=True)
        result["listing"] = run_listing(args, work)
    load_end = os.getloadavg()
    print(f"load average at end: {load_end}")
    if args.json:
        from _common import dump_json, machine_info

        result["machine"] = machine_info()
        result["loadavg"] = {"start": load_start, "end": load_end}
        if rows is None:
            result["rows"] = []
        dump_json(args.json, result)
    if args.markdown and getattr(args, "listing_lines", None):
        load = ", ".join(f"{x:.2f}" for x in load_end)
        with open(args.markdown, "w") as f:
            f.write(f"Measured {time.strftime('%Y-%m-%d', time.gmtime())} on {os.cpu_count()} CPUs (load average "
                    f"at the end {load}) by `benchmarks/bench_mount.py --only listing --listing {args.listing}`: "
                    "`ls -l` of a fresh mount of one shard of N 13-byte records against a plain directory "
                    "of N empty files (tmpfs or disk, dentries warm), and the daemon's RSS.\n\n```text\n")
            f.write("\n".join(args.listing_lines) + "\n```\n")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--size", type=int, default=1000, help="bytes per record")
    ap.add_argument("--big-mib", type=int, default=200, help="size of the big record (MiB)")
    ap.add_argument("--quick", action="store_true", help="10,000 records, a 50 MiB record, listing at 10^4 and 10^5")
    ap.add_argument("--workdir", default="/tmp/arrayfs-bench-mount")
    ap.add_argument("--no-ratarmount", action="store_true")
    ap.add_argument("--only", nargs="+", choices=("rows", "listing"), default=["rows", "listing"])
    ap.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS), help="which mount rows to measure")
    ap.add_argument("--repeat", type=int, default=1, help="rounds of the mount rows; the best of each is kept")
    ap.add_argument("--listing", default="100000,1000000", help="record counts of the listing scale table")
    ap.add_argument("--listing-group-sizes", type=lambda s: [int(x) for x in s.split(",")], default=[1, 1024])
    ap.add_argument("--plain-max", type=int, default=1_000_000,
                    help="largest plain directory to create (files); larger ones are extrapolated")
    ap.add_argument("--json", metavar="OUT", help="also write the results as JSON to OUT")
    ap.add_argument("--markdown", metavar="OUT", help="write the listing scale table as markdown to OUT")
    ap.add_argument("--arrayfs-options", metavar="OPT[,OPT...]",
                    help="mount options for arrayfs, e.g. nothreads or max_threads=2")
    args = ap.parse_args(argv)
    if args.quick:
        args.records = min(args.records, 10_000)
        args.big_mib = min(args.big_mib, 50)
        if args.listing == ap.get_default("listing"):
            args.listing = "10000,100000"
        if args.workdir == ap.get_default("workdir"):
            args.workdir += "-quick"
    run(args)


if __name__ == "__main__":
    main()
