"""The result of a runbook's checks, run from the TUI (`c` on an incident or a request): one modal, filled in by a
worker thread (checks ask the agent or the recording, and Prometheus when `agent tui --prometheus` was given)."""
from __future__ import annotations

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static
from textual.worker import get_current_worker

from gpusleuth.tui.runbooks import RunbookRunner, report_text, runbook_name


class RunbookScreen(ModalScreen):
    DEFAULT_CSS = """
    RunbookScreen { align: center middle; }
    RunbookScreen > VerticalScroll {
        width: 100; max-width: 100%; height: auto; max-height: 100%;
        border: round $primary; background: $surface; padding: 0 1;
    }
    """
    BINDINGS = [Binding("escape,q,c", "close", "Close", show=False)]

    def __init__(self, runbook: str, why: str, runner: RunbookRunner | None) -> None:
        super().__init__()
        self.name_ = runbook_name(runbook)
        self.why = why
        self.runner = runner
        self.result: dict | None = None

    def compose(self) -> ComposeResult:
        with VerticalScroll() as box:
            box.border_title = f"Runbook checks: {self.name_} ({self.why}) · esc closes"
            yield Static(f"running the checks of {self.name_} …", id="runbook-text")

    def on_mount(self) -> None:
        self.query_one(VerticalScroll).focus()
        if self.runner is None:
            self._show_error("no runbook runner here (`agent tui` provides one); run `agent runbook "
                             f"{self.name_}` in a shell")
        elif not self.name_:
            self._show_error("no runbook named")
        else:
            self._run()

    @work(thread=True, exclusive=True, group="runbook")
    def _run(self) -> None:
        try:
            result, error = self.runner.run(self.name_), ""
        except (LookupError, OSError, RuntimeError, ValueError) as exc:
            result, error = None, f"{type(exc).__name__}: {exc}"
        if not get_current_worker().is_cancelled:
            self.app.call_from_thread(self._show, result, error)

    def _show(self, result: dict | None, error: str) -> None:
        if result is None:
            self._show_error(error)
            return
        self.result = result
        self.query_one("#runbook-text", Static).update(report_text(result))

    def _show_error(self, message: str) -> None:
        self.query_one("#runbook-text", Static).update(f"cannot run the checks: {message}")

    def action_close(self) -> None:
        self.dismiss()
