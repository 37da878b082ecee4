// What MailboxSet needs from each kind of source: the point its receivers
// sleep on and the condition that ends the sleep. Not API.
#pragma once

#include <functional>

#include "ferry/sync/wait.hpp"

namespace ferry {
class Mailbox;
class ChannelReceiver;
}  // namespace ferry

namespace ferry::detail {

struct WaitSource {
  WaitPoint* point = nullptr;
  std::function<bool()> ready;  // read with seq_cst loads (WaitPoint's contract)
};

WaitSource wait_source(Mailbox& mailbox);          // mailbox.cpp
WaitSource wait_source(ChannelReceiver& channel);  // channel.cpp

}  // namespace ferry::detail
