// ferry's transport benchmark: the kernel's IPC mechanisms, the peer libraries
// (Boost.Interprocess, ZeroMQ, NNG, iceoryx) and ferry's own transports,
// measured side by side between two pinned processes, in one interleaved run.
// Used by `ferry bench` (tools/ferry); the code lives in the ferry_bench_lib library.
//
//   return run_command(options);     // measures, prints, writes --json / --plot; the exit status
//
// The command line (`ferry bench --quick --only … --json FILE`) that fills
// Options is tools/ferry's: CLI11 is compiled in one file only.
//
// Exit status: 0 when the run completed (a transport that failed or could not
// run is a row of the report, not a failure of the run), 1 when --json or
// --plot could not be written, 2 for a usage error (unknown transport, bad
// size, gnuplot missing for --plot: checked before measuring), 130 when
// interrupted (everything started is stopped and removed first).
#pragma once

#include <string>
#include <vector>

namespace ferry::bench {

struct Options {
  bool quick = false;             // 4 repetitions of 20 ms: under a minute in all
  std::string json_path;          // "": no JSON
  std::string plot_path;          // "": no plot
  std::vector<std::string> only;  // transport names; empty: all (floor.spin is always measured)
  std::vector<std::string> sizes; // throughput message sizes ("64", "4K", "1M"); empty: 64 B, 4 KiB, 64 KiB, 1 MiB
  std::vector<std::string> rtt_sizes;  // round-trip request sizes (64-byte reply above 64 B); empty: 64 B
  int repetitions = 0;            // 0: the default of --quick or of the full run
  int budget_ms = 0;              // timed part of one measurement; 0: the default
  bool list = false;              // list the transports and exit
};

int run_command(const Options& options);

}  // namespace ferry::bench
