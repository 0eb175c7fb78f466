"""Help: every key of the app and of the screen underneath, read from their bindings (so it cannot drift)."""
from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Static

KEY_NAMES = {"question_mark": "?", "slash": "/", "left_square_bracket": "[", "right_square_bracket": "]",
             "left_curly_bracket": "{", "right_curly_bracket": "}", "less_than_sign": "<",
             "greater_than_sign": ">", "shift+tab": "shift+tab"}
ABOUT = ("gpusleuth answers: why was this request slow? Start on Overview, find the slow requests on Requests, "
         "select one to see what overlapped its phases, then drill into GPU, Network, Syscalls or Events.")


def _rows(bindings: list[Binding]) -> list[tuple[str, str]]:
    out = []
    screens = [b for b in bindings if b.action.startswith("show_screen")]
    if screens:
        out.append((f"{screens[0].key}-{screens[-1].key}", ", ".join(b.description for b in screens)))
    for b in bindings:
        if not b.description or b in screens:
            continue
        keys = ", ".join(KEY_NAMES.get(k, k) for k in b.key.split(","))
        out.append((keys, b.description))
    return out


def help_text(app_bindings: list[Binding], screen: Screen) -> Text:
    text = Text(ABOUT + "\n\n", style="italic")
    sections = [("Everywhere", _rows(app_bindings)),
                (f"On {getattr(screen, 'LABEL', 'this screen')}", _rows(list(getattr(screen, "BINDINGS", []))))]
    for title, rows in sections:
        if not rows:
            continue
        text.append(f"{title}\n", style="bold underline")
        for keys, desc in rows:
            text.append(f"  {keys:<14}", style="bold cyan")
            text.append(f"{desc}\n")
        text.append("\n")
    text.append("Tables: ↑/↓ pgup/pgdn home/end move, enter or a click selects.\n", style="dim")
    return text


class HelpScreen(ModalScreen):
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll {
        width: 76; max-width: 100%; height: auto; max-height: 90%;
        border: round $primary; background: $surface; padding: 0 1;
    }
    """
    BINDINGS = [Binding("escape,question_mark,q", "close", "Close help", show=False)]

    def __init__(self, app_bindings: list[Binding], screen: Screen) -> None:
        super().__init__()
        self._text = help_text(app_bindings, screen)

    def compose(self) -> ComposeResult:
        with VerticalScroll() as box:
            box.border_title = "Help (esc closes)"
            yield Static(self._text, id="help-text")

    def action_close(self) -> None:
        self.dismiss()
