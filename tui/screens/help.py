"""Help: the keys that work right now on the screen underneath, read from Textual's active bindings of that screen
(app, screen, focused widget; a priority binding hides what it overrides), so it cannot drift from what the keys
do; then the filter language and the idle-wait rule where the screen has them."""
from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Static

from gpusleuth.tui import idle, query

ABOUT = ("gpusleuth answers: why was this request slow? Overview shows open incidents first; Requests lists the "
         "slow requests (e: by e2e) with the selected one's budget and top verdict; enter opens its full report.")


def _section(screen: Screen, node: object, binding: Binding) -> str:
    if node is screen.app:
        return "Everywhere"
    if node is screen:
        own = type(screen).__dict__.get("BINDINGS", [])
        return f"On {getattr(screen, 'LABEL', 'this screen')}" if binding in own else "Everywhere"
    return {"RowTable": "In a table", "FilterBar": "In the filter"}.get(type(node).__name__, type(node).__name__)


def help_rows(screen: Screen) -> dict[str, list[tuple[str, str]]]:
    """Section -> [(keys, what they do)] of the bindings active on `screen` now (keys of one action joined)."""
    found: dict[tuple[str, str, str], list[str]] = {}
    for key, active in screen.active_bindings.items():
        b = active.binding
        if not b.description:
            continue
        section = _section(screen, active.node, b)
        found.setdefault((section, b.action, b.description), []).append(screen.app.get_key_display(
            Binding(key, b.action, b.description)))
    out: dict[str, list[tuple[str, str]]] = {}
    screens = [(keys, desc) for (section, action, desc), keys in found.items() if action.startswith("show_screen")]
    if screens:
        out["Everywhere"] = [(f"{screens[0][0][0]}-{screens[-1][0][0]}", ", ".join(d for _, d in screens))]
    for (section, action, desc), keys in found.items():
        if not action.startswith("show_screen"):
            out.setdefault(section, []).append((", ".join(keys), desc))
    return out


def help_text(screen: Screen) -> Text:
    text = Text(ABOUT + "\n\n", style="italic")
    sections = help_rows(screen)
    width = max((len(k) for rows in sections.values() for k, _ in rows), default=8) + 2
    for title in sorted(sections, key=lambda t: (t != "Everywhere", not t.startswith("On "), t)):
        text.append(f"{title}\n", style="bold underline")
        for keys, desc in sections[title]:
            text.append(f"  {keys:<{width}}", style="bold cyan")
            text.append(f"{desc}\n")
        text.append("\n")
    if getattr(screen, "HAS_FILTER", False):
        text.append("Filter (/)\n", style="bold underline")
        text.append(f"  {query.HELP}; fields here: {getattr(screen, 'FILTER_FIELDS', 'any column')}\n\n")
    if getattr(screen, "HAS_IDLE_TOGGLE", False):
        text.append("Idle waits (i)\n", style="bold underline")
        text.append(f"  {idle.HELP}\n\n")
    text.append("Tables: the cursor follows the top row until you move it; then it holds its row through "
                "refreshes and re-sorts (home: follow the top again).\n", style="dim")
    return text


class HelpScreen(ModalScreen):
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll {
        width: 90; max-width: 100%; height: auto; max-height: 100%;
        border: round $primary; background: $surface; padding: 0 1;
    }
    """
    BINDINGS = [Binding("escape,question_mark,q", "close", "Close help", show=False)]

    def __init__(self, screen: Screen) -> None:
        super().__init__()
        self._text = help_text(screen)

    def compose(self) -> ComposeResult:
        with VerticalScroll() as box:
            box.border_title = "Help (esc closes)"
            yield Static(self._text, id="help-text")

    def on_mount(self) -> None:
        self.query_one(VerticalScroll).focus()

    def action_close(self) -> None:
        self.dismiss()
