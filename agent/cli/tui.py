"""`agent tui`: the triage screen over the running agent's control socket, or over a recording (`--recording DIR`).

Exit codes: 0 ok, 2 bad usage/config/recording, 3 no agent running, 4 not allowed to use the control socket.
"""
from __future__ import annotations

import sys

from gpusleuth.agent.cli.tui_runbooks import RunbookRunner
from gpusleuth.probes import procname
from gpusleuth.tui import app, launch


def main(argv: list[str] | None = None) -> int:
    args = launch.parser().parse_args(argv)
    procname.set_thread_name(procname.TUI)
    bad = launch.check_args(args)
    if bad is not None:
        return bad
    if args.recording:
        from gpusleuth.agent.recording.replay import RecordingError, Replay  # noqa: PLC0415 - pandas when replaying
        from gpusleuth.tui.source_recording import RecordingSource  # noqa: PLC0415
        try:
            replay = Replay(args.recording)
        except RecordingError as exc:
            print(f"agent tui: {exc}", file=sys.stderr)
            return launch.EXIT_USAGE
        source = RecordingSource(replay)
        runbooks = RunbookRunner.recording(replay, args.prometheus)
    else:
        opened = launch.open_live(args)
        if isinstance(opened, int):
            return opened
        source = opened
        runbooks = RunbookRunner.live(opened.path, args.prometheus)
    return app.run(source, args, runbooks)
