#include "ferry/sync/inspect.hpp"

#include "ferry/sync/condvar.hpp"
#include "ferry/sync/monitor.hpp"
#include "ferry/sync/mutex.hpp"
#include "ferry/sync/semaphore.hpp"
#include "ferry/sync/spin_lock.hpp"

namespace ferry {
namespace {

std::string_view to_string(Mutex::State state) {
  switch (state) {
    case Mutex::State::consistent: return "consistent";
    case Mutex::State::owner_died: return "owner_died";
    case Mutex::State::not_recoverable: return "not_recoverable";
  }
  return "unknown";
}

void describe_owner(ObjectRecord& record, const std::optional<ProcessId>& owner) {
  if (!owner) {
    record.details.emplace_back("owner", "none");
    return;
  }
  record.details.emplace_back("owner_pid", std::to_string(owner->pid()));
  record.details.emplace_back("owner_alive", owner->alive() ? "yes" : "no");
}

template <class T>
const T* view_as(std::span<const std::byte> data) {
  if (data.size() < sizeof(T)) return nullptr;
  return reinterpret_cast<const T*>(data.data());
}

// Monitor<T> starts with its Mutex whatever T is.
struct MonitorProbe {
  int value;
};
static_assert(sizeof(Monitor<MonitorProbe>) >= sizeof(Mutex));

}  // namespace

void describe_sync_object(ObjectRecord& record, std::span<const std::byte> data) {
  if (!record.info) return;
  switch (record.info->object_type) {
    case ObjectType::mutex:
    case ObjectType::monitor:
      if (const auto* mutex = view_as<Mutex>(data)) {
        const auto status = mutex->status();
        describe_owner(record, status.owner);
        record.details.emplace_back("state", std::string(to_string(status.state)));
      }
      break;
    case ObjectType::spin_lock:
      if (const auto* spin = view_as<SpinLock>(data)) describe_owner(record, spin->owner());
      break;
    case ObjectType::semaphore:
      if (const auto* semaphore = view_as<Semaphore>(data)) {
        record.details.emplace_back("value", std::to_string(semaphore->value()));
        record.details.emplace_back("maximum", std::to_string(semaphore->maximum()));
      }
      break;
    case ObjectType::condvar:
    case ObjectType::segment:
    case ObjectType::channel:
    case ObjectType::mailbox:
    case ObjectType::mailbox_queue:
    case ObjectType::mailbox_sender:
    case ObjectType::topic:
    case ObjectType::chunks: break;
  }
}

}  // namespace ferry
