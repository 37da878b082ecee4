// Time in ferry: every timeout is measured on the monotonic clock.
//
// `_for(duration)` calls turn their duration into a `deadline` once, at the
// start, so a call that loops (spurious wake-ups, retries) never waits longer
// than asked. Wall-clock jumps never shorten or stretch a wait.
#pragma once

#include <chrono>
#include <cstdint>

namespace ferry {

using steady_clock = std::chrono::steady_clock;  // CLOCK_MONOTONIC on Linux
using deadline = steady_clock::time_point;

/// The deadline `timeout` after `from`; saturates instead of overflowing.
[[nodiscard]] inline deadline deadline_after(steady_clock::duration timeout, deadline from) noexcept {
  if (timeout > deadline::max() - from) return deadline::max();
  return from + timeout;
}
/// The deadline `timeout` from now.
[[nodiscard]] inline deadline deadline_after(steady_clock::duration timeout) noexcept {
  return deadline_after(timeout, steady_clock::now());
}

/// The same, read from the clock as of its last tick (CLOCK_MONOTONIC_COARSE:
/// a few milliseconds early at most, for a seventh of the cost): for the
/// slices of a loop that only has to look at something now and then.
[[nodiscard]] deadline coarse_deadline_after(steady_clock::duration timeout) noexcept;

/// Nanoseconds since the Unix epoch (CLOCK_REALTIME), for timestamps shown to people.
[[nodiscard]] std::uint64_t wall_clock_ns() noexcept;
/// The same as of the last clock tick (a few milliseconds behind at most,
/// never ahead), for a fraction of the cost: for ages taken on a hot path.
[[nodiscard]] std::uint64_t coarse_wall_clock_ns() noexcept;

}  // namespace ferry
