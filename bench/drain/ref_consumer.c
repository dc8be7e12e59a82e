/* Reference consumer for the drain benchmark: libbpf's own ring_buffer API,
 * one callback per record copying it out (what any consumer must do at least).
 * Usage: ref_consumer MAP_FD  -> prints "<records> <bytes> <ns>" */
#include <bpf/libbpf.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static char *out;
static size_t off, count, cap;

static int on_record(void *ctx, void *data, size_t size)
{
	if (off + size <= cap) {
		memcpy(out + off, data, size);
		off += size;
	}
	count++;
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: %s MAP_FD CAPACITY_BYTES\n", argv[0]);
		return 2;
	}
	int fd = atoi(argv[1]);
	cap = strtoull(argv[2], NULL, 10);
	out = malloc(cap);
	memset(out, 0, cap);
	struct ring_buffer *rb = ring_buffer__new(fd, on_record, NULL, NULL);
	if (!rb) {
		perror("ring_buffer__new");
		return 1;
	}
	struct timespec a, b;
	clock_gettime(CLOCK_MONOTONIC, &a);
	while (ring_buffer__consume(rb) > 0)
		;
	clock_gettime(CLOCK_MONOTONIC, &b);
	printf("%zu %zu %lld\n", count, off,
	       (long long)(b.tv_sec - a.tv_sec) * 1000000000LL + (b.tv_nsec - a.tv_nsec));
	ring_buffer__free(rb);
	return 0;
}
