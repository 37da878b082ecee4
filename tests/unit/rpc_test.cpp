// rpc::Server and rpc::Client in one process, on every transport: replies
// reach their callers, errors cross the wire, deadlines, cancellation, and
// hostile requests.
#include <array>
#include <cctype>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <set>
#include <thread>

#include <gtest/gtest.h>

#include "ferry/patterns/rpc.hpp"
#include "ferry/transport/framing.hpp"
#include "ferry_test.hpp"
#include "rpc_cases.hpp"

namespace {

using namespace std::chrono_literals;
using ferry::errc;
using ferry::rpc::Bytes;
using ferry::rpc::CallContext;
using ferry::test::RpcEndpoint;
using ferry::test::eventually;
using ferry::test::text_bytes;
using ferry::test::text_of;

constexpr auto kWatchdog = std::chrono::seconds(60);


// Holds handlers until the test opens it.
class Gate {
 public:
  void open() {
    const std::scoped_lock lock(mutex_);
    open_ = true;
    opened_.notify_all();
  }
  void pass() {
    std::unique_lock lock(mutex_);
    opened_.wait_for(lock, kWatchdog, [this] { return open_; });
  }

 private:
  std::mutex mutex_;
  std::condition_variable opened_;
  bool open_ = false;
};

ferry::result<Bytes> empty_reply() { return Bytes{}; }

class RpcTest : public ::testing::TestWithParam<std::string> {
 protected:
  // A started server at the endpoint with `methods`; the endpoint then names the bound port.
  std::unique_ptr<ferry::rpc::Server> serve(std::vector<std::pair<std::string, ferry::rpc::Handler>> methods,
                                            ferry::rpc::ServerOptions options = {}) {
    auto server = ferry::rpc::Server::create(endpoint_.text(), options);
    EXPECT_TRUE(server) << server.error().message();
    if (!server) return nullptr;
    for (auto& [name, handler] : methods) EXPECT_TRUE((*server)->add(name, std::move(handler)));
    const auto started = (*server)->start();
    EXPECT_TRUE(started) << started.error().message();
    endpoint_.bound(**server);
    return std::move(*server);
  }

  std::unique_ptr<ferry::rpc::Client> connect(ferry::rpc::ClientOptions options = {}) {
    auto client = ferry::rpc::Client::connect(endpoint_.text(), options);
    EXPECT_TRUE(client) << client.error().message();
    return client ? std::move(*client) : nullptr;
  }

  RpcEndpoint endpoint_{GetParam()};
};

struct Pair {
  std::int64_t a, b;
};
struct Sum {
  std::int64_t value;
};

TEST_P(RpcTest, EchoesBytesAndTypedStructs) {
  auto server = serve({{"echo", ferry::test::echo()}});
  ASSERT_TRUE(server);
  ASSERT_TRUE(server->add("late", ferry::test::echo()).error() == errc::invalid_argument);  // after start
  auto client = connect();
  ASSERT_TRUE(client);
  auto reply = client->call("echo", text_bytes("hello"));
  ASSERT_TRUE(reply) << reply.error().message();
  EXPECT_EQ(text_of(*reply), "hello");
  auto empty = client->call("echo", {});
  ASSERT_TRUE(empty) << empty.error().message();
  EXPECT_TRUE(empty->empty());
}

TEST_P(RpcTest, TypedMethodsCheckSizes) {
  auto server = ferry::rpc::Server::create(endpoint_.text());
  ASSERT_TRUE(server) << server.error().message();
  ASSERT_TRUE((*server)->add<Pair>("add", [](const CallContext&, const Pair& in) -> ferry::result<Sum> {
    return Sum{in.a + in.b};
  }));
  ASSERT_TRUE((*server)->start());
  endpoint_.bound(**server);
  auto client = connect();
  ASSERT_TRUE(client);
  auto sum = client->call<Sum>("add", Pair{2, 40});
  ASSERT_TRUE(sum) << sum.error().message();
  EXPECT_EQ(sum->value, 42);
  // A request of the wrong size is the caller's mistake, reported by the server.
  auto wrong = client->call<Sum>("add", Sum{1});
  ASSERT_FALSE(wrong);
  EXPECT_EQ(wrong.error().code(), errc::invalid_argument);
  EXPECT_TRUE(ferry::rpc::is_remote(wrong.error()));
}

// In-place methods write into the server's room of max_payload bytes;
// call_into copies a reply into the caller's buffer. Each pairs with the
// other kind, on every transport and (shm) on the mailbox and the lane.
TEST_P(RpcTest, InPlaceMethodsAndCallIntoCarryRepliesWithoutBytes) {
  constexpr std::size_t kMaxPayload = 1024;
  auto server = ferry::rpc::Server::create(endpoint_.text(), {.max_payload = kMaxPayload});
  ASSERT_TRUE(server) << server.error().message();
  std::atomic<std::size_t> room_seen{0};
  ASSERT_TRUE((*server)->add_in_place(
      "upper", [&](const CallContext&, std::span<const std::byte> request, std::span<std::byte> reply) {
        room_seen = reply.size();
        for (std::size_t i = 0; i < request.size(); ++i) {
          reply[i] = static_cast<std::byte>(std::toupper(std::to_integer<int>(request[i])));
        }
        return ferry::result<std::size_t>(request.size());
      }));
  ASSERT_TRUE((*server)->add_in_place("refuse", [](const CallContext&, std::span<const std::byte>, std::span<std::byte>) {
    return ferry::result<std::size_t>(ferry::error(errc::permission_denied, "ledger", "not today"));
  }));
  ASSERT_TRUE((*server)->add_in_place("overrun", [](const CallContext&, std::span<const std::byte>, std::span<std::byte> reply) {
    return ferry::result<std::size_t>(reply.size() + 1);  // claims more than its room
  }));
  ASSERT_TRUE((*server)->add("echo", ferry::test::echo()));
  struct Big {
    std::byte bytes[2 * kMaxPayload];
  };
  ASSERT_TRUE((*server)->add<Pair>("big", [](const CallContext&, const Pair&) -> ferry::result<Big> { return Big{}; }));
  EXPECT_EQ((*server)->add_in_place("empty", ferry::rpc::InPlaceHandler{}).error().code(), errc::invalid_argument);
  ASSERT_TRUE((*server)->start());
  endpoint_.bound(**server);
  auto client = connect({.max_payload = kMaxPayload});
  ASSERT_TRUE(client);

  std::array<std::byte, 64> buffer{};
  const auto upper_is = [&](std::string_view expected) {
    auto size = client->call_into("upper", text_bytes("call"), buffer);
    return size && std::string_view(reinterpret_cast<const char*>(buffer.data()), *size) == expected;
  };
  EXPECT_TRUE(upper_is("CALL"));  // over shm, on the mailbox: this call offers the lane
  if (GetParam() == "shm") {
    for (int i = 0; i < 2000 && client->stats().lane_calls == 0; ++i) {
      ASSERT_TRUE(upper_is("CALL"));
      std::this_thread::sleep_for(1ms);
    }
    ASSERT_GT(client->stats().lane_calls, 0u) << "no server took the lane";
  }
  const std::uint64_t calls = ferry::test::scaled(200);
  for (std::uint64_t i = 0; i < calls; ++i) {
    const std::string text = "call " + std::to_string(i);
    auto size = client->call_into("upper", text_bytes(text), buffer);
    ASSERT_TRUE(size) << size.error().message();
    ASSERT_EQ(std::string(reinterpret_cast<const char*>(buffer.data()), *size), "CALL " + std::to_string(i));
    auto echoed = client->call_into("echo", text_bytes(text), buffer);
    ASSERT_TRUE(echoed) << echoed.error().message();
    ASSERT_EQ(std::string(reinterpret_cast<const char*>(buffer.data()), *echoed), text);
  }
  EXPECT_EQ(room_seen.load(), kMaxPayload);
  auto upper = client->call("upper", text_bytes("bytes too"));
  ASSERT_TRUE(upper) << upper.error().message();
  EXPECT_EQ(text_of(*upper), "BYTES TOO");

  // A reply larger than the caller's buffer: limit_reached here, and the next call is not confused by it.
  std::array<std::byte, 4> small{};
  auto too_large = client->call_into("upper", text_bytes("longer than four"), small);
  ASSERT_FALSE(too_large);
  EXPECT_EQ(too_large.error().code(), errc::limit_reached);
  EXPECT_FALSE(ferry::rpc::is_remote(too_large.error()));
  EXPECT_NE(too_large.error().message().find("16 bytes"), std::string::npos) << too_large.error().message();
  auto after = client->call_into("upper", text_bytes("ok"), small);
  ASSERT_TRUE(after) << after.error().message();
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(small.data()), *after), "OK");

  auto refused = client->call_into("refuse", {}, buffer);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code(), errc::permission_denied);
  EXPECT_TRUE(ferry::rpc::is_remote(refused.error()));
  EXPECT_NE(refused.error().detail().find("not today"), std::string::npos) << refused.error().message();
  auto overrun = client->call("overrun", {});
  ASSERT_FALSE(overrun);
  EXPECT_EQ(overrun.error().code(), errc::limit_reached);
  EXPECT_TRUE(ferry::rpc::is_remote(overrun.error()));
  EXPECT_NE(overrun.error().detail().find("more than max_payload"), std::string::npos) << overrun.error().message();
  auto big = client->call("big", ferry::rpc::Client::bytes_of(Pair{1, 2}));
  ASSERT_FALSE(big);
  EXPECT_EQ(big.error().code(), errc::limit_reached) << big.error().message();
  EXPECT_TRUE(ferry::rpc::is_remote(big.error()));
  EXPECT_EQ((*server)->stats().failed, 3u);
}

TEST_P(RpcTest, ErrorsCrossTheWireTypedAndMarkedRemote) {
  auto server = serve({{"refuse",
                        [](const CallContext& call, std::span<const std::byte>) -> ferry::result<Bytes> {
                          return ferry::error(errc::permission_denied, "ledger", "uid " +
                                              std::to_string(call.caller() ? call.caller()->uid : 99999) + " may not");
                        }},
                       {"throw", [](const CallContext&, std::span<const std::byte>) -> ferry::result<Bytes> {
                          throw std::runtime_error("boom");
                        }}});
  ASSERT_TRUE(server);
  auto client = connect();
  ASSERT_TRUE(client);
  auto refused = client->call("refuse", {});
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code(), errc::permission_denied);
  EXPECT_TRUE(ferry::rpc::is_remote(refused.error()));
  EXPECT_NE(refused.error().detail().find("ledger"), std::string::npos) << refused.error().message();
  EXPECT_NE(refused.error().detail().find("may not"), std::string::npos) << refused.error().message();
  EXPECT_NE(refused.error().object().find("'refuse'"), std::string::npos) << refused.error().message();

  auto unknown = client->call("no-such-method", {});
  ASSERT_FALSE(unknown);
  EXPECT_EQ(unknown.error().code(), errc::not_found);
  EXPECT_TRUE(ferry::rpc::is_remote(unknown.error()));
  EXPECT_NE(unknown.error().detail().find("no-such-method"), std::string::npos);

  auto thrown = client->call("throw", {});
  ASSERT_FALSE(thrown);
  EXPECT_TRUE(ferry::rpc::is_remote(thrown.error()));
  EXPECT_NE(thrown.error().detail().find("boom"), std::string::npos);

  // Local mistakes are not remote.
  auto unnamed = client->call("", {});
  ASSERT_FALSE(unnamed);
  EXPECT_EQ(unnamed.error().code(), errc::invalid_argument);
  EXPECT_FALSE(ferry::rpc::is_remote(unnamed.error()));
  EXPECT_EQ(server->stats().failed, 2u);
  EXPECT_EQ(server->stats().unknown_method, 1u);
}

TEST_P(RpcTest, EightCallerThreadsShareOneClientAndGetTheirOwnReplies) {
  constexpr std::uint32_t kCallers = 8;
  const std::size_t calls = ferry::test::scaled(2000);
  std::vector<std::atomic<std::uint32_t>> seen(kCallers * calls);
  auto server = serve({{"tag",
                        [&](const CallContext&, std::span<const std::byte> request) -> ferry::result<Bytes> {
                          ferry::test::Tagged tagged{};
                          if (request.size() != sizeof tagged) return ferry::error(errc::invalid_argument, "tag");
                          std::memcpy(&tagged, request.data(), sizeof tagged);
                          seen[tagged.caller * calls + tagged.sequence].fetch_add(1);
                          return Bytes(request.begin(), request.end());
                        }}},
                      {.threads = 2});
  ASSERT_TRUE(server);
  auto client = connect();
  ASSERT_TRUE(client);
  std::atomic<std::size_t> mismatches{0};
  std::vector<std::thread> callers;
  for (std::uint32_t caller = 0; caller < kCallers; ++caller) {
    callers.emplace_back([&, caller] {
      for (std::uint64_t sequence = 0; sequence < calls; ++sequence) {
        const ferry::test::Tagged sent{caller, 0, sequence};
        auto reply = client->call("tag", ferry::rpc::Client::bytes_of(sent));
        ferry::test::Tagged got{};
        if (!reply || reply->size() != sizeof got) {
          mismatches.fetch_add(1);
          continue;
        }
        std::memcpy(&got, reply->data(), sizeof got);
        if (got.caller != caller || got.sequence != sequence) mismatches.fetch_add(1);
      }
    });
  }
  for (auto& thread : callers) thread.join();
  EXPECT_EQ(mismatches.load(), 0u);
  for (std::size_t i = 0; i < seen.size(); ++i) ASSERT_EQ(seen[i].load(), 1u) << "request " << i;
  EXPECT_EQ(server->stats().handled, kCallers * calls);
  EXPECT_EQ(client->stats().replies, kCallers * calls);
  EXPECT_EQ(client->stats().late_replies, 0u);
}

TEST_P(RpcTest, ExpiredRequestsAreNotRun) {
  Gate gate;
  std::atomic<int> blocking{0};
  std::atomic<int> quick_runs{0};
  auto server = serve({{"block",
                        [&](const CallContext&, std::span<const std::byte>) {
                          blocking.fetch_add(1);
                          gate.pass();
                          return empty_reply();
                        }},
                       {"quick", [&](const CallContext&, std::span<const std::byte>) {
                          quick_runs.fetch_add(1);
                          return empty_reply();
                        }}});
  ASSERT_TRUE(server);
  auto client = connect();
  ASSERT_TRUE(client);
  auto blocker = client->call_async("block", {});
  ASSERT_TRUE(blocker) << blocker.error().message();
  ASSERT_TRUE(eventually([&] { return blocking.load() == 1; }));
  // The only worker is busy: this call's deadline passes while it waits.
  // (Long enough that the request surely goes out: a client whose deadline
  // passed before sending fails it at home, and the server sees nothing.)
  auto expired = client->call_for("quick", {}, 200ms);
  ASSERT_FALSE(expired);
  EXPECT_EQ(expired.error().code(), errc::timed_out);
  if (GetParam() == "tcp") {
    // tcp deadlines count from when the server read the request.
    ASSERT_TRUE(eventually([&] { return server->stats().received >= 2; }));
    std::this_thread::sleep_for(250ms);
  }
  gate.open();
  ASSERT_TRUE(blocker->get());
  ASSERT_TRUE(client->call("quick", {}));
  // Over shm this call may take the caller's lane (offered by the expired
  // call) and finish before the worker reaches the expired request.
  EXPECT_TRUE(eventually([&] { return server->stats().expired == 1; }));
  EXPECT_EQ(quick_runs.load(), 1);
  EXPECT_EQ(client->stats().timed_out, 1u);
}

TEST_P(RpcTest, LateRepliesAreDiscardedAndCounted) {
  // The handler outlasts the caller's deadline, so its reply comes late. A
  // request the server only reached after its deadline is not run (expired);
  // then the caller tries again with a longer one.
  auto server = serve({{"outlast",
                        [](const CallContext& call, std::span<const std::byte>) {
                          while (call.until() && std::chrono::steady_clock::now() <= *call.until()) {
                            std::this_thread::sleep_for(1ms);
                          }
                          return ferry::result<Bytes>(Bytes{std::byte{1}});
                        }},
                       {"quick", [](const CallContext&, std::span<const std::byte>) { return empty_reply(); }}});
  ASSERT_TRUE(server);
  // Over the mailbox: lanes (their own test) would take the calls from its second one on.
  auto client = connect({.lanes = false});
  ASSERT_TRUE(client);
  for (auto budget = std::chrono::milliseconds(20); client->stats().late_replies == 0; budget *= 2) {
    ASSERT_LT(budget, std::chrono::milliseconds(100000));
    const auto expired_before = server->stats().expired;
    auto late = client->call_for("outlast", {}, budget);
    ASSERT_FALSE(late);
    EXPECT_EQ(late.error().code(), errc::timed_out);
    // Its reply (if it ran) comes before this one's: one worker, one reply path.
    ASSERT_TRUE(client->call("quick", {}));
    if (client->stats().late_replies == 0) {
      EXPECT_EQ(server->stats().expired, expired_before + 1);
    }
  }
  EXPECT_EQ(client->stats().late_replies, 1u);
  EXPECT_EQ(client->stats().replies, client->stats().calls - client->stats().timed_out);
}

TEST_P(RpcTest, CancelOvertakesQueuedRequests) {
  const std::size_t queued = ferry::test::scaled(1000);
  Gate gate;
  std::atomic<int> blocking{0};
  std::atomic<ferry::rpc::Server*> server_seen{nullptr};
  std::mutex ran_mutex;
  std::vector<std::uint32_t> ran;
  std::atomic<std::uint64_t> fewest_cancels_seen{~std::uint64_t{0}};
  auto server = serve({{"block",
                        [&](const CallContext&, std::span<const std::byte>) {
                          blocking.fetch_add(1);
                          gate.pass();
                          return empty_reply();
                        }},
                       {"work",
                        [&](const CallContext&, std::span<const std::byte> request) {
                          std::uint32_t index = 0;
                          std::memcpy(&index, request.data(), std::min(request.size(), sizeof index));
                          const std::uint64_t cancels = server_seen.load()->stats().cancels;
                          std::uint64_t fewest = fewest_cancels_seen.load();
                          while (cancels < fewest && !fewest_cancels_seen.compare_exchange_weak(fewest, cancels)) {
                          }
                          const std::scoped_lock lock(ran_mutex);
                          ran.push_back(index);
                          return empty_reply();
                        }}},
                      {.max_payload = 256, .queue_capacity = queued + 8});
  ASSERT_TRUE(server);
  server_seen = server.get();
  auto client = connect({.max_payload = 256});
  ASSERT_TRUE(client);
  auto blocker = client->call_async("block", {});
  ASSERT_TRUE(blocker);
  ASSERT_TRUE(eventually([&] { return blocking.load() == 1; }));

  std::vector<ferry::rpc::PendingCall> calls;
  for (std::uint32_t i = 0; i < queued; ++i) {
    auto call = client->call_async("work", ferry::rpc::Client::bytes_of(i));
    ASSERT_TRUE(call) << call.error().message();
    calls.push_back(std::move(*call));
  }
  const std::set<std::uint32_t> cancelled{static_cast<std::uint32_t>(queued / 2), static_cast<std::uint32_t>(queued - 1)};
  for (const auto index : cancelled) calls[index].cancel();
  // Streams: the server's reader takes the cancels while every request waits
  // behind the blocked one. shm: they are urgent, the next the worker takes.
  if (GetParam() != "shm") {
    ASSERT_TRUE(eventually([&] { return server->stats().cancels == cancelled.size(); }));
  }
  gate.open();
  ASSERT_TRUE(blocker->get());
  for (std::uint32_t i = 0; i < queued; ++i) {
    auto reply = calls[i].get();
    if (cancelled.contains(i)) {
      ASSERT_FALSE(reply);
      EXPECT_EQ(reply.error().code(), errc::cancelled) << reply.error().message();
      EXPECT_FALSE(ferry::rpc::is_remote(reply.error()));
    } else {
      EXPECT_TRUE(reply) << i << ": " << reply.error().message();
    }
  }
  const std::scoped_lock lock(ran_mutex);
  EXPECT_EQ(ran.size(), queued - cancelled.size());
  for (const auto index : ran) EXPECT_FALSE(cancelled.contains(index)) << index;
  // Every queued request ran after both cancels had reached the server.
  EXPECT_EQ(fewest_cancels_seen.load(), cancelled.size());
  // The last cancelled request is dropped after every reply went out.
  EXPECT_TRUE(eventually([&] { return server->stats().cancelled == cancelled.size(); }));
  EXPECT_EQ(client->stats().cancelled, cancelled.size());
}

TEST_P(RpcTest, RunningHandlerSeesItsCancellation) {
  std::atomic<int> started{0};
  std::atomic<bool> saw_cancel{false};
  auto server = serve({{"spin",
                        [&](const CallContext& call, std::span<const std::byte>) -> ferry::result<Bytes> {
                          started.fetch_add(1);
                          EXPECT_EQ(call.method(), "spin");
                          if (!eventually([&] { return call.cancelled(); })) return Bytes{};
                          saw_cancel = true;
                          return ferry::error(errc::cancelled, "spin", "stopped early");
                        }}},
                      {.threads = 2});  // shm: a free worker takes the cancel
  ASSERT_TRUE(server);
  auto client = connect();
  ASSERT_TRUE(client);
  auto call = client->call_async("spin", {});
  ASSERT_TRUE(call);
  ASSERT_TRUE(eventually([&] { return started.load() == 1; }));
  EXPECT_FALSE(call->ready());
  call->cancel();
  EXPECT_TRUE(call->ready());
  auto outcome = call->get();
  ASSERT_FALSE(outcome);
  EXPECT_EQ(outcome.error().code(), errc::cancelled);
  EXPECT_FALSE(ferry::rpc::is_remote(outcome.error())) << "ended by the caller, not by the handler's late reply";
  ASSERT_TRUE(eventually([&] { return saw_cancel.load(); }));
}

// stop() lets a running handler finish, and its reply still reaches the
// caller (streams: also when the connection's reader stopped first).
TEST_P(RpcTest, StopLetsARunningHandlerReply) {
  Gate gate;
  std::atomic<bool> started{false};
  auto server = serve({{"slow", [&](const CallContext&, std::span<const std::byte>) -> ferry::result<Bytes> {
                          started = true;
                          gate.pass();
                          const auto text = text_bytes("finished");
                          return Bytes(text.begin(), text.end());
                        }}});
  ASSERT_TRUE(server);
  auto client = connect();
  ASSERT_TRUE(client);
  auto call = client->call_async("slow", {});
  ASSERT_TRUE(call);
  ASSERT_TRUE(eventually([&] { return started.load(); }));
  std::thread stopper([&] { server->stop(); });
  // Long enough for the server's other threads to notice stop() (they look every 50 ms).
  std::this_thread::sleep_for(300ms);
  gate.open();
  stopper.join();
  auto reply = call->get();
  ASSERT_TRUE(reply) << reply.error().message();
  EXPECT_EQ(text_of(*reply), "finished");
}

TEST_P(RpcTest, AsyncCallsCanBePolledAndAwaited) {
  Gate gate;
  auto server = serve({{"gated", [&](const CallContext&, std::span<const std::byte> request) {
                          gate.pass();
                          return ferry::result<Bytes>(Bytes(request.begin(), request.end()));
                        }}});
  ASSERT_TRUE(server);
  auto client = connect();
  ASSERT_TRUE(client);
  auto call = client->call_async("gated", text_bytes("later"));
  ASSERT_TRUE(call);
  EXPECT_FALSE(call->ready());
  EXPECT_FALSE(call->wait_for(5ms));
  gate.open();
  EXPECT_TRUE(call->wait_for(kWatchdog));
  auto reply = call->get();
  ASSERT_TRUE(reply) << reply.error().message();
  EXPECT_EQ(text_of(*reply), "later");
}

TEST_P(RpcTest, OversizedRequestsAreRefusedAndTheServerGoesOn) {
  constexpr std::size_t kMax = 1024;
  auto server = serve({{"echo", ferry::test::echo()}}, {.max_payload = kMax});
  ASSERT_TRUE(server);
  auto careless = connect({.max_payload = kMax + 100});
  ASSERT_TRUE(careless);
  const Bytes big(kMax + 50, std::byte{7});
  auto refused = careless->call("echo", big);
  ASSERT_FALSE(refused);
  // shm answers; a stream server closes the connection of a client that sends too much.
  EXPECT_EQ(refused.error().code(), GetParam() == "shm" ? errc::limit_reached : errc::peer_gone)
      << refused.error().message();
  EXPECT_EQ(server->stats().oversized, 1u);
  // Too large for this client: refused before it is sent.
  auto client = connect({.max_payload = kMax});
  ASSERT_TRUE(client);
  auto local = client->call("echo", big);
  ASSERT_FALSE(local);
  EXPECT_EQ(local.error().code(), errc::invalid_argument);
  auto fine = client->call("echo", Bytes(kMax, std::byte{1}));
  ASSERT_TRUE(fine) << fine.error().message();
  EXPECT_EQ(fine->size(), kMax);
}

TEST_P(RpcTest, MalformedRequestsFromARawClientDoNotStopTheServer) {
  auto server = serve({{"echo", ferry::test::echo()}});
  ASSERT_TRUE(server);
  auto endpoint = ferry::Endpoint::parse(endpoint_.text());
  ASSERT_TRUE(endpoint);
  // A header with every length wrong, a short message, and bytes that are no message at all.
  Bytes lying(40, std::byte{0});
  lying[0] = std::byte{0xC7};
  lying[1] = std::byte{1};
  lying[2] = std::byte{1};
  lying[4] = std::byte{200};  // method length 200, but no bytes follow
  lying[36] = std::byte{0xFF};
  const std::vector<Bytes> garbage{lying, Bytes(7, std::byte{0xC7}), Bytes(300, std::byte{0x41})};
  if (GetParam() == "shm") {
    auto raw = ferry::Mailbox::open(endpoint->name);
    ASSERT_TRUE(raw) << raw.error().message();
    for (const Bytes& bytes : garbage) ASSERT_TRUE(raw->send(bytes));
    ASSERT_TRUE(eventually([&] { return server->stats().malformed == garbage.size(); }));
  } else {
    for (const Bytes& bytes : garbage) {
      auto socket = GetParam() == "tcp" ? ferry::TcpSocket::connect_for(endpoint->name, endpoint->port, kWatchdog)
                                        : ferry::UnixSocket::connect_for(endpoint->name, kWatchdog);
      ASSERT_TRUE(socket) << socket.error().message();
      ferry::FramedStream framed(std::move(*socket));
      ASSERT_TRUE(framed.send_frame(bytes));
      // The server hangs up on it.
      auto answer = framed.receive_frame_for(kWatchdog);
      ASSERT_FALSE(answer);
      EXPECT_EQ(answer.error().code(), errc::peer_gone) << answer.error().message();
    }
    // A frame header announcing 1 GiB.
    auto socket = GetParam() == "tcp" ? ferry::TcpSocket::connect_for(endpoint->name, endpoint->port, kWatchdog)
                                      : ferry::UnixSocket::connect_for(endpoint->name, kWatchdog);
    ASSERT_TRUE(socket);
    const auto header = ferry::frame_header(1u << 30);
    ASSERT_TRUE(socket->write_all(header));
    ferry::FramedStream framed(std::move(*socket));
    auto answer = framed.receive_frame_for(kWatchdog);
    ASSERT_FALSE(answer);
    EXPECT_EQ(answer.error().code(), errc::peer_gone);
    EXPECT_EQ(server->stats().malformed, garbage.size());
    EXPECT_EQ(server->stats().oversized, 1u);
  }
  auto client = connect();
  ASSERT_TRUE(client);
  auto reply = client->call("echo", text_bytes("still here"));
  ASSERT_TRUE(reply) << reply.error().message();
  EXPECT_EQ(text_of(*reply), "still here");
}

// shm lanes: a caller's own pair of Channels to one server (rpc.hpp).
class RpcLaneTest : public RpcTest {
 protected:
  // Calls until the server took the lane (its hello came): the first call offers it.
  static void wait_for_lane(ferry::rpc::Client& client) {
    for (int i = 0; i < 2000 && client.stats().lane_calls == 0; ++i) {
      ASSERT_TRUE(client.call("ping", {}));
      std::this_thread::sleep_for(1ms);
    }
    ASSERT_GT(client.stats().lane_calls, 0u) << "no server took the lane";
  }
};

TEST_P(RpcLaneTest, SynchronousCallsTakeTheCallersOwnLaneAndKeepItsIdentity) {
  std::atomic<pid_t> caller_pid{0};
  auto server = serve({{"ping", [](const CallContext&, std::span<const std::byte>) { return empty_reply(); }},
                       {"echo", ferry::test::echo()},
                       {"who", [&](const CallContext& call, std::span<const std::byte>) {
                          caller_pid = call.caller() ? call.caller()->pid : 0;
                          return empty_reply();
                        }}});
  ASSERT_TRUE(server);
  auto client = connect();
  wait_for_lane(*client);
  ASSERT_FALSE(HasFatalFailure());
  const auto before = client->stats();
  const std::uint64_t calls = ferry::test::scaled(1000);
  for (std::uint64_t i = 0; i < calls; ++i) {
    const std::string text = "call " + std::to_string(i) + std::string(i % 300, 'x');
    auto reply = client->call("echo", std::as_bytes(std::span(text)));
    ASSERT_TRUE(reply) << reply.error().message();
    ASSERT_EQ(ferry::test::text_of(*reply), text);
  }
  EXPECT_EQ(client->stats().lane_calls - before.lane_calls, calls);
  EXPECT_EQ(server->stats().lanes, 1u);
  ASSERT_TRUE(client->call("who", {}));
  EXPECT_EQ(caller_pid.load(), ::getpid()) << "the identity the mailbox attested for the offer";
  // Errors cross the lane as over the mailbox.
  auto unknown = client->call("nope", {});
  ASSERT_FALSE(unknown);
  EXPECT_EQ(unknown.error().code(), errc::not_found);
  EXPECT_TRUE(ferry::rpc::is_remote(unknown.error()));
  // Asynchronous calls keep to the mailbox.
  auto pending = client->call_async("echo", {});
  ASSERT_TRUE(pending);
  ASSERT_TRUE(pending->get());
  EXPECT_EQ(client->stats().lane_calls - before.lane_calls, calls + 2);
}

TEST_P(RpcLaneTest, ALaneCallIsListedWhileItRunsAndCountedOnce) {
  Gate gate;
  std::atomic<bool> holding{false};
  // 70 bytes: the registry keeps the first 64 (eight words, each byte in place).
  std::string hold = "hold";
  for (char c = 'a'; hold.size() < 70; c = c == 'z' ? 'a' : static_cast<char>(c + 1)) hold += c;
  auto server = serve({{"ping", [](const CallContext&, std::span<const std::byte>) { return empty_reply(); }},
                       {hold, [&](const CallContext&, std::span<const std::byte>) {
                          holding = true;
                          gate.pass();
                          return empty_reply();
                        }}});
  ASSERT_TRUE(server);
  const std::string name = endpoint_.text().substr(std::string_view("shm://").size());
  auto client = connect();
  wait_for_lane(*client);
  ASSERT_FALSE(HasFatalFailure());
  const auto lane_calls = client->stats().lane_calls;
  // The lane's server lists a call until just after its reply went out.
  const auto listed_calls = [&name] {
    auto status = ferry::rpc::inspect(name);
    EXPECT_TRUE(status) << status.error().message();
    return status ? status->calls.size() : std::size_t{0};
  };
  EXPECT_TRUE(eventually([&] { return listed_calls() == 0; })) << "a lane between calls lists none";

  std::thread caller([&] { EXPECT_TRUE(client->call(hold, {})); });
  ASSERT_TRUE(eventually([&] { return holding.load(); }));
  auto running = ferry::rpc::inspect(name);
  ASSERT_TRUE(running);
  ASSERT_EQ(running->calls.size(), 1u);
  EXPECT_EQ(running->calls[0].method, hold.substr(0, 64));
  EXPECT_EQ(running->calls[0].caller_pid, ::getpid());
  EXPECT_EQ(running->calls[0].server_pid, ::getpid());
  EXPECT_GT(running->calls[0].call_id, 0u);
  EXPECT_GT(running->calls[0].started_ns, 0u);
  gate.open();
  caller.join();
  EXPECT_EQ(client->stats().lane_calls, lane_calls + 1) << "it went on the lane";
  EXPECT_TRUE(eventually([&] { return listed_calls() == 0; }));

  // The lane's thread counts on its own; the server's stats add it in while
  // the lane lives and after it ended, once.
  const auto handled = server->stats().handled;
  EXPECT_EQ(handled, server->stats().received);
  auto after = ferry::rpc::inspect(name);
  ASSERT_TRUE(after);
  EXPECT_EQ(after->servers.at(0).handled, handled) << "the registry counts a call as it ends it";
  EXPECT_EQ(server->stats().open_lanes, 1u);
  client.reset();  // the lane ends
  ASSERT_TRUE(eventually([&] { return server->stats().open_lanes == 0; }));
  auto other = connect();
  ASSERT_TRUE(other);
  wait_for_lane(*other);  // taking its lane folds the ended one's counts into the server's
  ASSERT_FALSE(HasFatalFailure());
  const auto other_calls = other->stats().calls;
  other.reset();
  server->stop();
  EXPECT_EQ(server->stats().handled, handled + other_calls);
  EXPECT_EQ(server->stats().received, handled + other_calls);
}

TEST_P(RpcLaneTest, ALateReplyOnTheLaneIsSkippedAndCounted) {
  auto server = serve({{"ping", [](const CallContext&, std::span<const std::byte>) { return empty_reply(); }},
                       {"slow", [](const CallContext&, std::span<const std::byte>) {
                          std::this_thread::sleep_for(50ms);
                          return empty_reply();
                        }}});
  ASSERT_TRUE(server);
  auto client = connect();
  wait_for_lane(*client);
  ASSERT_FALSE(HasFatalFailure());
  auto late = client->call_for("slow", {}, 5ms);
  ASSERT_FALSE(late);
  EXPECT_EQ(late.error().code(), errc::timed_out);
  ASSERT_TRUE(client->call("ping", {}));
  EXPECT_EQ(client->stats().late_replies, 1u);
  EXPECT_EQ(client->stats().timed_out, 1u);
}

TEST_P(RpcLaneTest, AServerThatStopsLeavesTheCallItNeverTookToTheMailbox) {
  const auto ping = [](const CallContext&, std::span<const std::byte>) { return empty_reply(); };
  auto first = serve({{"ping", ping}});
  ASSERT_TRUE(first);
  auto client = connect();
  wait_for_lane(*client);
  ASSERT_FALSE(HasFatalFailure());
  auto second = serve({{"ping", ping}});
  ASSERT_TRUE(second);
  first->stop();  // its lane ends; the next call's request is never taken there
  const auto handled_before = second->stats().handled;
  auto reply = client->call_for("ping", {}, kWatchdog);
  ASSERT_TRUE(reply) << reply.error().message();
  EXPECT_EQ(second->stats().handled, handled_before + 1) << "the mailbox gave it to the other server";
  // The next call offers a new lane, which the other server takes.
  const auto lane_calls = client->stats().lane_calls;
  ASSERT_TRUE(client->call("ping", {}));
  EXPECT_EQ(client->stats().lane_calls, lane_calls) << "a broken lane is not used again";
  wait_for_lane(*client);
  EXPECT_EQ(second->stats().lanes, 1u);
}

INSTANTIATE_TEST_SUITE_P(Shm, RpcLaneTest, ::testing::Values(std::string("shm")),
                         [](const ::testing::TestParamInfo<std::string>& param) { return param.param; });

INSTANTIATE_TEST_SUITE_P(Transports, RpcTest, ::testing::ValuesIn(ferry::test::rpc_schemes()),
                         [](const ::testing::TestParamInfo<std::string>& param) { return param.param; });

TEST(Rpc, RefusesOtherSchemesAndBadNames) {
  auto udp = ferry::rpc::Server::create("udp://127.0.0.1:0");
  ASSERT_FALSE(udp);
  EXPECT_EQ(udp.error().code(), errc::invalid_argument);
  auto client = ferry::rpc::Client::connect("pipe:fd=1");
  ASSERT_FALSE(client);
  EXPECT_EQ(client.error().code(), errc::invalid_argument);
  auto missing = ferry::rpc::Client::connect("shm://" + ferry::test::unique_name("nobody-serves"));
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code(), errc::not_found);

  RpcEndpoint endpoint("shm");
  auto server = ferry::rpc::Server::create(endpoint.text());
  ASSERT_TRUE(server);
  EXPECT_EQ((*server)->add("", ferry::test::echo()).error().code(), errc::invalid_argument);
  EXPECT_EQ((*server)->add(std::string(256, 'm'), ferry::test::echo()).error().code(), errc::invalid_argument);
  ASSERT_TRUE((*server)->add("echo", ferry::test::echo()));
  EXPECT_EQ((*server)->add("echo", ferry::test::echo()).error().code(), errc::invalid_argument);
}

TEST(Rpc, ShmCallsFailWithPeerGoneWhenNoServerServes) {
  RpcEndpoint endpoint("shm");
  auto server = ferry::rpc::Server::create(endpoint.text());
  ASSERT_TRUE(server);
  ASSERT_TRUE((*server)->add("echo", ferry::test::echo()));
  ASSERT_TRUE((*server)->start());
  auto client = ferry::rpc::Client::connect(endpoint.text());
  ASSERT_TRUE(client);
  ASSERT_TRUE((*client)->call("echo", {}));
  auto status = ferry::rpc::inspect(endpoint.text().substr(6));
  ASSERT_TRUE(status) << status.error().message();
  ASSERT_EQ(status->servers.size(), 1u);
  EXPECT_EQ(status->servers[0].pid, ::getpid());
  EXPECT_EQ(status->servers[0].handled, 1u);
  (*server)->stop();
  auto orphan = (*client)->call("echo", {});
  ASSERT_FALSE(orphan);
  EXPECT_EQ(orphan.error().code(), errc::peer_gone);
}

}  // namespace
