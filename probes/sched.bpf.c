// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Scheduling: exact off-CPU intervals per watched thread, with why it left
 * (preempted while runnable, or blocked), who ran instead, who woke it and the
 * run-queue latency; plus process lifecycle. Per-task state lives in task-local
 * storage (a pointer hop from the task, no hash, freed with the task) so a
 * switch costs tens of ns, and only finished intervals above a threshold cross
 * into user space; shorter ones are counted in the kernel. */
#include "common.bpf.h"

/* off_ns is on the run-queue clock (kp_now); wake_ns is bpf_ktime, read by the waker only on
 * kernels without sched_info (elsewhere the wake-up time comes from the scheduler's own
 * bookkeeping when the row is emitted, kp_woken_at). */
struct kp_task_state {
	__u64 off_ns;
	__u64 wake_ns;
	__u32 prev_state;
	__u32 cpu;
	__u32 p_tgid;
	__u32 p_tid;
	__u32 w_tgid;
	__u32 w_tid;
	__u32 short_n;
	__u32 woken;     /* a wake-up was seen for this interval (the waker fields hold it) */
	__u64 short_ns;
	/* the task's sched_info.run_delay at switch-out: what it grows by until switch-in is
	 * time spent queued on a run queue it left (migrated while waiting) */
	__u64 run_delay;
	/* preemptor and waker task pointers: their names are read only if a row is emitted,
	 * and only if the pointer still holds the same thread (kp_task_names) */
	__u64 p_task;
	__u64 w_task;
	/* the wake-up came while the task was still switching out (dequeued, not yet off its CPU):
	 * the waker fields already hold it, and its switch-out keeps them */
	__u32 woken_early;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct kp_task_state);
} offcpu_state SEC(".maps");

KP_RINGBUF(rb_offcpu);
KP_RINGBUF(rb_proc);

#define KP_TASK_RUNNING 0x0
#define KP_TASK_INTERRUPTIBLE 0x1
#define KP_TASK_UNINTERRUPTIBLE 0x2
#define KP_STATE_NEW 0xffffffff	/* our marker: woken for the first time (sched_wakeup_new) */
#define KP_PF_KTHREAD 0x00200000
#define KP_ENOSYS 38
#define KP_S_IFMT 00170000
#define KP_S_IFSOCK 0140000
#define KP_S_IFREG 0100000

/* comm by two plain loads through the typed task pointer: the helpers that copy
 * it (probe_read, get_current_comm) cost far more, on every switch and wake-up. */
static __always_inline void kp_copy_comm(char *dst, struct task_struct *t)
{
	const __u64 *src = (const __u64 *)t->comm;
	((__u64 *)dst)[0] = src[0];
	((__u64 *)dst)[1] = src[1];
}

/* The thread and process names of a task seen earlier, read when its row is emitted (most
 * intervals are not). The task may have exited since: its memory is then read safely and the
 * names are taken only if it is still thread tid; otherwise they stay empty and the agent names
 * the process from its other rows. */
static __always_inline void kp_task_names(__u64 ptr, __u32 tid, char *comm, char *proc)
{
	struct task_struct *t = (struct task_struct *)ptr;
	__u32 pid = 0;
	if (!t || BPF_CORE_READ_INTO(&pid, t, pid) || pid != tid)
		return;
	bpf_core_read(comm, KP_COMM_LEN, &t->comm);
	struct task_struct *leader = BPF_CORE_READ(t, group_leader);
	if (leader)
		bpf_core_read(proc, KP_COMM_LEN, &leader->comm);
}

static __always_inline __u32 kp_reason(__u32 state)
{
	if (state == KP_STATE_NEW)
		return KP_OFF_NEW;
	if (state == KP_TASK_RUNNING)
		return KP_OFF_PREEMPTED;
	if (state & KP_TASK_INTERRUPTIBLE)
		return KP_OFF_SLEEP;
	if (state & KP_TASK_UNINTERRUPTIBLE)
		return KP_OFF_UNINTERRUPTIBLE;
	return KP_OFF_OTHER;
}

/* The syscall a blocked task sleeps in, from the user registers saved at kernel entry:
 * what a program on every syscall's entry would have told. Read when the task comes back and
 * its interval is a row: it is still inside that call (it resumes in __schedule), so its saved
 * registers are unchanged since it blocked, and the short intervals, most of them, never pay.
 * While a syscall runs, the saved ax holds -ENOSYS (the entry code's placeholder for the
 * return value); an exception frame (a page fault) holds the user's ax and its error code
 * in orig_ax, so it is not taken for a syscall. */
static __always_inline void kp_blocked_syscall(struct kp_offcpu *r, struct task_struct *t, __u32 state)
{
	r->sys_nr = -1;
	r->sys_arg0 = 0;
#if defined(__TARGET_ARCH_x86)
	if (state == KP_TASK_RUNNING || state == KP_STATE_NEW || (t->flags & KP_PF_KTHREAD))
		return;
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(t);
	if (!regs || regs->ax != (unsigned long)-KP_ENOSYS)
		return;
	r->sys_nr = (__s32)regs->orig_ax;
	r->sys_arg0 = regs->di;
#endif
}

/* x86_64 calls whose first argument is a descriptor that may be a socket */
static __always_inline bool kp_socket_call(__s32 nr)
{
	switch (nr) {
	case 0: case 1: case 19: case 20:		/* read write readv writev */
	case 42: case 43: case 44: case 45: case 46: case 47:	/* connect accept sendto recvfrom sendmsg recvmsg */
	case 288: case 299: case 307:			/* accept4 recvmmsg sendmmsg */
		return true;
	}
	return false;
}

/* x86_64 calls whose first argument is a descriptor that may be a regular file: I/O, syncs and locks */
static __always_inline bool kp_file_call(__s32 nr)
{
	switch (nr) {
	case 0: case 1: case 17: case 18: case 19: case 20:	/* read write pread64 pwrite64 readv writev */
	case 72: case 73: case 74: case 75: case 77:		/* fcntl flock fsync fdatasync ftruncate */
	case 277: case 285: case 295: case 296:			/* sync_file_range fallocate preadv pwritev */
	case 326: case 327: case 328:				/* copy_file_range preadv2 pwritev2 */
		return true;
	}
	return false;
}

/* Scratch for building a path backwards from its file name: twice KP_PATH_LEN so a masked offset
 * plus a masked length stays inside it, and its upper half is never written (the terminator). */
struct kp_path_scratch {
	char b[2 * KP_PATH_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kp_path_scratch);
} kp_path_buf SEC(".maps");

#define KP_PATH_DEPTH 24

struct kp_path_walk {
	struct kp_path_scratch *s;
	struct dentry *d;
	struct vfsmount *vm;
	struct mount *m;
	__u64 mnt_off;
	__u32 pos;		/* where the path built so far begins in s->b */
};

/* One step of the walk (bpf_loop: verified once, not once per level): prepend d's name, or
 * cross from a mount's root to its mount point; 1 ends the walk. */
static long kp_path_step(__u64 i, struct kp_path_walk *w)
{
	/* locals: a CO-RE read must start from a kernel type, not from this struct's fields */
	struct dentry *d = w->d;
	struct vfsmount *vm = w->vm;
	struct mount *m = w->m;
	if (!d)
		return 1;
	struct dentry *parent = BPF_CORE_READ(d, d_parent);
	if (d == BPF_CORE_READ(vm, mnt_root) || d == parent) {
		struct mount *up = BPF_CORE_READ(m, mnt_parent);
		if (!up || up == m)
			return 1;			/* the root of the root mount */
		w->d = BPF_CORE_READ(m, mnt_mountpoint);
		w->m = up;
		w->vm = (struct vfsmount *)((char *)up + w->mnt_off);
		return 0;
	}
	__u32 len = BPF_CORE_READ(d, d_name.len);
	const unsigned char *name = BPF_CORE_READ(d, d_name.name);
	__u32 pos = w->pos;
	if (!len || len + 1 > pos)
		return 1;
	pos -= len;
	bpf_probe_read_kernel(&w->s->b[pos & (KP_PATH_LEN - 1)], len & (KP_PATH_LEN - 1), name);
	pos -= 1;
	w->s->b[pos & (KP_PATH_LEN - 1)] = '/';
	w->pos = pos;
	w->d = parent;
	return 0;
}

/* The path of an open file, walked from its dentry up to the root and across mount points (the
 * way d_path does, without its locks: a rename racing the walk may mix old and new names). Only
 * for rows being emitted that block on a file, so a few per second at most. A path longer than
 * the buffer keeps its last components. */
static __always_inline void kp_file_path(char *out, struct file *f)
{
	__u32 zero = 0;
	struct kp_path_walk w = {};
	w.s = bpf_map_lookup_elem(&kp_path_buf, &zero);
	if (!w.s)
		return;
	w.mnt_off = bpf_core_field_offset(struct mount, mnt);
	w.d = BPF_CORE_READ(f, f_path.dentry);
	w.vm = BPF_CORE_READ(f, f_path.mnt);
	w.m = (struct mount *)((char *)w.vm - w.mnt_off);
	w.pos = KP_PATH_LEN - 1;		/* s->b[KP_PATH_LEN - 1] stays 0: the terminator */
	bpf_loop(KP_PATH_DEPTH, kp_path_step, &w, 0);
	if (w.pos < KP_PATH_LEN - 1)
		bpf_probe_read_kernel(out, KP_PATH_LEN, &w.s->b[w.pos & (KP_PATH_LEN - 1)]);
}

/* What descriptor fd of task t is, for a row being emitted (the fd table walk is ~8 reads):
 * a socket's 4-tuple (the join key to the peer process) for socket calls, a regular file's
 * device and inode for file calls (the agent names the file). */
static __always_inline void kp_fd_target(struct kp_offcpu *r, struct task_struct *t, __u64 fd)
{
	bool sock_call = kp_socket_call(r->sys_nr), file_call = kp_file_call(r->sys_nr);
	if (!sock_call && !file_call)
		return;
	struct files_struct *files = BPF_CORE_READ(t, files);
	if (!files)
		return;
	struct fdtable *fdt = BPF_CORE_READ(files, fdt);
	if (!fdt || fd >= BPF_CORE_READ(fdt, max_fds))
		return;
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *f = 0;
	if (bpf_probe_read_kernel(&f, sizeof(f), &fds[fd & 0xfffff]) || !f)
		return;
	struct inode *ino = BPF_CORE_READ(f, f_inode);
	__u16 mode = ino ? BPF_CORE_READ(ino, i_mode) & KP_S_IFMT : 0;
	if (mode == KP_S_IFREG && file_call) {
		r->file_dev = BPF_CORE_READ(ino, i_sb, s_dev);
		r->file_ino = BPF_CORE_READ(ino, i_ino);
		kp_file_path(r->file_path, f);
		return;
	}
	if (mode != KP_S_IFSOCK || !sock_call)
		return;
	struct socket *so = BPF_CORE_READ(f, private_data);
	struct sock *sk = so ? BPF_CORE_READ(so, sk) : 0;
	if (!sk)
		return;
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (family != AF_INET && family != AF_INET6)
		return;		/* a unix or netlink socket: no 4-tuple to join on */
	r->skaddr = (__u64)sk;
	kp_sk_tuple(sk, &r->family, &r->sport, &r->dport, r->saddr, r->daddr);
}

/* "Now" for the scheduler's programs: the run-queue clock, which __schedule and every
 * enqueue have just updated, read with three plain loads. bpf_ktime_get_ns() costs more than
 * the rest of a switch put together on a VM (an indirect clocksource call behind speculation
 * mitigations); a row converts to ktime once, when it is emitted (kp_to_ktime). Kernels
 * without group scheduling have no cfs_rq->rq link: there it is ktime throughout. */
static __always_inline __u64 kp_now(struct task_struct *t)
{
	if (bpf_core_field_exists(t->se.cfs_rq)) {
		struct cfs_rq *cfs = t->se.cfs_rq;
		struct rq *rq = cfs ? cfs->rq : 0;
		__u64 clock = rq ? rq->clock : 0;
		if (clock)
			return clock;
	}
	return bpf_ktime_get_ns();
}

/* Run-queue clock -> ktime, from one pair of readings (the clock was updated at this
 * __schedule's start, microseconds ago at most: the row's times are that much early). */
static __always_inline __u64 kp_to_ktime(__u64 t, __s64 shift)
{
	return t ? t + shift : 0;
}

/* When the task became runnable, on the run-queue clock of the CPU it now runs on (0: unknown).
 * The scheduler's own accounting (CONFIG_SCHED_INFO) stamps every enqueue: last_queued is when
 * it was queued on this run queue, and run_delay already holds the time it waited on another
 * before a migration moved it (each move re-stamps last_queued). So the waking program needs no
 * clock read, and a woken task migrated while waiting still gets its true wake-up time. At
 * sched_switch the arrival has not been accounted yet (sched_info_switch runs after it). */
static __always_inline __u64 kp_woken_at(struct kp_task_state *st, struct task_struct *t, __u64 now)
{
	if (!bpf_core_field_exists(t->sched_info.last_queued))
		return 0;
	__u64 queued = t->sched_info.last_queued;
	__u64 waited = t->sched_info.run_delay - st->run_delay;
	if (queued && queued <= now)
		waited += now - queued;
	else if (!waited)
		return 0;
	return waited < now - st->off_ns ? now - waited : st->off_ns;
}

/* prev leaves the CPU: remember when, why and who took over.
 * Storage exists only for watched tasks (the watch list never shrinks), so its
 * presence answers "watched?" without a hash lookup. */
static __always_inline __u64 kp_switch_out(kp_settings_t *cfg, struct task_struct *prev,
					   struct task_struct *next, __u32 prev_state, __u32 cpu)
{
	struct kp_task_state *st = bpf_task_storage_get(&offcpu_state, prev, 0, 0);
	if (!st && kp_is_watched(cfg, prev->tgid))
		st = bpf_task_storage_get(&offcpu_state, prev, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!st)
		return 0;
	__u64 now = kp_now(prev);
	st->off_ns = now;
	if (bpf_core_field_exists(prev->sched_info.run_delay))
		st->run_delay = prev->sched_info.run_delay;
	if (!st->woken_early || prev_state == KP_TASK_RUNNING) {
		st->woken = 0;
		st->wake_ns = 0;
		st->w_tgid = 0;
		st->w_tid = 0;
		st->w_task = 0;
	}
	st->woken_early = 0;
	st->prev_state = prev_state;
	st->cpu = cpu;
	st->p_tgid = next->tgid;
	st->p_tid = next->pid;
	st->p_task = (__u64)next;
	return now;
}

/* Every field of the record is written here: a reserved ring slot holds a previous lap's bytes. */
static __always_inline void kp_emit_offcpu(struct kp_task_state *st, struct task_struct *prev,
					   struct task_struct *next, __u32 cpu, __u64 now)
{
	struct kp_offcpu *r = kp_reserve(&rb_offcpu, KP_EV_OFFCPU, sizeof(*r));
	if (!r)
		return;
	__builtin_memset(r, 0, sizeof(*r));
	__s64 shift = bpf_ktime_get_ns() - now;
	r->off_ns = kp_to_ktime(st->off_ns, shift);
	r->on_ns = kp_to_ktime(now, shift);
	/* a preempted task was never woken; the fallback was timed on the other clock: keep it
	 * inside the interval despite the conversion's microseconds */
	__u64 wake = 0;
	if (st->prev_state != KP_TASK_RUNNING) {
		__u64 at = kp_woken_at(st, next, now);
		wake = at ? kp_to_ktime(at, shift) : st->wake_ns;
	}
	if (wake && wake < r->off_ns)
		wake = r->off_ns;
	if (wake > r->on_ns)
		wake = r->on_ns;
	r->wake_ns = wake;
	r->tgid = next->tgid;
	r->tid = next->pid;
	r->cpu_off = st->cpu;
	r->cpu_on = cpu;
	r->prev_state = st->prev_state;
	r->reason = kp_reason(st->prev_state);
	r->preemptor_tgid = st->p_tgid;
	r->preemptor_tid = st->p_tid;
	r->waker_tgid = st->w_tgid;
	r->waker_tid = st->w_tid;
	r->displaced_tgid = prev->tgid;
	r->displaced_tid = prev->pid;
	/* since when the displaced task had held this CPU: its arrival, on this same clock */
	if (prev->pid && bpf_core_field_exists(prev->sched_info.last_arrival)) {
		__u64 since = prev->sched_info.last_arrival;
		r->displaced_since_ns = since && since <= now ? kp_to_ktime(since, shift) : 0;
	}
	kp_copy_comm(r->comm, next);
	kp_copy_comm(r->displaced_comm, prev);
	kp_copy_comm(r->displaced_process, prev->group_leader);
	if (st->p_tid)
		kp_task_names(st->p_task, st->p_tid, r->preemptor_comm, r->preemptor_process);
	if (st->w_tid)
		kp_task_names(st->w_task, st->w_tid, r->waker_comm, r->waker_process);
	kp_blocked_syscall(r, next, st->prev_state);
	r->short_n = st->short_n;
	r->short_ns = st->short_ns;
	kp_fd_target(r, next, r->sys_arg0);
	kp_submit_to(&rb_offcpu, r);
	st->short_n = 0;
	st->short_ns = 0;
}

/* next comes back: its interval is a row when long enough (or when it moved CPU while
 * runnable), else only counted (per CPU, and in its own storage until its next row carries
 * the sum). */
static __always_inline void kp_switch_in(kp_settings_t *cfg, struct task_struct *prev,
					 struct task_struct *next, __u32 cpu, __u64 now)
{
	struct kp_task_state *st = bpf_task_storage_get(&offcpu_state, next, 0, 0);
	if (!st || !st->off_ns)
		return;
	if (!now)
		now = kp_now(next);
	__u64 dur = now > st->off_ns ? now - st->off_ns : 0;
	/* blocked, yet no wake-up seen: the waking program was skipped (an interrupt's wake-up
	 * nested in another on this CPU); the row says so with wake_ns 0 */
	if (!st->woken && st->prev_state != KP_TASK_RUNNING)
		kp_count(KP_CNT_WAKE_UNSEEN, 1);
	/* a preempted task that comes back on another CPU was moved while runnable (an affinity or
	 * cpuset change, the migration stopper, active balancing): rare, and the move is what the
	 * analysis needs, so it is a row however short the wait */
	bool moved = st->prev_state == KP_TASK_RUNNING && st->cpu != cpu;
	if (dur < cfg->min_offcpu_ns && !moved) {
		kp_count(KP_CNT_OFFCPU_SHORT, 1);
		kp_count(KP_CNT_OFFCPU_SHORT_NS, dur);
		st->short_n += 1;
		st->short_ns += dur;
	} else {
		kp_emit_offcpu(st, prev, next, cpu, now);
	}
	st->off_ns = 0;
}

SEC("tp_btf/sched_switch")
int BPF_PROG(kp_sched_switch, bool preempt, struct task_struct *prev, struct task_struct *next,
	     unsigned int prev_state)
{
	kp_settings_t *cfg = kp_cfg();
	__u32 cpu = bpf_get_smp_processor_id();
	__u64 now = 0; /* read only when a watched task is involved */

	kp_count(KP_CNT_SWITCHES, 1);
	if (prev->pid)
		now = kp_switch_out(cfg, prev, next, prev_state, cpu);
	if (next->pid)
		kp_switch_in(cfg, prev, next, cpu, now);
	return 0;
}

static __always_inline void kp_mark_wakeup(struct task_struct *p)
{
	struct kp_task_state *st = bpf_task_storage_get(&offcpu_state, p, 0, 0);
	if (!st)
		return;
	if (!st->off_ns) {
		/* Still on its CPU: either running (the wake-up finds it runnable and it does not
		 * block) or dequeued and switching out right now, before sched_switch has run; the
		 * second wake-up is the one that ends its coming sleep. */
		if (p->on_rq || !p->on_cpu)
			return;
		st->woken_early = 1;
	} else if (st->woken) {
		return;
	}
	/* only the waker is taken here: the time comes from sched_info at emission (kp_woken_at);
	 * a kernel without it pays a clock read on every wake-up */
	struct task_struct *waker = bpf_get_current_task_btf();
	st->woken = 1;
	if (!bpf_core_field_exists(p->sched_info.last_queued))
		st->wake_ns = bpf_ktime_get_ns();
	st->w_tgid = waker->tgid;
	st->w_tid = waker->pid;
	st->w_task = (__u64)waker;
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
	kp_settings_t *cfg = kp_cfg();
	if (!kp_is_watched(cfg, p->tgid))
		return 0;
	struct kp_task_state *st = bpf_task_storage_get(&offcpu_state, p, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!st)
		return 0;
	struct task_struct *parent = bpf_get_current_task_btf();
	__builtin_memset(st, 0, sizeof(*st));
	st->off_ns = kp_now(p);
	st->wake_ns = bpf_ktime_get_ns();
	st->prev_state = KP_STATE_NEW;
	st->woken = 1;
	st->cpu = bpf_get_smp_processor_id();
	st->w_tgid = parent->tgid;
	st->w_tid = parent->pid;
	st->w_task = (__u64)parent;
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
	kp_settings_t *cfg = kp_cfg();
	__u32 ptgid = parent->tgid, ctgid = child->tgid;
	if (!kp_is_watched(cfg, ptgid))
		return 0;
	if (ctgid == ptgid)
		return 0; /* a new thread: already covered by its process */
	if (cfg->filter_on) {
		__u8 one = 1;
		bpf_map_update_elem(&kp_watched, &ctgid, &one, BPF_ANY);
	}
	kp_emit_proc(parent, KP_PROC_FORK, ctgid, 0, NULL);
	return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(kp_sched_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	kp_settings_t *cfg = kp_cfg();
	__u32 tgid = p->tgid;
	if (cfg->filter_on && tgid != cfg->self_tgid) {
		char comm[KP_COMM_LEN] = {};
		bpf_get_current_comm(&comm, sizeof(comm));
		if (bpf_map_lookup_elem(&kp_watched_comm, &comm) || kp_in_node(cfg, p)) {
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
	kp_settings_t *cfg = kp_cfg();
	__u32 tgid = p->tgid, tid = p->pid;
	/* task storage is freed with the task: nothing to clean up */
	if (tgid != tid || !kp_is_watched(cfg, tgid))
		return 0;
	kp_emit_proc(p, KP_PROC_EXIT, 0, p->exit_code, NULL);
	return 0;
}
