// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Payload capture for the protocol decoders (protocols/): a bounded prefix of each TCP socket
 * read and write of a *watched* process, with the socket's identity and 4-tuple.
 *
 * Never for unwatched processes, and never when no watch list is set: the bytes of a host's
 * traffic are not kprobe's business unless someone asked for a service. The agent masks card
 * data in what arrives, decodes it and stores only the decoded spans (see protocols/capture.py).
 *
 * read/write/sendto/recvfrom (send and recv are sendto/recvfrom on x86-64 and arm64) get their
 * own syscall tracepoints: nothing runs for any other syscall. The enter program keeps the buffer
 * address in task-local storage, created only for watched threads; the exit program checks the
 * fd is a TCP socket and copies min(returned bytes, KP_PAYLOAD_LEN) from the user buffer, which by
 * then holds what was received. Calls that moved more are counted (KP_PCNT_TRUNCATED), as are
 * records the ring had no room for: the decoders are told of the gap and resynchronise.
 *
 * TLS: uprobes on OpenSSL's SSL_write/SSL_read (and the _ex variants) of processes that link
 * libssl. Inside such a call the thread's socket syscalls carry ciphertext: they are not emitted,
 * but they tell which socket the SSL object writes to (remembered per SSL pointer for calls served
 * from OpenSSL's buffer without a syscall). At the call's return the plaintext is emitted for that
 * socket, flagged KP_PAYLOAD_F_TLS. */
#include "common.bpf.h"

#define KP_S_IFMT 00170000
#define KP_S_IFSOCK 0140000

struct kp_payload_state {
	__u64 buf;
	__s32 fd;
	__u8 dir;
	__u8 active;
	__u16 pad;
	/* an SSL_read/SSL_write in progress on this thread */
	__u64 ssl;
	__u64 ssl_buf;
	__u64 ssl_nptr;  /* _ex variants: where OpenSSL stores the byte count */
	__u64 ssl_sk;    /* the socket its syscalls used */
	__s32 ssl_fd;
	__u8 ssl_dir;
	__u8 ssl_active;
	__u16 pad2;
};

/* SSL pointer -> the TCP socket (and fd) it was last seen on. */
struct kp_ssl_sock {
	__u64 sk;
	__s32 fd;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct kp_ssl_sock);
} kp_ssl_socks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct kp_payload_state);
} payload_state SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, KP_PCNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} kp_pcounters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 * 1024 * 1024);
} rb_payload SEC(".maps");

/* Socket -> records of it the ring had no room for, and when (the first and the last), so the agent
 * restarts that connection's decoder only, at the hole: before the first record of the socket
 * stamped after a loss. A drop on one connection of a busy database must not cost every other
 * connection its request in flight. LRU: a socket evicted before the agent read it is covered by
 * the agent's fallback (more drops counted than the list holds: every decoder restarts). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, struct kp_payload_lost);
} kp_payload_lost SEC(".maps");

static __always_inline void kp_pcount(__u32 idx, __u64 by)
{
	__u64 *c = bpf_map_lookup_elem(&kp_pcounters, &idx);
	if (c)
		*c += by;
}

/* A record of socket sk was lost. Listed per socket (kp_payload_lost) before it is counted, so
 * the agent, reading the counter first and the list second, finds every counted drop listed
 * unless the LRU evicted it. Counted once more when the ring still had room for the record: the
 * reservation was refused for another reason than the drain falling behind. */
static __always_inline void kp_payload_drop(struct sock *sk, __u64 need)
{
	__u64 key = (__u64)sk, now = bpf_ktime_get_ns();
	struct kp_payload_lost fresh = {.count = 1, .first_ts = now, .last_ts = now};
	struct kp_payload_lost *l = bpf_map_lookup_elem(&kp_payload_lost, &key);
	if (!l && bpf_map_update_elem(&kp_payload_lost, &key, &fresh, BPF_NOEXIST) == 0)
		goto counted;
	if (!l)
		l = bpf_map_lookup_elem(&kp_payload_lost, &key); /* another CPU listed it meanwhile */
	if (l) {
		__sync_fetch_and_add(&l->count, 1);
		l->last_ts = now;
	}
counted:
	kp_pcount(KP_PCNT_DROPS, 1);
	__u64 avail = bpf_ringbuf_query(&rb_payload, BPF_RB_AVAIL_DATA);
	__u64 size = bpf_ringbuf_query(&rb_payload, BPF_RB_RING_SIZE);
	if (avail + need + 8 <= size)
		kp_pcount(KP_PCNT_DROPS_NOT_FULL, 1);
}

static __always_inline void kp_payload_enter(__u64 fd, __u64 buf, __u8 dir)
{
	kp_settings_t *cfg = kp_cfg();
	if (!cfg->filter_on)
		return; /* no watch list: nobody's payload */
	struct task_struct *task = bpf_get_current_task_btf();
	struct kp_payload_state *st = bpf_task_storage_get(&payload_state, task, 0, 0);
	if (!st) {
		if (!kp_is_watched(cfg, bpf_get_current_pid_tgid() >> 32))
			return;
		st = bpf_task_storage_get(&payload_state, task, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
		if (!st)
			return;
	}
	st->buf = buf;
	st->fd = (__s32)fd;
	st->dir = dir;
	st->active = 1;
}

/* The TCP socket behind fd of the current task, or 0. */
static __always_inline struct sock *kp_tcp_sock(struct task_struct *t, __s32 fd)
{
	if (fd < 0)
		return 0;
	struct files_struct *files = BPF_CORE_READ(t, files);
	if (!files)
		return 0;
	struct fdtable *fdt = BPF_CORE_READ(files, fdt);
	if (!fdt || (__u32)fd >= BPF_CORE_READ(fdt, max_fds))
		return 0;
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *f = 0;
	if (bpf_probe_read_kernel(&f, sizeof(f), &fds[fd & 0xfffff]) || !f)
		return 0;
	if ((BPF_CORE_READ(f, f_inode, i_mode) & KP_S_IFMT) != KP_S_IFSOCK)
		return 0;
	struct socket *so = BPF_CORE_READ(f, private_data);
	struct sock *sk = so ? BPF_CORE_READ(so, sk) : 0;
	if (!sk)
		return 0;
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if ((family != AF_INET && family != AF_INET6) || BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	return sk;
}

/* Records are as long as what they carry: the header (struct kp_payload up to data) plus the bytes
 * captured, not a fixed 4 KiB slot. PostgreSQL's messages under pgbench are ~100 bytes: fixed slots
 * made the ring hold ~4000 records (under a second of a busy database), exact ones ~60000.
 *
 * Two ways to get a variable-length record out:
 * - exact: the record is built in a per-CPU scratch buffer and copied into the ring by
 *   bpf_ringbuf_output with its exact size (one extra in-kernel copy of header + data). Only where
 *   nothing else can run on this CPU meanwhile: the syscall tracepoints run their programs with
 *   preemption disabled (perf_syscall_exit's guard), so one scratch buffer per CPU is enough;
 * - size classes: bpf_ringbuf_reserve takes only a constant size, so the copy length picks one of
 *   four classes (128/512/2048/4096 data bytes) and the bytes land in the ring directly. The OpenSSL
 *   uprobes use it always: uprobe programs run preemptible (migrate_disable only), and a shared
 *   scratch buffer could be overwritten by another task's program on the same CPU.
 * Built with -DKP_PAYLOAD_CLASSES the syscall path uses size classes too: bench/payload_kernel.py
 * measures both on the kernel at hand (ns per program run, ring bytes per record).
 */
#define KP_PAYLOAD_HDR __builtin_offsetof(struct kp_payload, data)

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kp_payload);
} kp_payload_scratch SEC(".maps");

static __always_inline void kp_fill(struct kp_payload *r, struct sock *sk, __s32 fd, __u8 dir, __u8 flags, long ret)
{
	__u64 id = bpf_get_current_pid_tgid();
	r->ts_ns = bpf_ktime_get_ns();
	r->skaddr = (__u64)sk;
	r->tgid = id >> 32;
	r->tid = (__u32)id;
	r->fd = fd;
	r->total = ret > 0xffffffffL ? 0xffffffff : (__u32)ret;
	r->dir = dir;
	r->flags = flags;
	r->pad2 = 0;
	kp_sk_tuple(sk, &r->family, &r->sport, &r->dport, r->saddr, r->daddr);
}

static __always_inline __u64 kp_wake_flag(void)
{
	/* as kp_submit_to: wake the drain only once the ring is 1/8 full */
	__u64 avail = bpf_ringbuf_query(&rb_payload, BPF_RB_AVAIL_DATA);
	__u64 size = bpf_ringbuf_query(&rb_payload, BPF_RB_RING_SIZE);
	return avail * 8 >= size ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
}

/* The bytes to copy (at most KP_PAYLOAD_LEN); a longer call is counted truncated. */
static __always_inline __u32 kp_copy_len(long ret)
{
	if (ret > KP_PAYLOAD_LEN) {
		kp_pcount(KP_PCNT_TRUNCATED, 1);
		kp_pcount(KP_PCNT_TRUNC_BYTES, ret - KP_PAYLOAD_LEN);
		return KP_PAYLOAD_LEN;
	}
	return (__u32)ret;
}

/* One size class: reserve header + cap, copy min(n, cap) (n <= cap when chosen). */
#define KP_EMIT_CLASS(CAP)                                                                   \
	do {                                                                                 \
		struct kp_payload *r = bpf_ringbuf_reserve(&rb_payload, KP_PAYLOAD_HDR + (CAP), 0); \
		if (!r) {                                                                    \
			kp_payload_drop(sk, KP_PAYLOAD_HDR + (CAP));                         \
			return;                                                              \
		}                                                                            \
		kp_fill(r, sk, fd, dir, flags, ret);                                         \
		asm volatile("" : "+r"(n));                                                  \
		n &= (2 * (CAP)) - 1;                                                        \
		if (n > (CAP))                                                               \
			n = (CAP);                                                           \
		asm volatile("" : "+r"(n));                                                  \
		if (bpf_probe_read_user(r->data, n, (void *)buf))                            \
			n = 0;                                                               \
		r->len = n;                                                                  \
		bpf_ringbuf_submit(r, kp_wake_flag());                                       \
		return;                                                                      \
	} while (0)

static __always_inline void kp_emit_classes(struct sock *sk, __s32 fd, __u8 dir, __u8 flags, __u64 buf, long ret)
{
	__u32 n = kp_copy_len(ret);
	if (n <= 128)
		KP_EMIT_CLASS(128);
	if (n <= 512)
		KP_EMIT_CLASS(512);
	if (n <= 2048)
		KP_EMIT_CLASS(2048);
	KP_EMIT_CLASS(KP_PAYLOAD_LEN);
}

/* Exact length through this CPU's scratch buffer: only from non-preemptible programs (see above). */
static __always_inline void kp_emit(struct sock *sk, __s32 fd, __u8 dir, __u8 flags, __u64 buf, long ret)
{
#ifdef KP_PAYLOAD_CLASSES
	kp_emit_classes(sk, fd, dir, flags, buf, ret);
#else
	__u32 n = kp_copy_len(ret);
	__u32 zero = 0;
	struct kp_payload *r = bpf_map_lookup_elem(&kp_payload_scratch, &zero);
	if (!r)
		return;
	kp_fill(r, sk, fd, dir, flags, ret);
	/* bounds the verifier can follow whatever register the compiler picks (n == ret on one path) */
	asm volatile("" : "+r"(n));
	n &= 0x1fff;
	if (n > KP_PAYLOAD_LEN)
		n = KP_PAYLOAD_LEN;
	asm volatile("" : "+r"(n));
	if (bpf_probe_read_user(r->data, n, (void *)buf))
		n = 0; /* the buffer was unmapped meanwhile: the record still says a gap of `total` */
	r->len = n;
	if (bpf_ringbuf_output(&rb_payload, r, KP_PAYLOAD_HDR + n, kp_wake_flag()))
		kp_payload_drop(sk, KP_PAYLOAD_HDR + n);
#endif
}

static __always_inline void kp_payload_exit(long ret)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct kp_payload_state *st = bpf_task_storage_get(&payload_state, task, 0, 0);
	if (!st || !st->active)
		return;
	st->active = 0;
	if (ret <= 0)
		return;
	struct sock *sk = kp_tcp_sock(task, st->fd);
	if (!sk) {
		kp_pcount(KP_PCNT_NOT_TCP, 1);
		return;
	}
	if (st->ssl_active) {
		/* ciphertext of an SSL call: remember its socket, emit the plaintext at the call's return */
		st->ssl_sk = (__u64)sk;
		st->ssl_fd = st->fd;
		return;
	}
	kp_emit(sk, st->fd, st->dir, 0, st->buf, ret);
}

#define KP_PAYLOAD_TP(name, dir)                                             \
	SEC("tracepoint/syscalls/sys_enter_" #name)                          \
	int kp_payload_enter_##name(struct syscall_trace_enter *ctx)         \
	{                                                                    \
		kp_payload_enter(ctx->args[0], ctx->args[1], dir);           \
		return 0;                                                    \
	}                                                                    \
	SEC("tracepoint/syscalls/sys_exit_" #name)                           \
	int kp_payload_exit_##name(struct syscall_trace_exit *ctx)           \
	{                                                                    \
		kp_payload_exit(ctx->ret);                                   \
		return 0;                                                    \
	}

KP_PAYLOAD_TP(write, 0)
KP_PAYLOAD_TP(sendto, 0)
KP_PAYLOAD_TP(read, 1)
KP_PAYLOAD_TP(recvfrom, 1)

/* ---- OpenSSL: SSL_write(ssl, buf, num) / SSL_read(ssl, buf, num) return the byte count;
 * SSL_write_ex(ssl, buf, num, size_t *written) / SSL_read_ex(ssl, buf, num, size_t *readbytes)
 * return 1 and store it. ---- */
static __always_inline void kp_ssl_enter(__u64 ssl, __u64 buf, __u64 nptr, __u8 dir)
{
	kp_settings_t *cfg = kp_cfg();
	if (!cfg->filter_on)
		return;
	struct task_struct *task = bpf_get_current_task_btf();
	struct kp_payload_state *st = bpf_task_storage_get(&payload_state, task, 0, 0);
	if (!st) {
		if (!kp_is_watched(cfg, bpf_get_current_pid_tgid() >> 32))
			return;
		st = bpf_task_storage_get(&payload_state, task, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
		if (!st)
			return;
	}
	st->ssl = ssl;
	st->ssl_buf = buf;
	st->ssl_nptr = nptr;
	st->ssl_sk = 0;
	st->ssl_fd = -1;
	st->ssl_dir = dir;
	st->ssl_active = 1;
}

static __always_inline void kp_ssl_exit(long rc, bool ex)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct kp_payload_state *st = bpf_task_storage_get(&payload_state, task, 0, 0);
	if (!st || !st->ssl_active)
		return;
	st->ssl_active = 0;
	long n = rc;
	if (ex) {
		__u64 got = 0;
		if (rc != 1 || !st->ssl_nptr || bpf_probe_read_user(&got, sizeof(got), (void *)st->ssl_nptr))
			return;
		n = (long)got;
	}
	if (n <= 0)
		return;
	__u64 key = st->ssl;
	struct kp_ssl_sock *known = bpf_map_lookup_elem(&kp_ssl_socks, &key);
	if (st->ssl_sk) {
		struct kp_ssl_sock v = {.sk = st->ssl_sk, .fd = st->ssl_fd};
		if (!known || known->sk != v.sk)
			bpf_map_update_elem(&kp_ssl_socks, &key, &v, BPF_ANY);
		kp_emit_classes((struct sock *)st->ssl_sk, st->ssl_fd, st->ssl_dir, KP_PAYLOAD_F_TLS, st->ssl_buf, n);
		return;
	}
	if (!known) {
		kp_pcount(KP_PCNT_TLS_NO_SOCK, 1);
		return;
	}
	kp_emit_classes((struct sock *)known->sk, known->fd, st->ssl_dir, KP_PAYLOAD_F_TLS, st->ssl_buf, n);
}

SEC("uprobe")
int BPF_KPROBE(kp_ssl_write_enter, void *ssl, void *buf, int num)
{
	kp_ssl_enter((__u64)ssl, (__u64)buf, 0, 0);
	return 0;
}

SEC("uretprobe")
int BPF_KRETPROBE(kp_ssl_write_exit, int rc)
{
	kp_ssl_exit(rc, false);
	return 0;
}

SEC("uprobe")
int BPF_KPROBE(kp_ssl_read_enter, void *ssl, void *buf, int num)
{
	kp_ssl_enter((__u64)ssl, (__u64)buf, 0, 1);
	return 0;
}

SEC("uretprobe")
int BPF_KRETPROBE(kp_ssl_read_exit, int rc)
{
	kp_ssl_exit(rc, false);
	return 0;
}

SEC("uprobe")
int BPF_KPROBE(kp_ssl_write_ex_enter, void *ssl, void *buf, __u64 num, __u64 *written)
{
	kp_ssl_enter((__u64)ssl, (__u64)buf, (__u64)written, 0);
	return 0;
}

SEC("uretprobe")
int BPF_KRETPROBE(kp_ssl_write_ex_exit, int rc)
{
	kp_ssl_exit(rc, true);
	return 0;
}

SEC("uprobe")
int BPF_KPROBE(kp_ssl_read_ex_enter, void *ssl, void *buf, __u64 num, __u64 *readbytes)
{
	kp_ssl_enter((__u64)ssl, (__u64)buf, (__u64)readbytes, 1);
	return 0;
}

SEC("uretprobe")
int BPF_KRETPROBE(kp_ssl_read_ex_exit, int rc)
{
	kp_ssl_exit(rc, true);
	return 0;
}
