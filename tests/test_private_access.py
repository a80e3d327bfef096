"""No module of arrayfs reaches into another module's private names.

An attribute access ``x._name`` (not ``self._name``/``cls._name``, not a
dunder, not namedtuple's ``_replace``/``_asdict``/``_fields``/``_make``)
counts when ``_name`` is defined only in other modules of arrayfs: as a
function, class, module or class variable, ``self._name = ...`` or a
``__slots__`` entry. A name the accessing module defines too counts as its
own (the check reads no types, so it cannot tell which ``_lock`` is meant).

Each allowed access names its module and attribute, and says why.
"""

import ast
import collections
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent / "arrayfs"

_NAMEDTUPLE = {"_replace", "_asdict", "_fields", "_make", "_field_defaults"}

# (module, attribute): why the access stays.
ALLOWED = {
    ("arrayfs/dataset.py", "_index"):
        "ds[i] hot path: one attribute read of the file's decoded index (None until decoded) "
        "where a property call costs a measurable share of a mapped single-record read",
    ("arrayfs/storage/local.py", "_lock"):
        "Lease.copy inlined in LocalFile.read, the hot path of single-record reads of a leased map",
}
EXEMPT_DIRS = ()


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _modules(root) -> dict:
    return {p.relative_to(root.parent).as_posix(): ast.parse(p.read_text(), str(p))
            for p in sorted(root.rglob("*.py"))}


def _defined(tree) -> set:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for sub in ast.walk(target):
                    if isinstance(sub, ast.Name):
                        names.add(sub.id)
                    elif (isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Name)
                          and sub.value.id in ("self", "cls")):
                        names.add(sub.attr)
            if any(isinstance(t, ast.Name) and t.id == "__slots__" for t in targets):
                names.update(c.value for c in ast.walk(node.value)
                             if isinstance(c, ast.Constant) and isinstance(c.value, str))
    return {n for n in names if _private(n)}


def private_reaches(root=ROOT) -> list:
    """``(module, line, expression, attribute)`` of every access that counts."""
    modules = _modules(root)
    owners = collections.defaultdict(set)
    for mod, tree in modules.items():
        for name in _defined(tree):
            owners[name].add(mod)
    found = []
    for mod, tree in modules.items():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute) or not _private(node.attr) or node.attr in _NAMEDTUPLE:
                continue
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue
            where = owners.get(node.attr, set())
            if where and mod not in where:
                found.append((mod, node.lineno, ast.unparse(node), node.attr))
    return sorted(found)


def test_the_check_sees_a_reach(tmp_path):
    # The detector itself: a reach into another module's private method or
    # field is found; a module's own names, self._x and _replace are not.
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "a.py").write_text("class A:\n    __slots__ = ('_slot',)\n    def __init__(self):\n"
                              "        self._fd = -1\n    def _hidden(self):\n        return self._fd\n")
    (pkg / "b.py").write_text("def f(a, t):\n    a._fd = 3\n    t._replace(x=1)\n    return a._hidden(), a._slot\n"
                              "def _own():\n    pass\ndef g(m):\n    return m._own\n")
    got = [(m, expr) for m, _, expr, _ in private_reaches(pkg)]
    assert got == [("pkg/b.py", "a._fd"), ("pkg/b.py", "a._hidden"), ("pkg/b.py", "a._slot")]


def test_no_private_names_across_modules():
    found = private_reaches()
    outside = [f for f in found if not f[0].startswith(EXEMPT_DIRS)]
    new = [f"{m}:{line}: {expr}" for m, line, expr, attr in outside if (m, attr) not in ALLOWED]
    assert not new, "private names of another module reached (add a public method instead):\n" + "\n".join(new)
    used = {(m, attr) for m, _, _, attr in outside}
    stale = sorted(set(ALLOWED) - used)
    assert not stale, f"allow-list entries no longer needed: {stale}"
    assert len(outside) <= 5, outside


# `from .module import _name` between modules of arrayfs: these remain (in
# files other issues are reworking: the hot paths', object storage's, the
# mount's); none may be added.
KNOWN_PRIVATE_IMPORTS = {
    ("arrayfs/file.py", "_storage_error"), ("arrayfs/file.py", "_Index"),
    ("arrayfs/riegeli/simple.py", "_local"), ("arrayfs/riegeli/simple.py", "_from_buffer"),
    ("arrayfs/riegeli/simple.py", "_hash64"), ("arrayfs/riegeli/simple.py", "_key"),
    ("arrayfs/riegeli/simple.py", "_HEADER"), ("arrayfs/storage/listing.py", "_mtime_ns"),
}


def private_imports(root=ROOT) -> set:
    found = set()
    for mod, tree in _modules(root).items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level > 0:
                found.update((mod, a.name) for a in node.names if _private(a.name))
    return found


def test_no_new_private_imports_across_modules():
    found = private_imports()
    assert not found - KNOWN_PRIVATE_IMPORTS, "private names imported from another module (make them public)"
    assert not KNOWN_PRIVATE_IMPORTS - found, "no longer imported: drop them from KNOWN_PRIVATE_IMPORTS"
