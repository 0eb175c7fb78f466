"""FilterBar: the `/` filter input; tells its screen about every change with a FilterBar.Updated message."""
from __future__ import annotations

from textual.binding import Binding
from textual.message import Message
from textual.widgets import Input


class FilterBar(Input):
    DEFAULT_CSS = """
    FilterBar {
        padding: 0 1;
        background: $boost;
    }
    FilterBar.-hidden {
        display: none;
    }
    """
    BINDINGS = [Binding("escape", "clear_and_close", "Clear filter", show=False)]

    class Updated(Message):
        """The filter text changed (empty string: no filter)."""

        def __init__(self, bar: "FilterBar", value: str) -> None:
            super().__init__()
            self.bar = bar
            self.value = value

    def __init__(self, placeholder: str = "filter…", *, is_sticky: bool = False, id: str | None = None) -> None:
        super().__init__(placeholder=placeholder, id=id, classes="" if is_sticky else "-hidden", compact=True)
        self.is_sticky = is_sticky  # a sticky bar stays visible when cleared (the Events screen's)
        self.can_focus = is_sticky  # a hidden bar must not take keys meant for the table

    def open(self) -> None:
        self.remove_class("-hidden")
        self.can_focus = True
        self.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self.post_message(self.Updated(self, event.value))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.screen.focus_next()  # keep the filter, give the keys back to the table

    def action_clear_and_close(self) -> None:
        self.value = ""
        if not self.is_sticky:
            self.add_class("-hidden")
            self.can_focus = False
        self.screen.focus_next()
