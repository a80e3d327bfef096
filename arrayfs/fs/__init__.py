"""The FUSE mount of an ArrayRecord dataset.

Modules, bottom to top, each importing only those before it: ``options``
(:class:`MountOptions`), ``view`` (names, inodes, contents of one dataset
snapshot), ``decoded`` (the ``.decoded/`` subtree of ``--decode``), ``records`` (contents, big records decoded once), ``core`` (every
decision), ``watch`` (refresh), ``lowlevel`` (libfuse's C layout),
``workers`` (worker processes), ``fuse3`` and ``fuse2`` (the bindings),
``mount`` (``mount()``/``unmount()``), ``cli`` (the commands); see
docs/mounting.md. ``import arrayfs.fs`` does not load libfuse; :func:`mount`
does.
"""

from .mount import MountError, MountOptions, is_mounted, mount, unmount

__all__ = ["mount", "unmount", "MountError", "MountOptions", "is_mounted"]
