// Host CPU and wall time per file: buffered read() against O_DIRECT, into a 4096-aligned ring
// of buffers. See README.md beside this file. usage: o_direct PASSES FILE...
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

enum { RING = 300, SLOT = 4 << 20 };

static double cpu_seconds(void) {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_stime.tv_sec + 1e-6 * (u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

static double wall_seconds(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + 1e-9 * t.tv_nsec;
}

// Reads the whole of `path` into `buf` (SLOT bytes); returns the length, or -1.
static long read_file(const char *path, unsigned char *buf, int direct) {
  int fd = open(path, O_RDONLY | (direct ? O_DIRECT : 0));
  if (fd < 0) return -1;
  long got = 0;
  ssize_t k;
  while ((k = read(fd, buf + got, SLOT - got)) > 0) got += k;
  close(fd);
  return k < 0 ? -1 : got;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s PASSES FILE...\n", argv[0]);
    return 2;
  }
  int passes = atoi(argv[1]), files = argc - 2;
  unsigned char *ring = NULL;
  if (posix_memalign((void **)&ring, 4096, (size_t)RING * SLOT) != 0) return 1;
  size_t sink = 0;
  for (int direct = 0; direct < 2; direct++) {
    double c = cpu_seconds(), w = wall_seconds();
    for (int p = 0; p < passes; p++) {
      for (int i = 0; i < files; i++) {
        unsigned char *buf = ring + (size_t)(i % RING) * SLOT;
        long n = read_file(argv[i + 2], buf, direct);
        if (n < 0) {
          perror(argv[i + 2]);
          return 1;
        }
        sink += buf[n / 2];
      }
    }
    double per = 1e6 / ((double)passes * files);
    printf("%s: %.1f us CPU, %.1f us wall per file\n", direct ? "O_DIRECT" : "buffered",
           (cpu_seconds() - c) * per, (wall_seconds() - w) * per);
  }
  return sink == 42;
}
