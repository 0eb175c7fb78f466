// Interrupt load per CPU (part of sched.c): softirq and hardirq time in IRQ_WINDOW_NS windows, aggregated in a
// per-CPU array (these tracepoints fire tens of thousands of times a second under network load, so nothing crosses
// to user space per interrupt). Unless IRQ_ALL_CPUS, an interrupt is timed only on a CPU that runs a watched thread
// or has one waiting (the time it steals is theirs); elsewhere it costs one look at the CPU's state. A window where softirq + hardirq took at least IRQ_PCT % is hot; a run of hot
// windows on one CPU becomes one softirq record when a cold window ends it, or every IRQ_MAX_RUN_NS while it lasts,
// so a saturated CPU costs at most one record per IRQ_MAX_RUN_NS. Windows close at the next interrupt exit on the
// CPU, so a run's record may come late on a CPU that went quiet; its times are right.
// Hardirq time counts device interrupts (irq_handler_*); the local timer and IPIs have no such tracepoint.
#define NR_VEC 10

struct irq_cpu_t {
    u64 soft_entry_ns;        // 0: not in a softirq
    u64 hard_entry_ns;        // 0: not in a hardirq handler
    u64 hard_total_ns;        // hardirq time so far: what a softirq it interrupted must not count
    u64 hard_at_soft_entry;
    u64 win_start_ns;
    u64 win_hard_ns;
    u64 win_soft_ns;
    u64 run_start_ns;
    u64 run_end_ns;
    u64 run_hard_ns;
    u64 run_soft_ns;
    u64 run_windows;
    u64 win_vec_ns[NR_VEC];
    u64 run_vec_ns[NR_VEC];
};

struct softirq_t {
    u32 cpu;
    u32 vec;                  // the heaviest softirq of the run (HI, TIMER, NET_TX, NET_RX, BLOCK, ...)
    u64 start_ns;
    u64 dur_ns;
    u64 hard_ns;
    u64 soft_ns;
    u64 vec_ns;               // time of `vec`
    u64 windows;              // hot windows in the run
};

EVENT_OUTPUT(softirqs, 8);

#if HAS_IRQ
BPF_PERCPU_ARRAY(irq_cpus, struct irq_cpu_t, 1);

static __always_inline void end_run(void *ctx, struct irq_cpu_t *s) {
    if (!s->run_windows)
        return;
    struct softirq_t r = {.cpu = bpf_get_smp_processor_id(), .start_ns = s->run_start_ns,
                          .dur_ns = s->run_end_ns - s->run_start_ns, .hard_ns = s->run_hard_ns,
                          .soft_ns = s->run_soft_ns, .windows = s->run_windows};
#pragma unroll
    for (int v = 0; v < NR_VEC; v++) {
        if (s->run_vec_ns[v] > r.vec_ns) {
            r.vec_ns = s->run_vec_ns[v];
            r.vec = v;
        }
        s->run_vec_ns[v] = 0;
    }
    s->run_windows = 0;
    s->run_hard_ns = 0;
    s->run_soft_ns = 0;
#if USE_RINGBUF
    if (softirqs.ringbuf_output(&r, sizeof(r), 0) != 0)
        count_lost(1);
#else
    if (softirqs.perf_submit(ctx, &r, sizeof(r)) != 0)
        count_lost(1);
#endif
}

static __always_inline void roll_window(void *ctx, struct irq_cpu_t *s, u64 now) {
    u64 len = now - s->win_start_ns;
    if (len < IRQ_WINDOW_NS)
        return;
    if ((s->win_hard_ns + s->win_soft_ns) * 100 >= len * IRQ_PCT) {
        if (!s->run_windows)
            s->run_start_ns = s->win_start_ns;
        s->run_end_ns = now;
        s->run_hard_ns += s->win_hard_ns;
        s->run_soft_ns += s->win_soft_ns;
        s->run_windows++;
#pragma unroll
        for (int v = 0; v < NR_VEC; v++)
            s->run_vec_ns[v] += s->win_vec_ns[v];
        if (now - s->run_start_ns >= IRQ_MAX_RUN_NS)
            end_run(ctx, s);
    } else {
        end_run(ctx, s);
    }
    s->win_start_ns = now;
    s->win_hard_ns = 0;
    s->win_soft_ns = 0;
#pragma unroll
    for (int v = 0; v < NR_VEC; v++)
        s->win_vec_ns[v] = 0;
}

static __always_inline struct irq_cpu_t *irq_cpu(void) {
    u32 zero = 0;
    return irq_cpus.lookup(&zero);
}

// Whether interrupts on this CPU are timed now: it runs a watched thread or one waits for it.
static __always_inline int irq_timed(void) {
#if IRQ_ALL_CPUS
    return 1;
#else
    u32 cpu = bpf_get_smp_processor_id();
    struct cpu_t *c = cpus.lookup(&cpu);
    if (!c)
        return 0;
    if (c->curr_watched)
        return 1;
#pragma unroll
    for (int i = 0; i < MAX_WAITERS; i++)
        if (c->waiters[i])
            return 1;
    return 0;
#endif
}

static __always_inline int on_softirq_entry(void) {
    if (!irq_timed())
        return 0;
    struct irq_cpu_t *s = irq_cpu();
    if (s) {
        s->soft_entry_ns = bpf_ktime_get_ns();
        s->hard_at_soft_entry = s->hard_total_ns;
    }
    return 0;
}

static __always_inline int on_softirq_exit(void *ctx, u32 vec) {
    struct irq_cpu_t *s = irq_cpu();
    if (!s || !s->soft_entry_ns || vec >= NR_VEC)
        return 0;
    u64 now = bpf_ktime_get_ns();
    u64 d = now - s->soft_entry_ns - (s->hard_total_ns - s->hard_at_soft_entry);
    s->soft_entry_ns = 0;
    s->win_soft_ns += d;
    s->win_vec_ns[vec] += d;
    roll_window(ctx, s, now);
    return 0;
}

static __always_inline int on_hardirq_entry(void) {
    if (!irq_timed())
        return 0;
    struct irq_cpu_t *s = irq_cpu();
    if (s)
        s->hard_entry_ns = bpf_ktime_get_ns();
    return 0;
}

static __always_inline int on_hardirq_exit(void *ctx) {
    struct irq_cpu_t *s = irq_cpu();
    if (!s || !s->hard_entry_ns)
        return 0;
    u64 now = bpf_ktime_get_ns();
    u64 d = now - s->hard_entry_ns;
    s->hard_entry_ns = 0;
    s->hard_total_ns += d;
    s->win_hard_ns += d;
    roll_window(ctx, s, now);
    return 0;
}

// Raw tracepoints where the kernel has them: these fire at interrupt rate, and a raw tracepoint skips building the
// perf record a plain one fills for every hit (the args are softirq_entry/exit(vec_nr), irq_handler_*(irq, ...)).
#if USE_RAW_TP
RAW_TRACEPOINT_PROBE(softirq_entry) { return on_softirq_entry(); }
RAW_TRACEPOINT_PROBE(softirq_exit) { return on_softirq_exit(ctx, (u32)ctx->args[0]); }
RAW_TRACEPOINT_PROBE(irq_handler_entry) { return on_hardirq_entry(); }
RAW_TRACEPOINT_PROBE(irq_handler_exit) { return on_hardirq_exit(ctx); }
#else
TRACEPOINT_PROBE(irq, softirq_entry) { return on_softirq_entry(); }
TRACEPOINT_PROBE(irq, softirq_exit) { return on_softirq_exit(args, args->vec); }
TRACEPOINT_PROBE(irq, irq_handler_entry) { return on_hardirq_entry(); }
TRACEPOINT_PROBE(irq, irq_handler_exit) { return on_hardirq_exit(args); }
#endif
#endif
