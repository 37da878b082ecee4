#include "ferry_test.hpp"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace ferry::test {

std::string unique_name(std::string_view stem) {
  static std::atomic<unsigned> counter{0};
  std::string name = "t" + std::to_string(::getpid()) + "-" + std::to_string(counter++) + "-";
  name += stem;
  return name;
}

std::size_t scaled(std::size_t count) {
  double scale = 1.0;
  if (const char* text = std::getenv("FERRY_TEST_SCALE")) scale = std::strtod(text, nullptr);
  const auto result = static_cast<std::size_t>(static_cast<double>(count) * scale);
  return result == 0 ? 1 : result;
}

void become_other_user() {
  if (::setgroups(0, nullptr) != 0 || ::setgid(kOtherGid) != 0 || ::setuid(kOtherUid) != 0) {
    std::perror("become_other_user");
    std::abort();
  }
}

namespace {
pid_t fork_or_abort() {
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) {
    std::perror("fork");
    std::abort();
  }
  return pid;
}
}  // namespace

Child Child::spawn(const std::function<int()>& body) {
  const pid_t pid = fork_or_abort();
  if (pid == 0) {
    int code = 100;
    try {
      code = body();
    } catch (...) {
      code = 101;
    }
    std::fflush(nullptr);
    ::_exit(code);
  }
  return Child(pid);
}

Child Child::exec(const std::string& program, const std::vector<std::string>& arguments) {
  std::vector<char*> argv;
  argv.push_back(const_cast<char*>(program.c_str()));
  for (const std::string& argument : arguments) argv.push_back(const_cast<char*>(argument.c_str()));
  argv.push_back(nullptr);
  const pid_t pid = fork_or_abort();
  if (pid == 0) {
    ::execv(program.c_str(), argv.data());
    std::perror("execv");
    ::_exit(127);
  }
  return Child(pid);
}

Child::Child(Child&& other) noexcept : pid_(std::exchange(other.pid_, -1)) {}

Child::~Child() {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    wait();
  }
}

int Child::wait() {
  if (pid_ <= 0) return -1;
  int status = 0;
  while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  pid_ = -1;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

int Child::wait_for(std::chrono::milliseconds timeout) {
  if (pid_ <= 0) return -1;
  const auto give_up = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    int status = 0;
    const pid_t done = ::waitpid(pid_, &status, WNOHANG);
    if (done == pid_) {
      pid_ = -1;
      if (WIFEXITED(status)) return WEXITSTATUS(status);
      if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
      return -1;
    }
    if (std::chrono::steady_clock::now() >= give_up) {
      ::kill(pid_, SIGKILL);
      wait();
      return kTimedOut;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

void Child::kill(int signal_number) {
  if (pid_ > 0) ::kill(pid_, signal_number);
}

Event::Event() {
  int ends[2];
  if (::pipe2(ends, O_CLOEXEC) != 0) std::abort();
  read_end_ = ends[0];
  write_end_ = ends[1];
}

Event::~Event() {
  ::close(read_end_);
  ::close(write_end_);
}

void Event::signal() {
  const char byte = 1;
  while (::write(write_end_, &byte, 1) < 0 && errno == EINTR) {
  }
}

bool Event::wait(std::chrono::milliseconds timeout) {
  pollfd ready{read_end_, POLLIN, 0};
  if (::poll(&ready, 1, static_cast<int>(timeout.count())) != 1) return false;
  char byte = 0;
  return ::read(read_end_, &byte, 1) == 1;
}

TempDir::TempDir(mode_t mode) {
  std::string pattern = "/tmp/ferry-test-XXXXXX";
  if (!::mkdtemp(pattern.data())) std::abort();
  path_ = pattern;
  ::chmod(path_.c_str(), mode);
}

TempDir::~TempDir() {
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

void* map_shared_anonymous(std::size_t size) {
  void* memory = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (memory == MAP_FAILED) std::abort();
  return memory;
}

void unmap_shared_anonymous(void* memory, std::size_t size) { ::munmap(memory, size); }

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace ferry::test
