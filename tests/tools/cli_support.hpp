// Shared by the ferry command-line tests: run the built binary and read what it printed.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "ferry/ferry.hpp"
#include "ferry_test.hpp"

namespace ferry::test::cli {


struct CliRun {
  int status;
  std::string output;  // stdout and stderr together
};

inline CliRun ferry_cli(const std::string& arguments) {
  // append, not an operator+ chain: GCC 12 warns falsely about those at -O2.
  std::string command = FERRY_CLI;
  command.append(" ").append(arguments).append(" 2>&1");
  FILE* pipe = ::popen(command.c_str(), "r");
  CliRun run{-1, {}};
  if (!pipe) return run;
  char buffer[4096];
  size_t n = 0;
  while ((n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) run.output.append(buffer, n);
  const int status = ::pclose(pipe);
  run.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return run;
}

// As ferry_cli, with `input` on stdin.
inline CliRun ferry_cli_with_input(const std::string& arguments, const std::string& input) {
  ferry::test::TempDir dir;
  const std::string path = dir.file("stdin");
  std::ofstream(path) << input;
  return ferry_cli(arguments + " < " + path);
}

inline nlohmann::json list_json(const std::string& extra = "") {
  const CliRun run = ferry_cli("ls --json " + extra);
  EXPECT_EQ(run.status, 0) << run.output;
  return nlohmann::json::parse(run.output);
}

inline const nlohmann::json* find(const nlohmann::json& objects, const std::string& name) {
  for (const auto& object : objects) {
    if (object["name"] == name) return &object;
  }
  return nullptr;
}

inline bool exists(const std::string& path) { return ::access(path.c_str(), F_OK) == 0; }

inline void wait_until_exists(const std::string& path) {
  for (int i = 0; i < 2000 && !exists(path); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
}

// A mailbox name, destroyed at the end of the test.
struct MailboxName {
  std::string name = ferry::test::unique_name("mbx");
  std::string directory() const { return "/dev/shm/ferry." + name; }
  ~MailboxName() { (void)ferry::Mailbox::destroy(name); }
};

inline std::vector<nlohmann::json> json_lines(const std::string& output) {
  std::vector<nlohmann::json> lines;
  std::size_t start = 0;
  for (std::size_t end; (end = output.find('\n', start)) != std::string::npos; start = end + 1) {
    lines.push_back(nlohmann::json::parse(output.substr(start, end - start)));
  }
  return lines;
}


}  // namespace ferry::test::cli
