"""What the agent and its clients agree on: one JSON object per line each way, and the error answers.

Request:  {"method": "status", "params": {...}}
Response: {"ok": true, "result": ...}  or  {"ok": false, "error": {"code": "...", "message": "..."}}
"""
from __future__ import annotations

MAX_LINE = 64 << 20


class ControlError(Exception):
    """An error answer from the agent, or a failure to reach it."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class AgentNotRunning(ControlError):
    pass


class ControlPermissionDenied(ControlError):
    pass
