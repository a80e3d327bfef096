"""A missing optional dependency names the extra that installs it.

Each case runs in a child process in which a meta-path finder makes the
dependency's modules unimportable, as in an install without that extra.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

BLOCK = """
import importlib.abc, sys
BLOCKED = {blocked!r}
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
for m in [m for m in sys.modules if m.split(".")[0] in BLOCKED]:
    del sys.modules[m]
sys.meta_path.insert(0, Blocker())
"""


def run_without(blocked, code: str) -> subprocess.CompletedProcess:
    script = BLOCK.format(blocked=tuple(blocked)) + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("blocked, code, hint", [
    (["flax"], "from arrayfs import ArrayRecordSourceModule", "arrayfs[jax]"),
    (["jax", "flax"], "import arrayfs.nnx", "arrayfs[jax]"),
    (["apache_beam"], "from arrayfs.beam import WriteToArrayRecord", "arrayfs[beam]"),
    (["google"], "import arrayfs.tfds", "arrayfs[tfds]"),
])
def test_an_import_without_the_extra_names_it(blocked, code, hint):
    p = run_without(blocked, code)
    assert p.returncode == 1
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: ") and f"pip install '{hint}'" in last, p.stderr[-2000:]


def test_a_url_without_the_remote_extra_names_it():
    p = run_without(["fsspec"], """
        import arrayfs
        try:
            arrayfs.ArrayRecordDataSource("s3://bucket/x.array_record")
        except arrayfs.StorageError as e:
            print(e.reason)
    """)
    assert p.returncode == 0 and "pip install 'arrayfs[remote]'" in p.stdout, p.stderr[-2000:]


@pytest.mark.parametrize("blocked, argv, hint", [
    (["mfusepy"], ["mount", "x.array_record", "mnt"], "arrayfs[fuse]"),
    (["apache_beam"], ["convert", "--from", "lines", "x.txt", "-o", "out/x"], "arrayfs[beam]"),
])
def test_a_command_without_the_extra_names_it(blocked, argv, hint, tmp_path):
    (tmp_path / "x.txt").write_text("a\n")
    p = run_without(blocked, f"""
        import os, sys
        os.chdir({str(tmp_path)!r})
        from arrayfs.cli import main
        sys.exit(main({argv!r}))
    """)
    assert p.returncode != 0 and f"pip install '{hint}'" in p.stderr, p.stderr[-2000:]
