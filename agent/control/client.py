"""The client side of the control socket: what `agent status`, the TUI and scripts use to talk to the agent."""
from __future__ import annotations

import errno
import json
import socket
import os
from typing import Any

from gpusleuth.agent import config as config_mod
from gpusleuth.agent.control.protocol import MAX_LINE, AgentNotRunning, ControlError, ControlPermissionDenied

__all__ = ["AgentNotRunning", "ControlClient", "ControlError", "ControlPermissionDenied", "DEFAULT_CONFIG_PATH",
           "socket_path"]
DEFAULT_CONFIG_PATH = config_mod.DEFAULT_PATH


def socket_path(config_path: str | None) -> str:
    """The control socket the agent configured at `config_path` (default DEFAULT_CONFIG_PATH, which may be absent).

    Raises PermissionError naming the file if it cannot be read, ConfigError if it is not a valid config."""
    path = config_path or str(DEFAULT_CONFIG_PATH)
    if os.path.exists(path) and not os.access(path, os.R_OK):
        raise PermissionError(path)
    return config_mod.load(config_path, is_required=config_path is not None).control.socket


class ControlClient:
    """Calls the agent: `ControlClient(path).call("status")`. Raises AgentNotRunning / ControlPermissionDenied."""

    def __init__(self, path: str, timeout: float = 10.0) -> None:
        self.path = path
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._file = None

    def _connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except FileNotFoundError:
            sock.close()
            raise AgentNotRunning("not_running", f"no agent is running (no control socket at {self.path})") from None
        except ConnectionRefusedError:
            sock.close()
            raise AgentNotRunning("not_running", f"no agent is listening on {self.path} (stale socket)") from None
        except PermissionError:
            sock.close()
            raise ControlPermissionDenied(
                "permission_denied", f"permission denied on {self.path}: run as root (sudo) or ask for "
                "membership of the group set in control.group") from None
        self._sock, self._file = sock, sock.makefile("rwb")

    def call(self, method: str, **params: Any) -> Any:
        if self._sock is None:
            self._connect()
        try:
            self._file.write(json.dumps({"method": method, "params": params}).encode() + b"\n")
            self._file.flush()
            line = self._file.readline(MAX_LINE)
        except OSError as exc:
            if exc.errno in (errno.EPIPE, errno.ECONNRESET):
                line = self._pending_reply()  # the agent may have answered (a refusal) before closing
                if not line:
                    self.close()
                    raise AgentNotRunning("not_running", "the agent closed the connection") from None
            else:
                self.close()
                raise
        if not line:
            self.close()
            raise AgentNotRunning("not_running", "the agent closed the connection")
        reply = json.loads(line)
        if reply.get("ok"):
            return reply.get("result")
        err = reply.get("error") or {}
        cls = ControlPermissionDenied if err.get("code") == "permission_denied" else ControlError
        raise cls(err.get("code", "error"), err.get("message", "unknown error"))

    def _pending_reply(self) -> bytes:
        try:
            return self._file.readline(MAX_LINE)
        except OSError:
            return b""

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock, self._file = None, None

    def __enter__(self) -> "ControlClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
