/* Reads the clock in every way a program does and writes each value it saw to FILE, so a replay's
 * byte comparison checks every answer: per round clock_gettime(REALTIME), clock_gettime(MONOTONIC),
 * gettimeofday and time (glibc binds these two straight to the vDSO: recorded through the vDSO the
 * recorder patched at exec, but with libc uprobes not in the log and synthesized at replay from the
 * virtual clock, so only whether they gave a plausible time is written), then a burst of back-to-back MONOTONIC reads longer than replay's in-tracee answer
 * table (1022 entries), each value written relative to the burst's first. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: clock_burst FILE ROUNDS\n");
		return 2;
	}
	int fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0600);
	int rounds = atoi(argv[2]);
	static char buf[1 << 15];
	for (int r = 0; r < rounds; r++) {
		struct timespec rt, mono, b;
		struct timeval tv;
		clock_gettime(CLOCK_REALTIME, &rt);
		clock_gettime(CLOCK_MONOTONIC, &mono);
		gettimeofday(&tv, NULL);
		time_t t = time(NULL);
		int n = snprintf(buf, sizeof(buf), "round %d rt=%lld.%09ld mono=%lld.%09ld tv_set=%d t_set=%d burst", r,
				 (long long)rt.tv_sec, rt.tv_nsec, (long long)mono.tv_sec, mono.tv_nsec,
				 tv.tv_sec > 1000000000, t > 1000000000);
		long long first = 0;
		for (int i = 0; i < 1030 + r; i++) {
			clock_gettime(CLOCK_MONOTONIC, &b);
			long long v = (long long)b.tv_sec * 1000000000LL + b.tv_nsec;
			if (i == 0)
				first = v;
			n += snprintf(buf + n, sizeof(buf) - n, " %lld", v - first);
		}
		buf[n++] = '\n';
		write(fd, buf, n);
	}
	fsync(fd);
	close(fd);
	return 0;
}
