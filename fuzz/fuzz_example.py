"""Fuzz target: the ``tf.train.Example`` decoder and what is built on it.

Input: the bytes of one record. Passes when :func:`arrayfs.encoding.decode_example`
returns ``{name: 1-D array}`` or raises :class:`RecordDecodeError` (its
documented contract); for a record it decodes, ``to_json`` (plain JSON, no
NaN literal) and ``decoded_tree`` (files of ``bytes``) give the same
feature names, and ``sniff_format`` answers without raising. Every input is
also decoded by the TFDS fixture's ``features.json`` (images, zlib and
bytes tensors, ragged sequences), which may only raise
``RecordDecodeError`` too.

Run: ``python fuzz/fuzz_example.py [libFuzzer flags] fuzz/corpus/example``.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _harness  # noqa: E402

with _harness.instrumented():
    from arrayfs.encoding import FORMATS, RecordDecodeError, decode_example, decoded_tree, sniff_format, to_json
    from arrayfs.tfds import decoder

FIXTURE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "data", "tfds",
                       "arrayfs_digits", "1.0.0")
FEATURES = decoder(FIXTURE)



def _names(tree: dict, prefix: str = "") -> int:
    count = 0
    for name, value in tree.items():
        assert "/" not in name and name not in ("", ".", ".."), f"bad file name {name!r}"
        if isinstance(value, dict):
            count += _names(value, f"{prefix}{name}/")
        else:
            assert isinstance(value, bytes), f"{prefix}{name}: {type(value).__name__}"
            count += 1
    return count


def check(data: bytes) -> None:
    assert sniff_format([data]) in FORMATS
    try:
        example = decode_example(data)
    except RecordDecodeError:
        example = None
    if example is not None:
        for name, values in example.items():
            assert values.ndim == 1 and values.dtype.kind in "ifO", (name, values.dtype)
        shown = to_json(data, "example")
        assert list(shown) == list(example), "to_json lost or added features"
        json.dumps(shown, allow_nan=False)
        files = _names(decoded_tree(data, "example"))
        assert files <= len(example) + sum(v.size for v in example.values()), "more files than values"
    try:
        FEATURES(data)
    except RecordDecodeError:
        pass
    try:
        FEATURES.decode_for_display(data)
    except RecordDecodeError:
        pass


EXPECTED = (RecordDecodeError,)

if __name__ == "__main__":
    # Images in the fixture are 8x8; a header claiming a huge image is
    # refused before Pillow allocates it (Pillow's own knob, lowered from 89M
    # pixels so that what it lets through stays far below the memory cap).
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = 1 << 20
    _harness.main(check, EXPECTED)
