"""Layers point down (DESIGN.md): which gpusleuth modules each room may import, checked on the AST of every module
of the tree, no import cycles among modules, and benchmarks that never import tests/.

Every import counts for the layer rules, also one inside a function or under `if TYPE_CHECKING:`: a lazy or
type-only import still ties a lower layer to an upper one's names. The cycle check looks only at imports that run
when a module is imported (module and class level, outside `if TYPE_CHECKING:`), since only those can deadlock an
import.
"""
from __future__ import annotations

import ast
import functools
import re
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.tree_helpers import PACKAGE, ROOT, Import, imports, modules, rooms

NO_TORCH = ("torch", "triton")  # the agent needs no torch (DESIGN.md: extras keep the agent light)


@dataclass(frozen=True, slots=True)
class Rule:
    """What the modules under one prefix may import: gpusleuth prefixes, and third-party top-level names (None:
    any but `denied`). The standard library is always allowed."""

    may_import: tuple[str, ...]
    third_party: tuple[str, ...] | None = None
    denied: tuple[str, ...] = ()


# Module prefix -> rule; the longest prefix that matches a module is its rule.
RULES: dict[str, Rule] = {
    "gpusleuth.kernels": Rule(("gpusleuth.kernels",), third_party=("torch", "triton")),
    # The engine's contracts with the agent: the config error type, the span wire format, the thread names.
    "gpusleuth.engine": Rule(("gpusleuth.engine", "gpusleuth.kernels", "gpusleuth.probes.config",
                              "gpusleuth.probes.spans.wire", "gpusleuth.probes.procname")),
    "gpusleuth.probes": Rule(("gpusleuth.probes",), denied=NO_TORCH),
    "gpusleuth.agent": Rule(("gpusleuth.agent", "gpusleuth.probes", "gpusleuth.runbooks"), denied=NO_TORCH),
    "gpusleuth.agent.cli": Rule(("gpusleuth",)),  # the `agent` command: engine, tui, exporters included
    # Records, fields and snapshot types of the probes; of the agent, the store (as a type) and the type of its own
    # health snapshot (a type lives next to its producer).
    "gpusleuth.exporters": Rule(("gpusleuth.exporters", "gpusleuth.probes", "gpusleuth.agent.store",
                                 "gpusleuth.agent.health"), denied=NO_TORCH),
    "gpusleuth.tui": Rule(("gpusleuth.tui", "gpusleuth.agent.control.client", "gpusleuth.agent.control.protocol",
                           "gpusleuth.probes"), denied=NO_TORCH),
    "gpusleuth.runbooks": Rule(("gpusleuth.runbooks",)),
}
# (importing module, imported name) -> why it is allowed for now. Each must still be needed.
EXCEPTIONS: dict[tuple[str, str], str] = {}
# benchmarks/ file -> module of tests/ it may still import, and why.
BENCHMARK_EXCEPTIONS: dict[tuple[str, str], str] = {
    ("bench_gpu_poll.py", "fake_nvml"): "TODO(issue 13): --fake loads tests/fake_nvml.py by path; the fake NVML "
                                        "(526 lines) should move into the package, split",
}


def _is_under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def rule_for(module: str) -> tuple[str, Rule] | None:
    keys = [k for k in RULES if _is_under(module, k)]
    return (max(keys, key=len), RULES[max(keys, key=len)]) if keys else None


def breaks(imp: Import, key: str, rule: Rule) -> str:
    """Why `imp` breaks `rule` (keyed `key`), or ''."""
    top = imp.target.split(".")[0]
    if top == PACKAGE:
        if any(_is_under(imp.target, p) for p in rule.may_import):
            return ""
        return f"rule {key!r} allows only {', '.join(rule.may_import)}"
    if top in sys.stdlib_module_names or top == "__future__":
        return ""
    if top in rule.denied or (rule.third_party is not None and top not in rule.third_party):
        allowed = "any but " + ", ".join(rule.denied) if rule.third_party is None else ", ".join(rule.third_party)
        return f"rule {key!r} allows third-party {allowed}"
    return ""


@functools.lru_cache(maxsize=None)
def _all_imports(root: Path) -> list[Import]:
    known = modules(root)
    return [imp for name, file in known.items() for imp in imports(name, file, set(known))]


def layer_violations(root: Path = ROOT, exceptions: dict[tuple[str, str], str] | None = None) -> list[str]:
    """One line per import that breaks its module's rule: file:line, the import, the rule."""
    exceptions = EXCEPTIONS if exceptions is None else exceptions
    out = []
    for imp in _all_imports(root):
        found = rule_for(imp.module)
        if found is None:
            out.append(f"{imp.file.relative_to(root)}: {imp.module} has no rule in RULES")
            continue
        why = breaks(imp, *found)
        if why and (imp.module, imp.target) not in exceptions:
            out.append(f"{imp.file.relative_to(root)}:{imp.line}: `{imp.text}` imports {imp.target}: {why}")
    return sorted(set(out))


def import_cycles(root: Path = ROOT) -> list[list[str]]:
    """Every cycle of imports that run on import, as module names in import order (the first repeated last)."""
    known = modules(root)
    graph: dict[str, set[str]] = {name: set() for name in known}
    for imp in _all_imports(root):
        if imp.is_eager and imp.target in known:
            # Importing a.b.c also runs a/__init__ and a/b/__init__, unless the importer lives inside them.
            parts = imp.target.split(".")
            for target in (".".join(parts[:i]) for i in range(2, len(parts) + 1)):
                if target in known and target != imp.module and not _is_under(imp.module, target):
                    graph[imp.module].add(target)
    return [_cycle_in(scc, graph) for scc in _strongly_connected(graph) if len(scc) > 1]


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm (recursive: the graph is a few hundred modules deep at most)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = []
            while (w := stack.pop()) != v:
                on_stack.discard(w)
                scc.append(w)
            on_stack.discard(v)
            out.append(sorted([v, *scc]))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _cycle_in(scc: list[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest path from the SCC's first module back to itself (breadth-first inside the SCC)."""
    start, members = scc[0], set(scc)
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        next_frontier = []
        for v in frontier:
            for w in sorted(graph[v] & members):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return [*reversed(path), start]
                if w not in parent:
                    parent[w] = v
                    next_frontier.append(w)
        frontier = next_frontier
    raise AssertionError(f"no cycle through {start}")  # every SCC of two or more modules has one


def benchmark_violations(root: Path = ROOT) -> list[str]:
    """Imports in benchmarks/ of tests/ or of any module living in tests/, also in code that a benchmark runs as
    a child from a string (`python -c`)."""
    test_modules = {"tests"} | {p.stem for p in (root / "tests").glob("*.py")}
    in_code = re.compile(rf"(?:^|;)\s*(?:from|import)\s+({'|'.join(map(re.escape, sorted(test_modules)))})\b", re.M)
    out = []
    for file in sorted((root / "benchmarks").glob("*.py")):
        for imp in imports(f"benchmarks.{file.stem}", file, set()):
            top = imp.target.split(".")[0]
            if top in test_modules and (file.name, top) not in BENCHMARK_EXCEPTIONS:
                out.append(f"benchmarks/{file.name}:{imp.line}: `{imp.text}` imports {imp.target} from tests/")
        for text in (n.value for n in ast.walk(ast.parse(file.read_text())) if isinstance(n, ast.Constant)
                     and isinstance(n.value, str)):
            for m in in_code.finditer(text):
                if (file.name, m[1]) not in BENCHMARK_EXCEPTIONS:
                    out.append(f"benchmarks/{file.name}: code in a string imports {m[1]} from tests/")
    return out


def _fail_listing(what: str, lines: list[str]) -> None:
    if lines:
        pytest.fail(f"{what}:\n" + "\n".join(lines), pytrace=False)


def test_every_room_has_a_rule():
    _fail_listing("rooms without a rule in RULES", [r for r in rooms() if rule_for(f"{PACKAGE}.{r}") is None])


def test_layers_point_down():
    _fail_listing("imports that break the layer rules", layer_violations())


def test_exceptions_are_still_needed():
    found = {(i.module, i.target) for i in _all_imports(ROOT) if (r := rule_for(i.module)) and breaks(i, *r)}
    _fail_listing("EXCEPTIONS no longer needed (remove them)", [f"{m} -> {t}" for m, t in set(EXCEPTIONS) - found])


def test_no_import_cycles():
    _fail_listing("import cycles", [" -> ".join(c) for c in import_cycles()])


def test_benchmarks_never_import_tests():
    _fail_listing("benchmarks importing tests/", benchmark_violations())
    still = {(Path(i.file).name, i.target.split(".")[0]) for f in (ROOT / "benchmarks").glob("*.py")
             for i in imports(f.stem, f, set())}
    _fail_listing("BENCHMARK_EXCEPTIONS no longer needed (remove them)",
                  [f"{f}: {m}" for f, m in set(BENCHMARK_EXCEPTIONS) - still])


def _tree(tmp: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).write_text(textwrap.dedent(text))
    return tmp


def test_a_bad_import_is_named_with_file_line_and_rule(tmp_path):
    root = _tree(tmp_path, {
        "probes/__init__.py": "", "tui/__init__.py": "", "tui/app.py": "",
        "probes/gpu/__init__.py": "",
        "probes/gpu/sampler.py": """\
            import os
            def run():
                from gpusleuth.tui import app
            import torch
            """,
    })
    assert layer_violations(root, exceptions={}) == [
        "probes/gpu/sampler.py:3: `from gpusleuth.tui import app` imports gpusleuth.tui.app: "
        "rule 'gpusleuth.probes' allows only gpusleuth.probes",
        "probes/gpu/sampler.py:4: `import torch` imports torch: rule 'gpusleuth.probes' allows third-party any but "
        "torch, triton",
    ]


def test_cycles_are_listed_in_order_and_lazy_imports_break_none(tmp_path):
    root = _tree(tmp_path, {
        "probes/__init__.py": "",
        "probes/a.py": "from gpusleuth.probes import b\n",
        "probes/b.py": "from . import c\n",
        "probes/c.py": "import gpusleuth.probes.a\n",
        "probes/d.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from gpusleuth.probes import e\n",
        "probes/e.py": "def f():\n    from gpusleuth.probes import d\nfrom gpusleuth.probes import d\n",
    })
    assert import_cycles(root) == [["gpusleuth.probes.a", "gpusleuth.probes.b", "gpusleuth.probes.c",
                                    "gpusleuth.probes.a"]]


def _readme_layout(root: Path) -> dict[str, set[str]]:
    """Folders in README's Layout tree: top level -> the subfolders listed under it."""
    section = (root / "README.md").read_text().split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    tree: dict[str, set[str]] = {}
    for line in section.split("```")[1].splitlines():
        if m := re.match(r"^( *)(\w+)/\s", line):
            if m[1]:
                tree[top].add(m[2])
            else:
                top = m[2]
                tree[top] = set()
    return tree


def test_readme_layout_agrees_with_the_tree():
    layout = _readme_layout(ROOT)
    assert set(layout) == set(rooms()) | {"tests", "benchmarks"}, "README's Layout lists other top-level folders"
    assert layout["probes"], "README's Layout lists no probes/ subpackage"
    for top, subs in layout.items():
        actual = {p.parent.name for p in (ROOT / top).glob("*/__init__.py")}
        assert not subs or subs == actual, f"README's Layout lists {top}/ {sorted(subs)}; the tree has {sorted(actual)}"
