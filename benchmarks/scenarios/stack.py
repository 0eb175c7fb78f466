"""Everything a run stands on: the engine's cgroups and network namespace, a loop-device filesystem for the I/O
faults, the agent (one per run), the engine (one per engine setup) and the load generator. Everything made here is
undone in `close()`, by pid and by name, also after an error."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

import cgroups
from agentq import AgentQuery
import netns as netns_mod
from fault import engine_fault_keys
from gpusleuth.agent.harness import free_port, write_config
from procs import Actor, AgentProc, Engine, LoadGen, Tools

SETUPS = {"default": [], "tp2": ["--tp", "2"]}  # engine setups the scenarios ask for
BREAK_HOOK = '''# Written by benchmarks/scenarios (--break-verdicts): the agent's explain answers with no verdicts.
import sys
class _Break:
    def find_spec(self, name, path=None, target=None):
        if name != "gpusleuth.agent.control.methods":
            return None
        spec = next(s for f in sys.meta_path if f is not self and hasattr(f, "find_spec")
                    for s in [f.find_spec(name, path, target)] if s)
        run = spec.loader.exec_module
        def exec_module(module):
            run(module)
            real = module.ControlApi.explain
            def explain(self, *a, **k):
                return {**real(self, *a, **k), "verdicts": []}
            module.ControlApi.explain = explain
            if hasattr(module.ControlApi, "incidents"):
                module.ControlApi.incidents = lambda self, *a, **k: []
        spec.loader.exec_module = exec_module
        return spec
sys.meta_path.insert(0, _Break())
'''


@dataclass
class StackOptions:
    tools: Tools
    device: str = "cpu"
    engine_cpus: list[int] = field(default_factory=list)
    side_cpus: list[int] = field(default_factory=list)  # agent, load generator, actors
    load_args: list[str] = field(default_factory=list)
    is_verdicts_broken: bool = False
    needs: set[str] = field(default_factory=set)  # union of the selected scenarios' needs


class Stack:
    def __init__(self, opts: StackOptions) -> None:
        self.opts = opts
        self.tmp = Path(tempfile.mkdtemp(prefix="gs-scn-"))
        self.num = os.getpid()
        self.errors: dict[str, str] = {}
        self.cg_parent = self.cg_engine = None
        self.netns: netns_mod.EngineNetns | None = None
        self.loopfs: dict | None = None
        self.agent: AgentProc | None = None
        self.engine: Engine | None = None
        self.load: LoadGen | None = None
        self.actors: list[Actor] = []
        self.setup_name = ""
        self.fault_keys: set[str] = set()
        self.engine_path: list[str] = []  # PYTHONPATH entries ahead of the tools' own, for the engine only

    # ---- host pieces ----------------------------------------------------------------------------------------
    def open(self) -> "Stack":
        try:
            self.cg_parent = cgroups.Group(f"gs-scn-{self.num}").create()
            self.cg_engine = cgroups.Group(f"gs-scn-{self.num}/engine").create()
        except (cgroups.CgroupError, OSError) as exc:
            self.errors["cgroup"] = f"cgroups unavailable: {exc}"
        try:
            self.netns = netns_mod.for_this_run().create()
        except (subprocess.CalledProcessError, OSError) as exc:
            self.errors["netns"] = f"network namespace unavailable: {getattr(exc, 'stderr', '') or exc}"
            self.netns = None
        if "loopfs" in self.opts.needs:
            self._make_loopfs()
        if "privlib" in self.opts.needs and self.cg_engine and self.opts.device == "cpu":
            self._private_torch()
        self._start_agent()
        return self

    def _make_loopfs(self) -> None:
        """A 1 GiB ext4 on a loop device: the I/O faults' own block device, throttled and stormed at will."""
        img, mnt = self.tmp / "disk.img", self.tmp / "loopfs"
        try:
            with open(img, "wb") as f:
                f.truncate(1 << 30)
            dev = subprocess.run(["losetup", "-f", "--show", str(img)], capture_output=True, text=True,
                                 check=True).stdout.strip()
            self.loopfs = {"dev": dev, "dir": str(mnt)}
            subprocess.run(["mkfs.ext4", "-q", "-F", dev], capture_output=True, check=True)
            mnt.mkdir()
            subprocess.run(["mount", dev, str(mnt)], capture_output=True, check=True)
            rdev = os.stat(dev).st_rdev
            self.loopfs["majmin"] = f"{os.major(rdev)}:{os.minor(rdev)}"
        except (subprocess.CalledProcessError, OSError) as exc:
            self.errors["loopfs"] = f"no loop-device filesystem: {getattr(exc, 'stderr', '') or exc}"

    def _private_torch(self) -> None:
        """A copy of torch for the engine, written from inside the engine's memory cgroup: page cache is charged
        to the cgroup that first touches it, and the shared venv's torch was touched by everyone, so only a private
        copy puts the engine's own code pages where a squeeze of its cgroup can reclaim them (as a container's
        image layer would)."""
        find = "import torch, os; print(os.path.dirname(torch.__file__))"
        res = subprocess.run([self.opts.tools.python, "-c", find], capture_output=True, text=True,
                             env=self.opts.tools.environ())
        dst = self.tmp / "privlib"
        try:
            dst.mkdir()
            subprocess.run(["cp", "-a", res.stdout.strip(), str(dst / "torch")], check=True, capture_output=True,
                           preexec_fn=lambda: self.cg_engine.add(os.getpid()))
            self.engine_path.insert(0, str(dst))
        except (subprocess.CalledProcessError, OSError) as exc:
            self.errors["privlib"] = f"no private copy of torch ({res.stderr.strip()[-200:]}): {exc}"

    def _start_agent(self) -> None:
        extra = f'[probes.spans]\nsocket = "{self.tmp}/spans.sock"\nrecent_requests = 5000\n'
        config = write_config(self.tmp, None, extra=extra, flush_s=1.0)
        env = {}
        if self.opts.is_verdicts_broken:
            hook = self.tmp / "break"
            hook.mkdir()
            (hook / "sitecustomize.py").write_text(BREAK_HOOK)
            env["PYTHONPATH"] = ":".join(p for p in (str(hook), self.opts.tools.env.get("PYTHONPATH", "")) if p)
        self.agent = AgentProc(self.opts.tools, config, self.tmp, self.opts.side_cpus, env)

    # ---- the engine and its load ----------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return self.engine.url if self.engine else ""

    def start_engine(self, setup: str) -> None:
        """Engine `setup` (SETUPS) behind the veth, in its cgroup, on the engine CPUs; then the load generator."""
        self.stop_engine()
        port = free_port()
        host = self.netns.engine_addr if self.netns else "127.0.0.1"
        cmd = [self.opts.tools.python, "-m", "gpusleuth.engine", "serve", "--preset", "tiny", "--host", host,
               "--port", str(port), "--served-model-name", "tiny", "--max-num-seqs", "8", *SETUPS[setup]]
        if self.opts.device == "cpu":
            cmd += ["--device", "cpu", "--cpu-threads", "1", "--num-cpu-blocks", "96"]
        else:
            cmd += ["--device", "cuda", "--num-gpu-blocks", "96"]
        if self.opts.engine_cpus:
            cmd = ["taskset", "-c", ",".join(map(str, self.opts.engine_cpus)), *cmd]
        if self.netns:
            cmd = self.netns.exec_prefix() + cmd
        env = self.opts.tools.environ(GPUSLEUTH_SPAN_SOCKET=f"{self.tmp}/spans.sock")
        if self.engine_path:
            env["PYTHONPATH"] = ":".join([*self.engine_path, *filter(None, [env.get("PYTHONPATH", "")])])
        join = (lambda: self.cg_engine.add(os.getpid())) if self.cg_engine else None
        self.engine = Engine(cmd, f"http://{host}:{port}", env, join, self.tmp / f"engine-{setup}.log")
        self.engine.wait_ready(900)
        self.setup_name, self.fault_keys = setup, engine_fault_keys(self.url)
        self.load = LoadGen(self.opts.tools.python, self.url, self.tmp / f"load-{setup}.jsonl", self.opts.load_args,
                            self.opts.side_cpus)
        AgentQuery(self.agent.client).wait_watched(self.engine.pid)

    def stop_engine(self) -> None:
        if self.load:
            self.load.stop()
            self.load = None
        if self.engine:
            self.engine.stop()
            self.engine = None

    def actor(self, role: str, *args: str, in_netns: bool = False, python: str | None = None) -> Actor:
        prefix = self.netns.exec_prefix() if in_netns and self.netns else None
        a = Actor(role, *args, prefix=prefix, python=python)
        self.actors.append(a)
        return a

    def stop_actor(self, a: Actor) -> float:
        self.actors.remove(a)
        return a.stop()

    # ---- facts for faults and scoring -----------------------------------------------------------------------
    def lacks(self, needs: tuple[str, ...]) -> str | None:
        """Why a scenario with `needs` cannot run here (None: it can). Drills are checked once an engine runs."""
        for need in needs:
            if need in self.errors:
                return self.errors[need]
            if need == "netns" and not self.netns:
                return "no network namespace"
            if need == "privlib" and self.opts.device == "cpu" and not self.engine_path:
                return self.errors.get("privlib", "no private copy of torch")
            if need == "loopfs" and not (self.loopfs and "majmin" in self.loopfs):
                return self.errors.get("loopfs", "no loop-device filesystem")
            if need == "gpu" and self.opts.device != "cuda":
                return "no GPU here (CPU run): run with --gpu on a GPU host"
            if need == "tp2" and self.opts.device == "cuda" and _num_gpus() < 2:
                return "TP=2 needs two GPUs on this host"
            if need.startswith("drill:") and self.engine and need[6:] not in self.fault_keys:
                return (f"the engine has no {need[6:]!r} drill (GET /debug/faults lists {sorted(self.fault_keys)}):"
                        " engine/faults.py must add it")
        return None

    def made(self) -> dict[str, object]:
        """Everything this run creates on the host (close() removes it), for the record and for checking."""
        dirs = [str(d) for g in (self.cg_engine, self.cg_parent) if g for d in g.dirs.values()]
        return {"cgroups": dirs, "netns": self.netns.name if self.netns else None, "tmp": str(self.tmp),
                "loop": (self.loopfs or {}).get("dev")}

    def engine_cgroup_path(self) -> str:
        return self.cg_engine.path if self.cg_engine else ""

    def our_pids(self) -> list[int]:
        pids = [os.getpid()]
        for p in (self.agent, self.load):
            if p:
                pids.append(p.pid)
        if self.engine:
            pids += [self.engine.pid] + [c.pid for c in _children(self.engine.pid)]
        return pids + [a.pid for a in self.actors]

    # ---- teardown ---------------------------------------------------------------------------------------------
    def close(self) -> None:
        steps = [lambda: [self.stop_actor(a) for a in list(self.actors)], self.stop_engine,
                 lambda: self.agent and self.agent.stop(), self._remove_loopfs,
                 lambda: self.netns and self.netns.delete(),
                 lambda: self.cg_engine and self.cg_engine.remove(), lambda: self.cg_parent and self.cg_parent.remove()]
        for step in steps:
            try:
                step()
            except Exception as exc:  # teardown goes on: each later step frees something else
                print(f"cleanup step failed: {exc!r}", flush=True)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _remove_loopfs(self) -> None:
        if not self.loopfs:
            return
        for _ in range(20):
            if subprocess.run(["umount", self.loopfs["dir"]], capture_output=True).returncode == 0 or \
                    not os.path.ismount(self.loopfs["dir"]):
                break
            time.sleep(0.5)
        subprocess.run(["losetup", "-d", self.loopfs["dev"]], capture_output=True)


def _children(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _num_gpus() -> int:
    out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
    return sum(line.startswith("GPU") for line in out.stdout.splitlines())
