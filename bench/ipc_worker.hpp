// The measuring side of ferry's transport benchmark: what runs inside the two
// measurement processes, and the contract every transport implements.
//
// One measurement = one transport, one pattern, one message size, one short
// repetition. The coordinator (ipc_bench.cpp) forks process A for it; A sets
// the transport up, forks B, and the two measure:
//
//   A, the initiator (pinned to CPU 0)        B, the responder (pinned to CPU 1)
//   prepare()            before fork: kernel objects both inherit
//   open(initiator)      ── 'O' ──▶           open(responder)
//                                              connect(responder)
//   connect(initiator)   ◀── 'R' ──
//                        ── 'S' ──▶
//   floor probe          ◀──────▶             floor probe (cache-line ping-pong)
//   rtt: ping ×N, timing each round trip        rtt: pong (echo)
//   throughput: send the stream                 throughput: receive, check, time
//                        ◀── 'D' ──
//   close(), reap B, status ok
//
// The single-byte commands travel over two pipes (EOF there means the other
// process is gone). Results go into SharedArea, a MAP_SHARED mapping the
// coordinator made before forking A.
//
// Failure never hangs and never needs unwinding: fail() / fail_not_applicable()
// record the reason in SharedArea (the first failure of each process, with its
// time, so the coordinator can tell cause from consequence) and _exit. A
// watchdog alarm bounds both processes; B dies with A (PR_SET_PDEATHSIG); A
// fails at once when B exits early (SIGCHLD); the coordinator kills the process
// group if A overruns its own watchdog. Names are unlinked as soon as both
// sides hold the object, files live in a per-measurement directory the
// coordinator removes, System V queue ids are listed in SharedArea for the
// coordinator to remove: nothing is left behind whatever happens.
//
// The transport concept (derive from TransportBase; every member is optional
// except send/receive, which every transport with a payload needs):
//
//   static std::string not_applicable(Pattern, std::size_t size);
//       "" or why this transport cannot carry that at all (checked by the
//       coordinator before forking; e.g. POSIX mq messages above msgsize_max).
//   void prepare(const Spec&);            in A, before B exists
//   void open(Side, const Spec&);         A first, then B (listen / bind / create)
//   void connect(Side, const Spec&);      B first, then A (dial / accept / wait for the peer)
//   void send(const std::byte* message, std::size_t size);
//       delivers one message; blocks while the transport is full.
//   const std::byte* receive(std::byte* scratch, std::size_t size);
//       blocks for the next message, which must be `size` bytes; returns it,
//       in `scratch` or in the transport's own memory (then valid until the
//       next receive or close).
//   void close(Side);
//   static constexpr bool kCustomRtt;     true: ping(bool stop) / pong() replace
//       the generic 64-byte echo (the floors: a bare cache line or futex word).
//   static constexpr bool kCustomStream;  true: stream(side, spec, area) replaces
//       the two-process stream (floor.memcpy: one process copying alone).
//   static constexpr bool kManySenders;   true: also measured with 2, 4 and 8 sending
//       processes (A forks the others; they inherit the transport).
//   static constexpr bool kExitNormally;  true: leave with exit() so that static
//       destructors run (iceoryx deregisters its runtime from RouDi there).
//   static constexpr bool kServes;        true: serve(spec, area) replaces the
//       responder's receive/send loop in every pattern. Request/reply
//       transports (rpc, REQ/REP) answer each message where it arrives (a
//       server's own threads, a REP socket) and return once the initiator's
//       last message was taken; their send() is a whole call (request out,
//       reply in) whose reply receive() then hands out, so the initiator's
//       side stays generic: a round trip is one call, a stream is calls back
//       to back (with kManySenders: several calling processes).
//       detail::ResponderTally does the responder's checks and counting.
//
// Errors inside send/receive call fail() themselves: the hot path has no error
// returns to test.
#pragma once

#include <sys/types.h>
#include <unistd.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace ferry::bench {

// rtt: ping-pong, both sides busy. wake: the same round trip, but the
// initiator idles kWakeIdleNs before each ping, so the responder's wait has
// gone to sleep (if it ever sleeps): what the first message after a pause
// costs. throughput: one-way stream.
enum class Pattern : int { rtt, wake, throughput };

constexpr bool is_round_trip(Pattern pattern) noexcept { return pattern != Pattern::throughput; }
enum class Side : int { initiator = 0, responder = 1 };

// What a measurement ended with. The numeric values travel through SharedArea.
enum class Status : int {
  none = 0,
  ok,
  not_applicable,  // this transport cannot carry this pattern / size ("n/a")
  not_available,   // not built, or a tool it needs is missing
  not_running,     // its daemon (iox-roudi) is not running
  error,
};

// Where a transport stands in the tables: floors are the references, peers are
// the third-party libraries ("vs best peer" compares with the fastest of them).
enum class Group : int { floor, os, peer, ferry };

inline constexpr std::size_t kRttSize = 64;
// A round trip's reply: the request echoed at 64 B, a 64-byte reply to a larger request.
constexpr std::size_t reply_size(std::size_t request) noexcept { return request < kRttSize ? request : kRttSize; }
// Far beyond a 20 us adaptive spin and the host's halt polling: the
// responder's CPU is idle when the ping comes.
inline constexpr std::uint64_t kWakeIdleNs = 500'000;
inline constexpr std::uint32_t kMaxSamples = 1u << 17;  // per repetition
inline constexpr std::size_t kRingBytes = std::size_t{4} << 20;
inline constexpr std::uint32_t kProbeRoundTrips = 600;  // the first 100 are warm-up

// One measurement, as the coordinator asks for it. Copied into A by fork.
struct Spec {
  std::string transport;
  Pattern pattern = Pattern::rtt;
  std::size_t size = kRttSize;
  std::uint64_t warmup_ns = 0;
  std::uint64_t budget_ns = 0;          // the timed part, after the warm-up
  std::uint32_t max_samples = kMaxSamples;
  int cpu[2] = {0, 1};                  // initiator, responder; -1: leave to the scheduler
  unsigned watchdog_s = 10;             // per process
  std::string dir;                      // fresh, private, removed by the coordinator afterwards
  std::uint64_t serial = 0;             // unique in this run: for names
  unsigned senders = 1;                 // throughput: sending processes (A and senders - 1 it forks)
  std::string nats_url;                 // the run's nats-server ("nats://127.0.0.1:PORT"), for needs_nats_server
};

struct SideReport {
  std::atomic<int> status{0};  // a Status
  std::uint64_t when_ns = 0;   // CLOCK_MONOTONIC at the report
  char reason[480] = {};
  // Files or directories this process may leave if it is killed (e.g.
  // iceoryx's runtime socket, a Mailbox): the coordinator removes them after
  // the measurement.
  int leftover_count = 0;
  char leftovers[4][112] = {};
};

// MAP_SHARED between the coordinator, A and B. Reset before each measurement.
struct SharedArea {
  SideReport side[2];
  std::uint64_t floor_ns = 0;     // median of this measurement's cache-line probe
  std::uint32_t sample_count = 0; // rtt: samples[] holds this many round trips (ns)
  std::uint64_t stream_messages = 0;  // throughput: messages received between the two marks
  std::uint64_t stream_first_ns = 0;
  std::uint64_t stream_last_ns = 0;
  // CPU time (CLOCK_PROCESS_CPUTIME_ID) each side used over a span of its
  // messages, and how many: [0] A (rtt: its timed pings; stream: its timed
  // sends), [1] B (every message after its first). 0 messages: not measured
  // (custom loops, wake-ups, several senders).
  std::uint64_t cpu_ns[2] = {};
  std::uint64_t cpu_messages[2] = {};
  int sysv_queue_count = 0;       // for the coordinator to remove, whatever happened
  int sysv_queues[4] = {};
  alignas(128) std::atomic<std::uint32_t> probe_flag{0};
  alignas(128) std::uint32_t samples[kMaxSamples];
};

// ---------------------------------------------------------------------------
// Services for the measurement processes

std::uint64_t now_ns() noexcept;

// The clock of round-trip samples. Read right after a ping-pong,
// clock_gettime took ~60 ns here (as long as the spin floor's whole round
// trip, which it doubled), the TSC ~0. Where the TSC is invariant
// (constant_tsc and nonstop_tsc), samples are TSC ticks, turned into ns at
// the end by the TSC's rate against CLOCK_MONOTONIC over the run; elsewhere
// they are clock_gettime's ns.
class SampleClock {
 public:
  SampleClock() noexcept;  // the run starts
  [[nodiscard]] std::uint64_t now() const noexcept;
  /// `ns` nanoseconds in now()'s units (by the rate measured once per process).
  [[nodiscard]] std::uint64_t span(std::uint64_t ns) const noexcept;
  /// Samples of now() differences, into ns.
  void to_ns(std::uint32_t* samples, std::uint32_t count) const noexcept;

 private:
  bool tsc_;
  std::uint64_t start_ = 0;
  std::uint64_t start_ns_ = 0;
};

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

void yield_cpu() noexcept;

// The CPU time this process (all its threads) has used, ns. A system call.
std::uint64_t process_cpu_ns() noexcept;

// Counts the messages a side handles after start() and, at finish(), puts
// the CPU time they took into SharedArea: what a message costs in work. Time
// asleep (on these virtual CPUs the wall clock's largest part) is not in it;
// waking up and the kernel's work for the message are.
class CpuSpan {
 public:
  void start() noexcept {
    started_ = process_cpu_ns();
    messages_ = 0;
  }
  void count() noexcept { ++messages_; }
  void finish(SharedArea& area, Side side) const noexcept {
    if (started_ == 0 || messages_ == 0) return;
    area.cpu_ns[static_cast<int>(side)] = process_cpu_ns() - started_;
    area.cpu_messages[static_cast<int>(side)] = messages_;
  }

 private:
  std::uint64_t started_ = 0;
  std::uint64_t messages_ = 0;
};

// Spins on `condition`; after ~1000 polls (far above any cache-line round trip)
// it also yields, so that two processes that ended up on one CPU still progress.
template <class Condition>
inline void spin_until(Condition condition) noexcept {
  for (std::uint32_t polls = 0; !condition(); ++polls) {
    cpu_relax();
    if (polls >= 1024) yield_cpu();
  }
}

[[noreturn, gnu::cold]] void fail(const char* format, ...) __attribute__((format(printf, 1, 2)));
[[noreturn, gnu::cold]] void fail_errno(const char* what);  // "what: strerror(errno)"
[[noreturn, gnu::cold]] void fail_not_applicable(const char* format, ...) __attribute__((format(printf, 1, 2)));

bool write_full(int fd, const void* data, std::size_t size) noexcept;  // false: error or EOF (errno set)
bool read_full(int fd, void* data, std::size_t size) noexcept;

// How many messages a queueing transport may hold in a stream: about 4 MiB,
// like the spin ring, but at least 4 and at most 256 messages.
std::size_t queue_depth(std::size_t size) noexcept;
// A round trip never has more than one message in flight each way, so every
// queue gets kRoundTripDepth for it (a deeper one only spreads the messages
// over more memory; the Topic's fan-out is the exception, see
// TopicTransport); a stream gets queue_depth(size).
inline constexpr std::size_t kRoundTripDepth = 4;
std::size_t queue_depth(const Spec& spec) noexcept;

// The shared mapping (MAP_SHARED | MAP_ANONYMOUS) for prepare(): inherited by B.
void* map_shared(std::size_t bytes);

// "4 KiB", "64 B", "1 MiB"
std::string size_text(std::size_t size);

struct TransportBase {
  static std::string not_applicable(Pattern, std::size_t) { return {}; }
  void prepare(const Spec&) {}
  void open(Side, const Spec&) {}
  void connect(Side, const Spec&) {}
  void close(Side) {}
  static constexpr bool kCustomRtt = false;
  static constexpr bool kCustomStream = false;
  static constexpr bool kExitNormally = false;
  static constexpr bool kManySenders = false;  // several processes may send at once (the queues)
  static constexpr bool kServes = false;
};

// ---------------------------------------------------------------------------
// Message stamps: the sequence number in the first and the last 8 bytes (an
// integrity marker that also catches truncation), flags in the top bits.

inline constexpr std::uint64_t kStop = std::uint64_t{1} << 63;  // rtt: the last round trip
inline constexpr std::uint64_t kLast = std::uint64_t{1} << 63;  // throughput: the last message
inline constexpr std::uint64_t kMark = std::uint64_t{1} << 62;  // throughput: the first timed message
inline constexpr int kSenderShift = 54;  // throughput: which sending process (0..255)
inline constexpr std::uint64_t kSequence = (std::uint64_t{1} << kSenderShift) - 1;
inline constexpr unsigned kMaxSenders = 8;

inline void stamp(std::byte* message, std::size_t size, std::uint64_t value) noexcept {
  std::memcpy(message, &value, sizeof value);
  if (size >= 2 * sizeof value) std::memcpy(message + size - sizeof value, &value, sizeof value);
}

[[noreturn, gnu::cold]] void fail_torn(std::uint64_t head, std::uint64_t tail);

inline std::uint64_t read_stamp(const std::byte* message, std::size_t size) {
  std::uint64_t head = 0;
  std::memcpy(&head, message, sizeof head);
  if (size >= 2 * sizeof head) {
    std::uint64_t tail = 0;
    std::memcpy(&tail, message + size - sizeof tail, sizeof tail);
    if (tail != head) [[unlikely]] fail_torn(head, tail);
  }
  return head;
}

// ---------------------------------------------------------------------------
// The process choreography (ipc_worker.cpp)

namespace detail {

void worker_begin(const Spec& spec, SharedArea& area);
// Forks B. Returns in both: Side::initiator in A, Side::responder in B (pinned).
Side fork_responder(const Spec& spec);
void send_command(char command);
void expect_command(char command, const char* waiting_for);
void peer_may_exit() noexcept;  // A: B's exit from now on is expected
// What the watchdog reports if it fires from now on (nullptr: the default, a
// hung peer); e.g. iceoryx: "not running" while the runtime registers.
void watchdog_phase(Status status, const char* text) noexcept;
void reap_responder();
void probe_initiate(SharedArea& area);
void probe_respond(SharedArea& area);
void report_ok() noexcept;
void register_sysv_queue(int id) noexcept;  // the coordinator removes it whatever happens
void register_leftover(const std::string& path) noexcept;  // the coordinator removes it afterwards
std::byte* allocate_message(std::size_t size);  // 64-byte aligned, touched, filled with a pattern
[[noreturn]] void leave(bool normally);
// A: forks one more sending process (0 in it). It dies with A.
pid_t fork_sender(const Spec& spec);
// A: waits for the senders it forked; fails if one did not end well.
void reap_senders(const std::vector<pid_t>& senders);

[[noreturn, gnu::cold]] void fail_echo(std::uint64_t sent, std::uint64_t received);
[[noreturn, gnu::cold]] void fail_order(std::uint64_t expected, std::uint64_t received);

// One timed ping-pong run: `ping(stop)` does one whole round trip. For
// Pattern::wake this side spins idle before each timed ping (spinning, so
// only the responder's CPU goes to sleep).
template <class Ping>
void initiate_rtt(const Spec& spec, SharedArea& area, Ping&& ping) {
  const std::uint64_t warm_end = now_ns() + spec.warmup_ns;
  while (now_ns() < warm_end) ping(false);
  const bool idle_first = spec.pattern == Pattern::wake;
  const SampleClock clock;
  std::uint64_t before = clock.now();
  const std::uint64_t end = before + clock.span(spec.budget_ns);
  const std::uint64_t idle = clock.span(kWakeIdleNs);
  std::uint32_t count = 0;
  CpuSpan cpu;
  if (!idle_first) cpu.start();  // a wake-up's idling spins: not the transport's work
  while (count < spec.max_samples) {
    if (idle_first) {
      const std::uint64_t idle_end = before + idle;
      while ((before = clock.now()) < idle_end) cpu_relax();
    }
    ping(false);
    cpu.count();
    const std::uint64_t after = clock.now();
    const std::uint64_t took = after - before;
    area.samples[count++] = took > UINT32_MAX ? UINT32_MAX : static_cast<std::uint32_t>(took);
    before = after;
    if (after >= end) break;
  }
  if (!idle_first) cpu.finish(area, Side::initiator);
  clock.to_ns(area.samples, count);
  area.sample_count = count;
  ping(true);
}

// The stream: the sender marks the first message after the warm-up (kMark) and
// the first one after the budget (kLast); the receiver times the messages in
// between on its side, so queueing at the start or the end does not count.
template <class Transport>
void send_stream(Transport& transport, const Spec& spec, SharedArea& area, std::uint64_t sender = 0) {
  std::byte* message = allocate_message(spec.size);
  const std::uint64_t clock_every = spec.size <= 4096 ? 32 : 1;  // a clock read costs ~22 ns
  const std::uint64_t start = now_ns();
  const std::uint64_t mark_at = start + spec.warmup_ns;
  const std::uint64_t end_at = mark_at + spec.budget_ns;
  constexpr std::uint64_t kMinTimed = 16;
  bool marked = false;
  std::uint64_t timed = 0;
  CpuSpan cpu;
  for (std::uint64_t sequence = 0;; ++sequence) {
    std::uint64_t flags = 0;
    if (sequence % clock_every == 0) {
      const std::uint64_t now = now_ns();
      if (!marked && now >= mark_at) {
        flags = kMark;
        marked = true;
        cpu.start();
      } else if (marked && timed >= kMinTimed && now >= end_at) {
        flags = kLast;
      }
    }
    stamp(message, spec.size, sequence | (sender << kSenderShift) | flags);
    transport.send(message, spec.size);
    if (marked) {
      ++timed;
      cpu.count();
    }
    if (flags == kLast) break;
  }
  if (spec.senders == 1) cpu.finish(area, Side::initiator);
}

// What the responder checks of each message it takes, and for a stream what
// it counts. Round trips: each ping carries the next sequence number; the
// last one kStop. Streams: the clock starts at the first marked message of
// any sender and stops at the last sender's last; per-sender order is
// checked on the way. take() returns true at the initiator's last message;
// record() then puts the stream's figures into SharedArea.
class ResponderTally {
 public:
  explicit ResponderTally(const Spec& spec) noexcept : spec_(spec) {}

  bool take(const std::byte* message) {
    const std::uint64_t value = read_stamp(message, spec_.size);
    if (is_round_trip(spec_.pattern)) {
      if ((value & ~kStop) != expected_[0]++) [[unlikely]] fail_order(expected_[0] - 1, value & ~kStop);
      return (value & kStop) != 0;
    }
    const std::uint64_t sender = (value >> kSenderShift) & 0xFF;
    if (sender >= spec_.senders) [[unlikely]] fail_order(0, value);
    if ((value & kSequence) != expected_[sender]++) [[unlikely]] fail_order(expected_[sender] - 1, value & kSequence);
    if ((value & kMark) && first_ns_ == 0) first_ns_ = now_ns();
    if (first_ns_ != 0) ++counted_;
    if ((value & kLast) && ++finished_ == spec_.senders) {
      last_ns_ = now_ns();
      return true;
    }
    return false;
  }

  void record(SharedArea& area) const noexcept {
    if (is_round_trip(spec_.pattern)) return;
    area.stream_last_ns = last_ns_;
    area.stream_first_ns = first_ns_;
    area.stream_messages = counted_ - 1;  // the intervals between the first mark and the end
  }

 private:
  const Spec& spec_;
  std::uint64_t expected_[kMaxSenders] = {};
  std::uint64_t first_ns_ = 0;
  std::uint64_t last_ns_ = 0;
  std::uint64_t counted_ = 0;
  unsigned finished_ = 0;
};

// The responder's loop: take each message, and in a round trip answer it
// (an echo at 64 B; a 64-byte reply with the request's stamp when larger).
template <class Transport>
void respond(Transport& transport, const Spec& spec, SharedArea& area) {
  std::byte* scratch = allocate_message(spec.size);
  std::byte* reply = allocate_message(kRttSize);
  ResponderTally tally(spec);
  CpuSpan cpu;
  for (bool last = false, first = true; !last; first = false) {
    const std::byte* message = transport.receive(scratch, spec.size);
    if (first) {
      cpu.start();  // from the first message on: the wait for it is no work
    } else {
      cpu.count();
    }
    last = tally.take(message);
    if (!is_round_trip(spec.pattern)) continue;
    if (reply_size(spec.size) == spec.size) {
      transport.send(message, spec.size);
    } else {
      stamp(reply, kRttSize, read_stamp(message, spec.size));
      transport.send(reply, kRttSize);
    }
  }
  if (spec.pattern != Pattern::wake) cpu.finish(area, Side::responder);
  tally.record(area);
}

// A's side of the stream: it sends, and so do the senders it forks.
template <class Transport>
void send_streams(Transport& transport, const Spec& spec, SharedArea& area) {
  std::vector<pid_t> senders;
  for (unsigned sender = 1; sender < spec.senders; ++sender) {
    const pid_t pid = fork_sender(spec);
    if (pid == 0) {
      send_stream(transport, spec, area, sender);
      ::_exit(0);
    }
    senders.push_back(pid);
  }
  send_stream(transport, spec, area, 0);
  reap_senders(senders);
}

}  // namespace detail

// Whether a transport has the copying send/receive pair (all but floor.memcpy,
// which the coordinator never asks for a round trip: not_applicable).
template <class Transport>
concept CarriesMessages = requires(Transport transport, std::byte* bytes, std::size_t size) {
  transport.send(bytes, size);
  transport.receive(bytes, size);
};

// The whole measurement, in A. Never returns.
template <class Transport>
[[noreturn]] void run_measurement(const Spec& spec, SharedArea& area) {
  detail::worker_begin(spec, area);
  Transport transport;
  transport.prepare(spec);
  const Side side = detail::fork_responder(spec);
  if (side == Side::responder) {
    detail::expect_command('O', "the initiator to open");
    transport.open(Side::responder, spec);
    transport.connect(Side::responder, spec);
    detail::send_command('R');
    detail::expect_command('S', "the initiator to connect");
    detail::probe_respond(area);
    if constexpr (Transport::kServes) {
      transport.serve(spec, area);
    } else if (is_round_trip(spec.pattern)) {
      if constexpr (Transport::kCustomRtt) {
        while (transport.pong()) {
        }
      } else if constexpr (CarriesMessages<Transport>) {
        detail::respond(transport, spec, area);
      }
    } else if constexpr (Transport::kCustomStream) {
      transport.stream(Side::responder, spec, area);
    } else if constexpr (CarriesMessages<Transport>) {
      detail::respond(transport, spec, area);
    }
    transport.close(Side::responder);
    detail::send_command('D');
    detail::leave(Transport::kExitNormally);
  }

  transport.open(Side::initiator, spec);
  detail::send_command('O');
  detail::expect_command('R', "the responder to connect");
  transport.connect(Side::initiator, spec);
  detail::send_command('S');
  detail::probe_initiate(area);
  if (is_round_trip(spec.pattern)) {
    if constexpr (Transport::kCustomRtt) {
      detail::initiate_rtt(spec, area, [&](bool stop) { transport.ping(stop); });
    } else if constexpr (CarriesMessages<Transport>) {
      std::byte* message = detail::allocate_message(spec.size);
      std::byte* scratch = detail::allocate_message(reply_size(spec.size));
      std::uint64_t sequence = 0;
      detail::initiate_rtt(spec, area, [&](bool stop) {
        const std::uint64_t value = sequence++ | (stop ? kStop : 0);
        stamp(message, spec.size, value);
        transport.send(message, spec.size);
        const std::size_t reply = reply_size(spec.size);
        const std::uint64_t echo = read_stamp(transport.receive(scratch, reply), reply);
        if (echo != value) [[unlikely]] detail::fail_echo(value, echo);
      });
    }
  } else if constexpr (Transport::kCustomStream) {
    transport.stream(Side::initiator, spec, area);
  } else if constexpr (CarriesMessages<Transport>) {
    detail::send_streams(transport, spec, area);
  }
  detail::peer_may_exit();
  detail::expect_command('D', "the responder to finish");
  transport.close(Side::initiator);
  detail::reap_responder();
  detail::report_ok();
  detail::leave(Transport::kExitNormally);
}

}  // namespace ferry::bench
