"""`agent bundle` and the offline installer: build, install under a prefix, run the agent from it, undo (root)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gpusleuth.agent.harness import AGENT, free_port, wait_for

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(shutil.which("apt-get") is None, reason="bundling downloads Debian packages: needs apt")]


def _ensure_apt_lists() -> None:
    policy = subprocess.run(["apt-cache", "policy", "linux-headers-amd64"], capture_output=True, text=True).stdout
    if "Candidate: (none)" in policy or "Candidate:" not in policy:
        subprocess.run(["apt-get", "update", "-qq"], check=True)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    _ensure_apt_lists()
    dest = tmp_path_factory.mktemp("bundle") / "b"
    res = subprocess.run([AGENT, "bundle", str(dest)], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    return dest


def test_bundle_contents_and_manifest(bundle):
    manifest = json.loads((bundle / "MANIFEST.json").read_text())
    names = " ".join(manifest["files"])
    for needed in ("debs/libbpfcc_", "debs/python3-bpfcc_", "debs/libllvm14_", "debs/linux-headers-",
                   "wheels/gpusleuth-", "wheels/prometheus_client-", "wheels/textual-", "wheels/pyroute2-"):
        assert needed in names, needed
    assert "torch" not in names and "numpy" not in names  # GPU hosts have these; the bundle stays small
    assert sum(f["bytes"] for f in manifest["files"].values()) < 80 << 20
    assert (bundle / "install.sh").stat().st_mode & 0o111


def test_offline_install_runs_the_agent_from_the_bundle_and_undoes(bundle, tmp_path):
    prefix = tmp_path / "opt"
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PREFIX": str(prefix), "PYTHON": sys.executable}
    build_link = Path("/lib/modules") / __import__("platform").release() / "build"
    link_before = build_link.resolve() if build_link.exists() else None
    res = subprocess.run(["bash", str(bundle / "install.sh")], env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert (build_link.resolve() if build_link.exists() else None) == link_before  # an existing tree is kept
    agent = prefix / "bin" / "agent"
    conf = tmp_path / "agent.toml"
    conf.write_text(f"""
[agent]
pid_file = "{tmp_path}/agent.pid"
log_file = "{tmp_path}/agent.log"
[control]
socket = "{tmp_path}/agent.sock"
[recorder]
directory = "{tmp_path}/rec"
[exporter]
listen = "127.0.0.1:{free_port()}"
[probes]
enabled = ["syscalls", "sched", "spans"]
[probes.spans]
socket = "{tmp_path}/spans.sock"
""")
    started = subprocess.run([str(agent), "--config", str(conf), "start"], capture_output=True, text=True,
                             timeout=180)
    assert started.returncode == 0, started.stderr
    try:
        pid = int((tmp_path / "agent.pid").read_text())
        maps = Path(f"/proc/{pid}/maps").read_text()
        assert f"{prefix}/root/usr/lib/x86_64-linux-gnu/libbcc.so" in maps  # the bundle's bcc, not the host's
        status = wait_for(lambda: json.loads(subprocess.run(
            [str(agent), "--config", str(conf), "status", "--json"], capture_output=True, text=True).stdout))
        assert {n: p["state"] for n, p in status["probes"].items()} == {"syscalls": "ok", "sched": "ok",
                                                                        "spans": "ok"}
    finally:
        subprocess.run([str(agent), "--config", str(conf), "stop"], capture_output=True, timeout=60)
    undo = subprocess.run(["bash", str(bundle / "install.sh"), "--uninstall"], env=env, capture_output=True,
                          text=True)
    assert undo.returncode == 0 and not prefix.exists()
    assert (build_link.resolve() if build_link.exists() else None) == link_before
