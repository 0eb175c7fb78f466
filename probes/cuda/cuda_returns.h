// The return side of each call family (cuda.c includes this after its maps and helpers): what a finished sync,
// copy, allocation, free, collective, communicator init or gloo tag adds to the aggregates, and the records it sends.

static __always_inline void end_sync(struct pt_regs *ctx, struct active_t *r, u64 id, u64 now, u64 dur) {
    add_agg(id >> 32, r->fn, 0, dur, 0, 0, PT_REGS_RC(ctx) != 0);
    struct event_t ev = {.ts = r->ts, .dur = dur, .a0 = r->handle, .tgid = id >> 32, .tid = (u32)id,
                         .fn = r->fn, .kind = EV_SYNC, .ret = PT_REGS_RC(ctx)};
    struct thread_t *t = thread_of(id);
    if (t) {
        ev.a1 = t->ep_launches;
        ev.a2 = t->ep_graphs;
        ev.a3 = t->ep_copy_bytes;
        ev.a4 = t->last_sync_ns;
        ev.a5 = t->first_launch_ns;
        t->ep_launches = t->ep_graphs = t->ep_copy_bytes = 0;
        t->last_sync_ns = now;
        t->first_launch_ns = 0;
    }
    submit(ctx, &ev);
}

static __always_inline void end_copy(struct pt_regs *ctx, struct fn_t *fn, struct active_t *r, u64 id, u64 dur) {
    u32 dir = fn->direction;
    if (fn->aux != NO_ARG && r->aux <= 4)
        dir = r->aux;  // the runtime's cudaMemcpyKind
    add_agg(id >> 32, r->fn, dir, dur, 0, r->size, PT_REGS_RC(ctx) != 0);
    struct thread_t *t = thread_of(id);
    if (t)
        t->ep_copy_bytes += r->size;
}

static __always_inline void end_alloc(struct pt_regs *ctx, struct fn_t *fn, struct active_t *r, u64 id, u64 dur) {
    s32 ret = PT_REGS_RC(ctx);
    add_agg(id >> 32, r->fn, 0, dur, 0, ret != 0 ? 0 : r->size, ret != 0);  // bytes: of successful allocations
    if (ret != 0) {
        struct event_t ev = {.ts = r->ts, .dur = dur, .a0 = r->size, .tgid = id >> 32, .tid = (u32)id,
                             .fn = r->fn, .kind = EV_ALLOC_FAIL, .ret = ret};
        submit(ctx, &ev);
        return;
    }
    struct alloc_key_t key = {.tgid = id >> 32, .is_handle = fn->aux2 == 1};
    if (r->out && bpf_probe_read_user(&key.value, sizeof(key.value), (void *)r->out) == 0)
        allocs.update(&key, &r->size);
}

static __always_inline void end_free(struct pt_regs *ctx, struct fn_t *fn, struct active_t *r, u64 id, u64 dur) {
    struct alloc_key_t key = {.tgid = id >> 32, .is_handle = fn->aux2 == 1, .value = r->handle};
    u64 bytes = 0, *size = allocs.lookup(&key);
    if (size) {
        bytes = *size;
        allocs.delete(&key);
    }
    add_agg(id >> 32, r->fn, 0, dur, 0, bytes, PT_REGS_RC(ctx) != 0);
}

static __always_inline u64 dtype_size(u64 dtype) {
    switch (dtype) {
    case 0: case 1: case 10: case 11: return 1;
    case 6: case 9: return 2;
    case 2: case 3: case 7: return 4;
    case 4: case 5: case 8: return 8;
    }
    return 0;
}

// A collective's sequence number counts the collectives of its communicator (the same on every rank); point-to-point
// calls (fn->aux2 is their peer) differ between ranks, so they get none (~0).
static __always_inline void end_coll(struct pt_regs *ctx, struct fn_t *fn, struct active_t *r, u64 id, u64 dur) {
    u64 bytes = r->size * dtype_size(r->aux);
    add_agg(id >> 32, r->fn, 0, dur, r->handle, bytes, PT_REGS_RC(ctx) != 0);
    u64 n = ~0ULL;
    if (fn->aux2 == NO_ARG) {
        struct comm_key_t ck = {.tgid = id >> 32, .comm = r->handle};
        u64 zero = 0, *seq = comm_seq.lookup_or_try_init(&ck, &zero);
        if (seq)
            n = __sync_fetch_and_add(seq, 1);
    }
    struct event_t ev = {.ts = r->ts, .dur = dur, .a0 = r->handle, .a1 = bytes, .a2 = n, .a3 = r->aux2,
                         .a4 = r->size, .a5 = r->aux, .tgid = id >> 32, .tid = (u32)id, .fn = r->fn,
                         .kind = EV_COLL, .ret = PT_REGS_RC(ctx)};
    submit(ctx, &ev);
}

static __always_inline void end_comm_init(struct pt_regs *ctx, struct active_t *r, u64 id, u64 dur) {
    struct event_t ev = {.ts = r->ts, .dur = dur, .a1 = r->aux, .a2 = r->aux2, .a3 = r->extra0, .a4 = r->extra1,
                         .tgid = id >> 32, .tid = (u32)id, .fn = r->fn, .kind = EV_COMM_INIT,
                         .ret = PT_REGS_RC(ctx)};
    if (r->out)
        bpf_probe_read_user(&ev.a0, sizeof(ev.a0), (void *)r->out);
    struct comm_key_t ck = {.tgid = id >> 32, .comm = ev.a0};
    comm_seq.delete(&ck);  // a new communicator (maybe at a reused address) counts its collectives from 0
    submit(ctx, &ev);
}

// getContext returned the std::shared_ptr<gloo::Context> into the slot at r->out: the first 16 bytes of the object
// it points to hold `const int rank; const int size;` after a vtable pointer or not, depending on how torch built
// gloo (decode.py: gloo_rank_size tells which), so they are sent as they are.
static __always_inline void end_gloo_tag(struct pt_regs *ctx, struct active_t *r, u64 id) {
    struct event_t ev = {.ts = r->ts, .a0 = r->handle, .a1 = r->aux & 0xffffffff, .tgid = id >> 32,
                         .tid = (u32)id, .fn = r->fn, .kind = EV_GLOO};
    u64 gctx = 0, words[2] = {};
    if (r->out && bpf_probe_read_user(&gctx, sizeof(gctx), (void *)r->out) == 0 && gctx)
        bpf_probe_read_user(&words, sizeof(words), (void *)gctx);
    ev.a2 = words[0];
    ev.a3 = words[1];
    struct active_key_t ok = {.tid = (u32)id, .family = F_GLOO_OP};
    struct active_t *op = active.lookup(&ok);
    if (op) {  // the collective this tag belongs to, entered just before on this thread
        ev.ts = op->ts;
        ev.fn = op->fn;
        active.delete(&ok);
    }
    ev.dur = bpf_ktime_get_ns() - ev.ts;
    submit(ctx, &ev);
}
