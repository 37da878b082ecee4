// Test support shared by every ferry test: unique names, the volume knob,
// real child processes, a second user, and temporary directories.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <functional>
#include <string>
#include <string_view>
#include <vector>
#include <cstdio>

#include <ostream>

#include <gtest/gtest.h>

#include "ferry/os/segment.hpp"
#include "ferry/sync/wait.hpp"

namespace ferry {
// Shows kinds by name in test output.
inline void PrintTo(SegmentKind kind, std::ostream* out) { *out << to_string(kind); }
}  // namespace ferry

namespace ferry::test {

/// Names parameterized tests after the segment kind ("posix", "sysv", ...).
inline std::string kind_name(const ::testing::TestParamInfo<SegmentKind>& info) {
  return std::string(to_string(info.param));
}

/// Names parameterized tests after the wait strategy ("adaptive", ...).
inline std::string strategy_name(const ::testing::TestParamInfo<WaitStrategy>& info) {
  switch (info.param.mode) {
    case WaitStrategy::Mode::adaptive: return "adaptive";
    case WaitStrategy::Mode::busy_poll: return "busy_poll";
    case WaitStrategy::Mode::block: return "block";
  }
  return "unknown";
}

/// A name no other test (or concurrent run) uses: "t<pid>-<n>-<stem>".
std::string unique_name(std::string_view stem = "seg");

/// Volume and torture counts: `count` scaled by FERRY_TEST_SCALE (default 1),
/// never below 1. Sanitizer builds in CI set a smaller scale.
std::size_t scaled(std::size_t count);

/// The second user the tests drop to (Debian's "nobody").
inline constexpr uid_t kOtherUid = 65534;
inline constexpr gid_t kOtherGid = 65534;

/// In a child: becomes kOtherUid/kOtherGid for good; aborts if it cannot.
void become_other_user();

/// A real child process made with fork(). Its body's return value is its exit
/// code. A Child not waited for is killed and reaped on destruction.
class Child {
 public:
  static Child spawn(const std::function<int()>& body);
  /// fork + exec of `program` with `arguments` (argv[0] is `program`).
  static Child exec(const std::string& program, const std::vector<std::string>& arguments);

  Child(Child&& other) noexcept;
  Child& operator=(Child&&) = delete;
  ~Child();

  pid_t pid() const { return pid_; }
  /// Exit code, or 128 + signal number if it was killed.
  int wait();
  /// As wait(), but a child still running after `timeout` is killed and
  /// kTimedOut returned: the watchdog for tests that could otherwise hang.
  static constexpr int kTimedOut = -2;
  int wait_for(std::chrono::milliseconds timeout);
  void kill(int signal_number);

 private:
  explicit Child(pid_t pid) : pid_(pid) {}
  pid_t pid_ = -1;
};

/// A one-shot event that crosses fork(): one side `signal()`s, the other
/// `wait()`s (false on timeout). Built on a pipe.
class Event {
 public:
  Event();
  ~Event();
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  void signal();
  bool wait(std::chrono::milliseconds timeout = std::chrono::seconds(20));

 private:
  int read_end_ = -1;
  int write_end_ = -1;
};

/// A fresh directory under /tmp, removed with its contents at the end.
class TempDir {
 public:
  explicit TempDir(mode_t mode = 0700);
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(std::string_view name) const { return path_ + "/" + std::string(name); }

 private:
  std::string path_;
};

/// Anonymous shared memory made before fork(): parent and children see the
/// same bytes. Holds one T, constructed in place.
template <class T>
class SharedAnonymous {
 public:
  template <class... Args>
  explicit SharedAnonymous(Args&&... args) : memory_(map(sizeof(T))) {
    value_ = new (memory_) T(std::forward<Args>(args)...);
  }
  ~SharedAnonymous() { unmap(memory_, sizeof(T)); }
  SharedAnonymous(const SharedAnonymous&) = delete;
  SharedAnonymous& operator=(const SharedAnonymous&) = delete;
  T& operator*() const { return *value_; }
  T* operator->() const { return value_; }

 private:
  static void* map(std::size_t size);
  static void unmap(void* memory, std::size_t size);
  void* memory_;
  T* value_;
};

void* map_shared_anonymous(std::size_t size);
void unmap_shared_anonymous(void* memory, std::size_t size);
template <class T>
void* SharedAnonymous<T>::map(std::size_t size) {
  return map_shared_anonymous(size);
}
template <class T>
void SharedAnonymous<T>::unmap(void* memory, std::size_t size) {
  unmap_shared_anonymous(memory, size);
}

/// Reads a whole file (empty string if it cannot).
std::string read_file(const std::string& path);

}  // namespace ferry::test

/// In a child body: fails the child with the line number if `condition` is false.
#define FERRY_CHILD_CHECK(condition)                                              \
  do {                                                                            \
    if (!(condition)) {                                                           \
      std::fprintf(stderr, "child check failed at %s:%d: %s\n", __FILE__, __LINE__, \
                   #condition);                                                   \
      return __LINE__ % 200 + 1;                                                  \
    }                                                                             \
  } while (0)
