// Module entry: plain functions over fds (sys.h) and the SocketHandle class.
// Results cross into JavaScript as numbers: >= 0 is success, < 0 a libuv
// error code that TypeScript turns into an Error with `code` and `errno`.
#include <errno.h>
#include <napi.h>
#include <string.h>

#include "env_state.h"
#include "socket_handle.h"
#include "sys.h"

namespace afunix {

namespace {

Napi::Number Num(Napi::Env env, double v) { return Napi::Number::New(env, v); }

int Int(const Napi::CallbackInfo& info, size_t i) {
  return info[i].IsNumber() ? info[i].As<Napi::Number>().Int32Value() : -1;
}

// A boolean argument, read without coercion. Value::ToBoolean() coerces
// through a call that fails once a terminating worker cannot run JavaScript,
// and node-addon-api then aborts the process on the empty result.
bool Flag(const Napi::CallbackInfo& info, size_t i) {
  bool v = false;
  napi_get_value_bool(info.Env(), info[i], &v);
  return v;
}

// Reads an address argument (raw sun_path bytes) without copying it.
bool AddrArg(const Napi::CallbackInfo& info, size_t i, const uint8_t** p, size_t* len) {
  if (info[i].IsNull() || info[i].IsUndefined()) {
    *p = nullptr;
    *len = 0;
    return true;
  }
  if (!info[i].IsTypedArray()) return false;
  Napi::Uint8Array a = info[i].As<Napi::Uint8Array>();
  *p = a.Data();
  *len = a.ByteLength();
  return true;
}

Napi::Value AddrValue(Napi::Env env, const Address& a) {
  return Napi::Buffer<uint8_t>::Copy(env, a.bytes, a.len);
}

Kind KindArg(const Napi::CallbackInfo& info, size_t i) { return static_cast<Kind>(Int(info, i)); }

Napi::Value Socket(const Napi::CallbackInfo& info) {
  int fd = SysSocket(KindArg(info, 0));
  if (fd >= 0) EnvState::Get(info.Env())->unowned.insert(fd);
  return Num(info.Env(), fd);
}

// socketPair(kind, blocking?): blocking for fds that another program gets
// as they are (a child's stdio); ours are made non-blocking on adoption.
Napi::Value SocketPair(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fds[2];
  int r = SysSocketPair(KindArg(info, 0), fds);
  if (r == 0 && Flag(info, 1)) {
    r = SysSetBlocking(fds[0]);
    if (r == 0) r = SysSetBlocking(fds[1]);
    if (r < 0) {
      SysClose(fds[0]);
      SysClose(fds[1]);
    }
  }
  if (r < 0) return Num(env, r);
  // Ours to adopt at once; blocking ones go to another program (the caller's).
  if (!Flag(info, 1)) EnvState::Get(env)->unowned.insert({fds[0], fds[1]});
  Napi::Array a = Napi::Array::New(env, 2);
  a.Set(0u, Num(env, fds[0]));
  a.Set(1u, Num(env, fds[1]));
  return a;
}

// bind(fd, address): the socket file it makes is noted at once, from C++,
// where no terminate() can cut in (see EnvState::bound_files).
Napi::Value Bind(const Napi::CallbackInfo& info) {
  const uint8_t* p;
  size_t len;
  if (!AddrArg(info, 1, &p, &len)) return Num(info.Env(), UV_EINVAL);
  int fd = Int(info, 0);
  int r = SysBind(fd, p, len);
  EnvState::BoundFile file;
  if (r == 0 && SysBoundFile(p, len, &file.path, &file.dev, &file.ino)) EnvState::Get(info.Env())->bound_files[fd] = file;
  return Num(info.Env(), r);
}

Napi::Value Connect(const Napi::CallbackInfo& info) {
  const uint8_t* p;
  size_t len;
  if (!AddrArg(info, 1, &p, &len) || len == 0) return Num(info.Env(), UV_EINVAL);
  return Num(info.Env(), SysConnect(Int(info, 0), p, len));
}

Napi::Value Listen(const Napi::CallbackInfo& info) {
  return Num(info.Env(), SysListen(Int(info, 0), Int(info, 1)));
}

Napi::Value Shutdown(const Napi::CallbackInfo& info) {
  return Num(info.Env(), SysShutdown(Int(info, 0), Int(info, 1)));
}

// Also takes the fd off the in-flight list (env_state.h): a number closed
// here may be reused at once, so nothing else may close it again.
// close(fd): never one an open handle owns. Its handle would close the
// number again later, by then maybe another file's.
Napi::Value Close(const Napi::CallbackInfo& info) {
  int fd = Int(info, 0);
  EnvState* state = EnvState::Get(info.Env());
  if (state->Owns(fd)) return Num(info.Env(), UV_EBUSY);
  state->in_flight.erase(fd);
  state->kept.erase(fd);
  state->unowned.erase(fd);
  state->bound_files.erase(fd);  // (JavaScript deals with the file)
  return Num(info.Env(), SysClose(fd));
}

// tryLock(fd): fd is a file opened by node:fs, never a socket of ours.
Napi::Value TryLock(const Napi::CallbackInfo& info) {
  return Num(info.Env(), SysTryLock(Int(info, 0)));
}

// Calls `each` with every fd number in the array argument `index`.
template <typename F>
void ForEachFdArg(const Napi::CallbackInfo& info, size_t index, F each) {
  if (!info[index].IsArray()) return;
  napi_env env = info.Env();
  napi_value arr = info[index];
  uint32_t n = 0;
  napi_get_array_length(env, arr, &n);
  for (uint32_t i = 0; i < n; i++) {
    napi_value item;
    int32_t fd;
    if (napi_get_element(env, arr, i, &item) == napi_ok && napi_get_value_int32(env, item, &fd) == napi_ok) each(fd);
  }
}

// claim(fds): JavaScript code took these received fds (ReceivedFds.take, or
// a kept one released): they are its own from now on, never closed for it
// if a delivery is cut short or the environment ends. Where they went
// (another thread, a net.Socket) is unknown here.
Napi::Value Claim(const Napi::CallbackInfo& info) {
  EnvState* state = EnvState::Get(info.Env());
  ForEachFdArg(info, 0, [state](int fd) {
    state->in_flight.erase(fd);
    state->kept.erase(fd);
  });
  return info.Env().Undefined();
}

// keep(fds): taken by a library for its user (ReceivedFds.keep); closed at
// the environment's teardown unless closed or claimed before. Never one a
// socket of ours owns (adopted by number before it was kept): its handle
// closes it, and teardown would close the number a second time.
Napi::Value Keep(const Napi::CallbackInfo& info) {
  EnvState* state = EnvState::Get(info.Env());
  ForEachFdArg(info, 0, [state](int fd) {
    state->in_flight.erase(fd);
    if (fd >= 0 && !state->Owns(fd)) state->kept.insert(fd);
  });
  return info.Env().Undefined();
}

Napi::Value SockName(const Napi::CallbackInfo& info) {
  Address a;
  int r = SysSockName(Int(info, 0), Flag(info, 1), &a);
  if (r < 0) return Num(info.Env(), r);
  return AddrValue(info.Env(), a);
}

Napi::Value PeerCredentials(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  PeerCred c;
  int r = SysPeerCred(Int(info, 0), &c);
  if (r < 0) return Num(env, r);
  Napi::Array a = Napi::Array::New(env, 3);
  a.Set(0u, Num(env, static_cast<double>(c.pid)));
  a.Set(1u, Num(env, static_cast<double>(c.uid)));
  a.Set(2u, Num(env, static_cast<double>(c.gid)));
  return a;
}

Napi::Value PeerPidfd(const Napi::CallbackInfo& info) {
  return Num(info.Env(), SysPeerPidfd(Int(info, 0)));
}

Napi::Value SetPassCred(const Napi::CallbackInfo& info) {
  return Num(info.Env(), SysSetPassCred(Int(info, 0), Flag(info, 1)));
}

Napi::Value SocketError(const Napi::CallbackInfo& info) {
  return Num(info.Env(), SysSocketError(Int(info, 0)));
}

Napi::Value SocketKind(const Napi::CallbackInfo& info) {
  return Num(info.Env(), SysSocketKind(Int(info, 0)));
}

// A socket handed in by its number (fromFd, listenFd) becomes a handle's;
// one that an open handle already owns cannot be taken twice, and one
// taken as a listener must listen (else accept() fails later, EINVAL), one
// taken as a connection must not (else every write fails later, ENOTCONN).
// Checked before SysAdopt changes its flags: a refused fd is left as it was.
Napi::Value Adopt(const Napi::CallbackInfo& info) {
  int fd = Int(info, 0);
  if (EnvState::Get(info.Env())->Owns(fd)) return Num(info.Env(), UV_EEXIST);
  int listening = SysIsListening(fd);
  if (listening < 0) return Num(info.Env(), listening);
  if ((listening == 1) != Flag(info, 1)) return Num(info.Env(), UV_EINVAL);
  return Num(info.Env(), SysAdopt(fd));
}

Napi::Value SetBufferSize(const Napi::CallbackInfo& info) {
  return Num(info.Env(), SysSetBufferSize(Int(info, 0), Flag(info, 1), Int(info, 2)));
}

Napi::Value GetBufferSize(const Napi::CallbackInfo& info) {
  return Num(info.Env(), SysGetBufferSize(Int(info, 0), Flag(info, 1)));
}

}  // namespace

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  auto* state = new EnvState();
  state->probe = Napi::Persistent(Napi::Object::New(env));
  env.SetInstanceData<EnvState>(state);
  // Sockets still open when a worker (or the process) ends are closed here,
  // before libuv's loop goes away: never left to a garbage collector. The
  // hook is asynchronous because uv_close() is: Node keeps running the loop
  // (and keeps this addon loaded) until the last close callback has run.
  napi_add_async_cleanup_hook(
      env,
      [](napi_async_cleanup_hook_handle hook, void* arg) {
        SocketHandle::Teardown(static_cast<EnvState*>(arg), hook);
      },
      state, nullptr);

  Napi::Function ctor = SocketHandle::Define(env);
  state->handle_ctor = Napi::Persistent(ctor);
  exports.Set("SocketHandle", ctor);
  exports.Set("write", SocketHandle::DefineWrite(env));
  exports.Set("socket", Napi::Function::New<Socket>(env, "socket"));
  exports.Set("socketPair", Napi::Function::New<SocketPair>(env, "socketPair"));
  exports.Set("bind", Napi::Function::New<Bind>(env, "bind"));
  exports.Set("connect", Napi::Function::New<Connect>(env, "connect"));
  exports.Set("listen", Napi::Function::New<Listen>(env, "listen"));
  exports.Set("shutdown", Napi::Function::New<Shutdown>(env, "shutdown"));
  exports.Set("close", Napi::Function::New<Close>(env, "close"));
  exports.Set("tryLock", Napi::Function::New<TryLock>(env, "tryLock"));
  exports.Set("claim", Napi::Function::New<Claim>(env, "claim"));
  exports.Set("keep", Napi::Function::New<Keep>(env, "keep"));
  exports.Set("sockName", Napi::Function::New<SockName>(env, "sockName"));
  exports.Set("peerCredentials", Napi::Function::New<PeerCredentials>(env, "peerCredentials"));
  exports.Set("peerPidfd", Napi::Function::New<PeerPidfd>(env, "peerPidfd"));
  exports.Set("setPassCred", Napi::Function::New<SetPassCred>(env, "setPassCred"));
  exports.Set("socketError", Napi::Function::New<SocketError>(env, "socketError"));
  exports.Set("socketKind", Napi::Function::New<SocketKind>(env, "socketKind"));
  exports.Set("adopt", Napi::Function::New<Adopt>(env, "adopt"));
  exports.Set("setBufferSize", Napi::Function::New<SetBufferSize>(env, "setBufferSize"));
  exports.Set("getBufferSize", Napi::Function::New<GetBufferSize>(env, "getBufferSize"));
  // libuv has no code for a connect still in progress; sys_*.cc report it
  // as -EINPROGRESS from the C library, which TypeScript compares against.
  exports.Set("EINPROGRESS", Napi::Number::New(env, -EINPROGRESS));
#ifdef _WIN32
  exports.Set("platform", Napi::String::New(env, "win32"));
#else
  exports.Set("platform", Napi::String::New(env, "unix"));
#endif
  return exports;
}

}  // namespace afunix

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) { return afunix::Init(env, exports); }

NODE_API_MODULE(NODE_GYP_MODULE_NAME, InitModule)
