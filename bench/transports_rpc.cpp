// ferry's rpc in the benchmark: ferry.rpc.shm, ferry.rpc.unix, ferry.rpc.tcp,
// and ferry.rpc.nats (core NATS request/reply through the nats-server the run
// starts; only when the nats backend is built).
// The responder is an rpc::Server with one method, "echo", run on one server
// thread (over shm, each caller's lane has a thread of its own: a caller's
// first call offers its lane, the warm-up's next ones find it taken); the
// initiator is the caller. As for zmq.reqrep (kServes in
// ipc_worker.hpp), send() is one whole call (request out, reply in) and
// receive() hands out its reply, so that
//   - rtt (64 B: the smallest call the harness stamps): one call per round trip;
//   - throughput at a size, one sender: calls back to back, so its rate is the
//     inverse of the mean round trip at that size (the 4 KiB call: --sizes 4K);
//   - throughput with 2, 4 and 8 senders: as many calling processes at once
//     (issue 8's "throughput with 4 callers" is the 4-sender row).
// The handler checks and counts what it is sent (detail::ResponderTally) and
// wakes the responder's main thread, which waits in serve(), at the
// initiator's last call. It echoes in place (add_in_place) and the caller
// takes each reply into a buffer of its own (call_into): rpc's forms that
// allocate nothing per call.
//
// The server is made and started in open(), before the initiator may call,
// and publishes where it serves in a file of the measurement's directory (a
// tcp port 0 is bound only then); each calling process connects its own Client at its first
// call (a Client, with its reply mailbox or connection, must not cross the
// fork of the senders) and closes it after its last one, before the harness
// ends the process with _exit. The request mailbox and the registry of a shm
// endpoint are registered as leftovers; the reply mailbox of a caller killed
// midway is process-persistent, left for `ferry gc`.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "ferry/patterns/rpc.hpp"
#include "ferry/sync/spin_lock.hpp"
#include "ipc_transports.hpp"

namespace ferry::bench {
namespace {

template <Endpoint::Scheme kScheme>
struct RpcTransport : TransportBase {
  static constexpr bool kServes = true;
  static constexpr bool kManySenders = true;

  static std::string not_applicable(Pattern, std::size_t size) {
    if (kScheme == Endpoint::Scheme::shm && size > (std::size_t{1} << 20)) {
      return "calls above 1 MiB: each caller's request log in /dev/shm would hold 8 of them";
    }
    if (kScheme == Endpoint::Scheme::nats && size + 1024 > (std::size_t{1} << 20)) {  // 1 KiB: the rpc header, generously
      return "above nats-server's default max_payload (1 MiB) with the rpc header";
    }
    return {};
  }

  // Calls in flight at once: one per calling process.
  static constexpr std::size_t kInFlight = kMaxSenders;
  static std::size_t max_payload(const Spec& spec) { return std::max<std::size_t>(spec.size, 64 << 10); }
  static std::string published(const Spec& spec) { return spec.dir + "/rpc.endpoint"; }

  void open(Side side, const Spec& spec) {
    spec_ = &spec;
    if (side == Side::initiator) return;
    std::string where;
    switch (kScheme) {
      case Endpoint::Scheme::shm: {
        const std::string name = "ferry-bench-rpc-" + std::to_string(::getpid()) + "-" + std::to_string(spec.serial);
        detail::register_leftover("/dev/shm/ferry." + name);      // the request mailbox
        detail::register_leftover("/dev/shm/ferry." + name + ".rpc");  // the server registry
        where = "shm://" + name;
        break;
      }
      case Endpoint::Scheme::unix_stream: where = "unix://" + spec.dir + "/rpc.sock"; break;
      case Endpoint::Scheme::tcp: where = "tcp://127.0.0.1:0"; break;
      case Endpoint::Scheme::nats:
        if (spec.nats_url.empty()) fail("no nats-server for this run (the coordinator did not start one)");
        where = spec.nats_url + "/bench-rpc-" + std::to_string(::getpid()) + "-" + std::to_string(spec.serial);
        break;
      default: fail("rpc serves shm://, unix://, tcp:// and nats:// only");
    }
    auto server = rpc::Server::create(where, {.threads = 1, .max_payload = max_payload(spec), .queue_capacity = kInFlight});
    if (!server) fail("%s", server.error().message().c_str());
    server_ = std::move(*server);
    // Serving before the initiator may call: a shm call with no server running fails at once.
    tally_.emplace(spec);
    auto added = server_->add_in_place("echo", [this](const rpc::CallContext&, std::span<const std::byte> request,
                                                      std::span<std::byte> reply) -> result<std::size_t> {
      if (request.size() != spec_->size) fail("a request of %zu bytes, expected %zu", request.size(), spec_->size);
      // shm: each caller's lane has a server thread of its own. A spin lock
      // takes one locked instruction where a mutex takes two: the tally is
      // the benchmark's cost, not rpc's (the Channel's responder has none).
      (void)tally_lock_.lock();
      const bool last = tally_->take(request.data());
      (void)tally_lock_.unlock();
      if (last) {
        done_.store(true, std::memory_order_release);
        done_.notify_one();
      }
      std::memcpy(reply.data(), request.data(), request.size());
      return request.size();
    });
    if (!added) fail("%s", added.error().message().c_str());
    if (auto started = server_->start(); !started) fail("%s", started.error().message().c_str());
    std::ofstream(published(spec)) << server_->endpoint().to_string();
  }

  void serve(const Spec&, SharedArea& area) {
    done_.wait(false, std::memory_order_acquire);
    server_->stop();  // the last reply goes out first: stop() lets a running handler finish
    tally_->record(area);
  }

  void send(const std::byte* message, std::size_t size) {
    if (!client_) {
      std::ifstream file(published(*spec_));
      const std::string where{std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>()};
      auto client = rpc::Client::connect(where, {.max_payload = max_payload(*spec_), .reply_capacity = 2});
      if (!client) fail("%s", client.error().message().c_str());
      client_ = std::move(*client);
      reply_.resize(max_payload(*spec_));
    }
    auto reply = client_->call_into("echo", {message, size}, reply_);
    if (!reply) fail("%s", reply.error().message().c_str());
    if (*reply != size) fail("a reply of %zu bytes, expected %zu", *reply, size);
    if (read_stamp(message, size) & kLast) client_.reset();  // this process's last call (kStop too)
  }

  const std::byte* receive(std::byte*, std::size_t) { return reply_.data(); }

  void close(Side) {
    client_.reset();
    server_.reset();
  }

  const Spec* spec_ = nullptr;
  std::unique_ptr<rpc::Server> server_;
  SpinLock tally_lock_;
  std::optional<detail::ResponderTally> tally_;
  std::atomic<bool> done_{false};
  std::unique_ptr<rpc::Client> client_;
  std::vector<std::byte> reply_;  // call_into's buffer
};

}  // namespace

void add_rpc_transports(std::vector<TransportInfo>& list) {
  list.push_back(make_transport<RpcTransport<Endpoint::Scheme::shm>>(
      "ferry.rpc.shm", Group::ferry, "ferry rpc echo calls at shm:// (each caller's own lane: two Channels to the server; in place, call_into)"));
  list.push_back(make_transport<RpcTransport<Endpoint::Scheme::unix_stream>>(
      "ferry.rpc.unix", Group::ferry, "ferry rpc echo calls at unix:// (a connection per caller)"));
  list.push_back(make_transport<RpcTransport<Endpoint::Scheme::tcp>>(
      "ferry.rpc.tcp", Group::ferry, "ferry rpc echo calls at tcp://127.0.0.1 (a connection per caller)"));
#ifdef FERRY_BENCH_HAVE_NATS
  TransportInfo nats = make_transport<RpcTransport<Endpoint::Scheme::nats>>(
      "ferry.rpc.nats", Group::ferry, "ferry rpc echo calls at nats:// (core request/reply through nats-server on loopback)");
  nats.needs_nats_server = true;
  list.push_back(std::move(nats));
#else
  list.push_back(unavailable_transport(
      "ferry.rpc.nats", Group::ferry, "not built: the nats backend ferry::nats (nats.c, Debian: libnats-dev) was not found"));
#endif
}

}  // namespace ferry::bench
