"""The FUSE mount of an ArrayRecord dataset.

Modules, bottom to top (each imports only those before it):

- :mod:`arrayfs.fs.source`: the pinned dataset snapshot the view reads.
- :mod:`arrayfs.fs.view`: names, attributes, listings, contents; plain
  Python, testable without FUSE.
- :mod:`arrayfs.fs.watch`: live refresh (watchdog).
- :mod:`arrayfs.fs.daemon`: the mfusepy adapter (imports libfuse).
- :mod:`arrayfs.fs.mount`: ``mount()``/``unmount()``, checks, daemonizing.
- :mod:`arrayfs.fs.cli`: the ``mount``/``unmount`` subcommands.

``import arrayfs.fs`` does not load libfuse; :func:`mount` does.
"""

from .mount import MountError, is_mounted, mount, unmount

__all__ = ["mount", "unmount", "MountError", "is_mounted"]
