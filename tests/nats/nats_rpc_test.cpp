// rpc over nats:// (core NATS request/reply) against a real server.
#include "ferry/patterns/rpc.hpp"

#include <atomic>
#include <thread>

#include <gtest/gtest.h>

#include "nats_server.hpp"

namespace ferry {
namespace {

using namespace std::chrono_literals;

struct Pair {
  int a;
  int b;
};
struct Sum {
  int value;
};

class NatsRpcTest : public test::NatsServerTest {
 protected:

  // A started server of `name` with add, fail, slow and wait_for_cancel.
  std::unique_ptr<rpc::Server> serve(std::string_view name, std::size_t threads = 2) {
    auto server = rpc::Server::create(url(name), {.threads = threads});
    EXPECT_TRUE(server) << server.error().message();
    if (!server) return nullptr;
    EXPECT_TRUE((*server)->add<Pair>("add", [](const rpc::CallContext& call, const Pair& in) -> result<Sum> {
      if (call.user() != "anonymous") return error(errc::permission_denied, "add", "who is " + std::string(call.user()));
      return Sum{in.a + in.b};
    }));
    EXPECT_TRUE((*server)->add("fail", [](const rpc::CallContext&, std::span<const std::byte>) -> result<rpc::Bytes> {
      return error(errc::limit_reached, "fail", "as asked");
    }));
    EXPECT_TRUE((*server)->add("slow", [](const rpc::CallContext&, std::span<const std::byte>) -> result<rpc::Bytes> {
      std::this_thread::sleep_for(300ms);
      return rpc::Bytes{};
    }));
    EXPECT_TRUE((*server)->add("wait_for_cancel",
                               [this](const rpc::CallContext& call, std::span<const std::byte>) -> result<rpc::Bytes> {
                                 started_.store(true);
                                 const auto until = steady_clock::now() + 10s;
                                 while (!call.cancelled() && steady_clock::now() < until) std::this_thread::sleep_for(1ms);
                                 saw_cancel_.store(call.cancelled());
                                 return rpc::Bytes{};
                               }));
    EXPECT_TRUE((*server)->start());
    return std::move(*server);
  }

  std::atomic<bool> started_{false};
  std::atomic<bool> saw_cancel_{false};
};

TEST_F(NatsRpcTest, CallsRepliesAndErrorsCrossTheBroker) {
  auto server = serve("calc");
  ASSERT_NE(server, nullptr);
  auto client = rpc::Client::connect(url("calc"));
  ASSERT_TRUE(client) << client.error().message();
  auto sum = (*client)->call_for<Sum>("add", Pair{2, 3}, 5s);
  ASSERT_TRUE(sum) << sum.error().message();
  EXPECT_EQ(sum->value, 5);

  auto failed = (*client)->call_for("fail", {}, 5s);
  ASSERT_FALSE(failed);
  EXPECT_EQ(failed.error().code(), errc::limit_reached);
  EXPECT_TRUE(rpc::is_remote(failed.error()));
  auto unknown = (*client)->call_for("nope", {}, 5s);
  ASSERT_FALSE(unknown);
  EXPECT_EQ(unknown.error().code(), errc::not_found);

  // A deadline shorter than the handler: timed_out, and the late reply is counted and dropped.
  auto late = (*client)->call_for("slow", {}, 100ms);
  ASSERT_FALSE(late);
  EXPECT_EQ(late.error().code(), errc::timed_out);
  std::this_thread::sleep_for(400ms);
  ASSERT_TRUE((*client)->call_for<Sum>("add", Pair{1, 1}, 5s));  // receives (and drops) the late reply on the way
  EXPECT_EQ((*client)->stats().late_replies, 1u);
  EXPECT_EQ(server->stats().failed, 1u);
  EXPECT_EQ(server->stats().unknown_method, 1u);
}

TEST_F(NatsRpcTest, ACallWithNoServerFailsAtOnceWithPeerGone) {
  auto client = rpc::Client::connect(url("nobody"));
  ASSERT_TRUE(client) << client.error().message();
  const auto before = steady_clock::now();
  auto call = (*client)->call_for("add", {}, 30s);
  ASSERT_FALSE(call);
  EXPECT_EQ(call.error().code(), errc::peer_gone) << call.error().message();
  EXPECT_LT(steady_clock::now() - before, 10s);  // the server's "no responders", not the deadline
}

TEST_F(NatsRpcTest, ACancelReachesTheRunningHandler) {
  auto server = serve("cancel");
  ASSERT_NE(server, nullptr);
  auto client = rpc::Client::connect(url("cancel"));
  ASSERT_TRUE(client);
  auto pending = (*client)->call_async("wait_for_cancel", {});
  ASSERT_TRUE(pending) << pending.error().message();
  const auto until = steady_clock::now() + 10s;
  while (!started_.load() && steady_clock::now() < until) std::this_thread::sleep_for(1ms);
  ASSERT_TRUE(started_.load());
  pending->cancel();
  EXPECT_EQ(pending->get().error().code(), errc::cancelled);
  const auto stopped = steady_clock::now() + 10s;
  while (server->stats().handled == 0 && steady_clock::now() < stopped) std::this_thread::sleep_for(1ms);
  EXPECT_TRUE(saw_cancel_.load());
  EXPECT_EQ(server->stats().cancels, 1u);
}

TEST_F(NatsRpcTest, ServersOfOneNameShareTheCalls) {
  auto first = serve("shared", 1);
  auto second = serve("shared", 1);
  ASSERT_TRUE(first && second);
  auto client = rpc::Client::connect(url("shared"));
  ASSERT_TRUE(client);
  const std::size_t calls = test::scaled(400);
  for (std::size_t i = 0; i < calls; ++i) {
    auto sum = (*client)->call_for<Sum>("add", Pair{static_cast<int>(i), 1}, 5s);
    ASSERT_TRUE(sum) << sum.error().message();
    ASSERT_EQ(sum->value, static_cast<int>(i) + 1);
  }
  EXPECT_EQ(first->stats().handled + second->stats().handled, calls);
  EXPECT_GT(first->stats().handled, 0u);
  EXPECT_GT(second->stats().handled, 0u);
}

}  // namespace
}  // namespace ferry
