// The unix implementation of sys.h: Linux first, macOS/BSD where marked.
#ifndef _WIN32

#include "sys.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#if defined(__APPLE__) || defined(__FreeBSD__)
#include <sys/ucred.h>
#endif

namespace afunix {

namespace {

#if defined(__linux__)
constexpr int kSendFlags = MSG_NOSIGNAL;
constexpr int kRecvFlags = MSG_CMSG_CLOEXEC;
#else
constexpr int kSendFlags = 0;  // SO_NOSIGPIPE is set on the socket instead
constexpr int kRecvFlags = 0;  // CLOEXEC is set after the fact (see TakeRights)
#endif

inline int Err() { return -errno; }

int SockType(Kind kind) {
  switch (kind) {
    case Kind::kStream: return SOCK_STREAM;
    case Kind::kSeqpacket: return SOCK_SEQPACKET;
    case Kind::kDgram: return SOCK_DGRAM;
  }
  return -1;
}

int SetFlags(int fd) {
  int fl = fcntl(fd, F_GETFL);
  if (fl == -1 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) == -1) return Err();
  int fdfl = fcntl(fd, F_GETFD);
  if (fdfl == -1 || fcntl(fd, F_SETFD, fdfl | FD_CLOEXEC) == -1) return Err();
#ifdef SO_NOSIGPIPE
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof(one));
#endif
  return 0;
}

// Fills a sockaddr_un; a path that does not fit is ENAMETOOLONG, never cut.
int FillAddr(const uint8_t* path, size_t len, sockaddr_un* sa, socklen_t* salen) {
  memset(sa, 0, sizeof(*sa));
  sa->sun_family = AF_UNIX;
  bool abstract = len > 0 && path[0] == 0;
  // A filesystem path needs room for its terminating NUL on most systems.
  size_t room = sizeof(sa->sun_path) - (abstract ? 0 : 1);
  if (len > room) return UV_ENAMETOOLONG;
  memcpy(sa->sun_path, path, len);
  *salen = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + len + (abstract ? 0 : 1));
  return 0;
}

void ReadAddr(const sockaddr_un& sa, socklen_t salen, Address* out) {
  size_t off = offsetof(sockaddr_un, sun_path);
  size_t len = salen > off ? salen - off : 0;
  if (len > sizeof(out->bytes)) len = sizeof(out->bytes);
  // Pathnames carry a NUL terminator (and BSDs report the full sun_path).
  if (len > 0 && sa.sun_path[0] != 0) len = strnlen(sa.sun_path, len);
  memcpy(out->bytes, sa.sun_path, len);
  out->len = len;
}

void CloseAll(const std::vector<int>& fds) {
  for (int fd : fds) close(fd);
}

void TakeRights(cmsghdr* c, RecvMeta* meta) {
  size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
  const int* p = reinterpret_cast<const int*>(CMSG_DATA(c));
  for (size_t i = 0; i < n; i++) {
    int fd;
    memcpy(&fd, p + i, sizeof(fd));
#if !defined(__linux__)
    fcntl(fd, F_SETFD, FD_CLOEXEC);  // no MSG_CMSG_CLOEXEC here
#endif
    meta->fds.push_back(fd);
  }
}

void TakeCred(cmsghdr* c, RecvMeta* meta) {
#if defined(__linux__)
  ucred cr;
  memcpy(&cr, CMSG_DATA(c), sizeof(cr));
  meta->has_cred = true;
  meta->cred.pid = cr.pid;
  meta->cred.uid = cr.uid;
  meta->cred.gid = cr.gid;
#else
  (void)c;
  (void)meta;
#endif
}

// Room for what one received message may carry: the most fds a message can
// have, and credentials.
#if defined(__linux__)
constexpr size_t kControlSpace = CMSG_SPACE(sizeof(int) * kMaxFds) + CMSG_SPACE(sizeof(ucred));
#else
constexpr size_t kControlSpace = CMSG_SPACE(sizeof(int) * kMaxFds);
#endif

// The fds and credentials a received message carried, and its flags.
void ReadControl(msghdr& msg, RecvMeta* meta) {
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET) continue;
    if (c->cmsg_type == SCM_RIGHTS) TakeRights(c, meta);
#if defined(__linux__)
    else if (c->cmsg_type == SCM_CREDENTIALS) TakeCred(c, meta);
#endif
  }
  meta->truncated = (msg.msg_flags & MSG_TRUNC) != 0;
  meta->ctrunc = (msg.msg_flags & MSG_CTRUNC) != 0;
  if (meta->ctrunc) {
    // Some descriptors did not make it; the rest must not leak.
    CloseAll(meta->fds);
    meta->fds.clear();
  }
}

// Puts fds in msg's control buffer (which has room for them).
void WriteRights(msghdr* msg, char* control, const int* fds, size_t nfds) {
  msg->msg_control = control;
  msg->msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
  memset(control, 0, msg->msg_controllen);
  cmsghdr* c = CMSG_FIRSTHDR(msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
  memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
}

}  // namespace

int SysSocket(Kind kind) {
#if defined(__linux__)
  int fd = socket(AF_UNIX, SockType(kind) | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  return fd == -1 ? Err() : fd;
#else
  int fd = socket(AF_UNIX, SockType(kind), 0);
  if (fd == -1) return Err();
  int r = SetFlags(fd);
  if (r < 0) { close(fd); return r; }
  return fd;
#endif
}

int SysSocketPair(Kind kind, int out[2]) {
#if defined(__linux__)
  int type = SockType(kind) | SOCK_NONBLOCK | SOCK_CLOEXEC;
  return socketpair(AF_UNIX, type, 0, out) == -1 ? Err() : 0;
#else
  if (socketpair(AF_UNIX, SockType(kind), 0, out) == -1) return Err();
  int r = SetFlags(out[0]);
  if (r == 0) r = SetFlags(out[1]);
  if (r < 0) { close(out[0]); close(out[1]); }
  return r;
#endif
}

int SysSetBlocking(int fd) {
  int fl = fcntl(fd, F_GETFL);
  if (fl == -1 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) == -1) return Err();
  return 0;
}

int SysBind(int fd, const uint8_t* path, size_t len) {
  sockaddr_un sa;
  socklen_t salen;
  if (len == 0) {
    // Linux autobind: an address of just the family asks for an abstract name.
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    salen = sizeof(sa_family_t);
  } else {
    int r = FillAddr(path, len, &sa, &salen);
    if (r < 0) return r;
  }
  return bind(fd, reinterpret_cast<sockaddr*>(&sa), salen) == -1 ? Err() : 0;
}

int SysListen(int fd, int backlog) {
  return listen(fd, backlog) == -1 ? Err() : 0;
}

int SysAccept(int fd) {
  int c;
#if defined(__linux__)
  do c = accept4(fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
  while (c == -1 && errno == EINTR);
  return c == -1 ? Err() : c;
#else
  do c = accept(fd, nullptr, nullptr);
  while (c == -1 && errno == EINTR);
  if (c == -1) return Err();
  int r = SetFlags(c);
  if (r < 0) { close(c); return r; }
  return c;
#endif
}

int SysConnect(int fd, const uint8_t* path, size_t len) {
  sockaddr_un sa;
  socklen_t salen;
  int r = FillAddr(path, len, &sa, &salen);
  if (r < 0) return r;
  do r = connect(fd, reinterpret_cast<sockaddr*>(&sa), salen);
  while (r == -1 && errno == EINTR);
  return r == -1 ? Err() : 0;
}

int SysShutdown(int fd, int how) {
  int h = how == 0 ? SHUT_RD : how == 1 ? SHUT_WR : SHUT_RDWR;
  return shutdown(fd, h) == -1 ? Err() : 0;
}

int SysClose(int fd) {
  // EINTR after close() still means the fd is gone (Linux, POSIX 2024).
  return (close(fd) == -1 && errno != EINTR) ? Err() : 0;
}

int SysTryLock(int fd) {
  int r;
  do r = flock(fd, LOCK_EX | LOCK_NB);
  while (r == -1 && errno == EINTR);
  // EWOULDBLOCK is EAGAIN on Linux, not on every system.
  return r == -1 ? (errno == EWOULDBLOCK ? UV_EAGAIN : Err()) : 0;
}

bool SysBoundFile(const uint8_t* path, size_t len, std::string* abs, uint64_t* dev, uint64_t* ino) {
  if (len == 0 || path[0] == 0) return false;  // autobound, or abstract: no file
  std::string name(reinterpret_cast<const char*>(path), len);
  if (name[0] != '/') {
    // (Absolute, so that a chdir() later does not lead elsewhere.)
    char cwd[4096];
    if (getcwd(cwd, sizeof(cwd)) == nullptr) return false;
    name = std::string(cwd) + "/" + name;
  }
  struct stat st;
  if (lstat(name.c_str(), &st) != 0 || !S_ISSOCK(st.st_mode)) return false;
  *abs = std::move(name);
  *dev = static_cast<uint64_t>(st.st_dev);
  *ino = static_cast<uint64_t>(st.st_ino);
  return true;
}

void SysUnlinkIfSame(const char* path, uint64_t dev, uint64_t ino) {
  struct stat st;
  if (lstat(path, &st) != 0 || !S_ISSOCK(st.st_mode)) return;
  if (static_cast<uint64_t>(st.st_dev) == dev && static_cast<uint64_t>(st.st_ino) == ino) unlink(path);
}

int SysSockName(int fd, bool peer, Address* out) {
  sockaddr_un sa;
  socklen_t salen = sizeof(sa);
  memset(&sa, 0, sizeof(sa));
  int r = peer ? getpeername(fd, reinterpret_cast<sockaddr*>(&sa), &salen)
               : getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &salen);
  if (r == -1) return Err();
  ReadAddr(sa, salen, out);
  return 0;
}

int SysPeerCred(int fd, PeerCred* out) {
#if defined(__linux__)
  ucred cr;
  socklen_t len = sizeof(cr);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) == -1) return Err();
  out->pid = cr.pid;
  out->uid = cr.uid;
  out->gid = cr.gid;
  return 0;
#elif defined(__APPLE__) || defined(__FreeBSD__)
  uid_t uid;
  gid_t gid;
  if (getpeereid(fd, &uid, &gid) == -1) return Err();
  out->uid = uid;
  out->gid = gid;
#if defined(LOCAL_PEERPID)
  pid_t pid;
  socklen_t len = sizeof(pid);
  if (getsockopt(fd, SOL_LOCAL, LOCAL_PEERPID, &pid, &len) == 0) out->pid = pid;
#endif
  return 0;
#else
  (void)fd;
  (void)out;
  return UV_ENOTSUP;
#endif
}

int SysPeerPidfd(int fd) {
#if defined(__linux__)
#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77  // Linux 6.5; older libc headers lack the name
#endif
  int pidfd = -1;
  socklen_t len = sizeof(pidfd);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERPIDFD, &pidfd, &len) == -1) return Err();
  // The kernel hands it out with O_CLOEXEC already set.
  return pidfd;
#else
  (void)fd;
  return UV_ENOTSUP;
#endif
}

int SysSetPassCred(int fd, bool on) {
#if defined(__linux__)
  int v = on ? 1 : 0;
  return setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &v, sizeof(v)) == -1 ? Err() : 0;
#else
  (void)fd;
  (void)on;
  return UV_ENOTSUP;
#endif
}

int SysSocketError(int fd) {
  int err = 0;
  socklen_t len = sizeof(err);
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1) return Err();
  return -err;
}

bool SysAtEnd(int fd) {
#if defined(POLLRDHUP)
  pollfd p = {fd, POLLRDHUP, 0};
  if (poll(&p, 1, 0) < 0) return true;
  if ((p.revents & (POLLRDHUP | POLLHUP | POLLERR)) == 0) return false;  // still sending
  // Shut down, but messages sent before it may still be queued behind an
  // empty one: the end is only where no bytes are left.
  int queued = 0;
  return ioctl(fd, FIONREAD, &queued) != 0 || queued == 0;
#else
  (void)fd;
  return true;
#endif
}

int SysSocketKind(int fd) {
  sockaddr_un sa;
  socklen_t salen = sizeof(sa);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &salen) == -1) return Err();
  if (sa.sun_family != AF_UNIX) return UV_EAFNOSUPPORT;
  int type = 0;
  socklen_t len = sizeof(type);
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == -1) return Err();
  if (type == SOCK_STREAM) return static_cast<int>(Kind::kStream);
  if (type == SOCK_SEQPACKET) return static_cast<int>(Kind::kSeqpacket);
  if (type == SOCK_DGRAM) return static_cast<int>(Kind::kDgram);
  return UV_EPROTOTYPE;
}

int SysIsListening(int fd) {
  int v = 0;
  socklen_t len = sizeof(v);
  if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &v, &len) == -1) return Err();
  return v != 0 ? 1 : 0;
}

int SysAdopt(int fd) { return SetFlags(fd); }

int SysSetBufferSize(int fd, bool send, int bytes) {
  int opt = send ? SO_SNDBUF : SO_RCVBUF;
  return setsockopt(fd, SOL_SOCKET, opt, &bytes, sizeof(bytes)) == -1 ? Err() : 0;
}

int SysGetBufferSize(int fd, bool send) {
  int v = 0;
  socklen_t len = sizeof(v);
  int opt = send ? SO_SNDBUF : SO_RCVBUF;
  return getsockopt(fd, SOL_SOCKET, opt, &v, &len) == -1 ? Err() : v;
}

int64_t SysSendMsg(int fd, const uv_buf_t* iov, size_t iovcnt, const int* fds,
                   size_t nfds, const Address* to) {
  msghdr msg;
  memset(&msg, 0, sizeof(msg));
  // uv_buf_t is laid out like struct iovec on unix (libuv guarantees it).
  msg.msg_iov = reinterpret_cast<iovec*>(const_cast<uv_buf_t*>(iov));
  msg.msg_iovlen = iovcnt;
  sockaddr_un sa;
  if (to != nullptr) {
    socklen_t salen;
    int r = FillAddr(to->bytes, to->len, &sa, &salen);
    if (r < 0) return r;
    msg.msg_name = &sa;
    msg.msg_namelen = salen;
  }
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)];
  if (nfds > 0) {
    if (nfds > static_cast<size_t>(kMaxFds)) return UV_EINVAL;
    WriteRights(&msg, control, fds, nfds);
  }
  ssize_t n;
  do n = sendmsg(fd, &msg, kSendFlags);
  while (n == -1 && errno == EINTR);
  return n == -1 ? Err() : n;
}

int64_t SysRecvMsg(int fd, uint8_t* buf, size_t cap, bool want_addr,
                   RecvMeta* meta) {
  iovec iov = {buf, cap};
  msghdr msg;
  memset(&msg, 0, sizeof(msg));
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  sockaddr_un sa;
  if (want_addr) {
    memset(&sa, 0, sizeof(sa));
    msg.msg_name = &sa;
    msg.msg_namelen = sizeof(sa);
  }
  alignas(cmsghdr) char control[kControlSpace];
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  ssize_t n;
  do n = recvmsg(fd, &msg, kRecvFlags);
  while (n == -1 && errno == EINTR);
  if (n == -1) return Err();
  ReadControl(msg, meta);
  if (want_addr) {
    meta->has_addr = true;
    ReadAddr(sa, msg.msg_namelen, &meta->addr);
  }
  return n;
}

// (Elsewhere: sys_batch.cc.)
#if defined(__linux__)

int SysSendMany(int fd, SendItem* items, size_t count) {
  if (count > kMaxBatchMessages) count = kMaxBatchMessages;
  mmsghdr msgs[kMaxBatchMessages];
  // Control space only for the messages that carry fds, packed one after another.
  size_t control_bytes = 0;
  for (size_t i = 0; i < count; i++) {
    if (items[i].nfds > static_cast<size_t>(kMaxFds)) return UV_EINVAL;
    if (items[i].nfds > 0) control_bytes += CMSG_SPACE(sizeof(int) * items[i].nfds);
  }
  std::vector<cmsghdr> control((control_bytes + sizeof(cmsghdr) - 1) / sizeof(cmsghdr));
  char* next = reinterpret_cast<char*>(control.data());
  for (size_t i = 0; i < count; i++) {
    memset(&msgs[i], 0, sizeof(msgs[i]));
    msghdr& m = msgs[i].msg_hdr;
    // uv_buf_t is laid out like struct iovec on unix (libuv guarantees it).
    m.msg_iov = reinterpret_cast<iovec*>(const_cast<uv_buf_t*>(items[i].iov));
    m.msg_iovlen = items[i].iovcnt;
    if (items[i].nfds > 0) {
      WriteRights(&m, next, items[i].fds, items[i].nfds);
      next += m.msg_controllen;
    }
  }
  int n;
  do n = sendmmsg(fd, msgs, static_cast<unsigned>(count), kSendFlags);
  while (n == -1 && errno == EINTR);
  if (n == -1) return Err();
  for (int i = 0; i < n; i++) items[i].sent = msgs[i].msg_len;
  return n;
}

int SysRecvMany(int fd, RecvSlot* slots, size_t count) {
  if (count > kMaxBatchMessages) count = kMaxBatchMessages;
  mmsghdr msgs[kMaxBatchMessages];
  iovec iovs[kMaxBatchMessages];
  // Per thread (each worker has its own), so that no batch allocates it.
  thread_local std::vector<cmsghdr> control(kMaxBatchMessages * kControlSpace / sizeof(cmsghdr) + 1);
  char* base = reinterpret_cast<char*>(control.data());
  for (size_t i = 0; i < count; i++) {
    memset(&msgs[i], 0, sizeof(msgs[i]));
    iovs[i] = {slots[i].buf, slots[i].cap};
    msghdr& m = msgs[i].msg_hdr;
    m.msg_iov = &iovs[i];
    m.msg_iovlen = 1;
    m.msg_control = base + i * kControlSpace;
    m.msg_controllen = kControlSpace;
  }
  int n;
  do n = recvmmsg(fd, msgs, static_cast<unsigned>(count), kRecvFlags, nullptr);
  while (n == -1 && errno == EINTR);
  if (n == -1) return Err();
  for (int i = 0; i < n; i++) {
    slots[i].len = msgs[i].msg_len;
    ReadControl(msgs[i].msg_hdr, &slots[i].meta);
  }
  return n;
}

#endif

Reservation::~Reservation() {
  if (data_ != nullptr) munmap(data_, size_);
}

void Reservation::Release() {
  if (data_ != nullptr) madvise(data_, size_, MADV_DONTNEED);
}

bool Reservation::Reserve(size_t bytes) {
  if (bytes <= size_) return true;
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) return false;
  if (data_ != nullptr) munmap(data_, size_);
  data_ = static_cast<uint8_t*>(p);
  size_ = bytes;
  return true;
}

}  // namespace afunix

#endif  // !_WIN32
