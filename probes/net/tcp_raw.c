// Raw-tracepoint programs of tcp_trace.c (appended to it when USE_RAW): arguments are the tracepoint's
// TP_PROTO, and socket fields are read at offsets from the running kernel's BTF.

// A socket's own view of its connection (local = s*, remote = d*), as the tracepoint would have copied it.
static __always_inline void sk_tuple(void *sk, struct tuple *t) {
    u16 family = 0, num = 0, dport = 0;
    bpf_probe_read_kernel(&family, 2, sk + SKC_FAMILY_OFF);
    bpf_probe_read_kernel(&num, 2, sk + SKC_NUM_OFF);
    bpf_probe_read_kernel(&dport, 2, sk + SKC_DPORT_OFF);
    t->family = family;
    t->proto = IPPROTO_TCP;
    t->sport = num;
    t->dport = bpf_ntohs(dport);
    if (family == AF_INET) {
        bpf_probe_read_kernel(t->saddr, 4, sk + SKC_RCV_SADDR_OFF);
        bpf_probe_read_kernel(t->daddr, 4, sk + SKC_DADDR_OFF);
    } else {
        bpf_probe_read_kernel(t->saddr, 16, sk + SKC_V6_RCV_SADDR_OFF);
        bpf_probe_read_kernel(t->daddr, 16, sk + SKC_V6_DADDR_OFF);
    }
}

static __always_inline u16 sk_protocol(void *sk) {
    u16 proto = 0;
    bpf_probe_read_kernel(&proto, 2, sk + SK_PROTOCOL_OFF);
    return proto;
}

// TP_PROTO(const struct sock *sk, const struct sk_buff *skb[, int err])
RAW_TRACEPOINT_PROBE(tcp_retransmit_skb) {
#if HAS_RETRANS_ERR
    if ((int)ctx->args[2])
        return 0;  // not sent (e.g. -EBUSY): TcpRetransSegs does not count it either
#endif
    void *sk = (void *)ctx->args[0];
    struct tuple t = {};
    u64 segs = 1, bytes = 0;
    sk_tuple(sk, &t);
    skb_segs((void *)ctx->args[1], &segs, &bytes);
    add_retrans(&t, (u64)sk, segs, bytes);
    return 0;
}

#if HAS_SEND_LENGTH
// TP_PROTO(struct sock *sk, int ret, int flags); process context: the sender is the current task.
RAW_TRACEPOINT_PROBE(sock_send_length) {
    void *sk = (void *)ctx->args[0];
    if ((int)ctx->args[1] > 0 && sk_protocol(sk) == IPPROTO_TCP)
        remember_owner((u64)sk);
    return 0;
}
#endif

// TP_PROTO(const struct sock *sk, const int oldstate, const int newstate)
RAW_TRACEPOINT_PROBE(inet_sock_set_state) {
    void *sk = (void *)ctx->args[0];
    if (sk_protocol(sk) != IPPROTO_TCP)
        return 0;
    struct tuple t = {};
    sk_tuple(sk, &t);
    on_state((u64)sk, (int)ctx->args[2], &t);
    return 0;
}

// TP_PROTO(struct sk_buff *skb, void *location, enum skb_drop_reason reason[, struct sock *rx_sk])
RAW_TRACEPOINT_PROBE(kfree_skb) {
    void *skb = (void *)ctx->args[0];
    u16 proto = 0;
    u32 reason = 0;
    u64 rx_sk = 0;
    bpf_probe_read_kernel(&proto, 2, skb + SKB_PROTOCOL_OFF);
#if HAS_DROP_REASON
    reason = (u32)ctx->args[2];
#endif
#if HAS_RX_SK
    rx_sk = (u64)ctx->args[3];
#endif
    add_drop(skb, reason, bpf_ntohs(proto), rx_sk);
    return 0;
}
