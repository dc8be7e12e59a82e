// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Scheduling: exact off-CPU intervals per watched thread, with why it left
 * (preempted while runnable, or blocked), who ran instead, who woke it and the
 * run-queue latency; plus process lifecycle. Per-task state lives in task-local
 * storage (a pointer hop from the task, no hash, freed with the task) so a
 * switch costs tens of ns, and only finished intervals above a threshold cross
 * into user space; shorter ones are counted in the kernel. */
#include "common.bpf.h"

struct kp_task_state {
	__u64 off_ns;
	__u64 wake_ns;
	__u32 prev_state;
	__u32 cpu;
	__u32 p_tgid;
	__u32 p_tid;
	__u32 w_tgid;
	__u32 w_tid;
	char p_comm[KP_COMM_LEN];
	char w_comm[KP_COMM_LEN];
	char p_proc[KP_COMM_LEN];
	char w_proc[KP_COMM_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct kp_task_state);
} offcpu_state SEC(".maps");

KP_RINGBUF(rb_offcpu);
KP_RINGBUF(rb_proc);

/* comm by two plain loads through the typed task pointer: the helpers that copy
 * it (probe_read, get_current_comm) cost ~90 ns each on a VM, on every switch
 * and wake-up of a watched task. */
static __always_inline void kp_copy_comm(char *dst, struct task_struct *t)
{
	const __u64 *src = (const __u64 *)t->comm;
	((__u64 *)dst)[0] = src[0];
	((__u64 *)dst)[1] = src[1];
}

static __always_inline __u32 kp_reason(__u32 state)
{
	if (state == 0)
		return KP_OFF_PREEMPTED;
	if (state & 0x1)
		return KP_OFF_SLEEP;
	if (state & 0x2)
		return KP_OFF_UNINTERRUPTIBLE;
	return KP_OFF_OTHER;
}

/* Since when (bpf_ktime ns) the task being switched out has held this CPU without
 * a break: its sched_info.last_arrival, which is on the run-queue clock. The
 * incoming task's sched_info.last_queued is on that clock too, and we saw that
 * same moment on ours (its wake-up, or its preemption): the difference moves one
 * onto the other to within microseconds, with no kernel symbol to resolve.
 * Computed only when a watched thread comes back; 0 without CONFIG_SCHED_INFO. */
static __always_inline __u64 kp_stint_start(struct task_struct *prev, struct task_struct *next,
					    __u64 queued_ns, __u64 now)
{
	if (!bpf_core_field_exists(prev->sched_info.last_arrival))
		return 0;
	__u64 arrived = prev->sched_info.last_arrival;
	__u64 queued = next->sched_info.last_queued;
	if (!arrived || !queued || !queued_ns)
		return 0;
	__u64 since = arrived + (queued_ns - queued);	/* modulo 2^64: either sign of the gap */
	return since && since <= now ? since : 0;
}

SEC("tp_btf/sched_switch")
int BPF_PROG(kp_sched_switch, bool preempt, struct task_struct *prev, struct task_struct *next,
	     unsigned int prev_state)
{
	struct kp_config *cfg = kp_cfg();
	__u64 now = 0; /* read only when a watched task is involved: a clock read costs on VMs */
	__u32 cpu = bpf_get_smp_processor_id();
	__u32 prev_tgid = prev->tgid, prev_tid = prev->pid;
	__u32 next_tgid = next->tgid, next_tid = next->pid;

	kp_count(KP_CNT_SWITCHES, 1);
	if (!cfg)
		return 0;

	/* Storage exists only for watched tasks (the watch list never shrinks), so its
	 * presence answers "watched?" without a hash lookup; unwatched tasks pay one
	 * NULL check here and the hash lookup below. */
	struct kp_task_state *st = bpf_task_storage_get(&offcpu_state, prev, 0, 0);
	if (!st && prev_tid && kp_is_watched(cfg, prev_tgid))
		st = bpf_task_storage_get(&offcpu_state, prev, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (st) {
		now = bpf_ktime_get_ns();
		st->off_ns = now;
		st->wake_ns = 0;
		st->prev_state = prev_state;
		st->cpu = cpu;
		st->p_tgid = next_tgid;
		st->p_tid = next_tid;
		st->w_tgid = 0;
		st->w_tid = 0;
		kp_copy_comm(st->p_comm, next);
		kp_copy_comm(st->p_proc, next->group_leader);
		__builtin_memset(st->w_comm, 0, KP_COMM_LEN);
		__builtin_memset(st->w_proc, 0, KP_COMM_LEN);
	}

	if (next_tid) {
		st = bpf_task_storage_get(&offcpu_state, next, 0, 0);
		if (!st || !st->off_ns)
			return 0;
		if (!now)
			now = bpf_ktime_get_ns();
		__u64 dur = now - st->off_ns;
		if (dur < cfg->min_offcpu_ns) {
			kp_count(KP_CNT_OFFCPU_SHORT, 1);
			kp_count(KP_CNT_OFFCPU_SHORT_NS, dur);
			st->off_ns = 0;
			return 0;
		}
		struct kp_offcpu *r = kp_reserve(&rb_offcpu, KP_EV_OFFCPU, sizeof(*r));
		if (r) {
			r->off_ns = st->off_ns;
			r->wake_ns = st->wake_ns;
			r->on_ns = now;
			r->tgid = next_tgid;
			r->tid = next_tid;
			r->cpu_off = st->cpu;
			r->cpu_on = cpu;
			r->prev_state = st->prev_state;
			r->reason = st->prev_state == 0xffffffff ? KP_OFF_NEW : kp_reason(st->prev_state);
			r->preemptor_tgid = st->p_tgid;
			r->preemptor_tid = st->p_tid;
			r->waker_tgid = st->w_tgid;
			r->waker_tid = st->w_tid;
			r->displaced_tgid = prev_tgid;
			r->displaced_tid = prev_tid;
			r->displaced_since_ns =
				prev_tid ? kp_stint_start(prev, next, st->wake_ns ? st->wake_ns : st->off_ns, now) : 0;
			kp_copy_comm(r->displaced_comm, prev);
			kp_copy_comm(r->displaced_process, prev->group_leader);
			__builtin_memcpy(r->preemptor_comm, st->p_comm, KP_COMM_LEN);
			__builtin_memcpy(r->waker_comm, st->w_comm, KP_COMM_LEN);
			__builtin_memcpy(r->preemptor_process, st->p_proc, KP_COMM_LEN);
			__builtin_memcpy(r->waker_process, st->w_proc, KP_COMM_LEN);
			__builtin_memset(r->comm, 0, KP_COMM_LEN);
			BPF_CORE_READ_STR_INTO(&r->comm, next, comm);
			kp_submit_to(&rb_offcpu, r);
		}
		st->off_ns = 0;
	}
	return 0;
}

static __always_inline void kp_mark_wakeup(struct task_struct *p)
{
	struct kp_task_state *st = bpf_task_storage_get(&offcpu_state, p, 0, 0);
	if (!st || !st->off_ns || st->wake_ns)
		return;
	__u64 id = bpf_get_current_pid_tgid();
	st->wake_ns = bpf_ktime_get_ns();
	st->w_tgid = id >> 32;
	st->w_tid = (__u32)id;
	struct task_struct *waker = bpf_get_current_task_btf();
	kp_copy_comm(st->w_comm, waker);
	kp_copy_comm(st->w_proc, waker->group_leader);
}

/* sched_waking runs in the waker's context (sched_wakeup may run on the
 * target CPU, where "current" is the idle task), so the waker is right. */
SEC("tp_btf/sched_waking")
int BPF_PROG(kp_sched_waking, struct task_struct *p)
{
	kp_mark_wakeup(p);
	return 0;
}

SEC("tp_btf/sched_wakeup_new")
int BPF_PROG(kp_sched_wakeup_new, struct task_struct *p)
{
	struct kp_config *cfg = kp_cfg();
	if (!kp_is_watched(cfg, p->tgid))
		return 0;
	struct kp_task_state *st = bpf_task_storage_get(&offcpu_state, p, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!st)
		return 0;
	__u64 id = bpf_get_current_pid_tgid();
	st->off_ns = st->wake_ns = bpf_ktime_get_ns();
	st->prev_state = 0xffffffff;
	st->cpu = bpf_get_smp_processor_id();
	st->p_tgid = st->p_tid = 0;
	__builtin_memset(st->p_comm, 0, KP_COMM_LEN);
	__builtin_memset(st->p_proc, 0, KP_COMM_LEN);
	st->w_tgid = id >> 32;
	st->w_tid = (__u32)id;
	struct task_struct *parent = bpf_get_current_task_btf();
	kp_copy_comm(st->w_comm, parent);
	kp_copy_comm(st->w_proc, parent->group_leader);
	return 0;
}

static __always_inline void kp_emit_proc(struct task_struct *t, __u32 kind, __u32 child, __s32 code,
					 const char *filename)
{
	struct kp_proc *r = kp_reserve(&rb_proc, KP_EV_PROC, sizeof(*r));
	if (!r)
		return;
	__builtin_memset(r, 0, sizeof(*r));
	r->ts_ns = bpf_ktime_get_ns();
	r->start_ns = BPF_CORE_READ(t, group_leader, start_time);
	r->tgid = t->tgid;
	r->tid = t->pid;
	r->ppid = BPF_CORE_READ(t, real_parent, tgid);
	r->kind = kind;
	r->child_tgid = child;
	r->exit_code = code;
	BPF_CORE_READ_STR_INTO(&r->comm, t, comm);
	if (filename)
		bpf_probe_read_kernel_str(r->filename, sizeof(r->filename), filename);
	kp_submit_to(&rb_proc, r);
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(kp_sched_fork, struct task_struct *parent, struct task_struct *child)
{
	struct kp_config *cfg = kp_cfg();
	__u32 ptgid = parent->tgid, ctgid = child->tgid;
	if (!kp_is_watched(cfg, ptgid))
		return 0;
	if (ctgid == ptgid)
		return 0; /* a new thread: already covered by its process */
	if (cfg && cfg->filter_on) {
		__u8 one = 1;
		bpf_map_update_elem(&kp_watched, &ctgid, &one, BPF_ANY);
	}
	kp_emit_proc(parent, KP_PROC_FORK, ctgid, 0, NULL);
	return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(kp_sched_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	struct kp_config *cfg = kp_cfg();
	__u32 tgid = p->tgid;
	if (cfg && cfg->filter_on && tgid != cfg->self_tgid) {
		char comm[KP_COMM_LEN] = {};
		bpf_get_current_comm(&comm, sizeof(comm));
		if (bpf_map_lookup_elem(&kp_watched_comm, &comm)) {
			__u8 one = 1;
			bpf_map_update_elem(&kp_watched, &tgid, &one, BPF_ANY);
		}
	}
	if (!kp_is_watched(cfg, tgid))
		return 0;
	kp_emit_proc(p, KP_PROC_EXEC, 0, 0, BPF_CORE_READ(bprm, filename));
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(kp_sched_exit, struct task_struct *p)
{
	struct kp_config *cfg = kp_cfg();
	__u32 tgid = p->tgid, tid = p->pid;
	/* task storage is freed with the task: nothing to clean up */
	if (tgid != tid || !kp_is_watched(cfg, tgid))
		return 0;
	kp_emit_proc(p, KP_PROC_EXIT, 0, p->exit_code, NULL);
	return 0;
}
