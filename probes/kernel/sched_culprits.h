// Who took the CPU while a watched thread waited on its run queue (part of sched.c).
//
// Each CPU (sched.c cpus) keeps when its current task switched in and up to MAX_WAITERS watched threads queued on it.
// Every switch on a CPU that has waiters charges the slice that just ended (prev's CPU time since it switched in,
// clipped to the wait) to each waiter's culprit table: up to NUM_CULPRITS tasks by CPU time, the idle task apart
// (idle_ns). Only a slow wait's table crosses to user space, inside its runq_delay record, so the event rate is
// that of slow waits, never that of context switches. Slices that end within CHARGE_MIN_NS of a wait's start are
// not charged: a wait that short is never slow, and it keeps the wake-and-run fast path free of table updates.
// Waiter slots are claimed with cmpxchg because a wakeup registers a thread on another CPU than its own.

struct wait_t {
    u64 start_ns;                 // the wait it belongs to (enqueued.ts): a table of an older wait is stale
    u64 idle_ns;
    u64 other_ns;
    struct culprit_t c[NUM_CULPRITS];
};

#if HAS_CULPRITS
BPF_TABLE("lru_hash", u32, struct wait_t, waits, NUM_CPUS * MAX_WAITERS * 2);
BPF_PERCPU_ARRAY(wait_zero, struct wait_t, 1);  // a zeroed template: too big for the BPF stack

static __always_inline void claim_slot(u32 cpu, u32 tid) {
    struct cpu_t *c = cpus.lookup(&cpu);
    if (!c)
        return;
#pragma unroll
    for (int i = 0; i < MAX_WAITERS; i++)
        if (c->waiters[i] == tid)
            return;
#pragma unroll
    for (int i = 0; i < MAX_WAITERS; i++)
        if (c->waiters[i] == 0 && __sync_val_compare_and_swap(&c->waiters[i], 0, (u64)tid) == 0)
            return;
    count_lost(2);
}

static __always_inline void release_slot(u32 cpu, u32 tid) {
    struct cpu_t *c = cpus.lookup(&cpu);
    if (!c)
        return;
#pragma unroll
    for (int i = 0; i < MAX_WAITERS; i++)
        if (c->waiters[i] == tid)
            __sync_val_compare_and_swap(&c->waiters[i], (u64)tid, 0);
}

static __always_inline struct wait_t *table_of(u32 tid, u64 start) {
    struct wait_t *w = waits.lookup(&tid);
    if (w && w->start_ns == start)
        return w;
    u32 zero = 0;
    struct wait_t *z = wait_zero.lookup(&zero);
    if (!z)
        return 0;
    z->start_ns = start;  // this CPU's template: only start_ns is ever written, and it is copied at once
    if (waits.update(&tid, z) != 0) {
        count_lost(2);
        return 0;
    }
    return waits.lookup(&tid);
}

static __always_inline void add_culprit(struct wait_t *w, u32 tid, u32 tgid, u64 ns) {
#pragma unroll
    for (int j = 0; j < NUM_CULPRITS; j++) {
        if (w->c[j].tid == tid) {
            __sync_fetch_and_add(&w->c[j].ns, ns);
            return;
        }
        if (w->c[j].tid == 0) {
            w->c[j].tid = tid;
            w->c[j].tgid = tgid;
            bpf_get_current_comm(&w->c[j].comm, sizeof(w->c[j].comm));  // the culprit is the current task
            __sync_fetch_and_add(&w->c[j].ns, ns);
            return;
        }
    }
    __sync_fetch_and_add(&w->other_ns, ns);
}

// Charge waiter `tid` (its wait e) with prev's slice [since, now] on this CPU; prev is the current task.
static __always_inline void charge(u32 tid, struct enq_t *e, u64 since, u64 now, u32 prev, u32 prev_tgid) {
    u64 from = e->ts > since ? e->ts : since;
    if (now <= from || now - e->ts < CHARGE_MIN_NS)
        return;
    struct wait_t *w = table_of(tid, e->ts);
    if (!w)
        return;
    if (prev == 0)
        __sync_fetch_and_add(&w->idle_ns, now - from);
    else
        add_culprit(w, prev, prev_tgid, now - from);
}

// prev (tgid prev_tgid; 0 = idle) ran on `cpu` (whose state is c) from c->since_ns until now. `next`, switching in,
// is left to on_switch_in, which looks its wait up anyway (one hash lookup less on the commonest switch).
static __always_inline void charge_cpu(struct cpu_t *c, u32 cpu, u64 now, u32 prev, u32 prev_tgid, u32 next) {
    u64 since = c->since_ns;
#pragma unroll
    for (int i = 0; i < MAX_WAITERS; i++) {
        u32 tid = c->waiters[i];
        if (tid == 0 || tid == prev || tid == next)
            continue;
        struct enq_t *e = enqueued.lookup(&tid);
        if (!e || e->cpu != cpu) {  // stale: it ran, slept, exited or moved without a slot release
            __sync_val_compare_and_swap(&c->waiters[i], (u64)tid, 0);
            continue;
        }
        charge(tid, e, since, now, prev, prev_tgid);
    }
}

static __always_inline void clear_culprits(struct delay_t *d) {
    d->has_culprits = 0;
    d->idle_ns = 0;
    d->other_ns = 0;
    __builtin_memset(&d->c_tgid, 0, sizeof(d->c_tgid));
    __builtin_memset(&d->c_tid, 0, sizeof(d->c_tid));
    __builtin_memset(&d->c_ns, 0, sizeof(d->c_ns));
}

static __always_inline void fill_culprits(struct delay_t *d, u32 tid, u64 start) {
    struct wait_t *w = waits.lookup(&tid);
    if (!w || w->start_ns != start) {
        clear_culprits(d);
        return;
    }
    d->has_culprits = 1;
    d->idle_ns = w->idle_ns;
    d->other_ns = w->other_ns;
#pragma unroll
    for (int j = 0; j < NUM_CULPRITS; j++) {
        d->c_tgid[j] = w->c[j].tgid;
        d->c_tid[j] = w->c[j].tid;
        d->c_ns[j] = w->c[j].ns;
        __builtin_memcpy(&d->c_comm[j * TASK_COMM_LEN], w->c[j].comm, TASK_COMM_LEN);
    }
}

static __always_inline void forget_wait(u32 tid) {
    waits.delete(&tid);
}
#else
static __always_inline void claim_slot(u32 cpu, u32 tid) {}
static __always_inline void release_slot(u32 cpu, u32 tid) {}
static __always_inline void charge_cpu(struct cpu_t *c, u32 cpu, u64 now, u32 prev, u32 prev_tgid, u32 next) {}
static __always_inline void charge(u32 tid, struct enq_t *e, u64 since, u64 now, u32 prev, u32 prev_tgid) {}
static __always_inline void fill_culprits(struct delay_t *d, u32 tid, u64 start) {
    d->has_culprits = 0;
    d->idle_ns = 0;
    d->other_ns = 0;
    __builtin_memset(&d->c_tid, 0, sizeof(d->c_tid));
}
static __always_inline void forget_wait(u32 tid) {}
#endif
