"""Apache Beam IO for ArrayRecord, and dataset conversion (``arrayfs[beam]``).

* :class:`WriteToArrayRecord`: an atomic file sink writing ArrayRecord shards
  through Beam's ``FileSystems`` (``gs://``, ``s3://``, local), with any
  writer options.
* :class:`ReadFromArrayRecord`: a splittable source; bundles are record
  ranges aligned to chunks.
* :func:`convert`: TFRecord, JSON lines, text lines, parquet or plain files
  into ArrayRecord shards on any Beam runner (``arrayfs convert``);
  :class:`ReadRecords` is its reading half, for your own pipelines.

Names load on first use, so that ``arrayfs`` (which registers the
``convert`` command from :mod:`arrayfs.beam.cli`) does not import Beam.
"""

_EXPORTS = {
    "WriteToArrayRecord": ".sink",
    "ReadFromArrayRecord": ".source",
    "convert": ".conversion",
    "ConvertResult": ".conversion",
    "ConvertError": ".conversion",
    "ReadRecords": ".conversion",
}

__all__ = list(_EXPORTS)


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'arrayfs.beam' has no attribute {name!r}")
    import importlib

    try:
        value = getattr(importlib.import_module(module, __name__), name)
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] == "arrayfs":
            raise
        from ..extras import missing

        raise missing(e, f"arrayfs.beam.{name}", "beam") from None
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
