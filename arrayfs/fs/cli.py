"""``arrayfs mount`` and ``arrayfs unmount``: the mount's commands.

The command line (:mod:`arrayfs.cli`) calls :func:`register` with its kit
(:mod:`arrayfs.cli.common`); errors are raised as ``kit.Error`` and end in
the command line's one error path.
"""

from __future__ import annotations

import argparse

__all__ = ["register"]

MOUNT_EXAMPLE = """\
examples:
  arrayfs mount 'data/train-*.array_record' mnt     # every record as mnt/<index>
  ls mnt | head; cat mnt/42 | head -c 100; cat mnt/.arrayfs.json
  arrayfs mount -f data/ mnt                        # foreground; Ctrl-C unmounts
  arrayfs mount 'a.array_record[0:1000]' b.array_record mnt -o workers=4
  arrayfs mount 's3://bucket/train-*.array_record' mnt --storage-option anon=true
  arrayfs mount ~/tensorflow_datasets/mnist/3.0.1 mnt --decode auto
  ls mnt/.decoded/00042/; file mnt/.decoded/00042/image.png; cat mnt/.decoded/00042.json
  arrayfs unmount mnt

layout: mnt/<global index, zero-padded>  mnt/.shards/<shard file>/<index in file>
        mnt/.arrayfs.json (shards, record counts, first index, writer options, total bytes)
        with --decode: mnt/.decoded/<name>/<feature files>  mnt/.decoded/<name>.json
"""

UNMOUNT_EXAMPLE = """\
example:
  arrayfs unmount mnt        (same as: arrayfs -u mnt, or fusermount3 -u mnt)
"""


def register(sub, kit) -> None:
    """Add ``mount`` and ``unmount`` to the ``argparse`` subparsers ``sub``;
    each parser's ``func`` default is its handler."""

    def cmd_mount(args) -> int:
        from .mount import MountError, mount

        try:
            mount(args.sources, args.mountpoint, foreground=args.foreground, fuse_options=args.options,
                  allow_other=args.allow_other, watch=args.watch, verify=args.verify, log_file=args.log_file,
                  storage_options=kit.storage_options(args), poll_interval=args.poll_interval,
                  decode=args.decode)
        except MountError as e:
            raise kit.Error(str(e)) from None
        return 0

    def cmd_unmount(args) -> int:
        from .mount import MountError, unmount

        try:
            unmount(args.mountpoint, lazy=args.lazy)
        except MountError as e:
            raise kit.Error(str(e)) from None
        return 0

    p = sub.add_parser(
        "mount",
        help="mount ArrayRecord shards as a read-only directory of records",
        description="Mount ArrayRecord shards as a read-only directory: every record of the "
        "concatenated shards is one file named by its global index. Returns once the mount is "
        "ready (unless -f).",
        epilog=MOUNT_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("sources", nargs="+", metavar="SRC",
                   help="shard file, glob pattern (quote it), directory, or 'file[start:stop]'")
    p.add_argument("mountpoint", metavar="MOUNTPOINT", help="an existing empty directory")
    p.add_argument("-f", "--foreground", action="store_true",
                   help="stay in the foreground (logs on stderr; Ctrl-C unmounts)")
    p.add_argument("-o", dest="options", action="append", metavar="OPT[,OPT...]",
                   help="mount options (repeatable): libfuse's (e.g. allow_other, max_read=N) and "
                   "arrayfs's own: workers=N (processes serving requests; default: the CPU count), "
                   "max_threads=N, nothreads, attr_timeout=S, entry_timeout=S, open_handles "
                   "(decode per open file handle), readdirplus=N (list directories of at most N entries "
                   "with attributes; 0: never)")
    p.add_argument("--allow-other", action="store_true",
                   help="let other users read the mount (non-root: needs user_allow_other in /etc/fuse.conf)")
    p.add_argument("--watch", action=argparse.BooleanOptionalAction, default=True,
                   help="show shards that appear or vanish under SRC without remounting (default: on)")
    p.add_argument("--poll-interval", type=float, default=60.0, metavar="SECONDS",
                   help="while watching, list object-store sources again every SECONDS (default: 60)")
    kit.add_storage_option(p)
    p.add_argument("--no-verify", dest="verify", action="store_false",
                   help="skip chunk data hash checks (faster; corruption may go unnoticed)")
    p.add_argument("--decode", choices=("auto", "example", "tfds", "msgpack", "json", "raw"), metavar="FORMAT",
                   help="add MOUNTPOINT/.decoded/: each record's features as files (<name>/image.png, "
                   "<name>/label, ...) and as JSON (<name>.json); FORMAT: auto (sniffed; a TFDS dataset by its "
                   "features.json), example, tfds, msgpack, json or raw")
    p.add_argument("--log-file", metavar="FILE",
                   help="background mode: append the daemon's log (errors, EIO details) to FILE")
    p.set_defaults(func=cmd_mount)

    u = sub.add_parser(
        "unmount",
        aliases=["umount"],
        help="unmount an arrayfs mount",
        description="Unmount an arrayfs (or any FUSE) mount; its daemon exits.",
        epilog=UNMOUNT_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    u.add_argument("mountpoint", metavar="MOUNTPOINT")
    u.add_argument("-z", "--lazy", action="store_true", help="detach now even if files are open in it")
    u.set_defaults(func=cmd_unmount)


if __name__ == "__main__":  # python -m arrayfs.fs.cli mount ...: the one command line, as `arrayfs mount ...`
    import sys

    from ..cli import main

    sys.exit(main())
