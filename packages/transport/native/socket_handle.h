// SocketHandle: one owned socket fd watched by a uv_poll_t. It drains reads
// in batches (one JS callback per batch), writes with sendmsg, and closes in
// libuv's order: poll stop, handle close, fd close. Policy (queues,
// backpressure, errors as exceptions) lives in TypeScript.
#ifndef AFUNIX_SOCKET_HANDLE_H_
#define AFUNIX_SOCKET_HANDLE_H_

#include <napi.h>
#include <uv.h>

#include <vector>

#include "env_state.h"
#include "sys.h"

namespace afunix {

class SocketHandle;

// Status reported when the kernel dropped descriptors (MSG_CTRUNC): outside
// the errno range so it cannot be mistaken for a real error number.
constexpr int kErrCtrunc = -100001;

// One received piece of a read batch: its length, and what came with it.
struct Chunk {
  size_t len = 0;
  RecvMeta meta;
};

// The libuv side of a socket. It outlives its JavaScript object when needed:
// uv_close() completes asynchronously, and the memory must stay until then.
struct Conn {
  uv_poll_t poll;
  int fd = -1;
  Kind kind = Kind::kStream;
  bool listener = false;
  bool reading = false;
  bool want_write = false;
  bool closing = false;
  // The last read of this stream brought fds: the kernel ends a read at
  // every message with fds, so the next ones are read as a batch.
  bool fds_flowing = false;
  // The last batch of seqpacket messages held only small ones.
  bool small_messages = true;
  size_t max_message = 256 * 1024;
  // A socket error (SO_ERROR) taken when the poll reported one: it is
  // delivered after the bytes that were queued before it.
  int pending_error = 0;
  SocketHandle* owner = nullptr;
  EnvState* state = nullptr;
  Conn* prev = nullptr;
  Conn* next = nullptr;
};

class SocketHandle : public Napi::ObjectWrap<SocketHandle> {
 public:
  static Napi::Function Define(Napi::Env env);
  static Napi::Function DefineWrite(Napi::Env env);
  explicit SocketHandle(const Napi::CallbackInfo& info);
  ~SocketHandle() override;

  // Closes every socket of an environment that is going away; `hook` is
  // released once the last one has closed.
  static void Teardown(EnvState* state, napi_async_cleanup_hook_handle hook);

 private:
  Napi::Value ReadStart(const Napi::CallbackInfo& info);
  Napi::Value ReadStop(const Napi::CallbackInfo& info);
  Napi::Value WatchWritable(const Napi::CallbackInfo& info);
  // write(id, data, fds?, to?): exported once, finds the handle by its id.
  static Napi::Value WriteById(const Napi::CallbackInfo& info);
  Napi::Value Write(Napi::Env env, Napi::Value data, Napi::Value fds, Napi::Value to);
  Napi::Value WriteMessages(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);
  Napi::Value Ref(const Napi::CallbackInfo& info);
  Napi::Value Unref(const Napi::CallbackInfo& info);
  Napi::Value SetMaxMessage(const Napi::CallbackInfo& info);
  Napi::Value SetReadTarget(const Napi::CallbackInfo& info);

  static void OnPoll(uv_poll_t* poll, int status, int events);
  static void OnClosed(uv_handle_t* handle);
  static void BeginClose(Conn* conn);
  static void FinishTeardown(EnvState* state);

  int UpdatePoll();
  void OnPollError(int status);
  int EndOfReads(int status);
  void DrainListener();
  void DrainSocket();
  bool ReadBatch();  // false when reading should stop for this event
  uint8_t* ReadSpace();
  int ReadChunks(std::vector<Chunk>* chunks, size_t* used, bool* more);
  int ReadMessages(std::vector<Chunk>* chunks, size_t* used, bool* more);
  int ReadTarget(uint8_t* dest, std::vector<Chunk>* chunks, size_t* used, bool* more);
  uint8_t* TargetSpace();
  // How a call into JavaScript went. kNotRun: JavaScript cannot run any more
  // (the environment is stopping), so what was to be handed over is still
  // ours to dispose of. kCutShort: it ran but was terminated, so part of it
  // may already belong to JavaScript and must not be closed twice.
  enum class Call { kRan, kNotRun, kCutShort };
  Call Deliver(int status, const uint8_t* data, size_t used, Napi::Value chunks);
  Call DeliverTarget(int status, size_t used, Napi::Value chunks);
  static void Settle(EnvState* state, Call r);
  bool PoolSlice(const uint8_t* data, size_t len, napi_value* pool, size_t* offset);
  bool JsAlive();
  Call CallJs(Napi::FunctionReference& fn, std::initializer_list<napi_value> args);

  Conn* conn_;
  double id_ = -1;  // in the environment's HandleTable while open
  Callbacks* callbacks_ = nullptr;  // the environment's, shared
  Napi::FunctionReference on_close_;
  // Where the next stream read goes, when JavaScript named a place
  // (setReadTarget): the rest of a large frame, read into its own buffer
  // instead of copied there. Used or dropped by the next read that finds
  // bytes, so that it can never point at a stale place.
  // (A bare napi_ref and 32-bit bounds: 16 bytes of every connection, not
  // the 40 a Napi::Reference and two size_t took. A frame is at most 1 GiB.)
  napi_ref target_ = nullptr;
  uint32_t target_offset_ = 0;
  uint32_t target_length_ = 0;
  void ClearTarget();
  Napi::AsyncContext async_;
};

}  // namespace afunix

#endif  // AFUNIX_SOCKET_HANDLE_H_
