/* A lock-free hand-off: the main thread spins on a flag that a second thread sets, with no
 * syscall between. Recorded, it works (the spinning thread's round-robin slice runs out and the
 * other thread runs). Replayed from syscalls alone it cannot: the order holds the second thread
 * back until the spinning one reaches its next syscall, which it never does. Replay must say so
 * within seconds, naming the spinning thread. */
#include <pthread.h>
#include <stdio.h>
#include <sys/random.h>
#include <unistd.h>

static volatile int flag;
static unsigned int value;

static void *setter(void *arg)
{
	(void)arg;
	getrandom(&value, sizeof(value), 0);
	__atomic_store_n(&flag, 1, __ATOMIC_RELEASE);
	return NULL;
}

int main(void)
{
	pthread_t t;
	pthread_create(&t, NULL, setter, NULL);
	while (!__atomic_load_n(&flag, __ATOMIC_ACQUIRE))
		;
	printf("value %08x\n", value);
	pthread_join(t, NULL);
	return 0;
}
