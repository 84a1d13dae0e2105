"""The shape of dotrio's code, checked from its source with ``ast``.

1. **Layers.** Modules import one way: server -> config -> runtime -> user API
   -> storage -> kernels and leaf modules. Every import counts: type-only
   imports (under ``if TYPE_CHECKING:``) and lazy imports inside functions
   too, and importing ``dotrio.pkg.mod`` from outside ``dotrio.pkg`` also
   imports ``dotrio.pkg`` (its ``__init__``). The import graph has no cycle,
   and no module imports a module of a higher layer. A new module needs a
   layer: add it to ``LAYERS`` (or it falls under a package rule below).

2. **No reaching into another module's privates.** ``x._name`` where ``x`` is
   not ``self``/``cls`` is allowed only when ``_name`` is one of the current
   module's own names. See ``test_no_private_access_across_modules`` for the
   heuristic and its limits.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dotrio"

# Highest first. Imports go from a layer to itself or to a lower one.
TOP, SERVER, CONFIG, RUNTIME, API, STORAGE, KERNELS = 70, 60, 50, 40, 30, 20, 10
LAYER_NAMES = {TOP: "top", SERVER: "server", CONFIG: "config", RUNTIME: "runtime", API: "user API",
               STORAGE: "storage", KERNELS: "kernels/leaf"}

# Exact module names (a package is named by itself, for its __init__).
LAYERS: dict[str, int] = {
    # The public surface assembles everything; the test plugin drives a Runtime.
    "dotrio": TOP,
    "dotrio.__main__": TOP,
    "dotrio.testing": TOP,
    # What user code subclasses and receives. It depends on the runtime only
    # through Protocols it defines itself (ObjectHost, ObjectDelivery,
    # SocketHost, GatedActor), so the runtime sits above it.
    "dotrio._object": API,
    "dotrio._namespace": API,
    "dotrio._http": API,
    "dotrio._ids": API,
    "dotrio._websocket": API,
    # The alarm index is a SQLite file like the objects' databases.
    "dotrio._alarm_index": STORAGE,
    # Kernels (compiled + pure-Python twins) and modules that import nothing of dotrio.
    "dotrio._codec": KERNELS,
    "dotrio._codec_py": KERNELS,
    "dotrio._wheel": KERNELS,
    "dotrio._wheel_py": KERNELS,
    "dotrio._ext": KERNELS,
    "dotrio.storage._coalesce": KERNELS,
    "dotrio.storage._coalesce_py": KERNELS,
    "dotrio._errors": KERNELS,
    "dotrio._clock": KERNELS,
    "dotrio._schedule": KERNELS,
    # The context variables the runtime sets and the user API and storage read.
    "dotrio._context": KERNELS,
    "dotrio._version": KERNELS,
    "dotrio._util": KERNELS,
}
# Everything else in a package takes the package's layer.
PACKAGE_LAYERS: dict[str, int] = {
    "dotrio.server": SERVER,
    "dotrio._config": CONFIG,
    "dotrio.runtime": RUNTIME,
    "dotrio.storage": STORAGE,
    "dotrio._ext": KERNELS,
    "dotrio._kernels": KERNELS,
}


def _modules() -> dict[str, tuple[Path, bool]]:
    """Module name -> (file, is a package __init__)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts.pop()
        out[".".join(parts)] = (path, is_pkg)
    return out


MODULES = _modules()


def layer_of(module: str) -> int | None:
    if module in LAYERS:
        return LAYERS[module]
    best = None
    for pkg, layer in PACKAGE_LAYERS.items():
        if (module == pkg or module.startswith(pkg + ".")) and (best is None or len(pkg) > len(best[0])):
            best = (pkg, layer)
    return None if best is None else best[1]


def _resolve(module: str, is_pkg: bool, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The dotrio modules an import statement imports (deepest existing module)."""
    targets: list[str] = []
    if isinstance(node, ast.Import):
        targets = [a.name for a in node.names]
    else:
        if node.level:
            base = module.split(".") if is_pkg else module.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            name = ".".join([*base, node.module] if node.module else base)
        else:
            name = node.module or ""
        for alias in node.names:
            sub = f"{name}.{alias.name}"
            targets.append(sub if sub in MODULES else name)
    out = []
    for target in targets:
        if target != "dotrio" and not target.startswith("dotrio."):
            continue
        while target not in MODULES and "." in target:
            target = target.rsplit(".", 1)[0]
        out.append(target)
    return out


def _with_packages(importer: str, target: str) -> list[str]:
    """``target`` plus the packages whose __init__ importing it runs (those
    that do not contain the importer; the root package runs for everyone)."""
    out = [target]
    parts = target.split(".")
    for i in range(2, len(parts)):
        pkg = ".".join(parts[:i])
        if not (importer == pkg or importer.startswith(pkg + ".")):
            out.append(pkg)
    return out


def import_graph() -> dict[str, dict[str, int]]:
    """module -> {imported module: line of the first import}."""
    graph: dict[str, dict[str, int]] = {}
    for module, (path, is_pkg) in MODULES.items():
        edges: dict[str, int] = {}
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _resolve(module, is_pkg, node):
                    for dep in _with_packages(module, target):
                        if dep != module:
                            edges.setdefault(dep, node.lineno)
        graph[module] = edges
    return graph


def test_every_module_has_a_layer() -> None:
    missing = [m for m in MODULES if layer_of(m) is None]
    assert not missing, f"modules without a layer (add them to LAYERS in {__file__}): {missing}"


def test_imports_go_down_the_layers() -> None:
    bad = []
    for module, edges in import_graph().items():
        mine = layer_of(module)
        for dep, line in edges.items():
            theirs = layer_of(dep)
            if dep == "dotrio" or mine is None or theirs is None:
                continue  # the root package: checked by the cycle test
            if theirs > mine:
                bad.append(f"{module}:{line} ({LAYER_NAMES[mine]}) imports {dep} ({LAYER_NAMES[theirs]})")
    assert not bad, "imports against the layer order:\n" + "\n".join(bad)


def test_no_module_imports_the_root_package() -> None:
    # ``dotrio/__init__`` imports the whole public surface: a module importing
    # it back is a cycle through the root (the version lives in a leaf module).
    bad = [f"{m}:{line}" for m, edges in import_graph().items() if m != "dotrio" for d, line in edges.items()
           if d == "dotrio"]
    assert not bad, "modules importing the root package `dotrio`: " + ", ".join(bad)


def _find_cycle(graph: dict[str, dict[str, int]]) -> list[str] | None:
    white, grey, black = 0, 1, 2
    color = dict.fromkeys(graph, white)
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        color[node] = grey
        stack.append(node)
        for dep in graph.get(node, {}):
            if dep == "dotrio":
                continue  # reported by test_no_module_imports_the_root_package
            if color.get(dep, black) == grey:
                return [*stack[stack.index(dep):], dep]
            if color.get(dep) == white:
                found = visit(dep)
                if found:
                    return found
        stack.pop()
        color[node] = black
        return None

    for node in graph:
        if color[node] == white:
            found = visit(node)
            if found:
                return found
    return None


def test_the_import_graph_has_no_cycle() -> None:
    graph = import_graph()
    cycle = _find_cycle(graph)
    if cycle:
        steps = [f"{a} (line {graph[a][b]}) -> {b}" for a, b in zip(cycle, cycle[1:], strict=False)]
        pytest.fail("import cycle (type-only and lazy imports count):\n" + "\n".join(steps))


def test_the_cycle_finder_finds_cycles() -> None:
    assert _find_cycle({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b": 1}, "b": {}, "c": {"b": 1}}) is None


# ---- private access --------------------------------------------------------------------

# Reaches the heuristic cannot tell from a violation, each with its reason.
ALLOWED_PRIVATE = {
    # The documented way to exit without cleanup (a second signal, a reload
    # that cannot drain): public despite its name.
    "os._exit",
}


def is_shim(path: Path) -> bool:
    """Shim modules exist to touch other libraries' privates, each pinned to
    the versions it was tested with and checked by tests/test_private_api_shims.py."""
    return path.stem.endswith("_shim")


def _own_names(tree: ast.Module) -> set[str]:
    """Names a module defines: functions, classes, module and class level
    names, ``__slots__`` entries, and attributes it assigns on self/cls."""
    own: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            own.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            own.add(node.id)
        elif (isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store)
              and isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
            own.add(node.attr)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if (isinstance(target, ast.Name) and target.id == "__slots__"
                        and isinstance(node.value, (ast.Tuple, ast.List))):
                    own.update(e.value for e in node.value.elts if isinstance(e, ast.Constant))
    return own


def _is_module(path: Path, node: ast.ImportFrom, name: str) -> bool:
    """``from <node.module> import name`` names a module (or package) of dotrio."""
    if node.level:
        folder = path.parent
        for _ in range(node.level - 1):
            folder = folder.parent
    else:
        folder = PACKAGE.parent
    for part in (node.module or "").split(".") if node.module else []:
        folder = folder / part
    return (folder / f"{name}.py").is_file() or (folder / name / "__init__.py").is_file()


def private_reaches(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    own = _own_names(tree)
    classes = {node.name for node in ast.walk(tree) if isinstance(node, ast.ClassDef)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] != "dotrio":
            continue
        if isinstance(node, ast.ImportFrom):
            # ``from .x import _name``: importing another module's private name
            # (a private module is fine: ``from . import _cli_fsck``).
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__") and not _is_module(path, node, alias.name):
                    found.append((node.lineno, f"from {'.' * node.level}{node.module or ''} import {alias.name}"))
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue
            if node.attr in own:
                continue
            if node.attr == "_create" and isinstance(node.value, ast.Name) and node.value.id in classes:
                continue  # the private constructor of a class of this module (dotrio._util.NoPublicConstructor)
            found.append((node.lineno, ast.unparse(node)))
    return found


def test_no_private_access_across_modules() -> None:
    """Heuristic: ``x._name`` (x not self/cls) is a reach into another module
    when the current module defines no ``_name`` of its own (no function,
    class, slot, module/class-level name or ``self._name =`` by that name).
    Importing a private name from another dotrio module counts too (private
    *modules* are fine: ``from ._http import Request``).

    Limits: it cannot know types, so it misses a reach whose name the current
    module happens to define too (a common ``_state``), and it flags a
    dunder-free private of a third-party object (listed in ALLOWED_PRIVATE with
    the reason). Modules talk through underscore-free methods and module-level
    functions instead (e.g. ``dotrio._websocket.bind_hibernatable``).
    """
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if is_shim(path):
            continue
        rel = path.relative_to(PACKAGE.parent).as_posix()
        for line, expr in private_reaches(path):
            if expr not in ALLOWED_PRIVATE:
                bad.append(f"{rel}:{line}: {expr}")
    assert not bad, "private access across modules:\n" + "\n".join(bad)


def test_the_private_access_heuristic_flags_reaches(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from ._other import _helper\n"
        "class A:\n"
        "    __slots__ = ('_slot',)\n"
        "    def __init__(self):\n"
        "        self._mine = 1\n"
        "    def f(self, other):\n"
        "        other._mine\n"  # allowed: this module defines _mine
        "        other._slot\n"  # allowed: a slot of this module
        "        other._theirs\n"  # flagged
        "        other._theirs = 2\n"  # flagged: assigning into another object
        "        self._anything\n"  # allowed
    )
    assert [e for _, e in private_reaches(sample)] == [
        "from ._other import _helper", "other._theirs", "other._theirs"
    ]
