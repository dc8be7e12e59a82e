// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Replayable recording: every syscall of a watched process (all six arguments, return value,
 * per-thread sequence number) and the bytes the kernel handed the process, in fixed-size chunks.
 *
 * Written bytes (write/send families) are captured too, so replay can compare outputs.
 * Only active when a watch list is set (filter_on): recording every byte system-wide is never
 * wanted. Data is copied at sys_exit, when the kernel has filled the user buffers; which buffers
 * depends on the syscall (see kp_out_regions). A per-syscall byte cap bounds the cost; going over
 * it sets KP_RSYS_TRUNCATED and is counted, so replay stops there instead of being silently wrong.
 *
 * Time reads that the vDSO serves without a syscall are invisible to sys_enter/sys_exit; uprobes
 * on libc's clock_gettime/gettimeofday/time (attached by the agent, per recorded process where it
 * knows the pid) record them as KP_RSYS_VDSO.
 *
 * Thread order (replay/order.py): replay runs a process's threads one at a time and hands over at
 * the syscalls it traps ("ordered" ones, kp_rordered: the capture fills it from replay/seccomp.py,
 * so both sides agree). The recorded process runs serialized (replay/serialize.py), so each run of
 * user code between two ordered syscalls of a thread normally ran as one block. When a thread is
 * switched out outside an ordered syscall and a sibling runs before it resumes, one KP_NR_RESUME
 * record says so (sched_switch): from the switch-out to the resume, and whether the thread had run
 * any user code since its last ordered syscall (if not, its block simply started at the resume:
 * replay orders it there, exactly; if so, its block was split and the order is ambiguous).
 *
 * Per-thread state lives in task-local storage (no hash update per syscall, freed with the task). */
#include "common.bpf.h"
#include "../schemas/syscalls.h" /* KP_NR_*: generated from schemas/syscall_table.py */

#define KP_MAX_IOV 8
#define KP_ADDR_MAX 128

struct kp_renter {
	__u64 ts;
	__u64 args[6];
	__u32 nr;
	__u32 pad;
};

/* One recorded thread. */
struct kp_rtask {
	struct kp_renter enter;   /* the syscall in flight (enter.ts 0: none) */
	struct kp_renter uenter;  /* the libc time call in flight (uprobe -> uretprobe; ts 0: none) */
	__u64 seq;                /* last sequence number given out */
	__u64 exit_ip;            /* user ip at the return of its last ordered syscall */
	__u64 out_ns;             /* switched out outside an ordered syscall at (0: not) */
	__u64 out_gen;            /* its process's switch-in count then */
	__u64 out_ip;
	__s64 out_sys;            /* the syscall it was switched out in (orig_ax; < 0: in user mode) */
	__u32 ordered_in;         /* inside an ordered syscall */
	__u32 ran;                /* user code ran since the return of its last ordered syscall */
	__u32 out_clean;          /* switched out right at that return (no user code ran) */
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct kp_rtask);
} rtask SEC(".maps");

/* syscall number -> 1 if replay hands over between threads there (filled by the capture) */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, KP_NR_MAX);
	__type(key, __u32);
	__type(value, __u8);
} kp_rordered SEC(".maps");

/* tgid -> how many times one of its threads was switched in */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u64);
} kp_rgen SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kp_rconfig);
} kp_rconfig_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, KP_RCNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} kp_rcounters SEC(".maps");

KP_RINGBUF(rb_rsys);
KP_RINGBUF(rb_rdata);

struct kp_out {
	__u64 seq;
	__u64 budget;
	__u32 tgid;
	__u32 tid;
	__u32 flags;
	__u32 data_len;
	__u32 nchunks;
	__u32 pad;
};

struct kp_chunk_ctx {
	struct kp_out *o;
	__u64 ptr;
	__u32 len;
	__u32 off;
	__u32 base;
	__u32 region;
};

static __always_inline void kp_rcount(__u32 idx, __u64 by)
{
	__u64 *c = bpf_map_lookup_elem(&kp_rcounters, &idx);
	if (c)
		*c += by;
}

static __always_inline bool kp_replay_watched(__u32 tgid)
{
	kp_settings_t *cfg = kp_cfg();
	return cfg->filter_on && kp_is_watched(cfg, tgid);
}

static __always_inline struct kp_rtask *kp_rtask_of(struct task_struct *t, bool create)
{
	return bpf_task_storage_get(&rtask, t, 0, create ? BPF_LOCAL_STORAGE_GET_F_CREATE : 0);
}

static __always_inline bool kp_ordered(__u32 nr, __u64 *args)
{
	if (nr == KP_NR_MMAP) /* mmap: only a file mapping traps at replay */
		return (__u32)args[4] != 0xFFFFFFFFu;
	__u8 *o = bpf_map_lookup_elem(&kp_rordered, &nr);
	return o && *o;
}

static long kp_chunk(__u32 i, struct kp_chunk_ctx *c)
{
	if (c->off >= c->len)
		return 1;
	__u64 n = (__u64)c->len - c->off;
	if (n > KP_RDATA_LEN)
		n = KP_RDATA_LEN;
	n = ((n - 1) & (KP_RDATA_LEN - 1)) + 1; /* 1..KP_RDATA_LEN, in a form the verifier can see */
	struct kp_rdata *r = bpf_ringbuf_reserve(&rb_rdata, sizeof(*r), 0);
	if (!r) {
		kp_rcount(KP_RCNT_DATA_DROPS, 1);
		c->o->flags |= KP_RSYS_DATA_LOST;
		return 1;
	}
	r->seq = c->o->seq;
	r->tgid = c->o->tgid;
	r->tid = c->o->tid;
	r->region = c->region;
	r->offset = c->base + c->off;
	r->pad = 0;
	if (bpf_probe_read_user(r->data, n, (void *)(c->ptr + c->off)))
		n = 0; /* unreadable user memory: an empty chunk says so */
	r->len = n;
	kp_submit(r);
	c->o->nchunks += 1;
	c->o->data_len += n;
	c->off += n ? n : c->len; /* stop after an unreadable chunk */
	return 0;
}

/* Copy [ptr, ptr+len) of user memory as region `region` starting at offset `base`. */
static __noinline void kp_region(struct kp_out *o, __u32 region, __u64 ptr, __u64 len, __u32 base)
{
	if (!o || !ptr || !len)
		return;
	if (len > o->budget) {
		o->flags |= KP_RSYS_TRUNCATED;
		kp_rcount(KP_RCNT_TRUNCATED, 1);
		kp_rcount(KP_RCNT_TRUNC_BYTES, len - o->budget);
		len = o->budget;
	}
	if (!len)
		return;
	o->budget -= len;
	struct kp_chunk_ctx c = {.o = o, .ptr = ptr, .len = (__u32)len, .off = 0, .base = base, .region = region};
	bpf_loop((len + KP_RDATA_LEN - 1) / KP_RDATA_LEN, kp_chunk, &c, 0);
}

static __always_inline __u32 kp_user_u32(__u64 p)
{
	__u32 v = 0;
	if (p)
		bpf_probe_read_user(&v, sizeof(v), (void *)p);
	return v;
}

static __always_inline __u64 kp_min(__u64 a, __u64 b)
{
	return a < b ? a : b;
}

/* Scatter `total` bytes over an iovec array the way the kernel filled it: one flat region 0. */
static __noinline void kp_iov(struct kp_out *o, __u64 iov, __u64 iovcnt, __u64 total)
{
	__u32 done = 0;
	for (int i = 0; i < KP_MAX_IOV; i++) {
		if (i >= iovcnt || done >= total || !o)
			break;
		struct iovec v = {};
		if (bpf_probe_read_user(&v, sizeof(v), (void *)(iov + i * sizeof(v))))
			break;
		__u64 n = kp_min((__u64)v.iov_len, total - done);
		kp_region(o, 0, (__u64)v.iov_base, n, done);
		done += n;
	}
	if (o && done < total) { /* more iovecs than we follow: say so */
		o->flags |= KP_RSYS_TRUNCATED;
		kp_rcount(KP_RCNT_TRUNCATED, 1);
		kp_rcount(KP_RCNT_TRUNC_BYTES, total - done);
	}
}

/* What the kernel wrote into the process for this syscall. */
static __always_inline void kp_out_regions(struct kp_out *o, __u32 nr, __u64 *a, long ret)
{
	if (ret < 0)
		return;
	switch (nr) {
	case KP_NR_READ:
	case KP_NR_PREAD64:
	case KP_NR_GETRANDOM:
		kp_region(o, 0, nr == KP_NR_GETRANDOM ? a[0] : a[1], ret, 0);
		break;
	case KP_NR_READV:
	case KP_NR_PREADV:
	case KP_NR_PREADV2:
		kp_iov(o, a[1], a[2], ret);
		break;
	/* What the process wrote, so replay can compare its outputs byte for byte. */
	case KP_NR_WRITE:
	case KP_NR_PWRITE64:
	case KP_NR_SENDTO:
		kp_region(o, 0, a[1], ret, 0);
		break;
	case KP_NR_WRITEV:
	case KP_NR_PWRITEV:
	case KP_NR_PWRITEV2:
		kp_iov(o, a[1], a[2], ret);
		break;
	case KP_NR_SENDMSG: {
		struct user_msghdr m = {};
		if (!bpf_probe_read_user(&m, sizeof(m), (void *)a[1]))
			kp_iov(o, (__u64)m.msg_iov, m.msg_iovlen, ret);
		break;
	}
	case KP_NR_GETDENTS64:
	case KP_NR_GETCWD:
	case KP_NR_READLINK:
		kp_region(o, 0, nr == KP_NR_GETCWD ? a[0] : a[1], ret, 0);
		break;
	case KP_NR_READLINKAT:
		kp_region(o, 0, a[2], ret, 0);
		break;
	case KP_NR_RECVFROM:
		kp_region(o, 0, a[1], ret, 0);
		if (a[4] && a[5]) {
			kp_region(o, 1, a[4], kp_min(kp_user_u32(a[5]), KP_ADDR_MAX), 0);
			kp_region(o, 2, a[5], 4, 0);
		}
		break;
	case KP_NR_RECVMSG: {
		struct user_msghdr m = {};
		if (bpf_probe_read_user(&m, sizeof(m), (void *)a[1]))
			break;
		kp_iov(o, (__u64)m.msg_iov, m.msg_iovlen, ret);
		kp_region(o, 1, (__u64)m.msg_name, kp_min(m.msg_namelen, KP_ADDR_MAX), 0);
		kp_region(o, 2, a[1], sizeof(m), 0);
		kp_region(o, 3, (__u64)m.msg_control, kp_min(m.msg_controllen, 256), 0);
		break;
	}
	case KP_NR_ACCEPT:
	case KP_NR_ACCEPT4:
	case KP_NR_GETSOCKNAME:
	case KP_NR_GETPEERNAME:
		if (a[1] && a[2]) {
			kp_region(o, 1, a[1], kp_min(kp_user_u32(a[2]), KP_ADDR_MAX), 0);
			kp_region(o, 2, a[2], 4, 0);
		}
		break;
	case KP_NR_GETSOCKOPT:
		if (a[3] && a[4]) {
			kp_region(o, 0, a[3], kp_min(kp_user_u32(a[4]), 256), 0);
			kp_region(o, 2, a[4], 4, 0);
		}
		break;
	case KP_NR_CLOCK_GETTIME:
	case KP_NR_CLOCK_GETRES:
		kp_region(o, 0, a[1], 16, 0);
		break;
	case KP_NR_GETTIMEOFDAY:
		kp_region(o, 0, a[0], 16, 0);
		break;
	case KP_NR_TIME:
		kp_region(o, 0, a[0], 8, 0);
		break;
	case KP_NR_FSTAT:
	case KP_NR_STAT:
	case KP_NR_LSTAT:
		kp_region(o, 0, a[1], 144, 0);
		break;
	case KP_NR_NEWFSTATAT:
		kp_region(o, 0, a[2], 144, 0);
		break;
	case KP_NR_STATX:
		kp_region(o, 0, a[4], 256, 0);
		break;
	case KP_NR_PIPE:
	case KP_NR_PIPE2:
		kp_region(o, 0, a[0], 8, 0);
		break;
	case KP_NR_SOCKETPAIR:
		kp_region(o, 0, a[3], 8, 0);
		break;
	case KP_NR_POLL:
	case KP_NR_PPOLL:
		kp_region(o, 0, a[0], kp_min(a[1], 1024) * 8, 0);
		break;
	case KP_NR_EPOLL_WAIT:
	case KP_NR_EPOLL_PWAIT:
	case KP_NR_EPOLL_PWAIT2:
		kp_region(o, 0, a[1], ret * 12, 0);
		break;
	case KP_NR_SELECT:
	case KP_NR_PSELECT6: {
		__u64 bytes = kp_min((a[0] + 63) / 64 * 8, 128);
		kp_region(o, 0, a[1], bytes, 0);
		kp_region(o, 1, a[2], bytes, 0);
		kp_region(o, 2, a[3], bytes, 0);
		break;
	}
	case KP_NR_WAIT4:
		kp_region(o, 0, a[1], 4, 0);
		break;
	case KP_NR_UNAME:
		kp_region(o, 0, a[0], 390, 0);
		break;
	case KP_NR_SYSINFO:
		kp_region(o, 0, a[0], 112, 0);
		break;
	case KP_NR_GETRUSAGE:
	case KP_NR_GETRLIMIT:
		kp_region(o, 0, a[1], nr == KP_NR_GETRUSAGE ? 144 : 16, 0);
		break;
	case KP_NR_PRLIMIT64:
		kp_region(o, 0, a[3], 16, 0);
		break;
	case KP_NR_SCHED_GETAFFINITY:
		kp_region(o, 0, a[2], ret, 0);
		break;
	case KP_NR_IOCTL:
		if (a[1] == 0x5401) /* TCGETS */
			kp_region(o, 0, a[2], 60, 0);
		else if (a[1] == 0x541B || a[1] == 0x5413) /* FIONREAD, TIOCGWINSZ */
			kp_region(o, 0, a[2], a[1] == 0x541B ? 4 : 8, 0);
		break;
	}
}

static __always_inline __u64 kp_budget(void)
{
	__u32 zero = 0;
	struct kp_rconfig *rc = bpf_map_lookup_elem(&kp_rconfig_map, &zero);
	return rc && rc->max_bytes ? rc->max_bytes : (1 << 20);
}

static __always_inline void kp_emit(struct kp_rtask *t, struct kp_renter *st, __u32 tgid, __u32 tid, long ret,
				    __u64 now, __u32 flags, bool data)
{
	struct kp_out o = {.seq = ++t->seq, .budget = kp_budget(), .tgid = tgid, .tid = tid, .flags = flags};
	if (data)
		kp_out_regions(&o, st->nr, st->args, ret);
	struct kp_rsys *r = bpf_ringbuf_reserve(&rb_rsys, sizeof(*r), 0);
	if (!r) {
		kp_rcount(KP_RCNT_SYS_DROPS, 1);
		return;
	}
	r->enter_ns = st->ts;
	r->exit_ns = now;
	r->ret = ret;
	for (int i = 0; i < 6; i++)
		r->args[i] = st->args[i];
	r->seq = o.seq;
	r->tgid = tgid;
	r->tid = tid;
	r->nr = st->nr;
	r->flags = o.flags;
	r->data_len = o.data_len;
	r->nchunks = o.nchunks;
	kp_submit(r);
}

/* Cost (measured per run with the kernel's BPF statistics, bench/replay.py): these two programs
 * run for every syscall of the host, so the path of a process not recorded is one watch-list
 * lookup at the enter and one task-storage lookup at the exit. The tracepoints' pointers (regs,
 * the current task) are trusted BTF pointers: their fields are plain loads, not
 * bpf_probe_read_kernel calls (a helper call each, dearer behind speculation mitigations). */
SEC("tp_btf/sys_enter")
int BPF_PROG(kp_r_enter, struct pt_regs *regs, long sysno)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32, tid = (__u32)id;
	if (!kp_replay_watched(tgid))
		return 0;
	struct kp_rtask *t = kp_rtask_of(bpf_get_current_task_btf(), true);
	if (!t)
		return 0;
	struct kp_renter *st = &t->enter;
	st->ts = bpf_ktime_get_ns();
	st->nr = (__u32)sysno;
	st->args[0] = regs->di; /* x86-64 syscall arguments: rdi, rsi, rdx, r10, r8, r9 */
	st->args[1] = regs->si;
	st->args[2] = regs->dx;
	st->args[3] = regs->r10;
	st->args[4] = regs->r8;
	st->args[5] = regs->r9;
	t->ran = 1; /* user code ran to get here */
	t->ordered_in = kp_ordered(st->nr, st->args);
	if (st->nr == KP_NR_CLOCK_GETTIME || st->nr == KP_NR_GETTIMEOFDAY || st->nr == KP_NR_TIME)
		t->uenter.ts = 0; /* a probed libc time call took its syscall fallback: recorded as that */
	if (st->nr == KP_NR_EXIT || st->nr == KP_NR_EXIT_GROUP) { /* never returns: record it now */
		kp_emit(t, st, tgid, tid, 0, st->ts, 0, false);
		st->ts = 0;
	}
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(kp_r_exit, struct pt_regs *regs, long ret)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct kp_rtask *t = kp_rtask_of(task, false);
	__u64 now;
	if (!t || !t->enter.ts) {
		/* No enter seen: the watch began inside this call (only exec matters: it marks where
		 * replay starts), or this is a new thread's first return to user space, from the clone
		 * its parent made: when it first ran is where its first block of user code starts,
		 * which replay needs to order it among its siblings. */
		__u32 nr = regs->orig_ax;
		bool child = (nr == KP_NR_CLONE || nr == KP_NR_CLONE3) && ret == 0;
		if (nr != KP_NR_EXECVE && nr != KP_NR_EXECVEAT && !child)
			return 0;
		if (!kp_replay_watched(task->tgid))
			return 0;
		t = kp_rtask_of(task, true);
		if (!t)
			return 0;
		now = bpf_ktime_get_ns();
		struct kp_renter none = {.ts = now, .nr = nr};
		kp_emit(t, &none, task->tgid, task->pid, ret, now, KP_RSYS_NO_ENTER, false);
		t->ran = 0; /* a new block of user code starts here */
		t->exit_ip = regs->ip;
		return 0;
	}
	now = bpf_ktime_get_ns();
	kp_emit(t, &t->enter, task->tgid, task->pid, ret, now, 0, true);
	t->enter.ts = 0;
	if (t->ordered_in) {
		t->ordered_in = 0;
		t->ran = 0;
		t->exit_ip = regs->ip;
	}
	return 0;
}

/* A recorded thread has its task storage before it runs any user code (its process's exec, or
 * its own first return from clone, created it), so that lookup alone tells a recorded caller;
 * the watch list is asked only when it misses (a process watched while running). */
static __always_inline int kp_time_enter(__u32 nr, __u64 a0, __u64 a1)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct kp_rtask *t = kp_rtask_of(task, false);
	if (!t) {
		if (!kp_replay_watched(task->tgid)) {
			kp_rcount(KP_RCNT_UPROBE_OTHER, 1);
			return 0;
		}
		t = kp_rtask_of(task, true);
		if (!t)
			return 0;
	}
	t->uenter.ts = bpf_ktime_get_ns();
	t->uenter.nr = nr;
	t->uenter.args[0] = a0;
	t->uenter.args[1] = a1;
	return 0;
}

static __always_inline int kp_time_exit(__u32 nr, long ret)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct kp_rtask *t = kp_rtask_of(task, false);
	if (!t || !t->uenter.ts || t->uenter.nr != nr)
		return 0;
	kp_emit(t, &t->uenter, task->tgid, task->pid, ret, bpf_ktime_get_ns(), KP_RSYS_VDSO, true);
	t->uenter.ts = 0;
	return 0;
}

SEC("uprobe")
int BPF_KPROBE(kp_u_clock_gettime, long clk, void *tp)
{
	return kp_time_enter(KP_NR_CLOCK_GETTIME, clk, (__u64)tp);
}

SEC("uretprobe")
int BPF_KRETPROBE(kp_ur_clock_gettime, long ret)
{
	return kp_time_exit(KP_NR_CLOCK_GETTIME, ret);
}

/* The kp_ux_* programs are plain uprobes on the jump right after libc's call into the vDSO
 * (replay/timeprobes.py): the result is in rax, the caller's buffer is filled. With the entry
 * probe on the jump before that call, both are emulated by the kernel (one trap each), where an
 * entry probe on the first instruction is single-stepped and a uretprobe adds a kernel entry. */
SEC("uprobe")
int BPF_KPROBE(kp_ux_clock_gettime)
{
	return kp_time_exit(KP_NR_CLOCK_GETTIME, (long)PT_REGS_RC(ctx));
}

SEC("uprobe")
int BPF_KPROBE(kp_ux_gettimeofday)
{
	return kp_time_exit(KP_NR_GETTIMEOFDAY, (long)PT_REGS_RC(ctx));
}

SEC("uprobe")
int BPF_KPROBE(kp_ux_time)
{
	return kp_time_exit(KP_NR_TIME, (long)PT_REGS_RC(ctx));
}

SEC("uprobe")
int BPF_KPROBE(kp_u_gettimeofday, void *tv, void *tz)
{
	return kp_time_enter(KP_NR_GETTIMEOFDAY, (__u64)tv, (__u64)tz);
}

SEC("uretprobe")
int BPF_KRETPROBE(kp_ur_gettimeofday, long ret)
{
	return kp_time_exit(KP_NR_GETTIMEOFDAY, ret);
}

SEC("uprobe")
int BPF_KPROBE(kp_u_time, void *t)
{
	return kp_time_enter(KP_NR_TIME, (__u64)t, 0);
}

SEC("uretprobe")
int BPF_KRETPROBE(kp_ur_time, long ret)
{
	return kp_time_exit(KP_NR_TIME, ret);
}

/* A recorded thread switched out between two ordered syscalls, and back: if a sibling ran
 * meanwhile, say so (KP_NR_RESUME, see the top of this file). */
SEC("tp_btf/sched_switch")
int BPF_PROG(kp_r_switch, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	struct kp_rtask *t = kp_rtask_of(prev, false);
	__u32 tgid;
	__u64 *gen;
	if (t && !t->ordered_in && !t->out_ns) {
		struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(prev);
		tgid = prev->tgid;
		gen = bpf_map_lookup_elem(&kp_rgen, &tgid);
		t->out_ns = bpf_ktime_get_ns();
		t->out_gen = gen ? *gen : 0;
		t->out_ip = regs ? regs->ip : 0;
		t->out_sys = regs ? (long)regs->orig_ax : -1;
		/* at the return of its last ordered syscall: in the syscall path (orig_ax is a syscall
		 * number, not an interrupt's), at that syscall's return address, nothing entered since */
		t->out_clean = regs && !t->ran && t->out_sys >= 0 && t->out_ip == t->exit_ip;
	}
	tgid = next->tgid;
	if (!kp_replay_watched(tgid))
		return 0;
	gen = bpf_map_lookup_elem(&kp_rgen, &tgid);
	__u64 before = gen ? *gen : 0;
	if (gen)
		__sync_fetch_and_add(gen, 1);
	else {
		__u64 one = 1;
		bpf_map_update_elem(&kp_rgen, &tgid, &one, BPF_NOEXIST);
	}
	t = kp_rtask_of(next, false);
	if (!t || !t->out_ns)
		return 0;
	if (before != t->out_gen) { /* a sibling ran meanwhile */
		struct kp_renter r = {.ts = t->out_ns, .nr = KP_NR_RESUME};
		r.args[0] = t->out_clean;
		r.args[1] = t->out_ip;
		r.args[2] = before - t->out_gen;
		r.args[3] = (__u64)t->out_sys;
		kp_emit(t, &r, tgid, next->pid, 0, bpf_ktime_get_ns(), 0, false);
	}
	t->out_ns = 0;
	t->ran = 1;
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(kp_r_task_exit, struct task_struct *p)
{
	if (BPF_CORE_READ(p, signal, live.counter) == 0) { /* the process's last thread */
		__u32 tgid = p->tgid;
		bpf_map_delete_elem(&kp_rgen, &tgid);
	}
	return 0;
}
