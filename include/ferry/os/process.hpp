// Who a process is: credentials, and an identity that survives PID reuse.
//
// A pid alone cannot say whether "the process that attached" is still alive:
// after it dies the kernel may hand the same pid to an unrelated process.
// `ProcessId` pairs the pid with a token derived from the process's start
// time and the boot it started in, so a recycled pid (or a pid recorded
// before a reboot, in a file that outlived it) never looks alive.
//
// A ProcessId packs into one 64-bit word, so it can be published in shared
// memory with a single atomic store and claimed with a single CAS.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>

namespace ferry {

/// The credentials a process acts with (effective uid/gid).
struct Credentials {
  uid_t uid = 0;
  gid_t gid = 0;
  pid_t pid = 0;

  /// This process's effective credentials.
  static Credentials current() noexcept;
  friend bool operator==(const Credentials&, const Credentials&) = default;
};

/// Who sent a message, as the kernel attests it: the Mailbox takes it from
/// file ownership and record locks, UNIX sockets from SO_PEERCRED.
struct SenderIdentity {
  uid_t uid = 0;
  gid_t gid = 0;
  pid_t pid = 0;
  /// false: the pid is not attested. For a Mailbox: the sender had died
  /// before any receiver saw it alive, so `pid` is only what it wrote in its
  /// log (uid is attested still).
  bool pid_attested = false;
};

/// A process, identified so that PID reuse cannot fool a liveness check.
class ProcessId {
 public:
  constexpr ProcessId() noexcept = default;

  /// The calling process. Cached per process (refreshed after fork).
  static ProcessId current() noexcept;
  /// The process running as `pid` now, or nothing if there is none.
  static std::optional<ProcessId> of(pid_t pid) noexcept;
  /// Rebuilds an identity stored with `packed()`; 0 is "nobody".
  static constexpr ProcessId from_packed(std::uint64_t word) noexcept {
    return ProcessId(static_cast<pid_t>(word >> 32), static_cast<std::uint32_t>(word));
  }

  [[nodiscard]] constexpr pid_t pid() const noexcept { return pid_; }
  [[nodiscard]] constexpr bool empty() const noexcept { return pid_ == 0; }
  /// pid in the high half, start token in the low half; never 0 for a real process.
  [[nodiscard]] constexpr std::uint64_t packed() const noexcept {
    return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(pid_)) << 32) | start_token_;
  }

  /// True while this very process runs (a zombie counts as dead).
  [[nodiscard]] bool alive() const noexcept;

  friend constexpr bool operator==(ProcessId, ProcessId) noexcept = default;

 private:
  constexpr ProcessId(pid_t pid, std::uint32_t start_token) noexcept
      : pid_(pid), start_token_(start_token) {}

  pid_t pid_ = 0;
  std::uint32_t start_token_ = 0;
};

/// The kernel thread id of the calling thread (cached; correct after fork).
pid_t current_thread_id() noexcept;

}  // namespace ferry
