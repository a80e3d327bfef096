#!/usr/bin/env python3
"""Run the ``arrayfs`` command line from a checkout, without installing the
console script: ``python mount_cli.py mount 'data/*.array_record' mnt`` is
``arrayfs mount 'data/*.array_record' mnt`` (every other command works the
same way; see ``python mount_cli.py --help``)."""

from arrayfs.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
