/* A multi-threaded ledger service: W worker threads serve one TCP client on 127.0.0.1:PORT.
 *
 *   pool_svc PORT JOURNAL NMSG WORKERS [MODE] [VARIANT]
 *
 * MODE "shared" (default): the workers share the connection; under one pthread mutex a worker
 * reads the next fixed-size message and takes the next sequence number. MODE "queue": the main
 * thread reads the messages and hands them to the workers through a mutex + condition variable
 * work queue. Then each worker, on its own: reads the time through the vDSO (clock_gettime),
 * draws an 8-byte id (getrandom), appends a journal line and fsyncs it, and replies on the
 * connection (under a second mutex, so replies do not interleave). Which worker served which
 * message, the sequence numbers, the times and the ids all show in the journal and the replies:
 * a replay that schedules the threads differently writes different bytes.
 * VARIANT 1 (a "fix") tags the reply of sequence number NMSG/2. Exits after NMSG messages. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MSG 16
#define QCAP 64

static pthread_mutex_t conn_mu = PTHREAD_MUTEX_INITIALIZER; /* reading the connection, the counter */
static pthread_mutex_t out_mu = PTHREAD_MUTEX_INITIALIZER;  /* replies */
static pthread_mutex_t q_mu = PTHREAD_MUTEX_INITIALIZER;    /* the work queue (MODE queue) */
static pthread_cond_t q_cv = PTHREAD_COND_INITIALIZER;
static int conn, journal, nmsg, variant, queue_mode;
static long counter, taken;
static char queue[QCAP][MSG];
static long qseq[QCAP];
static int qhead, qtail, qclosed;

static int read_msg(char *buf)
{
	int got = 0;
	while (got < MSG) {
		ssize_t n = read(conn, buf + got, MSG - got);
		if (n <= 0)
			return -1;
		got += (int)n;
	}
	return 0;
}

/* The next message and its sequence number; 0 when there is none left. */
static long next_msg(char *msg)
{
	long seq = 0;
	if (!queue_mode) {
		pthread_mutex_lock(&conn_mu);
		if (taken < nmsg && read_msg(msg) == 0) {
			taken++;
			seq = ++counter;
		}
		pthread_mutex_unlock(&conn_mu);
		return seq;
	}
	pthread_mutex_lock(&q_mu);
	while (qhead == qtail && !qclosed)
		pthread_cond_wait(&q_cv, &q_mu);
	if (qhead != qtail) {
		memcpy(msg, queue[qhead % QCAP], MSG);
		seq = qseq[qhead % QCAP];
		qhead++;
		pthread_cond_broadcast(&q_cv); /* room for the reader */
	}
	pthread_mutex_unlock(&q_mu);
	return seq;
}

static void *worker(void *arg)
{
	int me = (int)(long)arg;
	char msg[MSG + 1], line[256], reply[128];
	long seq;
	while ((seq = next_msg(msg)) > 0) {
		msg[MSG] = 0;
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		unsigned long long id;
		getrandom(&id, sizeof(id), 0);
		int n = snprintf(line, sizeof(line), "%ld %lld.%09ld w%d %.16s id=%016llx\n", seq, (long long)ts.tv_sec,
				 ts.tv_nsec, me, msg, id);
		write(journal, line, n);
		fsync(journal);
		int r = snprintf(reply, sizeof(reply), "ok %ld w%d %016llx%s\n", seq, me, id,
				 variant == 1 && seq == nmsg / 2 ? " FIXED" : "");
		pthread_mutex_lock(&out_mu);
		write(conn, reply, r);
		pthread_mutex_unlock(&out_mu);
	}
	return NULL;
}

static void reader(void)
{
	char msg[MSG];
	for (long i = 0; i < nmsg; i++) {
		if (read_msg(msg))
			break;
		pthread_mutex_lock(&q_mu);
		while (qtail - qhead == QCAP)
			pthread_cond_wait(&q_cv, &q_mu);
		memcpy(queue[qtail % QCAP], msg, MSG);
		qseq[qtail % QCAP] = ++counter;
		qtail++;
		pthread_cond_signal(&q_cv);
		pthread_mutex_unlock(&q_mu);
	}
	pthread_mutex_lock(&q_mu);
	qclosed = 1;
	pthread_cond_broadcast(&q_cv);
	pthread_mutex_unlock(&q_mu);
}

int main(int argc, char **argv)
{
	if (argc < 5) {
		fprintf(stderr, "usage: pool_svc PORT JOURNAL NMSG WORKERS [shared|queue] [VARIANT]\n");
		return 2;
	}
	nmsg = atoi(argv[3]);
	int workers = atoi(argv[4]);
	queue_mode = argc > 5 && strcmp(argv[5], "queue") == 0;
	variant = argc > 6 ? atoi(argv[6]) : 0;
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
	conn = accept(ls, NULL, NULL);
	journal = open(argv[2], O_WRONLY | O_CREAT | O_APPEND, 0600);
	pthread_t t[64];
	for (int i = 0; i < workers && i < 64; i++)
		pthread_create(&t[i], NULL, worker, (void *)(long)i);
	if (queue_mode)
		reader();
	for (int i = 0; i < workers && i < 64; i++)
		pthread_join(t[i], NULL);
	printf("served %ld\n", counter);
	fflush(stdout);
	close(journal);
	close(conn);
	close(ls);
	return 0;
}
