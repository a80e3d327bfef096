"""Bad input: every case is an ``arrayfs.ArrayRecordError`` naming the file
(and the chunk offset where there is one), never a crash, a hang, a silent
wrong answer, or an allocation sized from an unchecked header field.

Files are written by Google's array_record where it is installed (else by
arrayfs's writer) and then damaged in one precise way; where the damage
is meant to get past the hashes, the hashes are re-computed
(``tests/_arfile.py``).
"""

from __future__ import annotations

import gc
import os
import struct
import tracemalloc

import numpy as np
import pytest
import zstandard
from _arfile import build_file, logical_positions, postscript_record, rewrite_chunk, simple_chunk
from _records import awrite

import arrayfs
from arrayfs import ArrayRecordError, CorruptChunkError, NotArrayRecordError, UnsupportedChunkError
from arrayfs.file import ArrayRecordFile
from arrayfs.layout import POSTSCRIPT_MAGIC
from arrayfs.riegeli.blocks import BLOCK_SIZE, CHUNK_HEADER_SIZE
from arrayfs.riegeli.chunk import SIMPLE, encode_chunk_header, read_chunk
from arrayfs.riegeli.compression import NONE, ZSTD
from arrayfs.riegeli.varint import encode_varint, read_varint

try:
    from array_record.python import array_record_module as google
except ImportError:  # the tests still run, on files arrayfs writes
    google = None

RNG = np.random.default_rng(7)
RECORDS = [RNG.bytes(int(n)) for n in RNG.integers(0, 3000, 300)]
MiB = 1 << 20


def write(path, options="group_size:10,zstd:3", records=RECORDS):
    if google is not None:
        from _google import gwrite

        gwrite(path, options, records)
    else:
        awrite(path, options, records)
    return path


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    path = write(tmp_path_factory.mktemp("good") / "good.array_record")
    with ArrayRecordFile(path) as f:
        offsets, counts, first = f.index()
        info = {
            "path": path,
            "bytes": path.read_bytes(),
            "chunk_offsets": [int(o) for o in offsets],
            "footer_offset": f.footer_offset,
        }
    return info


def read_everything(path, verify=True):
    """Open and read every record by each access path."""
    with arrayfs.ArrayRecordReader(path, verify=verify) as r:
        n = r.num_records()
        out = r.read_all()
        assert len(out) == n
        if n:
            r.read(list(range(n)))
            r[n - 1]
            r.read()
        return out


def expect_error(path, cls=ArrayRecordError, verify=True, offset=None):
    """The read fails with ``cls``, naming the path (and the offset)."""
    with pytest.raises(cls) as e:
        read_everything(path, verify=verify)
    err = e.value
    assert isinstance(err, ArrayRecordError)
    assert err.path == str(path) and str(path) in str(err), str(err)
    if offset is not None:
        assert err.offset == offset and str(offset) in str(err), str(err)
    return err


def damaged(tmp_path, blob: bytes, name="bad.array_record"):
    p = tmp_path / name
    p.write_bytes(blob)
    return p


def test_good_file_reads(good):
    assert read_everything(good["path"]) == RECORDS
    assert len(good["chunk_offsets"]) == 30


# -- not an ArrayRecord file at all ------------------------------------------------------


def test_zero_length_file(tmp_path):
    err = expect_error(damaged(tmp_path, b""), NotArrayRecordError)
    assert "empty" in str(err)


@pytest.mark.parametrize("size", [1, 100, 64, 65_536, 200_000, 3 * BLOCK_SIZE])
def test_random_bytes(tmp_path, size):
    expect_error(damaged(tmp_path, np.random.default_rng(size).bytes(size)))


def test_random_bytes_after_a_valid_signature(tmp_path, good):
    blob = good["bytes"][:64] + np.random.default_rng(1).bytes(3 * BLOCK_SIZE - 64)
    expect_error(damaged(tmp_path, blob))


def test_directory_is_os_error(tmp_path):
    with pytest.raises(OSError):
        arrayfs.ArrayRecordReader(tmp_path)


def test_missing_file_is_os_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        arrayfs.ArrayRecordReader(tmp_path / "missing.array_record")


def test_plain_riegeli_file_without_footer(tmp_path, good):
    """A Riegeli file with records but no ArrayRecord footer/postscript."""
    blob = good["bytes"][: good["chunk_offsets"][5]]
    blob += bytes(-len(blob) % BLOCK_SIZE)
    expect_error(damaged(tmp_path, blob))


# -- truncation ----------------------------------------------------------------------------


def truncation_points(good):
    size = len(good["bytes"])
    c = good["chunk_offsets"]
    f = good["footer_offset"]
    return {
        "1-byte": 1,
        "mid-signature": 40,
        "after-signature": 64,
        "mid-chunk-header": c[3] + 20,
        "mid-chunk": c[3] + 500,
        "block-aligned-mid-records": BLOCK_SIZE,
        "mid-footer": f + 60,
        "before-postscript": size - BLOCK_SIZE,
        "mid-postscript": size - BLOCK_SIZE + 50,
        "size-1": size - 1,
    }


@pytest.mark.parametrize("where", ["1-byte", "mid-signature", "after-signature", "mid-chunk-header", "mid-chunk",
                                   "block-aligned-mid-records", "mid-footer", "before-postscript", "mid-postscript",
                                   "size-1"])
def test_truncated_file(tmp_path, good, where):
    cut = truncation_points(good)[where]
    expect_error(damaged(tmp_path, good["bytes"][:cut]))


def test_truncated_then_zero_padded_to_blocks(tmp_path, good):
    """Cut mid-records and padded with zeros to whole blocks (a file system
    that lost the tail): no postscript where it must be."""
    blob = good["bytes"][: good["chunk_offsets"][10] + 100]
    blob += bytes(-len(blob) % BLOCK_SIZE + BLOCK_SIZE)
    expect_error(damaged(tmp_path, blob))


# -- postscript and footer -------------------------------------------------------------------


def postscript_offset(blob) -> int:
    return len(blob) - BLOCK_SIZE


def test_wrong_postscript_magic(tmp_path, good):
    """The postscript chunk re-encoded (hashes correct) with a wrong magic."""
    buf = bytearray(good["bytes"])
    ps = postscript_offset(buf)
    header, data, _ = read_chunk(bytes(buf), ps)
    bad = postscript_record(good["footer_offset"], POSTSCRIPT_MAGIC ^ 0x5A5A)
    new_data = simple_chunk([bad] * 3)[1]
    assert len(new_data) == header.data_size
    rewrite_chunk(buf, ps, new_data)
    read_chunk(bytes(buf), ps)  # the chunk itself is valid
    path = damaged(tmp_path, bytes(buf))
    err = expect_error(path, NotArrayRecordError, offset=ps)
    assert "magic" in str(err)
    if google is not None:  # Google's reader refuses it too
        g = google.ArrayRecordReader(str(path))
        assert not g.ok()
        with pytest.raises(RuntimeError, match="postscript"):
            g.read_all()


def test_postscript_footer_offset_outside_file(tmp_path):
    chunks = [simple_chunk([b"a", b"b"])]
    for bad in (2**40, 10, 65):  # beyond the end; inside the signature; not a chunk boundary
        path = tmp_path / f"ps{bad}.array_record"
        build_file(path, chunks, footer_offset=bad)
        expect_error(path, offset=None)


def test_postscript_pointing_at_a_user_chunk(tmp_path):
    """footer_offset names a real chunk that is not a footer."""
    path = tmp_path / "ps.array_record"
    info = build_file(path, [simple_chunk([b"a", b"b"]), simple_chunk([b"c"])])
    build_file(path, [simple_chunk([b"a", b"b"]), simple_chunk([b"c"])], footer_offset=info["chunk_offsets"][1])
    expect_error(path)


@pytest.mark.parametrize(
    "entries",
    [
        [(2**40, 2, 2)],  # far beyond the file
        [(3 * BLOCK_SIZE + 100, 2, 2)],  # just beyond the end
        [(BLOCK_SIZE + 40, 2, 2)],  # inside the postscript block
        [(0, 2, 2)],  # the signature
        [(30, 2, 2)],  # inside the signature
        [(64 + 5, 2, 2)],  # inside the chunk, not a chunk start
    ],
    ids=["far-beyond", "just-beyond", "footer-area", "signature", "mid-signature", "mid-chunk"],
)
def test_footer_offsets_outside_the_records(tmp_path, entries):
    path = tmp_path / "f.array_record"
    build_file(path, [simple_chunk([b"ab", b"cd"])], footer_entries=entries)
    err = expect_error(path)
    assert err.offset is not None


def test_footer_record_counts_disagree(tmp_path):
    path = tmp_path / "f.array_record"
    build_file(path, [simple_chunk([b"ab", b"cd"])], footer_entries=[(64, 4, 3)])
    expect_error(path)
    build_file(path, [simple_chunk([b"ab", b"cd"])], num_records=5)
    expect_error(path)


def test_footer_with_decreasing_offsets(tmp_path):
    path = tmp_path / "f.array_record"
    info = build_file(path, [simple_chunk([b"a"]), simple_chunk([b"b"])])
    a, b = info["chunk_offsets"]
    build_file(path, [simple_chunk([b"a"]), simple_chunk([b"b"])], footer_entries=[(b, 1, 1), (a, 1, 1)])
    expect_error(path)


def test_footer_chunk_count_disagrees_with_metadata(tmp_path, good):
    """Metadata num_chunks != entries in the footer (built by hand)."""
    import io

    from arrayfs.layout import encode_chunk_footer, encode_footer_metadata
    from arrayfs.riegeli.chunk_writer import ChunkWriter

    stream = io.BytesIO()
    cw = ChunkWriter(stream)
    off = cw.write_chunk(*simple_chunk([b"a"])[:2])
    meta = encode_footer_metadata(3, 1, "group_size:1,uncompressed")
    footer_offset = cw.write_chunk(*simple_chunk([meta, encode_chunk_footer(off, 1, 1)])[:2])
    cw.pad_to_block_boundary()
    cw.write_chunk(*simple_chunk([postscript_record(footer_offset)] * 3)[:2])
    cw.pad_to_block_boundary()
    expect_error(damaged(tmp_path, stream.getvalue()))


# -- hashes ------------------------------------------------------------------------------------


@pytest.mark.parametrize("byte", [0, 7, 8, 15, 16, 24, 25, 31, 32, 39])
@pytest.mark.parametrize("verify", [True, False])
def test_flipped_bit_in_chunk_header(tmp_path, good, byte, verify):
    """Header hashes are always checked: an error with verify on or off."""
    buf = bytearray(good["bytes"])
    chunk = good["chunk_offsets"][4]
    pos = logical_positions(chunk, CHUNK_HEADER_SIZE)[byte]
    buf[pos] ^= 1 << (byte % 8)
    err = expect_error(damaged(tmp_path, bytes(buf)), CorruptChunkError, verify=verify, offset=chunk)
    assert err.records in (None, (40, 50))


@pytest.mark.parametrize("which", ["footer", "postscript"])
def test_flipped_bit_in_footer_or_postscript_header(tmp_path, good, which):
    buf = bytearray(good["bytes"])
    offset = good["footer_offset"] if which == "footer" else postscript_offset(buf)
    buf[logical_positions(offset, CHUNK_HEADER_SIZE)[12]] ^= 0x04
    expect_error(damaged(tmp_path, bytes(buf)))


@pytest.mark.parametrize("delta", [0, 1, 100, 1000, -1])
def test_flipped_bit_in_chunk_data(tmp_path, good, delta):
    """verify=True: CorruptChunkError; verify=False: anything but a crash."""
    buf = bytearray(good["bytes"])
    chunk = good["chunk_offsets"][7]
    header, data, _ = read_chunk(bytes(buf), chunk)
    i = delta % header.data_size
    buf[logical_positions(chunk, CHUNK_HEADER_SIZE + header.data_size)[CHUNK_HEADER_SIZE + i]] ^= 0x10
    path = damaged(tmp_path, bytes(buf))
    err = expect_error(path, CorruptChunkError, offset=chunk)
    assert err.records in (None, (70, 80)) and "hash" in str(err)
    try:
        out = read_everything(path, verify=False)
    except ArrayRecordError as e:
        assert str(path) in str(e)
    else:
        assert len(out) == len(RECORDS)
        # only the damaged chunk may differ
        assert out[:70] == RECORDS[:70] and out[80:] == RECORDS[80:]


def test_flipped_bits_everywhere_never_crash(tmp_path, good):
    """A sweep of single-bit flips over the whole file: with verify on,
    every read is right or an ArrayRecordError; with it off, no other
    exception escapes."""
    rnd = np.random.default_rng(11)
    blob = good["bytes"]
    path = tmp_path / "sweep.array_record"
    wrong = []
    for pos in rnd.integers(0, len(blob), 100).tolist():
        buf = bytearray(blob)
        buf[pos] ^= 1 << int(rnd.integers(8))
        path.write_bytes(bytes(buf))
        for verify in (True, False):
            try:
                out = read_everything(path, verify=verify)
            except ArrayRecordError as e:
                assert e.path == str(path)
                continue
            if verify and out != RECORDS:
                wrong.append(pos)
    assert not wrong, f"silent wrong answers with verify on, flips at {wrong}"


# -- sizes that would drive an allocation ------------------------------------------------------------


def peak_memory(fn):
    """Peak bytes Python allocated while ``fn`` ran (tracemalloc)."""
    gc.collect()
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def every_read_path_fails(path):
    def run():
        with arrayfs.ArrayRecordReader(path) as r:
            for call in (lambda: r[0], lambda: r.read(), lambda: r.read([0]), r.read_all, lambda: list(r)):
                with pytest.raises(ArrayRecordError) as e:
                    call()
                assert str(path) in str(e.value)
    return run


def first_zstd_chunk(good):
    header, data, _ = read_chunk(good["bytes"], good["chunk_offsets"][0])
    data = bytes(data)
    assert data[0] == ZSTD
    return header, data


def test_values_prefix_claims_a_terabyte(tmp_path, good):
    """A zstd chunk whose values-block prefix says 2**40 bytes (chunk
    re-hashed): refused before any allocation."""
    header, data = first_zstd_chunk(good)
    sizes_len, pos = read_varint(data, 1)
    values = data[pos + sizes_len :]
    _, start = read_varint(values, 0)
    bomb = data[: pos + sizes_len] + encode_varint(2**40) + values[start:]
    chunk = (encode_chunk_header(bomb, SIMPLE, header.num_records, header.decoded_data_size), bomb,
             header.num_records, header.decoded_data_size)
    path = tmp_path / "bomb.array_record"
    build_file(path, [chunk])
    assert peak_memory(every_read_path_fails(path)) < 64 * MiB


def test_header_claims_a_terabyte(tmp_path):
    """Chunk header, record sizes and values prefix all agree on one record
    of 2**40 bytes; the zstd frame does not declare its size. The reader
    must not allocate what the headers claim."""
    big = 2**40
    comp = zstandard.ZstdCompressor(write_content_size=False)
    sizes = encode_varint(big)
    sizes_block = encode_varint(len(sizes)) + comp.compress(sizes)
    values_block = encode_varint(big) + comp.compress(b"x" * 1000)
    data = bytes([ZSTD]) + encode_varint(len(sizes_block)) + sizes_block + values_block
    path = tmp_path / "bomb.array_record"
    build_file(path, [(encode_chunk_header(data, SIMPLE, 1, big), data, 1, big)])
    assert peak_memory(every_read_path_fails(path)) < 64 * MiB


def test_zstd_frame_claims_a_terabyte(tmp_path):
    """Chunk header and prefix honest (5 bytes), the zstd frame header says
    2**40: python-zstandard would allocate the frame's claim."""
    frame = (struct.pack("<I", 0xFD2FB528) + bytes([0xE0]) + struct.pack("<Q", 2**40)
             + (5 << 3 | 1).to_bytes(3, "little") + b"hello")
    sizes = encode_varint(5)
    sizes_block = encode_varint(len(sizes)) + zstandard.ZstdCompressor().compress(sizes)
    data = bytes([ZSTD]) + encode_varint(len(sizes_block)) + sizes_block + encode_varint(5) + frame
    path = tmp_path / "frame.array_record"
    build_file(path, [(encode_chunk_header(data, SIMPLE, 1, 5), data, 1, 5)])
    assert peak_memory(every_read_path_fails(path)) < 64 * MiB


def test_many_records_claimed_by_a_tiny_chunk(tmp_path):
    """num_records = 2**50 in a valid header and footer: every chunk spans at
    least as many bytes as records (padding rule), so the count is refused
    when the file is opened, before anything is sized from it."""
    data = simple_chunk([b"a"])[1]
    n = 2**50
    path = tmp_path / "count.array_record"
    honest = encode_chunk_header(data, SIMPLE, 1, 1)
    build_file(path, [(honest, data, 1, 1, encode_chunk_header(data, SIMPLE, n, 1))], footer_entries=[(64, 1, n)],
               num_records=n)
    def run():
        with pytest.raises(ArrayRecordError) as e:
            arrayfs.ArrayRecordReader(path)
        assert str(path) in str(e.value) and "claims" in str(e.value)

    assert peak_memory(run) < 64 * MiB


# -- indices --------------------------------------------------------------------------------


def test_index_out_of_range(good):
    n = len(RECORDS)
    with arrayfs.ArrayRecordReader(good["path"]) as r:
        for bad in (n, n + 1, 2**62, -n - 1):
            with pytest.raises(IndexError):
                r[bad]
            with pytest.raises(IndexError):
                r.read([0, bad])
        with pytest.raises(IndexError):
            r.read(n, n + 1)
        with pytest.raises(IndexError):
            r.read(0, n + 1)
        r.seek(n)
        with pytest.raises(IndexError):
            r.read()
        assert r[n - 1] == RECORDS[-1]  # still usable


def test_unsigned_indices_past_int64_are_out_of_range_not_from_the_end(good):
    """2**64 - 1 as a uint64 would wrap to -1 (the last record) if cast to
    int64 first; it is an index out of range, named as given."""
    n = len(RECORDS)
    huge = [2**64 - 1, 2**64 - n, 2**63 + 3]
    with arrayfs.ArrayRecordReader(good["path"]) as r:
        for bad in huge:
            for form in ([bad], np.array([0, bad], dtype=np.uint64)):
                with pytest.raises(IndexError, match=f"index {bad} "):
                    r.read(form)
    with arrayfs.ArrayRecordDataSource([good["path"]]) as ds:
        for bad in huge:
            with pytest.raises(IndexError, match=f"index {bad} "):
                ds.__getitems__(np.array([bad], dtype=np.uint64))


# -- transposed chunks ----------------------------------------------------------------------


def test_transposed_file_is_correct_or_a_clear_error(tmp_path):
    if google is None:
        pytest.skip("needs Google's writer for transpose:true")
    records = [b"rec%d" % i * (i % 7) for i in range(50)]
    path = tmp_path / "t.array_record"
    w = google.ArrayRecordWriter(str(path), "transpose:true,group_size:8")
    for r in records:
        w.write(r)
    w.close()
    assert google.ArrayRecordReader(str(path)).read_all() == records
    with arrayfs.ArrayRecordReader(path) as r:
        assert r.num_records() == 50
        calls = [
            (r.read_all, records),
            (lambda: r[9], records[9]),
            (lambda: r.read([3, 40]), [records[3], records[40]]),
            (lambda: list(r), records),
            (lambda: [r.read() for _ in range(50)], records),
        ]
        for call, expected in calls:
            try:
                out = call()
            except UnsupportedChunkError as e:
                # a clear error that names the chunk type, the file and where
                assert "transposed" in str(e) or "'t'" in str(e), str(e)
                assert str(path) in str(e) and e.offset is not None
            else:
                assert out == expected


# -- the writer --------------------------------------------------------------------------------


def test_unclosed_writer_leaves_no_file(tmp_path):
    path = tmp_path / "w.array_record"
    w = arrayfs.ArrayRecordWriter(path)
    w.write(b"abc")
    assert not path.exists()
    del w
    gc.collect()
    assert not path.exists()
    assert os.listdir(tmp_path) == [], "temporary file left behind"


def test_exception_inside_with_leaves_no_file(tmp_path):
    path = tmp_path / "w.array_record"
    with pytest.raises(KeyError):
        with arrayfs.ArrayRecordWriter(path, "group_size:2") as w:
            for i in range(10):
                w.write(b"x%d" % i)
            raise KeyError("boom")
    assert os.listdir(tmp_path) == []


def test_failed_writer_keeps_the_previous_file(tmp_path):
    path = write(tmp_path / "w.array_record", records=[b"old"])
    before = path.read_bytes()
    with pytest.raises(KeyError):
        with arrayfs.ArrayRecordWriter(path) as w:
            w.write(b"new")
            raise KeyError("boom")
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["w.array_record"]


def test_file_appears_on_close(tmp_path):
    path = tmp_path / "w.array_record"
    w = arrayfs.ArrayRecordWriter(path)
    w.write(b"abc")
    assert w.ok() and w.is_open()
    w.close()
    assert path.exists() and not w.is_open() and not w.ok()
    w.close()  # twice is fine
    assert os.listdir(tmp_path) == ["w.array_record"]
    assert read_everything(path) == [b"abc"]
    with pytest.raises(RuntimeError):
        w.write(b"more")


@pytest.mark.parametrize("bad", ["text", 5, None, [b"a"], np.int64(3)])
def test_write_non_bytes_is_type_error(tmp_path, bad):
    path = tmp_path / "w.array_record"
    with arrayfs.ArrayRecordWriter(path) as w:
        with pytest.raises(TypeError):
            w.write(bad)
        w.write(b"ok")
    assert read_everything(path) == [b"ok"]


def test_error_messages_carry_location(tmp_path, good):
    buf = bytearray(good["bytes"])
    chunk = good["chunk_offsets"][2]
    buf[chunk + 3] ^= 1
    path = damaged(tmp_path, bytes(buf))
    with arrayfs.ArrayRecordReader(path) as r:
        with pytest.raises(CorruptChunkError) as e:
            r[25]
    err = e.value
    assert (err.path, err.offset) == (str(path), chunk)
    assert str(path) in str(err) and str(chunk) in str(err)
    # errors survive pickling (worker processes)
    import pickle

    again = pickle.loads(pickle.dumps(err))
    assert type(again) is type(err) and str(again) == str(err)
    assert isinstance(err, ValueError)


def test_hash_errors_name_the_record_range(tmp_path, good):
    buf = bytearray(good["bytes"])
    chunk = good["chunk_offsets"][2]
    buf[chunk + 3] ^= 1
    path = damaged(tmp_path, bytes(buf))
    with arrayfs.ArrayRecordReader(path) as r:
        with pytest.raises(CorruptChunkError) as e:
            r[25]
    assert e.value.records == (20, 30) and "[20, 30)" in str(e.value)


def test_uncompressed_chunk_damage_detected(tmp_path):
    """Hash checks also cover uncompressed chunks (no codec to notice)."""
    path = write(tmp_path / "u.array_record", "group_size:5,uncompressed", RECORDS[:50])
    with ArrayRecordFile(path) as f:
        chunk = int(f.index()[0][3])
    buf = bytearray(path.read_bytes())
    header, _, _ = read_chunk(bytes(buf), chunk)
    buf[logical_positions(chunk, CHUNK_HEADER_SIZE + 30)[-1]] ^= 0x01
    path2 = damaged(tmp_path, bytes(buf), "u2.array_record")
    expect_error(path2, CorruptChunkError, offset=chunk)
    out = read_everything(path2, verify=False)  # wrong bytes, but no crash
    assert len(out) == 50 and out != RECORDS[:50]
    assert header.data_size > 30 and NONE == 0
