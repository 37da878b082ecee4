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
#include "rpc_registry.hpp"
#include "rpc_wire.hpp"

namespace ferry::rpc {
namespace detail {

error cancelled_error(std::string_view method);  // rpc_wire.cpp

// How often a caller waiting for a reply looks whether any server still lives (shm).
constexpr auto kPeerCheck = std::chrono::milliseconds(100);
// How long a cancel may wait for room on its way out.
constexpr auto kCancelSendLimit = std::chrono::seconds(1);

struct PendingState {
  std::uint64_t id = 0;
  std::string method;
  Bytes request;  // encoded, kept for an idempotent call's retry
  bool idempotent = false;
  std::optional<deadline> until;
  std::uint64_t generation = 0;  // streams: the connection it went out on
  bool resend = false;           // its connection broke: the waiter sends it again
  bool done = false;
  std::optional<result<Bytes>> outcome;
};

class ClientCore {
 public:
  ClientCore(Endpoint endpoint, ClientOptions options) : endpoint_(std::move(endpoint)), options_(options) {
    std::random_device random;
    client_key_ = (std::uint64_t{random()} << 32 | random()) | 1;  // never 0
  }
  virtual ~ClientCore() = default;

  // Whether a call may go out at all.
  result<void> check_call(std::string_view method, std::span<const std::byte> request, std::optional<deadline> until) {
    if (method.empty() || method.size() > kMaxMethodName) {
      return error(errc::invalid_argument, description(),
                   "a method name has 1 to " + std::to_string(kMaxMethodName) + " bytes, not " + std::to_string(method.size()));
    }
    if (request.size() > options_.max_payload) {
      return error(errc::invalid_argument, description(),
                   "request of " + std::to_string(request.size()) + " bytes for '" + std::string(method) +
                       "', max_payload is " + std::to_string(options_.max_payload));
    }
    if (until && steady_clock::now() >= *until) {
      counters_.timed_out.fetch_add(1, std::memory_order_relaxed);
      return error(errc::timed_out, description(), "the deadline of '" + std::string(method) + "' had passed");
    }
    return {};
  }

  result<std::shared_ptr<PendingState>> start(std::string_view method, std::span<const std::byte> request,
                                              std::optional<deadline> until, CallOptions options) {
    if (auto checked = check_call(method, request, until); !checked) return std::move(checked).error();
    auto state = std::make_shared<PendingState>();
    state->method = method;
    state->idempotent = options.idempotent;
    state->until = until;
    state->id = next_id();
    {
      const std::scoped_lock lock(mutex_);
      pending_.emplace(state->id, state);
    }
    state->request = encode_request(state->id, state->method, request, until, options);
    if (auto sent = send_request(*state); !sent) {
      const std::scoped_lock lock(mutex_);
      pending_.erase(state->id);
      return std::move(sent).error();
    }
    return state;
  }

  // Waits until `state` is done or `limit` passes (after one look for replies, at least); true if done.
  bool wait(PendingState& state, deadline limit) {
    std::unique_lock lock(mutex_);
    for (bool looked = false;; looked = true) {
      if (state.done) return true;
      if (state.resend) {
        state.resend = false;
        lock.unlock();
        auto sent = send_request(state);
        lock.lock();
        counters_.retries.fetch_add(1, std::memory_order_relaxed);
        if (!sent) {
          finish(state, error(errc::peer_gone, description(),
                              "the connection broke during '" + state.method + "', and sending it again failed: " +
                                  sent.error().message()));
        }
        continue;
      }
      const auto now = steady_clock::now();
      if (state.until && now >= *state.until) {
        counters_.timed_out.fetch_add(1, std::memory_order_relaxed);
        finish(state, error(errc::timed_out, description(), "no reply to '" + state.method + "' by its deadline"));
        return true;
      }
      if (looked && now >= limit) return false;
      const deadline until = std::min(limit, state.until.value_or(deadline::max()));
      if (receiving_) {
        changed_.wait_until(lock, until);
        continue;
      }
      receiving_ = true;
      lock.unlock();
      auto received = receive_reply(std::min(until, now + kPeerCheck));
      std::optional<error> peer_problem;
      if (received && !*received) peer_problem = check_peer();
      lock.lock();
      receiving_ = false;
      if (!received) {
        connection_lost(std::move(received).error());
      } else if (*received) {
        dispatch(**received);
      } else if (peer_problem) {
        for (auto& [id, pending] : std::unordered_map(pending_)) finish(*pending, *peer_problem);
      }
      changed_.notify_all();
    }
  }

  result<Bytes> outcome(PendingState& state) {
    wait(state, deadline::max());
    const std::scoped_lock lock(mutex_);
    return *state.outcome;
  }

  void cancel(PendingState& state) noexcept {
    {
      const std::scoped_lock lock(mutex_);
      if (state.done) return;
      counters_.cancelled.fetch_add(1, std::memory_order_relaxed);
      finish(state, cancelled_error(state.method));
      changed_.notify_all();
    }
    wire::Message message;
    message.kind = wire::Kind::cancel;
    message.call_id = state.id;
    message.client_key = client_key_;
    message.method = state.method;
    (void)send(wire::encode(message), true, deadline_after(kCancelSendLimit));  // best effort: the caller has moved on
  }

  [[nodiscard]] bool done(const PendingState& state) {
    const std::scoped_lock lock(mutex_);
    return state.done;
  }

  [[nodiscard]] ClientStats stats() const noexcept {
    const auto& c = counters_;
    return {c.calls.load() + c.lane_calls.load(), c.replies.load() + c.lane_replies.load(), c.timed_out.load(),
            c.cancelled.load(), c.retries.load(), c.late_replies.load(), c.foreign_replies.load(), c.lane_calls.load()};
  }
  [[nodiscard]] const Endpoint& endpoint() const noexcept { return endpoint_; }

 protected:
  struct Counters {
    std::atomic<std::uint64_t> calls{0}, replies{0}, timed_out{0}, cancelled{0}, retries{0}, late_replies{0},
        foreign_replies{0};
    // Counted under lane_mutex_, one writer at a time: no locked instruction.
    std::atomic<std::uint64_t> lane_calls{0}, lane_replies{0};
  };
  static void count_alone(std::atomic<std::uint64_t>& counter) noexcept {
    counter.store(counter.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  }

  /// Sends a request or cancel (urgent: on the urgent lane), within `until`.
  virtual result<void> send(std::span<const std::byte> bytes, bool urgent, deadline until) = 0;
  /// The next reply's bytes, or nothing by `until`. An error means the connection broke (streams).
  virtual result<std::optional<Bytes>> receive_reply(deadline until) = 0;
  /// Called between receives when nothing came: an error fails every pending call.
  virtual std::optional<error> check_peer() { return std::nullopt; }
  /// The connection a request goes out on now (streams), for connection_lost.
  virtual std::uint64_t generation() const noexcept { return 0; }
  [[nodiscard]] virtual bool relative_deadlines() const noexcept { return false; }
  [[nodiscard]] virtual std::string_view reply_to() const noexcept { return {}; }

  [[nodiscard]] std::string description() const { return "rpc client of " + endpoint_.to_string(); }


 public:
  /// shm: a synchronous call over this caller's own lane, if it has one
  /// free: its outcome; or nothing, and the call goes the common way.
  virtual std::optional<result<Bytes>> call_on_lane(std::string_view, std::span<const std::byte>,
                                                    std::optional<deadline>, CallOptions) {
    return std::nullopt;
  }

 protected:
  std::uint64_t next_id() noexcept { return last_id_.fetch_add(1, std::memory_order_relaxed) + 1; }

  // The request's message; its views are `method`, `request` and this core's reply-to.
  wire::Message request_message(std::uint64_t id, std::string_view method, std::span<const std::byte> request,
                                std::optional<deadline> until, CallOptions options) const {
    wire::Message message;
    message.kind = wire::Kind::request;
    message.flags = (options.idempotent ? wire::kIdempotent : 0) | (relative_deadlines() ? wire::kRelativeDeadline : 0);
    message.call_id = id;
    message.deadline_ns = wire::deadline_field(until, relative_deadlines());
    message.client_key = client_key_;
    message.method = method;
    message.reply_to = reply_to();
    message.payload = request;
    return message;
  }
  Bytes encode_request(std::uint64_t id, std::string_view method, std::span<const std::byte> request,
                       std::optional<deadline> until, CallOptions options) const {
    return wire::encode(request_message(id, method, request, until, options));
  }

  // Under mutex_: the connection `failure` came from broke; its idempotent
  // calls go out again (by their waiters), the others fail with peer_gone.
  void connection_lost(const error& failure) {
    const std::uint64_t broken = lost_generation_.load();
    for (auto& [id, pending] : std::unordered_map(pending_)) {
      if (pending->generation != broken) continue;
      if (pending->idempotent) {
        pending->resend = true;
      } else {
        finish(*pending, error(errc::peer_gone, description(),
                               "the connection broke during '" + pending->method + "': " + failure.message()));
      }
    }
  }

  Counters counters_;
  std::atomic<std::uint64_t> lost_generation_{0};  // streams: the connection receive_reply found broken
  Endpoint endpoint_;
  ClientOptions options_;
  std::uint64_t client_key_ = 0;

 private:
  result<void> send_request(PendingState& state) {
    {
      const std::scoped_lock lock(mutex_);
      state.generation = generation();
    }
    counters_.calls.fetch_add(1, std::memory_order_relaxed);
    return send(state.request, false, state.until.value_or(deadline::max()));
  }

  // Under mutex_: a reply's bytes complete the call they answer.
  void dispatch(std::span<const std::byte> bytes) {
    auto reply = wire::decode(bytes);
    if (!reply || reply->kind != wire::Kind::reply || reply->client_key != client_key_) {
      counters_.foreign_replies.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    const auto call = pending_.find(reply->call_id);
    if (call == pending_.end()) {
      counters_.late_replies.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    PendingState& state = *call->second;
    if (state.until && steady_clock::now() >= *state.until) {  // its caller has given up by now
      counters_.late_replies.fetch_add(1, std::memory_order_relaxed);
      counters_.timed_out.fetch_add(1, std::memory_order_relaxed);
      finish(state, error(errc::timed_out, description(), "the reply to '" + state.method + "' came after its deadline"));
      return;
    }
    counters_.replies.fetch_add(1, std::memory_order_relaxed);
    if (reply->status == 0) {
      finish(state, Bytes(reply->payload.begin(), reply->payload.end()));
    } else {
      finish(state, wire::remote_error(*reply, state.method, endpoint_.to_string()));
    }
  }

  // Under mutex_.
  void finish(PendingState& state, result<Bytes> outcome) {
    state.outcome = std::move(outcome);
    state.done = true;
    pending_.erase(state.id);
  }

  std::mutex mutex_;
  std::condition_variable changed_;
  bool receiving_ = false;
  std::atomic<std::uint64_t> last_id_{0};
  std::unordered_map<std::uint64_t, std::shared_ptr<PendingState>> pending_;
};

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

  std::optional<result<Bytes>> call_on_lane(std::string_view method, std::span<const std::byte> request,
                                            std::optional<deadline> until, CallOptions options) override {
    if (!options_.lanes || server_uid_ != own_uid_) return std::nullopt;
    const std::unique_lock lock(lane_mutex_, std::try_to_lock);
    if (!lock.owns_lock()) return std::nullopt;  // another thread's call is on it
    if (!lane_) {
      offer_lane();
      return std::nullopt;
    }
    if (!lane_->ready && !heard_hello()) return std::nullopt;
    if (auto checked = check_call(method, request, until); !checked) return result<Bytes>(std::move(checked).error());
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
      auto decoded = wire::decode(*reply);
      if (!decoded || decoded->kind != wire::Kind::reply || decoded->client_key != client_key_) {
        counters_.foreign_replies.fetch_add(1, std::memory_order_relaxed);
      } else if (decoded->call_id != id) {
        counters_.late_replies.fetch_add(1, std::memory_order_relaxed);  // of a call that timed out
      } else {
        count_alone(counters_.lane_replies);
        result<Bytes> outcome = decoded->status == 0
                                    ? result<Bytes>(Bytes(decoded->payload.begin(), decoded->payload.end()))
                                    : result<Bytes>(wire::remote_error(*decoded, method, endpoint_.to_string()));
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

  // Under lane_mutex_. A lane that broke is replaced by a new offer; one
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

  // Under lane_mutex_: whether a server took the lane (its hello is there).
  bool heard_hello() {
    auto hello = lane_->replies.try_peek();
    if (!hello || !*hello) return false;
    auto decoded = wire::decode(**hello);
    lane_->ready = decoded && decoded->kind == wire::Kind::reply && decoded->call_id == 0 &&
                   decoded->client_key == client_key_;
    (void)lane_->replies.release();
    return lane_->ready;
  }

  result<Bytes> timed_out(std::string_view method) {
    counters_.timed_out.fetch_add(1, std::memory_order_relaxed);
    return error(errc::timed_out, description(), "no reply to '" + std::string(method) + "' by its deadline");
  }

  // Under lane_mutex_: the lane's server died or stopped during a call. A
  // request it never took goes to the mailbox, as does an idempotent one;
  // another may have run, and fails as over the mailbox (remote peer_gone).
  std::optional<result<Bytes>> lane_broke(std::string_view method, CallOptions options) {
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
    return result<Bytes>(wire::remote_error(reply, method, endpoint_.to_string()));
  }

  void drop_lane() {
    if (!lane_) return;
    (void)Channel::destroy(lane_->name + ".in");
    (void)Channel::destroy(lane_->name + ".out");
    lane_.reset();
  }

  std::mutex lane_mutex_;
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
      error(errc::invalid_argument, "rpc client of " + endpoint.to_string(), "rpc calls shm://, unix:// and tcp:// endpoints");
  if (endpoint.scheme == Endpoint::Scheme::shm) core = detail::ShmClient::make(endpoint, options);
  if (endpoint.scheme == Endpoint::Scheme::unix_stream || endpoint.scheme == Endpoint::Scheme::tcp) {
    core = detail::StreamClient::make(endpoint, options);
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
  if (auto direct = core_->call_on_lane(method, request, limit, options)) return std::move(*direct);
  auto state = core_->start(method, request, limit, options);
  if (!state) return std::move(state).error();
  return core_->outcome(**state);
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
