#include "socket_handle.h"

#include <string.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace afunix {

namespace {

// A readiness event drains at most this much before yielding to other
// sockets, so one busy peer cannot starve the rest of the loop.
constexpr int kMaxBatchesPerEvent = 8;
constexpr int kMaxReadsPerBatch = 64;
// A batch reaches JavaScript as one new allocation. Kept under glibc's mmap
// threshold (128 KiB) it comes from the heap and reuses warm pages; above
// it, every batch was a fresh mmap paying a page fault per 4 KiB (measured:
// receiver CPU per GiB 1088 -> 665 ms with this cap).
constexpr size_t kBatchBytes = 120 * 1024;
constexpr size_t kMinStreamRead = 16 * 1024;
constexpr size_t kScratchSize = 1024 * 1024;
// Address space for a batch of seqpacket messages: the batch is as many of
// the largest message as fit (at least one, at most kMaxBatchMessages).
constexpr size_t kSlotSpace = 16 * 1024 * 1024;
// Messages up to this size count as small: while they are, a batch takes as
// many as kMaxBatchMessages. After a larger one it takes only what fits
// kBatchBytes (at least one), as the single reads did, so that a burst of
// large messages reaches JavaScript in bounded pieces.
constexpr size_t kSmallMessage = 4 * 1024;
// A stream read into a slot stops at the next message with fds; these are
// small, and a full slot simply goes on in the next one.
constexpr size_t kStreamSlot = 2 * 1024;
// Batches under kPoolMax bytes are copied into a pool shared by the sockets
// of an environment and reach JavaScript as views of it: Buffer.allocUnsafe's
// trade, with its sizes. A Buffer of its own costs a malloc, a BackingStore,
// an ArrayBuffer and a prototype switch (napi_create_buffer: ~3,500
// instructions, most of a 64-byte echo's native cost); a view, ~300.
constexpr size_t kPoolSize = 8 * 1024;
constexpr size_t kPoolMax = kPoolSize / 2;
constexpr int kMaxAcceptsPerEvent = 128;
constexpr size_t kMaxIov = 1024;  // IOV_MAX on Linux and macOS

// Status reported when the kernel dropped descriptors (MSG_CTRUNC): outside
// the errno range so it cannot be mistaken for a real error number.
constexpr int kErrCtrunc = -100001;

bool HasMeta(const RecvMeta& m) { return !m.fds.empty() || m.has_cred || m.has_addr; }

Napi::Value FdArray(Napi::Env env, const std::vector<int>& fds) {
  if (fds.empty()) return env.Null();
  Napi::Array a = Napi::Array::New(env, fds.size());
  for (size_t i = 0; i < fds.size(); i++) a.Set(i, Napi::Number::New(env, fds[i]));
  return a;
}

Napi::Value CredArray(Napi::Env env, const RecvMeta& m) {
  if (!m.has_cred) return env.Null();
  Napi::Array a = Napi::Array::New(env, 3);
  a.Set(0u, Napi::Number::New(env, static_cast<double>(m.cred.pid)));
  a.Set(1u, Napi::Number::New(env, static_cast<double>(m.cred.uid)));
  a.Set(2u, Napi::Number::New(env, static_cast<double>(m.cred.gid)));
  return a;
}

Napi::Value AddrBuffer(Napi::Env env, const RecvMeta& m) {
  if (!m.has_addr) return env.Null();
  return Napi::Buffer<uint8_t>::Copy(env, m.addr.bytes, m.addr.len);
}

bool ReadView(napi_env env, napi_value v, uv_buf_t* out) {
  napi_typedarray_type type;
  size_t length;
  void* data;
  if (napi_get_typedarray_info(env, v, &type, &length, &data, nullptr, nullptr) != napi_ok)
    return false;
  if (type != napi_uint8_array) return false;
  *out = uv_buf_init(static_cast<char*>(data), static_cast<unsigned int>(length));
  return true;
}

// Adds a Uint8Array, or each of an array of them, to out.
bool AppendViews(napi_env env, napi_value v, std::vector<uv_buf_t>* out) {
  uv_buf_t one;
  if (ReadView(env, v, &one)) {
    out->push_back(one);
    return true;
  }
  bool is_array = false;
  uint32_t n = 0;
  if (napi_is_array(env, v, &is_array) != napi_ok || !is_array || napi_get_array_length(env, v, &n) != napi_ok ||
      n > kMaxIov)
    return false;
  for (uint32_t i = 0; i < n; i++) {
    napi_value item;
    if (napi_get_element(env, v, i, &item) != napi_ok || !ReadView(env, item, &one)) return false;
    out->push_back(one);
  }
  return true;
}

// The fds of an array of numbers (none for anything else, such as null)
// into out, which has room for kMaxFds.
bool ReadFds(napi_env env, napi_value v, int* out, size_t* count) {
  *count = 0;
  bool is_array = false;
  if (napi_is_array(env, v, &is_array) != napi_ok || !is_array) return true;
  uint32_t n = 0;
  if (napi_get_array_length(env, v, &n) != napi_ok || n > static_cast<uint32_t>(kMaxFds)) return false;
  for (uint32_t i = 0; i < n; i++) {
    napi_value item;
    if (napi_get_element(env, v, i, &item) != napi_ok || napi_get_value_int32(env, item, &out[i]) != napi_ok) return false;
  }
  *count = n;
  return true;
}

bool AppendFds(napi_env env, napi_value v, std::vector<int>* out) {
  int fds[kMaxFds];
  size_t n = 0;
  if (!ReadFds(env, v, fds, &n)) return false;
  out->insert(out->end(), fds, fds + n);
  return true;
}

// A boolean argument, read without coercion: Value::ToBoolean() coerces
// through a call that fails once a terminating worker cannot run
// JavaScript, and node-addon-api aborts the process on its empty result.
bool Flag(const Napi::CallbackInfo& info, size_t i) {
  bool v = false;
  napi_get_value_bool(info.Env(), info[i], &v);
  return v;
}

// Reads element i of an array through the C API. node-addon-api would hand
// back an empty value on failure (as while a worker is being terminated),
// and any call chained on that aborts the process.
bool Element(napi_env env, napi_value arr, uint32_t i, napi_value* out) {
  return napi_get_element(env, arr, i, out) == napi_ok;
}

void LinkConn(Conn* c) {
  c->next = c->state->conns;
  if (c->next) c->next->prev = c;
  c->state->conns = c;
}

void UnlinkConn(Conn* c) {
  if (c->prev) c->prev->next = c->next;
  else if (c->state->conns == c) c->state->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  c->prev = c->next = nullptr;
}

// From here on, what JavaScript does not adopt, close or take of these fds
// is ours to close if the call that hands them over does not complete.
void HandOver(EnvState* s, const std::vector<int>& fds) {
  if (!fds.empty()) s->in_flight.insert(fds.begin(), fds.end());
}

}  // namespace

Napi::Function SocketHandle::Define(Napi::Env env) {
  return DefineClass(env, "SocketHandle",
                     {
                         InstanceMethod<&SocketHandle::ReadStart>("readStart"),
                         InstanceMethod<&SocketHandle::ReadStop>("readStop"),
                         InstanceMethod<&SocketHandle::WatchWritable>("watchWritable"),
                         InstanceMethod<&SocketHandle::Close>("close"),
                         InstanceMethod<&SocketHandle::Ref>("ref"),
                         InstanceMethod<&SocketHandle::Unref>("unref"),
                         InstanceMethod<&SocketHandle::SetMaxMessage>("setMaxMessage"),
                         InstanceMethod<&SocketHandle::WriteMessages>("writeMessages"),
                         StaticValue("ERR_CTRUNC", Napi::Number::New(env, kErrCtrunc)),
                     });
}

// new SocketHandle(fd, kind, listener, onRead, onWritable)
// The handle takes ownership of fd: from here on only close() releases it.
SocketHandle::SocketHandle(const Napi::CallbackInfo& info)
    : Napi::ObjectWrap<SocketHandle>(info), conn_(nullptr), async_(info.Env(), "afunix:socket") {
  Napi::Env env = info.Env();
  // napi_wrap refuses once a terminating worker can no longer run
  // JavaScript; the object is then no handle at all, and the Ref() below
  // would abort the process on the empty reference. Nothing is taken over.
  if (Napi::ObjectWrap<SocketHandle>::IsEmpty()) return;
  if (info.Length() < 5 || !info[0].IsNumber() || !info[1].IsNumber() || !info[3].IsFunction() ||
      !info[4].IsFunction()) {
    Napi::TypeError::New(env, "SocketHandle(fd, kind, listener, onRead, onWritable)")
        .ThrowAsJavaScriptException();
    return;
  }
  EnvState* state = EnvState::Get(env);
  uv_loop_t* loop = nullptr;
  napi_get_uv_event_loop(env, &loop);
  auto* c = new Conn();
  c->fd = info[0].As<Napi::Number>().Int32Value();
  c->kind = static_cast<Kind>(info[1].As<Napi::Number>().Int32Value());
  c->listener = Flag(info, 2);
  c->state = state;
  c->owner = this;
  int r = uv_poll_init_socket(loop, &c->poll, c->fd);
  if (r != 0) {
    // The fd stays with the caller: nothing was taken over.
    delete c;
    Napi::Error e = Napi::Error::New(env, uv_strerror(r));
    e.Set("errno", Napi::Number::New(env, r));
    e.ThrowAsJavaScriptException();
    return;
  }
  c->poll.data = c;
  conn_ = c;
  LinkConn(c);
  // An accepted or received fd is this handle's now: closing it is for
  // close() alone, whatever becomes of the delivery that brought it.
  state->in_flight.erase(c->fd);
  on_read_ = Napi::Persistent(info[3].As<Napi::Function>());
  on_writable_ = Napi::Persistent(info[4].As<Napi::Function>());
  // An open socket must never be collected: it is released in OnClosed.
  Napi::ObjectWrap<SocketHandle>::Ref();
  // The number that write() finds this handle by (see HandleTable).
  id_ = state->handles.Add(this);
  napi_value id;
  if (napi_create_double(env, id_, &id) == napi_ok) napi_set_named_property(env, info.This(), "id", id);
}

Napi::Function SocketHandle::DefineWrite(Napi::Env env) {
  return Napi::Function::New<WriteById>(env, "write");
}

Napi::Value SocketHandle::WriteById(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  double id = 0;
  SocketHandle* self = nullptr;
  if (napi_get_value_double(env, info[0], &id) == napi_ok) self = EnvState::Get(env)->handles.Find(id);
  if (self == nullptr) return Napi::Number::New(env, UV_EBADF);
  return self->Write(env, info[1], info[2], info[3]);
}

double HandleTable::Add(SocketHandle* h) {
  uint32_t index;
  if (!free_.empty()) {
    index = free_.back();
    free_.pop_back();
  } else {
    index = static_cast<uint32_t>(slots_.size());
    slots_.emplace_back();
  }
  slots_[index].handle = h;
  return slots_[index].generation * kSlots + index;
}

void HandleTable::Remove(double id) {
  SocketHandle* h = Find(id);
  if (h == nullptr) return;
  auto index = static_cast<uint32_t>(std::fmod(id, kSlots));
  slots_[index].handle = nullptr;
  slots_[index].generation++;
  free_.push_back(index);
}

SocketHandle* HandleTable::Find(double id) const {
  if (!(id >= 0) || id != std::floor(id)) return nullptr;
  double index = std::fmod(id, kSlots);
  if (index >= static_cast<double>(slots_.size())) return nullptr;
  const Slot& slot = slots_[static_cast<size_t>(index)];
  if (slot.handle == nullptr || slot.generation != static_cast<uint32_t>(std::floor(id / kSlots))) return nullptr;
  return slot.handle;
}

SocketHandle::~SocketHandle() {
  if (conn_ != nullptr) {
    conn_->state->handles.Remove(id_);
    conn_->owner = nullptr;
    BeginClose(conn_);
    conn_ = nullptr;
  }
}

int SocketHandle::UpdatePoll() {
  Conn* c = conn_;
  int events = (c->reading ? UV_READABLE : 0) | (c->want_write ? UV_WRITABLE : 0);
  if (events == 0) return uv_poll_stop(&c->poll);
  return uv_poll_start(&c->poll, events, OnPoll);
}

Napi::Value SocketHandle::ReadStart(const Napi::CallbackInfo& info) {
  if (conn_ == nullptr || conn_->closing) return Napi::Number::New(info.Env(), UV_EBADF);
  conn_->reading = true;
  return Napi::Number::New(info.Env(), UpdatePoll());
}

Napi::Value SocketHandle::ReadStop(const Napi::CallbackInfo& info) {
  if (conn_ == nullptr || conn_->closing) return Napi::Number::New(info.Env(), 0);
  conn_->reading = false;
  return Napi::Number::New(info.Env(), UpdatePoll());
}

Napi::Value SocketHandle::WatchWritable(const Napi::CallbackInfo& info) {
  if (conn_ == nullptr || conn_->closing) return Napi::Number::New(info.Env(), UV_EBADF);
  conn_->want_write = Flag(info, 0);
  return Napi::Number::New(info.Env(), UpdatePoll());
}

Napi::Value SocketHandle::SetMaxMessage(const Napi::CallbackInfo& info) {
  if (conn_ != nullptr && info[0].IsNumber()) {
    double v = info[0].As<Napi::Number>().DoubleValue();
    if (v >= 1 && v <= 1024.0 * 1024 * 1024) conn_->max_message = static_cast<size_t>(v);
  }
  return info.Env().Undefined();
}

// write(id, data: Uint8Array | Uint8Array[], fds?: number[] | null, to?: Uint8Array | null)
// Returns the number of bytes the kernel took, or a negative error code.
Napi::Value SocketHandle::Write(Napi::Env env, Napi::Value data, Napi::Value rights, Napi::Value dest) {
  if (conn_ == nullptr || conn_->closing) return Napi::Number::New(env, UV_EBADF);
  uv_buf_t one;
  std::vector<uv_buf_t> many;
  const uv_buf_t* iov = &one;
  size_t iovcnt = 1;
  // The common case, one buffer, needs no vector.
  if (!ReadView(env, data, &one)) {
    if (!AppendViews(env, data, &many)) return Napi::Number::New(env, UV_EINVAL);
    iov = many.data();
    iovcnt = many.size();
  }
  int fds[kMaxFds];
  size_t nfds = 0;
  if (!ReadFds(env, rights, fds, &nfds)) return Napi::Number::New(env, UV_EINVAL);
  Address to;
  const Address* top = nullptr;
  if (dest.IsTypedArray()) {
    uv_buf_t b;
    if (!ReadView(env, dest, &b) || b.len > sizeof(to.bytes)) return Napi::Number::New(env, UV_ENAMETOOLONG);
    memcpy(to.bytes, b.base, b.len);
    to.len = b.len;
    top = &to;
  }
  int64_t n = SysSendMsg(conn_->fd, iov, iovcnt, fds, nfds, top);
  return Napi::Number::New(env, static_cast<double>(n));
}

// writeMessages([data0, fds0, data1, fds1, ...]): messages in order, each
// data a Uint8Array or an array of them, each fds an array or null, each in
// a sendmsg of its own. Returns how many were sent, or a negative error code
// if none was. On a stream the caller sends only messages the kernel takes
// whole; if one was cut short all the same, the stream is broken (EIO).
Napi::Value SocketHandle::WriteMessages(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (conn_ == nullptr || conn_->closing) return Napi::Number::New(env, UV_EBADF);
  if (!info[0].IsArray()) return Napi::Number::New(env, UV_EINVAL);
  napi_value list = info[0];
  uint32_t length = info[0].As<Napi::Array>().Length();
  size_t count = std::min<size_t>(length / 2, kMaxBatchMessages);
  // Every piece and fd of the batch in one array each; items point into them.
  std::vector<uv_buf_t> bufs;
  std::vector<int> fds;
  std::vector<size_t> buf_at(count + 1), fd_at(count + 1);
  for (size_t i = 0; i < count; i++) {
    napi_value data, rights;
    if (!Element(env, list, static_cast<uint32_t>(2 * i), &data) ||
        !Element(env, list, static_cast<uint32_t>(2 * i + 1), &rights) || !AppendViews(env, data, &bufs) ||
        !AppendFds(env, rights, &fds))
      return Napi::Number::New(env, UV_EINVAL);
    buf_at[i + 1] = bufs.size();
    fd_at[i + 1] = fds.size();
  }
  SendItem items[kMaxBatchMessages];
  for (size_t i = 0; i < count; i++) {
    items[i].iov = bufs.data() + buf_at[i];
    items[i].iovcnt = buf_at[i + 1] - buf_at[i];
    items[i].fds = fds.data() + fd_at[i];
    items[i].nfds = fd_at[i + 1] - fd_at[i];
  }
  int n = SysSendMany(conn_->fd, items, count);
  if (conn_->kind == Kind::kStream) {
    for (int i = 0; i < n; i++) {
      size_t size = 0;
      for (size_t k = 0; k < items[i].iovcnt; k++) size += items[i].iov[k].len;
      if (items[i].sent != size) return Napi::Number::New(env, UV_EIO);
    }
  }
  return Napi::Number::New(env, n);
}

Napi::Value SocketHandle::Ref(const Napi::CallbackInfo& info) {
  if (conn_ != nullptr && !conn_->closing) uv_ref(reinterpret_cast<uv_handle_t*>(&conn_->poll));
  return info.Env().Undefined();
}

Napi::Value SocketHandle::Unref(const Napi::CallbackInfo& info) {
  if (conn_ != nullptr && !conn_->closing) uv_unref(reinterpret_cast<uv_handle_t*>(&conn_->poll));
  return info.Env().Undefined();
}

// close(onClosed?): the fd is closed once libuv has let go of the poll handle.
Napi::Value SocketHandle::Close(const Napi::CallbackInfo& info) {
  if (conn_ == nullptr || conn_->closing) return info.Env().Undefined();
  if (info.Length() > 0 && info[0].IsFunction()) on_close_ = Napi::Persistent(info[0].As<Napi::Function>());
  BeginClose(conn_);
  return info.Env().Undefined();
}

void SocketHandle::BeginClose(Conn* c) {
  if (c->closing) return;
  c->closing = true;
  c->reading = false;
  c->want_write = false;
  uv_poll_stop(&c->poll);
  uv_close(reinterpret_cast<uv_handle_t*>(&c->poll), OnClosed);
}

void SocketHandle::OnClosed(uv_handle_t* handle) {
  Conn* c = static_cast<Conn*>(handle->data);
  SysClose(c->fd);
  UnlinkConn(c);
  EnvState* state = c->state;
  SocketHandle* self = c->owner;
  delete c;
  if (self != nullptr) {
    self->conn_ = nullptr;
    state->handles.Remove(self->id_);
    if (!self->on_close_.IsEmpty() && !state->tearing_down) {
      Napi::HandleScope scope(self->Env());
      if (self->JsAlive()) self->CallJs(self->on_close_, {});
    }
    self->on_read_.Reset();
    self->on_writable_.Reset();
    self->on_close_.Reset();
    self->Napi::ObjectWrap<SocketHandle>::Unref();
  }
  FinishTeardown(state);
}

void SocketHandle::Teardown(EnvState* state, napi_async_cleanup_hook_handle hook) {
  state->tearing_down = true;
  state->cleanup_hook = hook;
  for (Conn* c = state->conns; c != nullptr; c = c->next) BeginClose(c);
  FinishTeardown(state);
}

// Once the last socket of a stopping environment has closed, Node may go on
// freeing it (and unloading this addon, where the close callbacks live).
void SocketHandle::FinishTeardown(EnvState* state) {
  if (state->cleanup_hook == nullptr || state->conns != nullptr) return;
  napi_async_cleanup_hook_handle hook = state->cleanup_hook;
  state->cleanup_hook = nullptr;
  napi_remove_async_cleanup_hook(hook);
}

// Whether JavaScript can still run here. A stopping worker (process.exit(),
// terminate()) or an environment being freed still polls its sockets, and
// then N-API calls fail; node-addon-api turns such failures into a process
// abort, so nothing may be read, built or called once this is false. The
// probe is a property lookup that runs no JavaScript but, like every call
// into JavaScript, fails when Node has stopped JS or V8 is terminating.
bool SocketHandle::JsAlive() {
  napi_env env = Env();
  napi_value global;
  bool has = false;
  if (napi_get_global(env, &global) == napi_ok && napi_has_element(env, global, 0, &has) == napi_ok) return true;
  bool pending = false;
  napi_value e;
  if (napi_is_exception_pending(env, &pending) == napi_ok && pending) napi_get_and_clear_last_exception(env, &e);
  return false;
}

SocketHandle::Call SocketHandle::CallJs(Napi::FunctionReference& fn, std::initializer_list<napi_value> args) {
  napi_env env = Env();
  napi_value result;
  if (napi_make_callback(env, async_, Value(), fn.Value(), args.size(), args.begin(), &result) == napi_ok)
    return Call::kRan;
  bool pending = false;
  napi_value e = nullptr;
  if (napi_is_exception_pending(env, &pending) == napi_ok && pending) napi_get_and_clear_last_exception(env, &e);
  // Failing without an exception: the call was refused before it started.
  if (e == nullptr) return Call::kNotRun;
  // The callback threw and JavaScript still runs: surface it as an uncaught
  // exception, exactly as a JS callback would.
  if (JsAlive()) {
    napi_fatal_exception(env, e);
    return Call::kRan;
  }
  return Call::kCutShort;
}

// After a call that handed fds over. Run to its end, JavaScript has adopted,
// closed or taken every one (it closes what nobody wanted before it
// returns), so the list is merely forgotten. Not run, or cut short by a
// terminating worker, it never will: what is left is closed here. An fd a
// SocketHandle now owns, or that JavaScript closed (its number may already
// be reused), has left the list and is never closed twice.
void SocketHandle::Settle(EnvState* state, Call r) {
  // Most batches carry no fds: clear() on an emptied table would still
  // zero every bucket it ever grew.
  if (state->in_flight.empty()) return;
  if (r != Call::kRan)
    for (int fd : state->in_flight) SysClose(fd);
  state->in_flight.clear();
}

void SocketHandle::OnPoll(uv_poll_t* poll, int status, int events) {
  Conn* c = static_cast<Conn*>(poll->data);
  SocketHandle* self = c->owner;
  if (self == nullptr || c->closing) return;
  Napi::HandleScope scope(self->Env());
  // No JsAlive() probe up front: it costs a property lookup on the global
  // object (~1,000 instructions, a quarter of what an echo round trip spends
  // in this file). Every path below either goes through an N-API call that
  // checks, as the probe does, whether JavaScript can run (napi_create_buffer,
  // napi_make_callback) and reports it as a status, or probes first where
  // node-addon-api would build arrays (listener, chunks with fds).
  if (status < 0) {
    c->reading = false;
    self->UpdatePoll();
    if (self->Deliver(status, nullptr, 0, self->Env().Undefined()) != Call::kRan) BeginClose(c);
    return;
  }
  if ((events & UV_READABLE) && c->reading) {
    if (!c->listener) {
      self->DrainSocket();
    } else if (!self->JsAlive()) {
      // Nobody can take the connections: leave them to close().
      BeginClose(c);
      return;
    } else {
      self->DrainListener();
    }
  }
  // The read callback may have closed the socket: look again before writing.
  if (c->closing || c->owner == nullptr) return;
  if ((events & UV_WRITABLE) && c->want_write && self->CallJs(self->on_writable_, {}) != Call::kRan) BeginClose(c);
}

void SocketHandle::DrainListener() {
  Napi::Env env = Env();
  std::vector<int> accepted;
  int status = 0;
  for (int i = 0; i < kMaxAcceptsPerEvent; i++) {
    int fd = SysAccept(conn_->fd);
    if (fd == UV_EAGAIN) break;
    if (fd < 0) {
      // EMFILE and friends: stop watching, so the loop does not spin on a
      // connection it cannot take; TypeScript decides when to try again.
      status = fd;
      conn_->reading = false;
      UpdatePoll();
      break;
    }
    accepted.push_back(fd);
  }
  if (accepted.empty() && status == 0) return;
  Napi::Array fds = Napi::Array::New(env, accepted.size());
  for (size_t i = 0; i < accepted.size(); i++) fds.Set(i, Napi::Number::New(env, accepted[i]));
  EnvState* state = conn_->state;
  HandOver(state, accepted);
  Call r = CallJs(on_read_, {Napi::Number::New(env, status), fds});
  Settle(state, r);
  if (r != Call::kRan) BeginClose(conn_);
}

void SocketHandle::DrainSocket() {
  Conn* c = conn_;
  for (int i = 0; i < kMaxBatchesPerEvent; i++) {
    if (i > 0 && !JsAlive()) {
      BeginClose(c);
      return;
    }
    if (!ReadBatch()) return;
    // JavaScript ran: it may have paused or closed this socket.
    if (conn_ == nullptr || c->closing || !c->reading) return;
  }
}

// Stream and datagram sockets: one recvmsg() after another into the scratch
// space, until EAGAIN or a short read. Returns a status (0, UV_EOF or an error).
int SocketHandle::ReadChunks(std::vector<Chunk>* chunks, size_t* used, bool* more) {
  Conn* c = conn_;
  std::vector<uint8_t>& scratch = c->state->scratch;
  bool stream = c->kind == Kind::kStream;
  // A datagram socket must always have room for the largest message.
  size_t need = stream ? kBatchBytes : kBatchBytes + c->max_message;
  if (scratch.size() < need) scratch.resize(need > kScratchSize ? need : kScratchSize);
  for (int i = 0; i < kMaxReadsPerBatch && *used < kBatchBytes; i++) {
    RecvMeta meta;
    size_t cap = stream ? std::max(kBatchBytes - *used, kMinStreamRead) : c->max_message;
    int64_t n = SysRecvMsg(c->fd, scratch.data() + *used, cap, c->kind == Kind::kDgram, &meta);
    if (n == UV_EAGAIN) {
      *more = false;
      return 0;
    }
    if (n < 0) return static_cast<int>(n);
    if (n == 0 && stream && meta.fds.empty()) return UV_EOF;
    if (meta.truncated && !stream) {
      for (int fd : meta.fds) SysClose(fd);
      return UV_EMSGSIZE;
    }
    bool merge = stream && !HasMeta(meta) && !chunks->empty() && !meta.ctrunc;
    if (merge) {
      chunks->back().len += static_cast<size_t>(n);
    } else {
      chunks->emplace_back();
      chunks->back().len = static_cast<size_t>(n);
      chunks->back().meta = std::move(meta);
    }
    *used += static_cast<size_t>(n);
    if (chunks->back().meta.ctrunc) return kErrCtrunc;
    // A short stream read means the kernel had no more (libuv reasons the
    // same way): asking again would only earn an EAGAIN. A read that stopped
    // at an fd or credentials boundary is short for another reason.
    if (stream && static_cast<size_t>(n) < cap && !HasMeta(chunks->back().meta)) {
      *more = false;
      return 0;
    }
  }
  return 0;
}

// Seqpacket sockets, and streams that carry fds: a batch of reads in one
// SysRecvMany(), each in a slot of its own (a whole message, or on a stream
// what the kernel gives up to the next message with fds), then packed
// together at the start of the slots.
int SocketHandle::ReadMessages(std::vector<Chunk>* chunks, size_t* used, bool* more) {
  Conn* c = conn_;
  bool stream = c->kind == Kind::kStream;
  size_t slot = stream ? kStreamSlot : c->max_message;
  size_t budget = stream || c->small_messages ? kSlotSpace : kBatchBytes;
  size_t count = std::min(kMaxBatchMessages, std::max<size_t>(1, budget / slot));
  if (!c->state->slots.Reserve(count * slot)) return UV_ENOMEM;
  uint8_t* base = c->state->slots.data();
  RecvSlot slots[kMaxBatchMessages];
  for (size_t i = 0; i < count; i++) {
    slots[i].buf = base + i * slot;
    slots[i].cap = slot;
  }
  int n = SysRecvMany(c->fd, slots, count);
  if (n == UV_EAGAIN) {
    *more = false;
    return 0;
  }
  if (n < 0) return n;
  // Fewer than asked for: the kernel had no more.
  if (static_cast<size_t>(n) < count) *more = false;
  c->small_messages = true;
  for (int i = 0; i < n; i++) c->small_messages &= slots[i].len <= kSmallMessage;
  int status = 0;
  for (int i = 0; i < n; i++) {
    RecvSlot& s = slots[i];
    // Past an end or an error, what else arrived is dropped with its fds:
    // the connection is over.
    if (status != 0) {
      for (int fd : s.meta.fds) SysClose(fd);
      continue;
    }
    // A zero-length message is the end of the connection: our seqpacket
    // sockets refuse to send empty messages, so it is unambiguous.
    if (s.len == 0 && s.meta.fds.empty() && !s.meta.ctrunc) {
      status = UV_EOF;
      continue;
    }
    if (s.meta.truncated) {
      for (int fd : s.meta.fds) SysClose(fd);
      status = UV_EMSGSIZE;
      continue;
    }
    if (base + *used != s.buf) memmove(base + *used, s.buf, s.len);
    *used += s.len;
    if (stream && !HasMeta(s.meta) && !chunks->empty() && !s.meta.ctrunc) {
      chunks->back().len += s.len;
      continue;
    }
    chunks->emplace_back();
    chunks->back().len = s.len;
    chunks->back().meta = std::move(s.meta);
    if (chunks->back().meta.ctrunc) status = kErrCtrunc;
  }
  return status;
}

// Reads until EAGAIN or until the batch is full, then hands the whole batch
// to JavaScript in one call. Returns true if more may be waiting.
bool SocketHandle::ReadBatch() {
  Conn* c = conn_;
  std::vector<Chunk> chunks;
  size_t used = 0;
  bool more = true;
  bool messages = c->kind == Kind::kSeqpacket || (c->kind == Kind::kStream && c->fds_flowing);
  int status = messages ? ReadMessages(&chunks, &used, &more) : ReadChunks(&chunks, &used, &more);
  const uint8_t* data = messages ? c->state->slots.data() : c->state->scratch.data();
  if (c->kind == Kind::kStream) {
    c->fds_flowing = false;
    for (const Chunk& ch : chunks) c->fds_flowing |= !ch.meta.fds.empty();
  }
  if (status != 0) {
    // End of stream or an error: reading stops until JavaScript says otherwise.
    c->reading = false;
    UpdatePoll();
    more = false;
  }
  if (used == 0 && chunks.empty() && status == 0) return false;
  Napi::Env env = Env();
  Napi::Value list = env.Undefined();
  bool simple = chunks.size() == 1 && !HasMeta(chunks[0].meta);
  if (!chunks.empty() && !simple && !JsAlive()) {
    // The arrays below go through node-addon-api, which must not run once
    // JavaScript has stopped; the fds have no other owner.
    for (const Chunk& ch : chunks)
      for (int fd : ch.meta.fds) SysClose(fd);
    BeginClose(c);
    return false;
  }
  if (!chunks.empty() && !simple) {
    Napi::Array a = Napi::Array::New(env, chunks.size() * 4);
    uint32_t k = 0;
    for (const Chunk& ch : chunks) {
      a.Set(k++, Napi::Number::New(env, static_cast<double>(ch.len)));
      a.Set(k++, FdArray(env, ch.meta.fds));
      a.Set(k++, AddrBuffer(env, ch.meta));
      a.Set(k++, CredArray(env, ch.meta));
    }
    list = a;
  } else if (chunks.empty()) {
    list = env.Null();
  }
  EnvState* state = c->state;
  for (const Chunk& ch : chunks) HandOver(state, ch.meta.fds);
  Call r = Deliver(status, data, used, list);
  Settle(state, r);
  // A burst of large messages touched pages far into the slots: give them
  // back once delivered, so that it does not stay resident. (One message at
  // a time stays in the first slot, as it stayed in the scratch space.)
  if (messages && used > kBatchBytes && chunks.size() > 1) state->slots.Release();
  if (r == Call::kRan) return more;
  BeginClose(c);
  return false;
}

// Takes len bytes of the read pool: *pool is its ArrayBuffer, *offset where
// they start. A pool that is full, or that JavaScript detached (transferred),
// is replaced; it lives on for as long as views of it do.
bool SocketHandle::PoolSlice(const uint8_t* bytes, size_t len, napi_value* pool, size_t* offset) {
  napi_env env = Env();
  EnvState* s = conn_->state;
  void* data = nullptr;
  size_t size = 0;
  bool fits = !s->pool.IsEmpty() && napi_get_reference_value(env, s->pool, pool) == napi_ok && *pool != nullptr &&
              napi_get_arraybuffer_info(env, *pool, &data, &size) == napi_ok && data != nullptr &&
              s->pool_used + len <= size;
  if (!fits) {
    // V8-owned memory like every Buffer here (never external: Electron).
    if (napi_create_arraybuffer(env, kPoolSize, &data, pool) != napi_ok) return false;
    s->pool = Napi::Persistent(Napi::ArrayBuffer(env, *pool));
    s->pool_used = 0;
  }
  *offset = s->pool_used;
  memcpy(static_cast<uint8_t*>(data) + *offset, bytes, len);
  s->pool_used = (*offset + len + 7) & ~static_cast<size_t>(7);  // 8-aligned, as Node's pool
  return true;
}

// onRead(status, bytes?: Buffer | ArrayBuffer, chunks?: [len, fds, addr, cred, ...], offset?, length?)
// chunks is undefined when bytes is a single chunk with nothing attached.
// A stream or seqpacket batch under kPoolMax comes as the pool's ArrayBuffer
// with the offset and length of the bytes in it.
SocketHandle::Call SocketHandle::Deliver(int status, const uint8_t* data, size_t used, Napi::Value chunks) {
  Napi::Env env = Env();
  Napi::Value bytes = env.Undefined();
  if (used > 0 && used < kPoolMax && conn_->kind != Kind::kDgram) {
    napi_value pool;
    size_t offset;
    if (!PoolSlice(data, used, &pool, &offset)) return Call::kNotRun;
    return CallJs(on_read_, {Napi::Number::New(env, status), pool, chunks, Napi::Number::New(env, static_cast<double>(offset)),
                             Napi::Number::New(env, static_cast<double>(used))});
  }
  if (used > 0 || (chunks.IsArray())) {
    // A V8-owned copy, never an external buffer: Electron's memory cage
    // refuses those, and the scratch buffer is reused on the next read.
    // napi_create_buffer leaves the memory uninitialised: no zero-fill for
    // bytes that are overwritten at once.
    void* copy = nullptr;
    napi_value buf;
    if (napi_create_buffer(env, used, &copy, &buf) != napi_ok) return Call::kNotRun;
    if (used > 0) memcpy(copy, data, used);
    bytes = Napi::Value(env, buf);
  }
  return CallJs(on_read_, {Napi::Number::New(env, status), bytes, chunks});
}

}  // namespace afunix
