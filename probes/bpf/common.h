// What every gpusleuth BPF program shares. A probe's C file says `#include "common.h"`; the loader
// (probes/bpf/compiler.py: render_source) puts this text in its place, after the probe's #define flags.
//
// lost[]: loss counters read by user space each poll; each program documents what its slots count
// (syscalls, sched: [0] map keys that did not fit, [1] events the buffer could not take).
#ifndef LOST_SLOTS
#define LOST_SLOTS 2
#endif
BPF_ARRAY(lost, u64, LOST_SLOTS);

static __always_inline void count_lost(u32 idx) {
    u64 *v = lost.lookup(&idx);
    if (v)
        __sync_fetch_and_add(v, 1);
}

// EVENT_OUTPUT(name, pages) declares a per-event buffer: a ring buffer where the kernel has one (USE_RINGBUF, chosen
// by the loader with BPF.support_ringbuf()), else a perf buffer. The submit itself stays in each program, as
//   #if USE_RINGBUF  name.ringbuf_output(&rec, sizeof(rec), 0)  #else  name.perf_submit(ctx, &rec, sizeof(rec))  #endif
// because bcc refuses map calls inside a macro, and table.event() in user space builds the record's type from
// that call's argument.
#if USE_RINGBUF
#define EVENT_OUTPUT(name, pages) BPF_RINGBUF_OUTPUT(name, pages)
#else
#define EVENT_OUTPUT(name, pages) BPF_PERF_OUTPUT(name)
#endif
