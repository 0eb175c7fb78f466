"""Render the live TUI headless against a running agent and save SVG screenshots of chosen screens (issue 8).

  python3 benchmarks/render_tui_snapshot.py --socket /run/gpusleuth/agent.sock --out-prefix /tmp/tui
"""
from __future__ import annotations

import argparse
import asyncio

from gpusleuth.tui.app import SleuthApp
from gpusleuth.tui.source_live import LiveSource

SCREENS = {"overview": "1", "requests": "2", "gpu": "3", "network": "4", "syscalls": "5", "events": "6"}


async def render(socket_path: str, prefix: str, screens: list[str], size: tuple[int, int]) -> list[str]:
    app = SleuthApp(LiveSource(socket_path))
    written = []
    async with app.run_test(size=size) as pilot:
        await pilot.pause(3.0)  # a few refreshes, so sparklines have points
        for name in screens:
            await pilot.press(SCREENS[name])
            await pilot.pause(2.0)
            path = f"{prefix}-{name}.svg"
            app.save_screenshot(path)
            written.append(path)
    return written


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--socket", default="/run/gpusleuth/agent.sock")
    ap.add_argument("--out-prefix", default="tui")
    ap.add_argument("--screens", default="overview,requests,gpu")
    ap.add_argument("--size", default="120x40")
    args = ap.parse_args()
    w, h = (int(x) for x in args.size.split("x"))
    for path in asyncio.run(render(args.socket, args.out_prefix, args.screens.split(","), (w, h))):
        print("wrote", path)


if __name__ == "__main__":
    main()
