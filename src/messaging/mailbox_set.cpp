#include "ferry/messaging/mailbox_set.hpp"

#include <algorithm>

#include "ferry/messaging/detail/wait_source.hpp"
#include "ferry/os/futex.hpp"

namespace ferry {
namespace {

// How long one sleep lasts at most: leases of dead receivers and messages
// whose count a killed sender never made are found by looking again.
constexpr auto kSlice = std::chrono::milliseconds(100);

}  // namespace

std::size_t MailboxSet::add(Mailbox& mailbox) {
  sources_.emplace_back(&mailbox);
  return sources_.size() - 1;
}

std::size_t MailboxSet::add(ChannelReceiver& channel) {
  sources_.emplace_back(&channel);
  return sources_.size() - 1;
}

result<std::optional<MailboxSet::Delivery>> MailboxSet::poll_once() {
  for (std::size_t step = 0; step < sources_.size(); ++step) {
    const std::size_t index = (next_ + step) % sources_.size();
    std::optional<Message> got;
    if (auto* const* mailbox = std::get_if<Mailbox*>(&sources_[index])) {
      auto received = (*mailbox)->try_receive();
      if (!received) return std::move(received).error();
      got = std::move(*received);
    } else {
      ChannelReceiver* channel = std::get<ChannelReceiver*>(sources_[index]);
      auto peeked = channel->try_peek();
      if (!peeked) return std::move(peeked).error();
      if (*peeked) {
        Message message;
        message.bytes_.assign(**peeked);
        if (auto released = channel->release(); !released) return released.error();
        got = std::move(message);
      }
    }
    if (got) {
      next_ = index + 1;
      return std::optional<Delivery>(Delivery{index, std::move(*got)});
    }
  }
  return std::optional<Delivery>{};
}

result<std::optional<MailboxSet::Delivery>> MailboxSet::receive_impl(std::optional<deadline> until,
                                                                     WaitStrategy strategy, bool wait) {
  if (sources_.empty()) return error(errc::invalid_argument, "mailbox set", "it has no sources");
  std::vector<detail::WaitSource> waits;
  std::vector<FutexWaiter> words;
  for (;;) {
    auto got = poll_once();
    if (!got || *got || !wait) return got;
    if (waits.empty()) {
      for (auto& source : sources_) {
        waits.push_back(std::visit([](auto* object) { return detail::wait_source(*object); }, source));
      }
    }
    const auto any_ready = [&] {
      return std::any_of(waits.begin(), waits.end(), [](const detail::WaitSource& w) { return w.ready(); });
    };
    const deadline slice = until ? std::min(*until, deadline_after(kSlice)) : deadline_after(kSlice);
    if (strategy.mode != WaitStrategy::Mode::block &&
        spin_until(any_ready, strategy.mode == WaitStrategy::Mode::busy_poll ? std::chrono::nanoseconds::max()
                                                                              : strategy.spin,
                   slice)) {
      continue;
    }
    if (strategy.mode != WaitStrategy::Mode::busy_poll) {
      // Counted as a sleeper everywhere before the last look, then asleep on
      // every word at once: no notify can fall in between (WaitPoint).
      words.clear();
      for (auto& w : waits) words.push_back({&w.point->futex_word(), w.point->prepare_sleep()});
      if (!any_ready()) (void)futex_wait_any(words, slice);
      for (auto& w : waits) w.point->cancel_sleep();
    }
    if (until && steady_clock::now() >= *until) {
      auto last = poll_once();
      if (!last || *last) return last;
      return error(errc::timed_out, "mailbox set", "nothing within the timeout");
    }
  }
}

result<MailboxSet::Delivery> MailboxSet::receive(WaitStrategy strategy) {
  auto got = receive_impl(std::nullopt, strategy, true);
  if (!got) return std::move(got).error();
  return std::move(**got);
}

result<std::optional<MailboxSet::Delivery>> MailboxSet::try_receive() { return receive_impl(std::nullopt, {}, false); }

result<MailboxSet::Delivery> MailboxSet::receive_until(deadline until, WaitStrategy strategy) {
  auto got = receive_impl(until, strategy, true);
  if (!got) return std::move(got).error();
  return std::move(**got);
}

}  // namespace ferry
