"""Flax NNX training source: shuffled epochs, host sharding, batching, resume.

``ArrayRecordSourceModule(config, paths)`` yields decoded records epoch after
epoch in an O(1)-memory shuffled order split across hosts;
``Pipeline(source=source, stages=[...], batch_size=32)`` (or
``from_source(source, 32)``) batches them on a prefetch thread. Both
checkpoint with ``get_state()``/``set_state()`` in a few hundred bytes, and
one host's checkpoint restores on a job with another number of hosts.
Needs JAX and Flax (``pip install 'arrayfs[jax]'``).
"""

try:
    from .config import ArrayRecordSourceConfig
    from .decode import RecordDecodeError, encode_msgpack, encode_npz, get_decoder
    from .pipeline import Pipeline, from_source
    from .shuffle import FeistelPermutation, epoch_permutation, epoch_round_keys
    from .source import ArrayRecordSourceModule, IterationState
except ModuleNotFoundError as e:
    if (e.name or "").split(".")[0] == "arrayfs":
        raise
    from ..extras import missing

    raise missing(e, "arrayfs's Flax NNX source (arrayfs.nnx)", "jax") from None

__all__ = [
    "ArrayRecordSourceConfig",
    "ArrayRecordSourceModule",
    "IterationState",
    "Pipeline",
    "from_source",
    "FeistelPermutation",
    "epoch_permutation",
    "epoch_round_keys",
    "RecordDecodeError",
    "encode_msgpack",
    "encode_npz",
    "get_decoder",
]
