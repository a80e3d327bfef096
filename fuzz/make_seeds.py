"""Write the seed corpora of the fuzz targets into ``fuzz/corpus/<target>/``.

The seeds are small files written by Google's ``array_record`` wheel (the
format's reference writer) with varied writer options, the chunks,
footers, postscripts and options strings cut from them, and TFRecord
files. Run: ``python fuzz/make_seeds.py [--out DIR]``. Seeds are rewritten
in place (same names); inputs libFuzzer added to a corpus stay.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import struct
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import numpy as np  # noqa: E402

from arrayfs.layout import decode_postscript  # noqa: E402
from arrayfs.riegeli.blocks import BLOCK_SIZE, CHUNK_HEADER_SIZE, add_with_overhead  # noqa: E402
from arrayfs.riegeli.chunk import SIMPLE, TRANSPOSED, decode_chunk, read_chunk  # noqa: E402
from arrayfs.riegeli.header import METADATA, PADDING  # noqa: E402
from arrayfs.riegeli.varint import encode_varints  # noqa: E402
from arrayfs.tfrecord import encode_tfrecord  # noqa: E402

TARGETS = ("file", "chunk", "transposed", "footer", "options", "tfrecord", "example")
TFDS_FIXTURE = os.path.join(os.path.dirname(HERE), "tests", "data", "tfds", "arrayfs_digits", "1.0.0")


def _proto(i: int) -> bytes:
    """A small serialized proto message (varint, string and nested fields),
    the kind of record the transposed encoding is made for."""
    name = f"record-{i}".encode()
    inner = bytes([0x08, i % 128, 0x15]) + struct.pack("<f", i / 3)
    return bytes([0x08, i % 100, 0x12, len(name)]) + name + bytes([0x1A, len(inner)]) + inner


def _records(n: int, seed: int, *, size: int = 40) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [bytes(rng.integers(97, 100, int(rng.integers(0, size)), dtype=np.uint8)) for _ in range(n)]


#: (name, writer options, records): Google-written files, each small.
def _files():
    rng = np.random.default_rng(1)
    return [
        ("empty", "group_size:1", []),
        ("one", "group_size:1", [b"the only record"]),
        ("g1_zstd", "group_size:1", _records(5, 2)),
        ("g3_uncompressed", "group_size:3,uncompressed", _records(7, 3)),
        ("g1000_brotli", "group_size:1000,brotli:6", _records(20, 4)),
        ("g3_snappy", "group_size:3,snappy", _records(8, 5)),
        ("g2_zstd1", "group_size:2,zstd:1", _records(5, 6)),
        ("transpose", "group_size:4,transpose:true,uncompressed", [_proto(i) for i in range(9)]),
        ("transpose_zstd", "group_size:8,transpose:true,zstd:3", [_proto(i) for i in range(8)] + [b"not a proto"]),
        ("transpose_brotli", "group_size:3,transpose:true,brotli", [_proto(i) for i in range(5)]),
        ("padded", "group_size:2,pad_to_block_boundary:true,uncompressed", _records(5, 7)),
        ("many_g1", "group_size:1", _records(100, 8, size=8)),
        ("transpose_vector", "group_size:600,transpose:true,zstd:1",
         [_proto(i) * (1 + i % 4) for i in range(600)]),
        ("cross_block", "group_size:1,uncompressed", [b"a", bytes(rng.integers(0, 256, 70_000, dtype=np.uint8)),
                                                      b"b"]),
    ]


def _google_write(path: str, options: str, records) -> None:
    from array_record.python.array_record_module import ArrayRecordWriter

    w = ArrayRecordWriter(path, options)
    for r in records:
        w.write(r)
    w.close()


def _chunks(buf: bytes):
    """``(offset, end, header, data)`` of every chunk of a file, in order."""
    out = []
    hdr, data, end = read_chunk(buf, 0)
    out.append((0, end, hdr, data))
    pos = end
    while pos < len(buf):
        hdr, data, end = read_chunk(buf, pos)
        out.append((pos, end, hdr, data))
        pos = end
    return out


def _put(out: str, target: str, name: str, data: bytes) -> None:
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"seed-{name}"), "wb") as f:
        f.write(data)


def _footer_input(values: bytes, offsets: np.ndarray, piece: int = 0) -> bytes:
    """The footer target's input for a decoded footer chunk (see
    ``fuzz_footer.py``): piece size byte, chunk count, sizes block, values."""
    sizes = encode_varints(np.diff(offsets).astype(np.uint64))
    n = len(offsets) - 2
    return bytes([piece]) + struct.pack("<HH", n, len(sizes)) + sizes + values


def make(out: str) -> dict:
    counts = dict.fromkeys(TARGETS, 0)

    def put(target, name, data):
        _put(out, target, name, data)
        counts[target] += 1

    options_seen = set()
    with tempfile.TemporaryDirectory() as tmp:
        for name, options, records in _files():
            path = os.path.join(tmp, name + ".array_record")
            _google_write(path, options, records)
            with open(path, "rb") as f:
                buf = f.read()
            put("file", name, buf)
            options_seen.add(options)
            for k, (off, _end, hdr, data) in enumerate(_chunks(buf)):
                # Header and data; not the padding (zeros) after them.
                window = buf[off : add_with_overhead(off, CHUNK_HEADER_SIZE + hdr.data_size)]
                if hdr.chunk_type != PADDING and len(window) <= 80_000:
                    put("chunk", f"{name}-{k}", struct.pack("<I", off)[:3] + window)
                if hdr.chunk_type in (TRANSPOSED, METADATA):
                    put("transposed", f"{name}-{k}",
                        struct.pack("<II", hdr.num_records, hdr.decoded_data_size) + bytes(data))
                if hdr.chunk_type == SIMPLE and off == len(buf) - BLOCK_SIZE:
                    values, offsets = decode_chunk(hdr, data, offset=off)
                    ps = bytes(values[offsets[0] : offsets[1]])
                    put("footer", f"{name}-postscript", b"\0" + struct.pack("<HH", 0, 0) + ps)
                    footer_offset, _ = decode_postscript(ps)
                    fh, fdata, _ = read_chunk(buf, footer_offset)
                    fvalues, foffsets = decode_chunk(fh, fdata, offset=footer_offset)
                    fvalues = bytes(fvalues)
                    put("footer", f"{name}-footer", _footer_input(fvalues, foffsets))
                    put("footer", f"{name}-footer-pieces", _footer_input(fvalues, foffsets, piece=3))
                    meta = fvalues[foffsets[0] : foffsets[1]]
                    put("footer", f"{name}-metadata", b"\0" + struct.pack("<HH", 0, 0) + meta)
    # Options strings: what the files above store, array_record's examples,
    # and reader options.
    strings = sorted(options_seen) + [
        "", "default", "group_size:65536,brotli:6", "zstd:-5,window_log:auto", "zstd:22,window_log:31",
        "snappy:2", "uncompressed,transpose,transpose_bucket_size:1.5k", "pad_to_block_boundary:true",
        "max_parallelism:auto,saturation_delay_ms:100", "brotli,window_log:24",
        "readahead_buffer_size:16MB,max_parallelism:4", "index_storage_option:offloaded,footer_prefetch_bytes:0",
        "readahead_buffer_size:0,footer_prefetch_bytes:auto", "group_size:1,,zstd",
    ]
    for s in strings:
        put("options", hashlib.sha1(s.encode()).hexdigest()[:12], s.encode())
    # TFRecord files.
    rng = np.random.default_rng(9)
    tf = {
        "empty": b"",
        "one": encode_tfrecord(b"hello"),
        "three": b"".join(encode_tfrecord(r) for r in (b"", b"x" * 100, bytes(range(256)))),
        "big": encode_tfrecord(bytes(rng.integers(0, 256, 70_000, dtype=np.uint8))),
    }
    tf["truncated"] = tf["three"][:-7]
    bad = bytearray(tf["three"])
    bad[14] ^= 1
    tf["bad_crc"] = bytes(bad)
    for name, data in tf.items():
        put("tfrecord", name, data)
    # Examples: records TensorFlow Datasets wrote (the TFDS test fixture),
    # and hand-made ones with each list kind, an unpacked float list and
    # an empty feature.
    from arrayfs import ArrayRecordDataSource
    from arrayfs.encoding import encode_example

    with ArrayRecordDataSource(TFDS_FIXTURE) as ds:
        for i in range(0, len(ds), 4):
            put("example", f"tfds-{i}", ds[i])
    put("example", "kinds", encode_example({"i": [1, -2], "f": [0.5], "b": [b"x", b""], "s": "text"}))
    put("example", "unpacked-floats", b"\x0a\x10\x0a\x0e\x0a\x01x\x12\x09\x12\x07\x0d\x00\x00\xc0\x3f\x0d\x00")
    put("example", "empty-feature", b"\x0a\x07\x0a\x05\x0a\x01e\x12\x00")
    put("example", "empty", b"")
    return counts


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(HERE, "corpus"), help="corpus root (default: fuzz/corpus)")
    args = ap.parse_args(argv)
    counts = make(args.out)
    print(" ".join(f"{t}:{n}" for t, n in counts.items()), "seeds in", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
