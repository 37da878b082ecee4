// nats:// through ferry::open_sender / open_receiver, and `ferry bridge`
// between shm:// and nats:// while bridges are SIGKILLed.
#include <signal.h>
#include <sys/wait.h>

#include <nlohmann/json.hpp>

#include <map>
#include <optional>
#include <random>
#include <thread>

#include <gtest/gtest.h>

#include "ferry/messaging/endpoints.hpp"
#include "ferry/nats/mailbox.hpp"
#include "ferry/nats/topic.hpp"
#include "nats_server.hpp"

namespace ferry {
namespace {

using namespace std::chrono_literals;

using test::bytes;
using test::text;

class NatsEndpointTest : public test::NatsServerTest {};

TEST_F(NatsEndpointTest, TheSameSenderAndReceiverCodeWorksOnNats) {
  auto receiver = open_receiver(url("ep"));  // creates the mailbox
  ASSERT_TRUE(receiver) << receiver.error().message();
  auto sender = open_sender(url("ep"));
  ASSERT_TRUE(sender) << sender.error().message();
  EXPECT_EQ((*sender)->endpoint().to_string(), url("ep"));
  ASSERT_TRUE((*sender)->send(bytes("plain")));
  ASSERT_TRUE((*sender)->send(bytes("alarm"), {.urgent = true}));
  ASSERT_TRUE((*sender)->send(bytes("kept id"), {.message_id = "fixed-1"}));
  ASSERT_TRUE((*sender)->send(bytes("kept id"), {.message_id = "fixed-1"}));  // stored once

  auto first = (*receiver)->receive_for(5s);
  ASSERT_TRUE(first) << first.error().message();
  EXPECT_EQ(text(first->data()), "alarm");  // urgent goes to the top band
  EXPECT_TRUE(first->urgent());
  EXPECT_EQ(first->user(), "anonymous");
  EXPECT_FALSE(first->sender().has_value());  // no uid over a network
  std::vector<std::string> rest;
  for (int i = 0; i < 2; ++i) {
    auto message = (*receiver)->receive_for(5s);
    ASSERT_TRUE(message) << message.error().message();
    rest.push_back(text(message->data()) + "/" + message->message_id().substr(0, 5));
  }
  EXPECT_EQ(rest, (std::vector<std::string>{"plain/anony", "kept id/fixed"}));
  auto none = (*receiver)->try_receive();
  ASSERT_TRUE(none);
  EXPECT_FALSE(none->has_value());

  EXPECT_EQ(open_sender(url("nobody-made-it")).error().code(), errc::not_found);
  EXPECT_EQ(open_sender("nats://127.0.0.1:1").error().code(), errc::invalid_argument);  // no name
}

TEST_F(NatsEndpointTest, AHeldMessageStaysUntilAcked) {
  ASSERT_TRUE(nats::Mailbox::create(url("held"), {.lease = 60s}));
  auto receiver = open_receiver(url("held"));
  auto sender = open_sender(url("held"));
  ASSERT_TRUE(receiver && sender);
  ASSERT_TRUE((*sender)->send(bytes("one")));
  {
    auto held = (*receiver)->receive_held(detail::WaitLimit::after(5s));
    ASSERT_TRUE(held) << held.error().message();
    EXPECT_EQ(text(held->message().data()), "one");
  }  // dropped: given back
  auto again = (*receiver)->receive_held(detail::WaitLimit::after(5s));
  ASSERT_TRUE(again) << again.error().message();
  EXPECT_EQ(text(again->message().data()), "one");
  ASSERT_TRUE(again->ack());
  auto none = (*receiver)->receive_held(detail::WaitLimit::none());
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().code(), errc::would_block);
}

// shm://src -> bridge -> nats://mid -> bridge -> shm://dst, with the bridges
// SIGKILLed and restarted while messages flow: every message arrives.
TEST_F(NatsEndpointTest, BridgesKilledAtAnyPointLoseNothing) {
  const std::size_t count = test::scaled(2000);
  const std::string source = test::unique_name("bridge-src");
  const std::string destination = test::unique_name("bridge-dst");
  auto source_box = Mailbox::create(source);
  auto destination_box = Mailbox::create(destination);
  ASSERT_TRUE(source_box && destination_box);
  // A short lease: a message a killed bridge held comes back soon.
  ASSERT_TRUE(nats::Mailbox::create(url("mid"), {.lease = 1s}));

  const std::vector<std::string> inbound = {"bridge", "shm://" + source, url("mid")};
  const std::vector<std::string> outbound = {"bridge", url("mid"), "shm://" + destination};
  std::optional<test::Child> bridges[2];
  bridges[0].emplace(test::Child::exec(FERRY_CLI, inbound));
  bridges[1].emplace(test::Child::exec(FERRY_CLI, outbound));

  std::map<std::string, int> received;
  std::size_t duplicates = 0;
  const auto drain = [&](steady_clock::duration wait) {
    for (;;) {
      auto message = destination_box->receive_for(wait);
      if (!message) return;
      if (++received[text(message->data())] > 1) ++duplicates;
      wait = 0ms;
    }
  };

  std::mt19937 random(7);
  std::size_t sent = 0;
  std::size_t kills = 0;
  while (sent < count) {
    const std::size_t burst = std::min<std::size_t>(count - sent, 1 + random() % 200);
    for (std::size_t i = 0; i < burst; ++i, ++sent) {
      ASSERT_TRUE(source_box->send(bytes("m" + std::to_string(sent))));
    }
    // Kill one bridge mid-flow and start it again.
    std::this_thread::sleep_for(std::chrono::milliseconds(random() % 100));
    const std::size_t victim = random() % 2;
    bridges[victim]->kill(SIGKILL);
    EXPECT_EQ(bridges[victim]->wait(), 128 + SIGKILL);
    bridges[victim].emplace(test::Child::exec(FERRY_CLI, victim == 0 ? inbound : outbound));
    ++kills;
    drain(0ms);
  }
  const auto until = steady_clock::now() + 120s;
  while (received.size() < count && steady_clock::now() < until) drain(200ms);
  for (auto& bridge : bridges) bridge->kill(SIGTERM);

  EXPECT_EQ(received.size(), count) << "after " << kills << " kills, " << duplicates << " duplicates";
  for (std::size_t i = 0; i < count; ++i) EXPECT_TRUE(received.contains("m" + std::to_string(i))) << i;
  RecordProperty("kills", static_cast<int>(kills));
  RecordProperty("duplicates", static_cast<int>(duplicates));
  (void)Mailbox::destroy(source);
  (void)Mailbox::destroy(destination);
}

// The ferry binary's output (stdout and stderr) and exit status.
std::pair<int, std::string> ferry_cli(const std::string& arguments) {
  std::string command = FERRY_CLI;
  command.append(" ").append(arguments).append(" 2>&1");
  FILE* pipe = ::popen(command.c_str(), "r");
  std::string output;
  char buffer[4096];
  for (std::size_t n = 0; pipe != nullptr && (n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0;) output.append(buffer, n);
  const int status = pipe != nullptr ? ::pclose(pipe) : -1;
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, output};
}

TEST_F(NatsEndpointTest, TheFerryToolSendsReceivesListsAndShowsNatsMailboxes) {
  ASSERT_TRUE(nats::Mailbox::create(url("cli"), {.lease = 60s}));
  auto [sent_status, sent] = ferry_cli("send " + url("cli") + " --priority 2 first second");
  ASSERT_EQ(sent_status, 0) << sent;
  auto [received_status, received] = ferry_cli("recv --json " + url("cli"));
  ASSERT_EQ(received_status, 0) << received;
  const auto first = nlohmann::json::parse(received.substr(received.find('{')));
  EXPECT_EQ(first["data"], "first");
  EXPECT_EQ(first["priority"], 2);
  EXPECT_EQ(first["user"], "anonymous");
  EXPECT_FALSE(first["message_id"].get<std::string>().empty());

  // One message left, leased by a receiver that gives it back: redelivered once.
  auto receiver = nats::Mailbox::open(url("cli"));
  ASSERT_TRUE(receiver);
  auto held = receiver->receive_for(5s);
  ASSERT_TRUE(held);
  ASSERT_TRUE(held->nack());
  held = receiver->receive_for(5s);
  ASSERT_TRUE(held);

  auto [stat_status, stat] = ferry_cli("stat --json " + url("cli"));
  ASSERT_EQ(stat_status, 0) << stat;
  const auto shown = nlohmann::json::parse(stat);
  EXPECT_EQ(shown["stored"], 1);
  EXPECT_EQ(shown["leased"], 1);
  EXPECT_EQ(shown["redelivered"], 1);
  EXPECT_EQ(shown["bands"][2]["leased"], 1);

  // A history topic is listed beside the mailbox; stat finds it by name.
  auto topic = nats::Topic::create(url("ticks"), {.history = 2});
  ASSERT_TRUE(topic) << topic.error().message();
  for (const char* tick : {"1", "2", "3"}) ASSERT_TRUE(topic->publish(bytes(tick)));

  auto [list_status, list] = ferry_cli("ls --json " + server_->url());
  ASSERT_EQ(list_status, 0) << list;
  const auto listed = nlohmann::json::parse(list);
  ASSERT_EQ(listed.size(), 2u) << list;
  EXPECT_EQ(listed[0]["name"], "cli");
  EXPECT_EQ(listed[0]["kind"], "nats-mailbox");
  EXPECT_EQ(listed[1]["name"], "ticks");
  EXPECT_EQ(listed[1]["kind"], "nats-topic");
  EXPECT_EQ(listed[1]["stored"], 2);

  auto [topic_status, topic_stat] = ferry_cli("stat --json " + url("ticks"));
  ASSERT_EQ(topic_status, 0) << topic_stat;
  const auto topic_shown = nlohmann::json::parse(topic_stat);
  EXPECT_EQ(topic_shown["history"], 2);
  EXPECT_EQ(topic_shown["first_sequence"], 2);
  EXPECT_EQ(topic_shown["last_sequence"], 3);
  auto [table_status, table] = ferry_cli("ls " + server_->url());
  ASSERT_EQ(table_status, 0) << table;
  EXPECT_NE(table.find("nats-topic"), std::string::npos) << table;

  auto [missing_status, missing] = ferry_cli("stat " + url("nope"));
  EXPECT_EQ(missing_status, 1);
  EXPECT_NE(missing.find("not found"), std::string::npos) << missing;
}

}  // namespace
}  // namespace ferry
