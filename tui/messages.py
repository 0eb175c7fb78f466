"""Messages the app posts to its screens (data arrives on the main thread, widgets update there)."""
from __future__ import annotations

from typing import Any

from textual.message import Message

from gpusleuth.tui.source import Frame


class FrameReady(Message):
    """A refresh finished: the screen shows `frame` (frame.error set: the source failed, data is the last good)."""

    def __init__(self, frame: Frame) -> None:
        super().__init__()
        self.frame = frame


class DetailReady(Message):
    """A request's detail (explain) arrived; `error` says why there is none."""

    def __init__(self, request_id: str, detail: dict[str, Any] | None, error: str = "") -> None:
        super().__init__()
        self.request_id = request_id
        self.detail = detail
        self.error = error
