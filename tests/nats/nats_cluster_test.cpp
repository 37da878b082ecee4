// A replicated (R3) nats:// Mailbox on a 3-node JetStream cluster on
// loopback: the stream's leader is SIGKILLed while two sender processes
// publish and two receiver processes drain.
#include <signal.h>

#include <fstream>
#include <map>
#include <set>
#include <thread>

#include <gtest/gtest.h>

#include "ferry/nats/mailbox.hpp"
#include "nats_server.hpp"

namespace ferry::nats {
namespace {

using namespace std::chrono_literals;

std::set<std::string> ids_in(const std::string& path, std::size_t* lines = nullptr) {
  std::set<std::string> ids;
  std::ifstream in(path);
  std::string id;
  std::uint64_t number = 0;
  std::size_t count = 0;
  while (in >> id >> number) {
    ids.insert(id);
    ++count;
  }
  if (lines != nullptr) *lines = count;
  return ids;
}

TEST(NatsClusterMailbox, KillingTheStreamLeaderLosesNoAcknowledgedMessage) {
  auto cluster = test::NatsCluster::start(3);
  ASSERT_NE(cluster, nullptr);
  ASSERT_TRUE(cluster->wait_jetstream_ready());
  // Every node in the address: clients fail over to the survivors.
  std::string servers;
  for (int i = 0; i < cluster->size(); ++i) {
    servers += (i ? "," : "") + cluster->node(i).url().substr(std::string_view("nats://").size());
  }
  const std::string url = "nats://" + servers + "/replicated?replicas=3&timeout_ms=5000";  // room for a busy cluster (sanitizer builds)
  auto mailbox = Mailbox::create(url, {.lease = 2s});
  ASSERT_TRUE(mailbox) << mailbox.error().message();
  auto before = mailbox->stats();
  ASSERT_TRUE(before) << before.error().message();
  ASSERT_EQ(before->replicas, 3);
  const int leader = cluster->index_of(before->leader);
  ASSERT_GE(leader, 0) << "leader '" << before->leader << "'";

  const std::size_t per_sender = test::scaled(1000);
  test::TempDir files;
  std::vector<test::Child> senders;
  std::vector<test::Child> receivers;
  for (int i = 0; i < 2; ++i) {
    const std::string tag = "s" + std::to_string(i);
    senders.push_back(test::Child::exec(
        FERRY_NATS_PEER, {"send", url, std::to_string(per_sender), tag, files.file("sent-" + tag)}));
    receivers.push_back(
        test::Child::exec(FERRY_NATS_PEER, {"drain-until", url, files.file("got-" + std::to_string(i)), files.file("stop")}));
  }
  // Kill the leader once traffic is flowing.
  const auto flowing = steady_clock::now() + 30s;
  while (ids_in(files.file("sent-s0")).size() + ids_in(files.file("sent-s1")).size() < per_sender / 2 &&
         steady_clock::now() < flowing) {
    std::this_thread::sleep_for(5ms);
  }
  cluster->node(leader).kill();

  for (auto& sender : senders) EXPECT_EQ(sender.wait_for(120s), 0) << "a sender failed or hung";
  std::set<std::string> acknowledged = ids_in(files.file("sent-s0"));
  for (const auto& id : ids_in(files.file("sent-s1"))) acknowledged.insert(id);

  // Wait until the receivers together have every acknowledged message.
  std::set<std::string> received;
  std::size_t deliveries = 0;
  const auto until = steady_clock::now() + 120s;
  for (;;) {
    received.clear();
    deliveries = 0;
    for (int i = 0; i < 2; ++i) {
      std::size_t lines = 0;
      for (const auto& id : ids_in(files.file("got-" + std::to_string(i)), &lines)) received.insert(id);
      deliveries += lines;
    }
    const bool complete = std::includes(received.begin(), received.end(), acknowledged.begin(), acknowledged.end());
    if (complete || steady_clock::now() > until) break;
    std::this_thread::sleep_for(50ms);
  }
  std::ofstream(files.file("stop")) << "stop";
  for (auto& receiver : receivers) EXPECT_EQ(receiver.wait_for(60s), 0);

  EXPECT_EQ(acknowledged.size(), 2 * per_sender) << "senders retry through the failover: every send is confirmed";
  std::vector<std::string> missing;
  std::set_difference(acknowledged.begin(), acknowledged.end(), received.begin(), received.end(),
                      std::back_inserter(missing));
  EXPECT_TRUE(missing.empty()) << missing.size() << " acknowledged messages never received, e.g. " << missing.front();
  // Duplicates are allowed (at-least-once) and told apart by id.
  RecordProperty("duplicates", static_cast<int>(deliveries - received.size()));
  std::printf("leader n%d killed; %zu acknowledged, %zu received, %zu duplicate deliveries\n", leader,
              acknowledged.size(), received.size(), deliveries - received.size());
}

}  // namespace
}  // namespace ferry::nats
