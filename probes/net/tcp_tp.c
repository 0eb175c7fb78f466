// Classic tracepoint programs of tcp_trace.c (appended to it without USE_RAW): arguments come from the
// tracepoints' format files, so they need no BTF.

// bcc writes kfree_skb's argument struct with the field's declared type; a 4-byte enum is all it needs, and no
// header we include defines the real one (the values are named from the tracepoint's format in user space).
enum skb_drop_reason { GS_DROP_REASON_STUB = 0 };

TRACEPOINT_PROBE(tcp, tcp_retransmit_skb) {
#if HAS_RETRANS_ERR
    if (args->err)
        return 0;
#endif
    struct tuple t = {};
    u64 segs = 1, bytes = 0;
    FILL_TUPLE(t, args);
    skb_segs((void *)args->skbaddr, &segs, &bytes);
    add_retrans(&t, (u64)args->skaddr, segs, bytes);
    return 0;
}

#if HAS_SEND_LENGTH
TRACEPOINT_PROBE(sock, sock_send_length) {
    if (args->protocol == IPPROTO_TCP && args->ret > 0)
        remember_owner((u64)args->sk);
    return 0;
}
#endif

TRACEPOINT_PROBE(sock, inet_sock_set_state) {
    if (args->protocol != IPPROTO_TCP)
        return 0;
    struct tuple t = {};
    FILL_TUPLE(t, args);
    on_state((u64)args->skaddr, args->newstate, &t);
    return 0;
}

TRACEPOINT_PROBE(skb, kfree_skb) {
    u32 reason = 0;
    u64 rx_sk = 0;
#if HAS_DROP_REASON
    reason = args->reason;
#endif
#if HAS_RX_SK
    rx_sk = (u64)args->rx_sk;
#endif
    add_drop((void *)args->skbaddr, reason, args->protocol, rx_sk);
    return 0;
}
