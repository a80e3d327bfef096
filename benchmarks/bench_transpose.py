"""Full reads of transposed ArrayRecord files: arrayfs vs Google's reader.

Two files are written with Google's writer and ``transpose:true``:
``protos`` (varied FileDescriptorProto messages: nested messages, repeated
and packed fields, strings, enums) and ``non-protos`` (JSON text records,
which no proto parser accepts, so the encoder stores them whole). For
each, in this one process and interleaved round by round, it times:

- ``read_all()`` of Google's ``ArrayRecordReader`` and of arrayfs's (its
  default threads, and one thread: the decoder holds the GIL in its
  sequential scans, so two threads contend for it);
- arrayfs's decoder alone (``decode_transposed_chunk`` over every chunk);
- the Python floor of ``read_all()``: the library calls no pure-Python
  decoder can avoid. Floor A is the decompression of every chunk's
  header, buckets and transitions (``parse_chunk``), one numpy pass over
  the decoded bytes (a ``take`` of ``decoded_data_size`` bytes through an
  int64 index) and the ``list[bytes]`` of the records, kept to the end as
  ``read_all()`` keeps them. Floor B adds the
  two sequential scans the format forces on a pure-Python decoder, in the
  C-iterator form arrayfs runs them: the transition bytes through the
  table automaton and the entries of the string buffers.

Prints wall time, MB/s (of record bytes) and CPU time (all threads), best
of ``--repeat`` rounds, then the ratios: Google / arrayfs (> 1: arrayfs is
faster; goal >= 0.5x) and arrayfs / floor (goal <= 1.3x). On a shared
machine the CPU columns are the steadier.

    .venv/bin/python benchmarks/bench_transpose.py [--mb 40] [--repeat 5]
        [--options 'group_size:1000,transpose:true,zstd:3'] [--kinds protos,non-protos]
        [--baseline OLD_TRANSPOSE.py]

``--baseline`` adds rows for another version of the decoder module (for
example ``git show 080f627:arrayfs/riegeli/transpose.py > old.py``), read
through the same arrayfs reader, so before and after compare in one run.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import random
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from array_record.python.array_record_module import ArrayRecordReader as GoogleReader  # noqa: E402
from array_record.python.array_record_module import ArrayRecordWriter as GoogleWriter  # noqa: E402
from google.protobuf import descriptor_pb2  # noqa: E402

import arrayfs  # noqa: E402
import arrayfs.riegeli.transpose as transpose_pkg  # noqa: E402
from arrayfs.file import ArrayRecordFile  # noqa: E402
from arrayfs.riegeli import chunk as chunk_mod  # noqa: E402
from arrayfs.riegeli.chunk import TRANSPOSED  # noqa: E402
from arrayfs.riegeli.transpose import decode_transposed_chunk  # noqa: E402
from arrayfs.riegeli.transpose.chunk_data import parse_chunk  # noqa: E402
from arrayfs.riegeli.transpose.machine import C_STRING  # noqa: E402
from arrayfs.riegeli.transpose.strings import StringEntries  # noqa: E402
from arrayfs.riegeli.transpose.transitions import _Automaton  # noqa: E402

GOAL_VS_GOOGLE = {"protos": 0.2, "non-protos": 0.5}  # issue 19
ROWS: list = []
GOAL_VS_FLOOR = 1.3


def proto_record(rng: random.Random, i: int) -> bytes:
    T = descriptor_pb2.FieldDescriptorProto
    fd = descriptor_pb2.FileDescriptorProto()
    fd.name = f"path/to/file_{i}_{rng.randrange(10**6)}.proto"
    fd.package = rng.choice(["a.b", "foo.bar.baz", "x"])
    for _ in range(rng.randrange(0, 3)):
        fd.dependency.append(f"dep/{rng.randrange(1000)}.proto")
    for m in range(rng.randrange(1, 4)):
        msg = fd.message_type.add()
        msg.name = f"Msg{m}_{rng.randrange(100000)}"
        for f in range(rng.randrange(0, 8)):
            fld = msg.field.add()
            fld.name = f"field_{f}_{'x' * rng.randrange(0, 20)}"
            fld.number = rng.randrange(1, 1 << 29)
            fld.type = rng.choice(list(T.Type.values()))
            fld.label = rng.choice([1, 2, 3])
            if rng.random() < 0.3:
                fld.default_value = str(rng.random())
            if rng.random() < 0.2:
                fld.options.packed = rng.random() < 0.5
        if rng.random() < 0.3:
            nested = msg.nested_type.add()
            nested.name = "Inner"
            nested.reserved_range.add(start=rng.randrange(100), end=rng.randrange(100, 10**6))
        if rng.random() < 0.2:
            e = msg.enum_type.add(name="E")
            for k in range(rng.randrange(1, 4)):
                e.value.add(name=f"V{k}", number=rng.randrange(-(1 << 31), 1 << 31))
    if rng.random() < 0.5:
        fd.source_code_info.location.add(
            path=[rng.randrange(0, 1000) for _ in range(rng.randrange(0, 6))],
            span=[rng.randrange(1 << 31) for _ in range(3)],
        )
    fd.options.java_package = "com.example"
    fd.options.optimize_for = rng.choice([1, 2, 3])
    return fd.SerializeToString()


_WORDS = "alpha beta gamma delta train image label score the of model data shard chunk record".split()


def json_record(rng: random.Random, i: int) -> bytes:
    doc = {
        "id": i,
        "text": " ".join(rng.choice(_WORDS) for _ in range(rng.randrange(5, 120))),
        "score": rng.random(),
        "tags": [rng.choice(_WORDS) for _ in range(rng.randrange(0, 6))],
    }
    return json.dumps(doc).encode()


KINDS = {"protos": proto_record, "non-protos": json_record}


def write_file(path: str, kind: str, mb: float, options: str) -> None:
    rng = random.Random(0)
    make = KINDS[kind]
    w = GoogleWriter(path, options)
    size = i = 0
    while size < mb * 1e6:
        r = make(rng, i)
        w.write(r)
        size += len(r)
        i += 1
    w.close()


def load_baseline(path: str):
    """Another version of the decoder module, importable with its relative
    imports (``from .compression import ...``)."""
    spec = importlib.util.spec_from_file_location("arrayfs.riegeli._baseline_transpose", path)
    mod = importlib.util.module_from_spec(spec)
    mod.__package__ = "arrayfs.riegeli"
    spec.loader.exec_module(mod)
    return mod


@contextlib.contextmanager
def decoder_swapped(fn):
    """The chunk layer decodes transposed chunks with ``fn`` meanwhile."""
    saved = [
        (m, m.decode_transposed_chunk) for m in (transpose_pkg, chunk_mod) if hasattr(m, "decode_transposed_chunk")
    ]
    for m, _ in saved:
        m.decode_transposed_chunk = fn
    try:
        yield
    finally:
        for m, f in saved:
            m.decode_transposed_chunk = f


def chunks_of(path: str) -> list:
    f = ArrayRecordFile(path)
    out = []
    for k in range(f.num_chunks):
        header, data = f.read_chunk_header(k)
        if header.chunk_type == TRANSPOSED:
            out.append((bytes(data), header.num_records, header.decoded_data_size))
    f.close()
    return out


def floor_parts(chunks: list) -> list:
    """What the floors need for each chunk, prepared outside the timing:
    the int64 index of the numpy pass, the records' offsets, the state
    machine, and where the string buffers are."""
    parts = []
    # One index for all chunks (indices past a chunk's buffers are clipped):
    # an index per chunk would hold 8 bytes per decoded byte meanwhile.
    idx = np.arange(max((d for _, _, d in chunks), default=0), dtype=np.int64)
    for data, n, d in chunks:
        values, offsets = decode_transposed_chunk(data, n, d)
        ch = parse_chunk(data, n, d)
        A = ch.machine.arrays()
        sb = [b for b in range(len(ch.bstart)) if A.buffer_class[b] == C_STRING]
        parts.append((data, n, d, idx[:d], offsets[:-1].tolist(), offsets[1:].tolist(), A, sb))
    return parts


def floor(parts: list, scans: bool) -> None:
    """Floor A (``scans`` false) or B of ``read_all()`` over ``parts``.
    Every record is kept to the end, as ``read_all()`` returns them all at
    once: their memory is new (page faults), not the last chunk's reused."""
    kept = []
    for data, n, d, idx, starts, ends, A, sb in parts:
        ch = parse_chunk(data, n, d)
        src = np.frombuffer(ch.src, dtype=np.uint8)[: ch.nsrc]
        out = src.take(idx, mode="clip") if ch.nsrc else np.zeros(d, dtype=np.uint8)
        mv = memoryview(out)
        kept += [bytes(mv[a:b]) for a, b in zip(starts, ends)]
        if not scans:
            continue
        if ch.trans:
            auto = _Automaton(A, ch.trans, "", int(A.nxt[A.chain_end[A.first]]))
            auto.run(ch.trans, 0, len(ch.trans), auto.start)
            auto.close()
        if sb:
            StringEntries(src, sb, np.array(ch.bstart), np.array(ch.bend))


def measure(fns: dict, repeat: int) -> dict:
    """Best wall and CPU time (all threads) of each function, the
    functions interleaved round by round."""
    best = {k: [float("inf"), float("inf")] for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            w, c = time.perf_counter(), time.process_time()
            fn()
            w, c = time.perf_counter() - w, time.process_time() - c
            best[k][0] = min(best[k][0], w)
            best[k][1] = min(best[k][1], c)
    return best


def run_kind(kind: str, args, tmpdir: str, baseline) -> None:
    path = os.path.join(args.dir or tmpdir, f"{kind}.array_record")
    if not os.path.exists(path):
        write_file(path, kind, args.mb, args.options)
    g = GoogleReader(path)
    expected = g.read_all()
    total = sum(map(len, expected))
    print(
        f"\n## {kind}: {len(expected)} records, {total / 1e6:.1f} MB of records, "
        f"{os.path.getsize(path) / 1e6:.1f} MB on disk ({args.options})"
    )
    r = arrayfs.ArrayRecordReader(path)
    r1 = arrayfs.ArrayRecordReader(path, "max_parallelism:1")
    assert r.read_all() == expected, "arrayfs read differs from Google's"
    chunks = chunks_of(path)
    parts = floor_parts(chunks)
    del expected

    def decode_only():
        for data, n, d in chunks:
            decode_transposed_chunk(data, n, d)

    fns = {
        "Google read_all": g.read_all,
        "arrayfs read_all": r.read_all,
        "arrayfs read_all, 1 thread": r1.read_all,
        "arrayfs decoder only": decode_only,
        "floor A (decompress + 1 pass)": lambda: floor(parts, False),
        "floor B (A + sequential scans)": lambda: floor(parts, True),
    }
    if baseline is not None:

        def base_read():
            with decoder_swapped(baseline.decode_transposed_chunk):
                r.read_all()

        def base_decode():
            for data, n, d in chunks:
                baseline.decode_transposed_chunk(data, n, d)

        fns["baseline read_all"] = base_read
        fns["baseline decoder only"] = base_decode
    best = measure(fns, args.repeat)
    r.close()
    r1.close()
    g.close()

    mb = total / 1e6
    print(f"{'':34s} {'wall':>9s} {'MB/s':>7s} {'CPU':>9s}")
    for name, (w, c) in best.items():
        print(f"{name:34s} {w * 1e3:7.0f}ms {mb / w:7.1f} {c * 1e3:7.0f}ms")
    gw, gc = best["Google read_all"]
    aw, ac = best["arrayfs read_all"]
    a1w, a1c = best["arrayfs read_all, 1 thread"]
    fa = best["floor A (decompress + 1 pass)"]
    fb = best["floor B (A + sequential scans)"]
    goal = GOAL_VS_GOOGLE.get(kind, 0.5)
    print(f"ratio Google/arrayfs read_all (wall): {gw / aw:.2f}x   (1 thread: {gw / a1w:.2f}x)   goal >= {goal}x")
    ROWS.append({"name": f"transposed read_all(), {kind}", "peer": "Google read_all", "ours": mb / aw,
                 "theirs": mb / gw, "unit": "MB/s", "ratio": gw / aw, "target": f">= {goal}"})
    ROWS.append({"name": f"transposed read_all(), {kind}: 1 thread / floor B (CPU)", "peer": "floor B",
                 "ratio": a1c / fb[1], "target": f"<= {GOAL_VS_FLOOR}", "higher_is_better": False})
    print(f"ratio Google/arrayfs read_all (CPU):  {gc / ac:.2f}x   (1 thread: {gc / a1c:.2f}x)")
    if baseline is not None:
        bw, bc = best["baseline read_all"]
        print(f"ratio Google/baseline read_all (wall): {gw / bw:.2f}x   (CPU: {gc / bc:.2f}x)")
    print(f"ratio arrayfs read_all (1 thread) / floor A (CPU): {a1c / fa[1]:.2f}x   goal <= {GOAL_VS_FLOOR}x")
    print(f"ratio arrayfs read_all (1 thread) / floor B (CPU): {a1c / fb[1]:.2f}x   goal <= {GOAL_VS_FLOOR}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=float, default=40, help="MB of records per file (default 40)")
    ap.add_argument("--repeat", type=int, default=5, help="rounds; the best counts (default 5)")
    ap.add_argument("--options", default="group_size:1000,transpose:true,zstd:3", help="Google writer options")
    ap.add_argument("--kinds", default="protos,non-protos", help="comma-separated: protos, non-protos")
    ap.add_argument("--dir", default=None, help="reuse or keep the files here (default: a temporary directory)")
    ap.add_argument("--baseline", default=None, help="another transpose.py to compare in the same run")
    ap.add_argument("--json", metavar="OUT", help="write the goal rows as JSON (see _common.py for the schema)")
    args = ap.parse_args()
    baseline = load_baseline(args.baseline) if args.baseline else None
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} before measuring")
    with tempfile.TemporaryDirectory() as tmpdir:
        for kind in args.kinds.split(","):
            run_kind(kind.strip(), args, tmpdir, baseline)
    print(f"\nload average after measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    if args.json:
        from _common import dump_json, machine_info

        dump_json(args.json, {"machine": machine_info(), "rows": ROWS})


if __name__ == "__main__":
    main()
