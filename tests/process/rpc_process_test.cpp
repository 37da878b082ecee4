// rpc between real processes: two server processes sharing an endpoint
// under load, a server SIGKILLed in the middle of a call, and a caller
// running as another user. Servers are forked before this process starts
// any thread (callers are threads of the test process).
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <optional>
#include <thread>

#include <gtest/gtest.h>

#include "ferry/patterns/rpc.hpp"
#include "ferry_test.hpp"
#include "rpc_cases.hpp"

namespace {

using namespace std::chrono_literals;
using ferry::errc;
using ferry::rpc::Bytes;
using ferry::rpc::CallContext;
using ferry::test::Child;
using ferry::test::RpcEndpoint;
using ferry::test::eventually;

constexpr auto kWatchdog = std::chrono::seconds(60);
constexpr std::uint32_t kCallers = 8;
constexpr std::size_t kMostCalls = 10000;


// What the server processes and the test share (anonymous shared memory).
struct Shared {
  std::atomic<int> ready{0};
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> handled[2] = {};
  std::atomic<std::uint32_t> seen[kCallers * kMostCalls] = {};
  std::atomic<pid_t> blocked_pid{0};
  std::atomic<int> blocked_once{0};
};

// A server process: serves `methods` at the endpoint (or on the shared
// listener) until the test says stop; exit code 0 if all went well.
int serve(RpcEndpoint& endpoint, std::optional<ferry::Listener>& listener, Shared& shared,
          const std::function<void(ferry::rpc::Server&)>& add_methods) {
  auto server = listener ? ferry::rpc::Server::create(std::move(*listener), {.threads = 2})
                         : ferry::rpc::Server::create(endpoint.text(), {.threads = 2});
  if (!server) std::fprintf(stderr, "server: %s\n", server.error().message().c_str());
  FERRY_CHILD_CHECK(server);
  add_methods(**server);
  FERRY_CHILD_CHECK((*server)->start());
  shared.ready.fetch_add(1);
  while (!shared.stop.load()) std::this_thread::sleep_for(1ms);
  (*server)->stop();
  return 0;
}

class RpcProcessTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() != "shm") {
      auto made = endpoint_.listen();
      ASSERT_TRUE(made) << made.error().message();
      listener_ = std::move(*made);
    }
  }
  void start_servers(const std::function<void(ferry::rpc::Server&, int index)>& add_methods) {
    for (int index = 0; index < 2; ++index) {
      servers_.push_back(Child::spawn([&, index] {
        return serve(endpoint_, listener_, *shared_, [&](ferry::rpc::Server& server) { add_methods(server, index); });
      }));
    }
    ASSERT_TRUE(eventually([&] { return shared_->ready.load() == 2; }));
  }
  void stop_servers() {
    shared_->stop = true;
    for (Child& server : servers_) EXPECT_EQ(server.wait_for(kWatchdog), 0);
  }

  friend void kill_mid_request(RpcProcessTest& test, bool idempotent, bool on_lane);

  RpcEndpoint endpoint_{GetParam()};
  std::optional<ferry::Listener> listener_;
  ferry::test::SharedAnonymous<Shared> shared_;
  std::vector<Child> servers_;
};

TEST_P(RpcProcessTest, EightCallersTwoServersEveryReplyMatchesEveryRequestHandledOnce) {
  const std::size_t calls = std::min(ferry::test::scaled(kMostCalls), kMostCalls);
  Shared& shared = *shared_;
  start_servers([&](ferry::rpc::Server& server, int index) {
    (void)server.add("tag", [&shared, index, calls](const CallContext&, std::span<const std::byte> request) -> ferry::result<Bytes> {
      ferry::test::Tagged tagged{};
      if (request.size() != sizeof tagged) return ferry::error(errc::invalid_argument, "tag", "wrong size");
      std::memcpy(&tagged, request.data(), sizeof tagged);
      if (tagged.caller >= kCallers || tagged.sequence >= calls) return ferry::error(errc::invalid_argument, "tag", "range");
      shared.seen[tagged.caller * calls + tagged.sequence].fetch_add(1);
      shared.handled[index].fetch_add(1);
      tagged.server = static_cast<std::uint32_t>(index);
      const auto bytes = ferry::rpc::Client::bytes_of(tagged);
      return Bytes(bytes.begin(), bytes.end());
    });
  });
  std::atomic<std::size_t> mismatches{0};
  std::atomic<std::size_t> failures{0};
  std::vector<std::thread> callers;
  for (std::uint32_t caller = 0; caller < kCallers; ++caller) {
    callers.emplace_back([&, caller] {
      auto client = ferry::rpc::Client::connect(endpoint_.text());
      if (!client) {
        ADD_FAILURE() << client.error().message();
        return;
      }
      for (std::uint64_t sequence = 0; sequence < calls; ++sequence) {
        const ferry::test::Tagged sent{caller, 0, sequence};
        auto reply = (*client)->call_for("tag", ferry::rpc::Client::bytes_of(sent), kWatchdog);
        ferry::test::Tagged got{};
        if (!reply || reply->size() != sizeof got) {
          if (failures.fetch_add(1) == 0) ADD_FAILURE() << (reply ? "wrong size" : reply.error().message());
          continue;
        }
        std::memcpy(&got, reply->data(), sizeof got);
        if (got.caller != caller || got.sequence != sequence || got.server > 1) mismatches.fetch_add(1);
      }
      EXPECT_EQ((*client)->stats().late_replies, 0u);
    });
  }
  for (auto& thread : callers) thread.join();
  EXPECT_EQ(failures.load(), 0u);
  EXPECT_EQ(mismatches.load(), 0u);
  for (std::size_t i = 0; i < kCallers * calls; ++i) ASSERT_EQ(shared.seen[i].load(), 1u) << "request " << i;
  EXPECT_EQ(shared.handled[0].load() + shared.handled[1].load(), kCallers * calls);
  stop_servers();
}

// A server dies holding a call: peer_gone, or for an idempotent call its
// rerun on the other server; never a hang. The first "hang" blocks its
// server until SIGKILL; later ones answer with their server's pid.
// `on_lane`: the call is synchronous and goes over the caller's own lane
// (shm), which a server took before the call.
void kill_mid_request(RpcProcessTest& test, bool idempotent, bool on_lane);

TEST_P(RpcProcessTest, KilledServerFailsANonIdempotentCallWithPeerGone) { kill_mid_request(*this, false, false); }

TEST_P(RpcProcessTest, KilledServerRunsAnIdempotentCallOnTheOther) { kill_mid_request(*this, true, false); }

class RpcLaneProcessTest : public RpcProcessTest {};

TEST_P(RpcLaneProcessTest, KilledLaneServerFailsANonIdempotentCallWithPeerGone) { kill_mid_request(*this, false, true); }

TEST_P(RpcLaneProcessTest, KilledLaneServerRunsAnIdempotentCallOnTheOther) { kill_mid_request(*this, true, true); }

void kill_mid_request(RpcProcessTest& test, bool idempotent, bool on_lane) {
  Shared& shared = *test.shared_;
  test.start_servers([&shared](ferry::rpc::Server& server, int) {
    (void)server.add("ping", [](const CallContext&, std::span<const std::byte>) { return ferry::result<Bytes>(Bytes{}); });
    (void)server.add("hang", [&shared](const CallContext&, std::span<const std::byte>) -> ferry::result<Bytes> {
      if (shared.blocked_once.exchange(1) == 0) {
        shared.blocked_pid = ::getpid();
        for (;;) std::this_thread::sleep_for(1ms);
      }
      const std::string text = "ran in " + std::to_string(::getpid());
      const auto bytes = std::as_bytes(std::span(text));
      return Bytes(bytes.begin(), bytes.end());
    });
  });
  auto client = ferry::rpc::Client::connect(test.endpoint_.text());
  ASSERT_TRUE(client) << client.error().message();
  for (int i = 0; on_lane && i < 2000 && (*client)->stats().lane_calls == 0; ++i) {
    ASSERT_TRUE((*client)->call("ping", {}));
    std::this_thread::sleep_for(1ms);
  }
  if (on_lane) {
    ASSERT_GT((*client)->stats().lane_calls, 0u) << "no server took the lane";
  }
  std::optional<ferry::result<Bytes>> synchronous;
  std::optional<ferry::rpc::PendingCall> call;
  std::thread caller;
  if (on_lane) {
    caller = std::thread([&] { synchronous = (*client)->call_for("hang", {}, kWatchdog, {.idempotent = idempotent}); });
  } else {
    auto started = (*client)->call_async("hang", {}, ferry::deadline_after(kWatchdog), {.idempotent = idempotent});
    ASSERT_TRUE(started) << started.error().message();
    call.emplace(std::move(*started));
  }
  ASSERT_TRUE(eventually([&] { return shared.blocked_pid.load() != 0; }));
  const pid_t victim = shared.blocked_pid.load();
  const std::size_t killed = test.servers_[0].pid() == victim ? 0 : 1;
  ASSERT_EQ(test.servers_[killed].pid(), victim);
  test.servers_[killed].kill(SIGKILL);
  EXPECT_EQ(test.servers_[killed].wait_for(kWatchdog), 128 + SIGKILL);
  if (on_lane) caller.join();
  auto outcome = on_lane ? std::move(*synchronous) : call->get();
  if (idempotent) {
    ASSERT_TRUE(outcome) << outcome.error().message();
    EXPECT_NE(ferry::test::text_of(*outcome), "ran in " + std::to_string(victim));
  } else {
    ASSERT_FALSE(outcome);
    EXPECT_EQ(outcome.error().code(), errc::peer_gone) << outcome.error().message();
  }
  // The survivor goes on serving.
  auto after = (*client)->call_for("hang", {}, kWatchdog);
  ASSERT_TRUE(after) << after.error().message();
  test.shared_->stop = true;
  EXPECT_EQ(test.servers_[1 - killed].wait_for(kWatchdog), 0);
}

INSTANTIATE_TEST_SUITE_P(Transports, RpcProcessTest, ::testing::ValuesIn(ferry::test::rpc_schemes()),
                         [](const ::testing::TestParamInfo<std::string>& param) { return param.param; });
INSTANTIATE_TEST_SUITE_P(Shm, RpcLaneProcessTest, ::testing::Values(std::string("shm")),
                         [](const ::testing::TestParamInfo<std::string>& param) { return param.param; });

// The handler sees the caller's uid as the kernel attests it (shm, unix; tcp cannot).
class RpcIdentityTest : public ::testing::TestWithParam<std::string> {};

TEST_P(RpcIdentityTest, HandlerSeesACallerOfAnotherUser) {
  RpcEndpoint endpoint(GetParam());
  ferry::test::SharedAnonymous<std::atomic<bool>> started(false);
  auto server = ferry::rpc::Server::create(endpoint.text(), {.mode = GetParam() == "shm" ? mode_t{0622} : mode_t{0666}});
  ASSERT_TRUE(server) << server.error().message();
  ASSERT_TRUE((*server)->add("whoami", [](const CallContext& call, std::span<const std::byte>) -> ferry::result<Bytes> {
    if (!call.caller()) return ferry::error(errc::unsupported, "whoami", "no attested caller");
    const std::string text = std::to_string(call.caller()->uid) + " " + std::to_string(call.caller()->pid);
    const auto bytes = std::as_bytes(std::span(text));
    return Bytes(bytes.begin(), bytes.end());
  }));
  // Forked before the server's threads start.
  Child caller = Child::spawn([&] {
    ferry::test::become_other_user();
    while (!started->load()) std::this_thread::sleep_for(1ms);
    auto client = ferry::rpc::Client::connect(endpoint.text(), {.allow_foreign_owner = true});
    if (!client) std::fprintf(stderr, "connect: %s\n", client.error().message().c_str());
    FERRY_CHILD_CHECK(client);
    auto reply = (*client)->call_for("whoami", {}, kWatchdog);
    if (!reply) std::fprintf(stderr, "call: %s\n", reply.error().message().c_str());
    FERRY_CHILD_CHECK(reply);
    FERRY_CHILD_CHECK(ferry::test::text_of(*reply) ==
                      std::to_string(ferry::test::kOtherUid) + " " + std::to_string(::getpid()));
    return 0;
  });
  ASSERT_TRUE((*server)->start());
  *started = true;
  EXPECT_EQ(caller.wait_for(kWatchdog), 0);
}

INSTANTIATE_TEST_SUITE_P(Attested, RpcIdentityTest, ::testing::Values("shm", "unix"),
                         [](const ::testing::TestParamInfo<std::string>& param) { return param.param; });

}  // namespace
