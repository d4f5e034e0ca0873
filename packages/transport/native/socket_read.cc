// The read side of a SocketHandle: what a poll event drains from the
// socket (connections on a listener, bytes and messages with their fds and
// credentials elsewhere) and how a batch reaches JavaScript in one call.
#include "socket_handle.h"

#include <string.h>

#include <algorithm>
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

// From here on, what JavaScript does not adopt, close or take of these fds
// is ours to close if the call that hands them over does not complete.
void HandOver(EnvState* s, const std::vector<int>& fds) {
  if (!fds.empty()) s->in_flight.insert(fds.begin(), fds.end());
}

}  // namespace

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
  if (status < 0 && c->listener) {
    c->reading = false;
    self->UpdatePoll();
    int err = SysSocketError(c->fd);
    if (self->Deliver(err < 0 ? err : status, nullptr, 0, self->Env().Undefined()) != Call::kRan) BeginClose(c);
    return;
  }
  if (status < 0) {
    self->OnPollError(status);
    events = UV_READABLE;
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
  if ((events & UV_WRITABLE) && c->want_write && self->CallJs(self->callbacks_->on_writable, {}) != Call::kRan) BeginClose(c);
}

// libuv reports EPOLLERR as UV_EBADF and stops watching. The socket's real
// error is in SO_ERROR; taking it clears it, so the poll does not fire for
// it again (a datagram socket would otherwise spin). What the peer sent
// before the error is still queued: it is read first and the error follows
// it, as net.Socket sees them.
void SocketHandle::OnPollError(int status) {
  Conn* c = conn_;
  int err = SysSocketError(c->fd);
  // No error to be found: report libuv's, still after the queued bytes.
  if (c->pending_error == 0) c->pending_error = err < 0 ? err : status;
  UpdatePoll();
}

// What a read that found no more (EAGAIN, or UV_EOF) reports: the pending
// socket error comes before the end, as recvmsg orders them.
int SocketHandle::EndOfReads(int status) {
  int err = conn_->pending_error;
  if (err == 0) return status;
  conn_->pending_error = 0;
  return err;
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
  Call r = CallJs(callbacks_->on_read, {Napi::Number::New(env, status), fds});
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

// Takes back the last chunk read, closing the fds that came with it.
static void DropLast(std::vector<Chunk>* chunks, size_t* used) {
  for (int fd : chunks->back().meta.fds) SysClose(fd);
  *used -= chunks->back().len;
  chunks->pop_back();
}

// Where ReadChunks() reads: the scratch space for a stream; for a datagram
// socket, which must always have room for the largest message, the slots'
// reservation, whose pages become resident only as messages touch them (a
// maxMessageSize of 512 MiB made the scratch space 512 MiB of RSS at the
// first datagram). nullptr if the space cannot be had.
uint8_t* SocketHandle::ReadSpace() {
  Conn* c = conn_;
  if (c->kind == Kind::kDgram) {
    return c->state->slots.Reserve(kBatchBytes + c->max_message) ? c->state->slots.data() : nullptr;
  }
  std::vector<uint8_t>& scratch = c->state->scratch;
  if (scratch.size() < kScratchSize) scratch.resize(kScratchSize);
  return scratch.data();
}

// Stream and datagram sockets: one recvmsg() after another into the read
// space, until EAGAIN or a short read. Returns a status (0, UV_EOF or an error).
int SocketHandle::ReadChunks(std::vector<Chunk>* chunks, size_t* used, bool* more) {
  Conn* c = conn_;
  bool stream = c->kind == Kind::kStream;
  uint8_t* space = ReadSpace();
  if (space == nullptr) return UV_ENOMEM;
  for (int i = 0; i < kMaxReadsPerBatch && *used < kBatchBytes; i++) {
    RecvMeta meta;
    size_t cap = stream ? std::max(kBatchBytes - *used, kMinStreamRead) : c->max_message;
    int64_t n = SysRecvMsg(c->fd, space + *used, cap, c->kind == Kind::kDgram, &meta);
    if (n == UV_EAGAIN) {
      *more = false;
      return EndOfReads(0);
    }
    if (n < 0) return static_cast<int>(n);
    if (n == 0 && stream && meta.fds.empty()) return EndOfReads(UV_EOF);
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
    if (chunks->back().meta.ctrunc) {
      // On a connection the bytes that lost their fds are not delivered:
      // a frame reading them would blame the peer for fds that our own fd
      // table had no room for. (A datagram reports it with its message.)
      if (stream) DropLast(chunks, used);
      return kErrCtrunc;
    }
    // A short stream read means the kernel had no more (libuv reasons the
    // same way): asking again would only earn an EAGAIN. A read that stopped
    // at an fd or credentials boundary is short for another reason.
    // With an error pending, it must read on to the EAGAIN that reports it:
    // the poll may not fire again.
    if (stream && static_cast<size_t>(n) < cap && !HasMeta(chunks->back().meta) && c->pending_error == 0) {
      *more = false;
      return 0;
    }
  }
  return 0;
}

// The memory JavaScript named for the next stream read (setReadTarget), or
// nullptr. A buffer detached (transferred) since has none left: dropped.
uint8_t* SocketHandle::TargetSpace() {
  if (target_ == nullptr) return nullptr;
  napi_value value = nullptr;
  void* data = nullptr;
  size_t length = 0;
  napi_typedarray_type type;
  bool usable = napi_get_reference_value(Env(), target_, &value) == napi_ok && value != nullptr &&
                napi_get_typedarray_info(Env(), value, &type, &length, &data, nullptr, nullptr) == napi_ok && data != nullptr &&
                static_cast<size_t>(target_offset_) + target_length_ <= length;
  if (!usable) {
    ClearTarget();
    return nullptr;
  }
  return static_cast<uint8_t*>(data) + target_offset_;
}

// A stream read straight into the named memory: one recvmsg() of at most
// the length JavaScript asked for, so that no byte lands past it. Returns a
// status as ReadChunks() does.
int SocketHandle::ReadTarget(uint8_t* dest, std::vector<Chunk>* chunks, size_t* used, bool* more) {
  Conn* c = conn_;
  RecvMeta meta;
  int64_t n = SysRecvMsg(c->fd, dest, target_length_, false, &meta);
  if (n == UV_EAGAIN) {
    *more = false;
    return EndOfReads(0);
  }
  if (n < 0) return static_cast<int>(n);
  if (n == 0 && meta.fds.empty()) return EndOfReads(UV_EOF);
  chunks->emplace_back();
  chunks->back().len = static_cast<size_t>(n);
  chunks->back().meta = std::move(meta);
  *used = static_cast<size_t>(n);
  if (chunks->back().meta.ctrunc) {
    DropLast(chunks, used);
    return kErrCtrunc;
  }
  // Short, as in ReadChunks(): the kernel had no more.
  if (static_cast<size_t>(n) < target_length_ && !HasMeta(chunks->back().meta) && c->pending_error == 0) *more = false;
  return 0;
}

// Whether a slot from `from` on holds a message: bytes, or fds.
static bool AnythingAfter(const RecvSlot* slots, int from, int n) {
  for (int i = from; i < n; i++)
    if (slots[i].len > 0 || !slots[i].meta.fds.empty()) return true;
  return false;
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
    return EndOfReads(0);
  }
  if (n < 0) return n;
  // Fewer than asked for: the kernel had no more. (With an error pending,
  // the next read's EAGAIN reports it: the poll may not fire again.)
  if (static_cast<size_t>(n) < count && c->pending_error == 0) *more = false;
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
    // A zero-length read is the end of the connection, or an empty message
    // (ours refuse to send one; another program may), which carries nothing
    // to deliver: it was one if anything follows it, in this batch or still
    // in the socket (recvmmsg fills the slots past the end with more zeros).
    if (s.len == 0 && s.meta.fds.empty() && !s.meta.ctrunc) {
      if (!AnythingAfter(slots, i + 1, n) && SysAtEnd(c->fd)) status = EndOfReads(UV_EOF);
      continue;
    }
    if (s.meta.truncated) {
      for (int fd : s.meta.fds) SysClose(fd);
      status = UV_EMSGSIZE;
      continue;
    }
    // As in ReadChunks(): what lost its fds is not delivered.
    if (s.meta.ctrunc) {
      for (int fd : s.meta.fds) SysClose(fd);
      status = kErrCtrunc;
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
  uint8_t* target = messages ? nullptr : TargetSpace();
  int status = target != nullptr ? ReadTarget(target, &chunks, &used, &more)
               : messages        ? ReadMessages(&chunks, &used, &more)
                                 : ReadChunks(&chunks, &used, &more);
  bool dgram = c->kind == Kind::kDgram;
  bool in_slots = messages || dgram;
  const uint8_t* data = in_slots ? c->state->slots.data() : c->state->scratch.data();
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
  // Something was read: a target not read into is stale from here on.
  if (target == nullptr) ClearTarget();
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
  Call r = target != nullptr ? DeliverTarget(status, used, list) : Deliver(status, data, used, list);
  Settle(state, r);
  // A burst of large messages, or one large datagram, touched pages far
  // into the slots: give them back once delivered, so that they do not stay
  // resident. (One message at a time stays in the first slot, as it stayed
  // in the scratch space.)
  if (in_slots && used > kBatchBytes && (chunks.size() > 1 || dgram)) state->slots.Release();
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

// onRead(status, bytes?: Buffer | ArrayBuffer | Uint8Array, chunks?: [len, fds, addr, cred, ...], offset?, length?)
// chunks is undefined when bytes is a single chunk with nothing attached.
// A stream or seqpacket batch under kPoolMax comes as the pool's ArrayBuffer
// with the offset and length of the bytes in it; a read into a target, as
// the target's Uint8Array with the offset and length of the bytes in it.
SocketHandle::Call SocketHandle::Deliver(int status, const uint8_t* data, size_t used, Napi::Value chunks) {
  Napi::Env env = Env();
  Napi::Value bytes = env.Undefined();
  if (used > 0 && used < kPoolMax && conn_->kind != Kind::kDgram) {
    napi_value pool;
    size_t offset;
    if (!PoolSlice(data, used, &pool, &offset)) return Call::kNotRun;
    return CallJs(callbacks_->on_read, {Napi::Number::New(env, status), pool, chunks, Napi::Number::New(env, static_cast<double>(offset)),
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
  return CallJs(callbacks_->on_read, {Napi::Number::New(env, status), bytes, chunks});
}

// A read into the target: JavaScript gets a view of the bytes where they
// already are. The target is dropped first: the call may name the next one.
SocketHandle::Call SocketHandle::DeliverTarget(int status, size_t used, Napi::Value chunks) {
  Napi::Env env = Env();
  napi_value buffer = nullptr;
  napi_get_reference_value(env, target_, &buffer);
  double offset = static_cast<double>(target_offset_);
  ClearTarget();
  if (used == 0 || buffer == nullptr) return Deliver(status, nullptr, 0, chunks);
  return CallJs(callbacks_->on_read, {Napi::Number::New(env, status), buffer, chunks, Napi::Number::New(env, offset),
                                      Napi::Number::New(env, static_cast<double>(used))});
}

}  // namespace afunix
