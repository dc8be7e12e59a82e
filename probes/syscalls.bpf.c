// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Syscalls that explain latency in financial services: ledger writes and
 * fsync, socket I/O, connect/accept, futex waits. Enter state is kept per
 * thread; one record per completed call (duration, return value, args). */
#include "common.bpf.h"

#define KP_NR_MAX 512
#define NR_OPENAT 257
#define NR_OPENAT2 437

/* syscall nr -> 1 if traced; filled by the agent. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, KP_NR_MAX);
	__type(key, __u32);
	__type(value, __u8);
} kp_syscall_filter SEC(".maps");

struct kp_enter_state {
	__u64 ts;
	__u64 args[3];
	__u32 nr;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct kp_enter_state);
} enter_state SEC(".maps");

KP_RINGBUF(rb_syscall);
KP_RINGBUF(rb_fd_open);

SEC("tp_btf/sys_enter")
int BPF_PROG(kp_sys_enter, struct pt_regs *regs, long sysno)
{
	__u32 nr = (__u32)sysno;
	if (nr >= KP_NR_MAX)
		return 0;
	__u8 *on = bpf_map_lookup_elem(&kp_syscall_filter, &nr);
	if (!on || !*on)
		return 0;
	__u64 id = bpf_get_current_pid_tgid();
	if (!kp_is_watched(kp_cfg(), id >> 32))
		return 0;
	__u32 tid = (__u32)id;
	struct kp_enter_state st = {.ts = bpf_ktime_get_ns(), .nr = nr};
	st.args[0] = PT_REGS_PARM1_CORE(regs);
	st.args[1] = PT_REGS_PARM2_CORE(regs);
	st.args[2] = PT_REGS_PARM3_CORE(regs);
	bpf_map_update_elem(&enter_state, &tid, &st, BPF_ANY);
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(kp_sys_exit, struct pt_regs *regs, long ret)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)id;
	struct kp_enter_state *st = bpf_map_lookup_elem(&enter_state, &tid);
	if (!st)
		return 0;
	struct kp_config *cfg = kp_cfg();
	__u64 now = bpf_ktime_get_ns();
	if (cfg && now - st->ts < cfg->min_syscall_ns) {
		kp_count(KP_CNT_SYSCALL_SHORT, 1);
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
		kp_submit(r);
	}
	if ((st->nr == NR_OPENAT || st->nr == NR_OPENAT2) && ret >= 0) {
		struct kp_fd_open *o = kp_reserve(&rb_fd_open, KP_EV_FD_OPEN, sizeof(*o));
		if (o) {
			o->ts_ns = now;
			o->tgid = id >> 32;
			o->tid = tid;
			o->fd = ret;
			o->flags = st->nr == NR_OPENAT ? (__s32)st->args[2] : 0;
			__builtin_memset(o->path, 0, KP_PATH_LEN);
			bpf_probe_read_user_str(o->path, sizeof(o->path), (void *)st->args[1]);
			kp_submit(o);
		}
	}
out:
	bpf_map_delete_elem(&enter_state, &tid);
	return 0;
}
