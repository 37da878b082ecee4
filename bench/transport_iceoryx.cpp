// iceoryx.poll and iceoryx.waitset: Eclipse iceoryx 2.0 (Debian: iceoryx,
// libiceoryx-posh-dev, libiceoryx-hoofs-dev), untyped publisher/subscriber,
// one service per direction. The coordinator runs its own iox-roudi with
// mempools for the sizes measured (see ipc_bench.cpp).
//
//   send:    loan a chunk of the message's size, copy the message into it, publish;
//            in a round trip only its stamps (first and last 8 bytes), as a
//            zero-copy application writes its payload once, in the chunk
//            (ferry.loan does the same).
//   receive: take() the next chunk and read it in place (zero-copy); it is
//            released at the next receive.
//   iceoryx.poll     spins on take().
//   iceoryx.waitset  waits on a WaitSet attached to the subscriber's HAS_DATA
//                    state when take() finds nothing.
//
// Streaming settings: subscriber queueCapacity = the common queue depth (about
// 4 MiB of messages, 4..256) with QueueFullPolicy::BLOCK_PRODUCER, publisher
// ConsumerTooSlowPolicy::WAIT_FOR_CONSUMER: nothing is dropped.
//
// Each process registers its own runtime after the fork (a runtime does not
// survive fork) and leaves with exit() so that the runtime deregisters.
#include <unistd.h>

#include <cstdio>
#include <optional>

#include "iceoryx_hoofs/log/logmanager.hpp"
#include "iceoryx_posh/mepoo/chunk_header.hpp"
#include "iceoryx_posh/popo/untyped_publisher.hpp"
#include "iceoryx_posh/popo/untyped_subscriber.hpp"
#include "iceoryx_posh/popo/wait_set.hpp"
#include "iceoryx_posh/runtime/posh_runtime.hpp"
#include "ipc_transports.hpp"

namespace ferry::bench {

namespace {

iox::capro::IdString_t id_string(const std::string& text) {
  return iox::capro::IdString_t(iox::cxx::TruncateToCapacity, text.c_str());
}

const char* allocation_error(iox::popo::AllocationError error) {
  switch (error) {
    case iox::popo::AllocationError::NO_MEMPOOLS_AVAILABLE:
      return "no mempools available";
    case iox::popo::AllocationError::RUNNING_OUT_OF_CHUNKS:
      return "running out of chunks";
    case iox::popo::AllocationError::TOO_MANY_CHUNKS_ALLOCATED_IN_PARALLEL:
      return "too many chunks allocated in parallel";
    case iox::popo::AllocationError::INVALID_PARAMETER_FOR_USER_PAYLOAD_OR_USER_HEADER:
      return "invalid user payload size (no mempool with chunks that big?)";
    default:
      return "allocation error";
  }
}

template <bool kWaitSet>
struct Iceoryx : TransportBase {
  static constexpr bool kExitNormally = true;

  static std::string not_applicable(Pattern pattern, std::size_t) {
    if (pattern == Pattern::wake && !kWaitSet) return "spins: never sleeps, so nothing to wake";
    return {};
  }

  void prepare(const Spec& spec) {
    // Unique in this run and across runs: A's pid and the measurement's serial.
    char instance[64];
    std::snprintf(instance, sizeof instance, "m%d-%llu", static_cast<int>(::getpid()),
                  static_cast<unsigned long long>(spec.serial));
    instance_ = instance;
  }

  void open(Side side, const Spec& spec) {
    iox::log::LogManager::GetLogManager().SetDefaultLogLevel(iox::log::LogLevel::kWarn);
    char name[64];
    std::snprintf(name, sizeof name, "ferry-bench-%d", static_cast<int>(::getpid()));
    // The runtime's socket and lock file; it removes them at exit(), not when killed.
    detail::register_leftover(std::string("/tmp/") + name);
    detail::register_leftover(std::string("/tmp/") + name + ".lock");
    // initRuntime waits (up to a minute) for RouDi to answer: if the watchdog
    // fires in there, RouDi is not serving, which is "not running".
    detail::watchdog_phase(Status::not_running, "the iceoryx runtime could not register with iox-roudi in time");
    iox::runtime::PoshRuntime::initRuntime(iox::RuntimeName_t(iox::cxx::TruncateToCapacity, name));
    detail::watchdog_phase(Status::error, nullptr);

    const bool initiator = side == Side::initiator;
    round_trip_ = is_round_trip(spec.pattern);
    iox::popo::PublisherOptions publisher_options;
    publisher_options.historyCapacity = 0;
    publisher_options.subscriberTooSlowPolicy = iox::popo::ConsumerTooSlowPolicy::WAIT_FOR_CONSUMER;
    iox::popo::SubscriberOptions subscriber_options;
    subscriber_options.queueCapacity = queue_depth(spec);
    subscriber_options.historyRequest = 0;
    subscriber_options.queueFullPolicy = iox::popo::QueueFullPolicy::BLOCK_PRODUCER;
    const iox::capro::ServiceDescription to_responder(id_string("ferry-bench"), id_string(instance_),
                                                      id_string("to-responder"));
    const iox::capro::ServiceDescription to_initiator(id_string("ferry-bench"), id_string(instance_),
                                                      id_string("to-initiator"));
    publisher_.emplace(initiator ? to_responder : to_initiator, publisher_options);
    subscriber_.emplace(initiator ? to_initiator : to_responder, subscriber_options);
    if constexpr (kWaitSet) {
      waitset_.emplace();
      if (waitset_->attachState(*subscriber_, iox::popo::SubscriberState::HAS_DATA).has_error()) {
        fail("WaitSet::attachState(HAS_DATA) failed");
      }
    }
  }

  // Subscription goes through RouDi's discovery: wait until both directions are connected.
  void connect(Side, const Spec& spec) {
    const std::uint64_t deadline = now_ns() + std::uint64_t{spec.watchdog_s} * 500'000'000u;
    while (!publisher_->hasSubscribers() ||
           subscriber_->getSubscriptionState() != iox::SubscribeState::SUBSCRIBED) {
      if (now_ns() > deadline) fail("iceoryx: the two processes did not get connected through RouDi");
      ::usleep(200);
    }
  }

  void send(const std::byte* message, std::size_t size) {
    auto loaned = publisher_->loan(static_cast<std::uint32_t>(size));
    if (loaned.has_error()) fail("loan(%s): %s", size_text(size).c_str(), allocation_error(loaned.get_error()));
    auto* chunk = static_cast<std::byte*>(loaned.value());
    if (round_trip_ && size >= 16) {
      std::memcpy(chunk, message, 8);
      std::memcpy(chunk + size - 8, message + size - 8, 8);
    } else {
      std::memcpy(chunk, message, size);
    }
    publisher_->publish(chunk);
  }

  const std::byte* receive(std::byte*, std::size_t size) {
    if (held_ != nullptr) subscriber_->release(held_);
    held_ = nullptr;
    for (std::uint32_t polls = 0;; ++polls) {
      auto taken = subscriber_->take();
      if (!taken.has_error()) {
        held_ = taken.value();
        break;
      }
      if (taken.get_error() != iox::popo::ChunkReceiveResult::NO_CHUNK_AVAILABLE) {
        fail("take(): too many chunks held in parallel");
      }
      if constexpr (kWaitSet) {
        waitset_->timedWait(iox::units::Duration::fromSeconds(1));
      } else {
        cpu_relax();
        if (polls >= 1024) yield_cpu();
      }
    }
    const std::uint32_t received = iox::mepoo::ChunkHeader::fromUserPayload(held_)->userPayloadSize();
    if (received != size) fail("take(): a %u-byte chunk, expected %zu", received, size);
    return static_cast<const std::byte*>(held_);
  }

  void close(Side) {
    if (held_ != nullptr) subscriber_->release(held_);
    held_ = nullptr;
    waitset_.reset();
    subscriber_.reset();
    publisher_.reset();
  }

  std::string instance_;
  std::optional<iox::popo::UntypedPublisher> publisher_;
  std::optional<iox::popo::UntypedSubscriber> subscriber_;
  std::optional<iox::popo::WaitSet<>> waitset_;
  const void* held_ = nullptr;
  bool round_trip_ = false;
};

TransportInfo with_roudi(TransportInfo info) {
  info.needs_roudi = true;
  return info;
}

}  // namespace

void add_iceoryx_transports(std::vector<TransportInfo>& list) {
  list.push_back(with_roudi(make_transport<Iceoryx<false>>(
      "iceoryx.poll", Group::peer, "iceoryx 2.0 untyped pub/sub, loan + copy in + publish, busy-poll take()")));
  list.push_back(with_roudi(make_transport<Iceoryx<true>>(
      "iceoryx.waitset", Group::peer, "iceoryx 2.0 untyped pub/sub, loan + copy in + publish, WaitSet wait")));
}

}  // namespace ferry::bench
