#include "ferry/patterns/topic.hpp"

#include <algorithm>
#include <cstring>
#include <new>
#include <thread>

#include "ferry/messaging/inspect.hpp"
#include "ferry/os/process.hpp"
#include "ferry/patterns/detail/topic_layout.hpp"

namespace ferry {
namespace detail {

// The geometry of a topic, read from its header once and checked: every
// later bounds check uses these, never the shared copies.
struct TopicGeometry {
  std::uint64_t capacity;
  std::uint64_t slot_size;
  std::uint32_t max_message;
  std::uint32_t history;
  TopicPolicy policy;
  std::uint64_t loan_limit;
  std::uint64_t loan_threshold;
};

struct TopicShared {
  Segment segment;
  TopicControl* control;
  std::byte* slots;
  TopicGeometry geometry;
  bool read_only;
  std::shared_ptr<const std::string> description;

  std::byte* slot(std::uint64_t sequence) const noexcept {
    return slots + (sequence % geometry.capacity) * geometry.slot_size;
  }
  bool blocks() const noexcept { return geometry.policy == TopicPolicy::block; }
  ChunkHome chunk_home() const {
    const SegmentInfo info = segment.info();
    return {segment.name(), info.kind, info.persistence, info.mode, description};
  }
};

namespace {

// How often a blocked publisher looks whether the subscribers holding it
// back still live, and how long a wait goes before re-checking the segment.
constexpr auto kLivenessInterval = std::chrono::milliseconds(100);
// The longest sleep between two looks at a busy publish lock.
constexpr auto kLongestLockPause = std::chrono::microseconds(200);

std::atomic_ref<std::uint64_t> stamp_of(std::byte* slot) noexcept {
  return std::atomic_ref<std::uint64_t>(*reinterpret_cast<std::uint64_t*>(slot));
}
std::atomic_ref<std::uint32_t> length_of(std::byte* slot) noexcept {
  return std::atomic_ref<std::uint32_t>(*reinterpret_cast<std::uint32_t*>(slot + 8));
}
std::atomic_ref<std::uint32_t> form_of(std::byte* slot) noexcept {
  return std::atomic_ref<std::uint32_t>(*reinterpret_cast<std::uint32_t*>(slot + 12));
}
std::byte* payload_of(std::byte* slot) noexcept { return slot + kTopicSlotHeader; }

// Under drop_oldest a lapped subscriber may copy a slot while a publisher
// overwrites it (and throws the copy away): both copy with relaxed atomic
// words, so that race is defined. The payload is 8-aligned and its slot
// has room for the last word rounded up.
void store_words(std::byte* to, std::span<const std::byte> from) noexcept {
  auto* words = reinterpret_cast<std::uint64_t*>(to);
  const std::size_t whole = from.size() / 8;
  for (std::size_t i = 0; i < whole; ++i) {
    std::uint64_t word;
    std::memcpy(&word, from.data() + i * 8, 8);
    __atomic_store_n(words + i, word, __ATOMIC_RELAXED);
  }
  if (const std::size_t rest = from.size() % 8; rest != 0) {
    std::uint64_t word = 0;
    std::memcpy(&word, from.data() + whole * 8, rest);
    __atomic_store_n(words + whole, word, __ATOMIC_RELAXED);
  }
}

void load_words(std::byte* to, const std::byte* from, std::size_t size) noexcept {
  const auto* words = reinterpret_cast<const std::uint64_t*>(from);
  const std::size_t whole = size / 8;
  for (std::size_t i = 0; i < whole; ++i) {
    const std::uint64_t word = __atomic_load_n(words + i, __ATOMIC_RELAXED);
    std::memcpy(to + i * 8, &word, 8);
  }
  if (const std::size_t rest = size % 8; rest != 0) {
    const std::uint64_t word = __atomic_load_n(words + whole, __ATOMIC_RELAXED);
    std::memcpy(to + whole * 8, &word, rest);
  }
}

error corrupt(const TopicShared& shared, std::string detail) {
  return error(errc::corrupt, shared.description, std::move(detail));
}

result<TopicGeometry> read_geometry(std::span<const std::byte> data,
                                    const std::shared_ptr<const std::string>& description) {
  if (data.size() < kTopicSlotsOffset) return error(errc::corrupt, description, "too small for a topic header");
  const auto& control = *reinterpret_cast<const TopicControl*>(data.data());
  // Read each constant once, then check it against ferry's own limits.
  const std::uint64_t magic = control.magic;
  const std::uint32_t version = control.layout_version;
  const auto policy = static_cast<std::uint32_t>(control.policy);
  const std::uint64_t capacity = control.capacity;
  const std::uint32_t max_message = control.max_message;
  const std::uint32_t history = control.history;
  const std::uint64_t slot_size = control.slot_size;
  const std::uint64_t slots_offset = control.slots_offset;
  const std::uint32_t subscriber_entries = control.subscriber_entries;
  const std::uint32_t publisher_entries = control.publisher_entries;
  const std::uint64_t loan_limit = control.loan_limit;
  const std::uint64_t loan_threshold = control.loan_threshold;
  if (magic != kTopicMagic) return error(errc::corrupt, description, "not a topic (bad magic)");
  if (version != kTopicLayoutVersion) {
    return error(errc::version_mismatch, description,
                 "topic layout version " + std::to_string(version) + ", this ferry reads " +
                     std::to_string(kTopicLayoutVersion));
  }
  if (policy > static_cast<std::uint32_t>(TopicPolicy::drop_oldest)) {
    return error(errc::corrupt, description, "unknown slow-subscriber policy " + std::to_string(policy));
  }
  if (capacity == 0 || capacity > kMaxTopicCapacity || max_message == 0 || max_message > kMaxTopicMessage ||
      history > capacity || slot_size != topic_slot_size(max_message) || slots_offset != kTopicSlotsOffset ||
      subscriber_entries != kTopicSubscribers || publisher_entries != kTopicPublishers ||
      (data.size() - kTopicSlotsOffset) / slot_size < capacity) {
    return error(errc::corrupt, description, "ring geometry out of bounds");
  }
  if (loan_limit < (std::uint64_t{1} << kMinChunkShift) || loan_limit > (std::uint64_t{1} << kMaxChunkShift)) {
    return error(errc::corrupt, description, "loan limit out of bounds");
  }
  return TopicGeometry{capacity,   slot_size,  max_message, history, static_cast<TopicPolicy>(policy),
                       loan_limit, loan_threshold};
}

result<std::shared_ptr<TopicShared>> adopt(Segment segment, bool read_only) {
  auto description = std::make_shared<const std::string>("topic '" + segment.name() + "'");
  const auto data = segment.data();
  auto geometry = read_geometry(data, description);
  if (!geometry) return std::move(geometry).error();
  auto* control = reinterpret_cast<TopicControl*>(data.data());
  std::byte* slots = data.data() + kTopicSlotsOffset;
  return std::make_shared<TopicShared>(
      TopicShared{std::move(segment), control, slots, *geometry, read_only, std::move(description)});
}

// Takes the publish lock, giving up at `until`. It is held only for a
// copy, so a waiter polls it (spinning as `strategy` allows, then sleeping
// in growing steps) instead of sleeping in pthread_mutex_timedlock: between
// polls it can look at its deadline and at the holder, and ThreadSanitizer
// (GCC 12) does not count a lock taken through timedlock's EOWNERDEAD as
// held, which every killed publisher would provoke.
// A publisher that died holding it left at most a half-written slot at
// `written`, which no reader looks at and the next publisher writes again:
// the repair is only to wake the subscribers it may have owed a wake-up.
// A lock that stays held, over two liveness checks, by no live process was
// scribbled on: corrupt, not a hang.
result<void> lock_topic(const TopicShared& shared, std::optional<deadline> until, WaitStrategy strategy) {
  Mutex& lock = shared.control->publish_lock;
  const auto start = steady_clock::now();
  auto next_check = start + kLivenessInterval;
  auto pause = std::chrono::microseconds(1);
  std::uint64_t ownerless_holder = 0;
  int ownerless_checks = 0;
  for (;;) {
    auto taken = lock.try_lock();
    if (taken && *taken) return {};
    if (!taken) {
      if (taken.error().code() != errc::owner_died) {
        return corrupt(shared, "its publish lock: " + taken.error().message());
      }
      shared.control->data_ready.notify_all();
      if (auto repaired = lock.mark_consistent(); !repaired) {
        (void)lock.unlock();
        return corrupt(shared, "its publish lock: " + repaired.error().message());
      }
      return {};
    }
    const auto now = steady_clock::now();
    if (until && now >= *until) return error(errc::timed_out, shared.description);
    if (now >= next_check) {
      next_check = now + kLivenessInterval;
      const auto holder = lock.status().owner;
      if (holder && holder->alive()) {
        ownerless_checks = 0;
      } else {
        const std::uint64_t packed = holder ? holder->packed() : 0;
        ownerless_checks = packed == ownerless_holder ? ownerless_checks + 1 : 1;
        ownerless_holder = packed;
        if (ownerless_checks >= 2) return corrupt(shared, "its publish lock is held, but by no live process");
      }
    }
    if (strategy.mode == WaitStrategy::Mode::busy_poll ||
        (strategy.mode == WaitStrategy::Mode::adaptive && now - start < strategy.spin)) {
      for (int i = 0; i < 16; ++i) cpu_relax();
      continue;
    }
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, kLongestLockPause);
  }
}

void unlock_topic(const TopicShared& shared) noexcept { (void)shared.control->publish_lock.unlock(); }

// Waits on `point` until `ready()` or `until`, in slices: after each slice
// without news `between_slices()` runs, and the wait goes on. A condition
// that turns true only because the segment was scribbled on counts as
// ready: the caller's checks then report it. Errors: timed_out.
template <class Ready, class Between>
result<void> wait_in_slices(const TopicShared& shared, WaitPoint& point, Ready&& ready, Between&& between_slices,
                            WaitStrategy strategy, std::optional<deadline> until) {
  for (;;) {
    const auto now = steady_clock::now();
    if (until && now >= *until) return error(errc::timed_out, shared.description);
    deadline slice = now + kLivenessInterval;
    if (until && *until < slice) slice = *until;
    if (point.wait(ready, strategy, slice) == wait_status::ready) return {};
    // Spinning once is enough; later slices sleep (busy_poll keeps polling).
    if (strategy.mode == WaitStrategy::Mode::adaptive) strategy = WaitStrategy::block();
    between_slices();
    if (ready()) return {};
  }
}

// A publisher found no room (ring or chunks): coalescing subscribers, who
// may hold it, wake now instead of at their interval. The seq_cst bump is
// the condition WaitPoint's contract asks to be written before notify.
void call_coalescing_subscribers(TopicControl& control) noexcept {
  control.room_wanted.fetch_add(1, std::memory_order_seq_cst);
  control.batch_ready.notify_all();
}

std::uint64_t packed_alive_or_zero(std::uint64_t owner) noexcept {
  return owner != 0 && ProcessId::from_packed(owner).alive() ? owner : 0;
}

TopicStats read_stats(const TopicControl& control, const TopicGeometry& geometry, std::string name) {
  TopicStats stats;
  stats.name = std::move(name);
  stats.policy = geometry.policy == TopicPolicy::block ? SlowSubscriber::block : SlowSubscriber::drop_oldest;
  stats.capacity = geometry.capacity;
  stats.max_message = geometry.max_message;
  stats.history = geometry.history;
  const std::uint64_t written = control.written.load(std::memory_order_acquire);
  stats.published = written;
  for (const TopicPublisherEntry& entry : control.publishers) {
    const std::uint64_t owner = entry.owner.load(std::memory_order_acquire);
    if (owner == 0) continue;
    stats.publishers.push_back({ProcessId::from_packed(owner).pid(), packed_alive_or_zero(owner) != 0,
                                entry.published.load(std::memory_order_relaxed)});
  }
  for (const TopicSubscriberEntry& entry : control.subscribers) {
    const std::uint64_t owner = entry.owner.load(std::memory_order_acquire);
    if (owner == 0) continue;
    const std::uint64_t cursor = entry.cursor.load(std::memory_order_acquire);
    stats.subscribers.push_back({ProcessId::from_packed(owner).pid(), packed_alive_or_zero(owner) != 0,
                                 cursor <= written ? written - cursor : 0, entry.lost.load(std::memory_order_relaxed),
                                 entry.received.load(std::memory_order_relaxed)});
  }
  return stats;
}

}  // namespace
}  // namespace detail

using detail::TopicControl;
using detail::TopicPolicy;
using detail::TopicShared;
using detail::stamp_of;
using detail::stamp_writing;
using detail::stamp_written;

std::string_view to_string(SlowSubscriber policy) noexcept {
  switch (policy) {
    case SlowSubscriber::block: return "block";
    case SlowSubscriber::drop_oldest: return "drop_oldest";
  }
  return "unknown";
}

// ------------------------------------------------------------------- Topic

result<Topic> Topic::create(std::string_view name, const TopicOptions& options) {
  const std::string description = "topic '" + std::string(name) + "'";
  if (options.capacity == 0 || options.capacity > detail::kMaxTopicCapacity) {
    return error(errc::invalid_argument, description,
                 "capacity must be 1 .. " + std::to_string(detail::kMaxTopicCapacity) + " messages");
  }
  if (options.max_message == 0 || options.max_message > detail::kMaxTopicMessage) {
    return error(errc::invalid_argument, description, "max_message must be 1 byte .. 1 GiB");
  }
  if (options.history > options.capacity) {
    return error(errc::invalid_argument, description,
                 "history (" + std::to_string(options.history) + ") is beyond the capacity (" +
                     std::to_string(options.capacity) + ")");
  }
  if (options.loans.limit < (std::size_t{1} << detail::kMinChunkShift) ||
      options.loans.limit > (std::size_t{1} << detail::kMaxChunkShift)) {
    return error(errc::invalid_argument, description, "loans.limit must be 4 KiB .. 1 TiB");
  }
  const std::uint64_t slot_size = detail::topic_slot_size(options.max_message);
  if (slot_size * options.capacity > detail::kMaxTopicBytes) {
    return error(errc::invalid_argument, description, "capacity x max_message is beyond 1 TiB");
  }
  SegmentOptions segment_options{.kind = options.kind,
                                 .size = detail::kTopicSlotsOffset + slot_size * options.capacity,
                                 .persistence = options.persistence,
                                 .mode = options.mode,
                                 .sysv_project_id = options.sysv_project_id,
                                 .object_type = ObjectType::topic};
  segment_options.initialize = [&](std::span<std::byte> data) {
    auto* control = new (data.data()) TopicControl;
    new (&control->publish_lock) Mutex(name);
    control->magic = detail::kTopicMagic;
    control->layout_version = detail::kTopicLayoutVersion;
    control->policy = options.policy == SlowSubscriber::block ? TopicPolicy::block : TopicPolicy::drop_oldest;
    control->capacity = options.capacity;
    control->max_message = static_cast<std::uint32_t>(options.max_message);
    control->history = static_cast<std::uint32_t>(options.history);
    control->slot_size = slot_size;
    control->slots_offset = detail::kTopicSlotsOffset;
    control->subscriber_entries = detail::kTopicSubscribers;
    control->publisher_entries = detail::kTopicPublishers;
    control->loan_limit = options.loans.limit;
    control->loan_threshold = options.loans.threshold;
    control->label = detail::Label(name);
  };
  auto segment = Segment::create(name, segment_options);
  if (!segment) return std::move(segment).error();
  auto shared = detail::adopt(std::move(*segment), false);
  if (!shared) return std::move(shared).error();
  return Topic(std::move(*shared));
}

result<Topic> Topic::open(std::string_view name, OpenOptions options) {
  options.object_type = ObjectType::topic;
  auto segment = Segment::open(name, options);
  if (!segment) return std::move(segment).error();
  auto shared = detail::adopt(std::move(*segment), options.access == Access::read_only);
  if (!shared) return std::move(shared).error();
  return Topic(std::move(*shared));
}

result<void> Topic::destroy(std::string_view name, SegmentKind kind, int sysv_project_id) {
  // The chunks are named after the segment (as it names itself, if it can be read).
  const auto segment = Segment::open(name, {.kind = kind, .access = Access::read_only, .sysv_project_id = sysv_project_id});
  detail::destroy_slabs({segment ? segment->name() : std::string(name), kind});
  return Segment::destroy(name, kind, sysv_project_id);
}

std::size_t Topic::capacity() const noexcept { return shared_->geometry.capacity; }
std::size_t Topic::max_message() const noexcept { return shared_->geometry.max_message; }
std::size_t Topic::history() const noexcept { return shared_->geometry.history; }
SlowSubscriber Topic::policy() const noexcept {
  return shared_->blocks() ? SlowSubscriber::block : SlowSubscriber::drop_oldest;
}
const Segment& Topic::segment() const noexcept { return shared_->segment; }

TopicStats Topic::stats() const {
  return detail::read_stats(*shared_->control, shared_->geometry, shared_->segment.name());
}

namespace {
error read_only_error(const TopicShared& shared) {
  return error(errc::permission_denied, shared.description, "opened read-only");
}
}  // namespace

// --------------------------------------------------------------- publisher

struct TopicPublisher::State {
  std::shared_ptr<TopicShared> shared;
  std::size_t entry_index = 0;
  std::uint64_t me = 0;
  std::uint64_t published = 0;
  // Where the half ring being published ends (coalesced_batch): its last
  // message wakes coalescing subscribers. Another publisher may publish that
  // one; this one then only moves on (`written` only grows).
  std::uint64_t half_ring_end = 0;
  // The slowest live subscriber's cursor when last looked at, valid while
  // no one subscribed since (`subscribers_changed`): cursors only grow, so
  // it bounds the room from below and the table is read only when it runs out.
  std::uint64_t slowest_seen = 0;
  std::uint64_t changes_seen = UINT64_MAX;
  steady_clock::time_point last_liveness_check{};
  steady_clock::time_point last_chunk_sweep{};
  std::shared_ptr<detail::ChunkPool> chunks;  // made at the first loan

  TopicControl& control() const noexcept { return *shared->control; }

  // Under the publish lock: the pool, its mappings as the slab table says.
  result<void> ready_pool() {
    if (chunks) return chunks->refresh();
    auto pool = std::make_shared<detail::ChunkPool>(shared->chunk_home(), control().slabs,
                                                    shared->geometry.loan_limit);
    if (auto refreshed = pool->refresh(); !refreshed) return refreshed;
    pool->give_back_loans_of(static_cast<std::uint32_t>(entry_index));  // a dead predecessor's in this entry
    chunks = std::move(pool);
    return {};
  }

  // The oldest message whose chunk a subscriber (or, `with_history`, the
  // history) may still read: chunks of messages before it are free.
  std::uint64_t held_from(std::uint64_t written, bool with_history) const noexcept {
    std::uint64_t from = with_history ? written - std::min<std::uint64_t>(shared->geometry.history, written) : written;
    for (const auto& entry : control().subscribers) {
      if (entry.owner.load(std::memory_order_seq_cst) == 0) continue;
      const std::uint64_t cursor = entry.cursor.load(std::memory_order_seq_cst);
      if (cursor <= written) from = std::min(from, cursor);  // beyond: has_room reports it
    }
    return from;
  }

  // Under the publish lock, when the pool has no chunk within its limit (at
  // most once per interval: it asks /proc), and when asked for its usage:
  // frees what dead publishers loaned and the entries of dead subscribers.
  void sweep_dead(bool throttled) {
    const auto now = steady_clock::now();
    if (throttled && now - last_chunk_sweep < detail::kLivenessInterval) return;
    last_chunk_sweep = now;
    for (std::uint32_t i = 0; i < detail::kTopicPublishers; ++i) {
      const std::uint64_t owner = control().publishers[i].owner.load(std::memory_order_seq_cst);
      if (owner != 0 && detail::packed_alive_or_zero(owner) == 0) chunks->give_back_loans_of(i);
    }
    free_dead_subscribers();
  }

  // Frees the entries of dead subscribers (they hold chunks back). No lock needed.
  void free_dead_subscribers() const {
    for (auto& entry : control().subscribers) {
      std::uint64_t owner = entry.owner.load(std::memory_order_seq_cst);
      if (owner != 0 && detail::packed_alive_or_zero(owner) == 0) {
        entry.owner.compare_exchange_strong(owner, 0, std::memory_order_seq_cst);
      }
    }
  }

  // Under the publish lock: a chunk of `size` bytes, by the rules of
  // detail/topic_layout.hpp. Empty: subscribers hold them all (wait for one).
  result<std::optional<detail::ChunkGrant>> take_chunk(std::size_t size) {
    if (auto ready = ready_pool(); !ready) return std::move(ready).error();
    const auto loaner = static_cast<std::uint32_t>(entry_index);
    const std::uint64_t written = control().written.load(std::memory_order_relaxed);
    const auto free_below = [](std::uint64_t sequence) { return sequence * detail::kTopicChunkStep; };
    auto taken = chunks->take(size, free_below(held_from(written, true)), true, loaner);
    const auto done = [&] { return taken ? taken->has_value() : taken.error().code() != errc::limit_reached; };
    if (done()) return taken;
    sweep_dead(true);
    taken = chunks->take(size, free_below(held_from(written, true)), true, loaner);
    if (done()) return taken;
    // The history gives up what no live subscriber still has to read.
    auto without_history = chunks->take(size, free_below(held_from(written, false)), false, loaner);
    if (!without_history || *without_history) return without_history;
    if (!shared->blocks()) {
      // drop_oldest: the oldest message's chunk, whoever has not read it yet.
      if (const auto oldest = chunks->oldest_sent(size)) {
        auto dropped = chunks->take(size, *oldest + detail::kTopicChunkStep, false, loaner);
        if (!dropped || *dropped) return dropped;
      }
    }
    return taken;
  }

  result<bool> publish_slot(std::span<const std::byte> content, const detail::ChunkRef* chunk,
                            std::optional<deadline> until, WaitStrategy strategy, bool wait);

  // Whether a subscriber moved on since `seen` (for waiting for chunks, without the lock).
  bool subscribers_moved(std::uint64_t seen) const noexcept {
    return held_from(control().written.load(std::memory_order_seq_cst), false) != seen;
  }

  // Whether message `sequence` may be written now (block): the slowest live
  // subscriber is less than a ring behind. Under the publish lock.
  result<bool> has_room(std::uint64_t sequence) {
    const std::uint64_t capacity = shared->geometry.capacity;
    const std::uint64_t changes = control().subscribers_changed.load(std::memory_order_relaxed);
    if (changes == changes_seen && sequence >= slowest_seen && sequence - slowest_seen < capacity) return true;
    std::uint64_t slowest = sequence;
    for (std::size_t i = 0; i < detail::kTopicSubscribers; ++i) {
      const auto& entry = control().subscribers[i];
      if (entry.owner.load(std::memory_order_seq_cst) == 0) continue;
      const std::uint64_t cursor = entry.cursor.load(std::memory_order_seq_cst);
      if (cursor > sequence || sequence - cursor > capacity) {
        return detail::corrupt(*shared, "subscriber " + std::to_string(i) + " is at message " +
                                            std::to_string(cursor) + ", out of bounds of the ring at " +
                                            std::to_string(sequence));
      }
      slowest = std::min(slowest, cursor);
    }
    slowest_seen = slowest;
    changes_seen = changes;
    return sequence - slowest < capacity;
  }

  // has_room without the lock, for waiting (WaitPoint's condition: seq_cst
  // loads). Impossible values count as room: the locked check reports them.
  bool room_likely() const noexcept {
    const std::uint64_t capacity = shared->geometry.capacity;
    const std::uint64_t written = control().written.load(std::memory_order_seq_cst);
    for (const auto& entry : control().subscribers) {
      if (entry.owner.load(std::memory_order_seq_cst) == 0) continue;
      const std::uint64_t cursor = entry.cursor.load(std::memory_order_seq_cst);
      if (cursor <= written && written - cursor >= capacity) return false;
    }
    return true;
  }

  // Frees the entries of dead subscribers that hold publishers back.
  void free_dead_blockers() {
    last_liveness_check = steady_clock::now();
    free_dead_subscribers();
  }

  void write_slot(std::uint64_t sequence, std::span<const std::byte> message, std::uint32_t form) const noexcept {
    std::byte* slot = shared->slot(sequence);
    auto stamp = stamp_of(slot);
    stamp.store(stamp_writing(sequence), std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_release);  // the seqlock's "being written" before the bytes
    detail::length_of(slot).store(static_cast<std::uint32_t>(message.size()), std::memory_order_relaxed);
    detail::form_of(slot).store(form, std::memory_order_relaxed);
    if (!shared->blocks()) {
      detail::store_words(detail::payload_of(slot), message);
    } else if (!message.empty()) {
      std::memcpy(detail::payload_of(slot), message.data(), message.size());
    }
    stamp.store(stamp_written(sequence), std::memory_order_release);
  }

  // `written` reached or passed the end of the half ring last seen: if it is
  // that end, coalescing subscribers are woken; then the next end is noted.
  void end_half_ring(std::uint64_t written) noexcept {
    const std::uint64_t batch = detail::coalesced_batch(shared->geometry.capacity);
    if (written % batch == 0) control().batch_ready.notify_all();  // no system call unless one sleeps
    half_ring_end = (written / batch + 1) * batch;
  }
};

TopicPublisher::TopicPublisher(std::unique_ptr<State> state) noexcept : state_(std::move(state)) {}
TopicPublisher::TopicPublisher(TopicPublisher&&) noexcept = default;
TopicPublisher& TopicPublisher::operator=(TopicPublisher&& other) noexcept {
  if (this != &other) {
    TopicPublisher previous(std::move(*this));  // leaves its entry at the end of this scope
    state_ = std::move(other.state_);
  }
  return *this;
}
TopicPublisher::~TopicPublisher() {
  if (!state_) return;
  std::uint64_t me = state_->me;
  state_->control().publishers[state_->entry_index].owner.compare_exchange_strong(me, 0, std::memory_order_seq_cst);
}

result<TopicPublisher> Topic::publisher() {
  if (shared_->read_only) return read_only_error(*shared_);
  const std::uint64_t me = ProcessId::current().packed();
  // A free entry, or else one of a dead publisher.
  for (const bool reuse_dead : {false, true}) {
    for (std::size_t i = 0; i < detail::kTopicPublishers; ++i) {
      auto& entry = shared_->control->publishers[i];
      std::uint64_t owner = entry.owner.load(std::memory_order_seq_cst);
      if (reuse_dead ? detail::packed_alive_or_zero(owner) != 0 || owner == 0 : owner != 0) continue;
      if (!entry.owner.compare_exchange_strong(owner, me, std::memory_order_seq_cst)) continue;
      entry.published.store(0, std::memory_order_relaxed);
      (void)shared_->segment.prefault();  // no page faults on the data path (best effort)
      auto state = std::make_unique<TopicPublisher::State>();
      state->shared = shared_;
      state->entry_index = i;
      state->me = me;
      return TopicPublisher(std::move(state));
    }
  }
  return error(errc::limit_reached, shared_->description,
               "all " + std::to_string(kMaxPublishers) + " publisher entries are held by live publishers");
}

std::size_t TopicPublisher::max_message() const noexcept { return state_->shared->geometry.max_message; }

// Publishes one slot: `content` is the message, or (form chunk) the
// reference to its chunk, which is marked sent in the same locked turn.
result<bool> TopicPublisher::State::publish_slot(std::span<const std::byte> content, const detail::ChunkRef* chunk,
                                                 std::optional<deadline> until, WaitStrategy strategy, bool wait) {
  const TopicShared& topic = *shared;
  TopicControl& control = this->control();
  bool looked_for_dead = false;
  for (;;) {
    if (auto locked = detail::lock_topic(topic, until, strategy); !locked) return std::move(locked).error();
    const std::uint64_t sequence = control.written.load(std::memory_order_relaxed);
    // The slot holds an older message, or `sequence` (half-)written by a
    // publisher that died before advancing `written`: anything newer means
    // `written` went back.
    if (stamp_of(topic.slot(sequence)).load(std::memory_order_relaxed) > stamp_written(sequence)) {
      detail::unlock_topic(topic);
      return detail::corrupt(topic, "the write cursor (" + std::to_string(sequence) + ") is behind the ring");
    }
    if (topic.blocks()) {
      auto room = has_room(sequence);
      if (!room || !*room) detail::unlock_topic(topic);
      if (!room) return std::move(room).error();
      if (!*room) {
        detail::call_coalescing_subscribers(control);  // they may hold the ring
        if (!wait) {
          // try_publish: a dead subscriber must not keep the ring full for
          // good, but /proc is asked at most once per interval.
          if (looked_for_dead || steady_clock::now() - last_liveness_check < detail::kLivenessInterval) {
            return false;
          }
          free_dead_blockers();
          looked_for_dead = true;
          continue;
        }
        auto waited = detail::wait_in_slices(
            topic, control.space_ready, [&] { return room_likely(); }, [&] { free_dead_blockers(); }, strategy,
            until);
        if (!waited) return std::move(waited).error();
        continue;
      }
    }
    write_slot(sequence, content, chunk ? detail::kSlotChunk : detail::kSlotInline);
    // Marked before `written` moves: a publisher dying between leaves it to
    // be freed once subscribers pass `sequence`, which the next one rewrites.
    if (chunk) chunks->mark_sent(*chunk, sequence * detail::kTopicChunkStep);
    // seq_cst: WaitPoint's contract for the write that makes "data ready" true.
    control.written.store(sequence + 1, std::memory_order_seq_cst);
    control.publishers[entry_index].published.store(++published, std::memory_order_relaxed);
    detail::unlock_topic(topic);
    control.data_ready.notify_all();  // no system call unless a subscriber sleeps
    if (sequence + 1 >= half_ring_end) end_half_ring(sequence + 1);
    return true;
  }
}

result<bool> TopicPublisher::publish_impl(std::span<const std::byte> message, std::optional<deadline> until,
                                          WaitStrategy strategy, bool wait) {
  State& s = *state_;
  const TopicShared& shared = *s.shared;
  const bool loans = shared.chunk_home().supported();
  if (message.size() > shared.geometry.max_message && !loans) {
    return error(errc::invalid_argument, shared.description,
                 "a message of " + std::to_string(message.size()) + " bytes is larger than its maximum of " +
                     std::to_string(shared.geometry.max_message));
  }
  if (message.size() > shared.geometry.max_message || (loans && message.size() >= shared.geometry.loan_threshold)) {
    // One copy into a chunk, shared by every subscriber.
    auto loan = loan_impl(message.size(), until, strategy, wait);
    if (!loan) return std::move(loan).error();
    if (!*loan) return false;
    if (!message.empty()) std::memcpy((*loan)->data().data(), message.data(), message.size());
    return publish_loan(**loan, until, strategy, wait);
  }
  return s.publish_slot(message, nullptr, until, strategy, wait);
}

result<void> TopicPublisher::publish(std::span<const std::byte> message, WaitStrategy strategy) {
  if (auto published = publish_impl(message, std::nullopt, strategy, true); !published) {
    return std::move(published).error();
  }
  return {};
}

result<bool> TopicPublisher::try_publish(std::span<const std::byte> message) {
  return publish_impl(message, std::nullopt, {}, false);
}

result<void> TopicPublisher::publish_until(std::span<const std::byte> message, deadline until,
                                           WaitStrategy strategy) {
  if (auto published = publish_impl(message, until, strategy, true); !published) {
    return std::move(published).error();
  }
  return {};
}

// ------------------------------------------------------------------ loans

result<std::optional<Loan>> TopicPublisher::loan_impl(std::size_t size, std::optional<deadline> until,
                                                      WaitStrategy strategy, bool wait) {
  State& s = *state_;
  const TopicShared& shared = *s.shared;
  for (;;) {
    if (auto locked = detail::lock_topic(shared, until, strategy); !locked) return std::move(locked).error();
    auto taken = s.take_chunk(size);
    const std::uint64_t seen = s.held_from(s.control().written.load(std::memory_order_relaxed), false);
    detail::unlock_topic(shared);
    if (!taken) return std::move(taken).error();
    if (*taken) return std::optional<Loan>(Loan(s.chunks, **taken));
    detail::call_coalescing_subscribers(s.control());  // they may hold the chunks
    if (!wait) return std::optional<Loan>{};
    // Subscribers hold the chunks the limit allows (block): wait for one to
    // move on, and look again at least every interval whatever happened.
    const deadline slice = std::min(until.value_or(deadline::max()), deadline_after(detail::kLivenessInterval));
    auto waited = detail::wait_in_slices(
        shared, s.control().space_ready, [&] { return s.subscribers_moved(seen); },
        [&] { s.free_dead_subscribers(); }, strategy, slice);
    if (!waited && (waited.error().code() != errc::timed_out || (until && steady_clock::now() >= *until))) {
      return std::move(waited).error();
    }
    s.free_dead_subscribers();
  }
}

result<Loan> TopicPublisher::loan(std::size_t size, WaitStrategy strategy) {
  auto loaned = loan_impl(size, std::nullopt, strategy, true);
  if (!loaned) return std::move(loaned).error();
  return std::move(**loaned);
}

result<std::optional<Loan>> TopicPublisher::try_loan(std::size_t size) {
  return loan_impl(size, std::nullopt, {}, false);
}

result<Loan> TopicPublisher::loan_until(std::size_t size, deadline until, WaitStrategy strategy) {
  auto loaned = loan_impl(size, until, strategy, true);
  if (!loaned) return std::move(loaned).error();
  return std::move(**loaned);
}

result<bool> TopicPublisher::publish_loan(Loan& loan, std::optional<deadline> until, WaitStrategy strategy,
                                          bool wait) {
  State& s = *state_;
  if (!loan.pool_ || loan.pool_ != s.chunks) {
    return error(errc::invalid_argument, s.shared->description, "a loan this publisher did not make (or already sent)");
  }
  auto published = s.publish_slot(std::as_bytes(std::span(&loan.ref_, 1)), &loan.ref_, until, strategy, wait);
  if (published && *published) loan.pool_.reset();  // the subscribers' now
  return published;
}

result<void> TopicPublisher::publish(Loan&& loan, WaitStrategy strategy) {
  if (auto published = publish_loan(loan, std::nullopt, strategy, true); !published) {
    return std::move(published).error();
  }
  return {};
}

result<bool> TopicPublisher::try_publish(Loan&& loan) { return publish_loan(loan, std::nullopt, {}, false); }

result<void> TopicPublisher::publish_until(Loan&& loan, deadline until, WaitStrategy strategy) {
  if (auto published = publish_loan(loan, until, strategy, true); !published) return std::move(published).error();
  return {};
}

result<LoanUsage> TopicPublisher::loan_usage() {
  State& s = *state_;
  if (auto locked = detail::lock_topic(*s.shared, std::nullopt, {}); !locked) return std::move(locked).error();
  auto ready = s.ready_pool();
  if (ready) s.sweep_dead(false);
  const std::uint64_t written = s.control().written.load(std::memory_order_relaxed);
  const LoanUsage usage = ready ? s.chunks->usage(s.held_from(written, true) * detail::kTopicChunkStep) : LoanUsage{};
  detail::unlock_topic(*s.shared);
  if (!ready) return std::move(ready).error();
  return usage;
}

// -------------------------------------------------------------- subscriber

struct TopicSubscriber::State {
  std::shared_ptr<TopicShared> shared;
  std::size_t entry_index = 0;
  std::uint64_t me = 0;
  std::optional<std::chrono::microseconds> coalesce;  // SubscribeOptions::coalesce
  // This process's own copies: the entry's are for publishers and stats,
  // and are never read back.
  std::uint64_t cursor = 0;
  std::uint64_t lost = 0;
  std::uint64_t unreported_lost = 0;  // since the last delivery
  std::uint64_t received = 0;
  // Messages before it were history when this subscriber came: their chunks
  // may have been given up (lost, not corrupt, even under block).
  std::uint64_t history_end = 0;
  std::optional<detail::ChunkReader> chunks;  // made at the first chunk
  std::vector<std::byte> scratch;             // peek's copy of a ring slot under drop_oldest
  bool peeked = false;
  std::optional<detail::ChunkRef> peeked_chunk;

  TopicControl& control() const noexcept { return *shared->control; }
  detail::TopicSubscriberEntry& my_entry() const noexcept { return control().subscribers[entry_index]; }

  bool may_lose(std::uint64_t sequence) const noexcept { return !shared->blocks() || sequence < history_end; }

  void store_cursor() noexcept {
    auto& entry = my_entry();
    if (shared->blocks()) {
      // seq_cst: WaitPoint's contract for a publisher waiting for room.
      entry.cursor.store(cursor, std::memory_order_seq_cst);
      control().space_ready.notify_all();  // no system call unless a publisher sleeps
    } else {
      entry.cursor.store(cursor, std::memory_order_release);
    }
  }
  // The message at the cursor was read.
  void advance() noexcept {
    ++cursor;
    ++received;
    unreported_lost = 0;
    my_entry().received.store(received, std::memory_order_relaxed);
    store_cursor();
  }
  // The messages up to `next` are gone before this subscriber read them.
  void lose_until(std::uint64_t next) noexcept {
    lost += next - cursor;
    unreported_lost += next - cursor;
    cursor = next;
    my_entry().lost.store(lost, std::memory_order_relaxed);
    store_cursor();
  }

  struct Found {
    std::span<const std::byte> bytes;  // in the ring, the chunk, `scratch` or the caller's buffer
    std::optional<detail::ChunkRef> chunk;
  };
  // The message at the cursor, copied into `buffer`; or, to `peek`, seen
  // where it is (a slot under drop_oldest, which a publisher may overwrite,
  // is copied into `scratch`). Waits, skips what was lost, checks every field.
  result<std::optional<Found>> next(std::span<std::byte> buffer, bool peek, std::optional<deadline> until,
                                    WaitStrategy strategy, bool wait);

  // A coalescing subscriber's wait: asleep (never spinning) until half a
  // ring of messages waits, a publisher notifies batch_ready (it published
  // the last of a half ring, or it needs room), or the interval passed; then
  // whatever came is taken. Errors: timed_out once `until` passed.
  result<void> wait_coalesced(std::optional<deadline> until) {
    TopicControl& control = this->control();
    WaitPoint& point = control.batch_ready;
    const std::uint64_t batch = detail::coalesced_batch(shared->geometry.capacity);
    const std::uint32_t notified = point.sequence();
    const std::uint64_t wanted = control.room_wanted.load(std::memory_order_seq_cst);
    const deadline interval_end = deadline_after(*coalesce);
    const deadline wake_by = until ? std::min(*until, interval_end) : interval_end;
    auto waited = detail::wait_in_slices(
        *shared, point,
        [&] {
          // seq_cst loads: WaitPoint's contract. A `written` behind the
          // cursor (scribbled) wraps to a large lag: next() then reports it.
          return point.sequence() != notified || control.room_wanted.load(std::memory_order_seq_cst) != wanted ||
                 control.written.load(std::memory_order_seq_cst) - cursor >= batch;
        },
        [] {}, WaitStrategy::block(), wake_by);
    if (waited) return {};
    if (waited.error().code() != errc::timed_out) return std::move(waited).error();
    // The interval passed (take what came), or the caller's deadline did.
    if (until && steady_clock::now() >= *until && control.written.load(std::memory_order_seq_cst) == cursor) {
      return std::move(waited).error();
    }
    return {};
  }
};

TopicSubscriber::TopicSubscriber(std::unique_ptr<State> state) noexcept : state_(std::move(state)) {}
TopicSubscriber::TopicSubscriber(TopicSubscriber&&) noexcept = default;
TopicSubscriber& TopicSubscriber::operator=(TopicSubscriber&& other) noexcept {
  if (this != &other) {
    TopicSubscriber previous(std::move(*this));  // leaves its entry at the end of this scope
    state_ = std::move(other.state_);
  }
  return *this;
}
TopicSubscriber::~TopicSubscriber() {
  if (!state_) return;
  std::uint64_t me = state_->me;
  state_->my_entry().owner.compare_exchange_strong(me, 0, std::memory_order_seq_cst);
  state_->control().space_ready.notify_all();  // a publisher it held back goes on
}

result<TopicSubscriber> Topic::subscribe(SubscribeOptions options) {
  const TopicShared& shared = *shared_;
  TopicControl& control = *shared.control;
  if (shared.read_only) return read_only_error(shared);
  if (options.history > shared.geometry.history) {
    return error(errc::invalid_argument, shared.description,
                 "asks for the last " + std::to_string(options.history) + " messages; the topic keeps " +
                     std::to_string(shared.geometry.history));
  }
  if (options.coalesce &&
      (*options.coalesce < std::chrono::microseconds(1) || *options.coalesce > std::chrono::seconds(10))) {
    return error(errc::invalid_argument, shared.description,
                 "coalesced wake-ups every " + std::to_string(options.coalesce->count()) +
                     " us; from 1 us to 10 s");
  }
  // Under the publish lock: no message is half-written, so the history is
  // whole, and the entry appears to publishers with its cursor set.
  if (auto locked = detail::lock_topic(shared, std::nullopt, {}); !locked) return std::move(locked).error();
  const std::uint64_t written = control.written.load(std::memory_order_relaxed);
  std::uint64_t start = written - std::min<std::uint64_t>(options.history, written);
  // A publisher that died writing destroyed the oldest message of a full
  // ring (drop_oldest): start after what is no longer there.
  while (start < written && stamp_of(shared.slot(start)).load(std::memory_order_acquire) != stamp_written(start)) {
    ++start;
  }
  const std::uint64_t me = ProcessId::current().packed();
  for (const bool reuse_dead : {false, true}) {
    for (std::size_t i = 0; i < detail::kTopicSubscribers; ++i) {
      auto& entry = control.subscribers[i];
      std::uint64_t owner = entry.owner.load(std::memory_order_seq_cst);
      if (reuse_dead ? detail::packed_alive_or_zero(owner) != 0 || owner == 0 : owner != 0) continue;
      entry.cursor.store(start, std::memory_order_seq_cst);
      entry.lost.store(0, std::memory_order_relaxed);
      entry.received.store(0, std::memory_order_relaxed);
      // Fails only if a publisher freed this dead entry meanwhile: try the next.
      if (!entry.owner.compare_exchange_strong(owner, me, std::memory_order_seq_cst)) continue;
      control.subscribers_changed.fetch_add(1, std::memory_order_relaxed);
      detail::unlock_topic(shared);
      (void)shared_->segment.prefault();  // no page faults on the data path (best effort)
      auto state = std::make_unique<TopicSubscriber::State>();
      state->shared = shared_;
      state->entry_index = i;
      state->me = me;
      state->cursor = start;
      state->history_end = written;
      state->coalesce = options.coalesce;
      return TopicSubscriber(std::move(state));
    }
  }
  detail::unlock_topic(shared);
  return error(errc::limit_reached, shared.description,
               "all " + std::to_string(kMaxSubscribers) + " subscriber entries are held by live subscribers");
}

std::uint64_t TopicSubscriber::lost() const noexcept { return state_->lost; }
std::uint64_t TopicSubscriber::position() const noexcept { return state_->cursor; }
std::size_t TopicSubscriber::max_message() const noexcept { return state_->shared->geometry.max_message; }

namespace {

enum class SlotRead : std::uint8_t { whole, chunk, too_small, lapped, unwritten, bad_length, bad_form };

struct SlotCopy {
  SlotRead outcome;
  std::uint32_t length = 0;
  std::uint32_t form = 0;
  detail::ChunkRef ref{};
};

// Reads message `sequence` seqlock-style: what was read counts only if the
// slot's stamp says `sequence` whole before and after. An inline payload is
// copied into `into` unless `in_place`; a chunk reference is always copied.
SlotCopy read_slot(const TopicShared& shared, std::uint64_t sequence, std::span<std::byte> into,
                   bool in_place) noexcept {
  std::byte* slot = shared.slot(sequence);
  auto stamp = stamp_of(slot);
  const std::uint64_t before = stamp.load(std::memory_order_acquire);
  if (before != stamp_written(sequence)) {
    return {before > stamp_written(sequence) ? SlotRead::lapped : SlotRead::unwritten};
  }
  const std::uint32_t length = detail::length_of(slot).load(std::memory_order_relaxed);
  const std::uint32_t form = detail::form_of(slot).load(std::memory_order_relaxed);
  detail::ChunkRef ref{};
  if (form == detail::kSlotChunk && length == sizeof ref) {
    detail::load_words(reinterpret_cast<std::byte*>(&ref), detail::payload_of(slot), sizeof ref);
  } else if (form == detail::kSlotInline && !in_place && length <= shared.geometry.max_message &&
             length <= into.size() && length != 0) {
    if (shared.blocks()) {
      std::memcpy(into.data(), detail::payload_of(slot), length);
    } else {
      detail::load_words(into.data(), detail::payload_of(slot), length);
    }
  }
  std::atomic_thread_fence(std::memory_order_acquire);  // the bytes before the second look at the stamp
  if (stamp.load(std::memory_order_relaxed) != before) return {SlotRead::lapped};
  if (form == detail::kSlotChunk) {
    return {length == sizeof ref ? SlotRead::chunk : SlotRead::bad_length, length, form, ref};
  }
  if (form != detail::kSlotInline) return {SlotRead::bad_form, length, form};
  if (length > shared.geometry.max_message) return {SlotRead::bad_length, length};
  if (!in_place && length > into.size()) return {SlotRead::too_small, length};
  return {SlotRead::whole, length};
}

}  // namespace

result<std::optional<TopicSubscriber::State::Found>> TopicSubscriber::State::next(std::span<std::byte> buffer,
                                                                                   bool peek,
                                                                                   std::optional<deadline> until,
                                                                                   WaitStrategy strategy, bool wait) {
  const TopicShared& topic = *shared;
  TopicControl& control = this->control();
  const std::uint64_t capacity = topic.geometry.capacity;
  const bool in_place = peek && topic.blocks();
  if (peek && !in_place) {
    scratch.resize(topic.geometry.max_message);
    buffer = scratch;
  }
  for (;;) {
    // seq_cst: WaitPoint's contract (this is the condition a sleeper re-checks).
    const std::uint64_t written = control.written.load(std::memory_order_seq_cst);
    if (written < cursor) {
      return detail::corrupt(topic, "the write cursor went back from beyond " + std::to_string(cursor) + " to " +
                                         std::to_string(written));
    }
    if (written == cursor) {
      if (!wait) return std::optional<Found>{};
      if (coalesce) {
        if (auto waited = wait_coalesced(until); !waited) return std::move(waited).error();
        continue;
      }
      auto waited = detail::wait_in_slices(
          topic, control.data_ready, [&] { return control.written.load(std::memory_order_seq_cst) != cursor; },
          [] {}, strategy, until);
      if (!waited) return std::move(waited).error();
      continue;
    }
    const SlotCopy copy = read_slot(topic, cursor, buffer, in_place);
    const std::string message = "message " + std::to_string(cursor);
    switch (copy.outcome) {
      case SlotRead::whole: {
        std::span<const std::byte> bytes = in_place ? std::span<const std::byte>(detail::payload_of(topic.slot(cursor)), copy.length)
                                                    : std::span<const std::byte>(buffer.first(copy.length));
        return std::optional<Found>(Found{bytes, std::nullopt});
      }
      case SlotRead::chunk: {
        if (!chunks) chunks.emplace(topic.chunk_home(), control.slabs);
        auto payload = chunks->resolve(copy.ref);
        if (!payload) {
          if (chunks->reused(copy.ref) && may_lose(cursor)) {
            lose_until(cursor + 1);  // its chunk went to a newer message
            continue;
          }
          return std::move(payload).error();
        }
        if (peek) return std::optional<Found>(Found{*payload, copy.ref});
        if (payload->size() > buffer.size()) {
          return error(errc::invalid_argument, topic.description,
                       "a message of " + std::to_string(payload->size()) + " bytes does not fit a buffer of " +
                           std::to_string(buffer.size()) + " bytes (it stays in the topic)");
        }
        if (!payload->empty()) std::memcpy(buffer.data(), payload->data(), payload->size());
        if (!chunks->still_valid(copy.ref)) {
          if (!may_lose(cursor)) return detail::corrupt(topic, message + ": its chunk changed while it was read");
          lose_until(cursor + 1);
          continue;
        }
        return std::optional<Found>(Found{buffer.first(payload->size()), copy.ref});
      }
      case SlotRead::too_small:
        return error(errc::invalid_argument, topic.description,
                     "a message of " + std::to_string(copy.length) + " bytes does not fit a buffer of " +
                         std::to_string(buffer.size()) + " bytes (it stays in the topic)");
      case SlotRead::lapped: {
        if (topic.blocks()) return detail::corrupt(topic, message + " was overwritten before this subscriber read it");
        // Every message below written - capacity has been overwritten (the
        // one at it may be being overwritten: then the next look says so).
        // Only those are skipped, so `lost` is exact.
        const std::uint64_t now_written = control.written.load(std::memory_order_seq_cst);
        if (now_written <= cursor) {
          return detail::corrupt(topic, message + " was overwritten, but only " + std::to_string(now_written) +
                                             " were published");
        }
        const std::uint64_t oldest = now_written > capacity ? now_written - capacity : 0;
        lose_until(std::max(cursor + 1, oldest));
        continue;
      }
      case SlotRead::unwritten:
        return detail::corrupt(topic, message + " is not in its slot, though the write cursor is past it");
      case SlotRead::bad_length:
        return detail::corrupt(topic, message + " claims " + std::to_string(copy.length) +
                                           " bytes, more than its maximum of " +
                                           std::to_string(topic.geometry.max_message));
      case SlotRead::bad_form:
        return detail::corrupt(topic, message + " has a form this ferry does not know (" + std::to_string(copy.form) +
                                           ")");
    }
  }
}

result<std::optional<TopicDelivery>> TopicSubscriber::receive_impl(std::span<std::byte> buffer,
                                                                    std::optional<deadline> until,
                                                                    WaitStrategy strategy, bool wait) {
  State& s = *state_;
  s.peeked = false;  // a receive after a peek takes the peeked message
  auto found = s.next(buffer, false, until, strategy, wait);
  if (!found) return std::move(found).error();
  if (!*found) return std::optional<TopicDelivery>{};
  const TopicDelivery delivery{(*found)->bytes.size(), s.cursor, s.unreported_lost};
  s.advance();
  return std::optional<TopicDelivery>(delivery);
}

result<std::optional<TopicView>> TopicSubscriber::peek_impl(std::optional<deadline> until, WaitStrategy strategy,
                                                           bool wait) {
  State& s = *state_;
  auto found = s.next({}, true, until, strategy, wait);
  if (!found) return std::move(found).error();
  if (!*found) return std::optional<TopicView>{};
  s.peeked = true;
  s.peeked_chunk = (*found)->chunk;
  return std::optional<TopicView>(TopicView{(*found)->bytes, s.cursor, s.unreported_lost});
}

result<TopicView> TopicSubscriber::peek(WaitStrategy strategy) {
  auto peeked = peek_impl(std::nullopt, strategy, true);
  if (!peeked) return std::move(peeked).error();
  return **peeked;
}

result<std::optional<TopicView>> TopicSubscriber::try_peek() { return peek_impl(std::nullopt, {}, false); }

result<TopicView> TopicSubscriber::peek_until(deadline until, WaitStrategy strategy) {
  auto peeked = peek_impl(until, strategy, true);
  if (!peeked) return std::move(peeked).error();
  return **peeked;
}

result<bool> TopicSubscriber::release() {
  State& s = *state_;
  if (!s.peeked) return error(errc::invalid_argument, s.shared->description, "release() without a peeked message");
  s.peeked = false;
  s.unreported_lost = 0;  // the peek reported them
  if (s.peeked_chunk && !s.chunks->still_valid(*s.peeked_chunk)) {
    if (!s.may_lose(s.cursor)) {
      return detail::corrupt(*s.shared, "message " + std::to_string(s.cursor) + ": its chunk changed while it was read");
    }
    s.lose_until(s.cursor + 1);
    return false;
  }
  s.advance();
  return true;
}

result<TopicDelivery> TopicSubscriber::receive(std::span<std::byte> buffer, WaitStrategy strategy) {
  auto received = receive_impl(buffer, std::nullopt, strategy, true);
  if (!received) return std::move(received).error();
  return **received;
}

result<std::optional<TopicDelivery>> TopicSubscriber::try_receive(std::span<std::byte> buffer) {
  return receive_impl(buffer, std::nullopt, {}, false);
}

result<TopicDelivery> TopicSubscriber::receive_until(std::span<std::byte> buffer, deadline until,
                                                     WaitStrategy strategy) {
  auto received = receive_impl(buffer, until, strategy, true);
  if (!received) return std::move(received).error();
  return **received;
}

// ------------------------------------------------------------- inspection

void describe_topic_object(ObjectRecord& record, std::span<const std::byte> data) {
  if (!record.info || record.info->object_type != ObjectType::topic) return;
  const auto description = std::make_shared<const std::string>("topic '" + record.locator + "'");
  const auto geometry = detail::read_geometry(data, description);
  if (!geometry) {
    record.problem = geometry.error().message();
    return;
  }
  const TopicStats stats =
      detail::read_stats(*reinterpret_cast<const TopicControl*>(data.data()), *geometry, record.locator);
  std::string publisher_pids;
  for (const auto& publisher : stats.publishers) {
    publisher_pids += (publisher_pids.empty() ? "" : ",") + std::to_string(publisher.pid);
  }
  std::uint64_t max_lag = 0, lost = 0;
  for (const auto& subscriber : stats.subscribers) {
    max_lag = std::max(max_lag, subscriber.lag);
    lost += subscriber.lost;
  }
  record.details.emplace_back("policy", std::string(to_string(stats.policy)));
  record.details.emplace_back("capacity", std::to_string(stats.capacity));
  record.details.emplace_back("max_message", std::to_string(stats.max_message));
  record.details.emplace_back("history", std::to_string(stats.history));
  record.details.emplace_back("published", std::to_string(stats.published));
  record.details.emplace_back("publishers", std::to_string(stats.publishers.size()));
  if (!publisher_pids.empty()) record.details.emplace_back("publisher_pids", publisher_pids);
  record.details.emplace_back("subscribers", std::to_string(stats.subscribers.size()));
  record.details.emplace_back("max_lag", std::to_string(max_lag));
  record.details.emplace_back("lost", std::to_string(lost));
  describe_loans(record, reinterpret_cast<const TopicControl*>(data.data())->slabs, geometry->loan_limit);
  // One key per subscriber (a process may hold several): its pid, lag and losses.
  for (std::size_t i = 0; i < stats.subscribers.size(); ++i) {
    const auto& subscriber = stats.subscribers[i];
    record.details.emplace_back("subscriber." + std::to_string(i),
                                "pid " + std::to_string(subscriber.pid) + ", lag " + std::to_string(subscriber.lag) +
                                    ", lost " + std::to_string(subscriber.lost) + (subscriber.alive ? "" : ", dead"));
  }
}

}  // namespace ferry
