"""The package as the tree defines it: the repository root is `gpusleuth`, every top-level folder with an __init__.py
is a room, and every module below is `gpusleuth.<folders>.<file>`. Also the imports each module makes, read from
its AST. Used by the layering and packaging tests (setup.py discovers packages the same way)."""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "gpusleuth"
NOT_ROOMS = ("tests", "benchmarks")  # never installed; they have no __init__.py either


def rooms(root: Path = ROOT) -> list[str]:
    """The top-level folders of `root` that are packages (what setup.py's find_packages finds at the top)."""
    return sorted(p.name for p in root.iterdir()
                  if (p / "__init__.py").is_file() and p.name not in NOT_ROOMS and "." not in p.name)


def modules(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the package under `root`, dotted name -> file; only folders that are packages count, as
    for find_packages."""
    out: dict[str, Path] = {}
    for room in rooms(root):
        for init in sorted((root / room).rglob("__init__.py")):
            pkg = init.parent
            parts = pkg.relative_to(root).parts
            if not all((root.joinpath(*parts[:i]) / "__init__.py").is_file() for i in range(1, len(parts) + 1)):
                continue  # inside a folder that is not a package
            name = ".".join((PACKAGE, *parts))
            out[name] = init
            for file in sorted(pkg.glob("*.py")):
                if file.name != "__init__.py":
                    out[f"{name}.{file.stem}"] = file
    return out


@dataclass(frozen=True, slots=True)
class Import:
    """One imported name: `target` is absolute (relative imports resolved; `from a import b` is `a.b` when that is
    a module). `is_eager` is False inside functions and under `if TYPE_CHECKING:` (it does not run on import)."""

    module: str
    file: Path
    line: int
    target: str
    text: str
    is_eager: bool


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(node: ast.AST, is_lazy: bool = False) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        yield node, is_lazy
        return
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
        is_lazy = True
    if isinstance(node, ast.If) and _is_type_checking(node.test):
        for child in node.body:
            yield from _import_nodes(child, True)
        for child in node.orelse:
            yield from _import_nodes(child, is_lazy)
        return
    for child in ast.iter_child_nodes(node):
        yield from _import_nodes(child, is_lazy)


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, known: set[str]) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        parts = module.split(".") if is_package else module.split(".")[:-1]
        parts = parts[:len(parts) - (node.level - 1)]
        base = ".".join([*parts, *([node.module] if node.module else [])])
    return [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]


def imports(module: str, file: Path, known: set[str]) -> list[Import]:
    """Every import `module` (source `file`) makes, wherever it stands; `known` is the set of the tree's modules."""
    source = file.read_text()
    out = []
    for node, is_lazy in _import_nodes(ast.parse(source, str(file))):
        text = " ".join((ast.get_source_segment(source, node) or ast.unparse(node)).split())
        for target in dict.fromkeys(_targets(node, module, file.name == "__init__.py", known)):
            out.append(Import(module, file, node.lineno, target, text, not is_lazy))
    return out
