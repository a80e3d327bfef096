"""Test helpers for transposed chunks: record generators, files written by
Google's writer, and a minimal Riegeli chunk walker (independent of
arrayfs's own container code, so the transposed decoder can be tested on
its own)."""

from __future__ import annotations

import random
import struct

from google.protobuf import descriptor_pb2

BLOCK = 1 << 16
BLOCK_HEADER = 24
USABLE = BLOCK - BLOCK_HEADER
CHUNK_HEADER = 40


def google_write(path, records, options: str) -> None:
    from _google import gwrite

    gwrite(path, options, records)


def google_read_all(path) -> list[bytes]:
    from _google import gread

    return gread(path)


def _read_logical(buf: bytes, pos: int, n: int) -> tuple[bytes, int]:
    out = bytearray()
    while n:
        if pos % BLOCK == 0:
            pos += BLOCK_HEADER
        take = min(n, BLOCK - pos % BLOCK)
        if pos + take > len(buf):
            raise ValueError("file truncated")
        out += buf[pos : pos + take]
        pos += take
        n -= take
    return bytes(out), pos


def _chunk_end(begin: int, data_size: int, num_records: int) -> int:
    length = CHUNK_HEADER + data_size
    end = begin + length + (length + (begin + USABLE - 1) % BLOCK) // USABLE * BLOCK_HEADER
    min_end = begin + num_records
    min_end += max(-min_end % BLOCK - (USABLE - 1), 0)
    return max(end, min_end)


def iter_chunks(path):
    """Yield ``(offset, chunk_type_char, num_records, decoded_data_size,
    data)`` for every chunk of a Riegeli file (hashes not checked)."""
    buf = open(path, "rb").read()
    pos = 0
    while pos < len(buf):
        if len(buf) - pos < BLOCK_HEADER + 1 and pos % BLOCK == 0:
            break
        raw, p = _read_logical(buf, pos, CHUNK_HEADER)
        _, data_size, _, type_and_count, decoded = struct.unpack("<QQQQQ", raw)
        data, _ = _read_logical(buf, p, data_size)
        ctype, num = type_and_count & 0xFF, type_and_count >> 8
        yield pos, chr(ctype), num, decoded, data
        pos = _chunk_end(pos, data_size, num)


def transposed_chunks(path):
    """``[(num_records, decoded_data_size, data)]`` of the 't' chunks."""
    return [(n, d, data) for _, t, n, d, data in iter_chunks(path) if t == "t"]


# --------------------------------------------------------------------------
# Records


def descriptor_record(rng: random.Random, i: int) -> bytes:
    """A serialized FileDescriptorProto with nested messages, repeated and
    packed fields, strings, negative ints, enums, optional parts."""
    T = descriptor_pb2.FieldDescriptorProto
    fd = descriptor_pb2.FileDescriptorProto()
    fd.name = f"file_{i}_{rng.randrange(10**6)}.proto"
    if rng.random() < 0.8:
        fd.package = rng.choice(["a.b", "foo.bar.baz", "x", ""])
    for _ in range(rng.randrange(0, 3)):
        fd.dependency.append(f"dep/{rng.randrange(1000)}.proto")
    fd.public_dependency.extend(rng.randrange(0, 300) for _ in range(rng.randrange(0, 5)))
    fd.weak_dependency.extend(rng.randrange(0, 1 << 31) for _ in range(rng.randrange(0, 3)))
    for m in range(rng.randrange(0, 4)):
        msg = fd.message_type.add()
        msg.name = f"Msg{m}_{rng.randrange(100000)}"
        for f in range(rng.randrange(0, 8)):
            fld = msg.field.add()
            fld.name = f"field_{f}_{'x' * rng.randrange(0, 200 if rng.random() < 0.1 else 20)}"
            fld.number = rng.randrange(1, 1 << 29)
            fld.type = rng.choice(list(T.Type.values()))
            fld.label = rng.choice([1, 2, 3])
            if rng.random() < 0.3:
                fld.default_value = str(rng.random())
            if rng.random() < 0.2:
                fld.options.packed = rng.random() < 0.5
            if rng.random() < 0.1:
                fld.oneof_index = rng.randrange(0, 3)
        if rng.random() < 0.3:
            nested = msg.nested_type.add()
            nested.name = "Inner"
            nested.reserved_range.add(start=rng.randrange(100), end=rng.randrange(100, 10**6))
            if rng.random() < 0.5:
                deeper = nested.nested_type.add()
                deeper.name = "Deeper"
                deeper.options.deprecated = True
        if rng.random() < 0.2:
            e = msg.enum_type.add()
            e.name = "E"
            for k in range(rng.randrange(1, 4)):
                e.value.add(name=f"V{k}", number=rng.randrange(-(1 << 31), 1 << 31))
    if rng.random() < 0.5:
        loc = fd.source_code_info.location.add(
            path=[rng.randrange(-5, 1000) for _ in range(rng.randrange(0, 6))],
            span=[rng.randrange(1 << 31) for _ in range(3)],
        )
        if rng.random() < 0.3:
            loc.leading_comments = "//" + "c" * rng.randrange(0, 300)
    if rng.random() < 0.7:
        fd.options.java_package = "com.example"
        fd.options.optimize_for = rng.choice([1, 2, 3])
    if rng.random() < 0.1:
        fd.options.uninterpreted_option.add(double_value=rng.random(), positive_int_value=rng.randrange(1 << 64))
    return fd.SerializeToString()


def group_record(rng: random.Random) -> bytes:
    """A valid message containing proto2 groups (start/end group tags),
    fixed32/fixed64 and varint fields, hand-encoded."""

    def varint(v):
        out = bytearray()
        while v >= 0x80:
            out.append(v & 0x7F | 0x80)
            v >>= 7
        out.append(v)
        return bytes(out)

    def field(num, wt, payload=b""):
        return varint(num << 3 | wt) + payload

    def body(depth):
        parts = []
        for _ in range(rng.randrange(0, 5)):
            c = rng.randrange(5)
            if c == 0:
                parts.append(field(rng.randrange(1, 20), 0, varint(rng.randrange(1 << rng.choice([2, 7, 20, 63])))))
            elif c == 1:
                parts.append(field(rng.randrange(1, 20), 5, rng.randbytes(4)))
            elif c == 2:
                parts.append(field(rng.randrange(1, 20), 1, rng.randbytes(8)))
            elif c == 3 and depth < 4:
                g = rng.randrange(1, 20)
                parts.append(field(g, 3) + body(depth + 1) + field(g, 4))
            else:
                s = rng.randbytes(rng.randrange(0, 10))
                parts.append(field(rng.randrange(1, 20), 2, varint(len(s)) + s))
        return b"".join(parts)

    return body(0)


def nonproto_record(rng: random.Random) -> bytes:
    """Bytes that are (almost surely) no valid proto message."""
    n = rng.choice([0, 1, 3, 17, 100, 300, 5000])
    b = rng.randbytes(n)
    return b if n == 0 else b"\xff" + b  # wire type 7: never a proto


def mixed_records(rng: random.Random, n: int) -> list[bytes]:
    out = []
    for i in range(n):
        c = rng.random()
        if c < 0.5:
            out.append(descriptor_record(rng, i))
        elif c < 0.65:
            out.append(group_record(rng))
        elif c < 0.8:
            out.append(nonproto_record(rng))
        elif c < 0.9:
            out.append(b"")
        else:
            out.append(rng.randbytes(rng.randrange(0, 40)))  # proto or not, by chance
    return out


# --------------------------------------------------------------------------
# Uncompressed transposed chunks, taken apart and put back together (for
# crafting malformed chunks field by field).


def _uvarint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


def _evarint(v: int) -> bytes:
    out = bytearray()
    while v >= 0x80:
        out.append(v & 0x7F | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def split_chunk(data: bytes) -> dict:
    """Fields of an uncompressed transposed chunk (compression type 0)."""
    assert data[0] == 0
    hsize, pos = _uvarint(data, 1)
    h = data[pos : pos + hsize]
    pos += hsize
    p = 0
    nbk, p = _uvarint(h, p)
    nbf, p = _uvarint(h, p)
    bucket_lens, buffer_lens = [], []
    for _ in range(nbk):
        v, p = _uvarint(h, p)
        bucket_lens.append(v)
    for _ in range(nbf):
        v, p = _uvarint(h, p)
        buffer_lens.append(v)
    S, p = _uvarint(h, p)
    tags, nexts = [], []
    for _ in range(S):
        v, p = _uvarint(h, p)
        tags.append(v)
    for _ in range(S):
        v, p = _uvarint(h, p)
        nexts.append(v)
    nsub = sum(1 for t in tags if t >= 8 and t & 7 == 0)
    subtypes = h[p : p + nsub]
    p += nsub
    # Buffer indices: one per state with a buffer.
    nidx = 0
    si = 0
    for t in tags:
        if t == 1:
            nidx += 1
        elif t >= 8:
            w = t & 7
            if w == 0:
                nidx += subtypes[si] < 10
                si += 1
            elif w in (1, 2, 5):
                nidx += 1
    indices = []
    for _ in range(nidx):
        v, p = _uvarint(h, p)
        indices.append(v)
    first, p = _uvarint(h, p)
    assert p == len(h)
    buckets = []
    for n in bucket_lens:
        buckets.append(data[pos : pos + n])
        pos += n
    return dict(
        buckets=buckets,
        buffer_lens=buffer_lens,
        tags=tags,
        nexts=nexts,
        subtypes=bytes(subtypes),
        indices=indices,
        first=first,
        transitions=data[pos:],
        header_extra=b"",
    )


def join_chunk(f: dict) -> bytes:
    """Inverse of :func:`split_chunk`; fields may have been changed."""
    h = bytearray()
    h += _evarint(f.get("num_buckets", len(f["buckets"])))
    h += _evarint(f.get("num_buffers", len(f["buffer_lens"])))
    for b in f.get("bucket_lens", [len(b) for b in f["buckets"]]):
        h += _evarint(b)
    for n in f["buffer_lens"]:
        h += _evarint(n)
    h += _evarint(f.get("S", len(f["tags"])))
    for t in f["tags"]:
        h += _evarint(t)
    for n in f["nexts"]:
        h += _evarint(n)
    h += f["subtypes"]
    for i in f["indices"]:
        h += _evarint(i)
    h += _evarint(f["first"])
    h += f["header_extra"]
    return b"\0" + _evarint(len(h)) + bytes(h) + b"".join(f["buckets"]) + f["transitions"]
