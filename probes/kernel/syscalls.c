// Per-(process, syscall) log2 latency histograms and slow-syscall events, from raw_syscalls tracepoints.
// Specialised by the loader with #defines: FILTER (0 = every process, 1 = watched tgids/cgroups only),
// SLOW_NS (slow-event threshold), MAX_THREADS, MAX_KEYS, USE_RINGBUF, USE_TASK_STORAGE (per-thread start time in
// task-local storage, kernel >= 5.11 with BTF: no hash insert/delete per syscall), PERCPU_HIST, INHERIT_WATCH
// (lifecycle.h: fork / exec / exit of watched processes).
#include <uapi/linux/ptrace.h>
#include <linux/sched.h>
#include "common.h"

struct start_t {
    u64 ts;
    u64 nr;
};

struct hist_key_t {
    u32 tgid;
    u32 nr;
    u32 slot;   // bpf_log2l(ns): slot s holds [2^(s-1), 2^s) ns
    u32 pad;
};

struct hist_val_t {
    u64 count;
    u64 sum_ns;
};

struct slow_t {
    u32 tgid;
    u32 tid;
    u64 start_ns;
    u64 dur_ns;
    u32 nr;
    char comm[TASK_COMM_LEN];
};

#if USE_TASK_STORAGE
BPF_TASK_STORAGE(starts, struct start_t);
#else
BPF_TABLE("lru_hash", u32, struct start_t, starts, MAX_THREADS);
#endif
#if PERCPU_HIST
BPF_PERCPU_HASH(hist, struct hist_key_t, struct hist_val_t, MAX_KEYS);
#else
BPF_HASH(hist, struct hist_key_t, struct hist_val_t, MAX_KEYS);
#endif
BPF_HASH(watched, u32, u8, 65536);
BPF_HASH(watched_cgroups, u64, u8, 1024);
#include "lifecycle.h"
EVENT_OUTPUT(slow_events, 64);  // lost[0]: histogram keys that did not fit, lost[1]: slow events the buffer could not take

TRACEPOINT_PROBE(raw_syscalls, sys_enter) {
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32, tid = (u32)id;
#if FILTER
    if (!watched.lookup(&tgid)) {
        u64 cg = bpf_get_current_cgroup_id();
        if (!watched_cgroups.lookup(&cg))
            return 0;
    }
#endif
#if USE_TASK_STORAGE
    struct start_t *s = starts.task_storage_get(bpf_get_current_task_btf(), 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
    if (!s)
        return 0;
    s->ts = bpf_ktime_get_ns();
    s->nr = args->id;
#else
    struct start_t s = {.ts = bpf_ktime_get_ns(), .nr = args->id};
    starts.update(&tid, &s);
#endif
    return 0;
}

TRACEPOINT_PROBE(raw_syscalls, sys_exit) {
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32, tid = (u32)id;
#if USE_TASK_STORAGE
    struct start_t *s = starts.task_storage_get(bpf_get_current_task_btf(), 0, 0);
    if (!s || !s->ts)
        return 0;
    u64 now = bpf_ktime_get_ns();
    u64 ts = s->ts, nr = s->nr;
    s->ts = 0;  // consumed: an exit without a traced enter (attach mid-syscall, unwatched) is ignored
#else
    struct start_t *s = starts.lookup(&tid);
    if (!s)
        return 0;
    u64 now = bpf_ktime_get_ns();
    u64 ts = s->ts, nr = s->nr;
    starts.delete(&tid);
#endif
    u64 delta = now - ts;

    struct hist_key_t key = {.tgid = tgid, .nr = (u32)nr, .slot = bpf_log2l(delta)};
    struct hist_val_t zero = {};
    struct hist_val_t *v = hist.lookup_or_try_init(&key, &zero);
    if (v) {
#if PERCPU_HIST
        v->count += 1;     // this CPU's own copy: no atomics, no cache-line bouncing between threads
        v->sum_ns += delta;
#else
        __sync_fetch_and_add(&v->count, 1);
        __sync_fetch_and_add(&v->sum_ns, delta);
#endif
    } else {
        count_lost(0);
    }

    if (delta >= SLOW_NS) {
        struct slow_t e = {.tgid = tgid, .tid = tid, .start_ns = ts, .dur_ns = delta, .nr = (u32)nr};
        bpf_get_current_comm(&e.comm, sizeof(e.comm));
#if USE_RINGBUF
        if (slow_events.ringbuf_output(&e, sizeof(e), 0) != 0)
            count_lost(1);
#else
        if (slow_events.perf_submit(args, &e, sizeof(e)) != 0)
            count_lost(1);
#endif
    }
    return 0;
}
