// CUDA driver/runtime, NCCL and gloo calls of watched processes, from uprobes attached per process (attach.py).
// Specialised by the loader: USE_MULTI (1: uprobe_multi links, the function id is the attach cookie; 0: one perf
// event per uprobe, FN_LIST holds one X(id) entry program e_<id> per function and one R(family) return program
// r_<family> per family with a return side), NUM_FNS, MAX_THREADS, MAX_KEYS, MAX_ALLOCS, USE_RINGBUF. Function
// descriptors (family, argument positions) are in `fn_table`, filled from symbols.py; the return side of each
// family is in cuda_returns.h.
//
// Kernel launches are counted per thread here (no event: an uprobe already costs microseconds); one event per launch
// only while ctl[0] (a CLOCK_MONOTONIC deadline) is in the future. Calls that also have a return probe keep an
// `active` record per (thread, family) with the stack pointer at entry: a call of the same family entered deeper on
// the stack (the driver call inside cudaMemcpy, or a tail call at the same depth) is the same call and is not counted
// again, and only the return whose stack pointer is entry+8 (x86-64: `ret` popped the return address) ends it.
#include <uapi/linux/ptrace.h>
#define LOST_SLOTS 3  // [0] aggregate keys that did not fit, [1] events the buffer could not take, [2] thread slots
#include "common.h"

#define NO_ARG 15
enum { F_LAUNCH = 1, F_GRAPH, F_SYNC, F_COPY, F_ALLOC, F_FREE, F_COLL, F_GROUP, F_COMM_INIT, F_GLOO_OP, F_GLOO_TAG };
enum { EV_SYNC = 1, EV_COLL, EV_ALLOC_FAIL, EV_COMM_INIT, EV_LAUNCH, EV_GLOO };

struct fn_t {
    u8 family, size, out, handle, aux, aux2, direction, layout;
};

struct thread_t {
    u32 tgid;
    u32 pad;
    u64 launches, graphs;           // since the thread was first seen
    u64 ep_launches, ep_graphs;     // since its last sync ended (the host step the next sync closes)
    u64 ep_copy_bytes;
    u64 last_sync_ns;               // when its last sync returned
    u64 first_launch_ns;            // first launch after that: the GPU had nothing queued in between
};

struct active_key_t {
    u32 tid;
    u32 family;
};

struct active_t {
    u64 ts, sp, size, out, handle, aux, aux2, extra0, extra1;
    u32 fn;
    u32 pad;
};

struct agg_key_t {
    u32 tgid;
    u16 fn;
    u8 dir;
    u8 slot;        // log2 of the call's duration in ns
    u64 handle;     // the communicator for collectives, else 0
};

struct agg_t {
    u64 count, bytes, sum_ns, failures;
};

struct alloc_key_t {
    u32 tgid;
    u32 is_handle;  // cuMemCreate handles and device pointers are different number spaces
    u64 value;
};

struct comm_key_t {
    u32 tgid;
    u32 pad;
    u64 comm;
};

struct event_t {
    u64 ts, dur;
    u64 a0, a1, a2, a3, a4, a5;     // meaning per kind: decode.py
    u32 tgid, tid;
    u16 fn, kind;
    s32 ret;
};

BPF_ARRAY(fn_table, struct fn_t, NUM_FNS);
BPF_ARRAY(ctl, u64, 1);
BPF_TABLE("lru_hash", u32, struct thread_t, threads, MAX_THREADS);
BPF_TABLE("lru_hash", struct active_key_t, struct active_t, active, MAX_THREADS);
BPF_HASH(agg, struct agg_key_t, struct agg_t, MAX_KEYS);
BPF_TABLE("lru_hash", struct alloc_key_t, u64, allocs, MAX_ALLOCS);
BPF_TABLE("lru_hash", struct comm_key_t, u64, comm_seq, 4096);
EVENT_OUTPUT(events, 256);

static __always_inline u64 arg(struct pt_regs *ctx, u32 i) {
    switch (i) {
    case 0: return PT_REGS_PARM1(ctx);
    case 1: return PT_REGS_PARM2(ctx);
    case 2: return PT_REGS_PARM3(ctx);
    case 3: return PT_REGS_PARM4(ctx);
    case 4: return PT_REGS_PARM5(ctx);
    case 5: return PT_REGS_PARM6(ctx);
    case NO_ARG: return 0;
    }
    u64 v = 0;  // x86-64: [sp] is the return address, the 7th argument is at sp+8
    bpf_probe_read_user(&v, sizeof(v), (void *)(PT_REGS_SP(ctx) + 8 * (i - 5)));
    return v;
}

static __always_inline void submit(struct pt_regs *ctx, struct event_t *ev) {
#if USE_RINGBUF
    if (events.ringbuf_output(ev, sizeof(*ev), 0) != 0)
        count_lost(1);
#else
    if (events.perf_submit(ctx, ev, sizeof(*ev)) != 0)
        count_lost(1);
#endif
}

static __always_inline struct thread_t *thread_of(u64 id) {
    u32 tid = (u32)id;
    struct thread_t *t = threads.lookup(&tid);
    if (t)
        return t;
    struct thread_t zero = {.tgid = id >> 32};
    threads.update(&tid, &zero);
    t = threads.lookup(&tid);
    if (!t)
        count_lost(2);
    return t;
}

static __always_inline void add_agg(u32 tgid, u32 fn, u32 dir, u64 dur, u64 handle, u64 bytes, u64 failed) {
    struct agg_key_t key = {.tgid = tgid, .fn = fn, .dir = dir, .slot = bpf_log2l(dur), .handle = handle};
    struct agg_t zero = {};
    struct agg_t *a = agg.lookup_or_try_init(&key, &zero);
    if (!a) {
        count_lost(0);
        return;
    }
    __sync_fetch_and_add(&a->count, 1);
    __sync_fetch_and_add(&a->bytes, bytes);
    __sync_fetch_and_add(&a->sum_ns, dur);
    if (failed)
        __sync_fetch_and_add(&a->failures, 1);
}

static __always_inline int launch_event(struct pt_regs *ctx, struct fn_t *fn, u32 id, u64 pid_tgid, u64 now) {
    struct event_t ev = {.ts = now, .tgid = pid_tgid >> 32, .tid = (u32)pid_tgid, .fn = id, .kind = EV_LAUNCH};
    if (fn->layout == 1) {  // cuLaunchKernel(f, gx, gy, gz, bx, by, bz, shmem, stream, ...)
        ev.a0 = arg(ctx, 0);
        ev.a1 = (arg(ctx, 1) & 0x1fffff) | ((arg(ctx, 2) & 0x1fffff) << 21) | ((arg(ctx, 3) & 0x1fffff) << 42);
        ev.a2 = (arg(ctx, 4) & 0x1fffff) | ((arg(ctx, 5) & 0x1fffff) << 21) | ((arg(ctx, 6) & 0x1fffff) << 42);
        ev.a3 = arg(ctx, 7) & 0xffffffff;
        ev.a4 = arg(ctx, 8);
    } else if (fn->layout == 2) {  // cuLaunchKernelEx(const CUlaunchConfig *c, f, ...)
        u32 c[7] = {};  // gridDim x y z, blockDim x y z, sharedMemBytes; then hStream at offset 32
        u64 config = arg(ctx, 0);
        bpf_probe_read_user(&c, sizeof(c), (void *)config);
        bpf_probe_read_user(&ev.a4, sizeof(ev.a4), (void *)(config + 32));
        ev.a0 = arg(ctx, 1);
        ev.a1 = c[0] | ((u64)c[1] << 21) | ((u64)c[2] << 42);
        ev.a2 = c[3] | ((u64)c[4] << 21) | ((u64)c[5] << 42);
        ev.a3 = c[6];
    } else {
        ev.a4 = arg(ctx, fn->handle);  // graph launch: the stream
    }
    submit(ctx, &ev);
    return 0;
}

// Kernel and graph launches: per-thread counts; the first launch after a sync marks the end of a GPU-idle gap.
static __always_inline int on_launch(struct pt_regs *ctx, struct fn_t *fn, u32 id, int is_graph) {
    u64 pid_tgid = bpf_get_current_pid_tgid();
    struct thread_t *t = thread_of(pid_tgid);
    if (!t)
        return 0;
    if (is_graph) {
        t->graphs++;
        t->ep_graphs++;
    } else {
        t->launches++;
        t->ep_launches++;
    }
    u32 zero = 0;
    u64 *until = ctl.lookup(&zero);
    if (t->first_launch_ns == 0 || (until && *until)) {
        u64 now = bpf_ktime_get_ns();
        if (t->first_launch_ns == 0)
            t->first_launch_ns = now;
        if (until && *until > now)
            launch_event(ctx, fn, id, pid_tgid, now);
    }
    return 0;
}

// Entry of a call with a return probe: remember it unless it is nested in a call of the same family.
static __always_inline int enter(struct pt_regs *ctx, struct fn_t *fn, u32 id) {
    u64 sp = PT_REGS_SP(ctx);
    struct active_key_t key = {.tid = (u32)bpf_get_current_pid_tgid(), .family = fn->family};
    struct active_t *outer = active.lookup(&key);
    if (outer && sp <= outer->sp)
        return 0;  // inside the outer call (deeper on the stack) or a tail call from it
    struct active_t rec = {.ts = bpf_ktime_get_ns(), .sp = sp, .fn = id};
    rec.size = arg(ctx, fn->size);
    rec.out = arg(ctx, fn->out);
    rec.handle = arg(ctx, fn->handle);
    rec.aux = arg(ctx, fn->aux) & 0xffffffff;  // int arguments: the upper half of the register is undefined
    rec.aux2 = arg(ctx, fn->aux2) & 0xffffffff;
    if (fn->family == F_COMM_INIT) {  // the first 16 bytes of the ncclUniqueId passed by value on the stack
        bpf_probe_read_user(&rec.extra0, 8, (void *)(sp + 8));
        bpf_probe_read_user(&rec.extra1, 8, (void *)(sp + 16));
    }
    active.update(&key, &rec);
    return 0;
}

// A gloo collective's entry: which one and when (getContext, called next on this thread, gives its tag).
static __always_inline int gloo_op(struct pt_regs *ctx, u32 id) {
    struct active_key_t key = {.tid = (u32)bpf_get_current_pid_tgid(), .family = F_GLOO_OP};
    struct active_t rec = {.ts = bpf_ktime_get_ns(), .fn = id};
    active.update(&key, &rec);
    return 0;
}

#include "cuda_returns.h"

static __always_inline int on_return(struct pt_regs *ctx, u32 family) {
    u64 id = bpf_get_current_pid_tgid();
    struct active_key_t key = {.tid = (u32)id, .family = family};
    struct active_t *r = active.lookup(&key);
    if (!r || PT_REGS_SP(ctx) != r->sp + 8)
        return 0;  // not ours, or the return of a nested call
    struct active_t rec = *r;
    active.delete(&key);
    u32 fid = rec.fn;
    struct fn_t *fn = fn_table.lookup(&fid);
    if (!fn)
        return 0;
    u64 now = bpf_ktime_get_ns(), dur = now - rec.ts;
    switch (family) {
    case F_SYNC: end_sync(ctx, &rec, id, now, dur); break;
    case F_COPY: end_copy(ctx, fn, &rec, id, dur); break;
    case F_ALLOC: end_alloc(ctx, fn, &rec, id, dur); break;
    case F_FREE: end_free(ctx, fn, &rec, id, dur); break;
    case F_COLL: end_coll(ctx, fn, &rec, id, dur); break;
    case F_GROUP: add_agg(id >> 32, rec.fn, 0, dur, 0, 0, PT_REGS_RC(ctx) != 0); break;
    case F_COMM_INIT: end_comm_init(ctx, &rec, id, dur); break;
    case F_GLOO_TAG: end_gloo_tag(ctx, &rec, id); break;
    }
    return 0;
}

static __always_inline int on_entry(struct pt_regs *ctx, u32 id) {
    struct fn_t *fn = fn_table.lookup(&id);
    if (!fn)
        return 0;
    switch (fn->family) {
    case F_LAUNCH: return on_launch(ctx, fn, id, 0);
    case F_GRAPH: return on_launch(ctx, fn, id, 1);
    case F_GLOO_OP: return gloo_op(ctx, id);
    }
    return enter(ctx, fn, id);
}

#if USE_MULTI
int e_any(struct pt_regs *ctx) { return on_entry(ctx, (u32)bpf_get_attach_cookie(ctx)); }
int r_any(struct pt_regs *ctx) {
    u32 id = (u32)bpf_get_attach_cookie(ctx);
    struct fn_t *fn = fn_table.lookup(&id);
    return fn ? on_return(ctx, fn->family) : 0;
}
#else
#define X(id) int e_##id(struct pt_regs *ctx) { return on_entry(ctx, id); }
#define R(family) int r_##family(struct pt_regs *ctx) { return on_return(ctx, family); }
FN_LIST
#endif
