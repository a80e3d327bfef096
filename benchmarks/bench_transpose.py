"""Full reads of transposed ArrayRecord files: arrayfs vs Google's reader.

Writes a few tens of MB of serialized protos (varied FileDescriptorProto
messages: nested messages, repeated and packed fields, strings, enums) with
Google's writer and ``transpose:true``, then times, in this one process,
``read_all()`` of Google's ``ArrayRecordReader`` and of arrayfs's, and the
decoder alone (``decode_transposed_chunk`` over every chunk, one thread).
Prints wall time, MB/s (of record bytes) and CPU time (all threads), and
the ratio arrayfs / Google (> 1: arrayfs is faster). Timings are the best
of ``--repeat`` runs; on a shared machine the CPU ratio is the steadier.

    .venv/bin/python benchmarks/bench_transpose.py [--mb 40] [--repeat 5]
        [--options 'group_size:1000,transpose:true,zstd:3']
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from array_record.python.array_record_module import ArrayRecordReader as GoogleReader  # noqa: E402
from array_record.python.array_record_module import ArrayRecordWriter as GoogleWriter  # noqa: E402
from google.protobuf import descriptor_pb2  # noqa: E402

import arrayfs  # noqa: E402
from arrayfs.file import ArrayRecordFile  # noqa: E402
from arrayfs.riegeli.chunk import TRANSPOSED  # noqa: E402
from arrayfs.riegeli.transpose import decode_transposed_chunk  # noqa: E402


def make_record(rng: random.Random, i: int) -> bytes:
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


def best_of(fn, repeat: int) -> tuple[float, float]:
    """Best wall time and best CPU time (all threads) of ``repeat`` runs."""
    wall, cpu = [], []
    for _ in range(repeat):
        w, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return min(wall), min(cpu)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=float, default=40, help="MB of records to write (default 40)")
    ap.add_argument("--repeat", type=int, default=5, help="runs per timing; the best counts (default 5)")
    ap.add_argument("--options", default="group_size:1000,transpose:true,zstd:3", help="Google writer options")
    ap.add_argument("--path", default=None, help="reuse or keep the file here (default: a temporary file)")
    args = ap.parse_args()

    tmpdir = None
    path = args.path
    if path is None:
        tmpdir = tempfile.TemporaryDirectory()
        path = os.path.join(tmpdir.name, "bench.array_record")
    if not os.path.exists(path):
        rng = random.Random(0)
        records, size = [], 0
        while size < args.mb * 1e6:
            r = make_record(rng, len(records))
            records.append(r)
            size += len(r)
        w = GoogleWriter(path, args.options)
        for r in records:
            w.write(r)
        w.close()
        del records
    g = GoogleReader(path)
    expected = g.read_all()
    total = sum(map(len, expected))
    n = len(expected)
    print(f"file: {path}  options: {args.options}")
    print(
        f"{n} records, {total / 1e6:.1f} MB of records, {os.path.getsize(path) / 1e6:.1f} MB on disk, {os.cpu_count()} CPUs"
    )

    with arrayfs.ArrayRecordReader(path) as r:
        got = r.read_all()
        assert got == expected, "arrayfs read differs from Google's"
        del got
        t_google = best_of(g.read_all, args.repeat)
        t_arrayfs = best_of(r.read_all, args.repeat)
    g.close()
    del expected

    f = ArrayRecordFile(path)
    chunks = []
    for k in range(f.num_chunks):
        header, data = f.read_chunk_header(k)
        if header.chunk_type == TRANSPOSED:
            chunks.append((bytes(data), header.num_records, header.decoded_data_size))
    f.close()

    def decode_only():
        for data, nrec, size in chunks:
            decode_transposed_chunk(data, nrec, size)

    t_decode = best_of(decode_only, args.repeat) if chunks else (float("nan"), float("nan"))

    mb = total / 1e6
    print(f"{'':37s} {'wall':>9s} {'MB/s':>7s} {'CPU':>9s}")
    for name, (w, c) in (
        ("Google  ArrayRecordReader.read_all", t_google),
        ("arrayfs ArrayRecordReader.read_all", t_arrayfs),
        ("arrayfs decode_transposed_chunk only", t_decode),
    ):
        print(f"{name:37s} {w * 1e3:7.0f}ms {mb / w:7.1f} {c * 1e3:7.0f}ms")
    print(f"ratio arrayfs/Google, read_all throughput (wall): {t_google[0] / t_arrayfs[0]:.2f}x")
    print(f"ratio arrayfs/Google, read_all CPU efficiency:    {t_google[1] / t_arrayfs[1]:.2f}x")
    print(f"load average while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    if tmpdir is not None:
        tmpdir.cleanup()


if __name__ == "__main__":
    main()
