// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Memory pressure: user page faults (counted per thread, sampled with
 * addresses), direct and memcg reclaim stalls, OOM kills. Reclaim and OOM are
 * rare and usually caused by someone else, so they are recorded system-wide. */
#include "common.bpf.h"

/* Per-thread fault count since the last sample, in task-local storage (a pointer hop, freed
 * with the thread); the flush interval is kept in jiffies, so a fault that is only counted
 * reads no clock. */
struct kp_fault_state {
	__u64 last_emit;   /* jiffies, or ns when the agent could not tell the tick rate */
	__u32 count;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct kp_fault_state);
} fault_state SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct kp_reclaim_inflight);
} reclaim_state SEC(".maps");

KP_RINGBUF(rb_fault);
KP_RINGBUF(rb_reclaim);
KP_RINGBUF(rb_oom);

static __always_inline void kp_emit_fault(__u64 now, __u32 tgid, __u32 tid, __u64 addr, __u64 ip,
					  __u32 err, __u32 count, __u32 flushed)
{
	struct kp_fault *r = kp_reserve(&rb_fault, KP_EV_FAULT, sizeof(*r));
	if (!r)
		return;
	r->ts_ns = now;
	r->addr = addr;
	r->ip = ip;
	r->tgid = tgid;
	r->tid = tid;
	r->error_code = err;
	r->count = count;
	r->cpu = bpf_get_smp_processor_id();
	r->flushed = flushed;
	kp_submit_to(&rb_fault, r);
}

static __always_inline __u64 kp_fault_clock(kp_settings_t *cfg)
{
	return cfg->fault_flush_jiffies ? bpf_jiffies64() : bpf_ktime_get_ns();
}

SEC("tp_btf/page_fault_user")
int BPF_PROG(kp_page_fault_user, unsigned long address, struct pt_regs *regs, unsigned long error_code)
{
	kp_settings_t *cfg = kp_cfg();
	struct task_struct *task = bpf_get_current_task_btf();
	struct kp_fault_state *st = bpf_task_storage_get(&fault_state, task, 0, 0);
	if (!st) {
		if (!kp_is_watched(cfg, task->tgid))
			return 0;
		st = bpf_task_storage_get(&fault_state, task, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
		if (!st)
			return 0;
		st->last_emit = kp_fault_clock(cfg);
	}
	kp_count(KP_CNT_FAULTS, 1);
	st->count += 1;
	__u32 every = cfg->fault_sample_every ? cfg->fault_sample_every : 1;
	__u64 mark = kp_fault_clock(cfg);
	__u64 interval = cfg->fault_flush_jiffies ? cfg->fault_flush_jiffies : (__u64)cfg->fault_flush_ms * 1000000ULL;
	if (st->count >= every || mark - st->last_emit >= interval) {
		kp_emit_fault(bpf_ktime_get_ns(), task->tgid, task->pid, address, regs->ip, error_code, st->count, 0);
		st->count = 0;
		st->last_emit = mark;
	}
	return 0;
}

/* Flush the sampled remainder so per-thread totals are exact (the storage goes with the thread). */
SEC("tp_btf/sched_process_exit")
int BPF_PROG(kp_fault_exit, struct task_struct *p)
{
	struct kp_fault_state *st = bpf_task_storage_get(&fault_state, p, 0, 0);
	if (!st || !st->count)
		return 0;
	kp_emit_fault(bpf_ktime_get_ns(), p->tgid, p->pid, 0, 0, 0, st->count, 1);
	st->count = 0;
	return 0;
}

/* The task's memory cgroup (kernfs id, cgroup v1 or v2). Memcg reclaim is
 * caused by charges to that cgroup, so the analysis looks for the hog inside
 * it; the unified-hierarchy id of bpf_get_current_cgroup_id() says nothing
 * about a v1 memory controller. */
static __always_inline __u64 kp_memcg_id(void)
{
	if (!bpf_core_enum_value_exists(enum cgroup_subsys_id, memory_cgrp_id))
		return bpf_get_current_cgroup_id();
	int ss = bpf_core_enum_value(enum cgroup_subsys_id, memory_cgrp_id);
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	return BPF_CORE_READ(t, cgroups, subsys[ss], cgroup, kn, id);
}

static __always_inline void kp_reclaim_begin(__u32 kind)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct kp_reclaim_inflight st = {.start_ns = bpf_ktime_get_ns(), .kind = kind};
	if (kind == KP_RECLAIM_MEMCG)
		st.cgroup_id = kp_memcg_id();
	bpf_map_update_elem(&reclaim_state, &tid, &st, BPF_ANY);
}

static __always_inline void kp_reclaim_end(__u64 nr_reclaimed)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)id;
	struct kp_reclaim_inflight *st = bpf_map_lookup_elem(&reclaim_state, &tid);
	if (!st)
		return;
	struct kp_reclaim *r = kp_reserve(&rb_reclaim, KP_EV_RECLAIM, sizeof(*r));
	if (r) {
		r->start_ns = st->start_ns;
		r->end_ns = bpf_ktime_get_ns();
		r->nr_reclaimed = nr_reclaimed;
		r->cgroup_id = kp_memcg_id();
		r->tgid = id >> 32;
		r->tid = tid;
		r->kind = st->kind;
		r->cpu = bpf_get_smp_processor_id();
		__builtin_memset(r->comm, 0, KP_COMM_LEN);
		bpf_get_current_comm(&r->comm, sizeof(r->comm));
		kp_submit_to(&rb_reclaim, r);
	}
	bpf_map_delete_elem(&reclaim_state, &tid);
}

SEC("tp_btf/mm_vmscan_direct_reclaim_begin")
int BPF_PROG(kp_direct_reclaim_begin, int order)
{
	kp_reclaim_begin(KP_RECLAIM_DIRECT);
	return 0;
}

SEC("tp_btf/mm_vmscan_direct_reclaim_end")
int BPF_PROG(kp_direct_reclaim_end, unsigned long nr_reclaimed)
{
	kp_reclaim_end(nr_reclaimed);
	return 0;
}

SEC("tp_btf/mm_vmscan_memcg_reclaim_begin")
int BPF_PROG(kp_memcg_reclaim_begin, int order)
{
	kp_reclaim_begin(KP_RECLAIM_MEMCG);
	return 0;
}

SEC("tp_btf/mm_vmscan_memcg_reclaim_end")
int BPF_PROG(kp_memcg_reclaim_end, unsigned long nr_reclaimed)
{
	kp_reclaim_end(nr_reclaimed);
	return 0;
}

SEC("tp_btf/mark_victim")
int BPF_PROG(kp_oom_mark_victim, struct task_struct *victim)
{
	struct kp_oom *r = kp_reserve(&rb_oom, KP_EV_OOM, sizeof(*r));
	if (!r)
		return 0;
	struct mm_struct *mm = BPF_CORE_READ(victim, mm);
	r->ts_ns = bpf_ktime_get_ns();
	r->victim_pid = victim->tgid;
	r->total_vm_kb = mm ? BPF_CORE_READ(mm, total_vm) * 4 : 0;
	r->anon_rss_kb = 0;
	r->killer_tgid = bpf_get_current_pid_tgid() >> 32;
	__builtin_memset(r->killer_comm, 0, KP_COMM_LEN);
	bpf_get_current_comm(&r->killer_comm, sizeof(r->killer_comm));
	kp_submit_to(&rb_oom, r);
	return 0;
}
