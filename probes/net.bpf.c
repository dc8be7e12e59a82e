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

SEC("tracepoint/sock/inet_sock_set_state")
int kp_inet_sock_set_state(struct trace_event_raw_inet_sock_set_state *ctx)
{
	if (ctx->protocol != IPPROTO_TCP)
		return 0;
	struct kp_tcp_state *r = kp_reserve(&rb_tcp_state, KP_EV_TCP_STATE, sizeof(*r));
	if (!r)
		return 0;
	__u64 id = bpf_get_current_pid_tgid();
	r->ts_ns = bpf_ktime_get_ns();
	r->skaddr = (__u64)ctx->skaddr;
	r->tgid = id >> 32;
	r->tid = (__u32)id;
	r->sport = ctx->sport;
	r->dport = ctx->dport;
	r->family = ctx->family;
	r->oldstate = ctx->oldstate;
	r->newstate = ctx->newstate;
	__builtin_memset(r->saddr, 0, 16);
	__builtin_memset(r->daddr, 0, 16);
	if (ctx->family == AF_INET) {
		__builtin_memcpy(r->saddr, ctx->saddr, 4);
		__builtin_memcpy(r->daddr, ctx->daddr, 4);
	} else {
		__builtin_memcpy(r->saddr, ctx->saddr_v6, 16);
		__builtin_memcpy(r->daddr, ctx->daddr_v6, 16);
	}
	__builtin_memset(r->comm, 0, KP_COMM_LEN);
	bpf_get_current_comm(&r->comm, sizeof(r->comm));
	kp_submit(r);
	return 0;
}

static __always_inline void kp_sock_io(struct trace_event_raw_sock_msg_length *ctx, __u8 dir)
{
	if (ctx->family != AF_INET && ctx->family != AF_INET6)
		return;
	if (ctx->ret <= 0)
		return;
	struct kp_config *cfg = kp_cfg();
	__u64 id = bpf_get_current_pid_tgid();
	if (!kp_is_watched(cfg, id >> 32)) {
		kp_count(KP_CNT_SOCK_IO_UNWATCHED, 1);
		return;
	}
	struct sock *sk = ctx->sk;
	struct kp_sock_io *r = kp_reserve(&rb_sock_io, KP_EV_SOCK_IO, sizeof(*r));
	if (!r)
		return;
	r->ts_ns = bpf_ktime_get_ns();
	r->skaddr = (__u64)sk;
	r->tgid = id >> 32;
	r->tid = (__u32)id;
	r->bytes = ctx->ret;
	r->dir = dir;
	r->protocol = ctx->protocol;
	r->srtt_us = 0;
	if (ctx->protocol == IPPROTO_TCP)
		r->srtt_us = BPF_CORE_READ((struct tcp_sock *)sk, srtt_us) >> 3;
	kp_sk_tuple(sk, &r->family, &r->sport, &r->dport, r->saddr, r->daddr);
	kp_submit(r);
}

SEC("tracepoint/sock/sock_send_length")
int kp_sock_send_length(struct trace_event_raw_sock_msg_length *ctx)
{
	kp_sock_io(ctx, 0);
	return 0;
}

SEC("tracepoint/sock/sock_recv_length")
int kp_sock_recv_length(struct trace_event_raw_sock_msg_length *ctx)
{
	kp_sock_io(ctx, 1);
	return 0;
}

SEC("tracepoint/tcp/tcp_retransmit_skb")
int kp_tcp_retransmit_skb(struct trace_event_raw_tcp_retransmit_skb *ctx)
{
	struct kp_tcp_retrans *r = kp_reserve(&rb_tcp_retrans, KP_EV_TCP_RETRANS, sizeof(*r));
	if (!r)
		return 0;
	struct sock *sk = (struct sock *)ctx->skaddr;
	r->ts_ns = bpf_ktime_get_ns();
	r->skaddr = (__u64)sk;
	r->state = ctx->state;
	r->pad = 0;
	r->srtt_us = BPF_CORE_READ((struct tcp_sock *)sk, srtt_us) >> 3;
	kp_sk_tuple(sk, &r->family, &r->sport, &r->dport, r->saddr, r->daddr);
	kp_submit(r);
	return 0;
}
