// The results of a benchmark run and their three renderings: the text table,
// the JSON array and the gnuplot picture.
#pragma once

#include <cstddef>
#include <cstdio>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "ipc_worker.hpp"

namespace ferry::bench {

// One transport × pattern × size, summarised over the repetitions.
struct Record {
  std::string transport;
  Group group = Group::os;
  std::string description;
  Pattern pattern = Pattern::rtt;
  std::size_t size = 0;
  unsigned senders = 1;                // throughput: sending processes
  Status status = Status::none;
  std::string reason;                  // why it is not "ok"
  std::optional<double> median_ns;     // rtt: median of the repetition medians
  std::optional<double> p99_ns;        // rtt: over all samples of all repetitions
  std::optional<double> p999_ns;
  std::optional<double> msgs_per_s;    // throughput: median of the repetition rates
  std::optional<double> bytes_per_s;
  std::optional<double> floor_ns;      // median of the floor probes taken with it
  std::optional<double> vs_floor;      // times slower than floor.spin (wake: floor.futex), per message
  std::optional<double> vs_best_peer;  // times slower than the fastest peer library
  std::optional<double> vs_memcpy;     // throughput: times slower than floor.memcpy
  std::string best_peer;
  std::vector<double> repetition_values;  // rtt: median ns; throughput: msgs/s
  std::vector<double> repetition_floors;  // ns
  std::optional<double> cpu_ns;           // CPU time of both processes per message (rtt: round trip), median
  std::vector<double> repetition_cpu;     // ns, when every repetition measured it
  std::size_t samples = 0;                // rtt: round trips timed in all
};

struct RunInfo {
  std::string kernel;
  long cpus_online = 0;
  bool pinned = false;
  int cpu[2] = {-1, -1};
  bool quick = false;
  int repetitions = 0;
  int budget_ms = 0;
  int warmup_ms = 0;
  double seconds = 0;
  std::string roudi;                    // how iox-roudi fared, "" if not needed
  std::string nats_server;              // how the run's nats-server fared, "" if not needed
  std::vector<double> all_floors;       // every floor probe of the run, in order
  std::vector<double> spin_rtt_by_rep;  // floor.spin's rtt median, per repetition
};

const char* status_text(Status status);  // "ok", "n/a", "not available", "not running", "error"
const char* pattern_text(Pattern pattern);
const char* group_text(Group group);

// Each ferry endpoint beside raw OS calls doing the same job: `same_calls`
// waits and reads as the endpoint does (streams: epoll_wait, then read), so
// the ratio is what ferry's wrapper costs (its budget is 10%); `blocking`
// sleeps in the read itself, which a receiver of one sender could do (for
// UNIX datagrams: a socketpair, whose receiver is connected to its one sender).
struct WrapperBaseline {
  const char* endpoint;
  const char* same_calls;
  const char* blocking;
};
std::span<const WrapperBaseline> wrapper_baselines() noexcept;

// Fills vs_floor, vs_best_peer, vs_memcpy and best_peer.
void compute_ratios(std::vector<Record>& records);
void print_report(std::FILE* out, const RunInfo& info, const std::vector<Record>& records);
// "" on success, else why not.
std::string write_json(const std::string& path, const std::vector<Record>& records);
// The path of `name` on PATH (and, with `system_directories`, in /usr/bin,
// /usr/local/bin, /bin, /usr/sbin, /usr/local/sbin), or "" when it is not there.
std::string find_executable(const std::string& name, bool system_directories);
std::string find_gnuplot();  // on PATH only: its path, or "" when it is not installed
std::string plot(const std::string& path, const RunInfo& info, const std::vector<Record>& records);

std::string format_ns(double ns);
std::string format_rate(double per_second, const char* unit);  // "2.03 Mmsg/s", "984.6 MB/s"

}  // namespace ferry::bench
