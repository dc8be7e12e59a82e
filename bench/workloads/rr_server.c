/* rr_server: loopback request/response server for bench/overhead.py.
 *
 * Why: a minimal stand-in for a latency-sensitive service (order gateway): every
 * request is a fixed-size message answered by a fixed-size reply over TCP, so
 * the per-request kernel path (syscalls, socket I/O, wakeups, context switches)
 * is exactly what the eBPF probes hook, with no application work to hide it.
 *
 * usage: rr_server PORT REQ_BYTES REPLY_BYTES
 *   PORT 0 picks a free port; the chosen port is printed on stdout ("port N").
 *   One thread per connection; reads REQ_BYTES, writes REPLY_BYTES, until EOF.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static size_t req_bytes, reply_bytes;

static int read_full(int fd, char *buf, size_t n)
{
	size_t got = 0;
	while (got < n) {
		ssize_t r = read(fd, buf + got, n - got);
		if (r <= 0)
			return -1;
		got += (size_t)r;
	}
	return 0;
}

static int write_full(int fd, const char *buf, size_t n)
{
	size_t put = 0;
	while (put < n) {
		ssize_t w = write(fd, buf + put, n - put);
		if (w <= 0)
			return -1;
		put += (size_t)w;
	}
	return 0;
}

static void *serve(void *arg)
{
	int fd = (int)(long)arg;
	char *req = malloc(req_bytes), *reply = malloc(reply_bytes);
	memset(reply, 'r', reply_bytes);
	while (read_full(fd, req, req_bytes) == 0) {
		reply[0] = req[0]; /* echo a sequence byte so the client can check pairing */
		if (write_full(fd, reply, reply_bytes) != 0)
			break;
	}
	close(fd);
	free(req);
	free(reply);
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: %s PORT REQ_BYTES REPLY_BYTES\n", argv[0]);
		return 2;
	}
	req_bytes = strtoul(argv[2], NULL, 10);
	reply_bytes = strtoul(argv[3], NULL, 10);
	int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[1]))};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 64)) {
		perror("rr_server: bind/listen");
		return 1;
	}
	socklen_t len = sizeof a;
	getsockname(ls, (struct sockaddr *)&a, &len);
	printf("port %d\n", ntohs(a.sin_port));
	fflush(stdout);
	for (;;) {
		int fd = accept(ls, NULL, NULL);
		if (fd < 0)
			continue;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		pthread_t t;
		if (pthread_create(&t, NULL, serve, (void *)(long)fd) != 0) {
			close(fd);
			continue;
		}
		pthread_detach(t);
	}
}
