/* rr_client: synchronous request/response load for bench/overhead.py.
 *
 * Why: measures what a caller of the service sees, throughput and per-request
 * latency, with one outstanding request per connection (closed loop), so any
 * time the probes add to the kernel path shows up directly in the latency.
 *
 * usage: rr_client PORT CONNS SECONDS REQ_BYTES REPLY_BYTES
 *   Runs CONNS threads, one connection each, for SECONDS after all are connected.
 *   Prints one JSON object on stdout: requests, seconds, rps, p50_us, p99_us, p999_us, max_us.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct worker {
	pthread_t thread;
	int fd;
	uint64_t deadline_ns;
	uint64_t *lat; /* ns per request */
	size_t n, cap;
	int failed;
};

static size_t req_bytes, reply_bytes;
static pthread_barrier_t start_barrier;

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int io_full(int fd, char *buf, size_t n, int writing)
{
	size_t done = 0;
	while (done < n) {
		ssize_t r = writing ? write(fd, buf + done, n - done) : read(fd, buf + done, n - done);
		if (r <= 0)
			return -1;
		done += (size_t)r;
	}
	return 0;
}

static void *run(void *arg)
{
	struct worker *w = arg;
	char *req = malloc(req_bytes), *reply = malloc(reply_bytes);
	memset(req, 'q', req_bytes);
	pthread_barrier_wait(&start_barrier);
	uint64_t t0 = now_ns();
	w->deadline_ns += t0;
	for (uint64_t seq = 0;; seq++) {
		req[0] = (char)seq;
		uint64_t a = now_ns();
		if (a >= w->deadline_ns)
			break;
		if (io_full(w->fd, req, req_bytes, 1) || io_full(w->fd, reply, reply_bytes, 0) || reply[0] != req[0]) {
			w->failed = 1;
			break;
		}
		if (w->n == w->cap) {
			w->cap = w->cap ? w->cap * 2 : 1 << 16;
			w->lat = realloc(w->lat, w->cap * sizeof *w->lat);
		}
		w->lat[w->n++] = now_ns() - a;
	}
	free(req);
	free(reply);
	return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return (x > y) - (x < y);
}

static double pct_us(const uint64_t *v, size_t n, double p)
{
	if (n == 0)
		return 0;
	size_t i = (size_t)(p * (double)(n - 1) + 0.5);
	return (double)v[i] / 1000.0;
}

int main(int argc, char **argv)
{
	if (argc != 6) {
		fprintf(stderr, "usage: %s PORT CONNS SECONDS REQ_BYTES REPLY_BYTES\n", argv[0]);
		return 2;
	}
	int port = atoi(argv[1]), conns = atoi(argv[2]), one = 1;
	double seconds = atof(argv[3]);
	req_bytes = strtoul(argv[4], NULL, 10);
	reply_bytes = strtoul(argv[5], NULL, 10);
	struct worker *ws = calloc((size_t)conns, sizeof *ws);
	pthread_barrier_init(&start_barrier, NULL, (unsigned)conns + 1);
	for (int i = 0; i < conns; i++) {
		struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
		a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		ws[i].fd = socket(AF_INET, SOCK_STREAM, 0);
		if (connect(ws[i].fd, (struct sockaddr *)&a, sizeof a)) {
			perror("rr_client: connect");
			return 1;
		}
		setsockopt(ws[i].fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		ws[i].deadline_ns = (uint64_t)(seconds * 1e9);
		pthread_create(&ws[i].thread, NULL, run, &ws[i]);
	}
	pthread_barrier_wait(&start_barrier);
	uint64_t t0 = now_ns();
	size_t total = 0;
	int failed = 0;
	for (int i = 0; i < conns; i++) {
		pthread_join(ws[i].thread, NULL);
		total += ws[i].n;
		failed |= ws[i].failed;
	}
	double elapsed = (double)(now_ns() - t0) / 1e9;
	uint64_t *all = malloc((total ? total : 1) * sizeof *all);
	size_t k = 0;
	for (int i = 0; i < conns; i++) {
		memcpy(all + k, ws[i].lat, ws[i].n * sizeof *all);
		k += ws[i].n;
		close(ws[i].fd);
	}
	qsort(all, total, sizeof *all, cmp_u64);
	printf("{\"requests\": %zu, \"seconds\": %.6f, \"rps\": %.1f, \"p50_us\": %.2f, \"p99_us\": %.2f, "
	       "\"p999_us\": %.2f, \"max_us\": %.2f, \"failed\": %d}\n",
	       total, elapsed, (double)total / elapsed, pct_us(all, total, 0.50), pct_us(all, total, 0.99),
	       pct_us(all, total, 0.999), total ? (double)all[total - 1] / 1000.0 : 0.0, failed);
	return failed ? 1 : 0;
}
