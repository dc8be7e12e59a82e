/* Two threads append timestamped, random-tagged lines to one file under a mutex, taking turns
 * through a condition variable, then the main thread joins and writes a summary to stdout. */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int turn, out_fd;

static void *run(void *arg)
{
	int me = (int)(long)arg;
	for (int i = 0; i < 5; i++) {
		pthread_mutex_lock(&mu);
		while (turn % 2 != me)
			pthread_cond_wait(&cv, &mu);
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		unsigned int r;
		getrandom(&r, sizeof(r), 0);
		char line[128];
		int n = snprintf(line, sizeof(line), "thread %d step %d t=%lld.%09ld r=%08x\n", me, i,
				 (long long)ts.tv_sec, ts.tv_nsec, r);
		write(out_fd, line, n);
		turn++;
		pthread_cond_broadcast(&cv);
		pthread_mutex_unlock(&mu);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	out_fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0600);
	pthread_t t;
	pthread_create(&t, NULL, run, (void *)1L);
	run((void *)0L);
	pthread_join(t, NULL);
	fsync(out_fd);
	printf("done %d\n", turn);
	return 0;
}
