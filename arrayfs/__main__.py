"""``python -m arrayfs``: the same entry point as the ``arrayfs`` command."""

from .cli import main

raise SystemExit(main())
