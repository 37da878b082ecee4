#include "ferry/os/clock.hpp"

#include <ctime>

namespace ferry {

namespace {
std::uint64_t nanoseconds_of(clockid_t clock) noexcept {
  timespec now{};
  ::clock_gettime(clock, &now);
  return static_cast<std::uint64_t>(now.tv_sec) * 1'000'000'000u + static_cast<std::uint64_t>(now.tv_nsec);
}
}  // namespace

deadline coarse_deadline_after(steady_clock::duration timeout) noexcept {
  // steady_clock is CLOCK_MONOTONIC, whose coarse reading shares its origin.
  return deadline_after(timeout, deadline(std::chrono::nanoseconds(nanoseconds_of(CLOCK_MONOTONIC_COARSE))));
}

std::uint64_t wall_clock_ns() noexcept { return nanoseconds_of(CLOCK_REALTIME); }
std::uint64_t coarse_wall_clock_ns() noexcept { return nanoseconds_of(CLOCK_REALTIME_COARSE); }

}  // namespace ferry
