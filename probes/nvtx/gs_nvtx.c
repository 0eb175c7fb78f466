/* gpusleuth NVTX injection library: loaded by any process's NVTX v3 (header-only, in torch, NCCL, cuDNN, vLLM)
 * when NVTX_INJECTION64_PATH names it. Turns ranges (push/pop, start/end, domains, registered strings) and marks
 * into records on the agent's clock (CLOCK_MONOTONIC) and sends them to the agent's NVTX socket without blocking:
 *  - the calling thread only reads the clock and copies the name into its own ring (single producer, no lock, no
 *    syscall); a full ring drops the record and counts it;
 *  - a flusher thread drains every ring every GS_FLUSH_MS into JSON datagrams (probes/nvtx/probe.py reads them),
 *    sent with MSG_DONTWAIT: no agent listening, or a full socket, drops them and counts them.
 * Socket: $GPUSLEUTH_NVTX_SOCKET, default /run/gpusleuth/nvtx.sock. After fork() the child starts afresh.
 * Build: gcc -O2 -fPIC -shared -pthread -I<dir holding nvtx3/> gs_nvtx.c -o libgsnvtx.so (probes/nvtx/build.py). */
#define _GNU_SOURCE
#define NVTX_NO_IMPL
#include <nvtx3/nvToolsExt.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <wchar.h>

#define GS_NAME 96          /* bytes of a range name kept (longer names are cut) */
#define GS_DEPTH 64         /* push/pop nesting tracked per thread */
#define GS_RING 4096        /* records per thread between flushes */
#define GS_FLUSH_MS 10
#define GS_DGRAM 60000
#define GS_MAGIC 0x67734e56u /* "gsNV" */
#define KIND_PUSH 0
#define KIND_MARK 1
#define KIND_STARTEND 2

typedef struct { uint32_t magic; uint32_t id; char name[GS_NAME]; } gs_domain;
typedef struct { uint64_t start, end; double payload; uint32_t tid, category; int16_t depth; uint8_t kind, has_payload;
                 const gs_domain *domain; char name[GS_NAME]; } gs_record;
typedef struct { uint64_t start; const gs_domain *domain; uint32_t category; double payload; uint8_t has_payload;
                 char name[GS_NAME]; } gs_open;
typedef struct { uint32_t magic, tid; gs_open open; } gs_startend;
typedef struct gs_ring { gs_record rec[GS_RING]; _Atomic uint32_t head, tail; _Atomic uint64_t dropped;
                         _Atomic int dead; struct gs_ring *next; } gs_ring;
typedef struct { gs_ring *ring; uint32_t tid; int depth; gs_open stack[GS_DEPTH]; } gs_thread;

static __thread gs_thread *me __attribute__((tls_model("initial-exec")));  /* no __tls_get_addr call per range */
static pthread_key_t thread_key;
static pthread_mutex_t rings_lock = PTHREAD_MUTEX_INITIALIZER;
static gs_ring *rings;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static _Atomic int flusher_running;
static _Atomic uint32_t next_domain = 1;
static _Atomic uint64_t send_dropped;
static int sock_fd = -1;
static struct sockaddr_un sock_addr;
static int pid;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void copy_name(char *dst, const char *src) {
    size_t n = src ? strnlen(src, GS_NAME - 1) : 0;
    memcpy(dst, src ? src : "", n);
    dst[n] = 0;
}

static void copy_wname(char *dst, const wchar_t *src) { /* ASCII of a wide name; other characters become '?' */
    size_t i = 0;
    for (; src && src[i] && i < GS_NAME - 1; i++) dst[i] = src[i] < 128 ? (char)src[i] : '?';
    dst[i] = 0;
}

static void ring_free(void *p) {  /* thread exit: the flusher frees the ring once it has sent it */
    if (!p) return;
    atomic_store(&((gs_thread *)p)->ring->dead, 1);
    free(p);
    me = NULL;
}

static void start_flusher(void);

static gs_thread *thread_state(void) {
    if (!atomic_load_explicit(&flusher_running, memory_order_relaxed)) start_flusher();  /* first use, or forked */
    if (me) return me;
    gs_thread *t = calloc(1, sizeof *t);
    gs_ring *r = calloc(1, sizeof *r);
    if (!t || !r) { free(t); free(r); return NULL; }
    t->ring = r;
    t->tid = (uint32_t)syscall(SYS_gettid);
    pthread_mutex_lock(&rings_lock);
    r->next = rings;
    rings = r;
    pthread_mutex_unlock(&rings_lock);
    pthread_setspecific(thread_key, t);  /* its destructor marks the ring dead; the flusher frees it once drained */
    return me = t;
}

static void emit(gs_thread *t, const gs_open *o, uint64_t end, int depth, int kind, uint32_t tid) {
    gs_ring *r = t->ring;
    uint32_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
    if (head - atomic_load_explicit(&r->tail, memory_order_acquire) >= GS_RING) {
        atomic_fetch_add_explicit(&r->dropped, 1, memory_order_relaxed);
        return;
    }
    gs_record *rec = &r->rec[head % GS_RING];
    rec->start = o->start; rec->end = end; rec->tid = tid; rec->depth = (int16_t)depth; rec->kind = (uint8_t)kind;
    rec->domain = o->domain; rec->category = o->category; rec->payload = o->payload;
    rec->has_payload = o->has_payload;
    memcpy(rec->name, o->name, GS_NAME);
    atomic_store_explicit(&r->head, head + 1, memory_order_release);
}

static void from_attributes(gs_open *o, const gs_domain *d, const nvtxEventAttributes_t *a) {
    o->domain = d; o->category = 0; o->has_payload = 0; o->name[0] = 0;
    if (!a) return;
    o->category = a->category;
    switch (a->payloadType) {
    case NVTX_PAYLOAD_TYPE_UNSIGNED_INT64: o->payload = (double)a->payload.ullValue; o->has_payload = 1; break;
    case NVTX_PAYLOAD_TYPE_INT64: o->payload = (double)a->payload.llValue; o->has_payload = 1; break;
    case NVTX_PAYLOAD_TYPE_DOUBLE: o->payload = a->payload.dValue; o->has_payload = 1; break;
    case NVTX_PAYLOAD_TYPE_UNSIGNED_INT32: o->payload = a->payload.uiValue; o->has_payload = 1; break;
    case NVTX_PAYLOAD_TYPE_INT32: o->payload = a->payload.iValue; o->has_payload = 1; break;
    case NVTX_PAYLOAD_TYPE_FLOAT: o->payload = a->payload.fValue; o->has_payload = 1; break;
    default: break;
    }
    if (a->messageType == NVTX_MESSAGE_TYPE_ASCII) copy_name(o->name, a->message.ascii);
    else if (a->messageType == NVTX_MESSAGE_TYPE_UNICODE) copy_wname(o->name, a->message.unicode);
    else if (a->messageType == NVTX_MESSAGE_TYPE_REGISTERED) copy_name(o->name, (const char *)a->message.registered);
}

#include "gs_nvtx_flush.h"

/* ---- push / pop (per thread, nested) ---- */
static int push(const gs_domain *d, const nvtxEventAttributes_t *a, const char *ascii, const wchar_t *wide) {
    gs_thread *t = thread_state();
    if (!t) return -1;
    int depth = t->depth++;
    if (depth >= GS_DEPTH) return depth;  /* too deep: kept count, not recorded */
    gs_open *o = &t->stack[depth];
    from_attributes(o, d, a);
    if (ascii) copy_name(o->name, ascii);
    if (wide) copy_wname(o->name, wide);
    o->start = now_ns();
    return depth;
}

static int pop(void) {
    uint64_t end = now_ns();
    gs_thread *t = me;
    if (!t || t->depth <= 0) return -1;
    int depth = --t->depth;
    if (depth < GS_DEPTH) emit(t, &t->stack[depth], end, depth, KIND_PUSH, t->tid);
    return depth;
}

static int NVTX_API p_PushEx(const nvtxEventAttributes_t *a) { return push(NULL, a, NULL, NULL); }
static int NVTX_API p_PushA(const char *m) { return push(NULL, NULL, m, NULL); }
static int NVTX_API p_PushW(const wchar_t *m) { return push(NULL, NULL, NULL, m); }
static int NVTX_API p_Pop(void) { return pop(); }
static int NVTX_API p_DPushEx(nvtxDomainHandle_t d, const nvtxEventAttributes_t *a) {
    return push((const gs_domain *)d, a, NULL, NULL);
}
static int NVTX_API p_DPop(nvtxDomainHandle_t d) { (void)d; return pop(); }

/* ---- start / end (any thread to any thread): the open range lives on the heap, its address is the id ---- */
static nvtxRangeId_t start(const gs_domain *d, const nvtxEventAttributes_t *a, const char *ascii,
                           const wchar_t *wide) {
    gs_startend *s = malloc(sizeof *s);
    if (!s) return 0;
    from_attributes(&s->open, d, a);
    if (ascii) copy_name(s->open.name, ascii);
    if (wide) copy_wname(s->open.name, wide);
    s->magic = GS_MAGIC;
    s->tid = (uint32_t)syscall(SYS_gettid);
    s->open.start = now_ns();
    return (nvtxRangeId_t)(uintptr_t)s;
}

static void end(nvtxRangeId_t id) {
    uint64_t t_end = now_ns();
    gs_startend *s = (gs_startend *)(uintptr_t)id;
    gs_thread *t = thread_state();
    if (!s || s->magic != GS_MAGIC) return;
    s->magic = 0;
    if (t) emit(t, &s->open, t_end, -1, KIND_STARTEND, s->tid);
    free(s);
}

static nvtxRangeId_t NVTX_API p_StartEx(const nvtxEventAttributes_t *a) { return start(NULL, a, NULL, NULL); }
static nvtxRangeId_t NVTX_API p_StartA(const char *m) { return start(NULL, NULL, m, NULL); }
static nvtxRangeId_t NVTX_API p_StartW(const wchar_t *m) { return start(NULL, NULL, NULL, m); }
static void NVTX_API p_End(nvtxRangeId_t id) { end(id); }
static nvtxRangeId_t NVTX_API p_DStartEx(nvtxDomainHandle_t d, const nvtxEventAttributes_t *a) {
    return start((const gs_domain *)d, a, NULL, NULL);
}
static void NVTX_API p_DEnd(nvtxDomainHandle_t d, nvtxRangeId_t id) { (void)d; end(id); }

/* ---- marks ---- */
static void mark(const gs_domain *d, const nvtxEventAttributes_t *a, const char *ascii, const wchar_t *wide) {
    gs_thread *t = thread_state();
    if (!t) return;
    gs_open o;
    from_attributes(&o, d, a);
    if (ascii) copy_name(o.name, ascii);
    if (wide) copy_wname(o.name, wide);
    o.start = now_ns();
    emit(t, &o, o.start, t->depth, KIND_MARK, t->tid);
}
static void NVTX_API p_MarkEx(const nvtxEventAttributes_t *a) { mark(NULL, a, NULL, NULL); }
static void NVTX_API p_MarkA(const char *m) { mark(NULL, NULL, m, NULL); }
static void NVTX_API p_MarkW(const wchar_t *m) { mark(NULL, NULL, NULL, m); }
static void NVTX_API p_DMarkEx(nvtxDomainHandle_t d, const nvtxEventAttributes_t *a) {
    mark((const gs_domain *)d, a, NULL, NULL);
}

/* ---- domains and registered strings: never freed (records in flight point at them) ---- */
static nvtxDomainHandle_t NVTX_API p_DomainCreateA(const char *name) {
    gs_domain *d = calloc(1, sizeof *d);
    if (!d) return NULL;
    d->magic = GS_MAGIC;
    d->id = atomic_fetch_add(&next_domain, 1);
    copy_name(d->name, name);
    return (nvtxDomainHandle_t)d;
}
static nvtxDomainHandle_t NVTX_API p_DomainCreateW(const wchar_t *name) {
    char buf[GS_NAME];
    copy_wname(buf, name);
    return p_DomainCreateA(buf);
}
static void NVTX_API p_DomainDestroy(nvtxDomainHandle_t d) { (void)d; }
static nvtxStringHandle_t NVTX_API p_RegisterStringA(nvtxDomainHandle_t d, const char *s) {
    (void)d;
    return (nvtxStringHandle_t)strndup(s ? s : "", GS_NAME - 1);
}
static nvtxStringHandle_t NVTX_API p_RegisterStringW(nvtxDomainHandle_t d, const wchar_t *s) {
    char buf[GS_NAME];
    copy_wname(buf, s);
    return p_RegisterStringA(d, buf);
}

#include "gs_nvtx_init.h"
