// MailboxSet: wait on several mailboxes and channels at once and get the
// first message, with where it came from (Mach port sets).
//
//   ferry::MailboxSet set;
//   const auto orders = set.add(orders_box);      // a Mailbox
//   const auto ticks = set.add(tick_receiver);    // a ChannelReceiver
//   auto delivery = set.receive();
//   if (delivery && delivery->source == orders) ...
//
// Sources are served round robin, so a busy one cannot starve the others.
// Sleeping costs one futex_waitv over every source's wait point: no thread,
// no descriptor. The set refers to its sources; they must outlive it.
// Messages from a channel carry no sender identity (a channel has one
// sender, known to whoever set it up).
#pragma once

#include <cstddef>
#include <optional>
#include <variant>
#include <vector>

#include "ferry/messaging/channel.hpp"
#include "ferry/messaging/mailbox.hpp"

namespace ferry {

class MailboxSet {
 public:
  struct Delivery {
    std::size_t source;  // as add() returned it
    Message message;
  };

  /// Adds a source; returns its index, reported with each of its messages.
  std::size_t add(Mailbox& mailbox);
  std::size_t add(ChannelReceiver& channel);
  [[nodiscard]] std::size_t size() const noexcept { return sources_.size(); }

  /// The next message from any source. Errors: those of the source that
  /// failed (its index is in the message), invalid_argument for an empty set.
  result<Delivery> receive(WaitStrategy strategy = {});
  /// Nothing waiting anywhere: an empty optional at once.
  result<std::optional<Delivery>> try_receive();
  /// As receive; errors also timed_out.
  result<Delivery> receive_until(deadline until, WaitStrategy strategy = {});
  result<Delivery> receive_for(steady_clock::duration timeout, WaitStrategy strategy = {}) {
    return receive_until(deadline_after(timeout), strategy);
  }

 private:
  result<std::optional<Delivery>> poll_once();
  result<std::optional<Delivery>> receive_impl(std::optional<deadline> until, WaitStrategy strategy, bool wait);

  std::vector<std::variant<Mailbox*, ChannelReceiver*>> sources_;
  std::size_t next_ = 0;  // where the next round robin starts
};

}  // namespace ferry
