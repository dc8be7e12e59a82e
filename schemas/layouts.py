"""Record layouts generated from schemas/records.h by kprobe.schemas.gen_layouts: do not edit."""

import numpy as np

KP_COMM_LEN = 16
KP_PATH_LEN = 128
KP_BLOCK_EPOCHS = 2
KP_RDATA_LEN = 2048
KP_NR_RESUME = 65536
KP_PAYLOAD_LEN = 4096
KP_PAYLOAD_F_TLS = 1
KP_EV_OFFCPU = 0
KP_EV_PROC = 1
KP_EV_FAULT = 2
KP_EV_RECLAIM = 3
KP_EV_OOM = 4
KP_EV_TCP_STATE = 5
KP_EV_SOCK_IO = 6
KP_EV_TCP_RETRANS = 7
KP_EV_SYSCALL = 8
KP_EV_FD_OPEN = 9
KP_EV_BLOCK_IO = 10
KP_EV_MAX = 11
KP_CNT_SWITCHES = 0
KP_CNT_OFFCPU_SHORT = 1
KP_CNT_OFFCPU_SHORT_NS = 2
KP_CNT_SYSCALL_SHORT = 3
KP_CNT_FAULTS = 4
KP_CNT_SOCK_IO_UNWATCHED = 5
KP_CNT_SYSCALL_SHORT_NS = 6
KP_CNT_SOCK_IO_FOLDED = 7
KP_CNT_BLOCK_SLOT_REUSED = 8
KP_CNT_WAKE_UNSEEN = 9
KP_CNT_BLOCK_AGGREGATED = 10
KP_CNT_MAX = 11
KP_OFF_PREEMPTED = 1
KP_OFF_SLEEP = 2
KP_OFF_UNINTERRUPTIBLE = 3
KP_OFF_OTHER = 4
KP_OFF_NEW = 5
KP_PROC_FORK = 1
KP_PROC_EXEC = 2
KP_PROC_EXIT = 3
KP_RECLAIM_DIRECT = 1
KP_RECLAIM_MEMCG = 2
KP_SYS_THRESHOLD = 1
KP_SYS_ALWAYS = 2
KP_RSYS_TRUNCATED = 1
KP_RSYS_VDSO = 2
KP_RSYS_DATA_LOST = 4
KP_RSYS_NO_ENTER = 8
KP_RCNT_SYS_DROPS = 0
KP_RCNT_DATA_DROPS = 1
KP_RCNT_TRUNCATED = 2
KP_RCNT_TRUNC_BYTES = 3
KP_RCNT_UPROBE_OTHER = 4
KP_RCNT_MAX = 8
KP_PCNT_DROPS = 0
KP_PCNT_TRUNCATED = 1
KP_PCNT_TRUNC_BYTES = 2
KP_PCNT_NOT_TCP = 3
KP_PCNT_TLS_NO_SOCK = 4
KP_PCNT_DROPS_NOT_FULL = 5
KP_PCNT_MAX = 6


KP_CONFIG = np.dtype(
    {
        "names": ["min_offcpu_ns", "min_syscall_ns", "filter_on", "self_tgid", "fault_sample_every", "fault_flush_ms", "sock_flush_ms", "sock_flush_jiffies", "fault_flush_jiffies", "min_block_us", "node_netns_ino", "node_cgroup_level", "node_cgroup_id"],
        "formats": ["<u8", "<u8", "<u4", "<u4", "<u4", "<u4", "<u4", "<u4", "<u4", "<u4", "<u4", "<u4", "<u8"],
        "offsets": [0, 8, 16, 20, 24, 28, 32, 36, 40, 44, 48, 52, 56],
        "itemsize": 64,
    }
)

KP_RUNTIME = np.dtype(
    {
        "names": ["block_epoch", "pad"],
        "formats": ["<u4", "<u4"],
        "offsets": [0, 4],
        "itemsize": 8,
    }
)

KP_OFFCPU = np.dtype(
    {
        "names": ["off_ns", "wake_ns", "on_ns", "tgid", "tid", "cpu_off", "cpu_on", "prev_state", "reason", "preemptor_tgid", "preemptor_tid", "waker_tgid", "waker_tid", "displaced_tgid", "displaced_tid", "displaced_since_ns", "comm", "preemptor_comm", "waker_comm", "displaced_comm", "preemptor_process", "waker_process", "displaced_process", "sys_nr", "short_n", "sys_arg0", "short_ns", "skaddr", "sport", "dport", "family", "sock_pad", "saddr", "daddr", "file_dev", "file_pad", "file_ino", "file_path"],
        "formats": ["<u8", "<u8", "<u8", "<u4", "<u4", "<u4", "<u4", "<u4", "<u4", "<u4", "<u4", "<u4", "<u4", "<u4", "<u4", "<u8", "S16", "S16", "S16", "S16", "S16", "S16", "S16", "<i4", "<u4", "<u8", "<u8", "<u8", "<u2", "<u2", "<u2", "<u2", "(16,)u1", "(16,)u1", "<u4", "<u4", "<u8", "S128"],
        "offsets": [0, 8, 16, 24, 28, 32, 36, 40, 44, 48, 52, 56, 60, 64, 68, 72, 80, 96, 112, 128, 144, 160, 176, 192, 196, 200, 208, 216, 224, 226, 228, 230, 232, 248, 264, 268, 272, 280],
        "itemsize": 408,
    }
)

KP_PROC = np.dtype(
    {
        "names": ["ts_ns", "start_ns", "tgid", "tid", "ppid", "kind", "child_tgid", "exit_code", "comm", "filename"],
        "formats": ["<u8", "<u8", "<u4", "<u4", "<u4", "<u4", "<u4", "<i4", "S16", "S128"],
        "offsets": [0, 8, 16, 20, 24, 28, 32, 36, 40, 56],
        "itemsize": 184,
    }
)

KP_FAULT = np.dtype(
    {
        "names": ["ts_ns", "addr", "ip", "tgid", "tid", "error_code", "count", "cpu", "flushed"],
        "formats": ["<u8", "<u8", "<u8", "<u4", "<u4", "<u4", "<u4", "<u4", "<u4"],
        "offsets": [0, 8, 16, 24, 28, 32, 36, 40, 44],
        "itemsize": 48,
    }
)

KP_RECLAIM = np.dtype(
    {
        "names": ["start_ns", "end_ns", "nr_reclaimed", "cgroup_id", "tgid", "tid", "kind", "cpu", "comm"],
        "formats": ["<u8", "<u8", "<u8", "<u8", "<u4", "<u4", "<u4", "<u4", "S16"],
        "offsets": [0, 8, 16, 24, 32, 36, 40, 44, 48],
        "itemsize": 64,
    }
)

KP_RECLAIM_INFLIGHT = np.dtype(
    {
        "names": ["start_ns", "cgroup_id", "kind", "pad"],
        "formats": ["<u8", "<u8", "<u4", "<u4"],
        "offsets": [0, 8, 16, 20],
        "itemsize": 24,
    }
)

KP_OOM = np.dtype(
    {
        "names": ["ts_ns", "total_vm_kb", "anon_rss_kb", "victim_pid", "killer_tgid", "killer_comm"],
        "formats": ["<u8", "<u8", "<u8", "<u4", "<u4", "S16"],
        "offsets": [0, 8, 16, 24, 28, 32],
        "itemsize": 48,
    }
)

KP_TCP_STATE = np.dtype(
    {
        "names": ["ts_ns", "skaddr", "tgid", "tid", "sport", "dport", "family", "oldstate", "newstate", "saddr", "daddr", "comm", "bytes_sent", "bytes_received"],
        "formats": ["<u8", "<u8", "<u4", "<u4", "<u2", "<u2", "<u2", "u1", "u1", "(16,)u1", "(16,)u1", "S16", "<u8", "<u8"],
        "offsets": [0, 8, 16, 20, 24, 26, 28, 30, 31, 32, 48, 64, 80, 88],
        "itemsize": 96,
    }
)

KP_SOCK_IO = np.dtype(
    {
        "names": ["ts_ns", "skaddr", "tgid", "tid", "bytes", "srtt_us", "sport", "dport", "family", "dir", "protocol", "saddr", "daddr"],
        "formats": ["<u8", "<u8", "<u4", "<u4", "<i4", "<u4", "<u2", "<u2", "<u2", "u1", "u1", "(16,)u1", "(16,)u1"],
        "offsets": [0, 8, 16, 20, 24, 28, 32, 34, 36, 38, 39, 40, 56],
        "itemsize": 72,
    }
)

KP_TCP_RETRANS = np.dtype(
    {
        "names": ["ts_ns", "skaddr", "sport", "dport", "family", "state", "srtt_us", "pad", "saddr", "daddr"],
        "formats": ["<u8", "<u8", "<u2", "<u2", "<u2", "<u2", "<u4", "<u4", "(16,)u1", "(16,)u1"],
        "offsets": [0, 8, 16, 18, 20, 22, 24, 28, 32, 48],
        "itemsize": 64,
    }
)

KP_SYSCALL = np.dtype(
    {
        "names": ["enter_ns", "exit_ns", "ret", "arg0", "arg1", "arg2", "tgid", "tid", "nr", "cpu", "dev", "dev_pad"],
        "formats": ["<u8", "<u8", "<i8", "<u8", "<u8", "<u8", "<u4", "<u4", "<u4", "<u4", "<u4", "<u4"],
        "offsets": [0, 8, 16, 24, 32, 40, 48, 52, 56, 60, 64, 68],
        "itemsize": 72,
    }
)

KP_FD_OPEN = np.dtype(
    {
        "names": ["ts_ns", "tgid", "tid", "fd", "flags", "path"],
        "formats": ["<u8", "<u4", "<u4", "<i4", "<i4", "S128"],
        "offsets": [0, 8, 12, 16, 20, 24],
        "itemsize": 152,
    }
)

KP_BLOCK_IO = np.dtype(
    {
        "names": ["issue_ns", "done_ns", "sector", "bytes", "busy_ns", "max_ns", "dev", "requests", "tgid", "tid", "error", "pad", "rwbs", "comm"],
        "formats": ["<u8", "<u8", "<u8", "<u8", "<u8", "<u8", "<u4", "<u4", "<u4", "<u4", "<i4", "<u4", "S8", "S16"],
        "offsets": [0, 8, 16, 24, 32, 40, 48, 52, 56, 60, 64, 68, 72, 80],
        "itemsize": 96,
    }
)

KP_BLOCK_KEY = np.dtype(
    {
        "names": ["tgid", "dev", "op", "epoch"],
        "formats": ["<u4", "<u4", "<u4", "<u4"],
        "offsets": [0, 4, 8, 12],
        "itemsize": 16,
    }
)

KP_RCONFIG = np.dtype(
    {
        "names": ["max_bytes", "pad"],
        "formats": ["<u8", "<u8"],
        "offsets": [0, 8],
        "itemsize": 16,
    }
)

KP_RSYS = np.dtype(
    {
        "names": ["enter_ns", "exit_ns", "ret", "args", "seq", "tgid", "tid", "nr", "flags", "data_len", "nchunks"],
        "formats": ["<u8", "<u8", "<i8", "(6,)<u8", "<u8", "<u4", "<u4", "<u4", "<u4", "<u4", "<u4"],
        "offsets": [0, 8, 16, 24, 72, 80, 84, 88, 92, 96, 100],
        "itemsize": 104,
    }
)

KP_RDATA = np.dtype(
    {
        "names": ["seq", "tgid", "tid", "region", "offset", "len", "pad", "data"],
        "formats": ["<u8", "<u4", "<u4", "<u4", "<u4", "<u4", "<u4", "(2048,)u1"],
        "offsets": [0, 8, 12, 16, 20, 24, 28, 32],
        "itemsize": 2080,
    }
)

KP_PAYLOAD = np.dtype(
    {
        "names": ["ts_ns", "skaddr", "tgid", "tid", "fd", "len", "total", "dir", "flags", "family", "sport", "dport", "pad2", "saddr", "daddr", "data"],
        "formats": ["<u8", "<u8", "<u4", "<u4", "<i4", "<u4", "<u4", "u1", "u1", "<u2", "<u2", "<u2", "<u4", "(16,)u1", "(16,)u1", "(4096,)u1"],
        "offsets": [0, 8, 16, 20, 24, 28, 32, 36, 37, 38, 40, 42, 44, 48, 64, 80],
        "itemsize": 4176,
    }
)

KP_PAYLOAD_LOST = np.dtype(
    {
        "names": ["count", "first_ts", "last_ts"],
        "formats": ["<u8", "<u8", "<u8"],
        "offsets": [0, 8, 16],
        "itemsize": 24,
    }
)


STRUCTS = {
    "kp_config": KP_CONFIG,
    "kp_runtime": KP_RUNTIME,
    "kp_offcpu": KP_OFFCPU,
    "kp_proc": KP_PROC,
    "kp_fault": KP_FAULT,
    "kp_reclaim": KP_RECLAIM,
    "kp_reclaim_inflight": KP_RECLAIM_INFLIGHT,
    "kp_oom": KP_OOM,
    "kp_tcp_state": KP_TCP_STATE,
    "kp_sock_io": KP_SOCK_IO,
    "kp_tcp_retrans": KP_TCP_RETRANS,
    "kp_syscall": KP_SYSCALL,
    "kp_fd_open": KP_FD_OPEN,
    "kp_block_io": KP_BLOCK_IO,
    "kp_block_key": KP_BLOCK_KEY,
    "kp_rconfig": KP_RCONFIG,
    "kp_rsys": KP_RSYS,
    "kp_rdata": KP_RDATA,
    "kp_payload": KP_PAYLOAD,
    "kp_payload_lost": KP_PAYLOAD_LOST,
}
