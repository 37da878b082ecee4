// ferry ls and ferry stat on a topic: its publishers, and each subscriber's
// lag and losses, as the built binary prints them.
#include <unistd.h>

#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cli_support.hpp"
#include "ferry/ferry.hpp"
#include "ferry_test.hpp"

namespace {

using ferry::SlowSubscriber;
using ferry::Topic;
using namespace ferry::test::cli;

struct TopicName {
  std::string name = ferry::test::unique_name("topic");
  ~TopicName() { (void)Topic::destroy(name); }
};

// A topic (drop_oldest, capacity 4) with one publisher that published 10
// messages, a subscriber that read the last 2 (and lost 6 before them), and
// one that read nothing (lag 10).
struct Scene {
  TopicName n;
  std::optional<Topic> topic;
  std::optional<ferry::TopicPublisher> publisher;
  std::optional<ferry::TopicSubscriber> reader, idle;

  Scene() {
    auto made = Topic::create(n.name, {.capacity = 4, .max_message = 64, .policy = SlowSubscriber::drop_oldest,
                                       .history = 2});
    EXPECT_TRUE(made) << made.error().message();
    topic.emplace(std::move(*made));
    publisher.emplace(std::move(*topic->publisher()));
    reader.emplace(std::move(*topic->subscribe()));
    idle.emplace(std::move(*topic->subscribe()));
    const std::string message = "tick";
    for (int i = 0; i < 10; ++i) EXPECT_TRUE(publisher->publish(std::as_bytes(std::span(message))));
    std::vector<std::byte> buffer(64);
    auto first = reader->receive(buffer);
    EXPECT_TRUE(first && first->lost == 6);
    EXPECT_TRUE(reader->receive(buffer));
  }
};

TEST(CliTopic, LsShowsPublishersSubscribersLagAndLosses) {
  Scene scene;
  const auto objects = list_json();
  const auto* entry = find(objects, scene.n.name);
  ASSERT_NE(entry, nullptr) << objects.dump(2);
  EXPECT_EQ((*entry)["type"], "topic");
  const auto& details = (*entry)["details"];
  EXPECT_EQ(details["policy"], "drop_oldest");
  EXPECT_EQ(details["capacity"], "4");
  EXPECT_EQ(details["max_message"], "64");
  EXPECT_EQ(details["history"], "2");
  EXPECT_EQ(details["published"], "10");
  EXPECT_EQ(details["publishers"], "1");
  EXPECT_EQ(details["publisher_pids"], std::to_string(::getpid()));
  EXPECT_EQ(details["subscribers"], "2");
  EXPECT_EQ(details["max_lag"], "10");
  EXPECT_EQ(details["lost"], "6");
  const std::string pid = std::to_string(::getpid());
  EXPECT_EQ(details["subscriber.0"], "pid " + pid + ", lag 2, lost 6");
  EXPECT_EQ(details["subscriber.1"], "pid " + pid + ", lag 10, lost 0");

  const CliRun table = ferry_cli("ls");
  EXPECT_EQ(table.status, 0) << table.output;
  const auto line_start = table.output.find(scene.n.name);
  ASSERT_NE(line_start, std::string::npos) << table.output;
  const std::string line = table.output.substr(line_start, table.output.find('\n', line_start) - line_start);
  EXPECT_NE(line.find("topic"), std::string::npos) << line;
  EXPECT_NE(line.find("subscriber.0=pid " + pid + ", lag 2, lost 6"), std::string::npos) << line;
}

TEST(CliTopic, StatShowsEachPublisherAndSubscriber) {
  Scene scene;
  const CliRun run = ferry_cli("stat --json " + scene.n.name);
  ASSERT_EQ(run.status, 0) << run.output;
  const auto stats = nlohmann::json::parse(run.output);
  EXPECT_EQ(stats["name"], scene.n.name);
  EXPECT_EQ(stats["type"], "topic");
  EXPECT_EQ(stats["policy"], "drop_oldest");
  EXPECT_EQ(stats["capacity"], 4);
  EXPECT_EQ(stats["max_message"], 64);
  EXPECT_EQ(stats["history"], 2);
  EXPECT_EQ(stats["published"], 10);
  EXPECT_EQ(stats["publishers"],
            nlohmann::json::array({{{"pid", ::getpid()}, {"alive", true}, {"published", 10}}}));
  EXPECT_EQ(stats["subscribers"],
            nlohmann::json::array({{{"pid", ::getpid()}, {"alive", true}, {"lag", 2}, {"lost", 6}, {"received", 2}},
                                   {{"pid", ::getpid()}, {"alive", true}, {"lag", 10}, {"lost", 0}, {"received", 0}}}));

  const CliRun text = ferry_cli("stat " + scene.n.name);
  ASSERT_EQ(text.status, 0) << text.output;
  EXPECT_NE(text.output.find("topic        " + scene.n.name), std::string::npos) << text.output;
  EXPECT_NE(text.output.find("policy       drop_oldest"), std::string::npos) << text.output;
  EXPECT_NE(text.output.find("publishers   1 (1 alive)"), std::string::npos) << text.output;
  EXPECT_NE(text.output.find("subscribers  2 (2 alive)"), std::string::npos) << text.output;
  EXPECT_NE(text.output.find("alive, lag 2, lost 6, received 2"), std::string::npos) << text.output;
  EXPECT_NE(text.output.find("alive, lag 10, lost 0, received 0"), std::string::npos) << text.output;

  // stat maps it read-only: it neither attaches nor changes a thing.
  EXPECT_EQ(scene.topic->stats().subscribers.size(), 2u);
}

}  // namespace
