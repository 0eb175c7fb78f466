"""The /metrics endpoint as a scraper sees it: bodies rendered off the request path (a scrape returns bytes, it does
not render), text and OpenMetrics by Accept, gzip when asked, the same samples prometheus_client renders itself,
histograms that follow their snapshot, and the series budget reported."""
from __future__ import annotations

import gzip
import urllib.error
import urllib.request

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gpusleuth.exporters.base import ExportOptions
from gpusleuth.exporters.server import ExporterServer
from gpusleuth.probes.bpf.log2_hist import Log2Counts
from gpusleuth.probes.kernel.snapshot import SyscallProcess, SyscallSnapshot

OM = "application/openmetrics-text; version=1.0.0; charset=utf-8"


class Store:
    def __init__(self) -> None:
        self.snaps: dict = {}

    def snapshot(self, source: str):
        return self.snaps.get(source)


def _snap(count: int, num_procs: int = 3) -> SyscallSnapshot:
    procs = {100 + i: SyscallProcess(f"w{i}", {"read": Log2Counts({12: count, 20: 1}, count + 1, 5000 * count),
                                              "getppid": Log2Counts({9: 7}, 7, 700)}) for i in range(num_procs)}
    return SyscallSnapshot(t_ns=1, processes=procs, exited={"gone": SyscallProcess("gone", {
        "openat": Log2Counts({11: 3}, 3, 3000)})})


@pytest.fixture
def server():
    store = Store()
    store.snaps["syscalls"] = _snap(10)
    srv = ExporterServer(store, "127.0.0.1", 0, render_interval_s=0.2, options=ExportOptions(series_budget=200))
    srv.start()
    yield srv, store
    srv.stop()


def _get(url: str, headers: dict | None = None):
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as resp:
        return resp.headers, resp.read()


def _values(text: str) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def test_scrapes_return_what_prometheus_client_renders_without_rendering_each_time(server):
    srv, store = server
    headers, body = _get(srv.url)
    assert headers["Content-Type"].startswith("text/plain")
    assert _values(body.decode()) == _values(generate_latest(srv.registry).decode())
    renders = srv.exposition.renders
    for _ in range(20):
        _get(srv.url)
    assert srv.exposition.renders - renders <= 2  # the thread renders every 0.2 s; 20 scrapes render nothing
    headers, om = _get(srv.url, {"Accept": OM, "Accept-Encoding": "gzip"})
    assert headers["Content-Type"].startswith("application/openmetrics-text") and headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(om).rstrip().endswith(b"# EOF")


def test_a_histogram_follows_its_snapshot_and_exited_processes_fold_by_comm(server):
    srv, store = server
    read = ("gpusleuth_syscall_latency_seconds_count", (("comm", "w0"), ("pid", "100"), ("syscall", "read")))
    assert _values(_get(srv.url)[1].decode())[read] == 11
    store.snaps["syscalls"] = _snap(40)

    def fresh():
        return _values(_get(srv.url)[1].decode()).get(read) == 41
    from gpusleuth.agent.harness import wait_for
    wait_for(fresh, timeout=5, interval=0.05)
    values = _values(_get(srv.url)[1].decode())
    gone = ("gpusleuth_syscall_latency_seconds_count", (("comm", "gone"), ("pid", "exited"), ("syscall", "openat")))
    assert values[gone] == 3


def test_the_series_budget_leaves_whole_series_out_and_says_how_many(server):
    srv, store = server
    for c in srv.registry._collector_to_names:
        if hasattr(c, "options"):
            c.options.series_budget = 60  # one ExportOptions shared by every collector
    store.snaps["syscalls"] = _snap(10, num_procs=20)  # 41 histograms of 17 samples, budget 60
    from gpusleuth.agent.harness import wait_for
    def over_budget() -> str | None:
        text = _get(srv.url)[1].decode()
        return text if 'gpusleuth_exporter_series_over_budget{source="syscalls"} 0' not in text else None
    text = wait_for(over_budget, timeout=5, interval=0.05)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    hist = families["gpusleuth_syscall_latency_seconds"].samples
    assert len(hist) == 51  # three whole histograms fit in 60
    over = [s for s in families["gpusleuth_exporter_series_over_budget"].samples if s.labels["source"] == "syscalls"]
    assert over[0].value == 41 * 17 - 51  # and the lost{what} counters after them are kept
    series = {tuple(sorted((k, v) for k, v in s.labels.items() if k != "le")) for s in hist}
    assert len(series) == 3 and all(s.name.endswith(("_bucket", "_count", "_sum")) for s in hist)


def test_methods_other_than_get_are_refused(server):
    srv, _ = server
    req = urllib.request.Request(srv.url, data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=5)
    assert err.value.code == 405
