// Fork, exec and exit of watched processes, handled in the kernel so a short-lived child of a watched process is
// counted from its first syscall and named after it is gone. Needs the probe's `watched` map (u32 tgid -> u8) and
// FILTER declared first. INHERIT_WATCH (0/1): children of watched processes join `watched` at fork.
// Each change is noted in `proc_events` (one entry per process, kinds OR-ed, the latest comm), which user space
// drains every poll (probes/bpf/lifecycle.py). A probe with its own task_newtask / sched_process_exit handler
// defines HAS_OWN_TASK_HANDLERS 1 and calls lifecycle_new_task() / lifecycle_exit() from them.
#define PROC_FORK 1
#define PROC_EXEC 2
#define PROC_EXIT 4
#ifndef CLONE_THREAD_FLAG
#define CLONE_THREAD_FLAG 0x00010000
#endif

struct proc_event_t {
    u32 kinds;          // PROC_* bits seen since the last drain
    u32 ppid;           // the watched parent (PROC_FORK)
    char comm[TASK_COMM_LEN];
};
BPF_HASH(proc_events, u32, struct proc_event_t, 16384);  // tgid -> what happened to it since the last poll

static __always_inline void note_proc(u32 tgid, u32 kind, u32 ppid) {
    struct proc_event_t zero = {};
    struct proc_event_t *e = proc_events.lookup_or_try_init(&tgid, &zero);
    if (!e)
        return;  // full: user space still sees the process through /proc while it lives
    e->kinds |= kind;
    if (ppid)
        e->ppid = ppid;
    bpf_get_current_comm(&e->comm, sizeof(e->comm));
}

static __always_inline int is_watched_tgid(u32 tgid) {
#if FILTER
    return watched.lookup(&tgid) != 0;
#else
    return 1;
#endif
}

// task_newtask runs in the parent: `pid` is the new task, a new process (its tgid) unless CLONE_THREAD.
// Returns the new process's tgid when it joined the watch, else 0.
static __always_inline u32 lifecycle_new_task(u32 pid, u64 clone_flags) {
    if (clone_flags & CLONE_THREAD_FLAG)
        return 0;
    u32 parent = bpf_get_current_pid_tgid() >> 32;
    if (!INHERIT_WATCH || !is_watched_tgid(parent))
        return 0;
#if FILTER
    u8 one = 1;
    watched.update(&pid, &one);
#endif
    note_proc(pid, PROC_FORK, parent);  // the comm is the parent's until the child execs
    return pid;
}

static __always_inline void lifecycle_exit(void) {
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32;
    if ((u32)id == tgid && is_watched_tgid(tgid))  // the group leader: the process's name, for after it is gone
        note_proc(tgid, PROC_EXIT, 0);
}

TRACEPOINT_PROBE(sched, sched_process_exec) {
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    if (is_watched_tgid(tgid))
        note_proc(tgid, PROC_EXEC, 0);  // comm is already the new program's
    return 0;
}

#if !HAS_OWN_TASK_HANDLERS
TRACEPOINT_PROBE(task, task_newtask) {
    lifecycle_new_task(args->pid, args->clone_flags);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exit) {
    lifecycle_exit();
    return 0;
}
#endif
