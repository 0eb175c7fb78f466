"""The server side of the control socket: a Unix stream socket speaking newline-delimited JSON (protocol.py).

The socket is mode 0600 (0660 with `control.group`); peers are also checked with SO_PEERCRED, so a client that
can reach the file but is not root, the agent's user or a member of the group is refused.
"""
from __future__ import annotations

import grp
import inspect
import json
import logging
import os
import pwd
import socket
import socketserver
import struct
import threading
from pathlib import Path
from typing import Any, Callable

from gpusleuth.agent.control.protocol import MAX_LINE, ControlError

log = logging.getLogger(__name__)


def _peer_creds(sock: socket.socket) -> tuple[int, int, int]:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)  # pid, uid, gid


def _group_gid(group: str) -> int | None:
    if not group:
        return None
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        return None


def is_peer_allowed(uid: int, gid: int, group: str) -> bool:
    """Root, the agent's own user, or a member of `group` (primary or supplementary)."""
    if uid == 0 or uid == os.geteuid():
        return True
    gid_allowed = _group_gid(group)
    if gid_allowed is None:
        return False
    if gid == gid_allowed:
        return True
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        return False
    return user in grp.getgrgid(gid_allowed).gr_mem


class _Handler(socketserver.StreamRequestHandler):
    server: "_Server"

    def handle(self) -> None:
        _, uid, gid = _peer_creds(self.connection)
        if not is_peer_allowed(uid, gid, self.server.group):
            # Read the request first, so the refusal is the answer to it rather than a reset the client may see
            # before it reads anything.
            self.connection.settimeout(2.0)
            try:
                self.rfile.readline(MAX_LINE)
            except OSError:
                pass
            self._send({"ok": False, "error": {"code": "permission_denied",
                                               "message": f"uid {uid} may not use the agent's control socket; "
                                               "run as root or join the group in control.group"}})
            return
        while True:
            line = self.rfile.readline(MAX_LINE)
            if not line:
                return
            self._send(self.server.dispatch(line))

    def _send(self, message: dict) -> None:
        try:
            self.wfile.write(json.dumps(message, default=str).encode() + b"\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, path: str, group: str, methods: dict[str, Callable[..., Any]]) -> None:
        self.group = group
        self.methods = methods
        super().__init__(path, _Handler)

    def dispatch(self, line: bytes) -> dict:
        try:
            req = json.loads(line)
            method, params = req["method"], req.get("params") or {}
            if not isinstance(params, dict):
                raise TypeError("params must be an object")
        except (ValueError, KeyError, TypeError) as exc:
            return {"ok": False, "error": {"code": "bad_request", "message": f"malformed request: {exc}"}}
        fn = self.methods.get(method)
        if fn is None:
            return {"ok": False, "error": {"code": "unknown_method",
                                           "message": f"unknown method {method!r}; known: {sorted(self.methods)}"}}
        try:
            inspect.signature(fn).bind(**params)
        except TypeError as exc:  # wrong or missing parameter names; a TypeError inside the method is a bug
            return {"ok": False, "error": {"code": "bad_params", "message": f"{method}: {exc}"}}
        try:
            return {"ok": True, "result": fn(**params)}
        except ControlError as exc:
            return {"ok": False, "error": {"code": exc.code, "message": str(exc)}}
        except Exception as exc:  # keep serving; the agent's log has the traceback
            log.exception("control method %s failed", method)
            return {"ok": False, "error": {"code": "internal", "message": f"{type(exc).__name__}: {exc}"}}


class ControlServer:
    """Serves registered methods on a Unix socket in a background thread."""

    def __init__(self, path: str, group: str = "") -> None:
        self.path = path
        self.group = group
        self.methods: dict[str, Callable[..., Any]] = {"ping": lambda: "pong"}
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def register(self, name: str, fn: Callable[..., Any]) -> None:
        self.methods[name] = fn

    def start(self) -> None:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            os.unlink(self.path)  # a stale socket from a crashed agent; the pid-file lock says none runs
        except FileNotFoundError:
            pass
        old_umask = os.umask(0o177)  # created 0600: no window where others could connect
        try:
            self._server = _Server(self.path, self.group, self.methods)
        finally:
            os.umask(old_umask)
        gid = _group_gid(self.group)
        if self.group and gid is None:
            log.warning("control.group %r does not exist; the socket stays root-only", self.group)
        elif gid is not None:
            os.chown(self.path, -1, gid)
            os.chmod(self.path, 0o660)
        self._thread = threading.Thread(target=self._server.serve_forever, name="control", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


