#!/usr/bin/env python3
"""The FUSE mount against plain files and ratarmount, in one run.

Data: ``--records`` records of ``--size`` random bytes (default 100,000 of
1,000) written three ways: arrayfs shards (4 files, ``group_size:1``, zstd,
today's array_record default), the same bytes as plain files in a
directory, and a tar of those files mounted with ratarmount (its index is
built before timing). Plus one record of ``--big-mib`` MiB (default 200).

Measured, each on a fresh mount (so the kernel's caches start empty):

- open/read/close of every file, 1 thread and 4 threads, files/s: *cold*
  (fresh mount: the kernel looks every name up) and *warm* (second pass on
  the same mount);
- ``ls -l`` of the whole directory (s), fresh mount and again;
- ``find DIR -maxdepth 1 -type f | xargs cat`` (s), fresh mount
  (``-maxdepth 1`` because the arrayfs mount also holds ``.shards/``, the
  same records again);
- ``cat`` of the big record (s): cold (fresh mount, and the backing file
  dropped from the page cache with ``posix_fadvise(DONTNEED)``) and warm.

Then a table with ratios and the targets: 1 thread >= 2x ratarmount,
4 threads >= 12k files/s, ``ls -l`` of 100k <= 2 s, big record warm >=
0.5x plain file. Other load on the machine moves every figure; the script
prints the load average at start and end.

Usage::

    python benchmarks/bench_mount.py            # full run (several minutes)
    python benchmarks/bench_mount.py --quick    # 10,000 records, 50 MiB
    python benchmarks/bench_mount.py --arrayfs-options nothreads
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

from arrayfs import ArrayRecordWriter  # noqa: E402
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

    def fresh(self, big=False):
        _umount(self.mnt)
        src = os.path.dirname(self.paths["big_shard"]) if big else self.paths["shards"]
        _drop(src)
        mount(src, self.mnt, watch=False, fuse_options=self.options)
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


def run(args):
    work = os.path.abspath(args.workdir)
    n = args.records
    paths = build(work, n, args.size, args.big_mib)
    load_start = os.getloadavg()
    print(f"load average at start: {load_start}", flush=True)
    print(f"arrayfs mount options: {args.arrayfs_options or '(defaults)'}", flush=True)
    systems = [Plain(work, paths), ArrayFs(work, paths, args.arrayfs_options)]
    if not args.no_ratarmount:
        systems.append(Ratarmount(work, paths))
    res = {s.name: {} for s in systems}
    try:
        for s in systems:
            r = res[s.name]
            print(f"-- {s.name}", flush=True)
            d = s.fresh()
            names = names_of(d, n)
            s.close() if s.name != "plain" else None
            for threads in (1, 4):
                d = s.fresh()
                r[f"read{threads}_cold"] = read_all(d, names, threads)
                r[f"read{threads}_warm"] = read_all(d, names, threads)
                print(f"   read {threads} thread(s): cold {r[f'read{threads}_cold']:.0f} files/s, "
                      f"warm {r[f'read{threads}_warm']:.0f} files/s", flush=True)
            d = s.fresh()
            r["ls_cold"] = shell(f"ls -l '{d}' > /dev/null")
            r["ls_warm"] = shell(f"ls -l '{d}' > /dev/null")
            print(f"   ls -l: {r['ls_cold']:.2f} s, again {r['ls_warm']:.2f} s", flush=True)
            d = s.fresh()
            r["find"] = shell(f"find '{d}' -maxdepth 1 -type f -print0 | xargs -0 cat > /dev/null")
            print(f"   find | xargs cat: {r['find']:.2f} s", flush=True)
            d = s.fresh(big=True)
            big = os.path.join(d, "0" if s.name == "arrayfs" else "big.bin")
            r["big_cold"] = shell(f"cat '{big}' > /dev/null")
            r["big_warm"] = min(shell(f"cat '{big}' > /dev/null") for _ in range(3))
            mib = args.big_mib
            print(f"   cat {mib} MiB record: cold {r['big_cold']:.2f} s ({mib / r['big_cold']:.0f} MiB/s), "
                  f"warm {r['big_warm']:.3f} s ({mib / r['big_warm']:.0f} MiB/s)", flush=True)
            s.close()
    finally:
        for s in systems:
            s.close()
    load_end = os.getloadavg()
    print(f"load average at end: {load_end}")
    rows = table(res, args)
    if args.json:
        from _common import dump_json, machine_info

        dump_json(args.json, {
            "machine": machine_info(),
            "loadavg": {"start": load_start, "end": load_end},
            "records": n, "record_bytes": args.size, "big_mib": args.big_mib,
            "arrayfs_options": args.arrayfs_options,
            "rows": rows,
            "raw": res,
        })


def table(res, args):
    a, p, t = res["arrayfs"], res["plain"], res.get("ratarmount")
    n = args.records
    rows = [
        ("open/read/close 1 thread, cold (files/s)", "read1_cold", True, ("rat", 2.0)),
        ("open/read/close 1 thread, warm (files/s)", "read1_warm", True, ("rat", 2.0)),
        ("open/read/close 4 threads, cold (files/s)", "read4_cold", True, ("abs", 12000)),
        ("open/read/close 4 threads, warm (files/s)", "read4_warm", True, ("abs", 12000)),
        (f"ls -l of {n} entries, fresh mount (s)", "ls_cold", False, ("le", 2.0 * n / 100_000)),
        (f"ls -l of {n} entries, again (s)", "ls_warm", False, ("le", 2.0 * n / 100_000)),
        ("find -type f | xargs cat (s)", "find", False, None),
        (f"cat {args.big_mib} MiB record, cold (s)", "big_cold", False, None),
        (f"cat {args.big_mib} MiB record, warm (s)", "big_warm", False, ("plain", 0.5)),
    ]
    hdr = f"{'measure':46} {'plain':>9} {'arrayfs':>9} {'ratarmt':>9} {'af/plain':>9} {'af/ratar':>9}  target"
    out = []
    print()
    print(hdr)
    print("-" * len(hdr) + "-" * 20)
    for label, key, higher, target in rows:
        av, pv, tv = a[key], p[key], (t or {}).get(key)
        # Ratios are "how many times better arrayfs is": speed / speed.
        rp = av / pv if higher else pv / av
        rt = (av / tv if higher else tv / av) if tv else float("nan")
        fmt = (lambda v: f"{v:9.0f}") if higher else (lambda v: f"{v:9.3f}")
        verdict = ""
        if target:
            kind, val = target
            if kind == "rat":
                ok = rt >= val
                verdict = f">= {val:g}x ratarmount: {'ok' if ok else 'MISSED'}" if tv else ""
            elif kind == "abs":
                verdict = f">= {val} files/s: {'ok' if av >= val else 'MISSED'}"
            elif kind == "le":
                verdict = f"<= {val:g} s: {'ok' if av <= val else 'MISSED'}"
            elif kind == "plain":
                verdict = f">= {val:g}x plain: {'ok' if rp >= val else 'MISSED'}"
        print(f"{label:46} {fmt(pv)} {fmt(av)} {fmt(tv) if tv else '      n/a'} {rp:9.2f} {rt:9.2f}  {verdict}")
        out.append({"measurement": label, "plain": pv, "arrayfs": av, "ratarmount": tv,
                    "arrayfs_vs_plain": rp, "arrayfs_vs_ratarmount": rt, "target": verdict})
    print("(ratios > 1: arrayfs faster)")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--size", type=int, default=1000, help="bytes per record")
    ap.add_argument("--big-mib", type=int, default=200, help="size of the big record (MiB)")
    ap.add_argument("--quick", action="store_true", help="10,000 records and a 50 MiB record")
    ap.add_argument("--workdir", default="/tmp/arrayfs-bench-mount")
    ap.add_argument("--no-ratarmount", action="store_true")
    ap.add_argument("--json", metavar="OUT", help="also write the results as JSON to OUT")
    ap.add_argument("--arrayfs-options", metavar="OPT[,OPT...]",
                    help="mount options for arrayfs, e.g. nothreads (one FUSE thread: faster for small records)")
    args = ap.parse_args(argv)
    if args.quick:
        args.records = min(args.records, 10_000)
        args.big_mib = min(args.big_mib, 50)
        if args.workdir == ap.get_default("workdir"):
            args.workdir += "-quick"
    run(args)


if __name__ == "__main__":
    main()
