"""WriteToArrayRecord and ReadFromArrayRecord on Beam's DirectRunner, with
Google's array_record wheel as the oracle both ways."""

import hashlib
import os
import random

import apache_beam as beam
import pytest
from _google import gread, gwrite
from _records import make_records
from apache_beam.io import source_test_utils
from apache_beam.testing.util import assert_that, equal_to
from array_record.python.array_record_module import ArrayRecordReader as GoogleReader

from arrayfs import ArrayRecordError
from arrayfs.beam import ReadFromArrayRecord, WriteToArrayRecord
from arrayfs.beam.source import ArrayRecordSource
from arrayfs.file import ArrayRecordFile
from arrayfs.options import parse_writer_options

# In-process pipelines keep their temporary directories under pytest's basetemp.
pytestmark = pytest.mark.usefixtures("beam_tempdir")


def google_read(path) -> list[bytes]:
    return gread(path)


def google_options(path) -> str:
    r = GoogleReader(str(path))
    try:
        return r.writer_options_string()
    finally:
        r.close()


class MultisetDigest(beam.CombineFn):
    """Combines records into ``(count, sum of 64-bit hashes mod 2**64)``: a
    multiset digest, so a missing, repeated or extra record changes it.
    Carries no expected data (Beam pickles and bz2-compresses every
    transform's payload many times; equal_to over tens of thousands of
    records costs minutes)."""

    def create_accumulator(self):
        return 0, 0

    def add_input(self, acc, record):
        return acc[0] + 1, (acc[1] + record_hash(record)) % (1 << 64)

    def merge_accumulators(self, accs):
        count = total = 0
        for c, t in accs:
            count += c
            total = (total + t) % (1 << 64)
        return count, total

    def extract_output(self, acc):
        return acc


def record_hash(record) -> int:
    return int.from_bytes(hashlib.blake2b(record, digest_size=8).digest(), "little")


def digest(records):
    fn = MultisetDigest()
    acc = fn.create_accumulator()
    for r in records:
        acc = fn.add_input(acc, r)
    return acc


def assert_exactly_once(pcoll, expected, label):
    """``pcoll`` holds each record of ``expected`` exactly once, nothing else."""
    assert_that(pcoll | f"{label} digest" >> beam.CombineGlobally(MultisetDigest()),
                equal_to([digest(expected)]), label=label)


def test_digest_sees_missing_repeated_and_extra_records():
    recs = [b"a", b"b", b"c"]
    assert digest(recs) == digest(list(reversed(recs)))
    for other in ([b"a", b"b"], [b"a", b"b", b"c", b"c"], [b"a", b"b", b"c", b"d"], [b"a", b"a", b"c"]):
        assert digest(other) != digest(recs)


# -- the sink ----------------------------------------------------------------------


def test_write_three_shards_read_by_google(tmp_path):
    recs = make_records(2000, size=(0, 300), tag=True)
    prefix = tmp_path / "out" / "train"
    with beam.Pipeline() as p:
        written = p | beam.Create(recs) | WriteToArrayRecord(str(prefix), num_shards=3,
                                                              file_name_suffix=".array_record")
        assert_that(written, equal_to([f"{prefix}-{k:05d}-of-00003.array_record" for k in range(3)]))
    names = sorted(os.listdir(tmp_path / "out"))
    # Templated names, and nothing else: the beam-temp directory is gone.
    assert names == [f"train-{k:05d}-of-00003.array_record" for k in range(3)]
    got = [r for n in names for r in google_read(tmp_path / "out" / n)]
    assert len(got) == len(recs) and sorted(got) == sorted(recs)
    assert all(google_read(tmp_path / "out" / n) for n in names)  # no shard is empty


def test_a_retried_finalize_still_outputs_every_shard(tmp_path):
    # --direct_runner_bundle_repeat=1 runs each bundle twice, as a retry; the
    # second FinalizeWrite finds every shard renamed by the first. Beam's
    # FileBasedSink then yielded no name: the transform's output was empty.
    from apache_beam.options.pipeline_options import PipelineOptions

    prefix = tmp_path / "out" / "r"
    recs = [b"%d" % i for i in range(30)]
    with beam.Pipeline(options=PipelineOptions(["--direct_runner_bundle_repeat=1"])) as p:
        written = p | beam.Create(recs) | WriteToArrayRecord(str(prefix), num_shards=2)
        assert_that(written, equal_to([f"{prefix}-{k:05d}-of-00002" for k in range(2)]))
    names = sorted(os.listdir(tmp_path / "out"))
    assert names == [f"r-{k:05d}-of-00002" for k in range(2)]
    assert sorted(r for n in names for r in google_read(tmp_path / "out" / n)) == sorted(recs)


@pytest.mark.parametrize("options", [
    "group_size:64,brotli:5",
    "group_size:10,snappy",
    "uncompressed,group_size:3",
    "zstd:9,group_size:1000,window_log:18",
    "group_size:7,pad_to_block_boundary:true",
])
def test_writer_options_reach_the_footer(tmp_path, options):
    recs = make_records(500, seed=1, size=(0, 300), tag=True)
    prefix = str(tmp_path / "o")
    with beam.Pipeline() as p:
        _ = p | beam.Create(recs) | WriteToArrayRecord(prefix, num_shards=1, writer_options=options)
    (path,) = [tmp_path / n for n in os.listdir(tmp_path)]
    assert path.name == "o-00000-of-00001"
    assert google_options(path) == parse_writer_options(options).to_string()
    assert sorted(google_read(path)) == sorted(recs)
    group = parse_writer_options(options).group_size
    with ArrayRecordFile(path) as f:
        assert f.num_chunks == -(-len(recs) // group)


def test_default_options_are_group_size_1(tmp_path):
    with beam.Pipeline() as p:
        _ = p | beam.Create([b"a", b"b"]) | WriteToArrayRecord(str(tmp_path / "d"), shard_name_template="")
    assert google_options(tmp_path / "d").startswith("group_size:1,")
    assert sorted(google_read(tmp_path / "d")) == [b"a", b"b"]


@pytest.mark.parametrize("options, match", [
    ("transpose:true", "transpose:true is not supported"),
    ("group_size:0", "group_size"),
    ("zstd,brotli", "conflicts"),
    ("bogus:1", "Unknown option bogus"),
])
def test_bad_writer_options_fail_at_construction(tmp_path, options, match):
    with pytest.raises(ValueError, match=match):
        WriteToArrayRecord(str(tmp_path / "x"), writer_options=options)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("prefix, kw", [
    ("train[1]", {}), ("train*", {}), ("train?", {}), ("train{1,2}", {}),
    ("train", {"file_name_suffix": ".ar[1]"}), ("train", {"shard_name_template": "-SS-[of]-NN"}),
])
def test_glob_characters_in_shard_names_are_refused_at_construction(tmp_path, prefix, kw):
    # Beam's FileBasedSink deletes `prefix-*-of-NNNNN.suffix` by glob before
    # renaming: writing 'train[1]' deleted the shards of another dataset,
    # 'train1', then failed and left its beam-temp directory.
    with beam.Pipeline() as p:
        _ = p | beam.Create([b"other"]) | WriteToArrayRecord(str(tmp_path / "train1"), num_shards=1)
    other = tmp_path / "train1-00000-of-00001"
    with pytest.raises(ValueError, match="glob character.*which Beam's file sink would match other files"):
        WriteToArrayRecord(str(tmp_path / prefix), num_shards=1, **kw)
    assert os.listdir(tmp_path) == [other.name]
    assert google_read(other) == [b"other"]


def test_template_suffix_and_coder(tmp_path):
    words = ["alpha", "beta", "gamma"]
    with beam.Pipeline() as p:
        _ = p | beam.Create(words) | WriteToArrayRecord(
            str(tmp_path / "w"), file_name_suffix=".ar", shard_name_template="-SS-of-NN",
            num_shards=2, coder=beam.coders.StrUtf8Coder())
    assert sorted(os.listdir(tmp_path)) == ["w-00-of-02.ar", "w-01-of-02.ar"]
    got = [r for n in sorted(os.listdir(tmp_path)) for r in google_read(tmp_path / n)]
    assert sorted(got) == sorted(w.encode() for w in words)


def test_non_bytes_without_coder_fails_and_writes_nothing(tmp_path):
    with pytest.raises(Exception, match="takes bytes elements, got str"):
        with beam.Pipeline() as p:
            _ = p | beam.Create(["text"]) | WriteToArrayRecord(str(tmp_path / "x"), num_shards=1)
    assert not [n for n in os.listdir(tmp_path) if n.startswith("x-")]


def test_write_to_s3_through_beam_filesystems(tmp_path):
    """A real S3 API (moto's server on loopback) reached only through Beam's
    S3 filesystem: the shards are there, whole, and no temp object is left."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        creds = dict(aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1")
        s3 = boto3.client("s3", endpoint_url=endpoint, **creds)
        s3.create_bucket(Bucket="bkt")
        recs = make_records(300, seed=5, size=(0, 300), tag=True)
        from apache_beam.options.pipeline_options import PipelineOptions

        opts = PipelineOptions([f"--s3_endpoint_url={endpoint}", "--s3_access_key_id=testing",
                                "--s3_secret_access_key=testing", "--s3_region_name=us-east-1"])
        with beam.Pipeline(options=opts) as p:
            _ = p | beam.Create(recs) | WriteToArrayRecord(
                "s3://bkt/data/train", num_shards=2, writer_options="group_size:16,zstd:5",
                file_name_suffix=".array_record")
        keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="bkt").get("Contents", []))
        assert keys == [f"data/train-{k:05d}-of-00002.array_record" for k in range(2)]
        got = []
        for k in keys:
            local = tmp_path / os.path.basename(k)
            local.write_bytes(s3.get_object(Bucket="bkt", Key=k)["Body"].read())
            assert google_options(local).startswith("group_size:16,")
            got += google_read(local)
        assert sorted(got) == sorted(recs)
    finally:
        server.stop()


# -- the source --------------------------------------------------------------------

CODECS = ["uncompressed", "brotli", "zstd", "snappy"]


def test_read_google_shards_every_group_size_and_codec(tmp_path):
    """group_size 1, 64 and 1000 by every codec, three shards each (one of
    them empty): 36 shards read by one ReadFromArrayRecord."""
    expected = []
    for group_size in (1, 64, 1000):
        for codec in CODECS:
            name = f"{codec}-{group_size}"
            recs = [name.encode() + b"/" + r for r in make_records(2600, seed=group_size, size=(0, 300), tag=True)]
            parts = [recs[:1700], recs[1700:], []]
            d = tmp_path / name
            d.mkdir()
            for k, part in enumerate(parts):
                gwrite(d / f"s-{k:05d}-of-00003.array_record", f"group_size:{group_size},{codec}", part)
            expected += recs
    with beam.Pipeline() as p:
        got = p | ReadFromArrayRecord(str(tmp_path / "*" / "s-*.array_record"))
        assert_exactly_once(got, expected, "exactly once")


def test_read_one_shard_of_60k_records(tmp_path):
    recs = make_records(60_000, seed=7, size=(0, 40), tag=True)
    gwrite(tmp_path / "big.array_record", "group_size:1", recs)
    with beam.Pipeline() as p:
        got = p | ReadFromArrayRecord(str(tmp_path / "big.array_record"))
        assert_exactly_once(got, recs, "exactly once")
        assert_that(got | beam.combiners.Count.Globally(), equal_to([60_000]), label="count")


def test_relative_glob_in_the_working_directory(tmp_path, monkeypatch):
    # 'train-*' alone, from the shards' own directory: Beam's local match
    # expands a relative glob only below a directory.
    recs = make_records(300, seed=3, size=(0, 40), tag=True)
    gwrite(tmp_path / "train-00000-of-00002.array_record", "group_size:1", recs[:100])
    gwrite(tmp_path / "train-00001-of-00002.array_record", "group_size:16", recs[100:])
    monkeypatch.chdir(tmp_path)
    with beam.Pipeline() as p:
        assert_exactly_once(p | ReadFromArrayRecord("train-*.array_record"), recs, "exactly once")


def _chunk_ranges(path):
    with ArrayRecordFile(path) as f:
        first = f.index().first
    return {(int(a), int(b)) for a, b in zip(first[:-1], first[1:])}


@pytest.mark.parametrize("group_size", [1, 7, 100])
def test_split_bundles_are_disjoint_chunk_aligned_and_cover(tmp_path, group_size):
    recs = make_records(3000, seed=group_size, size=(0, 200), tag=True)
    path = tmp_path / "one.array_record"
    gwrite(path, f"group_size:{group_size},zstd:1", recs)
    source = ArrayRecordSource(str(path))
    size = os.path.getsize(path)
    bundles = list(source.split(desired_bundle_size=max(size // 13, 1)))
    assert len(bundles) >= 10
    index = {r: i for i, r in enumerate(recs)}
    chunks = _chunk_ranges(path)
    seen = []
    for b in bundles:
        got = source_test_utils.read_from_source(b.source, b.start_position, b.stop_position)
        seen += got
        if not got:
            continue
        ids = [index[r] for r in got]
        # A bundle is one run of whole chunks: consecutive records, starting
        # at a chunk's first record and ending at a chunk's last.
        assert ids == list(range(ids[0], ids[-1] + 1))
        assert any(a == ids[0] for a, _ in chunks) and any(b == ids[-1] + 1 for _, b in chunks)
    assert len(seen) == len(recs) and set(seen) == set(recs)  # disjoint and covering


def test_dynamic_splits_at_every_fraction(tmp_path):
    """Beam's own exhaustive check: for every number of records read and
    every split fraction, primary + residual read exactly the records of
    the unsplit range."""
    # Big incompressible records, so that chunks fill most of the file's
    # bytes (the footer and postscript take its last 64 KiB blocks) and
    # split fractions land between chunks.
    rng = random.Random(3)
    recs = [rng.randbytes(100_000 + i) for i in range(6)]
    path = tmp_path / "small.array_record"
    gwrite(path, "group_size:2,uncompressed", recs)
    source = ArrayRecordSource(str(path))
    (bundle,) = list(source.split(desired_bundle_size=1 << 30))
    source_test_utils.assert_split_at_fraction_exhaustive(
        bundle.source, bundle.start_position, bundle.stop_position)


def test_round_trip_of_our_sink_and_source(tmp_path):
    recs = make_records(5000, seed=9, size=(0, 300), tag=True)
    prefix = str(tmp_path / "rt")
    with beam.Pipeline() as p:
        _ = p | beam.Create(recs) | WriteToArrayRecord(prefix, num_shards=4, writer_options="group_size:32,brotli")
    with beam.Pipeline() as p:
        assert_exactly_once(p | ReadFromArrayRecord(prefix + "-*"), recs, "exactly once")


def test_corrupt_shard_fails_naming_the_file(tmp_path):
    recs = make_records(200, seed=11, size=(0, 300), tag=True)
    path = tmp_path / "c.array_record"
    gwrite(path, "group_size:10,uncompressed", recs)
    with ArrayRecordFile(path) as f:
        off = int(f.index().offsets[3])
    data = bytearray(path.read_bytes())
    data[off + 60] ^= 0xFF  # inside chunk 3's data
    path.write_bytes(bytes(data))
    with pytest.raises(Exception) as ei:
        with beam.Pipeline() as p:
            _ = p | ReadFromArrayRecord(str(path))
    chain, e = [], ei.value
    while e is not None:
        chain.append(e)
        e = e.__cause__ if e.__cause__ is not None else (None if e.__suppress_context__ else e.__context__)
    found = [x for x in chain if isinstance(x, ArrayRecordError)]
    assert found and found[-1].path == str(path) and found[-1].offset == off


def test_nothing_matches_is_refused_at_construction(tmp_path):
    with pytest.raises(IOError, match="No files found"):
        ReadFromArrayRecord(str(tmp_path / "nothing-*"))


def test_records_read_metric(tmp_path):
    recs = make_records(700, seed=13, size=(0, 300), tag=True)
    gwrite(tmp_path / "m.array_record", "group_size:50", recs)
    p = beam.Pipeline()
    _ = p | ReadFromArrayRecord(str(tmp_path / "m.array_record"))
    result = p.run()
    result.wait_until_finish()
    from apache_beam.metrics.metric import MetricsFilter

    counters = result.metrics().query(MetricsFilter().with_name("records_read"))["counters"]
    assert sum(c.committed for c in counters) == len(recs)


def test_source_yields_plain_bytes(tmp_path):
    gwrite(tmp_path / "t.array_record", "group_size:1", [b"x" * 10, b"y"])
    got = source_test_utils.read_from_source(ArrayRecordSource(str(tmp_path / "t.array_record")))
    assert got == [b"x" * 10, b"y"] and all(type(r) is bytes for r in got)
