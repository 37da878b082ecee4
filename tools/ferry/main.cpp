// ferry: list, inspect, remove and garbage-collect IPC objects; send to and
// receive from mailboxes; benchmark transports.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>

#include "commands.hpp"
#ifdef FERRY_CLI_HAVE_BENCH
#include "ipc_bench.hpp"

namespace {
// The flags of `ferry bench` (ferry::bench::run_command measures).
void add_bench_options(CLI::App& command, ferry::bench::Options& options) {
  command.add_flag("--quick", options.quick, "A short run: 4 repetitions of 20 ms per measurement, under a minute");
  command.add_option("--json", options.json_path, "Also write the results to FILE: a JSON array of records")
      ->type_name("FILE");
  command.add_option("--plot", options.plot_path, "Also draw the comparison into FILE (PNG, needs gnuplot)")
      ->type_name("FILE.png");
  const auto add_list = [&](const char* name, std::vector<std::string>& values, const char* help, const char* type) {
    command.add_option(name, values, help)->delimiter(',')->type_name(type);
  };
  add_list("--only", options.only,
           "Measure only these transports, comma-separated (floor.spin, the reference, always runs)", "NAME,...");
  add_list("--sizes", options.sizes, "Throughput message sizes (default 64,4K,64K,1M; 16 B to 64 MiB)", "SIZE,...");
  add_list("--rtt-sizes", options.rtt_sizes,
           "Round-trip request sizes, each answered with 64 B (default 64; 16 B to 64 MiB)", "SIZE,...");
  command.add_option("--repetitions", options.repetitions, "Interleaved repetitions (default 4 quick, 9 full)")
      ->check(CLI::Range(1, 1000));
  command.add_option("--budget-ms", options.budget_ms,
                     "Timed length of one measurement, after its warm-up (default 40 quick, 150 full)")
      ->check(CLI::Range(1, 60000));
  command.add_flag("--list", options.list, "List the transports, whether they can run here and what each measures");
}
}  // namespace
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
  ls->add_option("paths", list.file_paths, "File segments and file-system-persistent mailboxes (directories) to include: they live anywhere on disk; or nats://SERVERS: the mailboxes on those NATS servers");
  ls->callback([&] {
#ifdef FERRY_CLI_HAVE_NATS
    if (list.file_paths.size() == 1 && ferry::cli::is_nats(list.file_paths[0])) {
      status = ferry::cli::list_nats(list.file_paths[0], list.json);
      return;
    }
#endif
    status = ferry::cli::list(list);
  });

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

  // Seconds, fractions allowed, up to a century (a deadline counts nanoseconds
  // in 64 bits). Not CLI::Range: NaN passes its comparisons.
  const CLI::Validator seconds(
      [](std::string& text) -> std::string {
        char* end = nullptr;
        const double value = std::strtod(text.c_str(), &end);
        if (end == text.c_str() || *end != '\0' || !(value >= 0 && value <= 100 * 365.25 * 86400)) {
          return "seconds from 0 to a century, not '" + text + "'";
        }
        return {};
      },
      "");
  const auto timeout_option = [&seconds](CLI::App& command, std::optional<double>& timeout, const std::string& help) {
    command.add_option_function<double>("--timeout", [&timeout](double value) { timeout = value; }, help)
        ->check(seconds)
        ->type_name("SECONDS");
  };

  // send, recv, listen and pipe take mailboxes and endpoints alike.
  const std::string kTargetHelp =
      "A mailbox NAME (or a file-system mailbox's /directory), or an endpoint: shm://NAME, unix:///path, "
      "unixgram:///path, tcp://host:port, udp://host:port, pipe:fd=N, nats://host:port/NAME";

  ferry::cli::StatOptions stat;
  auto* stat_command = app.add_subcommand("stat", "Show one mailbox: capacity, mode, owner, messages queued per "
                                                  "priority, leased, counters, senders; or one topic: policy, "
                                                  "publishers, subscribers with their lag and losses");
  stat_command->add_option("name", stat.name, "Mailbox or topic name, or an rpc endpoint shm://NAME (also: its "
                                               "servers and calls in flight with their ages), or a mailbox on NATS "
                                               "nats://host:port/NAME (bands: waiting, leased, redelivered)")->required();
  stat_command->add_flag("--json", stat.json, "Print JSON");
  stat_command->callback([&] {
#ifdef FERRY_CLI_HAVE_NATS
    if (ferry::cli::is_nats(stat.name)) {
      status = ferry::cli::stat_nats(stat);
      return;
    }
#endif
    if (ferry::cli::is_rpc_endpoint(stat.name)) {
      status = ferry::cli::stat_rpc_endpoint(stat);
    } else {
      status = ferry::cli::is_topic(stat.name) ? ferry::cli::stat_topic(stat) : ferry::cli::stat_mailbox(stat);
    }
  });

  ferry::cli::CallOptions call;
  auto* call_command = app.add_subcommand(
      "call", "Call METHOD of the rpc server at ENDPOINT with PAYLOAD (default: all of stdin) and print the reply");
  call_command->add_option("endpoint", call.endpoint, "shm://NAME, unix:///path or tcp://host:port")->required();
  call_command->add_option("method", call.method, "The method's name")->required();
  call_command->add_option_function<std::string>("payload", [&call](const std::string& text) { call.payload = text; },
                                                 "The request's bytes (default: stdin)");
  timeout_option(*call_command, call.timeout_seconds, "Give up (exit 1) without a reply this long (default: wait)");
  call_command->add_flag("--idempotent", call.idempotent, "Safe to run again on another server if its server dies");
  call_command->callback([&] { status = ferry::cli::call_method(call); });

  ferry::cli::SendMessagesOptions send;
  auto* send_command = app.add_subcommand(
      "send", "Send each MESSAGE to a mailbox or endpoint as one message, or, without any, each line of stdin "
              "(without its newline)");
  send_command->add_option("target", send.name, kTargetHelp)->required();
  send_command->add_option("messages", send.messages, "Messages to send (default: the lines of stdin)");
  send_command->add_option("--priority", send.priority, "0 (lowest, the default) .. 31")->check(CLI::Range(0u, 31u));
  send_command->add_flag("--urgent", send.urgent, "Overtake every message queued");
  timeout_option(*send_command, send.timeout_seconds,
                 "Give up (exit 1) when the mailbox stays full this long (default: wait)");
  send_command->add_flag("--json", send.json, "Print {\"sent\": n}");
  send_command->callback([&] {
    status = ferry::cli::is_endpoint(send.name) ? ferry::cli::send_to_endpoint(send) : ferry::cli::send_messages(send);
  });

  ferry::cli::ReceiveMessagesOptions receive;
  auto* receive_command = app.add_subcommand(
      "recv", "Receive messages from a mailbox (or at an endpoint) and print each on a line of its own, as sent");
  receive_command->add_option("target", receive.name, kTargetHelp)->required();
  receive_command->add_option("--count", receive.count,
                              "Messages to receive (default 1; 0: until none comes within the timeout, or "
                              "without one until the mailbox is empty)");
  timeout_option(*receive_command, receive.timeout_seconds,
                 "Wait at most this long for each message (default: forever); fewer than --count is exit 1");
  receive_command->add_flag("--json",
                            receive.json,
                            "Print each as a JSON line: data, priority, urgent, sender {uid, gid, pid, "
                            "pid_attested}, delivery_count, sequence. Bytes that are not UTF-8 show as U+FFFD in "
                            "data, and data_base64 then holds the exact bytes");
  receive_command->callback([&] {
    status = ferry::cli::is_endpoint(receive.name) ? ferry::cli::receive_from_endpoint(receive)
                                                   : ferry::cli::receive_messages(receive);
  });

  ferry::cli::ListenEndpointOptions listen;
  auto* listen_command = app.add_subcommand(
      "listen", "Receive at an endpoint (or from a mailbox) and print each message as it arrives, until --count, "
                "--timeout or SIGINT/SIGTERM; 'listening at ENDPOINT' goes to stderr (a tcp port 0 shows the bound one)");
  listen_command->add_option("target", listen.endpoint, kTargetHelp)->required();
  listen_command->add_option("--count", listen.count, "Stop after this many messages (default 0: no limit)");
  timeout_option(*listen_command, listen.timeout_seconds, "Stop after listening this long in all (exit 0)");
  listen_command->add_flag("--json", listen.json,
                           "Print each as a JSON line: data, priority, urgent, sender {uid, gid, pid, pid_attested} "
                           "or null where the transport cannot attest it (tcp, udp, pipe), origin");
  listen_command->callback([&] { status = ferry::cli::listen_endpoint(listen); });

  ferry::cli::PipeEndpointsOptions pipe;
  auto* pipe_command = app.add_subcommand(
      "pipe", "Receive at SOURCE and send every message on to DESTINATION, with its priority, urgency and id, "
              "until --count, --timeout or SIGINT/SIGTERM; then print how many were forwarded. A message leaves a "
              "shm:// or nats:// SOURCE only after DESTINATION took it, so a bridge killed at any point loses "
              "nothing (a nats:// DESTINATION stores a resent message once, by its id). Also named 'bridge'");
  pipe_command->alias("bridge");
  pipe_command->add_option("source", pipe.source, kTargetHelp)->required();
  pipe_command->add_option("destination", pipe.destination, kTargetHelp)->required();
  pipe_command->add_option("--count", pipe.count, "Stop after this many messages (default 0: no limit)");
  timeout_option(*pipe_command, pipe.timeout_seconds, "Stop after forwarding this long in all (exit 0)");
  pipe_command->add_flag("--json", pipe.json, "Print {\"forwarded\": n}");
  pipe_command->callback([&] { status = ferry::cli::pipe_endpoints(pipe); });

#ifdef FERRY_CLI_HAVE_BENCH
  ferry::bench::Options bench_options;
  auto* bench = app.add_subcommand(
      "bench", "Measure IPC transports side by side: round trip and throughput of pipes, sockets, message "
               "queues, Boost, ZeroMQ, NNG, iceoryx and ferry, against the shared-memory floor");
  add_bench_options(*bench, bench_options);
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
