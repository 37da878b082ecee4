// ferry ls nats://… and ferry stat nats://…/NAME: the ferry mailboxes on
// NATS JetStream servers (ferry/nats/mailbox.hpp), as the servers report them.
#include <cstdio>
#include <iostream>

#include "commands.hpp"
#include "ferry/nats/mailbox.hpp"
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

result<nats::Connection> connect(const std::string& text) {
  auto address = nats::Address::parse(text);
  if (!address) return std::move(address).error();
  return nats::Connection::connect(*address);
}

}  // namespace

bool is_nats(const std::string& target) { return target.starts_with("nats://"); }

int list_nats(const std::string& servers, bool json) {
  auto connection = connect(servers);
  if (!connection) return fail("ferry ls", connection.error());
  auto names = nats::Mailbox::list(*connection);
  if (!names) return fail("ferry ls", names.error());
  nlohmann::json listed = nlohmann::json::array();
  for (const std::string& name : *names) {
    auto mailbox = nats::Mailbox::open(*connection, name);
    auto stats = mailbox ? mailbox->stats() : result<nats::MailboxStats>(mailbox.error());
    if (!stats) return fail("ferry ls", stats.error());
    listed.push_back(stats_json(*stats));
  }
  if (json) {
    std::cout << listed.dump() << '\n';
    return 0;
  }
  std::printf("%-24s %-13s %8s %8s %8s %12s %8s  %s\n", "NAME", "KIND", "STORED", "WAITING", "LEASED", "REDELIVERED",
              "REPLICAS", "LEADER");
  for (const auto& mailbox : listed) {
    std::printf("%-24s %-13s %8llu %8llu %8llu %12llu %8d  %s\n", mailbox["name"].get<std::string>().c_str(),
                "nats-mailbox", mailbox["stored"].get<unsigned long long>(), mailbox["waiting"].get<unsigned long long>(),
                mailbox["leased"].get<unsigned long long>(), mailbox["redelivered"].get<unsigned long long>(),
                mailbox["replicas"].get<int>(), mailbox["leader"].get<std::string>().c_str());
  }
  return 0;
}

int stat_nats(const StatOptions& options) {
  auto mailbox = nats::Mailbox::open(options.name);
  if (!mailbox) return fail("ferry stat", mailbox.error());
  auto stats = mailbox->stats();
  if (!stats) return fail("ferry stat", stats.error());
  const nlohmann::json fields = stats_json(*stats);
  if (options.json) {
    std::cout << fields.dump(2) << '\n';
    return 0;
  }
  std::printf("nats mailbox %s (stream %s)\n", stats->name.c_str(), stats->stream.c_str());
  std::printf("  stored       %llu messages, %s, last sequence %llu\n", static_cast<unsigned long long>(stats->stored),
              human_size(stats->bytes).c_str(), static_cast<unsigned long long>(stats->last_sequence));
  std::printf("  replicas     %d%s%s\n", stats->replicas, stats->leader.empty() ? "" : ", leader ",
              stats->leader.c_str());
  std::printf("  band  waiting   leased  redelivered\n");
  for (std::size_t band = stats->levels.size(); band-- > 0;) {
    const nats::LevelStats& level = stats->levels[band];
    std::printf("  %4zu %8llu %8llu %12llu\n", band, static_cast<unsigned long long>(level.waiting),
                static_cast<unsigned long long>(level.leased), static_cast<unsigned long long>(level.redelivered));
  }
  return 0;
}

}  // namespace ferry::cli
