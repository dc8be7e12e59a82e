// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Network timing: TCP connection lifecycle with the 4-tuple, send/recv sizes
 * per socket (with the smoothed RTT the kernel keeps), and retransmits.
 * The socket address is the join key between these streams. With a bounded
 * policy (sock_flush_ms > 0) sends/recvs are summed per socket and direction in
 * socket-local storage and emitted at most once per interval: byte totals stay
 * exact, a busy connection costs a handful of records per second. */
#include "common.bpf.h"

KP_RINGBUF(rb_tcp_state);

/* Per-socket accumulators (index 0 send, 1 recv), freed with the socket. */
struct kp_sock_acc {
	__u64 last_emit[2]; /* jiffies, or ns when the agent could not tell the tick rate */
	__s64 pending[2];
	__u32 tgid[2];
	__u32 tid[2];
};

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct kp_sock_acc);
} sock_acc SEC(".maps");

KP_RINGBUF(rb_sock_io);
KP_RINGBUF(rb_tcp_retrans);

static __always_inline void kp_emit_sock_io(struct sock *sk, __u64 now, __u32 tgid, __u32 tid, __s64 bytes,
					    __u8 dir)
{
	struct kp_sock_io *r = kp_reserve(&rb_sock_io, KP_EV_SOCK_IO, sizeof(*r));
	if (!r)
		return;
	__u8 proto = BPF_CORE_READ(sk, sk_protocol);
	r->ts_ns = now;
	r->skaddr = (__u64)sk;
	r->tgid = tgid;
	r->tid = tid;
	r->bytes = bytes > 0x7fffffff ? 0x7fffffff : bytes;
	r->dir = dir;
	r->protocol = proto;
	r->srtt_us = 0;
	if (proto == IPPROTO_TCP)
		r->srtt_us = BPF_CORE_READ((struct tcp_sock *)sk, srtt_us) >> 3;
	kp_sk_tuple(sk, &r->family, &r->sport, &r->dport, r->saddr, r->daddr);
	kp_submit_to(&rb_sock_io, r);
}

/* Folding intervals are counted in jiffies (a plain load, where a clock read
 * costs ~90 ns on a VM) when the agent knows the tick rate. */
static __always_inline __u64 kp_fold_clock(kp_settings_t *cfg)
{
	return cfg->sock_flush_jiffies ? bpf_jiffies64() : bpf_ktime_get_ns();
}

static __always_inline __u64 kp_fold_interval(kp_settings_t *cfg)
{
	return cfg->sock_flush_jiffies ? cfg->sock_flush_jiffies : cfg->sock_flush_ms * 1000000ULL;
}

/* A closing socket flushes what its accumulators still hold. */
static __always_inline void kp_flush_sock(struct sock *sk)
{
	kp_settings_t *cfg = kp_cfg();
	struct kp_sock_acc *acc = bpf_sk_storage_get(&sock_acc, sk, 0, 0);
	if (!acc)
		return;
	__u64 now = bpf_ktime_get_ns(), mark = kp_fold_clock(cfg);
	if (acc->pending[0] > 0) {
		kp_emit_sock_io(sk, now, acc->tgid[0], acc->tid[0], acc->pending[0], 0);
		acc->pending[0] = 0;
		acc->last_emit[0] = mark;
	}
	if (acc->pending[1] > 0) {
		kp_emit_sock_io(sk, now, acc->tgid[1], acc->tid[1], acc->pending[1], 1);
		acc->pending[1] = 0;
		acc->last_emit[1] = mark;
	}
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(kp_inet_sock_set_state, struct sock *sk, int oldstate, int newstate)
{
	if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	if (newstate == BPF_TCP_CLOSE || newstate == BPF_TCP_FIN_WAIT1 || newstate == BPF_TCP_CLOSE_WAIT)
		kp_flush_sock(sk);
	struct kp_tcp_state *r = kp_reserve(&rb_tcp_state, KP_EV_TCP_STATE, sizeof(*r));
	if (!r)
		return 0;
	__u64 id = bpf_get_current_pid_tgid();
	r->ts_ns = bpf_ktime_get_ns();
	r->skaddr = (__u64)sk;
	r->tgid = id >> 32;
	r->tid = (__u32)id;
	r->oldstate = oldstate;
	r->newstate = newstate;
	kp_sk_tuple(sk, &r->family, &r->sport, &r->dport, r->saddr, r->daddr);
	__builtin_memset(r->comm, 0, KP_COMM_LEN);
	bpf_get_current_comm(&r->comm, sizeof(r->comm));
	struct tcp_sock *tp = (struct tcp_sock *)sk;
	r->bytes_sent = BPF_CORE_READ(tp, bytes_sent);
	r->bytes_received = BPF_CORE_READ(tp, bytes_received);
	kp_submit_to(&rb_tcp_state, r);
	return 0;
}

/* Runs on every send and recv of the host: the folded path makes no helper call
 * beyond the socket-storage lookup (fields are plain loads through the typed
 * pointer, the interval is checked in jiffies, the clock is read only to emit). */
static __always_inline void kp_sock_io(struct sock *sk, int ret, __u8 dir)
{
	if (ret <= 0)
		return;
	__u16 family = sk->__sk_common.skc_family;
	if (family != AF_INET && family != AF_INET6)
		return;
	kp_settings_t *cfg = kp_cfg();
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32, d = dir & 1;
	struct kp_sock_acc *acc = 0;
	if (cfg->sock_flush_ms) {
		acc = bpf_sk_storage_get(&sock_acc, sk, 0, 0);
		/* the process that used this socket last was watched: no watch-list lookup */
		if (acc && acc->tgid[d] == tgid && tgid)
			goto fold;
	}
	if (!kp_is_watched(cfg, tgid)) {
		kp_count(KP_CNT_SOCK_IO_UNWATCHED, 1);
		return;
	}
	if (!cfg->sock_flush_ms) {
		kp_emit_sock_io(sk, bpf_ktime_get_ns(), tgid, (__u32)id, ret, dir);
		return;
	}
	if (!acc)
		acc = bpf_sk_storage_get(&sock_acc, sk, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!acc) {
		kp_emit_sock_io(sk, bpf_ktime_get_ns(), tgid, (__u32)id, ret, dir);
		return;
	}
fold:
	acc->pending[d] += ret;
	acc->tgid[d] = tgid;
	acc->tid[d] = (__u32)id;
	__u64 mark = kp_fold_clock(cfg);
	if (mark - acc->last_emit[d] < kp_fold_interval(cfg)) {
		kp_count(KP_CNT_SOCK_IO_FOLDED, 1);
		return;
	}
	kp_emit_sock_io(sk, bpf_ktime_get_ns(), tgid, (__u32)id, acc->pending[d], d);
	acc->pending[d] = 0;
	acc->last_emit[d] = mark;
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(kp_sock_send_length, struct sock *sk, int ret, int flags)
{
	kp_sock_io(sk, ret, 0);
	return 0;
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(kp_sock_recv_length, struct sock *sk, int ret, int flags)
{
	kp_sock_io(sk, ret, 1);
	return 0;
}

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(kp_tcp_retransmit_skb, struct sock *sk)
{
	struct kp_tcp_retrans *r = kp_reserve(&rb_tcp_retrans, KP_EV_TCP_RETRANS, sizeof(*r));
	if (!r)
		return 0;
	r->ts_ns = bpf_ktime_get_ns();
	r->skaddr = (__u64)sk;
	r->state = BPF_CORE_READ(sk, __sk_common.skc_state);
	r->pad = 0;
	r->srtt_us = BPF_CORE_READ((struct tcp_sock *)sk, srtt_us) >> 3;
	kp_sk_tuple(sk, &r->family, &r->sport, &r->dport, r->saddr, r->daddr);
	kp_submit_to(&rb_tcp_retrans, r);
	return 0;
}
