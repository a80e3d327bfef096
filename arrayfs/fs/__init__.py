"""The FUSE mount of an ArrayRecord dataset.

Modules, bottom to top (each imports only those before it):

- :mod:`arrayfs.fs.source`: the pinned dataset snapshot the view reads.
- :mod:`arrayfs.fs.view`: names, inodes, attributes, listings, contents;
  plain Python, testable without FUSE.
- :mod:`arrayfs.fs.contents`: whole-file contents for the daemons (one
  decode per big record, errors as ``EIO``).
- :mod:`arrayfs.fs.watch`: live refresh (watchdog).
- :mod:`arrayfs.fs.libfuse`: which libfuse, and mfusepy loaded on it.
- :mod:`arrayfs.fs.lowlevel`: libfuse 3's low-level API through ctypes
  (the only module that knows libfuse's C ABI beyond mfusepy).
- :mod:`arrayfs.fs.daemon`: the daemon over the low-level API (libfuse 3),
  libfuse loading and options.
- :mod:`arrayfs.fs.highlevel`: the daemon over mfusepy's public
  high-level API (libfuse 2).
- :mod:`arrayfs.fs.mount`: ``mount()``/``unmount()``, checks, daemonizing.
- :mod:`arrayfs.fs.cli`: the ``mount``/``unmount`` subcommands.

``import arrayfs.fs`` does not load libfuse; :func:`mount` does.
"""

from .mount import MountError, is_mounted, mount, unmount

__all__ = ["mount", "unmount", "MountError", "is_mounted"]
