// The registry of a shm:// rpc endpoint: a small segment "NAME.rpc" beside
// the request mailbox, in which servers list themselves and the calls they
// run, and record cancels. Not API; `ferry stat` reads it through rpc::inspect.
//
// Layout (all fields atomics, fixed-size tables; version in the header):
//
//   header      magic "FRPC", layout version, table sizes, cancel ring cursor
//   servers[64] process (packed ProcessId; 0 free), started (wall ns), handled
//   calls[256]  server (packed ProcessId; 1 being filled; 0 free), client key,
//               call id, started (wall ns), cancelled, caller pid and uid,
//               method (first 64 bytes)
//   cancels[256] a ring of recent cancels: client key, call id, caller uid
//
// A shm lane holds one call slot for its life, since its caller's calls
// run one at a time: call id 0 while it waits between calls (not listed by
// stat), the call's id while one runs.
//
// A slot whose process died is free for the next claimer. A cancel is
// written to the ring and then looked for in calls[]; a server publishes a
// call in calls[] and then looks for it in the ring (both seq_cst), so a
// cancel that races with the start of its call is seen by one side or the
// other. The ring forgets the oldest cancels: a cancel of a request that
// waits behind more than 256 later cancels is lost (the call then runs; its
// caller has already ended it). A call that finds calls[] full runs unlisted.
//
// Hostile contents (a buggy peer with write access) can only mislead stat
// and cancels: every index is computed here, never read from the segment.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "ferry/os/segment.hpp"
#include "ferry/patterns/rpc.hpp"

namespace ferry::rpc::registry {

inline constexpr std::uint32_t kMagic = 0x43505246;  // "FRPC"
inline constexpr std::uint32_t kVersion = 2;  // 2: lanes hold call slots (call id 0: idle)
inline constexpr std::size_t kServers = 64;
inline constexpr std::size_t kCalls = 256;
inline constexpr std::size_t kCancels = 256;
inline constexpr std::size_t kMethodWords = 8;  // 64 bytes of the method name

struct Header {
  std::atomic<std::uint32_t> magic;
  std::atomic<std::uint32_t> version;
  std::atomic<std::uint32_t> servers;
  std::atomic<std::uint32_t> calls;
  std::atomic<std::uint32_t> cancels;
  std::atomic<std::uint32_t> reserved;
  std::atomic<std::uint64_t> cancel_cursor;
};

struct ServerSlot {
  std::atomic<std::uint64_t> process;
  std::atomic<std::uint64_t> started_ns;
  std::atomic<std::uint64_t> handled;
  std::atomic<std::uint64_t> reserved;
};

struct CallSlot {
  std::atomic<std::uint64_t> server;
  std::atomic<std::uint64_t> client_key;
  std::atomic<std::uint64_t> call_id;
  std::atomic<std::uint64_t> started_ns;
  std::atomic<std::uint32_t> cancelled;
  std::atomic<std::uint32_t> caller_pid;
  std::atomic<std::uint32_t> caller_uid;
  std::atomic<std::uint32_t> method_length;
  std::atomic<std::uint64_t> method[kMethodWords];
};

struct CancelSlot {
  std::atomic<std::uint64_t> client_key;
  std::atomic<std::uint64_t> call_id;
  std::atomic<std::uint64_t> caller_uid;
};

struct Layout {
  Header header;
  ServerSlot servers[kServers];
  CallSlot calls[kCalls];
  CancelSlot cancels[kCancels];
};
static_assert(std::is_standard_layout_v<Layout>);
static_assert(std::atomic<std::uint64_t>::is_always_lock_free && std::atomic<std::uint32_t>::is_always_lock_free);
static_assert(sizeof(Header) == 32 && sizeof(ServerSlot) == 32 && sizeof(CallSlot) == 112 && sizeof(CancelSlot) == 24);
static_assert(offsetof(Layout, servers) == 32 && offsetof(Layout, calls) == 32 + 32 * kServers);

/// The segment's name for the endpoint's mailbox `name`.
std::string segment_name(std::string_view name);

/// Who asked for a call, to match cancels: a cancel counts only from the caller's uid.
struct CallKey {
  std::uint64_t client_key = 0;
  std::uint64_t call_id = 0;
  uid_t caller_uid = 0;
};

class Registry {
 public:
  /// Creates the segment, or opens the one another server made (read-write).
  static result<Registry> join(std::string_view name, Persistence persistence, mode_t mode);
  /// Opens it read-only (clients and ferry stat). not_found: no server made it.
  static result<Registry> observe(std::string_view name, bool allow_foreign_owner);

  /// Lists this process as a server; limit_reached when the table is full of live ones.
  result<void> add_server();
  void remove_server() noexcept;
  void count_handled() noexcept;
  [[nodiscard]] bool any_server_alive() const noexcept;

  /// Lists a call as running in this process, in the order cancel() relies
  /// on; its slot, or none when the table is full.
  std::optional<std::size_t> publish_call(const CallKey& key, pid_t caller_pid, std::string_view method) noexcept;
  /// Frees a slot of publish_call or hold_call_slot.
  void retire_call(std::size_t slot) noexcept;
  /// A slot held for the calls of one caller that come one at a time (a
  /// lane's; `key.call_id` is ignored), unlisted until a call starts; none when the table is full.
  std::optional<std::size_t> hold_call_slot(const CallKey& key, pid_t caller_pid) noexcept;
  /// A held slot's call starts (a few plain stores, no claim) and ends.
  /// `same_method`: its previous call's method, listed still, is `method`.
  void start_held_call(std::size_t slot, std::uint64_t call_id, std::string_view method, bool same_method) noexcept;
  void end_held_call(std::size_t slot) noexcept;
  [[nodiscard]] const std::atomic<std::uint32_t>& cancelled_flag(std::size_t slot) const noexcept {
    return layout()->calls[slot].cancelled;
  }
  /// Records a cancel and marks the call if it runs now.
  void cancel(const CallKey& key) noexcept;
  /// True if a cancel for `key` is in the ring.
  [[nodiscard]] bool cancel_recorded(const CallKey& key) const noexcept;

  [[nodiscard]] EndpointStatus status() const;

 private:
  explicit Registry(Segment segment) noexcept : segment_(std::move(segment)) {}
  [[nodiscard]] Layout* layout() const noexcept { return reinterpret_cast<Layout*>(segment_.data().data()); }
  static result<Registry> checked(Segment segment);
  // A free slot, claimed (kFilling) and filled for `key`; the caller publishes it.
  std::optional<std::size_t> claim_call_slot(const CallKey& key, pid_t caller_pid, std::string_view method) noexcept;

  Segment segment_;
  std::optional<std::size_t> server_slot_;
};

}  // namespace ferry::rpc::registry
