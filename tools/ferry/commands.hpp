// The ferry command-line tool: one function per subcommand, each returning
// the process exit status (0 success, 1 failure).
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <vector>

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
int stat_mailbox(const StatOptions& options);

struct SendMessagesOptions {
  std::string name;
  std::vector<std::string> messages;  // none: each line of stdin is one
  unsigned priority = 0;
  bool urgent = false;
  std::optional<double> timeout_seconds;  // none: wait while the mailbox is full
  bool json = false;
};
int send_messages(const SendMessagesOptions& options);

struct ReceiveMessagesOptions {
  std::string name;
  std::size_t count = 1;  // 0: until the timeout passes with nothing, or (without one) the mailbox is empty
  std::optional<double> timeout_seconds;  // none: wait forever for each
  bool json = false;
};
int receive_messages(const ReceiveMessagesOptions& options);

}  // namespace ferry::cli
