// Host CPU per file: read() into buffers cycled like augserve's read buffers + the marker walk,
// against mmap + the same walk (unmapped a batch later). See README.md beside this file.
// usage: mmap_vs_read PASSES FILE...
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

enum { BATCH = 256, SLOT = 4 << 20 };

static double cpu_seconds(void) {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_stime.tv_sec + 1e-6 * (u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

// jpeg_info's walk: every 0xFF found with memchr, markers counted (0xFF not followed by a
// stuffed zero, a restart marker or another 0xFF).
static size_t walk(const unsigned char *b, size_t n) {
  size_t markers = 0;
  const unsigned char *p = b, *end = b + n;
  while ((p = memchr(p, 0xFF, end - p)) && p + 1 < end) {
    unsigned char x = p[1];
    if (x != 0 && x != 0xFF && !(x >= 0xD0 && x <= 0xD7)) markers++;
    p++;
  }
  return markers;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s PASSES FILE...\n", argv[0]);
    return 2;
  }
  int passes = atoi(argv[1]), files = argc - 2;
  size_t sink = 0;
  // Three batches' worth of read buffers used in turn, faulted in once (recycled buffers).
  static unsigned char *bufs[3 * BATCH];
  for (int i = 0; i < 3 * BATCH; i++) {
    if (!(bufs[i] = malloc(SLOT))) return 1;
    memset(bufs[i], 1, SLOT);
  }
  static void *maps[BATCH];
  static size_t lens[BATCH];
  for (int round = 0; round < 2; round++) {
    for (int mapped = 0; mapped < 2; mapped++) {
      double c = cpu_seconds();
      long k = 0;
      for (int p = 0; p < passes; p++) {
        for (int i = 0; i < files; i++, k++) {
          int fd = open(argv[i + 2], O_RDONLY);
          struct stat st;
          if (fd < 0 || fstat(fd, &st) != 0) {
            perror(argv[i + 2]);
            return 1;
          }
          size_t n = st.st_size;
          if (!mapped) {
            unsigned char *buf = bufs[k % (3 * BATCH)];
            size_t got = 0;
            ssize_t q;
            while ((q = read(fd, buf + got, SLOT - got)) > 0) got += q;
            sink += walk(buf, got);
          } else {
            int s = k % BATCH;  // the mapping made a batch ago goes now
            if (k >= BATCH) munmap(maps[s], lens[s]);
            maps[s] = mmap(NULL, n, PROT_READ, MAP_PRIVATE, fd, 0);
            if (maps[s] == MAP_FAILED) return 1;
            lens[s] = n;
            sink += walk(maps[s], n);
          }
          close(fd);
        }
      }
      if (mapped) {
        for (long s = 0; s < BATCH && s < k; s++) munmap(maps[s], lens[s]);
      }
      printf("%s: %.1f us per file\n",
             mapped ? "mmap + walk, unmapped a batch later"
                    : "read into three batches of buffers + walk",
             (cpu_seconds() - c) * 1e6 / ((double)passes * files));
    }
  }
  return sink == 42;
}
