/* gs_nvtx.c, part 2: the flusher thread that drains every thread's ring into JSON datagrams (format: the
 * docstring of probes/nvtx/probe.py), and the fork handler. Included once, by gs_nvtx.c. */
#define GS_RECORD_MAX 800  /* a record's JSON at most (a name of GS_NAME bytes, each escaped to 6) */

static size_t json_name(char *out, const char *s) {
    size_t n = 0;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') { out[n++] = '\\'; out[n++] = (char)c; }
        else if (c < 0x20) n += (size_t)sprintf(out + n, "\\u%04x", c);
        else out[n++] = (char)c;
    }
    return n;
}

static size_t json_record(char *out, const gs_record *r) {
    size_t n = 0;
    n += (size_t)sprintf(out + n, "{\"n\":\"");
    n += json_name(out + n, r->name);
    n += (size_t)sprintf(out + n, "\",\"d\":\"");
    if (r->domain && r->domain->magic == GS_MAGIC) n += json_name(out + n, r->domain->name);
    n += (size_t)sprintf(out + n, "\",\"s\":%llu,\"e\":%llu,\"t\":%u,\"k\":%d,\"c\":%u,\"y\":%u",
                         (unsigned long long)r->start, (unsigned long long)r->end, r->tid, r->depth, r->category,
                         r->kind);
    if (r->has_payload) n += (size_t)sprintf(out + n, ",\"p\":%.17g", r->payload);
    out[n++] = '}';
    return n;
}

static uint64_t dropped_total(void) {  /* called with rings_lock held */
    uint64_t total = atomic_load(&send_dropped);
    for (gs_ring *r = rings; r; r = r->next) total += atomic_load(&r->dropped);
    return total;
}

static size_t header(char *buf, uint64_t dropped) {
    return (size_t)sprintf(buf, "{\"v\":1,\"pid\":%d,\"dropped\":%llu,\"ranges\":[", pid, (unsigned long long)dropped);
}

static void send_datagram(char *buf, size_t len, unsigned count) {
    buf[len++] = ']';
    buf[len++] = '}';
    if (sendto(sock_fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL, (struct sockaddr *)&sock_addr, sizeof sock_addr) < 0)
        atomic_fetch_add(&send_dropped, count);  /* no agent, or its socket full: never wait */
}

static void drain(char *buf) {
    pthread_mutex_lock(&rings_lock);
    uint64_t dropped = dropped_total();
    size_t len = header(buf, dropped), start = len;
    unsigned count = 0;
    gs_ring **link = &rings;
    while (*link) {
        gs_ring *r = *link;
        uint32_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
        uint32_t head = atomic_load_explicit(&r->head, memory_order_acquire);
        for (; tail != head; tail++) {
            if (len + GS_RECORD_MAX > GS_DGRAM) {
                send_datagram(buf, len, count);
                len = start = header(buf, dropped);
                count = 0;
            }
            if (len > start) buf[len++] = ',';
            len += json_record(buf + len, &r->rec[tail % GS_RING]);
            count++;
        }
        atomic_store_explicit(&r->tail, tail, memory_order_release);
        if (atomic_load(&r->dead) && tail == atomic_load(&r->head)) {  /* its thread exited and all is sent */
            *link = r->next;
            free(r);
            continue;
        }
        link = &r->next;
    }
    pthread_mutex_unlock(&rings_lock);
    if (count) send_datagram(buf, len, count);
}

static void *flusher(void *arg) {
    (void)arg;
    static char buf[GS_DGRAM + GS_RECORD_MAX];
    struct timespec pause = {0, GS_FLUSH_MS * 1000000L};
    pthread_setname_np(pthread_self(), "gs-nvtx");
    for (;;) {
        nanosleep(&pause, NULL);
        drain(buf);
    }
    return NULL;
}

static void start_flusher(void) {
    int expected = 0;
    if (!atomic_compare_exchange_strong(&flusher_running, &expected, 1)) return;
    pthread_t th;
    pthread_attr_t attr;
    sigset_t all, old;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);  /* the host process's signals stay with its own threads */
    if (pthread_create(&th, &attr, flusher, NULL) != 0) atomic_store(&flusher_running, 0);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
}

static void after_fork_child(void) {  /* the child has only the forking thread: keep its ring, start afresh */
    pid = getpid();
    atomic_store(&flusher_running, 0);
    rings = NULL;
    pthread_mutex_init(&rings_lock, NULL);
    if (me) {
        gs_ring *r = me->ring;
        atomic_store(&r->head, 0);
        atomic_store(&r->tail, 0);
        atomic_store(&r->dropped, 0);
        r->next = NULL;
        rings = r;
    }
    atomic_store(&send_dropped, 0);
}
