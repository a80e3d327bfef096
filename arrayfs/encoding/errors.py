"""The one error of the record encodings."""

from __future__ import annotations

__all__ = ["RecordDecodeError"]


class RecordDecodeError(ValueError):
    """A record's bytes are not valid for the configured decoder.

    Attributes:
        decoder: the decoder's name (``"msgpack"``, ``"example"``,
            ``"tfds"``, ...).
        reason: what is wrong, in words.
        index: the record's global index in the dataset it was read from,
            or ``None`` when the decoder was given bytes alone.
        path: the shard holding the record, or ``None`` (as ``index``).
        position: the record's index within that shard file, or ``None``.
    """

    def __init__(self, decoder: str, reason: str, index: int | None = None, path: str | None = None,
                 position: int | None = None):
        self.decoder = decoder
        self.reason = reason
        self.index = index
        self.path = path
        self.position = position
        message = f"cannot decode record as {decoder}: {reason}"
        if index is not None:
            message = f"record {index} ({path} record {position}): {message}"
        super().__init__(message)

    def at(self, index: int, path: str, position: int) -> RecordDecodeError:
        """This error, naming the record it is about: global ``index``,
        shard ``path`` and ``position`` in that shard."""
        return type(self)(self.decoder, self.reason, index, path, position)

    def __reduce__(self):
        # Grain and PyTorch workers send errors between processes.
        return (type(self), (self.decoder, self.reason, self.index, self.path, self.position))
