// TCP retransmits and skb drops, aggregated per connection / drop reason in the kernel (read and cleared by
// tcp_trace.py each poll). Specialised by the loader with:
//   MAX_KEYS, MAX_SOCKS            table sizes
//   HAS_RETRANS_ERR                tcp_retransmit_skb has an `err` field (6.10+): count only successful sends
//   HAS_SEND_LENGTH                sock:sock_send_length exists: learn socket owners on every TCP send
//   HAS_DROP_REASON, HAS_RX_SK     kfree_skb fields present on this kernel
//   HAS_SKB_BTF                    SKB_*_OFF / TCB_GSO_SEGS_OFF come from the running kernel's BTF
//   USE_RAW                        raw tracepoints (socket fields at SKC_*_OFF / SK_PROTOCOL_OFF from BTF):
//                                  a raw tracepoint program is skipped only if it interrupts itself, while a
//                                  classic tracepoint program is skipped whenever it interrupts *any* tracing
//                                  program on that CPU (the kernel's shared bpf_prog_active guard), which lost
//                                  ~1-5 % of retransmits and drops next to other probes in our tests.
//   HAS_SYNACK                     tcp:tcp_retransmit_synack exists
// The programs themselves follow this file: tcp_trace_raw.c (USE_RAW) or tcp_trace_tp.c.
#include <uapi/linux/in.h>
#include "common.h"

#define AF_INET 2
#define AF_INET6 10
#define TCP_ESTABLISHED 1
#define TCP_SYN_SENT 2
#define TCP_CLOSE 7

struct tuple {
    u16 family;
    u16 sport;
    u16 dport;
    u8 proto;
    u8 pad;
    u8 saddr[16];
    u8 daddr[16];
};

struct owner {
    u32 pid;
    char comm[16];
};

struct rval {
    u64 segs;   // what TcpRetransSegs counts (tcp_skb_pcount of each retransmitted skb)
    u64 skbs;
    u64 bytes;
    u64 first_ns;
    u64 last_ns;
    struct owner who;
};

struct dkey {
    u32 reason;
    u16 ethertype;
    u16 pad;
    struct tuple t;
};

struct dval {
    u64 count;
    u64 bytes;
    u64 first_ns;
    u64 last_ns;
    struct owner who;
};

BPF_TABLE("lru_hash", u64, struct owner, sock_owner, MAX_SOCKS);   // sock address -> process using it
BPF_TABLE("lru_hash", u64, struct tuple, sock_tuple, MAX_SOCKS);   // sock address -> its connection
BPF_HASH(retrans, struct tuple, struct rval, MAX_KEYS);
BPF_HASH(drops, struct dkey, struct dval, MAX_KEYS);
// lost[0]: retransmit keys lost (table full), lost[1]: drop keys lost

static __always_inline void owner_of(u64 sk, struct owner *out) {
    struct owner *o = sock_owner.lookup(&sk);
    if (o)
        __builtin_memcpy(out, o, sizeof(*out));
}

#define FILL_TUPLE(t, a)                                                   \
    do {                                                                   \
        (t).family = (a)->family;                                          \
        (t).sport = (a)->sport;                                            \
        (t).dport = (a)->dport;                                            \
        (t).proto = IPPROTO_TCP;                                           \
        if ((a)->family == AF_INET) {                                      \
            __builtin_memcpy((t).saddr, (a)->saddr, 4);                    \
            __builtin_memcpy((t).daddr, (a)->daddr, 4);                    \
        } else {                                                           \
            __builtin_memcpy((t).saddr, (a)->saddr_v6, 16);                \
            __builtin_memcpy((t).daddr, (a)->daddr_v6, 16);                \
        }                                                                  \
    } while (0)

static __always_inline void add_retrans(struct tuple *t, u64 sk, u64 segs, u64 bytes) {
    struct rval zero = {};
    struct rval *v = retrans.lookup_or_try_init(t, &zero);
    if (!v) {
        count_lost(0);
        return;
    }
    u64 now = bpf_ktime_get_ns();
    if (v->first_ns == 0) {
        v->first_ns = now;
        owner_of(sk, &v->who);
    }
    v->last_ns = now;
    __sync_fetch_and_add(&v->segs, segs);
    __sync_fetch_and_add(&v->skbs, 1);
    __sync_fetch_and_add(&v->bytes, bytes);
}

static __always_inline void skb_segs(void *skb, u64 *segs, u64 *bytes) {
#if HAS_SKB_BTF
    u16 gso_segs = 0;
    u32 len = 0;
    bpf_probe_read_kernel(&gso_segs, 2, skb + SKB_CB_OFF + TCB_GSO_SEGS_OFF);
    bpf_probe_read_kernel(&len, 4, skb + SKB_LEN_OFF);
    if (gso_segs)
        *segs = gso_segs;
    *bytes = len;
#endif
}

#if HAS_SYNACK
TRACEPOINT_PROBE(tcp, tcp_retransmit_synack) {
    struct tuple t = {};
    FILL_TUPLE(t, args);
    add_retrans(&t, (u64)args->skaddr, 1, 0);
    return 0;
}
#endif

static __always_inline void remember_owner(u64 sk) {
    u32 pid = bpf_get_current_pid_tgid() >> 32;
    struct owner *o = sock_owner.lookup(&sk);
    if (o && o->pid == pid)
        return;
    struct owner n = {.pid = pid};
    bpf_get_current_comm(n.comm, sizeof(n.comm));
    sock_owner.update(&sk, &n);
}

static __always_inline void on_state(u64 sk, int newstate, struct tuple *t) {
    if (newstate == TCP_CLOSE) {
        sock_owner.delete(&sk);
        sock_tuple.delete(&sk);
        return;
    }
    if (newstate == TCP_SYN_SENT)
        remember_owner(sk);  // connect() runs in the connecting process
    if (newstate == TCP_SYN_SENT || newstate == TCP_ESTABLISHED)
        sock_tuple.update(&sk, t);
}

#if HAS_SKB_BTF
// The packet's own addresses, from the network header the stack already located.
static __always_inline void skb_tuple(void *skb, u16 ethertype, struct tuple *t) {
    unsigned char *head = 0;
    u16 nh = 0xffff;
    u8 ip[40];
    u16 ports[2] = {};
    bpf_probe_read_kernel(&head, sizeof(head), skb + SKB_HEAD_OFF);
    bpf_probe_read_kernel(&nh, 2, skb + SKB_NETWORK_HEADER_OFF);
    if (!head || nh == 0xffff)
        return;
    if (ethertype == 0x0800) {
        if (bpf_probe_read_kernel(ip, 20, head + nh))
            return;
        t->family = AF_INET;
        t->proto = ip[9];
        __builtin_memcpy(t->saddr, &ip[12], 4);
        __builtin_memcpy(t->daddr, &ip[16], 4);
        if ((t->proto == IPPROTO_TCP || t->proto == IPPROTO_UDP) &&
            bpf_probe_read_kernel(ports, 4, head + nh + (ip[0] & 0xf) * 4) == 0) {
            t->sport = bpf_ntohs(ports[0]);
            t->dport = bpf_ntohs(ports[1]);
        }
    } else if (ethertype == 0x86DD) {
        if (bpf_probe_read_kernel(ip, 40, head + nh))
            return;
        t->family = AF_INET6;
        t->proto = ip[6];
        __builtin_memcpy(t->saddr, &ip[8], 16);
        __builtin_memcpy(t->daddr, &ip[24], 16);
        if ((t->proto == IPPROTO_TCP || t->proto == IPPROTO_UDP) &&
            bpf_probe_read_kernel(ports, 4, head + nh + 40) == 0) {
            t->sport = bpf_ntohs(ports[0]);
            t->dport = bpf_ntohs(ports[1]);
        }
    }
}
#endif

static __always_inline void add_drop(void *skb, u32 reason, u16 ethertype, u64 rx_sk) {
    struct dkey k = {};
    u64 bytes = 0;
    k.reason = reason;
    k.ethertype = ethertype;
#if HAS_SKB_BTF
    u32 len = 0;
    skb_tuple(skb, k.ethertype, &k.t);
    bpf_probe_read_kernel(&len, 4, skb + SKB_LEN_OFF);
    bytes = len;
#else
    if (rx_sk) {
        struct tuple *t = sock_tuple.lookup(&rx_sk);
        if (t)
            __builtin_memcpy(&k.t, t, sizeof(k.t));
    }
#endif
    struct dval zero = {};
    struct dval *v = drops.lookup_or_try_init(&k, &zero);
    if (!v) {
        count_lost(1);
        return;
    }
    u64 now = bpf_ktime_get_ns();
    if (v->first_ns == 0) {
        v->first_ns = now;
        if (rx_sk)
            owner_of(rx_sk, &v->who);
    }
    v->last_ns = now;
    __sync_fetch_and_add(&v->count, 1);
    __sync_fetch_and_add(&v->bytes, bytes);
}

