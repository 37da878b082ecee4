// Direct addressing: send(P, msg) and receive(Q, msg) of the OS model.
//
// Every process may own one inbox, a Mailbox named after it; others reach
// it by the process's pid, or by a name the process registered.
//
//   auto inbox = ferry::Inbox::self({.name = "logger"});   // in the receiver
//   auto message = (*inbox)->receive();
//   auto only = (*inbox)->receive_from(worker_pid);        // one sender's messages
//
//   ferry::send_to(logger_pid, bytes);                      // in any process
//   ferry::send_to("logger", bytes);
//
// The inbox lives as long as its process (process persistence; a SIGKILLed
// owner's inbox is removed by the last process still using it, or by
// `ferry gc`). Its name includes the process's start time, so a recycled pid
// never reaches a dead process's inbox. After fork(), Inbox::self() in the
// child makes the child's own.
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>

#include "ferry/messaging/mailbox.hpp"

namespace ferry {

struct InboxOptions {
  Capacity capacity;
  /// Who may send (w) to it, as for Mailbox: 0600 is this user only.
  mode_t mode = 0600;
  /// Also reachable as send_to(name); empty: by pid only.
  std::string name;
};

class Inbox {
 public:
  /// This process's inbox, made on the first call (later calls return it;
  /// their options must be the same or absent). Errors: as Mailbox::create;
  /// already_exists when `name` is registered by a live process.
  static result<Inbox*> self(const InboxOptions& options = {});
  /// Removes this process's inbox and its registered name now (exit() does
  /// it too); messages still queued there are lost.
  static void close();
  /// The mailbox name of process `pid`'s inbox (not_found if it has none).
  static result<std::string> name_of(pid_t pid);

  Inbox(const Inbox&) = delete;
  Inbox& operator=(const Inbox&) = delete;
  ~Inbox();

  [[nodiscard]] Mailbox& mailbox() noexcept { return mailbox_; }
  result<Message> receive(WaitStrategy strategy = {}) { return mailbox_.receive(strategy); }
  result<std::optional<Message>> try_receive() { return mailbox_.try_receive(); }
  result<Message> receive_for(steady_clock::duration timeout, WaitStrategy strategy = {}) {
    return mailbox_.receive_for(timeout, strategy);
  }
  /// receive(Q, msg): the next message from process `sender`.
  result<Message> receive_from(pid_t sender, WaitStrategy strategy = {}) {
    return mailbox_.receive_from(sender, strategy);
  }
  result<Message> receive_from_for(pid_t sender, steady_clock::duration timeout, WaitStrategy strategy = {}) {
    return mailbox_.receive_from_for(sender, timeout, strategy);
  }

 private:
  Inbox(Mailbox mailbox, std::string registered) noexcept
      : mailbox_(std::move(mailbox)), registered_(std::move(registered)) {}
  Mailbox mailbox_;
  std::string registered_;  // the name's link, removed with the inbox
};

/// send(P, msg): to the inbox of process `pid`. Errors: not_found (no such
/// process, or it has no inbox), those of Mailbox::send.
result<void> send_to(pid_t pid, std::span<const std::byte> message, SendOptions options = {},
                     WaitStrategy strategy = {});
/// To the inbox registered as `name`. Errors: not_found (nobody registered it).
result<void> send_to(std::string_view name, std::span<const std::byte> message, SendOptions options = {},
                     WaitStrategy strategy = {});

}  // namespace ferry
