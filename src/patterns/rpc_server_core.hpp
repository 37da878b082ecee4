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
 public:
  Impl(Endpoint endpoint, ServerOptions options) : endpoint_(std::move(endpoint)), options_(options) {}
  virtual ~Impl() = default;

  result<void> add(std::string_view method, Handler handler) {
    if (started_) return problem("methods are added before start()");
    if (method.empty() || method.size() > kMaxMethodName) {
      return problem("a method name has 1 to " + std::to_string(kMaxMethodName) + " bytes, not " +
                     std::to_string(method.size()));
    }
    if (!methods_.emplace(std::string(method), std::move(handler)).second) {
      return problem("method '" + std::string(method) + "' is registered already");
    }
    return {};
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

  // Runs `request`: the handler's reply, or the error its caller gets;
  // counted in `counters` (the server's, or a lane's own).
  result<Bytes> run(const wire::Message& request, const CallContext& context, Counters& counters) {
    const auto method = methods_.find(request.method);
    if (method == methods_.end()) {
      counters.count(&Counters::unknown_method);
      return error(errc::not_found, description(), "no method '" + std::string(request.method) + "'");
    }
    result<Bytes> reply = invoke(method->second, context, request.payload);
    counters.count(&Counters::handled);
    if (reply && reply->size() > options_.max_payload) {
      reply = error(errc::limit_reached, description(),
                    "method '" + std::string(request.method) + "' replied " + std::to_string(reply->size()) +
                        " bytes, more than max_payload " + std::to_string(options_.max_payload));
    }
    if (!reply) counters.count(&Counters::failed);
    return reply;
  }
  result<Bytes> run(const wire::Message& request, const CallContext& context) { return run(request, context, counters_); }

  // A handler that throws fails its call, not the server.
  static result<Bytes> invoke(Handler& handler, const CallContext& context, std::span<const std::byte> payload) {
    try {
      return handler(context, payload);
    } catch (const std::exception& thrown) {
      return error(errc::system, "rpc method '" + std::string(context.method()) + "'",
                   std::string("the handler threw: ") + thrown.what());
    } catch (...) {
      return error(errc::system, "rpc method '" + std::string(context.method()) + "'", "the handler threw");
    }
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
  std::map<std::string, Handler, std::less<>> methods_;
  Counters counters_;
  std::atomic<bool> stopping_{false};
  std::vector<std::thread> threads_;
  bool started_ = false;
  // The flag of calls no one can cancel (unlisted in a full registry).
  static inline const std::atomic<std::uint32_t> kNeverCancelled{0};
};

}  // namespace ferry::rpc
