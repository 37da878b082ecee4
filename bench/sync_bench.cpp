// ferry_sync_bench: ferry's Mutex, Semaphore and CondVar beside glibc
// (pthread, POSIX semaphores) and Boost.Interprocess, measured in one run.
//
// What it measures
//  1. Uncontended cost, one thread: lock+unlock pairs and post+wait pairs,
//     timed in batches of 1000 pairs; the objects live in shared memory.
//  2. Cross-process hand-off latency: the parent and a forked child ping-pong
//     through a MAP_SHARED|MAP_ANONYMOUS region mapped before fork.
//       semaphores:     A posts S1; B waits S1, posts S2; A waits S2.
//       mutex+condvar:  a `turn` word guarded by the mutex; each side waits on
//                       the condition variable until it is its turn, flips
//                       the turn and notifies.
//     One sample is one round trip, timed by the parent with one clock read
//     per round trip. A raw atomic ping-pong (two CPUs spinning on one cache
//     line) runs beside them as the "spin floor": it shows where the host has
//     placed the two vCPUs at that moment (see shared/notes/bench-machine.md).
//
//  A pure mutex hand-off is NOT measured. A mutex is not a signalling
//  primitive: strict alternation with mutexes alone needs either a flag polled
//  outside the lock (which then measures the poll, not the mutex) or a
//  three-mutex baton scheme whose timing is decided by lock stealing (glibc's
//  mutex is not FIFO: the unlocker may relock before the woken waiter runs).
//  Neither tells more than the mutex+condvar ping-pong, which also exercises
//  the mutex hand-off on every round trip.
//
// Fairness
//  glibc never spins: its sem_wait, pthread_mutex_lock and pthread_cond_wait
//  go to the futex at once. ferry's default WaitStrategy (adaptive) spins up to
//  20 us first, which on this VM (waking a halted vCPU costs ~20 us) turns a
//  futex round trip into a cache-line round trip. So ferry is measured twice:
//  adaptive and WaitStrategy::block() (futex only), the like-for-like one.
//  CondVar's own default is block(); ferry's "adaptive" condvar row passes
//  WaitStrategy::adaptive() to both Mutex::lock and CondVar::wait.
//
// Method
//  Many short rounds; each round runs every implementation once, in an order
//  rotated from round to round, so slow drift of the machine (vCPU placement,
//  another build) hits all of them alike. Reported: the median of the
//  per-round medians; for latencies also the p99 of all samples pooled over
//  the rounds; and each as a ratio against the glibc baseline of its group
//  measured in the same run. On this VM about 2% of futex wake-ups across
//  CPUs take 1-5 ms (the host is slow to resume a halted vCPU), so the p99 of
//  every futex-based row sits in that tail; the medians are the comparison.
//  The whole run stays under about a minute
//  (--max-seconds stops starting new rounds past the budget).
//
// Safety
//  A watchdog alarm bounds every measurement, and the parent aborts (killing
//  the child) if the child exits early; the child dies with the parent
//  (PR_SET_PDEATHSIG). Named semaphores are unlinked right after sem_open, so
//  nothing is left in /dev/shm whatever happens afterwards.
//
// Placement
//  By default the parent is pinned to CPU 0 and the child to CPU 1 with
//  sched_setaffinity (the report says so). Left to itself the scheduler often
//  puts both on one CPU for a blocking ping-pong (then a futex round trip
//  costs a few microseconds instead of ~45 us, while a spinning waiter burns
//  its whole spin budget because its peer cannot run), and it does so
//  differently from one measurement to the next,
//  which makes the comparison meaningless. --no-pin turns pinning off; the
//  same-CPU column then shows how often that happened.
//
// Usage: ferry_sync_bench [--markdown] [--no-pin] [--rounds N] [--iters N] [--max-seconds S]

#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boost/interprocess/sync/interprocess_condition.hpp>
#include <boost/interprocess/sync/interprocess_mutex.hpp>
#include <boost/interprocess/sync/interprocess_semaphore.hpp>
#include <boost/interprocess/sync/scoped_lock.hpp>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#include "ferry/sync/condvar.hpp"
#include "ferry/sync/mutex.hpp"
#include "ferry/sync/semaphore.hpp"
#include "ferry/sync/wait.hpp"

namespace {

namespace bip = boost::interprocess;

// ---------------------------------------------------------------------------
// Time, failure, signals

std::uint64_t now_ns() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<std::uint64_t>(ts.tv_nsec);
}

volatile sig_atomic_t g_child_pid = 0;
volatile sig_atomic_t g_child_may_exit = 0;

void write_stderr(const char* text) noexcept {
  if (::write(STDERR_FILENO, text, std::strlen(text)) < 0) {
    // nothing more to do from a signal handler
  }
}

[[noreturn, gnu::cold, gnu::noinline]] void die(const std::string& what) {
  g_child_may_exit = 1;
  if (g_child_pid > 0) ::kill(static_cast<pid_t>(g_child_pid), SIGKILL);
  std::fprintf(stderr, "ferry_sync_bench (pid %d): %s\n", static_cast<int>(::getpid()), what.c_str());
  std::fflush(stderr);
  std::_Exit(2);
}

[[noreturn, gnu::cold, gnu::noinline]] void die_rc(int rc, const char* what) {
  die(std::string(what) + ": " + std::strerror(rc));
}

[[noreturn, gnu::cold, gnu::noinline]] void die_result(const ferry::error& e, const char* what) {
  die(std::string(what) + ": " + e.message());
}

inline void check_rc(int rc, const char* what) {
  if (rc != 0) [[unlikely]] die_rc(rc, what);
}

inline void check(const ferry::result<void>& outcome, const char* what) {
  if (!outcome) [[unlikely]] die_result(outcome.error(), what);
}

void on_alarm(int /*signal*/) {
  write_stderr("ferry_sync_bench: watchdog: a measurement did not finish in time (hung peer?); giving up\n");
  if (g_child_pid > 0) ::kill(static_cast<pid_t>(g_child_pid), SIGKILL);
  ::_exit(3);
}

void on_child_exit(int /*signal*/) {
  if (g_child_may_exit) return;
  write_stderr("ferry_sync_bench: the child process exited unexpectedly; giving up\n");
  ::_exit(3);
}

void install_handler(int signo, void (*handler)(int), int flags) {
  struct sigaction action{};
  action.sa_handler = handler;
  action.sa_flags = flags;
  sigemptyset(&action.sa_mask);
  if (::sigaction(signo, &action, nullptr) != 0) die_rc(errno, "sigaction");
}

bool write_full(int fd, const void* data, std::size_t size) {
  const auto* bytes = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t n = ::write(fd, bytes, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    bytes += n;
    size -= static_cast<std::size_t>(n);
  }
  return true;
}

bool read_full(int fd, void* data, std::size_t size) {
  auto* bytes = static_cast<char*>(data);
  while (size > 0) {
    const ssize_t n = ::read(fd, bytes, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;  // EOF: the peer is gone
    bytes += n;
    size -= static_cast<std::size_t>(n);
  }
  return true;
}

// ---------------------------------------------------------------------------
// The shared region: every object on its own 128-byte slot (two cache lines,
// so the adjacent-line prefetcher does not couple neighbours).

void init_robust_mutex(pthread_mutex_t* mutex, int type) {
  pthread_mutexattr_t attributes;
  check_rc(pthread_mutexattr_init(&attributes), "pthread_mutexattr_init");
  check_rc(pthread_mutexattr_setpshared(&attributes, PTHREAD_PROCESS_SHARED), "setpshared");
  check_rc(pthread_mutexattr_setrobust(&attributes, PTHREAD_MUTEX_ROBUST), "setrobust");
  check_rc(pthread_mutexattr_settype(&attributes, type), "settype");
  check_rc(pthread_mutex_init(mutex, &attributes), "pthread_mutex_init");
  pthread_mutexattr_destroy(&attributes);
}

void init_shared_cond(pthread_cond_t* cond) {
  pthread_condattr_t attributes;
  check_rc(pthread_condattr_init(&attributes), "pthread_condattr_init");
  check_rc(pthread_condattr_setpshared(&attributes, PTHREAD_PROCESS_SHARED), "setpshared");
  check_rc(pthread_cond_init(cond, &attributes), "pthread_cond_init");
  pthread_condattr_destroy(&attributes);
}

void init_shared_sem(sem_t* sem) {
  if (::sem_init(sem, /*pshared=*/1, 0) != 0) die_rc(errno, "sem_init");
}

struct Shared {
  Shared() {
    init_robust_mutex(&glibc_mutex, PTHREAD_MUTEX_NORMAL);
    init_robust_mutex(&glibc_mutex_errorcheck, PTHREAD_MUTEX_ERRORCHECK);
    init_shared_sem(&glibc_sem);
    init_shared_sem(&glibc_ping);
    init_shared_sem(&glibc_pong);
    init_robust_mutex(&glibc_cv_mutex, PTHREAD_MUTEX_NORMAL);
    init_shared_cond(&glibc_cv);
  }

  // 1. uncontended
  alignas(128) ferry::Mutex ferry_mutex{"bench"};
  alignas(128) pthread_mutex_t glibc_mutex;
  alignas(128) pthread_mutex_t glibc_mutex_errorcheck;
  alignas(128) bip::interprocess_mutex boost_mutex;
  alignas(128) ferry::Semaphore ferry_sem{0, 1, "bench"};
  alignas(128) sem_t glibc_sem;
  alignas(128) bip::interprocess_semaphore boost_sem{0};

  // 2a. semaphore ping-pong: ping is parent -> child, pong child -> parent
  alignas(128) ferry::Semaphore ferry_ping{0, 1, "ping"};
  alignas(128) ferry::Semaphore ferry_pong{0, 1, "pong"};
  alignas(128) sem_t glibc_ping;
  alignas(128) sem_t glibc_pong;
  alignas(128) bip::interprocess_semaphore boost_ping{0};
  alignas(128) bip::interprocess_semaphore boost_pong{0};

  // 2b. mutex + condition variable ping-pong; turn 0: the parent's, 1: the child's
  alignas(128) ferry::Mutex ferry_cv_mutex{"cv"};
  alignas(128) ferry::CondVar ferry_cv{"cv"};
  alignas(128) int ferry_turn = 0;
  alignas(128) pthread_mutex_t glibc_cv_mutex;
  alignas(128) pthread_cond_t glibc_cv;
  alignas(128) int glibc_turn = 0;
  alignas(128) bip::interprocess_mutex boost_cv_mutex;
  alignas(128) bip::interprocess_condition boost_cv;
  alignas(128) int boost_turn = 0;

  // spin floor, and where the child ran
  alignas(128) std::atomic<std::uint32_t> floor_flag{0};
  alignas(128) std::atomic<int> child_cpu{-1};
};

// Named semaphores live in their own /dev/shm mappings; sem_open maps them
// MAP_SHARED before fork, so the child inherits the same pointers. Null if
// sem_open is refused here (then their rows say n/a).
sem_t* g_named_sem = nullptr;
sem_t* g_named_ping = nullptr;
sem_t* g_named_pong = nullptr;
std::string g_named_failure;

sem_t* open_named(int index) {
  char name[64];
  std::snprintf(name, sizeof name, "/ferry-sync-bench-%d-%d", static_cast<int>(::getpid()), index);
  sem_t* sem = ::sem_open(name, O_CREAT | O_EXCL, 0600, 0);
  if (sem == SEM_FAILED) {
    g_named_failure = std::string("sem_open: ") + std::strerror(errno);
    return nullptr;
  }
  // Unlink at once: the mapping keeps it alive for both processes, and no
  // crash can leave it behind.
  if (::sem_unlink(name) != 0) die_rc(errno, "sem_unlink");
  return sem;
}

// ---------------------------------------------------------------------------
// Statistics

double median_of(std::vector<double> values) {
  if (values.empty()) return 0;
  const auto middle = values.begin() + static_cast<std::ptrdiff_t>(values.size() / 2);
  std::nth_element(values.begin(), middle, values.end());
  return *middle;
}

double percentile_of(std::vector<std::uint32_t>& values, double fraction) {
  if (values.empty()) return 0;
  auto rank = static_cast<std::size_t>(fraction * static_cast<double>(values.size()));
  rank = std::min(rank, values.size() - 1);
  const auto at = values.begin() + static_cast<std::ptrdiff_t>(rank);
  std::nth_element(values.begin(), at, values.end());
  return static_cast<double>(*at);
}

// ---------------------------------------------------------------------------
// 1. Uncontended, one thread

constexpr int kBatches = 25;
constexpr int kPairsPerBatch = 1000;

template <class Pair>
double median_pair_ns(Pair pair) {
  std::vector<double> per_pair(kBatches);
  for (int batch = 0; batch < kBatches; ++batch) {
    const std::uint64_t start = now_ns();
    for (int i = 0; i < kPairsPerBatch; ++i) pair();
    per_pair[static_cast<std::size_t>(batch)] = static_cast<double>(now_ns() - start) / kPairsPerBatch;
  }
  return median_of(std::move(per_pair));
}

void glibc_sem_wait(sem_t* sem) {
  while (::sem_wait(sem) != 0) {
    if (errno != EINTR) die_rc(errno, "sem_wait");
  }
}

void glibc_sem_post(sem_t* sem) {
  if (::sem_post(sem) != 0) die_rc(errno, "sem_post");
}

enum class Uncontended {
  glibc_mutex,
  glibc_mutex_errorcheck,
  ferry_mutex,
  boost_mutex,
  glibc_sem,
  glibc_named_sem,
  ferry_sem,
  boost_sem,
};

double run_uncontended(Shared& s, Uncontended which) {
  switch (which) {
    case Uncontended::glibc_mutex:
      return median_pair_ns([&] {
        check_rc(pthread_mutex_lock(&s.glibc_mutex), "pthread_mutex_lock");
        check_rc(pthread_mutex_unlock(&s.glibc_mutex), "pthread_mutex_unlock");
      });
    case Uncontended::glibc_mutex_errorcheck:
      return median_pair_ns([&] {
        check_rc(pthread_mutex_lock(&s.glibc_mutex_errorcheck), "pthread_mutex_lock");
        check_rc(pthread_mutex_unlock(&s.glibc_mutex_errorcheck), "pthread_mutex_unlock");
      });
    case Uncontended::ferry_mutex:
      return median_pair_ns([&] {
        check(s.ferry_mutex.lock(), "ferry::Mutex::lock");
        check(s.ferry_mutex.unlock(), "ferry::Mutex::unlock");
      });
    case Uncontended::boost_mutex:
      return median_pair_ns([&] {
        s.boost_mutex.lock();
        s.boost_mutex.unlock();
      });
    case Uncontended::glibc_sem:
      return median_pair_ns([&] {
        glibc_sem_post(&s.glibc_sem);
        glibc_sem_wait(&s.glibc_sem);
      });
    case Uncontended::glibc_named_sem:
      return median_pair_ns([&] {
        glibc_sem_post(g_named_sem);
        glibc_sem_wait(g_named_sem);
      });
    case Uncontended::ferry_sem:
      return median_pair_ns([&] {
        check(s.ferry_sem.post(), "ferry::Semaphore::post");
        s.ferry_sem.wait();
      });
    case Uncontended::boost_sem:
      return median_pair_ns([&] {
        s.boost_sem.post();
        s.boost_sem.wait();
      });
  }
  return 0;
}

// ---------------------------------------------------------------------------
// 2. Cross-process ping-pong. The parent is the initiator and records one
// sample per round trip (samples may be null for the warm-up); the child
// answers.

template <class Post, class Wait>
void sem_pingpong(bool initiator, int count, std::uint32_t* samples, Post post, Wait wait) {
  if (!initiator) {
    for (int i = 0; i < count; ++i) {
      wait(0);
      post(1);
    }
    return;
  }
  std::uint64_t before = now_ns();
  for (int i = 0; i < count; ++i) {
    post(0);
    wait(1);
    const std::uint64_t after = now_ns();
    if (samples) samples[i] = static_cast<std::uint32_t>(after - before);
    before = after;
  }
}

// The initiator, holding the lock, hands the turn over, notifies, and waits
// for it to come back: one round trip per iteration. Notifying with the lock
// held is the usual pattern and the same for every implementation.
template <class Lock, class Unlock, class Wait, class Notify>
void cv_pingpong(bool initiator, int count, std::uint32_t* samples, int& turn, Lock lock, Unlock unlock,
                 Wait wait, Notify notify) {
  if (!initiator) {
    for (int i = 0; i < count; ++i) {
      lock();
      while (turn != 1) wait();
      turn = 0;
      notify();
      unlock();
    }
    return;
  }
  std::uint64_t before = now_ns();
  for (int i = 0; i < count; ++i) {
    lock();
    turn = 1;
    notify();
    while (turn != 0) wait();
    unlock();
    const std::uint64_t after = now_ns();
    if (samples) samples[i] = static_cast<std::uint32_t>(after - before);
    before = after;
  }
}

// Spins on the line; after ~1000 polls (tens of microseconds, far above the
// ~70-470 ns floor) it also yields, so that two processes sharing one CPU
// (--no-pin, or a loaded machine) still make progress.
void spin_until_equals(const std::atomic<std::uint32_t>& flag, std::uint32_t value) {
  for (std::uint32_t polls = 0; flag.load(std::memory_order_acquire) != value; ++polls) {
    ferry::cpu_relax();
    if (polls >= 1024) ::sched_yield();
  }
}

void floor_pingpong(bool initiator, int count, std::uint32_t* samples, std::atomic<std::uint32_t>& flag) {
  if (!initiator) {
    for (int i = 0; i < count; ++i) {
      spin_until_equals(flag, 1);
      flag.store(0, std::memory_order_release);
    }
    return;
  }
  std::uint64_t before = now_ns();
  for (int i = 0; i < count; ++i) {
    flag.store(1, std::memory_order_release);
    spin_until_equals(flag, 0);
    const std::uint64_t after = now_ns();
    if (samples) samples[i] = static_cast<std::uint32_t>(after - before);
    before = after;
  }
}

enum class Latency {
  sem_glibc,
  sem_glibc_named,
  sem_boost,
  sem_ferry_block,
  sem_ferry_adaptive,
  cv_glibc,
  cv_boost,
  cv_ferry_block,
  cv_ferry_adaptive,
  spin_floor,
};

void run_side(Shared& s, Latency which, bool initiator, int count, std::uint32_t* samples) {
  switch (which) {
    case Latency::sem_glibc:
      return sem_pingpong(
          initiator, count, samples, [&](int k) { glibc_sem_post(k == 0 ? &s.glibc_ping : &s.glibc_pong); },
          [&](int k) { glibc_sem_wait(k == 0 ? &s.glibc_ping : &s.glibc_pong); });
    case Latency::sem_glibc_named:
      return sem_pingpong(
          initiator, count, samples, [&](int k) { glibc_sem_post(k == 0 ? g_named_ping : g_named_pong); },
          [&](int k) { glibc_sem_wait(k == 0 ? g_named_ping : g_named_pong); });
    case Latency::sem_boost:
      return sem_pingpong(
          initiator, count, samples, [&](int k) { (k == 0 ? s.boost_ping : s.boost_pong).post(); },
          [&](int k) { (k == 0 ? s.boost_ping : s.boost_pong).wait(); });
    case Latency::sem_ferry_block:
      return sem_pingpong(
          initiator, count, samples,
          [&](int k) { check((k == 0 ? s.ferry_ping : s.ferry_pong).post(), "ferry::Semaphore::post"); },
          [&](int k) { (k == 0 ? s.ferry_ping : s.ferry_pong).wait(ferry::WaitStrategy::block()); });
    case Latency::sem_ferry_adaptive:
      return sem_pingpong(
          initiator, count, samples,
          [&](int k) { check((k == 0 ? s.ferry_ping : s.ferry_pong).post(), "ferry::Semaphore::post"); },
          [&](int k) { (k == 0 ? s.ferry_ping : s.ferry_pong).wait(); });
    case Latency::cv_glibc:
      return cv_pingpong(
          initiator, count, samples, s.glibc_turn,
          [&] { check_rc(pthread_mutex_lock(&s.glibc_cv_mutex), "pthread_mutex_lock"); },
          [&] { check_rc(pthread_mutex_unlock(&s.glibc_cv_mutex), "pthread_mutex_unlock"); },
          [&] { check_rc(pthread_cond_wait(&s.glibc_cv, &s.glibc_cv_mutex), "pthread_cond_wait"); },
          [&] { check_rc(pthread_cond_signal(&s.glibc_cv), "pthread_cond_signal"); });
    case Latency::cv_boost:
      return cv_pingpong(
          initiator, count, samples, s.boost_turn, [&] { s.boost_cv_mutex.lock(); },
          [&] { s.boost_cv_mutex.unlock(); },
          [&] {
            bip::scoped_lock<bip::interprocess_mutex> held(s.boost_cv_mutex, bip::accept_ownership);
            s.boost_cv.wait(held);
            held.release();  // still locked; the loop unlocks it
          },
          [&] { s.boost_cv.notify_one(); });
    case Latency::cv_ferry_block:
      return cv_pingpong(
          initiator, count, samples, s.ferry_turn,
          [&] { check(s.ferry_cv_mutex.lock(ferry::WaitStrategy::block()), "ferry::Mutex::lock"); },
          [&] { check(s.ferry_cv_mutex.unlock(), "ferry::Mutex::unlock"); },
          [&] { check(s.ferry_cv.wait(s.ferry_cv_mutex, ferry::WaitStrategy::block()), "ferry::CondVar::wait"); },
          [&] { s.ferry_cv.notify_one(); });
    case Latency::cv_ferry_adaptive:
      return cv_pingpong(
          initiator, count, samples, s.ferry_turn,
          [&] { check(s.ferry_cv_mutex.lock(ferry::WaitStrategy::adaptive()), "ferry::Mutex::lock"); },
          [&] { check(s.ferry_cv_mutex.unlock(), "ferry::Mutex::unlock"); },
          [&] {
            check(s.ferry_cv.wait(s.ferry_cv_mutex, ferry::WaitStrategy::adaptive()), "ferry::CondVar::wait");
          },
          [&] { s.ferry_cv.notify_one(); });
    case Latency::spin_floor:
      return floor_pingpong(initiator, count, samples, s.floor_flag);
  }
}

struct Command {
  int which;  // a Latency, or -1: exit
  int count;  // round trips the child answers (warm-up included)
};

[[noreturn]] void child_main(Shared& s, int command_fd, int ack_fd, bool pin) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() == 1) ::_exit(1);  // the parent is already gone
  if (pin) {
    cpu_set_t cpus;
    CPU_ZERO(&cpus);
    CPU_SET(1, &cpus);
    if (::sched_setaffinity(0, sizeof cpus, &cpus) != 0) die_rc(errno, "sched_setaffinity (child)");
  }
  for (;;) {
    Command command{};
    if (!read_full(command_fd, &command, sizeof command) || command.which < 0) ::_exit(0);
    run_side(s, static_cast<Latency>(command.which), false, command.count, nullptr);
    s.child_cpu.store(::sched_getcpu(), std::memory_order_relaxed);
    const char done = 1;
    if (!write_full(ack_fd, &done, 1)) ::_exit(1);
  }
}

// ---------------------------------------------------------------------------
// Tables

struct Row {
  std::string name;
  bool available = true;
  bool baseline = false;
  std::vector<double> round_medians;  // per round
  std::vector<std::uint32_t> samples;  // latencies: every sample of every round
  int same_cpu = 0;                    // latencies: rounds that ended with both processes on one CPU
  double median() const { return median_of(round_medians); }
};

struct Group {
  std::string title;
  bool latency = false;
  std::vector<Row> rows;  // the first available baseline row is the reference
};

std::string format_ns(double ns) {
  char text[32];
  if (ns < 1000) {
    std::snprintf(text, sizeof text, "%.1f ns", ns);
  } else if (ns < 100'000) {
    std::snprintf(text, sizeof text, "%.2f us", ns / 1000);
  } else {
    std::snprintf(text, sizeof text, "%.1f us", ns / 1000);
  }
  return text;
}

std::string format_ratio(double value, double reference) {
  if (reference <= 0 || value <= 0) return "-";
  char text[32];
  const double ratio = value / reference;
  if (ratio < 0.1) {
    std::snprintf(text, sizeof text, "%.2gx", ratio);  // two significant digits
  } else {
    std::snprintf(text, sizeof text, "%.2fx", ratio);
  }
  return text;
}

void print_group(Group& group, bool markdown) {
  const Row* reference = nullptr;
  for (const Row& row : group.rows) {
    if (row.baseline && row.available && !row.round_medians.empty()) {
      reference = &row;
      break;
    }
  }
  const double ref_median = reference ? reference->median() : 0;
  double ref_p99 = 0;
  if (reference && group.latency) {
    std::vector<std::uint32_t> copy = reference->samples;
    ref_p99 = percentile_of(copy, 0.99);
  }

  if (markdown) {
    std::printf("\n**%s**\n\n", group.title.c_str());
    if (group.latency) {
      std::printf("| implementation | median | p99 | median vs glibc | p99 vs glibc | same-CPU rounds |\n");
      std::printf("|---|---:|---:|---:|---:|---:|\n");
    } else {
      std::printf("| implementation | median per pair | vs glibc |\n");
      std::printf("|---|---:|---:|\n");
    }
  } else {
    std::printf("\n%s\n", group.title.c_str());
    if (group.latency) {
      std::printf("  %-50s %11s %11s %9s %9s %9s\n", "implementation", "median", "p99", "med/glibc",
                  "p99/glibc", "same-CPU");
    } else {
      std::printf("  %-50s %11s %9s\n", "implementation", "median", "vs glibc");
    }
  }

  for (Row& row : group.rows) {
    if (!row.available || row.round_medians.empty()) {
      if (markdown) {
        std::printf("| %s | n/a |%s\n", row.name.c_str(), group.latency ? " | | | |" : " |");
      } else {
        std::printf("  %-50s %11s\n", row.name.c_str(), "n/a");
      }
      continue;
    }
    const double median = row.median();
    const std::string name = row.name + (row.baseline ? " (baseline)" : "");
    if (group.latency) {
      const double p99 = percentile_of(row.samples, 0.99);
      char same[32];
      std::snprintf(same, sizeof same, "%d/%d", row.same_cpu, static_cast<int>(row.round_medians.size()));
      if (markdown) {
        std::printf("| %s | %s | %s | %s | %s | %s |\n", name.c_str(), format_ns(median).c_str(),
                    format_ns(p99).c_str(), format_ratio(median, ref_median).c_str(),
                    format_ratio(p99, ref_p99).c_str(), same);
      } else {
        std::printf("  %-50s %11s %11s %9s %9s %9s\n", name.c_str(), format_ns(median).c_str(),
                    format_ns(p99).c_str(), format_ratio(median, ref_median).c_str(),
                    format_ratio(p99, ref_p99).c_str(), same);
      }
    } else if (markdown) {
      std::printf("| %s | %s | %s |\n", name.c_str(), format_ns(median).c_str(),
                  format_ratio(median, ref_median).c_str());
    } else {
      std::printf("  %-50s %11s %9s\n", name.c_str(), format_ns(median).c_str(),
                  format_ratio(median, ref_median).c_str());
    }
  }
}

// ---------------------------------------------------------------------------

struct Options {
  bool markdown = false;
  bool pin = true;
  int rounds = 15;
  int iters = 2000;
  int warmup = 200;
  double max_seconds = 55;
};

[[noreturn]] void usage(int code) {
  std::fprintf(code == 0 ? stdout : stderr,
               "usage: ferry_sync_bench [--markdown] [--no-pin] [--rounds N] [--iters N] [--max-seconds S]\n"
               "  --markdown       print Markdown tables (for the README) instead of plain text\n"
               "  --no-pin         leave placement to the scheduler (default: parent on CPU 0,\n"
               "                   child on CPU 1, with sched_setaffinity)\n"
               "  --rounds N       interleaved rounds (default 15)\n"
               "  --iters N        round trips per latency measurement (default 2000)\n"
               "  --max-seconds S  start no new round past this budget (default 55)\n");
  std::exit(code);
}

Options parse(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const auto number = [&]() -> double {
      if (i + 1 >= argc) usage(1);
      char* end = nullptr;
      const double value = std::strtod(argv[++i], &end);
      if (end == argv[i] || *end != '\0' || value <= 0) usage(1);
      return value;
    };
    if (arg == "--markdown") {
      options.markdown = true;
    } else if (arg == "--pin") {
      options.pin = true;
    } else if (arg == "--no-pin") {
      options.pin = false;
    } else if (arg == "--rounds") {
      options.rounds = static_cast<int>(number());
    } else if (arg == "--iters") {
      options.iters = static_cast<int>(number());
    } else if (arg == "--max-seconds") {
      options.max_seconds = number();
    } else if (arg == "--help" || arg == "-h") {
      usage(0);
    } else {
      usage(1);
    }
  }
  if (options.rounds < 1 || options.iters < 1) usage(1);
  return options;
}

double clock_read_ns() {
  constexpr int kReads = 200'000;
  const std::uint64_t start = now_ns();
  std::uint64_t sink = 0;
  for (int i = 0; i < kReads; ++i) sink += now_ns();
  const std::uint64_t elapsed = now_ns() - start;
  if (sink == 0) std::fprintf(stderr, " ");
  return static_cast<double>(elapsed) / kReads;
}

double syscall_ns() {
  constexpr int kCalls = 100'000;
  const std::uint64_t start = now_ns();
  for (int i = 0; i < kCalls; ++i) ::syscall(SYS_getppid);
  return static_cast<double>(now_ns() - start) / kCalls;
}

}  // namespace

int main(int argc, char** argv) {
  const Options options = parse(argc, argv);
  const std::uint64_t run_start = now_ns();
  std::setvbuf(stdout, nullptr, _IOLBF, 0);

  // Shared region, mapped before fork.
  void* region = ::mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (region == MAP_FAILED) die_rc(errno, "mmap");
  Shared& s = *new (region) Shared();
  g_named_sem = open_named(0);
  g_named_ping = open_named(1);
  g_named_pong = open_named(2);
  const bool have_named = g_named_sem && g_named_ping && g_named_pong;

  const long cpus_online = ::sysconf(_SC_NPROCESSORS_ONLN);
  bool pinned = false;
  if (options.pin) {
    if (cpus_online < 2) {
      std::fprintf(stderr, "--pin: only %ld CPU online; not pinning\n", cpus_online);
    } else {
      cpu_set_t cpus;
      CPU_ZERO(&cpus);
      CPU_SET(0, &cpus);
      if (::sched_setaffinity(0, sizeof cpus, &cpus) != 0) {
        std::fprintf(stderr, "sched_setaffinity(CPU 0): %s; not pinning\n", std::strerror(errno));
      } else {
        pinned = true;
      }
    }
  }

  // ---- 1. uncontended (before the child exists) ----
  struct UncontendedRow {
    Uncontended which;
    int group;
    const char* name;
    bool baseline;
    bool available;
  };
  const UncontendedRow uncontended[] = {
      {Uncontended::glibc_mutex, 0, "glibc pthread_mutex robust+pshared", true, true},
      {Uncontended::glibc_mutex_errorcheck, 0, "glibc pthread_mutex robust+pshared+errorcheck", false, true},
      {Uncontended::ferry_mutex, 0, "ferry::Mutex", false, true},
      {Uncontended::boost_mutex, 0, "boost interprocess_mutex (pshared, not robust)", false, true},
      {Uncontended::glibc_sem, 1, "glibc sem_t (sem_init, pshared)", true, true},
      {Uncontended::glibc_named_sem, 1, "glibc sem_t (sem_open, named)", false, have_named},
      {Uncontended::ferry_sem, 1, "ferry::Semaphore", false, true},
      {Uncontended::boost_sem, 1, "boost interprocess_semaphore", false, true},
  };
  constexpr std::size_t kUncontended = std::size(uncontended);
  Group unc_groups[2] = {{"Uncontended lock + unlock, one thread (ns per pair)", false, {}},
                         {"Uncontended post + wait, one thread (ns per pair)", false, {}}};
  std::size_t unc_row_of[kUncontended];
  for (std::size_t i = 0; i < kUncontended; ++i) {
    Group& group = unc_groups[uncontended[i].group];
    unc_row_of[i] = group.rows.size();
    Row row;
    row.name = uncontended[i].name;
    row.baseline = uncontended[i].baseline;
    row.available = uncontended[i].available;
    group.rows.push_back(std::move(row));
  }
  install_handler(SIGALRM, on_alarm, 0);
  ::alarm(60);
  for (int round = 0; round < options.rounds; ++round) {
    for (std::size_t k = 0; k < kUncontended; ++k) {
      const std::size_t i = (k + static_cast<std::size_t>(round)) % kUncontended;
      if (!uncontended[i].available) continue;
      const double ns = run_uncontended(s, uncontended[i].which);
      unc_groups[uncontended[i].group].rows[unc_row_of[i]].round_medians.push_back(ns);
    }
  }
  ::alarm(0);
  const double clock_ns = clock_read_ns();
  const double sys_ns = syscall_ns();

  // ---- 2. cross-process latency ----
  struct LatencyRow {
    Latency which;
    int group;
    const char* name;
    bool baseline;
    bool available;
  };
  const LatencyRow latency[] = {
      {Latency::sem_glibc, 0, "glibc sem_t (sem_init, pshared)", true, true},
      {Latency::sem_glibc_named, 0, "glibc sem_t (sem_open, named)", false, have_named},
      {Latency::sem_boost, 0, "boost interprocess_semaphore", false, true},
      {Latency::sem_ferry_block, 0, "ferry::Semaphore, WaitStrategy::block", false, true},
      {Latency::sem_ferry_adaptive, 0, "ferry::Semaphore, adaptive (default)", false, true},
      {Latency::cv_glibc, 1, "glibc robust pshared mutex + pshared cond", true, true},
      {Latency::cv_boost, 1, "boost interprocess_mutex + condition (not robust)", false, true},
      {Latency::cv_ferry_block, 1, "ferry Mutex+CondVar, block (CondVar default)", false, true},
      {Latency::cv_ferry_adaptive, 1, "ferry Mutex+CondVar, adaptive", false, true},
      {Latency::spin_floor, 2, "atomic flag, both sides spinning", false, true},
  };
  constexpr std::size_t kLatency = std::size(latency);
  Group lat_groups[3] = {
      {"Cross-process semaphore ping-pong, round trip", true, {}},
      {"Cross-process mutex + condition variable ping-pong, round trip", true, {}},
      {"Spin floor (cache-line round trip between the two CPUs, same rounds)", true, {}}};
  std::size_t lat_row_of[kLatency];
  for (std::size_t i = 0; i < kLatency; ++i) {
    Group& group = lat_groups[latency[i].group];
    lat_row_of[i] = group.rows.size();
    Row row;
    row.name = latency[i].name;
    row.baseline = latency[i].baseline;
    row.available = latency[i].available;
    group.rows.push_back(std::move(row));
  }

  int command_pipe[2];
  int ack_pipe[2];
  if (::pipe2(command_pipe, O_CLOEXEC) != 0 || ::pipe2(ack_pipe, O_CLOEXEC) != 0) die_rc(errno, "pipe2");
  install_handler(SIGCHLD, on_child_exit, SA_NOCLDSTOP);
  std::fflush(stdout);
  std::fflush(stderr);
  const pid_t child = ::fork();
  if (child < 0) die_rc(errno, "fork");
  if (child == 0) {
    ::close(command_pipe[1]);
    ::close(ack_pipe[0]);
    child_main(s, command_pipe[0], ack_pipe[1], pinned);
  }
  g_child_pid = child;
  ::close(command_pipe[0]);
  ::close(ack_pipe[1]);

  std::vector<std::uint32_t> samples(static_cast<std::size_t>(options.iters));
  const bool progress = ::isatty(STDERR_FILENO) != 0;
  std::vector<double> floor_per_round;
  int rounds_done = 0;
  double slowest_round_s = 0;
  for (int round = 0; round < options.rounds; ++round) {
    const double elapsed_s = static_cast<double>(now_ns() - run_start) / 1e9;
    if (round > 0 && elapsed_s + slowest_round_s > options.max_seconds) break;
    const std::uint64_t round_start = now_ns();
    if (progress) std::fprintf(stderr, "\rround %d/%d", round + 1, options.rounds);
    for (std::size_t k = 0; k < kLatency; ++k) {
      const std::size_t i = (k + static_cast<std::size_t>(round)) % kLatency;
      if (!latency[i].available) continue;
      const Command command{static_cast<int>(latency[i].which), options.warmup + options.iters};
      s.child_cpu.store(-1, std::memory_order_relaxed);
      // Generous: 2000 futex round trips take ~0.1-0.2 s here; a loaded
      // machine may take ten times that.
      ::alarm(20);
      if (!write_full(command_pipe[1], &command, sizeof command)) die("the child stopped reading commands");
      run_side(s, latency[i].which, true, options.warmup, nullptr);
      run_side(s, latency[i].which, true, options.iters, samples.data());
      char done = 0;
      if (!read_full(ack_pipe[0], &done, 1)) die("the child closed its pipe");
      ::alarm(0);
      const int parent_cpu = ::sched_getcpu();

      Row& row = lat_groups[latency[i].group].rows[lat_row_of[i]];
      std::vector<std::uint32_t> copy = samples;
      const double median = percentile_of(copy, 0.5);
      row.round_medians.push_back(median);
      row.samples.insert(row.samples.end(), samples.begin(), samples.end());
      if (parent_cpu == s.child_cpu.load(std::memory_order_relaxed)) ++row.same_cpu;
      if (latency[i].which == Latency::spin_floor) floor_per_round.push_back(median);
    }
    ++rounds_done;
    slowest_round_s = std::max(slowest_round_s, static_cast<double>(now_ns() - round_start) / 1e9);
  }
  if (progress) std::fprintf(stderr, "\r%*s\r", 20, "");

  // Stop the child.
  g_child_may_exit = 1;
  const Command quit{-1, 0};
  if (!write_full(command_pipe[1], &quit, sizeof quit)) ::kill(child, SIGKILL);
  ::alarm(5);
  int status = 0;
  while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  ::alarm(0);
  g_child_pid = 0;

  // ---- report ----
  utsname host{};
  ::uname(&host);
  const double total_s = static_cast<double>(now_ns() - run_start) / 1e9;
  std::printf("ferry sync benchmark: %d rounds (of %d asked) x %d round trips per latency measurement, "
              "%d warm-up; uncontended: %d rounds x %d batches x %d pairs\n",
              rounds_done, options.rounds, options.iters, options.warmup, options.rounds, kBatches,
              kPairsPerBatch);
  if (options.markdown) std::printf("\n");
  std::printf("Linux %s, %ld CPUs online; %s; a clock read costs %.1f ns and a trivial syscall %.1f ns; "
              "run took %.1f s\n",
              host.release, cpus_online,
              pinned ? "parent pinned to CPU 0, child to CPU 1 (sched_setaffinity)" : "processes not pinned",
              clock_ns, sys_ns, total_s);
  if (options.markdown) std::printf("\n");
  std::printf("Figures: median of the per-round medians; latency p99 over all samples of all rounds; "
              "ratios against the glibc baseline of the same group, same run. same-CPU: rounds that ended "
              "with both processes on one CPU.\n");
  if (!have_named) std::printf("Named semaphores unavailable here (%s): their rows say n/a.\n", g_named_failure.c_str());

  for (Group& group : unc_groups) print_group(group, options.markdown);
  for (Group& group : lat_groups) print_group(group, options.markdown);

  if (!floor_per_round.empty()) {
    std::printf("%sSpin floor per round (ns, in order):", options.markdown ? "\n" : "\n  ");
    for (const double ns : floor_per_round) std::printf(" %.0f", ns);
    std::printf("%s(about 70 ns: the vCPUs are near each other; 300-470 ns: the host moved them apart; "
                "microseconds: both processes on one CPU)\n",
                options.markdown ? " " : "\n  ");
  }
  return 0;
}
