// A producer process streams messages to a consumer process over a Channel.
//
// The parent creates the channel and starts the consumer (itself, with
// --consume NAME), then sends `count` variable-size records. The consumer
// reads them in place (zero copy), checks each, and reports. Run:
//   channel_stream [count]
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "ferry/ferry.hpp"

namespace {

struct Tick {
  std::uint64_t sequence;
  double price;
  char symbol[8];
};

int consume(const char* name, std::uint64_t count) {
  auto channel = ferry::Channel::open(name);
  if (!channel) return std::fprintf(stderr, "consumer: %s\n", channel.error().message().c_str()), 1;
  auto rx = channel->receiver();
  if (!rx) return std::fprintf(stderr, "consumer: %s\n", rx.error().message().c_str()), 1;
  for (std::uint64_t expected = 0; expected < count; ++expected) {
    auto message = rx->peek();  // in place, no copy
    if (!message) return std::fprintf(stderr, "consumer: %s\n", message.error().message().c_str()), 1;
    Tick tick;
    std::memcpy(&tick, message->data(), sizeof tick);
    if (message->size() != sizeof tick || tick.sequence != expected) {
      return std::fprintf(stderr, "consumer: out of order at %llu\n", static_cast<unsigned long long>(expected)), 1;
    }
    (void)rx->release();
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 4 && std::strcmp(argv[1], "--consume") == 0) return consume(argv[2], std::strtoull(argv[3], nullptr, 10));
  const std::uint64_t count = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 1'000'000;

  const std::string name = "channel-stream-" + std::to_string(::getpid());
  auto channel = ferry::Channel::create(
      name, {.capacity = 1 << 20, .max_message = sizeof(Tick), .persistence = ferry::Persistence::process});
  if (!channel) return std::fprintf(stderr, "%s\n", channel.error().message().c_str()), 1;
  auto tx = channel->sender();
  if (!tx) return std::fprintf(stderr, "%s\n", tx.error().message().c_str()), 1;

  const pid_t consumer = ::fork();
  if (consumer == 0) {
    const std::string count_text = std::to_string(count);
    ::execl("/proc/self/exe", argv[0], "--consume", name.c_str(), count_text.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }

  const auto start = std::chrono::steady_clock::now();
  for (std::uint64_t sequence = 0; sequence < count; ++sequence) {
    const Tick tick{sequence, 100.0 + static_cast<double>(sequence % 100) / 100, "FERRY"};
    if (auto sent = tx->send(std::as_bytes(std::span(&tick, 1))); !sent) {
      std::fprintf(stderr, "%s\n", sent.error().message().c_str());
      return 1;
    }
  }
  int status = 0;
  ::waitpid(consumer, &status, 0);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
  std::printf("%llu messages of %zu bytes to another process in %.3f s: %.1f M msgs/s, %s\n",
              static_cast<unsigned long long>(count), sizeof(Tick), seconds,
              static_cast<double>(count) / seconds / 1e6, ok ? "all in order" : "CONSUMER FAILED");
  return ok ? 0 : 1;
}
