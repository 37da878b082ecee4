#include "ferry/messaging/channel.hpp"

#include <unistd.h>
#if defined(__x86_64__)
#include <cpuid.h>
#endif

#include <bit>
#include <cerrno>
#include <cstring>
#include <new>

#include "ferry/messaging/detail/channel_layout.hpp"
#include "ferry/messaging/detail/notify_watcher.hpp"
#include "ferry/os/process.hpp"

namespace ferry {
namespace detail {

struct ChannelShared {
  Segment segment;
  ChannelControl* control;
  std::byte* ring;
  // Copied from the segment once and validated: every later bounds check
  // uses these, never the shared copies.
  std::uint64_t capacity;
  std::uint64_t mask;
  std::uint32_t max_message;
  std::uint64_t loan_limit;
  std::uint64_t loan_threshold;
  std::shared_ptr<const std::string> description;
  bool loans_supported = false;  // chunk_home().supported(), asked once
  // The smallest message send() does not copy into the ring: max_message + 1,
  // or the loan threshold when loans are supported and it is lower.
  std::uint64_t direct_limit = 0;

  [[nodiscard]] ChunkHome chunk_home() const {
    const SegmentInfo info = segment.info();
    return {segment.name(), info.kind, info.persistence, info.mode, description};
  }
};

namespace {

// Whether the CPU has PREFETCHW (CPUID 0x80000001, ECX bit 8), asked once.
bool cpu_prefetches_for_write() noexcept {
#if defined(__x86_64__)
  static const bool has = [] {
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    return __get_cpuid(0x80000001, &eax, &ebx, &ecx, &edx) != 0 && (ecx & (1u << 8)) != 0;
  }();
  return has;
#else
  return true;  // __builtin_prefetch(address, 1) is what the target has
#endif
}

// How often a waiting side looks whether its peer still lives.
constexpr auto kPeerCheckInterval = std::chrono::milliseconds(100);
// Long enough for the copy of a large message (16 MiB at 8 GB/s).
constexpr auto kLargeCopySpin = std::chrono::milliseconds(2);

bool role_gone(std::uint64_t role) noexcept {
  if (role == kRoleLeft) return true;
  if (role == kRoleNone) return false;
  return !ProcessId::from_packed(role).alive();
}

result<void> claim_role(std::atomic<std::uint64_t>& role, std::string_view what,
                        const std::shared_ptr<const std::string>& description) {
  const std::uint64_t me = ProcessId::current().packed();
  for (;;) {
    std::uint64_t seen = role.load(std::memory_order_seq_cst);
    if (seen > kRoleLeft && ProcessId::from_packed(seen).alive()) {
      return error(errc::busy, description,
                   "it already has a " + std::string(what) + ": process " +
                       std::to_string(ProcessId::from_packed(seen).pid()));
    }
    if (role.compare_exchange_strong(seen, me, std::memory_order_seq_cst)) return {};
  }
}

void leave_role(std::atomic<std::uint64_t>& role) noexcept {
  std::uint64_t me = ProcessId::current().packed();
  role.compare_exchange_strong(me, kRoleLeft, std::memory_order_seq_cst);
}

enum class WaitOutcome : std::uint8_t { ready, timed_out, peer_gone, corrupt };

// Waits on `point` until `ready()`, in slices so that a dead peer (who will
// never notify) is noticed. A peer that left says so in its role word (a
// cheap load, checked every time); whether it died needs /proc, so that is
// asked only when a slice passed without news, as is `corrupt()`.
// `peer_copying()` says the peer is copying a large record: an adaptive wait
// spins through that copy (up to kLargeCopySpin) before it may sleep.
template <class Ready, class Corrupt, class Copying>
WaitOutcome wait_for_peer(WaitPoint& point, Ready&& ready, Corrupt&& corrupt, Copying&& peer_copying,
                          const std::atomic<std::uint64_t>& peer, WaitStrategy strategy,
                          std::optional<deadline> until) {
  // A message or room about to arrive is caught before the clock is read.
  if (strategy.mode != WaitStrategy::Mode::block) {
    for (int poll = 0; poll < 64; ++poll) {
      if (ready()) return WaitOutcome::ready;
      cpu_relax();
    }
  }
  if (strategy.mode == WaitStrategy::Mode::adaptive && peer_copying() &&
      spin_until([&] { return ready() || !peer_copying(); }, kLargeCopySpin, until.value_or(deadline::max())) &&
      ready()) {
    return WaitOutcome::ready;
  }
  for (bool slice_passed = false;; slice_passed = true) {
    if (ready()) return WaitOutcome::ready;
    if (slice_passed && corrupt()) return WaitOutcome::corrupt;
    const std::uint64_t role = peer.load(std::memory_order_seq_cst);
    if (role == kRoleLeft || (slice_passed && role_gone(role))) {
      return ready() ? WaitOutcome::ready : WaitOutcome::peer_gone;
    }
    const auto now = steady_clock::now();
    if (until && now >= *until) return WaitOutcome::timed_out;
    deadline slice = now + kPeerCheckInterval;
    if (until && *until < slice) slice = *until;
    if (point.wait(ready, strategy, slice) == wait_status::ready) return WaitOutcome::ready;
    // Spinning once is enough; later slices sleep (busy_poll keeps polling).
    if (strategy.mode == WaitStrategy::Mode::adaptive) strategy = WaitStrategy::block();
  }
}

error corrupt(const ChannelShared& shared, std::string detail) {
  return error(errc::corrupt, shared.description, std::move(detail));
}

// A header at ring `offset` that cannot be a record's (`kind`: "record",
// "wrap record", "chunk record"). Out of line: the receiver's fast path is inlined.
[[gnu::cold, gnu::noinline]] error bad_record(const ChannelShared& shared, const char* kind, std::uint64_t offset,
                                              std::optional<std::uint32_t> length = std::nullopt) {
  std::string detail = std::string("bad ") + kind + " at offset " + std::to_string(offset);
  if (length) detail += ": " + std::to_string(*length) + " bytes";
  return corrupt(shared, std::move(detail));
}

error too_large(const ChannelShared& shared, std::size_t size) {
  return error(errc::invalid_argument, shared.description,
               "a message of " + std::to_string(size) + " bytes is larger than its maximum of " +
                   std::to_string(shared.max_message));
}

result<std::shared_ptr<ChannelShared>> adopt(Segment segment) {
  auto description = std::make_shared<const std::string>("channel '" + segment.name() + "'");
  const auto data = segment.data();
  if (data.size() < kChannelRingOffset) {
    return error(errc::corrupt, description, "too small for a channel header");
  }
  auto* control = reinterpret_cast<ChannelControl*>(data.data());
  // Read each constant once, then check it against ferry's own limits.
  const std::uint64_t magic = control->magic;
  const std::uint32_t version = control->layout_version;
  const std::uint64_t capacity = control->capacity;
  const std::uint64_t ring_offset = control->ring_offset;
  const std::uint32_t max_message = control->max_message;
  const std::uint64_t loan_limit = control->loan_limit;
  if (magic != kChannelMagic) return error(errc::corrupt, description, "not a channel (bad magic)");
  if (version != kChannelLayoutVersion) {
    return error(errc::version_mismatch, description,
                 "channel layout version " + std::to_string(version) + ", this ferry reads " +
                     std::to_string(kChannelLayoutVersion));
  }
  if (capacity < kMinChannelCapacity || capacity > kMaxChannelCapacity || !std::has_single_bit(capacity) ||
      ring_offset != kChannelRingOffset || data.size() - kChannelRingOffset < capacity ||
      record_size(max_message) * 2 > capacity || max_message > kMaxInlineMessage) {
    return error(errc::corrupt, description, "ring geometry out of bounds");
  }
  if (loan_limit < (std::uint64_t{1} << kMinChunkShift) || loan_limit > (std::uint64_t{1} << kMaxChunkShift)) {
    return error(errc::corrupt, description, "loan limit out of bounds");
  }
  std::byte* ring = data.data() + kChannelRingOffset;
  auto shared = std::make_shared<ChannelShared>(ChannelShared{std::move(segment), control, ring, capacity, capacity - 1,
                                                       max_message, loan_limit, control->loan_threshold,
                                                       std::move(description), false});
  shared->loans_supported = shared->chunk_home().supported();
  shared->direct_limit = std::uint64_t{max_message} + 1;
  if (shared->loans_supported) shared->direct_limit = std::min(shared->direct_limit, shared->loan_threshold);
  return shared;
}

}  // namespace
}  // namespace detail

using detail::ChannelControl;
using detail::ChannelShared;
using detail::record_size;
using detail::header_at;
using detail::record_header;
using detail::record_tag;
using detail::WaitOutcome;

// ----------------------------------------------------------------- Channel

result<Channel> Channel::create(std::string_view name, const ChannelOptions& options) {
  const std::string description = "channel '" + std::string(name) + "'";
  if (options.max_message > detail::kMaxInlineMessage) {
    return error(errc::invalid_argument, description, "max_message is beyond 1 GiB (larger messages travel as loans)");
  }
  if (options.loans.limit < (std::size_t{1} << detail::kMinChunkShift) ||
      options.loans.limit > (std::size_t{1} << detail::kMaxChunkShift)) {
    return error(errc::invalid_argument, description, "loans.limit must be 4 KiB .. 1 TiB");
  }
  std::uint64_t capacity = std::max<std::uint64_t>(
      {options.capacity, 2 * record_size(options.max_message), detail::kMinChannelCapacity});
  if (capacity > detail::kMaxChannelCapacity) {
    return error(errc::invalid_argument, description, "capacity is beyond 1 TiB");
  }
  capacity = std::bit_ceil(capacity);
  const auto max_message = static_cast<std::uint32_t>(options.max_message);

  SegmentOptions segment_options{.kind = options.kind,
                                 .size = detail::kChannelRingOffset + capacity,
                                 .persistence = options.persistence,
                                 .mode = options.mode,
                                 .sysv_project_id = options.sysv_project_id,
                                 .object_type = ObjectType::channel};
  segment_options.initialize = [&](std::span<std::byte> data) {
    auto* control = new (data.data()) ChannelControl{};
    control->magic = detail::kChannelMagic;
    control->layout_version = detail::kChannelLayoutVersion;
    control->max_message = max_message;
    control->capacity = capacity;
    control->ring_offset = detail::kChannelRingOffset;
    control->loan_threshold = options.loans.threshold;
    control->loan_limit = options.loans.limit;
    control->label = detail::Label(name);
  };
  auto segment = Segment::create(name, segment_options);
  if (!segment) return std::move(segment).error();
  auto shared = detail::adopt(std::move(*segment));
  if (!shared) return std::move(shared).error();
  return Channel(std::move(*shared));
}

result<Channel> Channel::open(std::string_view name, OpenOptions options) {
  options.object_type = ObjectType::channel;
  auto segment = Segment::open(name, options);
  if (!segment) return std::move(segment).error();
  auto shared = detail::adopt(std::move(*segment));
  if (!shared) return std::move(shared).error();
  return Channel(std::move(*shared));
}

result<Channel> Channel::attach(Fd memfd, OpenOptions options) {
  options.object_type = ObjectType::channel;
  auto segment = Segment::attach(std::move(memfd), options);
  if (!segment) return std::move(segment).error();
  auto shared = detail::adopt(std::move(*segment));
  if (!shared) return std::move(shared).error();
  return Channel(std::move(*shared));
}

result<void> Channel::destroy(std::string_view name, SegmentKind kind, int sysv_project_id) {
  // The chunks are named after the segment (as it names itself, if it can be read).
  const auto segment = Segment::open(name, {.kind = kind, .access = Access::read_only, .sysv_project_id = sysv_project_id});
  detail::destroy_slabs({segment ? segment->name() : std::string(name), kind});
  return Segment::destroy(name, kind, sysv_project_id);
}

std::size_t Channel::capacity() const noexcept { return shared_->capacity; }
std::size_t Channel::max_message() const noexcept { return shared_->max_message; }
const Segment& Channel::segment() const noexcept { return shared_->segment; }

// ----------------------------------------------------------------- sender

namespace {
void copy_record_payload(std::byte* record_payload, std::span<const std::byte> message) noexcept;
}

struct ChannelSender::State {
  std::shared_ptr<ChannelShared> shared;
  std::uint64_t tail = 0;       // next byte to write (committed, maybe unpublished)
  std::uint64_t published = 0;  // last value stored in control->tail
  std::uint64_t head_seen = 0;  // last value read from control->head
  std::uint64_t sent = 0;       // messages committed
  std::uint64_t reserved_at = 0;
  std::optional<std::size_t> reserved;
  std::uint64_t resumed_at = 0;  // where this sender took over
  std::shared_ptr<detail::ChunkPool> chunks;  // made at the first loan
  // The first header of a deferred batch, written by publish(): until then
  // the receiver cannot pass it, so the whole batch appears at once.
  struct HeldHeader {
    std::uint64_t offset;
    std::uint64_t header;
  };
  std::optional<HeldHeader> held;
  bool in_batch = false;  // the last commit was Publish::later: more are coming
  bool prefetch_for_write = detail::cpu_prefetches_for_write();

  ChannelControl& control() const noexcept { return *shared->control; }

  // A successor resumes after the records whose headers are written, even if
  // its predecessor died before storing `tail` for them.
  void skip_written_records() noexcept {
    for (std::uint64_t scanned = 0; scanned < shared->capacity;) {
      const std::uint64_t offset = tail & shared->mask;
      const std::uint64_t header = header_at(shared->ring, offset).load(std::memory_order_acquire);
      const auto tag = static_cast<std::uint32_t>(header >> 32);
      const auto length = static_cast<std::uint32_t>(header);
      if (!detail::record_at(header, tail)) return;
      const std::uint64_t step =
          (tag & detail::kWrapBit)
              ? shared->capacity - offset
              : detail::record_end(tail, length & detail::kLengthMask, (length & detail::kPackedBit) != 0) - tail;
      if (offset + step > shared->capacity) return;
      tail += step;
      scanned += step;
    }
  }

  // The room a record of `size` bytes needs at ring `offset`: as if sent on
  // its own (to the next line); commit decides, and a packed one takes less.
  static std::uint64_t room_for(std::size_t size, std::uint64_t offset) noexcept {
    return detail::record_end(offset, size, false) - offset;
  }

  // The payload of a record of `size` bytes at the tail, reserved.
  std::byte* place(std::size_t size) noexcept {
    if (in_batch && prefetch_for_write) own_ahead();
    reserved_at = tail;
    reserved = size;
    if (detail::record_size(size) >= detail::kLargeRecord) {
      control().writing.store(tail + detail::record_size(size), std::memory_order_relaxed);
    }
    return shared->ring + (tail & shared->mask) + (detail::payload_start(tail, size) - tail);
  }

  // Within a batch, asks for a ring line a little ahead of the tail for
  // writing: the stores of the messages to come then find their lines here
  // instead of fetching each from the receiver's cache (which read them a lap
  // ago) while the stores behind them wait. Twice the 64 B stream with the
  // vCPUs apart; not for lone messages, whose round trip it would slow.
  void own_ahead() const noexcept {
    const std::byte* line = shared->ring + ((tail + kOwnAhead) & shared->mask);
#if defined(__x86_64__)
    asm volatile("prefetchw %0" : : "m"(*line));
#else
    __builtin_prefetch(line, 1);
#endif
  }
  static constexpr std::uint64_t kOwnAhead = 512;

  // Publishes what is committed: `tail` for successors and `ferry ls`, and
  // a wake-up if the receiver sleeps (no system call otherwise).
  void store_tail() noexcept {
    if (tail == published) return;
    control().messages_sent.store(sent, std::memory_order_relaxed);
    control().tail.store(tail, std::memory_order_release);
    published = tail;
    control().data_ready.notify_all();
  }

  // Commits the reserved record of `used` bytes on its own and publishes it.
  void commit_lone(std::size_t used, std::uint32_t flags) noexcept {
    reserved.reset();
    in_batch = false;
    publish_lone(reserved_at, detail::record_end(reserved_at, used, false), static_cast<std::uint32_t>(used) | flags);
  }

  // Sends a message of under kAlignedPayload bytes (its payload right
  // behind its header) on its own, if there is room at the tail as last
  // seen: the round trip's path, kept short (no reservation, no call for
  // the copy). False if there is no room.
  bool send_small(std::span<const std::byte> message) noexcept {
    const std::uint64_t at = tail;
    const std::uint64_t offset = at & shared->mask;
    const std::uint64_t end = detail::record_end(at, message.size(), false);
    if (end - at > shared->capacity - offset || end - head_seen > shared->capacity) return false;
    reserved.reset();  // a reservation not committed is abandoned (as by reserve)
    copy_record_payload(shared->ring + offset + detail::kRecordHeaderSize, message);
    publish_lone(at, end, static_cast<std::uint32_t>(message.size()));
    return true;
  }

  // Publishes the record at `at`, written up to its header, which ends at `end`.
  void publish_lone(std::uint64_t at, std::uint64_t end, std::uint32_t length_word) noexcept {
    tail = end;
    ++sent;
    // seq_cst: WaitPoint's contract for the write that makes "data ready" true.
    header_at(shared->ring, at & shared->mask).store(record_header(length_word, record_tag(at)), std::memory_order_seq_cst);
    store_tail();
    // Without room for this record twice more, the next send would read the
    // receiver's position on its way; read it now, while this one travels.
    if (shared->capacity - (tail - head_seen) < 2 * (end - at)) (void)refresh_head();
  }

  // Nearly every reserve: the ring has room at the tail as last seen, no
  // wait, no wrap. Null otherwise (reserve_record does the rest). Returned
  // as a pointer, in a register: a span handed back inside a result<> in
  // memory is reloaded wider than it was stored, and that load waits until
  // every earlier store has left the store buffer, the last messages' lines
  // among them, which are still crossing to the receiver: one cross-CPU
  // transfer a message instead of many overlapped.
  std::byte* room_at_tail(std::size_t size) noexcept {
    const std::uint64_t offset = tail & shared->mask;
    const std::uint64_t need = room_for(size, offset);
    if (size > shared->max_message || need > shared->capacity - offset ||
        need > shared->capacity - (tail - head_seen)) {
      return nullptr;
    }
    return place(size);
  }

  // Reads the receiver's position; false if it is impossible (a hostile
  // segment). The receiver may be past `published` (a wrap record is visible
  // as soon as it is written) but never past what this sender wrote.
  bool refresh_head() noexcept {
    // seq_cst: this load is the condition a waiting sender re-checks (WaitPoint).
    const std::uint64_t head = control().head.load(std::memory_order_seq_cst);
    if (head > tail || tail - head > shared->capacity) return false;
    head_seen = head;
    return true;
  }
};

ChannelSender::ChannelSender(std::unique_ptr<State> state) noexcept : state_(std::move(state)) {}
ChannelSender::ChannelSender(ChannelSender&&) noexcept = default;
ChannelSender& ChannelSender::operator=(ChannelSender&& other) noexcept {
  if (this != &other) {
    ChannelSender previous(std::move(*this));  // leaves its role at the end of this scope
    state_ = std::move(other.state_);
  }
  return *this;
}
ChannelSender::~ChannelSender() {
  if (!state_) return;
  publish();
  detail::leave_role(state_->control().sender);
  state_->control().data_ready.notify_all();  // a waiting receiver learns we left
}

result<ChannelSender> Channel::sender() {
  if (auto claimed = detail::claim_role(shared_->control->sender, "sender", shared_->description); !claimed) {
    return std::move(claimed).error();
  }
  (void)shared_->segment.prefault();  // no page faults on the data path (best effort)
  auto state = std::make_unique<ChannelSender::State>();
  state->shared = shared_;
  // Resume after what the previous sender published; what it had not, is gone.
  state->tail = shared_->control->tail.load(std::memory_order_acquire);
  state->skip_written_records();
  state->published = state->resumed_at = state->tail;
  state->sent = shared_->control->messages_sent.load(std::memory_order_relaxed);
  if (!state->refresh_head()) return detail::corrupt(*shared_, "head and tail are inconsistent");
  shared_->control->tail.store(state->tail, std::memory_order_release);
  return ChannelSender(std::move(state));
}

std::size_t ChannelSender::max_message() const noexcept { return state_->shared->max_message; }

result<std::optional<std::span<std::byte>>> ChannelSender::reserve_impl(std::size_t size,
                                                                         std::optional<deadline> until,
                                                                         WaitStrategy strategy, bool wait) {
  if (size > state_->shared->max_message) return detail::too_large(*state_->shared, size);
  return reserve_record(size, until, strategy, wait);
}

result<std::optional<std::span<std::byte>>> ChannelSender::reserve_record(std::size_t size,
                                                                           std::optional<deadline> until,
                                                                           WaitStrategy strategy, bool wait) {
  State& s = *state_;
  const ChannelShared& shared = *s.shared;
  s.reserved.reset();  // a reservation not committed is abandoned
  const auto need_at = [&](std::uint64_t offset) { return State::room_for(size, offset); };
  const auto room_needed = [&] {
    const std::uint64_t offset = s.tail & shared.mask;
    const std::uint64_t to_end = shared.capacity - offset;
    return need_at(offset) <= to_end ? need_at(offset) : to_end + need_at(0);
  };
  const auto room = [&] { return shared.capacity - (s.tail - s.head_seen); };
  if (room() < room_needed()) {
    if (!s.refresh_head()) return detail::corrupt(shared, "the receiver's position is out of bounds");
  }
  if (room() < room_needed()) {
    publish();  // what is committed must be visible before we wait for room
    if (!wait) return std::optional<std::span<std::byte>>{};
    bool corrupted = false;
    const auto outcome = detail::wait_for_peer(
        s.control().space_ready,
        [&] {
          if (!s.refresh_head()) corrupted = true;
          return corrupted || room() >= room_needed();
        },
        [] { return false; },
        [&] {
          const std::uint64_t end = s.control().reading.load(std::memory_order_relaxed);
          return end > s.head_seen && end - s.head_seen <= shared.capacity;
        },
        s.control().receiver, strategy, until);
    if (corrupted) return detail::corrupt(shared, "the receiver's position is out of bounds");
    if (outcome == WaitOutcome::timed_out) return error(errc::timed_out, shared.description);
    if (outcome == WaitOutcome::peer_gone) {
      return error(errc::peer_gone, shared.description, "the receiver died or left and the channel is full");
    }
  }
  const std::uint64_t offset = s.tail & shared.mask;
  const std::uint64_t to_end = shared.capacity - offset;
  if (need_at(offset) > to_end) {
    // Fill the rest of the ring with a wrap record; the message starts at 0.
    header_at(shared.ring, offset)
        .store(record_header(static_cast<std::uint32_t>(to_end - detail::kRecordHeaderSize),
                             record_tag(s.tail) | detail::kWrapBit),
               std::memory_order_release);
    s.tail += to_end;
  }
  return std::optional<std::span<std::byte>>(std::span<std::byte>(s.place(size), size));
}

result<std::span<std::byte>> ChannelSender::reserve(std::size_t size, WaitStrategy strategy) {
  if (std::byte* room = state_->room_at_tail(size)) return std::span<std::byte>(room, size);
  auto reserved = reserve_impl(size, std::nullopt, strategy, true);
  if (!reserved) return std::move(reserved).error();
  return **reserved;
}

result<std::optional<std::span<std::byte>>> ChannelSender::try_reserve(std::size_t size) {
  if (std::byte* room = state_->room_at_tail(size)) return std::optional(std::span<std::byte>(room, size));
  return reserve_impl(size, std::nullopt, {}, false);
}

result<std::span<std::byte>> ChannelSender::reserve_until(std::size_t size, deadline until,
                                                          WaitStrategy strategy) {
  if (std::byte* room = state_->room_at_tail(size)) return std::span<std::byte>(room, size);
  auto reserved = reserve_impl(size, until, strategy, true);
  if (!reserved) return std::move(reserved).error();
  return **reserved;
}

result<void> ChannelSender::commit(std::size_t used, Publish when) { return commit_record(used, 0, when); }

result<void> ChannelSender::commit_record(std::size_t used, std::uint32_t flags, Publish when) {
  State& s = *state_;
  if (!s.reserved) return error(errc::invalid_argument, s.shared->description, "commit() without reserve()");
  if (used > *s.reserved) {
    return error(errc::invalid_argument, s.shared->description,
                 "committing " + std::to_string(used) + " bytes of a " + std::to_string(*s.reserved) +
                     "-byte reservation");
  }
  const std::uint64_t offset = s.reserved_at & s.shared->mask;
  const std::uint64_t written_at = detail::payload_start(s.reserved_at, *s.reserved);
  const std::uint64_t belongs_at = detail::payload_start(s.reserved_at, used);
  if (written_at != belongs_at) {
    // Reserved large (on the next line), committed small: behind the header.
    std::byte* record = s.shared->ring + offset;
    std::memmove(record + (belongs_at - s.reserved_at), record + (written_at - s.reserved_at), used);
  }
  if (when == Publish::now && !s.in_batch && !s.held) {
    s.commit_lone(used, flags);
    return {};
  }
  // A record published later is one of a batch: the next one packs in after it.
  const bool packed = when == Publish::later;
  s.in_batch = packed;
  const std::uint64_t header = record_header(
      static_cast<std::uint32_t>(used) | flags | (packed ? detail::kPackedBit : 0), record_tag(s.reserved_at));
  s.tail = detail::record_end(s.reserved_at, used, packed);
  s.reserved.reset();
  ++s.sent;
  if (when == Publish::later && !s.held) {
    s.held = State::HeldHeader{offset, header};
  } else if (when == Publish::later || s.held) {
    header_at(s.shared->ring, offset).store(header, std::memory_order_release);  // publish() stores the held one last
  } else {
    // The end of a batch whose first header is out already (publish() was
    // called within it): seq_cst, WaitPoint's contract for the last write.
    header_at(s.shared->ring, offset).store(header, std::memory_order_seq_cst);
  }
  if (when == Publish::now) publish();  // the end of a batch
  return {};
}

bool ChannelSender::drained() noexcept {
  State& s = *state_;
  return s.refresh_head() && s.head_seen >= s.published;
}

void ChannelSender::publish() noexcept {
  State& s = *state_;
  if (s.held) {
    header_at(s.shared->ring, s.held->offset).store(s.held->header, std::memory_order_seq_cst);
    s.held.reset();
  }
  s.store_tail();
}

namespace {

// Copies a payload into its record: the lines after the header's line
// first, the header's line last. The receiver is polling the header's line;
// written last, it is taken from the receiver once and stays here until the
// header is stored, instead of being pulled back while the next line is
// fetched. (A 64-byte message with its header spans two lines.)
//
// The part in the header's line (56 bytes at most, as the payload starts 8
// bytes in), and the rest when it is a line or less, are copied with two
// overlapping moves of a fixed size: no call, and not the byte loop a
// compiler makes of a memcpy it knows is short.
void copy_within_line(std::byte* to, const std::byte* from, std::size_t size) noexcept {
  const auto copy = [&]<std::size_t kMove>() {
    std::memcpy(to, from, kMove);
    std::memcpy(to + size - kMove, from + size - kMove, kMove);
  };
  if (size >= 32) {
    copy.template operator()<32>();
  } else if (size >= 16) {
    copy.template operator()<16>();
  } else if (size >= 8) {
    copy.template operator()<8>();
  } else if (size >= 4) {
    copy.template operator()<4>();
  } else if (size != 0) {
    to[0] = from[0];
    to[size / 2] = from[size / 2];
    to[size - 1] = from[size - 1];
  }
}

void copy_record_payload(std::byte* record_payload, std::span<const std::byte> message) noexcept {
  const auto past_line = reinterpret_cast<std::uintptr_t>(record_payload) % detail::kLineSize;
  const std::size_t in_header_line = std::min(message.size(), (detail::kLineSize - past_line) % detail::kLineSize);
  const std::size_t rest = message.size() - in_header_line;
  if (rest > detail::kLineSize) {
    std::memcpy(record_payload + in_header_line, message.data() + in_header_line, rest);
  } else {
    copy_within_line(record_payload + in_header_line, message.data() + in_header_line, rest);  // no call
  }
  copy_within_line(record_payload, message.data(), in_header_line);
}

}  // namespace

result<bool> ChannelSender::send_impl(std::span<const std::byte> message, std::optional<deadline> until,
                                      WaitStrategy strategy, bool wait, Publish when) {
  const ChannelShared& shared = *state_->shared;
  const bool fits_ring = message.size() <= shared.max_message;
  const bool loans = shared.loans_supported;
  if (!fits_ring && !loans) return detail::too_large(shared, message.size());
  if (!fits_ring || (message.size() >= shared.loan_threshold && loans)) {
    // One copy into a chunk instead of one into the ring and one out of it.
    auto loan = loan_impl(message.size(), until, strategy, wait);
    if (!loan) return std::move(loan).error();
    if (!*loan) return false;
    std::memcpy((*loan)->data().data(), message.data(), message.size());
    return send_loan(**loan, until, strategy, wait, when);
  }
  std::byte* room = state_->room_at_tail(message.size());
  if (room == nullptr) {
    auto reserved = reserve_impl(message.size(), until, strategy, wait);
    if (!reserved) return std::move(reserved).error();
    if (!*reserved) return false;
    room = (*reserved)->data();
  }
  copy_record_payload(room, message);
  if (auto committed = commit(message.size(), when); !committed) return std::move(committed).error();
  return true;
}

result<void> ChannelSender::send(std::span<const std::byte> message, WaitStrategy strategy) {
  State& s = *state_;
  // Nearly every send: a message for the ring, room at the tail, no batch
  // open. In one piece: this is the path a round trip waits on.
  if (!s.in_batch && !s.held && message.size() < s.shared->direct_limit) {
    if (message.size() < detail::kAlignedPayload) {
      if (s.send_small(message)) return {};
    } else if (std::byte* room = s.room_at_tail(message.size())) {
      copy_record_payload(room, message);
      s.commit_lone(message.size(), 0);
      return {};
    }
  }
  if (auto sent = send_impl(message, std::nullopt, strategy, true, Publish::now); !sent) {
    return std::move(sent).error();
  }
  return {};
}

result<bool> ChannelSender::try_send(std::span<const std::byte> message) {
  return send_impl(message, std::nullopt, {}, false, Publish::now);
}

result<void> ChannelSender::send_until(std::span<const std::byte> message, deadline until,
                                       WaitStrategy strategy) {
  if (auto sent = send_impl(message, until, strategy, true, Publish::now); !sent) {
    return std::move(sent).error();
  }
  return {};
}

result<std::size_t> ChannelSender::try_send_batch(std::span<const std::span<const std::byte>> messages) {
  std::size_t count = 0;
  for (const auto& message : messages) {
    auto sent = send_impl(message, std::nullopt, {}, false, Publish::later);
    if (!sent) {
      publish();
      return std::move(sent).error();
    }
    if (!*sent) break;
    ++count;
  }
  publish();
  return count;
}

result<void> ChannelSender::send_batch(std::span<const std::span<const std::byte>> messages,
                                       WaitStrategy strategy) {
  for (const auto& message : messages) {
    // reserve publishes what is pending before it waits, so each run of
    // messages that fits goes out with one index store.
    if (auto sent = send_impl(message, std::nullopt, strategy, true, Publish::later); !sent) {
      publish();
      return std::move(sent).error();
    }
  }
  publish();
  return {};
}

// ------------------------------------------------------------------ loans

result<std::optional<Loan>> ChannelSender::loan_impl(std::size_t size, std::optional<deadline> until,
                                                     WaitStrategy strategy, bool wait) {
  State& s = *state_;
  const ChannelShared& shared = *s.shared;
  if (auto pool = ensure_chunk_pool(); !pool) return std::move(pool).error();
  // The receiver's position as last read frees most chunks; reading it anew
  // (a line the receiver writes) is for when it does not.
  auto taken = s.chunks->take(size, s.head_seen, false);
  if (taken && !*taken) {
    if (!s.refresh_head()) return detail::corrupt(shared, "the receiver's position is out of bounds");
    taken = s.chunks->take(size, s.head_seen);
  }
  if (taken && !*taken && wait) {
    // The receiver holds the chunks the limit allows: wait until it releases one.
    publish();
    bool corrupted = false;
    const auto outcome = detail::wait_for_peer(
        s.control().space_ready,
        [&] {
          if (!s.refresh_head()) corrupted = true;
          if (corrupted) return true;
          taken = s.chunks->take(size, s.head_seen);
          return !taken || taken->has_value();
        },
        [] { return false; }, [] { return false; }, s.control().receiver, strategy, until);
    if (corrupted) return detail::corrupt(shared, "the receiver's position is out of bounds");
    if (outcome == WaitOutcome::timed_out) return error(errc::timed_out, shared.description, "no chunk was released");
    if (outcome == WaitOutcome::peer_gone) {
      return error(errc::peer_gone, shared.description, "the receiver died or left holding the chunks");
    }
  }
  if (!taken) return std::move(taken).error();
  if (!*taken) return std::optional<Loan>{};
  // As for a large record in the ring: a receiver about to sleep spins
  // through the writing of a large chunk instead (bounded by kLargeCopySpin);
  // the chunk's record will end about here.
  if (size >= detail::kLargeRecord) s.control().writing.store(s.tail + detail::kLineSize, std::memory_order_relaxed);
  return std::optional<Loan>(Loan(s.chunks, **taken));
}

result<void> ChannelSender::ensure_chunk_pool() {
  State& s = *state_;
  if (s.chunks) return {};
  const ChannelShared& shared = *s.shared;
  auto pool = std::make_shared<detail::ChunkPool>(shared.chunk_home(), shared.control->slabs, shared.loan_limit);
  // What a predecessor loaned, or sent in records it never published, is free.
  if (auto adopted = pool->adopt(s.resumed_at); !adopted) return std::move(adopted).error();
  s.chunks = std::move(pool);
  return {};
}

result<LoanUsage> ChannelSender::loan_usage() {
  State& s = *state_;
  if (auto pool = ensure_chunk_pool(); !pool) return std::move(pool).error();
  if (!s.refresh_head()) return detail::corrupt(*s.shared, "the receiver's position is out of bounds");
  return s.chunks->usage(s.head_seen);
}

result<Loan> ChannelSender::loan(std::size_t size, WaitStrategy strategy) {
  auto loaned = loan_impl(size, std::nullopt, strategy, true);
  if (!loaned) return std::move(loaned).error();
  return std::move(**loaned);
}

result<std::optional<Loan>> ChannelSender::try_loan(std::size_t size) { return loan_impl(size, std::nullopt, {}, false); }

result<Loan> ChannelSender::loan_until(std::size_t size, deadline until, WaitStrategy strategy) {
  auto loaned = loan_impl(size, until, strategy, true);
  if (!loaned) return std::move(loaned).error();
  return std::move(**loaned);
}

result<bool> ChannelSender::send_loan(Loan& loan, std::optional<deadline> until, WaitStrategy strategy, bool wait,
                                      Publish when) {
  State& s = *state_;
  if (!loan.pool_ || loan.pool_ != s.chunks) {
    return error(errc::invalid_argument, s.shared->description, "a loan this sender did not make (or already sent)");
  }
  auto reserved = reserve_record(sizeof(detail::ChunkRef), until, strategy, wait);
  if (!reserved) return std::move(reserved).error();
  if (!*reserved) return false;
  std::memcpy((*reserved)->data(), &loan.ref_, sizeof(detail::ChunkRef));
  // Marked before the record is published: a successor frees it if we die between.
  s.chunks->mark_sent(loan.ref_, s.reserved_at);
  if (auto committed = commit_record(sizeof(detail::ChunkRef), detail::kChunkBit, when); !committed) {
    return std::move(committed).error();
  }
  loan.pool_.reset();  // the receiver's now
  return true;
}

result<void> ChannelSender::send(Loan&& loan, WaitStrategy strategy) {
  if (auto sent = send_loan(loan, std::nullopt, strategy, true, Publish::now); !sent) return std::move(sent).error();
  return {};
}

result<bool> ChannelSender::try_send(Loan&& loan) { return send_loan(loan, std::nullopt, {}, false, Publish::now); }

result<void> ChannelSender::send_until(Loan&& loan, deadline until, WaitStrategy strategy) {
  if (auto sent = send_loan(loan, until, strategy, true, Publish::now); !sent) return std::move(sent).error();
  return {};
}

// --------------------------------------------------------------- receiver

struct ChannelReceiver::State {
  std::shared_ptr<ChannelShared> shared;
  std::uint64_t head = 0;      // next record to read
  std::uint64_t released = 0;  // last value stored in control->head
  std::uint64_t notified = 0;  // released position the sender was last told about
  std::uint64_t received = 0;
  std::optional<std::uint64_t> peeked;  // record bytes of the message handed out by peek
  std::optional<detail::ChunkRef> peeked_chunk;  // when that message is a loaned chunk
  std::optional<detail::ChunkReader> chunks;      // made at the first loaned message

  detail::NotifyWatcher notify;  // notify_fd()

  ChannelControl& control() const noexcept { return *shared->control; }

  // The sender stores `tail` after the headers below it, so a tail past us
  // with no header here means the segment was scribbled on. Not on the fast
  // path: `tail` lives on the sender's cache line.
  bool tail_says_written() const noexcept {
    const std::uint64_t tail = control().tail.load(std::memory_order_acquire);
    return tail - head - 1 < shared->capacity && !has_record();
  }

  // Whether the next record's header is written (WaitPoint's condition).
  bool has_record() const noexcept {
    // Fetch the record's second line while polling the first: a 64-byte
    // message spans two, and the two misses then overlap instead of queueing.
    __builtin_prefetch(shared->ring + ((head + 64) & shared->mask));
    const std::uint64_t header =
        header_at(shared->ring, head & shared->mask).load(std::memory_order_seq_cst);
    return detail::record_at(header, head);
  }

  // Publishes the released position: from here on a successor resumes after it.
  void store_release() noexcept {
    control().messages_received.store(received, std::memory_order_relaxed);
    control().head.store(head, std::memory_order_release);
    released = head;
  }

  // Tells a sender waiting for room. The seq_cst store is WaitPoint's
  // contract (it orders the store before the read of `sleepers`); it bounces
  // the line to the sender, so it happens only once a quarter of the ring is
  // free, or before this side waits (see peek_impl).
  void notify_sender() noexcept {
    if (released == notified) return;
    control().head.store(released, std::memory_order_seq_cst);
    notified = released;
    control().space_ready.notify_all();
  }

  void flush_release() noexcept {
    if (head != released) store_release();
    notify_sender();
  }

  // The next message when it is not here yet but comes within a few polls:
  // polled in place (inlined into the caller) and handed out as its header
  // lands, without the call, the flush and the reload of the general wait.
  // That is a round trip's every message. Empty otherwise, and peek_impl
  // takes over: when the message is already here (handing those out here
  // too made the benchmark's stream of 64-byte batches run at ~21 instead of
  // ~55 M messages/s, for reasons not understood), when it does not come
  // within kArrivalPolls, when released space must first be told to the
  // sender, or when it is no ordinary record (wrap, chunk, aligned payload).
  [[gnu::always_inline]] std::span<const std::byte> poll_arrival() noexcept {
    const std::uint64_t position = head;  // (a register through the loop)
    const std::uint64_t offset = position & shared->mask;
    const auto header_word = header_at(shared->ring, offset);
    if (detail::record_at(header_word.load(std::memory_order_seq_cst), position) || released != notified) return {};
    const std::byte* second_line = shared->ring + ((head + detail::kLineSize) & shared->mask);
    std::uint64_t header = 0;
    for (int polls = 0;; ++polls) {
      if (polls == kArrivalPolls) return {};
      cpu_relax();
      __builtin_prefetch(second_line);  // as has_record: again each time, the sender's write takes it away
      header = header_word.load(std::memory_order_seq_cst);
      if (detail::record_at(header, position)) break;
    }
    const auto length_word = static_cast<std::uint32_t>(header);
    const std::uint32_t length = length_word & detail::kLengthMask;
    if ((header & (std::uint64_t{detail::kWrapBit} << 32 | detail::kChunkBit)) || length >= detail::kAlignedPayload ||
        length > shared->max_message || offset + detail::kRecordHeaderSize + length > shared->capacity) {
      return {};  // (peek_impl also says corrupt)
    }
    peeked = detail::record_end(position, length, (length_word & detail::kPackedBit) != 0) - position;
    return {shared->ring + offset + detail::kRecordHeaderSize, length};
  }
  static constexpr int kArrivalPolls = 64;
  static_assert(detail::record_size(detail::kAlignedPayload) < detail::kLargeRecord, "no `reading` to store");

  WaitOutcome wait_for_record(std::optional<deadline> until, WaitStrategy strategy, bool wait);
  error no_record(WaitOutcome outcome) const;
  result<std::optional<std::span<const std::byte>>> peek_chunk(std::uint64_t offset, std::uint32_t length_word);

};

ChannelReceiver::ChannelReceiver(std::unique_ptr<State> state) noexcept : state_(std::move(state)) {}
ChannelReceiver::ChannelReceiver(ChannelReceiver&&) noexcept = default;
ChannelReceiver& ChannelReceiver::operator=(ChannelReceiver&& other) noexcept {
  if (this != &other) {
    ChannelReceiver previous(std::move(*this));  // leaves its role at the end of this scope
    state_ = std::move(other.state_);
  }
  return *this;
}
ChannelReceiver::~ChannelReceiver() {
  if (!state_) return;
  state_->notify.stop();
  state_->flush_release();
  detail::leave_role(state_->control().receiver);
  state_->control().space_ready.notify_all();  // a waiting sender learns we left
}

result<ChannelReceiver> Channel::receiver() {
  if (auto claimed = detail::claim_role(shared_->control->receiver, "receiver", shared_->description);
      !claimed) {
    return std::move(claimed).error();
  }
  (void)shared_->segment.prefault();  // no page faults on the data path (best effort)
  auto state = std::make_unique<ChannelReceiver::State>();
  state->shared = shared_;
  // Resume at the last message the previous receiver released.
  state->head = state->released = state->notified = shared_->control->head.load(std::memory_order_acquire);
  state->received = shared_->control->messages_received.load(std::memory_order_relaxed);
  // `tail` may trail the written headers by what a dying sender had not
  // stored yet, never by more than a ring.
  const std::uint64_t tail = shared_->control->tail.load(std::memory_order_acquire);
  if (tail - state->head > shared_->capacity && state->head - tail > shared_->capacity) {
    return detail::corrupt(*shared_, "head and tail are more than a ring apart");
  }
  return ChannelReceiver(std::move(state));
}

std::size_t ChannelReceiver::max_message() const noexcept { return state_->shared->max_message; }

// Waits until the header of the next record is written (ready). Told not
// to wait, looks once: timed_out when nothing is there. Out of line, and
// answering with a plain enum, so that peek_impl, inlined into its callers,
// hands its span back in registers and returns at once when a record came.
[[gnu::noinline]] WaitOutcome ChannelReceiver::State::wait_for_record(std::optional<deadline> until,
                                                                      WaitStrategy strategy, bool wait) {
  flush_release();  // let the sender reuse the space while we wait
  if (!wait) {
    if (tail_says_written()) return WaitOutcome::corrupt;
    if (notify.running()) notify.drained();
    return has_record() ? WaitOutcome::ready : WaitOutcome::timed_out;  // came in meanwhile?
  }
  return detail::wait_for_peer(
      control().data_ready, [&] { return has_record(); }, [&] { return tail_says_written(); },
      [&] {
        const std::uint64_t end = control().writing.load(std::memory_order_relaxed);
        return end > head && end - head <= shared->capacity;
      },
      control().sender, strategy, until);
}

// What a wait that did not end with a record means to the caller.
[[gnu::cold, gnu::noinline]] error ChannelReceiver::State::no_record(WaitOutcome outcome) const {
  if (outcome == WaitOutcome::corrupt) return detail::corrupt(*shared, "no record where the sender wrote one");
  if (outcome == WaitOutcome::timed_out) return error(errc::timed_out, shared->description);
  return error(errc::peer_gone, shared->description, "the sender died or left and nothing is left to read");
}

// The loaned chunk a chunk record at ring `offset` names, peeked.
[[gnu::noinline]] result<std::optional<std::span<const std::byte>>> ChannelReceiver::State::peek_chunk(
    std::uint64_t offset, std::uint32_t length_word) {
  if ((length_word & detail::kLengthMask) != sizeof(detail::ChunkRef) ||
      offset + detail::kRecordHeaderSize + sizeof(detail::ChunkRef) > shared->capacity) {
    return detail::bad_record(*shared, "chunk record", offset);
  }
  detail::ChunkRef ref;
  std::memcpy(&ref, shared->ring + offset + detail::kRecordHeaderSize, sizeof ref);  // read once
  if (!chunks) chunks.emplace(shared->chunk_home(), shared->control->slabs);
  auto payload = chunks->resolve(ref);
  if (!payload) return std::move(payload).error();
  peeked = detail::record_end(head, sizeof(detail::ChunkRef), (length_word & detail::kPackedBit) != 0) - head;
  peeked_chunk = ref;
  return std::optional<std::span<const std::byte>>(*payload);
}

// Inlined into each caller: a span returned through memory and copied out
// with one 16-byte load from two 8-byte stores would wait for the store
// buffer to drain (x86 cannot forward them), on every message.
[[gnu::always_inline]] inline result<std::optional<std::span<const std::byte>>> ChannelReceiver::peek_impl(
    std::optional<deadline> until, WaitStrategy strategy, bool wait) {
  State& s = *state_;
  const ChannelShared& shared = *s.shared;
  for (;;) {
    const std::uint64_t offset = s.head & shared.mask;
    // The header is the commit word: read it once; the record is there when
    // its tag is the one of this position (seq_cst: WaitPoint's contract).
    const std::uint64_t header = header_at(shared.ring, offset).load(std::memory_order_seq_cst);
    const auto tag = static_cast<std::uint32_t>(header >> 32);
    const auto length_word = static_cast<std::uint32_t>(header);
    if (!detail::record_at(header, s.head)) [[unlikely]] {
      const WaitOutcome outcome = s.wait_for_record(until, strategy, wait);
      if (outcome == WaitOutcome::ready) continue;
      if (outcome == WaitOutcome::timed_out && !wait) return std::optional<std::span<const std::byte>>{};
      return s.no_record(outcome);
    }
    if (tag & detail::kWrapBit) {
      const std::uint64_t to_end = shared.capacity - offset;
      if (length_word != to_end - detail::kRecordHeaderSize) {
        return detail::bad_record(shared, "wrap record", offset);
      }
      s.head += to_end;
      continue;
    }
    if (length_word & detail::kChunkBit) return s.peek_chunk(offset, length_word);
    const std::uint32_t length = length_word & detail::kLengthMask;
    const std::uint64_t payload_offset = offset + (detail::payload_start(s.head, length) - s.head);
    if (length > shared.max_message || payload_offset + length > shared.capacity) {
      return detail::bad_record(shared, "record", offset, length);
    }
    s.peeked = detail::record_end(s.head, length, (length_word & detail::kPackedBit) != 0) - s.head;
    if (*s.peeked >= detail::kLargeRecord) {
      s.control().reading.store(s.head + *s.peeked, std::memory_order_relaxed);
    }
    return std::optional<std::span<const std::byte>>(
        std::span<const std::byte>(shared.ring + payload_offset, length));
  }
}

result<std::span<const std::byte>> ChannelReceiver::peek(WaitStrategy strategy) {
  if (strategy.mode != WaitStrategy::Mode::block) {
    if (const auto message = state_->poll_arrival(); message.data()) return message;
  }
  auto peeked = peek_impl(std::nullopt, strategy, true);
  if (!peeked) return std::move(peeked).error();
  return **peeked;
}

result<std::optional<std::span<const std::byte>>> ChannelReceiver::try_peek() {
  return peek_impl(std::nullopt, {}, false);
}

result<std::span<const std::byte>> ChannelReceiver::peek_until(deadline until, WaitStrategy strategy) {
  if (strategy.mode != WaitStrategy::Mode::block) {
    if (const auto message = state_->poll_arrival(); message.data()) return message;
  }
  auto peeked = peek_impl(until, strategy, true);
  if (!peeked) return std::move(peeked).error();
  return **peeked;
}

result<void> ChannelReceiver::release() {
  State& s = *state_;
  if (!s.peeked) return error(errc::invalid_argument, s.shared->description, "release() without peek()");
  // Looked at after the reads: a chunk reused under them is never taken for the message.
  const bool chunk_held = !s.peeked_chunk || s.chunks->still_valid(*s.peeked_chunk);
  s.head += *s.peeked;
  s.peeked.reset();
  ++s.received;
  s.store_release();
  // A sender waiting for a chunk waits for this release, not for a quarter of the ring.
  if (s.peeked_chunk || s.released - s.notified >= s.shared->capacity / 4) s.notify_sender();
  s.peeked_chunk.reset();
  if (!chunk_held) return detail::corrupt(*s.shared, "a loaned chunk was reused while it was read");
  return {};
}

namespace {
error too_small(const ChannelShared& shared, std::size_t message, std::size_t buffer) {
  return error(errc::invalid_argument, shared.description,
               "a message of " + std::to_string(message) + " bytes does not fit a buffer of " +
                   std::to_string(buffer) + " bytes (it stays in the channel)");
}
}  // namespace

result<std::optional<std::size_t>> ChannelReceiver::receive_impl(std::span<std::byte> buffer,
                                                                  std::optional<deadline> until,
                                                                  WaitStrategy strategy, bool wait) {
  std::span<const std::byte> message;
  if (wait && strategy.mode != WaitStrategy::Mode::block) message = state_->poll_arrival();
  if (!message.data()) {
    auto peeked = peek_impl(until, strategy, wait);
    if (!peeked) return std::move(peeked).error();
    if (!*peeked) return std::optional<std::size_t>{};
    message = **peeked;
  }
  if (message.size() > buffer.size()) return too_small(*state_->shared, message.size(), buffer.size());
  if (!message.empty()) std::memcpy(buffer.data(), message.data(), message.size());
  if (auto released = release(); !released) return std::move(released).error();
  return std::optional<std::size_t>(message.size());
}

result<std::size_t> ChannelReceiver::receive(std::span<std::byte> buffer, WaitStrategy strategy) {
  auto received = receive_impl(buffer, std::nullopt, strategy, true);
  if (!received) return std::move(received).error();
  return **received;
}

result<std::size_t> ChannelReceiver::receive_until(std::span<std::byte> buffer, deadline until,
                                                   WaitStrategy strategy) {
  auto received = receive_impl(buffer, until, strategy, true);
  if (!received) return std::move(received).error();
  return **received;
}

result<std::optional<std::size_t>> ChannelReceiver::try_receive(std::span<std::byte> buffer) {
  return receive_impl(buffer, std::nullopt, {}, false);
}

result<int> ChannelReceiver::notify_fd() {
  State& s = *state_;
  return s.notify.start(
      s.control().data_ready,
      [&s] { return s.control().tail.load(std::memory_order_seq_cst) != s.control().head.load(std::memory_order_seq_cst); },
      *s.shared->description);
}

detail::WaitSource detail::wait_source(ChannelReceiver& channel) {
  ChannelReceiver::State* s = channel.state_.get();
  return {&s->control().data_ready, [s] { return s->has_record(); }};
}

}  // namespace ferry
