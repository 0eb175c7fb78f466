// Off-CPU states of watched threads (part of sched.c): when and in which state each left the CPU, and who woke it.
//
// An offcpu record crosses to user space for a hot thread (the agent's step threads, in `hot`) blocked for at least
// HOT_OFFCPU_NS, and for any watched thread stopped, traced, uninterruptible or frozen for at least SLOW_OFFCPU_NS.
// The interval is [left the CPU, woken]; the run-queue wait after the wakeup is the runq part's.
//
// What sched_switch's prev_state says on 6.18 (measured, tests/test_kernel_offcpu.py): SIGSTOP gives T (0x4, raw
// 0x104 = TASK_WAKEKILL | __TASK_STOPPED); a ptrace attach t (0x8); an fsync / write I/O wait D (0x2); a cgroup v1
// freezer freeze also D (0x2: the kernel reports TASK_FROZEN as uninterruptible), and only a task frozen while
// running switches at all (one frozen while asleep stays asleep, no switch). The raw tracepoint's prev_state is the
// raw __state, 0x8000 (TASK_FROZEN) for that freeze, which is how HAS_FROZEN tells it from D. A cgroup v2 freeze is
// S (raw 0x2001, S | TASK_FREEZABLE, as a plain nanosleep): user space tells that one from the cgroup
// (probes/kernel/cgroups.py), as it does a v1 freeze of a sleeping task.
#define S_SLEEPING 0x1
#define S_UNINTERRUPTIBLE 0x2
#define S_STOPPED 0x4
#define S_TRACED 0x8
#define S_FROZEN 0x10000  // ours: the raw __state had TASK_FROZEN
#define TASK_FROZEN_BIT 0x8000
#define NOT_A_WAIT (S_UNINTERRUPTIBLE | S_STOPPED | S_TRACED | S_FROZEN)

struct blocked_t {
    u64 ts;               // left the CPU
    u64 woken_ns;         // 0 until sched_waking
    u32 state;            // prev_state & 0xff
    u32 tgid;
    u32 cpu;              // where it last ran
    u32 waker_tid;
    u32 waker_tgid;
    u32 pad;
    char waker_comm[TASK_COMM_LEN];
};

struct offcpu_t {
    u32 tgid;
    u32 tid;
    u64 start_ns;
    u64 dur_ns;
    u32 state;
    u32 cpu;
    u32 waker_tid;        // 0: no wakeup seen (e.g. SIGCONT of a stopped task is a wakeup; a thaw may not be)
    u32 waker_tgid;
    u32 is_hot;
    u32 pad;
    char comm[TASK_COMM_LEN];
    char waker_comm[TASK_COMM_LEN];
};

BPF_TABLE("lru_hash", u32, struct blocked_t, blocked, MAX_THREADS);
BPF_HASH(hot, u32, u8, 4096);
EVENT_OUTPUT(offcpu, 32);

#if HAS_FROZEN
BPF_TABLE("lru_hash", u32, u64, frozen_at, 4096);  // tid -> when it left the CPU frozen

// Raw tracepoint args: (bool preempt, struct task_struct *prev, struct task_struct *next, unsigned int prev_state).
// It costs one test per switch: the rest runs only for a task leaving the CPU frozen (prev is the current task).
RAW_TRACEPOINT_PROBE(sched_switch) {
    if (!(ctx->args[3] & TASK_FROZEN_BIT))
        return 0;
    u64 id = bpf_get_current_pid_tgid();
    u32 tid = id, tgid = id >> 32;
    if (!threads.lookup(&tid) && !watched.lookup(&tgid))
        return 0;
    u64 now = bpf_ktime_get_ns();
    frozen_at.update(&tid, &now);
    return 0;
}
#endif

static __always_inline void block(u32 tid, u32 tgid, u32 state, u32 cpu, u64 now) {
    struct blocked_t b = {.ts = now, .state = state, .tgid = tgid, .cpu = cpu};
    blocked.update(&tid, &b);
}

static __always_inline void note_waker(u32 tid, u64 waker, u64 now) {
    struct blocked_t *b = blocked.lookup(&tid);
    if (!b)
        return;
    b->woken_ns = now;
    b->waker_tid = (u32)waker;
    b->waker_tgid = waker >> 32;
    bpf_get_current_comm(&b->waker_comm, sizeof(b->waker_comm));
}

static __always_inline u32 final_state(u32 tid, struct blocked_t *b) {
    u32 state = b->state;
#if HAS_FROZEN
    if (state & S_UNINTERRUPTIBLE) {
        u64 *f = frozen_at.lookup(&tid);
        if (f) {
            // the raw and the plain tracepoint of one switch run microseconds apart, in either order
            if (*f + 1000000 > b->ts && *f < b->ts + 1000000)
                state = S_FROZEN;
            frozen_at.delete(&tid);
        }
    }
#endif
    return state;
}

static __always_inline void emit_offcpu(void *ctx, u32 tid, struct blocked_t *b, u32 state, u64 end, u32 is_hot,
                                        const char *comm) {
    struct offcpu_t r = {.tgid = b->tgid, .tid = tid, .start_ns = b->ts, .dur_ns = end - b->ts, .state = state,
                         .cpu = b->cpu, .waker_tid = b->waker_tid, .waker_tgid = b->waker_tgid, .is_hot = is_hot};
    bpf_probe_read_kernel(&r.comm, sizeof(r.comm), comm);
    __builtin_memcpy(&r.waker_comm, b->waker_comm, sizeof(r.waker_comm));
#if USE_RINGBUF
    if (offcpu.ringbuf_output(&r, sizeof(r), 0) != 0)
        count_lost(1);
#else
    if (offcpu.perf_submit(ctx, &r, sizeof(r)) != 0)
        count_lost(1);
#endif
}

// The thread is switching in: close its blocked interval (ended at `woken`, its wakeup, or now if none was seen),
// emit it if it is one to report, and return its length (0 if it was not blocked).
static __always_inline u64 unblock(void *ctx, u32 tid, u64 woken, const char *comm) {
    struct blocked_t *b = blocked.lookup(&tid);
    if (!b)
        return 0;
    u64 end = woken > b->ts ? woken : bpf_ktime_get_ns();
    u64 off = end - b->ts;
    u32 state = final_state(tid, b);
    u32 is_hot = 0;
    if (off >= HOT_OFFCPU_NS)
        is_hot = hot.lookup(&tid) != 0;
    if ((is_hot && off >= HOT_OFFCPU_NS) || ((state & NOT_A_WAIT) && off >= SLOW_OFFCPU_NS))
        emit_offcpu(ctx, tid, b, state, end, is_hot, comm);
    blocked.delete(&tid);
    return off;
}

static __always_inline void forget_blocked(u32 tid) {
    blocked.delete(&tid);
#if HAS_FROZEN
    frozen_at.delete(&tid);
#endif
}
