#include "ferry/sync/semaphore.hpp"

namespace ferry {

Semaphore::Semaphore(std::uint32_t initial, std::uint32_t maximum, std::string_view label)
    : count_(initial), maximum_(maximum), label_(label) {
  if (maximum == 0 || initial > maximum) {
    const error e(errc::invalid_argument, label_.describe("semaphore"),
                  "initial " + std::to_string(initial) + " and maximum " + std::to_string(maximum) +
                      " need 1 <= maximum and initial <= maximum");
    detail::abort_with("precondition violated", &e);
  }
}

result<void> Semaphore::post(std::uint32_t units) {
  std::uint32_t seen = count_.load(std::memory_order_relaxed);
  do {
    if (units > maximum_ || seen > maximum_ - units) {
      return error(errc::limit_reached, label_.describe("semaphore"),
                   "posting " + std::to_string(units) + " to " + std::to_string(seen) +
                       " would pass the maximum of " + std::to_string(maximum_));
    }
    // seq_cst: WaitPoint's contract for the write that makes the condition true.
  } while (!count_.compare_exchange_weak(seen, seen + units, std::memory_order_seq_cst,
                                         std::memory_order_relaxed));
  if (units == 1) {
    available_.notify_one();
  } else {
    available_.notify_all();
  }
  return {};
}

bool Semaphore::try_wait() noexcept {
  // seq_cst: this is the condition a waiter re-checks (WaitPoint's contract).
  std::uint32_t seen = count_.load(std::memory_order_seq_cst);
  while (seen != 0) {
    if (count_.compare_exchange_weak(seen, seen - 1, std::memory_order_seq_cst,
                                     std::memory_order_seq_cst)) {
      return true;
    }
  }
  return false;
}

void Semaphore::wait(WaitStrategy strategy) {
  available_.wait([this] { return try_wait(); }, strategy);
}

result<void> Semaphore::wait_for(steady_clock::duration timeout, WaitStrategy strategy) {
  return wait_until(deadline_after(timeout), strategy);
}

result<void> Semaphore::wait_until(deadline until, WaitStrategy strategy) {
  if (available_.wait([this] { return try_wait(); }, strategy, until) == wait_status::ready) return {};
  return error(errc::timed_out, label_.describe("semaphore"));
}

}  // namespace ferry
