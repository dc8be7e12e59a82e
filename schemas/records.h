/* Record layouts shared by the eBPF programs (probes/) and the agent.
 *
 * This file is the single definition of what crosses the ring buffers.
 * schemas/layouts.py is generated from it (python -m kprobe.schemas.gen_layouts)
 * and tests/test_layouts.py fails when the two drift, or when the compiled
 * objects' BTF disagrees with the generated offsets.
 *
 * Rules that keep the generator simple and the numpy view exact:
 *  - only fixed-width fields: __u8/__u16/__u32/__u64/__s32/__s64 and arrays of them, char[N];
 *  - every struct is padded by hand to a multiple of 8 bytes;
 *  - one ring buffer per record type, so every slot in a ring has the same size.
 *
 * All *_ns fields are CLOCK_MONOTONIC (bpf_ktime_get_ns); the agent converts them to UTC.
 */
#ifndef KPROBE_RECORDS_H
#define KPROBE_RECORDS_H

#define KP_COMM_LEN 16
#define KP_PATH_LEN 128

/* Event type ids: index into the per-CPU drop counters and name of the ring. */
enum kp_event_type {
	KP_EV_OFFCPU = 0,
	KP_EV_PROC = 1,
	KP_EV_FAULT = 2,
	KP_EV_RECLAIM = 3,
	KP_EV_OOM = 4,
	KP_EV_TCP_STATE = 5,
	KP_EV_SOCK_IO = 6,
	KP_EV_TCP_RETRANS = 7,
	KP_EV_SYSCALL = 8,
	KP_EV_FD_OPEN = 9,
	KP_EV_BLOCK_IO = 10,
	KP_EV_MAX = 11,
};

/* Counters for what is aggregated in the kernel by design (not lost). */
enum kp_counter {
	KP_CNT_SWITCHES = 0,        /* every sched_switch seen */
	KP_CNT_OFFCPU_SHORT = 1,    /* off-CPU intervals below the threshold */
	KP_CNT_OFFCPU_SHORT_NS = 2, /* their summed duration */
	KP_CNT_SYSCALL_SHORT = 3,   /* syscalls below the threshold */
	KP_CNT_FAULTS = 4,          /* every user page fault of a watched task */
	KP_CNT_SOCK_IO_UNWATCHED = 5,
	KP_CNT_SYSCALL_SHORT_NS = 6, /* summed duration of syscalls below the threshold */
	KP_CNT_SOCK_IO_FOLDED = 7,  /* socket sends/recvs folded into a per-socket sock_io total */
	KP_CNT_BLOCK_SLOT_REUSED = 8, /* block requests whose submitter was overwritten in blockio's table */
	KP_CNT_WAKE_UNSEEN = 9,     /* blocked intervals whose wake-up the waking program did not see */
	KP_CNT_BLOCK_AGGREGATED = 10, /* block requests below the threshold, summed per submitter instead of a row each */
	KP_CNT_MAX = 11,
};

/* Off-CPU reasons. */
enum kp_offcpu_reason {
	KP_OFF_PREEMPTED = 1, /* left the CPU while runnable */
	KP_OFF_SLEEP = 2,     /* TASK_INTERRUPTIBLE */
	KP_OFF_UNINTERRUPTIBLE = 3, /* TASK_UNINTERRUPTIBLE: disk, page lock, ... */
	KP_OFF_OTHER = 4,
	KP_OFF_NEW = 5,       /* new task waiting for its first run */
};

/* Load-time settings: read-only data of every probe object (kp_settings, common.bpf.h), filled in
 * by the agent before load, so a program reads them with plain loads (no map lookup, no NULL
 * check) and the verifier prunes what they switch off. */
struct kp_config {
	__u64 min_offcpu_ns;
	__u64 min_syscall_ns;
	__u32 filter_on;         /* 1: only watched tgids for high-volume streams */
	__u32 self_tgid;         /* the agent itself, never traced */
	__u32 fault_sample_every;
	__u32 fault_flush_ms;
	/* 0: one sock_io record per send/recv; N: per socket and direction, at most one
	 * record per N ms carrying the bytes since the previous one (totals stay exact). */
	__u32 sock_flush_ms;
	/* the same interval in jiffies, so the probes need no clock read to fold (0: unknown, use the clock) */
	__u32 sock_flush_jiffies;
	/* fault_flush_ms in jiffies, likewise (0: unknown, use the clock) */
	__u32 fault_flush_jiffies;
	/* block requests faster than this (issue -> completion) are summed per submitter, device and
	 * operation instead of a row each (0: every request is a row) */
	__u32 min_block_us;
	/* one agent per node (kprobe record --netns/--cgroup): a process exec'd inside this network
	 * namespace (its inode; 0: any) and cgroup v2 (id at ancestor level node_cgroup_level; 0: any)
	 * joins the watch list; the agent adds the ones already there from /proc */
	__u32 node_netns_ino;
	__u32 node_cgroup_level;
	__u64 node_cgroup_id;
};

/* What the agent changes while the probes run (a one-entry array map, kp_runtime). */
#define KP_BLOCK_EPOCHS 2  /* generations of the block request sums (a power of two) */

struct kp_runtime {
	/* which generation of the block request sums the probes add to; the agent flips it and
	 * reads the retired generation once no program is still adding to it (block_writers) */
	__u32 block_epoch;
	__u32 pad;
};

struct kp_offcpu {
	__u64 off_ns;
	__u64 wake_ns;  /* 0 when it never slept (preempted) */
	__u64 on_ns;
	__u32 tgid;
	__u32 tid;
	__u32 cpu_off;
	__u32 cpu_on;
	__u32 prev_state;
	__u32 reason;
	__u32 preemptor_tgid;
	__u32 preemptor_tid;
	__u32 waker_tgid;
	__u32 waker_tid;
	/* the task this one replaced on cpu_on: who held the CPU at the end of a run-queue wait
	 * (switches between unwatched tasks are not seen, so the one switched in at cpu_off may be long gone) */
	__u32 displaced_tgid;
	__u32 displaced_tid;
	/* since when the displaced task had held cpu_on without a break (0: unknown); a wait is its
	 * fault only from then on, before that someone else held the CPU */
	__u64 displaced_since_ns;
	char comm[KP_COMM_LEN];
	char preemptor_comm[KP_COMM_LEN];
	char waker_comm[KP_COMM_LEN];
	char displaced_comm[KP_COMM_LEN];
	/* the process names (main thread's comm) of those three: threads rename themselves
	 * (risk-w2, a JVM's C2 CompilerThre), and an unwatched culprit has no rows of its own */
	char preemptor_process[KP_COMM_LEN];
	char waker_process[KP_COMM_LEN];
	char displaced_process[KP_COMM_LEN];
	/* The syscall it blocked in, read from its saved registers at switch-out (no hook on every
	 * syscall): -1 when it was not in one (preempted, a page fault, a kernel thread). */
	__s32 sys_nr;
	/* intervals of this thread below the threshold since its previous row (aggregated, not lost) */
	__u32 short_n;
	__u64 sys_arg0;   /* the call's first argument: the fd for read/write/send/recv/fsync/... */
	__u64 short_ns;
	/* when sys_arg0 was a socket fd: that socket (resolved at switch-in from the fd table) */
	__u64 skaddr;
	__u16 sport;
	__u16 dport;
	__u16 family;
	__u16 sock_pad;
	__u8 saddr[16];
	__u8 daddr[16];
	/* when sys_arg0 was a regular file's fd: its device (kernel encoding, major << 20 | minor),
	 * inode and path (from the dentries up to the root, across mounts; the last KP_PATH_LEN - 1
	 * bytes of a longer one), so the file is named and a sync matched with its disk's requests
	 * with no hook on open or close */
	__u32 file_dev;
	__u32 file_pad;
	__u64 file_ino;
	char file_path[KP_PATH_LEN];
};

enum kp_proc_kind { KP_PROC_FORK = 1, KP_PROC_EXEC = 2, KP_PROC_EXIT = 3 };

struct kp_proc {
	__u64 ts_ns;
	__u64 start_ns;   /* task start time: tells recycled pids apart */
	__u32 tgid;
	__u32 tid;
	__u32 ppid;
	__u32 kind;
	__u32 child_tgid;
	__s32 exit_code;
	char comm[KP_COMM_LEN];
	char filename[KP_PATH_LEN];
};

struct kp_fault {
	__u64 ts_ns;
	__u64 addr;
	__u64 ip;
	__u32 tgid;
	__u32 tid;
	__u32 error_code;
	__u32 count;      /* faults this sample stands for (since the previous one) */
	__u32 cpu;
	__u32 flushed;    /* 1: emitted at exit/timeout to flush the count, addr of last fault */
};

enum kp_reclaim_kind { KP_RECLAIM_DIRECT = 1, KP_RECLAIM_MEMCG = 2 };

struct kp_reclaim {
	__u64 start_ns;
	__u64 end_ns;
	__u64 nr_reclaimed;
	__u64 cgroup_id;  /* the task's memory cgroup (v1 or v2): memcg reclaim competes within it */
	__u32 tgid;
	__u32 tid;
	__u32 kind;
	__u32 cpu;
	char comm[KP_COMM_LEN];
};

/* A reclaim stall still in progress, per thread (memory.bpf.c's reclaim_state
 * map). The agent reads the map while stalls last: a memcg that is full right
 * now is inspected while whoever filled it is still inside it. */
struct kp_reclaim_inflight {
	__u64 start_ns;
	__u64 cgroup_id;  /* memcg stalls: the task's memory cgroup, as in kp_reclaim */
	__u32 kind;
	__u32 pad;
};

struct kp_oom {
	__u64 ts_ns;
	__u64 total_vm_kb;
	__u64 anon_rss_kb;
	__u32 victim_pid;
	__u32 killer_tgid;
	char killer_comm[KP_COMM_LEN];
};

struct kp_tcp_state {
	__u64 ts_ns;
	__u64 skaddr;
	__u32 tgid;
	__u32 tid;
	__u16 sport;
	__u16 dport;
	__u16 family;
	__u8 oldstate;
	__u8 newstate;
	__u8 saddr[16];
	__u8 daddr[16];
	char comm[KP_COMM_LEN];
	/* the connection's byte totals when it changed state (tcp_sock counters): exact per-socket
	 * totals at close without a program on every send and recv */
	__u64 bytes_sent;
	__u64 bytes_received;
};

struct kp_sock_io {
	__u64 ts_ns;
	__u64 skaddr;
	__u32 tgid;
	__u32 tid;
	__s32 bytes;
	__u32 srtt_us;
	__u16 sport;
	__u16 dport;
	__u16 family;
	__u8 dir;        /* 0 send, 1 recv */
	__u8 protocol;
	__u8 saddr[16];
	__u8 daddr[16];
};

struct kp_tcp_retrans {
	__u64 ts_ns;
	__u64 skaddr;
	__u16 sport;
	__u16 dport;
	__u16 family;
	__u16 state;
	__u32 srtt_us;
	__u32 pad;
	__u8 saddr[16];
	__u8 daddr[16];
};

/* kp_syscall_filter values (syscall nr -> policy; 0: not traced), filled by the agent from the
 * capture policy of schemas/syscall_table.py (its Capture enum has these values). */
enum kp_sys_filter {
	KP_SYS_THRESHOLD = 1, /* a row when at least min_syscall_ns long, else counted with its time */
	KP_SYS_ALWAYS = 2,    /* a row whatever its duration (rare calls that each matter) */
};

struct kp_syscall {
	__u64 enter_ns;
	__u64 exit_ns;
	__s64 ret;
	__u64 arg0;
	__u64 arg1;
	__u64 arg2;
	__u32 tgid;
	__u32 tid;
	__u32 nr;
	__u32 cpu;
	/* the fsync family: the device of the file synced (kernel dev_t, as in block_io.dev), so a
	 * disk wait is matched to that disk's requests and not to a busier one; 0 otherwise */
	__u32 dev;
	__u32 dev_pad;
};

struct kp_fd_open {
	__u64 ts_ns;
	__u32 tgid;
	__u32 tid;
	__s32 fd;
	__s32 flags;
	char path[KP_PATH_LEN];
};

/* One block request, or (requests > 1) the sum of a submitter's fast requests to one device
 * with one operation over about a second: issue_ns is then the earliest issue, done_ns the
 * latest completion, sector the first request's. */
struct kp_block_io {
	__u64 issue_ns;
	__u64 done_ns;
	__u64 sector;
	__u64 bytes;
	__u64 busy_ns;    /* summed issue -> completion time of its requests */
	__u64 max_ns;     /* the longest of them */
	__u32 dev;
	__u32 requests;
	__u32 tgid;       /* the submitter (inserted the request), else the task current at issue */
	__u32 tid;
	__s32 error;
	__u32 pad;
	char rwbs[8];
	char comm[KP_COMM_LEN];
};

/* Key of the per-CPU sums of fast block requests (blockio.bpf.c's block_agg). */
struct kp_block_key {
	__u32 tgid;
	__u32 dev;
	__u32 op;         /* the rwbs letter */
	__u32 epoch;      /* kp_config.block_epoch when added */
};

/* ---- Replayable recording (probes/replay.bpf.c, replay/) ----------------------------------------
 * Every syscall of a watched process with all six arguments, its return value and a per-thread
 * sequence number (a gap means a lost record: the thread is not replayable past it), plus the bytes
 * the kernel wrote into the process (read buffers, peer addresses, getrandom, stat buffers, ...)
 * in fixed-size chunks. Time read through libc (clock_gettime/gettimeofday/time, normally served
 * by the vDSO without any syscall) is captured by uprobes and flagged KP_RSYS_VDSO. */
#define KP_RDATA_LEN 2048

/* Not a syscall: a kp_rsys with this nr says a thread resumed after a sibling ran while it was
 * outside an ordered syscall (enter_ns: switched out, exit_ns: back on a CPU, args[0]: 1 if no
 * user code had run since its last ordered syscall, args[1]: its user ip when switched out,
 * args[2]: sibling switch-ins meanwhile, args[3]: the syscall it was in then, or < 0: in user
 * mode). Above every syscall number (schemas/syscalls.h). */
#define KP_NR_RESUME 65536

enum kp_rsys_flag {
	KP_RSYS_TRUNCATED = 1,  /* data over the per-syscall cap: not replayable from here on */
	KP_RSYS_VDSO = 2,       /* a libc time call (uprobe), not a syscall */
	KP_RSYS_DATA_LOST = 4,  /* a data chunk found the ring full */
	KP_RSYS_NO_ENTER = 8,   /* exit seen without its enter (watch began mid-call, e.g. at exec) */
};

enum kp_rcounter {
	KP_RCNT_SYS_DROPS = 0,   /* kp_rsys records lost (ring full) */
	KP_RCNT_DATA_DROPS = 1,  /* kp_rdata chunks lost */
	KP_RCNT_TRUNCATED = 2,   /* syscalls whose data hit the cap */
	KP_RCNT_TRUNC_BYTES = 3, /* bytes not captured because of the cap */
	KP_RCNT_UPROBE_OTHER = 4, /* time-uprobe hits in processes not recorded (0 when attached per process) */
	KP_RCNT_MAX = 8,
};

struct kp_rconfig {
	__u64 max_bytes;  /* data cap per syscall */
	__u64 pad;
};

struct kp_rsys {
	__u64 enter_ns;
	__u64 exit_ns;
	__s64 ret;
	__u64 args[6];
	__u64 seq;       /* per thread, from 1; shared by syscalls and uprobe time reads */
	__u32 tgid;
	__u32 tid;
	__u32 nr;
	__u32 flags;
	__u32 data_len;  /* bytes captured in kp_rdata chunks */
	__u32 nchunks;
};

struct kp_rdata {
	__u64 seq;       /* with tid: the kp_rsys this chunk belongs to */
	__u32 tgid;
	__u32 tid;
	__u32 region;    /* 0 main buffer, 1 address, 2 auxiliary (lengths, msghdr), 3 control */
	__u32 offset;    /* of this chunk within its region */
	__u32 len;
	__u32 pad;
	__u8 data[KP_RDATA_LEN];
};


/* ---- Payload capture (probes/payload.bpf.c, protocols/) -------------------------------------------
 * A bounded prefix of each socket read/write of a watched process, with the socket's identity and
 * 4-tuple, for the protocol decoders. Nothing is stored as is: the agent masks card data, decodes,
 * and keeps only the decoded spans. */
#define KP_PAYLOAD_LEN 4096  /* most bytes one record carries; a record is only as long as its header + len */
#define KP_PAYLOAD_F_TLS 1  /* plaintext of a TLS connection, from the OpenSSL uprobes */

enum kp_pcounter {
	KP_PCNT_DROPS = 0,       /* records lost (ring full) */
	KP_PCNT_TRUNCATED = 1,   /* calls that moved more bytes than a record holds */
	KP_PCNT_TRUNC_BYTES = 2, /* bytes not captured because of that */
	KP_PCNT_NOT_TCP = 3,     /* reads/writes of watched processes on something else than a TCP socket */
	KP_PCNT_TLS_NO_SOCK = 4, /* SSL_read/SSL_write whose socket was never seen (not TCP, or BIO pairs) */
	KP_PCNT_DROPS_NOT_FULL = 5, /* of the drops, those with room left in the ring (reservation refused) */
	KP_PCNT_MAX = 6,
};

struct kp_payload {
	__u64 ts_ns;     /* bpf_ktime at the call's return */
	__u64 skaddr;    /* the struct sock: the connection's identity while it lives */
	__u32 tgid;
	__u32 tid;
	__s32 fd;
	__u32 len;       /* bytes in data */
	__u32 total;     /* bytes the call moved (> len: truncated) */
	__u8 dir;        /* 0 written/sent by this process, 1 read/received */
	__u8 flags;      /* KP_PAYLOAD_F_* */
	__u16 family;
	__u16 sport;     /* local port */
	__u16 dport;     /* remote port */
	__u32 pad2;
	__u8 saddr[16];  /* local address */
	__u8 daddr[16];  /* remote address */
	__u8 data[KP_PAYLOAD_LEN];  /* in the ring: len bytes (the record ends there), not a fixed slot */
};

/* Value of the kp_payload_lost map (key: the struct sock address): records of one socket the ring
 * had no room for, and the bpf_ktime of the first and the last, which place the hole among the
 * socket's records. */
struct kp_payload_lost {
	__u64 count;
	__u64 first_ts;
	__u64 last_ts;
};

#endif
