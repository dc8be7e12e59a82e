/* Shared by every probe object: maps the agent creates once and hands to each
 * object (bpf_map__reuse_fd), and the helpers that keep per-event cost low. */
#ifndef KPROBE_COMMON_BPF_H
#define KPROBE_COMMON_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>
#include "../schemas/records.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Load-time settings, in a section of their own so the agent can set them before load as a
 * whole (bpf_map__set_initial_value on ".rodata.kp"); volatile so the compiler does not fold
 * the zeros written here into the code. */
const volatile struct kp_config kp_settings SEC(".rodata.kp") = {};
typedef const volatile struct kp_config kp_settings_t;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kp_runtime);
} kp_runtime SEC(".maps");

/* tgid -> 1 for processes whose high-volume streams are recorded. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __u8);
} kp_watched SEC(".maps");

/* comm -> 1: an exec with this comm joins kp_watched. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, char[KP_COMM_LEN]);
	__type(value, __u8);
} kp_watched_comm SEC(".maps");

/* Ring-buffer reservation failures, per CPU and event type: never lost silently. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, KP_EV_MAX);
	__type(key, __u32);
	__type(value, __u64);
} kp_drops SEC(".maps");

/* What is aggregated in the kernel by design instead of emitted. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, KP_CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} kp_counters SEC(".maps");

static __always_inline kp_settings_t *kp_cfg(void)
{
	return &kp_settings;
}

/* High-volume streams (off-CPU, syscalls, faults, socket I/O) follow the watch
 * list when one is set; the agent never traces itself. */
static __always_inline bool kp_is_watched(kp_settings_t *cfg, __u32 tgid)
{
	if (tgid == 0 || tgid == cfg->self_tgid)
		return false;
	if (!cfg->filter_on)
		return true;
	return bpf_map_lookup_elem(&kp_watched, &tgid) != NULL;
}

/* The node filter (kprobe record --netns/--cgroup): is task t, exec'ing now, one of this node's?
 * False when no node filter is set (the watch list alone decides). */
static __always_inline bool kp_in_node(kp_settings_t *cfg, struct task_struct *t)
{
	if (!cfg->node_netns_ino && !cfg->node_cgroup_id)
		return false;
	if (cfg->node_netns_ino && BPF_CORE_READ(t, nsproxy, net_ns, ns.inum) != cfg->node_netns_ino)
		return false;
	if (cfg->node_cgroup_id &&
	    bpf_get_current_ancestor_cgroup_id(cfg->node_cgroup_level) != cfg->node_cgroup_id)
		return false;
	return true;
}

static __always_inline void kp_count(__u32 idx, __u64 by)
{
	__u64 *c = bpf_map_lookup_elem(&kp_counters, &idx);
	if (c)
		*c += by;
}

static __always_inline void *kp_reserve(void *rb, __u32 type, __u64 size)
{
	void *rec = bpf_ringbuf_reserve(rb, size, 0);
	if (!rec) {
		__u64 *d = bpf_map_lookup_elem(&kp_drops, &type);
		if (d)
			*d += 1;
	}
	return rec;
}

/* For consumers that poll on a timer: a wakeup would only slow the producer. */
#define kp_submit(rec) bpf_ringbuf_submit(rec, BPF_RB_NO_WAKEUP)

/* The recorder sleeps long while its rings are quiet (each wake-up of a thread
 * costs the host's CPUs, and lands in the observed service's latency tail) and is
 * woken by the kernel once a ring is 1/8 full: a burst never waits for a timer.
 * Below the mark no wakeup is sent at all. */
static __always_inline void kp_submit_to(void *rb, void *rec)
{
	__u64 avail = bpf_ringbuf_query(rb, BPF_RB_AVAIL_DATA);
	__u64 size = bpf_ringbuf_query(rb, BPF_RB_RING_SIZE);
	bpf_ringbuf_submit(rec, avail * 8 >= size ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP);
}

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6

/* A socket's 4-tuple as the kernel sees it from this host (ports in host order). */
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

/* Every loader sizes its rings before load (agent/probeset.py ring_size, replay/capture.py,
 * protocols/capture.py): the size here is only a placeholder, the smallest any policy uses. */
#define KP_RING_PLACEHOLDER_BYTES (256 * 1024)
#define KP_RINGBUF(name)                                  \
	struct {                                          \
		__uint(type, BPF_MAP_TYPE_RINGBUF);       \
		__uint(max_entries, KP_RING_PLACEHOLDER_BYTES); \
	} name SEC(".maps")

#endif
