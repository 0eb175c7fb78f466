"""Panel: a titled block of text that says plainly why it is empty when its probe gave no data."""
from __future__ import annotations

from rich.text import Text
from textual.widgets import Static


class Panel(Static):
    """Text under a one-line title rule. `show(text)` for data, `show_missing(reason)` for "no data: <reason>"."""

    DEFAULT_CSS = """
    Panel {
        height: auto;
        border-top: solid $primary;
        border-title-color: $text;
        border-title-style: bold;
        padding: 0 1;
    }
    Panel.-missing {
        color: $text-muted;
    }
    """

    def __init__(self, title: str, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__("", id=id, classes=classes)
        self.border_title = title
        self._shown: Text | None = None

    def show(self, text: Text) -> None:
        """Display data; skips the repaint when nothing changed (most refreshes at 2 Hz change little)."""
        self.set_class(False, "-missing")
        if self._shown is None or text != self._shown:
            self._shown = text
            self.update(text)

    def show_missing(self, reason: str) -> None:
        self.set_class(True, "-missing")
        self.show_plain(f"no data: {reason}")

    def show_plain(self, message: str) -> None:
        text = Text(message)
        if self._shown is None or text != self._shown:
            self._shown = text
            self.update(text)

    @property
    def shown_text(self) -> str:
        """What the panel shows now, as plain text (tests and the tmux check read it)."""
        return self._shown.plain if self._shown is not None else ""
