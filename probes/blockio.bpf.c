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

/* The owner of a request in flight, in a direct-mapped table indexed by the request's
 * address: requests are preallocated per hardware queue (a fixed, small set of addresses),
 * so a slot is an array access (no hash, no LRU bookkeeping: those were most of this probe's
 * cost). A slot holding another request's address is a collision: that request's owner is
 * lost and counted (KP_CNT_BLOCK_SLOT_REUSED), its I/O still recorded. */
struct kp_issue_state {
	__u64 rq;  /* the request this slot describes (0: free) */
	__u64 ts;  /* 0 until issued */
	__u32 tgid;
	__u32 tid;
	char comm[KP_COMM_LEN];
	__u32 requeued;
	__u32 pad;
};

#define KP_ISSUE_SLOTS 4096

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, KP_ISSUE_SLOTS);
	__type(key, __u32);
	__type(value, struct kp_issue_state);
} issued SEC(".maps");

KP_RINGBUF(rb_block_io);

/* Fast requests, summed per submitter, device, operation and generation (kp_config.block_epoch)
 * on each CPU: on a busy database host most requests take a fraction of a millisecond and a row
 * each would be most of what the recorder stores. The agent reads a generation once it is retired
 * and deletes it; a full table sends the request to the ring as its own row. */
#define KP_BLOCK_AGG_KEYS 1024

/* Not preallocated: a preallocated per-CPU table costs keys x CPUs x 96 bytes of kernel memory up
 * front (12 MiB on a 128-CPU host) for the few dozen submitters a disk usually has. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, KP_BLOCK_AGG_KEYS);
	__type(key, struct kp_block_key);
	__type(value, struct kp_block_io);
} block_agg SEC(".maps");

/* Per CPU, per generation: programs adding to that generation right now. The agent retires a
 * generation, then reads its sums only once this is 0 on every CPU: a program that read the old
 * generation just before the flip (a vCPU can be descheduled by the hypervisor for milliseconds in
 * the middle of a program) would otherwise add to a sum already read and deleted, and lose it. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, KP_BLOCK_EPOCHS);
	__type(key, __u32);
	__type(value, __u64);
} block_writers SEC(".maps");

/* The request's address as a number: the verifier allows no arithmetic on a typed pointer,
 * so it is read back as plain bytes from the program's first argument. */
static __always_inline __u64 kp_rq_addr(unsigned long long *ctx)
{
	__u64 addr = 0;
	bpf_probe_read_kernel(&addr, sizeof(addr), ctx);
	return addr;
}

static __always_inline struct kp_issue_state *kp_slot(__u64 rq)
{
	__u32 k = (__u32)((rq >> 8) ^ (rq >> 20)) & (KP_ISSUE_SLOTS - 1);
	return bpf_map_lookup_elem(&issued, &k);
}

/* The current task submits rq: it owns it. */
static __always_inline void kp_own(struct kp_issue_state *st, __u64 rq, __u64 ts)
{
	struct task_struct *t = bpf_get_current_task_btf();
	if (st->rq && st->rq != rq)
		kp_count(KP_CNT_BLOCK_SLOT_REUSED, 1);
	st->rq = rq;
	st->ts = ts;
	st->tgid = t->tgid;
	st->tid = t->pid;
	const __u64 *src = (const __u64 *)t->comm;
	((__u64 *)st->comm)[0] = src[0];
	((__u64 *)st->comm)[1] = src[1];
	st->requeued = 0;
}

SEC("tp_btf/block_rq_insert")
int BPF_PROG(kp_block_rq_insert, struct request *rq)
{
	__u64 addr = kp_rq_addr(ctx);
	struct kp_issue_state *st = kp_slot(addr);
	if (!st)
		return 0;
	if (st->rq == addr && st->requeued) /* back in the queue: it keeps its submitter */
		st->requeued = 0;
	else
		kp_own(st, addr, 0);
	return 0;
}

/* The device refused it for now: it will be issued again, maybe by another task. */
SEC("tp_btf/block_rq_requeue")
int BPF_PROG(kp_block_rq_requeue, struct request *rq)
{
	__u64 addr = kp_rq_addr(ctx);
	struct kp_issue_state *st = kp_slot(addr);
	if (st && st->rq == addr) {
		st->ts = 0;
		st->requeued = 1;
	}
	return 0;
}

/* Merged into another request and freed without completing: its slot (and soon its
 * address, reused by a new request) must not carry this submitter. */
SEC("tp_btf/block_rq_merge")
int BPF_PROG(kp_block_rq_merge, struct request *rq)
{
	__u64 addr = kp_rq_addr(ctx);
	struct kp_issue_state *st = kp_slot(addr);
	if (st && st->rq == addr)
		st->rq = 0;
	return 0;
}

SEC("tp_btf/block_rq_issue")
int BPF_PROG(kp_block_rq_issue, struct request *rq)
{
	__u64 addr = kp_rq_addr(ctx);
	struct kp_issue_state *st = kp_slot(addr);
	if (!st)
		return 0;
	__u64 now = bpf_ktime_get_ns();
	if (st->rq == addr && !st->ts)
		st->ts = now;
	else /* issued from its submitter's context, or a stale slot of a freed request */
		kp_own(st, addr, now);
	return 0;
}

/* REQ_OP_READ 0, WRITE 1, FLUSH 2, DISCARD 3 */
static __always_inline char kp_op_letter(__u32 op)
{
	return op == 0 ? 'R' : op == 1 ? 'W' : op == 2 ? 'F' : op == 3 ? 'D' : '?';
}

/* Adds a fast request to generation epoch of its submitter's sum; false when the table is full. */
static __always_inline bool kp_add_to_sum(struct kp_issue_state *st, __u32 dev, char op, __u64 sector,
					  __u64 bytes, __u64 issue, __u64 done, __u32 epoch)
{
	struct kp_block_key k = {.tgid = st->tgid, .dev = dev, .op = op, .epoch = epoch};
	__u64 lat = done - issue;
	struct kp_block_io *a = bpf_map_lookup_elem(&block_agg, &k);
	if (!a) {
		/* a new key: an empty sum (every CPU's slot zeroed), then filled like any other */
		static const struct kp_block_io zero = {};
		bpf_map_update_elem(&block_agg, &k, &zero, BPF_NOEXIST);  /* EEXIST: another CPU made it meanwhile */
		a = bpf_map_lookup_elem(&block_agg, &k);
		if (!a)
			return false;   /* the table is full: the request becomes a row of its own */
	}
	/* this CPU's slot of a per-CPU sum starts zeroed (whichever CPU created the key) */
	if (!a->requests) {
		a->issue_ns = issue;
		a->sector = sector;
		a->dev = dev;
		a->tgid = st->tgid;
		a->rwbs[0] = op;
		__builtin_memcpy(a->comm, st->comm, KP_COMM_LEN);
	}
	a->requests += 1;
	a->bytes += bytes;
	a->busy_ns += lat;
	if (lat > a->max_ns)
		a->max_ns = lat;
	if (issue < a->issue_ns)
		a->issue_ns = issue;
	a->done_ns = done;
	a->tid = st->tid;
	kp_count(KP_CNT_BLOCK_AGGREGATED, 1);
	return true;
}

/* A fast request into the current generation's sums; false when the table is full (then it is a row). */
static __always_inline bool kp_aggregate(kp_settings_t *cfg, struct kp_issue_state *st, __u32 dev, char op,
					 __u64 sector, __u64 bytes, __u64 issue, __u64 done)
{
	__u32 zero = 0;
	struct kp_runtime *rt = bpf_map_lookup_elem(&kp_runtime, &zero);
	if (!rt)
		return false;
	/* announce the write, then read the generation again: the locked add orders the two, so either
	 * the agent's flip is seen here, or the agent sees this writer (see block_writers) */
	__u32 epoch = *(volatile __u32 *)&rt->block_epoch & (KP_BLOCK_EPOCHS - 1);
	__u64 *writers = bpf_map_lookup_elem(&block_writers, &epoch);
	if (!writers)
		return false;
	__sync_fetch_and_add(writers, 1);
	__u32 now_epoch = *(volatile __u32 *)&rt->block_epoch & (KP_BLOCK_EPOCHS - 1);
	if (now_epoch != epoch) {
		__sync_fetch_and_sub(writers, 1);
		epoch = now_epoch;
		writers = bpf_map_lookup_elem(&block_writers, &epoch);
		if (!writers)
			return false;
		__sync_fetch_and_add(writers, 1);  /* the agent flips once per tick and waits: no second flip now */
	}
	bool ok = kp_add_to_sum(st, dev, op, sector, bytes, issue, done, epoch);
	__sync_fetch_and_sub(writers, 1);
	return ok;
}

SEC("tp_btf/block_rq_complete")
int BPF_PROG(kp_block_rq_complete, struct request *rq, blk_status_t error, unsigned int nr_bytes)
{
	__u64 addr = kp_rq_addr(ctx);
	struct kp_issue_state *st = kp_slot(addr);
	if (!st || st->rq != addr)
		return 0;
	kp_settings_t *cfg = kp_cfg();
	struct gendisk *disk = rq->q->disk;
	__u32 major = disk ? disk->major : 0, minor = disk ? disk->first_minor : 0;
	__u32 dev = (major << 20) | minor;
	char op = kp_op_letter(rq->cmd_flags & 0xff);
	__u64 sector = rq->__sector;
	__u64 done = bpf_ktime_get_ns();
	__u64 issue = st->ts && st->ts <= done ? st->ts : done;
	if (!error && done - issue < (__u64)cfg->min_block_us * 1000 &&
	    kp_aggregate(cfg, st, dev, op, sector, nr_bytes, issue, done)) {
		st->rq = 0;
		return 0;
	}
	struct kp_block_io *r = kp_reserve(&rb_block_io, KP_EV_BLOCK_IO, sizeof(*r));
	if (!r) {
		st->rq = 0;
		return 0;
	}
	__builtin_memset(r, 0, sizeof(*r));
	r->issue_ns = st->ts;
	r->done_ns = done;
	r->sector = sector;
	r->bytes = nr_bytes;
	r->busy_ns = st->ts ? done - issue : 0;
	r->max_ns = r->busy_ns;
	r->dev = dev;
	r->requests = 1;
	r->tgid = st->tgid;
	r->tid = st->tid;
	r->error = error;
	r->rwbs[0] = op;
	__builtin_memcpy(r->comm, st->comm, KP_COMM_LEN);
	kp_submit_to(&rb_block_io, r);
	st->rq = 0;
	return 0;
}
