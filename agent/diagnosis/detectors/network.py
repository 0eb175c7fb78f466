"""network: the network slowed the parts of the request it can touch (arrival and stream-out, on the HTTP server
threads), never the steps.

Evidence: only events on the engine's own flows and interface: TCP retransmits and packet drops attributed to an
engine process, and microbursts on an interface that carried an engine flow (the burst's top flows name it).
Benign drop reasons (a closed socket, no socket, a socket filter, ...) never count. The culprit is the heaviest
other flow in the bursts (its pid and comm), else the engine's flow with the interface.
"""
from __future__ import annotations

from gpusleuth.agent.diagnosis.causes import who
from gpusleuth.agent.diagnosis.context import Context, Finding, cover
from gpusleuth.agent.diagnosis.detectors.common import ms
from gpusleuth.probes.records import Event

CAUSE = "network"
BENIGN_DROPS = frozenset({"NOT_SPECIFIED", "NO_SOCKET", "SOCKET_CLOSE", "TCP_CLOSE", "SOCKET_FILTER", "OTHERHOST",
                          "UNHANDLED_PROTO", "TCP_OLD_DATA", "TCP_OLD_ACK", "TCP_RESET", "PKT_TOO_SMALL",
                          "IP_NOPROTO", "NETFILTER_DROP", "IPV6DISABLED"})


def _ours(ctx: Context, lo: int, hi: int) -> tuple[list[Event], list[Event], set[str]]:
    pids = ctx.pids()
    retrans = [e for e in ctx.events("net.tcp_retransmit", lo, hi) if e.pid in pids]
    drops = [e for e in ctx.events("net.skb_drop", lo, hi)
             if e.pid in pids and str(e.attrs.get("reason")) not in BENIGN_DROPS]
    bursts = [e for e in ctx.events("net.microburst", lo, hi)
              if e.pid in pids or any(int(f.get("pid") or 0) in pids for f in e.attrs.get("top_flows") or ())]
    return retrans + drops, bursts, {str(b.attrs.get("interface")) for b in bursts}


def _culprit(ctx: Context, bursts: list[Event], ifaces: set[str]):
    pids = ctx.pids()
    flows: dict[int, list] = {}
    for b in bursts:
        for f in b.attrs.get("top_flows") or ():
            pid = int(f.get("pid") or 0)
            if pid and pid not in pids:
                got = flows.setdefault(pid, [0, str(f.get("comm") or "?")])
                got[0] += int(f.get("bytes") or 0)
    iface = next(iter(sorted(ifaces)), None)
    if flows:
        pid = max(flows, key=lambda p: flows[p][0])
        return who(pid, flows[pid][1], interface=iface), flows
    return who(ctx.pid, ctx.engine.comm, interface=iface), flows


def detect(ctx: Context) -> list[Finding]:
    parts = ctx.server_parts()
    if not parts:
        return []
    lo, hi = min(p.start_ns for p in parts), max(p.end_ns for p in parts)
    losses, bursts, ifaces = _ours(ctx, lo, hi)
    if not losses and not bursts:
        return []
    got = cover(ctx, [(e.start_ns, e.end_ns) for e in losses + bursts], parts, busy_only=False)
    if not got:
        return []
    culprit, flows = _culprit(ctx, bursts, ifaces)
    text = (f"on the engine's flows during {' and '.join(p.name for p in parts)}: {len(bursts)} microbursts"
            + (f" on {', '.join(sorted(ifaces))}" if ifaces else "")
            + f", {sum(1 for e in losses if e.kind == 'net.tcp_retransmit')} retransmit bursts, "
            f"{sum(int(e.attrs.get('count') or 1) for e in losses if e.kind == 'net.skb_drop')} drops"
            f" covering {ms(sum(b - a for ivs in got.values() for a, b in ivs))}")
    if flows:
        text += "; other flows in the bursts: " + ", ".join(
            f"{c} (pid {p}) {n / 1e6:.1f} MB" for p, (n, c) in sorted(flows.items(), key=lambda kv: -kv[1][0])[:3])
    return [Finding(CAUSE, culprit, text, intervals=got,
                    figures={"bursts": len(bursts), "losses": len(losses), "interfaces": sorted(ifaces)})]
