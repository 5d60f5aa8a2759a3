// What getting a JPEG file's bytes into memory costs the host, outside augserve (issue 25).
// See README.md beside this file.
//   read_probe mmap PASSES FILE...     read() into buffers cycled like augserve's read buffers +
//                                      the marker walk, against mmap + the same walk (each
//                                      mapping undone a batch later); CPU time per file
//   read_probe odirect PASSES FILE...  buffered read() against O_DIRECT into a 4096-aligned
//                                      ring; CPU and wall time per file
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

enum { BATCH = 256, RING = 300, SLOT = 4 << 20 };

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

static int mmap_vs_read(int passes, int files, char **paths) {
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
          int fd = open(paths[i], O_RDONLY);
          struct stat st;
          if (fd < 0 || fstat(fd, &st) != 0) {
            perror(paths[i]);
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

static int o_direct(int passes, int files, char **paths) {
  unsigned char *ring = NULL;
  if (posix_memalign((void **)&ring, 4096, (size_t)RING * SLOT) != 0) return 1;
  size_t sink = 0;
  for (int direct = 0; direct < 2; direct++) {
    double c = cpu_seconds(), w = wall_seconds();
    for (int p = 0; p < passes; p++) {
      for (int i = 0; i < files; i++) {
        unsigned char *buf = ring + (size_t)(i % RING) * SLOT;
        long n = read_file(paths[i], buf, direct);
        if (n < 0) {
          perror(paths[i]);
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

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: %s mmap|odirect PASSES FILE...\n", argv[0]);
    return 2;
  }
  int passes = atoi(argv[2]), files = argc - 3;
  if (strcmp(argv[1], "mmap") == 0) return mmap_vs_read(passes, files, argv + 3);
  if (strcmp(argv[1], "odirect") == 0) return o_direct(passes, files, argv + 3);
  fprintf(stderr, "unknown probe %s: mmap or odirect\n", argv[1]);
  return 2;
}
