// The Windows implementation of sys.h: AF_UNIX on Winsock (Windows 10 1803+).
// Windows has stream sockets only, carries no descriptors or credentials in
// messages, and knows no abstract names. What it lacks is refused with a
// libuv code, so the TypeScript feature probe sees an honest "no"; only
// socketpair() is emulated (see below).
#ifdef _WIN32

#include "sys.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

// uv.h (through sys.h) has already brought in winsock2.h and windows.h;
// afunix.h must come after them, it builds on their types.
#include <afunix.h>

#ifndef SIO_AF_UNIX_GETPEERPID
#define SIO_AF_UNIX_GETPEERPID _WSAIOR(IOC_VENDOR, 256)  // older SDK/mingw headers
#endif

namespace afunix {

namespace {

// libuv has no EINPROGRESS. sys_unix.cc returns -EINPROGRESS (-errno) for a
// pending connect, so Windows returns the same value, from the CRT's errno.h
// (112 in MSVC and mingw): well clear of libuv's -4xxx codes on Windows.
constexpr int kErrInProgress = -EINPROGRESS;

// A failure must never read as success, even if the error slot was empty.
int Fail(DWORD code) {
  int r = uv_translate_sys_error(static_cast<int>(code));
  return r < 0 ? r : UV_UNKNOWN;
}

int SockErr() { return Fail(static_cast<DWORD>(WSAGetLastError())); }
int WinErr() { return Fail(GetLastError()); }

// sys.h speaks int fds. Windows keeps handle values within 32 bits (so 32-
// and 64-bit processes can share them), so the round trip is lossless; -1
// becomes INVALID_SOCKET, which Winsock rejects with WSAENOTSOCK.
SOCKET ToSocket(int fd) { return static_cast<SOCKET>(fd); }

// Hands a new socket to the caller as an int, or closes it: a handle that
// does not fit would be lost by truncation, never used.
int ToFd(SOCKET s) {
  if (s > static_cast<SOCKET>(INT_MAX)) {
    closesocket(s);
    return UV_EMFILE;
  }
  return static_cast<int>(s);
}

INIT_ONCE wsa_once = INIT_ONCE_STATIC_INIT;
int wsa_status = 0;

BOOL WINAPI StartWinsock(PINIT_ONCE, PVOID, PVOID*) {
  WSADATA data;
  int r = WSAStartup(MAKEWORD(2, 2), &data);
  wsa_status = r == 0 ? 0 : Fail(static_cast<DWORD>(r));
  return TRUE;
}

// Node's libuv has usually started Winsock already; the reference we take
// here is never dropped, so sockets stay usable until the process exits.
int EnsureWinsock() {
  InitOnceExecuteOnce(&wsa_once, StartWinsock, nullptr, nullptr);
  return wsa_status;
}

int CheckKind(Kind kind) {
  return kind == Kind::kStream ? 0 : UV_ESOCKTNOSUPPORT;
}

int SetNonBlocking(SOCKET s) {
  u_long on = 1;
  return ioctlsocket(s, FIONBIO, &on) == SOCKET_ERROR ? SockErr() : 0;
}

// For sockets made elsewhere (accept, an inherited handle): WSASocketW's
// flag only covers the sockets we create ourselves.
int SetNoInherit(SOCKET s) {
  HANDLE h = reinterpret_cast<HANDLE>(s);
  return SetHandleInformation(h, HANDLE_FLAG_INHERIT, 0) ? 0 : WinErr();
}

int SetFlags(SOCKET s) {
  int r = SetNonBlocking(s);
  return r < 0 ? r : SetNoInherit(s);
}

// A blocking, non-inheritable AF_UNIX stream socket. Overlapped, as socket()
// would make it, so libuv may treat it like any other socket.
int OpenStream(SOCKET* out) {
  *out = WSASocketW(AF_UNIX, SOCK_STREAM, 0, nullptr, 0,
                    WSA_FLAG_OVERLAPPED | WSA_FLAG_NO_HANDLE_INHERIT);
  return *out == INVALID_SOCKET ? SockErr() : 0;
}

// Fills a sockaddr_un; a path that does not fit is ENAMETOOLONG, never cut.
// The bytes are UTF-8, which is how Windows reads sun_path.
int FillAddr(const uint8_t* path, size_t len, sockaddr_un* sa, int* salen) {
  if (len > 0 && path[0] == 0) return UV_ENOTSUP;  // no abstract namespace
  memset(sa, 0, sizeof(*sa));
  sa->sun_family = AF_UNIX;
  if (len > sizeof(sa->sun_path) - 1) return UV_ENAMETOOLONG;
  memcpy(sa->sun_path, path, len);
  *salen = static_cast<int>(offsetof(sockaddr_un, sun_path) + len + 1);
  return 0;
}

// Windows reports unnamed sockets with a zeroed sun_path, so the name is
// whatever precedes the first NUL.
void ReadAddr(const sockaddr_un& sa, int salen, Address* out) {
  size_t off = offsetof(sockaddr_un, sun_path);
  size_t len = static_cast<size_t>(salen) > off ? static_cast<size_t>(salen) - off : 0;
  if (len > sizeof(sa.sun_path)) len = sizeof(sa.sun_path);
  len = strnlen(sa.sun_path, len);
  memcpy(out->bytes, sa.sun_path, len);
  out->len = len;
}

// --- socketpair emulation -------------------------------------------------
// Windows has no socketpair(); emulated rather than refused, because callers
// (and the feature probe) rely on it. A listener on a fresh path in the
// user's temp directory, one connect and one accept give a connected pair;
// the path is unlinked at once. %TEMP% is open only to the user (and
// administrators), so no stranger can connect first while the name exists.

struct TempName {
  wchar_t wide[MAX_PATH + 64];  // for DeleteFileW
  Address addr;                 // the same path in UTF-8, for sun_path
};

LONG temp_counter = 0;

// pid + counter keep names unique within this machine's processes; the
// timestamp keeps a recycled pid from meeting a name left by a crash.
int MakeTempName(TempName* t) {
  DWORD n = GetTempPathW(MAX_PATH + 1, t->wide);
  if (n == 0 || n > MAX_PATH) return n == 0 ? WinErr() : UV_ENAMETOOLONG;
  char name[64];
  int len = snprintf(name, sizeof(name), "afunix-%lu-%ld-%llx.sock",
                     static_cast<unsigned long>(GetCurrentProcessId()),
                     static_cast<long>(InterlockedIncrement(&temp_counter)),
                     static_cast<unsigned long long>(GetTickCount64()));
  for (int i = 0; i <= len; i++) t->wide[n + i] = static_cast<wchar_t>(name[i]);  // ASCII
  int u = WideCharToMultiByte(CP_UTF8, 0, t->wide, -1, reinterpret_cast<char*>(t->addr.bytes),
                              sizeof(t->addr.bytes), nullptr, nullptr);
  if (u == 0) return GetLastError() == ERROR_INSUFFICIENT_BUFFER ? UV_ENAMETOOLONG : WinErr();
  t->addr.len = static_cast<size_t>(u - 1);  // without the NUL
  return 0;
}

int ListenAt(SOCKET s, const Address& addr) {
  sockaddr_un sa;
  int salen;
  int r = FillAddr(addr.bytes, addr.len, &sa, &salen);
  if (r < 0) return r;
  if (bind(s, reinterpret_cast<sockaddr*>(&sa), salen) == SOCKET_ERROR) return SockErr();
  return listen(s, 1) == SOCKET_ERROR ? SockErr() : 0;
}

// A name left behind by a crashed process is skipped, not reused.
int ListenOnTempName(SOCKET* out, TempName* t) {
  int r = UV_EADDRINUSE;
  for (int attempt = 0; attempt < 8 && r == UV_EADDRINUSE; attempt++) {
    r = MakeTempName(t);
    if (r < 0) return r;
    r = OpenStream(out);
    if (r < 0) return r;
    r = ListenAt(*out, t->addr);
    if (r < 0) closesocket(*out);
  }
  return r;
}

// Both ends blocking: the listener has room for exactly this one connection,
// so neither call waits.
int ConnectPair(SOCKET listener, const Address& addr, SOCKET pair[2]) {
  sockaddr_un sa;
  int salen;
  int r = FillAddr(addr.bytes, addr.len, &sa, &salen);
  if (r < 0) return r;
  r = OpenStream(&pair[0]);
  if (r < 0) return r;
  if (connect(pair[0], reinterpret_cast<sockaddr*>(&sa), salen) == SOCKET_ERROR) {
    r = SockErr();
    closesocket(pair[0]);
    return r;
  }
  pair[1] = accept(listener, nullptr, nullptr);
  if (pair[1] == INVALID_SOCKET) {
    r = SockErr();
    closesocket(pair[0]);
    return r;
  }
  return 0;
}

int FinishPair(SOCKET pair[2], int out[2]) {
  int r = SetFlags(pair[0]);
  if (r == 0) r = SetFlags(pair[1]);
  if (r < 0) {
    closesocket(pair[0]);
    closesocket(pair[1]);
    return r;
  }
  out[0] = ToFd(pair[0]);
  out[1] = ToFd(pair[1]);
  if (out[0] >= 0 && out[1] >= 0) return 0;
  // ToFd closed the one that did not fit; the other must not leak.
  if (out[0] >= 0) closesocket(pair[0]);
  if (out[1] >= 0) closesocket(pair[1]);
  return UV_EMFILE;
}

}  // namespace

int SysSocket(Kind kind) {
  int r = CheckKind(kind);
  if (r == 0) r = EnsureWinsock();
  SOCKET s;
  if (r == 0) r = OpenStream(&s);
  if (r < 0) return r;
  r = SetNonBlocking(s);
  if (r < 0) {
    closesocket(s);
    return r;
  }
  return ToFd(s);
}

int SysSocketPair(Kind kind, int out[2]) {
  int r = CheckKind(kind);
  if (r == 0) r = EnsureWinsock();
  if (r < 0) return r;
  SOCKET listener;
  TempName name;
  r = ListenOnTempName(&listener, &name);
  if (r < 0) return r;
  SOCKET pair[2];
  r = ConnectPair(listener, name.addr, pair);
  closesocket(listener);
  DeleteFileW(name.wide);  // connected or not, the name has served
  return r < 0 ? r : FinishPair(pair, out);
}

int SysSetBlocking(int fd) {
  u_long off = 0;
  return ioctlsocket(ToSocket(fd), FIONBIO, &off) == SOCKET_ERROR ? SockErr() : 0;
}

int SysBind(int fd, const uint8_t* path, size_t len) {
  if (len == 0) return UV_EINVAL;  // no autobind: an unnamed bind is not an address here
  sockaddr_un sa;
  int salen;
  int r = FillAddr(path, len, &sa, &salen);
  if (r < 0) return r;
  if (bind(ToSocket(fd), reinterpret_cast<sockaddr*>(&sa), salen) == SOCKET_ERROR) return SockErr();
  return 0;
}

int SysListen(int fd, int backlog) {
  return listen(ToSocket(fd), backlog) == SOCKET_ERROR ? SockErr() : 0;
}

int SysAccept(int fd) {
  SOCKET c = accept(ToSocket(fd), nullptr, nullptr);
  if (c == INVALID_SOCKET) return SockErr();  // WSAEWOULDBLOCK is UV_EAGAIN
  int r = SetFlags(c);
  if (r < 0) {
    closesocket(c);
    return r;
  }
  return ToFd(c);
}

// A non-blocking connect that has to wait says WSAEWOULDBLOCK; callers
// expect unix's EINPROGRESS, then wait for writability and read SO_ERROR.
int SysConnect(int fd, const uint8_t* path, size_t len) {
  sockaddr_un sa;
  int salen;
  int r = FillAddr(path, len, &sa, &salen);
  if (r < 0) return r;
  if (connect(ToSocket(fd), reinterpret_cast<sockaddr*>(&sa), salen) == 0) return 0;
  return WSAGetLastError() == WSAEWOULDBLOCK ? kErrInProgress : SockErr();
}

int SysShutdown(int fd, int how) {
  int h = how == 0 ? SD_RECEIVE : how == 1 ? SD_SEND : SD_BOTH;
  return shutdown(ToSocket(fd), h) == SOCKET_ERROR ? SockErr() : 0;
}

int SysClose(int fd) {
  return closesocket(ToSocket(fd)) == SOCKET_ERROR ? SockErr() : 0;
}

// fs fds are CRT descriptors here, and a bound socket's file is no lock.
int SysTryLock(int) { return UV_ENOTSUP; }

// A socket file has no identity to compare there (Node cannot stat it
// either, see bind.ts): it is left, as by a process that dies.
bool SysBoundFile(const uint8_t*, size_t, std::string*, uint64_t*, uint64_t*) { return false; }
void SysUnlinkIfSame(const char*, uint64_t, uint64_t) {}

int SysSockName(int fd, bool peer, Address* out) {
  SOCKET s = ToSocket(fd);
  sockaddr_un sa;
  int salen = sizeof(sa);
  memset(&sa, 0, sizeof(sa));
  int r = peer ? getpeername(s, reinterpret_cast<sockaddr*>(&sa), &salen)
               : getsockname(s, reinterpret_cast<sockaddr*>(&sa), &salen);
  if (r == SOCKET_ERROR) {
    // An unbound socket has no name on Windows (WSAEINVAL); unix reports an
    // empty one, and callers expect that.
    if (peer || WSAGetLastError() != WSAEINVAL) return SockErr();
    salen = 0;
  }
  ReadAddr(sa, salen, out);
  return 0;
}

// Windows tells the peer's pid and nothing else: uid and gid stay -1.
int SysPeerCred(int fd, PeerCred* out) {
  ULONG pid = 0;
  DWORD bytes = 0;
  if (WSAIoctl(ToSocket(fd), SIO_AF_UNIX_GETPEERPID, nullptr, 0, &pid, sizeof(pid), &bytes,
               nullptr, nullptr) == SOCKET_ERROR) {
    return SockErr();
  }
  out->pid = pid;
  out->uid = -1;
  out->gid = -1;
  return 0;
}

int SysPeerPidfd(int fd) {
  (void)fd;
  return UV_ENOTSUP;  // pidfds are Linux's
}

int SysSetPassCred(int fd, bool on) {
  (void)fd;
  (void)on;
  return UV_ENOTSUP;  // no per-message credentials on Windows
}

bool SysAtEnd(int fd) {
  (void)fd;
  return true;  // no seqpacket on Windows: a zero-length read is the end
}

int SysSocketError(int fd) {
  int err = 0;
  int len = sizeof(err);
  if (getsockopt(ToSocket(fd), SOL_SOCKET, SO_ERROR, reinterpret_cast<char*>(&err), &len) ==
      SOCKET_ERROR) {
    return SockErr();
  }
  return err == 0 ? 0 : Fail(static_cast<DWORD>(err));
}

// The protocol info answers even for an unbound socket, where getsockname
// (unix's way) would fail on Windows.
int SysSocketKind(int fd) {
  int r = EnsureWinsock();
  if (r < 0) return r;
  WSAPROTOCOL_INFOW info;
  int len = sizeof(info);
  if (getsockopt(ToSocket(fd), SOL_SOCKET, SO_PROTOCOL_INFOW, reinterpret_cast<char*>(&info),
                 &len) == SOCKET_ERROR) {
    return SockErr();
  }
  if (info.iAddressFamily != AF_UNIX) return UV_EAFNOSUPPORT;
  if (info.iSocketType != SOCK_STREAM) return UV_EPROTOTYPE;
  return static_cast<int>(Kind::kStream);
}

int SysIsListening(int fd) {
  int r = EnsureWinsock();
  if (r < 0) return r;
  BOOL v = FALSE;
  int len = sizeof(v);
  if (getsockopt(ToSocket(fd), SOL_SOCKET, SO_ACCEPTCONN, reinterpret_cast<char*>(&v), &len) ==
      SOCKET_ERROR) {
    return SockErr();
  }
  return v ? 1 : 0;
}

int SysAdopt(int fd) {
  int r = EnsureWinsock();
  return r < 0 ? r : SetFlags(ToSocket(fd));
}

int SysSetBufferSize(int fd, bool send, int bytes) {
  int opt = send ? SO_SNDBUF : SO_RCVBUF;
  return setsockopt(ToSocket(fd), SOL_SOCKET, opt, reinterpret_cast<const char*>(&bytes),
                    sizeof(bytes)) == SOCKET_ERROR
             ? SockErr()
             : 0;
}

int SysGetBufferSize(int fd, bool send) {
  int v = 0;
  int len = sizeof(v);
  int opt = send ? SO_SNDBUF : SO_RCVBUF;
  if (getsockopt(ToSocket(fd), SOL_SOCKET, opt, reinterpret_cast<char*>(&v), &len) ==
      SOCKET_ERROR) {
    return SockErr();
  }
  return v;
}

int64_t SysSendMsg(int fd, const uv_buf_t* iov, size_t iovcnt, const int* fds,
                   size_t nfds, const Address* to) {
  (void)fds;
  if (nfds > 0) return UV_ENOTSUP;        // Windows AF_UNIX carries no handles
  if (to != nullptr) return UV_ENOTSUP;   // a destination needs datagrams
  // libuv lays out uv_buf_t on Windows exactly as WSABUF, for this very use.
  WSABUF* bufs = reinterpret_cast<WSABUF*>(const_cast<uv_buf_t*>(iov));
  DWORD sent = 0;
  if (WSASend(ToSocket(fd), bufs, static_cast<DWORD>(iovcnt), &sent, 0, nullptr, nullptr) ==
      SOCKET_ERROR) {
    return SockErr();  // WSAEWOULDBLOCK is UV_EAGAIN
  }
  return sent;
}

// Streams only: no sender address to report (that is for datagrams), no
// descriptors or credentials to collect, nothing to truncate.
int64_t SysRecvMsg(int fd, uint8_t* buf, size_t cap, bool want_addr,
                   RecvMeta* meta) {
  (void)want_addr;
  (void)meta;
  int len = cap > static_cast<size_t>(INT_MAX) ? INT_MAX : static_cast<int>(cap);
  int n = recv(ToSocket(fd), reinterpret_cast<char*>(buf), len, 0);
  return n == SOCKET_ERROR ? SockErr() : n;
}

Reservation::~Reservation() {
  if (data_ != nullptr) VirtualFree(data_, 0, MEM_RELEASE);
}

void Reservation::Release() {
  // Nothing receives into it on Windows (no SOCK_SEQPACKET).
}

bool Reservation::Reserve(size_t bytes) {
  if (bytes <= size_) return true;
  void* p = VirtualAlloc(nullptr, bytes, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
  if (p == nullptr) return false;
  if (data_ != nullptr) VirtualFree(data_, 0, MEM_RELEASE);
  data_ = static_cast<uint8_t*>(p);
  size_ = bytes;
  return true;
}

}  // namespace afunix

#endif  // _WIN32
