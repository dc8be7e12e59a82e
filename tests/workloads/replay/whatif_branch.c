/* Times an fsync; only when it took over 200 ms (never while recording, always under an injected
 * 500 ms delay) does it take the branch the recording never saw: create a marker file and connect to
 * a TCP port. A what-if replay must not do either for real.
 * usage: whatif_branch DATAFILE MARKER PORT */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc < 4)
		return 2;
	int fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0600);
	write(fd, "x", 1);
	struct timespec a, b;
	clock_gettime(CLOCK_MONOTONIC, &a);
	fsync(fd);
	clock_gettime(CLOCK_MONOTONIC, &b);
	long ms = (b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000;
	if (ms > 200) {
		int m = open(argv[2], O_WRONLY | O_CREAT, 0644);
		if (m >= 0) {
			write(m, "slow\n", 5);
			close(m);
		}
		int s = socket(AF_INET, SOCK_STREAM, 0);
		struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[3]))};
		sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		connect(s, (struct sockaddr *)&sa, sizeof(sa));
		close(s);
	}
	close(fd);
	return 0;
}
