"""Mount options, parsed once: :class:`MountOptions`.

``-o`` items and the ``mount()`` arguments become one frozen
:class:`MountOptions`; each binding asks it for what its libfuse API takes
(:meth:`MountOptions.fuse3_args`, :meth:`MountOptions.fuse2_kwargs`). An
option the binding in use cannot honour is a :class:`MountError` at parse
time, never silently dropped: ``readdirplus``, ``workers`` > 1 and
``max_threads`` need libfuse 3.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

__all__ = ["MountError", "MountOptions", "READDIRPLUS_MAX", "REMOTE_THREADS", "LONG_TIMEOUT", "SHORT_TIMEOUT"]

# Cache timeouts (seconds). Inodes never change and, with libfuse 3, names
# are invalidated on refresh, so both may be cached for long; libfuse 2
# cannot invalidate, so while watching there they expire soon.
LONG_TIMEOUT = 86400.0
SHORT_TIMEOUT = 1.0
# Directories listed with attributes (READDIRPLUS): all of them by default.
READDIRPLUS_MAX = 1 << 62
# Threads per worker process of a mount of object-store sources (libfuse
# 3): reads of a bucket wait on the network, not on the GIL.
REMOTE_THREADS = 16
# Requests of up to 1 MiB (libfuse 3 negotiates that many pages): a big
# record comes in a quarter of the requests of libfuse's default.
MAX_READ = 1 << 20

# -o items arrayfs handles itself: name -> (field, type). Flags map to True.
_OWN = {
    "workers": int, "max_threads": int, "nothreads": bool, "open_handles": bool, "readdirplus": int,
    "entry_timeout": float, "attr_timeout": float, "negative_timeout": float, "max_read": int, "debug": bool,
    "nonempty": bool, "kernel_cache": bool, "allow_other": bool, "auto_unmount": bool, "ro": bool,
}


class MountError(RuntimeError):
    """A mount or unmount that cannot be done; the message is one line
    meant for the user."""


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


@dataclass(frozen=True)
class MountOptions:
    """Everything a mount is configured with (units: seconds, bytes).

    ``api``: the libfuse major version the binding speaks (2 or 3).
    ``workers``: processes serving requests (libfuse 3; default: the CPU
    count), each with ``threads`` threads (libfuse 2: 0 is libfuse's pool). ``open_handles``: decode per open
    file instead of letting the kernel open files without asking.
    ``readdirplus``: largest directory listed with attributes (0: none).
    ``libfuse``: other ``-o`` items, passed to libfuse as given.
    """

    api: int = 3
    watch: bool = True
    allow_other: bool = False
    auto_unmount: bool = True
    workers: int = 1
    threads: int = 1
    open_handles: bool = False
    readdirplus: int = READDIRPLUS_MAX
    entry_timeout: float = LONG_TIMEOUT
    attr_timeout: float = LONG_TIMEOUT
    negative_timeout: float = 0.0
    max_read: int = MAX_READ
    kernel_cache: bool = True
    debug: bool = False
    nonempty: bool = False
    libfuse: tuple = field(default=())

    @classmethod
    def parse(cls, options=None, *, api: int = 3, watch: bool = True, allow_other: bool = False,
              auto_unmount: bool = True, remote: bool = False) -> "MountOptions":
        """Options from ``-o`` items: ``None``, ``"a,b=1"``, a list of such
        strings, or a ``dict`` (``{"a": True, "b": 1}``); later items win.
        ``remote``: the sources are on object storage (libfuse 3 then
        serves :data:`REMOTE_THREADS` threads per worker by default).

        Raises :class:`MountError` for ``rw`` (mounts are read-only), an
        empty key, a value of the wrong type, or an option ``api`` cannot
        honour.
        """
        items = _items(options)
        if items.pop("rw", False):
            raise MountError("arrayfs mounts are read-only: drop the 'rw' option")
        own, passed = {}, []
        for key, value in items.items():
            kind = _OWN.get(key)
            if kind is None:
                passed.append(key if value is True else f"{key}={value}")
                continue
            try:
                own[key] = (value is True or str(value).lower() in ("1", "true", "yes")) if kind is bool \
                    else kind(value)
            except (TypeError, ValueError):
                raise MountError(f"-o {key} takes a number, got {value!r}") from None
        if api == 2:
            for key in ("readdirplus", "max_threads"):
                if key in own:
                    raise MountError(f"-o {key} needs libfuse 3; this mount uses libfuse 2")
            if own.get("workers", 1) > 1:
                raise MountError("-o workers=N needs libfuse 3; this mount uses libfuse 2 (one process)")
        short = watch and api == 2  # libfuse 2 cannot invalidate names: let them expire
        timeout = SHORT_TIMEOUT if short else LONG_TIMEOUT
        workers = own.get("workers", _cpus() if api == 3 else 1)
        # libfuse 2: 0 threads means libfuse's own pool (nothreads: 1).
        default_threads = (REMOTE_THREADS if remote else 1) if api == 3 else 0
        threads = 1 if own.get("nothreads") else own.get("max_threads", default_threads)
        if workers < 1 or threads < (api == 3):
            raise MountError("-o workers and max_threads take a number >= 1")
        return cls(
            api=api, watch=watch, allow_other=own.get("allow_other", allow_other),
            auto_unmount=own.get("auto_unmount", auto_unmount), workers=workers, threads=threads,
            open_handles=own.get("open_handles", False), readdirplus=own.get("readdirplus", READDIRPLUS_MAX),
            entry_timeout=own.get("entry_timeout", timeout), attr_timeout=own.get("attr_timeout", timeout),
            negative_timeout=own.get("negative_timeout", 0.0 if watch else timeout),
            max_read=own.get("max_read", MAX_READ if api == 3 else 0),
            kernel_cache=own.get("kernel_cache", not short), debug=own.get("debug", False),
            nonempty=own.get("nonempty", False), libfuse=tuple(passed),
        )

    def _common(self) -> list:
        out = ["ro", "fsname=arrayfs", "subtype=arrayfs", "default_permissions"]
        if self.allow_other:
            out.append("allow_other")
        if self.auto_unmount:
            out.append("auto_unmount")
        return out

    def fuse3_args(self) -> list:
        """``-o`` items for ``fuse_session_new`` (libfuse 3's low-level API;
        timeouts, threads and workers are the binding's own business)."""
        out = self._common()
        if self.max_read:
            out.append(f"max_read={self.max_read}")
        return out + list(self.libfuse)

    def fuse2_kwargs(self) -> dict:
        """Keyword arguments for ``mfusepy.FUSE`` (libfuse 2's high-level
        API): the same mount, with libfuse doing the caching."""
        kw = dict.fromkeys(self._common(), True)
        kw.update(fsname="arrayfs", subtype="arrayfs", foreground=True, use_ino=True,
                  entry_timeout=self.entry_timeout, attr_timeout=self.attr_timeout,
                  negative_timeout=self.negative_timeout)
        if self.kernel_cache:
            # Not while watching: the page cache would outlive a name's meaning.
            kw["kernel_cache"] = True
        if self.threads == 1:
            kw["nothreads"] = True
        if self.max_read:
            kw["max_read"] = self.max_read
        if self.debug:
            kw["debug"] = True
        for item in self.libfuse:
            key, eq, value = item.partition("=")
            kw[key] = value if eq else True
        return kw


def _items(options) -> dict:
    if options is None:
        return {}
    if isinstance(options, dict):
        return dict(options)
    out = {}
    for text in [options] if isinstance(options, str) else options:
        for item in text.split(","):
            item = item.strip()
            if not item:
                continue
            key, eq, value = item.partition("=")
            if not key.strip():
                raise MountError(f"bad FUSE option {item!r}")
            out[key.strip()] = value if eq else True
    return out
