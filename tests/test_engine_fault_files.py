"""The fsync drill's file (engine/faults.py) leaves nothing behind on any exit path: a real `engine serve` with
--fault-fsync-mb under a request, stopped by SIGTERM, SIGINT or SIGKILL, and the in-process close()."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from gpusleuth.engine.faults import SchedulerFaults, open_unnamed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _drill_fds(pid: int, directory: Path) -> list[str]:
    """The process's open files in `directory` (an unnamed file reads `<dir>/#<inode> (deleted)`)."""
    out = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith(str(directory)):
            out.append(target)
    return out


def _leftovers(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.startswith("gpusleuth-engine-fault")]


def test_unnamed_file_is_written_and_synced_without_a_name(tmp_path):
    faults = SchedulerFaults()
    faults._fsync(2, str(tmp_path))
    assert faults._fd is not None and os.fstat(faults._fd).st_size == 2 << 20  # the drill's bytes are there
    assert list(tmp_path.iterdir()) == []  # and no name for them
    faults.close()
    assert faults._fd is None
    faults._fsync(2, str(tmp_path))  # a step that races the close writes nothing
    assert faults._fd is None and list(tmp_path.iterdir()) == []


def test_fallback_without_o_tmpfile_unlinks_at_once(tmp_path, monkeypatch):
    monkeypatch.delattr(os, "O_TMPFILE")
    fd = open_unnamed(str(tmp_path))
    try:
        os.write(fd, b"x" * 4096)
        assert os.fstat(fd).st_size == 4096 and list(tmp_path.iterdir()) == []
    finally:
        os.close(fd)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL], ids=lambda s: s.name)
def test_engine_serve_with_the_fsync_drill_leaves_no_file(tmp_path, sig):
    port = _free_port()
    env = {**os.environ, "TMPDIR": str(tmp_path), "GPUSLEUTH_SPAN_SOCKET": str(tmp_path / "none.sock")}
    engine = subprocess.Popen([sys.executable, "-m", "gpusleuth.engine", "serve", "--preset", "tiny", "--host",
                               "127.0.0.1", "--port", str(port), "--fault-fsync-mb", "4"],
                              env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            assert engine.poll() is None, engine.stderr.read().decode()[-2000:]
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).close()
                break
            except OSError:
                time.sleep(0.5)
        body = json.dumps({"model": "tiny", "prompt": "fsync drill", "max_tokens": 4}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", data=body,
                                     headers={"Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=60).close()
        held = _drill_fds(engine.pid, tmp_path)
        assert held and all(t.endswith("(deleted)") for t in held), held  # the drill ran, on an unnamed file
        assert _leftovers(tmp_path) == []
        engine.send_signal(sig)
        engine.wait(timeout=60)
    finally:
        if engine.poll() is None:
            engine.kill()
            engine.wait()
    assert _leftovers(tmp_path) == []
    if sig != signal.SIGKILL:
        assert engine.returncode == 0, engine.stderr.read().decode()[-2000:]
