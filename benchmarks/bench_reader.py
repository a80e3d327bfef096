"""arrayfs's ArrayRecord reader vs Google's array_record, in one process.

Writes ``--mb`` MB (default 200; ``--quick``: 30) of 1,000-byte records with
Google's ``ArrayRecordWriter`` twice, ``group_size:1,zstd:3`` and
``group_size:1024,zstd:3``, then times on the same files:

* random single reads: Google's ``ArrayRecordDataSource[i]`` vs arrayfs
  ``reader[i]``;
* random batches of 256: ``ArrayRecordDataSource.__getitems__`` vs arrayfs
  ``reader.read(indices)``;
* full sequential read: ``ArrayRecordReader.read_all()`` for both, each
  round on a newly opened reader;
* the physical floor: bare zstd decompression of each chunk's values frame
  plus HighwayHash-64 of each chunk's header and data, in a tight loop over
  the chunks the same random batches touch (and over every chunk for the
  full read), with the chunk bytes found through arrayfs internals
  beforehand; the same calls on both cores as the libraries allow (the
  *2-core floor*: for one-record chunks a second thread decompresses most
  frames in one ``multi_decompress_to_buffer`` call while the first hashes;
  for large chunks two threads take every other chunk); the full read's
  floor also makes one ``bytes`` object per record, as every reader
  returns them; and for single reads, each read's calls (copy, two
  hashes, one decompression) on one thread.

The writer rows are in ``bench_writer.py``.

Prints each rate, each ratio (arrayfs / Google: > 1 means arrayfs is faster;
for the floor, arrayfs time / floor time: 1 means no overhead) and the target.
Timings are the best of ``--rounds`` rounds.

    .venv/bin/python benchmarks/bench_reader.py [--quick] [--mb 200] [--json OUT]
        [--dir DIR] [--keep] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import shutil
import sys
import tempfile
import time
from struct import unpack_from

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import best_time, dump_json, fmt_rate, machine_info, map_file, print_table, time_for  # noqa: E402

import arrayfs  # noqa: E402
from arrayfs.file import ArrayRecordFile  # noqa: E402
from arrayfs.riegeli.chunk import read_chunk  # noqa: E402
from arrayfs.riegeli.compression import ZSTD  # noqa: E402
from arrayfs.riegeli.hashing import highway_hash64  # noqa: E402
from arrayfs.riegeli.varint import read_varint  # noqa: E402

try:
    import zstandard
    from array_record.python import array_record_data_source as google_ds
    from array_record.python import array_record_module as google
except ImportError as e:  # pragma: no cover
    sys.exit(f"bench_reader needs array-record and zstandard installed ({e})")

RECORD_SIZE = 1000
BATCH = 256
TARGETS = {  # ratio name -> (comparison, threshold): the goals of issue 19
    "single": (">=", 50.0),
    "batch": (">=", 3.0),
    "batch/big-chunks": (">=", 1.2),
    "full": (">=", 1.3),
    "batch/floor": ("<=", 1.3),
    "single/big-chunks": (">=", 1.2),
    # Where a goal against Google is out of the libraries' reach: within
    # 1.3x of the floor (single reads: one thread; batches and scans: the
    # floor on both cores).
    "single/floor": ("<=", 1.3),
    "batch/floor2": ("<=", 1.3),
    "full/floor2": ("<=", 1.3),
}


def make_records(n: int, seed: int = 0) -> list[bytes]:
    """``n`` records of 1,000 bytes that zstd:3 shrinks to about 70%: a
    random header and a body over a 32-symbol alphabet."""
    rng = np.random.default_rng(seed)
    body = rng.integers(0, 32, size=(n, RECORD_SIZE), dtype=np.uint8) + ord("A")
    body[:, :16] = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
    return [row.tobytes() for row in body]


def google_write(path, options, records):
    w = google.ArrayRecordWriter(path, options)
    write = w.write
    for r in records:
        write(r)
    w.close()


def chunk_frames(path):
    """Per user chunk: ``(header, data, values_frame, decoded_size)``, the
    32 hashed header bytes and the rest as zero-copy views into an mmap of
    the file, found with arrayfs internals, so that the floor loops do
    nothing but hash and decompress."""
    f = ArrayRecordFile(path)
    offsets, counts, first = f.index()
    mm = map_file(path)
    out = []
    for off in offsets.tolist():
        header, data, _ = read_chunk(mm, off, verify=False)
        assert data[0] == ZSTD
        sizes_len, pos = read_varint(data, 1)
        values = data[pos + sizes_len :]
        size, start = read_varint(values, 0)
        head = memoryview(mm)[off + 8 : off + 40] if off % 65536 else memoryview(mm)[off + 32 : off + 64]
        out.append((head, data, values[start:], size))
    return f, out, first


def record_cuts(f, frames) -> list:
    """Per chunk, how the floor cuts its records, found outside the
    timings from arrayfs's sizes decoding: the ``struct`` format
    ``"{size}s" * n`` when all have one size (one ``unpack_from`` call, the
    fastest way Python has: no slice object per record), else the records'
    start offsets in its decoded values and the end (``list[int]``)."""
    out = []
    for k in range(len(frames)):
        sizes = f.chunk_record_sizes(k)
        if len(sizes) > 1 and int(sizes.min()) == int(sizes.max()) > 0:
            out.append(f"{int(sizes[0])}s" * len(sizes))
        else:
            out.append([0, *np.cumsum(sizes).tolist()])
    return out


def floor_loop(frames, chunk_ids, cuts=None, keep=None):
    """Bare work: HighwayHash of each chunk's header and data, zstd
    decompression of its values frame. One thread, one decompressor, no
    Python beyond the loop. With ``cuts`` (a scan of multi-record chunks:
    :func:`record_cuts`), also one ``bytes`` object per record, cut the
    fastest way Python has: every reader returns them (Google's included),
    so a scan's floor makes them too. With ``keep`` (a list), the records are appended to it: a
    scan returns them all at once, so their memory is new (page faults),
    not the memory of the chunk before, reused."""
    d = zstandard.ZstdDecompressor()
    dec = d.decompress
    h = highway_hash64
    for k in chunk_ids:
        head, data, frame, size = frames[k]
        h(head)
        h(data)
        values = dec(frame, size)  # max_output_size by position: keywords cost 0.3 us a call
        if cuts is not None:
            c = cuts[k]
            if type(c) is str:
                recs = unpack_from(c, values)
            else:
                recs = list(map(values.__getitem__, map(slice, c[:-1], c[1:])))
            if keep is not None:
                keep.extend(recs)
        elif keep is not None:
            keep.append(values)
    return keep


_pair = None


def _two():
    global _pair
    if _pair is None:
        from concurrent.futures import ThreadPoolExecutor

        _pair = ThreadPoolExecutor(1)
    return _pair


def two_core_floor(frames, chunk_ids, small: bool, cuts=None, keep=None):
    """The same bare calls on both cores, as the libraries allow. Small
    frames (one-record chunks): a second thread decompresses 85% of them in
    one ``multi_decompress_to_buffer`` call (the GIL released throughout)
    while this thread hashes every chunk and decompresses the rest; a
    handoff per 1 KB call costs more than the call. Large chunks: each of
    two threads hashes and decompresses every other chunk (each call is
    long enough to release the GIL profitably). ``keep``: as in
    :func:`floor_loop`."""
    pool = _two()
    if not small:
        ids = list(chunk_ids)
        other = [] if keep is not None else None
        fut = pool.submit(floor_loop, frames, ids[1::2], cuts, other)
        floor_loop(frames, ids[::2], cuts, keep)
        fut.result()
        if keep is not None:
            keep.extend(other)
        return keep
    ids = list(chunk_ids)
    mine = len(ids) - int(len(ids) * 0.85)
    rest = ids[mine:]
    listed = [frames[k][2] for k in rest]
    sizes = np.array([frames[k][3] for k in rest], dtype=np.uint64).tobytes()

    def helper():
        return zstandard.ZstdDecompressor().multi_decompress_to_buffer(listed, decompressed_sizes=sizes, threads=0)

    fut = pool.submit(helper)
    h = highway_hash64
    for k in ids:
        head, data, _, _ = frames[k]
        h(head)
        h(data)
    dec = zstandard.ZstdDecompressor().decompress
    recs = [dec(frames[k][2], frames[k][3]) for k in ids[:mine]]
    out = fut.result()
    recs += [out[i].tobytes() for i in range(len(out))]  # one bytes object per record, as a reader returns
    if keep is not None:
        keep.extend(recs)
    return keep


def scan_floor2(frames, blocks, small: bool, cuts):
    """:func:`two_core_floor` over each block of chunk ids in turn, every
    record kept to the end (a scan returns them all)."""
    kept = []
    for b in blocks:
        two_core_floor(frames, b, small, cuts, kept)
    return kept


def single_floor(mm_frames, ids):
    """A single read's bare calls: the chunk's bytes copied out of the map,
    its header and data hashed, its frame decompressed (one thread: one
    record cannot use two cores)."""
    d = zstandard.ZstdDecompressor().decompress
    h = highway_hash64
    for k in ids:
        head, data, frame, size = mm_frames[k]
        bytes(data)
        h(head)
        h(data)
        d(frame, size)  # max_output_size by position, as in floor_loop


def ratio_row(name, ours: float, theirs: float, kind: str, unit: str = "rec/s", label: str = ""):
    """A result row: rates and the ratio ours / theirs (times for the floor)."""
    ratio = ours / theirs if theirs else float("inf")
    cmp, target = TARGETS.get(kind, (None, None))
    ok = ""
    if cmp == ">=":
        ok = "ok" if ratio >= target else "MISSED"
    elif cmp == "<=":
        ok = "ok" if ratio <= target else "MISSED"
    tgt = f"{cmp} {target:g}" if cmp else ""
    return {"name": name, "kind": kind, "ours": ours, "theirs": theirs, "ratio": ratio, "target": tgt, "status": ok,
            "unit": unit, "label": label}


def bench_file(label, path, n, args, results, rows, profile_targets):
    rng = np.random.default_rng(1)
    print(f"\n== {label}: {path} ({os.path.getsize(path) / 1e6:.1f} MB, {n} records)", flush=True)
    ds = google_ds.ArrayRecordDataSource([path])
    ds[0]  # open the reader outside the timings
    ours = arrayfs.ArrayRecordReader(path)
    ours[0]
    f, frames, first = chunk_frames(path)
    group = int(first[1] - first[0]) if len(first) > 1 else 1

    # random single reads: as many as fit in --seconds, per round
    g_idx = rng.integers(0, n, 1 << 20).tolist()
    o_idx = rng.integers(0, n, 1 << 20).tolist()
    per_step = 100

    def google_single_step(k):
        base = (k * per_step) % (len(g_idx) - per_step)
        for i in g_idx[base : base + per_step]:
            ds[i]

    def our_single_step(k):
        base = (k * per_step) % (len(o_idx) - per_step)
        for i in o_idx[base : base + per_step]:
            ours[i]

    t_gs = time_for(f"{label} google DataSource[i]", google_single_step, per_step, min_seconds=args.seconds,
                    rounds=args.rounds)
    t_os = time_for(f"{label} arrayfs reader[i]", our_single_step, per_step, min_seconds=args.seconds,
                    rounds=args.rounds)
    rows.append(ratio_row(f"{label}: random single reads" + ("" if group == 1 else " (one record per call)"),
                          t_os.rate, t_gs.rate, "single" if group == 1 else "single/big-chunks", label=label))
    print(f"  single: google {fmt_rate(t_gs.rate)}, arrayfs {fmt_rate(t_os.rate)}", flush=True)

    singles_timed = []
    if group == 1:  # (a record of a large chunk: the floor decodes the chunk; no row)
        single_ids = (np.searchsorted(first, np.array(o_idx[:20_000]), side="right") - 1).tolist()
        t_sf = best_time(f"{label} floor (single reads)", lambda: single_floor(frames, single_ids),
                         len(single_ids), rounds=args.rounds)
        t_os2 = best_time(f"{label} arrayfs reader[i] (same reads)", lambda: [ours[i] for i in o_idx[:20_000]],
                          len(single_ids), rounds=args.rounds)
        rows.append(ratio_row(f"{label}: single read time / single-read floor time", t_os2.seconds, t_sf.seconds,
                              "single/floor", unit="s", label=label))
        singles_timed = [t_sf, t_os2]

    def our_singles():  # for the profile
        for i in o_idx[:20_000 if group == 1 else 200]:
            ours[i]

    # random batches of 256: a fixed set, the same for both and the floor
    n_batches = args.batches if group == 1 else max(4, args.batches // 10)
    batches = [rng.integers(0, n, BATCH) for _ in range(n_batches)]
    batch_lists = [b.tolist() for b in batches]
    for b, bl in zip(batches, batch_lists):  # both agree before timing
        assert ours.read(b) == ds.__getitems__(bl)

    def google_batches():
        for bl in batch_lists:
            ds.__getitems__(bl)

    def our_batches():
        for b in batches:
            ours.read(b)

    t_gb = best_time(f"{label} google __getitems__", google_batches, n_batches * BATCH, rounds=args.rounds)
    t_ob = best_time(f"{label} arrayfs read(indices)", our_batches, n_batches * BATCH, rounds=args.rounds)
    rows.append(ratio_row(f"{label}: random batches of {BATCH}", t_ob.rate, t_gb.rate,
                          "batch" if group == 1 else "batch/big-chunks", label=label))
    print(f"  batch: google {fmt_rate(t_gb.rate)}, arrayfs {fmt_rate(t_ob.rate)}", flush=True)

    # the floor for the same batches: each distinct chunk a batch touches
    chunk_lists = [np.unique(np.searchsorted(first, b, side="right") - 1).tolist() for b in batches]
    floor_ids = [k for cl in chunk_lists for k in cl]
    t_fb = best_time(f"{label} floor (batches)", lambda: floor_loop(frames, floor_ids), n_batches * BATCH,
                     rounds=args.rounds)
    # times, not rates: ours / floor
    rows.append(ratio_row(f"{label}: batch time / floor time", t_ob.seconds, t_fb.seconds,
                          "batch/floor" if group == 1 else "info", unit="s", label=label))
    t_fb2 = best_time(f"{label} 2-core floor (batches)",
                      lambda: [two_core_floor(frames, cl, group == 1) for cl in chunk_lists], n_batches * BATCH,
                      rounds=args.rounds)
    rows.append(ratio_row(f"{label}: batch time / 2-core floor time", t_ob.seconds, t_fb2.seconds,
                          "batch/floor2", unit="s", label=label))
    print(f"  floor for the batches: {fmt_rate(t_fb.rate)} ({t_fb.seconds * 1e3:.1f} ms vs arrayfs "
          f"{t_ob.seconds * 1e3:.1f} ms)", flush=True)

    # full sequential read
    # A scan opens the file afresh, as a job reading it once does: arrayfs
    # checks a multi-record chunk's data hash on its first read only, so a
    # second read_all() of the same reader would skip the hashing that
    # Google's reader (and the floor) do on every read.
    def google_full():
        r = google.ArrayRecordReader(path)
        r.read_all()
        r.close()

    def our_full():
        with arrayfs.ArrayRecordReader(path) as r:
            r.read_all()

    full_rounds = max(1, args.rounds - 1)
    t_gf = best_time(f"{label} google read_all", google_full, n, rounds=full_rounds)
    t_of = best_time(f"{label} arrayfs read_all", our_full, n, rounds=full_rounds)
    rows.append(ratio_row(f"{label}: full read_all()", t_of.rate, t_gf.rate, "full", label=label))
    all_ids = list(range(len(frames)))
    # A scan returns every record: multi-record chunks' floors cut them too.
    cuts = record_cuts(f, frames) if group > 1 else None
    # A scan's floors keep every record to the end, as read_all() does.
    t_ff = best_time(f"{label} floor (all chunks)", lambda: floor_loop(frames, all_ids, cuts, []), n,
                     rounds=full_rounds)
    rows.append(ratio_row(f"{label}: full read time / floor time", t_of.seconds, t_ff.seconds, "info", unit="s"))
    blocks = [all_ids[a : a + 8192] for a in range(0, len(all_ids), 8192)]
    t_ff2 = best_time(f"{label} 2-core floor (all chunks)", lambda: scan_floor2(frames, blocks, group == 1, cuts),
                      n, rounds=full_rounds)
    rows.append(ratio_row(f"{label}: full read time / 2-core floor time", t_of.seconds, t_ff2.seconds,
                          "full/floor2", unit="s", label=label))
    print(f"  full: google {fmt_rate(t_gf.rate)}, arrayfs {fmt_rate(t_of.rate)}, floor {fmt_rate(t_ff.rate)}",
          flush=True)

    results[label] = {
        "path": path, "records": n, "group_size": group, "file_bytes": os.path.getsize(path),
        "timings": [t.as_dict() for t in (t_gs, t_os, *singles_timed, t_gb, t_ob, t_fb, t_fb2, t_gf, t_of, t_ff,
                                          t_ff2)],
    }
    # Profiles run on one thread (max_parallelism:1): a thread pool's time
    # shows up in cProfile as lock waits, which says nothing.
    plain = arrayfs.ArrayRecordReader(path, "max_parallelism:1")
    keep = [plain]

    def plain_batches():
        for b in batches:
            plain.read(b)

    profile_targets[label] = {"single": our_singles, "batch": plain_batches, "full": plain.read_all, "_keep": keep}
    ds.__exit__(None, None, None)
    return ours, f


def profile(fn, top: int) -> str:
    pr = cProfile.Profile()
    pr.enable()
    fn()
    pr.disable()
    s = io.StringIO()
    pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(top)
    return s.getvalue()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=200.0, help="MB of records per file (default 200)")
    ap.add_argument("--quick", action="store_true", help="30 MB files and fewer reads")
    ap.add_argument("--dir", default=None, help="where to write the files (default: a temporary directory)")
    ap.add_argument("--keep", action="store_true", help="keep the files")
    ap.add_argument("--rounds", type=int, default=3, help="timing rounds, best taken (default 3)")
    ap.add_argument("--json", metavar="OUT", help="write the results as JSON to OUT")
    ap.add_argument("--profile", action="store_true", help="cProfile arrayfs on each workload that misses its target")
    ap.add_argument("--profile-top", type=int, default=25)
    args = ap.parse_args(argv)
    if args.quick:
        args.mb = min(args.mb, 30.0)
    n = int(args.mb * 1e6 // RECORD_SIZE)
    args.seconds = 0.5 if args.quick else 1.0
    args.batches = 40 if args.quick else 200

    results: dict = {"machine": machine_info(), "records": n, "record_size": RECORD_SIZE, "args": vars(args)}
    workdir = args.dir or tempfile.mkdtemp(prefix="arrayfs-bench-")
    os.makedirs(workdir, exist_ok=True)
    info = results["machine"]
    print(f"arrayfs bench_reader: {n} records of {RECORD_SIZE} bytes per file, in {workdir}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    results["load_before"] = load
    if load > (os.cpu_count() or 1) * 0.75:
        print(f"warning: load average {load:.1f} on {os.cpu_count()} CPUs: other work competes, timings are noisy")
    print(f"machine: {info['cpu']} x{info['cpu_count']}, python {info['python']}, "
          f"array_record {info['array_record']}, zstandard {info['zstandard']}")
    t0 = time.perf_counter()
    records = make_records(n)
    print(f"made records in {time.perf_counter() - t0:.1f} s", flush=True)

    rows: list[dict] = []
    profile_targets: dict = {}
    keep_open = []
    try:
        files = {}
        for label, options in (("group_size:1", "group_size:1,zstd:3"), ("group_size:1024", "group_size:1024,zstd:3")):
            path = os.path.join(workdir, f"bench-{label.replace(':', '')}.array_record")
            if not os.path.exists(path) or ArrayRecordFile(path).num_records != n:
                t0 = time.perf_counter()
                google_write(path, options, records)
                print(f"wrote {path} with Google's writer in {time.perf_counter() - t0:.1f} s", flush=True)
            files[label] = (path, options)
        for label, (path, _options) in files.items():
            keep_open.append(bench_file(label, path, n, args, results, rows, profile_targets))

        print("\n== results (ratio = arrayfs / Google; for floor rows, arrayfs time / floor time)\n")
        table = []
        for r in rows:
            if r["unit"] == "s":
                ours, theirs = f"{r['ours'] * 1e3:.1f} ms", f"{r['theirs'] * 1e3:.1f} ms (floor)"
            else:
                ours, theirs = fmt_rate(r["ours"]), fmt_rate(r["theirs"])
            table.append((r["name"], theirs, ours, f"{r['ratio']:.2f}x", r["target"], r["status"]))
        print_table(table, ["workload", "Google / floor", "arrayfs", "ratio", "target", ""])
        results["rows"] = rows
        missed = [r for r in rows if r["status"] == "MISSED"]
        print(f"\n{len(missed)} target(s) missed" + (": " + ", ".join(r["name"] for r in missed) if missed else ""))

        if args.profile:
            # profile arrayfs on the read workloads that missed their target
            for r in missed:
                fn = profile_targets.get(r["label"], {}).get(r["kind"].split("/")[0])
                if fn is not None:
                    print(f"\n== cProfile of arrayfs, {r['name']}\n")
                    print(profile(fn, args.profile_top))
    finally:
        for r, f in keep_open:
            r.close()
            f.close()
        for targets in profile_targets.values():
            for r in targets.get("_keep", ()):
                r.close()
        if not args.keep and not args.dir:
            shutil.rmtree(workdir, ignore_errors=True)

    results["load_after"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if args.json:
        dump_json(args.json, results)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
