// W3's shape with nothing but syscalls: echo of 64 KiB messages over a
// unix stream socketpair, 4 in flight, between two processes. The ceiling
// an RPC library's bulk figure is measured against on this machine.
//
//   bulk <warmup> <calls> <inflight> <size>   prints "mb_per_s=<n>"
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void die(const char* what) {
  perror(what);
  exit(1);
}

static void read_all(int fd, char* p, size_t n) {
  while (n > 0) {
    ssize_t r = read(fd, p, n);
    if (r <= 0) die("read");
    p += r;
    n -= (size_t)r;
  }
}

static void write_all(int fd, const char* p, size_t n) {
  while (n > 0) {
    ssize_t r = write(fd, p, n);
    if (r <= 0) die("write");
    p += r;
    n -= (size_t)r;
  }
}

static void echo_server(int fd, long total, size_t size) {
  char* buf = malloc(size);
  for (long i = 0; i < total; i++) {
    read_all(fd, buf, size);
    write_all(fd, buf, size);
  }
  exit(0);
}

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

// Calls [from, to) with `inflight` kept going; each answer is checked
// against the call number stamped into its first bytes.
static void run(int fd, long from, long to, int inflight, size_t size, char* out, char* in) {
  long sent = from, got = from;
  for (; sent < to && sent - from < inflight; sent++) {
    memcpy(out, &sent, sizeof sent);
    write_all(fd, out, size);
  }
  while (got < to) {
    read_all(fd, in, size);
    long stamp;
    memcpy(&stamp, in, sizeof stamp);
    if (stamp != got) {
      fprintf(stderr, "answer %ld came back as %ld\n", got, stamp);
      exit(1);
    }
    got++;
    if (sent < to) {
      memcpy(out, &sent, sizeof sent);
      write_all(fd, out, size);
      sent++;
    }
  }
}

int main(int argc, char** argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: bulk <warmup> <calls> <inflight> <size>\n");
    return 2;
  }
  long warmup = atol(argv[1]), calls = atol(argv[2]);
  int inflight = atoi(argv[3]);
  size_t size = (size_t)atol(argv[4]);
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) die("socketpair");
  pid_t child = fork();
  if (child < 0) die("fork");
  if (child == 0) {
    close(sv[0]);
    echo_server(sv[1], warmup + calls, size);
  }
  close(sv[1]);
  char* out = malloc(size);
  char* in = malloc(size);
  memset(out, 0x5a, size);
  run(sv[0], 0, warmup, inflight, size, out, in);
  double start = now();
  run(sv[0], warmup, warmup + calls, inflight, size, out, in);
  double seconds = now() - start;
  waitpid(child, NULL, 0);
  printf("mb_per_s=%.1f\n", (double)calls * size / 1e6 / seconds);
  return 0;
}
