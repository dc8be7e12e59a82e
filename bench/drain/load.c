/* Event generator: waits for a line on stdin, then does write(/dev/null, 1 byte)
 * at RATE calls/s for SECONDS (RATE 0 = as fast as possible, COUNT calls).
 * Usage: load RATE SECONDS [COUNT] -> prints calls made */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

int main(int argc, char **argv)
{
	long rate = atol(argv[1]);
	double seconds = atof(argv[2]);
	long long count = argc > 3 ? atoll(argv[3]) : 0;
	char line[16];
	if (!fgets(line, sizeof(line), stdin))
		return 1;
	int fd = open("/dev/null", O_WRONLY);
	char b = 'x';
	long long done = 0;
	if (rate == 0) {
		for (; done < count; done++)
			if (write(fd, &b, 1) != 1)
				return 1;
	} else {
		long long start = now_ns(), end = start + (long long)(seconds * 1e9);
		long long tick = 1000000; /* 1 ms slices */
		long per_tick = rate / 1000;
		for (long long t = start; t < end; t += tick) {
			for (long i = 0; i < per_tick; i++, done++)
				if (write(fd, &b, 1) != 1)
					return 1;
			long long left = t + tick - now_ns();
			if (left > 0) {
				struct timespec s = {0, left};
				nanosleep(&s, NULL);
			}
		}
	}
	printf("%lld\n", done);
	return 0;
}
