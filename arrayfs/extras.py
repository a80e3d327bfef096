"""Optional dependencies and the extra that installs each.

``import arrayfs`` needs numpy and the codecs only; the mount, object
storage, the NNX source, Beam and TFDS need packages that the extras in
``pyproject.toml`` install. Where one is missing, the error says which
extra to install (:func:`missing`); this table is the one place that
knows which package comes with which extra.
"""

from __future__ import annotations

__all__ = ["EXTRA_OF", "install_hint", "missing"]

#: Top-level module -> the extra of ``pyproject.toml`` that installs it.
EXTRA_OF = {
    "mfusepy": "fuse", "fuse": "fuse", "watchdog": "fuse",
    "jax": "jax", "jaxlib": "jax", "flax": "jax", "optax": "jax", "msgpack": "jax",
    "fsspec": "remote", "s3fs": "remote", "gcsfs": "remote", "obstore": "remote",
    "apache_beam": "beam", "google_crc32c": "beam", "pyarrow": "beam",
    "google": "tfds", "PIL": "tfds",
    "atheris": "fuzz",
}


def install_hint(extra: str) -> str:
    """``pip install 'arrayfs[extra]'``."""
    return f"pip install 'arrayfs[{extra}]'"


def missing(e: ModuleNotFoundError, what: str, extra: str | None = None) -> ImportError:
    """The error to raise for ``e`` (a module not found) while loading
    ``what`` (for example ``"arrayfs.ArrayRecordSourceModule"``): an
    ``ImportError`` naming the missing module and, when ``extra`` is given
    or the module is in :data:`EXTRA_OF`, the extra that installs it. Its
    ``name`` is the missing module's."""
    name = e.name or ""
    extra = extra or EXTRA_OF.get(name.split(".")[0])
    how = f": {install_hint(extra)}" if extra else ""
    return ImportError(f"{what} needs the Python package {name!r}, which is not installed{how}", name=name)
