// The measurement processes' side of the benchmark: failure reporting,
// watchdogs, forking the responder, the control pipes and the floor probe.
// See ipc_worker.hpp for the choreography.
#include "ipc_worker.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <vector>
#if defined(__x86_64__)
#include <x86intrin.h>
#endif

namespace ferry::bench {

namespace {

SharedArea* g_area = nullptr;
Side g_side = Side::initiator;
volatile sig_atomic_t g_peer_pid = 0;      // A: B's pid while B runs
volatile sig_atomic_t g_peer_may_exit = 0;  // A: B's exit is no longer a failure
int g_to_peer = -1;
int g_from_peer = -1;
unsigned g_watchdog_s = 10;
// What the watchdog reports: two buffers, so that a phase can change the text
// while the alarm may fire; the handler reads the one g_watchdog_current names.
char g_watchdog_messages[2][200];
volatile sig_atomic_t g_watchdog_current = 0;
volatile sig_atomic_t g_watchdog_status = static_cast<int>(Status::error);

const char* side_name(Side side) { return side == Side::initiator ? "initiator" : "responder"; }
const char* other_name() { return g_side == Side::initiator ? "responder" : "initiator"; }

// Async-signal-safe: the first report of this process wins.
void record(Status status, const char* text) noexcept {
  if (g_area == nullptr) return;
  SideReport& report = g_area->side[static_cast<int>(g_side)];
  int expected = 0;
  if (!report.status.compare_exchange_strong(expected, static_cast<int>(Status::error))) return;
  std::size_t length = std::strlen(text);
  length = std::min(length, sizeof report.reason - 1);
  std::memcpy(report.reason, text, length);
  report.reason[length] = '\0';
  report.when_ns = now_ns();
  report.status.store(static_cast<int>(status), std::memory_order_release);
}

[[noreturn]] void die() noexcept {
  if (g_side == Side::initiator && g_peer_pid > 0) {
    g_peer_may_exit = 1;
    ::kill(static_cast<pid_t>(g_peer_pid), SIGKILL);
  }
  ::_exit(1);
}

void on_alarm(int /*signal*/) {
  record(static_cast<Status>(g_watchdog_status), g_watchdog_messages[g_watchdog_current]);
  die();
}

void set_watchdog_text(Status status, const char* text) noexcept {
  const int next = 1 - g_watchdog_current;
  std::snprintf(g_watchdog_messages[next], sizeof g_watchdog_messages[next], "%s", text);
  g_watchdog_status = static_cast<int>(status);
  g_watchdog_current = next;
}

void set_default_watchdog_text() noexcept {
  char text[200];
  std::snprintf(text, sizeof text, "watchdog: the %s process did not finish within %u s (a hung or stopped peer?)",
                side_name(g_side), g_watchdog_s);
  set_watchdog_text(Status::error, text);
}

// Appends a decimal number; async-signal-safe.
void append_number(char* text, std::size_t capacity, long value) {
  char digits[24];
  int count = 0;
  const bool negative = value < 0;
  unsigned long magnitude = negative ? static_cast<unsigned long>(-value) : static_cast<unsigned long>(value);
  do {
    digits[count++] = static_cast<char>('0' + magnitude % 10);
    magnitude /= 10;
  } while (magnitude > 0);
  std::size_t length = std::strlen(text);
  if (negative && length + 1 < capacity) text[length++] = '-';
  while (count > 0 && length + 1 < capacity) text[length++] = digits[--count];
  text[length] = '\0';
}

void append_text(char* text, std::size_t capacity, const char* more) {
  std::size_t length = std::strlen(text);
  while (*more != '\0' && length + 1 < capacity) text[length++] = *more++;
  text[length] = '\0';
}

// A: B exited. B leaves with status 0 only after it sent 'D' (done), which A
// may simply not have read yet: that is fine. Any other end before A expects
// it is a failure. B's own report (if it wrote one) is older and is what the
// coordinator shows; this one covers B crashing silently.
void on_child_exit(int /*signal*/) {
  if (g_peer_may_exit || g_peer_pid <= 0) return;
  const int saved_errno = errno;
  int status = 0;
  if (::waitpid(static_cast<pid_t>(g_peer_pid), &status, WNOHANG) != g_peer_pid) {
    errno = saved_errno;
    return;
  }
  g_peer_pid = 0;
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
    errno = saved_errno;
    return;
  }
  char text[160] = "the responder process ended early: ";
  if (WIFSIGNALED(status)) {
    append_text(text, sizeof text, "killed by signal ");
    append_number(text, sizeof text, WTERMSIG(status));
    if (const char* name = ::sigabbrev_np(WTERMSIG(status))) {
      append_text(text, sizeof text, " (SIG");
      append_text(text, sizeof text, name);
      append_text(text, sizeof text, ")");
    }
  } else {
    append_text(text, sizeof text, "exit status ");
    append_number(text, sizeof text, WEXITSTATUS(status));
  }
  record(Status::error, text);
  ::_exit(1);
}

void install(int signo, void (*handler)(int), int flags) {
  struct sigaction action{};
  action.sa_handler = handler;
  action.sa_flags = flags;
  sigemptyset(&action.sa_mask);
  if (::sigaction(signo, &action, nullptr) != 0) fail_errno("sigaction");
}

void pin(int cpu) {
  if (cpu < 0) return;
  cpu_set_t cpus;
  CPU_ZERO(&cpus);
  CPU_SET(cpu, &cpus);
  if (::sched_setaffinity(0, sizeof cpus, &cpus) != 0) fail("sched_setaffinity(CPU %d): %s", cpu, std::strerror(errno));
}

[[noreturn]] void fail_with(Status status, const char* format, va_list arguments) {
  char text[sizeof(SideReport::reason)];
  std::vsnprintf(text, sizeof text, format, arguments);
  record(status, text);
  std::fflush(stdout);
  std::fflush(stderr);
  die();
}

}  // namespace

std::uint64_t now_ns() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<std::uint64_t>(ts.tv_nsec);
}

namespace {

bool tsc_is_invariant() noexcept {
#if defined(__x86_64__)
  static const bool invariant = [] {
    std::FILE* cpuinfo = std::fopen("/proc/cpuinfo", "r");
    if (cpuinfo == nullptr) return false;
    char line[4096];
    bool found = false;
    while (!found && std::fgets(line, sizeof line, cpuinfo) != nullptr) {
      if (std::strncmp(line, "flags", 5) == 0) {
        found = std::strstr(line, " constant_tsc") != nullptr && std::strstr(line, " nonstop_tsc") != nullptr;
        break;
      }
    }
    std::fclose(cpuinfo);
    return found;
  }();
  return invariant;
#else
  return false;
#endif
}

std::uint64_t read_tsc() noexcept {
#if defined(__x86_64__)
  return __rdtsc();
#else
  return 0;
#endif
}

// TSC ticks per ns, measured once over 2 ms (enough for the budget's end;
// samples are converted by the rate over their own run).
double tsc_rate() noexcept {
  static const double rate = [] {
    const std::uint64_t ns0 = now_ns();
    const std::uint64_t ticks0 = read_tsc();
    std::uint64_t ns1 = ns0;
    while ((ns1 = now_ns()) < ns0 + 2'000'000) {
    }
    return static_cast<double>(read_tsc() - ticks0) / static_cast<double>(ns1 - ns0);
  }();
  return rate;
}

}  // namespace

SampleClock::SampleClock() noexcept : tsc_(tsc_is_invariant()) {
  if (tsc_) (void)tsc_rate();
  start_ns_ = now_ns();
  start_ = now();
}

std::uint64_t SampleClock::now() const noexcept { return tsc_ ? read_tsc() : now_ns(); }

std::uint64_t SampleClock::span(std::uint64_t ns) const noexcept {
  return tsc_ ? static_cast<std::uint64_t>(static_cast<double>(ns) * tsc_rate()) : ns;
}

void SampleClock::to_ns(std::uint32_t* samples, std::uint32_t count) const noexcept {
  if (!tsc_) return;
  const std::uint64_t ticks = now() - start_;
  const std::uint64_t ns = now_ns() - start_ns_;
  const double ns_per_tick = ticks > 0 && ns > 0 ? static_cast<double>(ns) / static_cast<double>(ticks) : 1 / tsc_rate();
  for (std::uint32_t i = 0; i < count; ++i) {
    const double converted = static_cast<double>(samples[i]) * ns_per_tick + 0.5;
    samples[i] = converted >= static_cast<double>(UINT32_MAX) ? UINT32_MAX : static_cast<std::uint32_t>(converted);
  }
}

void yield_cpu() noexcept { ::sched_yield(); }

std::uint64_t process_cpu_ns() noexcept {
  timespec now{};
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &now);
  return static_cast<std::uint64_t>(now.tv_sec) * 1'000'000'000u + static_cast<std::uint64_t>(now.tv_nsec);
}

void fail(const char* format, ...) {
  va_list arguments;
  va_start(arguments, format);
  fail_with(Status::error, format, arguments);
}

void fail_not_applicable(const char* format, ...) {
  va_list arguments;
  va_start(arguments, format);
  fail_with(Status::not_applicable, format, arguments);
}

void fail_errno(const char* what) { fail("%s: %s", what, std::strerror(errno)); }

void fail_torn(std::uint64_t head, std::uint64_t tail) {
  fail("torn message: it begins with stamp %#llx and ends with %#llx", static_cast<unsigned long long>(head),
       static_cast<unsigned long long>(tail));
}

bool write_full(int fd, const void* data, std::size_t size) noexcept {
  const auto* bytes = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t n = ::write(fd, bytes, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n == 0) errno = EPIPE;
      return false;
    }
    bytes += n;
    size -= static_cast<std::size_t>(n);
  }
  return true;
}

bool read_full(int fd, void* data, std::size_t size) noexcept {
  auto* bytes = static_cast<char*>(data);
  while (size > 0) {
    const ssize_t n = ::read(fd, bytes, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n == 0) errno = EPIPE;  // EOF: the peer is gone
      return false;
    }
    bytes += n;
    size -= static_cast<std::size_t>(n);
  }
  return true;
}

std::size_t queue_depth(std::size_t size) noexcept {
  return std::clamp<std::size_t>(kRingBytes / std::max<std::size_t>(size, 1), 4, 256);
}

std::size_t queue_depth(const Spec& spec) noexcept {
  return is_round_trip(spec.pattern) ? kRoundTripDepth : queue_depth(spec.size);
}

void* map_shared(std::size_t bytes) {
  void* memory = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  if (memory == MAP_FAILED) fail_errno("mmap (shared, anonymous)");
  return memory;
}

std::string size_text(std::size_t size) {
  char text[32];
  if (size >= (std::size_t{1} << 20) && size % (std::size_t{1} << 20) == 0) {
    std::snprintf(text, sizeof text, "%zu MiB", size >> 20);
  } else if (size >= 1024 && size % 1024 == 0) {
    std::snprintf(text, sizeof text, "%zu KiB", size >> 10);
  } else {
    std::snprintf(text, sizeof text, "%zu B", size);
  }
  return text;
}

namespace detail {

void worker_begin(const Spec& spec, SharedArea& area) {
  g_area = &area;
  g_side = Side::initiator;
  g_watchdog_s = spec.watchdog_s;
  set_default_watchdog_text();
  install(SIGALRM, on_alarm, 0);
  ::alarm(spec.watchdog_s);
  pin(spec.cpu[0]);
}

Side fork_responder(const Spec& spec) {
  int to_responder[2];
  int to_initiator[2];
  if (::pipe2(to_responder, O_CLOEXEC) != 0 || ::pipe2(to_initiator, O_CLOEXEC) != 0) fail_errno("pipe2");
  install(SIGCHLD, on_child_exit, SA_NOCLDSTOP);
  const pid_t initiator = ::getpid();
  std::fflush(stdout);
  std::fflush(stderr);
  const pid_t child = ::fork();
  if (child < 0) fail_errno("fork (responder)");
  if (child == 0) {
    g_side = Side::responder;
    g_peer_pid = 0;
    ::signal(SIGCHLD, SIG_DFL);
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != initiator) ::_exit(1);  // A is already gone
    set_default_watchdog_text();
    ::alarm(spec.watchdog_s);  // alarms are not inherited
    ::close(to_responder[1]);
    ::close(to_initiator[0]);
    g_from_peer = to_responder[0];
    g_to_peer = to_initiator[1];
    pin(spec.cpu[1]);
    return Side::responder;
  }
  g_peer_pid = child;
  ::close(to_responder[0]);
  ::close(to_initiator[1]);
  g_to_peer = to_responder[1];
  g_from_peer = to_initiator[0];
  return Side::initiator;
}

void send_command(char command) {
  if (!write_full(g_to_peer, &command, 1)) fail("the %s process is gone: %s", other_name(), std::strerror(errno));
}

void expect_command(char command, const char* waiting_for) {
  pollfd ready{g_from_peer, POLLIN, 0};
  for (;;) {
    const int n = ::poll(&ready, 1, static_cast<int>(g_watchdog_s * 1000));
    if (n > 0) break;
    if (n == 0) fail("timed out waiting for %s", waiting_for);
    if (errno != EINTR) fail_errno("poll (control pipe)");
  }
  char received = 0;
  if (!read_full(g_from_peer, &received, 1)) {
    fail("the %s process ended while this one was waiting for %s", other_name(), waiting_for);
  }
  if (received != command) fail("control protocol: expected '%c', got '%c'", command, received);
}

void peer_may_exit() noexcept { g_peer_may_exit = 1; }

void watchdog_phase(Status status, const char* text) noexcept {
  if (text == nullptr) {
    set_default_watchdog_text();
  } else {
    set_watchdog_text(status, text);
  }
}

pid_t fork_sender(const Spec& spec) {
  const pid_t initiator = ::getpid();
  std::fflush(stdout);
  std::fflush(stderr);
  const pid_t child = ::fork();
  if (child < 0) fail_errno("fork (sender)");
  if (child == 0) {
    g_peer_pid = 0;
    ::signal(SIGCHLD, SIG_DFL);
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != initiator) ::_exit(1);  // A is already gone
    ::alarm(spec.watchdog_s);  // alarms are not inherited
  }
  return child;
}

void reap_senders(const std::vector<pid_t>& senders) {
  for (const pid_t sender : senders) {
    int status = 0;
    while (::waitpid(sender, &status, 0) < 0 && errno == EINTR) {
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) fail("a sending process ended badly (status %d)", status);
  }
}

void reap_responder() {
  g_peer_may_exit = 1;
  if (g_peer_pid <= 0) return;
  int status = 0;
  while (::waitpid(static_cast<pid_t>(g_peer_pid), &status, 0) < 0 && errno == EINTR) {
  }
  g_peer_pid = 0;
}

void probe_initiate(SharedArea& area) {
  std::vector<std::uint32_t> samples(kProbeRoundTrips);
  std::atomic<std::uint32_t>& flag = area.probe_flag;
  const SampleClock clock;
  std::uint64_t before = clock.now();
  for (std::uint32_t i = 0; i < kProbeRoundTrips; ++i) {
    flag.store(1, std::memory_order_release);
    spin_until([&] { return flag.load(std::memory_order_acquire) == 0; });
    const std::uint64_t after = clock.now();
    samples[i] = static_cast<std::uint32_t>(std::min<std::uint64_t>(after - before, UINT32_MAX));
    before = after;
  }
  clock.to_ns(samples.data(), kProbeRoundTrips);
  constexpr std::ptrdiff_t kWarmup = 100;
  const auto middle = samples.begin() + kWarmup + (static_cast<std::ptrdiff_t>(samples.size()) - kWarmup) / 2;
  std::nth_element(samples.begin() + kWarmup, middle, samples.end());
  area.floor_ns = *middle;
}

void probe_respond(SharedArea& area) {
  std::atomic<std::uint32_t>& flag = area.probe_flag;
  for (std::uint32_t i = 0; i < kProbeRoundTrips; ++i) {
    spin_until([&] { return flag.load(std::memory_order_acquire) == 1; });
    flag.store(0, std::memory_order_release);
  }
}

void report_ok() noexcept { record(Status::ok, ""); }

void register_leftover(const std::string& path) noexcept {
  if (g_area == nullptr) return;
  SideReport& report = g_area->side[static_cast<int>(g_side)];
  if (report.leftover_count >= static_cast<int>(std::size(report.leftovers))) return;
  char* slot = report.leftovers[report.leftover_count];
  std::snprintf(slot, sizeof report.leftovers[0], "%s", path.c_str());
  ++report.leftover_count;
}

void register_sysv_queue(int id) noexcept {
  if (g_area != nullptr && g_area->sysv_queue_count < static_cast<int>(std::size(g_area->sysv_queues))) {
    g_area->sysv_queues[g_area->sysv_queue_count++] = id;
  }
}

std::byte* allocate_message(std::size_t size) {
  const std::size_t rounded = (std::max<std::size_t>(size, 64) + 63) / 64 * 64;
  auto* memory = static_cast<std::byte*>(std::aligned_alloc(64, rounded));
  if (memory == nullptr) fail("out of memory for a %zu-byte message", size);
  for (std::size_t i = 0; i < rounded; ++i) memory[i] = static_cast<std::byte>(i * 131 + 7);
  return memory;
}

void leave(bool normally) {
  std::fflush(stdout);
  std::fflush(stderr);
  if (normally) std::exit(0);
  ::_exit(0);
}

void fail_echo(std::uint64_t sent, std::uint64_t received) {
  fail("round trip %#llx came back as %#llx", static_cast<unsigned long long>(sent),
       static_cast<unsigned long long>(received));
}

void fail_order(std::uint64_t expected, std::uint64_t received) {
  fail("message %llu arrived as number %llu: lost, duplicated or reordered", static_cast<unsigned long long>(expected),
       static_cast<unsigned long long>(received));
}

}  // namespace detail

}  // namespace ferry::bench
