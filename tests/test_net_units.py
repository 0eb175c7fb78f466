"""Network probe pieces that need no privileges: ring draining, burst detection, BTF offsets, /proc owners, config."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpusleuth.agent.config import from_mapping
from gpusleuth.probes.config import ConfigError
from gpusleuth.probes.net.config import NetConfig, select_links
from gpusleuth.probes.net.attach import Link
from gpusleuth.probes.net.bursts import BurstDetector
from gpusleuth.probes.net.ring import OVERRUN_FLAG, SLOT_DTYPE, BinRings
from gpusleuth.probes.net.owners import OwnerResolver, _parse_addr
from gpusleuth.probes.net.tcp import drop_reason_names, has_field

BIN = 100_000


class FakeKernel:
    """Writes packets into slots exactly as net_tc.c does (stamp, flag an undrained older lap, add)."""

    def __init__(self, nrings: int = 1, nlanes: int = 2, nbins: int = 64) -> None:
        self.slots = np.zeros((nrings, nlanes, nbins), dtype=SLOT_DTYPE)
        self.nbins = nbins

    def packet(self, t_ns: int, size: int, ring: int = 0, lane: int = 0) -> None:
        idx = t_ns // BIN
        s = self.slots[ring, lane, idx % self.nbins]
        cur = int(s["idx"])
        if cur & ~int(OVERRUN_FLAG) != idx:
            s["idx"] = (idx | int(OVERRUN_FLAG)) if cur else idx
        s["bytes"] += size
        s["packets"] += 1


def test_drains_tile_time_with_no_gap_and_no_double_count():
    k = FakeKernel()
    rings = BinRings(k.slots, BIN, guard_ns=2 * BIN)
    rings.start(0)
    rng = np.random.default_rng(1)
    sent, got, t, expected_bins = 0, 0, 0, {}
    seen_bins: list[int] = []
    for _ in range(200):
        for _ in range(int(rng.integers(0, 20))):
            t += int(rng.integers(1, 40_000))
            size = int(rng.integers(60, 1500))
            k.packet(t, size, lane=int(rng.integers(0, 2)))
            sent += size
            expected_bins[t // BIN] = expected_bins.get(t // BIN, 0) + size
        t += 3 * BIN  # time passes: the bin of the last packet is complete, guard included
        d = rings.drain(0, t)
        got += d.total_bytes
        assert d.lost_bins == 0 and d.late_bytes == 0
        for i, b in enumerate(d.bytes.tolist()):
            seen_bins.append(d.first_bin + i)
            assert b == expected_bins.get(d.first_bin + i, 0)
    assert got == sent
    assert seen_bins == list(range(seen_bins[0], seen_bins[0] + len(seen_bins)))  # contiguous, no repeats


def test_late_write_counts_in_totals_not_in_a_bin():
    k = FakeKernel()
    rings = BinRings(k.slots, BIN, guard_ns=0)
    rings.start(0)
    k.packet(5 * BIN + 10, 1000)
    d1 = rings.drain(0, 10 * BIN)
    assert d1.total_bytes == 1000 and d1.bytes[5] == 1000
    k.packet(7 * BIN + 1, 400)  # a writer that read the clock in bin 7 but wrote after bin 7 was drained
    d2 = rings.drain(0, 10 * BIN + 64 * BIN)  # the slot comes round again a lap later
    assert d2.late_bytes == 400 and d2.bytes.sum() == 0 and d2.total_bytes == 400


def test_reader_more_than_a_ring_behind_reports_lost_bins_and_keeps_totals():
    k = FakeKernel(nbins=16)
    rings = BinRings(k.slots, BIN, guard_ns=0)
    rings.start(0)
    k.packet(3 * BIN, 100)
    k.packet((3 + 16) * BIN, 200)  # same slot one lap later, before bin 3 was drained: flagged as mixed
    d = rings.drain(0, 20 * BIN)
    assert d.lost_bins == 4  # bins 0..3 fell out of the ring's reach
    assert d.total_bytes == 300  # the mixed slot still holds both packets' bytes
    assert d.mixed_bins == 1


def test_burst_detector_threshold_gap_and_straddling_chunks():
    by = np.zeros(40, dtype=np.int64)
    by[5:8] = 100  # burst 1: bins 5..7
    by[9] = 100  # one quiet bin (8) inside: still burst 1 with gap_bins=1
    by[20:23] = [100, 50, 100]  # bin 21 below threshold: inside burst 2 (gap 1)
    by[30] = 99  # below threshold: nothing
    pk = (by > 0).astype(np.int64)
    whole = BurstDetector(100, gap_bins=1).feed(0, by, pk)
    assert [(b.start_bin, b.end_bin, b.bytes) for b in whole] == [(5, 10, 400), (20, 23, 250)]
    assert [b.peak_bytes for b in whole] == [100, 100]
    det = BurstDetector(100, gap_bins=1)
    pieces = det.feed(0, by[:9], pk[:9]) + det.feed(9, by[9:21], pk[9:21]) + det.feed(21, by[21:], pk[21:])
    assert [(b.start_bin, b.end_bin, b.bytes, b.packets) for b in pieces] == \
        [(b.start_bin, b.end_bin, b.bytes, b.packets) for b in whole]


def test_burst_detector_truncates_endless_runs():
    by = np.full(25, 10, dtype=np.int64)
    out = BurstDetector(10, gap_bins=0, max_bins=10).feed(0, by, by)
    assert [(b.start_bin, b.end_bin, b.is_truncated) for b in out] == [(0, 10, True), (10, 20, True)]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 300), min_size=1, max_size=120), st.lists(st.integers(1, 30), min_size=1),
       st.integers(0, 3))
def test_burst_detector_is_independent_of_chunking(values, cuts, gap):
    by = np.array(values, dtype=np.int64)
    pk = by // 10
    ref = BurstDetector(150, gap_bins=gap)
    whole = ref.feed(0, by, pk) + ref.feed(len(by), np.zeros(gap + 2, np.int64), np.zeros(gap + 2, np.int64))
    det, got, pos, i = BurstDetector(150, gap_bins=gap), [], 0, 0
    while pos < len(by):
        n = cuts[i % len(cuts)]
        got += det.feed(pos, by[pos:pos + n], pk[pos:pos + n])
        pos, i = pos + n, i + 1
    got += det.feed(pos, np.zeros(gap + 2, np.int64), np.zeros(gap + 2, np.int64))
    key = lambda b: (b.start_bin, b.end_bin, b.bytes, b.packets, b.peak_bytes, b.hot_bins)  # noqa: E731
    assert [key(b) for b in got] == [key(b) for b in whole]


@pytest.mark.skipif(not os.path.exists("/sys/kernel/btf/vmlinux") or not shutil.which("bpftool"),
                    reason="needs kernel BTF and bpftool to compare against")
def test_btf_offsets_agree_with_bpftool():
    from gpusleuth.probes.net.btf import Btf, skb_offsets
    ours = skb_offsets(Btf.load())
    raw = json.loads(subprocess.run(["bpftool", "-j", "btf", "dump", "file", "/sys/kernel/btf/vmlinux"],
                                    capture_output=True, text=True, check=True).stdout)["types"]
    by_id = {t["id"]: t for t in raw}

    def find(struct: str, member: str, tid: int | None = None, base: int = 0) -> int | None:
        types = [by_id[tid]] if tid else [t for t in raw if t["kind"] == "STRUCT" and t["name"] == struct]
        for t in types:
            for m in t.get("members", []):
                if m["name"] == member:
                    return (base + m["bits_offset"]) // 8
                inner = by_id[m["type_id"]]
                if m["name"] == "(anon)" and inner["kind"] in ("STRUCT", "UNION"):
                    found = find(struct, member, inner["id"], base + m["bits_offset"])
                    if found is not None:
                        return found
        return None

    assert ours["SKB_HEAD_OFF"] == find("sk_buff", "head")
    assert ours["SKB_LEN_OFF"] == find("sk_buff", "len")
    assert ours["SKB_CB_OFF"] == find("sk_buff", "cb")
    assert ours["SKB_NETWORK_HEADER_OFF"] == find("sk_buff", "network_header")
    assert ours["TCB_GSO_SEGS_OFF"] == find("tcp_skb_cb", "tcp_gso_segs")


def test_proc_addresses_parse_both_families():
    assert _parse_addr("0100007F:1F90") == ("127.0.0.1", 8080)
    assert _parse_addr("00000000000000000000000001000000:0050") == ("::1", 80)
    assert _parse_addr("0000000000000000FFFF00000100007F:0016") == ("127.0.0.1", 22)


def test_owner_of_a_loopback_connection_is_this_process():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    cli = socket.create_connection(srv.getsockname())
    conn, _ = srv.accept()
    try:
        lport, rport = cli.getsockname()[1], srv.getsockname()[1]
        owner = OwnerResolver("").owner(6, "127.0.0.1", lport, "127.0.0.1", rport)
        assert owner is not None and owner.pid == os.getpid()
        assert OwnerResolver("").owner(6, "127.0.0.1", lport, "127.0.0.1", rport + 1 or 1) is None
    finally:
        for s in (cli, conn, srv):
            s.close()


def test_drop_reason_names_from_this_kernel():
    from gpusleuth.probes.net.tcp import tracepoint_format
    fmt = tracepoint_format("skb", "kfree_skb")
    if not fmt:
        pytest.skip("tracefs not readable here (needs root or a mounted tracefs)")
    names = drop_reason_names(fmt)
    assert names.get(2) == "NOT_SPECIFIED" and "TC_INGRESS" in names.values()
    assert has_field(fmt, "reason") and has_field(fmt, "skbaddr") and not has_field(fmt, "nonexistent")


# ---------------------------------------------------------------------------------------------------- config

@pytest.mark.parametrize("table, key, words", [
    ({"bin_us": 5}, "probes.net.bin_us", "out of range"),
    ({"bin_us": 30}, "probes.net.bin_us", "does not divide one second"),
    ({"interfaces": ["gs-no-such0"]}, "probes.net.interfaces[0]", "no interface named 'gs-no-such0'"),
    ({"interval_s": 1.5}, "probes.net.interval_s", "out of range"),
    ({"netns": "gs-no-such-ns"}, "probes.net.netns", "no network namespace"),
    ({"bin_usec": 100}, "probes.net.bin_usec", "unknown key"),
])
def test_config_errors_name_the_key(table, key, words):
    with pytest.raises(ConfigError) as err:
        from_mapping({"probes": {"net": table}})
    assert err.value.key == key and words in str(err.value)


def test_config_accepts_bins_that_divide_a_second():
    for us in (10, 25, 100, 125, 1000, 1_000_000):
        assert NetConfig(bin_us=us).bin_us == us
    lo = socket.if_nameindex()[0][1]
    assert NetConfig(interfaces=[lo, "nothing-matches-*"]).interfaces == [lo, "nothing-matches-*"]


def test_selection_default_globs_and_loopback_opt_in():
    links = [Link("lo", 1, True, True, "", 14), Link("eth0", 2, True, False, "", 14),
             Link("eth1", 3, False, False, "", 14), Link("veth9", 4, True, False, "veth", 14)]
    names = lambda sel: [ln.name for ln in sel]  # noqa: E731
    assert names(select_links([], links)) == ["eth0", "veth9"]  # up and not loopback
    assert names(select_links(["eth*"], links)) == ["eth0", "eth1"]  # globs pick down links too, never lo
    assert names(select_links(["*"], links)) == ["eth0", "eth1", "veth9"]
    assert names(select_links(["lo", "veth9"], links)) == ["lo", "veth9"]  # lo only when named
