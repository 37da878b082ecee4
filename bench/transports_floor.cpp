// The floors: what shared memory costs with nothing on top.
//
//   floor.spin   rtt: the request and its reply each copied into the next of
//                four places in shared memory, a sequence number stored before
//                the message on its first line (the record layout of ferry's
//                Channel, without its indices, lengths or checks); the other
//                side spins on that number and reads the message in place.
//                It runs the same echo loop as every transport (stamps, checks,
//                copy of the echo), so its figure is the least a 64-byte round
//                trip through shared memory costs in this benchmark.
//                throughput: a single-producer single-consumer ring of 4 MiB in
//                shared memory; the payload is copied in and copied out; both
//                sides spin when the ring is full / empty.
//   floor.futex  rtt: the same places, a futex wake after each sequence number
//                stored, futex wait (no spinning) for the answer.
//                throughput: the same ring, but a side that must wait sleeps on
//                a futex at once; the peer wakes it only if it sleeps (the
//                producer once half the ring is free, the consumer as soon as a
//                message is there).
//   floor.line   rtt only: one cache line bounced between the CPUs, no
//                message, no echo loop (the placement probe every measurement
//                runs first is the same): one line transfer each way. A 64-byte
//                message and the mark that it is there cannot share one
//                64-byte line, so no transport carrying one reaches it.
//   floor.memcpy throughput only: one process copying each message into the
//                next place of a private 4 MiB ring, nobody reading: what a
//                copy costs with no second CPU involved (the bandwidth a
//                transport that copies once can hope for).
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <new>

#include "ipc_transports.hpp"

namespace ferry::bench {

namespace {

void futex_wait(std::atomic<std::uint32_t>& word, std::uint32_t expected) {
  const timespec timeout{1, 0};  // only a safety net: the loops re-check and the watchdog bounds them
  if (::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAIT, expected, &timeout, nullptr, 0) != 0) {
    if (errno != EAGAIN && errno != EINTR && errno != ETIMEDOUT) fail_errno("futex wait");
  }
}

void futex_wake(std::atomic<std::uint32_t>& word) {
  if (::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAKE, 1, nullptr, nullptr, 0) < 0) {
    fail_errno("futex wake");
  }
}

static_assert(std::atomic<std::uint32_t>::is_always_lock_free && std::atomic<std::uint64_t>::is_always_lock_free);
static_assert(sizeof(std::atomic<std::uint32_t>) == 4, "a futex word is 32 bits");

// The ring's shared part. Every index on its own pair of cache lines.
struct RingShared {
  alignas(128) std::atomic<std::uint64_t> head{0};  // bytes published (producer writes)
  alignas(128) std::atomic<std::uint64_t> tail{0};  // bytes consumed (consumer writes)
  // Blocking mode only: a waiter stores the index it waits for (0: none) and
  // sleeps on the matching futex word; the other side bumps the word and wakes.
  alignas(128) std::atomic<std::uint64_t> consumer_wants{0};
  std::atomic<std::uint32_t> data_signal{0};
  alignas(128) std::atomic<std::uint64_t> producer_wants{0};
  std::atomic<std::uint32_t> space_signal{0};
  alignas(128) std::byte data[kRingBytes];
};

template <bool kBlocking>
class Ring {
 public:
  void attach(RingShared* shared) noexcept { shared_ = shared; }

  void push(const std::byte* message, std::size_t size) {
    if (head_ + size - tail_cache_ > kRingBytes) wait_for_space(head_ + size - kRingBytes);
    const std::size_t offset = head_ % kRingBytes;
    const std::size_t first = std::min(size, kRingBytes - offset);
    std::memcpy(shared_->data + offset, message, first);
    std::memcpy(shared_->data, message + first, size - first);
    head_ += size;
    if constexpr (kBlocking) {
      shared_->head.store(head_, std::memory_order_seq_cst);
      const std::uint64_t wanted = shared_->consumer_wants.load(std::memory_order_seq_cst);
      std::uint64_t wanted_now = wanted;
      if (wanted != 0 && head_ >= wanted && shared_->consumer_wants.compare_exchange_strong(wanted_now, 0)) {
        shared_->data_signal.fetch_add(1, std::memory_order_seq_cst);
        futex_wake(shared_->data_signal);
      }
    } else {
      shared_->head.store(head_, std::memory_order_release);
    }
  }

  const std::byte* pop(std::byte* scratch, std::size_t size) {
    if (head_cache_ - tail_ < size) wait_for_data(tail_ + size);
    const std::size_t offset = tail_ % kRingBytes;
    const std::size_t first = std::min(size, kRingBytes - offset);
    std::memcpy(scratch, shared_->data + offset, first);
    std::memcpy(scratch + first, shared_->data, size - first);
    tail_ += size;
    if constexpr (kBlocking) {
      shared_->tail.store(tail_, std::memory_order_seq_cst);
      const std::uint64_t wanted = shared_->producer_wants.load(std::memory_order_seq_cst);
      std::uint64_t wanted_now = wanted;
      if (wanted != 0 && tail_ >= wanted && shared_->producer_wants.compare_exchange_strong(wanted_now, 0)) {
        shared_->space_signal.fetch_add(1, std::memory_order_seq_cst);
        futex_wake(shared_->space_signal);
      }
    } else {
      shared_->tail.store(tail_, std::memory_order_release);
    }
    return scratch;
  }

 private:
  // Producer: until tail >= need.
  void wait_for_space(std::uint64_t need) {
    if constexpr (!kBlocking) {
      spin_until([&] {
        tail_cache_ = shared_->tail.load(std::memory_order_acquire);
        return tail_cache_ >= need;
      });
    } else {
      // Sleep until half the ring is free (fewer, batched wake-ups), at least until `need`.
      const std::uint64_t half_free = head_ > kRingBytes / 2 ? head_ - kRingBytes / 2 : 0;
      const std::uint64_t wake_at = std::max(need, half_free);
      for (;;) {
        tail_cache_ = shared_->tail.load(std::memory_order_acquire);
        if (tail_cache_ >= need) return;
        shared_->producer_wants.store(wake_at, std::memory_order_seq_cst);
        const std::uint32_t seen = shared_->space_signal.load(std::memory_order_seq_cst);
        tail_cache_ = shared_->tail.load(std::memory_order_seq_cst);
        if (tail_cache_ >= wake_at) {
          shared_->producer_wants.store(0, std::memory_order_relaxed);
          return;
        }
        futex_wait(shared_->space_signal, seen);
      }
    }
  }

  // Consumer: until head >= need.
  void wait_for_data(std::uint64_t need) {
    if constexpr (!kBlocking) {
      spin_until([&] {
        head_cache_ = shared_->head.load(std::memory_order_acquire);
        return head_cache_ >= need;
      });
    } else {
      for (;;) {
        head_cache_ = shared_->head.load(std::memory_order_acquire);
        if (head_cache_ >= need) return;
        shared_->consumer_wants.store(need, std::memory_order_seq_cst);
        const std::uint32_t seen = shared_->data_signal.load(std::memory_order_seq_cst);
        head_cache_ = shared_->head.load(std::memory_order_seq_cst);
        if (head_cache_ >= need) {
          shared_->consumer_wants.store(0, std::memory_order_relaxed);
          return;
        }
        futex_wait(shared_->data_signal, seen);
      }
    }
  }

  RingShared* shared_ = nullptr;
  std::uint64_t head_ = 0;        // producer: own index
  std::uint64_t tail_cache_ = 0;  // producer: last tail seen
  std::uint64_t tail_ = 0;        // consumer: own index
  std::uint64_t head_cache_ = 0;  // consumer: last head seen
};

// A round trip's messages in one direction: kRoundTripDepth places used in
// turn, each a 32-bit sequence number followed by the message, on cache lines
// of its own. The sender copies the message in and stores its number; the
// receiver waits for that number at the place it expects next and reads the
// message where it lies (still there when it answers: the sender comes back
// to a place only kRoundTripDepth messages later). Nothing else: no indices,
// no lengths, no checks.
class SlotLane {
 public:
  static std::size_t place_bytes(std::size_t size) noexcept { return (kPayloadAt + size + 63) / 64 * 64; }
  static std::size_t bytes(std::size_t size) noexcept { return kRoundTripDepth * place_bytes(size); }

  void attach(std::byte* memory, std::size_t size) noexcept {
    memory_ = memory;
    place_bytes_ = place_bytes(size);
  }

  template <bool kBlocking>
  void put(const std::byte* message, std::size_t size) {
    std::byte* place = next_place();
    std::memcpy(place + kPayloadAt, message, size);
    std::atomic<std::uint32_t>& number = sequence(place);
    number.store(count_, kBlocking ? std::memory_order_seq_cst : std::memory_order_release);
    if constexpr (kBlocking) futex_wake(number);
  }

  template <bool kBlocking>
  const std::byte* take() {
    std::byte* place = next_place();
    std::atomic<std::uint32_t>& number = sequence(place);
    const std::uint32_t wanted = count_;
    if constexpr (kBlocking) {
      for (std::uint32_t seen; (seen = number.load(std::memory_order_acquire)) != wanted;) futex_wait(number, seen);
    } else {
      spin_until([&] { return number.load(std::memory_order_acquire) == wanted; });
    }
    return place + kPayloadAt;
  }

 private:
  static constexpr std::size_t kPayloadAt = 8;  // like a Channel record's header
  static std::atomic<std::uint32_t>& sequence(std::byte* place) noexcept {
    return *reinterpret_cast<std::atomic<std::uint32_t>*>(place);
  }
  // The place of the next message; numbers start at 1 (the mapping is zeroed).
  std::byte* next_place() noexcept { return memory_ + (count_++ % kRoundTripDepth) * place_bytes_; }

  std::byte* memory_ = nullptr;
  std::size_t place_bytes_ = 0;
  std::uint32_t count_ = 0;
};

template <bool kBlocking>
struct Floor : TransportBase {
  static std::string not_applicable(Pattern pattern, std::size_t size) {
    if (pattern == Pattern::throughput && size > kRingBytes) return "a message larger than the 4 MiB ring";
    if (pattern == Pattern::wake && !kBlocking) return "spins: never sleeps, so nothing to wake";
    return {};
  }

  void prepare(const Spec& spec) {
    if (is_round_trip(spec.pattern)) {
      const std::size_t request_bytes = SlotLane::bytes(spec.size);
      auto* memory = static_cast<std::byte*>(map_shared(request_bytes + SlotLane::bytes(reply_size(spec.size))));
      outbound_.attach(memory, spec.size);
      inbound_.attach(memory + request_bytes, reply_size(spec.size));
    } else {
      ring_.attach(new (map_shared(sizeof(RingShared))) RingShared);
    }
  }

  void open(Side side, const Spec& spec) {
    round_trip_ = is_round_trip(spec.pattern);
    if (side == Side::responder) std::swap(outbound_, inbound_);  // it takes requests and puts replies
  }

  void send(const std::byte* message, std::size_t size) {
    if (round_trip_) return outbound_.put<kBlocking>(message, size);
    ring_.push(message, size);
  }

  const std::byte* receive(std::byte* scratch, std::size_t size) {
    if (round_trip_) return inbound_.take<kBlocking>();
    return ring_.pop(scratch, size);
  }

 private:
  SlotLane outbound_;  // the initiator's requests (the responder's replies once open() swapped them)
  SlotLane inbound_;
  bool round_trip_ = false;
  Ring<kBlocking> ring_;
};

// floor.line: the bare cache line, no message: what one transfer of a line
// each way costs (the placement probe of every measurement times the same).
struct alignas(128) PingLine {
  std::atomic<std::uint32_t> word{0};  // 0: the initiator's turn; 1: ping; 2: the last ping
};

struct BareLine : TransportBase {
  static constexpr bool kCustomRtt = true;

  static std::string not_applicable(Pattern pattern, std::size_t) {
    if (pattern == Pattern::throughput) return "a bare cache line: round trip only";
    if (pattern == Pattern::wake) return "spins: never sleeps, so nothing to wake";
    return {};
  }

  void prepare(const Spec&) { line_ = new (map_shared(sizeof(PingLine))) PingLine; }

  void ping(bool stop) {
    line_->word.store(stop ? 2 : 1, std::memory_order_release);
    spin_until([&] { return line_->word.load(std::memory_order_acquire) == 0; });
  }

  bool pong() {
    std::uint32_t value = 0;
    spin_until([&] { return (value = line_->word.load(std::memory_order_acquire)) != 0; });
    line_->word.store(0, std::memory_order_release);
    return value == 1;
  }

  PingLine* line_ = nullptr;
};

// The initiator copies for the warm-up, then counts the copies of the
// budget; the responder has nothing to do.
struct MemcpyReference : TransportBase {
  static constexpr bool kCustomStream = true;

  static std::string not_applicable(Pattern pattern, std::size_t size) {
    if (is_round_trip(pattern)) return "a single process: throughput only";
    if (size > kRingBytes) return "a message larger than the 4 MiB ring";
    return {};
  }

  void stream(Side side, const Spec& spec, SharedArea& area) {
    if (side == Side::responder) return;
    const std::byte* message = detail::allocate_message(spec.size);
    std::byte* ring = detail::allocate_message(kRingBytes);
    std::size_t offset = 0;
    const auto copy = [&] {
      std::memcpy(ring + offset, message, spec.size);
      asm volatile("" : : "r"(ring) : "memory");  // the copy is not dead: keep it
      offset += spec.size;
      if (offset + spec.size > kRingBytes) offset = 0;
    };
    const std::uint64_t clock_every = spec.size <= 4096 ? 32 : 1;
    const std::uint64_t warm_end = now_ns() + spec.warmup_ns;
    while (now_ns() < warm_end) {
      for (std::uint64_t i = 0; i < clock_every; ++i) copy();
    }
    const std::uint64_t first_ns = now_ns();
    const std::uint64_t end = first_ns + spec.budget_ns;
    std::uint64_t copies = 0;
    std::uint64_t last_ns = first_ns;
    while (last_ns < end) {
      for (std::uint64_t i = 0; i < clock_every; ++i) copy();
      copies += clock_every;
      last_ns = now_ns();
    }
    area.stream_first_ns = first_ns;
    area.stream_last_ns = last_ns;
    area.stream_messages = copies;
  }
};

}  // namespace

void add_floor_transports(std::vector<TransportInfo>& list) {
  list.push_back(make_transport<Floor<false>>(
      "floor.spin", Group::floor,
      "rtt: the message copied into the next of 4 places in shared memory, a sequence number on its first line, "
      "read in place (both spin); throughput: SPSC ring of 4 MiB, copy in + copy out, spinning"));
  list.push_back(make_transport<Floor<true>>(
      "floor.futex", Group::floor,
      "rtt: the same places, futex wake + wait on the sequence number; throughput: the same ring, futex sleep when "
      "full/empty, wake only a sleeper"));
  list.push_back(make_transport<BareLine>(
      "floor.line", Group::floor,
      "rtt only: one cache line bounced between the CPUs, no message (one line transfer each way)"));
  list.push_back(make_transport<MemcpyReference>(
      "floor.memcpy", Group::floor,
      "throughput only: one process memcpy-ing each message into a private 4 MiB ring (the bandwidth of one copy)"));
}

}  // namespace ferry::bench
