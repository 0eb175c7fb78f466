// Run-queue latency per watched process (log2 histograms) and per-thread off-CPU / run-queue time, from the
// sched tracepoints. Specialised by the loader: FILTER, SLOW_RUNQ_NS, MAX_THREADS, USE_RINGBUF.
#include <uapi/linux/ptrace.h>
#include <linux/sched.h>
#include "common.h"

#define CLONE_THREAD_FLAG 0x00010000
// sched_switch's prev_state: 0 or TASK_REPORT_MAX (0x100, "R+": preempted) both mean still runnable.
#define REPORT_MAX 0x100

struct hist_key_t {
    u32 tgid;
    u32 slot;
};

struct hist_val_t {
    u64 count;
    u64 sum_ns;
};

struct thread_t {
    u64 runq_ns;
    u64 offcpu_ns;
    u64 switches;
    u32 tgid;
    u32 pad;
};

struct delay_t {
    u32 tgid;
    u32 tid;
    u64 start_ns;
    u64 dur_ns;
    u32 prev_pid;       // the task that gave up the CPU to it: often the neighbour it waited behind
    char comm[TASK_COMM_LEN];
    char prev_comm[TASK_COMM_LEN];
};

BPF_HASH(watched, u32, u8, 65536);
BPF_TABLE("lru_hash", u32, u32, threads, MAX_THREADS);   // tid -> tgid of watched threads
BPF_TABLE("lru_hash", u32, u64, enqueued, MAX_THREADS);  // tid -> when it became runnable
BPF_TABLE("lru_hash", u32, u64, blocked, MAX_THREADS);   // tid -> when it went off-CPU blocked
BPF_HASH(hist, struct hist_key_t, struct hist_val_t, 65536);
BPF_HASH(thread_stats, u32, struct thread_t, MAX_THREADS);
EVENT_OUTPUT(delays, 16);

static __always_inline u32 *watched_tgid(u32 tid) {
    return threads.lookup(&tid);
}

static __always_inline struct thread_t *stats_of(u32 tid, u32 tgid) {
    struct thread_t zero = {.tgid = tgid};
    struct thread_t *t = thread_stats.lookup_or_try_init(&tid, &zero);
    if (!t)
        count_lost(0);
    return t;
}

// A new thread of a watched process is watched from its first wakeup.
TRACEPOINT_PROBE(task, task_newtask) {
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    if (!(args->clone_flags & CLONE_THREAD_FLAG))
        return 0;
#if FILTER
    if (!watched.lookup(&tgid))
        return 0;
#endif
    u32 tid = args->pid;
    threads.update(&tid, &tgid);
    return 0;
}

static __always_inline int on_wakeup(u32 tid) {
    if (!watched_tgid(tid))
        return 0;
    u64 now = bpf_ktime_get_ns();
    enqueued.update(&tid, &now);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_wakeup) { return on_wakeup(args->pid); }
TRACEPOINT_PROBE(sched, sched_wakeup_new) { return on_wakeup(args->pid); }

TRACEPOINT_PROBE(sched, sched_switch) {
    u64 now = bpf_ktime_get_ns();
    u32 prev = args->prev_pid, next = args->next_pid;

    // prev is the current task: its tgid is known here, so this is where threads enter the map.
    u32 prev_tgid = bpf_get_current_pid_tgid() >> 32;
    if (prev != 0) {
#if FILTER
        int is_watched = watched.lookup(&prev_tgid) != 0;
#else
        int is_watched = 1;
#endif
        if (is_watched) {
            if (!threads.lookup(&prev))
                threads.update(&prev, &prev_tgid);
            long state = args->prev_state;
            if (state == 0 || (state & REPORT_MAX))
                enqueued.update(&prev, &now);     // preempted: still runnable, waiting again
            else
                blocked.update(&prev, &now);
        }
    }

    if (next == 0)
        return 0;
    u32 *tgidp = watched_tgid(next);
    if (!tgidp)
        return 0;
    u32 tgid = *tgidp;
    struct thread_t *t = stats_of(next, tgid);
    if (t)
        __sync_fetch_and_add(&t->switches, 1);

    u64 *bts = blocked.lookup(&next);
    if (bts) {
        u64 off = now - *bts;
        blocked.delete(&next);
        if (t)
            __sync_fetch_and_add(&t->offcpu_ns, off);
    }
    u64 *ets = enqueued.lookup(&next);
    if (!ets)
        return 0;
    u64 start = *ets, delta = now - start;
    enqueued.delete(&next);
    if (t)
        __sync_fetch_and_add(&t->runq_ns, delta);
    struct hist_key_t key = {.tgid = tgid, .slot = bpf_log2l(delta)};
    struct hist_val_t zero = {};
    struct hist_val_t *c = hist.lookup_or_try_init(&key, &zero);
    if (c) {
        __sync_fetch_and_add(&c->count, 1);
        __sync_fetch_and_add(&c->sum_ns, delta);
    } else
        count_lost(0);

    if (delta >= SLOW_RUNQ_NS) {
        struct delay_t d = {.tgid = tgid, .tid = next, .start_ns = start, .dur_ns = delta, .prev_pid = prev};
        bpf_probe_read_kernel(&d.comm, sizeof(d.comm), args->next_comm);
        bpf_probe_read_kernel(&d.prev_comm, sizeof(d.prev_comm), args->prev_comm);
#if USE_RINGBUF
        if (delays.ringbuf_output(&d, sizeof(d), 0) != 0)
            count_lost(1);
#else
        if (delays.perf_submit(args, &d, sizeof(d)) != 0)
            count_lost(1);
#endif
    }
    return 0;
}

// Forget exited threads so their map slots are reused at once.
TRACEPOINT_PROBE(sched, sched_process_exit) {
    u32 tid = (u32)bpf_get_current_pid_tgid();
    threads.delete(&tid);
    enqueued.delete(&tid);
    blocked.delete(&tid);
    return 0;
}
