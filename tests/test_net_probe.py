"""The network probe for real: eBPF on a veth pair between two namespaces the tests create and delete (root).

Side a (namespace `<tag>a`, interface `<tag>0`) sends; the probe watches `<tag>0`. The sender's own timestamps and
the kernel's own counters (interface stats, /proc/net/snmp, tc -s) are the references.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import warnings

import pytest
from prometheus_client import CollectorRegistry

from gpusleuth.agent.store import Store
from gpusleuth.exporters.net import NetCollector
from gpusleuth.probes import snapshot_codec
from gpusleuth.probes.net.probe import NetConfig, NetProbe
from gpusleuth.probes.net.attach import OUR_PRIO
from gpusleuth.probes.net.testbed import (ADDR_A, ADDR_B, PYTHON, TCP_PORT, UDP_BURST_PORT, role_args, sh, veth_pair,
                                          wait_line)
from tests.net_helpers import ForeignFilter, qdisc_kinds, tc_available, tc_filters

pytestmark = [pytest.mark.root, pytest.mark.skipif(bool(tc_available()), reason=tc_available() or "ok")]
BIN_NS = 100_000


@pytest.fixture
def pair():
    with veth_pair() as p:
        yield p


@pytest.fixture
def state_dir():
    with tempfile.TemporaryDirectory(prefix="gs-net-state-") as d:
        yield d


def start_probe(pair, state_dir, **kw) -> NetProbe:
    cfg = NetConfig(netns=pair.ns_a, interfaces=[pair.if_a], burst_threshold_mbps=1000, state_dir=state_dir, **kw)
    probe = NetProbe(cfg)
    probe.start()
    return probe


def poll_until_done(probe, proc, store: Store | None = None, interval: float = 0.25,
                    also: tuple[NetProbe, list] | None = None) -> list:
    """Poll like the agent does while `proc` runs, then once more after the guard; returns all Events.
    `also` = (another probe, list for its Events) is polled alongside."""
    events = []
    done = False
    while not done:
        done = proc.poll() is not None
        time.sleep(0.05 if done else interval)
        result = probe.poll(time.monotonic_ns())
        events += result.events
        if also is not None:
            also[1].extend(also[0].poll(time.monotonic_ns()).events)
        if store is not None:
            store.add(result.samples, result.events)
            store.set_snapshot("net", result.snapshot)
    return events


def scrape(store: Store) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(NetCollector(store))
    return registry


def test_twenty_bursts_over_background_are_twenty_events(pair, state_dir):
    sink = pair.spawn(pair.ns_b, "sink")
    sink.stdout.readline()
    sender = pair.spawn(pair.ns_a, "bursts", "--ifname", pair.if_a, "--count", "20", "--size", "1500000",
                        "--gap-ms", "200", "--wait-go")
    assert sender.stdout.readline()  # warmed up: the probe sees only the bursts and the background
    probe = start_probe(pair, state_dir)
    # The receiving side too, from its own namespace: the same bursts arrive on <tag>1's ingress.
    receiver = NetProbe(NetConfig(netns=pair.ns_b, interfaces=[pair.if_b], burst_threshold_mbps=1000,
                                  state_dir=state_dir, is_tcp_enabled=False))
    receiver.start()
    store = Store(64 << 20)
    try:
        background = pair.spawn(pair.ns_a, "background", "--mbps", "10", "--seconds", "5.5")
        time.sleep(0.3)
        sender.stdin.write("go\n")
        sender.stdin.flush()
        rx_events: list = []
        events = poll_until_done(probe, sender, store, also=(receiver, rx_events))
        wait_line(background)
    finally:
        probe.stop()
        receiver.stop()
        sink.kill()
    sent = wait_line(sender)
    rx_bursts = [e for e in rx_events if e.kind == "net.microburst" and e.attrs["direction"] == "ingress"]
    # Ingress is delivered by the receiving namespace's softirq: on a busy 2-core box one burst can arrive in two
    # pieces a few ms apart (seen in CI: 259 kB + 1.24 MB, 0.7 ms apart; here up to 3 pieces). The pieces of a burst are the events that
    # start before the next burst is sent (200 ms later); together they must hold the burst's bytes.
    refs = sent["bursts"]
    got = [[e for e in rx_bursts if ref["start_ns"] - 2 * BIN_NS <= e.start_ns < ref["start_ns"] + 100_000_000]
           for ref in refs]
    where = str([(e.start_ns // 100000 % 100000, e.attrs["bins"], e.attrs["bytes"]) for e in rx_bursts])
    assert len(refs) == 20 and all(got) and sum(map(len, got)) == len(rx_bursts), where
    for pieces, ref in zip(got, refs):
        assert abs(min(e.start_ns for e in pieces) - ref["start_ns"]) <= 2 * BIN_NS
        assert abs(sum(e.attrs["bytes"] for e in pieces) - ref["if_bytes"]) <= 0.02 * ref["if_bytes"]
        assert all(e.attrs["top_flows"][0]["pid"] == sink.pid for e in pieces)  # owner of the receiving UDP socket
    bursts = [e for e in events if e.kind == "net.microburst" and e.attrs["direction"] == "egress"]
    # The sender can be preempted inside a burst on a busy box (seen: 648 kB + 853 kB, 1 ms apart): the wire then
    # really had two bursts. Each sent burst must be covered by the events that start within it, bytes exact.
    got = [[e for e in bursts if ref["start_ns"] - 2 * BIN_NS <= e.start_ns < ref["start_ns"] + 100_000_000]
           for ref in refs]
    assert all(got) and sum(map(len, got)) == len(bursts), [(e.start_ns, e.attrs["bytes"]) for e in bursts]
    for pieces, ref in zip(got, refs):
        assert abs(min(e.start_ns for e in pieces) - ref["start_ns"]) <= 2 * BIN_NS, \
            "burst start more than 2 bins off the sender's"
        assert abs(sum(e.attrs["bytes"] for e in pieces) - ref["if_bytes"]) <= 0.02 * ref["if_bytes"]
        for ev in pieces:
            top = ev.attrs["top_flows"][0]
            assert top["proto"] == "udp" and top["dst"] == f"{ADDR_B}:{UDP_BURST_PORT}"
            assert top["pid"] == sent["pid"] and ev.pid == sent["pid"], str(ev.attrs["top_flows"])
        assert max(ev.attrs["peak_bps"] for ev in pieces) >= pieces[0].attrs["threshold_bps"]
    registry = scrape(store)
    labels = {"interface": pair.if_a, "direction": "egress"}
    assert registry.get_sample_value("gpusleuth_net_microbursts_total", labels) == len(bursts)
    assert registry.get_sample_value("gpusleuth_net_microburst_duration_seconds_count", labels) == len(bursts)
    durations = sum(e.duration_ns for e in bursts) / 1e9
    assert registry.get_sample_value("gpusleuth_net_microburst_duration_seconds_sum", labels) == \
        pytest.approx(durations)
    assert store.events(kinds=["net.microburst"]) and len(store.events(kinds=["net.microburst"])) == len(
        [e for e in events if e.kind == "net.microburst"])


def test_counters_agree_with_interface_stats_over_a_mixed_run(pair, state_dir):
    sinks = [pair.spawn(pair.ns_b, "sink"), pair.spawn(pair.ns_a, "sink")]
    for sink in sinks:
        sink.stdout.readline()
    probe = start_probe(pair, state_dir)
    store = Store(64 << 20)
    before = pair.link_stats(pair.ns_a, pair.if_a)
    try:
        workers = [pair.spawn(pair.ns_a, "background", "--mbps", "20", "--size", "700", "--seconds", "10"),
                   pair.spawn(pair.ns_b, "background", "--mbps", "10", "--size", "300", "--seconds", "9",
                              "--dst", ADDR_A),
                   pair.spawn(pair.ns_a, "bursts", "--ifname", pair.if_a, "--count", "12", "--gap-ms", "700",
                              "--proto", "tcp"),
                   pair.spawn(pair.ns_a, "bulk", "--seconds", "1.5")]
        poll_until_done(probe, workers[0], store)
        for w in workers:
            wait_line(w)
        time.sleep(0.05)
        result = probe.poll(time.monotonic_ns())
        store.set_snapshot("net", result.snapshot)
        after = pair.link_stats(pair.ns_a, pair.if_a)
    finally:
        probe.stop()
        for sink in sinks:
            sink.kill()
    dirs = result.snapshot.interfaces[pair.if_a].directions
    registry = scrape(store)
    for ours, theirs in (("egress", "tx"), ("ingress", "rx")):
        for unit in ("bytes", "packets"):
            kernel = after[f"{theirs}_{unit}"] - before[f"{theirs}_{unit}"]
            assert kernel > (5_000_000 if unit == "bytes" else 15_000)  # the run was mixed and busy
            assert abs(getattr(dirs[ours], unit) - kernel) <= 0.001 * kernel, (ours, unit, dirs[ours], kernel)
            exported = registry.get_sample_value(f"gpusleuth_net_{unit}_total",
                                                 {"interface": pair.if_a, "direction": ours})
            assert exported == getattr(dirs[ours], unit)
    # On a saturated 2-core box the poller itself can be starved past ring_s: bins are then lost (and reported),
    # but the totals above stay exact because late counts land in newer bins, never nowhere.
    if any(d.lost_bins for d in dirs.values()):
        assert "bins lost" in probe.status().reason or probe.status().state.value == "stopped"


def test_retransmits_agree_with_tcp_retranssegs_under_5pct_loss(pair, state_dir):
    # sch_netem is often not built (it is not here); a tc program dropping 5 % at random is the same loss model.
    sink = pair.spawn(pair.ns_b, "sink")
    sink.stdout.readline()
    loss = ForeignFilter(pair.ns_b, pair.if_b, "ingress", prio=1, name="test_loss_5pct", drop_pct=5.0)
    probe = start_probe(pair, state_dir)
    store = Store(64 << 20)
    try:
        snmp0 = pair.snmp(pair.ns_a)
        bulk = pair.spawn(pair.ns_a, "bulk", "--seconds", "3")
        events = poll_until_done(probe, bulk, store, interval=0.5)
        wait_line(bulk, 60)
        time.sleep(0.3)  # the connection's close handshake is over
        snmp1 = pair.snmp(pair.ns_a)
        seen, dropped = loss.counts()
        result = probe.poll(time.monotonic_ns())
        events += result.events
        store.set_snapshot("net", result.snapshot)
    finally:
        probe.stop()
        loss.close()
        sink.kill()
    kernel = snmp1["RetransSegs"] - snmp0["RetransSegs"]
    remote = f"{ADDR_B}:{TCP_PORT}"
    ours = result.snapshot.tcp.retransmits.by_remote.get(remote, 0)
    assert dropped > 20 and kernel > 20, (dropped, kernel)
    assert abs(ours - kernel) <= 0.05 * kernel, (ours, kernel)
    assert scrape(store).get_sample_value("gpusleuth_net_tcp_retransmit_segments_total", {"remote": remote}) == ours
    rt_events = [e for e in events if e.kind == "net.tcp_retransmit" and e.attrs["remote"] == remote]
    assert sum(e.attrs["segments"] for e in rt_events) == ours
    assert {e.comm for e in rt_events} == {"python"}  # the bulk sender, learnt from its own sends
    # Every packet the loss program dropped is a kfree_skb with reason TC_INGRESS on that flow. The connection's
    # close handshake may still lose a packet around the moment the counts are read, and the kernel skips a raw
    # tracepoint program that interrupts itself (reported as missed_events): allow 1 %.
    ours_drop = [e for e in events if e.kind == "net.skb_drop" and e.attrs["reason"] == "TC_INGRESS"
                 and e.attrs.get("dst") == remote]
    flow_drops = sum(e.attrs["count"] for e in ours_drop)
    assert abs(flow_drops - dropped) <= max(2, 0.01 * dropped), (flow_drops, dropped,
                                                                 result.snapshot.tcp.missed_events)
    assert result.snapshot.tcp.drops.by_reason.get("TC_INGRESS", 0) >= flow_drops


@pytest.mark.parametrize("allow_raw", [True, False], ids=["raw_tracepoints", "classic_tracepoints"])
def test_drops_to_a_closed_port_are_counted_with_reason_and_remote(pair, allow_raw):
    from gpusleuth.probes.net.tcp import TcpTracer
    tracer = TcpTracer(64, pair.ns_b, local_addrs=lambda: {ADDR_B}, allow_raw=allow_raw)
    tracer.start()
    try:
        assert ("raw" in tracer.path) == allow_raw
        n = 40
        sh(f"ip netns exec {pair.ns_a} {PYTHON} -c \"import socket,time\n"
           f"s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
           f"s.bind(('{ADDR_A}',40001))\n"
           f"[(s.sendto(b'x'*100,('{ADDR_B}',40009)),time.sleep(0.002)) for _ in range({n})]\"")
        time.sleep(0.05)
        _, events, snap = tracer.poll(time.monotonic_ns())
    finally:
        tracer.stop()
    ours = [e for e in events if e.kind == "net.skb_drop" and e.attrs.get("dst") == f"{ADDR_B}:40009"]
    assert sum(e.attrs["count"] for e in ours) == n
    assert {e.attrs["reason"] for e in ours} == {"NO_SOCKET"}
    assert {e.attrs["remote"] for e in ours} == {f"{ADDR_A}:40001"}  # the destination is ours: the sender is remote
    assert snap.drops.by_remote[f"{ADDR_A}:40001"] == n


def test_qdisc_backlog_and_drops_match_tc(pair, state_dir):
    sh(f"tc -n {pair.ns_a} qdisc add dev {pair.if_a} root tbf rate 20mbit burst 20kb limit 100kb")
    sink = pair.spawn(pair.ns_b, "sink")
    sink.stdout.readline()
    probe = start_probe(pair, state_dir)
    try:
        flood = pair.spawn(pair.ns_a, "background", "--mbps", "200", "--size", "1400", "--seconds", "1.5")
        backlogs = []
        while flood.poll() is None:
            time.sleep(0.2)
            backlogs.append(probe.poll(time.monotonic_ns()).snapshot.interfaces[pair.if_a].qdisc.backlog_bytes)
        wait_line(flood)
        time.sleep(0.3)  # let tbf empty its queue
        full = probe.poll(time.monotonic_ns()).snapshot
        snap = full.interfaces[pair.if_a].qdisc
        tc = json.loads(sh(f"tc -n {pair.ns_a} -s -j qdisc show dev {pair.if_a}").stdout)
    finally:
        probe.stop()
        sink.kill()
    root = next(q for q in tc if q["kind"] == "tbf")
    assert max(backlogs) > 10_000  # 200 Mb/s into a 20 Mb/s shaper: the queue filled
    assert snap.kind == "tbf" and snap.drops == root["drops"] > 0
    assert snap.packets == root["packets"] and snap.backlog_bytes == root["backlog"] == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a value of another type than its field declares would warn here
        wire = json.loads(json.dumps(snapshot_codec.encode("net", full)))
    assert wire["interfaces"][pair.if_a]["qdisc"]["drops"] == root["drops"]
    assert snapshot_codec.decode("net", wire) == full  # the TUI gets back what the probe published


def _ours(ns: str, ifname: str) -> dict[str, int]:
    """How many of our filters each hook carries, as `tc` itself lists them."""
    return {hook: sum(1 for f in tc_filters(ns, ifname, hook)
                      if f["pref"] == OUR_PRIO and f["options"].get("bpf_name", "").startswith("gpusleuth_net"))
            for hook in ("ingress", "egress")}


def test_foreign_clsact_and_filters_survive_start_and_stop(pair, state_dir):
    sh(f"tc -n {pair.ns_a} qdisc add dev {pair.if_a} clsact")
    sh(f"tc -n {pair.ns_a} filter add dev {pair.if_a} egress prio 7 protocol ip u32 match ip dst 192.0.2.1/32 "
       "classid 1:1")
    # After our priority: it only sees packets if our program never ends classification.
    late = ForeignFilter(pair.ns_a, pair.if_a, "egress", prio=50000, name="foreign_counter")
    try:
        before = [(f["pref"], f["kind"]) for f in tc_filters(pair.ns_a, pair.if_a, "egress")]
        probe = start_probe(pair, state_dir)
        assert _ours(pair.ns_a, pair.if_a) == {"ingress": 1, "egress": 1}
        assert probe.status().details["foreign_filters"][pair.if_a]
        seen0 = late.counts()[0]
        sh(f"ip netns exec {pair.ns_a} ping -c 5 -i 0.05 -q {ADDR_B}")
        result = probe.poll(time.monotonic_ns())
        assert late.counts()[0] - seen0 >= 5
        assert result.snapshot.interfaces[pair.if_a].directions["egress"].packets >= 5
        probe.stop()
        after = [(f["pref"], f["kind"]) for f in tc_filters(pair.ns_a, pair.if_a, "egress")]
        assert after == before and _ours(pair.ns_a, pair.if_a) == {"ingress": 0, "egress": 0}
        assert "clsact" in qdisc_kinds(pair.ns_a, pair.if_a)
    finally:
        late.close()


def test_conflict_at_our_priority_fails_cleanly_and_touches_nothing(pair, state_dir):
    from gpusleuth.probes.base import ProbeUnavailable
    sh(f"tc -n {pair.ns_a} qdisc add dev {pair.if_a} clsact")
    sh(f"tc -n {pair.ns_a} filter add dev {pair.if_a} egress prio {OUR_PRIO} protocol ip u32 match ip dst "
       "192.0.2.1/32 classid 1:1")
    before = tc_filters(pair.ns_a, pair.if_a, "egress")
    probe = NetProbe(NetConfig(netns=pair.ns_a, interfaces=[pair.if_a], state_dir=state_dir, is_tcp_enabled=False))
    with pytest.raises(ProbeUnavailable, match=f"pref {OUR_PRIO}"):
        probe.start()
    probe.stop()
    assert _ours(pair.ns_a, pair.if_a) == {"ingress": 0, "egress": 0}  # the ingress filter added first is gone
    assert tc_filters(pair.ns_a, pair.if_a, "egress") == before
    assert "clsact" in qdisc_kinds(pair.ns_a, pair.if_a)


def test_live_owner_is_refused_other_state_dirs_coexist_and_kill9_frees(pair, state_dir, tmp_path):
    from gpusleuth.probes.base import ProbeUnavailable
    holder = subprocess.Popen(role_args("hold_probe", "--netns", pair.ns_a, "--ifname", pair.if_a,
                                        "--state-dir", state_dir), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert '"started": true' in holder.stdout.readline()
        same_dir = NetProbe(NetConfig(netns=pair.ns_a, interfaces=[pair.if_a], state_dir=state_dir,
                                      is_tcp_enabled=False))
        with pytest.raises(ProbeUnavailable, match=f"live process {holder.pid}"):
            same_dir.start()
        assert _ours(pair.ns_a, pair.if_a) == {"ingress": 1, "egress": 1}  # the live agent's set is untouched
        other_dir = start_probe(pair, str(tmp_path / "other"), is_tcp_enabled=False)
        assert _ours(pair.ns_a, pair.if_a) == {"ingress": 2, "egress": 2}  # two agents, two handles
        other_dir.stop()
        assert _ours(pair.ns_a, pair.if_a) == {"ingress": 1, "egress": 1}
    finally:
        holder.kill()  # SIGKILL: the holder's filters stay behind, its state file names a dead process
        holder.wait()
    again = start_probe(pair, state_dir, is_tcp_enabled=False)
    assert _ours(pair.ns_a, pair.if_a) == {"ingress": 1, "egress": 1}
    again.stop()
    assert _ours(pair.ns_a, pair.if_a) == {"ingress": 0, "egress": 0}
    assert "clsact" not in qdisc_kinds(pair.ns_a, pair.if_a)


def test_agent_kill9_then_start_leaves_one_set_and_stop_removes_our_clsact(pair, tmp_path):
    from gpusleuth.agent.harness import run_agent, write_config
    from tests.agent_helpers import agent_pid
    assert "clsact" not in qdisc_kinds(pair.ns_a, pair.if_a)
    cfg = write_config(tmp_path, ["net"], extra=f'\n[probes.net]\nnetns = "{pair.ns_a}"\n'
                                               f'interfaces = ["{pair.if_a}"]\nstate_dir = "{tmp_path}/state"\n')
    first = run_agent("--config", str(cfg), "start")
    assert first.returncode == 0, first.stderr
    os.kill(agent_pid(tmp_path), signal.SIGKILL)  # no cleanup runs
    for _ in range(100):
        if subprocess.run(["kill", "-0", str(agent_pid(tmp_path))], capture_output=True).returncode != 0:
            break
        time.sleep(0.05)
    assert _ours(pair.ns_a, pair.if_a) == {"ingress": 1, "egress": 1}  # left behind by the dead agent
    try:
        second = run_agent("--config", str(cfg), "start")
        assert second.returncode == 0, second.stderr
        assert _ours(pair.ns_a, pair.if_a) == {"ingress": 1, "egress": 1}
        assert len(tc_filters(pair.ns_a, pair.if_a, "egress")) == 1 == len(tc_filters(pair.ns_a, pair.if_a,
                                                                                       "ingress"))
    finally:
        stop = run_agent("--config", str(cfg), "stop")
    assert stop.returncode == 0, stop.stderr
    assert _ours(pair.ns_a, pair.if_a) == {"ingress": 0, "egress": 0}
    # The killed agent created clsact; the state file told the new one, which removed it on stop.
    assert "clsact" not in qdisc_kinds(pair.ns_a, pair.if_a)


@pytest.mark.parametrize("toml, key", [
    ("bin_us = 5", "probes.net.bin_us"),
    ("bin_us = 300", "probes.net.bin_us"),
    ('interfaces = ["gs-nosuch0"]', "probes.net.interfaces[0]"),
])
def test_cli_exits_2_naming_the_key(tmp_path, toml, key):
    from gpusleuth.agent.harness import run_agent, write_config
    path = write_config(tmp_path, ["net"], extra=f"\n[probes.net]\n{toml}\n")
    out = run_agent("--config", str(path), "start", "--foreground")
    assert out.returncode == 2, out.stderr
    assert key in out.stderr
    assert not (tmp_path / "agent.pid").exists() or not (tmp_path / "agent.pid").read_text().strip()


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))
