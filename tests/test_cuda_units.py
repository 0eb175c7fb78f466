"""The cuda probe's user-space parts on records of known content (no BPF): symbol matching, the gloo context layout,
TP straggler matching across processes, host-step classification, the joins with engine steps, the config."""
from __future__ import annotations

import re

import pytest

from gpusleuth.agent import config as agent_config
from gpusleuth.probes.config import ConfigError
from gpusleuth.probes.cuda import straggler as straggler_mod
from gpusleuth.probes.cuda.config import CudaConfig
from gpusleuth.probes.cuda.decode import CollectiveCall, CommInit, SyncCall, gloo_rank_size
from gpusleuth.probes.cuda.discovery import missing_functions, resolve_symbols
from gpusleuth.probes.cuda.join import Step, launches_per_step, straggler_per_step
from gpusleuth.probes.cuda.stats import ProcessStats
from gpusleuth.probes.cuda.straggler import TpMatcher
from gpusleuth.probes.cuda.symbols import ALL_FUNCTIONS, FN_IDS, GLOO_CLASS, symbol_regex
from gpusleuth.probes.records import Event

ALLREDUCE = ALL_FUNCTIONS[FN_IDS["ncclAllReduce"]]
SEND = ALL_FUNCTIONS[FN_IDS["ncclSend"]]
SYNC = ALL_FUNCTIONS[FN_IDS["cuStreamSynchronize"]]
GLOO_ALLREDUCE = ALL_FUNCTIONS[FN_IDS[f"{GLOO_CLASS}9allreduceE"]]


def test_versioned_forms_aliases_and_fragments():
    symbols = [("cuLaunchKernel", 0x10), ("cuLaunchKernel_ptsz", 0x20), ("cuMemAlloc_v2", 0x30),
               ("cuMemAlloc", 0x40), ("cuLaunchKernel.cold", 0x50), ("cuLaunchKernel", 0x10),
               ("cuStreamSynchronize", 0x60), ("cuStreamSynchronizeX", 0x70)]
    got = [(r.symbol, r.address) for r in resolve_symbols(symbols, "driver")]
    # cuMemAlloc (the pre-3.2 ABI) is not ours; a .cold fragment and a duplicate (.symtab + .dynsym) are dropped
    assert sorted(got) == [("cuLaunchKernel", 0x10), ("cuLaunchKernel_ptsz", 0x20), ("cuMemAlloc_v2", 0x30),
                           ("cuStreamSynchronize", 0x60)]
    nccl = resolve_symbols([("ncclAllReduce", 0x100), ("pncclAllReduce", 0x100)], "nccl")
    assert [r.symbol for r in nccl] == ["ncclAllReduce"]
    assert "ncclAlltoAll" in missing_functions("nccl", nccl)


def test_gloo_methods_match_by_mangled_prefix():
    symbols = [(f"{GLOO_CLASS}9allreduceERSt6vectorIN2at6TensorESaIS3_EERKNS_16AllreduceOptionsE", 1),
               (f"{GLOO_CLASS}16allreduce_sparseERSt6vectorIN2at6TensorESaIS3_EERKNS_16AllreduceOptionsE", 2),
               (f"{GLOO_CLASS}19allreduce_coalescedERSt6vectorIN2at6TensorESaIS3_EERKNS_25AllreduceCoalescedOptionsE",
                3), (f"{GLOO_CLASS}10getContextEj", 4), (f"{GLOO_CLASS}10getContextEv", 5)]
    got = {r.address: r.fn.call for r in resolve_symbols(symbols, "gloo")}
    assert got == {1: "allreduce", 3: "allreduce_coalesced", 4: "tag"}
    assert re.match(symbol_regex("gloo"), symbols[0][0]) and not re.match(symbol_regex("gloo"), symbols[4][0])
    assert re.match(symbol_regex("driver"), "cuLaunchKernel_ptsz") and not re.match(symbol_regex("driver"),
                                                                                      "cuLaunchKernelX")


def test_gloo_context_read_in_either_layout():
    assert gloo_rank_size(1 | 4 << 32, 2) == (1, 4)  # rank, size first (torch 2.13's CPU wheel)
    vtable = 0x7F12_3456_7890
    assert gloo_rank_size(vtable, 3 | 8 << 32) == (3, 8)  # after a vtable pointer (upstream gloo)
    assert gloo_rank_size(vtable, 0x7F12_0000_9999) == (-1, 0)  # rank >= size: not a context


def _coll(pid, rank, seq, t_ms, fn=ALLREDUCE, comm=0xC0):
    return CollectiveCall(pid, pid, fn, int(t_ms * 1e6), 1000, comm, 4096, seq, -1, rank, 0)


def _init(pid, rank, uid="ab" * 16, comm=0xC0):
    return CommInit(pid, pid, ALL_FUNCTIONS[FN_IDS["ncclCommInitRank"]], 0, 10, comm, rank, 2, uid, 0)


def test_nccl_straggler_needs_the_communicators_init():
    m = TpMatcher()
    assert m.add(_coll(10, -1, 0, 1.0), 0) is None and not m.groups  # no init seen: not grouped
    m.add_init(_init(10, 0))
    m.add_init(_init(11, 1, comm=0xD0))
    assert m.add(_coll(10, -1, 0, 1.0), 0) is None  # waiting for rank 1
    s = m.add(_coll(11, -1, 0, 4.0, comm=0xD0), 0)
    assert (s.rank, s.pid, s.spread_ns, s.cost_ns) == (1, 11, 3_000_000, 3_000_000)
    group = m.groups["nccl:" + "ab" * 16]
    assert (group.matched, group.ranks[1].last, group.ranks[0].waited_ns) == (1, 1, 3_000_000)
    assert m.add(_coll(10, -1, 1, 9.0, fn=SEND), 0) is None and m.add(_coll(11, -1, 1, 9.0, fn=SEND,
                                                                          comm=0xD0), 0) is None  # p2p: never


def test_a_rank_that_exits_leaves_no_entry_to_match(monkeypatch):
    monkeypatch.setattr(straggler_mod, "job_environment", lambda pid: "10.0.0.1:29500")
    m = TpMatcher()
    gloo = lambda pid, rank, seq, t: CollectiveCall(pid, pid, GLOO_ALLREDUCE, int(t * 1e6), 0, 0x50 + pid, 0, seq,
                                                    -1, rank, 2)  # noqa: E731
    assert m.add(gloo(20, 1, 7, 5.0), 0) is None
    m.drop_pending(20)
    assert m.add(gloo(21, 0, 7, 1.0), 0) is None  # the old rank 1's entry is gone, not matched with this one
    s = m.add(gloo(22, 1, 7, 2.0), 0)
    assert s is not None and s.group == "gloo:env 10.0.0.1:29500:2:0" and s.rank == 1
    assert m.groups[s.group].unmatched == 1


def _sync(tid, end_ms, wait_ms, prev_end_ms, first_launch_ms, launches=10):
    ms = lambda v: int(v * 1e6)  # noqa: E731
    return SyncCall(1, tid, SYNC, ms(end_ms - wait_ms), ms(wait_ms), 0, launches, 0, 0, ms(prev_end_ms),
                    ms(first_launch_ms), 0)


def test_host_steps_are_gpu_bound_when_the_wait_dominates():
    st = ProcessStats(recent_steps=8, gpu_bound_share=0.3)
    assert st.add_sync(_sync(5, 10, 1, 0, 0)) is None  # a thread's first sync: no step before it
    gpu = st.add_sync(_sync(5, 20, 6, 10, 10.5))
    cpu = st.add_sync(_sync(5, 30, 1, 20, 20.2))
    assert (gpu.bound, gpu.host_ns, gpu.idle_gap_ns) == ("gpu", 10_000_000, 500_000)
    assert (cpu.bound, cpu.wait_ns) == ("cpu", 1_000_000)
    odd = st.add_sync(_sync(5, 40, 1, 30, 29))  # a launch stamped before the previous sync ended: gap unknown
    assert odd.idle_gap_ns == -1
    assert st.host_steps == {"cpu": 2, "gpu": 1} and st.sync_wait_ns == 8_000_000
    st.set_thread_counts(5, launches=40, graphs=1)
    st.thread_gone(5, launches=42, graphs=1)  # the final counts come from the kernel's table
    assert (st.launches, st.graph_launches, st.threads) == (42, 1, {})


def _event(kind, start_ms, end_ms, **attrs):
    return Event(kind, "cuda", int(start_ms * 1e6), int(end_ms * 1e6), pid=1, tid=7, attrs=attrs)


def test_launches_and_stragglers_per_engine_step():
    steps = [Step(1, 7, 0, 10_000_000), Step(1, 7, 10_000_000, 20_000_000), Step(1, 0, 20_000_000, 30_000_000)]
    syncs = [_event("cuda.sync", 8, 9, launches=30, graph_launches=0),
             _event("cuda.sync", 18, 19, launches=28, graph_launches=0),
             _event("cuda.sync", 19.5, 19.9, launches=2, graph_launches=1),
             _event("cuda.sync", 25, 26, launches=5, graph_launches=0)]
    assert launches_per_step(steps, syncs) == [30, 31, 5]
    late = [_event("tp.straggler", 1, 3, rank=1, wait_ms=2.0), _event("tp.straggler", 4, 4.5, rank=0, wait_ms=0.5),
            _event("tp.straggler", 12, 13, rank=0, wait_ms=1.0)]
    assert straggler_per_step(steps, late) == [1, 0, None]


def test_config_keys_are_checked_by_name():
    with pytest.raises(ConfigError, match="launches"):
        CudaConfig(launches="sometimes")
    with pytest.raises(ConfigError, match=r"probes\.cuda\.libraries\[0\]"):
        agent_config.from_mapping({"probes": {"cuda": {"libraries": ["cupti"]}}})
    cfg = agent_config.from_mapping({"probes": {"enabled": ["cuda"], "cuda": {"launches": "off"}}})
    assert cfg.enabled_probes == ["cuda"] and cfg.probes["cuda"].launches == "off"
    assert "cuda" not in agent_config.from_mapping({}).enabled_probes  # opt-in


def test_launch_counting_off_attaches_no_launch_function():
    from gpusleuth.probes.cuda.probe import CudaProbe

    probe = CudaProbe(CudaConfig(launches="off", libraries=["driver"], uprobe_path="perf"))
    text = probe.defines()["FN_LIST"]
    assert f"X({FN_IDS['cuStreamSynchronize']})" in text and f"X({FN_IDS['cuLaunchKernel']})" not in text
    assert f"X({FN_IDS['ncclAllReduce']})" not in text  # nccl not asked for
