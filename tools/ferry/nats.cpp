// ferry ls nats://… and ferry stat nats://…/NAME: the ferry mailboxes and
// history topics on NATS JetStream servers (ferry/nats/mailbox.hpp,
// topic.hpp), as the servers report them. A topic without history keeps
// nothing on the servers, so there is nothing of it to show.
#include <cstdio>
#include <iostream>

#include "commands.hpp"
#include "ferry/nats/mailbox.hpp"
#include "ferry/nats/topic.hpp"
#include "format.hpp"

namespace ferry::cli {
namespace {

nlohmann::json stats_json(const nats::MailboxStats& stats) {
  nlohmann::json bands = nlohmann::json::array();
  std::uint64_t waiting = 0;
  std::uint64_t leased = 0;
  std::uint64_t redelivered = 0;
  for (const nats::LevelStats& band : stats.levels) {
    bands.push_back({{"waiting", band.waiting}, {"leased", band.leased}, {"redelivered", band.redelivered}});
    waiting += band.waiting;
    leased += band.leased;
    redelivered += band.redelivered;
  }
  return {{"name", stats.name},       {"kind", "nats-mailbox"},     {"stream", stats.stream},
          {"stored", stats.stored},   {"bytes", stats.bytes},       {"last_sequence", stats.last_sequence},
          {"waiting", waiting},       {"leased", leased},           {"redelivered", redelivered},
          {"replicas", stats.replicas}, {"leader", stats.leader},   {"bands", bands}};
}

nlohmann::json stats_json(const nats::TopicStats& stats) {
  return {{"name", stats.name},
          {"kind", "nats-topic"},
          {"stream", stats.stream},
          {"history", stats.history},
          {"stored", stats.stored},
          {"bytes", stats.bytes},
          {"first_sequence", stats.first_sequence},
          {"last_sequence", stats.last_sequence},
          {"subscribers", stats.subscribers},
          {"replicas", stats.replicas},
          {"leader", stats.leader}};
}

template <class Object>
result<nlohmann::json> read_stats(const nats::Connection& connection, const std::string& name) {
  auto object = Object::open(connection, name);
  if (!object) return std::move(object).error();
  auto stats = object->stats();
  if (!stats) return std::move(stats).error();
  return stats_json(*stats);
}

// Appends the stats of every Object (Mailbox or Topic) on the servers.
template <class Object>
result<void> list_into(const nats::Connection& connection, nlohmann::json& listed) {
  auto names = Object::list(connection);
  if (!names) return std::move(names).error();
  for (const std::string& name : *names) {
    auto stats = read_stats<Object>(connection, name);
    if (!stats) return std::move(stats).error();
    listed.push_back(std::move(*stats));
  }
  return {};
}

result<nats::Connection> connect(const std::string& text) {
  auto address = nats::Address::parse(text);
  if (!address) return std::move(address).error();
  return nats::Connection::connect(*address);
}

// A count column, "-" where the kind has no such count.
std::string count(const nlohmann::json& object, const char* field) {
  return object.contains(field) ? std::to_string(object[field].get<unsigned long long>()) : "-";
}

}  // namespace

bool is_nats(const std::string& target) { return target.starts_with("nats://"); }

int list_nats(const std::string& servers, bool json) {
  auto connection = connect(servers);
  if (!connection) return fail("ferry ls", connection.error());
  nlohmann::json listed = nlohmann::json::array();
  if (auto mailboxes = list_into<nats::Mailbox>(*connection, listed); !mailboxes) {
    return fail("ferry ls", mailboxes.error());
  }
  if (auto topics = list_into<nats::Topic>(*connection, listed); !topics) return fail("ferry ls", topics.error());
  if (json) {
    std::cout << listed.dump() << '\n';
    return 0;
  }
  std::printf("%-24s %-13s %8s %8s %8s %12s %12s %8s  %s\n", "NAME", "KIND", "STORED", "WAITING", "LEASED",
              "REDELIVERED", "SUBSCRIBERS", "REPLICAS", "LEADER");
  for (const auto& object : listed) {
    std::printf("%-24s %-13s %8s %8s %8s %12s %12s %8d  %s\n", object["name"].get<std::string>().c_str(),
                object["kind"].get<std::string>().c_str(), count(object, "stored").c_str(),
                count(object, "waiting").c_str(), count(object, "leased").c_str(),
                count(object, "redelivered").c_str(), count(object, "subscribers").c_str(),
                object["replicas"].get<int>(), object["leader"].get<std::string>().c_str());
  }
  return 0;
}

namespace {

int print_mailbox(const nlohmann::json& stats) {
  std::printf("nats mailbox %s (stream %s)\n", stats["name"].get<std::string>().c_str(),
              stats["stream"].get<std::string>().c_str());
  std::printf("  stored       %s messages, %s, last sequence %s\n", count(stats, "stored").c_str(),
              human_size(stats["bytes"].get<std::size_t>()).c_str(), count(stats, "last_sequence").c_str());
  const std::string leader = stats["leader"];
  std::printf("  replicas     %d%s%s\n", stats["replicas"].get<int>(), leader.empty() ? "" : ", leader ",
              leader.c_str());
  std::printf("  band  waiting   leased  redelivered\n");
  const nlohmann::json& bands = stats["bands"];
  for (std::size_t band = bands.size(); band-- > 0;) {
    std::printf("  %4zu %8s %8s %12s\n", band, count(bands[band], "waiting").c_str(),
                count(bands[band], "leased").c_str(), count(bands[band], "redelivered").c_str());
  }
  return 0;
}

int print_topic(const nlohmann::json& stats) {
  std::printf("nats topic %s (stream %s, history %s)\n", stats["name"].get<std::string>().c_str(),
              stats["stream"].get<std::string>().c_str(), count(stats, "history").c_str());
  std::printf("  stored       %s messages, %s, sequences %s to %s\n", count(stats, "stored").c_str(),
              human_size(stats["bytes"].get<std::size_t>()).c_str(), count(stats, "first_sequence").c_str(),
              count(stats, "last_sequence").c_str());
  std::printf("  subscribers  %s reading the history\n", count(stats, "subscribers").c_str());
  const std::string leader = stats["leader"];
  std::printf("  replicas     %d%s%s\n", stats["replicas"].get<int>(), leader.empty() ? "" : ", leader ",
              leader.c_str());
  return 0;
}

}  // namespace

// NAME is a mailbox, else a history topic.
int stat_nats(const StatOptions& options) {
  auto address = nats::Address::parse(options.name);
  if (!address) return fail("ferry stat", address.error());
  auto connection = nats::Connection::connect(*address);
  if (!connection) return fail("ferry stat", connection.error());
  auto stats = read_stats<nats::Mailbox>(*connection, address->name);
  if (!stats && stats.error().code() == errc::not_found) {
    auto topic = read_stats<nats::Topic>(*connection, address->name);
    if (topic || topic.error().code() != errc::not_found) {
      stats = std::move(topic);
    } else {
      stats = error(errc::not_found, address->to_string(),
                    "no mailbox (stream FERRY_MBX_" + address->name + ") and no history topic (stream FERRY_TOPIC_" +
                        address->name + ") of that name");
    }
  }
  if (!stats) return fail("ferry stat", stats.error());
  if (options.json) {
    std::cout << stats->dump(2) << '\n';
    return 0;
  }
  return (*stats)["kind"] == "nats-mailbox" ? print_mailbox(*stats) : print_topic(*stats);
}

}  // namespace ferry::cli
