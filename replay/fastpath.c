/* Replay's hot path in C: answer a run of recorded syscalls of one thread without returning to
 * Python (loaded with ctypes by replay/fastpath.py, built by `make -C replay`).
 *
 * Why: on this VM one ptrace stop costs ~15 us even in C with tracer and tracee on one CPU; the
 * Python engine spent another ~50 us per stop on top (python-ptrace objects, dicts, bookkeeping).
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
#include <stdint.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/types.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { K_SLOW = 0, K_PASS = 1, K_SKIP = 2, K_WRITE = 3, K_CLOCK = 4 };
enum {
	F_FDCHECK = 1,     /* the syscall's fd must equal the recorded one */
	F_WRITE = 2,       /* an output: moves out_shift of its fd */
	F_EXT_WAIT = 4,    /* waited for the peer: completes at the peer's (shifted) send time */
	F_MARK_INPUT = 8,  /* an input on an emulated fd: remember its arrival for request latency */
	F_SOCKET = 16,     /* the fd is a socket: a write after an input is a request's reply */
};
#define EVENT_SECCOMP 7
#define KP_FDMAX 65536

struct kp_op { /* 18 x int64, built by replay/fastpath.py (numpy, same order) */
	int64_t ret, enter_ns, exit_ns, pred_exit, arg0;
	int64_t roff[3], rlen[3], rarg[3];
	int64_t nr, fd, kind, flags;
};

struct kp_ctx {
	int64_t tid, memfd;
	int64_t vt, prev_exit, arrival;  /* the thread's virtual-time state (in and out) */
	int64_t deadline_ns;             /* CLOCK_MONOTONIC: return to Python after it */
	int64_t wpid, status, has_stop;  /* out: the stop not handled here */
	int64_t err;                     /* out: errno of a failed ptrace/memory call */
	int64_t nreq, req_cap;
	int64_t *req;                    /* out: (fd, recorded ns, replay ns) per request */
	int64_t *out_shift;              /* [KP_FDMAX] virtual minus recorded time of the last output */
	int64_t *li_has, *li_vt, *li_rec;/* [KP_FDMAX] last input per fd: (replay, recorded) arrival */
	const uint8_t *blob;             /* all recorded regions, addressed by kp_op.roff */
	uint8_t *scratch;                /* for reading the tracee's output */
	int64_t scratch_len;
};

static int64_t floordiv(int64_t a, int64_t b)
{
	int64_t q = a / b;
	return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

static int64_t arg_of(const struct user_regs_struct *r, int64_t i)
{
	switch (i) {
	case 0: return (int64_t)r->rdi;
	case 1: return (int64_t)r->rsi;
	case 2: return (int64_t)r->rdx;
	case 3: return (int64_t)r->r10;
	case 4: return (int64_t)r->r8;
	default: return (int64_t)r->r9;
	}
}

static int is_clock(uint64_t nr)
{
	return nr == 228 || nr == 96 || nr == 201;
}

static int matches(const struct kp_op *op, const struct user_regs_struct *r)
{
	if ((int64_t)r->orig_rax != op->nr)
		return 0;
	if (op->kind == K_CLOCK)
		return op->nr != 228 || (int64_t)r->rdi == op->arg0;
	if (is_clock(r->orig_rax))
		return 0;
	return !(op->flags & F_FDCHECK) || (int64_t)(r->rdi & 0xFFFFFFFFu) == op->fd;
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
	return pwrite(c->memfd, data, n, (off_t)addr) < 0 ? -1 : 0;
}

static int skip(struct kp_ctx *c, struct user_regs_struct *r, int64_t ret)
{
	r->orig_rax = (uint64_t)-1;
	r->rax = (uint64_t)ret;
	return ptrace(PTRACE_SETREGS, c->tid, 0, r) == 0 ? 0 : -1;
}

/* Returns 1 when handled (stop consumed), 0 when Python must handle it, -1 on error. */
static int handle(struct kp_ctx *c, const struct kp_op *op, struct user_regs_struct *r)
{
	switch (op->kind) {
	case K_PASS:
		consume(c, op);
		return 1;
	case K_SKIP:
		consume(c, op);
		for (int i = 0; i < 3; i++)
			if (op->rarg[i] >= 0 && put(c, (uint64_t)arg_of(r, op->rarg[i]), c->blob + op->roff[i], op->rlen[i]))
				return -1;
		if ((op->flags & F_MARK_INPUT) && op->fd < KP_FDMAX) {
			c->li_has[op->fd] = 1;
			c->li_vt[op->fd] = c->arrival;
			c->li_rec[op->fd] = op->exit_ns;
		}
		return skip(c, r, op->ret) ? -1 : 1;
	case K_WRITE: {
		/* same bytes as recorded (the plan only holds writes the redactor leaves as they are) */
		if ((int64_t)r->rdx != op->ret || op->ret > c->scratch_len)
			return 0;
		if (op->ret && pread(c->memfd, c->scratch, op->ret, (off_t)r->rsi) != op->ret)
			return 0;
		if (memcmp(c->scratch, c->blob + op->roff[0], op->ret) != 0)
			return 0;
		if ((op->flags & F_SOCKET) && c->li_has[op->fd] && c->nreq >= c->req_cap)
			return 0; /* no room to report the request: let Python answer it */
		consume(c, op);
		if (c->li_has[op->fd]) {
			c->li_has[op->fd] = 0;
			if (op->flags & F_SOCKET) {
				int64_t *q = c->req + 3 * c->nreq++;
				int64_t dur = op->exit_ns - op->enter_ns > 0 ? op->exit_ns - op->enter_ns : 0;
				q[0] = op->fd;
				q[1] = op->enter_ns - c->li_rec[op->fd];
				q[2] = c->vt - dur - c->li_vt[op->fd];
			}
		}
		return skip(c, r, op->ret) ? -1 : 1;
	}
	case K_CLOCK: {
		consume(c, op);
		int64_t shift = c->vt - op->exit_ns;
		if (op->nr == 201) {
			int64_t val = op->ret + floordiv(shift, 1000000000);
			if (put(c, r->rdi, &val, 8))
				return -1;
			return skip(c, r, val) ? -1 : 1;
		}
		int64_t rec[2] = {0, 0};
		if (op->rlen[0] >= 16)
			memcpy(rec, c->blob + op->roff[0], 16);
		int64_t unit = op->nr == 228 ? 1000000000 : 1000000;
		int64_t total = rec[0] * unit + rec[1] + (op->nr == 228 ? shift : floordiv(shift, 1000));
		int64_t ts[2] = {floordiv(total, unit), total - floordiv(total, unit) * unit};
		if (put(c, op->nr == 228 ? r->rsi : r->rdi, ts, 16))
			return -1;
		return skip(c, r, op->ret) ? -1 : 1;
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

/* Run ops[pos..end) as far as the tracee's stops match them; returns how many were handled. */
int64_t kp_run(struct kp_ctx *c, const struct kp_op *ops, int64_t pos, int64_t end)
{
	int64_t done = 0;
	c->has_stop = 0;
	c->err = 0;
	while (pos + done < end) {
		int status;
		pid_t w = waitpid(-1, &status, __WALL);
		if (w < 0) {
			c->err = errno;
			return done;
		}
		c->wpid = w;
		c->status = status;
		c->has_stop = 1;
		if (w != c->tid || !WIFSTOPPED(status) || (status >> 16) != EVENT_SECCOMP)
			return done;
		struct user_regs_struct r;
		if (ptrace(PTRACE_GETREGS, w, 0, &r)) {
			c->err = errno;
			return done;
		}
		const struct kp_op *op = &ops[pos + done];
		if (!matches(op, &r))
			return done;
		int h = handle(c, op, &r);
		if (h < 0)
			c->err = errno ? errno : EIO;
		if (h <= 0)
			return done;
		done++;
		c->has_stop = 0;
		if (ptrace(PTRACE_CONT, w, 0, 0)) {
			c->err = errno;
			return done;
		}
		if ((done & 255) == 0 && now_ns() > c->deadline_ns)
			return done;
	}
	return done;
}
