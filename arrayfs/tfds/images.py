"""TFDS ``Image`` features decoded with Pillow, as TFDS's NumPy path
(``image_feature.py``, ``decode_example_np_with_pil``) decodes them: the
stored bytes opened by Pillow, ``np.asarray(image, dtype=uint8)``, a
grayscale ``(h, w)`` or ``(h, w, 1)`` repeated to the declared channels,
``float32`` images being the decoded ``uint8`` viewed as ``float32``.
"""

from __future__ import annotations

import io

import numpy as np

from ..encoding.errors import RecordDecodeError
from .features import ImageSpec, UnsupportedFeatureError

__all__ = ["image_decoder"]

# Pillow modes whose bytes are 8-bit samples, and their channel counts.
_BYTE_MODES = {"L": 1, "P": 1, "LA": 2, "RGB": 3, "RGBA": 4}


def _pil():
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("decoding TFDS images needs Pillow; install it with: pip install 'arrayfs[tfds]'") from None
    return Image


def _opener(Image):
    """``data -> PIL image``: the plugin class named by the signature
    (Image.open's search through every plugin costs more than decoding a
    small image), else ``Image.open``."""
    from PIL import GifImagePlugin, JpegImagePlugin, PngImagePlugin

    by_signature = ((b"\x89PNG\r\n\x1a\n", PngImagePlugin.PngImageFile), (b"\xff\xd8\xff", JpegImagePlugin.JpegImageFile),
                    (b"GIF87a", GifImagePlugin.GifImageFile), (b"GIF89a", GifImagePlugin.GifImageFile))

    def open_image(data):
        for signature, cls in by_signature:
            if data.startswith(signature):
                return cls(io.BytesIO(data))
        return Image.open(io.BytesIO(data))

    return open_image


def _pixels(im, channels, Image) -> np.ndarray:
    """The image's samples as TFDS's Pillow path makes them:
    ``np.asarray(im, dtype=uint8)`` (read-only), a grayscale ``(h, w)``
    repeated to the declared ``channels`` (a new, writable array), without
    ``__array_interface__``'s detour through a dict."""
    w, h = im.size
    limit = Image.MAX_IMAGE_PIXELS  # read per image: a user may lower it
    if limit and w * h > 2 * limit:
        raise ValueError(f"a {w}x{h} image is over Pillow's decompression-bomb limit")
    stored = _BYTE_MODES.get(im.mode)
    if stored is None:
        arr = np.asarray(im, dtype=np.uint8)
    elif stored == 1 and (channels or 1) == 1:
        # What np.repeat(x[..., None], 1) gives, without its cost: a writable copy.
        return np.frombuffer(bytearray(im.tobytes()), dtype=np.uint8).reshape(h, w, 1)
    else:
        arr = np.frombuffer(im.tobytes(), dtype=np.uint8)  # tobytes loads the image
        arr = arr.reshape((h, w) if stored == 1 else (h, w, stored))
    if arr.ndim == 2:
        return np.repeat(arr[..., None], channels or 1, axis=-1)
    if arr.ndim == 3 and arr.shape[2] == 1 and channels:
        return np.repeat(arr, channels, axis=-1)
    return arr


def image_decoder(spec: ImageSpec):
    """``bytes -> array`` for an ``Image`` feature.

    Raises:
        UnsupportedFeatureError: a dtype Pillow cannot give (``uint16``).
        ImportError: Pillow is missing (names the ``tfds`` extra).
    """
    if spec.dtype not in (np.uint8, np.float32):
        raise UnsupportedFeatureError(spec.path, spec.class_name,
                                      f"has dtype {spec.dtype} (Pillow decodes uint8 and float32 images only)")
    Image = _pil()
    open_image = _opener(Image)
    channels = spec.shape[-1]
    as_float = spec.dtype == np.float32
    path = spec.path

    def decode(data: bytes) -> np.ndarray:
        try:
            # No `with`: the image reads from a BytesIO, nothing to close.
            arr = _pixels(open_image(data), channels, Image)
        except Exception as e:  # Pillow raises many types for bad data
            raise RecordDecodeError("tfds", f"feature {path!r}: not a decodable image ({type(e).__name__}: {e})") from None
        return arr.view(np.float32) if as_float else arr

    return decode
