"""The runbook runner `agent tui` hands the TUI: `c` on an incident or a verdict runs that runbook's checks against
the same agent (or recording) the screens show, as `agent runbook NAME` would, and returns plain data."""
from __future__ import annotations

from typing import Any

from gpusleuth.agent.cli.runbook import LiveSources, RecordingSources, vocabulary
from gpusleuth.runbooks.book import Runbook, load_all
from gpusleuth.runbooks.checks import Prometheus, run


class _ReplaySources(RecordingSources):
    """RecordingSources over a Replay already open (the TUI's), so the recording is not read twice."""

    def __init__(self, replay: Any, prometheus: str | None) -> None:  # noqa: D107 - no super(): it opens its own
        self.replay = replay
        self.prom = Prometheus(prometheus) if prometheus else None


class RunbookRunner:
    """Loads (and validates) the runbooks once, on first use; each run asks its sources afresh."""

    def __init__(self, sources: LiveSources) -> None:
        self.sources = sources
        self._books: dict[str, Runbook] | None = None

    @classmethod
    def live(cls, socket_path: str, prometheus: str | None = None) -> "RunbookRunner":
        return cls(LiveSources(socket_path, prometheus))

    @classmethod
    def recording(cls, replay: Any, prometheus: str | None = None) -> "RunbookRunner":
        return cls(_ReplaySources(replay, prometheus))

    def run(self, name: str) -> dict[str, Any]:
        if self._books is None:
            self._books = {b.id: b for b in load_all(vocabulary())}
        book = self._books.get(name)
        if book is None:
            raise LookupError(f"no runbook {name!r}; `agent runbook --list` shows them")
        results = run(book, self.sources)
        return {"runbook": book.id, "title": book.title, "path": str(book.path),
                "checks": [r.to_dict() for r in results]}
