// Per-environment state: one per Node.js main thread or worker. Nothing in
// the addon is global, so it loads in any number of threads (context-aware).
#ifndef AFUNIX_ENV_STATE_H_
#define AFUNIX_ENV_STATE_H_

#include <napi.h>

#include "sys.h"

#include <memory>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace afunix {

struct Conn;
class SocketHandle;

// Open socket handles by number, so that write() can be one function for
// all of them: a native function made per handle cost ~0.7 KB of V8 heap per
// connection, and a prototype method must find its object through
// napi_unwrap (~800 instructions) on every write. A number carries its
// slot's generation, so one that outlived its socket finds nothing.
class HandleTable {
 public:
  double Add(SocketHandle* h);
  void Remove(double id);
  SocketHandle* Find(double id) const;

 private:
  static constexpr double kSlots = 16777216.0;  // 2^24
  struct Slot {
    SocketHandle* handle = nullptr;
    uint32_t generation = 0;
  };
  std::vector<Slot> slots_;
  std::vector<uint32_t> free_;
};

// What a handle calls when its socket is readable or writable. Handles
// given the same pair (every UnixSocket is) share one: a reference of its
// own to each function cost every connection ~200 bytes of native memory.
struct Callbacks {
  Napi::FunctionReference on_read;
  Napi::FunctionReference on_writable;
  size_t handles = 0;  // open handles that use this pair
};

struct EnvState {
  Napi::FunctionReference handle_ctor;
  // The pairs open handles use: a few, as most are the same pair.
  std::vector<std::unique_ptr<Callbacks>> callbacks;
  Callbacks* CallbacksFor(Napi::Function on_read, Napi::Function on_writable);
  void ReleaseCallbacks(Callbacks* c);
  // Receive scratch space shared by every socket of this environment: reads
  // are synchronous, so one buffer serves all, and idle sockets cost nothing.
  std::vector<uint8_t> scratch;
  // Where a batch of seqpacket messages lands: one slot per message, each
  // as large as the largest message, reserved but only touched as used.
  Reservation slots;
  // Small read batches are copied into this pool and reach JavaScript as
  // views of it (see SocketHandle::Deliver); pool_used is the next free byte.
  Napi::Reference<Napi::ArrayBuffer> pool;
  // An object of the addon's own that SocketHandle::JsAlive() probes: the
  // global object's prototype chain could hold a proxy, whose trap (user
  // code) could fail the probe, and the addon would take JavaScript for gone.
  Napi::ObjectReference probe;
  size_t pool_used = 0;
  Conn* conns = nullptr;  // intrusive list of sockets not yet closed
  HandleTable handles;
  // fds of the batch being handed to JavaScript (accepted connections,
  // SCM_RIGHTS) that it has not yet adopted (SocketHandle), closed
  // (close()) or taken (claim()). A worker terminated mid-delivery leaves
  // some here, and only this list knows which: see SocketHandle::Settle.
  std::unordered_set<int> in_flight;
  // Received fds a library keeps for its user (ReceivedFds.keep(): an rpc
  // Fd nobody has taken yet). Closed when the environment is torn down (a
  // worker terminated), unless closed (close()) or released (claim())
  // first: nothing else would ever close them then.
  std::unordered_set<int> kept;
  // Sockets made here (socket(), socketPair()) that no handle has taken yet
  // and that were not closed: JavaScript holds them as numbers between the
  // two calls, and a worker terminated in that gap would leave them open.
  // Closed at teardown, as `kept`.
  std::unordered_set<int> unowned;
  // Socket files that bind() made, by their fd (noted by bind() itself):
  // removed if the fd is closed without JavaScript's close() (at teardown,
  // its handle's, or inside listen() before there is a handle) and the
  // path is still that file, as libuv's pipe close removes its file.
  struct BoundFile {
    std::string path;
    uint64_t dev;
    uint64_t ino;
  };
  std::unordered_map<int, BoundFile> bound_files;
  // Its socket file goes, if still the one bind() made.
  void UnlinkBoundFile(int fd) {
    auto file = bound_files.find(fd);
    if (file == bound_files.end()) return;
    SysUnlinkIfSame(file->second.path.c_str(), file->second.dev, file->second.ino);
    bound_files.erase(file);
  }
  // fds an open handle of this environment owns, by number: adopting one of
  // them again (fromFd, listenFd) would let two handles close the same fd.
  std::vector<bool> owned;
  void Own(int fd) {
    if (fd < 0) return;
    if (static_cast<size_t>(fd) >= owned.size()) owned.resize(static_cast<size_t>(fd) + 1);
    owned[static_cast<size_t>(fd)] = true;
  }
  void Disown(int fd) {
    if (fd >= 0 && static_cast<size_t>(fd) < owned.size()) owned[static_cast<size_t>(fd)] = false;
  }
  bool Owns(int fd) const { return fd >= 0 && static_cast<size_t>(fd) < owned.size() && owned[static_cast<size_t>(fd)]; }
  bool tearing_down = false;
  // Held while sockets close at teardown: Node runs the loop until released.
  napi_async_cleanup_hook_handle cleanup_hook = nullptr;

  static EnvState* Get(Napi::Env env) { return env.GetInstanceData<EnvState>(); }
};

}  // namespace afunix

#endif  // AFUNIX_ENV_STATE_H_
