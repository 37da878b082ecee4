#include "ferry/os/process.hpp"

#include "ferry/os/detail/thread_identity.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string_view>

namespace ferry {
namespace {

// FNV-1a over the boot id text, read once: it is fixed for the life of the machine's boot.
std::uint64_t boot_fingerprint() noexcept {
  static const std::uint64_t fingerprint = [] {
    std::uint64_t hash = 1469598103934665603ull;
    char text[64] = {};
    const int fd = ::open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
      const ssize_t n = ::read(fd, text, sizeof text);
      ::close(fd);
      for (ssize_t i = 0; i < n; ++i) {
        hash = (hash ^ static_cast<unsigned char>(text[i])) * 1099511628211ull;
      }
    }
    return hash;
  }();
  return fingerprint;
}

struct ProcStat {
  char state;
  std::uint64_t start_ticks;
};

// Reads state and start time (field 22, clock ticks after boot) from /proc/<pid>/stat.
std::optional<ProcStat> read_proc_stat(pid_t pid) noexcept {
  char path[32];
  std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  char text[1024];
  const ssize_t n = ::read(fd, text, sizeof text - 1);
  ::close(fd);
  if (n <= 0) return std::nullopt;
  text[n] = '\0';
  // The command name (field 2) may hold spaces and parentheses: skip to the last ')'.
  const char* cursor = std::strrchr(text, ')');
  if (!cursor || cursor[1] != ' ') return std::nullopt;
  cursor += 2;
  ProcStat stat{*cursor, 0};
  for (int field = 3; field < 22; ++field) {
    cursor = std::strchr(cursor, ' ');
    if (!cursor) return std::nullopt;
    ++cursor;
  }
  char* end = nullptr;
  stat.start_ticks = std::strtoull(cursor, &end, 10);
  if (end == cursor) return std::nullopt;
  return stat;
}

std::uint32_t start_token(std::uint64_t start_ticks) noexcept {
  const std::uint64_t mixed = (start_ticks + 1) * 0x9E3779B97F4A7C15ull ^ boot_fingerprint();
  const auto token = static_cast<std::uint32_t>(mixed ^ (mixed >> 32));
  return token == 0 ? 1 : token;
}

}  // namespace

Credentials Credentials::current() noexcept {
  return Credentials{::geteuid(), ::getegid(), ::getpid()};
}

std::optional<ProcessId> ProcessId::of(pid_t pid) noexcept {
  if (pid <= 0) return std::nullopt;
  const auto stat = read_proc_stat(pid);
  if (!stat || stat->state == 'Z' || stat->state == 'X') return std::nullopt;
  return ProcessId(pid, start_token(stat->start_ticks));
}

namespace detail {

thread_local constinit ThreadIdentity tls_identity{0, 0};

namespace {
std::atomic<std::uint64_t> process_identity{0};  // shared by the threads of this process

// Runs in the child, in the only thread it has: the one that forked.
void forget_identities_after_fork() noexcept {
  process_identity.store(0, std::memory_order_relaxed);
  tls_identity = ThreadIdentity{0, 0};
}
}  // namespace

const ThreadIdentity& refresh_identity() noexcept {
  static const bool watching_forks =
      (::pthread_atfork(nullptr, nullptr, &forget_identities_after_fork), true);
  (void)watching_forks;
  std::uint64_t process = process_identity.load(std::memory_order_relaxed);
  if (process == 0) {
    const pid_t self = ::getpid();
    process = ProcessId::of(self)
                  .value_or(ProcessId::from_packed((static_cast<std::uint64_t>(self) << 32) | 1))
                  .packed();
    process_identity.store(process, std::memory_order_relaxed);
  }
  tls_identity = ThreadIdentity{process, ::gettid()};
  return tls_identity;
}

}  // namespace detail

ProcessId ProcessId::current() noexcept {
  return from_packed(detail::this_thread_identity().process);
}

pid_t current_thread_id() noexcept { return detail::this_thread_identity().tid; }

bool ProcessId::alive() const noexcept {
  if (pid_ <= 0) return false;
  if (::kill(pid_, 0) != 0 && errno == ESRCH) return false;
  const auto now = of(pid_);
  return now && now->start_token_ == start_token_;
}

}  // namespace ferry
