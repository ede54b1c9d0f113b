/* randread DEVICE SECONDS: random 4 KiB O_DIRECT reads over a block device
 * for SECONDS; prints "<reads> <reads per second>". Built static into the
 * test guest for the benchmarks. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/fs.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: randread DEVICE SECONDS\n");
        return 2;
    }
    int fd = open(argv[1], O_RDONLY | O_DIRECT);
    if (fd < 0) { perror("open"); return 1; }
    uint64_t size = 0;
    if (ioctl(fd, BLKGETSIZE64, &size) != 0 || size < 4096) { perror("size"); return 1; }
    void *buf;
    if (posix_memalign(&buf, 4096, 4096) != 0) return 1;
    double secs = atof(argv[2]), start = now(), elapsed;
    uint64_t x = 88172645463325252ULL, blocks = size / 4096;
    unsigned long n = 0;
    do {
        for (int i = 0; i < 32; i++) {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            if (pread(fd, buf, 4096, (off_t)((x % blocks) * 4096)) != 4096) { perror("pread"); return 1; }
            n++;
        }
        elapsed = now() - start;
    } while (elapsed < secs);
    printf("%lu %.1f\n", n, n / elapsed);
    return 0;
}
