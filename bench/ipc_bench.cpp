// The coordinator of ferry's transport benchmark: it chooses what to measure,
// runs every measurement in its own pair of processes (ipc_worker.hpp), keeps
// iox-roudi running for iceoryx and a nats-server for ferry.mailbox.nats, and
// summarises.
//
// Method
//  The run is a sequence of repetitions. Each repetition measures every
//  (transport, pattern, size) once, for a short time (--budget-ms, after a
//  warm-up), in an order shuffled from one repetition to the next; so every
//  figure is spread over the whole run and slow drift of the machine (vCPU
//  placement, another build) hits all transports alike; only what a paired
//  ratio compares (an endpoint and its raw baselines) is measured back to
//  back, in an order that flips each repetition. A figure is the
//  median of its repetitions (rtt: of their medians; p99 and p99.9 pool all
//  samples). floor.spin is measured in every repetition, and every single
//  measurement first times 500 cache-line round trips between its own two
//  processes: that "floor" is reported next to each figure, so a figure taken
//  while the host had moved the vCPUs apart shows as such.
//
// Safety
//  Each measurement runs in a process group of its own under a deadline; the
//  coordinator is a child subreaper, so it reaps the responder too. Its
//  directory, System V queues and the daemons it started (iox-roudi,
//  nats-server with its store) are removed whatever happened, and on
//  SIGINT/SIGTERM as well. A transport that fails is marked
//  (error, with the reason and the tail of its processes' output) and is not
//  measured again; the run goes on.
#include "ipc_bench.hpp"

#include <fcntl.h>
#include <poll.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/msg.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <new>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <utility>

#include "ipc_report.hpp"
#include "ipc_transports.hpp"

namespace ferry::bench {

namespace {

volatile sig_atomic_t g_stop = 0;

void on_stop(int signo) { g_stop = signo; }

struct Settings {
  int repetitions = 0;
  int budget_ms = 0;
  int warmup_ms = 0;
  unsigned watchdog_s = 0;
  std::vector<std::size_t> sizes;      // throughput
  std::vector<std::size_t> rtt_sizes;  // round-trip requests
  int cpu[2] = {-1, -1};
  std::string nats_url;  // the run's nats-server, when a transport needs one
};

// ---------------------------------------------------------------------------
// Small helpers

std::string read_file(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

// The last few meaningful lines of a log, on one line.
std::string log_tail(const std::string& path, std::size_t max_lines = 3) {
  std::istringstream text(read_file(path));
  std::vector<std::string> lines;
  std::string line;
  while (std::getline(text, line)) {
    // iceoryx's log lines carry colour codes; drop them and its chatter.
    std::string clean;
    for (std::size_t i = 0; i < line.size(); ++i) {
      if (line[i] == '\033') {
        while (i < line.size() && line[i] != 'm') ++i;
        continue;
      }
      clean += line[i];
    }
    while (!clean.empty() && std::isspace(static_cast<unsigned char>(clean.back()))) clean.pop_back();
    if (clean.empty()) continue;
    bool chatter = false;
    for (const char* noise : {"Log level set to", "Reserving ", "RouDi is ready for clients"}) {
      chatter |= clean.find(noise) != std::string::npos;
    }
    if (chatter) continue;
    lines.push_back(clean);
  }
  std::string tail;
  const std::size_t from = lines.size() > max_lines ? lines.size() - max_lines : 0;
  for (std::size_t i = from; i < lines.size(); ++i) tail += (tail.empty() ? "" : " | ") + lines[i];
  return tail;
}

std::string signal_text(int signo) {
  std::string text = "signal " + std::to_string(signo);
  if (const char* name = ::sigabbrev_np(signo)) text += std::string(" (SIG") + name + ")";
  return text;
}

// Waits for `pid` (our child) to exit, up to `timeout_ms`; false on timeout or
// interruption (g_stop). Sleeps in poll() on a pidfd: no periodic wake-ups
// that would disturb the measurement. With `reap` false the child stays a
// zombie, so its pid (and process group id) cannot be reused yet.
bool wait_exit(pid_t pid, int timeout_ms, int* status, bool reap = true) {
  const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  const std::uint64_t deadline = now_ns() + static_cast<std::uint64_t>(timeout_ms) * 1'000'000u;
  bool exited = false;
  for (;;) {
    siginfo_t info{};
    const int options = WEXITED | WNOHANG | (reap ? 0 : WNOWAIT);
    if (::waitid(P_PID, static_cast<id_t>(pid), &info, options) != 0) {
      if (errno == EINTR) continue;
      exited = true;  // ECHILD: already reaped
      break;
    }
    if (info.si_pid == pid) {
      *status = info.si_code == CLD_EXITED ? W_EXITCODE(info.si_status, 0) : info.si_status;  // as waitpid reports
      exited = true;
      break;
    }
    const std::uint64_t now = now_ns();
    if (g_stop || now >= deadline) break;
    const int left_ms = static_cast<int>((deadline - now) / 1'000'000u) + 1;
    if (pidfd >= 0) {
      pollfd ready{pidfd, POLLIN, 0};
      ::poll(&ready, 1, left_ms);
    } else {
      ::usleep(static_cast<useconds_t>(std::min(left_ms, 5) * 1000));
    }
  }
  if (pidfd >= 0) ::close(pidfd);
  return exited;
}

// Kills what is left of a measurement's process group, reaps its leader (a
// zombie until now, so the group id was still ours when we killed it) and
// whatever else of the group we can: we are a child subreaper, so orphaned
// responders are ours.
void kill_and_reap_group(pid_t leader) {
  ::kill(-leader, SIGKILL);
  int status = 0;
  while (::waitpid(leader, &status, 0) < 0 && errno == EINTR) {
  }
  const std::uint64_t deadline = now_ns() + 2'000'000'000u;
  for (;;) {
    const pid_t done = ::waitpid(-leader, &status, WNOHANG);
    if (done < 0) return;  // ECHILD: none left
    if (done == 0) {
      if (now_ns() > deadline) return;
      ::usleep(1000);
    }
  }
}

std::string exit_text(int status) {
  return WIFSIGNALED(status) ? signal_text(WTERMSIG(status)) : "status " + std::to_string(WEXITSTATUS(status));
}

// Starts a daemon the run needs (iox-roudi, nats-server): `arguments` (argv[0]
// first) for `program`, in a process group of its own (a terminal's Ctrl-C is
// ours to handle, not its), SIGTERM when we die, stdin from /dev/null, stdout
// and stderr into `log_path`. Its pid, or -1 with `error` set.
pid_t spawn_daemon(const std::string& program, const std::vector<std::string>& arguments, const std::string& log_path,
                   std::string& error) {
  std::vector<char*> argv;
  for (const std::string& argument : arguments) argv.push_back(const_cast<char*>(argument.c_str()));
  argv.push_back(nullptr);
  std::fflush(stdout);
  std::fflush(stderr);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    error = std::string("fork: ") + std::strerror(errno);
    return -1;
  }
  if (pid == 0) {
    ::setpgid(0, 0);
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != parent) ::_exit(1);
    for (const int signo : {SIGINT, SIGTERM, SIGHUP, SIGPIPE, SIGCHLD}) ::signal(signo, SIG_DFL);
    const int null = ::open("/dev/null", O_RDONLY);
    const int log = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (null >= 0) ::dup2(null, STDIN_FILENO);
    if (log >= 0) {
      ::dup2(log, STDOUT_FILENO);
      ::dup2(log, STDERR_FILENO);
    }
    ::execv(program.c_str(), argv.data());
    std::fprintf(stderr, "execv %s: %s\n", program.c_str(), std::strerror(errno));
    ::_exit(127);
  }
  return pid;
}

// Stops a daemon spawn_daemon started: SIGTERM, then SIGKILL if it is not
// gone within 5 s (false then). `status` is how it ended, as waitpid says.
bool stop_daemon(pid_t pid, int& status) {
  ::kill(pid, SIGTERM);
  ::kill(pid, SIGCONT);  // in case it was stopped
  const sig_atomic_t interrupted = g_stop;
  g_stop = 0;  // let the wait run even when we are stopping because of a signal
  const bool gone = wait_exit(pid, 5000, &status);
  g_stop = interrupted;
  if (gone) return true;
  ::kill(pid, SIGKILL);
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return false;
}

// How waiting for a daemon to get ready ended.
enum class DaemonStart {
  ready,
  exited,     // it ended first: reaped, pid -1, `status` says how
  timed_out,  // not ready within 10 s, or the run is stopping: still running
};

// Waits until `ready()` (which reads the daemon's log) says a daemon
// spawn_daemon started is ready, it exits, or 10 s pass.
template <class Ready>
DaemonStart wait_until_ready(pid_t& pid, int& status, Ready&& ready) {
  const std::uint64_t deadline = now_ns() + 10'000'000'000u;
  for (;;) {
    if (ready()) return DaemonStart::ready;
    if (::waitpid(pid, &status, WNOHANG) == pid) {
      pid = -1;
      return DaemonStart::exited;
    }
    if (g_stop || now_ns() > deadline) return DaemonStart::timed_out;
    ::usleep(10'000);
  }
}

// ---------------------------------------------------------------------------
// iox-roudi, for the iceoryx transports

class Roudi {
 public:
  // Chunk sizes: payload + iceoryx's chunk header (40 bytes) with room to
  // spare, multiples of 64 (a 1 MiB payload gets a 1048704-byte chunk); enough
  // chunks for a full queue each way, plus the ones held and loaned (fewer
  // spare ones for big chunks: 64 MiB messages must not take gigabytes).
  static std::string config(const std::vector<std::size_t>& sizes) {
    std::map<std::size_t, std::size_t> pools;  // chunk size -> count
    for (const std::size_t size : sizes) {
      const std::size_t chunk = (size + 128 + 63) / 64 * 64;
      const std::size_t spare = std::clamp<std::size_t>((std::size_t{8} << 20) / size, 4, 32);
      pools[chunk] = std::max(pools[chunk], 2 * queue_depth(size) + spare);
    }
    std::string text = "# written by ferry bench\n[general]\nversion = 1\n\n[[segment]]\n";
    for (const auto& [chunk, count] : pools) {
      text += "\n[[segment.mempool]]\nsize = " + std::to_string(chunk) + "\ncount = " + std::to_string(count) + "\n";
    }
    return text;
  }

  bool start(const std::string& directory, const std::vector<std::size_t>& sizes) {
    const std::string program = find_executable("iox-roudi", true);
    if (program.empty()) {
      reason_ = "iox-roudi is not installed (Debian package: iceoryx)";
      return false;
    }
    const std::string config_path = directory + "/roudi.toml";
    log_path_ = directory + "/roudi.log";
    {
      std::ofstream file(config_path);
      file << config(sizes);
      if (!file) {
        reason_ = "cannot write " + config_path;
        return false;
      }
    }
    pid_ = spawn_daemon(program, {"iox-roudi", "-c", config_path, "-l", "warning", "-k", "1"}, log_path_, reason_);
    if (pid_ < 0) return false;
    // Ready when it says so; it exits at once if another RouDi holds the lock.
    int status = 0;
    switch (wait_until_ready(pid_, status, [&] {
      return read_file(log_path_).find("RouDi is ready for clients") != std::string::npos;
    })) {
      case DaemonStart::ready:
        ready_ = true;
        return true;
      case DaemonStart::exited:
        if (read_file(log_path_).find("ROUDI_STILL_RUNNING") != std::string::npos) {
          reason_ = "another iox-roudi is already running on this machine; this run needs its own (with mempools "
                    "for the sizes measured): stop the other one to measure iceoryx";
        } else {
          reason_ = "iox-roudi exited at start (" + exit_text(status) + "): " + log_tail(log_path_, 1);
        }
        return false;
      case DaemonStart::timed_out:
        reason_ = "iox-roudi did not become ready within 10 s: " + log_tail(log_path_, 2);
        stop();
        return false;
    }
    return false;
  }

  bool alive() {
    if (pid_ <= 0) return false;
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      reason_ = "iox-roudi ended during the run (" + exit_text(status) + ")";
      if (const std::string tail = log_tail(log_path_, 2); !tail.empty()) reason_ += ": " + tail;
      remove_leftovers();
      return false;
    }
    return true;
  }

  // SIGTERM lets it remove its shared memory, socket and lock files. If it
  // does not go within 5 s it is killed; if it did not end cleanly, what it
  // left is removed here (it is its: it held the unique-RouDi lock).
  // Returns how it ended.
  std::string stop() {
    if (pid_ <= 0) return {};
    int status = 0;
    std::string ended = "stopped at the end";
    if (!stop_daemon(pid_, status)) {
      ended = "killed at the end (it did not stop within 5 s); removed what it left";
      remove_leftovers();
    } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      ended = "ended with " + exit_text(status) + " when stopped; removed what it left";
      remove_leftovers();
    }
    pid_ = -1;
    return ended;
  }

  const std::string& reason() const { return reason_; }

 private:
  // What a RouDi that did not shut down cleanly leaves behind; only for the
  // RouDi this run started and saw ready: it held the unique-RouDi lock, so
  // these are its.
  void remove_leftovers() const {
    if (!ready_) return;
    std::string user = "root";
    if (const passwd* entry = ::getpwuid(::geteuid())) user = entry->pw_name;
    for (const std::string& path : {std::string("/dev/shm/iceoryx_mgmt"), "/dev/shm/" + user, std::string("/tmp/roudi"),
                                    std::string("/tmp/roudi.lock"), std::string("/tmp/iox-unique-roudi.lock")}) {
      ::unlink(path.c_str());
    }
  }

  pid_t pid_ = -1;
  bool ready_ = false;
  std::string log_path_;
  std::string reason_;
};

// ---------------------------------------------------------------------------
// nats-server, for ferry.mailbox.nats

// A JetStream server of this run's own: on 127.0.0.1, at a port it picks
// itself (-p -1; the log says which, so no other process can take the port
// between our choosing it and its binding), file storage (the default) in
// `directory`, which stop() removes. The coordinator never connects to it
// (nats.c's threads would then cross the fork of every measurement): it is
// ready when its log says so.
class NatsServer {
 public:
  bool start(const std::string& directory) {
    const std::string program = find_executable("nats-server", true);
    if (program.empty()) {
      reason_ = "nats-server is not installed (Debian package: nats-server)";
      return false;
    }
    directory_ = directory;
    if (::mkdir(directory.c_str(), 0700) != 0) {
      reason_ = "mkdir " + directory + ": " + std::strerror(errno);
      return false;
    }
    log_path_ = directory + "/nats-server.log";
    pid_ = spawn_daemon(program, {"nats-server", "-a", "127.0.0.1", "-p", "-1", "-js", "-sd", directory + "/store"},
                        log_path_, reason_);
    if (pid_ < 0) return false;
    int status = 0;
    switch (wait_until_ready(pid_, status, [&] {
      const std::string log = read_file(log_path_);
      const std::string port = after(log, "Listening for client connections on 127.0.0.1:");
      if (port.empty() || log.find("Server is ready") == std::string::npos) return false;
      url_ = "nats://127.0.0.1:" + port;
      version_ = after(log, "Version:");
      return true;
    })) {
      case DaemonStart::ready:
        return true;
      case DaemonStart::exited:
        reason_ = "nats-server exited at start (" + exit_text(status) + ")" + troubles(true);
        return false;
      case DaemonStart::timed_out:
        reason_ = "nats-server did not become ready within 10 s" + troubles(true);
        stop();
        return false;
    }
    return false;
  }

  bool alive() {
    if (pid_ <= 0) return false;
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      reason_ = "nats-server ended during the run (" + exit_text(status) + ")" + troubles(false);
      return false;
    }
    return true;
  }

  // SIGTERM (it exits with status 1 then: not a failure), SIGKILL after 5 s;
  // then its directory goes, store and log. Returns how it ended.
  std::string stop() {
    std::string ended;
    if (pid_ > 0) {
      int status = 0;
      ended = stop_daemon(pid_, status) ? "stopped at the end" : "killed at the end (it did not stop within 5 s)";
      pid_ = -1;
    }
    if (!directory_.empty()) {
      std::error_code ignored;
      std::filesystem::remove_all(directory_, ignored);
      directory_.clear();
    }
    return ended;
  }

  const std::string& reason() const { return reason_; }
  const std::string& url() const { return url_; }
  const std::string& version() const { return version_; }

 private:
  // The rest of the line after `marker`, trimmed; "" when the log has no such line.
  static std::string after(const std::string& log, const std::string& marker) {
    const std::size_t at = log.find(marker);
    if (at == std::string::npos) return {};
    const std::size_t end = log.find('\n', at);
    if (end == std::string::npos) return {};  // the line is not complete yet
    std::string text = log.substr(at + marker.size(), end - at - marker.size());
    while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front()))) text.erase(0, 1);
    while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.pop_back();
    return text;
  }

  // ": " and the last two warnings or errors of its log, without their pid
  // and time stamp ("[ERR] ..."; its info lines are start-up chatter). None:
  // with `or_first`, the log's first line (a usage error has no level and
  // comes first), else "".
  std::string troubles(bool or_first) const {
    std::istringstream log(read_file(log_path_));
    std::vector<std::string> lines;
    for (std::string line; std::getline(log, line);) {
      std::size_t level = std::string::npos;
      for (const char* mark : {"[WRN]", "[ERR]", "[FTL]"}) level = std::min(level, line.find(mark));
      if (level != std::string::npos) lines.push_back(line.substr(level));
    }
    std::string text;
    for (std::size_t i = lines.size() > 2 ? lines.size() - 2 : 0; i < lines.size(); ++i) {
      text += (text.empty() ? ": " : " | ") + lines[i];
    }
    if (text.empty() && or_first) {
      std::istringstream again(read_file(log_path_));
      for (std::string line; text.empty() && std::getline(again, line);) {
        if (!line.empty()) text = ": " + line;
      }
    }
    return text;
  }

  pid_t pid_ = -1;
  std::string directory_;
  std::string log_path_;
  std::string reason_;
  std::string url_;
  std::string version_;
};

// ---------------------------------------------------------------------------
// One measurement

struct Outcome {
  Status status = Status::none;
  std::string reason;
  double value = 0;  // rtt: median ns; throughput: msgs/s
  double floor_ns = 0;
  double cpu_ns = 0;  // CPU time both processes spent per message (rtt: round trip); 0: not measured
  std::vector<std::uint32_t> samples;
};

class Coordinator {
 public:
  Coordinator(const Settings& settings, std::string temp_root, SharedArea* area)
      : settings_(settings), temp_root_(std::move(temp_root)), area_(area) {}

  Outcome measure(const TransportInfo& transport, Pattern pattern, std::size_t size, unsigned senders) {
    new (area_) SharedArea;  // resets everything but the samples
    const std::uint64_t serial = ++serial_;
    const std::string dir = temp_root_ + "/m" + std::to_string(serial);
    Outcome outcome;
    if (::mkdir(dir.c_str(), 0700) != 0) {
      outcome.status = Status::error;
      outcome.reason = "mkdir " + dir + ": " + std::strerror(errno);
      return outcome;
    }
    Spec spec;
    spec.transport = transport.name;
    spec.pattern = pattern;
    spec.size = size;
    spec.senders = senders;
    spec.warmup_ns = static_cast<std::uint64_t>(settings_.warmup_ms) * 1'000'000u;
    spec.budget_ns = static_cast<std::uint64_t>(settings_.budget_ms) * 1'000'000u;
    spec.cpu[0] = settings_.cpu[0];
    spec.cpu[1] = settings_.cpu[1];
    spec.watchdog_s = settings_.watchdog_s;
    spec.dir = dir;
    spec.serial = serial;
    if (transport.needs_nats_server) spec.nats_url = settings_.nats_url;
    const std::string log_path = dir + "/worker.log";

    std::fflush(stdout);
    std::fflush(stderr);
    const pid_t coordinator = ::getpid();
    const pid_t child = ::fork();
    if (child < 0) {
      outcome.status = Status::error;
      outcome.reason = std::string("fork: ") + std::strerror(errno);
      std::filesystem::remove_all(dir);
      return outcome;
    }
    if (child == 0) {
      ::setpgid(0, 0);
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != coordinator) ::_exit(1);
      for (const int signo : {SIGINT, SIGTERM, SIGHUP}) ::signal(signo, SIG_DFL);
      const int null = ::open("/dev/null", O_RDONLY);
      const int log = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0600);
      if (null >= 0) ::dup2(null, STDIN_FILENO);
      if (log >= 0) {
        ::dup2(log, STDOUT_FILENO);
        ::dup2(log, STDERR_FILENO);
      }
      transport.run(spec, *area_);
      ::_exit(1);  // not reached: run() ends the process
    }
    ::setpgid(child, child);  // also done by the child; whichever comes first

    int status = 0;
    const int timeout_ms = static_cast<int>(settings_.watchdog_s * 1000 + 3000);
    const bool exited = wait_exit(child, timeout_ms, &status, /*reap=*/false);
    kill_and_reap_group(child);
    for (int i = 0; i < area_->sysv_queue_count; ++i) ::msgctl(area_->sysv_queues[i], IPC_RMID, nullptr);
    for (const SideReport& side : area_->side) {  // both processes are gone by now
      for (int i = 0; i < std::min(side.leftover_count, static_cast<int>(std::size(side.leftovers))); ++i) {
        const std::size_t length = ::strnlen(side.leftovers[i], sizeof side.leftovers[i]);
        std::error_code ignored;
        if (length > 0 && length < sizeof side.leftovers[i]) std::filesystem::remove_all(side.leftovers[i], ignored);
      }
    }
    std::error_code ignored;
    // Loan chunks a channel made while measuring are segments named after it,
    // "bench-<A's pid>-...": gone with their processes only if those detached.
    const std::string chunks_prefix = "ferry.bench-" + std::to_string(child) + "-";
    for (const auto& entry : std::filesystem::directory_iterator("/dev/shm", ignored)) {
      if (entry.path().filename().string().rfind(chunks_prefix, 0) == 0) std::filesystem::remove(entry.path(), ignored);
    }
    const std::string tail = log_tail(log_path);
    std::filesystem::remove_all(dir, ignored);

    // The earliest failure report is the cause; later ones are consequences.
    const SideReport* first = nullptr;
    for (const SideReport& report : area_->side) {
      const auto reported = static_cast<Status>(report.status.load(std::memory_order_acquire));
      if (reported == Status::none || reported == Status::ok) continue;
      if (first == nullptr || report.when_ns < first->when_ns) first = &report;
    }
    const auto initiator = static_cast<Status>(area_->side[0].status.load(std::memory_order_acquire));
    const auto with_tail = [&](std::string text) {
      if (!tail.empty()) text += " [output: " + tail + "]";
      return text;
    };
    if (g_stop) {
      outcome.status = Status::error;
      outcome.reason = "interrupted";
    } else if (first != nullptr) {
      outcome.status = static_cast<Status>(first->status.load());
      outcome.reason = first->reason;
      if (outcome.status == Status::error) outcome.reason = with_tail(outcome.reason);
    } else if (!exited) {
      outcome.status = Status::error;
      outcome.reason = with_tail("no result within " + std::to_string(timeout_ms / 1000) + " s; processes killed");
    } else if (initiator != Status::ok) {
      outcome.status = Status::error;
      outcome.reason = with_tail(WIFSIGNALED(status)
                                     ? "the initiator process was killed by " + signal_text(WTERMSIG(status))
                                     : "the initiator process exited (status " +
                                           std::to_string(WEXITSTATUS(status)) + ") without a result");
    } else {
      outcome.status = Status::ok;
      outcome.floor_ns = static_cast<double>(area_->floor_ns);
      if (area_->cpu_messages[0] > 0 && area_->cpu_messages[1] > 0) {
        for (int side = 0; side < 2; ++side) {
          outcome.cpu_ns += static_cast<double>(area_->cpu_ns[side]) / static_cast<double>(area_->cpu_messages[side]);
        }
      }
      if (is_round_trip(pattern)) {
        const std::uint32_t count = std::min(area_->sample_count, kMaxSamples);
        outcome.samples.assign(area_->samples, area_->samples + count);
        if (count == 0) {
          outcome.status = Status::error;
          outcome.reason = "no round trip was timed";
        } else {
          std::vector<std::uint32_t> sorted = outcome.samples;
          const auto middle = sorted.begin() + static_cast<std::ptrdiff_t>(sorted.size() / 2);
          std::nth_element(sorted.begin(), middle, sorted.end());
          outcome.value = *middle;
        }
      } else {
        const std::uint64_t elapsed = area_->stream_last_ns - area_->stream_first_ns;
        if (area_->stream_messages == 0 || area_->stream_last_ns <= area_->stream_first_ns) {
          outcome.status = Status::error;
          outcome.reason = "no message was timed";
        } else {
          outcome.value = static_cast<double>(area_->stream_messages) * 1e9 / static_cast<double>(elapsed);
        }
      }
    }
    return outcome;
  }

 private:
  Settings settings_;
  std::string temp_root_;
  SharedArea* area_;
  std::uint64_t serial_ = 0;
};

// ---------------------------------------------------------------------------
// The run

struct Cell {
  const TransportInfo* transport = nullptr;
  Pattern pattern = Pattern::rtt;
  std::size_t size = 0;
  unsigned senders = 1;
  Status status = Status::none;  // none while it is measured without trouble
  std::string reason;
  std::vector<double> values;
  std::vector<double> floors;
  std::vector<double> cpu;  // ns per message; 0 where not measured
  std::vector<std::uint32_t> samples;
};

double percentile(std::vector<std::uint32_t>& values, double fraction) {
  if (values.empty()) return 0;
  auto rank = static_cast<std::size_t>(std::ceil(fraction * static_cast<double>(values.size()))) ;
  rank = std::min(rank == 0 ? 0 : rank - 1, values.size() - 1);
  const auto at = values.begin() + static_cast<std::ptrdiff_t>(rank);
  std::nth_element(values.begin(), at, values.end());
  return *at;
}

double median(std::vector<double> values) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const std::size_t n = values.size();
  return n % 2 == 1 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

bool parse_size(const std::string& text, std::size_t& size) {
  std::size_t end = 0;
  unsigned long long value = 0;
  try {
    value = std::stoull(text, &end);
  } catch (...) {
    return false;
  }
  std::string unit = text.substr(end);
  for (char& c : unit) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (unit.empty() || unit == "B") {
  } else if (unit == "K" || unit == "KB" || unit == "KIB") {
    value <<= 10;
  } else if (unit == "M" || unit == "MB" || unit == "MIB") {
    value <<= 20;
  } else {
    return false;
  }
  if (value < 16 || value > (std::uint64_t{64} << 20)) return false;
  size = static_cast<std::size_t>(value);
  return true;
}

// `texts` as sorted, distinct sizes, or `defaults` when there are none; false
// (after saying why) for a size parse_size refuses.
bool parse_sizes(const std::vector<std::string>& texts, std::vector<std::size_t> defaults,
                 std::vector<std::size_t>& sizes) {
  if (texts.empty()) {
    sizes = std::move(defaults);
    return true;
  }
  for (const std::string& text : texts) {
    std::size_t size = 0;
    if (!parse_size(text, size)) {
      std::fprintf(stderr, "ferry bench: bad size '%s' (use e.g. 64, 4K, 1M; from 16 B to 64 MiB)\n", text.c_str());
      return false;
    }
    if (std::find(sizes.begin(), sizes.end(), size) == sizes.end()) sizes.push_back(size);
  }
  std::sort(sizes.begin(), sizes.end());
  return true;
}

// Puts the cells a paired ratio compares (an endpoint and its raw baselines,
// same pattern and size) back to back where the first of them landed, the
// endpoint in the middle and the baselines' order flipped each repetition:
// the host's drift between two measurements seconds apart then stays off
// the ratio, and which one goes first favours neither.
void measure_compared_cells_together(std::vector<Cell*>& order, int repetition) {
  // The comparison a transport takes part in, and its place there: 0 same
  // calls, 1 the endpoint, 2 blocking read.
  const auto place = [](const std::string& name) -> std::optional<std::pair<const WrapperBaseline*, int>> {
    for (const WrapperBaseline& baseline : wrapper_baselines()) {
      if (name == baseline.same_calls) return std::pair{&baseline, 0};
      if (name == baseline.endpoint) return std::pair{&baseline, 1};
      if (name == baseline.blocking) return std::pair{&baseline, 2};
    }
    return std::nullopt;
  };
  std::vector<Cell*> grouped;
  std::vector<bool> taken(order.size(), false);
  for (std::size_t i = 0; i < order.size(); ++i) {
    if (taken[i]) continue;
    const auto group = place(order[i]->transport->name);
    if (!group) {
      grouped.push_back(order[i]);
      continue;
    }
    std::vector<std::pair<int, Cell*>> members;
    for (std::size_t j = i; j < order.size(); ++j) {
      Cell& other = *order[j];
      const auto other_group = place(other.transport->name);
      if (taken[j] || !other_group || other_group->first != group->first || other.pattern != order[i]->pattern ||
          other.size != order[i]->size || other.senders != order[i]->senders) {
        continue;
      }
      taken[j] = true;
      members.emplace_back(repetition % 2 == 0 ? other_group->second : 2 - other_group->second, &other);
    }
    std::stable_sort(members.begin(), members.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    for (const auto& member : members) grouped.push_back(member.second);
  }
  order = std::move(grouped);
}

std::string describe(const Cell& cell) {
  std::string text = cell.transport->name + " " + pattern_text(cell.pattern);
  if (cell.pattern == Pattern::throughput) text += " " + size_text(cell.size);
  if (cell.senders > 1) text += " x" + std::to_string(cell.senders) + " senders";
  return text;
}

std::string brief_value(const Cell& cell, const Outcome& outcome) {
  char text[96];
  if (outcome.status != Status::ok) return std::string(status_text(outcome.status)) + ": " + outcome.reason;
  if (is_round_trip(cell.pattern)) {
    std::snprintf(text, sizeof text, "median %s", format_ns(outcome.value).c_str());
  } else {
    std::snprintf(text, sizeof text, "%s, %s", format_rate(outcome.value, "msg/s").c_str(),
                  format_rate(outcome.value * static_cast<double>(cell.size), "B/s").c_str());
  }
  return std::string(text) + " (floor " + format_ns(outcome.floor_ns) + ")";
}

// ferry-bench.<pid>.XXXXXX: a run killed with SIGKILL cannot remove its
// directory; the next run removes those whose process is gone.
std::string make_temp_root() {
  const char* base_env = std::getenv("TMPDIR");
  const std::string base = base_env && *base_env ? base_env : "/tmp";
  std::error_code error;
  for (const auto& entry : std::filesystem::directory_iterator(base, error)) {
    const std::string name = entry.path().filename().string();
    int pid = 0;
    char suffix[16] = {};
    if (std::sscanf(name.c_str(), "ferry-bench.%d.%15s", &pid, suffix) != 2 || pid <= 0) continue;
    if (::kill(pid, 0) != 0 && errno == ESRCH && entry.is_directory(error)) {
      std::filesystem::remove_all(entry.path(), error);
    }
  }
  std::string pattern = base + "/ferry-bench." + std::to_string(::getpid()) + ".XXXXXX";
  std::vector<char> buffer(pattern.begin(), pattern.end());
  buffer.push_back('\0');
  if (::mkdtemp(buffer.data()) == nullptr) return {};
  return buffer.data();
}

void choose_cpus(Settings& settings, RunInfo& info) {
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  if (::sched_getaffinity(0, sizeof allowed, &allowed) != 0) return;
  int found = 0;
  for (int cpu = 0; cpu < CPU_SETSIZE && found < 2; ++cpu) {
    if (CPU_ISSET(cpu, &allowed)) settings.cpu[found++] = cpu;
  }
  if (found < 2) {
    settings.cpu[0] = settings.cpu[1] = -1;
    return;
  }
  info.pinned = true;
  info.cpu[0] = settings.cpu[0];
  info.cpu[1] = settings.cpu[1];
}

void list_transports(const std::vector<TransportInfo>& transports) {
  std::printf("%-24s %-6s %-17s %s\n", "transport", "group", "here", "what is measured");
  for (const TransportInfo& transport : transports) {
    // The daemons are started by the run itself; they must be installed.
    std::string here = !transport.unavailable.empty() ? "not available"
                       : transport.needs_roudi        ? "needs iox-roudi"
                       : transport.needs_nats_server  ? "needs nats-server"
                                                      : "yes";
    std::printf("%-24s %-6s %-17s %s\n", transport.name.c_str(), group_text(transport.group), here.c_str(),
                transport.unavailable.empty() ? transport.description.c_str() : transport.unavailable.c_str());
  }
}

}  // namespace

// ---------------------------------------------------------------------------

int run_command(const Options& options) {
  const std::uint64_t run_start = now_ns();
  std::vector<TransportInfo> transports = all_transports();
  if (options.list) {
    list_transports(transports);
    return 0;
  }

  // ---- what to measure ----
  std::set<std::string> only(options.only.begin(), options.only.end());
  for (const std::string& name : only) {
    const bool known = std::any_of(transports.begin(), transports.end(),
                                   [&](const TransportInfo& transport) { return transport.name == name; });
    if (!known) {
      std::fprintf(stderr, "ferry bench: unknown transport '%s'; these exist:", name.c_str());
      for (const TransportInfo& transport : transports) std::fprintf(stderr, " %s", transport.name.c_str());
      std::fprintf(stderr, "\n");
      return 2;
    }
  }
  if (!only.empty()) {
    only.insert("floor.spin");
    std::erase_if(transports, [&](const TransportInfo& transport) { return !only.count(transport.name); });
  }
  Settings settings;
  settings.repetitions = options.repetitions > 0 ? options.repetitions : (options.quick ? 4 : 9);
  // --quick: every transport, ~1150 measurements, each ~20 ms of setup
  // (processes, probe) besides its budget: under a minute on 2 vCPUs.
  settings.budget_ms = options.budget_ms > 0 ? options.budget_ms : (options.quick ? 20 : 150);
  settings.warmup_ms = std::clamp(settings.budget_ms / 4, 5, 50);
  settings.watchdog_s = static_cast<unsigned>(10 + (settings.budget_ms + settings.warmup_ms) / 1000);
  if (!parse_sizes(options.sizes, {64, 4096, 65536, 1048576}, settings.sizes) ||
      !parse_sizes(options.rtt_sizes, {kRttSize}, settings.rtt_sizes)) {
    return 2;
  }
  // Output files: a wrong directory is found now, not after minutes of measuring.
  for (const std::string* path : {&options.json_path, &options.plot_path}) {
    if (path->empty()) continue;
    const std::filesystem::path parent = std::filesystem::absolute(*path).parent_path();
    if (::access(parent.c_str(), W_OK) != 0) {
      std::fprintf(stderr, "ferry bench: cannot write %s: %s: %s\n", path->c_str(), parent.c_str(), std::strerror(errno));
      return 2;
    }
  }
  if (!options.plot_path.empty() && find_gnuplot().empty()) {
    std::fprintf(stderr,
                 "ferry bench: --plot needs gnuplot, which is not installed here "
                 "(Debian: apt-get install gnuplot-nox)\n");
    return 2;
  }

  RunInfo info;
  info.quick = options.quick;
  info.repetitions = settings.repetitions;
  info.budget_ms = settings.budget_ms;
  info.warmup_ms = settings.warmup_ms;
  info.cpus_online = ::sysconf(_SC_NPROCESSORS_ONLN);
  utsname host{};
  if (::uname(&host) == 0) info.kernel = std::string(host.sysname) + " " + host.release;
  choose_cpus(settings, info);

  // ---- the cells ----
  std::vector<Cell> cells;
  for (const TransportInfo& transport : transports) {
    struct Shape {
      Pattern pattern;
      std::size_t size;
      unsigned senders;
    };
    std::vector<Shape> shapes;
    // Larger requests get a 64-byte reply: not for transports whose round trip
    // is an echo (a call, or the floors' bare cache line or futex word).
    for (const std::size_t size : settings.rtt_sizes) {
      if (size == kRttSize || transport.replies_64) shapes.push_back({Pattern::rtt, size, 1});
    }
    shapes.push_back({Pattern::wake, kRttSize, 1});
    for (const std::size_t size : settings.sizes) shapes.push_back({Pattern::throughput, size, 1});
    // Queues that take several senders: 64-byte streams from 2, 4 and 8 processes.
    if (transport.many_senders) {
      for (const unsigned senders : {2u, 4u, 8u}) shapes.push_back({Pattern::throughput, kRttSize, senders});
    }
    for (const auto& [pattern, size, senders] : shapes) {
      Cell cell;
      cell.transport = &transport;
      cell.pattern = pattern;
      cell.size = size;
      cell.senders = senders;
      if (!transport.unavailable.empty()) {
        cell.status = Status::not_available;
        cell.reason = transport.unavailable;
      } else if (std::string why = transport.not_applicable(pattern, size); !why.empty()) {
        cell.status = Status::not_applicable;
        cell.reason = why;
      }
      cells.push_back(std::move(cell));
    }
  }

  // ---- resources ----
  const std::string temp_root = make_temp_root();
  if (temp_root.empty()) {
    std::fprintf(stderr, "ferry bench: cannot create a temporary directory: %s\n", std::strerror(errno));
    return 1;
  }
  void* mapping = ::mmap(nullptr, sizeof(SharedArea), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (mapping == MAP_FAILED) {
    std::fprintf(stderr, "ferry bench: mmap: %s\n", std::strerror(errno));
    std::filesystem::remove_all(temp_root);
    return 1;
  }
  auto* area = new (mapping) SharedArea;
  struct sigaction stop_action{};
  stop_action.sa_handler = on_stop;
  sigemptyset(&stop_action.sa_mask);
  struct sigaction previous[3]{};
  const int stop_signals[3] = {SIGINT, SIGTERM, SIGHUP};
  for (int i = 0; i < 3; ++i) ::sigaction(stop_signals[i], &stop_action, &previous[i]);
  struct sigaction ignore_pipe{};
  ignore_pipe.sa_handler = SIG_IGN;
  struct sigaction previous_pipe{};
  ::sigaction(SIGPIPE, &ignore_pipe, &previous_pipe);
  ::prctl(PR_SET_CHILD_SUBREAPER, 1);

  Roudi roudi;
  bool roudi_wanted = false;
  for (const Cell& cell : cells) roudi_wanted |= cell.transport->needs_roudi && cell.status == Status::none;
  bool roudi_up = false;
  if (roudi_wanted) {
    std::vector<std::size_t> pool_sizes{kRttSize};
    pool_sizes.insert(pool_sizes.end(), settings.sizes.begin(), settings.sizes.end());
    pool_sizes.insert(pool_sizes.end(), settings.rtt_sizes.begin(), settings.rtt_sizes.end());
    roudi_up = roudi.start(temp_root, pool_sizes);
    info.roudi = roudi_up ? "iox-roudi started for this run with mempools for " + std::to_string(pool_sizes.size()) +
                                " sizes"
                          : "not running: " + roudi.reason();
    if (!roudi_up) {
      for (Cell& cell : cells) {
        if (cell.transport->needs_roudi && cell.status == Status::none) {
          cell.status = Status::not_running;
          cell.reason = roudi.reason();
        }
      }
    }
  }

  NatsServer nats_server;
  bool nats_wanted = false;
  for (const Cell& cell : cells) nats_wanted |= cell.transport->needs_nats_server && cell.status == Status::none;
  if (nats_wanted) {
    if (nats_server.start(temp_root + "/nats-server")) {
      settings.nats_url = nats_server.url();
      info.nats_server = "nats-server " + nats_server.version() + " started for this run at " + nats_server.url() +
                         " (JetStream, file storage in the run's temporary directory)";
    } else {
      info.nats_server = "not running: " + nats_server.reason();
      for (Cell& cell : cells) {
        if (cell.transport->needs_nats_server && cell.status == Status::none) {
          cell.status = Status::not_running;
          cell.reason = nats_server.reason();
        }
      }
    }
  }

  // ---- measure ----
  const bool tty = ::isatty(STDERR_FILENO) != 0;
  std::size_t total = 0;
  for (const Cell& cell : cells) total += cell.status == Status::none ? 1 : 0;
  total *= static_cast<std::size_t>(settings.repetitions);
  std::size_t done = 0;
  Coordinator coordinator(settings, temp_root, area);
  std::vector<Cell*> order;
  std::string roudi_broken;  // why iceoryx cannot be measured any more, once that is known
  for (int repetition = 0; repetition < settings.repetitions && !g_stop; ++repetition) {
    order.clear();
    for (Cell& cell : cells) {
      if (cell.status == Status::none) order.push_back(&cell);
    }
    std::mt19937 shuffle_with(static_cast<std::mt19937::result_type>(repetition + 1));
    std::shuffle(order.begin(), order.end(), shuffle_with);
    measure_compared_cells_together(order, repetition);
    for (Cell* cell : order) {
      if (g_stop) break;
      ++done;
      if (cell->status != Status::none) continue;
      if (tty) {
        const double elapsed_s = static_cast<double>(now_ns() - run_start) / 1e9;
        const double left_s = done > 1 ? elapsed_s / static_cast<double>(done - 1) * static_cast<double>(total - done + 1) : 0;
        std::fprintf(stderr, "\r\033[Kferry bench: [%zu/%zu] %.0f s, about %.0f s left; repetition %d/%d: %s", done,
                     total, elapsed_s, left_s, repetition + 1, settings.repetitions, describe(*cell).c_str());
        std::fflush(stderr);
      }
      Outcome outcome;
      if (cell->transport->needs_roudi && !roudi_broken.empty()) {
        outcome.status = Status::not_running;
        outcome.reason = roudi_broken;
      } else if (cell->transport->needs_roudi && !roudi.alive()) {
        outcome.status = Status::not_running;
        outcome.reason = roudi_broken = roudi.reason();
      } else if (cell->transport->needs_nats_server && !nats_server.alive()) {
        outcome.status = Status::not_running;
        outcome.reason = nats_server.reason();
      } else {
        outcome = coordinator.measure(*cell->transport, cell->pattern, cell->size, cell->senders);
        if (cell->transport->needs_roudi) {
          if (outcome.status == Status::error && !roudi.alive()) {
            outcome.status = Status::not_running;
            outcome.reason = roudi.reason();
          }
          // A RouDi that does not serve once will not serve the next one either:
          // spare every further iceoryx measurement its watchdog.
          if (outcome.status == Status::not_running) roudi_broken = outcome.reason;
        }
        if (cell->transport->needs_nats_server && outcome.status == Status::error && !nats_server.alive()) {
          outcome.status = Status::not_running;
          outcome.reason = nats_server.reason();
        }
      }
      if (g_stop) break;
      if (!tty) {
        std::fprintf(stderr, "ferry bench: [%zu/%zu] repetition %d/%d: %s: %s\n", done, total, repetition + 1,
                     settings.repetitions, describe(*cell).c_str(), brief_value(*cell, outcome).c_str());
      }
      if (outcome.status != Status::ok) {
        total -= static_cast<std::size_t>(settings.repetitions - repetition - 1);  // not measured again
        cell->status = outcome.status;
        cell->reason = outcome.reason;
        if (outcome.status == Status::error) cell->reason += " (repetition " + std::to_string(repetition + 1) + ")";
        continue;
      }
      cell->values.push_back(outcome.value);
      cell->floors.push_back(outcome.floor_ns);
      cell->cpu.push_back(outcome.cpu_ns);
      info.all_floors.push_back(outcome.floor_ns);
      cell->samples.insert(cell->samples.end(), outcome.samples.begin(), outcome.samples.end());
      if (cell->transport->name == "floor.spin" && cell->pattern == Pattern::rtt) {
        info.spin_rtt_by_rep.push_back(outcome.value);
      }
    }
  }
  if (tty) std::fprintf(stderr, "\r\033[K");

  // ---- clean up ----
  if (const std::string ended = roudi.stop(); !ended.empty()) info.roudi += ", " + ended;
  if (!roudi_broken.empty() && roudi_up) info.roudi += "; it stopped serving during the run: " + roudi_broken;
  if (const std::string ended = nats_server.stop(); !ended.empty()) info.nats_server += ", " + ended;
  if (nats_wanted && !nats_server.reason().empty() && !settings.nats_url.empty()) {
    info.nats_server += "; " + nats_server.reason();
  }
  ::munmap(mapping, sizeof(SharedArea));
  std::error_code ignored;
  std::filesystem::remove_all(temp_root, ignored);
  ::prctl(PR_SET_CHILD_SUBREAPER, 0);
  for (int i = 0; i < 3; ++i) ::sigaction(stop_signals[i], &previous[i], nullptr);
  ::sigaction(SIGPIPE, &previous_pipe, nullptr);
  if (g_stop) {
    std::fprintf(stderr, "ferry bench: interrupted (%s); everything it started is stopped and removed\n",
                 signal_text(g_stop).c_str());
    return 130;
  }
  info.seconds = static_cast<double>(now_ns() - run_start) / 1e9;

  // ---- summarise ----
  std::vector<Record> records;
  for (Cell& cell : cells) {
    Record record;
    record.transport = cell.transport->name;
    record.group = cell.transport->group;
    record.description = cell.transport->description;
    record.pattern = cell.pattern;
    record.size = cell.size;
    record.senders = cell.senders;
    record.repetition_values = cell.values;
    record.repetition_floors = cell.floors;
    if (!cell.cpu.empty() && std::all_of(cell.cpu.begin(), cell.cpu.end(), [](double ns) { return ns > 0; })) {
      record.repetition_cpu = cell.cpu;
      record.cpu_ns = median(cell.cpu);
    }
    if (cell.status != Status::none) {
      record.status = cell.status;
      record.reason = cell.reason;
    } else if (cell.values.empty()) {
      record.status = Status::error;
      record.reason = "not measured";
    } else {
      record.status = Status::ok;
      record.floor_ns = median(cell.floors);
      if (is_round_trip(cell.pattern)) {
        record.median_ns = median(cell.values);
        record.samples = cell.samples.size();
        record.p99_ns = percentile(cell.samples, 0.99);
        record.p999_ns = percentile(cell.samples, 0.999);
      } else {
        record.msgs_per_s = median(cell.values);
        record.bytes_per_s = *record.msgs_per_s * static_cast<double>(cell.size);
      }
    }
    records.push_back(std::move(record));
  }
  compute_ratios(records);
  print_report(stdout, info, records);
  std::fflush(stdout);

  int status = 0;
  if (!options.json_path.empty()) {
    if (const std::string error = write_json(options.json_path, records); !error.empty()) {
      std::fprintf(stderr, "ferry bench: --json: %s\n", error.c_str());
      status = 1;
    }
  }
  if (!options.plot_path.empty()) {
    if (const std::string error = plot(options.plot_path, info, records); !error.empty()) {
      std::fprintf(stderr, "ferry bench: --plot: %s\n", error.c_str());
      status = 1;
    } else {
      std::fprintf(stderr, "ferry bench: plot written to %s\n", options.plot_path.c_str());
    }
  }
  return status;
}

}  // namespace ferry::bench
