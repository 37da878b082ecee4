// The benchmark's report: text tables, the JSON records, the gnuplot picture.
#include "ipc_report.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <tuple>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

namespace ferry::bench {

std::string format_rate(double per_second, const char* unit) {
  char text[48];
  if (per_second >= 1e9) {
    std::snprintf(text, sizeof text, "%.2f G%s", per_second / 1e9, unit);
  } else if (per_second >= 1e6) {
    std::snprintf(text, sizeof text, "%.2f M%s", per_second / 1e6, unit);
  } else if (per_second >= 1e3) {
    std::snprintf(text, sizeof text, "%.1f k%s", per_second / 1e3, unit);
  } else {
    std::snprintf(text, sizeof text, "%.0f %s", per_second, unit);
  }
  return text;
}

namespace {

std::string format_ratio(const std::optional<double>& ratio) {
  if (!ratio) return "-";
  char text[32];
  if (*ratio >= 100) {
    std::snprintf(text, sizeof text, "%.0fx", *ratio);
  } else if (*ratio >= 0.1) {
    std::snprintf(text, sizeof text, "%.2fx", *ratio);
  } else {
    std::snprintf(text, sizeof text, "%.2gx", *ratio);
  }
  return text;
}

std::string opt_ns(const std::optional<double>& ns) { return ns ? format_ns(*ns) : "-"; }

// "190-240": the lowest and highest floor probe of a row's repetitions.
std::string floor_range(const Record& record) {
  if (record.repetition_floors.empty()) return "-";
  const auto [low, high] = std::minmax_element(record.repetition_floors.begin(), record.repetition_floors.end());
  char text[32];
  std::snprintf(text, sizeof text, "%.0f-%.0f", *low, *high);
  return text;
}

// One table of the report: a pattern, a size, and for throughput how many senders.
struct Section {
  Pattern pattern;
  std::size_t size;
  unsigned senders;
  bool holds(const Record& record) const {
    return record.pattern == pattern && record.size == size && record.senders == senders;
  }
  friend bool operator==(const Section&, const Section&) = default;
};

const Record* find_record(const std::vector<Record>& records, const std::string& transport, const Section& section) {
  for (const Record& record : records) {
    if (record.transport == transport && section.holds(record)) return &record;
  }
  return nullptr;
}

// Time per message: what the ratios compare (lower is better).
std::optional<double> cost(const Record& record) {
  if (record.status != Status::ok) return std::nullopt;
  if (is_round_trip(record.pattern)) return record.median_ns;
  if (record.msgs_per_s && *record.msgs_per_s > 0) return 1e9 / *record.msgs_per_s;
  return std::nullopt;
}

double median_of(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const std::size_t mid = values.size() / 2;
  return values.size() % 2 ? values[mid] : (values[mid - 1] + values[mid]) / 2;
}

// Time per message in repetition `i` (rtt: its median; throughput: from its
// rate); 0 if that repetition gave nothing.
double repetition_cost(const Record& record, std::size_t i) {
  const double value = record.repetition_values[i];
  if (value <= 0) return 0;
  return is_round_trip(record.pattern) ? value : 1e9 / value;
}

// The median of mine[i] / theirs[i] over the repetitions, so the host's
// drift from one repetition to the next cancels; `overall` (the ratio of the
// medians) when the repetitions do not pair up or one gave nothing.
double median_of_paired(const std::vector<double>& mine, const std::vector<double>& theirs, double overall) {
  if (mine.empty() || mine.size() != theirs.size()) return overall;
  std::vector<double> ratios;
  for (std::size_t i = 0; i < mine.size(); ++i) {
    if (mine[i] <= 0 || theirs[i] <= 0) return overall;
    ratios.push_back(mine[i] / theirs[i]);
  }
  return median_of(std::move(ratios));
}

// How many times slower per message `wrapped` is than `raw`, paired by repetition.
std::optional<double> paired_ratio(const Record& wrapped, const Record& raw) {
  if (!cost(wrapped) || !cost(raw)) return std::nullopt;
  const auto costs = [](const Record& record) {
    std::vector<double> each;
    for (std::size_t i = 0; i < record.repetition_values.size(); ++i) each.push_back(repetition_cost(record, i));
    return each;
  };
  return median_of_paired(costs(wrapped), costs(raw), *cost(wrapped) / *cost(raw));
}

// The same for the CPU time both processes spent per message.
std::optional<double> paired_cpu_ratio(const Record& wrapped, const Record& raw) {
  if (!wrapped.cpu_ns || !raw.cpu_ns) return std::nullopt;
  return median_of_paired(wrapped.repetition_cpu, raw.repetition_cpu, *wrapped.cpu_ns / *raw.cpu_ns);
}

// The sections of the report: the rtt, the wake-up rtt, each throughput
// size, then throughput with several senders.
std::vector<Section> sections(const std::vector<Record>& records) {
  std::vector<Section> list;
  for (const Record& record : records) {
    const Section key{record.pattern, record.size, record.senders};
    if (std::find(list.begin(), list.end(), key) == list.end()) list.push_back(key);
  }
  std::stable_sort(list.begin(), list.end(), [](const Section& a, const Section& b) {
    return std::tie(a.pattern, a.senders, a.size) < std::tie(b.pattern, b.senders, b.size);
  });
  return list;
}

std::string json_status(Status status) { return status_text(status); }

const char* floor_reference(Pattern pattern) { return pattern == Pattern::wake ? "floor.futex" : "floor.spin"; }

constexpr WrapperBaseline kWrapperBaselines[] = {
    {"ferry.endpoint.unix", "unix.stream.epoll", "unix.stream.oneway"},
    {"ferry.endpoint.tcp", "tcp.epoll", "tcp.oneway"},
    {"ferry.endpoint.pipe", "pipe.epoll", "pipe"},
    {"ferry.endpoint.unixgram", "unix.dgram.bound", "unix.dgram"},
    {"ferry.endpoint.udp", "udp", "udp"},
};

}  // namespace

std::span<const WrapperBaseline> wrapper_baselines() noexcept { return kWrapperBaselines; }

namespace {

// Round trips with larger requests (--rtt-sizes), one row per transport: how
// latency grows with the payload, and how the zero-copy ones stay flat.
void print_request_sizes(std::FILE* out, const std::vector<Record>& records) {
  std::vector<std::size_t> sizes;
  std::vector<std::string> order;
  for (const Record& record : records) {
    if (record.pattern != Pattern::rtt) continue;
    if (std::find(sizes.begin(), sizes.end(), record.size) == sizes.end()) sizes.push_back(record.size);
    if (std::find(order.begin(), order.end(), record.transport) == order.end()) order.push_back(record.transport);
  }
  if (sizes.size() < 2) return;
  std::sort(sizes.begin(), sizes.end());
  std::fprintf(out, "\nRound trip against request size (a 64-byte reply; median; zero-copy transports write and read\n"
                    "the first and last 8 bytes of each request, the copying ones move all of it)\n");
  std::fprintf(out, "  %-23s", "transport");
  for (const std::size_t size : sizes) std::fprintf(out, " %9s", size_text(size).c_str());
  std::fprintf(out, " %11s\n", "last/first");
  for (const std::string& name : order) {
    std::fprintf(out, "  %-23s", name.c_str());
    std::optional<double> first, last;
    for (const std::size_t size : sizes) {
      const Record* record = find_record(records, name, Section{Pattern::rtt, size, 1});
      const bool ok = record && record->status == Status::ok && record->median_ns;
      std::fprintf(out, " %9s", ok ? format_ns(*record->median_ns).c_str() : "-");
      if (ok && !first) first = record->median_ns;
      if (ok) last = record->median_ns;
    }
    std::fprintf(out, " %11s\n", first && last ? format_ratio(*last / *first).c_str() : "-");
  }
}

void print_wrapper_costs(std::FILE* out, const std::vector<Record>& records) {
  bool heading = false;
  for (const Section& section : sections(records)) {
    if (section.pattern == Pattern::wake || section.senders != 1) continue;
    const bool round_trip = section.pattern == Pattern::rtt;
    const auto shown = [&](const Record* record) -> std::string {
      if (!record || !cost(*record)) return "-";
      return round_trip ? format_ns(*record->median_ns) : format_rate(*record->msgs_per_s, "/s");
    };
    const auto ratio = [&](const Record* wrapped, const Record* raw) -> std::optional<double> {
      if (!raw) return std::nullopt;
      return paired_ratio(*wrapped, *raw);
    };
    const auto cpu_shown = [&](const Record* record) -> std::string {
      return record && record->cpu_ns ? format_ns(*record->cpu_ns) : "-";
    };
    const auto cpu_ratio = [&](const Record* wrapped, const Record* raw) -> std::optional<double> {
      if (!raw) return std::nullopt;
      return paired_cpu_ratio(*wrapped, *raw);
    };
    for (const auto& [endpoint, same_calls, blocking] : kWrapperBaselines) {
      const Record* wrapped = find_record(records, endpoint, section);
      const Record* same = find_record(records, same_calls, section);
      const Record* bare = find_record(records, blocking, section);
      if (!wrapped || !cost(*wrapped) || (!same && !bare)) continue;
      if (!heading) {
        std::fprintf(out,
                     "\nEndpoint wrappers against raw calls (x: time per message, the median of the ratios within each "
                     "repetition;\n1.10x = 10%% slower). same calls: waits and reads as the endpoint does (its budget: "
                     "1.10x); blocking read:\nsleeps in the read itself. cpu: the CPU time both processes spent per "
                     "message (rtt: round trip),\nendpoint and same calls, x: their ratio (paired as above). Time asleep "
                     "is not in it; waking up and\nthe kernel's work for the message are.\n");
        std::fprintf(out, "  %-10s %-8s %-23s %10s  %-18s %10s %7s  %-18s %10s %7s  %9s %9s %7s\n", "pattern", "size",
                     "endpoint", "endpoint", "same calls", "", "x", "blocking read", "", "x", "cpu", "cpu same", "x");
        heading = true;
      }
      std::fprintf(out, "  %-10s %-8s %-23s %10s  %-18s %10s %7s  %-18s %10s %7s  %9s %9s %7s\n",
                   round_trip ? "rtt" : "throughput", size_text(section.size).c_str(), endpoint, shown(wrapped).c_str(),
                   same_calls, shown(same).c_str(), format_ratio(ratio(wrapped, same)).c_str(), blocking,
                   shown(bare).c_str(), format_ratio(ratio(wrapped, bare)).c_str(), cpu_shown(wrapped).c_str(),
                   cpu_shown(same).c_str(), format_ratio(cpu_ratio(wrapped, same)).c_str());
    }
  }
}

// ferry's rpc beside the request/reply peers, for issue 8's calls: the empty
// call's round trip, a 4 KiB call with one caller (its stream: calls back to
// back) and calls from 4 callers at once. x: the peer's time per call over
// ferry's, so the target against grpc.unix from ferry.rpc.shm reads ">= 50x".
void print_rpc_costs(std::FILE* out, const std::vector<Record>& records) {
  constexpr const char* kCallers[] = {"ferry.rpc.shm", "ferry.rpc.unix", "ferry.rpc.tcp"};
  constexpr const char* kPeers[] = {"zmq.reqrep", "grpc.unix"};
  bool heading = false;
  for (const Section& section : sections(records)) {
    const bool round_trip = section.pattern == Pattern::rtt;
    const bool one_4k = section.pattern == Pattern::throughput && section.senders == 1 && section.size == 4096;
    const bool four_callers = section.pattern == Pattern::throughput && section.senders == 4;
    if (!round_trip && !one_4k && !four_callers) continue;
    const auto shown = [&](const Record* record) -> std::string {
      if (!record || !cost(*record)) return "-";
      return round_trip ? format_ns(*record->median_ns) : format_rate(*record->msgs_per_s, "/s");
    };
    for (const char* caller : kCallers) {
      const Record* ferry = find_record(records, caller, section);
      if (!ferry || !cost(*ferry)) continue;
      if (!heading) {
        std::fprintf(out,
                     "\nRpc calls beside the request/reply peers (x: the peer's time per call over ferry's, how many "
                     "times faster\nferry's call is; the target for ferry.rpc.shm against grpc.unix: 50x).\n");
        std::fprintf(out, "  %-10s %-8s %7s  %-15s %10s  %10s %7s  %10s %7s\n", "pattern", "size", "callers", "ferry",
                     "", kPeers[0], "x", kPeers[1], "x");
        heading = true;
      }
      std::fprintf(out, "  %-10s %-8s %7u  %-15s %10s", round_trip ? "rtt" : "throughput", size_text(section.size).c_str(),
                   section.senders, caller, shown(ferry).c_str());
      for (const char* peer : kPeers) {
        const Record* other = find_record(records, peer, section);
        std::optional<double> ratio;
        if (other && cost(*other)) ratio = *cost(*other) / *cost(*ferry);
        std::fprintf(out, "  %10s %7s", shown(other).c_str(), format_ratio(ratio).c_str());
      }
      std::fprintf(out, "\n");
    }
  }
}

// The host moves the two vCPUs between repetitions now and then, and a run
// that saw both placements is two machines: each row again, from the
// repetitions whose floor probe said near (below 200 ns) and from those that
// said apart, with its ratio to the floor transport's same repetitions
// (times slower per message; wake-up: against floor.futex).
void print_by_placement(std::FILE* out, const std::vector<Record>& records) {
  constexpr double kApart = 200;
  const auto near = [](double floor_ns) { return floor_ns < kApart; };
  // A row's time per message over its repetitions of one placement: the median and how many.
  const auto split = [&](const Record& record, bool want_near) -> std::pair<std::optional<double>, std::size_t> {
    std::vector<double> costs;
    for (std::size_t i = 0; i < record.repetition_values.size() && i < record.repetition_floors.size(); ++i) {
      const double value = repetition_cost(record, i);
      if (near(record.repetition_floors[i]) != want_near || value <= 0) continue;
      costs.push_back(value);
    }
    if (costs.empty()) return {std::nullopt, 0};
    const std::size_t count = costs.size();
    return {median_of(std::move(costs)), count};
  };
  const bool both = std::any_of(records.begin(), records.end(), [&](const Record& record) {
    const auto& floors = record.repetition_floors;
    return std::any_of(floors.begin(), floors.end(), near) &&
           std::any_of(floors.begin(), floors.end(), [&](double ns) { return !near(ns); });
  });
  if (!both) return;
  std::fprintf(out,
               "\nBy placement: the repetitions measured with the vCPUs near (floor probe below %.0f ns) and apart,\n"
               "each a median over those repetitions (n: how many), x: against the floor transport's same ones.\n",
               kApart);
  std::fprintf(out, "  %-21s %-23s %12s %3s %8s   %12s %3s %8s\n", "table", "transport", "near", "n", "x", "apart",
               "n", "x");
  for (const Section& section : sections(records)) {
    if (section.senders != 1) continue;
    const Record* reference = find_record(records, floor_reference(section.pattern), section);
    for (const Record& record : records) {
      if (!section.holds(record) || record.status != Status::ok) continue;
      const std::string table = std::string(pattern_text(section.pattern)) + " " + size_text(section.size);
      std::fprintf(out, "  %-21s %-23s", table.c_str(), record.transport.c_str());
      for (const bool want_near : {true, false}) {
        const auto [cost_ns, count] = split(record, want_near);
        std::optional<double> ratio;
        if (reference && cost_ns) {
          if (const auto reference_ns = split(*reference, want_near).first) ratio = *cost_ns / *reference_ns;
        }
        std::string shown = "-";
        if (cost_ns) shown = is_round_trip(section.pattern) ? format_ns(*cost_ns) : format_rate(1e9 / *cost_ns, "/s");
        std::fprintf(out, "%s%12s %3zu %8s", want_near ? " " : "   ", shown.c_str(), count, format_ratio(ratio).c_str());
      }
      std::fprintf(out, "\n");
    }
  }
}

}  // namespace

const char* status_text(Status status) {
  switch (status) {
    case Status::ok:
      return "ok";
    case Status::not_applicable:
      return "n/a";
    case Status::not_available:
      return "not available";
    case Status::not_running:
      return "not running";
    case Status::none:
    case Status::error:
      break;
  }
  return "error";
}

const char* pattern_text(Pattern pattern) {
  switch (pattern) {
    case Pattern::rtt:
      return "rtt";
    case Pattern::wake:
      return "wake";
    case Pattern::throughput:
      break;
  }
  return "throughput";
}

const char* group_text(Group group) {
  switch (group) {
    case Group::floor:
      return "floor";
    case Group::os:
      return "os";
    case Group::peer:
      return "peer";
    case Group::ferry:
      return "ferry";
  }
  return "?";
}

std::string format_ns(double ns) {
  char text[32];
  if (ns < 1000) {
    std::snprintf(text, sizeof text, "%.0f ns", ns);
  } else if (ns < 10'000) {
    std::snprintf(text, sizeof text, "%.2f us", ns / 1e3);
  } else if (ns < 1'000'000) {
    std::snprintf(text, sizeof text, "%.1f us", ns / 1e3);
  } else {
    std::snprintf(text, sizeof text, "%.2f ms", ns / 1e6);
  }
  return text;
}

void compute_ratios(std::vector<Record>& records) {
  for (const Section& section : sections(records)) {
    // A wake-up is a sleeper's: floor.futex is its floor (floor.spin never sleeps).
    const Record* floor = find_record(records, floor_reference(section.pattern), section);
    const double floor_cost = floor ? cost(*floor).value_or(0) : 0;
    const Record* copy = find_record(records, "floor.memcpy", section);
    const double copy_cost = copy ? cost(*copy).value_or(0) : 0;
    const Record* best = nullptr;
    double best_cost = 0;
    for (const Record& record : records) {
      if (!section.holds(record) || record.group != Group::peer) continue;
      const double mine = cost(record).value_or(0);
      if (mine > 0 && (best == nullptr || mine < best_cost)) {
        best = &record;
        best_cost = mine;
      }
    }
    const std::string best_name = best ? best->transport : "";
    for (Record& record : records) {
      if (!section.holds(record)) continue;
      const double mine = cost(record).value_or(0);
      if (mine <= 0) continue;
      if (floor_cost > 0) record.vs_floor = mine / floor_cost;
      if (copy_cost > 0) record.vs_memcpy = mine / copy_cost;
      if (best_cost > 0) {
        record.vs_best_peer = mine / best_cost;
        record.best_peer = best_name;
      }
    }
  }
}

void print_report(std::FILE* out, const RunInfo& info, const std::vector<Record>& records) {
  std::fprintf(out, "ferry bench: IPC transports side by side, two processes");
  if (info.pinned) {
    std::fprintf(out, ", initiator pinned to CPU %d, responder to CPU %d", info.cpu[0], info.cpu[1]);
  } else {
    std::fprintf(out, ", not pinned (fewer than 2 CPUs allowed)");
  }
  std::fprintf(out, "; %s, %ld CPUs online\n", info.kernel.c_str(), info.cpus_online);
  std::fprintf(out,
               "%s run: %d interleaved repetitions, each measurement %d ms after a %d ms warm-up; took %.1f s\n",
               info.quick ? "quick" : "full", info.repetitions, info.budget_ms, info.warmup_ms, info.seconds);
  if (!info.roudi.empty()) std::fprintf(out, "iceoryx: %s\n", info.roudi.c_str());
  if (!info.nats_server.empty()) std::fprintf(out, "nats: %s\n", info.nats_server.c_str());
  std::fprintf(out,
               "Figures: medians over the repetitions (rtt: of their medians; p99, p99.9: all samples pooled).\n"
               "floor: the cache-line round trip the same two processes measured right before, median over the\n"
               "       repetitions, and its range in ns (~60 ns: vCPUs near each other; 300-400 ns: the host had\n"
               "       moved them apart; a figure taken far is slower than it would be near).\n"
               "x floor, x peer, x memcpy: times slower per message than floor.spin, than the fastest peer\n"
               "       library, than one process copying alone (floor.memcpy).\n"
               "queues: %zu messages deep in a round trip (one is ever in flight; ferry's Channel: a ring of %zu\n"
               "       records), ~%zu MiB in a stream (%zu to %zu messages; the Channel: a %zu MiB ring).\n",
               kRoundTripDepth, kRoundTripDepth, kRingBytes >> 20, queue_depth(kRingBytes),
               queue_depth(std::size_t{1}), kRingBytes >> 20);

  constexpr int kName = 23;
  for (const Section& section : sections(records)) {
    const auto [pattern, size, senders] = section;
    std::string best;
    for (const Record& record : records) {
      if (section.holds(record) && !record.best_peer.empty()) best = record.best_peer;
    }
    if (is_round_trip(pattern)) {
      if (pattern == Pattern::rtt) {
        std::fprintf(out, "\nRound trip, %s (ping-pong)%s%s\n", size_text(size).c_str(),
                     best.empty() ? "" : "; fastest peer: ", best.c_str());
      } else {
        std::fprintf(out, "\nWake-up round trip, %s (the initiator idles %s before each ping; x floor: against "
                     "floor.futex)%s%s\n",
                     size_text(size).c_str(), format_ns(static_cast<double>(kWakeIdleNs)).c_str(),
                     best.empty() ? "" : "; fastest peer: ", best.c_str());
      }
      std::fprintf(out, "  %-*s %10s %10s %10s %9s %11s %9s %9s %8s\n", kName, "transport", "median", "p99", "p99.9",
                   "floor", "floor range", "x floor", "x peer", "samples");
    } else {
      const std::string many = senders > 1 ? ", " + std::to_string(senders) + " sending processes" : "";
      std::fprintf(out, "\nOne-way throughput, %s messages%s%s%s\n", size_text(size).c_str(), many.c_str(),
                   best.empty() ? "" : "; fastest peer: ", best.c_str());
      std::fprintf(out, "  %-*s %12s %12s %9s %11s %9s %9s %9s\n", kName, "transport", "messages/s", "bytes/s",
                   "floor", "floor range", "x floor", "x peer", "x memcpy");
    }
    for (const Record& record : records) {
      if (!section.holds(record)) continue;
      if (record.status != Status::ok) {
        std::fprintf(out, "  %-*s %s: %s\n", kName, record.transport.c_str(), status_text(record.status),
                     record.reason.c_str());
        continue;
      }
      if (is_round_trip(pattern)) {
        std::fprintf(out, "  %-*s %10s %10s %10s %9s %11s %9s %9s %8zu\n", kName, record.transport.c_str(),
                     opt_ns(record.median_ns).c_str(), opt_ns(record.p99_ns).c_str(), opt_ns(record.p999_ns).c_str(),
                     opt_ns(record.floor_ns).c_str(), floor_range(record).c_str(), format_ratio(record.vs_floor).c_str(),
                     format_ratio(record.vs_best_peer).c_str(), record.samples);
      } else {
        std::fprintf(out, "  %-*s %12s %12s %9s %11s %9s %9s %9s\n", kName, record.transport.c_str(),
                     format_rate(record.msgs_per_s.value_or(0), "/s").c_str(),
                     format_rate(record.bytes_per_s.value_or(0), "B/s").c_str(), opt_ns(record.floor_ns).c_str(),
                     floor_range(record).c_str(), format_ratio(record.vs_floor).c_str(),
                     format_ratio(record.vs_best_peer).c_str(), format_ratio(record.vs_memcpy).c_str());
      }
    }
  }

  print_request_sizes(out, records);
  print_wrapper_costs(out, records);
  print_rpc_costs(out, records);
  print_by_placement(out, records);

  if (!info.all_floors.empty()) {
    std::vector<double> floors = info.all_floors;
    std::sort(floors.begin(), floors.end());
    const auto apart = std::count_if(floors.begin(), floors.end(), [](double ns) { return ns > 200; });
    std::fprintf(out,
                 "\nFloor probes (cache-line round trip before each of the %zu measurements): min %s, median %s, "
                 "max %s; %zu above 200 ns (vCPUs apart or a busy host)\n",
                 floors.size(), format_ns(floors.front()).c_str(), format_ns(floors[floors.size() / 2]).c_str(),
                 format_ns(floors.back()).c_str(), static_cast<std::size_t>(apart));
  }
  if (!info.spin_rtt_by_rep.empty()) {
    std::fprintf(out, "floor.spin round trip, per repetition in order:");
    for (const double ns : info.spin_rtt_by_rep) std::fprintf(out, " %s", format_ns(ns).c_str());
    std::fprintf(out, "\n");
  }
  std::fprintf(out, "What each transport does exactly: ferry bench --list\n");
}

std::string write_json(const std::string& path, const std::vector<Record>& records) {
  nlohmann::json array = nlohmann::json::array();
  const auto number = [](const std::optional<double>& value) -> nlohmann::json {
    if (!value || !std::isfinite(*value)) return nullptr;
    return *value;
  };
  for (const Record& record : records) {
    nlohmann::json item;
    item["transport"] = record.transport;
    item["group"] = group_text(record.group);
    item["pattern"] = pattern_text(record.pattern);
    item["size"] = record.size;
    item["status"] = json_status(record.status);
    if (record.status != Status::ok) item["reason"] = record.reason;
    item["median_ns"] = number(record.median_ns);
    item["p99_ns"] = number(record.p99_ns);
    item["p999_ns"] = number(record.p999_ns);
    item["msgs_per_s"] = number(record.msgs_per_s);
    item["bytes_per_s"] = number(record.bytes_per_s);
    item["floor_ns"] = number(record.floor_ns);
    item["cpu_ns"] = number(record.cpu_ns);
    item[record.pattern == Pattern::wake ? "vs_floor_futex" : "vs_floor_spin"] = number(record.vs_floor);
    item["vs_best_peer"] = number(record.vs_best_peer);
    if (record.pattern == Pattern::throughput) {
      item["vs_memcpy"] = number(record.vs_memcpy);
      item["senders"] = record.senders;
    }
    if (!record.best_peer.empty()) item["best_peer"] = record.best_peer;
    if (is_round_trip(record.pattern) && record.status == Status::ok) item["samples"] = record.samples;
    nlohmann::json repetitions = nlohmann::json::array();
    for (std::size_t i = 0; i < record.repetition_values.size(); ++i) {
      nlohmann::json one;
      one[is_round_trip(record.pattern) ? "median_ns" : "msgs_per_s"] = record.repetition_values[i];
      one["floor_ns"] = i < record.repetition_floors.size() ? record.repetition_floors[i] : 0.0;
      if (i < record.repetition_cpu.size()) one["cpu_ns"] = record.repetition_cpu[i];
      repetitions.push_back(std::move(one));
    }
    item["repetitions"] = std::move(repetitions);
    if (!record.description.empty()) item["description"] = record.description;
    array.push_back(std::move(item));
  }
  std::ofstream file(path, std::ios::trunc);
  if (!file) return "cannot open " + path + ": " + std::strerror(errno);
  file << array.dump(2) << '\n';
  file.close();
  if (!file) return "cannot write " + path + ": " + std::strerror(errno);
  return {};
}

std::string find_executable(const std::string& name, bool system_directories) {
  std::vector<std::string> directories;
  if (const char* path = std::getenv("PATH")) {
    std::stringstream list(path);
    std::string directory;
    while (std::getline(list, directory, ':')) {
      if (!directory.empty()) directories.push_back(directory);
    }
  }
  if (system_directories) {
    // sbin too: Debian installs daemons there (nats-server), and a user's PATH may lack it.
    for (const char* fallback : {"/usr/bin", "/usr/local/bin", "/bin", "/usr/sbin", "/usr/local/sbin"}) {
      directories.emplace_back(fallback);
    }
  }
  for (const std::string& directory : directories) {
    const std::string candidate = directory + "/" + name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return {};
}

std::string find_gnuplot() { return find_executable("gnuplot", false); }

namespace {

std::string quoted(const std::string& text) {
  std::string out = "\"";
  for (const char c : text) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

const char* group_colour(Group group) {
  switch (group) {
    case Group::floor:
      return "0x888888";
    case Group::os:
      return "0x4477aa";
    case Group::peer:
      return "0xcc6677";
    case Group::ferry:
      return "0x228833";
  }
  return "0x000000";
}

// One colour per line of a line chart (colour-blind safe first).
constexpr const char* kLineColours[] = {"#000000", "#e69f00", "#56b4e9", "#009e73", "#d55e00", "#0072b2",
                                        "#cc79a7", "#999999", "#8c510a", "#01665e", "#762a83", "#e7298a",
                                        "#66a61e", "#a6761d", "#1b9e77", "#7570b3", "#e6ab02", "#666666"};

// Lines against message size, one per transport, on log-log axes: the
// throughput chart and the request-size chart.
struct SizeChart {
  std::map<std::string, std::vector<std::pair<std::size_t, double>>> lines;
  std::vector<std::string> order;  // as first measured
  std::map<std::string, Group> groups;
  std::vector<std::size_t> sizes;  // every size measured, plotted or not

  void add_size(std::size_t size) {
    if (std::find(sizes.begin(), sizes.end(), size) == sizes.end()) sizes.push_back(size);
    std::sort(sizes.begin(), sizes.end());
  }
  void add(const Record& record, double value) {
    if (!lines.count(record.transport)) order.push_back(record.transport);
    lines[record.transport].emplace_back(record.size, value);
    groups[record.transport] = record.group;
  }
  // The data block `$name`, then `axes` (title and labels) and the plot.
  void draw(std::ostringstream& script, const char* name, const char* axes, const char* nothing) const {
    script << "$" << name << " << EOD\n";
    for (const std::string& transport : order) {
      for (const auto& [size, value] : lines.at(transport)) script << size << " " << value << "\n";
      script << "\n\n";
    }
    script << "EOD\n" << axes
           << "unset logscale\nunset label\nset logscale xy\nset xtics norotate\nset grid xtics ytics\n"
              "set key outside right top\nunset xrange\n";
    if (!sizes.empty()) {
      script << "set xtics (";
      for (std::size_t i = 0; i < sizes.size(); ++i) script << (i ? ", " : "") << quoted(size_text(sizes[i])) << " " << sizes[i];
      script << ")\nset xrange [" << static_cast<double>(sizes.front()) / 1.5 << ":"
             << static_cast<double>(sizes.back()) * 1.5 << "]\n";
    }
    if (order.empty()) {
      script << "set label 2 " << quoted(nothing) << " at graph 0.5, graph 0.5 center\nunset logscale\n"
                "plot [0:1] [0:1] NaN notitle\n";
      return;
    }
    script << "plot ";
    for (std::size_t i = 0; i < order.size(); ++i) {
      const Group group = groups.at(order[i]);
      const char* dash = group == Group::floor ? "dt 2" : (group == Group::peer ? "dt 4" : "dt 1");
      script << (i ? ", " : "") << "$" << name << " index " << i << " using 1:2 with linespoints lw 2 " << dash
             << " lc rgb \"" << kLineColours[i % std::size(kLineColours)] << "\" title " << quoted(order[i]);
    }
    script << "\n";
  }
};

std::string gnuplot_script(const std::string& path, const RunInfo& info, const std::vector<Record>& records) {
  std::ostringstream script;
  char title[256];
  std::snprintf(title, sizeof title, "ferry bench: %s run, %d repetitions, %s; bars: grey floors, blue kernel, red peers, green ferry; lines: dashed floors, dotted peers",
                info.quick ? "quick" : "full", info.repetitions, info.kernel.c_str());
  // Round trips at several request sizes get a third panel.
  SizeChart requests;
  for (const Record& record : records) {
    if (record.pattern != Pattern::rtt) continue;
    requests.add_size(record.size);
    if (record.status == Status::ok && record.median_ns) requests.add(record, *record.median_ns / 1e3);
  }
  const bool by_request_size = requests.sizes.size() > 1;
  script << "set terminal pngcairo size " << (by_request_size ? 2400 : 1600) << ",900 noenhanced font \"sans,10\"\n";
  script << "set output " << quoted(path) << "\n";
  script << "set encoding utf8\n";
  script << "set multiplot layout 1," << (by_request_size ? 3 : 2) << " title " << quoted(title) << "\n";

  // Left: the round trip of every transport that has one.
  script << "$rtt << EOD\n";
  int bars = 0;
  for (const Record& record : records) {
    if (record.pattern != Pattern::rtt || record.size != kRttSize || record.status != Status::ok || !record.median_ns) {
      continue;
    }
    script << quoted(record.transport) << " " << *record.median_ns / 1e3 << " "
           << record.p99_ns.value_or(*record.median_ns) / 1e3 << " " << group_colour(record.group) << "\n";
    ++bars;
  }
  script << "EOD\n";
  script << "set title \"Round trip, 64 B: median (bar) and p99 (line)\"\n"
            "set logscale y\nset ylabel \"microseconds (log scale)\"\nset grid ytics\n"
            "set xtics rotate by -50 nomirror\nset style fill solid 0.7 border -1\nset boxwidth 0.7\n"
            "set key top left\n";
  if (bars > 0) {
    script << "set xrange [-0.7:" << bars - 0.3 << "]\n";
    script << "plot $rtt using 0:2:4:xtic(1) with boxes lc rgb variable title \"median\", "
              "$rtt using 0:2:2:3 with yerrorbars lc rgb \"black\" ps 0 title \"p99\"\n";
  } else {
    script << "set label 1 \"no round trip measured\" at graph 0.5, graph 0.5 center\nunset logscale y\n"
              "plot [0:1] [0:1] NaN notitle\nunset label 1\n";
  }

  // Middle: throughput against message size, one line per transport.
  SizeChart throughput;
  for (const Record& record : records) {
    if (record.pattern != Pattern::throughput || record.senders != 1) continue;
    throughput.add_size(record.size);
    if (record.status == Status::ok && record.bytes_per_s) throughput.add(record, *record.bytes_per_s / 1e9);
  }
  throughput.draw(script, "tp",
                  "set title \"One-way throughput against message size\"\nset xlabel \"message size\"\n"
                  "set ylabel \"GB/s (log scale)\"\n",
                  "no throughput measured");
  if (by_request_size) {
    requests.draw(script, "req",
                  "set title \"Round trip against request size (64 B reply): median\"\nset xlabel \"request size\"\n"
                  "set ylabel \"microseconds (log scale)\"\n",
                  "no round trip measured");
  }
  script << "unset multiplot\nset output\n";
  return script.str();
}

}  // namespace

std::string plot(const std::string& path, const RunInfo& info, const std::vector<Record>& records) {
  const std::string gnuplot = find_gnuplot();
  if (gnuplot.empty()) return "gnuplot is not installed (Debian: apt-get install gnuplot-nox)";
  const std::string script = gnuplot_script(path, info, records);

  char error_path[] = "/tmp/ferry-bench-gnuplot.XXXXXX";
  const int error_fd = ::mkstemp(error_path);
  if (error_fd < 0) return std::string("mkstemp: ") + std::strerror(errno);
  ::unlink(error_path);
  int input[2];
  if (::pipe2(input, O_CLOEXEC) != 0) {
    ::close(error_fd);
    return std::string("pipe2: ") + std::strerror(errno);
  }
  std::fflush(stdout);
  std::fflush(stderr);
  const pid_t child = ::fork();
  if (child < 0) {
    ::close(error_fd);
    ::close(input[0]);
    ::close(input[1]);
    return std::string("fork: ") + std::strerror(errno);
  }
  if (child == 0) {
    ::dup2(input[0], STDIN_FILENO);
    ::dup2(error_fd, STDOUT_FILENO);
    ::dup2(error_fd, STDERR_FILENO);
    ::signal(SIGPIPE, SIG_DFL);
    const char* arguments[] = {"gnuplot", nullptr};
    ::execv(gnuplot.c_str(), const_cast<char* const*>(arguments));
    ::_exit(127);
  }
  ::close(input[0]);
  const auto previous = ::signal(SIGPIPE, SIG_IGN);
  std::size_t written = 0;
  while (written < script.size()) {
    const ssize_t n = ::write(input[1], script.data() + written, script.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    written += static_cast<std::size_t>(n);
  }
  ::close(input[1]);
  ::signal(SIGPIPE, previous);
  int status = 0;
  // gnuplot draws this in well under a second; a minute means it is stuck.
  pid_t done = 0;
  for (int waited_ms = 0; (done = ::waitpid(child, &status, WNOHANG)) == 0 && waited_ms < 60'000; waited_ms += 10) {
    ::usleep(10'000);
  }
  if (done == 0) {
    ::kill(child, SIGKILL);
    ::waitpid(child, &status, 0);
  }
  std::string messages;
  char buffer[4096];
  ::lseek(error_fd, 0, SEEK_SET);
  ssize_t n = 0;
  while ((n = ::read(error_fd, buffer, sizeof buffer)) > 0) messages.append(buffer, static_cast<std::size_t>(n));
  ::close(error_fd);
  while (!messages.empty() && std::isspace(static_cast<unsigned char>(messages.back()))) messages.pop_back();
  if (done == 0) return "gnuplot did not finish within a minute";
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return "gnuplot failed" + (messages.empty() ? std::string() : ": " + messages);
  }
  struct stat drawn{};
  if (::stat(path.c_str(), &drawn) != 0 || drawn.st_size == 0) {
    return "gnuplot wrote no picture to " + path + (messages.empty() ? std::string() : ": " + messages);
  }
  return {};
}

}  // namespace ferry::bench
