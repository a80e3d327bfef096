"""Transposed chunks ('t') and the file metadata chunk ('m').

Files are written by Google's array_record writer (the encoder under test
is riegeli's TransposeEncoder) and read back through arrayfs's reader, and
single chunks are fed to the decoder directly: both of its decoders (the
state-by-state interpreter and the vectorised one) must agree with each
other and with the records written, and malformed chunks must raise
TransposeError, never hang or allocate from unchecked sizes.
"""

from __future__ import annotations

import random
import time

import numpy as np
import pytest
from _transpose_helpers import (
    descriptor_record,
    google_read_all,
    google_write,
    group_record,
    join_chunk,
    mixed_records,
    nonproto_record,
    split_chunk,
    transposed_chunks,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import arrayfs
from arrayfs.errors import ArrayRecordError
from arrayfs.riegeli.transpose import (
    TransposeError,
    decode_records_metadata,
    decode_transposed_chunk,
    gather,
    parse_records_metadata,
    transitions,
    vector,
)
from arrayfs.riegeli.transpose import decode as tpd
from arrayfs.riegeli.transpose.chunk_data import reserve_heads
from arrayfs.riegeli.transpose.interpreter import decode_scalar
from arrayfs.riegeli.transpose.strings import StringEntries
from arrayfs.riegeli.transpose.vector import decode_vector

COMPRESSIONS = ["uncompressed", "brotli:6", "zstd:3", "snappy"]
# The interpreter and the vectorised decoder, each with its form of the
# parsed chunk.
DECODERS = [(tpd.parse_for_scalar, decode_scalar), (tpd.parse_for_vector, decode_vector)]


def vector_chunk(data, n, d):
    return tpd.parse_for_vector(data, n, d)


def records_of(values, offsets) -> list[bytes]:
    assert offsets.dtype == np.int64
    assert offsets[0] == 0 and offsets[-1] == len(values)
    assert (np.diff(offsets) >= 0).all()
    return [bytes(values[a:b]) for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())]


def both_decoders(data, n, d):
    """Decode with the interpreter and the vectorised decoder; they must
    agree. Returns the records."""
    v1, o1 = decode_scalar(tpd.parse_for_scalar(data, n, d), n, d)
    v2, o2 = decode_vector(vector_chunk(data, n, d), n, d)
    assert bytes(v1) == bytes(v2)
    assert np.array_equal(o1, o2)
    return records_of(v1, o1)


def check_file(path, records):
    """arrayfs reads what Google wrote, as Google's reader does; every
    transposed chunk decodes the same with both decoders."""
    assert google_read_all(path) == records
    with arrayfs.ArrayRecordReader(str(path)) as r:
        assert r.read_all() == records
    got = []
    chunks = transposed_chunks(path)
    assert chunks, "the writer wrote no transposed chunk"
    for n, d, data in chunks:
        got += both_decoders(data, n, d)
    assert got == records


# --------------------------------------------------------------------------
# Files written by Google's writer, read end to end


# riegeli ignores the bucket size without compression (one bucket a type).
OPTION_MATRIX = [("uncompressed", "")] + [
    (comp, bucket)
    for comp in COMPRESSIONS[1:]
    for bucket in (",transpose_bucket_size:auto", ",transpose_bucket_size:100", ",transpose_bucket_size:1000")
]


@pytest.mark.parametrize("compression,bucket", OPTION_MATRIX)
@pytest.mark.parametrize("group_size", [1, 1000])
def test_mixed_records_every_option(tmp_path, compression, group_size, bucket):
    rng = random.Random(sum(map(ord, compression + bucket)) + group_size)
    records = mixed_records(rng, 40 if group_size == 1 else 600)
    path = tmp_path / "mixed.array_record"
    google_write(path, records, f"group_size:{group_size},transpose:true{bucket},{compression}")
    check_file(path, records)


@pytest.mark.parametrize(
    "kind",
    ["protos", "nonproto", "empty", "groups", "long_strings", "wide_message", "deep_nesting", "tiny_values"],
)
@pytest.mark.parametrize("compression", ["uncompressed", "zstd:1"])
def test_record_kinds(tmp_path, kind, compression):
    rng = random.Random(f"{kind}/{compression}")
    records = {
        "protos": lambda: [descriptor_record(rng, i) for i in range(600)],
        "nonproto": lambda: [nonproto_record(rng) for _ in range(300)],
        "empty": lambda: [b""] * 500,
        "groups": lambda: [group_record(rng) for _ in range(800)],
        "long_strings": lambda: [long_string_record(rng) for _ in range(40)],
        "wide_message": lambda: [wide_record(rng) for _ in range(300)],
        "deep_nesting": lambda: [deep_record(rng, depth) for depth in range(0, 140, 3)],
        "tiny_values": lambda: [bytes([8, rng.randrange(4)]) for _ in range(3000)],
    }[kind]()
    path = tmp_path / f"{kind}.array_record"
    google_write(path, records, f"group_size:100000,transpose:true,{compression}")
    check_file(path, records)


def long_string_record(rng) -> bytes:
    # Strings whose lengths take 2 and 3 varint bytes, in submessages.
    from google.protobuf import descriptor_pb2

    fd = descriptor_pb2.FileDescriptorProto()
    fd.name = "n" * rng.choice([0, 127, 128, 16383, 16384, 70000])
    fd.source_code_info.location.add(leading_comments="c" * rng.randrange(0, 40000))
    return fd.SerializeToString()


def wide_record(rng) -> bytes:
    # 120 fields always present in the same order, each value two varint
    # bytes: long chains of implicit transitions in the state machine.
    out = bytearray()
    for f in range(1, 121):
        out += tp_varint(f << 3) + tp_varint(rng.randrange(128, 1 << 14))
    return bytes(out)


def deep_record(rng, depth: int) -> bytes:
    # Nested submessages, deeper than riegeli's recursion limit (100) for
    # the deepest ones, with lengths crossing varint size boundaries.
    inner = tp_varint(1 << 3) + tp_varint(rng.randrange(1 << 30)) + bytes([0x12, 1, 7]) * rng.randrange(0, 60)
    for _ in range(depth):
        inner = tp_varint(2 << 3 | 2) + tp_varint(len(inner)) + inner
    return bytes(inner)


def tp_varint(v: int) -> bytes:
    out = bytearray()
    while v >= 0x80:
        out.append(v & 0x7F | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def test_reader_indexing_on_transposed_file(tmp_path):
    rng = random.Random(8)
    records = mixed_records(rng, 700)
    path = tmp_path / "t.array_record"
    google_write(path, records, "group_size:64,transpose:true,zstd:3")
    with arrayfs.ArrayRecordReader(str(path)) as r:
        assert r.num_records() == len(records)
        picks = [0, 699, 64, 63, 128, 5, 5]
        assert r.read(picks) == [records[i] for i in picks]
        assert r.read(100, 300) == records[100:300]


# --------------------------------------------------------------------------
# The two decoders, the automaton's fallbacks, the public contract


@pytest.fixture(scope="module")
def sample_chunks(tmp_path_factory):
    """Transposed chunks of mixed records: uncompressed and zstd."""
    rng = random.Random(7)
    out = {}
    for comp in ("uncompressed", "zstd:3"):
        path = tmp_path_factory.mktemp("chunks") / f"{comp[:4]}.array_record"
        records = mixed_records(rng, 400)
        google_write(path, records, f"group_size:200,transpose:true,{comp}")
        out[comp] = (records, transposed_chunks(path))
    small = tmp_path_factory.mktemp("chunks") / "small.array_record"
    records = mixed_records(rng, 24)
    google_write(small, records, "group_size:3,transpose:true,uncompressed")
    out["small"] = (records, transposed_chunks(small))
    return out


def test_public_function_contract(sample_chunks):
    for records, chunks in sample_chunks.values():
        got = []
        for n, d, data in chunks:
            values, offsets = decode_transposed_chunk(memoryview(data), n, d)
            assert len(values) == d and offsets.shape == (n + 1,)
            got += records_of(values, offsets)
        assert got == records


def test_slow_automaton_and_long_chain_paths(sample_chunks, tmp_path, monkeypatch):
    records, chunks = sample_chunks["zstd:3"]
    monkeypatch.setattr(transitions, "MAX_TABLE_STATES", 0)
    got = []
    for n, d, data in chunks:
        got += records_of(*decode_vector(vector_chunk(data, n, d), n, d))
    assert got == records
    # Chains of implicit transitions longer than 64 states (doubling path).
    rng = random.Random(5)
    wide = [wide_record(rng) for _ in range(50)]
    path = tmp_path / "wide.array_record"
    google_write(path, wide, "group_size:1000,transpose:true,uncompressed")
    ((n, d, data),) = transposed_chunks(path)
    c = vector_chunk(data, n, d)
    assert int(c.machine.arrays().chain_len.max()) > 64
    assert records_of(*decode_vector(c, n, d)) == wide


@pytest.fixture(scope="module")
def varied_chunks(tmp_path_factory):
    """Chunks that stress the vectorised decoder's blocks: nested
    submessages (deeper than the encoder's recursion limit), long strings
    (lengths of 1, 2 and 3 bytes), groups, non-proto records, empty
    records."""
    rng = random.Random(21)
    records = (
        mixed_records(rng, 300)
        + [deep_record(rng, depth) for depth in range(0, 120, 7)]
        + [long_string_record(rng) for _ in range(6)]
        + [b""] * 5
        + [nonproto_record(rng) for _ in range(20)]
    )
    rng.shuffle(records)
    out = []
    for comp in ("uncompressed", "zstd:1"):
        path = tmp_path_factory.mktemp("varied") / f"{comp[:4]}.array_record"
        google_write(path, records, f"group_size:100000,transpose:true,{comp}")
        assert google_read_all(path) == records
        out += transposed_chunks(path)
    return records, out


@pytest.mark.parametrize("block", [1, 7, 100, 5000])
def test_small_blocks_of_visits(varied_chunks, monkeypatch, block):
    """Blocks cut where no submessage is open: any block size decodes the
    same, including blocks of one transition byte (most then end inside a
    submessage and are carried to the next), records spanning blocks, and
    gathers done a few items at a time."""
    records, chunks = varied_chunks
    monkeypatch.setattr(vector, "BLOCK_VISITS", block)
    monkeypatch.setattr(transitions, "FIRST_BLOCK_BYTES", min(block, 4096))
    monkeypatch.setattr(transitions, "MIN_BLOCK_BYTES", min(block, 256))
    monkeypatch.setattr(gather, "SLICE_ITEMS", max(block, 16))
    for n, d, data in chunks:
        assert records_of(*decode_vector(vector_chunk(data, n, d), n, d)) == records


@pytest.mark.parametrize("block", [3, 50, 1 << 14])
def test_chunks_of_whole_nonproto_records_are_cut_once(tmp_path, monkeypatch, block):
    """A chunk of non-proto records only comes out as RecordBytes, whose
    list split_records hands out as it is; one that also holds protos
    gathers the blocks it put aside when the first block of protos comes
    (records come out last to first: the non-proto records go last)."""
    from arrayfs.riegeli.chunk import split_records
    from arrayfs.riegeli.records import RecordBytes, decoded_nbytes

    monkeypatch.setattr(vector, "BLOCK_VISITS", block)
    monkeypatch.setattr(transitions, "FIRST_BLOCK_BYTES", min(block, 4096))
    monkeypatch.setattr(transitions, "MIN_BLOCK_BYTES", min(block, 256))
    rng = random.Random(block)
    text = [r for r in (nonproto_record(rng) for _ in range(500)) if r][:400]  # b"" is a proto
    cases = {"text": text, "protos then text": mixed_records(rng, 200) + text, "one": text[1:2]}
    for name, records in cases.items():
        path = tmp_path / f"{name}.array_record"
        google_write(path, records, "group_size:100000,transpose:true,zstd:1")
        ((n, d, data),) = transposed_chunks(path)
        values, offsets = decode_vector(vector_chunk(data, n, d), n, d)
        assert records_of(values, offsets) == records, name
        assert split_records(values, offsets, 0, n) == records, name
        assert split_records(values, offsets, 5 % n, n) == records[5 % n :], name
        if name == "text":
            assert type(values) is RecordBytes and values.records == records
            assert decoded_nbytes(values, offsets) > 2 * len(values) + offsets.nbytes
        elif name == "one":
            assert type(values) is bytes and values == records[0]
        else:
            assert type(values) is not RecordBytes
    # The reader hands out plain bytes whatever the values were.
    with arrayfs.ArrayRecordReader(str(tmp_path / "text.array_record")) as r:
        assert r.read_all() == text and {type(x) for x in r.read_all()} == {bytes}
        assert type(r[7]) is bytes and r[7] == text[7]


def test_room_for_submessage_heads_grows(varied_chunks, monkeypatch):
    records, chunks = varied_chunks
    monkeypatch.setattr(tpd, "_RESERVE", reserve_heads(0))
    for n, d, data in chunks:
        assert records_of(*decode_vector(vector_chunk(data, n, d), n, d)) == records


def test_strings_walked_field_by_field(varied_chunks, monkeypatch):
    """Buffers that are not whole entries are read field by field: forced
    here for every buffer, the records are the same."""
    records, chunks = varied_chunks
    real = StringEntries.__init__

    def irregular(self, *args):
        real(self, *args)
        self.regular[:] = False

    monkeypatch.setattr(StringEntries, "__init__", irregular)
    for n, d, data in chunks:
        assert records_of(*decode_vector(vector_chunk(data, n, d), n, d)) == records


def test_threads_share_machines_and_scratch(varied_chunks, sample_chunks):
    """Chunks decoded on several threads at once (shared machine cache,
    per-thread scratch) decode as on one."""
    from concurrent.futures import ThreadPoolExecutor

    chunks = varied_chunks[1] + sample_chunks["zstd:3"][1]
    want = [records_of(*decode_transposed_chunk(data, n, d)) for n, d, data in chunks]
    with ThreadPoolExecutor(4) as pool:
        for _ in range(3):
            got = list(pool.map(lambda c: records_of(*decode_transposed_chunk(c[2], c[0], c[1])), chunks * 2))
            assert got == want * 2


def json_record(rng, i: int) -> bytes:
    # Text no proto parser accepts: stored whole, as a non-proto record.
    import json

    words = "alpha beta gamma delta image label score model shard chunk".split()
    doc = {"id": i, "text": " ".join(rng.choice(words) for _ in range(rng.randrange(5, 120))), "x": rng.random()}
    return json.dumps(doc).encode()


@pytest.mark.parametrize("kind", ["protos", "non-protos"])
def test_memory_of_one_chunk(tmp_path, kind):
    """Decoding a chunk of a few MB takes at most 4x its decoded size plus
    a constant at its peak (tracemalloc counts numpy's arrays too): the
    output, the decompressed buffers, and per block of visits a bounded
    amount."""
    import tracemalloc

    rng = random.Random(kind)
    make = (lambda i: descriptor_record(rng, i)) if kind == "protos" else (lambda i: json_record(rng, i))
    records, size = [], 0
    while size < 4_000_000:
        records.append(make(len(records)))
        size += len(records[-1])
    path = tmp_path / "big.array_record"
    google_write(path, records, "group_size:100000000,transpose:true,zstd:3")
    ((n, d, data),) = transposed_chunks(path)
    assert n == len(records) and d == size
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        values, offsets = decode_transposed_chunk(data, n, d)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert records_of(values, offsets) == records
    assert peak <= 4 * d + (4 << 20), f"peak {peak / d:.2f}x the decoded size"


# --------------------------------------------------------------------------
# The file metadata chunk ('m')


def test_metadata_chunk(tmp_path):
    from google.protobuf import descriptor_pb2

    # RecordsMetadata, hand-encoded: file_comment, record_type_name,
    # file_descriptor, record_writer_options, num_records, an extension.
    fd = descriptor_pb2.FileDescriptorProto(name="my/records.proto", package="my")
    fd.message_type.add(name="Rec").field.add(name="x", number=1, type=5, label=1)
    fdb = fd.SerializeToString()

    def ld(num, payload: bytes) -> bytes:
        return tp_varint(num << 3 | 2) + tp_varint(len(payload)) + payload

    meta = (
        ld(1, b"a comment")
        + ld(2, b"my.Rec")
        + ld(3, fdb)
        + ld(4, b"transpose")
        + tp_varint(5 << 3)
        + tp_varint(12345)
        + ld(1001, b"ext")
    )
    # array_record's writer puts metadata in an 'm' chunk with the
    # TransposeEncoder; its Python binding has no way to set it, so encode
    # the same record the same way in a one-record transposed chunk.
    for comp in COMPRESSIONS:
        path = tmp_path / f"meta_{comp[:4]}.array_record"
        google_write(path, [meta], f"group_size:1,transpose:true,{comp}")
        ((n, d, data),) = transposed_chunks(path)
        assert n == 1
        assert decode_records_metadata(data, d) == meta
    info = parse_records_metadata(meta)
    assert info["file_comment"] == "a comment"
    assert info["record_type_name"] == "my.Rec"
    assert info["record_writer_options"] == "transpose"
    assert info["num_records"] == 12345
    assert info["file_descriptor"] == [fdb]
    assert info["file_descriptor_names"] == ["my/records.proto"]
    assert info["extensions"] == [(1001, 2, b"ext")]
    assert parse_records_metadata(b"")["record_type_name"] == ""
    with pytest.raises(ValueError):
        parse_records_metadata(b"\x0a\x05ab")
    with pytest.raises(TransposeError):
        decode_records_metadata(b"\x00\x01", 0)


def test_file_with_a_metadata_chunk(tmp_path):
    """A file laid out as array_record writes one with metadata: signature,
    'm' chunk (num_records 0), transposed user chunks, footer, postscript.
    Both readers read the records; arrayfs reads the metadata."""
    from _arfile import build_file

    from arrayfs.file import ArrayRecordFile
    from arrayfs.riegeli.chunk import METADATA, TRANSPOSED, encode_chunk_header

    meta = b"\x0a\x04note\x12\x06my.Rec\x28\x07"
    rng = random.Random(12)
    records = mixed_records(rng, 7)
    src = tmp_path / "src.array_record"
    google_write(src, [meta], "group_size:1,transpose:true,zstd:3")
    ((_, md, mdata),) = transposed_chunks(src)
    google_write(src, records, "group_size:3,transpose:true,zstd:3")
    user = [(encode_chunk_header(data, TRANSPOSED, n, d), data, n, d) for n, d, data in transposed_chunks(src)]
    chunks = [(encode_chunk_header(mdata, METADATA, 0, md), mdata, 0, md)] + user
    path = tmp_path / "meta.array_record"
    options = "group_size:3,transpose:true,zstd:3"
    offsets = build_file(path, chunks, writer_options=options)["chunk_offsets"]
    entries = [(o, c[3], c[2]) for o, c in zip(offsets[1:], user)]
    build_file(path, chunks, writer_options=options, footer_entries=entries)
    assert google_read_all(path) == records
    with arrayfs.ArrayRecordReader(str(path)) as r:
        assert r.read_all() == records
    with ArrayRecordFile(str(path)) as f:
        header, data = f.read_metadata_chunk()
        info = parse_records_metadata(decode_records_metadata(data, header.decoded_data_size))
    assert (info["file_comment"], info["record_type_name"], info["num_records"]) == ("note", "my.Rec", 7)


# --------------------------------------------------------------------------
# Malformed chunks, crafted field by field


@pytest.fixture(scope="module")
def plain_chunk(tmp_path_factory):
    rng = random.Random(11)
    records = mixed_records(rng, 120) + [nonproto_record(rng) for _ in range(5)]
    path = tmp_path_factory.mktemp("plain") / "p.array_record"
    google_write(path, records, "group_size:1000,transpose:true,uncompressed")
    ((n, d, data),) = transposed_chunks(path)
    assert 1 in split_chunk(data)["tags"]  # has non-proto records
    return n, d, data


def decoders_reject(data, n, d, match=None):
    for parse, decoder in DECODERS:
        with pytest.raises(TransposeError, match=match):
            decoder(parse(data, n, d), n, d)
    with pytest.raises(TransposeError, match=match):
        decode_transposed_chunk(data, n, d)


def mutate(data, **changes) -> bytes:
    f = split_chunk(data)
    for k, v in changes.items():
        f[k] = v(f) if callable(v) else v
    return join_chunk(f)


def test_header_fields(plain_chunk):
    n, d, data = plain_chunk
    f = split_chunk(data)
    S = len(f["tags"])
    joined = b"".join(f["buckets"])
    ends = set(np.cumsum(f["buffer_lens"]).tolist())
    inside = next(p for p in range(1, len(joined)) if p not in ends)
    cases = {
        "invalid tag": mutate(data, tags=lambda f: [7 if i == 3 else t for i, t in enumerate(f["tags"])]),
        "invalid tag 4": mutate(data, tags=lambda f: [4 if t == 0 else t for t in f["tags"]]),
        "invalid tag 6": mutate(data, tags=lambda f: [6 if t == 0 else t for t in f["tags"]]),
        "invalid tag 15": mutate(data, tags=lambda f: [15 if t == 0 else t for t in f["tags"]]),
        "first state": mutate(data, first=S),
        "out of range": mutate(data, nexts=lambda f: [2 * S if i == 0 else x for i, x in enumerate(f["nexts"])]),
        "loop of implicit": mutate(data, nexts=lambda f: [S + i for i in range(S)]),
        "buffer index": mutate(data, indices=lambda f: [len(f["buffer_lens"])] + f["indices"][1:]),
        "unexpected bytes": mutate(data, header_extra=b"\0"),
        "subtype": mutate(data, subtypes=lambda f: b"\xff" * len(f["subtypes"])),
        "more than": mutate(data, buffer_lens=lambda f: [10**12] + f["buffer_lens"][1:]),
        "overrun": mutate(data, bucket_lens=lambda f: [len(b) + 10**9 for b in f["buckets"]]),
        "buffers but no buckets": mutate(data, num_buckets=0, bucket_lens=[]),
        "ends inside a buffer": mutate(
            data, buckets=[joined[:inside], joined[inside:]], bucket_lens=[inside, len(joined) - inside]
        ),
        "cannot fit": mutate(data, S=len(f["tags"]) + 10**6),
    }
    for match, bad in cases.items():
        decoders_reject(bad, n, d, match=match)


def test_header_sizes(plain_chunk):
    n, d, data = plain_chunk
    decoders_reject(b"", n, d, match="empty")
    decoders_reject(b"\x07" + data[1:], n, d, match="compression type")
    decoders_reject(data[:1] + b"\xff\xff\xff\xff\x0f" + data[2:], n, d, match="overruns")
    decoders_reject(data[:1] + b"\x80" * 11, n, d, match="varint")
    for cut in (1, 2, 5, 50, len(data) // 2):
        decoders_reject(data[:cut], n, d)


def test_record_counts_and_sizes(plain_chunk):
    n, d, data = plain_chunk
    decoders_reject(data, n + 1, d, match="records")
    decoders_reject(data, n - 1, d, match="records")
    decoders_reject(data, n, d + 1)
    decoders_reject(data, n, d - 1)
    decoders_reject(data, 0, 0)


def test_transitions(plain_chunk):
    n, d, data = plain_chunk
    f = split_chunk(data)
    decoders_reject(mutate(data, transitions=f["transitions"] + b"\xfc" * 3), n, d)
    decoders_reject(mutate(data, transitions=f["transitions"][:-1]), n, d)
    decoders_reject(mutate(data, transitions=b""), n, d)
    decoders_reject(mutate(data, transitions=f["transitions"][1:]), n, d)


def test_buffers_too_short(plain_chunk):
    n, d, data = plain_chunk
    f = split_chunk(data)
    # Drop the last byte of each buffer in turn (moving the rest along).
    ends = np.cumsum(f["buffer_lens"]).tolist()
    joined = b"".join(f["buckets"])
    for b in range(0, len(ends), 7):
        if f["buffer_lens"][b] == 0:
            continue
        cut = ends[b] - 1
        lens = list(f["buffer_lens"])
        lens[b] -= 1
        bad = join_chunk(dict(f, buckets=[joined[:cut] + joined[cut + 1 :]], buffer_lens=lens))
        decoders_reject(bad, n, d)


def test_state_kinds_sharing_a_buffer(plain_chunk):
    n, d, data = plain_chunk
    f = split_chunk(data)
    if len(set(f["indices"])) > 1:
        bad = mutate(data, indices=[f["indices"][0]] * len(f["indices"]))
        decoders_reject(bad, n, d)


def test_submessage_stack(tmp_path):
    rng = random.Random(2)
    records = [descriptor_record(rng, i) for i in range(50)]
    path = tmp_path / "s.array_record"
    google_write(path, records, "group_size:1000,transpose:true,uncompressed")
    ((n, d, data),) = transposed_chunks(path)
    tags = split_chunk(data)["tags"]
    is_end = [t >= 8 and t & 7 == 6 for t in tags]
    assert any(is_end) and 2 in tags
    # Every start of a submessage made a no-op: records start with
    # submessages open. Every end made a no-op: starts without an end.
    decoders_reject(mutate(data, tags=[0 if t == 2 else t for t in tags]), n, d, match="open")
    decoders_reject(mutate(data, tags=[0 if e else t for t, e in zip(tags, is_end)]), n, d, match="without an end")


# --------------------------------------------------------------------------
# Fuzzing: mutated and truncated chunks


def _fuzz_corpus():
    rng = random.Random(99)
    out = []
    import os
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for comp in ("uncompressed", "zstd:3", "snappy"):
            for gs in (3, 40):
                path = os.path.join(tmp, "f.array_record")
                google_write(path, mixed_records(rng, 80), f"group_size:{gs},transpose:true,{comp}")
                out += transposed_chunks(path)[:2]
    return out


FUZZ_CORPUS = _fuzz_corpus()


# Each example must finish within this much CPU time (a hang or an
# unbounded loop exceeds it). Counted in CPU time of this thread rather than
# with Hypothesis's wall-clock deadline, which stalls of a shared machine
# trip (seen: 19.8 s of wall time for an example that takes 36 ms).
CPU_LIMIT_S = 5.0


def _check_decodes_or_rejects(data, n, d):
    results = []
    for parse, decoder in DECODERS:
        t = time.thread_time()
        try:
            values, offsets = decoder(parse(data, n, d), n, d)
        except TransposeError:
            results.append(None)
            continue
        finally:
            assert time.thread_time() - t < CPU_LIMIT_S
        assert len(values) == d and offsets.shape == (n + 1,)
        assert offsets[0] == 0 and offsets[-1] == d and (np.diff(offsets) >= 0).all()
        results.append((bytes(values), offsets.tolist()))
    assert results[0] == results[1], "the decoders disagree"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    which=st.integers(0, len(FUZZ_CORPUS) - 1),
    edits=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=4),
    cut=st.one_of(st.none(), st.floats(0, 1)),
    delta=st.sampled_from([0, 0, 0, 1, -1]),
)
def test_fuzz_mutated_chunks(which, edits, cut, delta):
    n, d, data = FUZZ_CORPUS[which]
    buf = bytearray(data)
    for where, value in edits:
        buf[int(where * len(buf))] = value
    if cut is not None:
        del buf[int(cut * len(buf)) :]
    _check_decodes_or_rejects(bytes(buf), n + (delta if n + delta >= 0 else 0), d)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    which=st.integers(0, len(FUZZ_CORPUS) - 1),
    field=st.sampled_from(["tags", "nexts", "indices", "buffer_lens", "transitions", "subtypes", "first"]),
    pos=st.floats(0, 1, exclude_max=True),
    value=st.one_of(st.integers(0, 300), st.integers(0, 1 << 40)),
)
def test_fuzz_header_fields(which, field, pos, value):
    n, d, data = FUZZ_CORPUS[which]
    if data[0] != 0:
        return
    f = split_chunk(data)
    if field == "first":
        f["first"] = value
    elif field in ("transitions", "subtypes"):
        b = bytearray(f[field])
        if not b:
            return
        b[int(pos * len(b))] = value & 0xFF
        f[field] = bytes(b)
    else:
        if not f[field]:
            return
        f[field] = list(f[field])
        f[field][int(pos * len(f[field]))] = value
    _check_decodes_or_rejects(join_chunk(f), n, d)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300), st.integers(0, 50), st.integers(0, 5000))
def test_fuzz_random_bytes(data, n, d):
    t = time.thread_time()
    try:
        values, offsets = decode_transposed_chunk(data, n, d)
    except TransposeError:
        return
    finally:
        assert time.thread_time() - t < CPU_LIMIT_S
    assert len(values) == d and offsets.shape == (n + 1,)


def test_errors_reach_the_reader_as_corrupt_chunks(tmp_path):
    """Through the file layer the error is an ArrayRecordError naming the chunk."""
    rng = random.Random(4)
    records = [descriptor_record(rng, i) for i in range(60)]
    path = tmp_path / "c.array_record"
    google_write(path, records, "group_size:1000,transpose:true,uncompressed")
    raw = bytearray(path.read_bytes())
    ((_, _, data),) = transposed_chunks(path)
    assert len(data) < 60000  # within the first block: no block header inside
    at = raw.find(data)
    f = split_chunk(data)
    i = next(i for i, t in enumerate(f["tags"]) if 8 <= t < 128)
    bad = mutate(data, tags=lambda f: f["tags"][:i] + [7] + f["tags"][i + 1 :])
    assert len(bad) == len(data)
    raw[at : at + len(data)] = bad
    path.write_bytes(bytes(raw))
    with arrayfs.ArrayRecordReader(str(path), verify=False) as r:
        with pytest.raises(ArrayRecordError, match="invalid tag"):
            r.read_all()


def test_declared_sizes_are_checked_before_allocating(plain_chunk):
    """Huge declared sizes (decompressed header, transitions, buffers,
    state counts) are rejected before anything that size is allocated."""
    import tracemalloc

    n, d, data = plain_chunk
    f = split_chunk(data)
    huge = tp_varint(1 << 40)
    cases = [
        b"z" + tp_varint(len(huge) + 4) + huge + b"\x28\xb5\x2f\xfd",  # header declares 1 TiB
        b"b" + tp_varint(len(huge) + 1) + huge + b"\x00",
        mutate(data, buffer_lens=lambda f: [1 << 40] * len(f["buffer_lens"])),
        mutate(data, S=(1 << 32) - 1),
        mutate(data, num_buffers=(1 << 32) - 1),
        mutate(data, transitions=b"\x00" * 4096),
    ]
    # The same transitions, compressed with a size prefix of 1 TiB.
    zt = split_chunk(data)
    cases.append(join_chunk(zt)[: -len(zt["transitions"])] + huge)
    tracemalloc.start()
    try:
        for bad in cases:
            tracemalloc.reset_peak()
            with pytest.raises(TransposeError):
                decode_transposed_chunk(bad, n, d)
            assert tracemalloc.get_traced_memory()[1] < 64 * d + (1 << 20)
    finally:
        tracemalloc.stop()
    del f


def test_long_implicit_chains_are_counted_before_they_are_spelled_out():
    """A small chunk whose state machine makes every transition byte visit a
    chain of 50,000 no-op states: the visits it asks for (about 32 million)
    exceed what its records could hold, and the decoder says so before
    spelling any chain out (which would take hundreds of MB)."""
    import tracemalloc

    K = 50_000
    S = K + 1
    chunk = join_chunk(
        dict(
            buckets=[],
            buffer_lens=[],
            tags=[0] * K + [3],  # no-ops, then the start of a message
            nexts=[S + i + 1 for i in range(K)] + [0],  # no-op i moves on to i + 1 implicitly
            subtypes=b"",
            indices=[],
            first=K,
            transitions=bytes(range(256)),
            header_extra=b"",
        )
    )
    n, d = 2000, 0  # enough records for the vectorised decoder
    assert d + 16 * n > tpd.SCALAR_MAX_WORK
    tracemalloc.start()
    try:
        with pytest.raises(TransposeError, match="more states than the records can hold"):
            decode_transposed_chunk(chunk, n, d)
        assert tracemalloc.get_traced_memory()[1] < 64 << 20
    finally:
        tracemalloc.stop()
