// Thin syscall layer. Every function returns >= 0 on success or a negative
// libuv error code (UV_E*), which on unix is -errno. Nothing here throws or
// touches JavaScript: errors become exceptions at one boundary, in TypeScript.
#ifndef AFUNIX_SYS_H_
#define AFUNIX_SYS_H_

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include <string>
#include <vector>

namespace afunix {

// Socket kinds as JavaScript names them; mapped to SOCK_* per platform.
enum class Kind : int { kStream = 0, kSeqpacket = 1, kDgram = 2 };

// Largest number of descriptors one message may carry (Linux SCM_MAX_FD).
constexpr int kMaxFds = 253;

// An address as the raw bytes of sun_path: empty for unnamed sockets, a
// leading NUL for Linux abstract names, otherwise a path without its NUL.
struct Address {
  uint8_t bytes[108];
  size_t len = 0;
};

struct PeerCred {
  int64_t pid = -1;
  int64_t uid = -1;
  int64_t gid = -1;
};

// What one recvmsg() brought besides the bytes.
struct RecvMeta {
  std::vector<int> fds;    // received descriptors, now owned by the caller
  bool has_cred = false;   // SCM_CREDENTIALS was attached
  PeerCred cred;
  bool has_addr = false;   // the sender's address (datagram sockets)
  Address addr;
  bool truncated = false;  // MSG_TRUNC: the message did not fit
  bool ctrunc = false;     // MSG_CTRUNC: descriptors were lost
};

int SysSocket(Kind kind);
int SysSocketPair(Kind kind, int out[2]);  // non-blocking, close-on-exec
int SysSetBlocking(int fd);  // for fds handed to another program as they are
int SysBind(int fd, const uint8_t* path, size_t len);  // len == 0: autobind
int SysListen(int fd, int backlog);
int SysAccept(int fd);
int SysConnect(int fd, const uint8_t* path, size_t len);
int SysShutdown(int fd, int how);  // 0 = read, 1 = write, 2 = both
int SysClose(int fd);
// An exclusive flock() on a file, without waiting: UV_EAGAIN if another
// open file holds it. Released when the file is closed (or its process ends).
int SysTryLock(int fd);
// The socket file bind() just made for `path` (an address as SysBind()
// takes it): its absolute path and identity. False for an abstract name, or
// where a socket file cannot be examined.
bool SysBoundFile(const uint8_t* path, size_t len, std::string* abs, uint64_t* dev, uint64_t* ino);
// Removes the socket file at `path` if it is still the one with this
// identity (device and inode), as bind() made it; nothing otherwise.
void SysUnlinkIfSame(const char* path, uint64_t dev, uint64_t ino);
int SysSockName(int fd, bool peer, Address* out);
int SysPeerCred(int fd, PeerCred* out);
int SysPeerPidfd(int fd);
int SysSetPassCred(int fd, bool on);
int SysSocketError(int fd);
// After a zero-length read: whether it was the end of the stream, that is
// the peer has shut down its sending side and no bytes are queued (where
// that cannot be told: true). Tells an empty seqpacket message from the end.
bool SysAtEnd(int fd);
int SysSocketKind(int fd);  // Kind of an inherited fd, or an error
int SysIsListening(int fd); // 1 if listen() was called on it, 0 if not, or an error
int SysAdopt(int fd);       // make an inherited fd non-blocking and CLOEXEC
int SysSetBufferSize(int fd, bool send, int bytes);
int SysGetBufferSize(int fd, bool send);

// Sends bytes (gathered from iov) with optional descriptors and an optional
// destination. Returns the number of bytes sent.
int64_t SysSendMsg(int fd, const uv_buf_t* iov, size_t iovcnt, const int* fds,
                   size_t nfds, const Address* to);

// Receives into buf. Returns the number of bytes read (0 on EOF for streams).
int64_t SysRecvMsg(int fd, uint8_t* buf, size_t cap, bool want_addr,
                   RecvMeta* meta);

// Batches of messages: on Linux one sendmmsg() or recvmmsg() moves a batch,
// elsewhere a loop of sendmsg() or recvmsg() does. A syscall costs more than
// a small message's own work, so the difference is most of what a small
// message costs. On a stream each item is one sendmsg() (its fds with its
// first byte), and the caller must know the kernel takes each whole or not
// at all: a message sent in part would be followed by the next one.
constexpr size_t kMaxBatchMessages = 64;

struct SendItem {
  const uv_buf_t* iov = nullptr;
  size_t iovcnt = 0;
  const int* fds = nullptr;
  size_t nfds = 0;
  size_t sent = 0;  // filled in: the bytes the kernel took
  // True once the kernel took all of it (a stream may take part).
  bool Whole() const {
    size_t size = 0;
    for (size_t k = 0; k < iovcnt; k++) size += iov[k].len;
    return sent == size;
  }
};

// Sends items in order. Returns how many were sent, or an error if none was
// (an error after the first is reported by the next call).
int SysSendMany(int fd, SendItem* items, size_t count);

struct RecvSlot {
  uint8_t* buf = nullptr;
  size_t cap = 0;
  size_t len = 0;  // filled in: the message's length
  RecvMeta meta;
};

// Receives up to count messages, one per slot. Returns how many arrived, or
// an error (UV_EAGAIN: none waiting) if none did. An end of stream reads as
// a message of length 0 without fds.
int SysRecvMany(int fd, RecvSlot* slots, size_t count);

// Address space that is reserved, not touched: only the pages that received
// messages land in cost memory, however large the largest message may be.
class Reservation {
 public:
  Reservation() = default;
  Reservation(const Reservation&) = delete;
  Reservation& operator=(const Reservation&) = delete;
  ~Reservation();
  // Makes at least `bytes` available; false if the space cannot be had.
  bool Reserve(size_t bytes);
  // Gives the touched pages back; the space stays reserved (and reads as zeros).
  void Release();
  uint8_t* data() const { return data_; }

 private:
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace afunix

#endif  // AFUNIX_SYS_H_
