// W4's shape with nothing but syscalls: each call sends one fd (a pipe's
// read end) by SCM_RIGHTS over a unix stream socketpair, one sendmsg per
// fd; the other process receives it, fstat()s and closes it, and answers
// with the inode, which is checked. 256 in flight. The ceiling an RPC
// library's fd-passing figure is measured against on this machine.
//
//   fds <warmup> <calls> <inflight>   prints "fds_per_s=<n>"
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void die(const char* what) {
  perror(what);
  exit(1);
}

// One byte and room for one fd: what each message of this program is.
struct fd_message {
  char byte;
  struct iovec iov;
  union {
    char buf[CMSG_SPACE(sizeof(int))];
    struct cmsghdr align;
  } control;
  struct msghdr msg;
};

static void fd_message_init(struct fd_message* m) {
  memset(m, 0, sizeof *m);
  m->byte = 1;
  m->iov.iov_base = &m->byte;
  m->iov.iov_len = 1;
  m->msg.msg_iov = &m->iov;
  m->msg.msg_iovlen = 1;
  m->msg.msg_control = m->control.buf;
  m->msg.msg_controllen = sizeof m->control.buf;
}

static void send_fd(int sock, int fd) {
  struct fd_message m;
  fd_message_init(&m);
  struct cmsghdr* h = CMSG_FIRSTHDR(&m.msg);
  h->cmsg_level = SOL_SOCKET;
  h->cmsg_type = SCM_RIGHTS;
  h->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(h), &fd, sizeof fd);
  if (sendmsg(sock, &m.msg, 0) != 1) die("sendmsg");
}

static int receive_fd(int sock) {
  struct fd_message m;
  fd_message_init(&m);
  if (recvmsg(sock, &m.msg, MSG_CMSG_CLOEXEC) != 1) die("recvmsg");
  struct cmsghdr* h = CMSG_FIRSTHDR(&m.msg);
  if (!h || h->cmsg_type != SCM_RIGHTS) {
    fprintf(stderr, "a message came without its fd\n");
    exit(1);
  }
  int fd;
  memcpy(&fd, CMSG_DATA(h), sizeof fd);
  return fd;
}

static void read_all(int fd, void* p, size_t n) {
  while (n > 0) {
    ssize_t r = read(fd, p, n);
    if (r <= 0) die("read");
    p = (char*)p + r;
    n -= (size_t)r;
  }
}

static void fd_server(int sock, long total) {
  for (long i = 0; i < total; i++) {
    int fd = receive_fd(sock);
    struct stat st;
    if (fstat(fd, &st) != 0) die("fstat");
    close(fd);
    uint64_t ino = st.st_ino;
    if (write(sock, &ino, sizeof ino) != sizeof ino) die("write");
  }
  exit(0);
}

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

static void run(int sock, long calls, int inflight, int fd, uint64_t ino) {
  long sent = 0, got = 0;
  for (; sent < calls && sent < inflight; sent++) send_fd(sock, fd);
  while (got < calls) {
    uint64_t back;
    read_all(sock, &back, sizeof back);
    if (back != ino) {
      fprintf(stderr, "answer %ld: inode %llu, not %llu\n", got, (unsigned long long)back, (unsigned long long)ino);
      exit(1);
    }
    got++;
    if (sent < calls) {
      send_fd(sock, fd);
      sent++;
    }
  }
}

int main(int argc, char** argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: fds <warmup> <calls> <inflight>\n");
    return 2;
  }
  long warmup = atol(argv[1]), calls = atol(argv[2]);
  int inflight = atoi(argv[3]);
  int sv[2], pipefd[2];
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) die("socketpair");
  if (pipe(pipefd) != 0) die("pipe");
  struct stat st;
  if (fstat(pipefd[0], &st) != 0) die("fstat");
  pid_t child = fork();
  if (child < 0) die("fork");
  if (child == 0) {
    close(sv[0]);
    fd_server(sv[1], warmup + calls);
  }
  close(sv[1]);
  run(sv[0], warmup, inflight, pipefd[0], st.st_ino);
  double start = now();
  run(sv[0], calls, inflight, pipefd[0], st.st_ino);
  double seconds = now() - start;
  waitpid(child, NULL, 0);
  printf("fds_per_s=%.0f\n", calls / seconds);
  return 0;
}
