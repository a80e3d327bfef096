"""Mounting and unmounting: checks, daemonizing, clean errors.

:func:`mount` checks what commonly goes wrong *before* touching FUSE (no
``/dev/fuse``, no ``fusermount`` or libfuse, a bad mountpoint, no shard,
a file that is not ArrayRecord) and raises :class:`MountError` with one
line. In background mode it forks a daemon and returns once the kernel
has initialised the mount, so ``arrayfs mount ... && ls mnt`` works; a
failure before that (libfuse refusing the mount) comes back as a
``MountError`` with libfuse's message. The daemon unmounts on SIGINT,
SIGTERM and SIGHUP; one that dies leaves no dead mount behind
(``auto_unmount``, and the reaper below).
"""

from __future__ import annotations

import faulthandler
import logging
import os
import re
import select
import shutil
import stat
import subprocess
import sys
import tempfile
import time

from .options import MountError, MountOptions

__all__ = ["MountError", "MountOptions", "mount", "unmount", "is_mounted", "check_fuse"]

log = logging.getLogger("arrayfs.fs")


def _fusermount() -> str | None:
    from .lowlevel import libfuse_major

    names = ("fusermount3", "fusermount") if libfuse_major() == 3 else ("fusermount", "fusermount3")
    for name in names:
        p = shutil.which(name)
        if p:
            return p
    return None


def check_fuse() -> str:
    """Check that FUSE can be used here; return the ``fusermount`` helper's
    path. Raises :class:`MountError` naming what is missing."""
    if not os.path.exists("/dev/fuse"):
        raise MountError(
            "FUSE is not available: /dev/fuse is missing (load the fuse kernel module, or give the "
            "container --device /dev/fuse --cap-add SYS_ADMIN)"
        )
    try:
        from .lowlevel import load_mfusepy

        load_mfusepy()
    except ImportError:
        raise MountError("mfusepy is not installed: pip install 'arrayfs[fuse]'") from None
    except (OSError, AttributeError) as e:
        raise MountError(f"no usable libfuse: {e} (install fuse3: apt-get install fuse3 libfuse3-3)") from None
    helper = _fusermount()
    if helper is None:
        raise MountError("fusermount3/fusermount not found on PATH: install fuse3 (apt-get install fuse3)")
    return helper


def _check_mountpoint(mountpoint: str, nonempty: bool) -> None:
    try:
        st = os.stat(mountpoint)
    except FileNotFoundError:
        raise MountError(f"mountpoint {mountpoint} does not exist") from None
    except OSError as e:
        if e.errno == 107:  # ENOTCONN: a FUSE daemon died without unmounting
            raise MountError(
                f"mountpoint {mountpoint} is a dead FUSE mount; run: arrayfs unmount {mountpoint}"
            ) from None
        raise MountError(f"mountpoint {mountpoint}: {e.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise MountError(f"mountpoint {mountpoint} is not a directory")
    try:
        entries = os.listdir(mountpoint)
    except OSError as e:
        raise MountError(f"mountpoint {mountpoint}: {e.strerror}") from None
    if entries and not nonempty:
        if os.path.ismount(mountpoint):
            raise MountError(f"mountpoint {mountpoint} is already a mount point; unmount it first "
                             f"(arrayfs unmount {mountpoint})")
        raise MountError(f"mountpoint {mountpoint} is not empty")


def _absolute_sources(sources) -> list:
    from ..storage import is_remote

    if isinstance(sources, (str, bytes, os.PathLike)):
        sources = [sources]
    out = []
    for s in sources:
        if isinstance(s, (str, bytes, os.PathLike)) and not is_remote(s):
            s = os.fsdecode(s)
            if s.startswith("file://"):
                # Served as the local path it names, watched through
                # inotify (through fsspec's file system the daemon hung).
                s = s[len("file://"):]
            # The daemon changes directory to "/"; refresh re-expands these.
            out.append(os.path.abspath(os.path.expanduser(s)))
        else:
            out.append(s)
    return out


def _open_log_file(log_file) -> str:
    """``log_file`` as an absolute path (the daemon changes directory to
    "/"), opened once here so that a path the daemon could not open fails
    the mount with its reason."""
    path = os.path.abspath(os.path.expanduser(os.fspath(log_file)))
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644))
    except OSError as e:
        raise MountError(f"log file {path}: {e.strerror or e}") from None
    return path


def _open_dataset(sources, verify: bool, storage_options=None):
    from ..dataset import ArrayRecordDataSource
    from ..errors import ArrayRecordError

    try:
        ds = ArrayRecordDataSource(sources, verify=verify, storage_options=storage_options)
    except FileNotFoundError as e:
        what = e.strerror or (e.args[-1] if e.args else e)
        raise MountError(f"no shard matched: {e.filename}: {what}" if e.filename else f"no shard matched: {what}") \
            from None
    except ArrayRecordError as e:
        raise MountError(f"bad file: {e}") from None
    except OSError as e:
        raise MountError(f"cannot open the dataset: {e}") from None
    if not ds.shards:
        ds.close()
        raise MountError(f"no shard matched {', '.join(map(str, sources))}")
    return ds


def mount(
    sources,
    mountpoint,
    *,
    foreground: bool = False,
    fuse_options=None,
    allow_other: bool = False,
    watch: bool = True,
    verify: bool = True,
    log_file=None,
    ready_timeout: float = 60.0,
    storage_options: dict | None = None,
    poll_interval: float = 60.0,
    decode: str | None = None,
):
    """Mount ArrayRecord shards as a read-only directory of records.

    Args:
        sources: a path, URL (``s3://``, ``gs://``, ``https://``, any fsspec
            protocol), glob pattern, directory or ``"path[a:b]"`` read
            instruction, or a list of these (see :mod:`arrayfs.paths`).
        mountpoint: an existing, empty directory.
        foreground: serve in this process until unmounted (blocks); else
            fork a daemon and return once the mount is ready.
        fuse_options: ``-o`` options (``"a,b=1"``, a list of such strings, or
            a ``dict``), e.g. ``"workers=4"`` or ``"max_read=131072"``;
            arrayfs's own (``workers``, ``max_threads``, ``open_handles``,
            ``readdirplus``, timeouts; see :class:`MountOptions`) and
            libfuse's, which override arrayfs's defaults.
        allow_other: let other users read the mount (``allow_other``;
            non-root users need ``user_allow_other`` in /etc/fuse.conf).
        watch: follow shards appearing and vanishing under the sources
            (see :mod:`arrayfs.fs.watch`): local directories through
            inotify, object stores by listing them again every
            ``poll_interval`` seconds.
        verify: check chunk hashes on read (a corrupt record reads as EIO).
        log_file: where the background daemon logs (errors, EIO with shard
            and chunk); default: discarded. In foreground mode logs go to
            stderr.
        ready_timeout: seconds to wait for a background mount to be ready.
        storage_options: fsspec options for URL sources (credentials,
            ``endpoint_url``, ...); default: the backend's environment.
        poll_interval: seconds between listings of remote sources while
            watching (object stores send no change notifications).
        decode: add ``MOUNTPOINT/.decoded/``, each record's features as
            files and its JSON (see :mod:`arrayfs.fs.decoded`), shown as
            ``"auto"`` (sniffed from the first records; a TFDS dataset by its
            ``features.json``), ``"example"``, ``"tfds"``, ``"msgpack"``,
            ``"json"`` or ``"raw"`` (:func:`arrayfs.display.choose_display`);
            ``None``: no ``.decoded/``.

    Returns:
        In background mode the daemon's process id (``int``) once the mount
        is ready; in foreground mode ``0`` after the mount was unmounted.

    Raises:
        MountError: anything that prevents the mount, as one line.
    """
    helper = check_fuse()
    from ..paths import has_remote
    from .lowlevel import libfuse_major

    options = MountOptions.parse(fuse_options, api=libfuse_major(), watch=watch, allow_other=allow_other,
                                 auto_unmount=helper is not None, remote=has_remote(sources))
    mountpoint = os.path.abspath(os.fspath(mountpoint))
    _check_mountpoint(mountpoint, options.nonempty)
    if not poll_interval > 0:
        raise MountError(f"poll_interval must be a positive number of seconds, not {poll_interval!r}")
    sources = _absolute_sources(sources)
    if log_file is not None and not foreground:
        log_file = _open_log_file(log_file)
    from ..storage.backends import fork_safe

    fork_safe()  # the daemon and its workers fork from here: obstore runs in the workers alone
    ds = _open_dataset(sources, verify, storage_options)
    display = _display(decode, ds, storage_options) if decode is not None else None
    serve = dict(options=options, helper=helper, poll_interval=poll_interval, display=display)
    if foreground:
        _setup_logging(None)
        ready = []
        try:
            return _serve(ds, mountpoint, on_ready=lambda: ready.append(True), **serve)
        except RuntimeError as e:
            if ready:
                # mfusepy raises when a signal (SIGINT, SIGTERM, SIGHUP) ended
                # libfuse 2's loop; it has unmounted: a clean exit.
                return 0
            raise MountError(f"libfuse could not mount {mountpoint} (error {e})") from None
    reopen = None
    if has_remote(sources):
        # An fsspec filesystem's event loop and connection pool do not
        # survive fork: the dataset opened here proved the sources sound,
        # the daemon opens its own.
        ds.close()
        ds, reopen = None, lambda: _open_dataset(sources, verify, storage_options)
    try:
        return _daemonize(ds, mountpoint, log_file=log_file, ready_timeout=ready_timeout, reopen=reopen, **serve)
    finally:
        fork_safe(False)


def _display(decode, ds, storage_options):
    """The :class:`arrayfs.display.RecordDisplay` of ``.decoded/``, chosen
    before the daemon starts (so that a wrong setting is a clean error);
    closes ``ds`` and raises :class:`MountError` when there is none."""
    from ..display import choose_display
    from ..errors import ArrayRecordError

    try:
        return choose_display(decode, ds, storage_options=storage_options)
    except (ValueError, ImportError, OSError, ArrayRecordError) as e:
        ds.close()
        raise MountError(f"--decode {decode}: {e}") from None


def _setup_logging(stream) -> None:
    logger = logging.getLogger("arrayfs")
    if not logger.handlers:
        h = logging.StreamHandler(stream or sys.stderr)
        h.setFormatter(logging.Formatter("arrayfs[%(process)d] %(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(h)
        logger.setLevel(logging.INFO)


# The reaper: a tiny process that outlives the daemon. It reads its stdin
# (a pipe whose write end only the daemon holds) until EOF, which comes when
# the daemon exits for any reason, kill -9 included. If the mountpoint then
# answers ENOTCONN (a dead mount that would fail every access), it
# detaches it. libfuse's own auto_unmount helper does the same but loses a
# race now and then: fusermount3 (3.14) opens the mountpoint once, and when
# that open is queued before the kernel aborts the connection it fails with
# ECONNABORTED instead of ENOTCONN, and the dead mount stays.
_REAPER = r"""
import errno, os, shutil, subprocess, sys, time
mnt, helper, shared = sys.argv[1], sys.argv[2], sys.argv[3]
while os.read(0, 4096):
    pass
if shared:  # the workers' decoded records, if the daemon could not remove them
    shutil.rmtree(shared, ignore_errors=True)
deadline = time.monotonic() + 10
while time.monotonic() < deadline:
    try:
        # Opening the directory asks the daemon (OPENDIR); a stat could be
        # answered from the kernel's attribute cache even on a dead mount.
        os.close(os.open(mnt, os.O_RDONLY | os.O_DIRECTORY))
        break
    except OSError as e:
        if e.errno == errno.ECONNABORTED:  # asked while the kernel was aborting the connection
            time.sleep(0.05)
            continue
        if e.errno != errno.ENOTCONN:
            break
        subprocess.run([helper, "-u", "-z", mnt], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.2)
"""


def _start_reaper(mountpoint: str, helper: str, shared: str | None):
    try:
        return subprocess.Popen(
            [sys.executable, "-S", "-c", _REAPER, mountpoint, helper, shared or ""],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            close_fds=True, start_new_session=True, cwd="/",
        )
    except OSError as e:  # not fatal: libfuse's auto_unmount still helps
        log.warning("cannot start the unmount reaper: %s", e)
        return None


def _serve(ds, mountpoint, *, options: MountOptions, helper, poll_interval=60.0, on_ready=None, display=None) -> int:
    """Serve ``ds`` at ``mountpoint`` until unmounted; close ``ds`` after.
    ``display``: the records' ``.decoded/`` view, or ``None``."""
    import warnings

    from ..errors import PendingShardWarning
    from .core import Core
    from .records import Records, shared_directory
    from .view import FsView

    # A fatal signal (SIGSEGV) leaves a Python traceback in the log (stderr).
    faulthandler.enable(file=sys.stderr, all_threads=True)
    records = Records(directory=shared_directory() if options.api == 3 and options.workers > 1 else None)
    # Started before libfuse opens /dev/fuse, so the reaper never holds it.
    reaper = _start_reaper(mountpoint, helper, records.directory) if helper else None
    # Refresh reports half-written shards with a warning per attempt; the
    # watcher logs them once instead.
    warnings.simplefilter("ignore", PendingShardWarning)
    try:
        subtrees = ()
        if display is not None:
            from .decoded import decoded_subtree

            subtrees = (decoded_subtree(display),)
        core = Core(FsView(ds, subtrees=subtrees), options, records=records)
        watcher = None
        if options.watch:
            from .watch import Watcher

            watcher = Watcher(core.view, core.refresh, poll_interval=poll_interval)
        if options.api == 3:
            from .fuse3 import run
        else:
            from .fuse2 import run
        run(core, mountpoint, on_ready=on_ready, watcher=watcher)
        return 0
    finally:
        records.remove_directory()
        ds.close()
        if reaper is not None:
            reaper.stdin.close()
            try:
                reaper.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass


def _daemonize(ds, mountpoint, *, log_file, ready_timeout, reopen=None, **serve) -> int:
    r, w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # first child: a new session, then the daemon as its child
        os.close(r)
        code = 1
        try:
            os.setsid()
            if os.fork() != 0:
                os._exit(0)  # the daemon is re-parented to init: no zombie for our caller
            code = _daemon_main(ds, mountpoint, w, log_file=log_file, reopen=reopen, **serve)
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    os.waitpid(pid, 0)
    if ds is not None:
        ds.close()  # the daemon has its own descriptors
    try:
        msg = _read_status(r, ready_timeout)
    finally:
        os.close(r)
    if msg.startswith("ok "):
        return int(msg.split()[1])
    if msg.startswith("error "):
        raise MountError(msg[len("error "):])
    if msg == "":
        raise MountError("the mount daemon exited before the mount was ready")
    raise MountError(f"the mount at {mountpoint} was not ready after {ready_timeout:g} s")


def _read_status(fd, timeout) -> str:
    deadline = time.monotonic() + timeout
    buf = b""
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            return "timeout"
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        buf += chunk
    return buf.decode("utf-8", "replace").strip()


def _daemon_main(ds, mountpoint, status_fd, *, log_file, reopen=None, **serve) -> int:
    """Body of the background daemon. Reports ``ok <pid>`` or ``error <msg>``
    on ``status_fd`` (one line) and returns the exit code."""
    os.chdir("/")
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    # Until the mount is up, libfuse's own messages ("fuse: ...") are caught
    # here and sent to the parent as the error; then stderr becomes the log.
    captured = tempfile.TemporaryFile()
    os.dup2(captured.fileno(), 2)
    target = devnull
    if log_file is not None:
        target = os.open(os.fspath(log_file), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    _setup_logging(None)
    reported = []

    def report(line: str) -> None:
        if not reported:
            reported.append(line)
            try:
                os.write(status_fd, (line.replace("\n", " ") + "\n").encode())
            finally:
                os.close(status_fd)

    def on_ready():
        os.dup2(target, 2)
        report(f"ok {os.getpid()}")

    try:
        from ..storage.backends import fork_safe

        fork_safe()  # the coordinator forks the workers
        if reopen is not None:
            ds = reopen()
        _serve(ds, mountpoint, on_ready=on_ready, **serve)
        code = 0
    except MountError as e:
        code = 1
        report(f"error {e}")
    except BaseException as e:  # report whatever kept the mount from starting
        code = 1
        if not reported:
            captured.seek(0)
            lines = [ln.strip() for ln in captured.read().decode("utf-8", "replace").splitlines() if ln.strip()]
            detail = lines[-1] if lines else f"{type(e).__name__}: {e}"
            report(f"error libfuse could not mount {mountpoint}: {detail}")
        else:
            log.exception("the FUSE loop failed")
    if not reported:
        report("error the FUSE loop ended before the mount was ready")
    _reap_children(1.0)
    return code


def _reap_children(timeout: float) -> None:
    """Wait (at most ``timeout`` s) for our children to exit: libfuse's
    ``auto_unmount`` helper leaves once the session is closed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            time.sleep(0.02)


# -- unmounting ------------------------------------------------------------------


def _unescape_mount_field(s: str) -> str:
    # /proc/mounts escapes space, tab, newline and backslash as \ooo.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)


def is_mounted(mountpoint) -> str | None:
    """File system type of the mount at ``mountpoint`` per /proc/mounts
    (e.g. ``"fuse.arrayfs"``), or ``None`` when nothing is mounted there."""
    mp = os.path.abspath(os.fspath(mountpoint))
    found = None
    try:
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and _unescape_mount_field(parts[1]) == mp:
                    found = parts[2]  # the last one listed is the one on top
    except OSError:
        return None
    return found


def unmount(mountpoint, *, lazy: bool = False, timeout: float = 10.0) -> None:
    """Unmount the FUSE mount at ``mountpoint``; its daemon then exits.

    Args:
        lazy: detach even if files are open (``fusermount -u -z``); the
            daemon exits once they are closed.
        timeout: seconds to wait for /proc/mounts to stop listing it.

    Raises:
        MountError: not mounted, not a FUSE mount, busy (files open; retry or
            use ``lazy``), or the helper failed.
    """
    mp = os.path.abspath(os.fspath(mountpoint))
    fstype = is_mounted(mp)
    if fstype is None:
        raise MountError(f"{mp} is not mounted")
    if not fstype.startswith("fuse"):
        raise MountError(f"{mp} is a {fstype} mount, not a FUSE mount")
    helper = shutil.which("fusermount3") or shutil.which("fusermount")
    cmds = []
    if helper:
        cmds.append([helper, "-u", *(["-z"] if lazy else []), mp])
    if os.geteuid() == 0 and shutil.which("umount"):
        cmds.append(["umount", *(["-l"] if lazy else []), mp])
    if not cmds:
        raise MountError("fusermount3/fusermount not found on PATH: install fuse3 (apt-get install fuse3)")
    err = ""
    for cmd in cmds:
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode == 0 or is_mounted(mp) is None:
            break
        lines = [ln for ln in (p.stderr or p.stdout).splitlines() if ln.strip()]
        err = lines[-1].strip() if lines else f"{os.path.basename(cmd[0])} exited with {p.returncode}"
    else:
        busy = f" (files are open in it: close them, or: arrayfs unmount -z {mp})" if "busy" in err.lower() else ""
        raise MountError(f"could not unmount {mp}: {err}{busy}")
    deadline = time.monotonic() + timeout
    while is_mounted(mp) is not None:
        if time.monotonic() > deadline:
            raise MountError(f"could not unmount {mp}: still mounted after {timeout:g} s")
        time.sleep(0.02)
