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


async def test_held_cursor_keeps_its_row_through_new_rows_and_resorts():
    app = TableApp()
    async with app.run_test(size=(40, 10)) as pilot:
        table = app.query_one(RowTable)
        table.show_rows(_rows(["a", "b", "c"]))
        await pilot.press("down")  # the user picks "b": the cursor holds it from now on
        await pilot.pause()
        assert table.cursor_key == "b" and table.is_holding and app.highlighted == ["a", "b"]
        table.show_rows(_rows(["new1", "new2", "a", "b", "c"]))  # newer rows arrive on top
        await pilot.pause()
        assert table.cursor_key == "b" and table.cursor_row == 3
        table.show_rows(_rows(["c", "b", "a", "new2", "new1"]))  # a re-sort
        await pilot.pause()
        assert table.cursor_key == "b" and table.cursor_row == 1 and app.highlighted == ["a", "b"]
        table.show_rows(_rows(["x", "y"]))  # "b" left: the cursor stays in range, on the row now there
        await pilot.pause()
        assert table.cursor_key == "y" and app.highlighted == ["a", "b", "y"]
        await pilot.press("enter")
        await pilot.pause()
        assert app.selected == ["y"]
        assert table.plain_rows() == [["x", "value of x"], ["y", "value of y"]]


async def test_held_row_scrolls_into_view_when_it_moves_down():
    app = TableApp()
    async with app.run_test(size=(40, 10)) as pilot:
        table = app.query_one(RowTable)
        table.show_rows(_rows(["a", "b"]))
        await pilot.press("down")
        table.show_rows(_rows([f"n{i}" for i in range(30)] + ["a", "b"]))  # 30 newer rows push "b" far down
        await pilot.pause()
        assert table.cursor_key == "b" and table.scroll_offset.y > 0
        top = table.scroll_offset.y
        assert top <= table.cursor_row < top + table.size.height - 1  # visible under the header


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


async def test_following_cursor_shows_the_new_top_and_home_follows_again():
    app = TableApp()
    async with app.run_test(size=(40, 10)) as pilot:
        table = app.query_one(RowTable)
        table.show_rows(_rows(["a", "b"]))
        table.show_rows(_rows(["c", "a", "b"]))
        await pilot.pause()
        assert table.cursor_key == "c" and not table.is_holding and app.highlighted == ["a", "c"]
        await pilot.press("down", "home")
        table.show_rows(_rows(["d", "c", "a", "b"]))
        await pilot.pause()
        assert table.cursor_key == "d" and not table.is_holding


class ChurningSource(FixedSource):
    """Ten new requests each refresh, as a busy engine gives, the oldest leaving; counts detail fetches."""

    def __init__(self) -> None:
        super().__init__(fixed_frame())
        self.detail_calls = 0

    def fetch(self, want):
        frame = copy.copy(self.frame)
        n = self.fetches = self.fetches + 1
        frame.requests = [{"request_id": f"r{k}", "pid": 1, "start_ns": T0 + k * 1000, "end_ns": T0 + k * 1000 + 10,
                           "ttft_s": 0.1} for k in range(max(0, n * 10 - 300), n * 10 + 10)]  # the newest 310
        return frame

    def request_detail(self, request):
        self.detail_calls += 1
        return super().request_detail(request)


async def test_requests_detail_follows_the_cursor_at_most_once_a_second_while_the_top_churns():
    source = ChurningSource()
    app = SleuthApp(source, start_screen="requests", refresh_s=0.1)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: source.fetches >= 5, what="refreshes")
        first = source.fetches
        calls = source.detail_calls
        await until(pilot, lambda: source.fetches >= first + 20, what="two seconds of churn")
        # the following cursor's top changed every refresh (20 times); its detail is asked at most once a second
        assert 1 <= source.detail_calls - calls <= 4, source.detail_calls - calls
        await pilot.press("down")  # hold a request: data changes no longer move the detail
        await until(pilot, lambda: app.screen.query_one("#req-table").is_holding, what="a held cursor")
        await pilot.pause(0.5)
        held = source.detail_calls
        at = source.fetches
        await until(pilot, lambda: source.fetches >= at + 10, what="more churn")
        assert source.detail_calls == held
