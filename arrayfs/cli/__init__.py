"""The ``arrayfs`` command line: :func:`main` (console script ``arrayfs``,
``python -m arrayfs`` and ``mount_cli.py``), one module per command."""

from .common import CliError, parse_index_spec
from .main import build_parser, main

__all__ = ["main", "build_parser", "parse_index_spec", "CliError"]
