"""The NVTX injection library, loaded the way an engine would load it (NVTX_INJECTION64_PATH), against real NVTX
v3 clients: a C program (push/pop nesting, a domain with a registered string and a payload, a range started on
one thread and ended on another, a mark) and a torch.cuda.nvtx script. Ranges reach the agent's NVTX intake with
their nesting and with timestamps within 50 us of the ones the program read itself.

On a CPU-only torch build torch._C has no _nvtx: there the script's torch.cuda.nvtx calls go to a small NVTX v3
client built from the same headers and exposing the five functions libtorch_cuda binds (rangePushA, rangePop,
rangeStartA, rangeEnd, markA) -- the stand-in for the CUDA build, which is the hardware boundary here. On a GPU
host (benchmarks/gpu_session.sh stage nvtx) the script runs against torch's own NVTX."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest

from gpusleuth.agent.harness import wait_for
from gpusleuth.probes.nvtx import build
from gpusleuth.probes.nvtx.probe import NvtxConfig, NvtxProbe
from gpusleuth.probes.records import monotonic_ns

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None or not build.include_dirs(),
                                reason="needs gcc and the NVTX v3 headers (pip install nvidia-nvtx)")

PROGRAM = r"""
#include <nvtx3/nvToolsExt.h>
#include <pthread.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>
static unsigned long long now(void) {
    struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts); return ts.tv_sec * 1000000000ull + ts.tv_nsec;
}
static void busy(int us) { unsigned long long e = now() + us * 1000ull; while (now() < e) {} }
static nvtxRangeId_t cross;
static unsigned long long t[16];
static void *other(void *a) { (void)a; busy(300); t[13] = now(); nvtxRangeEnd(cross); t[14] = now(); return 0; }
int main(void) {
    t[0] = now(); nvtxRangePushA("outer"); t[1] = now();
    busy(500);
    t[2] = now(); nvtxRangePushA("inner \"quoted\""); t[3] = now();
    busy(200);
    t[4] = now(); nvtxRangePop(); t[5] = now();
    busy(100);
    t[6] = now(); nvtxRangePop(); t[7] = now();
    nvtxDomainHandle_t d = nvtxDomainCreateA("gs-test");
    nvtxStringHandle_t s = nvtxDomainRegisterStringA(d, "registered-step");
    nvtxEventAttributes_t a = {0};
    a.version = NVTX_VERSION; a.size = NVTX_EVENT_ATTRIB_STRUCT_SIZE; a.category = 7;
    a.messageType = NVTX_MESSAGE_TYPE_REGISTERED; a.message.registered = s;
    a.payloadType = NVTX_PAYLOAD_TYPE_INT64; a.payload.llValue = 42;
    t[8] = now(); nvtxDomainRangePushEx(d, &a); t[9] = now();
    busy(100);
    t[10] = now(); nvtxDomainRangePop(d); t[11] = now();
    cross = nvtxRangeStartA("cross-thread"); t[12] = now();
    pthread_t th; pthread_create(&th, 0, other, 0); pthread_join(th, 0);
    nvtxMarkA("mark");
    printf("%d", getpid());
    for (int i = 0; i < 15; i++) printf(" %llu", t[i]);
    printf("\n"); fflush(stdout);
    usleep(300000);  /* the library's flusher sends every 10 ms */
    return 0;
}
"""

CLIENT = r"""
#include <nvtx3/nvToolsExt.h>
int rangePushA(const char *m) { return nvtxRangePushA(m); }
int rangePop(void) { return nvtxRangePop(); }
unsigned long long rangeStartA(const char *m) { return nvtxRangeStartA(m); }
void rangeEnd(unsigned long long id) { nvtxRangeEnd(id); }
void markA(const char *m) { nvtxMarkA(m); }
"""

TORCH_SCRIPT = r"""
import ctypes, os, sys, time
import torch
import torch.cuda.nvtx as nvtx
if not hasattr(torch._C, "_nvtx"):  # CPU build: the NVTX v3 client stands in for libtorch_cuda's
    lib = ctypes.CDLL(sys.argv[1])
    lib.rangeStartA.restype = ctypes.c_ulonglong
    lib.rangeEnd.argtypes = [ctypes.c_ulonglong]
    class Client:
        rangePushA = staticmethod(lambda m: lib.rangePushA(m.encode()))
        rangePop = staticmethod(lambda: lib.rangePop())
        rangeStartA = staticmethod(lambda m: lib.rangeStartA(m.encode()))
        rangeEnd = staticmethod(lambda i: lib.rangeEnd(i))
        markA = staticmethod(lambda m: lib.markA(m.encode()))
    nvtx._nvtx = Client()
x = torch.ones(64, 64)
t0 = time.monotonic_ns(); nvtx.range_push("forward"); t1 = time.monotonic_ns()
for i in range(3):
    with nvtx.range("layer {}", i):
        x = x @ x / 64
rid = nvtx.range_start("sample")
nvtx.mark("token")
nvtx.range_end(rid)
t2 = time.monotonic_ns(); nvtx.range_pop(); t3 = time.monotonic_ns()
print(os.getpid(), t0, t1, t2, t3, flush=True)
time.sleep(0.3)
"""


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    return build.build(tmp_path_factory.mktemp("nvtx") / "libgsnvtx.so")


@pytest.fixture
def intake(tmp_path):
    probe = NvtxProbe(NvtxConfig(socket=str(tmp_path / "nvtx.sock")))
    probe.start()
    yield probe
    probe.stop()


def _compile(tmp_path, source: str, name: str, shared: bool) -> str:
    src = tmp_path / f"{name}.c"
    src.write_text(source)
    out = tmp_path / name
    flags = ["-shared", "-fPIC"] if shared else []
    subprocess.run(["gcc", "-O2", *flags, f"-I{build.include_dirs()[0]}", str(src), "-o", str(out), "-ldl",
                    "-pthread"], check=True)
    return str(out)


def _events(probe: NvtxProbe, pid: int, n: int) -> list:
    got: list = []
    def poll():
        got.extend(e for e in probe.poll(monotonic_ns()).events if e.pid == pid)
        return len(got) >= n
    wait_for(poll, timeout=15)
    return got


def _env(library, probe) -> dict:
    return {**os.environ, "NVTX_INJECTION64_PATH": str(library), "GPUSLEUTH_NVTX_SOCKET": probe.config.socket}


def test_c_program_ranges_arrive_nested_on_the_agents_clock(library, intake, tmp_path):
    prog = _compile(tmp_path, PROGRAM, "nvtx_prog", shared=False)
    out = subprocess.run([prog], env=_env(library, intake), capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    pid, *t = map(int, out.stdout.split())
    by_name = {e.attrs["name"]: e for e in _events(intake, pid, 5)}
    outer, inner = by_name["outer"], by_name['inner "quoted"']
    assert (outer.attrs["depth"], inner.attrs["depth"]) == (0, 1) and outer.kind == "nvtx.range"
    assert outer.start_ns <= inner.start_ns < inner.end_ns <= outer.end_ns
    assert outer.tid == inner.tid == pid  # the main thread
    # each timestamp lies between the program's own reads around the call, within 50 us of them
    for ev_t, lo, hi in ((outer.start_ns, t[0], t[1]), (inner.start_ns, t[2], t[3]), (inner.end_ns, t[4], t[5]),
                         (outer.end_ns, t[6], t[7])):
        assert lo <= ev_t <= hi and min(ev_t - lo, hi - ev_t) < 50_000, (ev_t, lo, hi)
    step = by_name["registered-step"]
    assert step.attrs["domain"] == "gs-test" and step.attrs["payload"] == 42 and step.attrs["category"] == 7
    assert t[8] <= step.start_ns <= t[9] and t[10] <= step.end_ns <= t[11]
    cross = by_name["cross-thread"]
    assert cross.attrs["depth"] == -1 and cross.start_ns <= t[12] and t[13] <= cross.end_ns <= t[14]
    assert by_name["mark"].kind == "nvtx.mark" and by_name["mark"].start_ns == by_name["mark"].end_ns
    snap = intake.poll(monotonic_ns()).snapshot
    assert snap.ranges_total == 5 and snap.decode_errors_total == 0


def test_torch_cuda_nvtx_script_ranges_arrive(library, intake, tmp_path):
    client = _compile(tmp_path, CLIENT, "libnvtxclient.so", shared=True)
    out = subprocess.run([sys.executable, "-c", TORCH_SCRIPT, client], env=_env(library, intake),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    pid, t0, t1, t2, t3 = map(int, out.stdout.split())
    events = _events(intake, pid, 6)
    names = sorted(e.attrs["name"] for e in events)
    assert names == ["forward", "layer 0", "layer 1", "layer 2", "sample", "token"]
    forward = next(e for e in events if e.attrs["name"] == "forward")
    layers = [e for e in events if e.attrs["name"].startswith("layer")]
    assert all(e.attrs["depth"] == 1 and forward.start_ns < e.start_ns < e.end_ns < forward.end_ns for e in layers)
    assert t0 <= forward.start_ns <= t1 and t2 <= forward.end_ns <= t3
    assert forward.end_ns - t2 < 50_000 + (t3 - t2)  # Python's own call overhead is in the bracket


def test_no_agent_listening_never_blocks_the_program(library, tmp_path):
    prog = _compile(tmp_path, PROGRAM, "nvtx_prog", shared=False)
    env = {**os.environ, "NVTX_INJECTION64_PATH": str(library), "GPUSLEUTH_NVTX_SOCKET": str(tmp_path / "none")}
    t = time.monotonic()
    out = subprocess.run([prog], env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and time.monotonic() - t < 10


def test_a_live_socket_is_never_taken_over_and_a_stale_one_is(tmp_path):
    import socket as s
    from gpusleuth.probes.base import ProbeUnavailable
    path = str(tmp_path / "nvtx.sock")
    live = s.socket(s.AF_UNIX, s.SOCK_DGRAM)
    live.bind(path)  # another agent, alive
    try:
        with pytest.raises(ProbeUnavailable, match="probes.nvtx.socket"):
            NvtxProbe(NvtxConfig(socket=path)).start()
    finally:
        live.close()  # the file stays behind, as a killed agent's does
    assert os.path.exists(path)
    second = NvtxProbe(NvtxConfig(socket=path))
    second.start()
    try:
        with s.socket(s.AF_UNIX, s.SOCK_DGRAM) as c:
            c.sendto(b'{"v":1,"pid":1,"ranges":[]}', path)
        assert wait_for(lambda: second.poll(monotonic_ns()).snapshot.datagrams_total == 1, timeout=5)
    finally:
        second.stop()
