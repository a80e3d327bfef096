"""The ``arrayfs`` command line (console script ``arrayfs``; ``mount_cli.py``
at the top of the repository runs the same :func:`main`).

Commands (``arrayfs COMMAND --help`` shows each one's options and examples):

* ``arrayfs ls SRC... [-l] [--shards]``: the records (or the shards) of a
  dataset, one per line, tab-separated.
* ``arrayfs cat SRC... INDEX...``: raw record bytes to standard output.
* ``arrayfs info SRC... [--json]``: shards, counts, chunks, group size,
  writer options, sizes, file metadata.
* ``arrayfs verify SRC... [--no-progress] [-j N] [--json]``: every hash and
  every chunk decodes; exit status 1 when anything is wrong.
* ``arrayfs pack INPUT... -o OUT [--options OPTS] [--shard-size N]
  [--files|--lines|--jsonl] [--force]``: files or lines into shards.
* ``arrayfs mount ...`` / ``arrayfs unmount MOUNTPOINT`` (also
  ``arrayfs -u MOUNTPOINT``): registered by :mod:`arrayfs.fs.cli`.
* ``arrayfs convert --from KIND INPUT... -o PREFIX``: TFRecord, JSON lines,
  lines, parquet or files into shards with Beam; registered by
  :mod:`arrayfs.beam.cli`.

``SRC`` is anything :class:`arrayfs.ArrayRecordDataSource` accepts: a file,
a quoted glob (``'data/train-*.array_record'``), a directory (its files
whose names contain ``array_record``), or a read instruction
``'path[start:stop]'``.

Exit status: 0 on success; 1 for an error about the data (no file matches,
a bad or corrupt file, an index out of range, bad writer options, a closed
standard output for a command that writes there, and for ``verify``, any
problem found); 2 for a command line that cannot be parsed;
130 on Ctrl-C. Errors are one line on stderr, ``arrayfs: error: ...``,
without a traceback.

Every command lives in a module of its own with a ``register(subparsers,
kit)`` function (:data:`COMMANDS`); ``kit`` is :mod:`arrayfs.cli.common`, so
the commands of :mod:`arrayfs.fs` and :mod:`arrayfs.beam` register through
the same hook without importing the command line. Errors of every command
end in the one error path of :func:`main`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from .. import __version__
from ..errors import ArrayRecordError
from ..extras import EXTRA_OF, install_hint
from ..pack import PackError
from . import common
from .common import PROG, CliError, formatter

__all__ = ["main", "build_parser", "COMMANDS"]

# Modules registering commands, in the order --help lists them, with the
# commands each adds (a module that cannot be imported gets stubs saying why).
COMMANDS = {
    "arrayfs.cli.ls": ("ls",),
    "arrayfs.cli.cat": ("cat",),
    "arrayfs.cli.info": ("info",),
    "arrayfs.cli.verify": ("verify",),
    "arrayfs.cli.pack": ("pack",),
    "arrayfs.fs.cli": ("mount", "unmount"),
    "arrayfs.beam.cli": ("convert",),
}
_HINTS = {"arrayfs.fs.cli": install_hint("fuse"), "arrayfs.beam.cli": install_hint("beam")}


class _Parser(argparse.ArgumentParser):
    """Reports a bad command line in one line (plus where to get help),
    not argparse's usage block, so scripts' logs stay readable."""

    def error(self, message):
        self.exit(2, f"{PROG}: error: {message} (see '{self.prog} --help')\n")


def _error_text(e: BaseException) -> str:
    if isinstance(e, OSError) and e.filename is not None:
        # "path: No such file or directory" rather than "[Errno 2] ...".
        return f"{e.filename}: {e.strerror or e}"
    if isinstance(e, OSError) and not e.strerror and e.args:
        return str(e.args[0])
    return str(e)


_TOP_EPILOG = """\
examples:
  arrayfs ls 'data/train-*.array_record' | head
  arrayfs cat data/train.array_record 42 > record42.bin
  arrayfs info data/ --json
  arrayfs verify 'data/*.array_record'
  arrayfs pack images/ -o out/images.array_record --shard-size 10000
  arrayfs convert --from tfrecord 'data/*.tfrecord' -o out/train --num-shards 8
  arrayfs mount 'data/train-*.array_record' mnt && ls mnt | head && arrayfs -u mnt

SRC is a file, a quoted glob, a directory (its *array_record* files) or a
read instruction 'path[start:stop]'; several SRCs are concatenated in order.
Each may be a URL (s3://, gs://, https://, ...) read through fsspec, with
credentials from the usual environment or --storage-option KEY=VALUE.
Exit status: 0 ok, 1 error or corruption found, 2 bad command line.
"""



def build_parser() -> tuple[argparse.ArgumentParser, bool]:
    """The argument parser, and whether ``unmount`` is registered."""
    parser = _Parser(
        prog=PROG,
        description="Look at, check and build ArrayRecord datasets; mount them as a directory of records.",
        epilog=_TOP_EPILOG,
        formatter_class=formatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "-u", "--unmount", dest="unmount_point", metavar="MOUNTPOINT",
        help="unmount MOUNTPOINT (same as `arrayfs unmount MOUNTPOINT`)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, commands in COMMANDS.items():
        try:
            module = importlib.import_module(name)
        except (ImportError, OSError) as e:
            if getattr(e, "name", None) == name:
                continue  # a build without that package
            _add_stubs(sub, commands, f"cannot be loaded ({e})", _HINTS.get(name, ""))
            continue
        module.register(sub, common)
    return parser, "unmount" in sub.choices


def _add_stubs(sub, commands, why: str, hint: str) -> None:
    """Commands whose module failed to load: ``why`` in their help line,
    ``why`` and ``hint`` (what to install) when they are run."""
    reason = f"{why}: {hint}"

    def fail(args):
        raise CliError(f"{args.command} {reason}")

    for name in commands:
        p = sub.add_parser(name, help=f"(unavailable: {why})", description=f"arrayfs {name} {reason}",
                           formatter_class=formatter)
        p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
        p.set_defaults(func=fail)


#: Commands whose output (records, listings, reports, a summary line) goes to
#: standard output; ``mount`` and ``unmount`` write none.
_WRITES_STDOUT = frozenset({"ls", "cat", "info", "verify", "pack", "convert"})


def _check_stdout(command) -> None:
    """Raise :class:`CliError` when ``command`` writes to standard output
    and there is none: Python sets ``sys.stdout`` to ``None`` when fd 1 is
    closed (``arrayfs cat ... >&-``), and the command would fail on its
    first write with an ``AttributeError`` (a traceback), or, for ``pack``
    and ``convert``, only after all the work."""
    if sys.stdout is None and command in _WRITES_STDOUT:
        raise CliError(f"{command}: standard output is closed; redirect it instead (e.g. >/dev/null)")


def _run(args) -> int:
    _check_stdout(args.command)
    try:
        rc = args.func(args)
    except ModuleNotFoundError as e:
        # Commands load their optional dependencies when they run.
        extra = EXTRA_OF.get((e.name or "").split(".")[0])
        if extra:
            raise CliError(f"{args.command} needs {e.name!r}, which is not installed: "
                           f"{install_hint(extra)}") from None
        raise
    return 0 if rc is None else int(rc)


def main(argv=None) -> int:
    """Run the ``arrayfs`` command line with ``argv`` (default
    ``sys.argv[1:]``). Returns the exit status; never raises for expected
    errors: every one ends here, printed as one line on stderr."""
    argv = sys.argv[1:] if argv is None else [os.fspath(a) for a in argv]
    parser, has_unmount = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.unmount_point is not None:
            if args.command is not None:
                parser.error("-u/--unmount takes no command")
            if not has_unmount:
                raise CliError("unmount is not available: this arrayfs has no filesystem support (arrayfs.fs)")
            args = parser.parse_args(["unmount", args.unmount_point])
        if getattr(args, "func", None) is None:
            parser.print_help(sys.stderr)
            return 2
        return _run(args)
    except SystemExit as e:  # argparse: --help, --version, bad command line
        code = e.code
        return code if isinstance(code, int) else (0 if code is None else _fail(str(code)))
    except KeyboardInterrupt:
        sys.stderr.write("\n")
        return 130
    except BrokenPipeError:
        # `arrayfs ls ... | head`: the reader left; stop quietly. Point stdout
        # at /dev/null so the interpreter's final flush does not complain.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 141  # as a shell reports a process killed by SIGPIPE
    except (CliError, ArrayRecordError, PackError, OSError) as e:
        return _fail(_error_text(e))


def _fail(message: str) -> int:
    # Keep it to one line whatever the message holds.
    sys.stderr.write(f"{PROG}: error: {' '.join(message.split())}\n")
    sys.stderr.flush()
    return 1

