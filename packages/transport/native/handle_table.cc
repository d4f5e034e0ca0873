// What the environment keeps for all its handles (env_state.h): the open
// ones by number, and the callbacks they share.
#include <cmath>

#include "env_state.h"

namespace afunix {

Callbacks* EnvState::CallbacksFor(Napi::Function on_read, Napi::Function on_writable) {
  for (const auto& c : callbacks) {
    if (c->on_read.Value().StrictEquals(on_read) && c->on_writable.Value().StrictEquals(on_writable)) {
      c->handles++;
      return c.get();
    }
  }
  auto c = std::make_unique<Callbacks>();
  c->on_read = Napi::Persistent(on_read);
  c->on_writable = Napi::Persistent(on_writable);
  c->handles = 1;
  callbacks.push_back(std::move(c));
  return callbacks.back().get();
}

// A pair no open handle uses is dropped: handles made with closures of
// their own (a datagram socket's) must not pile up pairs.
void EnvState::ReleaseCallbacks(Callbacks* c) {
  if (--c->handles > 0) return;
  for (auto it = callbacks.begin(); it != callbacks.end(); ++it) {
    if (it->get() == c) {
      callbacks.erase(it);
      return;
    }
  }
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

}  // namespace afunix
