/* Replay's hot path in C: answer a run of recorded syscalls of one thread without returning to
 * Python (loaded with ctypes by replay/fastpath.py, built by `make -C replay`).
 *
 * Why: a ptrace stop is expensive even in C with tracer and tracee on one CPU, and the Python
 * engine spent several times that per stop on top (python-ptrace objects, dicts, bookkeeping).
 * Python prepares a plan (struct kp_op per expected event: what to do, which bytes, where) only
 * for events whose handling is fully decided by the log and the fd state at plan time; this loop
 * executes it stop by stop and returns at the first stop that does not fit (another thread, a
 * signal, an exit, a different syscall, different output bytes, the end of the plan). That stop
 * is handed back untouched, so the Python engine handles it exactly as it always did.
 *
 * Virtual time follows ReplayEngine._consume (without injections: the fast path is only used
 * when there are none) and is kept in the context; the per-fd tables are shared with Python.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/ptrace.h>
#include <sys/signalfd.h>
#include <sys/uio.h>
#include <sys/types.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../schemas/syscalls.h" /* KP_NR_*: generated from schemas/syscall_table.py */

#define KP_STR(x) #x
#define KP_XSTR(x) KP_STR(x) /* a syscall number inside the stubs' assembly text */

enum { K_SLOW = 0, K_PASS = 1, K_SKIP = 2, K_WRITE = 3, K_CLOCK = 4 };
enum {
	F_FDCHECK = 1,     /* the syscall's fd must equal the recorded one */
	F_WRITE = 2,       /* an output: moves out_shift of its fd */
	F_EXT_WAIT = 4,    /* waited for the peer: completes at the peer's (shifted) send time */
	F_MARK_INPUT = 8,  /* an input on an emulated fd: remember its arrival for request latency */
	F_SOCKET = 16,     /* the fd is a socket: a write after an input is a request's reply */
};
#define EVENT_SECCOMP 7
#define KP_FDMAX 4096 /* FDMAX in fastpath.py */

struct kp_op { /* 18 x int64, built by replay/fastpath.py (numpy, same order) */
	int64_t ret, enter_ns, exit_ns, pred_exit, arg0;
	int64_t roff[3], rlen[3], rarg[3];
	int64_t nr, fd, kind, flags;
};

/* One thing that happened in the tracee: a ptrace stop (waitpid) or a seccomp notification. */
struct kp_ev {
	int64_t kind;          /* EV_PTRACE or EV_NOTIF */
	int64_t tid, status;   /* waitpid's pid and status; for a notification the thread and 0 */
	uint64_t id;           /* notification id (for kp_respond) */
	int64_t nr, args[6];   /* notification: the syscall */
};
enum { EV_NONE = 0, EV_PTRACE = 1, EV_NOTIF = 2 };

struct kp_ctx {
	int64_t tid, memfd;
	int64_t notif_fd;                /* seccomp listener (-1: every trapped syscall is a ptrace stop) */
	int64_t sigfd;                   /* signalfd for SIGCHLD, made on first use */
	int64_t pid;                     /* the tracee's tgid (process_vm_readv/writev) */
	int64_t check;                   /* a ptrace stop may be waiting: waitpid before polling */
	struct kp_ev ev;                 /* out: the event not handled here */
	int64_t vt, prev_exit, arrival;  /* the thread's virtual-time state (in and out) */
	int64_t deadline_ns;             /* CLOCK_MONOTONIC: return to Python after it */
	int64_t has_stop;                /* out: ev holds an event Python must handle */
	int64_t err;                     /* out: errno of a failed ptrace/memory call */
	int64_t nreq, req_cap;
	int64_t *req;                    /* out: (fd, recorded ns, replay ns) per request */
	int64_t *out_shift;              /* [KP_FDMAX] virtual minus recorded time of the last output */
	int64_t *li_has, *li_vt, *li_rec;/* [KP_FDMAX] the running thread's last input per fd: (replay,
					  * recorded) arrival; its request until it answers it */
	const uint8_t *blob;             /* all recorded regions, addressed by kp_op.roff */
	uint8_t *scratch;                /* for reading the tracee's output */
	int64_t scratch_len;
	int64_t *vtab;                   /* the answer table shared with the tracee (NULL: none), below */
	int64_t vtid;                    /* the one thread allowed to read it */
	int64_t vdone;                   /* out: events answered in the tracee during this run */
	const struct kp_op *nx_ops;      /* the plan and the position after the stop being answered: */
	int64_t nx_pos, nx_end;          /* the events there may be answered in the tracee (open_gap) */
	int64_t steps;                   /* events waited for so far: the watchdog's sign of progress */
	int64_t *pending;                /* [KP_FDMAX] threads holding an unanswered input on the fd */
	int64_t preset;                  /* in: ev already holds the first stop to handle (a released thread's) */
	/* kp_run_threads: every thread the loop may run, and the recorded order between them */
	struct kp_thr *thr;              /* [nthr] */
	int64_t nthr, cur;               /* in: the running thread's slot; out: the slot that ran last */
	const int64_t *next_other;       /* [events + 1]: next ordered event of another thread after index i - 1 */
	const int64_t *owner;            /* [events]: slot of the thread an event belongs to (-1: none) */
	int64_t *seg;                    /* out: (slot, events answered, of which in the tracee) per run of a thread */
	int64_t nseg, seg_cap;
	int64_t seen;                    /* out: stops and notifications taken here (answered or parked) */
	int64_t parked_now;              /* out of run(): the thread stopped at an event that is not its turn */
};

/* One replayed thread as kp_run_threads sees it (fastpath.py: _Thr, same order). */
struct kp_thr {
	int64_t tid;
	const struct kp_op *ops;
	const int64_t *idx;              /* event index of each op */
	int64_t pos, end;                /* next op; end of its decided range */
	int64_t vt, prev_exit, arrival;
	int64_t *li_has, *li_vt, *li_rec;
	int64_t fs_base;
	int64_t last_ordered;            /* index of its last answered ordered (non-clock) event, -1: none */
	int64_t parked;                  /* in/out: ev is the stop it waits at (its event not its turn yet) */
	int64_t parks;                   /* out: times the loop parked it (each time at a new stop) */
	struct kp_ev ev;
};

static int64_t floordiv(int64_t a, int64_t b)
{
	int64_t q = a / b;
	return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

static int is_clock(uint64_t nr)
{
	return nr == KP_NR_CLOCK_GETTIME || nr == KP_NR_GETTIMEOFDAY || nr == KP_NR_TIME;
}

static int matches(const struct kp_op *op, int64_t nr, const int64_t *a)
{
	if (nr != op->nr)
		return 0;
	if (op->kind == K_CLOCK)
		return op->nr != KP_NR_CLOCK_GETTIME || a[0] == op->arg0;
	if (is_clock((uint64_t)nr))
		return 0;
	return !(op->flags & F_FDCHECK) || (int64_t)((uint64_t)a[0] & 0xFFFFFFFFu) == op->fd;
}

/* ReplayEngine._consume without injections. */
static void consume(struct kp_ctx *c, const struct kp_op *op)
{
	int64_t pred = op->pred_exit == INT64_MIN ? c->prev_exit : op->pred_exit;
	int64_t think = op->enter_ns - pred > 0 ? op->enter_ns - pred : 0;
	int64_t dur = op->exit_ns - op->enter_ns > 0 ? op->exit_ns - op->enter_ns : 0;
	int64_t shift = op->fd < KP_FDMAX ? c->out_shift[op->fd] : 0;
	if (op->flags & F_EXT_WAIT) {
		c->arrival = op->exit_ns + shift;
		c->vt = c->vt + think > c->arrival ? c->vt + think : c->arrival;
	} else {
		c->arrival = op->exit_ns + (c->vt - c->prev_exit);
		c->vt = c->vt + think + dur;
	}
	if (op->flags & F_WRITE)
		c->out_shift[op->fd] = c->vt - op->exit_ns;
	c->prev_exit = op->exit_ns;
}

/* Like Memory.write in tracee.py: a short write (buffer runs into an unmapped page) is accepted,
 * a write that fails outright is an error. */
static int put(struct kp_ctx *c, uint64_t addr, const void *data, int64_t n)
{
	if (!addr || n <= 0)
		return 0;
	struct iovec l = {(void *)data, (size_t)n}, r = {(void *)addr, (size_t)n};
	if (process_vm_writev((pid_t)c->pid, &l, 1, &r, 1, 0) == n)
		return 0;
	/* read-only page or a partial range: /proc/<pid>/mem, as Memory.write does */
	return pwrite(c->memfd, data, n, (off_t)addr) < 0 ? -1 : 0;
}

static int get(struct kp_ctx *c, uint64_t addr, void *data, int64_t n)
{
	struct iovec l = {data, (size_t)n}, r = {(void *)addr, (size_t)n};
	if (process_vm_readv((pid_t)c->pid, &l, 1, &r, 1, 0) == n)
		return 0;
	return pread(c->memfd, data, n, (off_t)addr) == n ? 0 : -1;
}

/* --- syscalls and clock reads answered inside the tracee -----------------------------------------
 *
 * The tracer maps shared pages into the tracee (replay/intracee.py): code at +0 (the stubs below,
 * copied from this library), the table at +0x1000, also mapped into the tracer. The vDSO's
 * clock_gettime/gettimeofday/time entries jump to the clock stubs; the single-threaded fast path of
 * libc's read/write/fsync/fdatasync/getrandom/pread64/pwrite64 wrappers (`mov eax, NR; syscall;
 * cmp rax, -4096`) calls the syscall stub instead. When the hot path answers a stop of the owner
 * thread, it writes the plan's next events into the table ("opening a gap") as long as each is one
 * a stub can answer exactly as handle() would: a clock read (its value computed with the same
 * virtual-time arithmetic, from the state the events before it leave), a recorded input copied to
 * the caller's buffer (read, getrandom), a return value only (fsync), an output whose bytes must
 * equal the recorded ones (write). A stub answers the next entry only if it is the caller's syscall
 * (same fd, same clock id; for an output, the same length and bytes), from the owner thread (fs
 * base), while entries remain; otherwise it makes the real syscall, which traps as before. So the
 * order of the tracee's calls is checked exactly as when each trapped: anything unexpected stops
 * the tracee and is handled (reported) as without the table. At the thread's next stop the tracer
 * counts what was taken (k of m), does the bookkeeping of those k events in order (account(): the
 * same as handle() does for a trapped one) and cancels the rest, so the engine then sees precisely
 * the state it would have after k trapped events. The tracee is stopped whenever the tracer reads
 * or writes the table, so only a stub's own reservation needs to be atomic (against a signal
 * handler of the same thread entering a stub in the middle of another). */
enum {
	VT_OWNER, VT_REMAINING, VT_END, VT_GAP_POS, VT_GAP_N, VT_ANSWERED, VT_CAP, VT_NRMASK, VT_DATA, VT_DATACAP,
	VT_HDR = 16, VT_ENT = 8,
};
enum { VE_CHECK_FD = 1, VE_COPY = 2, VE_COMPARE = 4 };

/* The answer to a clock read right after consume(c, op): the two words written to the caller's
 * buffer (for time(): one) and the return value. */
static void clock_value(const struct kp_ctx *c, const struct kp_op *op, int64_t out[3])
{
	int64_t shift = c->vt - op->exit_ns;
	if (op->nr == KP_NR_TIME) {
		out[0] = out[2] = op->ret + floordiv(shift, 1000000000);
		out[1] = 0;
		return;
	}
	int64_t rec[2] = {0, 0};
	if (op->rlen[0] >= 16)
		memcpy(rec, c->blob + op->roff[0], 16);
	int64_t unit = op->nr == KP_NR_CLOCK_GETTIME ? 1000000000 : 1000000;
	int64_t total = rec[0] * unit + rec[1] + (op->nr == KP_NR_CLOCK_GETTIME ? shift : floordiv(shift, 1000));
	out[0] = floordiv(total, unit);
	out[1] = total - out[0] * unit;
	out[2] = op->ret;
}

/* Everything handle() does for an answered event except touching the tracee: virtual time, the
 * arrival of an input, the latency of a request answered by an output. */
static void account(struct kp_ctx *c, const struct kp_op *op)
{
	consume(c, op);
	if (op->kind == K_SKIP && (op->flags & F_MARK_INPUT) && op->fd < KP_FDMAX) {
		c->pending[op->fd] += !c->li_has[op->fd];
		c->li_has[op->fd] = 1;
		c->li_vt[op->fd] = c->arrival;
		c->li_rec[op->fd] = op->exit_ns;
	} else if (op->kind == K_WRITE && c->li_has[op->fd]) {
		c->li_has[op->fd] = 0;
		c->pending[op->fd]--;
		if (op->flags & F_SOCKET) {
			int64_t *q = c->req + 3 * c->nreq++;
			int64_t dur = op->exit_ns - op->enter_ns > 0 ? op->exit_ns - op->enter_ns : 0;
			q[0] = op->fd;
			q[1] = op->enter_ns - c->li_rec[op->fd];
			q[2] = c->vt - dur - c->li_vt[op->fd];
		}
	}
}

/* A reply on a socket by a thread that read no request there answers another thread's (a reader
 * thread handing requests to workers): Python pairs it with the oldest one. */
static int others_request(const struct kp_ctx *c, const struct kp_op *op)
{
	return (op->flags & F_SOCKET) && !c->li_has[op->fd] && c->pending[op->fd] > 0;
}

/* Can a stub answer this planned event? Returns the bytes it needs in the data area, or -1. */
static int64_t stub_bytes(const struct kp_ctx *c, const struct kp_op *op)
{
	int64_t mask = c->vtab[VT_NRMASK];
	/* the NRMASK bits of intracee.WRAPPERS */
	int bit = op->nr == KP_NR_READ ? 0 : op->nr == KP_NR_WRITE ? 1 : op->nr == KP_NR_PREAD64 ? 2
		: op->nr == KP_NR_PWRITE64 ? 3 : op->nr == KP_NR_FSYNC ? 4 : op->nr == KP_NR_FDATASYNC ? 5
		: op->nr == KP_NR_GETRANDOM ? 6 : op->nr == KP_NR_FUTEX ? 7 : -1; /* 7: intracee.FUTEX_BIT */
	if (op->kind == K_CLOCK)
		return 0;
	if (bit < 0 || !(mask & (1 << bit)))
		return -1;
	if (op->kind == K_WRITE)
		return op->ret >= 0 ? op->ret : -1;
	if (op->kind != K_SKIP || op->rarg[1] >= 0 || op->rarg[0] > 1)
		return -1; /* more than one buffer, or not in rdi/rsi */
	return op->rarg[0] >= 0 ? op->rlen[0] : 0;
}

/* Before resuming the owner thread: the plan's next events the stubs can answer go into the table.
 * Their answers are computed by accounting them in order on the live state, which is then put back
 * (they are accounted for real at the next stop, for as many as the tracee took). */
static void open_gap(struct kp_ctx *c)
{
	int64_t *t = c->vtab;
	if (!t || c->tid != c->vtid || !c->nx_ops || t[VT_GAP_N])
		return;
	int64_t m = 0, cap = t[VT_CAP], doff = t[VT_DATA], dend = t[VT_DATA] + t[VT_DATACAP];
	int64_t vt = c->vt, prev_exit = c->prev_exit, arrival = c->arrival, nreq = c->nreq;
	int64_t undo[64][5], undo_rec[64], nundo = 0; /* fd, out_shift, li_has, li_vt, pending; li_rec */
	while (m < cap && c->nx_pos + m < c->nx_end) {
		const struct kp_op *op = &c->nx_ops[c->nx_pos + m];
		int64_t len = stub_bytes(c, op);
		if (len < 0 || doff + len > dend)
			break;
		if (op->kind == K_WRITE && (op->flags & F_SOCKET) && (c->nreq >= c->req_cap || others_request(c, op)))
			break;
		if (op->kind == K_WRITE || (op->flags & (F_WRITE | F_MARK_INPUT))) { /* touches its fd's tables */
			int seen = 0;
			if (op->fd < 0 || op->fd >= KP_FDMAX)
				break;
			for (int64_t i = 0; i < nundo; i++)
				seen |= undo[i][0] == op->fd;
			if (!seen) {
				if (nundo == 64)
					break;
				undo[nundo][0] = op->fd, undo[nundo][1] = c->out_shift[op->fd];
				undo[nundo][2] = c->li_has[op->fd], undo[nundo][3] = c->li_vt[op->fd];
				undo[nundo][4] = c->pending[op->fd];
				undo_rec[nundo++] = c->li_rec[op->fd];
			}
		}
		int64_t *e = t + VT_HDR + VT_ENT * m, v[3] = {0, 0, op->ret};
		account(c, op);
		e[0] = op->nr;
		e[5] = doff;
		e[6] = op->flags & F_FDCHECK ? VE_CHECK_FD : 0;
		e[7] = len;
		if (op->kind == K_CLOCK) {
			clock_value(c, op, v);
			e[1] = op->arg0;
		} else {
			e[1] = op->fd;
			if (op->kind == K_WRITE) {
				e[6] |= VE_COMPARE;
				memcpy((uint8_t *)t + doff, c->blob + op->roff[0], len);
			} else if (op->rarg[0] >= 0) {
				e[6] |= VE_COPY | (op->rarg[0] << 8);
				memcpy((uint8_t *)t + doff, c->blob + op->roff[0], len);
			}
			doff += (len + 7) & ~7;
		}
		e[2] = v[0], e[3] = v[1], e[4] = v[2];
		m++;
	}
	c->vt = vt, c->prev_exit = prev_exit, c->arrival = arrival, c->nreq = nreq;
	while (nundo--) {
		int64_t fd = undo[nundo][0];
		c->out_shift[fd] = undo[nundo][1], c->li_has[fd] = undo[nundo][2], c->li_vt[fd] = undo[nundo][3];
		c->pending[fd] = undo[nundo][4];
		c->li_rec[fd] = undo_rec[nundo];
	}
	if (!m)
		return;
	t[VT_GAP_POS] = c->nx_pos;
	t[VT_GAP_N] = t[VT_END] = m;
	__atomic_store_n(&t[VT_REMAINING], m, __ATOMIC_RELEASE);
}

/* At a stop of the owner thread (it is not running): account what the tracee took of the open
 * gap, cancel the rest. Returns how many, or -1 when the gap is not where the plan is. */
static int64_t sync_gap(struct kp_ctx *c, const struct kp_op *ops, int64_t at)
{
	int64_t *t = c->vtab;
	int64_t n = t[VT_GAP_N], k = n - __atomic_exchange_n(&t[VT_REMAINING], 0, __ATOMIC_ACQ_REL);
	t[VT_GAP_N] = 0;
	if (t[VT_GAP_POS] != at || k < 0 || k > n)
		return -1;
	for (int64_t i = 0; i < k; i++)
		account(c, &ops[at + i]);
	c->vdone += k;
	return k;
}

/* For Python, at a stop of the owner it handles itself: the same, with the thread's state in c.
 * Returns the number of events taken (accounted from ops[at]), 0 when no gap is open, -1 when the
 * gap is not at ``at``. */
int64_t kp_vsync(struct kp_ctx *c, const struct kp_op *ops, int64_t at)
{
	c->vdone = 0;
	c->nreq = 0;
	if (!c->vtab || !c->vtab[VT_GAP_N])
		return 0;
	return sync_gap(c, ops, at);
}

/* The stubs (x86-64, position independent: the table is 0x1000 after kp_vstub_begin wherever the
 * code is copied). clock_gettime at +0x00, gettimeofday at +0x80, time at +0x100, the syscall stub
 * at +0x180 (entered by `call` from a patched libc wrapper through a `mov eax, NR; jmp` trampoline
 * that intracee.py writes after the code: rax = syscall number, arguments in place, and the wrapper
 * continues with `ja error; ret` after it, so the stub ends with the `cmp rax, -4096` it replaced).
 * Each reserves the next entry with cmpxchg on `remaining` (retrying if a signal handler took one
 * meanwhile), only when the entry is for this call and the caller is the owner thread; anything
 * else makes the real syscall, which traps as before. Before that decision only rax, rcx, r8, r9,
 * r11 are touched (rdi, rsi, rdx, r10 stay the syscall's arguments; the patched wrappers take at
 * most four, and r8/r9 are dead in their fast path). */
__asm__(
	".pushsection .text\n"
	".intel_syntax noprefix\n"
	/* the stubs' common parts: find the next entry (owner thread, this syscall; the owner check
	 * uses fsreg), claim it (clock stubs), or make the real call; numeric labels are local to each
	 * expansion's stub */
	".macro KP_ENTRY fsreg, nr\n"
	"	lea r11, [rip + .Lvbase + 0x1000]\n"
	"	rdfsbase \\fsreg\n"
	"	cmp \\fsreg, [r11]\n"
	"	jne 9f\n"
	"1:	mov rcx, [r11 + 8]\n"
	"	test rcx, rcx\n"
	"	jle 9f\n"
	"	mov r8, [r11 + 16]\n"
	"	sub r8, rcx\n"
	"	shl r8, 6\n"
	"	lea r8, [r11 + r8 + 128]\n"
	"	cmp qword ptr [r8], \\nr\n"
	"	jne 9f\n"
	".endm\n"
	".macro KP_CLOCK_TAKE\n"
	"	mov rax, rcx\n"
	"	lea r10, [rcx - 1]\n"
	"	lock cmpxchg [r11 + 8], r10\n"
	"	jne 1b\n"
	"	lock inc qword ptr [r11 + 40]\n"
	".endm\n"
	".macro KP_REAL_SYSCALL nr\n"
	"9:	mov eax, \\nr\n"
	"	syscall\n"
	"	ret\n"
	".endm\n"
	".balign 4096\n"
	".globl kp_vstub_begin\n"
	"kp_vstub_begin:\n"
	".Lvbase:\n"
	/* clock_gettime(rdi = clock id, rsi = ts) */
	"	KP_ENTRY rax, " KP_XSTR(KP_NR_CLOCK_GETTIME) "\n"
	"	cmp rdi, [r8 + 8]\n"
	"	jne 9f\n"
	"	KP_CLOCK_TAKE\n"
	"	test rsi, rsi\n"
	"	jz 2f\n"
	"	mov rcx, [r8 + 16]\n"
	"	mov [rsi], rcx\n"
	"	mov rcx, [r8 + 24]\n"
	"	mov [rsi + 8], rcx\n"
	"2:	mov rax, [r8 + 32]\n"
	"	ret\n"
	"	KP_REAL_SYSCALL " KP_XSTR(KP_NR_CLOCK_GETTIME) "\n"
	"	.skip 0x80 - (. - .Lvbase), 0xcc\n"
	/* gettimeofday(rdi = tv, rsi = tz) */
	"	KP_ENTRY rax, " KP_XSTR(KP_NR_GETTIMEOFDAY) "\n"
	"	KP_CLOCK_TAKE\n"
	"	test rdi, rdi\n"
	"	jz 2f\n"
	"	mov rcx, [r8 + 16]\n"
	"	mov [rdi], rcx\n"
	"	mov rcx, [r8 + 24]\n"
	"	mov [rdi + 8], rcx\n"
	"2:	mov rax, [r8 + 32]\n"
	"	ret\n"
	"	KP_REAL_SYSCALL " KP_XSTR(KP_NR_GETTIMEOFDAY) "\n"
	"	.skip 0x100 - (. - .Lvbase), 0xcc\n"
	/* time(rdi = t) */
	"	KP_ENTRY rax, " KP_XSTR(KP_NR_TIME) "\n"
	"	KP_CLOCK_TAKE\n"
	"	mov rax, [r8 + 32]\n"
	"	test rdi, rdi\n"
	"	jz 2f\n"
	"	mov [rdi], rax\n"
	"2:	ret\n"
	"	KP_REAL_SYSCALL " KP_XSTR(KP_NR_TIME) "\n"
	"	.skip 0x180 - (. - .Lvbase), 0xcc\n"
	/* a libc wrapper's syscall: rax = nr, rdi, rsi, rdx (, r10) its arguments. r8 and r9 are kept
	 * as a syscall keeps them: the multi-threaded path of glibc's wrappers holds the cancellation
	 * state in r8 across its syscall (rdi and rsi are dead there, rdx is untouched) */
	"	push r8\n"
	"	push r9\n"
	"	KP_ENTRY rcx, rax\n"
	"	mov r9, [r8 + 48]\n"
	"	test r9, 1\n"
	"	jz 2f\n"
	"	cmp edi, dword ptr [r8 + 8]\n"
	"	jne 9f\n"
	"2:	test r9, 4\n"
	"	jz 3f\n"
	"	cmp rdx, [r8 + 32]\n"
	"	jne 9f\n"
	"	push rsi\n"
	"	push rdi\n"
	"	push rcx\n"
	"	mov rcx, rdx\n"
	"	mov rdi, [r8 + 40]\n"
	"	lea rdi, [r11 + rdi]\n"
	"	cmp rcx, rcx\n" /* ZF = 1: a zero-length output compares equal */
	"	repe cmpsb\n"
	"	pop rcx\n"
	"	pop rdi\n"
	"	pop rsi\n"
	"	jne 9f\n"
	"3:	mov r9, rax\n"
	"	mov rax, rcx\n"
	"	dec rcx\n"
	"	lock cmpxchg [r11 + 8], rcx\n"
	"	je 4f\n"
	"	mov rax, r9\n"
	"	jmp 1b\n"
	"4:	lock inc qword ptr [r11 + 40]\n"
	"	mov r9, [r8 + 48]\n"
	"	test r9, 2\n"
	"	jz 5f\n"
	"	shr r9, 8\n"
	"	mov rax, rdi\n"
	"	test r9, r9\n"
	"	cmovnz rax, rsi\n"
	"	test rax, rax\n"
	"	jz 5f\n"
	"	mov rdi, rax\n"
	"	mov rsi, [r8 + 40]\n"
	"	lea rsi, [r11 + rsi]\n"
	"	mov rcx, [r8 + 56]\n"
	"	rep movsb\n"
	"5:	mov rax, [r8 + 32]\n"
	"	pop r9\n"
	"	pop r8\n"
	"	cmp rax, -4096\n"
	"	ret\n"
	"9:	pop r9\n"
	"	pop r8\n"
	"	syscall\n"
	"	cmp rax, -4096\n"
	"	ret\n"
	".globl kp_vstub_end\n"
	"kp_vstub_end:\n"
	".att_syntax prefix\n"
	".popsection\n");

int64_t kp_respond(int64_t fd, uint64_t id, int64_t val, int64_t run_it)
{
	struct seccomp_notif_resp resp = {.id = id, .val = val, .error = 0,
					  .flags = run_it ? SECCOMP_USER_NOTIF_FLAG_CONTINUE : 0};
	if (ioctl((int)fd, SECCOMP_IOCTL_NOTIF_SEND, &resp) == 0)
		return 0;
	return errno == ENOENT ? 0 : -errno; /* ENOENT: the task died meanwhile (killed): nothing to answer */
}

/* Skip the syscall with this return value: at a seccomp ptrace stop orig_rax = -1 and rax = ret,
 * for a notification the answer is the return value. */
static int skip(struct kp_ctx *c, struct user_regs_struct *r, int64_t ret)
{
	open_gap(c);
	if (c->ev.kind == EV_NOTIF)
		return kp_respond(c->notif_fd, c->ev.id, ret, 0) ? -1 : 0;
	r->orig_rax = (uint64_t)-1;
	r->rax = (uint64_t)ret;
	return ptrace(PTRACE_SETREGS, c->tid, 0, r) == 0 ? 0 : -1;
}

/* Let the kernel run the syscall for real. */
static int pass(struct kp_ctx *c)
{
	open_gap(c);
	if (c->ev.kind == EV_NOTIF)
		return kp_respond(c->notif_fd, c->ev.id, 0, 1) ? -1 : 0;
	return 0; /* the ptrace stop is resumed by the caller */
}

/* Returns 1 when handled (stop consumed), 0 when Python must handle it, -1 on error. */
static int handle(struct kp_ctx *c, const struct kp_op *op, struct user_regs_struct *r, const int64_t *a)
{
	switch (op->kind) {
	case K_PASS:
		account(c, op);
		return pass(c) ? -1 : 1;
	case K_SKIP:
		account(c, op);
		for (int i = 0; i < 3; i++)
			if (op->rarg[i] >= 0 && put(c, (uint64_t)a[op->rarg[i]], c->blob + op->roff[i], op->rlen[i]))
				return -1;
		return skip(c, r, op->ret) ? -1 : 1;
	case K_WRITE:
		/* same bytes as recorded (the plan only holds writes the redactor leaves as they are) */
		if (a[2] != op->ret || op->ret > c->scratch_len)
			return 0;
		if (op->ret && get(c, (uint64_t)a[1], c->scratch, op->ret))
			return 0;
		if (memcmp(c->scratch, c->blob + op->roff[0], op->ret) != 0)
			return 0;
		if ((op->flags & F_SOCKET) && c->li_has[op->fd] && c->nreq >= c->req_cap)
			return 0; /* no room to report the request: let Python answer it */
		if (others_request(c, op))
			return 0;
		account(c, op);
		return skip(c, r, op->ret) ? -1 : 1;
	case K_CLOCK: {
		int64_t v[3];
		account(c, op);
		clock_value(c, op, v);
		if (put(c, (uint64_t)(op->nr == KP_NR_CLOCK_GETTIME ? a[1] : a[0]), v, op->nr == KP_NR_TIME ? 8 : 16))
			return -1;
		return skip(c, r, v[2]) ? -1 : 1;
	}
	default:
		return 0;
	}
}

static int64_t now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* Wait for the next ptrace stop or seccomp notification until ``until`` (CLOCK_MONOTONIC ns).
 * With a listener, SIGCHLD must be blocked by the caller: waitpid runs first (c->check), then
 * poll on the listener and on a signalfd for SIGCHLD, so a stop that happens while we poll wakes
 * us; a SIGCHLD taken by another thread of this process only costs the 50 ms poll slice, never a
 * hang. Returns 1 (c->ev filled), 0 on timeout, -errno. */
static int64_t wait_event(struct kp_ctx *c, int64_t until)
{
	for (;;) {
		if (c->notif_fd < 0 || c->check) {
			int status;
			int block = c->notif_fd < 0 && until == INT64_MAX;
			pid_t w = waitpid(-1, &status, __WALL | (block ? 0 : WNOHANG));
			if (w > 0) {
				c->steps++;
				c->ev.kind = EV_PTRACE;
				c->ev.tid = w;
				c->ev.status = status;
				return 1; /* c->check stays set: more stops may be waiting */
			}
			if (w < 0 && errno != EINTR)
				return -errno;
			if (w == 0)
				c->check = 0;
		}
		if (c->notif_fd < 0) {
			if (now_ns() >= until)
				return 0;
			struct timespec ts = {0, 50000};
			nanosleep(&ts, NULL);
			continue;
		}
		int64_t left = until == INT64_MAX ? 50 : (until - now_ns()) / 1000000;
		struct pollfd pf[2] = {{(int)c->notif_fd, POLLIN, 0}, {(int)c->sigfd, POLLIN, 0}};
		int n = poll(pf, 2, (int)(left < 0 ? 0 : left > 50 ? 50 : left));
		if (n < 0 && errno != EINTR)
			return -errno;
		if (n <= 0 || (pf[1].revents & POLLIN)) {
			struct signalfd_siginfo si;
			while (read((int)c->sigfd, &si, sizeof(si)) == sizeof(si))
				;
			c->check = 1; /* a child changed state (or the slice ran out: look anyway) */
		}
		if (n > 0 && (pf[0].revents & POLLIN)) {
			struct seccomp_notif req;
			memset(&req, 0, sizeof(req));
			if (ioctl((int)c->notif_fd, SECCOMP_IOCTL_NOTIF_RECV, &req) == 0) {
				c->steps++;
				c->ev.kind = EV_NOTIF;
				c->ev.tid = req.pid;
				c->ev.status = 0;
				c->ev.id = req.id;
				c->ev.nr = req.data.nr;
				for (int i = 0; i < 6; i++)
					c->ev.args[i] = (int64_t)req.data.args[i];
				return 1;
			}
			if (errno != ENOENT && errno != EINTR) /* ENOENT: the caller was killed meanwhile */
				return -errno;
		}
		if (until != INT64_MAX && now_ns() >= until)
			return 0;
	}
}

static int block_chld(struct kp_ctx *c, sigset_t *old)
{
	sigset_t chld;
	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	if (c->notif_fd < 0)
		return 0;
	if (c->sigfd < 0) {
		c->sigfd = signalfd(-1, &chld, SFD_NONBLOCK | SFD_CLOEXEC);
		if (c->sigfd < 0)
			return -errno;
	}
	pthread_sigmask(SIG_BLOCK, &chld, old);
	c->check = 1; /* SIGCHLD was not blocked until now: a stop may have come unseen */
	return 0;
}

static void unblock_chld(struct kp_ctx *c, sigset_t *old)
{
	if (c->notif_fd >= 0)
		pthread_sigmask(SIG_SETMASK, old, NULL);
}

/* For Python: the next event within timeout_ms (< 0: until one comes). 1, 0 (timeout) or -errno. */
int64_t kp_wait(struct kp_ctx *c, int64_t timeout_ms)
{
	sigset_t old;
	int64_t rc = block_chld(c, &old);
	if (rc)
		return rc;
	rc = wait_event(c, timeout_ms < 0 ? INT64_MAX : now_ns() + timeout_ms * 1000000);
	unblock_chld(c, &old);
	return rc;
}

static int64_t run(struct kp_ctx *c, const struct kp_op *ops, int64_t pos, int64_t end, const int64_t *idx,
		   int64_t limit);

static void load(struct kp_ctx *c, const struct kp_thr *t)
{
	c->tid = t->tid;
	c->vt = t->vt, c->prev_exit = t->prev_exit, c->arrival = t->arrival;
	c->li_has = t->li_has, c->li_vt = t->li_vt, c->li_rec = t->li_rec;
}

static void store(const struct kp_ctx *c, struct kp_thr *t)
{
	t->vt = c->vt, t->prev_exit = c->prev_exit, t->arrival = c->arrival;
}

/* Threads in the recorded order, without Python at each hand-over (replay/order.py is the rule):
 * the running thread's events are answered while they come before the next event of any other
 * thread (next_other); at a stop whose event is not its turn it is parked (its stop kept in its
 * slot), and the thread owning the next event, parked here or by Python with its stop, is released:
 * that stop is answered and it runs on. Returns to Python at anything else (a stop it must handle,
 * a thread not planned or not parked at its event, a new thread's start, the end of a plan); the
 * slots then say where each thread is, seg what was answered for whom, in order. */
int64_t kp_run_threads(struct kp_ctx *c)
{
	sigset_t old;
	int64_t total = 0;
	c->has_stop = 0, c->vdone = 0, c->nseg = 0, c->seen = 0, c->nreq = 0;
	c->err = -block_chld(c, &old);
	if (c->err)
		return 0;
	for (;;) {
		struct kp_thr *t = &c->thr[c->cur];
		int64_t limit = c->next_other[t->last_ordered + 1];
		int64_t vbefore = c->vdone, pos = t->pos;
		load(c, t);
		if (pos >= t->end)
			break; /* nothing planned for it: Python */
		if (t->parked) {
			c->ev = t->ev;
			c->preset = 1;
			t->parked = 0;
		}
		c->parked_now = 0;
		int64_t done = run(c, t->ops, pos, t->end, t->idx, limit);
		c->preset = 0;
		store(c, t);
		for (int64_t i = pos; i < pos + done; i++)
			if (!is_clock((uint64_t)t->ops[i].nr))
				t->last_ordered = t->idx[i];
		t->pos = pos + done;
		if (done && c->nseg < c->seg_cap) {
			int64_t *s = c->seg + 3 * c->nseg++;
			s[0] = c->cur, s[1] = done, s[2] = c->vdone - vbefore;
		}
		total += done;
		if (c->parked_now) { /* its stop stays pending, in its slot */
			t->parked = 1;
			t->parks++;
			t->ev = c->ev;
		}
		if (c->err || !c->parked_now || c->nseg >= c->seg_cap)
			break;
		int64_t next = c->owner[limit];
		struct kp_thr *n = next >= 0 ? &c->thr[next] : NULL;
		if (!n || !n->parked || n->pos >= n->end || n->idx[n->pos] != limit)
			break; /* Python releases it (a new thread, a stop it must answer, nothing planned) */
		n->last_ordered = limit; /* its turn: the next thread's event after this one bounds its run */
		if (c->vtab && !c->vtab[VT_GAP_N] && n->fs_base) { /* the table follows the running thread */
			c->vtab[VT_OWNER] = n->fs_base;
			c->vtid = n->tid;
		}
		c->cur = next;
	}
	unblock_chld(c, &old);
	return total;
}

static int64_t run(struct kp_ctx *c, const struct kp_op *ops, int64_t pos, int64_t end, const int64_t *idx,
		   int64_t limit)
{
	int64_t done = 0;
	int64_t gap_end = end; /* answers in the tracee only up to the next thread's event */
	if (idx) {
		int64_t lo = pos, hi = end;
		while (lo < hi) {
			int64_t mid = lo + (hi - lo) / 2;
			if (idx[mid] >= limit)
				hi = mid;
			else
				lo = mid + 1;
		}
		gap_end = lo;
	}
	while (pos + done < end) {
		/* ptrace only: block in waitpid (the deadline is checked every 256 stops, below) */
		int was_preset = (int)c->preset;
		int64_t got = c->preset ? 1 : wait_event(c, c->notif_fd >= 0 ? c->deadline_ns : INT64_MAX);
		c->preset = 0;
		if (got < 0) {
			c->err = -got;
			return done;
		}
		if (got == 0)
			return done; /* deadline: Python reports the timeout */
		c->has_stop = 1;
		struct user_regs_struct r;
		int64_t a[6];
		int64_t nr;
		if (c->ev.tid != c->tid)
			return done;
		if (c->vtab && c->tid == c->vtid && c->vtab[VT_GAP_N]) {
			int64_t k = sync_gap(c, ops, pos + done); /* before anything else of this thread */
			if (k < 0) {
				c->err = EPROTO;
				return done;
			}
			done += k;
			if (pos + done >= end)
				return done; /* the stop is handed back untouched */
		}
		if (c->ev.kind == EV_PTRACE) {
			if (!WIFSTOPPED(c->ev.status) || (c->ev.status >> 16) != EVENT_SECCOMP)
				return done;
			if (ptrace(PTRACE_GETREGS, c->tid, 0, &r)) {
				c->err = errno;
				return done;
			}
			nr = (int64_t)r.orig_rax;
			a[0] = (int64_t)r.rdi, a[1] = (int64_t)r.rsi, a[2] = (int64_t)r.rdx;
			a[3] = (int64_t)r.r10, a[4] = (int64_t)r.r8, a[5] = (int64_t)r.r9;
		} else {
			nr = c->ev.nr;
			memcpy(a, c->ev.args, sizeof(a));
		}
		const struct kp_op *op = &ops[pos + done];
		if (idx && idx[pos + done] >= limit && op->kind != K_CLOCK && !is_clock((uint64_t)nr)) {
			c->parked_now = 1; /* not its turn: the stop stays pending, kp_run_threads parks it */
			c->has_stop = 0;
			c->seen += !was_preset;
			return done;
		}
		if (!matches(op, nr, a))
			return done;
		c->nx_ops = ops, c->nx_pos = pos + done + 1, c->nx_end = gap_end;
		int h = handle(c, op, &r, a);
		c->nx_ops = NULL;
		if (h < 0)
			c->err = errno ? errno : EIO;
		if (h <= 0)
			return done;
		done++;
		c->seen += !was_preset;
		c->has_stop = 0;
		if (c->ev.kind == EV_PTRACE && ptrace(PTRACE_CONT, c->tid, 0, 0)) {
			c->err = errno;
			return done;
		}
		if ((done & 255) == 0 && now_ns() > c->deadline_ns)
			return done;
	}
	return done;
}
