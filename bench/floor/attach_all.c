/* Attaches every program of one BPF object and holds them until SIGINT/SIGTERM.
 *
 * Why: bench/overhead.py's floor modes load programs that return at once: "floor"
 * on sched_switch and sched_waking only, "floor-all" on every hook `kprobe record`
 * attaches today. What a workload loses then is the cost of the hooks themselves
 * (tracepoint dispatch, trampoline, mitigations), which no program body can go
 * below; the recorder's own loss is read against it.
 *
 * Usage: attach_all OBJECT.bpf.o   (prints "attached N of M" on stderr when ready)
 */
#include <bpf/libbpf.h>
#include <signal.h>
#include <stdio.h>
#include <unistd.h>

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s OBJECT.bpf.o\n", argv[0]);
		return 2;
	}
	struct bpf_object *obj = bpf_object__open_file(argv[1], NULL);
	if (!obj || bpf_object__load(obj)) {
		fprintf(stderr, "attach_all: cannot load %s\n", argv[1]);
		return 1;
	}
	struct bpf_program *prog;
	int attached = 0, total = 0;
	bpf_object__for_each_program(prog, obj) {
		total++;
		if (bpf_program__attach(prog))
			attached++;
		else
			fprintf(stderr, "attach_all: %s did not attach\n", bpf_program__name(prog));
	}
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	fprintf(stderr, "attached %d of %d\n", attached, total);
	while (!stop)
		pause();
	bpf_object__close(obj);
	return 0;
}
