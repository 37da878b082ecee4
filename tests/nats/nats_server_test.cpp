// The nats-server fixture itself: real servers start, serve core NATS and
// JetStream, enforce users' permissions, keep streams across kill + restart,
// form a cluster, and leave no process behind.
#include "nats_server.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nats/nats.h>

namespace ferry::test {
namespace {

// Owning nats.c handles, so a failed assertion leaks nothing under ASan.
template <auto destroy>
struct Destroy {
  template <class T>
  void operator()(T* handle) const {
    destroy(handle);
  }
};
using Connection = std::unique_ptr<natsConnection, Destroy<natsConnection_Destroy>>;
using JetStream = std::unique_ptr<jsCtx, Destroy<jsCtx_Destroy>>;
using Subscription = std::unique_ptr<natsSubscription, Destroy<natsSubscription_Destroy>>;
using Message = std::unique_ptr<natsMsg, Destroy<natsMsg_Destroy>>;
using StreamInfo = std::unique_ptr<jsStreamInfo, Destroy<jsStreamInfo_Destroy>>;
using PubAck = std::unique_ptr<jsPubAck, Destroy<jsPubAck_Destroy>>;
using Options = std::unique_ptr<natsOptions, Destroy<natsOptions_Destroy>>;

/// Connects (as `user` if given) without reconnecting, so a connection to a
/// stopped server fails instead of retrying.
natsStatus connect(Connection& connection, const std::string& urls,
                   const NatsUser* user = nullptr) {
  natsOptions* raw_options = nullptr;
  natsStatus status = natsOptions_Create(&raw_options);
  const Options options(raw_options);
  // natsOptions_SetURL takes a single URL; a list goes to SetServers.
  std::vector<std::string> servers;
  std::istringstream list(urls);
  for (std::string server; std::getline(list, server, ',');) servers.push_back(server);
  std::vector<const char*> server_pointers;
  for (const std::string& server : servers) server_pointers.push_back(server.c_str());
  if (status == NATS_OK) {
    status = natsOptions_SetServers(options.get(), server_pointers.data(),
                                    static_cast<int>(server_pointers.size()));
  }
  if (status == NATS_OK) status = natsOptions_SetTimeout(options.get(), 2000);
  if (status == NATS_OK) status = natsOptions_SetAllowReconnect(options.get(), false);
  if (status == NATS_OK && user) {
    status = natsOptions_SetUserInfo(options.get(), user->name.c_str(), user->password.c_str());
  }
  natsConnection* raw_connection = nullptr;
  if (status == NATS_OK) status = natsConnection_Connect(&raw_connection, options.get());
  connection.reset(raw_connection);
  return status;
}

JetStream jetstream(natsConnection* connection) {
  jsCtx* js = nullptr;
  jsOptions options;
  jsOptions_Init(&options);
  options.Wait = 5000;
  EXPECT_EQ(natsConnection_JetStream(&js, connection, &options), NATS_OK);
  return JetStream(js);
}

Subscription subscribe(natsConnection* connection, const char* subject) {
  natsSubscription* subscription = nullptr;
  EXPECT_EQ(natsConnection_SubscribeSync(&subscription, connection, subject), NATS_OK);
  return Subscription(subscription);
}

/// The next message, or null (with the status in `status`) after `timeout_ms`.
Message next_message(natsSubscription* subscription, int64_t timeout_ms,
                     natsStatus* status = nullptr) {
  natsMsg* message = nullptr;
  const natsStatus result = natsSubscription_NextMsg(&message, subscription, timeout_ms);
  if (status) *status = result;
  return Message(message);
}

std::string data(const natsMsg* message) {
  return std::string(natsMsg_GetData(message),
                     static_cast<std::size_t>(natsMsg_GetDataLength(message)));
}

natsStatus add_stream(jsCtx* js, const std::string& name, const std::string& subject,
                      int replicas = 1, StreamInfo* info = nullptr) {
  const char* subjects[] = {subject.c_str()};
  jsStreamConfig config;
  jsStreamConfig_Init(&config);
  config.Name = name.c_str();
  config.Subjects = subjects;
  config.SubjectsLen = 1;
  config.Replicas = replicas;
  jsStreamInfo* raw_info = nullptr;
  jsErrCode error{};
  const natsStatus status = js_AddStream(&raw_info, js, &config, nullptr, &error);
  EXPECT_EQ(error, 0) << "js_AddStream " << name;
  if (info) {
    info->reset(raw_info);
  } else if (raw_info) {
    jsStreamInfo_Destroy(raw_info);
  }
  return status;
}

natsStatus publish(jsCtx* js, const std::string& subject, const std::string& payload,
                   uint64_t* sequence = nullptr) {
  jsPubAck* raw_ack = nullptr;
  jsErrCode error{};
  const natsStatus status = js_Publish(&raw_ack, js, subject.c_str(), payload.data(),
                                       static_cast<int>(payload.size()), nullptr, &error);
  const PubAck ack(raw_ack);
  if (ack && sequence) *sequence = ack->Sequence;
  return status;
}

/// The payload stored at `sequence` in `stream`, or "<missing>".
std::string stored(jsCtx* js, const std::string& stream, uint64_t sequence) {
  natsMsg* raw_message = nullptr;
  jsErrCode error{};
  if (js_GetMsg(&raw_message, js, stream.c_str(), sequence, nullptr, &error) != NATS_OK) {
    return "<missing>";
  }
  const Message message(raw_message);
  return data(message.get());
}

bool accepts_tcp(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(static_cast<std::uint16_t>(port));
  const bool connected =
      ::connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0;
  ::close(fd);
  return connected;
}

bool process_gone(pid_t pid) { return ::kill(pid, 0) == -1 && errno == ESRCH; }

TEST(NatsServerTest, ServesCoreAndJetStreamThenStopsOnDestruction) {
  std::unique_ptr<NatsServer> server = NatsServer::start();
  ASSERT_NE(server, nullptr);
  const int port = server->port();
  const pid_t pid = server->pid();
  EXPECT_EQ(server->url(), "nats://127.0.0.1:" + std::to_string(port));
  ASSERT_GT(pid, 0);
  {
    Connection connection;
    ASSERT_EQ(connect(connection, server->url()), NATS_OK) << server->log();
    const Subscription subscription = subscribe(connection.get(), "ferry.test.core");
    ASSERT_EQ(natsConnection_PublishString(connection.get(), "ferry.test.core", "hello"), NATS_OK);
    const Message message = next_message(subscription.get(), 5000);
    ASSERT_NE(message, nullptr);
    EXPECT_EQ(data(message.get()), "hello");

    const JetStream js = jetstream(connection.get());
    ASSERT_EQ(add_stream(js.get(), "round_trip", "ferry.test.stream.>"), NATS_OK);
    uint64_t sequence = 0;
    ASSERT_EQ(publish(js.get(), "ferry.test.stream.one", "stored", &sequence), NATS_OK);
    EXPECT_EQ(sequence, 1u);
    EXPECT_EQ(stored(js.get(), "round_trip", 1), "stored");
  }
  server.reset();
  EXPECT_FALSE(accepts_tcp(port));
  EXPECT_TRUE(process_gone(pid));
}

TEST(NatsServerTest, UsersArePermittedOnlyTheirSubjects) {
  // '$', '#' and a space would be a variable, a comment and a separator
  // unquoted: the config must quote the password. (nats.c 3.4.1 does not
  // escape '"' or '\' in its CONNECT JSON, so those cannot be tested.)
  const NatsUser alice{.name = "alice",
                       .password = "al$ice #pw",
                       .publish = {"ferry.test.alice.>", "$JS.API.>", "$JS.ACK.>", "_INBOX.>"},
                       .subscribe = {"ferry.test.alice.>", "_INBOX.>"}};
  const NatsUser bob{.name = "bob",
                     .password = "bob-pw",
                     .publish = {"ferry.test.bob.>", "$JS.API.>", "_INBOX.>"}};
  std::unique_ptr<NatsServer> server = NatsServer::start({.users = {alice, bob}});
  ASSERT_NE(server, nullptr);

  Connection bob_connection;
  ASSERT_EQ(connect(bob_connection, server->url(), &bob), NATS_OK) << server->log();
  const Subscription to_alice = subscribe(bob_connection.get(), "ferry.test.alice.hello");
  const Subscription to_bob = subscribe(bob_connection.get(), "ferry.test.bob.>");
  // The subscriptions are in place before alice publishes.
  ASSERT_EQ(natsConnection_Flush(bob_connection.get()), NATS_OK);

  Connection alice_connection;
  ASSERT_EQ(connect(alice_connection, server->url(), &alice), NATS_OK) << server->log();
  ASSERT_EQ(natsConnection_PublishString(alice_connection.get(), "ferry.test.alice.hello", "hi"),
            NATS_OK);
  const Message greeting = next_message(to_alice.get(), 5000);
  ASSERT_NE(greeting, nullptr);
  EXPECT_EQ(data(greeting.get()), "hi");

  {
    // The permission list the header documents is enough for JetStream:
    // stream management, publish acks, pull requests and acks.
    const JetStream js = jetstream(alice_connection.get());
    ASSERT_EQ(add_stream(js.get(), "alice_stream", "ferry.test.alice.stream"), NATS_OK);
    ASSERT_EQ(publish(js.get(), "ferry.test.alice.stream", "kept"), NATS_OK);
    natsSubscription* raw_puller = nullptr;
    jsErrCode error{};
    ASSERT_EQ(js_PullSubscribe(&raw_puller, js.get(), "ferry.test.alice.stream", "alice_reader",
                               nullptr, nullptr, &error),
              NATS_OK);
    const Subscription puller(raw_puller);
    natsMsgList batch{};
    ASSERT_EQ(natsSubscription_Fetch(&batch, puller.get(), 1, 5000, &error), NATS_OK);
    ASSERT_EQ(batch.Count, 1);
    EXPECT_EQ(data(batch.Msgs[0]), "kept");
    EXPECT_EQ(natsMsg_AckSync(batch.Msgs[0], nullptr, &error), NATS_OK);
    natsMsgList_Destroy(&batch);
  }

  // The server refuses alice on bob's subject and tells her asynchronously;
  // the flush's PONG comes after the error, so the error is in by then.
  ASSERT_EQ(natsConnection_PublishString(alice_connection.get(), "ferry.test.bob.hello", "forged"),
            NATS_OK);
  EXPECT_EQ(natsConnection_Flush(alice_connection.get()), NATS_OK);
  const char* last_error = nullptr;
  EXPECT_EQ(natsConnection_GetLastError(alice_connection.get(), &last_error), NATS_NOT_PERMITTED);
  ASSERT_NE(last_error, nullptr);
  EXPECT_NE(std::string(last_error).find("Permissions Violation"), std::string::npos)
      << last_error;
  natsStatus status = NATS_OK;
  EXPECT_EQ(next_message(to_bob.get(), 300, &status), nullptr);
  EXPECT_EQ(status, NATS_TIMEOUT);

  NatsUser impostor = alice;
  impostor.password = "wrong";
  Connection refused;
  EXPECT_NE(connect(refused, server->url(), &impostor), NATS_OK);
  EXPECT_EQ(refused, nullptr);
  Connection anonymous;
  EXPECT_NE(connect(anonymous, server->url()), NATS_OK);
}

TEST(NatsServerTest, StreamSurvivesKillAndRestart) {
  std::unique_ptr<NatsServer> server = NatsServer::start();
  ASSERT_NE(server, nullptr);
  const int port = server->port();
  const pid_t first_pid = server->pid();
  {
    Connection connection;
    ASSERT_EQ(connect(connection, server->url()), NATS_OK) << server->log();
    const JetStream js = jetstream(connection.get());
    ASSERT_EQ(add_stream(js.get(), "durable", "ferry.test.durable"), NATS_OK);
    ASSERT_EQ(publish(js.get(), "ferry.test.durable", "survives"), NATS_OK);
  }

  server->kill();
  EXPECT_EQ(server->pid(), -1);
  EXPECT_TRUE(process_gone(first_pid));
  EXPECT_FALSE(accepts_tcp(port));

  ASSERT_TRUE(server->restart());
  EXPECT_EQ(server->port(), port);
  EXPECT_GT(server->pid(), 0);
  Connection connection;
  ASSERT_EQ(connect(connection, server->url()), NATS_OK) << server->log();
  const JetStream js = jetstream(connection.get());
  EXPECT_EQ(stored(js.get(), "durable", 1), "survives") << server->log();
}

TEST(NatsClusterTest, ThreeNodesReplicateAStream) {
  std::unique_ptr<NatsCluster> cluster = NatsCluster::start();
  ASSERT_NE(cluster, nullptr);
  ASSERT_EQ(cluster->size(), 3);
  std::string expected_urls;
  std::vector<pid_t> pids;
  for (int i = 0; i < cluster->size(); ++i) {
    EXPECT_EQ(cluster->node(i).name(), "n" + std::to_string(i));
    EXPECT_EQ(cluster->index_of("n" + std::to_string(i)), i);
    expected_urls += (i ? "," : "") + cluster->node(i).url();
    pids.push_back(cluster->node(i).pid());
  }
  EXPECT_EQ(cluster->urls(), expected_urls);
  EXPECT_EQ(cluster->index_of("n3"), -1);
  ASSERT_TRUE(cluster->wait_jetstream_ready()) << cluster->node(0).log();
  {
    Connection connection;
    ASSERT_EQ(connect(connection, cluster->urls()), NATS_OK);
    const JetStream js = jetstream(connection.get());
    StreamInfo info;
    ASSERT_EQ(add_stream(js.get(), "replicated", "ferry.test.replicated", 3, &info), NATS_OK);
    // The leader may report its followers a moment after creating the stream.
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!(info->Cluster && info->Cluster->Leader && info->Cluster->ReplicasLen == 2) &&
           std::chrono::steady_clock::now() < give_up) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      jsStreamInfo* raw_info = nullptr;
      jsErrCode error{};
      if (js_GetStreamInfo(&raw_info, js.get(), "replicated", nullptr, &error) == NATS_OK) {
        info.reset(raw_info);
      }
    }
    ASSERT_NE(info->Cluster, nullptr);
    ASSERT_NE(info->Cluster->Leader, nullptr);
    ASSERT_EQ(info->Cluster->ReplicasLen, 2);
    const int leader = cluster->index_of(info->Cluster->Leader);
    EXPECT_NE(leader, -1) << info->Cluster->Leader;
    std::set<int> members{leader};
    for (int i = 0; i < info->Cluster->ReplicasLen; ++i) {
      members.insert(cluster->index_of(info->Cluster->Replicas[i]->Name));
    }
    EXPECT_EQ(members, (std::set<int>{0, 1, 2}));

    ASSERT_EQ(publish(js.get(), "ferry.test.replicated", "thrice"), NATS_OK);
    EXPECT_EQ(stored(js.get(), "replicated", 1), "thrice");
  }
  cluster.reset();
  for (const pid_t pid : pids) EXPECT_TRUE(process_gone(pid)) << pid;
}

}  // namespace
}  // namespace ferry::test
