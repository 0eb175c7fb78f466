"""The `/` filter language shared by the Requests, Syscalls and Events screens.

Whitespace-separated terms, all of which must hold. `field:value` compares one field (`pid:`, `tid:` exactly,
others as a substring, case-insensitive); a bare word is a substring of the whole row. A leading `-` or `!`
negates a term: `-kind:slow_syscall`, `!comm:python`, `-epoll`. A field the row does not have never matches (so
its negation always holds).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

EXACT_FIELDS = frozenset({"pid", "tid", "rank"})
HELP = ("filter: terms all match; field:value (pid: tid: rank: exact, the rest substrings), bare words search "
        "the row; -term or !term negates: -kind:slow_syscall !comm:python")


@dataclass(slots=True, frozen=True)
class Term:
    field: str  # "" for free text
    value: str
    is_negated: bool = False


def parse(query: str) -> list[Term]:
    """The terms of a filter string (lower-cased); a lone `-` or `!` is ignored while the user is still typing."""
    terms = []
    for raw in query.lower().split():
        is_negated = raw[0] in "-!"
        body = raw[1:] if is_negated else raw
        if not body:
            continue
        key, sep, val = body.partition(":")
        terms.append(Term(key, val, is_negated) if sep and key and val else Term("", body, is_negated))
    return terms


def _holds(term: Term, fields: Mapping[str, Any], text: str) -> bool:
    if not term.field:
        return term.value in text
    if term.field not in fields or fields[term.field] is None:
        return False
    got = str(fields[term.field]).lower()
    return got == term.value if term.field in EXACT_FIELDS else term.value in got


def matches(terms: list[Term], fields: Mapping[str, Any], text: str) -> bool:
    """Whether a row with `fields` (field -> value) and searchable `text` passes every term."""
    text = text.lower()
    return all(_holds(t, fields, text) != t.is_negated for t in terms)
