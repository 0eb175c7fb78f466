"""Memory pressure: the engine's memory cgroup squeezed to its anonymous memory plus a fraction of its page
cache (v1 memory.limit_in_bytes with the group's OOM killer off; v2 memory.high), so the kernel reclaims the
engine's file pages (its libraries' code) and the engine faults them back in. Bounded: anonymous memory is never
squeezed, and the limit is lifted at the end of the window. Major faults and limit hits are recorded."""
from pathlib import Path

import cgroups
from fault import Fault, engine_culprit

MIN_CACHE = 16 << 20  # always leave this much page cache above the anonymous memory


def major_faults(pid: int) -> int:
    """Major page faults of `pid` so far (/proc/PID/stat field 12)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[9])


class MemorySqueeze(Fault):
    def start(self, stack, params):
        cg = stack.cg_engine
        use = cg.memory_usage()
        limit = use["anon"] + max(MIN_CACHE, int(params["cache_fraction"] * use["file"]))
        for _ in range(4):  # v1 refuses (EBUSY) a limit it cannot reclaim down to: leave more cache then
            try:
                cg.set_memory_limit(limit)
                break
            except cgroups.CgroupError:
                limit += MIN_CACHE
        self.state.update(events=cg.memory_events(), majflt=major_faults(stack.engine.pid), limit=limit, use=use)
        return engine_culprit(stack)

    def stop(self, stack):
        cg, st = stack.cg_engine, self.state
        cg.set_memory_limit(None)
        after = cg.memory_events()
        return {"limit_mb": round(st["limit"] / 2**20, 1), "anon_mb": round(st["use"]["anon"] / 2**20, 1),
                "cache_mb": round(st["use"]["file"] / 2**20, 1),
                "major_faults": major_faults(stack.engine.pid) - st["majflt"],
                "limit_events": {k: after[k] - st["events"].get(k, 0) for k in after}}


FAULT = MemorySqueeze("memory_squeeze", "memory_reclaim",
                      {"low": {"cache_fraction": 0.5}, "high": {"cache_fraction": 0.1}},
                      "engine memory cgroup limited to anon + 50 % / 10 % of its page cache", needs=("cgroup",))
