"""Memory pressure: the engine's memory cgroup squeezed to its anonymous memory plus 8 MiB of page cache (v1
memory.limit_in_bytes with the group's OOM killer off; v2 memory.high), so the engine's own allocations go through
direct reclaim of its page cache (its own copy of torch: stack.py `privlib`) and it faults its code back in. The
working set sits on a cliff (here +30 MiB thrashed or did nothing depending on 5 MiB of anon growth), so the
intensity is the squeeze's duty cycle: 400 ms of every second (low) or the whole window (high). Before each window that cache is read back in (charged to the engine's cgroup), so every window
starts from the same full cache. Bounded: anonymous memory is never squeezed, and the limit is lifted at the end
of the window. Major faults and limit hits are recorded."""
import os
import subprocess
from pathlib import Path

import cgroups
from fault import Fault, Pulse, engine_culprit

STEP = 16 << 20  # v1 refuses (EBUSY) a limit it cannot reclaim down to: retry with this much more


def major_faults(pid: int) -> int:
    """Major page faults of `pid` so far (/proc/PID/stat field 12)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[9])


def squeeze(cg: cgroups.Group, limit: int) -> int:
    """Set the limit, a little higher each time v1 refuses it; returns the limit set."""
    for _ in range(4):
        try:
            cg.set_memory_limit(limit)
            return limit
        except cgroups.CgroupError:
            limit += STEP
    return limit


class MemorySqueeze(Fault):
    def start(self, stack, params):
        cg = stack.cg_engine
        for d in stack.engine_path:  # refill the cache the last squeeze took (before onset, off the engine's CPU)
            subprocess.run(f"find {d} -type f -exec cat {{}} + > /dev/null", shell=True, check=False,
                           preexec_fn=lambda: (cg.add(os.getpid()), os.sched_setaffinity(0, stack.opts.side_cpus)))
        use = cg.memory_usage()
        limit = use["anon"] + (params["cache_mb"] << 20)
        self.state.update(events=cg.memory_events(), majflt=major_faults(stack.engine.pid), use=use,
                          limit=squeeze(cg, limit))
        if params["hold_ms"] < 1000:
            self.state["pulse"] = Pulse(lambda: squeeze(cg, limit), lambda: cg.set_memory_limit(None),
                                        params["hold_ms"] / 1000, 1.0).start()
        return engine_culprit(stack)

    def stop(self, stack):
        cg, st = stack.cg_engine, self.state
        if "pulse" in st:
            st.pop("pulse").stop()
        cg.set_memory_limit(None)
        after = cg.memory_events()
        return {"limit_mb": round(st["limit"] / 2**20, 1), "anon_mb": round(st["use"]["anon"] / 2**20, 1),
                "cache_mb": round(st["use"]["file"] / 2**20, 1),
                "major_faults": major_faults(stack.engine.pid) - st["majflt"],
                "limit_events": {k: after[k] - st["events"].get(k, 0) for k in after}}


FAULT = MemorySqueeze("memory_squeeze", "memory_reclaim",
                      {"low": {"cache_mb": 8, "hold_ms": 400}, "high": {"cache_mb": 8, "hold_ms": 1000}},
                      "engine memory cgroup limited to its anon memory + 8 MiB of cache, 400 ms each s / always",
                      needs=("cgroup", "privlib"))
