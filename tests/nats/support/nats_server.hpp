// Real nats-server processes on loopback for the nats:// tests: one server
// (NatsServer) or a JetStream cluster (NatsCluster), each with its own config
// file, log and JetStream store under a fresh temporary directory.
//
// Servers listen on 127.0.0.1 only, on ports picked free at start; a port
// taken by a concurrent test between picking and binding makes the server
// exit, and start() retries on other ports. Every server is a child of the
// test process with a parent-death signal (SIGKILL), so a crashed test never
// leaves one running; destructors stop (SIGTERM, SIGKILL after 5 s) and reap.
//
// The parent-death signal fires when the *thread* that started the server
// exits: start servers from the test's own thread (gtest's main thread), not
// from a helper thread that ends first. None of these classes is thread-safe.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ferry_test.hpp"

namespace ferry::test {

/// A user of the server's `authorization` block.
///
/// The permission lists are written into the config literally (nats-server
/// subjects, wildcards allowed): the caller lists what JetStream needs. For
/// example a user that publishes to and consumes from streams on
/// "ferry.alice.>" (nats_server_test checks that this list works):
///
///   publish   = {"ferry.alice.>", "$JS.API.>", "$JS.ACK.>", "_INBOX.>"}
///   subscribe = {"ferry.alice.>", "_INBOX.>"}
///
/// "$JS.API.>" carries stream/consumer management, account info and pull
/// requests; "$JS.ACK.>" acknowledgements. Replies (publish acks, fetched
/// messages, API responses) arrive on "_INBOX.>", so it must be subscribable;
/// publishing to "_INBOX.>" is only for answering core requests. Push
/// consumers with flow control also publish to "$JS.FC.>".
struct NatsUser {
  /// Written quoted into the config; but nats.c 3.4.1 does not escape '"' or
  /// '\' when it sends them to the server, so avoid those two.
  std::string name;
  std::string password;
  /// An NKey user instead (NatsNkey::public_key, nats_keys.hpp): it signs in
  /// with its seed; the server knows it by this key only (name and password
  /// unused).
  std::string nkey;
  /// Subjects this user may publish to / subscribe to. Empty: no restriction
  /// for that direction.
  std::vector<std::string> publish;
  std::vector<std::string> subscribe;
};

struct NatsServerOptions {
  /// Empty: no authorization at all. Otherwise every client must log in as
  /// one of these; the fixture's own readiness probes use the first, which
  /// must therefore be a user with a password.
  std::vector<NatsUser> users;
  bool jetstream = true;
  /// PEM files: clients must use TLS (a `tls` block); the fixture's probes
  /// trust the certificate itself (self-signed).
  std::string tls_certificate;
  std::string tls_key;
  /// Decentralized authentication instead of `users`: the config lines of an
  /// operator and its accounts (NatsOperator::server_config, nats_keys.hpp),
  /// and the credentials file the fixture's probes log in with.
  std::string operator_config;
  std::string probe_credentials;
};

/// A real nats-server on 127.0.0.1 with JetStream storing under a fresh
/// temporary directory.
class NatsServer {
 public:
  /// Starts a server and waits (up to 20 s) until it is ready: it accepts TCP
  /// connections and, with JetStream, answers an account-info request. On
  /// failure: a gtest failure carrying the server's log, and nullptr.
  static std::unique_ptr<NatsServer> start(NatsServerOptions options = {});

  /// Stops the server (SIGTERM, SIGKILL after 5 s), reaps it and removes its
  /// directory.
  ~NatsServer();
  NatsServer(const NatsServer&) = delete;
  NatsServer& operator=(const NatsServer&) = delete;

  /// "nats://127.0.0.1:PORT"
  std::string url() const;
  int port() const { return port_; }
  /// The server process, or -1 after kill() until restart().
  pid_t pid() const { return pid_; }
  /// server_name in the config ("ferry-test"; "n0", "n1", ... in a cluster).
  const std::string& name() const { return name_; }

  /// SIGKILL and reap: the process is gone when this returns. No-op if it is
  /// not running.
  void kill();

  /// Starts the server again on the same port, config and store directory
  /// (killing it first if it is still running) and waits until it is ready.
  /// A cluster node is ready once it accepts clients; JetStream in a cluster
  /// needs a quorum (NatsCluster::wait_jetstream_ready). On failure: a gtest
  /// failure carrying the log, and false.
  bool restart();

  /// The server's log so far (every start, restart and retry), for failure
  /// messages.
  std::string log() const;

 private:
  friend class NatsCluster;

  enum class Outcome { ready, port_taken, failed };

  NatsServer(NatsServerOptions options, std::string name);

  /// Writes the config for `port_`; `cluster_block` is empty or a `cluster {}`.
  void write_config(std::string_view cluster_block) const;
  /// fork + exec; false (with a gtest failure) if the process cannot be made.
  bool launch();
  /// Waits until ready, or until the process exits or `deadline` passes, and
  /// reaps it unless it is ready.
  Outcome wait_ready(std::chrono::steady_clock::time_point deadline);
  /// Empty when ready, else what is missing.
  std::string why_not_ready() const;
  /// Reaps the process if it has exited (or was never started); true if so.
  bool reap_if_exited(int* wait_status = nullptr);
  /// SIGTERM now; reap_until() after, so a cluster stops its nodes in parallel.
  void terminate();
  void reap_until(std::chrono::steady_clock::time_point deadline);
  std::string log_since_launch() const;

  NatsServerOptions options_;
  std::string name_;
  TempDir dir_;
  bool clustered_ = false;
  int port_ = -1;
  pid_t pid_ = -1;
  std::size_t log_offset_ = 0;  // where the current launch's output starts
  std::string not_ready_;       // why the last readiness check failed
};

/// nats-servers forming a JetStream cluster on loopback: one cluster block
/// with routes to every node, server names "n0", "n1", ..., each node
/// its own directory and store.
class NatsCluster {
 public:
  /// Starts every node and waits until each accepts clients. JetStream needs
  /// an elected meta leader on top: call wait_jetstream_ready(). On failure:
  /// a gtest failure carrying the failing node's log, and nullptr.
  static std::unique_ptr<NatsCluster> start(int nodes = 3, NatsServerOptions options = {});

  /// Stops all nodes in parallel (SIGTERM, SIGKILL after 5 s).
  ~NatsCluster();
  NatsCluster(const NatsCluster&) = delete;
  NatsCluster& operator=(const NatsCluster&) = delete;

  /// "nats://127.0.0.1:P0,nats://127.0.0.1:P1,...". nats.c's
  /// natsConnection_ConnectTo takes this list; natsOptions_SetURL takes only
  /// one URL (split the list for natsOptions_SetServers).
  std::string urls() const;
  NatsServer& node(int index);
  int size() const { return static_cast<int>(nodes_.size()); }
  /// Index of the node whose server_name is `server_name` ("n1" -> 1), or -1.
  int index_of(std::string_view server_name) const;

  /// Waits (up to `timeout`) until the cluster can create a stream with one
  /// replica per node (capped at 3): it creates and deletes such a stream
  /// until that works. False on timeout.
  bool wait_jetstream_ready(std::chrono::milliseconds timeout = std::chrono::seconds(30));

 private:
  NatsCluster() = default;

  std::vector<std::unique_ptr<NatsServer>> nodes_;
  NatsServerOptions options_;
};

/// Message bytes from text, and text from message bytes (the nats:// tests).
inline std::span<const std::byte> bytes(std::string_view text) {
  return std::as_bytes(std::span(text.data(), text.size()));
}
inline std::string text(std::span<const std::byte> data) {
  return {reinterpret_cast<const char*>(data.data()), data.size()};
}

/// A test with a fresh server of its own; url("name") addresses an object on it.
class NatsServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = NatsServer::start();
    ASSERT_NE(server_, nullptr);
  }
  std::string url(std::string_view name, std::string_view options = "") const {
    return server_->url() + "/" + std::string(name) + (options.empty() ? "" : "?" + std::string(options));
  }
  std::unique_ptr<NatsServer> server_;
};

}  // namespace ferry::test
