/* msg_client: a client for the replay workloads, as a process of its own (a Python client thread
 * in the recorder's process would share its interpreter lock with the recorder's drain thread and
 * charge that to the recording).
 *
 *   msg_client PORT N SIZE WINDOW
 *
 * Connects to 127.0.0.1:PORT (retrying while it is not listening), sends N messages of SIZE bytes
 * ("pay-000…0042", the last byte a newline when SIZE is not 16) keeping up to WINDOW of them
 * unanswered, counts reply lines, and exits 0 when every message got one. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc < 5) {
		fprintf(stderr, "usage: msg_client PORT N SIZE WINDOW\n");
		return 2;
	}
	int n = atoi(argv[2]), size = atoi(argv[3]), window = atoi(argv[4]);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int s = -1;
	for (int tries = 0; tries < 2000; tries++) {
		s = socket(AF_INET, SOCK_STREAM, 0);
		if (connect(s, (struct sockaddr *)&a, sizeof(a)) == 0)
			break;
		close(s);
		s = -1;
		struct timespec ts = {0, 2000000};
		nanosleep(&ts, NULL);
	}
	if (s < 0) {
		perror("connect");
		return 1;
	}
	int one = 1;
	setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	char msg[256], buf[4096];
	if (size < 8 || size > (int)sizeof(msg))
		size = 16;
	int sent = 0, replies = 0;
	while (replies < n) {
		while (sent < n && sent - replies < window) {
			snprintf(msg, sizeof(msg), "pay-%0*d", size - 4, sent);
			if (size != 16)
				msg[size - 1] = '\n';
			if (write(s, msg, size) != size) {
				perror("write");
				return 1;
			}
			sent++;
		}
		ssize_t got = read(s, buf, sizeof(buf));
		if (got <= 0) {
			fprintf(stderr, "msg_client: connection closed after %d of %d replies\n", replies, n);
			return 1;
		}
		for (ssize_t i = 0; i < got; i++)
			replies += buf[i] == '\n';
	}
	close(s);
	return 0;
}
