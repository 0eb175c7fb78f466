"""Finding engine processes and their metrics endpoint: a pass over the process table (psutil), each match's kind
(probes/engines/kinds.py), its children (EngineCore, TP workers, TGI shards: watched with it) and the candidate
metric URLs: an endpoint from the config, else the port its flag names, then the ports its process tree listens on,
then the engine's default port."""
from __future__ import annotations

from dataclasses import dataclass, field

import psutil

from gpusleuth.probes.engines.kinds import EngineKind, flag_value, kind_of

WILDCARD_HOSTS = ("", "0.0.0.0", "::", "[::]")


@dataclass(slots=True)
class Found:
    pid: int
    kind: EngineKind
    comm: str
    cmdline: list[str]
    child_pids: list[int] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)  # candidates, best first


def _listening_ports(procs: list[psutil.Process]) -> list[int]:
    ports: list[int] = []
    for p in procs:
        try:
            conns = p.net_connections(kind="tcp")
        except (psutil.AccessDenied, psutil.NoSuchProcess):
            continue
        ports += [c.laddr.port for c in conns if c.status == psutil.CONN_LISTEN and c.laddr.port not in ports]
    return ports


def candidate_urls(kind: EngineKind, cmdline: list[str], listening: list[int]) -> list[str]:
    """Metric URLs to try for an engine started with `cmdline` whose process tree listens on `listening`."""
    host = flag_value(cmdline, "--host") or ""
    host = "127.0.0.1" if host in WILDCARD_HOSTS or host == "localhost" else host
    host = f"[{host}]" if ":" in host and not host.startswith("[") else host
    ports: list[int] = []
    for flag in kind.port_flags:
        value = flag_value(cmdline, flag)
        if value and value.isdigit():
            ports.append(int(value))
    ports += [p for p in listening if p not in ports]
    if kind.default_port not in ports:
        ports.append(kind.default_port)
    return [f"http://{host}:{port}{path}" for port in ports for path in kind.paths]


def discover(kinds: set[str], overrides: dict[int, str], own_pid: int) -> list[Found]:
    """Every process of an enabled engine kind (a child of another match counts as that one's child)."""
    procs = {}
    for p in psutil.process_iter(["pid", "ppid", "name", "cmdline"]):
        procs[p.info["pid"]] = p
    matches: dict[int, Found] = {}
    for pid, p in procs.items():
        if pid == own_pid:
            continue
        kind = kind_of(p.info["cmdline"] or [], p.info["name"] or "")
        if kind is not None and kind.name in kinds:
            matches[pid] = Found(pid, kind, p.info["name"] or "", list(p.info["cmdline"] or []))
    roots = {pid: f for pid, f in matches.items() if not _has_matching_ancestor(pid, procs, matches)}
    for pid, p in procs.items():
        owner = _ancestor_in(pid, procs, roots)
        if owner is not None and owner != pid:
            roots[owner].child_pids.append(pid)
    for f in roots.values():
        tree = [procs[q] for q in [f.pid, *f.child_pids] if q in procs]
        listening = _listening_ports(tree)
        f.urls = ([overrides[f.pid]] if f.pid in overrides else []) + candidate_urls(f.kind, f.cmdline, listening)
    return sorted(roots.values(), key=lambda f: f.pid)


def _ancestor_in(pid: int, procs: dict, targets: dict) -> int | None:
    seen = 0
    while pid in procs and seen < 64:
        if pid in targets:
            return pid
        pid = procs[pid].info["ppid"]
        seen += 1
    return None


def _has_matching_ancestor(pid: int, procs: dict, matches: dict) -> bool:
    parent = procs[pid].info["ppid"]
    return _ancestor_in(parent, procs, matches) is not None if parent in procs else False
