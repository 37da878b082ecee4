// rpc::Client's transport-independent core (calls in flight, the waiting
// callers taking turns at receiving replies), shared by the transports in
// rpc_client.cpp and the nats backend (src/nats/rpc.cpp). Not installed API.
#pragma once

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <random>
#include <unordered_map>

#include "ferry/patterns/rpc.hpp"
#include "rpc_wire.hpp"

namespace ferry::rpc {
namespace detail {

error cancelled_error(std::string_view method);  // rpc_wire.cpp

// How often a caller waiting for a reply looks whether any server still lives (shm).
constexpr auto kPeerCheck = std::chrono::milliseconds(100);
// How long a cancel may wait for room on its way out.
constexpr auto kCancelSendLimit = std::chrono::seconds(1);

/// Where a call's reply payload goes: new Bytes (call) or the caller's buffer (call_into).
class ReplyTarget {
 public:
  explicit ReplyTarget(Bytes& bytes) noexcept : bytes_(&bytes) {}
  explicit ReplyTarget(std::span<std::byte> buffer) noexcept : buffer_(buffer) {}

  /// Puts `payload` there: its size, or limit_reached when the caller's buffer is smaller.
  result<std::size_t> take(std::span<const std::byte> payload, std::string_view method) const {
    if (bytes_ != nullptr) {
      bytes_->assign(payload.begin(), payload.end());
      return payload.size();
    }
    if (payload.size() > buffer_.size()) {
      return error(errc::limit_reached, "rpc call of '" + std::string(method) + "'",
                   "a reply of " + std::to_string(payload.size()) + " bytes, the caller's buffer has " +
                       std::to_string(buffer_.size()));
    }
    if (!payload.empty()) std::memcpy(buffer_.data(), payload.data(), payload.size());
    return payload.size();
  }

 private:
  Bytes* bytes_ = nullptr;
  std::span<std::byte> buffer_;
};

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
    // Counted in the lane's turn (rpc_client.cpp), one writer at a time: no locked instruction.
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
  /// free: its outcome (the reply's size; the reply put into `target`); or
  /// nothing, and the call goes the common way. (The deadline by reference:
  /// a copy of an optional made just before reads it wide and stalls.)
  virtual std::optional<result<std::size_t>> call_on_lane(std::string_view, std::span<const std::byte>,
                                                          const std::optional<deadline>&, CallOptions,
                                                          const ReplyTarget&) {
    return std::nullopt;
  }

 protected:
  std::uint64_t next_id() noexcept { return last_id_.fetch_add(1, std::memory_order_relaxed) + 1; }

  // The request's message; its views are `method`, `request` and this core's reply-to.
  wire::Message request_message(std::uint64_t id, std::string_view method, std::span<const std::byte> request,
                                const std::optional<deadline>& until, CallOptions options) const {
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

/// How a backend outside the core library (nats) makes its clients and servers.
struct RpcBackend {
  result<std::shared_ptr<ClientCore>> (*make_client)(const Endpoint&, const ClientOptions&) = nullptr;
  result<std::unique_ptr<Server::Impl>> (*make_server)(const Endpoint&, const ServerOptions&) = nullptr;
};
/// Called by the ferry::nats library when it is loaded (src/nats/rpc.cpp).
void register_nats_rpc(RpcBackend backend) noexcept;
/// What was registered (empty function pointers: the nats backend is not linked).
const RpcBackend& nats_rpc() noexcept;
/// The error for a nats:// endpoint without the backend.
error no_nats_rpc(std::string_view role, const Endpoint& endpoint);

}  // namespace detail
}  // namespace ferry::rpc
