// The ferry command-line tool: one function per subcommand, each returning
// the process exit status (0 success, 1 failure).
#pragma once

#include <cstddef>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "ferry/os/error.hpp"

namespace ferry::cli {

struct ListOptions {
  bool json = false;
  std::vector<std::string> file_paths;
};
int list(const ListOptions& options);

int remove(const std::vector<std::string>& locators);

struct GcOptions {
  bool json = false;
  bool dry_run = false;
  std::vector<std::string> file_paths;
};
int collect_garbage(const GcOptions& options);

struct StatOptions {
  std::string name;
  bool json = false;
};

/// nats:// (nats.cpp, when the nats backend is built): ferry ls nats://SERVERS
/// lists the mailboxes and history topics there; ferry stat
/// nats://SERVERS/NAME shows one.
bool is_nats(const std::string& target);
int list_nats(const std::string& servers, bool json);
int stat_nats(const StatOptions& options);
int stat_mailbox(const StatOptions& options);
/// True when `name` is a (posix) topic: ferry stat then shows it (topics.cpp).
bool is_topic(const std::string& name);
/// ferry stat of a topic: policy, geometry, publishers, subscribers with lag and losses.
int stat_topic(const StatOptions& options);

struct SendMessagesOptions {
  std::string name;  // a mailbox, or an endpoint string (is_endpoint)
  std::vector<std::string> messages;  // none: each line of stdin is one
  unsigned priority = 0;
  bool urgent = false;
  std::optional<double> timeout_seconds;  // none: wait while the mailbox is full
  bool json = false;
};
int send_messages(const SendMessagesOptions& options);

struct ReceiveMessagesOptions {
  std::string name;  // a mailbox, or an endpoint string (is_endpoint)
  std::size_t count = 1;  // 0: until the timeout passes with nothing, or (without one) the mailbox is empty
  std::optional<double> timeout_seconds;  // none: wait forever for each
  bool json = false;
};
int receive_messages(const ReceiveMessagesOptions& options);

/// True when `target` is an endpoint string ("scheme://...", "pipe:...")
/// rather than the name (or directory path) of a mailbox.
bool is_endpoint(const std::string& target);
/// send and recv for endpoint strings: the same options and output as for mailboxes.
int send_to_endpoint(const SendMessagesOptions& options);
int receive_from_endpoint(const ReceiveMessagesOptions& options);

struct ListenEndpointOptions {
  std::string endpoint;  // or a mailbox name
  std::size_t count = 0;  // 0: no limit
  std::optional<double> timeout_seconds;  // how long to listen in all; none: until a signal
  bool json = false;
};
int listen_endpoint(const ListenEndpointOptions& options);

struct PipeEndpointsOptions {
  std::string source;  // endpoints, or mailbox names
  std::string destination;
  std::size_t count = 0;  // 0: no limit
  std::optional<double> timeout_seconds;  // how long to forward in all; none: until a signal
  bool json = false;
};
int pipe_endpoints(const PipeEndpointsOptions& options);

struct CallOptions {
  std::string endpoint;  // shm://NAME, unix://PATH, tcp://HOST:PORT
  std::string method;
  std::optional<std::string> payload;  // none: all of stdin
  std::optional<double> timeout_seconds;  // none: wait for the reply (or for every server to be gone)
  bool idempotent = false;
};
/// ferry call: prints the reply as it came, and a newline (rpc.cpp).
int call_method(const CallOptions& options);
/// True when `target` (shm://NAME or NAME) has an rpc registry: ferry stat then shows it.
bool is_rpc_endpoint(const std::string& target);
/// ferry stat of an rpc endpoint: the request mailbox, the servers and the calls in flight with their ages.
int stat_rpc_endpoint(const StatOptions& options);

/// What recv does for every target: calls `receive_one` (true: it printed a
/// message; false: none waits, which ends a --count 0 receive) up to
/// options.count times, and reports a shortfall (timed_out) or a failure.
int receive_each(const ReceiveMessagesOptions& options, const std::function<result<bool>()>& receive_one);

/// What send does for every target: sends each message of `options` (or
/// each line of stdin) with `send_one`, stopping at the first failure, and
/// reports how many went out.
int send_each(const SendMessagesOptions& options,
              const std::function<result<void>(std::span<const std::byte>)>& send_one);

}  // namespace ferry::cli
