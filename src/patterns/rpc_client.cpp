// rpc::Client: calls in flight by id, and the waiting callers taking turns
// at receiving replies for all of them (leader/follower: whoever waits and
// finds nobody receiving receives, completes the calls the replies belong
// to, and wakes their callers; no thread of its own, no extra hand-off when
// one caller waits alone). The transports below only send and receive bytes.
#include <unistd.h>

#include <atomic>
#include <bit>
#include <condition_variable>
#include <limits>
#include <mutex>
#include <random>
#include <unordered_map>

#include "ferry/messaging/channel.hpp"
#include "ferry/patterns/rpc.hpp"
#include "ferry/transport/framing.hpp"
#include "rpc_client_core.hpp"
#include "rpc_registry.hpp"
#include "rpc_wire.hpp"

namespace ferry::rpc {
namespace detail {

namespace {
constinit RpcBackend nats_backend{};  // constant-initialised: set by a backend's static initialiser
}  // namespace
void register_nats_rpc(RpcBackend backend) noexcept { nats_backend = backend; }
const RpcBackend& nats_rpc() noexcept { return nats_backend; }
error no_nats_rpc(std::string_view role, const Endpoint& endpoint) {
  return error(errc::unsupported, std::string(role) + " " + endpoint.to_string(),
               "nats:// needs the ferry::nats library (built when nats.c is found): link it");
}

namespace {

// shm://: requests into the server's mailbox, replies from a mailbox of our own.
class ShmClient final : public ClientCore {
 public:
  ShmClient(Endpoint endpoint, ClientOptions options, Mailbox requests, Mailbox replies, std::string reply_name,
            uid_t server_uid, registry::Registry registry)
      : ClientCore(std::move(endpoint), options), requests_(std::move(requests)), replies_(std::move(replies)),
        reply_name_(std::move(reply_name)), server_uid_(server_uid), registry_(std::move(registry)) {}
  ~ShmClient() override {
    drop_lane();
    (void)Mailbox::destroy(reply_name_);
  }

  static result<std::shared_ptr<ClientCore>> make(const Endpoint& endpoint, const ClientOptions& options) {
    auto requests = Mailbox::open(endpoint.name, {.allow_foreign_owner = options.allow_foreign_owner});
    if (!requests) return std::move(requests).error();
    auto registry = registry::Registry::observe(endpoint.name, options.allow_foreign_owner);
    if (!registry) return std::move(registry).error();
    const uid_t server_uid = requests->stats().owner_uid;
    static std::atomic<std::uint64_t> clients{0};
    const std::string reply_name = endpoint.name + ".reply." + std::to_string(::getpid()) + "." +
                                   std::to_string(clients.fetch_add(1) + 1);
    // A server of another user needs write (send) access to our replies;
    // we then take only what that user sends.
    auto replies = Mailbox::create(
        reply_name, {.capacity = Capacity::bounded(options.reply_capacity, options.max_payload + wire::kMaxOverhead),
                     .persistence = Persistence::process,
                     .mode = static_cast<mode_t>(server_uid == ::geteuid() ? 0600 : 0622)});
    if (!replies) return std::move(replies).error();
    return std::shared_ptr<ClientCore>(new ShmClient(endpoint, options, std::move(*requests), std::move(*replies),
                                                     reply_name, server_uid, std::move(*registry)));
  }

 private:
  result<void> send(std::span<const std::byte> bytes, bool urgent, deadline until) override {
    if (!server_recently_alive()) return error(errc::peer_gone, description(), "no server is serving it");
    const std::scoped_lock lock(send_mutex_);  // one Mailbox object: one sender at a time
    return until == deadline::max() ? requests_.send(bytes, {.urgent = urgent})
                                    : requests_.send_until(bytes, until, {.urgent = urgent});
  }

  result<std::optional<Bytes>> receive_reply(deadline until) override {
    auto message = replies_.receive_until(until);
    if (!message) {
      if (message.error().code() == errc::timed_out) return std::optional<Bytes>();
      return std::move(message).error();
    }
    if (message->sender().uid != server_uid_) {
      counters_.foreign_replies.fetch_add(1, std::memory_order_relaxed);
      return std::optional<Bytes>();
    }
    return std::optional<Bytes>(Bytes(message->data().begin(), message->data().end()));
  }

  std::optional<error> check_peer() override {
    if (registry_.any_server_alive()) return std::nullopt;
    return error(errc::peer_gone, description(), "every server is gone");
  }

  // Whether a server lives, looked up at most every kPeerCheck: the lookup
  // reads /proc (several µs, more than a whole call), and a server that dies
  // in between is still noticed by check_peer while the caller waits.
  bool server_recently_alive() {
    const auto now = steady_clock::now().time_since_epoch().count();
    if (now - alive_seen_.load(std::memory_order_relaxed) < kPeerCheck / steady_clock::duration(1)) return true;
    if (!registry_.any_server_alive()) return false;
    alive_seen_.store(now, std::memory_order_relaxed);
    return true;
  }
  [[nodiscard]] std::string_view reply_to() const noexcept override { return reply_name_; }

  std::optional<result<std::size_t>> call_on_lane(std::string_view method, std::span<const std::byte> request,
                                                  const std::optional<deadline>& until, CallOptions options,
                                                  const ReplyTarget& target) override {
    if (!options_.lanes || server_uid_ != own_uid_) return std::nullopt;
    if (lane_busy_.exchange(true, std::memory_order_acquire)) return std::nullopt;  // another thread's call is on it
    const LaneTurn turn{lane_busy_};
    if (!lane_) {
      offer_lane();
      return std::nullopt;
    }
    if (!lane_->ready && !heard_hello()) return std::nullopt;
    if (auto checked = check_call(method, request, until); !checked) return result<std::size_t>(std::move(checked).error());
    const std::uint64_t id = next_id();
    count_alone(counters_.lane_calls);
    // Encoded straight into the ring; the lane itself leads back (no reply-to).
    wire::Message message = request_message(id, method, request, until, options);
    message.reply_to = {};
    const std::size_t size = wire::encoded_size(message);
    auto room = until ? lane_->requests.reserve_until(size, *until) : lane_->requests.reserve(size);
    if (!room && room.error().code() == errc::timed_out) return timed_out(method);
    if (!room) return lane_broke(method, options);
    wire::encode_into(message, *room);
    if (!lane_->requests.commit(size)) return lane_broke(method, options);
    for (;;) {
      auto reply = until ? lane_->replies.peek_until(*until) : lane_->replies.peek();
      if (!reply && reply.error().code() == errc::timed_out) return timed_out(method);  // its reply will be skipped
      if (!reply) return lane_broke(method, options);
      wire::Message decoded;
      if (!wire::decode_into(*reply, decoded) || decoded.kind != wire::Kind::reply || decoded.client_key != client_key_) {
        counters_.foreign_replies.fetch_add(1, std::memory_order_relaxed);
      } else if (decoded.call_id != id) {
        counters_.late_replies.fetch_add(1, std::memory_order_relaxed);  // of a call that timed out
      } else {
        count_alone(counters_.lane_replies);
        result<std::size_t> outcome =
            decoded.status == 0 ? target.take(decoded.payload, method)
                                : result<std::size_t>(wire::remote_error(decoded, method, endpoint_.to_string()));
        (void)lane_->replies.release();
        return outcome;
      }
      (void)lane_->replies.release();
    }
  }

  // The lane: two Channels of this caller's, offered to the servers through
  // the mailbox; the server that takes it answers with a hello (call 0).
  struct Lane {
    std::string name;
    ChannelSender requests;
    ChannelReceiver replies;
    bool ready = false;
  };

  // In the lane's turn. A lane that broke is replaced by a new offer; one
  // that could not be offered is not tried again.
  void offer_lane() {
    if (lanes_unavailable_) return;
    static std::atomic<std::uint64_t> lanes{0};
    const std::string name =
        endpoint_.name + ".lane." + std::to_string(::getpid()) + "." + std::to_string(lanes.fetch_add(1) + 1);
    const std::size_t largest = options_.max_payload + wire::kMaxOverhead;
    const ChannelOptions channel{.capacity = std::bit_ceil(2 * (largest + 64)),
                                 .max_message = largest,
                                 .persistence = Persistence::process,
                                 .mode = 0600};
    auto in = Channel::create(name + ".in", channel);
    auto out = Channel::create(name + ".out", channel);
    auto requests = in ? in->sender() : result<ChannelSender>(in.error());
    auto replies = out ? out->receiver() : result<ChannelReceiver>(out.error());
    wire::Message offer;
    offer.kind = wire::Kind::lane;
    offer.client_key = client_key_;
    offer.reply_to = name;
    if (requests && replies && send(wire::encode(offer), false, deadline_after(kCancelSendLimit))) {
      lane_.emplace(Lane{name, std::move(*requests), std::move(*replies)});
    } else {
      lanes_unavailable_ = true;
      (void)Channel::destroy(name + ".in");
      (void)Channel::destroy(name + ".out");
    }
  }

  // In the lane's turn: whether a server took the lane (its hello is there).
  bool heard_hello() {
    auto hello = lane_->replies.try_peek();
    if (!hello || !*hello) return false;
    auto decoded = wire::decode(**hello);
    lane_->ready = decoded && decoded->kind == wire::Kind::reply && decoded->call_id == 0 &&
                   decoded->client_key == client_key_;
    (void)lane_->replies.release();
    return lane_->ready;
  }

  error timed_out(std::string_view method) {
    counters_.timed_out.fetch_add(1, std::memory_order_relaxed);
    return error(errc::timed_out, description(), "no reply to '" + std::string(method) + "' by its deadline");
  }

  // In the lane's turn: the lane's server died or stopped during a call. A
  // request it never took goes to the mailbox, as does an idempotent one;
  // another may have run, and fails as over the mailbox (remote peer_gone).
  std::optional<result<std::size_t>> lane_broke(std::string_view method, CallOptions options) {
    const bool taken = lane_->requests.drained();
    drop_lane();
    if (!taken) return std::nullopt;
    if (options.idempotent) {
      counters_.retries.fetch_add(1, std::memory_order_relaxed);
      return std::nullopt;
    }
    wire::Message reply;
    reply.kind = wire::Kind::reply;
    reply.status = static_cast<std::uint8_t>(errc::peer_gone);
    const std::string_view text = "the server running the call died; not idempotent, so not run again";
    reply.payload = std::as_bytes(std::span(text));
    return result<std::size_t>(wire::remote_error(reply, method, endpoint_.to_string()));
  }

  void drop_lane() {
    if (!lane_) return;
    (void)Channel::destroy(lane_->name + ".in");
    (void)Channel::destroy(lane_->name + ".out");
    lane_.reset();
  }

  // One call on the lane at a time: a flag, not a mutex, since ending a
  // turn is then a plain store where unlocking is one more locked instruction.
  struct LaneTurn {
    std::atomic<bool>& busy;
    ~LaneTurn() { busy.store(false, std::memory_order_release); }
  };
  std::atomic<bool> lane_busy_{false};
  std::optional<Lane> lane_;
  bool lanes_unavailable_ = false;
  std::mutex send_mutex_;
  std::atomic<steady_clock::rep> alive_seen_{std::numeric_limits<steady_clock::rep>::min() / 2};  // never
  Mailbox requests_;
  Mailbox replies_;
  std::string reply_name_;
  uid_t server_uid_;
  uid_t own_uid_ = ::geteuid();
  registry::Registry registry_;
};

// unix://, tcp://: one connection, replaced when it breaks.
class StreamClient final : public ClientCore {
 public:
  using ClientCore::ClientCore;

  static result<std::shared_ptr<ClientCore>> make(const Endpoint& endpoint, const ClientOptions& options) {
    auto client = std::make_shared<StreamClient>(endpoint, options);
    if (auto connected = client->reconnect(deadline_after(options.connect_timeout)); !connected) {
      return std::move(connected).error();
    }
    return std::shared_ptr<ClientCore>(std::move(client));
  }

 private:
  struct Connection {
    Connection(FramedStream framed, std::uint64_t number) : stream(std::move(framed)), generation(number) {}
    FramedStream stream;
    std::uint64_t generation;
    bool broken = false;  // under send_mutex_
  };

  // Under send_mutex_ (or before sharing): a new connection.
  result<void> reconnect(deadline until) {
    auto socket = endpoint_.scheme == Endpoint::Scheme::tcp
                      ? TcpSocket::connect(endpoint_.name, endpoint_.port, ferry::detail::WaitLimit::at(until))
                      : UnixSocket::connect(endpoint_.name, ferry::detail::WaitLimit::at(until));
    if (!socket) return std::move(socket).error();
    auto fresh = std::make_shared<Connection>(
        FramedStream(std::move(*socket), {.max_frame = options_.max_payload + wire::kMaxOverhead}), generation_ + 1);
    const std::scoped_lock lock(connection_mutex_);
    connection_ = std::move(fresh);
    generation_.fetch_add(1);
    return {};
  }

  std::shared_ptr<Connection> current() {
    const std::scoped_lock lock(connection_mutex_);
    return connection_;
  }

  result<void> send(std::span<const std::byte> bytes, bool, deadline until) override {
    const std::scoped_lock lock(send_mutex_);
    if (current()->broken) {
      if (auto connected = reconnect(std::min(until, deadline_after(options_.connect_timeout))); !connected) {
        return connected;
      }
    }
    auto connection = current();
    auto sent = until == deadline::max() ? connection->stream.send_frame(bytes)
                                         : connection->stream.send_frame_until(bytes, until);
    if (!sent && sent.error().code() != errc::timed_out) connection->broken = true;
    return sent;
  }

  result<std::optional<Bytes>> receive_reply(deadline until) override {
    auto connection = current();
    auto frame = connection->stream.receive_frame_until(until);
    if (frame) return std::optional<Bytes>(Bytes(frame->begin(), frame->end()));
    if (frame.error().code() == errc::timed_out) return std::optional<Bytes>();
    lost_generation_.store(connection->generation);
    {
      const std::scoped_lock lock(send_mutex_);
      connection->broken = true;
      // Calls on this connection are retried on the next one: make sure it is another.
      if (connection == current()) (void)reconnect(deadline_after(options_.connect_timeout));
    }
    return std::move(frame).error();
  }

  std::uint64_t generation() const noexcept override { return generation_.load(); }
  [[nodiscard]] bool relative_deadlines() const noexcept override { return endpoint_.scheme == Endpoint::Scheme::tcp; }

  std::mutex send_mutex_;
  std::mutex connection_mutex_;
  std::shared_ptr<Connection> connection_;
  std::atomic<std::uint64_t> generation_{0};
};

}  // namespace
}  // namespace detail

// ---------------------------------------------------------------------------

PendingCall::PendingCall(std::shared_ptr<detail::ClientCore> core, std::shared_ptr<detail::PendingState> state) noexcept
    : core_(std::move(core)), state_(std::move(state)) {}
PendingCall::PendingCall(PendingCall&&) noexcept = default;
PendingCall& PendingCall::operator=(PendingCall&& other) noexcept {
  if (this != &other) {
    if (state_) core_->cancel(*state_);
    core_ = std::move(other.core_);
    state_ = std::move(other.state_);
  }
  return *this;
}
PendingCall::~PendingCall() {
  if (state_) core_->cancel(*state_);
}
bool PendingCall::ready() { return core_->wait(*state_, steady_clock::now()); }
bool PendingCall::wait_until(deadline until) { return core_->wait(*state_, until); }
result<Bytes> PendingCall::get() { return core_->outcome(*state_); }
void PendingCall::cancel() noexcept { core_->cancel(*state_); }
std::uint64_t PendingCall::id() const noexcept { return state_->id; }

Client::Client(std::shared_ptr<detail::ClientCore> core) noexcept : core_(std::move(core)) {}
Client::~Client() = default;

result<std::unique_ptr<Client>> Client::connect(std::string_view endpoint, const ClientOptions& options) {
  auto parsed = Endpoint::parse(endpoint);
  if (!parsed) return std::move(parsed).error();
  return connect(*parsed, options);
}

result<std::unique_ptr<Client>> Client::connect(const Endpoint& endpoint, const ClientOptions& options) {
  result<std::shared_ptr<detail::ClientCore>> core =
      error(errc::invalid_argument, "rpc client of " + endpoint.to_string(), "rpc calls shm://, unix://, tcp:// and nats:// endpoints");
  if (endpoint.scheme == Endpoint::Scheme::shm) core = detail::ShmClient::make(endpoint, options);
  if (endpoint.scheme == Endpoint::Scheme::unix_stream || endpoint.scheme == Endpoint::Scheme::tcp) {
    core = detail::StreamClient::make(endpoint, options);
  }
  if (endpoint.scheme == Endpoint::Scheme::nats) {
    core = detail::nats_rpc().make_client != nullptr ? detail::nats_rpc().make_client(endpoint, options)
                                                     : detail::no_nats_rpc("rpc client of", endpoint);
  }
  if (!core) return std::move(core).error();
  return std::unique_ptr<Client>(new Client(std::move(*core)));
}

result<Bytes> Client::call(std::string_view method, std::span<const std::byte> request, CallOptions options) {
  return call_until(method, request, deadline::max(), options);
}

result<Bytes> Client::call_until(std::string_view method, std::span<const std::byte> request, deadline until,
                                 CallOptions options) {
  const auto limit = until == deadline::max() ? std::nullopt : std::optional(until);
  Bytes reply;
  if (auto direct = core_->call_on_lane(method, request, limit, options, detail::ReplyTarget(reply))) {
    if (!*direct) return std::move(*direct).error();
    return reply;
  }
  auto state = core_->start(method, request, limit, options);
  if (!state) return std::move(state).error();
  return core_->outcome(**state);
}

result<std::size_t> Client::call_into_until(std::string_view method, std::span<const std::byte> request,
                                            std::span<std::byte> reply, deadline until, CallOptions options) {
  const auto limit = until == deadline::max() ? std::nullopt : std::optional(until);
  const detail::ReplyTarget target(reply);
  if (auto direct = core_->call_on_lane(method, request, limit, options, target)) return std::move(*direct);
  auto state = core_->start(method, request, limit, options);
  if (!state) return std::move(state).error();
  auto outcome = core_->outcome(**state);
  if (!outcome) return std::move(outcome).error();
  return target.take(*outcome, method);
}

result<PendingCall> Client::call_async(std::string_view method, std::span<const std::byte> request,
                                       std::optional<deadline> until, CallOptions options) {
  auto state = core_->start(method, request, until, options);
  if (!state) return std::move(state).error();
  return PendingCall(core_, std::move(*state));
}

ClientStats Client::stats() const noexcept { return core_->stats(); }
const Endpoint& Client::endpoint() const noexcept { return core_->endpoint(); }

}  // namespace ferry::rpc
