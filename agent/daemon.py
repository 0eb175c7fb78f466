"""Process plumbing for `agent start/stop`: the pid-file lock, daemonizing, signals and logging."""
from __future__ import annotations

import errno
import fcntl
import logging
import logging.handlers
import os
import select
import signal
import sys
import time
from pathlib import Path


class AlreadyRunning(Exception):
    def __init__(self, pid: int | None) -> None:
        super().__init__(f"the agent is already running (pid {pid})" if pid else "the agent is already running")
        self.pid = pid


class PidFile:
    """A pid file whose flock is held for the agent's life: a lock nobody holds means any pid in it is stale."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self.stale_pid: int | None = None

    def read_pid(self) -> int | None:
        try:
            text = self.path.read_text().strip()
        except OSError:
            return None
        return int(text) if text.isdigit() else None

    def acquire(self) -> None:
        """Take the lock or raise AlreadyRunning; remembers a stale pid left by a crash."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise AlreadyRunning(self.read_pid()) from None
            raise
        self.stale_pid = self.read_pid()
        self._fd = fd

    def write(self, pid: int) -> None:
        assert self._fd is not None, "acquire() the pid file before writing it"
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{pid}\n".encode(), 0)
        os.fsync(self._fd)

    def release(self) -> None:
        if self._fd is not None:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
            os.close(self._fd)
            self._fd = None

    def holder(self) -> int | None:
        """The pid of the running agent, or None if nobody holds the lock."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return self.read_pid() or -1
        finally:
            os.close(fd)
        return None


def daemonize() -> tuple[bool, int]:
    """Double-fork. In the parent returns (False, read_fd) to wait on; in the daemon returns (True, write_fd)."""
    read_fd, write_fd = os.pipe()
    if os.fork() > 0:
        os.close(write_fd)
        return False, read_fd
    os.close(read_fd)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    os.chdir("/")
    os.umask(0o022)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    return True, write_fd


def wait_ready(read_fd: int, timeout_s: float = 180.0) -> tuple[bool, str]:
    """Parent side: the daemon writes 'ok' or 'error: ...' once it has started or failed, then closes the pipe.

    Gives up after `timeout_s` (a daemon stuck in start-up, e.g. compiling BPF on a loaded host, keeps running and
    may still come up; the message says where to look)."""
    deadline = time.monotonic() + timeout_s
    chunks = b""
    with os.fdopen(read_fd, "rb", buffering=0) as fh:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fh], [], [], left)[0]:
                return False, (f"no word from the agent within {timeout_s:g} s of starting; it may still be "
                               "starting: see `agent status` and its log file")
            data = fh.read(4096)
            if not data:
                break
            chunks += data
    text = chunks.decode(errors="replace").strip()
    if text.startswith("ok"):
        return True, text[2:].strip()
    return False, text.removeprefix("error:").strip() or "the agent exited during startup (see its log file)"


def notify(write_fd: int | None, message: str) -> None:
    if write_fd is None:
        return
    try:
        os.write(write_fd, message.encode())
        os.close(write_fd)
    except OSError:
        pass


def setup_logging(level: str, log_file: str | None) -> None:
    """Foreground: stderr (journald adds timestamps). Daemon: a rotating file."""
    root = logging.getLogger()
    root.handlers.clear()
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handler: logging.Handler = logging.handlers.RotatingFileHandler(log_file, maxBytes=20 << 20, backupCount=3)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level.upper())


def install_stop_handlers(stop) -> None:
    """SIGTERM/SIGINT ask the agent to stop (detach probes, flush); a second one is ignored while stopping."""
    def handler(signum, _frame):
        logging.getLogger("gpusleuth.agent").info("received %s, stopping", signal.Signals(signum).name)
        stop.set()
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def signal_and_wait(pid: int, pidfile: PidFile, timeout_s: float) -> bool:
    """SIGTERM the agent and wait until its lock is released."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pidfile.holder() is None:
            return True
        time.sleep(0.1)
    return False
