"""The metric names a PromQL expression selects, from its syntax tree (promql-parser, the Rust parser of
GreptimeDB), so an unknown name is caught before a query runs."""
from __future__ import annotations

from typing import Any

import promql_parser

_CHILDREN = ("lhs", "rhs", "expr", "args", "vector_selector", "param")


def metric_names(expr: str) -> set[str]:
    """Names selected by `expr` (by name or by an `__name__="..."` matcher); ValueError if it does not parse."""
    return set(_walk(promql_parser.parse(expr)))


def _walk(node: Any) -> list[str]:
    if isinstance(node, promql_parser.VectorSelector):
        if node.name:
            return [node.name]
        return [m.value for m in node.matchers.matchers if m.name == "__name__" and m.op == promql_parser.MatchOp.Equal]
    out: list[str] = []
    for attr in _CHILDREN:
        child = getattr(node, attr, None)
        for c in child if isinstance(child, list) else ([child] if child is not None else []):
            out += _walk(c)
    return out
