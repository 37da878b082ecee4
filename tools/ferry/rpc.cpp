// ferry call: one rpc call from the shell; and what ferry stat adds for a
// shm:// rpc endpoint (the servers and the calls in flight, from the
// endpoint's registry segment; see ferry/patterns/rpc.hpp).
#include <cstdio>
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>

#include "commands.hpp"
#include "ferry/patterns/rpc.hpp"
#include "format.hpp"

namespace ferry::cli {
namespace {

// The mailbox name of "shm://NAME" or of a bare NAME.
std::string rpc_name(const std::string& target) {
  constexpr std::string_view kScheme = "shm://";
  return target.starts_with(kScheme) ? target.substr(kScheme.size()) : target;
}

// "1.5s", "250ms": how long ago `then_ns` (wall clock) was.
std::string age(std::uint64_t then_ns) {
  const std::uint64_t now = wall_clock_ns();
  const double seconds = now > then_ns ? static_cast<double>(now - then_ns) / 1e9 : 0.0;
  char text[32];
  std::snprintf(text, sizeof text, seconds < 1 ? "%.0fms" : "%.1fs", seconds < 1 ? seconds * 1000 : seconds);
  return text;
}

nlohmann::json status_json(const rpc::EndpointStatus& status) {
  nlohmann::json servers = nlohmann::json::array();
  for (const auto& server : status.servers) {
    servers.push_back({{"pid", server.pid}, {"alive", server.alive}, {"handled", server.handled},
                       {"age_seconds", static_cast<double>(wall_clock_ns() - server.started_ns) / 1e9}});
  }
  nlohmann::json calls = nlohmann::json::array();
  for (const auto& call : status.calls) {
    calls.push_back({{"method", call.method}, {"call_id", call.call_id}, {"server_pid", call.server_pid},
                     {"caller_pid", call.caller_pid}, {"caller_uid", call.caller_uid}, {"cancelled", call.cancelled},
                     {"age_seconds", static_cast<double>(wall_clock_ns() - call.started_ns) / 1e9}});
  }
  return {{"servers", servers}, {"in_flight", calls}};
}

void print_status(const rpc::EndpointStatus& status) {
  std::printf("rpc servers  %zu\n", status.servers.size());
  for (const auto& server : status.servers) {
    std::printf("  pid %-8d %s, up %s, %llu handled\n", static_cast<int>(server.pid), server.alive ? "alive" : "dead",
                age(server.started_ns).c_str(), static_cast<unsigned long long>(server.handled));
  }
  std::printf("in flight    %zu\n", status.calls.size());
  for (const auto& call : status.calls) {
    std::printf("  %-20s call %llu from pid %d (uid %u) on server %d, running %s%s\n", call.method.c_str(),
                static_cast<unsigned long long>(call.call_id), static_cast<int>(call.caller_pid),
                static_cast<unsigned>(call.caller_uid), static_cast<int>(call.server_pid), age(call.started_ns).c_str(),
                call.cancelled ? ", cancelled" : "");
  }
}

}  // namespace

int call_method(const CallOptions& options) {
  std::string request;
  if (options.payload) {
    request = *options.payload;
  } else {
    request.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  }
  auto client = rpc::Client::connect(options.endpoint, {.max_payload = std::max(request.size(), std::size_t{64} << 10),
                                                         .allow_foreign_owner = true});
  if (!client) return fail("ferry call", client.error());
  const auto bytes = std::as_bytes(std::span(request));
  const rpc::CallOptions how{.idempotent = options.idempotent};
  auto reply = options.timeout_seconds
                   ? (*client)->call_for(options.method, bytes, to_duration(*options.timeout_seconds), how)
                   : (*client)->call(options.method, bytes, how);
  if (!reply) return fail("ferry call", reply.error());
  if (auto written = print_message(*reply, nullptr); !written) return fail("ferry call", written.error());
  return 0;
}

bool is_rpc_endpoint(const std::string& target) {
  if (is_endpoint(target) && !target.starts_with("shm://")) return false;
  return static_cast<bool>(rpc::inspect(rpc_name(target)));
}

int stat_rpc_endpoint(const StatOptions& options) {
  const std::string name = rpc_name(options.name);
  auto status = rpc::inspect(name);
  if (!status) return fail("ferry stat", status.error());
  if (options.json) {
    std::cout << nlohmann::json{{"rpc", status_json(*status)}}.dump(2) << '\n';
    return 0;
  }
  // The request mailbox first, as for any mailbox, then the rpc registry.
  const int mailbox = stat_mailbox({.name = name, .json = false});
  print_status(*status);
  return mailbox;
}

}  // namespace ferry::cli
