"""The FUSE mount of an ArrayRecord dataset.

Modules, bottom to top (each imports only those above it in this list):

- :mod:`arrayfs.fs.options`: :class:`MountOptions`, parsed once.
- :mod:`arrayfs.fs.view`: names, inodes, attributes, listings, contents of
  one dataset snapshot; plain Python, testable without FUSE.
- :mod:`arrayfs.fs.records`: file contents, each big record decoded once
  (shared by the worker processes).
- :mod:`arrayfs.fs.core`: every decision: nodes, stateless handles, checks,
  errors to ``errno``, the refresh protocol.
- :mod:`arrayfs.fs.watch`: live refresh (watchdog, polling of URLs).
- :mod:`arrayfs.fs.lowlevel`: libfuse through ctypes, the only module that
  knows its C layout.
- :mod:`arrayfs.fs.workers`: worker processes, each serving from its own
  clone of the FUSE device.
- :mod:`arrayfs.fs.fuse3`, :mod:`arrayfs.fs.fuse2`: the bindings (libfuse 3
  low-level; libfuse 2 through mfusepy), translation only.
- :mod:`arrayfs.fs.mount`: ``mount()``/``unmount()``, checks, daemonizing.
- :mod:`arrayfs.fs.cli`: the ``mount``/``unmount`` commands.

``import arrayfs.fs`` does not load libfuse; :func:`mount` does.
"""

from .mount import MountError, MountOptions, is_mounted, mount, unmount

__all__ = ["mount", "unmount", "MountError", "MountOptions", "is_mounted"]
