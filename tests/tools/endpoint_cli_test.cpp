// ferry send / recv / listen / pipe with endpoint strings, tested by running
// the built binary: listen and pipe run in the background (their stdout and
// stderr in files), send and recv in the foreground.
#include <signal.h>

#include <chrono>
#include <string>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cli_support.hpp"
#include "ferry/ferry.hpp"
#include "ferry_test.hpp"

namespace {

using ferry::test::Child;
using namespace ferry::test::cli;

constexpr auto kWatchdog = std::chrono::seconds(60);

// A ferry command running in the background.
class Background {
 public:
  explicit Background(const std::string& arguments)
      : child_(Child::exec("/bin/sh", {"-c", "exec " + std::string(FERRY_CLI) + " " + arguments + " > " + out_ +
                                                  " 2> " + err_})) {}

  // The endpoint it said it listens at ("ferry listen: listening at ..." on
  // stderr); empty if it did not say so before it ended or the watchdog.
  std::string listening_at() {
    const auto give_up = std::chrono::steady_clock::now() + kWatchdog;
    constexpr std::string_view kSaid = "listening at ";
    while (std::chrono::steady_clock::now() < give_up) {
      const std::string said = errors();
      const auto at = said.find(kSaid);
      const auto end = said.find('\n', at);
      if (at != std::string::npos && end != std::string::npos) return said.substr(at + kSaid.size(), end - at - kSaid.size());
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return {};
  }
  int wait() { return child_.wait_for(kWatchdog); }
  void kill(int signal_number) { child_.kill(signal_number); }
  std::string output() const { return ferry::test::read_file(out_); }
  std::string errors() const { return ferry::test::read_file(err_); }

 private:
  ferry::test::TempDir files_;
  std::string out_ = files_.file("stdout");
  std::string err_ = files_.file("stderr");
  Child child_;
};

TEST(EndpointCli, ListenPrintsWhatSendSendsOverUnix) {
  ferry::test::TempDir directory;
  const std::string endpoint = "unix://" + directory.file("socket");
  Background listen("listen --count 3 --json " + endpoint);
  ASSERT_EQ(listen.listening_at(), endpoint) << listen.errors();
  const CliRun arguments = ferry_cli("send " + endpoint + " one 'two words'");
  EXPECT_EQ(arguments.status, 0) << arguments.output;
  EXPECT_EQ(arguments.output, "sent 2 messages to " + endpoint + "\n");
  const CliRun lines = ferry_cli_with_input("send --priority 7 " + endpoint, "three\n");
  EXPECT_EQ(lines.status, 0) << lines.output;
  ASSERT_EQ(listen.wait(), 0) << listen.errors();

  const auto received = json_lines(listen.output());
  ASSERT_EQ(received.size(), 3u) << listen.output();
  EXPECT_EQ(received[0]["data"], "one");
  EXPECT_EQ(received[1]["data"], "two words");
  EXPECT_EQ(received[2]["data"], "three");
  EXPECT_EQ(received[2]["priority"], 7);
  for (const auto& message : received) {
    // SO_PEERCRED of the ferry send that sent it.
    ASSERT_TRUE(message["sender"].is_object()) << message.dump();
    EXPECT_EQ(message["sender"]["uid"], ::geteuid());
    EXPECT_EQ(message["sender"]["pid_attested"], true);
  }
  EXPECT_NE(received[0]["sender"]["pid"], received[2]["sender"]["pid"]) << "two ferry send processes";
  EXPECT_FALSE(exists(directory.file("socket"))) << "listen removes its socket file";
}

TEST(EndpointCli, ListenPrintsWhatSendSendsOverTcp) {
  Background listen("listen --count 2 --json tcp://127.0.0.1:0");
  const std::string endpoint = listen.listening_at();
  ASSERT_TRUE(endpoint.starts_with("tcp://127.0.0.1:")) << listen.errors();
  ASSERT_NE(endpoint, "tcp://127.0.0.1:0") << "the bound port is shown";
  const CliRun sent = ferry_cli("send " + endpoint + " first second");
  EXPECT_EQ(sent.status, 0) << sent.output;
  ASSERT_EQ(listen.wait(), 0) << listen.errors();
  const auto received = json_lines(listen.output());
  ASSERT_EQ(received.size(), 2u) << listen.output();
  EXPECT_EQ(received[0]["data"], "first");
  EXPECT_EQ(received[1]["data"], "second");
  EXPECT_TRUE(received[0]["sender"].is_null()) << "tcp cannot attest a sender";
}

TEST(EndpointCli, PipeForwardsFromTcpIntoAMailboxWithUrgency) {
  MailboxName box;
  ASSERT_TRUE(ferry::Mailbox::create(box.name, {.capacity = ferry::Capacity::bounded(16, 4096)}));
  Background pipe("pipe --count 3 tcp://127.0.0.1:0 shm://" + box.name);
  const std::string endpoint = pipe.listening_at();
  ASSERT_TRUE(endpoint.starts_with("tcp://")) << pipe.errors();
  EXPECT_EQ(ferry_cli("send " + endpoint + " a b").status, 0);
  EXPECT_EQ(ferry_cli("send --urgent " + endpoint + " c").status, 0);
  ASSERT_EQ(pipe.wait(), 0) << pipe.errors();
  EXPECT_EQ(pipe.output(), "forwarded 3 messages from " + endpoint + " to shm://" + box.name + "\n");
  // The urgent one overtook the two queued before it in the mailbox.
  const CliRun received = ferry_cli("recv --count 3 " + box.name);
  EXPECT_EQ(received.status, 0) << received.output;
  EXPECT_EQ(received.output, "c\na\nb\n");
}

TEST(EndpointCli, ListenEndsAtItsTimeoutOrASignal) {
  ferry::test::TempDir directory;
  const std::string endpoint = "unix://" + directory.file("socket");
  Background quiet("listen --timeout 0.2 " + endpoint);
  EXPECT_EQ(quiet.wait(), 0) << quiet.errors();
  EXPECT_EQ(quiet.output(), "");

  Background endless("listen " + endpoint);
  ASSERT_EQ(endless.listening_at(), endpoint) << endless.errors();
  EXPECT_EQ(ferry_cli("send " + endpoint + " before-the-signal").status, 0);
  // Sent, not yet necessarily printed: wait until it is, then stop it.
  for (int i = 0; i < 10000 && endless.output().empty(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  endless.kill(SIGTERM);
  EXPECT_EQ(endless.wait(), 0) << endless.errors();
  EXPECT_EQ(endless.output(), "before-the-signal\n");
  EXPECT_FALSE(exists(directory.file("socket")));
}

TEST(EndpointCli, RecvTakesEndpointsAndErrorsNameTheEndpoint) {
  ferry::test::TempDir directory;
  const std::string endpoint = "unixgram://" + directory.file("socket");
  Background recv("recv --count 2 " + endpoint);
  ASSERT_EQ(recv.listening_at(), endpoint) << recv.errors();
  EXPECT_EQ(ferry_cli("send " + endpoint + " x y").status, 0);
  EXPECT_EQ(recv.wait(), 0) << recv.errors();
  EXPECT_EQ(recv.output(), "x\ny\n");

  const CliRun nothing = ferry_cli("recv --timeout 0.2 " + endpoint);
  EXPECT_EQ(nothing.status, 1);
  EXPECT_NE(nothing.output.find("(0 of 1 received)"), std::string::npos) << nothing.output;
  const CliRun no_port = ferry_cli("send tcp://127.0.0.1 x");
  EXPECT_EQ(no_port.status, 1);
  EXPECT_NE(no_port.output.find("'tcp://127.0.0.1'"), std::string::npos) << no_port.output;
  EXPECT_NE(no_port.output.find("missing port"), std::string::npos) << no_port.output;
  const CliRun nobody = ferry_cli("send unix://" + directory.file("nobody") + " x");
  EXPECT_EQ(nobody.status, 1);
  EXPECT_NE(nobody.output.find("not found"), std::string::npos) << nobody.output;
  const CliRun not_urgent = ferry_cli("send --urgent udp://127.0.0.1:9 x");
  EXPECT_EQ(not_urgent.status, 1);
  EXPECT_NE(not_urgent.output.find("no urgent lane"), std::string::npos) << not_urgent.output;
  // A bare name is a mailbox, which listen does not create.
  MailboxName missing;
  const CliRun absent = ferry_cli("listen --timeout 0.1 " + missing.name);
  EXPECT_EQ(absent.status, 1);
  EXPECT_NE(absent.output.find("not found"), std::string::npos) << absent.output;
  EXPECT_FALSE(exists(missing.directory()));
}

}  // namespace
