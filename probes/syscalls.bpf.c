// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Syscalls that explain latency in financial services: ledger writes and
 * fsync, socket I/O, connect/accept, futex waits. Enter state is kept per
 * thread; one record per completed call (duration, return value, args). */
#include "common.bpf.h"
#include "../schemas/syscalls.h" /* KP_NR_*: generated from schemas/syscall_table.py */

/* syscall nr -> KP_SYS_* (enum kp_sys_filter, records.h; 0: not traced); filled by the agent. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, KP_NR_MAX);
	__type(key, __u32);
	__type(value, __u8);
} kp_syscall_filter SEC(".maps");

/* Enter state lives in task-local storage: reached by a pointer from the task
 * (no hash, no delete on exit), created only for watched threads, and freed
 * with the thread. ts == 0 means "no traced call in flight". */
struct kp_enter_state {
	__u64 ts;
	__u64 args[3];
	__u32 nr;
	__u32 always;
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct kp_enter_state);
} enter_state SEC(".maps");

KP_RINGBUF(rb_syscall);
KP_RINGBUF(rb_fd_open);

/* A traced call begins: remember when and its first three arguments. */
static __always_inline void kp_enter(__u32 nr, __u8 always, __u64 a0, __u64 a1, __u64 a2)
{
	/* Storage exists only for watched threads (the watch list never shrinks): its
	 * presence skips the watch-list hash lookup. */
	struct task_struct *task = bpf_get_current_task_btf();
	struct kp_enter_state *st = bpf_task_storage_get(&enter_state, task, 0, 0);
	if (!st) {
		if (!kp_is_watched(kp_cfg(), bpf_get_current_pid_tgid() >> 32))
			return;
		st = bpf_task_storage_get(&enter_state, task, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
		if (!st)
			return;
	}
	st->ts = bpf_ktime_get_ns();
	st->nr = nr;
	st->always = always;
	st->args[0] = a0;
	st->args[1] = a1;
	st->args[2] = a2;
}

/* The device of the file behind the calling task's descriptor fd (0: none). Read only for a
 * sync row being emitted: a slow one, never the thousands of short commits a second. */
static __always_inline __u32 kp_fd_dev(__u64 fd)
{
	struct task_struct *t = bpf_get_current_task_btf();
	struct files_struct *files = t->files;
	if (!files)
		return 0;
	struct fdtable *fdt = BPF_CORE_READ(files, fdt);
	if (!fdt || fd >= BPF_CORE_READ(fdt, max_fds))
		return 0;
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *f = 0;
	if (bpf_probe_read_kernel(&f, sizeof(f), &fds[fd & 0xfffff]) || !f)
		return 0;
	return BPF_CORE_READ(f, f_inode, i_sb, s_dev);
}

static __always_inline bool kp_sync_call(__u32 nr)
{
	return nr == KP_NR_FSYNC || nr == KP_NR_FDATASYNC || nr == KP_NR_SYNC_FILE_RANGE;
}

/* A traced call returns: one row (or a count, when short), and the fd -> path map for opens. */
static __always_inline void kp_exit(long ret)
{
	/* Unwatched threads never got storage: this is the whole cost for them. */
	struct kp_enter_state *st = bpf_task_storage_get(&enter_state, bpf_get_current_task_btf(), 0, 0);
	if (!st || !st->ts)
		return;
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)id;
	kp_settings_t *cfg = kp_cfg();
	__u64 now = bpf_ktime_get_ns();
	if (!st->always && now - st->ts < cfg->min_syscall_ns) {
		kp_count(KP_CNT_SYSCALL_SHORT, 1);
		kp_count(KP_CNT_SYSCALL_SHORT_NS, now - st->ts);
		goto out;
	}
	struct kp_syscall *r = kp_reserve(&rb_syscall, KP_EV_SYSCALL, sizeof(*r));
	if (r) {
		r->enter_ns = st->ts;
		r->exit_ns = now;
		r->ret = ret;
		r->arg0 = st->args[0];
		r->arg1 = st->args[1];
		r->arg2 = st->args[2];
		r->tgid = id >> 32;
		r->tid = tid;
		r->nr = st->nr;
		r->cpu = bpf_get_smp_processor_id();
		r->dev = kp_sync_call(st->nr) ? kp_fd_dev(st->args[0]) : 0;
		r->dev_pad = 0;
		kp_submit_to(&rb_syscall, r);
	}
	if ((st->nr == KP_NR_OPENAT || st->nr == KP_NR_OPENAT2) && ret >= 0) {
		struct kp_fd_open *o = kp_reserve(&rb_fd_open, KP_EV_FD_OPEN, sizeof(*o));
		if (o) {
			o->ts_ns = now;
			o->tgid = id >> 32;
			o->tid = tid;
			o->fd = ret;
			o->flags = st->nr == KP_NR_OPENAT ? (__s32)st->args[2] : 0;
			__builtin_memset(o->path, 0, KP_PATH_LEN);
			bpf_probe_read_user_str(o->path, sizeof(o->path), (void *)st->args[1]);
			kp_submit_to(&rb_fd_open, o);
		}
	}
out:
	st->ts = 0;
}

/* Full capture (and watch lists): one program on every syscall's entry and exit, the
 * filter map chooses. Costs every process on the host two program runs per syscall,
 * so the bounded system-wide policy loads the per-call tracepoints below instead. */
SEC("tp_btf/sys_enter")
int BPF_PROG(kp_sys_enter, struct pt_regs *regs, long sysno)
{
	__u32 nr = (__u32)sysno;
	if (nr >= KP_NR_MAX)
		return 0;
	__u8 *on = bpf_map_lookup_elem(&kp_syscall_filter, &nr);
	if (!on || !*on)
		return 0;
	/* tp_btf hands a trusted pt_regs pointer: plain loads, no probe-read helper calls */
	kp_enter(nr, *on == KP_SYS_ALWAYS, PT_REGS_PARM1(regs), PT_REGS_PARM2(regs), PT_REGS_PARM3(regs));
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(kp_sys_exit, struct pt_regs *regs, long ret)
{
	kp_exit(ret);
	return 0;
}

/* Bounded capture: only the calls recorded whatever their duration get programs, one
 * per call's own tracepoint, so nothing runs for any other syscall. What a thread blocks
 * in otherwise is read at switch-out by the sched probe (kp_offcpu.sys_nr).
 * A program may read only as many arguments as the call's tracepoint record holds
 * (the kernel refuses the attach otherwise): one for fsync and close, three for the rest. */
#define KP_CALL_TP(name, always, a1, a2)                                              \
	SEC("tracepoint/syscalls/sys_enter_" #name)                                   \
	int kp_enter_##name(struct syscall_trace_enter *ctx)                          \
	{                                                                             \
		kp_enter(ctx->nr, always, ctx->args[0], a1, a2);                      \
		return 0;                                                             \
	}                                                                             \
	SEC("tracepoint/syscalls/sys_exit_" #name)                                    \
	int kp_exit_##name(struct syscall_trace_exit *ctx)                            \
	{                                                                             \
		kp_exit(ctx->ret);                                                    \
		return 0;                                                             \
	}
#define KP_CALL_TP1(name, always) KP_CALL_TP(name, always, 0, 0)
#define KP_CALL_TP3(name, always) KP_CALL_TP(name, always, ctx->args[1], ctx->args[2])

/* A database syncs its log at every commit: only syncs of at least min_syscall_ns are rows (the
 * others are counted with their time), and a slow one also shows as an off-CPU row with the call.
 * Opens and closes (the fd -> path map) and connection set-up are rows whatever they last. */
KP_CALL_TP1(fsync, 0)
KP_CALL_TP1(fdatasync, 0)
KP_CALL_TP3(sync_file_range, 0)
KP_CALL_TP3(connect, 1)
KP_CALL_TP3(accept, 1)
KP_CALL_TP3(accept4, 1)
KP_CALL_TP3(openat, 1)
KP_CALL_TP3(openat2, 1)
KP_CALL_TP1(close, 1)
