// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Network timing: TCP connection lifecycle with the 4-tuple, send/recv sizes
 * per socket (with the smoothed RTT the kernel keeps), and retransmits.
 * The socket address is the join key between these streams. */
#include "common.bpf.h"

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6

KP_RINGBUF(rb_tcp_state);
KP_RINGBUF(rb_sock_io);
KP_RINGBUF(rb_tcp_retrans);

static __always_inline void kp_sk_tuple(struct sock *sk, __u16 *family, __u16 *sport, __u16 *dport,
					__u8 *saddr, __u8 *daddr)
{
	*family = BPF_CORE_READ(sk, __sk_common.skc_family);
	*sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	*dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (*family == AF_INET) {
		__builtin_memset(saddr, 0, 16);
		__builtin_memset(daddr, 0, 16);
		bpf_probe_read_kernel(saddr, 4, &sk->__sk_common.skc_rcv_saddr);
		bpf_probe_read_kernel(daddr, 4, &sk->__sk_common.skc_daddr);
	} else {
		bpf_probe_read_kernel(saddr, 16, &sk->__sk_common.skc_v6_rcv_saddr);
		bpf_probe_read_kernel(daddr, 16, &sk->__sk_common.skc_v6_daddr);
	}
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(kp_inet_sock_set_state, struct sock *sk, int oldstate, int newstate)
{
	if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
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
	kp_submit(r);
	return 0;
}

static __always_inline void kp_sock_io(struct sock *sk, int ret, __u8 dir)
{
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (family != AF_INET && family != AF_INET6)
		return;
	if (ret <= 0)
		return;
	struct kp_config *cfg = kp_cfg();
	__u64 id = bpf_get_current_pid_tgid();
	if (!kp_is_watched(cfg, id >> 32)) {
		kp_count(KP_CNT_SOCK_IO_UNWATCHED, 1);
		return;
	}
	struct kp_sock_io *r = kp_reserve(&rb_sock_io, KP_EV_SOCK_IO, sizeof(*r));
	if (!r)
		return;
	__u8 proto = BPF_CORE_READ(sk, sk_protocol);
	r->ts_ns = bpf_ktime_get_ns();
	r->skaddr = (__u64)sk;
	r->tgid = id >> 32;
	r->tid = (__u32)id;
	r->bytes = ret;
	r->dir = dir;
	r->protocol = proto;
	r->srtt_us = 0;
	if (proto == IPPROTO_TCP)
		r->srtt_us = BPF_CORE_READ((struct tcp_sock *)sk, srtt_us) >> 3;
	kp_sk_tuple(sk, &r->family, &r->sport, &r->dport, r->saddr, r->daddr);
	kp_submit(r);
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
	kp_submit(r);
	return 0;
}
