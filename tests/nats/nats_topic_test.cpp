// nats:// Topic: core subjects (at-most-once) and history on a limits stream.
#include "ferry/nats/topic.hpp"

#include <algorithm>

#include <gtest/gtest.h>

#include "nats_server.hpp"

namespace ferry::nats {
namespace {

using namespace std::chrono_literals;

using test::bytes;
using test::text;

class NatsTopicTest : public test::NatsServerTest {};

TEST_F(NatsTopicTest, EverySubscriberGetsEveryMessageInOrderAndLateOnesOnlyLaterOnes) {
  auto topic = Topic::open(url("ticks"));  // a core topic needs nothing on the server
  ASSERT_TRUE(topic) << topic.error().message();
  EXPECT_EQ(topic->history(), 0u);
  auto first = Topic::open(url("ticks"))->subscribe();
  auto second = Topic::open(url("ticks"))->subscribe();
  ASSERT_TRUE(first && second);
  const std::size_t count = test::scaled(1000);
  for (std::size_t i = 0; i < count; ++i) ASSERT_TRUE(topic->publish(bytes(std::to_string(i))));
  ASSERT_TRUE(topic->flush());
  for (auto* subscriber : {&*first, &*second}) {
    for (std::size_t i = 0; i < count; ++i) {
      auto message = subscriber->receive_for(5s);
      ASSERT_TRUE(message) << message.error().message();
      ASSERT_EQ(text(message->data()), std::to_string(i));
      EXPECT_EQ(message->sender(), "anonymous");
      EXPECT_EQ(message->sequence(), 0u);
    }
    EXPECT_EQ(subscriber->dropped(), 0u);
  }
  // Nothing is stored: a subscriber from now on sees only what comes next.
  auto late = topic->subscribe();
  ASSERT_TRUE(late);
  EXPECT_FALSE(late->try_receive()->has_value());
  ASSERT_TRUE(topic->publish(bytes("next")));
  auto next = late->receive_for(5s);
  ASSERT_TRUE(next) << next.error().message();
  EXPECT_EQ(text(next->data()), "next");
  EXPECT_EQ(late->receive_for(100ms).error().code(), errc::timed_out);
}

TEST_F(NatsTopicTest, AHistoryTopicGivesALateSubscriberTheLastMessagesThenLiveOnes) {
  auto topic = Topic::create(url("prices"), {.history = 5});
  ASSERT_TRUE(topic) << topic.error().message();
  for (int i = 0; i < 8; ++i) ASSERT_TRUE(topic->publish(bytes("p" + std::to_string(i))));
  auto opened = Topic::open(url("prices"));
  ASSERT_TRUE(opened);
  EXPECT_EQ(opened->history(), 5u);
  auto subscriber = opened->subscribe();
  ASSERT_TRUE(subscriber) << subscriber.error().message();
  for (int i = 3; i < 8; ++i) {
    auto message = subscriber->receive_for(5s);
    ASSERT_TRUE(message) << message.error().message();
    EXPECT_EQ(text(message->data()), "p" + std::to_string(i));
    EXPECT_EQ(message->sequence(), static_cast<std::uint64_t>(i + 1));
  }
  ASSERT_TRUE(topic->publish(bytes("live")));
  auto live = subscriber->receive_for(5s);
  ASSERT_TRUE(live) << live.error().message();
  EXPECT_EQ(text(live->data()), "live");
  EXPECT_EQ(live->sequence(), 9u);

  // What the server holds: the last 5 of 9, one subscriber reading them.
  auto stats = topic->stats();
  ASSERT_TRUE(stats) << stats.error().message();
  EXPECT_EQ(stats->stream, "FERRY_TOPIC_prices");
  EXPECT_EQ(stats->history, 5u);
  EXPECT_EQ(stats->stored, 5u);
  EXPECT_EQ(stats->first_sequence, 5u);
  EXPECT_EQ(stats->last_sequence, 9u);
  EXPECT_EQ(stats->subscribers, 1u);
  auto connection = nats::Connection::connect(*nats::Address::parse(url("")));
  ASSERT_TRUE(connection) << connection.error().message();
  ASSERT_TRUE(Topic::open(*connection, "headlines"));  // a core topic: nothing on the server
  EXPECT_EQ(Topic::open(*connection, "headlines")->stats().error().code(), errc::not_found);
  EXPECT_EQ(Topic::list(*connection).value(), std::vector<std::string>{"prices"});

  EXPECT_EQ(Topic::create(url("prices"), {.history = 5}).error().code(), errc::already_exists);
  const std::string too_large(2'000'000, 'x');
  EXPECT_EQ(topic->publish(bytes(too_large)).error().code(), errc::invalid_argument);
  ASSERT_TRUE(Topic::destroy(url("prices")));
  EXPECT_EQ(Topic::destroy(url("prices")).error().code(), errc::not_found);
  EXPECT_EQ(Topic::open(url("prices"))->history(), 0u);
}

test::NatsUser topic_user(const std::string& name) {
  return {.name = name,
          .password = name + "-pw",
          .publish = {"ferry.topic.*." + name, "$JS.API.>", "_INBOX.>"},
          .subscribe = {}};
}

TEST(NatsTopicIdentity, SubscribersSeeTheAttestedPublisherAndImpostorsAreRefused) {
  auto server = test::NatsServer::start({.users = {topic_user("alice"), topic_user("bob")}});
  ASSERT_NE(server, nullptr);
  const std::string host = server->url().substr(std::string_view("nats://").size());
  const auto as = [&](std::string_view user, std::string_view options = "") {
    return "nats://" + std::string(user) + ":" + std::string(user) + "-pw@" + host + "/news" +
           (options.empty() ? "" : "?" + std::string(options));
  };
  auto alice = Topic::open(as("alice"));
  auto bob = Topic::open(as("bob"));
  auto impostor = Topic::open(as("bob", "as=alice"));
  ASSERT_TRUE(alice && bob && impostor);
  auto subscriber = alice->subscribe();
  ASSERT_TRUE(subscriber);
  ASSERT_TRUE(alice->publish(bytes("a")));
  ASSERT_TRUE(bob->publish(bytes("b")));
  ASSERT_TRUE(impostor->publish(bytes("forged")));  // refused by the server, reported later
  EXPECT_EQ(impostor->flush().error().code(), errc::permission_denied);
  std::vector<std::string> seen;
  while (auto message = subscriber->receive_for(300ms)) seen.push_back(text(message->data()) + "/" + message->sender());
  std::sort(seen.begin(), seen.end());  // two connections: no order between them
  EXPECT_EQ(seen, (std::vector<std::string>{"a/alice", "b/bob"}));
}

}  // namespace
}  // namespace ferry::nats
