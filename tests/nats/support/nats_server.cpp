#include "nats_server.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>
#include <thread>
#include <utility>

#include <gtest/gtest.h>
#include <nats/nats.h>

namespace ferry::test {

namespace {

using Clock = std::chrono::steady_clock;

constexpr const char* kServerProgram = "/usr/sbin/nats-server";
constexpr int kPortAttempts = 10;
constexpr auto kReadyTimeout = std::chrono::seconds(20);
constexpr auto kReadyPoll = std::chrono::milliseconds(25);
constexpr auto kStopGrace = std::chrono::seconds(5);

/// A string literal for the nats-server config parser.
std::string config_string(std::string_view text) {
  std::string out = "\"";
  for (const char c : text) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default: out += c;
    }
  }
  return out + '"';
}

std::string config_list(const std::vector<std::string>& items) {
  std::string out = "[";
  for (std::size_t i = 0; i < items.size(); ++i) out += (i ? ", " : "") + config_string(items[i]);
  return out + "]";
}

sockaddr_in loopback(int port) {
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(static_cast<std::uint16_t>(port));
  return address;
}

/// `count` distinct ports free on 127.0.0.1 right now. Another process may
/// take one before the server binds it; the server then exits and the caller
/// retries. Empty if no socket can be bound at all.
std::vector<int> free_ports(int count) {
  std::vector<int> sockets;
  std::vector<int> ports;
  // All sockets stay bound until every port is known, so no port repeats.
  for (int i = 0; i < count; ++i) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) break;
    sockets.push_back(fd);
    sockaddr_in address = loopback(0);
    socklen_t length = sizeof address;
    if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
      break;
    }
    ports.push_back(ntohs(address.sin_port));
  }
  for (const int fd : sockets) ::close(fd);
  if (static_cast<int>(ports.size()) != count) ports.clear();
  return ports;
}

bool accepts_tcp(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  const sockaddr_in address = loopback(port);
  const bool connected =
      ::connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0;
  ::close(fd);
  return connected;
}

/// What nats.c says about a failed call, for failure messages.
std::string describe(natsStatus status, jsErrCode js_error = static_cast<jsErrCode>(0)) {
  std::string text = natsStatus_GetText(status);
  if (js_error != 0) text += " (JetStream error " + std::to_string(js_error) + ")";
  natsStatus ignored = NATS_OK;
  if (const char* detail = nats_GetLastError(&ignored); detail && *detail) {
    text += ": " + std::string(detail);
  }
  return text;
}

/// A nats.c connection and JetStream context for the fixture's own probes:
/// it fails fast and never reconnects. js() is null if it could not connect,
/// and error() says why.
class Probe {
 public:
  Probe(const std::string& urls, const NatsServerOptions& setup) {
    const std::vector<NatsUser>& users = setup.users;
    // natsOptions_SetURL takes a single URL; a list goes to SetServers.
    std::vector<std::string> servers;
    std::istringstream list(urls);
    for (std::string server; std::getline(list, server, ',');) servers.push_back(server);
    std::vector<const char*> server_pointers;
    for (const std::string& server : servers) server_pointers.push_back(server.c_str());
    natsStatus status = natsOptions_Create(&options_);
    if (status == NATS_OK) {
      status = natsOptions_SetServers(options_, server_pointers.data(),
                                      static_cast<int>(server_pointers.size()));
    }
    if (status == NATS_OK) status = natsOptions_SetTimeout(options_, 1000);
    if (status == NATS_OK) status = natsOptions_SetAllowReconnect(options_, false);
    if (status == NATS_OK && !users.empty()) {
      status = natsOptions_SetUserInfo(options_, users.front().name.c_str(),
                                       users.front().password.c_str());
    }
    if (status == NATS_OK && !setup.probe_credentials.empty()) {
      status = natsOptions_SetUserCredentialsFromFiles(options_, setup.probe_credentials.c_str(), nullptr);
    }
    if (status == NATS_OK && !setup.tls_certificate.empty()) {
      // The server's self-signed certificate is its own authority.
      status = natsOptions_SetSecure(options_, true);
      if (status == NATS_OK) status = natsOptions_LoadCATrustedCertificates(options_, setup.tls_certificate.c_str());
    }
    if (status == NATS_OK) status = natsConnection_Connect(&connection_, options_);
    if (status == NATS_OK) {
      jsOptions js_options;
      jsOptions_Init(&js_options);
      js_options.Wait = 2000;
      status = natsConnection_JetStream(&js_, connection_, &js_options);
    }
    if (status != NATS_OK) {
      js_ = nullptr;
      error_ = "connect to " + urls + ": " + describe(status);
    }
  }
  ~Probe() {
    if (js_) jsCtx_Destroy(js_);
    if (connection_) natsConnection_Destroy(connection_);
    if (options_) natsOptions_Destroy(options_);
  }
  Probe(const Probe&) = delete;
  Probe& operator=(const Probe&) = delete;

  jsCtx* js() const { return js_; }
  const std::string& error() const { return error_; }

 private:
  natsOptions* options_ = nullptr;
  natsConnection* connection_ = nullptr;
  jsCtx* js_ = nullptr;
  std::string error_;
};

/// Empty if the server answers a JetStream account-info request, else why not.
std::string account_info_problem(const std::string& url, const NatsServerOptions& server) {
  const Probe probe(url, server);
  if (!probe.js()) return probe.error();
  jsAccountInfo* info = nullptr;
  jsErrCode error{};
  const natsStatus status = js_GetAccountInfo(&info, probe.js(), nullptr, &error);
  if (status != NATS_OK) return "JetStream account info: " + describe(status, error);
  jsAccountInfo_Destroy(info);
  return {};
}

/// The forked child: only async-signal-safe calls until execv, because the
/// test process has other threads (nats.c's among them).
[[noreturn]] void exec_server(char* const* argv, int null_fd, int log_fd, pid_t parent,
                              int max_fd) {
  // Dies with the test, even when the test crashes (the header says which
  // thread counts as the parent).
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != parent) ::_exit(126);  // the test died before prctl
  if (::dup2(null_fd, STDIN_FILENO) < 0 || ::dup2(log_fd, STDOUT_FILENO) < 0 ||
      ::dup2(log_fd, STDERR_FILENO) < 0) {
    ::_exit(126);
  }
  // The test's sockets must not live on in the server: a connection the test
  // closes would otherwise stay open towards the other end.
  if (::close_range(3, ~0U, 0) != 0) {
    for (int fd = 3; fd < max_fd; ++fd) ::close(fd);
  }
  // Ignored signals and the signal mask survive exec; the server needs
  // SIGTERM to stop.
  struct sigaction default_action {};
  default_action.sa_handler = SIG_DFL;
  for (const int signal_number : {SIGTERM, SIGINT, SIGHUP, SIGPIPE}) {
    ::sigaction(signal_number, &default_action, nullptr);
  }
  sigset_t none;
  ::sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  ::execv(argv[0], argv);
  static constexpr char kMessage[] = "ferry test fixture: execv of nats-server failed\n";
  [[maybe_unused]] const ssize_t ignored = ::write(STDERR_FILENO, kMessage, sizeof kMessage - 1);
  ::_exit(127);
}

}  // namespace

// ---------------------------------------------------------------- NatsServer

NatsServer::NatsServer(NatsServerOptions options, std::string name)
    : options_(std::move(options)), name_(std::move(name)) {}

std::unique_ptr<NatsServer> NatsServer::start(NatsServerOptions options) {
  std::unique_ptr<NatsServer> server(new NatsServer(std::move(options), "ferry-test"));
  for (int attempt = 1; attempt <= kPortAttempts; ++attempt) {
    const std::vector<int> ports = free_ports(1);
    if (ports.empty()) {
      ADD_FAILURE() << "no free TCP port on 127.0.0.1: " << std::strerror(errno);
      return nullptr;
    }
    server->port_ = ports.front();
    server->write_config("");
    if (!server->launch()) return nullptr;
    const Outcome outcome = server->wait_ready(Clock::now() + kReadyTimeout);
    if (outcome == Outcome::ready) return server;
    if (outcome != Outcome::port_taken) break;
  }
  ADD_FAILURE() << "nats-server did not start (" << server->not_ready_ << "); its log:\n"
                << server->log();
  return nullptr;
}

NatsServer::~NatsServer() {
  terminate();
  reap_until(Clock::now() + kStopGrace);
}

std::string NatsServer::url() const { return "nats://127.0.0.1:" + std::to_string(port_); }

void NatsServer::kill() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  while (::waitpid(pid_, nullptr, 0) < 0 && errno == EINTR) {
  }
  pid_ = -1;
}

bool NatsServer::restart() {
  kill();
  if (!launch()) return false;
  if (wait_ready(Clock::now() + kReadyTimeout) == Outcome::ready) return true;
  ADD_FAILURE() << "nats-server did not restart on port " << port_ << " (" << not_ready_
                << "); its log:\n"
                << log();
  return false;
}

std::string NatsServer::log() const { return read_file(dir_.file("server.log")); }

std::string NatsServer::log_since_launch() const {
  std::ifstream in(dir_.file("server.log"), std::ios::binary);
  in.seekg(static_cast<std::streamoff>(log_offset_));
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void NatsServer::write_config(std::string_view cluster_block) const {
  std::ostringstream config;
  config << "# Written by ferry's test fixture (tests/nats/support/nats_server.cpp).\n"
         << "server_name: " << config_string(name_) << "\n"
         << "listen: " << config_string("127.0.0.1:" + std::to_string(port_)) << "\n";
  if (options_.jetstream) {
    // nats-server keeps its files under store_dir/jetstream.
    config << "jetstream {\n  store_dir: " << config_string(dir_.file("store")) << "\n}\n";
  }
  config << cluster_block;
  if (!options_.tls_certificate.empty()) {
    config << "tls {\n  cert_file: " << config_string(options_.tls_certificate)
           << "\n  key_file: " << config_string(options_.tls_key) << "\n}\n";
  }
  config << options_.operator_config;
  if (!options_.users.empty()) {
    config << "authorization {\n  users = [\n";
    for (const NatsUser& user : options_.users) {
      if (user.nkey.empty()) {
        config << "    {\n      user: " << config_string(user.name)
               << "\n      password: " << config_string(user.password) << "\n";
      } else {
        config << "    {\n      nkey: " << config_string(user.nkey) << "\n";
      }
      if (!user.publish.empty() || !user.subscribe.empty()) {
        config << "      permissions {\n";
        if (!user.publish.empty()) {
          config << "        publish { allow: " << config_list(user.publish) << " }\n";
        }
        if (!user.subscribe.empty()) {
          config << "        subscribe { allow: " << config_list(user.subscribe) << " }\n";
        }
        config << "      }\n";
      }
      config << "    }\n";
    }
    config << "  ]\n}\n";
  }
  std::ofstream(dir_.file("nats.conf"), std::ios::trunc) << config.str();
}

bool NatsServer::launch() {
  std::string program = kServerProgram;
  std::string config_flag = "-c";
  std::string config = dir_.file("nats.conf");
  char* const argv[] = {program.data(), config_flag.data(), config.data(), nullptr};

  const std::string log_path = dir_.file("server.log");
  const int log_fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  const int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  struct stat log_stat {};
  if (log_fd < 0 || null_fd < 0 || ::fstat(log_fd, &log_stat) != 0) {
    ADD_FAILURE() << "cannot open " << log_path << " or /dev/null: " << std::strerror(errno);
    if (log_fd >= 0) ::close(log_fd);
    if (null_fd >= 0) ::close(null_fd);
    return false;
  }
  log_offset_ = static_cast<std::size_t>(log_stat.st_size);
  const long open_max = ::sysconf(_SC_OPEN_MAX);
  const int max_fd = open_max > 0 && open_max < 65536 ? static_cast<int>(open_max) : 65536;

  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid == 0) exec_server(argv, null_fd, log_fd, parent, max_fd);
  const int fork_errno = errno;
  ::close(log_fd);
  ::close(null_fd);
  if (pid < 0) {
    ADD_FAILURE() << "fork: " << std::strerror(fork_errno);
    return false;
  }
  pid_ = pid;
  return true;
}

NatsServer::Outcome NatsServer::wait_ready(Clock::time_point deadline) {
  for (;;) {
    int wait_status = 0;
    if (reap_if_exited(&wait_status)) {
      not_ready_ = WIFSIGNALED(wait_status)
                       ? "it was killed by signal " + std::to_string(WTERMSIG(wait_status))
                       : "it exited with status " + std::to_string(WEXITSTATUS(wait_status));
      return log_since_launch().find("address already in use") != std::string::npos
                 ? Outcome::port_taken
                 : Outcome::failed;
    }
    not_ready_ = why_not_ready();
    if (not_ready_.empty()) return Outcome::ready;
    if (Clock::now() >= deadline) {
      kill();
      not_ready_ = "not ready in time: " + not_ready_;
      return Outcome::failed;
    }
    std::this_thread::sleep_for(kReadyPoll);
  }
}

std::string NatsServer::why_not_ready() const {
  // The log proves that *this* server bound the port: after losing a port
  // race, the connect below could reach another test's server.
  const std::string log = log_since_launch();
  if (log.find("Server is ready") == std::string::npos) return "no \"Server is ready\" in its log";
  // Routes listen from a goroutine that may still fail after "ready".
  if (clustered_ && log.find("Listening for route connections") == std::string::npos) {
    return "no \"Listening for route connections\" in its log";
  }
  if (!accepts_tcp(port_)) return "port " + std::to_string(port_) + " refuses connections";
  // A cluster answers JetStream requests only once it has a meta leader.
  if (!options_.jetstream || clustered_) return {};
  return account_info_problem(url(), options_);
}

bool NatsServer::reap_if_exited(int* wait_status) {
  if (pid_ <= 0) return true;
  if (::waitpid(pid_, wait_status, WNOHANG) != pid_) return false;
  pid_ = -1;
  return true;
}

void NatsServer::terminate() {
  if (pid_ > 0) ::kill(pid_, SIGTERM);
}

void NatsServer::reap_until(Clock::time_point deadline) {
  while (pid_ > 0 && !reap_if_exited() && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  kill();
}

// --------------------------------------------------------------- NatsCluster

std::unique_ptr<NatsCluster> NatsCluster::start(int nodes, NatsServerOptions options) {
  std::unique_ptr<NatsCluster> cluster(new NatsCluster());
  cluster->options_ = options;
  // Unique, so a route that reaches another test's cluster is refused.
  const std::string cluster_name = unique_name("cluster");
  for (int attempt = 1; attempt <= kPortAttempts; ++attempt) {
    cluster->nodes_.clear();
    // Client ports first, then route ports.
    const std::vector<int> ports = free_ports(2 * nodes);
    if (ports.empty()) {
      ADD_FAILURE() << "no free TCP ports on 127.0.0.1: " << std::strerror(errno);
      return nullptr;
    }
    const auto route_port = [&](int node) {
      return std::to_string(ports[static_cast<std::size_t>(nodes + node)]);
    };
    // Every node lists every route, itself included (nats-server skips that one).
    std::vector<std::string> routes;
    for (int i = 0; i < nodes; ++i) routes.push_back("nats-route://127.0.0.1:" + route_port(i));
    for (int i = 0; i < nodes; ++i) {
      auto node = std::unique_ptr<NatsServer>(new NatsServer(options, "n" + std::to_string(i)));
      node->clustered_ = true;
      node->port_ = ports[static_cast<std::size_t>(i)];
      node->write_config("cluster {\n  name: " + config_string(cluster_name) +
                         "\n  listen: " + config_string("127.0.0.1:" + route_port(i)) +
                         "\n  routes: " + config_list(routes) + "\n}\n");
      if (!node->launch()) return nullptr;
      cluster->nodes_.push_back(std::move(node));
    }
    const Clock::time_point deadline = Clock::now() + kReadyTimeout;
    NatsServer* failed = nullptr;
    NatsServer::Outcome outcome = NatsServer::Outcome::ready;
    for (const auto& node : cluster->nodes_) {
      outcome = node->wait_ready(deadline);
      if (outcome != NatsServer::Outcome::ready) {
        failed = node.get();
        break;
      }
    }
    if (!failed) return cluster;
    for (const auto& node : cluster->nodes_) node->kill();
    if (outcome == NatsServer::Outcome::port_taken && attempt < kPortAttempts) continue;
    ADD_FAILURE() << "nats-server cluster node " << failed->name() << " did not start ("
                  << failed->not_ready_ << "); its log:\n"
                  << failed->log();
    return nullptr;
  }
  return nullptr;
}

NatsCluster::~NatsCluster() {
  for (const auto& node : nodes_) node->terminate();
  const Clock::time_point deadline = Clock::now() + kStopGrace;
  for (const auto& node : nodes_) node->reap_until(deadline);
}

std::string NatsCluster::urls() const {
  std::string urls;
  for (const auto& node : nodes_) urls += (urls.empty() ? "" : ",") + node->url();
  return urls;
}

NatsServer& NatsCluster::node(int index) { return *nodes_.at(static_cast<std::size_t>(index)); }

int NatsCluster::index_of(std::string_view server_name) const {
  for (std::size_t i = 0; i < nodes_.size(); ++i) {
    if (nodes_[i]->name() == server_name) return static_cast<int>(i);
  }
  return -1;
}

bool NatsCluster::wait_jetstream_ready(std::chrono::milliseconds timeout) {
  const Clock::time_point deadline = Clock::now() + timeout;
  // The same name on every try: adding a stream that exists with the same
  // config succeeds, so a try that timed out on our side leaves nothing behind.
  const std::string stream = unique_name("ready");
  const std::string subject = "ferry.fixture." + stream;
  const char* subjects[] = {subject.c_str()};
  for (;;) {
    const Probe probe(urls(), options_);
    if (probe.js()) {
      jsStreamConfig config;
      jsStreamConfig_Init(&config);
      config.Name = stream.c_str();
      config.Subjects = subjects;
      config.SubjectsLen = 1;
      config.Storage = js_MemoryStorage;
      config.Replicas = std::min(size(), 3);
      jsStreamInfo* info = nullptr;
      jsErrCode error{};
      if (js_AddStream(&info, probe.js(), &config, nullptr, &error) == NATS_OK) {
        jsStreamInfo_Destroy(info);
        if (js_DeleteStream(probe.js(), stream.c_str(), nullptr, &error) == NATS_OK) return true;
      }
    }
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

}  // namespace ferry::test
