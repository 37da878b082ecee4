// Two processes exchange data through a named shared-memory segment.
//
// The parent creates the segment (process persistence: it disappears when
// both processes are gone, even if one is killed), starts a second program
// (itself, with --peer NAME) and plays ping-pong with it through a futex
// word in the segment. Then it hands over 1 MiB in place and the peer
// checks it. Run:  segment_exchange [rounds]
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "ferry/ferry.hpp"

namespace {

// What the two processes share. It lives at the start of the segment's data.
struct Exchange {
  std::atomic<std::uint32_t> turn;  // whose move it is: kParent or kPeer (a futex word)
  std::uint32_t round;
  std::uint64_t value;               // the ping-pong payload
  std::uint64_t bulk_checksum;       // what the peer computed over `bulk`
  std::uint32_t bulk_size;
  bool done;
  alignas(64) unsigned char bulk[1 << 20];
};
constexpr std::uint32_t kParent = 1;
constexpr std::uint32_t kPeer = 2;

// Waits until it is `me`'s turn, sleeping on the futex instead of spinning.
bool wait_turn(Exchange& exchange, std::uint32_t me) {
  const ferry::deadline give_up = ferry::deadline_after(std::chrono::seconds(10));
  for (;;) {
    const std::uint32_t seen = exchange.turn.load(std::memory_order_acquire);
    if (seen == me) return true;
    if (ferry::futex_wait(exchange.turn, seen, give_up) == ferry::futex_wait_result::timed_out) {
      return false;
    }
  }
}

void pass_turn(Exchange& exchange, std::uint32_t to) {
  exchange.turn.store(to, std::memory_order_release);
  ferry::futex_wake(exchange.turn, 1);
}

std::uint64_t checksum(const unsigned char* bytes, std::size_t size) {
  std::uint64_t hash = 1469598103934665603ull;  // FNV-1a
  for (std::size_t i = 0; i < size; ++i) hash = (hash ^ bytes[i]) * 1099511628211ull;
  return hash;
}

int peer(const char* name) {
  auto segment = ferry::Segment::open(name, {.size = sizeof(Exchange)});
  if (!segment) {
    std::fprintf(stderr, "peer: %s\n", segment.error().message().c_str());
    return 1;
  }
  auto& exchange = *reinterpret_cast<Exchange*>(segment->data().data());
  for (;;) {
    if (!wait_turn(exchange, kPeer)) return 2;
    if (exchange.done) break;
    if (exchange.bulk_size > 0) {
      exchange.bulk_checksum = checksum(exchange.bulk, std::min<std::size_t>(exchange.bulk_size, sizeof exchange.bulk));
    } else {
      exchange.value = exchange.value * 2 + 1;  // the reply
    }
    pass_turn(exchange, kParent);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 3 && std::strcmp(argv[1], "--peer") == 0) return peer(argv[2]);
  const int rounds = argc > 1 ? std::max(1, std::atoi(argv[1])) : 10000;

  const std::string name = "segment-exchange-" + std::to_string(::getpid());
  auto segment = ferry::Segment::create(
      name, {.size = sizeof(Exchange), .persistence = ferry::Persistence::process});
  if (!segment) {
    std::fprintf(stderr, "%s\n", segment.error().message().c_str());
    return 1;
  }
  auto& exchange = *new (segment->data().data()) Exchange{};
  std::printf("created %s: %zu bytes, mode 0600, process persistence\n",
              segment->description()->c_str(), segment->size());

  const pid_t child = ::fork();
  if (child == 0) {
    ::execl("/proc/self/exe", argv[0], "--peer", name.c_str(), static_cast<char*>(nullptr));
    std::perror("exec");
    ::_exit(127);
  }
  std::printf("started peer process %d; it opens the segment by name\n", static_cast<int>(child));

  // Ping-pong: each round trip is two futex hand-overs between the processes.
  std::vector<double> round_trips_us;
  round_trips_us.reserve(static_cast<std::size_t>(rounds));
  bool ok = true;
  for (int round = 0; round < rounds && ok; ++round) {
    const auto start = std::chrono::steady_clock::now();
    exchange.value = static_cast<std::uint64_t>(round);
    pass_turn(exchange, kPeer);
    ok = wait_turn(exchange, kParent) && exchange.value == static_cast<std::uint64_t>(round) * 2 + 1;
    round_trips_us.push_back(
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count());
  }

  // Bulk: write 1 MiB in place; the peer reads it where it lies.
  for (std::size_t i = 0; i < sizeof exchange.bulk; ++i) exchange.bulk[i] = static_cast<unsigned char>(i * 31);
  exchange.bulk_size = sizeof exchange.bulk;
  pass_turn(exchange, kPeer);
  ok = ok && wait_turn(exchange, kParent) &&
       exchange.bulk_checksum == checksum(exchange.bulk, sizeof exchange.bulk);
  exchange.done = true;
  pass_turn(exchange, kPeer);

  int status = 0;
  ::waitpid(child, &status, 0);
  ok = ok && WIFEXITED(status) && WEXITSTATUS(status) == 0;

  std::sort(round_trips_us.begin(), round_trips_us.end());
  const auto at = [&](double quantile) {
    return round_trips_us[static_cast<std::size_t>(quantile * static_cast<double>(round_trips_us.size() - 1))];
  };
  std::printf("%d round trips through the segment (futex wake-ups): median %.1f us, p99 %.1f us\n",
              rounds, at(0.5), at(0.99));
  std::printf("1 MiB handed over in place, checksum %s\n", ok ? "verified by the peer" : "WRONG");

  if (auto detached = segment->detach(); !detached) {
    std::fprintf(stderr, "%s\n", detached.error().message().c_str());
    return 1;
  }
  auto gone = ferry::Segment::open(name);
  std::printf("after both processes detached: %s\n",
              gone ? "segment still exists (unexpected)" : gone.error().message().c_str());
  return ok && !gone ? 0 : 1;
}
