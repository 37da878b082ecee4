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
  std::atomic<std::uint64_t> received{0}, handled{0}, failed{0}, unknown_method{0}, expired{0}, cancels{0},
      cancelled{0}, rerun{0}, abandoned{0}, malformed{0}, oversized{0}, rejected{0}, replies_dropped{0}, lanes{0};
};

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
    const Counters& c = counters_;
    return {c.received.load(), c.handled.load(), c.failed.load(), c.unknown_method.load(), c.expired.load(),
            c.cancels.load(), c.cancelled.load(), c.rerun.load(), c.abandoned.load(), c.malformed.load(),
            c.oversized.load(), c.rejected.load(), c.replies_dropped.load(), c.lanes.load()};
  }
  [[nodiscard]] const Endpoint& endpoint() const noexcept { return endpoint_; }

 protected:
  virtual result<void> launch() = 0;
  virtual void halted() noexcept {}

  [[nodiscard]] std::string description() const { return "rpc server at " + endpoint_.to_string(); }
  error problem(std::string detail) const { return error(errc::invalid_argument, description(), std::move(detail)); }

  // Runs `request`: the handler's reply, or the error its caller gets.
  result<Bytes> run(const wire::Message& request, const CallContext& context) {
    const auto method = methods_.find(request.method);
    if (method == methods_.end()) {
      counters_.unknown_method.fetch_add(1, std::memory_order_relaxed);
      return error(errc::not_found, description(), "no method '" + std::string(request.method) + "'");
    }
    result<Bytes> reply = invoke(method->second, context, request.payload);
    counters_.handled.fetch_add(1, std::memory_order_relaxed);
    if (reply && reply->size() > options_.max_payload) {
      reply = error(errc::limit_reached, description(),
                    "method '" + std::string(request.method) + "' replied " + std::to_string(reply->size()) +
                        " bytes, more than max_payload " + std::to_string(options_.max_payload));
    }
    if (!reply) counters_.failed.fetch_add(1, std::memory_order_relaxed);
    return reply;
  }

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
  bool expired(const std::optional<deadline>& until) {
    if (!until || steady_clock::now() < *until) return false;
    counters_.expired.fetch_add(1, std::memory_order_relaxed);
    return true;
  }

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
