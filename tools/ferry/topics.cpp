// ferry stat of a topic: its policy and geometry, publishers, and each
// subscriber's lag and losses (Topic::stats(); see ferry/patterns/topic.hpp).
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>

#include "commands.hpp"
#include "ferry/patterns/topic.hpp"
#include "format.hpp"

namespace ferry::cli {
namespace {

// Read-only: stat neither attaches nor changes anything, for any user's topic.
result<Topic> open_topic(const std::string& name) {
  return Topic::open(name, {.access = Access::read_only, .allow_foreign_owner = true});
}

nlohmann::json stats_json(const TopicStats& stats) {
  nlohmann::json publishers = nlohmann::json::array();
  for (const auto& publisher : stats.publishers) {
    publishers.push_back({{"pid", publisher.pid}, {"alive", publisher.alive}, {"published", publisher.published}});
  }
  nlohmann::json subscribers = nlohmann::json::array();
  for (const auto& subscriber : stats.subscribers) {
    subscribers.push_back({{"pid", subscriber.pid},
                           {"alive", subscriber.alive},
                           {"lag", subscriber.lag},
                           {"lost", subscriber.lost},
                           {"received", subscriber.received}});
  }
  return {{"name", stats.name},
          {"type", "topic"},
          {"policy", std::string(to_string(stats.policy))},
          {"capacity", stats.capacity},
          {"max_message", stats.max_message},
          {"history", stats.history},
          {"published", stats.published},
          {"publishers", publishers},
          {"subscribers", subscribers}};
}

void print_stats(const TopicStats& stats) {
  std::printf("topic        %s\n", stats.name.c_str());
  std::printf("policy       %s\n", std::string(to_string(stats.policy)).c_str());
  std::printf("capacity     %zu messages of at most %zu bytes, history %zu\n", stats.capacity, stats.max_message,
              stats.history);
  std::printf("published    %llu\n", static_cast<unsigned long long>(stats.published));
  std::size_t alive = 0;
  for (const auto& publisher : stats.publishers) alive += publisher.alive ? 1 : 0;
  std::printf("publishers   %zu (%zu alive)\n", stats.publishers.size(), alive);
  for (const auto& publisher : stats.publishers) {
    std::printf("  pid %-8d %s, %llu published\n", static_cast<int>(publisher.pid),
                publisher.alive ? "alive" : "dead", static_cast<unsigned long long>(publisher.published));
  }
  alive = 0;
  for (const auto& subscriber : stats.subscribers) alive += subscriber.alive ? 1 : 0;
  std::printf("subscribers  %zu (%zu alive)\n", stats.subscribers.size(), alive);
  for (const auto& subscriber : stats.subscribers) {
    std::printf("  pid %-8d %s, lag %llu, lost %llu, received %llu\n", static_cast<int>(subscriber.pid),
                subscriber.alive ? "alive" : "dead", static_cast<unsigned long long>(subscriber.lag),
                static_cast<unsigned long long>(subscriber.lost), static_cast<unsigned long long>(subscriber.received));
  }
}

}  // namespace

bool is_topic(const std::string& name) {
  auto segment = Segment::open(name, {.access = Access::read_only, .allow_foreign_owner = true});
  return segment && segment->info().object_type == ObjectType::topic;
}

int stat_topic(const StatOptions& options) {
  auto topic = open_topic(options.name);
  if (!topic) return fail("ferry stat", topic.error());
  const TopicStats stats = topic->stats();
  if (options.json) {
    std::cout << stats_json(stats).dump(2) << '\n';
  } else {
    print_stats(stats);
  }
  return 0;
}

}  // namespace ferry::cli
