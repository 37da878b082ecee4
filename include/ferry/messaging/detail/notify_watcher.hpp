// notify_fd() of the Channel and the Mailbox: an eventfd that a watcher
// thread keeps readable while messages wait. Not API.
//
// The watcher sleeps on the object's WaitPoint until `ready()`, makes the
// descriptor readable, then sleeps until the owner reports (drained()) that
// a try_ form found nothing, which re-arms it. `ready` must read shared
// memory only: it runs on the watcher thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string_view>
#include <thread>

#include "ferry/os/error.hpp"
#include "ferry/os/fd.hpp"
#include "ferry/sync/wait.hpp"

namespace ferry::detail {

class NotifyWatcher {
 public:
  NotifyWatcher() = default;
  NotifyWatcher(const NotifyWatcher&) = delete;
  NotifyWatcher& operator=(const NotifyWatcher&) = delete;
  ~NotifyWatcher() { stop(); }

  /// The descriptor, made (and the watcher started) on the first call.
  result<int> start(WaitPoint& point, std::function<bool()> ready, std::string_view object);
  [[nodiscard]] bool running() const noexcept { return thread_.joinable(); }
  /// A try_ form found nothing: clears the descriptor and lets the watcher
  /// wait for the next message.
  void drained() noexcept;
  /// Stops and joins the watcher (before the memory it watches goes away).
  void stop() noexcept;

 private:
  void run(WaitPoint& point, const std::function<bool()>& ready);

  Fd notify_;
  std::atomic<bool> stopping_{false};
  std::atomic<std::uint32_t> drained_{0};  // bumped by drained() and stop()
  WaitPoint* point_ = nullptr;
  std::thread thread_;
};

}  // namespace ferry::detail
