// rpc over nats://: core NATS request/reply under ferry::rpc::Client and
// Server (ferry/patterns/rpc.hpp says how calls travel), registered with the
// core library when this library is loaded.
#include <sys/random.h>

#include <cstdio>
#include <deque>
#include <map>
#include <mutex>
#include <set>

#include "../patterns/rpc_client_core.hpp"
#include "../patterns/rpc_server_core.hpp"
#include "nats_internal.hpp"

// Linking ferry::nats keeps this file (the target asks the linker for this symbol).
extern "C" {
extern const int ferry_nats_rpc;
const int ferry_nats_rpc = 1;
}

namespace ferry::nats {
namespace {

using detail::nats_error;
using detail::OwnedMessage;
using detail::OwnedSubscription;
using rpc::Bytes;
namespace wire = rpc::wire;

// A blocking wait on a subscription goes in slices of at most this (nats.c takes a finite timeout).
constexpr auto kSlice = std::chrono::milliseconds(60'000);

std::string requests_of(std::string_view name) { return "ferry.rpc." + std::string(name); }
std::string cancels_of(std::string_view name) { return "ferry.rpc." + std::string(name) + ".cancel"; }

std::int64_t milliseconds_until(deadline until, std::chrono::milliseconds cap) {
  if (until == deadline::max()) return cap.count();
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - steady_clock::now());
  return std::clamp(left, std::chrono::milliseconds(1), cap).count();
}

std::string random_inbox() {
  std::uint64_t value = 0;
  if (::getrandom(&value, sizeof value, 0) != sizeof value) value = static_cast<std::uint64_t>(::getpid()) << 20;
  char text[40];
  std::snprintf(text, sizeof text, "_INBOX.ferry.%016llx", static_cast<unsigned long long>(value));
  return text;
}

result<std::pair<Address, Connection>> connect(const Endpoint& endpoint, std::string_view role) {
  auto address = Address::parse(endpoint.to_string());
  if (!address) return std::move(address).error();
  if (address->name.empty()) {
    return error(errc::invalid_argument, std::string(role) + " " + endpoint.to_string(),
                 "no service name: nats://HOST:PORT/NAME");
  }
  auto connection = Connection::connect(*address);
  if (!connection) return std::move(connection).error();
  return std::pair<Address, Connection>(std::move(*address), std::move(*connection));
}

// ---------------------------------------------------------------- client

class NatsRpcClient final : public rpc::detail::ClientCore {
 public:
  NatsRpcClient(Endpoint endpoint, rpc::ClientOptions options, Connection connection, std::string name)
      : ClientCore(std::move(endpoint), options),
        connection_(std::move(connection)),
        requests_(requests_of(name) + "." + connection_.address().identity()),
        cancels_(cancels_of(name) + "." + connection_.address().identity()),
        inbox_(random_inbox()) {}
  // The connection is this client's own: closed (its reader thread stopped)
  // before the reply subscription goes, so no reply can arrive for a freed one.
  ~NatsRpcClient() override { natsConnection_Close(connection_.state().connection); }

  static result<std::shared_ptr<rpc::detail::ClientCore>> make(const Endpoint& endpoint,
                                                                const rpc::ClientOptions& options) {
    auto connected = connect(endpoint, "rpc client of");
    if (!connected) return std::move(connected).error();
    auto client = std::make_shared<NatsRpcClient>(endpoint, options, connected->second, connected->first.name);
    if (auto subscribed = client->subscribe(); !subscribed) return std::move(subscribed).error();
    return std::shared_ptr<rpc::detail::ClientCore>(std::move(client));
  }

 private:
  // Replies come on INBOX.<call id>: a "no responders" answer names its call.
  result<void> subscribe() {
    natsConnection* nats = connection_.state().connection;
    natsSubscription* raw = nullptr;
    const std::string replies = inbox_ + ".*";
    natsStatus status = natsConnection_SubscribeSync(&raw, nats, replies.c_str());
    if (status != NATS_OK) return nats_error(status, description(), "cannot subscribe to " + replies);
    replies_ = OwnedSubscription(raw, {nats});
    status = natsConnection_FlushTimeout(nats, connection_.address().timeout.count());
    if (status != NATS_OK) return nats_error(status, description(), "cannot subscribe to " + replies);
    return {};
  }

  result<void> send(std::span<const std::byte> bytes, bool urgent, deadline) override {
    auto message = wire::decode(bytes);
    if (!message) return std::move(message).error();
    const std::string reply = inbox_ + "." + std::to_string(message->call_id);
    const std::string& subject = urgent ? cancels_ : requests_;
    const natsStatus status = natsConnection_PublishRequest(connection_.state().connection, subject.c_str(),
                                                            reply.c_str(), bytes.data(), static_cast<int>(bytes.size()));
    if (auto refused = detail::refused_publish(connection_.state().connection, subject)) {
      return error(errc::permission_denied, description(), "the server refuses to let this user call: " + *refused);
    }
    if (status != NATS_OK) return nats_error(status, description(), "cannot send the request");
    return {};
  }

  result<std::optional<Bytes>> receive_reply(deadline until) override {
    natsMsg* raw = nullptr;
    const natsStatus status = natsSubscription_NextMsg(&raw, replies_.get(), milliseconds_until(until, kSlice));
    if (status == NATS_TIMEOUT) return std::optional<Bytes>();
    if (status != NATS_OK) return nats_error(status, description(), "cannot receive replies");
    const OwnedMessage reply(raw);
    const char* code = nullptr;
    if (natsMsgHeader_Get(raw, "Status", &code) == NATS_OK && code != nullptr && std::string_view(code) == "503") {
      // No server subscribed: the call it answers fails as when every server is gone.
      const std::string_view subject = natsMsg_GetSubject(raw);
      wire::Message failure;
      failure.kind = wire::Kind::reply;
      failure.status = static_cast<std::uint8_t>(errc::peer_gone);
      failure.client_key = client_key_;
      failure.call_id = std::strtoull(std::string(subject.substr(subject.rfind('.') + 1)).c_str(), nullptr, 10);
      static constexpr std::string_view kText = "no server serves this endpoint";
      failure.payload = std::as_bytes(std::span(kText.data(), kText.size()));
      return std::optional<Bytes>(wire::encode(failure));
    }
    const auto* data = reinterpret_cast<const std::byte*>(natsMsg_GetData(raw));
    return std::optional<Bytes>(Bytes(data, data + natsMsg_GetDataLength(raw)));
  }

  // Two machines share no clock: the deadline travels as the time left.
  [[nodiscard]] bool relative_deadlines() const noexcept override { return true; }

  Connection connection_;
  std::string requests_;
  std::string cancels_;
  std::string inbox_;
  OwnedSubscription replies_;
};

// ---------------------------------------------------------------- server

class NatsRpcServer final : public rpc::Server::Impl {
 public:
  NatsRpcServer(Endpoint endpoint, rpc::ServerOptions options, Connection connection, std::string name)
      : Impl(std::move(endpoint), options), connection_(std::move(connection)), name_(std::move(name)) {}

  static result<std::unique_ptr<rpc::Server::Impl>> make(const Endpoint& endpoint, const rpc::ServerOptions& options) {
    auto connected = connect(endpoint, "rpc server at");
    if (!connected) return std::move(connected).error();
    return std::unique_ptr<rpc::Server::Impl>(
        new NatsRpcServer(endpoint, options, connected->second, connected->first.name));
  }

 private:
  using CallKey = std::pair<std::uint64_t, std::uint64_t>;  // client key, call id

  result<void> launch() override {
    natsConnection* nats = connection_.state().connection;
    natsSubscription* raw = nullptr;
    const std::string requests = requests_of(name_) + ".*";
    natsStatus status = natsConnection_QueueSubscribeSync(&raw, nats, requests.c_str(), requests_of(name_).c_str());
    if (status != NATS_OK) return nats_error(status, description(), "cannot subscribe to " + requests);
    requests_ = OwnedSubscription(raw, {nats});
    const std::string cancels = cancels_of(name_) + ".*";
    status = natsConnection_SubscribeSync(&raw, nats, cancels.c_str());
    if (status != NATS_OK) return nats_error(status, description(), "cannot subscribe to " + cancels);
    cancels_ = OwnedSubscription(raw, {nats});
    status = natsConnection_FlushTimeout(nats, connection_.address().timeout.count());
    if (status != NATS_OK) return nats_error(status, description(), "cannot subscribe to " + requests);
    threads_.emplace_back([this] { hear_cancels(); });
    for (std::size_t i = 0; i < std::max<std::size_t>(options_.threads, 1); ++i) {
      threads_.emplace_back([this] { work(); });
    }
    return {};
  }

  // The connection is this server's own: closed (its reader thread stopped)
  // before the subscriptions go, so no request can arrive for a freed one.
  void halted() noexcept override {
    natsConnection_Close(connection_.state().connection);
    requests_.reset();
    cancels_.reset();
  }

  void work() {
    while (!stopping_.load(std::memory_order_relaxed)) {
      natsMsg* raw = nullptr;
      const natsStatus status = natsSubscription_NextMsg(&raw, requests_.get(), rpc::kStopCheck.count());
      if (status == NATS_TIMEOUT || status == NATS_SLOW_CONSUMER) continue;
      if (status != NATS_OK) {
        std::this_thread::sleep_for(rpc::kStopCheck);  // a broken connection: do not spin on it
        continue;
      }
      serve(OwnedMessage(raw));
    }
  }

  void serve(OwnedMessage message) {
    counters_.received.fetch_add(1, std::memory_order_relaxed);
    const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(natsMsg_GetData(message.get())),
                                           static_cast<std::size_t>(natsMsg_GetDataLength(message.get())));
    if (bytes.size() > options_.max_payload + wire::kMaxOverhead) {
      counters_.oversized.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    auto request = wire::decode(bytes);
    const char* reply_subject = natsMsg_GetReply(message.get());
    if (!request || request->kind != wire::Kind::request || reply_subject == nullptr) {
      counters_.malformed.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    const std::optional<deadline> until = wire::deadline_of(*request);
    if (expired(until)) return;  // its caller has given up
    const CallKey key{request->client_key, request->call_id};
    auto flag = std::make_shared<std::atomic<std::uint32_t>>(0);
    {
      const std::scoped_lock lock(calls_mutex_);
      if (early_cancels_.erase(key) != 0) {  // cancelled before it started: never run
        counters_.cancelled.fetch_add(1, std::memory_order_relaxed);
        return;
      }
      running_[key] = flag;
    }
    const std::string_view subject = natsMsg_GetSubject(message.get());
    const std::string_view user = subject.substr(subject.rfind('.') + 1);
    const rpc::CallContext context(request->method, std::nullopt, until, 1, flag.get(), user);
    const result<Bytes> outcome = run(*request, context);
    {
      const std::scoped_lock lock(calls_mutex_);
      running_.erase(key);
    }
    const Bytes reply = wire::encode_reply(*request, outcome);
    if (natsConnection_Publish(connection_.state().connection, reply_subject, reply.data(),
                               static_cast<int>(reply.size())) != NATS_OK) {
      counters_.replies_dropped.fetch_add(1, std::memory_order_relaxed);
    }
  }

  // Every server hears every cancel: the one running the call flags it; a
  // call not started yet is remembered (the most recent kEarlyCancels) and skipped.
  void hear_cancels() {
    static constexpr std::size_t kEarlyCancels = 1024;
    while (!stopping_.load(std::memory_order_relaxed)) {
      natsMsg* raw = nullptr;
      const natsStatus status = natsSubscription_NextMsg(&raw, cancels_.get(), rpc::kStopCheck.count());
      if (status == NATS_TIMEOUT || status == NATS_SLOW_CONSUMER) continue;
      if (status != NATS_OK) {
        std::this_thread::sleep_for(rpc::kStopCheck);
        continue;
      }
      const OwnedMessage message(raw);
      auto cancel = wire::decode({reinterpret_cast<const std::byte*>(natsMsg_GetData(raw)),
                                  static_cast<std::size_t>(natsMsg_GetDataLength(raw))});
      if (!cancel || cancel->kind != wire::Kind::cancel) {
        counters_.malformed.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
      counters_.cancels.fetch_add(1, std::memory_order_relaxed);
      const CallKey key{cancel->client_key, cancel->call_id};
      const std::scoped_lock lock(calls_mutex_);
      if (const auto running = running_.find(key); running != running_.end()) {
        running->second->store(1, std::memory_order_release);  // its handler may stop early
        continue;
      }
      if (early_order_.size() >= kEarlyCancels) {
        early_cancels_.erase(early_order_.front());
        early_order_.pop_front();
      }
      early_cancels_.insert(key);
      early_order_.push_back(key);
    }
  }

  Connection connection_;
  std::string name_;
  OwnedSubscription requests_;
  OwnedSubscription cancels_;
  std::mutex calls_mutex_;
  std::map<CallKey, std::shared_ptr<std::atomic<std::uint32_t>>> running_;
  std::set<CallKey> early_cancels_;
  std::deque<CallKey> early_order_;  // oldest first
};

const bool registered = [] {
  rpc::detail::register_nats_rpc({.make_client = NatsRpcClient::make, .make_server = NatsRpcServer::make});
  return true;
}();

}  // namespace
}  // namespace ferry::nats
