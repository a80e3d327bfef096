"""``arrayfs info``: shards, counts, chunks, group size, writer options,
sizes, file metadata, the record format and a TFDS dataset's features."""

from __future__ import annotations

import json
import sys

from ..errors import ArrayRecordError
from .common import formatter, human, open_dataset, storage_options, write_lines

_INFO_EPILOG = """\
shows, per shard: records (and the global range they take), chunks and
group_size, writer options, bytes on disk, bytes of records (uncompressed),
and the Riegeli file metadata chunk (record type name) when there is one.

--json prints one object: num_shards, num_records, num_chunks, file_bytes,
record_bytes, and "shards": a list of {path, num_records, first_index,
start, file_records, num_chunks, chunks_used, group_size (null when chunks
differ), writer_options, compression, file_bytes, record_bytes, mtime_ns,
metadata (null, or {present, decoded, fields|error}; bytes in base64)}],
"format": {format (tfds, example, msgpack, json or raw; null when the first
records cannot be read), sniffed (what the first 8 records look like),
description, note|error}, and "tfds" (null, or for a TFDS dataset:
{directory, name, version, splits: {name: records}, features: [{feature,
class, dtype, shape, encoding, num_classes, sequence}]}).

The format is sniffed from the first 8 records (as cat --decode auto and
mount --decode auto do); Examples with a TFDS features.json beside the first
shard (a dataset version directory given as SRC, or its shards) are "tfds",
and their features are listed.

examples:
  arrayfs info 'data/train-*.array_record'
  arrayfs info data/ --json | python -c 'import json,sys; print(json.load(sys.stdin)["num_records"])'
  arrayfs info ~/tensorflow_datasets/mnist/3.0.1          # format and features of a TFDS dataset
"""

def _metadata_summary(f) -> dict | None:
    """The file metadata chunk of an open ArrayRecordFile, as a dict, or
    ``None`` when there is none."""
    try:
        found = f.read_metadata_chunk()
    except ArrayRecordError as e:
        return {"present": True, "decoded": False, "error": e.reason}
    if found is None:
        return None
    header, data = found
    try:
        from ..riegeli.transpose import decode_records_metadata, parse_records_metadata
    except ImportError:
        return {"present": True, "decoded": False, "size_bytes": header.decoded_data_size}
    try:
        fields = parse_records_metadata(decode_records_metadata(data, header.decoded_data_size))
    except Exception as e:  # noqa: BLE001 - a bad metadata chunk must not stop `info`
        return {"present": True, "decoded": False, "error": str(e)}
    return {"present": True, "decoded": True, "fields": fields}

def _jsonable(o):
    # Metadata holds serialized protos (file descriptors, extensions):
    # binary by nature, so always base64, never a guess at text.
    if isinstance(o, (bytes, bytearray, memoryview)):
        import base64

        return base64.b64encode(bytes(o)).decode("ascii")
    if isinstance(o, (set, frozenset)):
        return list(o)
    if hasattr(o, "tolist"):
        return o.tolist()
    return repr(o)

def _format_info(ds, storage_options) -> tuple[dict, dict | None]:
    """``(format, tfds)`` of ``info --json`` (see ``info --help``)."""
    from ..display import FORMAT_NAMES, choose_display

    try:
        display = choose_display("auto", ds, storage_options=storage_options)
    except (ArrayRecordError, OSError, ValueError, ImportError) as e:  # info still describes the shards
        return {"format": None, "sniffed": None, "description": None, "error": str(e)}, None
    fmt = {"format": display.format, "sniffed": display.sniffed, "description": FORMAT_NAMES[display.format]}
    if display.note:
        fmt["note"] = display.note
    if display.features is None:
        return fmt, None
    tfds = {"directory": display.directory, "name": None, "version": None, "splits": None,
            "features": display.features.summary()}
    from ..tfds import DatasetDir

    try:
        info = DatasetDir(display.directory, storage_options)
    except (OSError, ValueError):  # features.json without a dataset_info.json (or not array_record)
        return fmt, tfds
    tfds.update(name=info.name, version=info.info.get("version"),
                splits={name: s.num_examples for name, s in info.splits.items()})
    return fmt, tfds


def collect_info(srcs, storage_options=None) -> dict:
    """The summary ``arrayfs info --json`` prints (see ``info --help``)."""
    from ..options import parse_writer_options

    shards = []
    with open_dataset(srcs, storage_options) as ds:
        fmt, tfds = _format_info(ds, storage_options)
        snap = ds.snapshot()
        for k, sh in enumerate(snap.shards):
            f = snap.file(k)
            chunks_used = 0
            if sh.num_records:
                chunks_used = f.chunk_of(sh.start + sh.num_records - 1) + 1 - f.chunk_of(sh.start)
            try:
                compression = parse_writer_options(sh.writer_options).to_string().split(",")
                compression = next(
                    (c for c in compression if c.split(":")[0] in ("uncompressed", "brotli", "zstd", "snappy")),
                    None,
                )
            except ValueError:
                compression = None
            shards.append({
                "path": sh.path,
                "num_records": sh.num_records,
                "first_index": sh.first_index,
                "start": sh.start,
                "file_records": f.num_records,
                "num_chunks": f.num_chunks,
                "chunks_used": chunks_used,
                "group_size": f.group_size,
                "writer_options": sh.writer_options,
                "compression": compression,
                "file_bytes": sh.size_bytes,
                "record_bytes": snap.shard_record_bytes(k),
                "mtime_ns": sh.mtime_ns,
                "metadata": _metadata_summary(f),
            })
    return {
        "num_shards": len(shards),
        "num_records": sum(s["num_records"] for s in shards),
        "num_chunks": sum(s["num_chunks"] for s in shards),
        "file_bytes": sum(s["file_bytes"] for s in shards),
        "record_bytes": sum(s["record_bytes"] for s in shards),
        "shards": shards,
        "format": fmt,
        "tfds": tfds,
    }

def _metadata_text(md) -> str:
    if md is None:
        return "none"
    if not md.get("decoded"):
        return f"present (not decoded{': ' + md['error'] if md.get('error') else ''})"
    fields = md.get("fields") or {}
    name = fields.get("record_type_name")
    parts = [f"record type {name}" if name else "no record type"]
    if fields.get("file_comment"):
        parts.append(f"comment {fields['file_comment']!r}")
    if fields.get("file_descriptor_names"):
        parts.append(f"descriptors {', '.join(map(str, fields['file_descriptor_names']))}")
    if fields.get("record_writer_options"):
        parts.append(f"riegeli options {fields['record_writer_options']}")
    return "; ".join(parts)

def _format_lines(fmt: dict, tfds: dict | None) -> list:
    if fmt["format"] is None:
        return [f"record format  unknown (the first records cannot be read: {fmt['error']})"]
    how = "" if fmt["sniffed"] == fmt["format"] else f", records sniffed as {fmt['sniffed']}"
    lines = [f"record format  {fmt['format']}: {fmt['description']}{how}"]
    if fmt.get("note"):
        lines.append(f"               ({fmt['note']})")
    if tfds is None:
        return lines
    if tfds["name"]:
        splits = ", ".join(f"{name} {n:,}" for name, n in tfds["splits"].items())
        lines.append(f"TFDS dataset   {tfds['name']} {tfds['version'] or ''} in {tfds['directory']}: splits {splits}")
    else:
        lines.append(f"TFDS features  {tfds['directory']}/features.json")
    rows = [("feature", "class", "dtype", "shape", "")]
    for f in tfds["features"]:
        shape = "(" + ", ".join("?" if d is None else str(d) for d in f["shape"]) + (",)" if len(f["shape"]) == 1 else ")")
        extra = []
        if f.get("encoding") not in (None, "none"):
            extra.append(f"encoding {f['encoding']}")
        if "num_classes" in f:
            extra.append(f"{f['num_classes']} classes")
        if f.get("sequence"):
            extra.append("in Sequence" + "".join(f"[{'?' if n is None else n}]" for n in f["sequence"]))
        rows.append((f["feature"], f["class"], f["dtype"], shape, ", ".join(extra)))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines.append(f"features       {len(rows) - 1}")
    lines += [("  " + "  ".join(r[i].ljust(widths[i]) for i in range(4)) + "  " + r[4]).rstrip() for r in rows]
    return lines


def _cmd_info(args) -> int:
    info = collect_info(args.src, storage_options(args))
    if args.json:
        json.dump(info, sys.stdout, indent=2, default=_jsonable)
        sys.stdout.write("\n")
        return 0
    lines = [
        f"{info['num_shards']} shard{'s' if info['num_shards'] != 1 else ''}, "
        f"{info['num_records']:,} records, {info['num_chunks']:,} chunks, "
        f"{human(info['file_bytes'])} on disk, {human(info['record_bytes'])} of records",
        *_format_lines(info["format"], info["tfds"]),
    ]
    for k, s in enumerate(info["shards"]):
        used = ""
        if s["num_records"] != s["file_records"]:
            used = f" (records {s['start']}..{s['start'] + s['num_records'] - 1} of {s['file_records']} in the file)"
        gs = s["group_size"] if s["group_size"] is not None else "irregular"
        lines += [
            f"shard {k}: {s['path']}",
            f"  records        {s['num_records']:,}{used}, global "
            f"[{s['first_index']}, {s['first_index'] + s['num_records']})",
            f"  chunks         {s['num_chunks']:,} (group_size {gs})",
            f"  writer options {s['writer_options'] or '(none stored)'}",
            f"  file bytes     {s['file_bytes']:,} ({human(s['file_bytes'])})",
            f"  record bytes   {s['record_bytes']:,} ({human(s['record_bytes'])})",
            f"  metadata       {_metadata_text(s['metadata'])}",
        ]
    write_lines(lines)
    return 0


def register(sub, kit) -> None:
    p = sub.add_parser(
        "info", help="summary of shards, records, chunks, options, sizes", formatter_class=formatter,
        description="Summarize a dataset: shards, record counts, chunks, group size, writer options, sizes, "
                    "file metadata, the record format (sniffed) and a TFDS dataset's features.",
        epilog=_INFO_EPILOG,
    )
    p.add_argument("src", nargs="+", metavar="SRC", help="shard file, quoted glob, directory or 'path[a:b]'")
    p.add_argument("--json", action="store_true", help="print JSON (format below)")
    kit.add_storage_option(p)
    p.set_defaults(func=_cmd_info)
