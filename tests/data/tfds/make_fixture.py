"""Build the TFDS fixture with TensorFlow Datasets itself, and record what
``tfds.data_source`` returns for every record.

Runs in a venv holding tensorflow (CPU) and tensorflow-datasets (``make
tfds-fixture`` makes one, ``.venv-tfds``); arrayfs's own tests then need
neither. The builder below covers the feature types arrayfs decodes:
``Image`` (PNG and JPEG), ``ClassLabel`` (with names, and with a class
count only), ``Text``, ``Tensor`` of several dtypes and shapes (one
unknown dimension, ``encoding="zlib"`` and ``encoding="bytes"`` with two
unknown dimensions, ``uint64`` and ``bool``), ``Scalar``, ``Sequence`` of
scalars, of images and of dicts, a ``Sequence`` of ``Sequence``, and
nested ``FeaturesDict``. The data are scikit-learn's digits (shipped
inside scikit-learn: nothing is downloaded).

A rebuild gives the same records in value (and the same ``expected.*``)
but not byte for byte: protobuf writes an Example's feature map in an order
that changes from process to process.

Run: ``python tests/data/tfds/make_fixture.py [--data-dir DIR]
[--train N --test N] [--no-expected]``. With the defaults it rewrites
``tests/data/tfds/arrayfs_digits/1.0.0/`` and ``expected.{json,npz}``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
SIZES = {"train": 64, "test": 16}


def _builder_class(sizes: dict):
    import tensorflow_datasets as tfds
    from sklearn.datasets import load_digits

    class ArrayfsDigits(tfds.core.GeneratorBasedBuilder):
        """scikit-learn's 8x8 digits, with one feature of each kind arrayfs decodes."""

        VERSION = tfds.core.Version("1.0.0")
        RELEASE_NOTES = {"1.0.0": "arrayfs test fixture."}

        def _info(self):
            f = tfds.features
            return tfds.core.DatasetInfo(
                builder=self,
                description="scikit-learn digits with one feature of each kind (arrayfs's TFDS fixture).",
                features=f.FeaturesDict({
                    "image": f.Image(shape=(8, 8, 1)),
                    "label": f.ClassLabel(names=NAMES),
                    "text": f.Text(),
                    "pixels": f.Tensor(shape=(8, 8), dtype=np.float64),
                    "moments": f.Tensor(shape=(2, 3), dtype=np.int32),
                    "flags": f.Tensor(shape=(None,), dtype=np.bool_),
                    "rows16": f.Tensor(shape=(None, 8), dtype=np.uint16, encoding="zlib"),
                    "blob": f.Tensor(shape=(None, None), dtype=np.float32, encoding="bytes"),
                    "checksum": f.Tensor(shape=(), dtype=np.uint64),
                    "mean": f.Scalar(dtype=np.float32),
                    "row_sums": f.Sequence(np.int64),
                    "thumbs": f.Sequence(f.Image(shape=(4, 4, 1)), length=2),
                    "strokes": f.Sequence({"x": np.float32, "kind": f.ClassLabel(num_classes=3)}),
                    "ragged": f.Sequence(f.Sequence(np.int32)),
                    "meta": f.FeaturesDict({
                        "index": np.int64,
                        "source": f.Text(),
                        "inner": f.FeaturesDict({
                            "odd": np.bool_,
                            "photo": f.Image(shape=(None, None, 3), encoding_format="jpeg"),
                        }),
                    }),
                }),
                supervised_keys=("image", "label"),
                homepage="https://scikit-learn.org/stable/datasets/toy_dataset.html#digits-dataset",
            )

        def _split_generators(self, dl_manager):
            digits = load_digits()
            n_train = sizes["train"]
            return {
                "train": self._generate_examples(digits, 0, n_train),
                "test": self._generate_examples(digits, n_train, n_train + sizes["test"]),
            }

        def _generate_examples(self, digits, start, stop):
            images, targets = digits.images, digits.target
            for i in range(start, stop):
                k = i % len(images)
                img = images[k]  # float64 in [0, 16]
                u8 = np.round(img * (255 / 16)).astype(np.uint8)
                label = int(targets[k])
                n = i % 5
                yield i, {
                    "image": u8[:, :, None],
                    "label": label,
                    "text": f"digit {NAMES[label]} #{i} \u2013 \u00e9\u00e8 \u65e5",
                    "pixels": img / 16.0 + i * 1e-9,
                    "moments": np.array([[label, i, -i], [int(img.sum()), -2**31 + i, 2**31 - 1 - i]], np.int32),
                    "flags": (u8[0, :n] > 0),
                    "rows16": (img[:n].astype(np.uint16) * 4000),
                    # TFDS's NumPy path cannot decode an empty two-None tensor (it cuts
                    # the stored shape to the byte length), so blobs are never empty.
                    "blob": np.arange((n + 1) * (i % 3 + 1), dtype=np.float32).reshape(n + 1, i % 3 + 1) / 7,
                    "checksum": np.uint64(2**64 - 1 - i * 977),
                    "mean": np.float32(img.mean()),
                    "row_sums": [int(s) for s in img.sum(axis=1)[: i % 9]],
                    "thumbs": [u8[:4, :4, None], u8[4:, 4:, None]],
                    "strokes": [{"x": float(j) / 3, "kind": j % 3} for j in range(i % 4)],
                    "ragged": [list(range(j, j + (i + j) % 3)) for j in range(i % 3)],
                    "meta": {
                        "index": i,
                        "source": "sklearn.datasets.load_digits",
                        "inner": {
                            "odd": bool(i % 2),
                            "photo": np.stack([u8, 255 - u8, u8 // 2], axis=-1)[: 4 + i % 5],
                        },
                    },
                }

    return ArrayfsDigits


def build(data_dir: str, sizes: dict, num_shards: int | None = None) -> str:
    """Prepare the dataset under ``data_dir``; its version directory."""
    import tensorflow_datasets as tfds

    builder = _builder_class(sizes)(data_dir=data_dir, file_format="array_record")
    config = tfds.download.DownloadConfig(num_shards=num_shards) if num_shards else None
    builder.download_and_prepare(download_config=config)
    return builder.data_dir


def record_expected(data_dir: str, out_prefix: str) -> dict:
    """``tfds.data_source`` of every split, every record, saved with
    :mod:`expected_io`; the number of records per split."""
    import expected_io
    import tensorflow_datasets as tfds

    sources = tfds.data_source("arrayfs_digits", data_dir=data_dir)
    tree = {split: [src[i] for i in range(len(src))] for split, src in sources.items()}
    # Batched reads must agree with single ones.
    for split, src in sources.items():
        batch = src.__getitems__(list(range(len(src))))
        for a, b in zip(batch, tree[split]):
            expected_io.assert_same(a, b, split)
    expected_io.save(out_prefix, tree)
    return {k: len(v) for k, v in tree.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=HERE)
    ap.add_argument("--train", type=int, default=SIZES["train"])
    ap.add_argument("--test", type=int, default=SIZES["test"])
    ap.add_argument("--num-shards", type=int, default=2, help="shards per split (TFDS's DownloadConfig)")
    ap.add_argument("--no-expected", action="store_true", help="do not record tfds.data_source's output")
    args = ap.parse_args(argv)
    target = os.path.join(args.data_dir, "arrayfs_digits")
    if os.path.isdir(target):
        shutil.rmtree(target)
    path = os.fspath(build(args.data_dir, {"train": args.train, "test": args.test}, args.num_shards))
    shutil.rmtree(os.path.join(args.data_dir, "downloads"), ignore_errors=True)  # empty: nothing is downloaded
    print("built", path, sorted(os.listdir(path)))
    if not args.no_expected:
        counts = record_expected(args.data_dir, os.path.join(args.data_dir, "expected"))
        print("recorded tfds.data_source output:", counts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
