// ferry call and ferry stat of an rpc endpoint, run as the built binary
// against a server in a forked child (forked before this process has threads).
#include <atomic>
#include <chrono>
#include <string>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cli_support.hpp"
#include "ferry/patterns/rpc.hpp"
#include "ferry_test.hpp"
#include "rpc_cases.hpp"

namespace {

using ferry::test::Child;
using ferry::test::RpcEndpoint;
using namespace ferry::test::cli;

struct Shared {
  std::atomic<bool> ready{false};
  std::atomic<bool> stop{false};
  std::atomic<bool> release{false};
};

// Serves "echo", "fail" and "hold" (which waits until the test releases it)
// at `endpoint`, or on `listener` if given (tcp: a port known here), until told to stop.
Child serve(const std::string& endpoint, std::optional<ferry::Listener>& listener, Shared& shared) {
  return Child::spawn([&] {
    auto server = listener ? ferry::rpc::Server::create(std::move(*listener), {.threads = 2})
                           : ferry::rpc::Server::create(endpoint, {.threads = 2});
    FERRY_CHILD_CHECK(server);
    FERRY_CHILD_CHECK((*server)->add("echo", ferry::test::echo()));
    FERRY_CHILD_CHECK((*server)->add("fail", [](const ferry::rpc::CallContext&, std::span<const std::byte>)
                                                  -> ferry::result<ferry::rpc::Bytes> {
      return ferry::error(ferry::errc::permission_denied, "vault", "closed on sundays");
    }));
    FERRY_CHILD_CHECK((*server)->add("hold", [&shared](const ferry::rpc::CallContext&, std::span<const std::byte>) {
      while (!shared.release.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      return ferry::result<ferry::rpc::Bytes>(ferry::rpc::Bytes{});
    }));
    FERRY_CHILD_CHECK((*server)->start());
    shared.ready = true;
    while (!shared.stop.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return 0;
  });
}

bool wait_for(const std::atomic<bool>& flag) {
  for (int i = 0; i < 60000 && !flag.load(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  return flag.load();
}

class RpcCli : public ::testing::TestWithParam<std::string> {};

TEST_P(RpcCli, CallPrintsTheReplyOrTheRemoteError) {
  RpcEndpoint endpoint(GetParam());
  std::string where = endpoint.text();
  std::optional<ferry::Listener> listener;
  if (GetParam() == "tcp") {
    auto made = endpoint.listen();
    ASSERT_TRUE(made) << made.error().message();
    where = endpoint.text();
    listener = std::move(*made);
  }
  ferry::test::SharedAnonymous<Shared> shared;
  Child server = serve(where, listener, *shared);
  listener.reset();
  ASSERT_TRUE(wait_for(shared->ready));

  const CliRun echoed = ferry_cli("call " + where + " echo 'hello there'");
  EXPECT_EQ(echoed.status, 0) << echoed.output;
  EXPECT_EQ(echoed.output, "hello there\n");

  const CliRun from_stdin = ferry_cli_with_input("call --timeout 30 " + where + " echo", "line one\nline two\n");
  EXPECT_EQ(from_stdin.status, 0) << from_stdin.output;
  EXPECT_EQ(from_stdin.output, "line one\nline two\n\n");

  const CliRun failed = ferry_cli("call " + where + " fail");
  EXPECT_EQ(failed.status, 1);
  EXPECT_NE(failed.output.find("ferry call: remote rpc method 'fail'"), std::string::npos) << failed.output;
  EXPECT_NE(failed.output.find("permission denied"), std::string::npos) << failed.output;
  EXPECT_NE(failed.output.find("closed on sundays"), std::string::npos) << failed.output;

  const CliRun unknown = ferry_cli("call " + where + " nothing-here x");
  EXPECT_EQ(unknown.status, 1);
  EXPECT_NE(unknown.output.find("not found"), std::string::npos) << unknown.output;

  shared->stop = true;
  EXPECT_EQ(server.wait_for(std::chrono::seconds(60)), 0);
}

INSTANTIATE_TEST_SUITE_P(Transports, RpcCli, ::testing::Values("shm", "unix", "tcp"),
                         [](const ::testing::TestParamInfo<std::string>& param) { return param.param; });

TEST(RpcCliStat, ShowsServersAndCallsInFlightWithTheirAges) {
  RpcEndpoint endpoint("shm");
  ferry::test::SharedAnonymous<Shared> shared;
  std::optional<ferry::Listener> no_listener;
  Child server = serve(endpoint.text(), no_listener, *shared);
  ASSERT_TRUE(wait_for(shared->ready));
  // A call that stays in flight until released.
  ferry::test::TempDir files;
  Child caller = Child::exec("/bin/sh", {"-c", std::string(FERRY_CLI) + " call " + endpoint.text() + " hold > " +
                                                   files.file("out") + " 2>&1"});
  const std::string name = endpoint.text().substr(6);
  nlohmann::json status;
  for (int i = 0; i < 60000; ++i) {
    const CliRun stat = ferry_cli("stat --json " + endpoint.text());
    ASSERT_EQ(stat.status, 0) << stat.output;
    status = nlohmann::json::parse(stat.output);
    if (!status["rpc"]["in_flight"].empty()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_EQ(status["rpc"]["servers"].size(), 1u) << status.dump();
  EXPECT_EQ(status["rpc"]["servers"][0]["pid"], server.pid());
  EXPECT_EQ(status["rpc"]["servers"][0]["alive"], true);
  ASSERT_EQ(status["rpc"]["in_flight"].size(), 1u) << status.dump();
  EXPECT_EQ(status["rpc"]["in_flight"][0]["method"], "hold");
  EXPECT_GE(status["rpc"]["in_flight"][0]["age_seconds"].get<double>(), 0.0);

  const CliRun text = ferry_cli("stat " + name);
  EXPECT_EQ(text.status, 0) << text.output;
  EXPECT_NE(text.output.find("mailbox      " + name), std::string::npos) << text.output;
  EXPECT_NE(text.output.find("rpc servers  1"), std::string::npos) << text.output;
  EXPECT_NE(text.output.find("in flight    1"), std::string::npos) << text.output;
  EXPECT_NE(text.output.find("hold"), std::string::npos) << text.output;

  shared->release = true;
  EXPECT_EQ(caller.wait_for(std::chrono::seconds(60)), 0) << ferry::test::read_file(files.file("out"));
  shared->stop = true;
  EXPECT_EQ(server.wait_for(std::chrono::seconds(60)), 0);
}

}  // namespace
