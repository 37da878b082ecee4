// ferry: list, inspect, remove and garbage-collect IPC objects; benchmark transports.
#include <CLI/CLI.hpp>
#include <cstdio>

#include "commands.hpp"
#ifdef FERRY_CLI_HAVE_BENCH
#include "ipc_bench.hpp"
#endif

int main(int argc, char** argv) {
  CLI::App app{"ferry: inter-process communication objects on this machine"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "ferry 0.1.0");
  int status = 0;

  ferry::cli::ListOptions list;
  auto* ls = app.add_subcommand("ls", "List ferry objects: name, kind, size, owner, mode, persistence, "
                                      "attached live processes");
  ls->add_flag("--json", list.json, "Print JSON instead of a table");
  ls->add_option("paths", list.file_paths, "File segments to include (they live anywhere on disk)");
  ls->callback([&] { status = ferry::cli::list(list); });

  std::vector<std::string> locators;
  auto* rm = app.add_subcommand("rm", "Remove objects by name (as 'ferry ls' prints them)");
  rm->add_option("names", locators, "orders | file:/path | sysv:0xKEY")->required();
  rm->callback([&] { status = ferry::cli::remove(locators); });

  ferry::cli::GcOptions gc;
  auto* collect = app.add_subcommand(
      "gc", "Remove process-persistent objects whose processes are all dead");
  collect->add_flag("--dry-run,-n", gc.dry_run, "Only report what would be removed");
  collect->add_flag("--json", gc.json, "Print JSON");
  collect->add_option("paths", gc.file_paths, "File segments to consider as well");
  collect->callback([&] { status = ferry::cli::collect_garbage(gc); });

#ifdef FERRY_CLI_HAVE_BENCH
  ferry::bench::Options bench_options;
  auto* bench = app.add_subcommand(
      "bench", "Measure IPC transports side by side: round trip and throughput of pipes, sockets, message "
               "queues, Boost, ZeroMQ, NNG, iceoryx and ferry, against the shared-memory floor");
  ferry::bench::add_options(*bench, bench_options);
  bench->callback([&] { status = ferry::bench::run_command(bench_options); });
#else
  auto* bench = app.add_subcommand("bench", "Measure IPC transports (not in this build)");
  bench->allow_extras();
  bench->callback([&] {
    std::fprintf(stderr, "ferry bench: this ferry was built without the benchmark "
                         "(configure with -DFERRY_BUILD_BENCHMARKS=ON)\n");
    status = 2;
  });
#endif

  CLI11_PARSE(app, argc, argv);
  return status;
}
