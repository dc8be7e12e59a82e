/* Paced syscall stream: PAIRS_PER_S pairs a second of read(1 byte of /dev/zero) + write(1 byte to
 * /dev/null), the same events as `dd bs=1`, for SECONDS, spread over 1 ms ticks. Waits for a line
 * on stdin before starting; prints the number of pairs done.
 *
 * Why: dd runs flat out, faster than the scale-out pipeline drains, so its freshness is mostly the
 * backlog it builds. A steady high rate below the pipeline's capacity shows the freshness the
 * pipeline itself gives under load. Ticks are absolute deadlines: a late tick catches up. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: paced_syscalls PAIRS_PER_S SECONDS\n");
		return 2;
	}
	long rate = atol(argv[1]);
	long ticks = (long)(atof(argv[2]) * 1000);
	char line[16], c = 0;
	if (rate <= 0 || ticks <= 0 || !fgets(line, sizeof line, stdin))
		return 2;
	int zero = open("/dev/zero", O_RDONLY), null = open("/dev/null", O_WRONLY);
	if (zero < 0 || null < 0) {
		perror("open");
		return 1;
	}
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	long done = 0;
	for (long i = 1; i <= ticks; i++) {
		long target = rate * i / 1000;
		for (; done < target; done++) {
			if (read(zero, &c, 1) != 1 || write(null, &c, 1) != 1) {
				perror("read/write");
				return 1;
			}
		}
		t.tv_nsec += 1000000;
		if (t.tv_nsec >= 1000000000) {
			t.tv_sec++;
			t.tv_nsec -= 1000000000;
		}
		clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &t, NULL);
	}
	printf("%ld\n", done);
	return 0;
}
