"""RowTable and the Requests screen under churn: the cursor follows its row, data updates never fetch details."""
from __future__ import annotations

import copy

import pytest
from textual.app import App

from gpusleuth.tui.app import SleuthApp
from gpusleuth.tui.source import FixedSource
from gpusleuth.tui.widgets.row_table import RowTable
from tests.tui_helpers import T0, fixed_frame, until

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def anyio_backend():
    return "asyncio"


class TableApp(App):
    def __init__(self) -> None:
        super().__init__()
        self.highlighted: list[str] = []
        self.selected: list[str] = []

    def compose(self):
        yield RowTable("key", "value", id="t")

    def on_row_table_highlighted(self, event: RowTable.Highlighted) -> None:
        self.highlighted.append(event.key)

    def on_row_table_selected(self, event: RowTable.Selected) -> None:
        self.selected.append(event.key)


def _rows(keys):
    return [(k, (k, f"value of {k}")) for k in keys]


async def test_cursor_keeps_its_row_and_only_user_moves_announce():
    app = TableApp()
    async with app.run_test(size=(40, 10)) as pilot:
        table = app.query_one(RowTable)
        table.show_rows(_rows(["a", "b", "c"]))
        await pilot.press("down")  # the user picks "b"
        await pilot.pause()
        assert table.cursor_key == "b" and app.highlighted == ["b"]
        table.show_rows(_rows(["new1", "new2", "a", "b", "c"]))  # newer rows arrive on top
        await pilot.pause()
        assert table.cursor_key == "b" and table.cursor_row == 3
        table.show_rows(_rows(["x", "y"]))  # "b" left: the cursor stays in range
        await pilot.pause()
        assert table.cursor_row == 1 and app.highlighted == ["b"]  # data changes announced nothing
        await pilot.press("enter")
        await pilot.pause()
        assert app.selected == ["y"]
        assert table.plain_rows() == [["x", "value of x"], ["y", "value of y"]]


async def test_paging_keys():
    app = TableApp()
    async with app.run_test(size=(40, 10)) as pilot:
        table = app.query_one(RowTable)
        table.show_rows(_rows([f"k{i:02d}" for i in range(50)]))
        await pilot.pause()
        await pilot.press("end")
        assert table.cursor_key == "k49" and table.scroll_offset.y > 0  # scrolled to keep the cursor visible
        await pilot.press("home", "pagedown")
        assert table.cursor_row == table.size.height - 2  # one page less the header line
        await pilot.press("pageup")
        assert table.cursor_row == 0


async def test_cursor_on_the_first_row_follows_the_newest():
    app = TableApp()
    async with app.run_test(size=(40, 10)) as pilot:
        table = app.query_one(RowTable)
        table.show_rows(_rows(["a", "b"]))
        table.show_rows(_rows(["c", "a", "b"]))
        await pilot.pause()
        assert table.cursor_key == "c"


class ChurningSource(FixedSource):
    """Ten new requests each refresh, as a busy engine gives; counts detail fetches."""

    def __init__(self) -> None:
        super().__init__(fixed_frame())
        self.detail_calls = 0

    def fetch(self, want):
        frame = copy.copy(self.frame)
        n = self.fetches = self.fetches + 1
        frame.requests = [{"request_id": f"r{n * 10 + i}", "pid": 1, "start_ns": T0 + (n * 10 + i) * 1000,
                           "end_ns": T0 + (n * 10 + i) * 1000 + 10, "ttft_s": 0.1} for i in range(50)]
        return frame

    def request_detail(self, request):
        self.detail_calls += 1
        return super().request_detail(request)


async def test_requests_screen_fetches_details_only_when_asked():
    source = ChurningSource()
    app = SleuthApp(source, start_screen="requests", refresh_s=0.1)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: source.fetches >= 15, what="a dozen refreshes")
        assert source.detail_calls == 1  # the first row's, once
        await pilot.press("down", "down")
        await until(pilot, lambda: source.detail_calls == 2, what="the detail of the row moved to")
