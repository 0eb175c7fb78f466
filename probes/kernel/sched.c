// Run-queue latency per watched process (log2 histograms), per-thread off-CPU / run-queue time, who took the CPU
// while a watched thread waited, off-CPU states, memory stalls and softirq load, from sched, exceptions, vmscan and
// irq tracepoints. Specialised by the loader: FILTER, USE_RINGBUF, SLOW_RUNQ_NS, MAX_THREADS, NUM_CPUS,
// MAX_WAITERS, NUM_CULPRITS, CHARGE_MIN_NS, HOT_OFFCPU_NS, SLOW_OFFCPU_NS, MIN_RECLAIM_NS, IRQ_WINDOW_NS, IRQ_PCT,
// IRQ_MAX_RUN_NS, IRQ_ALL_CPUS, USE_RAW_TP (raw tracepoints for those that need no task_struct field); the optional parts
// HAS_CULPRITS, HAS_FROZEN, HAS_FAULTS, HAS_RECLAIM, HAS_MEMCG_RECLAIM, HAS_IRQ (0: compiled out); INHERIT_WATCH
// (lifecycle.h: fork / exec / exit of watched processes).
#include <uapi/linux/ptrace.h>
#include <linux/sched.h>
// lost[]: [0] map keys that did not fit, [1] events the buffers could not take, [2] waits whose culprits could not
// be tracked (more than MAX_WAITERS watched threads waiting on one CPU, or the culprit tables full).
#define LOST_SLOTS 3
#include "common.h"

#define CLONE_THREAD_FLAG 0x00010000
// sched_switch's prev_state: 0 or TASK_REPORT_MAX (0x100, "R+": preempted) both mean still runnable.
#define REPORT_MAX 0x100
#define STATE_MASK 0xff

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
    u64 faults;         // user page faults (exceptions:page_fault_user)
    u64 reclaim_ns;     // time in direct or memcg reclaim
    u32 tgid;
    u32 cpu;            // the CPU it last switched in on
};

struct enq_t {          // a watched thread runnable but not running
    u64 ts;             // since when
    u32 cpu;            // the CPU whose run queue it waits on (sched_waking's target, then sched_migrate_task)
    u32 tgid;
};

struct culprit_t {
    u32 tgid;
    u32 tid;
    u64 ns;             // CPU time it ran on the waiter's CPU during the wait
    char comm[TASK_COMM_LEN];
};

struct delay_t {
    u32 tgid;
    u32 tid;
    u64 start_ns;
    u64 dur_ns;
    u32 prev_pid;       // the task that gave up the CPU to it
    u32 cpu;            // where it finally ran
    u64 idle_ns;        // its CPU ran the idle task while it was runnable (throttled, or queued elsewhere)
    u64 other_ns;       // run by tasks that did not fit in c[]
    u32 has_culprits;   // 0: the wait was not tracked (see lost[2])
    u32 pad;
    char comm[TASK_COMM_LEN];
    char prev_comm[TASK_COMM_LEN];
    // the culprit table, flat: bcc's record types take scalars and one-dimensional arrays only
    u32 c_tgid[NUM_CULPRITS];
    u32 c_tid[NUM_CULPRITS];
    u64 c_ns[NUM_CULPRITS];
    char c_comm[NUM_CULPRITS * TASK_COMM_LEN];
};

BPF_HASH(watched, u32, u8, 65536);
BPF_TABLE("lru_hash", u32, u32, threads, MAX_THREADS);   // tid -> tgid of watched threads
BPF_TABLE("lru_hash", u32, struct enq_t, enqueued, MAX_THREADS);
BPF_HASH(hist, struct hist_key_t, struct hist_val_t, 65536);
BPF_HASH(thread_stats, u32, struct thread_t, MAX_THREADS);
BPF_PERCPU_ARRAY(delay_scratch, struct delay_t, 1);       // records are too big for the 512-byte BPF stack
#define HAS_OWN_TASK_HANDLERS 1
#include "lifecycle.h"

// Two cache lines: the first is written by the CPU's own switches, the second (waiters) by wakeups on other CPUs;
// apart, neither kind of write evicts the other's line, nor a neighbouring CPU's.
struct cpu_t {
    u64 since_ns;                 // when the current task switched in
    u64 curr;                     // the current task's tid
    u64 curr_watched;             // 1 if it is a watched thread
    u64 pad[5];
    u64 waiters[MAX_WAITERS];     // tids of watched threads waiting on this CPU (0 = free slot; culprits part)
    u64 pad2[8 - MAX_WAITERS];
};
BPF_ARRAY(cpus, struct cpu_t, NUM_CPUS);  // written by its own CPU's switches, read from wakeups anywhere
EVENT_OUTPUT(delays, 64);

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

#include "sched_culprits.h"
#include "sched_offcpu.h"
#include "sched_mm.h"
#include "sched_irq.h"

// A new thread of a watched process is watched from its first wakeup.
TRACEPOINT_PROBE(task, task_newtask) {
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    if (!(args->clone_flags & CLONE_THREAD_FLAG)) {
        u32 child = lifecycle_new_task(args->pid, args->clone_flags);
        if (child)  // a child of a watched process: its main thread is watched from its first switch
            threads.update(&child, &child);
        return 0;
    }
#if FILTER
    if (!watched.lookup(&tgid))
        return 0;
#endif
    u32 tid = args->pid;
    threads.update(&tid, &tgid);
    return 0;
}

// Runnable from now, queued on `cpu`. A preemption starts a new wait; a wakeup never resets a wait in progress.
static __always_inline void start_wait(u32 tid, u32 tgid, u32 cpu, u64 now, int is_wakeup) {
    struct enq_t e = {.ts = now, .cpu = cpu, .tgid = tgid};
    if (is_wakeup)
        enqueued.insert(&tid, &e);
    else
        enqueued.update(&tid, &e);
    claim_slot(cpu, tid);
}

// sched_waking runs in the waker's context (sched_wakeup may run later on the target CPU, in whatever task is
// current there), so it is where the waker is known; the target CPU is settled by sched_migrate_task.
TRACEPOINT_PROBE(sched, sched_waking) {
    u32 tid = args->pid;
    u32 *tgidp = watched_tgid(tid);
    if (!tgidp)
        return 0;
    u32 tgid = *tgidp, cpu = args->target_cpu;  // the CPU it last ran on, or runs on
    struct cpu_t *c = cpus.lookup(&cpu);
    if (c && c->curr == tid)
        return 0;  // still current there: the wakeup undid a sleep it had not begun, it never left the CPU
    u64 now = bpf_ktime_get_ns();
    note_waker(tid, bpf_get_current_pid_tgid(), now);
    start_wait(tid, tgid, cpu, now, 1);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_wakeup_new) {
    u32 tid = args->pid;
    u32 *tgidp = watched_tgid(tid);
    if (tgidp)
        start_wait(tid, *tgidp, args->target_cpu, bpf_ktime_get_ns(), 1);
    return 0;
}

#if HAS_CULPRITS
// Moved to another run queue while waiting (load balancing, affinity): its culprits are now that CPU's tasks.
TRACEPOINT_PROBE(sched, sched_migrate_task) {
    u32 tid = args->pid;
    struct enq_t *e = enqueued.lookup(&tid);
    if (!e)
        return 0;
    u32 from = e->cpu, to = args->dest_cpu;
    e->cpu = to;
    release_slot(from, tid);
    claim_slot(to, tid);
    return 0;
}
#endif

static __always_inline void on_switch_out(u32 prev, u32 tgid, long state, u32 cpu, u64 now) {
    if (!threads.lookup(&prev))
        threads.update(&prev, &tgid);  // prev is the current task: its tgid is known here
    if (state == 0 || (state & REPORT_MAX)) {
        start_wait(prev, tgid, cpu, now, 0);  // preempted: still runnable, waiting again
    } else {
        block(prev, tgid, state & STATE_MASK, cpu, now);
        enqueued.delete(&prev);         // a wakeup that raced its sleep is void now
    }
}

struct switch_t {        // what the sched_switch handler passes on (its args type is not visible outside it)
    void *ctx;
    const char *prev_comm;
    const char *next_comm;
    u32 prev;
    u32 prev_tgid;
    u32 next;
    u32 cpu;
    u64 now;
    u64 since;           // when prev switched in
};

static __always_inline void emit_delay(struct switch_t *sw, u32 tgid, u64 start, u64 delta) {
    u32 zero = 0;
    struct delay_t *d = delay_scratch.lookup(&zero);
    if (!d)
        return;
    d->tgid = tgid;
    d->tid = sw->next;
    d->start_ns = start;
    d->dur_ns = delta;
    d->prev_pid = sw->prev;
    d->cpu = sw->cpu;
    bpf_probe_read_kernel(&d->comm, sizeof(d->comm), sw->next_comm);
    bpf_probe_read_kernel(&d->prev_comm, sizeof(d->prev_comm), sw->prev_comm);
    fill_culprits(d, sw->next, start);
#if USE_RINGBUF
    if (delays.ringbuf_output(d, sizeof(*d), 0) != 0)
        count_lost(1);
#else
    if (delays.perf_submit(sw->ctx, d, sizeof(*d)) != 0)
        count_lost(1);
#endif
}

static __always_inline void on_switch_in(struct switch_t *sw, u32 tgid) {
    u32 next = sw->next, cpu = sw->cpu;
    u64 now = sw->now;
    struct thread_t *t = stats_of(next, tgid);
    if (t) {
        __sync_fetch_and_add(&t->switches, 1);
        t->cpu = cpu;
    }
    struct enq_t *e = enqueued.lookup(&next);
    u64 woken = e ? e->ts : now;
    u64 off = unblock(sw->ctx, next, woken, sw->next_comm);
    if (t && off)
        __sync_fetch_and_add(&t->offcpu_ns, off);
    if (!e)
        return;
    if (e->cpu == cpu)
        charge(next, e, sw->since, now, sw->prev, sw->prev_tgid);  // the slice that ends its wait
    u64 start = e->ts, delta = now - start;
    u32 queued_on = e->cpu;
    enqueued.delete(&next);
    release_slot(cpu, next);
    if (queued_on != cpu)
        release_slot(queued_on, next);
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
    if (delta >= SLOW_RUNQ_NS)
        emit_delay(sw, tgid, start, delta);
    if (delta >= CHARGE_MIN_NS)
        forget_wait(next);  // a shorter wait never got a culprit table
}

TRACEPOINT_PROBE(sched, sched_switch) {
    u64 now = bpf_ktime_get_ns();
    u32 cpu = bpf_get_smp_processor_id();
    u32 prev = args->prev_pid, next = args->next_pid;
    u32 prev_tgid = bpf_get_current_pid_tgid() >> 32;
    u32 *next_tgid = next ? watched_tgid(next) : 0;
    struct cpu_t *c = cpus.lookup(&cpu);
    u64 since = 0;
    if (c) {
        since = c->since_ns;
        charge_cpu(c, cpu, now, prev, prev_tgid, next);  // prev's slice, to the watched threads waiting here
        c->since_ns = now;
        c->curr = next;
        c->curr_watched = next_tgid != 0;
    }
    if (prev != 0) {
#if FILTER
        int is_watched = watched.lookup(&prev_tgid) != 0;
#else
        int is_watched = 1;
#endif
        if (is_watched)
            on_switch_out(prev, prev_tgid, args->prev_state, cpu, now);
    }
    if (next_tgid) {
        u32 tgid = *next_tgid;
        struct switch_t sw = {.ctx = args, .prev_comm = args->prev_comm, .next_comm = args->next_comm,
                              .prev = prev, .prev_tgid = prev_tgid, .next = next, .cpu = cpu, .now = now,
                              .since = since};
        on_switch_in(&sw, tgid);
    }
    return 0;
}

// Forget exited threads so their map slots are reused at once.
TRACEPOINT_PROBE(sched, sched_process_exit) {
    lifecycle_exit();
    u32 tid = (u32)bpf_get_current_pid_tgid();
    threads.delete(&tid);
    enqueued.delete(&tid);
    forget_blocked(tid);
    forget_wait(tid);
    return 0;
}
