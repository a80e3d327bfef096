"""The writer's batch paths, checked against Google's reader.

The writer encodes records in batches (many one-record chunks at once for
``group_size:1``, whole groups otherwise), compresses them on a pool with
``max_parallelism`` > 1, lays many chunks into blocks in one pass and
serializes the footer as it goes. Each of those paths is checked here
against Google's ``ArrayRecordReader`` (and, uncompressed, against the
bytes Google's writer gives), and against the one-chunk-at-a-time
functions it replaces: :meth:`ChunkWriter.write_chunk`,
:func:`encode_chunk_header`, :func:`encode_chunk_footer`.
"""

from __future__ import annotations

import errno
import io
import os
import subprocess

import fsspec
import numpy as np
import pytest
from _google import gread, gwrite
from _records import awrite, make_records

import arrayfs
import arrayfs.writer
from arrayfs.layout import (
    FooterEncoder,
    decode_chunk_footers,
    encode_chunk_footer,
    encode_chunk_footers,
    encode_footer_metadata,
)
from arrayfs.riegeli.blocks import BLOCK_SIZE, CHUNK_HEADER_SIZE
from arrayfs.riegeli.chunk import SIMPLE, encode_chunk_header
from arrayfs.riegeli.chunk_writer import ChunkWriter, fill_chunk_headers
from arrayfs.riegeli.varint import read_varint

google = pytest.importorskip("array_record.python.array_record_module", reason="array-record wheel not installed")

CODECS = ["uncompressed", "zstd:3", "brotli:6", "snappy"]


RECORDS = make_records(9000, seed=1, empty_every=13, big_every=700)  # ~20 MB, several batches at group_size 1


def google_read(path):
    r = google.ArrayRecordReader(str(path))
    try:
        return (r.read_all() if r.num_records() else []), r.writer_options_string()
    finally:
        r.close()


def footer_offset(data: bytes) -> int:
    """The footer's offset from the postscript: an uncompressed chunk at
    the start of the last block (after its 24-byte block header)."""
    at = len(data) - BLOCK_SIZE + 24 + CHUNK_HEADER_SIZE
    assert data[at] == 0 and data[at + 1] == 3  # no compression; three sizes
    ps = data[at + 5 :]
    assert ps[0] == 0x08
    return read_varint(ps, 1)[0]


# -- whole files, every codec, both group sizes, both parallelisms -------------------


@pytest.mark.parametrize("parallelism", [1, 2])
@pytest.mark.parametrize("group_size", [1, 1024, 7])
@pytest.mark.parametrize("codec", CODECS)
def test_google_reads_every_path(tmp_path, codec, group_size, parallelism):
    path = tmp_path / "o.array_record"
    options = f"group_size:{group_size},{codec},max_parallelism:{parallelism}"
    awrite(path, options, RECORDS)
    got, stored = google_read(path)
    assert len(got) == len(RECORDS)
    for i, (a, b) in enumerate(zip(got, RECORDS)):
        assert a == b, f"record {i} differs"
    assert stored.endswith(f"max_parallelism:{parallelism}")
    assert f"group_size:{group_size}," in stored
    with arrayfs.ArrayRecordReader(path) as r:
        assert r.read_all() == RECORDS


@pytest.mark.parametrize(
    "options",
    [
        "group_size:1,uncompressed",
        "group_size:1024,uncompressed",
        "group_size:7,uncompressed",
        "group_size:1,uncompressed,pad_to_block_boundary:true",
        "group_size:5,uncompressed,pad_to_block_boundary:true",
    ],
)
def test_uncompressed_bytes_equal_googles(tmp_path, options):
    """No codec in the way: the batch layout (chunk placement, block
    headers, padding, footer, postscript) is Google's byte for byte."""
    records = RECORDS[:3000] if "pad_to_block_boundary:true" in options else RECORDS
    ours, theirs = tmp_path / "o.array_record", tmp_path / "g.array_record"
    awrite(ours, options, records)
    gwrite(theirs, options, records)
    assert ours.read_bytes() == theirs.read_bytes()


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("group_size", [1, 3])
def test_pad_to_block_boundary(tmp_path, codec, group_size):
    path = tmp_path / "p.array_record"
    records = RECORDS[:300]
    awrite(path, f"group_size:{group_size},{codec},pad_to_block_boundary:true,max_parallelism:2", records)
    assert google_read(path)[0] == records
    with arrayfs.ArrayRecordReader(path) as r:
        offsets = r._file.index()[0]
    # the first chunk follows the signature; each later one starts a block
    assert offsets[0] == 64 and (np.asarray(offsets[1:]) % BLOCK_SIZE == 0).all()


@pytest.mark.parametrize("codec", CODECS)
def test_parallelism_does_not_change_the_chunks(tmp_path, codec):
    """max_parallelism changes who compresses, not what: everything before
    the footer (which stores the options string) is the same."""
    files = []
    for p in (1, 2):
        path = tmp_path / f"p{p}.array_record"
        awrite(path, f"group_size:1,{codec},max_parallelism:{p}", RECORDS[:5000])
        files.append(path.read_bytes())
    a, b = files
    assert footer_offset(a) == footer_offset(b)
    assert a[: footer_offset(a)] == b[: footer_offset(b)]


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("group_size", [1, 4, 1024])
def test_empty_records(tmp_path, codec, group_size):
    """All-empty records: zstd's multi-buffer call refuses an empty buffer,
    and 1,024 empty records need a padded chunk (more records than bytes)."""
    records = [b""] * 5000 + [b"x"] + [b""] * 2000
    path = tmp_path / "e.array_record"
    awrite(path, f"group_size:{group_size},{codec}", records)
    assert google_read(path)[0] == records
    if codec == "uncompressed":
        theirs = tmp_path / "g.array_record"
        gwrite(theirs, f"group_size:{group_size},{codec}", records)
        assert path.read_bytes() == theirs.read_bytes()


@pytest.mark.parametrize("parallelism", [1, 2])
def test_records_bigger_than_a_batch(tmp_path, parallelism):
    """Records past the batch's byte budget inside a chunk: the chunk is
    encoded once it is whole."""
    rng = np.random.default_rng(5)
    budget = arrayfs.writer._GROUP_BATCH_BYTES  # group_size:4
    records = [rng.bytes(int(n)) for n in rng.integers(budget // 3, budget - budget // 10, 14)] + [b"tail"]
    path = tmp_path / "b.array_record"
    awrite(path, f"group_size:4,zstd:1,max_parallelism:{parallelism}", records)
    assert google_read(path)[0] == records
    with arrayfs.ArrayRecordReader(path) as r:
        assert np.diff(r._file.index()[2]).tolist() == [4, 4, 4, 3]


@pytest.mark.parametrize("codec", CODECS)
def test_footer_spanning_several_blocks(tmp_path, codec):
    """40,000 one-record chunks: the footer chunk runs over several 64 KiB
    blocks (block headers inside it), and Google's reader finds every chunk."""
    records = [b"%d" % i * (i % 5) for i in range(40_000)]
    path = tmp_path / "f.array_record"
    awrite(path, f"group_size:1,{codec}", records)
    data = path.read_bytes()
    footer_span = len(data) - BLOCK_SIZE - footer_offset(data)
    assert footer_span > BLOCK_SIZE + 24  # at least one block header inside the footer
    got, _ = google_read(path)
    assert got == records
    r = google.ArrayRecordReader(str(path))
    try:
        picks = [0, 1, 12_345, 39_999]
        assert r.read(picks) == [records[i] for i in picks]
    finally:
        r.close()
    if codec == "uncompressed":
        theirs = tmp_path / "g.array_record"
        gwrite(theirs, "group_size:1,uncompressed", records)
        assert data == theirs.read_bytes()


# -- targets: a URL and a stream, through the batch paths --------------------------


@pytest.mark.parametrize("parallelism", [1, 2])
def test_memory_url(tmp_path, parallelism):
    url = f"memory://arrayfs-writer-test/p{parallelism}/m.array_record"
    fs = fsspec.filesystem("memory")
    try:
        with arrayfs.ArrayRecordWriter(url, f"group_size:1,max_parallelism:{parallelism}") as w:
            for r in RECORDS[:6000]:
                w.write(r)
            assert not fs.exists(url)  # nothing at the URL before close()
        local = tmp_path / "m.array_record"
        local.write_bytes(fs.cat_file(url))
        assert google_read(local)[0] == RECORDS[:6000]
    finally:
        fs.rm(f"memory://arrayfs-writer-test/p{parallelism}", recursive=True)


@pytest.mark.parametrize("parallelism", [1, 2])
def test_bytesio_stream(tmp_path, parallelism):
    stream = io.BytesIO()
    with arrayfs.ArrayRecordWriter(stream, f"group_size:3,zstd:3,max_parallelism:{parallelism}") as w:
        for r in RECORDS[:6000]:
            w.write(r)
    assert not stream.closed
    local = tmp_path / "s.array_record"
    local.write_bytes(stream.getvalue())
    assert google_read(local)[0] == RECORDS[:6000]
    # the same bytes as a file written with the same options
    path = tmp_path / "f.array_record"
    awrite(path, f"group_size:3,zstd:3,max_parallelism:{parallelism}", RECORDS[:6000])
    assert path.read_bytes() == stream.getvalue()


class _WriteOnly:
    """A stream with nothing but ``write`` (no ``writelines``, no ``flush``
    beyond the minimum), as some sinks hand out."""

    def __init__(self):
        self.parts = []

    def write(self, b):
        self.parts.append(bytes(b))
        return len(b)

    def flush(self):
        pass


def test_stream_with_only_write(tmp_path):
    stream = _WriteOnly()
    with arrayfs.ArrayRecordWriter(stream, "group_size:1,uncompressed") as w:
        for r in RECORDS[:5000]:
            w.write(r)
    path = tmp_path / "g.array_record"
    gwrite(path, "group_size:1,uncompressed", RECORDS[:5000])
    assert b"".join(stream.parts) == path.read_bytes()


# -- failures ---------------------------------------------------------------------------


@pytest.mark.parametrize("parallelism", [1, 2])
def test_failed_stream_fails_the_writer(parallelism):
    """The stream goes away mid-file: a later write() or close() raises,
    and the writer stays failed."""
    stream = io.BytesIO()
    w = arrayfs.ArrayRecordWriter(stream, f"group_size:1,max_parallelism:{parallelism}")
    stream.close()
    failed_in_write = False
    try:
        for r in RECORDS:
            w.write(r)
    except ValueError as e:  # BytesIO's own error, from the write that met it
        assert "closed file" in str(e)
        failed_in_write = True
    if failed_in_write:
        assert not w.ok()
        with pytest.raises(RuntimeError, match="closed file"):
            w.write(b"more")
        with pytest.raises(RuntimeError, match="closed file"):
            w.close()
    else:  # every batch was still in flight: close() meets the error
        with pytest.raises(ValueError, match="closed file"):
            w.close()
    assert not w.ok()
    with pytest.raises(RuntimeError):
        w.write(b"more")
    w.close()  # once failed and closed, close() does nothing


def test_write_checks(tmp_path):
    path = tmp_path / "c.array_record"
    w = arrayfs.ArrayRecordWriter(path, "group_size:2")
    with pytest.raises(TypeError):
        w.write("text")
    w.write(bytearray(b"ab"))
    w.write(memoryview(b"cd"))
    w.write(b"ef")
    assert w.ok() and "3 records" in repr(w)
    w.close()
    assert not w.ok() and not w.is_open()
    with pytest.raises(RuntimeError, match="closed"):
        w.write(b"x")
    assert google_read(path)[0] == [b"ab", b"cd", b"ef"]


def test_failed_close_leaves_no_file(tmp_path):
    path = tmp_path / "x.array_record"
    w = arrayfs.ArrayRecordWriter(path, "group_size:1,max_parallelism:2")
    for r in RECORDS[:5000]:
        w.write(r)
    w._file.close()  # the temporary file's handle fails under the writer
    with pytest.raises((ValueError, OSError, RuntimeError)):
        w.close()
    assert not path.exists()
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".arrayfs-tmp")]


def test_callers_error_comes_out_when_the_temporary_file_cannot_go(tmp_path):
    """An error raised inside `with` comes out unchanged even when the
    temporary file cannot be removed (here a directory stands in its place;
    a read-only remount does the same); the output never appears."""
    path = tmp_path / "x.array_record"
    with pytest.raises(ValueError, match="the caller's"):
        with arrayfs.ArrayRecordWriter(path, "group_size:1,max_parallelism:2") as w:
            for r in RECORDS[:3000]:
                w.write(r)
            (tmp,) = [p for p in tmp_path.iterdir() if p.name.endswith(".arrayfs-tmp")]
            tmp.unlink()
            (tmp / "blocker").mkdir(parents=True)
            raise ValueError("the caller's")
    assert not path.exists()


def test_a_full_disk_error_names_the_output(tmp_path):
    """ENOSPC while writing the temporary file names no file by itself: the
    writer's error names the output (its directory is a 1 MiB tmpfs)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    d = tmp_path / "small"
    d.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(d)], check=True)
    try:
        path = d / "x.array_record"
        big = np.random.default_rng(0).integers(0, 256, 4 << 20, dtype=np.uint8).tobytes()
        with pytest.raises(OSError) as e:
            with arrayfs.ArrayRecordWriter(path, "group_size:1,uncompressed") as w:
                for k in range(4):
                    w.write(big[k << 20 : (k + 1) << 20])
        assert e.value.errno == errno.ENOSPC and e.value.filename == str(path), e.value
        assert os.listdir(d) == []
    finally:
        subprocess.run(["umount", str(d)], check=True)


def test_missing_directory_names_the_output_not_the_temporary_file(tmp_path):
    path = tmp_path / "nodir" / "train.array_record"
    with pytest.raises(FileNotFoundError) as e:
        arrayfs.ArrayRecordWriter(path)
    assert e.value.filename == str(path) and "arrayfs-tmp" not in str(e.value)


@pytest.mark.parametrize("name", ["a" * 255, "é" * 127, "x" * 240 + ".array_record"])
def test_file_names_up_to_255_bytes(tmp_path, name):
    """The temporary file beside the output has a name of its own: it must
    fit in 255 bytes however long the output's name is."""
    path = tmp_path / name
    assert len(os.fsencode(name)) <= 255
    with arrayfs.ArrayRecordWriter(path, "group_size:1") as w:
        w.write(b"one")
        w.write(b"two")
    assert gread(path) == [b"one", b"two"]
    assert os.listdir(tmp_path) == [name]


# -- the batch functions against their one-at-a-time counterparts ------------------------


@pytest.mark.parametrize("start", [0, 1, 100, BLOCK_SIZE - 41, BLOCK_SIZE - 25])
def test_write_chunks_equals_write_chunk(start):
    """Many chunks laid out in one pass: the same bytes and offsets as one
    write_chunk call each, block headers included, from any start."""
    rng = np.random.default_rng(start)
    sizes = rng.integers(0, 30_000, 300)
    sizes[::7] = rng.integers(0, 3, len(sizes[::7]))
    sizes[5] = 3 * BLOCK_SIZE  # one chunk spans several blocks
    datas = [rng.bytes(int(n)) for n in sizes]
    counts = rng.integers(1, 4, len(datas))
    headers = [encode_chunk_header(d, SIMPLE, int(c), 7) for d, c in zip(datas, counts)]
    one, many = io.BytesIO(), io.BytesIO()
    a, b = ChunkWriter(one), ChunkWriter(many)
    lead = rng.bytes(start)
    for cw in (a, b):  # the same first chunk, to start mid-block
        cw.write_chunk(encode_chunk_header(lead, SIMPLE, 1, 1), lead)
    expected = [a.write_chunk(h, d) for h, d in zip(headers, datas)]
    buf = bytearray().join(x for h, d in zip(headers, datas) for x in (h, d))
    starts = np.concatenate(([0], np.cumsum([len(h) + len(d) for h, d in zip(headers, datas)])[:-1]))
    got = b.write_chunks(buf, starts, counts)
    assert got.tolist() == expected
    assert a.pos == b.pos
    assert many.getvalue() == one.getvalue()


def test_write_chunks_pads_chunks_with_more_records_than_bytes():
    one, many = io.BytesIO(), io.BytesIO()
    a, b = ChunkWriter(one), ChunkWriter(many)
    datas = [b"", b"ab", b"", b"x" * 100, b"", b"", b"y"]
    counts = np.array([500, 3, 70_000, 1, 40, 41, 42])  # 40 header bytes + data: padding from 41
    headers = [encode_chunk_header(d, SIMPLE, int(c), 0) for d, c in zip(datas, counts)]
    expected = [a.write_chunk(h, d) for h, d in zip(headers, datas)]
    buf = bytearray().join(x for h, d in zip(headers, datas) for x in (h, d))
    starts = np.concatenate(([0], np.cumsum([40 + len(d) for d in datas])[:-1]))
    assert b.write_chunks(buf, starts, counts).tolist() == expected
    assert many.getvalue() == one.getvalue()


def test_fill_chunk_headers_equals_encode_chunk_header():
    rng = np.random.default_rng(3)
    datas = [rng.bytes(int(n)) for n in rng.integers(0, 500, 200)]
    counts = rng.integers(1, 1 << 20, 200)
    decoded = rng.integers(0, 1 << 40, 200)
    buf = bytearray().join(x for d in datas for x in (bytes(40), d))
    starts = np.concatenate(([0], np.cumsum([40 + len(d) for d in datas])[:-1]))
    fill_chunk_headers(buf, starts, np.array([len(d) for d in datas]), SIMPLE, counts, decoded)
    expected = b"".join(
        encode_chunk_header(d, SIMPLE, int(c), int(s)) + d for d, c, s in zip(datas, counts, decoded)
    )
    assert bytes(buf) == expected


def test_encode_chunk_footers_equals_one_at_a_time():
    rng = np.random.default_rng(4)
    n = 5000
    fields = [rng.integers(0, 1 << 62, n, dtype=np.uint64) >> rng.integers(0, 62, n).astype(np.uint64)
              for _ in range(3)]
    fields[0][:4] = [0, 127, 128, 2**64 - 1]
    fields[1][:4] = [2**64 - 1, 0, 16383, 16384]
    encoded, lengths = encode_chunk_footers(*fields)
    expected = [encode_chunk_footer(int(a), int(b), int(c)) for a, b, c in zip(*fields)]
    assert encoded == b"".join(expected)
    assert lengths.tolist() == [len(e) for e in expected]
    offsets = np.concatenate(([0], np.cumsum(lengths)))
    assert (decode_chunk_footers(encoded, offsets) == np.stack(fields, axis=1)).all()
    empty, empty_lengths = encode_chunk_footers([], [], [])
    assert empty == b"" and empty_lengths.shape == (0,)
    with pytest.raises(ValueError):
        encode_chunk_footers([1, 2], [1], [1, 2])


def test_footer_encoder_matches_the_records_and_stays_compact():
    options = "group_size:1,transpose:false,pad_to_block_boundary:false,zstd:3,window_log:20,max_parallelism:1"
    enc = FooterEncoder(options)
    rng = np.random.default_rng(6)
    expected = []
    offset = 64
    for k in (1, 3, 4095, 1, 4096, 9000, 7, 200):  # batches of every shape around the stage size
        offs = offset + np.cumsum(rng.integers(41, 3000, k))
        sizes = rng.integers(0, 5000, k)
        counts = np.ones(k, dtype=np.int64)
        offset = int(offs[-1])
        enc.add(offs, sizes, counts)
        expected += [encode_chunk_footer(int(a), int(b), 1) for a, b in zip(offs, sizes)]
    num_chunks = enc.num_chunks
    assert num_chunks == len(expected)
    per_chunk = (enc.nbytes - enc._stage.nbytes) / num_chunks
    assert per_chunk <= 24
    values, sizes, count = enc.finish(num_chunks)
    meta = encode_footer_metadata(num_chunks, num_chunks, options)
    assert count == num_chunks + 1
    assert bytes(values) == meta + b"".join(expected)
    assert bytes(sizes) == bytes([len(meta)]) + bytes(len(e) for e in expected)


def test_footer_encoder_long_options_string():
    """Metadata longer than 127 bytes: its length takes a two-byte varint."""
    options = "group_size:1," + "x" * 300
    enc = FooterEncoder(options)
    enc.add([64], [5], [1])
    values, sizes, count = enc.finish(1)
    meta = encode_footer_metadata(1, 1, options)
    assert bytes(values) == meta + encode_chunk_footer(64, 5, 1)
    assert read_varint(bytes(sizes), 0) == (len(meta), 2) and bytes(sizes)[2:] == bytes([6])


def test_write_chunks_fast_path_at_the_padding_threshold():
    """Chunks holding exactly as many records as bytes need no padding and
    stay on the one-pass path: the bytes are still write_chunk's."""
    datas = [b"", b"a", b"", b"bc"] * 1500  # enough to cross block boundaries
    counts = np.array([40, 41, 1, 42] * 1500)
    one, many = io.BytesIO(), io.BytesIO()
    a, b = ChunkWriter(one), ChunkWriter(many)
    headers = [encode_chunk_header(d, SIMPLE, int(c), 0) for d, c in zip(datas, counts)]
    expected = [a.write_chunk(h, d) for h, d in zip(headers, datas)]
    buf = bytearray().join(x for h, d in zip(headers, datas) for x in (h, d))
    starts = np.concatenate(([0], np.cumsum([40 + len(d) for d in datas])[:-1]))
    assert b.write_chunks(buf, starts, counts).tolist() == expected
    assert many.getvalue() == one.getvalue()
    assert len(one.getvalue()) > 2 * BLOCK_SIZE
