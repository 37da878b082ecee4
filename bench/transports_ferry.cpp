// ferry's own transports in the benchmark: the Channel and the Mailbox, in
// each wait strategy, the Channel's loans, the Topic with one and four subscribers, and the unix://, tcp://, pipe:,
// unixgram:// and udp:// endpoints through the Sender/Receiver interface
// (beside their raw calls).
//
// prepare() creates two channels (one per direction) in A and removes their
// names at once: B inherits the mappings through fork, so nothing is left
// behind whatever happens. Each side then claims its roles in open().
//
// rtt: every message is published at once (one index store each).
// throughput: messages are committed with Publish::later and published every
// kBatch messages or kBatchBytes, whichever comes first (and for the stream's
// last one): the batching the Channel offers for streams of small messages.
// Large messages are published one by one: holding them back gains nothing
// and leaves the receiver idle (asleep, when it adapts) while they are written. The receiver reads in place (peek) and releases the
// previous message at the next receive.
//
// Loans: ferry.loan sends every request in a loaned chunk; in a round trip
// the sender writes only the stamps (first and last 8 bytes) into it, as a
// zero-copy application writes its payload once, where it lands (iceoryx's
// round trip does the same); in a stream it copies the whole message in.
// ferry.auto sends with send(bytes) and the default options, which copy
// into a chunk what the ring cannot hold (above 64 KiB). Both answer a round trip with a 64-byte ring message, and
// their channels are process-persistent: the chunks' segments, made while
// measuring, go with the two processes.
#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#include <fstream>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ferry/messaging/channel.hpp"
#include "ferry/messaging/detail/channel_layout.hpp"
#include "ferry/messaging/endpoints.hpp"
#include "ferry/messaging/mailbox.hpp"
#include "ferry/patterns/topic.hpp"
#include "ipc_transports.hpp"

namespace ferry::bench {
namespace {

constexpr std::uint64_t kBatch = 32;
constexpr std::size_t kBatchBytes = 16 * 1024;

// What ferry's transports share: the wait strategy they are measured with.
template <WaitStrategy::Mode kMode>
struct FerryTransport : TransportBase {
  static WaitStrategy strategy() { return WaitStrategy{kMode, std::chrono::microseconds(20)}; }

  static std::string not_applicable(Pattern pattern, std::size_t) {
    if (pattern == Pattern::wake && kMode == WaitStrategy::Mode::busy_poll) {
      return "spins: never sleeps, so nothing to wake";
    }
    return {};
  }
};

enum class ChannelSend : std::uint8_t { ring, loan, automatic };

template <WaitStrategy::Mode kMode, ChannelSend kSend = ChannelSend::ring>
struct ChannelTransport : FerryTransport<kMode> {
  using FerryTransport<kMode>::strategy;

  // A stream's ring is kRingBytes, like the spin floor's; a round trip's holds
  // queue_depth(spec) messages sent on their own, like every queue here (a
  // few lines that stay in both CPUs' caches, where a large ring's messages
  // each land on a line fetched afresh). Channel::create raises it to what
  // max_message needs.
  static std::size_t ring_bytes(const Spec& spec) {
    if (!is_round_trip(spec.pattern)) return kRingBytes;
    return std::min(kRingBytes, queue_depth(spec) * ferry::detail::record_size(spec.size));
  }

  static ChannelOptions options(const Spec& spec) {
    if constexpr (kSend == ChannelSend::ring) {
      // Every message in the ring, whatever its size: the ring's own figures.
      return {.capacity = ring_bytes(spec),
              .max_message = std::max<std::size_t>(spec.size, 64),
              .loans = {.threshold = SIZE_MAX}};
    } else {
      return {.capacity = ring_bytes(spec),
              .max_message = kSend == ChannelSend::loan ? kRttSize : ChannelOptions{}.max_message,
              .persistence = Persistence::process};
    }
  }

  void prepare(const Spec& spec) {
    const std::string base = "bench-" + std::to_string(::getpid()) + "-" + std::to_string(spec.serial);
    const ChannelOptions options = this->options(spec);
    for (int direction = 0; direction < 2; ++direction) {
      const std::string name = base + (direction == 0 ? "-ab" : "-ba");
      auto made = Channel::create(name, options);
      if (!made) fail("%s", made.error().message().c_str());
      (void)Channel::destroy(name);  // both processes keep the mapping
      channels_[direction].emplace(std::move(*made));
    }
  }

  void open(Side side, const Spec& spec) {
    batching_ = spec.pattern == Pattern::throughput && kSend == ChannelSend::ring;
    round_trip_ = is_round_trip(spec.pattern);
    initiator_ = side == Side::initiator;
    const int out = side == Side::initiator ? 0 : 1;
    auto tx = channels_[out]->sender();
    if (!tx) fail("%s", tx.error().message().c_str());
    auto rx = channels_[1 - out]->receiver();
    if (!rx) fail("%s", rx.error().message().c_str());
    tx_.emplace(std::move(*tx));
    rx_.emplace(std::move(*rx));
  }

  void send(const std::byte* message, std::size_t size) {
    if (kSend == ChannelSend::loan && initiator_) return send_loan(message, size);
    if (!batching_) {
      if (auto sent = tx_->send({message, size}, strategy()); !sent) fail("%s", sent.error().message().c_str());
      return;
    }
    auto space = tx_->reserve(size, strategy());
    if (!space) fail("%s", space.error().message().c_str());
    std::memcpy(space->data(), message, size);
    const bool last = (read_stamp(message, size) & kLast) != 0;
    pending_bytes_ += size;
    const bool now = last || ++pending_ % kBatch == 0 || pending_bytes_ >= kBatchBytes;
    if (now) pending_bytes_ = 0;
    if (auto committed = tx_->commit(size, now ? Publish::now : Publish::later); !committed) {
      fail("%s", committed.error().message().c_str());
    }
  }

  const std::byte* receive(std::byte*, std::size_t size) {
    if (holding_) (void)rx_->release();
    auto message = rx_->peek(strategy());
    if (!message) fail("%s", message.error().message().c_str());
    if (message->size() != size) fail("received %zu bytes, expected %zu", message->size(), size);
    holding_ = true;
    return message->data();
  }

  void close(Side) {
    if (holding_) (void)rx_->release();
    if (tx_) tx_->publish();
  }

  void send_loan(const std::byte* message, std::size_t size) {
    auto loan = tx_->loan(size, strategy());
    if (!loan) fail("%s", loan.error().message().c_str());
    std::byte* chunk = loan->data().data();
    if (round_trip_ && size >= 16) {
      std::memcpy(chunk, message, 8);
      std::memcpy(chunk + size - 8, message + size - 8, 8);
    } else {
      std::memcpy(chunk, message, size);
    }
    if (auto sent = tx_->send(std::move(*loan), strategy()); !sent) fail("%s", sent.error().message().c_str());
  }

  std::optional<Channel> channels_[2];
  std::optional<ChannelSender> tx_;
  std::optional<ChannelReceiver> rx_;
  bool batching_ = false;
  bool round_trip_ = false;
  bool initiator_ = false;
  bool holding_ = false;
  std::uint64_t pending_ = 0;
  std::size_t pending_bytes_ = 0;
};

// ferry.topic: a Topic per direction (block policy: nothing is dropped),
// one publisher on each, and on A's topic B's subscriber plus, for
// ferry.topic.fanout4, three more subscriber processes A forks: each reads
// every request in place (its stamps) and releases it, as B does, so a
// request is published once for four readers. Requests of a round trip are
// loans the sender writes only the stamps of (as ferry.loan and iceoryx);
// replies, and the messages of a stream, are publish(bytes) copies into the
// ring; subscribers read in place (peek) and release at the next receive.
// The three extra subscribers of ferry.topic.fanout4 coalesce their
// wake-ups (SubscribeOptions::coalesce, 1 ms: woken once per half ring or
// when the publisher needs room), as subscribers that need not see each
// request at once would; those of ferry.topic.fanout4.eager wait as B does,
// woken by every publish. The topics are process-persistent and their names
// go at once: the chunks' segments go with the processes.
enum class Extras : std::uint8_t { coalescing, eager };

template <std::size_t kExtraSubscribers, Extras kExtras = Extras::coalescing>
struct TopicTransport : FerryTransport<WaitStrategy::Mode::adaptive> {
  void prepare(const Spec& spec) {
    const std::string base = "bench-" + std::to_string(::getpid()) + "-" + std::to_string(spec.serial);
    round_trip_ = is_round_trip(spec.pattern);
    // Deeper than kRoundTripDepth in a round trip: the extra subscribers of a
    // fan-out are not part of it and fall behind by more than a few messages
    // (a 4-message ring held the publisher back: fanout4 1.35 -> 13 us). Its
    // requests are references (a small slot each); the chunk pool bounds them.
    const TopicOptions options{.capacity = round_trip_ ? queue_depth(1) : queue_depth(spec),
                               .max_message = round_trip_ ? kRttSize : std::max<std::size_t>(spec.size, 64),
                               .persistence = Persistence::process};
    for (int direction = 0; direction < 2; ++direction) {
      const std::string name = base + (direction == 0 ? "-ab-topic" : "-ba-topic");
      auto made = Topic::create(name, options);
      if (!made) fail("%s", made.error().message().c_str());
      (void)Topic::destroy(name);  // both processes keep the mapping
      topics_[direction].emplace(std::move(*made));
    }
  }

  // The subscribers first: the other side publishes only after both opened.
  void open(Side side, const Spec& spec) {
    initiator_ = side == Side::initiator;
    const int out = initiator_ ? 0 : 1;
    if (initiator_) start_extra_subscribers(spec);
    auto subscriber = topics_[1 - out]->subscribe();
    if (!subscriber) fail("%s", subscriber.error().message().c_str());
    auto publisher = topics_[out]->publisher();
    if (!publisher) fail("%s", publisher.error().message().c_str());
    subscriber_.emplace(std::move(*subscriber));
    publisher_.emplace(std::move(*publisher));
  }

  void send(const std::byte* message, std::size_t size) {
    if (round_trip_ && initiator_ && size > kRttSize) {
      auto loan = publisher_->loan(size, strategy());
      if (!loan) fail("%s", loan.error().message().c_str());
      std::memcpy(loan->data().data(), message, 8);
      std::memcpy(loan->data().data() + size - 8, message + size - 8, 8);
      if (auto sent = publisher_->publish(std::move(*loan), strategy()); !sent) {
        fail("%s", sent.error().message().c_str());
      }
      return;
    }
    if (auto sent = publisher_->publish({message, size}, strategy()); !sent) fail("%s", sent.error().message().c_str());
  }

  const std::byte* receive(std::byte*, std::size_t size) {
    return take(*subscriber_, size);
  }

  void close(Side side) {
    if (holding_) (void)subscriber_->release();
    holding_ = false;
    if (side == Side::initiator) detail::reap_senders(extras_);
  }

  const std::byte* take(TopicSubscriber& subscriber, std::size_t size) {
    if (holding_) (void)subscriber.release();
    auto view = subscriber.peek(strategy());
    if (!view) fail("%s", view.error().message().c_str());
    if (view->data.size() != size) fail("received %zu bytes, expected %zu", view->data.size(), size);
    holding_ = true;
    return view->data.data();
  }

  // Forked by A before it subscribes: each subscribes to A's topic, says so
  // on a pipe, and reads every request until the last (its stamp's top bit).
  void start_extra_subscribers(const Spec& spec) {
    for (std::size_t i = 0; i < kExtraSubscribers; ++i) {
      int ready[2];
      if (::pipe2(ready, O_CLOEXEC) != 0) fail_errno("pipe2");
      const pid_t pid = detail::fork_sender(spec);
      if (pid == 0) {
        ::close(ready[0]);
        cpu_set_t all;  // A's pin is inherited; these go wherever the scheduler finds room
        CPU_ZERO(&all);
        for (long cpu = 0; cpu < ::sysconf(_SC_NPROCESSORS_ONLN); ++cpu) CPU_SET(static_cast<int>(cpu), &all);
        (void)::sched_setaffinity(0, sizeof all, &all);
        SubscribeOptions options;
        if (kExtras == Extras::coalescing) options.coalesce = std::chrono::milliseconds(1);
        auto subscriber = topics_[0]->subscribe(options);
        if (!subscriber) fail("%s", subscriber.error().message().c_str());
        const char subscribed = 'S';
        if (::write(ready[1], &subscribed, 1) != 1) fail_errno("write (extra subscriber)");
        for (;;) {
          const std::byte* request = take(*subscriber, spec.size);
          if (read_stamp(request, spec.size) & kStop) break;
        }
        (void)subscriber->release();
        ::_exit(0);
      }
      ::close(ready[1]);
      char subscribed = 0;
      if (::read(ready[0], &subscribed, 1) != 1) fail("an extra subscriber died before it subscribed");
      ::close(ready[0]);
      extras_.push_back(pid);
    }
  }

  std::optional<Topic> topics_[2];
  std::optional<TopicPublisher> publisher_;
  std::optional<TopicSubscriber> subscriber_;
  std::vector<pid_t> extras_;
  bool round_trip_ = false;
  bool initiator_ = false;
  bool holding_ = false;
};

// The Mailbox: one per direction, in /dev/shm under a path the coordinator
// removes whatever happens. Each message is copied in by send() and out by
// receive() (the Mailbox's only forms; the harness reads the received copy in
// place), with the default SendOptions.
template <WaitStrategy::Mode kMode>
struct MailboxTransport : FerryTransport<kMode> {
  using FerryTransport<kMode>::strategy;
  static constexpr bool kManySenders = true;

  void prepare(const Spec& spec) {
    const std::string base = "/dev/shm/ferry-bench-" + std::to_string(::getpid()) + "-" + std::to_string(spec.serial);
    const auto capacity = Capacity::bounded(queue_depth(spec), std::max<std::size_t>(spec.size, 64));
    for (int direction = 0; direction < 2; ++direction) {
      const std::string path = base + (direction == 0 ? "-ab" : "-ba");
      detail::register_leftover(path);
      auto made = Mailbox::create(path, {.capacity = capacity, .persistence = Persistence::filesystem});
      if (!made) fail("%s", made.error().message().c_str());
      boxes_[direction].emplace(std::move(*made));
    }
  }

  void open(Side side, const Spec&) { out_ = side == Side::initiator ? 0 : 1; }

  void send(const std::byte* message, std::size_t size) {
    if (auto sent = boxes_[out_]->send({message, size}, {}, strategy()); !sent) {
      fail("%s", sent.error().message().c_str());
    }
  }

  const std::byte* receive(std::byte*, std::size_t size) {
    auto message = boxes_[1 - out_]->receive(strategy());
    if (!message) fail("%s", message.error().message().c_str());
    if (message->size() != size) fail("received %zu bytes, expected %zu", message->size(), size);
    last_ = std::move(*message);  // its bytes stay valid until the next receive
    return last_->data().data();
  }

  std::optional<Mailbox> boxes_[2];
  std::optional<Message> last_;
  int out_ = 0;
};

// An endpoint per direction: each side opens its receiver in open() and its
// sender to the other's in connect(). The bound endpoint (a port 0 becomes a
// real one only in the receiving process) travels in a file of the
// measurement's private directory; pipe: endpoints use two pipes A makes
// before B exists. Each message is framed (a datagram: one) and sent with
// one gathered write; receive() hands out the received copy (valid until the
// next one). The raw OS calls doing the same are the baselines named in
// ipc_report.cpp.
template <Endpoint::Scheme kScheme>
struct EndpointTransport : TransportBase {
  // Sizes above what one message carries (udp 65,503 bytes, unixgram the
  // socket's send buffer, streams 16 MiB) are found when the sender opens.
  static std::string not_applicable(Pattern pattern, std::size_t) {
    if (kScheme == Endpoint::Scheme::udp && pattern == Pattern::throughput) {
      return "UDP drops what the receiver has no room for: round trips only";
    }
    return {};
  }

  static std::string published(const Spec& spec, Side side) {
    return spec.dir + (side == Side::initiator ? "/endpoint.initiator" : "/endpoint.responder");
  }

  void prepare(const Spec&) {
    if constexpr (kScheme == Endpoint::Scheme::pipe) {
      if (::pipe2(to_responder_, O_CLOEXEC) != 0 || ::pipe2(to_initiator_, O_CLOEXEC) != 0) fail_errno("pipe2");
    }
  }

  void open(Side side, const Spec& spec) {
    const bool initiator = side == Side::initiator;
    const std::string file = spec.dir + (initiator ? "/a" : "/b");
    std::string where;
    switch (kScheme) {
      case Endpoint::Scheme::unix_stream: where = "unix://" + file + ".sock"; break;
      case Endpoint::Scheme::unix_datagram: where = "unixgram://" + file + ".dgram"; break;
      case Endpoint::Scheme::tcp: where = "tcp://127.0.0.1:0"; break;
      case Endpoint::Scheme::udp: where = "udp://127.0.0.1:0"; break;
      case Endpoint::Scheme::pipe: {
        // Each side keeps the reading end of its incoming pipe and the writing end of its outgoing one.
        where = "pipe:fd=" + std::to_string(initiator ? to_initiator_[0] : to_responder_[0]);
        ::close(initiator ? to_initiator_[1] : to_responder_[1]);
        ::close(initiator ? to_responder_[0] : to_initiator_[0]);
        break;
      }
      case Endpoint::Scheme::shm: fail("shm:// is measured as ferry.mailbox.*");
    }
    auto receiver = open_receiver(where);
    if (!receiver) fail("%s", receiver.error().message().c_str());
    receiver_ = std::move(*receiver);
    std::ofstream(published(spec, side)) << receiver_->endpoint().to_string();
  }

  // The other side opened its receiver before it let this one connect.
  void connect(Side side, const Spec& spec) {
    const bool initiator = side == Side::initiator;
    std::string where;
    if constexpr (kScheme == Endpoint::Scheme::pipe) {
      where = "pipe:fd=" + std::to_string(initiator ? to_responder_[1] : to_initiator_[1]);
    } else {
      std::ifstream file(published(spec, initiator ? Side::responder : Side::initiator));
      where.assign(std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>());
    }
    auto sender = open_sender(where);
    if (!sender) fail("%s", sender.error().message().c_str());
    sender_ = std::move(*sender);
    if (spec.size > sender_->max_message()) {
      fail_not_applicable("larger than one %s message (%zu bytes)", std::string(to_string(kScheme)).c_str(),
                          sender_->max_message());
    }
  }

  void send(const std::byte* message, std::size_t size) {
    if (auto sent = sender_->send({message, size}); !sent) fail("%s", sent.error().message().c_str());
  }

  const std::byte* receive(std::byte*, std::size_t size) {
    auto message = receiver_->receive();
    if (!message) fail("%s", message.error().message().c_str());
    if (message->size() != size) fail("received %zu bytes, expected %zu", message->size(), size);
    last_ = std::move(*message);
    return last_->data().data();
  }

  int to_responder_[2] = {-1, -1};  // pipe: only
  int to_initiator_[2] = {-1, -1};
  std::unique_ptr<Receiver> receiver_;
  std::unique_ptr<Sender> sender_;
  std::optional<EndpointMessage> last_;
};

}  // namespace

void add_ferry_transports(std::vector<TransportInfo>& list) {
  list.push_back(make_transport<ChannelTransport<WaitStrategy::Mode::busy_poll>>(
      "ferry.channel.poll", Group::ferry, "ferry::Channel, WaitStrategy::busy_poll (never sleeps)"));
  list.push_back(make_transport<ChannelTransport<WaitStrategy::Mode::adaptive>>(
      "ferry.channel.adaptive", Group::ferry, "ferry::Channel, WaitStrategy::adaptive (spin 20 us, then futex)"));
  list.push_back(make_transport<ChannelTransport<WaitStrategy::Mode::block>>(
      "ferry.channel.block", Group::ferry, "ferry::Channel, WaitStrategy::block (futex only)"));
  list.push_back(make_transport<ChannelTransport<WaitStrategy::Mode::adaptive, ChannelSend::loan>>(
      "ferry.loan", Group::ferry, "ferry::Channel loans: a chunk per request, handed over by reference (adaptive)"));
  list.push_back(make_transport<ChannelTransport<WaitStrategy::Mode::adaptive, ChannelSend::automatic>>(
      "ferry.auto", Group::ferry, "ferry::Channel send(bytes): ring copy up to max_message (64 KiB), chunk copy above (adaptive)"));
  list.push_back(make_transport<TopicTransport<0>>(
      "ferry.topic", Group::ferry, "ferry::Topic, one subscriber (block policy, loaned requests, read in place), adaptive"));
  list.push_back(make_transport<TopicTransport<3>>(
      "ferry.topic.fanout4", Group::ferry,
      "ferry::Topic, four subscriber processes read each request (B answers; the others coalesce wake-ups, 1 ms)"));
  list.push_back(make_transport<TopicTransport<3, Extras::eager>>(
      "ferry.topic.fanout4.eager", Group::ferry,
      "ferry::Topic, four subscriber processes read each request (B answers), each woken by every publish"));
  list.push_back(make_transport<MailboxTransport<WaitStrategy::Mode::busy_poll>>(
      "ferry.mailbox.poll", Group::ferry, "ferry::Mailbox (bounded, send/receive copies), WaitStrategy::busy_poll"));
  list.push_back(make_transport<MailboxTransport<WaitStrategy::Mode::adaptive>>(
      "ferry.mailbox.adaptive", Group::ferry, "ferry::Mailbox (bounded, send/receive copies), WaitStrategy::adaptive"));
  list.push_back(make_transport<MailboxTransport<WaitStrategy::Mode::block>>(
      "ferry.mailbox.block", Group::ferry, "ferry::Mailbox (bounded, send/receive copies), WaitStrategy::block"));
  list.push_back(make_transport<EndpointTransport<Endpoint::Scheme::unix_stream>>(
      "ferry.endpoint.unix", Group::ferry, "ferry Sender/Receiver at unix:// endpoints (framed, epoll listener)"));
  list.push_back(make_transport<EndpointTransport<Endpoint::Scheme::tcp>>(
      "ferry.endpoint.tcp", Group::ferry, "ferry Sender/Receiver at tcp://127.0.0.1 endpoints (framed, TCP_NODELAY)"));
  list.push_back(make_transport<EndpointTransport<Endpoint::Scheme::pipe>>(
      "ferry.endpoint.pipe", Group::ferry, "ferry Sender/Receiver at pipe:fd= endpoints (framed, a pipe per direction)"));
  list.push_back(make_transport<EndpointTransport<Endpoint::Scheme::unix_datagram>>(
      "ferry.endpoint.unixgram", Group::ferry, "ferry Sender/Receiver at unixgram:// endpoints (SCM_CREDENTIALS)"));
  list.push_back(make_transport<EndpointTransport<Endpoint::Scheme::udp>>(
      "ferry.endpoint.udp", Group::ferry, "ferry Sender/Receiver at udp://127.0.0.1 endpoints"));
}

}  // namespace ferry::bench
