"""The one error of the record encodings."""

from __future__ import annotations

__all__ = ["RecordDecodeError"]


class RecordDecodeError(ValueError):
    """A record's bytes are not valid for the configured decoder.

    Attributes:
        decoder: the decoder's name (``"msgpack"``, ``"example"``,
            ``"tfds"``, ...).
        reason: what is wrong, in words.
    """

    def __init__(self, decoder: str, reason: str):
        self.decoder = decoder
        self.reason = reason
        super().__init__(f"cannot decode record as {decoder}: {reason}")

    def __reduce__(self):
        # Grain and PyTorch workers send errors between processes.
        return (type(self), (self.decoder, self.reason))
