"""Fuzz target: the writer and reader options strings.

Input: the string as UTF-8 (undecodable bytes replaced). Passes when
:func:`parse_writer_options` and :func:`parse_reader_options` return or
raise ``ValueError``, and a parsed writer options value survives its
canonical string: ``parse_writer_options(o.to_string())`` gives ``o`` back
(the string array_record stores in the footer says what was written).

Run: ``python fuzz/fuzz_options.py [libFuzzer flags] fuzz/corpus/options``.
"""

import dataclasses
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _harness  # noqa: E402

with _harness.instrumented():
    from arrayfs.options import WriterOptions, parse_reader_options, parse_writer_options


def _stored(o: WriterOptions) -> WriterOptions:
    # What the canonical string leaves out: the saturation delay, and the
    # bucket size when not transposing.
    return dataclasses.replace(
        o, saturation_delay_ms=None,
        transpose_bucket_size=o.transpose_bucket_size if o.transpose else WriterOptions.transpose_bucket_size,
    )


def check(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    try:
        parse_reader_options(text)
    except ValueError:
        pass
    opts = parse_writer_options(text)
    again = parse_writer_options(opts.to_string())
    assert _stored(again) == _stored(opts), f"{text!r} -> {opts} -> {opts.to_string()!r} -> {again}"


EXPECTED = (ValueError,)

if __name__ == "__main__":
    _harness.main(check, EXPECTED)
