// tc clsact programs of the network probe: per (interface, direction) byte/packet counts in fixed time bins, and
// the flows seen in bins that are running hot. Specialised by net_tc.py with:
//   BIN_NS      bin width in ns              NBINS    bins per ring (a power of two >= ring_s / bin)
//   NLANES      CPU lanes per ring (pow2)    NRINGS   2 * selected interfaces
//   GROUP_BINS  bins per hot-flow group      MAX_FLOWS  hot-flow table size   MAX_IFACES
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>

#define OVERRUN_FLAG (1ULL << 63)
#define DIR_INGRESS 0
#define DIR_EGRESS 1

// One bin of one lane of one ring. Writers never reset a slot: they only add. The reader (user space, through
// mmap) clears a slot after its bin is complete, so there is no reset race between CPUs. `idx` is the absolute bin
// number (ktime / BIN_NS) that last wrote here; a writer that finds another non-zero bin number (a lap the reader
// has not cleared yet) sets OVERRUN_FLAG so the reader knows the slot mixes two bins.
struct slot {
    u64 idx;
    u64 bytes;
    u64 packets;
};

struct iface {
    u32 ring;          // ring of the ingress direction; egress is ring + 1
    u32 l2_len;        // bytes before the network header (14 on Ethernet, 0 on L3 devices)
    u64 hot_bytes;     // per-lane bytes in a bin from which flows are sampled
    u64 sample_bytes;  // a flow is sampled each time the lane's bin total crosses a multiple of this
};

struct flow_key {
    u32 ring;
    u16 ethertype;
    u8 proto;
    u8 pad;
    u16 sport;
    u16 dport;
    u32 pad2;
    u8 saddr[16];
    u8 daddr[16];
    u64 group;      // bin index / GROUP_BINS
};

struct flow_val {
    u64 bytes;
    u64 packets;
};

BPF_F_TABLE("array", u32, struct slot, bins, NRINGS * NLANES * NBINS, BPF_F_MMAPABLE);
BPF_HASH(ifaces, u32, struct iface, MAX_IFACES);
BPF_HASH(hot_flows, struct flow_key, struct flow_val, MAX_FLOWS);
BPF_ARRAY(stats, u64, 2);  // 0: writes that found an undrained older lap, 1: hot flows lost to a full table

static __always_inline void count_stat(u32 i) {
    u64 *v = stats.lookup(&i);
    if (v)
        __sync_fetch_and_add(v, 1);
}

static __always_inline void parse_ports(struct __sk_buff *skb, u32 off, struct flow_key *k) {
    u16 ports[2];
    if (k->proto != IPPROTO_TCP && k->proto != IPPROTO_UDP)
        return;
    if (bpf_skb_load_bytes(skb, off, ports, sizeof(ports)) == 0) {
        k->sport = bpf_ntohs(ports[0]);
        k->dport = bpf_ntohs(ports[1]);
    }
}

// Called for one packet in `weight` sampled bytes: byte-based sampling keeps the cost per hot bin bounded at any
// packet rate, and each flow's sampled bytes estimate its share of the bin (large flows are sampled more often).
static __always_inline void record_flow(struct __sk_buff *skb, u32 ring, u32 l2_len, u64 idx, u64 weight) {
    struct flow_key k = {};
    u8 hdr[40];
    k.ring = ring;
    k.group = idx / GROUP_BINS;
    k.ethertype = bpf_ntohs(skb->protocol);
    if (k.ethertype == ETH_P_IP) {
        if (bpf_skb_load_bytes(skb, l2_len, hdr, 20) != 0)
            return;
        k.proto = hdr[9];
        __builtin_memcpy(k.saddr, &hdr[12], 4);
        __builtin_memcpy(k.daddr, &hdr[16], 4);
        // Only the first fragment carries ports (frag_off bits other than DF/MF = 0).
        if ((((u16)hdr[6] << 8 | hdr[7]) & 0x1fff) == 0)
            parse_ports(skb, l2_len + (hdr[0] & 0xf) * 4, &k);
    } else if (k.ethertype == ETH_P_IPV6) {
        if (bpf_skb_load_bytes(skb, l2_len, hdr, 40) != 0)
            return;
        k.proto = hdr[6];  // extension headers are not walked: such flows show their next-header number
        __builtin_memcpy(k.saddr, &hdr[8], 16);
        __builtin_memcpy(k.daddr, &hdr[24], 16);
        parse_ports(skb, l2_len + 40, &k);
    }
    struct flow_val zero = {};
    struct flow_val *v = hot_flows.lookup_or_try_init(&k, &zero);
    if (!v) {
        count_stat(1);
        return;
    }
    __sync_fetch_and_add(&v->bytes, weight);
    __sync_fetch_and_add(&v->packets, 1);
}

static __always_inline int account(struct __sk_buff *skb, u32 dir) {
    u32 ifindex = skb->ifindex;
    struct iface *ifc = ifaces.lookup(&ifindex);
    if (!ifc)
        return TC_ACT_UNSPEC;
    u64 idx = bpf_ktime_get_ns() / BIN_NS;
    u32 ring = ifc->ring + dir;
    u32 lane = bpf_get_smp_processor_id() & (NLANES - 1);
    u32 key = (ring * NLANES + lane) * NBINS + (u32)(idx & (NBINS - 1));
    struct slot *s = bins.lookup(&key);
    if (!s)
        return TC_ACT_UNSPEC;
    u64 cur = s->idx;
    if ((cur & ~OVERRUN_FLAG) != idx) {
        // Every writer of this bin stores the same number, so racing stores are harmless.
        s->idx = cur ? (idx | OVERRUN_FLAG) : idx;
        if (cur)
            count_stat(0);
    }
    u64 len = skb->len;
    __sync_fetch_and_add(&s->bytes, len);
    __sync_fetch_and_add(&s->packets, 1);
    u64 total = s->bytes;  // may include other CPUs' adds of the same lane: sampling stays unbiased enough
    if (total >= ifc->hot_bytes && total >= len) {
        u64 step = ifc->sample_bytes;
        u64 crossed = total / step - (total - len) / step;
        if (crossed)
            record_flow(skb, ring, ifc->l2_len, idx, crossed * step);
    }
    // Never end classification: filters after ours (anybody else's) still see every packet.
    return TC_ACT_UNSPEC;
}

int gs_net_ingress(struct __sk_buff *skb) {
    return account(skb, DIR_INGRESS);
}

int gs_net_egress(struct __sk_buff *skb) {
    return account(skb, DIR_EGRESS);
}
