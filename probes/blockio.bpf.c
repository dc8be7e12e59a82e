// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Disk: block requests from issue to completion, so an fsync that stalls can
 * be split into queueing in the device and everything else.
 *
 * A request is credited to the task that submitted it: with an I/O scheduler,
 * or when the device pushes back, requests are dispatched later by whichever
 * task runs the queue next (another process's plug flush, kblockd, ext4lazyinit),
 * so the issuing context names the wrong process exactly when disks contend.
 * The submitter is taken at insertion into the queue; a request issued straight
 * from its submitter's context is never inserted. */
#include "common.bpf.h"

struct kp_issue_state {
	__u64 ts; /* 0 until issued */
	__u32 tgid;
	__u32 tid;
	char comm[KP_COMM_LEN];
	__u32 requeued;
	__u32 pad;
};

/* LRU: a request merged into another one is freed without completing, and its
 * entry must not hold a slot forever. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct kp_issue_state);
} issued SEC(".maps");

KP_RINGBUF(rb_block_io);

static __always_inline void kp_own(__u64 key, __u64 ts)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct kp_issue_state st = {.ts = ts, .tgid = id >> 32, .tid = (__u32)id, .requeued = 0, .pad = 0};
	bpf_get_current_comm(&st.comm, sizeof(st.comm));
	bpf_map_update_elem(&issued, &key, &st, BPF_ANY);
}

SEC("tp_btf/block_rq_insert")
int BPF_PROG(kp_block_rq_insert, struct request *rq)
{
	__u64 key = (__u64)rq;
	struct kp_issue_state *st = bpf_map_lookup_elem(&issued, &key);
	if (st && st->requeued) /* back in the queue: it keeps its submitter */
		st->requeued = 0;
	else
		kp_own(key, 0);
	return 0;
}

/* The device refused it for now: it will be issued again, maybe by another task. */
SEC("tp_btf/block_rq_requeue")
int BPF_PROG(kp_block_rq_requeue, struct request *rq)
{
	__u64 key = (__u64)rq;
	struct kp_issue_state *st = bpf_map_lookup_elem(&issued, &key);
	if (st) {
		st->ts = 0;
		st->requeued = 1;
	}
	return 0;
}

/* Merged into another request and freed without completing: its slot (and
 * soon its address, reused by a new request) must not carry this submitter. */
SEC("tp_btf/block_rq_merge")
int BPF_PROG(kp_block_rq_merge, struct request *rq)
{
	__u64 key = (__u64)rq;
	bpf_map_delete_elem(&issued, &key);
	return 0;
}

SEC("tp_btf/block_rq_issue")
int BPF_PROG(kp_block_rq_issue, struct request *rq)
{
	__u64 key = (__u64)rq;
	__u64 now = bpf_ktime_get_ns();
	struct kp_issue_state *st = bpf_map_lookup_elem(&issued, &key);
	if (st && !st->ts)
		st->ts = now;
	else /* issued from its submitter's context, or a stale entry of a freed request */
		kp_own(key, now);
	return 0;
}

SEC("tp_btf/block_rq_complete")
int BPF_PROG(kp_block_rq_complete, struct request *rq, blk_status_t error, unsigned int nr_bytes)
{
	__u64 key = (__u64)rq;
	struct kp_issue_state *st = bpf_map_lookup_elem(&issued, &key);
	if (!st)
		return 0;
	struct kp_block_io *r = kp_reserve(&rb_block_io, KP_EV_BLOCK_IO, sizeof(*r));
	if (r) {
		struct gendisk *disk = BPF_CORE_READ(rq, q, disk);
		__u32 major = BPF_CORE_READ(disk, major), minor = BPF_CORE_READ(disk, first_minor);
		__u32 op = BPF_CORE_READ(rq, cmd_flags) & 0xff;
		r->issue_ns = st->ts;
		r->done_ns = bpf_ktime_get_ns();
		r->sector = BPF_CORE_READ(rq, __sector);
		r->dev = (major << 20) | minor;
		r->bytes = nr_bytes;
		r->tgid = st->tgid;
		r->tid = st->tid;
		r->error = error;
		r->pad = 0;
		__builtin_memset(r->rwbs, 0, sizeof(r->rwbs));
		/* REQ_OP_READ 0, WRITE 1, FLUSH 2, DISCARD 3 */
		r->rwbs[0] = op == 0 ? 'R' : op == 1 ? 'W' : op == 2 ? 'F' : op == 3 ? 'D' : '?';
		__builtin_memcpy(r->comm, st->comm, KP_COMM_LEN);
		kp_submit_to(&rb_block_io, r);
	}
	bpf_map_delete_elem(&issued, &key);
	return 0;
}
