"""The Riegeli/records container: blocks, chunks, codecs, hashes, varints.

Knows about bytes only; nothing here knows about ArrayRecord, shards, FUSE or
JAX. Spec: riegeli ``doc/riegeli_records_file_format.md``.
"""
