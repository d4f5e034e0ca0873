// HandleTable (env_state.h): open socket handles by number.
#include <cmath>

#include "env_state.h"

namespace afunix {

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
