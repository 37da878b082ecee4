#include "rpc_registry.hpp"

#include <unistd.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <new>
#include <string>

#include "ferry/os/process.hpp"

namespace ferry::rpc::registry {
namespace {

constexpr std::uint64_t kFilling = 1;  // a call slot claimed, its fields not yet written
constexpr int kJoinAttempts = 8;       // create/open races with a process-persistent segment going away

// The Servers of this process listed in each registry (by segment name):
// they share the process's slot, which goes with the last of them.
class ListedServers {
 public:
  void add(const std::string& registry) {
    const std::scoped_lock lock(mutex_);
    ++count_[registry];
  }
  // True when it was the last.
  bool release(const std::string& registry) {
    const std::scoped_lock lock(mutex_);
    const auto found = count_.find(registry);
    if (found == count_.end() || --found->second > 0) return found == count_.end();
    count_.erase(found);
    return true;
  }

 private:
  std::mutex mutex_;
  std::map<std::string, int> count_;
};

ListedServers& listed_servers() {
  static ListedServers listed;
  return listed;
}

bool taken_by_live(std::uint64_t owner) noexcept {
  return owner == kFilling || (owner != 0 && ProcessId::from_packed(owner).alive());
}

// Group and others may read the registry exactly when they may call (send
// to the mailbox): clients read which servers live.
mode_t segment_mode(mode_t mailbox_mode) noexcept {
  return 0600 | ((mailbox_mode & 0020) ? 0040 : 0) | ((mailbox_mode & 0002) ? 0004 : 0);
}

// Byte i of the method is bits 8(i % 8).. of word i / 8. The words are
// built in registers: copying a short name into a word array and reading
// the words back stalls on every call (a load cannot be forwarded from the
// narrower stores before it), ~20 ns of a ~330 ns lane call here.
std::uint64_t method_word(std::string_view method, std::size_t w) noexcept {
  std::uint64_t word = 0;
  for (std::size_t i = 8 * w; i < std::min(method.size(), 8 * w + 8); ++i) {
    word |= std::uint64_t{static_cast<unsigned char>(method[i])} << (8 * (i % 8));
  }
  return word;
}

void write_method(CallSlot& slot, std::string_view method) noexcept {
  method = method.substr(0, 8 * kMethodWords);
  for (std::size_t w = 0; w < kMethodWords; ++w) slot.method[w].store(method_word(method, w), std::memory_order_relaxed);
  slot.method_length.store(static_cast<std::uint32_t>(method.size()), std::memory_order_relaxed);
}

std::string method_of(const CallSlot& slot) {
  const std::size_t length = std::min<std::size_t>(slot.method_length.load(std::memory_order_relaxed), 8 * kMethodWords);
  std::string method(length, '\0');
  for (std::size_t i = 0; i < length; ++i) {
    method[i] = static_cast<char>(slot.method[i / 8].load(std::memory_order_relaxed) >> (8 * (i % 8)));
  }
  return method;
}

}  // namespace

std::string segment_name(std::string_view name) { return std::string(name) + ".rpc"; }

result<Registry> Registry::checked(Segment segment) {
  if (segment.size() != sizeof(Layout)) {
    return error(errc::size_mismatch, *segment.description(), "not an rpc registry of this ferry");
  }
  const Header& header = reinterpret_cast<const Layout*>(segment.data().data())->header;
  if (header.magic.load() != kMagic) return error(errc::corrupt, *segment.description(), "not an rpc registry");
  if (header.version.load() != kVersion || header.servers.load() != kServers || header.calls.load() != kCalls ||
      header.cancels.load() != kCancels) {
    return error(errc::version_mismatch, *segment.description(), "rpc registry of another layout");
  }
  return Registry(std::move(segment));
}

result<Registry> Registry::join(std::string_view name, Persistence persistence, mode_t mode) {
  const std::string segment = segment_name(name);
  for (int attempt = 0;; ++attempt) {
    auto created = Segment::create(segment, {.size = sizeof(Layout),
                                             .persistence = persistence,
                                             .mode = segment_mode(mode),
                                             .initialize = [](std::span<std::byte> data) {
                                               Layout* layout = new (data.data()) Layout{};
                                               layout->header.servers = kServers;
                                               layout->header.calls = kCalls;
                                               layout->header.cancels = kCancels;
                                               layout->header.version = kVersion;
                                               layout->header.magic = kMagic;
                                             }});
    if (created) return checked(std::move(*created));
    if (created.error().code() != errc::already_exists) return std::move(created).error();
    auto opened = Segment::open(segment, {.size = sizeof(Layout)});
    if (opened) return checked(std::move(*opened));
    // Gone between our create and open (its last process left): try again.
    if (opened.error().code() != errc::not_found || attempt + 1 == kJoinAttempts) return std::move(opened).error();
  }
}

result<Registry> Registry::observe(std::string_view name, bool allow_foreign_owner) {
  auto opened = Segment::open(segment_name(name),
                              {.size = sizeof(Layout), .access = Access::read_only, .allow_foreign_owner = allow_foreign_owner});
  if (!opened) return std::move(opened).error();
  return checked(std::move(*opened));
}

result<void> Registry::add_server() {
  const std::uint64_t me = ProcessId::current().packed();
  for (std::size_t i = 0; i < kServers; ++i) {
    ServerSlot& slot = layout()->servers[i];
    std::uint64_t owner = slot.process.load();
    if (owner == me) {  // another Server of this process listed it already
      server_slot_ = i;
      listed_servers().add(segment_.name());
      return {};
    }
  }
  for (std::size_t i = 0; i < kServers; ++i) {
    ServerSlot& slot = layout()->servers[i];
    std::uint64_t owner = slot.process.load();
    if (taken_by_live(owner) || !slot.process.compare_exchange_strong(owner, me)) continue;
    slot.started_ns.store(wall_clock_ns());
    slot.handled.store(0);
    server_slot_ = i;
    listed_servers().add(segment_.name());
    return {};
  }
  return error(errc::limit_reached, *segment_.description(), std::to_string(kServers) + " servers serve it already");
}

void Registry::remove_server() noexcept {
  if (!server_slot_) return;
  // The slot is this process's: it goes with the last of its Servers here.
  if (listed_servers().release(segment_.name())) {
    std::uint64_t me = ProcessId::current().packed();
    (void)layout()->servers[*server_slot_].process.compare_exchange_strong(me, 0);
  }
  server_slot_.reset();
}

void Registry::count_handled() noexcept {
  if (server_slot_) layout()->servers[*server_slot_].handled.fetch_add(1, std::memory_order_relaxed);
}

bool Registry::any_server_alive() const noexcept {
  return std::any_of(std::begin(layout()->servers), std::end(layout()->servers), [](const ServerSlot& slot) {
    const std::uint64_t owner = slot.process.load();
    return owner != 0 && ProcessId::from_packed(owner).alive();
  });
}

std::optional<std::size_t> Registry::claim_call_slot(const CallKey& key, pid_t caller_pid,
                                                     std::string_view method) noexcept {
  for (std::size_t n = 0; n < kCalls; ++n) {
    const std::size_t i = (key.call_id + key.client_key + n) % kCalls;
    CallSlot& slot = layout()->calls[i];
    std::uint64_t owner = slot.server.load();
    if (taken_by_live(owner) || !slot.server.compare_exchange_strong(owner, kFilling)) continue;
    slot.client_key.store(key.client_key, std::memory_order_relaxed);
    slot.call_id.store(key.call_id, std::memory_order_relaxed);
    slot.started_ns.store(coarse_wall_clock_ns(), std::memory_order_relaxed);
    slot.caller_pid.store(static_cast<std::uint32_t>(caller_pid), std::memory_order_relaxed);
    slot.caller_uid.store(key.caller_uid, std::memory_order_relaxed);
    write_method(slot, method);
    slot.cancelled.store(0, std::memory_order_relaxed);
    return i;
  }
  return std::nullopt;
}

std::optional<std::size_t> Registry::publish_call(const CallKey& key, pid_t caller_pid, std::string_view method) noexcept {
  const auto slot = claim_call_slot(key, caller_pid, method);
  // Published before the ring is looked at (seq_cst, as cancel() records
  // before it looks at the calls).
  if (slot) layout()->calls[*slot].server.store(ProcessId::current().packed(), std::memory_order_seq_cst);
  return slot;
}

void Registry::retire_call(std::size_t slot) noexcept { layout()->calls[slot].server.store(0, std::memory_order_release); }

std::optional<std::size_t> Registry::hold_call_slot(const CallKey& key, pid_t caller_pid) noexcept {
  const auto slot = claim_call_slot({key.client_key, 0, key.caller_uid}, caller_pid, {});
  if (slot) layout()->calls[*slot].server.store(ProcessId::current().packed(), std::memory_order_release);
  return slot;
}

void Registry::start_held_call(std::size_t slot, std::uint64_t call_id, std::string_view method,
                               bool same_method) noexcept {
  CallSlot& held = layout()->calls[slot];
  held.started_ns.store(coarse_wall_clock_ns(), std::memory_order_relaxed);
  if (!same_method) write_method(held, method);
  held.cancelled.store(0, std::memory_order_relaxed);
  held.call_id.store(call_id, std::memory_order_release);  // listed from here on
}

void Registry::end_held_call(std::size_t slot) noexcept {
  layout()->calls[slot].call_id.store(0, std::memory_order_release);
}

void Registry::cancel(const CallKey& key) noexcept {
  Layout* registry = layout();
  CancelSlot& entry = registry->cancels[registry->header.cancel_cursor.fetch_add(1) % kCancels];
  entry.client_key.store(key.client_key);
  entry.caller_uid.store(key.caller_uid);
  entry.call_id.store(key.call_id);  // seq_cst: recorded before the calls are looked at
  for (CallSlot& slot : registry->calls) {
    const std::uint64_t owner = slot.server.load();
    if (owner > kFilling && slot.client_key.load() == key.client_key && slot.call_id.load() == key.call_id &&
        slot.caller_uid.load() == key.caller_uid) {
      slot.cancelled.store(1);
    }
  }
}

bool Registry::cancel_recorded(const CallKey& key) const noexcept {
  // Entries fill in order: only the first `cancel_cursor` were ever written
  // (none, usually). A cancel counted after this load finds the call
  // published instead (cancel() looks at the calls after its entry).
  const Layout* registry = layout();
  const std::size_t written = std::min<std::uint64_t>(registry->header.cancel_cursor.load(), kCancels);
  return std::any_of(registry->cancels, registry->cancels + written, [&](const CancelSlot& entry) {
    return entry.call_id.load() == key.call_id && entry.client_key.load() == key.client_key &&
           entry.caller_uid.load() == key.caller_uid;
  });
}

EndpointStatus Registry::status() const {
  EndpointStatus status;
  for (const ServerSlot& slot : layout()->servers) {
    const std::uint64_t owner = slot.process.load();
    if (owner == 0) continue;
    const ProcessId process = ProcessId::from_packed(owner);
    status.servers.push_back({process.pid(), process.alive(), slot.started_ns.load(), slot.handled.load()});
  }
  for (const CallSlot& slot : layout()->calls) {
    const std::uint64_t owner = slot.server.load();
    if (owner <= kFilling || slot.call_id.load(std::memory_order_acquire) == 0 ||  // a lane between calls
        !ProcessId::from_packed(owner).alive()) {
      continue;
    }
    status.calls.push_back({ProcessId::from_packed(owner).pid(), static_cast<pid_t>(slot.caller_pid.load()),
                            static_cast<uid_t>(slot.caller_uid.load()), slot.call_id.load(), method_of(slot),
                            slot.started_ns.load(), slot.cancelled.load() != 0});
  }
  return status;
}

}  // namespace ferry::rpc::registry

namespace ferry::rpc {
result<EndpointStatus> inspect(std::string_view name) {
  auto observed = registry::Registry::observe(name, true);
  if (!observed) return std::move(observed).error();
  return observed->status();
}
}  // namespace ferry::rpc
