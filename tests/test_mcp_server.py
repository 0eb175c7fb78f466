"""`agent mcp` driven by the mcp client library over stdio against a real agent: the tools list, explain of a real
request, bounded event queries, errors as tool errors, and the control socket's refusal passed through."""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import anyio
import pytest

from gpusleuth.agent.control.client import ControlClient
from gpusleuth.agent.harness import AGENT, run_agent, wait_for, write_config
from gpusleuth.probes.records import monotonic_ns
from gpusleuth.probes.spans.synthetic import request_spans, send_spans

pytestmark = pytest.mark.root
mcp = pytest.importorskip("mcp")


@pytest.fixture
def agent():
    tmp = Path(tempfile.mkdtemp(prefix="gpusleuth-mcp-"))
    tmp.chmod(0o755)
    config = write_config(tmp, ["spans"], extra=f'\n[probes.spans]\nsocket = "{tmp}/spans.sock"\n')
    config.chmod(0o644)
    assert run_agent("--config", str(config), "start").returncode == 0
    yield tmp, config
    run_agent("--config", str(config), "stop")
    shutil.rmtree(tmp, ignore_errors=True)


async def _session(command: list[str], calls: list[tuple[str, dict]]) -> tuple[list[str], list]:
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters

    async with Client(StdioServerParameters(command=command[0], args=command[1:])) as client:
        names = sorted(t.name for t in (await client.list_tools()).tools)
        results = [await client.call_tool(name, args) for name, args in calls]
    return names, results


def _json(result) -> object:
    return json.loads(result.content[0].text)


def test_mcp_tools_answer_from_the_running_agent(agent):
    tmp, config = agent
    t = monotonic_ns()
    spans = [s for i in range(8) for s in request_spans(f"req-{i}", t + i * 60_000_000, 0.005, 0.01, 0.04)]
    send_spans(str(tmp / "spans.sock"), spans)
    with ControlClient(str(tmp / "agent.sock")) as client:
        wait_for(lambda: len(client.call("diagnoses")) == 8, timeout=20)
        direct = client.call("explain", request_id="req-7")
    names, (explain, events, missing, status) = anyio.run(_session, [AGENT, "--config", str(config), "mcp"], [
        ("explain", {"request_id": "req-7"}), ("events", {"kinds": ["request.finished"], "limit": 5000}),
        ("explain", {"request_id": "no-such"}), ("status", {})])
    assert names == ["events", "explain", "incidents", "recent_requests", "run_runbook", "slow_requests", "status"]
    report = _json(explain)
    assert not explain.is_error and report["request"]["request_id"] == "req-7"
    assert [p["phase"] for p in report["phases"]] == ["queued", "prefill", "decode"]
    assert report["budget"] == direct["budget"]  # the same answer the control socket gives
    got = _json(events)
    assert got["limit"] == 1000 and got["count"] == 8  # bounded: the asked 5000 is clipped
    assert missing.is_error and "no-such" in missing.content[0].text
    assert _json(status)["probes"]["spans"]["state"] == "ok"


def test_mcp_refuses_when_the_control_socket_refuses(agent):
    _, config = agent
    cmd = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--", AGENT, "--config", str(config),
           "mcp"]
    _, (status,) = anyio.run(_session, cmd, [("status", {})])
    assert status.is_error and "permission denied" in status.content[0].text
