/* pingpong: context-switch-bound worst case for bench/overhead.py.
 *
 * Why: two processes bounce one byte through two pipes, so each round trip is
 * two blocking reads, two wakeups and (on one CPU) two context switches with
 * almost no other work: the sched_switch/wakeup and syscall probes run on
 * every step, which makes their per-event cost as visible as it can get.
 *
 * usage: pingpong SECONDS
 *   Prints one JSON object on stdout: round_trips, seconds, rt_per_s.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s SECONDS\n", argv[0]);
		return 2;
	}
	double seconds = atof(argv[1]);
	int ping[2], pong[2];
	if (pipe(ping) || pipe(pong)) {
		perror("pingpong: pipe");
		return 1;
	}
	pid_t child = fork();
	if (child < 0) {
		perror("pingpong: fork");
		return 1;
	}
	char b = 'x';
	if (child == 0) { /* echo until the parent closes its end */
		close(ping[1]);
		close(pong[0]);
		while (read(ping[0], &b, 1) == 1)
			if (write(pong[1], &b, 1) != 1)
				break;
		_exit(0);
	}
	close(ping[0]);
	close(pong[1]);
	uint64_t t0 = now_ns(), deadline = t0 + (uint64_t)(seconds * 1e9), n = 0, t;
	int failed = 0;
	/* check the clock every 256 round trips: clock_gettime is cheap (vDSO) but not free */
	do {
		for (int i = 0; i < 256; i++) {
			if (write(ping[1], &b, 1) != 1 || read(pong[0], &b, 1) != 1) {
				failed = 1;
				break;
			}
		}
		n += 256;
		t = now_ns();
	} while (!failed && t < deadline);
	close(ping[1]);
	waitpid(child, NULL, 0);
	double elapsed = (double)(t - t0) / 1e9;
	printf("{\"round_trips\": %llu, \"seconds\": %.6f, \"rt_per_s\": %.1f, \"failed\": %d}\n",
	       (unsigned long long)n, elapsed, (double)n / elapsed, failed);
	return failed ? 1 : 0;
}
