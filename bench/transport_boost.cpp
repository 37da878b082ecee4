// boost.mq: boost::interprocess::message_queue (Boost.Interprocess, header-only;
// Debian: libboost-dev). One queue per direction, created by the initiator
// before the fork and removed by name at once: both processes keep using the
// mapping. Its send and receive copy the payload in and out, and block on a
// process-shared mutex + condition variable.
#include <boost/interprocess/ipc/message_queue.hpp>
#include <cstdio>
#include <memory>

#include "ipc_transports.hpp"

namespace ferry::bench {

namespace {

namespace bip = boost::interprocess;

struct BoostMq : TransportBase {
  static constexpr bool kManySenders = true;
  void prepare(const Spec& spec) {
    for (int i = 0; i < 2; ++i) {
      char name[96];
      std::snprintf(name, sizeof name, "ferry-bench.%d.%llu.boost.%d", static_cast<int>(::getpid()),
                    static_cast<unsigned long long>(spec.serial), i);
      try {
        queues_[i] = std::make_unique<bip::message_queue>(bip::create_only, name, queue_depth(spec), spec.size);
      } catch (const std::exception& e) {
        bip::message_queue::remove(name);
        fail("message_queue(%s, %zu x %s): %s", name, queue_depth(spec), size_text(spec.size).c_str(), e.what());
      }
      bip::message_queue::remove(name);
    }
  }
  void open(Side side, const Spec&) {
    out_ = queues_[side == Side::initiator ? 0 : 1].get();
    in_ = queues_[side == Side::initiator ? 1 : 0].get();
  }
  void send(const std::byte* message, std::size_t size) {
    try {
      out_->send(message, size, 0);
    } catch (const std::exception& e) {
      fail("message_queue::send: %s", e.what());
    }
  }
  const std::byte* receive(std::byte* scratch, std::size_t size) {
    bip::message_queue::size_type received = 0;
    unsigned int priority = 0;
    try {
      in_->receive(scratch, size, received, priority);
    } catch (const std::exception& e) {
      fail("message_queue::receive: %s", e.what());
    }
    if (received != size) fail("message_queue::receive: %zu bytes, expected %zu", static_cast<std::size_t>(received), size);
    return scratch;
  }
  std::unique_ptr<bip::message_queue> queues_[2];
  bip::message_queue* out_ = nullptr;
  bip::message_queue* in_ = nullptr;
};

}  // namespace

void add_boost_transport(std::vector<TransportInfo>& list) {
  list.push_back(make_transport<BoostMq>("boost.mq", Group::peer,
                                         "boost::interprocess::message_queue, one per direction, blocking send/receive"));
}

}  // namespace ferry::bench
