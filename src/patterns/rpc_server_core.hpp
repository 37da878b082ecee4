// rpc::Server's transport-independent core (the method table, dispatch,
// counters, worker threads), shared by the transports in rpc_server.cpp and
// the nats backend (src/nats/rpc.cpp). Not installed API.
#pragma once

#include <atomic>
#include <exception>
#include <map>
#include <thread>
#include <vector>

#include "ferry/patterns/rpc.hpp"
#include "rpc_wire.hpp"

namespace ferry::rpc {

// How often a thread that waits for work looks whether stop() was called.
constexpr auto kStopCheck = std::chrono::milliseconds(50);

struct Counters {
  using Counter = std::atomic<std::uint64_t>;
  Counter received{0}, handled{0}, failed{0}, unknown_method{0}, expired{0}, cancels{0}, cancelled{0}, rerun{0},
      abandoned{0}, malformed{0}, oversized{0}, rejected{0}, replies_dropped{0}, lanes{0};
  // Counters one thread keeps alone (a shm lane's) count without a locked
  // instruction: a call would otherwise pay for two or three of them.
  bool alone = false;

  void count(Counter Counters::*which) noexcept {
    Counter& counter = this->*which;
    if (alone) {
      counter.store(counter.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    } else {
      counter.fetch_add(1, std::memory_order_relaxed);
    }
  }
  // Adds these counts to `total`, or to another Counters (a lane's, when it ends).
  void add_to(ServerStats& total) const noexcept {
    for (const auto& [counter, stat] : kFields) total.*stat += (this->*counter).load(std::memory_order_relaxed);
  }
  void add_to(Counters& total) const noexcept {
    for (const auto& [counter, stat] : kFields) {
      (total.*counter).fetch_add((this->*counter).load(std::memory_order_relaxed), std::memory_order_relaxed);
    }
  }

 private:
  struct Field {
    Counter Counters::*counter;
    std::uint64_t ServerStats::*stat;
  };
  static constexpr Field kFields[] = {
      {&Counters::received, &ServerStats::received},   {&Counters::handled, &ServerStats::handled},
      {&Counters::failed, &ServerStats::failed},       {&Counters::unknown_method, &ServerStats::unknown_method},
      {&Counters::expired, &ServerStats::expired},     {&Counters::cancels, &ServerStats::cancels},
      {&Counters::cancelled, &ServerStats::cancelled}, {&Counters::rerun, &ServerStats::rerun},
      {&Counters::abandoned, &ServerStats::abandoned}, {&Counters::malformed, &ServerStats::malformed},
      {&Counters::oversized, &ServerStats::oversized}, {&Counters::rejected, &ServerStats::rejected},
      {&Counters::replies_dropped, &ServerStats::replies_dropped}, {&Counters::lanes, &ServerStats::lanes}};
};
// Every ServerStats field but open_lanes (a state, not a count) has its counter.
static_assert(sizeof(ServerStats) == 15 * sizeof(std::uint64_t), "a ServerStats field without its counter");

class Server::Impl {
 protected:
  // A method's handler: one of the two kinds.
  struct Method {
    Handler bytes;
    InPlaceHandler in_place;
  };

 public:
  Impl(Endpoint endpoint, ServerOptions options) : endpoint_(std::move(endpoint)), options_(options) {}
  virtual ~Impl() = default;

  result<void> add(std::string_view method, Handler handler) { return add_method(method, {std::move(handler), {}}); }
  result<void> add_in_place(std::string_view method, InPlaceHandler handler) {
    return add_method(method, {{}, std::move(handler)});
  }

  result<void> start() {
    if (started_) return problem("started already");
    started_ = true;
    return launch();
  }

  void stop() noexcept {
    stopping_ = true;
    for (std::thread& thread : threads_) thread.join();
    threads_.clear();
    halted();
  }

  [[nodiscard]] ServerStats stats() const noexcept {
    ServerStats total;
    counters_.add_to(total);
    add_other_counts(total);
    return total;
  }
  [[nodiscard]] const Endpoint& endpoint() const noexcept { return endpoint_; }

 protected:
  virtual result<void> launch() = 0;
  virtual void halted() noexcept {}
  /// Adds what threads count on their own (shm lanes).
  virtual void add_other_counts(ServerStats&) const noexcept {}

  [[nodiscard]] std::string description() const { return "rpc server at " + endpoint_.to_string(); }
  error problem(std::string detail) const { return error(errc::invalid_argument, description(), std::move(detail)); }

  // Runs `request`: its reply's bytes, held by `owned` (a Handler's Bytes,
  // moved there) or `scratch` (an InPlaceHandler's room, grown once), or the
  // error its caller gets; counted in `counters` (the server's, or a lane's own).
  result<std::span<const std::byte>> run(const wire::Message& request, const CallContext& context, Counters& counters,
                                         Bytes& owned, Bytes& scratch) {
    const auto method = methods_.find(request.method);
    if (method == methods_.end()) {
      counters.count(&Counters::unknown_method);
      return error(errc::not_found, description(), "no method '" + std::string(request.method) + "'");
    }
    auto reply = invoke(method->second, context, request.payload, owned, scratch);
    counters.count(&Counters::handled);
    if (!reply) counters.count(&Counters::failed);
    return reply;
  }
  // The same, the reply in Bytes of its own (the transports but shm lanes).
  result<Bytes> run(const wire::Message& request, const CallContext& context) {
    Bytes owned;
    thread_local Bytes scratch;
    auto reply = run(request, context, counters_, owned, scratch);
    if (!reply) return std::move(reply).error();
    if (owned.empty()) owned.assign(reply->begin(), reply->end());  // in place (a Handler's reply is in `owned`)
    return owned;
  }

  // Calls the handler; one that throws fails its call, not the server.
  result<std::span<const std::byte>> invoke(const Method& method, const CallContext& context,
                                            std::span<const std::byte> payload, Bytes& owned, Bytes& scratch) {
    try {
      std::size_t size = 0;
      if (method.bytes) {
        auto reply = method.bytes(context, payload);
        if (!reply) return std::move(reply).error();
        owned = std::move(*reply);
        size = owned.size();
      } else {
        if (scratch.size() < options_.max_payload) scratch.resize(options_.max_payload);
        auto written = method.in_place(context, payload, std::span(scratch).first(options_.max_payload));
        if (!written) return std::move(written).error();
        size = *written;
      }
      if (size > options_.max_payload) return detail::reply_too_large(context.method(), size, options_.max_payload);
      return std::span<const std::byte>(method.bytes ? owned.data() : scratch.data(), size);
    } catch (const std::exception& thrown) {
      return error(errc::system, "rpc method '" + std::string(context.method()) + "'",
                   std::string("the handler threw: ") + thrown.what());
    } catch (...) {
      return error(errc::system, "rpc method '" + std::string(context.method()) + "'", "the handler threw");
    }
  }

  result<void> add_method(std::string_view name, Method method) {
    if (started_) return problem("methods are added before start()");
    if (name.empty() || name.size() > kMaxMethodName) {
      return problem("a method name has 1 to " + std::to_string(kMaxMethodName) + " bytes, not " +
                     std::to_string(name.size()));
    }
    if (!method.bytes && !method.in_place) return problem("method '" + std::string(name) + "' has no handler");
    if (!methods_.emplace(std::string(name), std::move(method)).second) {
      return problem("method '" + std::string(name) + "' is registered already");
    }
    return {};
  }

  // A request whose deadline has passed is not run.
  bool expired(const std::optional<deadline>& until, Counters& counters) {
    if (!until || steady_clock::now() < *until) return false;
    counters.count(&Counters::expired);
    return true;
  }
  bool expired(const std::optional<deadline>& until) { return expired(until, counters_); }

  Endpoint endpoint_;
  ServerOptions options_;
  std::map<std::string, Method, std::less<>> methods_;
  Counters counters_;
  std::atomic<bool> stopping_{false};
  std::vector<std::thread> threads_;
  bool started_ = false;
  // The flag of calls no one can cancel (unlisted in a full registry).
  static inline const std::atomic<std::uint32_t> kNeverCancelled{0};
  // A call's deadline when it has none, made once (see serve_lane_calls).
  static inline const std::optional<deadline> kNoDeadline;
};

}  // namespace ferry::rpc
