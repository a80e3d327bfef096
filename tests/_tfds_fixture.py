"""The committed TFDS fixture (``tests/data/tfds/``): a dataset built by
tensorflow-datasets itself (``make_fixture.py``) and what
``tfds.data_source`` returned for every record (``expected.json`` +
``expected.npz``, read by ``expected_io``)."""

from __future__ import annotations

import functools
import os
import sys

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "tfds")
VERSION_DIR = os.path.join(DATA, "arrayfs_digits", "1.0.0")
if DATA not in sys.path:
    sys.path.insert(0, DATA)

import expected_io  # noqa: E402

assert_same = expected_io.assert_same


@functools.cache
def expected() -> dict:
    """``{split: [record as tfds.data_source returned it]}``."""
    return expected_io.load(os.path.join(DATA, "expected"))


def shards(split: str) -> list[str]:
    return sorted(os.path.join(VERSION_DIR, n) for n in os.listdir(VERSION_DIR) if f"-{split}.array_record-" in n)
