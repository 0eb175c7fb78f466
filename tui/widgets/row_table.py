"""RowTable: a read-only table that is handed all its rows every refresh and draws only the visible ones.

Textual's DataTable measures every cell it is given and pays O(rows) per removed row; at 2 Hz with hundreds of
changing rows (events, syscalls, requests) that alone costs more CPU than the whole TUI may use. Here column
widths come from string lengths, rows are formatted when drawn (Line API).

The cursor is always drawn (focused or not) and has two modes: *following* the top row (at start, and after
`home`), where it shows whatever the list puts first (the newest, the slowest), and *holding* a row once the user
moves it, where it stays on that row's key through refreshes and re-sorts (scrolling to keep it in view).
"""
from __future__ import annotations

from typing import Sequence

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.binding import Binding
from textual.events import Click
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

Cell = str | Text
GAP = 2  # spaces between columns


def cell_plain(cell: Cell) -> str:
    return cell.plain if isinstance(cell, Text) else str(cell)


class RowTable(ScrollView, can_focus=True):
    DEFAULT_CSS = """
    RowTable { height: 1fr; overflow-x: auto; overflow-y: auto; scrollbar-size-vertical: 1; padding: 0 0 0 1; }
    RowTable > .row-table--header { text-style: bold; color: $text-accent; }
    RowTable > .row-table--zebra { background: $boost; }
    RowTable > .row-table--cursor { background: $surface-lighten-3; text-style: bold; }
    RowTable:focus > .row-table--cursor { background: $block-cursor-background; color: $block-cursor-foreground; }
    """
    COMPONENT_CLASSES = {"row-table--header", "row-table--zebra", "row-table--cursor"}
    BINDINGS = [
        Binding("up", "move(-1)", "Up", show=False), Binding("down", "move(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False), Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "edge(0)", "Top (follow it)", show=False), Binding("end", "edge(1)", "Last", show=False),
        Binding("enter", "select", "Open / select", show=False),
    ]

    class Highlighted(Message):
        """The cursor is on a different row (key): moved by the user, or (`is_user` False) a following cursor
        whose top row changed with new data."""

        def __init__(self, table: "RowTable", key: str, is_user: bool = True) -> None:
            super().__init__()
            self.table, self.key, self.is_user = table, key, is_user

    class Selected(Message):
        """Enter or a click on a row."""

        def __init__(self, table: "RowTable", key: str) -> None:
            super().__init__()
            self.table, self.key = table, key

    def __init__(self, *columns: str, id: str | None = None, zebra_stripes: bool = True) -> None:
        super().__init__(id=id)
        self.columns = columns
        self.zebra_stripes = zebra_stripes
        self.keys: list[str] = []
        self.cells: list[tuple] = []
        self.cursor_row = 0
        self._widths = [len(c) for c in columns]
        self._highlighted: str | None = None
        self.is_holding = False  # the user moved the cursor: it stays on its row's key (see the module doc)
        # row key -> (cells, flags, strip): rows that only moved up or down are not formatted again
        self._strips: dict[str, tuple[tuple, tuple, Strip]] = {}

    # --- data ---------------------------------------------------------------------------------------------------
    @property
    def row_count(self) -> int:
        return len(self.keys)

    @property
    def cursor_key(self) -> str | None:
        return self.keys[self.cursor_row] if self.keys else None

    def plain_rows(self) -> list[list[str]]:
        """Every row as plain strings (tests and captures read these)."""
        return [[cell_plain(c) for c in row] for row in self.cells]

    def show_rows(self, rows: Sequence[tuple[str, tuple]]) -> None:
        """Display `rows` ([(key, cells)] in order). A holding cursor stays on its key while that row is there
        (else on the row now at its place); a following one stays on the first row, and posts Highlighted
        (is_user False) when that row's key changes."""
        keys = [k for k, _ in rows]
        cells = [c for _, c in rows]
        if keys == self.keys and cells == self.cells:
            return
        keep = self.cursor_key
        self.keys, self.cells = keys, cells
        widths = [max([len(h)] + [len(cell_plain(r[i])) for r in cells if i < len(r)])
                  for i, h in enumerate(self.columns)]
        if widths != self._widths:
            self._widths = widths
            self._strips.clear()
        elif len(self._strips) > 2 * len(keys) + 100:
            live = set(keys)
            self._strips = {k: v for k, v in self._strips.items() if k in live}
        self.virtual_size = Size(sum(self._widths) + GAP * len(self._widths), len(keys) + 1)
        if not self.is_holding:
            self.cursor_row = 0
        elif keep in keys:
            self.cursor_row = keys.index(keep)
            self.call_after_refresh(self._scroll_to_cursor)  # once the new virtual size allows the scroll
        else:
            self.cursor_row = min(self.cursor_row, max(0, len(keys) - 1))
        if self.cursor_key is not None and self.cursor_key != self._highlighted:
            self._highlighted = self.cursor_key
            self.post_message(self.Highlighted(self, self.cursor_key, is_user=False))
        self.refresh()

    def move_cursor(self, row: int, is_holding: bool = True) -> None:
        """Put the cursor on `row`; it holds that row's key from now on unless `is_holding` is False."""
        if self.keys:
            self.is_holding = is_holding
            self.cursor_row = max(0, min(len(self.keys) - 1, row))
            self._scroll_to_cursor()
            self._announce()
            self.refresh()

    def _announce(self) -> None:
        key = self.cursor_key
        if key is not None and key != self._highlighted:
            self._highlighted = key
            self.post_message(self.Highlighted(self, key))

    def _scroll_to_cursor(self) -> None:
        visible = max(1, self.size.height - 1)  # less the header line
        top = self.scroll_offset.y
        if self.cursor_row < top:
            self.scroll_to(y=self.cursor_row, animate=False)
        elif self.cursor_row >= top + visible:
            self.scroll_to(y=self.cursor_row - visible + 1, animate=False)

    # --- keys and mouse -----------------------------------------------------------------------------------------
    def action_move(self, step: int) -> None:
        self.move_cursor(self.cursor_row + step)

    def action_page(self, step: int) -> None:
        self.move_cursor(self.cursor_row + step * max(1, self.size.height - 2))

    def action_edge(self, to_end: int) -> None:
        self.move_cursor(len(self.keys) - 1 if to_end else 0, is_holding=bool(to_end))  # home: follow the top

    def action_select(self) -> None:
        if self.cursor_key is not None:
            self.post_message(self.Selected(self, self.cursor_key))

    def on_click(self, event: Click) -> None:
        row = self.scroll_offset.y + event.y - 1
        if event.y >= 1 and 0 <= row < len(self.keys):
            self.move_cursor(row)
            self.action_select()

    # --- drawing ------------------------------------------------------------------------------------------------
    def _line(self, cells: Sequence[Cell], style: Style) -> Text:
        text = Text(style=style, no_wrap=True, end="")
        for i, width in enumerate(self._widths):
            cell = cells[i] if i < len(cells) else ""
            part = cell.copy() if isinstance(cell, Text) else Text(str(cell))
            part.truncate(width, pad=True)
            text.append_text(part)
            text.append(" " * GAP)
        return text

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.size.width
        base = self.rich_style
        if y == 0:
            strip = self._strip(self._line(self.columns, base + self.get_component_rich_style("row-table--header")))
            return strip.crop_extend(scroll_x, scroll_x + width, base)
        row = scroll_y + y - 1
        if row >= len(self.cells):
            return Strip.blank(width, base)
        cells, key = self.cells[row], self.keys[row]
        flags = (self.zebra_stripes and row % 2 == 1, row == self.cursor_row, self.has_focus, base)
        cached = self._strips.get(key)
        if cached is not None and cached[1] == flags and cached[0] == cells:
            strip = cached[2]
        else:
            style = base
            if flags[0]:
                style += self.get_component_rich_style("row-table--zebra")
            if flags[1]:
                style += self.get_component_rich_style("row-table--cursor")
            strip = self._strip(self._line(cells, style))
            self._strips[key] = (cells, flags, strip)
        return strip.crop_extend(scroll_x, scroll_x + width, base)

    def _strip(self, text: Text) -> Strip:
        return Strip([Segment(s.text, s.style) for s in text.render(self.app.console)])
