"""Imports go one way: no module of arrayfs imports, even lazily inside a
function, a module that imports it back, and the mount's modules import
only those below them in :mod:`arrayfs.fs`'s order."""

from __future__ import annotations

import ast
from pathlib import Path

import arrayfs

ROOT = Path(arrayfs.__file__).parent

# arrayfs.fs, bottom to top (its package docstring lists the same order).
FS_ORDER = ["options", "view", "decoded", "records", "core", "watch", "lowlevel", "workers", "fuse3", "fuse2", "mount", "cli"]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _graph() -> dict:
    """Module -> the arrayfs modules it imports anywhere in its source."""
    modules = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        deps = set()
        tree = ast.parse(path.read_text(), str(path))
        # A module's `if __name__ == "__main__":` block runs it as a program;
        # what it imports there is no dependency of the module.
        tree.body = [n for n in tree.body if not (isinstance(n, ast.If) and "__main__" in ast.unparse(n.test))]
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = package
                for _ in range(node.level - 1):
                    base = base.rsplit(".", 1)[0]
                base = (f"{base}.{node.module}" if node.module else base) if node.level else node.module
                # "from pkg import mod" imports the module pkg.mod when there is one.
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            deps.update(t for t in targets if t in modules and t != name)
        graph[name] = deps
    return graph


def test_no_import_cycles():
    graph = _graph()
    state, stack, cycles = {}, [], []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_mount_imports_downwards_only():
    graph = _graph()
    fs = {m.rsplit(".", 1)[1]: m for m in graph if m.startswith("arrayfs.fs.")}
    assert sorted(fs) == sorted(FS_ORDER), "a module of arrayfs.fs is missing from FS_ORDER"
    for i, name in enumerate(FS_ORDER):
        above = {fs[n] for n in FS_ORDER[i:]}
        assert not graph[fs[name]] & above, f"arrayfs.fs.{name} imports {sorted(graph[fs[name]] & above)}"


def test_the_command_line_imports_no_command_of_other_packages():
    # arrayfs.fs and arrayfs.beam register their commands through the hook;
    # neither imports the command line.
    graph = _graph()
    for m in ("arrayfs.fs.cli", "arrayfs.beam.cli"):
        assert not any(d.startswith("arrayfs.cli") for d in graph[m]), m
