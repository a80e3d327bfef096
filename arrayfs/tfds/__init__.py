"""TFDS datasets without TensorFlow: ``features.json`` specs, decoding of
``tf.train.Example`` records to what ``tfds.data_source`` returns, and
:func:`data_source`, its drop-in.

Needs ``protobuf`` and ``Pillow`` (``pip install 'arrayfs[tfds]'``); never
TensorFlow, TFDS or array_record's C++ wheel.
"""

from .codec import TfdsFeatures, decoder
from .features import UnsupportedFeatureError, parse_features_json
from .info import DatasetDir, resolve_directory
from .source import TfdsDataSource, data_source
from .splits import parse_split

__all__ = [
    "data_source",
    "TfdsDataSource",
    "TfdsFeatures",
    "decoder",
    "UnsupportedFeatureError",
    "parse_features_json",
    "DatasetDir",
    "resolve_directory",
    "parse_split",
]
