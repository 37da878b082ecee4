// The ferry command-line tool: one function per subcommand, each returning
// the process exit status (0 success, 1 failure).
#pragma once

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

}  // namespace ferry::cli
