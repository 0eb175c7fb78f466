// Memory stalls of watched threads (part of sched.c): user page faults counted per thread in thread_stats, and
// direct reclaim (the allocator's, vmscan:mm_vmscan_direct_reclaim_*) and memcg reclaim (a cgroup at its limit,
// vmscan:mm_vmscan_memcg_reclaim_*), each timed per thread; one of at least MIN_RECLAIM_NS is a reclaim record.
// page_fault_user fires when the fault is taken, before the kernel knows whether it needs I/O, so it cannot tell
// major from minor faults (the loader takes that split from /proc/PID/stat).

struct reclaim_t {
    u32 tgid;
    u32 tid;
    u64 start_ns;
    u64 dur_ns;
    u64 nr_reclaimed;     // pages
    u32 is_memcg;         // 1: the cgroup's limit, 0: the whole system (or node) short of memory
    u32 pad;
    char comm[TASK_COMM_LEN];
};

EVENT_OUTPUT(reclaims, 8);

#if HAS_FAULTS
static __always_inline int on_fault(void) {
    u32 tid = bpf_get_current_pid_tgid();
    u32 *tgidp = watched_tgid(tid);
    if (!tgidp)
        return 0;
    struct thread_t *t = stats_of(tid, *tgidp);
    if (t)
        __sync_fetch_and_add(&t->faults, 1);
    return 0;
}
// every fault on the host passes here: a raw tracepoint where there is one (no perf record to build per hit)
#if USE_RAW_TP
RAW_TRACEPOINT_PROBE(page_fault_user) { return on_fault(); }
#else
TRACEPOINT_PROBE(exceptions, page_fault_user) { return on_fault(); }
#endif
#endif

#if HAS_RECLAIM || HAS_MEMCG_RECLAIM
BPF_TABLE("lru_hash", u32, u64, reclaim_start, 4096);

static __always_inline int reclaim_begin(void) {
    u32 tid = bpf_get_current_pid_tgid();
    if (!watched_tgid(tid))
        return 0;
    u64 now = bpf_ktime_get_ns();
    reclaim_start.update(&tid, &now);
    return 0;
}

static __always_inline int reclaim_end(void *ctx, u64 nr_reclaimed, u32 is_memcg) {
    u64 id = bpf_get_current_pid_tgid();
    u32 tid = id, tgid = id >> 32;
    u64 *s = reclaim_start.lookup(&tid);
    if (!s)
        return 0;
    u64 start = *s, dur = bpf_ktime_get_ns() - start;
    reclaim_start.delete(&tid);
    struct thread_t *t = stats_of(tid, tgid);
    if (t)
        __sync_fetch_and_add(&t->reclaim_ns, dur);
    if (dur < MIN_RECLAIM_NS)
        return 0;
    struct reclaim_t r = {.tgid = tgid, .tid = tid, .start_ns = start, .dur_ns = dur,
                          .nr_reclaimed = nr_reclaimed, .is_memcg = is_memcg};
    bpf_get_current_comm(&r.comm, sizeof(r.comm));
#if USE_RINGBUF
    if (reclaims.ringbuf_output(&r, sizeof(r), 0) != 0)
        count_lost(1);
#else
    if (reclaims.perf_submit(ctx, &r, sizeof(r)) != 0)
        count_lost(1);
#endif
    return 0;
}
#endif

#if HAS_RECLAIM
TRACEPOINT_PROBE(vmscan, mm_vmscan_direct_reclaim_begin) { return reclaim_begin(); }
TRACEPOINT_PROBE(vmscan, mm_vmscan_direct_reclaim_end) { return reclaim_end(args, args->nr_reclaimed, 0); }
#endif
#if HAS_MEMCG_RECLAIM
TRACEPOINT_PROBE(vmscan, mm_vmscan_memcg_reclaim_begin) { return reclaim_begin(); }
TRACEPOINT_PROBE(vmscan, mm_vmscan_memcg_reclaim_end) { return reclaim_end(args, args->nr_reclaimed, 1); }
#endif
