#include "ferry/messaging/detail/notify_watcher.hpp"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>

#include "ferry/os/futex.hpp"

namespace ferry::detail {
namespace {

// How often the watcher looks whether it should stop.
constexpr auto kWatcherSlice = std::chrono::milliseconds(100);

}  // namespace

result<int> NotifyWatcher::start(WaitPoint& point, std::function<bool()> ready, std::string_view object) {
  if (notify_) return notify_.get();
  const int fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) return error::from_errno(errno, object, "eventfd");
  notify_.reset(fd);
  point_ = &point;
  thread_ = std::thread([this, &point, ready = std::move(ready)] { run(point, ready); });
  return fd;
}

void NotifyWatcher::run(WaitPoint& point, const std::function<bool()>& ready) {
  const auto ready_or_stopping = [&] { return stopping_.load() || ready(); };
  for (;;) {
    const std::uint32_t seen_drained = drained_.load();
    while (point.wait(ready_or_stopping, WaitStrategy::block(), deadline_after(kWatcherSlice)) != wait_status::ready) {
      if (stopping_.load()) return;
    }
    if (stopping_.load()) return;
    const std::uint64_t one = 1;
    (void)::write(notify_.get(), &one, sizeof one);
    while (drained_.load() == seen_drained && !stopping_.load()) {
      futex_wait(drained_, seen_drained, deadline_after(kWatcherSlice));
    }
    if (stopping_.load()) return;
  }
}

void NotifyWatcher::drained() noexcept {
  std::uint64_t value = 0;
  (void)::read(notify_.get(), &value, sizeof value);
  drained_.fetch_add(1);
  futex_wake_all(drained_);
}

void NotifyWatcher::stop() noexcept {
  if (!thread_.joinable()) return;
  stopping_.store(true);
  drained_.fetch_add(1);
  futex_wake_all(drained_);
  point_->notify_all();
  thread_.join();
}

}  // namespace ferry::detail
