/* A single-threaded ledger service: accept one client on 127.0.0.1:PORT; per request line read
 * the time through the vDSO (clock_gettime), draw 8 random bytes (getrandom), append a timestamped
 * ledger line and fsync it, then reply. Exits after N requests or when the client closes. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "usage: ledger_svc PORT LEDGER N [VARIANT]\n");
		return 2;
	}
	int variant = argc > 4 ? atoi(argv[4]) : 0; /* 1: writes different bytes, 2: replies before the ledger */
	int ls = socket(AF_INET, SOCK_STREAM, 0);
	int one = 1;
	setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(ls, (struct sockaddr *)&a, sizeof(a)) || listen(ls, 1)) {
		perror("bind/listen");
		return 1;
	}
	printf("ready\n");
	fflush(stdout);
	struct sockaddr_in peer;
	socklen_t plen = sizeof(peer);
	int c = accept(ls, (struct sockaddr *)&peer, &plen);
	int ledger = open(argv[2], O_WRONLY | O_CREAT | O_APPEND, 0600);
	int n = atoi(argv[3]);
	char req[256], line[512], reply[128];
	for (int i = 0; i < n; i++) {
		ssize_t got = read(c, req, sizeof(req) - 1);
		if (got <= 0)
			break;
		req[got] = 0;
		req[strcspn(req, "\n")] = 0;
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		unsigned long long rnd;
		getrandom(&rnd, sizeof(rnd), 0);
		int len = snprintf(line, sizeof(line), "%lld.%09ld settle %s ref=%016llx%s\n", (long long)ts.tv_sec,
				   ts.tv_nsec, req, rnd, variant == 1 && i == n / 2 ? " FIXED" : "");
		int rlen = snprintf(reply, sizeof(reply), "ok %s %016llx\n", req, rnd);
		if (variant == 2)
			write(c, reply, rlen);
		write(ledger, line, len);
		fsync(ledger);
		if (variant != 2)
			write(c, reply, rlen);
	}
	close(ledger);
	close(c);
	close(ls);
	return 0;
}
