// SysSendMany / SysRecvMany where there is no sendmmsg / recvmmsg (macOS,
// Windows): one syscall per message, behind the same interface. Linux has
// its own in sys_unix.cc.
#include "sys.h"

#if !defined(__linux__)

namespace afunix {

int SysSendMany(int fd, SendItem* items, size_t count) {
  for (size_t i = 0; i < count; i++) {
    int64_t r = SysSendMsg(fd, items[i].iov, items[i].iovcnt, items[i].fds, items[i].nfds, nullptr);
    if (r < 0) return i > 0 ? static_cast<int>(i) : static_cast<int>(r);
    items[i].sent = static_cast<size_t>(r);
    // Cut short (a stream): nothing may follow it.
    if (!items[i].Whole()) return static_cast<int>(i + 1);
  }
  return static_cast<int>(count);
}

int SysRecvMany(int fd, RecvSlot* slots, size_t count) {
  for (size_t i = 0; i < count; i++) {
    int64_t n = SysRecvMsg(fd, slots[i].buf, slots[i].cap, false, &slots[i].meta);
    if (n < 0) return i > 0 ? static_cast<int>(i) : static_cast<int>(n);
    slots[i].len = static_cast<size_t>(n);
    // After the end of the stream there is nothing more to ask for.
    if (n == 0 && slots[i].meta.fds.empty()) return static_cast<int>(i + 1);
  }
  return static_cast<int>(count);
}

}  // namespace afunix

#endif  // !__linux__
