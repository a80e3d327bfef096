"""Defaults of the Beam IO shared by the sink, ``convert`` and its command
line; importing this module does not import Beam."""

#: Writer options when none are given: array_record's own default
#: (``group_size:1``, with ``zstd:3``), as its Beam sink writes.
WRITER_OPTIONS = "group_size:1"
