/* Threads that hand work to each other through pipes: a producer writes numbered jobs into a
 * pipe, two workers read jobs from it (whoever reads first gets the next job), stamp each with the
 * time (vDSO) and a getrandom id and write the result into a second pipe, which the main thread
 * reads and appends to a journal (fsync'd). Which worker got which job shows in the journal;
 * a short sleep after each job lets the other worker take the next one.
 *
 *   pipe_handoff JOURNAL JOBS */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

struct job {
	int seq;
	int stop;
};

struct result {
	int seq, worker;
	long long ns;
	unsigned long long id;
};

static int jobs[2], results[2];

static void *worker(void *arg)
{
	int me = (int)(long)arg;
	struct job j;
	while (read(jobs[0], &j, sizeof(j)) == sizeof(j) && !j.stop) {
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		struct result r = {j.seq, me, (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec, 0};
		getrandom(&r.id, sizeof(r.id), 0);
		write(results[1], &r, sizeof(r));
		usleep(100 + 50 * me); /* the other worker gets the next job meanwhile */
	}
	return NULL;
}

static void *producer(void *arg)
{
	int n = (int)(long)arg;
	for (int i = 1; i <= n; i++) {
		struct job j = {i, 0};
		write(jobs[1], &j, sizeof(j));
		if (i % 8 == 0)
			usleep(200);
	}
	struct job stop = {0, 1};
	write(jobs[1], &stop, sizeof(stop));
	write(jobs[1], &stop, sizeof(stop));
	return NULL;
}

int main(int argc, char **argv)
{
	int n = argc > 2 ? atoi(argv[2]) : 40;
	int journal = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (pipe(jobs) || pipe(results))
		return 1;
	pthread_t p, w[2];
	pthread_create(&w[0], NULL, worker, (void *)0L);
	pthread_create(&w[1], NULL, worker, (void *)1L);
	pthread_create(&p, NULL, producer, (void *)(long)n);
	for (int i = 0; i < n; i++) {
		struct result r;
		if (read(results[0], &r, sizeof(r)) != sizeof(r))
			return 1;
		char line[128];
		int len = snprintf(line, sizeof(line), "%d w%d %lld %016llx\n", r.seq, r.worker, r.ns, r.id);
		write(journal, line, len);
		fsync(journal);
	}
	pthread_join(p, NULL);
	pthread_join(w[0], NULL);
	pthread_join(w[1], NULL);
	printf("done %d\n", n);
	return 0;
}
