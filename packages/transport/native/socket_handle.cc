#include "socket_handle.h"

#include <string.h>

#include <algorithm>
#include <vector>

namespace afunix {

namespace {

constexpr size_t kMaxIov = 1024;  // IOV_MAX on Linux and macOS

// Reads element i of an array through the C API. node-addon-api would hand
// back an empty value on failure (as while a worker is being terminated),
// and any call chained on that aborts the process.
bool Element(napi_env env, napi_value arr, uint32_t i, napi_value* out) {
  return napi_get_element(env, arr, i, out) == napi_ok;
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
    if (!Element(env, v, i, &item) || !ReadView(env, item, &one)) return false;
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
    if (!Element(env, v, i, &item) || napi_get_value_int32(env, item, &out[i]) != napi_ok) return false;
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
                         InstanceMethod<&SocketHandle::SetReadTarget>("setReadTarget"),
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
    e.Set("code", Napi::String::New(env, uv_err_name(r)));
    e.Set("syscall", Napi::String::New(env, "uv_poll_init"));
    e.ThrowAsJavaScriptException();
    return;
  }
  c->poll.data = c;
  conn_ = c;
  LinkConn(c);
  state->Own(c->fd);
  // An accepted or received fd is this handle's now: closing it is for
  // close() alone, whatever becomes of the delivery that brought it, or of
  // the library that kept it (ReceivedFds.keep()) and never released it.
  state->in_flight.erase(c->fd);
  state->unowned.erase(c->fd);
  state->kept.erase(c->fd);
  callbacks_ = state->CallbacksFor(info[3].As<Napi::Function>(), info[4].As<Napi::Function>());
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

SocketHandle::~SocketHandle() {
  ClearTarget();
  if (conn_ != nullptr) {
    conn_->state->handles.Remove(id_);
    if (callbacks_ != nullptr) conn_->state->ReleaseCallbacks(callbacks_);
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

void SocketHandle::ClearTarget() {
  if (target_ == nullptr) return;
  napi_delete_reference(Env(), target_);
  target_ = nullptr;
}

// setReadTarget(buffer: Uint8Array, offset, length), or setReadTarget(null).
// A stream socket's next read goes to buffer[offset, offset + length) and
// reaches onRead as a view of it. Anything else clears the target.
Napi::Value SocketHandle::SetReadTarget(const Napi::CallbackInfo& info) {
  ClearTarget();
  bool named = conn_ != nullptr && conn_->kind == Kind::kStream && info.Length() >= 3 && info[0].IsTypedArray() &&
               info[0].As<Napi::TypedArray>().TypedArrayType() == napi_uint8_array && info[1].IsNumber() && info[2].IsNumber();
  if (!named) return info.Env().Undefined();
  Napi::Uint8Array buffer = info[0].As<Napi::Uint8Array>();
  double offset = info[1].As<Napi::Number>().DoubleValue();
  double length = info[2].As<Napi::Number>().DoubleValue();
  if (!(offset >= 0 && length >= 1 && offset + length <= static_cast<double>(buffer.ByteLength()) && offset + length <= UINT32_MAX)) {
    return info.Env().Undefined();
  }
  if (napi_create_reference(info.Env(), buffer, 1, &target_) != napi_ok) target_ = nullptr;
  target_offset_ = static_cast<uint32_t>(offset);
  target_length_ = static_cast<uint32_t>(length);
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
  napi_value list = info[0];
  bool is_array = false;
  uint32_t length = 0;
  if (napi_is_array(env, list, &is_array) != napi_ok || !is_array || napi_get_array_length(env, list, &length) != napi_ok)
    return Napi::Number::New(env, UV_EINVAL);
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
    for (int i = 0; i < n; i++)
      if (!items[i].Whole()) return Napi::Number::New(env, UV_EIO);
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
  // JavaScript's close() has dealt with the socket file.
  conn_->state->bound_files.erase(conn_->fd);
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
  c->state->Disown(c->fd);
  // Closed without JavaScript's close() (the environment ending, or
  // JavaScript no longer able to run when it was to be told something).
  c->state->UnlinkBoundFile(c->fd);
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
    self->on_close_.Reset();
    state->ReleaseCallbacks(self->callbacks_);
    self->callbacks_ = nullptr;
    self->Napi::ObjectWrap<SocketHandle>::Unref();
  }
  FinishTeardown(state);
}

void SocketHandle::Teardown(EnvState* state, napi_async_cleanup_hook_handle hook) {
  state->tearing_down = true;
  state->cleanup_hook = hook;
  for (int fd : state->kept) SysClose(fd);
  state->kept.clear();
  for (int fd : state->unowned) {
    state->UnlinkBoundFile(fd);  // (a server terminated inside listen())
    SysClose(fd);
  }
  state->unowned.clear();
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
  napi_value probe;
  bool has = false;
  if (napi_get_reference_value(env, EnvState::Get(Env())->probe, &probe) == napi_ok && probe != nullptr &&
      napi_has_element(env, probe, 0, &has) == napi_ok)
    return true;
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

}  // namespace afunix
