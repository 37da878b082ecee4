// `ferry bench`, tested by running the built binary as a user would: a quick
// run of two cheap transports (and eventfd, which has no throughput) must
// finish in seconds, print its table, and write JSON records with every field
// the issue asks for; usage errors must be clear and never crash. The other
// runs check what is measured, not how well: one repetition of 5 ms each
// (--repetitions 1 --budget-ms 5) keeps them short in the sanitizer builds.
//
// FERRY_CLI, the path of the ferry binary, comes from tests/tools/CMakeLists.txt.
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <tuple>
#include <string>
#include <vector>

namespace {

struct CliRun {
  int status = -1;     // exit status, or -1 if killed by a signal
  int signal = 0;
  pid_t pid = 0;
  std::string output;  // stdout and stderr together
};

// Runs the ferry binary with `arguments`, optionally with PATH replaced.
CliRun run_ferry(const std::vector<std::string>& arguments, const char* path_env = nullptr) {
  CliRun run;
  int pipe_fds[2];
  if (::pipe(pipe_fds) != 0) return run;
  const pid_t child = ::fork();
  if (child < 0) return run;
  if (child == 0) {
    ::dup2(pipe_fds[1], STDOUT_FILENO);
    ::dup2(pipe_fds[1], STDERR_FILENO);
    ::close(pipe_fds[0]);
    ::close(pipe_fds[1]);
    if (path_env != nullptr) ::setenv("PATH", path_env, 1);
    std::vector<char*> argv;
    argv.push_back(const_cast<char*>(FERRY_CLI));
    for (const std::string& argument : arguments) argv.push_back(const_cast<char*>(argument.c_str()));
    argv.push_back(nullptr);
    ::execv(FERRY_CLI, argv.data());
    ::_exit(127);
  }
  ::close(pipe_fds[1]);
  run.pid = child;
  char buffer[4096];
  ssize_t n = 0;
  while ((n = ::read(pipe_fds[0], buffer, sizeof buffer)) > 0) run.output.append(buffer, static_cast<std::size_t>(n));
  ::close(pipe_fds[0]);
  int status = 0;
  ::waitpid(child, &status, 0);
  if (WIFEXITED(status)) run.status = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) run.signal = WTERMSIG(status);
  return run;
}

std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / (name + "." + std::to_string(::getpid()))).string();
}

// Nothing of a finished run is left in the temporary directory.
void expect_no_leftovers(pid_t pid) {
  const std::string prefix = "ferry-bench." + std::to_string(pid) + ".";
  for (const auto& entry : std::filesystem::directory_iterator(std::filesystem::temp_directory_path())) {
    EXPECT_NE(entry.path().filename().string().rfind(prefix, 0), 0u) << "left behind: " << entry.path();
  }
}

// Runs `ferry bench` with `arguments` and --json: the records it wrote, or
// null after reporting how the run failed. Nothing may be left behind.
nlohmann::json bench_records(std::vector<std::string> arguments, const std::string& json_name) {
  const std::string json_path = temp_path(json_name);
  arguments.insert(arguments.begin(), "bench");
  arguments.insert(arguments.end(), {"--json", json_path});
  const CliRun run = run_ferry(arguments);
  EXPECT_EQ(run.signal, 0) << run.output;
  EXPECT_EQ(run.status, 0) << run.output;
  expect_no_leftovers(run.pid);
  std::ifstream file(json_path);
  EXPECT_TRUE(file.good()) << run.output;
  if (!file.good()) return nullptr;
  nlohmann::json records = nlohmann::json::parse(file);
  std::filesystem::remove(json_path);
  return records;
}

TEST(BenchCli, QuickRunWritesEveryField) {
  const std::string json_path = temp_path("ferry-bench-test.json");
  const CliRun run = run_ferry(
      {"bench", "--quick", "--only", "floor.spin,pipe,eventfd,ferry.channel.adaptive", "--json", json_path});
  ASSERT_EQ(run.signal, 0) << run.output;
  ASSERT_EQ(run.status, 0) << run.output;
  EXPECT_NE(run.output.find("Round trip, 64 B"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("Wake-up round trip, 64 B"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("One-way throughput, 1 MiB"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("pipe"), std::string::npos) << run.output;
  expect_no_leftovers(run.pid);

  std::ifstream file(json_path);
  ASSERT_TRUE(file.good()) << "no JSON written to " << json_path << "\n" << run.output;
  const nlohmann::json records = nlohmann::json::parse(file);
  std::filesystem::remove(json_path);
  ASSERT_TRUE(records.is_array());

  const std::set<std::string> asked{"floor.spin", "pipe", "eventfd", "ferry.channel.adaptive"};
  const std::set<std::size_t> sizes{64, 4096, 65536, 1048576};
  std::set<std::pair<std::string, std::string>> seen;
  for (const nlohmann::json& record : records) {
    SCOPED_TRACE(record.dump());
    for (const char* field : {"transport", "pattern", "size", "status", "median_ns", "p99_ns", "p999_ns",
                              "msgs_per_s", "bytes_per_s"}) {
      EXPECT_TRUE(record.contains(field)) << field;
    }
    const std::string transport = record["transport"];
    const std::string pattern = record["pattern"];
    const std::string status = record["status"];
    const std::size_t size = record["size"];
    EXPECT_TRUE(asked.count(transport)) << transport;
    EXPECT_TRUE(pattern == "rtt" || pattern == "wake" || pattern == "throughput") << pattern;
    seen.emplace(transport, pattern + "/" + std::to_string(size));

    if (transport == "eventfd" && pattern == "throughput") {
      EXPECT_EQ(status, "n/a");
      EXPECT_TRUE(record.contains("reason"));
      EXPECT_TRUE(record["msgs_per_s"].is_null());
      continue;
    }
    if (transport == "floor.spin" && pattern == "wake") {
      EXPECT_EQ(status, "n/a") << "a spinner never sleeps";
      continue;
    }
    ASSERT_EQ(status, "ok") << record.value("reason", "");
    EXPECT_GT(record["floor_ns"].get<double>(), 0);
    if (pattern == "rtt" || pattern == "wake") {
      EXPECT_EQ(size, 64u);
      const double median = record["median_ns"];
      const double p99 = record["p99_ns"];
      const double p999 = record["p999_ns"];
      EXPECT_GT(median, 0);
      // The median is the repetitions' median, p99 of all samples pooled: a
      // repetition slowed by a busy machine (few samples, all slow) may lift
      // the median past p99; but at least half of each repetition's samples
      // reach its median, so p99 reaches the lowest of them.
      double lowest_median = median;
      for (const nlohmann::json& repetition : record["repetitions"]) {
        lowest_median = std::min(lowest_median, repetition["median_ns"].get<double>());
      }
      EXPECT_GE(p99, lowest_median);
      EXPECT_GE(p999, p99);
      EXPECT_TRUE(record["msgs_per_s"].is_null());
      EXPECT_TRUE(record["bytes_per_s"].is_null());
      EXPECT_GT(record["samples"].get<double>(), 0);
    } else {
      EXPECT_TRUE(sizes.count(size)) << size;
      const double messages = record["msgs_per_s"];
      const double bytes = record["bytes_per_s"];
      EXPECT_GT(messages, 0);
      EXPECT_NEAR(bytes, messages * static_cast<double>(size), bytes * 1e-9);
      EXPECT_TRUE(record["median_ns"].is_null());
    }
    EXPECT_FALSE(record["repetitions"].empty());
    if (transport == "floor.spin") {
      EXPECT_DOUBLE_EQ(record["vs_floor_spin"].get<double>(), 1.0);
    }
  }
  // Every transport asked for: one rtt, one wake and one per throughput size.
  EXPECT_EQ(seen.size(), asked.size() * (2 + sizes.size()));
}

TEST(BenchCli, QueuesAreMeasuredWithSeveralSendingProcesses) {
  const std::string json_path = temp_path("ferry-bench-senders.json");
  const CliRun run =
      run_ferry({"bench", "--only", "sysv.mq,ferry.mailbox.adaptive", "--sizes", "64", "--repetitions", "1",
                 "--budget-ms", "5", "--json", json_path});
  ASSERT_EQ(run.status, 0) << run.output;
  EXPECT_NE(run.output.find("64 B messages, 8 sending processes"), std::string::npos) << run.output;
  expect_no_leftovers(run.pid);
  std::ifstream file(json_path);
  const nlohmann::json records = nlohmann::json::parse(file);
  std::filesystem::remove(json_path);
  std::set<std::pair<std::string, unsigned>> seen;
  for (const nlohmann::json& record : records) {
    if (record["pattern"] != "throughput" || record["transport"] == "floor.spin") continue;
    SCOPED_TRACE(record.dump());
    ASSERT_EQ(record["status"], "ok") << record.value("reason", "");
    EXPECT_GT(record["msgs_per_s"].get<double>(), 0);
    seen.emplace(record["transport"], record["senders"].get<unsigned>());
  }
  for (const char* transport : {"sysv.mq", "ferry.mailbox.adaptive"}) {
    for (unsigned senders : {1u, 2u, 4u, 8u}) EXPECT_TRUE(seen.count({transport, senders})) << transport << " " << senders;
  }
}

// Round trips with larger requests: loans, copies and topics (one and four
// subscribers) and the spin floor at each size, a 64-byte reply, and no
// such cell for a round trip without a message (the bare line).
TEST(BenchCli, RoundTripsAreMeasuredAtEachRequestSize) {
  const std::string json_path = temp_path("ferry-bench-requests.json");
  const CliRun run = run_ferry({"bench", "--only",
                                "ferry.loan,ferry.auto,ferry.topic,ferry.topic.fanout4,unix.stream,floor.line",
                                "--rtt-sizes", "64,64K,1M", "--sizes", "64", "--repetitions", "1", "--budget-ms", "5",
                                "--json", json_path});
  ASSERT_EQ(run.status, 0) << run.output;
  EXPECT_NE(run.output.find("Round trip against request size"), std::string::npos) << run.output;
  expect_no_leftovers(run.pid);
  for (const auto& entry : std::filesystem::directory_iterator("/dev/shm")) {
    const std::string name = entry.path().filename().string();
    EXPECT_FALSE(name.find("bench-") != std::string::npos && name.find(".chunks-") != std::string::npos)
        << "loan chunks left behind: " << name;
  }
  std::ifstream file(json_path);
  const nlohmann::json records = nlohmann::json::parse(file);
  std::filesystem::remove(json_path);
  std::set<std::pair<std::string, std::size_t>> seen;
  for (const nlohmann::json& record : records) {
    if (record["pattern"] != "rtt") continue;
    SCOPED_TRACE(record.dump());
    ASSERT_EQ(record["status"], "ok") << record.value("reason", "");
    EXPECT_GT(record["median_ns"].get<double>(), 0);
    seen.emplace(record["transport"], record["size"].get<std::size_t>());
  }
  for (const char* transport :
       {"ferry.loan", "ferry.auto", "ferry.topic", "ferry.topic.fanout4", "unix.stream", "floor.spin"}) {
    for (std::size_t size : {std::size_t{64}, std::size_t{65536}, std::size_t{1} << 20}) {
      EXPECT_TRUE(seen.count({transport, size})) << transport << " " << size;
    }
  }
  EXPECT_TRUE(seen.count({"floor.line", 64}));
  EXPECT_FALSE(seen.count({"floor.line", 65536})) << "the bare line carries no message";
}

// Every endpoint through the Sender/Receiver interface, beside the raw calls
// that wait and read as it does; the report sets each pair side by side.
TEST(BenchCli, EndpointsAreMeasuredBesideTheirRawCalls) {
  const std::vector<std::string> endpoints{"ferry.endpoint.unix", "ferry.endpoint.tcp", "ferry.endpoint.pipe",
                                           "ferry.endpoint.unixgram", "ferry.endpoint.udp"};
  const std::vector<std::string> raw{"unix.stream.epoll", "tcp.epoll", "pipe.epoll", "unix.dgram.bound", "udp"};
  std::string only;
  for (const auto* list : {&endpoints, &raw}) {
    for (const std::string& name : *list) only += (only.empty() ? "" : ",") + name;
  }
  const std::string json_path = temp_path("ferry-bench-endpoints.json");
  const CliRun run =
      run_ferry({"bench", "--only", only, "--sizes", "64", "--repetitions", "1", "--budget-ms", "5", "--json", json_path});
  ASSERT_EQ(run.status, 0) << run.output;
  expect_no_leftovers(run.pid);
  std::ifstream file(json_path);
  ASSERT_TRUE(file.good()) << run.output;
  const nlohmann::json records = nlohmann::json::parse(file);
  std::filesystem::remove(json_path);
  std::set<std::pair<std::string, std::string>> ok;
  for (const nlohmann::json& record : records) {
    SCOPED_TRACE(record.dump());
    const std::string transport = record["transport"];
    const std::string pattern = record["pattern"];
    // UDP drops what finds no room, so it has round trips only.
    if (transport.ends_with("udp") && pattern == "throughput") {
      EXPECT_EQ(record["status"], "n/a");
      continue;
    }
    if (transport == "floor.spin") continue;
    ASSERT_EQ(record["status"], "ok") << record.value("reason", "");
    ok.emplace(transport, pattern);
    // The CPU time both processes spent per message, beside the wall clock
    // (a wake-up's idling is not counted: none there).
    if (pattern == "wake") {
      EXPECT_TRUE(record["cpu_ns"].is_null());
    } else {
      EXPECT_GT(record["cpu_ns"].get<double>(), 0);
    }
  }
  for (std::size_t i = 0; i < endpoints.size(); ++i) {
    for (const std::string& name : {endpoints[i], raw[i]}) {
      EXPECT_TRUE(ok.count({name, "rtt"})) << name;
      if (!name.ends_with("udp")) {
        EXPECT_TRUE(ok.count({name, "throughput"})) << name;
      }
    }
    // The wrapper table has a round-trip row for each endpoint, naming its raw calls.
    const std::string row_start = "  rtt        64 B     " + endpoints[i];
    const auto row = run.output.find(row_start);
    ASSERT_NE(row, std::string::npos) << run.output;
    const std::string line = run.output.substr(row, run.output.find('\n', row) - row);
    EXPECT_NE(line.find(raw[i]), std::string::npos) << line;
  }
}

// Whether `ferry bench --list` says this build can run `name` here.
bool transport_available(const std::string& name) {
  const CliRun run = run_ferry({"bench", "--list"});
  std::istringstream lines(run.output);
  for (std::string line; std::getline(lines, line);) {
    std::istringstream words(line);
    std::string transport, group, here;
    words >> transport >> group >> here;
    if (transport == name) return here == "yes";
  }
  return false;
}

// ferry's rpc, ZeroMQ REQ/REP and (when built: it is optional) gRPC: round
// trips are calls, streams are calls back to back, from one and from several
// calling processes.
TEST(BenchCli, RpcCallsAreMeasuredBesideZmqRequestReply) {
  std::vector<std::string> callers{"ferry.rpc.shm", "ferry.rpc.unix", "ferry.rpc.tcp", "zmq.reqrep"};
  if (transport_available("grpc.unix")) callers.push_back("grpc.unix");
  std::string only;
  for (const std::string& name : callers) only += (only.empty() ? "" : ",") + name;
  const nlohmann::json records =
      bench_records({"--only", only, "--sizes", "4K", "--repetitions", "1", "--budget-ms", "5"}, "ferry-bench-rpc.json");
  ASSERT_TRUE(records.is_array());
  std::set<std::tuple<std::string, std::string, unsigned>> seen;
  for (const nlohmann::json& record : records) {
    SCOPED_TRACE(record.dump());
    const std::string transport = record["transport"];
    if (std::find(callers.begin(), callers.end(), transport) == callers.end()) continue;
    ASSERT_EQ(record["status"], "ok") << record.value("reason", "");
    const std::string pattern = record["pattern"];
    if (pattern == "throughput") {
      EXPECT_GT(record["msgs_per_s"].get<double>(), 0);
    }
    seen.emplace(transport, pattern + "/" + std::to_string(record["size"].get<std::size_t>()),
                 record.value("senders", 1u));
  }
  for (const std::string& transport : callers) {
    EXPECT_TRUE(seen.count({transport, "rtt/64", 1u})) << transport;
    EXPECT_TRUE(seen.count({transport, "wake/64", 1u})) << transport;
    EXPECT_TRUE(seen.count({transport, "throughput/4096", 1u})) << transport;
    for (unsigned senders : {2u, 4u, 8u}) EXPECT_TRUE(seen.count({transport, "throughput/64", senders})) << transport << " " << senders;
  }
  // Nothing of the shm:// endpoints is left in /dev/shm.
  for (const auto& entry : std::filesystem::directory_iterator("/dev/shm")) {
    EXPECT_EQ(entry.path().filename().string().find("ferry.ferry-bench-rpc-"), std::string::npos) << entry.path();
  }
}

#ifdef FERRY_BENCH_HAVE_NATS
// ferry.mailbox.nats and ferry.rpc.nats (built with the nats backend): the
// run starts a nats-server of its own, measures a round trip and a stream
// through JetStream and through core request/reply, and at the end stops the
// server and removes its files.
TEST(BenchCli, NatsMailboxAndRpcAreMeasuredOnTheRunsOwnServer) {
  const std::string json_path = temp_path("ferry-bench-nats.json");
  const CliRun run = run_ferry({"bench", "--only", "ferry.mailbox.nats,ferry.rpc.nats", "--sizes", "64",
                                "--repetitions", "1", "--budget-ms", "1", "--json", json_path});
  ASSERT_EQ(run.signal, 0) << run.output;
  ASSERT_EQ(run.status, 0) << run.output;
  EXPECT_NE(run.output.find("started for this run at nats://127.0.0.1:"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("stopped at the end"), std::string::npos) << run.output;
  expect_no_leftovers(run.pid);
  // The server (its store was in the run's directory) is gone too.
  const std::string run_directory = "ferry-bench." + std::to_string(run.pid) + ".";
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    std::ifstream file(entry.path() / "cmdline");
    const std::string command_line((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
    EXPECT_EQ(command_line.find(run_directory), std::string::npos) << "still running: " << entry.path();
  }
  std::ifstream file(json_path);
  ASSERT_TRUE(file.good()) << run.output;
  const nlohmann::json records = nlohmann::json::parse(file);
  std::filesystem::remove(json_path);
  std::set<std::string> ok;
  for (const nlohmann::json& record : records) {
    if (record["transport"] != "ferry.mailbox.nats" && record["transport"] != "ferry.rpc.nats") continue;
    if (record.contains("senders") && record["senders"] != 1) continue;
    SCOPED_TRACE(record.dump());
    ASSERT_EQ(record["status"], "ok") << record.value("reason", "");
    EXPECT_EQ(record["size"].get<std::size_t>(), 64u);
    if (record["pattern"] == "throughput") {
      EXPECT_GT(record["msgs_per_s"].get<double>(), 0);
    } else {
      EXPECT_GT(record["median_ns"].get<double>(), 0);
    }
    ok.insert(record["transport"].get<std::string>() + " " + record["pattern"].get<std::string>());
  }
  for (const char* expected : {"ferry.mailbox.nats rtt", "ferry.mailbox.nats throughput", "ferry.rpc.nats rtt",
                               "ferry.rpc.nats throughput"}) {
    EXPECT_TRUE(ok.count(expected)) << expected << "\n" << run.output;
  }
}
#endif

TEST(BenchCli, UnknownTransportIsAUsageError) {
  const CliRun run = run_ferry({"bench", "--quick", "--only", "carrier.pigeon"});
  EXPECT_EQ(run.status, 2) << run.output;
  EXPECT_NE(run.output.find("unknown transport 'carrier.pigeon'"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("unix.stream"), std::string::npos) << "should list the transports that exist";
}

TEST(BenchCli, PlotWithoutGnuplotFailsClearlyBeforeMeasuring) {
  const CliRun run = run_ferry({"bench", "--quick", "--only", "pipe", "--plot", temp_path("ferry-bench-test.png")},
                            "/nonexistent");
  EXPECT_EQ(run.signal, 0) << run.output;
  EXPECT_EQ(run.status, 2) << run.output;
  EXPECT_NE(run.output.find("gnuplot"), std::string::npos) << run.output;
  EXPECT_EQ(run.output.find("Round trip"), std::string::npos) << "it must fail before measuring";
}

TEST(BenchCli, ListNamesEveryTransport) {
  const CliRun run = run_ferry({"bench", "--list"});
  ASSERT_EQ(run.status, 0) << run.output;
  for (const char* name : {"floor.spin", "floor.line", "floor.futex", "floor.memcpy", "eventfd", "pipe", "fifo",
                           "unix.stream", "unix.dgram", "tcp", "posix.mq", "sysv.mq", "boost.mq", "zmq.ipc", "nng.ipc",
                           "iceoryx.poll", "iceoryx.waitset", "ferry.channel.poll", "ferry.channel.adaptive",
                           "ferry.channel.block", "ferry.mailbox.poll", "ferry.mailbox.adaptive", "ferry.mailbox.block",
                           "ferry.endpoint.unix", "ferry.endpoint.tcp",
                           "ferry.endpoint.pipe", "ferry.endpoint.unixgram", "ferry.endpoint.udp", "udp", "unix.dgram.bound",
                           "unix.stream.oneway", "unix.stream.epoll", "tcp.oneway", "tcp.epoll", "pipe.epoll",
                           "ferry.rpc.shm", "ferry.rpc.unix", "ferry.rpc.tcp", "zmq.reqrep", "grpc.unix",
                           "ferry.mailbox.nats", "ferry.rpc.nats", "ferry.topic.fanout4.eager"}) {
    EXPECT_NE(run.output.find(name), std::string::npos) << name;
  }
}

}  // namespace
