"""The structure every service keeps (DESIGN.md section 7), checked on the whole tree:

- no import cycle among the modules of one service (`services/<name>/src/avis/<name>`) or of the
  shared package, counting imports under `if TYPE_CHECKING:` and imports inside functions (a
  cycle hidden from the interpreter still ties the modules together for a reader);
- no class in `services/` or `shared/` over 450 lines, no function over 80.

The import graph comes from grimp, which reads every import statement of a package, wherever it
stands; the checker's own tests below run it on small packages made for the purpose.
"""

import ast
import importlib.util
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[2]
MAX_CLASS_LINES = 450
MAX_FUNCTION_LINES = 80

Graph = Mapping[str, set[str]]


def packages() -> list[str]:
    """The shared package and every service's package, by import name."""
    services = sorted(p.parent.name for p in ROOT.glob("services/*/src/avis/*/__init__.py"))
    return ["avis.shared", *(f"avis.{name}" for name in services)]


def import_graph(package: str) -> Graph:
    """Which modules of `package` each of its modules imports (any import, anywhere in it)."""
    graph = grimp.build_graph(package, exclude_type_checking_imports=False, cache_dir=None)
    return {module: graph.find_modules_directly_imported_by(module) for module in graph.modules}


def tangles(graph: Graph) -> list[list[str]]:
    """The groups of modules that import one another (strongly connected components of more
    than one module, or a module importing itself), each sorted, in name order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:  # Tarjan's algorithm; a package's modules are few
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in sorted(graph.get(module, ())):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == module:
                    break
            if len(group) > 1 or module in graph.get(module, ()):
                found.append(sorted(group))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return sorted(found)


def describe(package: str, graph: Graph, group: list[str]) -> str:
    """A tangle named by its modules and the imports within it (the ones to cut)."""
    members = set(group)

    def short(module: str) -> str:
        return module.removeprefix(f"{package}.")

    edges = [f"{short(a)} -> {short(b)}" for a in group for b in sorted(graph[a] & members)]
    return f"{package}: {', '.join(map(short, group))} ({'; '.join(edges)})"


def import_cycles(package_names: Iterable[str]) -> list[str]:
    """Every import cycle within each of the packages, described."""
    cycles = []
    for package in package_names:
        graph = import_graph(package)
        cycles += [describe(package, graph, group) for group in tangles(graph)]
    return cycles


def long_definitions(files: Iterable[Path], root: Path) -> list[str]:
    """Classes over MAX_CLASS_LINES and functions over MAX_FUNCTION_LINES, longest first."""
    found: list[tuple[int, str]] = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.ClassDef):
                limit = MAX_CLASS_LINES
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                limit = MAX_FUNCTION_LINES
            else:
                continue
            lines = (node.end_lineno or node.lineno) - node.lineno + 1
            if lines > limit:
                kind = "class" if isinstance(node, ast.ClassDef) else "function"
                where = f"{path.relative_to(root)}:{node.lineno}"
                found.append((lines, f"{kind} {node.name} ({where}): {lines} lines > {limit}"))
    return [text for _, text in sorted(found, key=lambda item: (-item[0], item[1]))]


def source_files(root: Path) -> list[Path]:
    """Every Python file of the services and the shared package."""
    return sorted([*root.glob("services/**/*.py"), *root.glob("shared/**/*.py")])


# --- the whole tree ---------------------------------------------------------------------------


def test_no_import_cycle_within_a_service_or_the_shared_package() -> None:
    cycles = import_cycles(packages())
    assert not cycles, "import cycles (modules that import one another):\n" + "\n".join(cycles)


def test_no_class_or_function_over_the_limits() -> None:
    found = long_definitions(source_files(ROOT), ROOT)
    assert not found, "too long:\n" + "\n".join(found)


# --- the checker itself, on packages made for it -------------------------------------------------


def make_package(root: Path, modules: Mapping[str, str]) -> str:
    """A package under `root` with `modules` (name -> source); its import name."""
    name = f"structure_probe_{uuid.uuid4().hex[:12]}"
    package = root / name
    package.mkdir()
    (package / "__init__.py").write_text('"""A probe."""\n')
    for module, source in modules.items():
        (package / f"{module}.py").write_text(source.replace("PKG", name))
    return name


def test_every_test_module_has_a_basename_of_its_own() -> None:
    """pytest imports test modules by their basename (rootdir-relative packages are not used):
    two modules of one name in different folders stop the whole suite at collection."""
    seen: dict[str, list[str]] = {}
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        seen.setdefault(path.name, []).append(str(path.relative_to(ROOT)))
    assert not {name: paths for name, paths in seen.items() if len(paths) > 1}


def test_every_service_and_the_shared_package_are_checked_from_this_tree() -> None:
    names = packages()
    assert names == [
        "avis.shared",
        "avis.intake",
        "avis.notify",
        "avis.reports",
        "avis.review",
        "avis.web",
    ]
    for name in names:
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.origin is not None
        assert Path(spec.origin).is_relative_to(ROOT), f"{name} is imported from {spec.origin}"


def test_a_cycle_seen_only_by_the_type_checker_is_a_cycle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    name = make_package(
        tmp_path,
        {
            "models": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n"
                "    from PKG.store import Row\n"
            ),
            "store": "from PKG import models\nclass Row: ...\n",
            "leaf": "from PKG import models\n",
        },
    )
    assert import_cycles([name]) == [f"{name}: models, store (models -> store; store -> models)"]


def test_an_import_inside_a_function_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    name = make_package(
        tmp_path,
        {
            "a": "import PKG.b\n",
            "b": "def late():\n    from PKG.c import x\n    return x\n",
            "c": "from PKG import a\nx = 1\n",
        },
    )
    assert import_cycles([name]) == [f"{name}: a, b, c (a -> b; b -> c; c -> a)"]


def test_a_package_whose_imports_go_one_way_has_no_cycle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    name = make_package(
        tmp_path,
        {
            "models": "import pydantic\n",
            "store": (
                "from typing import TYPE_CHECKING\n"
                "from PKG import models\n"
                "if TYPE_CHECKING:\n"
                "    from PKG.models import View\n"
            ),
            "service": "from PKG import models, store\n",
        },
    )
    assert import_cycles([name]) == []


def test_long_classes_and_functions_are_named(tmp_path: Path) -> None:
    body = "    x = 1\n"
    (tmp_path / "long.py").write_text(
        "class Big:\n"
        + body * 450
        + "class Fits:\n"
        + body * 449
        + "def long():\n"
        + body * 80
        + "async def fits():\n"
        + body * 79
    )
    assert long_definitions([tmp_path / "long.py"], tmp_path) == [
        "class Big (long.py:1): 451 lines > 450",
        "function long (long.py:902): 81 lines > 80",
    ]
