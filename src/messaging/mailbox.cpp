#include "ferry/messaging/mailbox.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <new>
#include <random>
#include <thread>

#include "ferry/messaging/detail/mailbox_layout.hpp"
#include "ferry/messaging/detail/notify_watcher.hpp"
#include "ferry/os/futex.hpp"
#include "ferry/os/process.hpp"

namespace ferry {
namespace detail {
namespace {

// How often a waiting side wakes to look for dead lessees and new senders
// that will never notify.
constexpr auto kWaitSlice = std::chrono::milliseconds(100);
// How often a receiver that finds work anyway checks leases for dead lessees.
constexpr auto kLeaseCheckInterval = std::chrono::milliseconds(50);
constexpr std::uint64_t kLeftSlot = 1;  // a slot's owner value after its sender left
// A sender log larger than this is sparse (see MailboxShared::sparse_log).
constexpr std::uint64_t kWholeLogLimit = std::uint64_t{32} << 20;

std::string directory_of(std::string_view name) {
  if (!name.empty() && name.front() == '/') return std::string(name);
  return "/dev/shm/ferry." + std::string(name);
}

result<void> validate_name(std::string_view name, const std::string& description) {
  if (name.empty()) return error(errc::invalid_argument, description, "empty name");
  if (name.front() == '/') {
    if (name.size() >= 3000) return error(errc::invalid_argument, description, "path too long");
    if (name.find('\0') != std::string_view::npos) {
      return error(errc::invalid_argument, description, "path contains a NUL byte");
    }
    return {};
  }
  if (name.size() > 200) return error(errc::invalid_argument, description, "name longer than 200 characters");
  if (name == "." || name == ".." || name.find('/') != std::string_view::npos ||
      name.find('\0') != std::string_view::npos) {
    return error(errc::invalid_argument, description, "a name must not contain '/' or NUL, nor be . or ..");
  }
  return {};
}

// Per class (owner, group, other) of the mailbox mode: r = may receive, w = may send.
mode_t class_bits(mode_t mode, int shift) noexcept { return (mode >> shift) & 07; }

mode_t directory_mode(mode_t mode) noexcept {
  mode_t result = S_ISVTX | S_ISGID | 0700;
  for (int shift : {3, 0}) {
    const mode_t bits = class_bits(mode, shift);
    if (bits & 06) result |= mode_t{05} << shift;  // may enter and list
    if (bits & 02) result |= mode_t{02} << shift;  // senders create their logs
  }
  return result;
}

mode_t control_mode(mode_t mode) noexcept {
  mode_t result = 0600;
  for (int shift : {3, 0}) {
    if (class_bits(mode, shift) & 06) result |= mode_t{06} << shift;
  }
  return result;
}

mode_t queue_mode(mode_t mode) noexcept {
  mode_t result = 0600;
  for (int shift : {3, 0}) {
    const mode_t bits = class_bits(mode, shift);
    if (bits & 04) result |= mode_t{06} << shift;
    else if (bits & 02) result |= mode_t{04} << shift;
  }
  return result;
}

// A sender's log: its owner writes; every class that may receive reads. The
// mailbox's owner reads through the group (the directory is setgid).
mode_t log_mode(mode_t mode) noexcept {
  mode_t result = 0600;
  if ((class_bits(mode, 6) | class_bits(mode, 3)) & 04) result |= 040;
  if (class_bits(mode, 0) & 04) result |= 04;
  return result;
}

std::string log_path(const std::string& dir, std::uint64_t log_id) {
  char text[32];
  std::snprintf(text, sizeof text, "/sender.%016llx", static_cast<unsigned long long>(log_id));
  return dir + text;
}

gid_t effective_gid_of(pid_t pid, gid_t fallback) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string key;
  while (status >> key) {
    if (key == "Gid:") {
      unsigned long real = 0, effective = 0;
      if (status >> real >> effective) return static_cast<gid_t>(effective);
      break;
    }
    std::getline(status, key);
  }
  return fallback;
}

// The pid holding a POSIX record lock on byte 0 of `fd` (the sender's
// liveness and identity, from the kernel), or 0 if nobody (else) holds it.
pid_t lock_holder(int fd) noexcept {
  struct flock query{};
  query.l_type = F_RDLCK;
  query.l_whence = SEEK_SET;
  query.l_start = 0;
  query.l_len = 1;
  if (::fcntl(fd, F_GETLK, &query) != 0 || query.l_type == F_UNLCK) return 0;
  return query.l_pid;
}

// POSIX record locks belong to the process and are dropped when it closes
// ANY descriptor of the file. A receiver that mapped this process's own log
// must therefore not close its descriptor while the log's sender lives:
// such segments are parked here until the sender closes its log.
struct OwnLogs {
  std::mutex mutex;
  std::map<std::pair<std::uint64_t, std::uint64_t>, std::vector<Segment>> parked;  // by (dev, ino)
  static OwnLogs& instance() {
    static OwnLogs* logs = new OwnLogs;  // never destroyed: used from destructors at exit
    return *logs;
  }
};

}  // namespace

struct MappedLog {
  std::uint64_t log_id = 0;
  Segment segment;
  const SenderLogHeader* header = nullptr;
  const std::byte* records = nullptr;
  std::uint64_t dev = 0;
  std::uint64_t ino = 0;
  // Maps this sender's slabs as loaned messages name them (made at the
  // first). Leases hold it too; see MailboxShared::resolve_chunk.
  std::shared_ptr<ChunkReader> chunks;
  std::array<std::uint32_t, kMaxSlabs> chunk_generations{};  // of the slabs `chunks` mapped (0: none)
};

struct OwnLog {
  std::uint32_t slot = 0;
  std::uint64_t log_id = 0;
  Segment segment;
  SenderLogHeader* header = nullptr;
  std::byte* records = nullptr;
  std::uint64_t dev = 0;
  std::uint64_t ino = 0;
  std::uint64_t tail = 0;      // next record position
  std::uint64_t sequence = 0;  // of the last record
  std::uint64_t bytes = 0;     // payload published
  ProcessId owner;
  // Unbounded mailboxes: the log's memory exists for positions
  // [released_until, reserved_until), allocated ahead and given back behind.
  std::uint64_t reserved_until = 0;
  std::uint64_t released_until = 0;
  // What receivers had finished of this log when last looked at. They only
  // grow, so deciding on them errs on "full": a sender looks again (and pulls
  // the line receivers write for every message) only when they say so.
  std::uint64_t reclaim_seen = 0;
  std::uint64_t finished_seen = 0;
  std::uint64_t finished_bytes_seen = 0;
  std::shared_ptr<ChunkPool> chunks;  // this sender's loans; the table is in its log header
};

struct MailboxShared {
  std::string name;
  std::string dir;
  std::shared_ptr<const std::string> description;
  std::optional<Segment> control_segment;
  MailboxControl* control = nullptr;
  std::optional<Segment> queue_segment;
  MailboxQueue* queue = nullptr;
  SlotProgress* progress = nullptr;
  Descriptor* descriptors = nullptr;
  bool may_receive = false;
  bool may_send = false;
  bool process_persistent = false;
  // Copied once and validated; bounds checks use these, never the shared copies.
  CapacityKind kind{};
  std::uint64_t count = 0;
  std::uint64_t memory_limit = 0;
  std::uint32_t max_message = 0;
  std::uint32_t max_senders = 0;
  std::uint32_t descriptor_count = 0;
  std::uint64_t log_capacity = 0;
  std::uint64_t loan_threshold = 0;
  std::uint64_t loan_limit = 0;
  mode_t mode = 0;

  std::optional<OwnLog> own;
  std::vector<std::optional<MappedLog>> logs;  // by slot

  // notify_fd(): its watcher reads shared memory only (messages_waiting).
  NotifyWatcher notify;
  std::uint64_t senders_seen = ~std::uint64_t{0};
  steady_clock::time_point next_lease_check{};
  steady_clock::time_point next_retire_check{};
  bool mapped_all_bound = false;  // every slot bound by some receiver is mapped here
  std::uint32_t receiver_entry = kReceiverEntries;  // this object's in queue->receivers, once it received
  std::uint32_t mapped_limit = 0;  // no log is mapped here at or past this slot
  std::uint32_t slot_limit_seen = 0;
  std::uint32_t binds = 0;         // calls of bind_senders, to read the clock now and then
  std::uint32_t next_slot_hint = 0;

  ~MailboxShared();

  error corrupt(std::string detail) const { return error(errc::corrupt, description, std::move(detail)); }

  // ---- receiving side (queue lock held unless said otherwise)
  result<void> lock_queue(std::optional<deadline> until);
  void unlock_queue() noexcept { (void)queue->lock.unlock(); }
  // The queue's counters change only under its lock: a plain add (no locked
  // instruction, which costs more than the rest of a receive); readers
  // outside the lock take a snapshot. Before waking anyone, notify_senders
  // and notify_receivers order these writes before the check for sleepers
  // (WaitPoint's contract).
  static void add(std::atomic<std::uint64_t>& counter, std::uint64_t delta) noexcept {
    counter.store(counter.load(std::memory_order_relaxed) + delta, std::memory_order_relaxed);
  }
  static void subtract(std::atomic<std::uint64_t>& counter, std::uint64_t delta) noexcept {
    counter.store(counter.load(std::memory_order_relaxed) - delta, std::memory_order_relaxed);
  }
  void notify_senders() noexcept {
    std::atomic_thread_fence(std::memory_order_seq_cst);
    control->space_ready.notify_all();
  }
  void notify_receivers() noexcept {
    std::atomic_thread_fence(std::memory_order_seq_cst);
    control->data_ready.notify_all();
  }
  void repair_queue();
  // A step on one descriptor that changes counters no repair can rebuild:
  // journaled, so that a holder killed midway leaves it to be finished or
  // undone (QueueJournal).
  void begin_step(QueueStep step, std::uint32_t index) noexcept;
  void end_step() noexcept;
  void replay_step();
  // `sweep`: look for dead senders now, not only now and then.
  result<void> bind_senders(bool sweep = false);
  void retire_if_finished(std::uint32_t slot);
  result<void> index_new_records();
  void check_leases(bool force);
  std::optional<std::uint32_t> take_head(std::optional<pid_t> sender);
  void finish(std::uint32_t index);
  void requeue_front(std::uint32_t index);
  void push_level(std::uint32_t index, bool front);
  std::uint32_t allocate_descriptor();
  std::uint32_t pool_size() const noexcept { return std::min(queue->pool_used, descriptor_count); }
  void retire_slot(std::uint32_t slot);
  void attach_receiver();
  void free_slot(std::uint32_t slot);
  void update_reclaim(std::uint32_t slot);
  // How a leased message ends: finished (acked; or unreadable, and the
  // caller reports why), or given back for redelivery.
  enum class Settle : std::uint8_t { ack, nack };
  // Takes the queue lock. Errors: busy (the lease was taken back).
  result<void> settle(std::uint32_t index, std::uint64_t lease, Settle how);
  // Where the chunks of log `log_id` live: files next to the log, made and
  // read as it is (a sender's, whatever its uid).
  ChunkHome chunk_home(std::uint64_t log_id) const {
    return {log_path(dir, log_id), SegmentKind::file, Persistence::filesystem, log_mode(mode), description, true};
  }
  result<std::span<const std::byte>> resolve_chunk(std::uint32_t slot, const ChunkRef& ref,
                                                   std::shared_ptr<ChunkReader>* reader);
  std::uint64_t indexed_messages(std::uint32_t slot, std::uint64_t* bytes) const;
  bool has_work() const;  // without the mutex: for waiting
  // Senders: slots at or past this were never claimed. It never shrinks
  // here, so a smaller value scribbled into shared memory hides no sender
  // this process saw.
  std::uint32_t claimed_slots() noexcept {
    slot_limit_seen = std::max(slot_limit_seen, std::min(control->slot_limit.load(std::memory_order_acquire), max_senders));
    return slot_limit_seen;
  }
  // Whether messages were sent or given back since a receiver last found
  // nothing: shared memory only, so any thread may ask (the notify watcher,
  // MailboxSet). It errs on "maybe" until some receiver looks, never on "no"
  // (except for the one message of a sender killed between publishing it
  // and counting it, which waits for the next event).
  bool messages_waiting() const noexcept {
    return control->sent.load(std::memory_order_seq_cst) + queue->redelivered.load(std::memory_order_seq_cst) >
           queue->settled.load(std::memory_order_seq_cst);
  }

  // ---- sending side
  // This process's own log (a forked child registers anew).
  result<void> ensure_sender() {
    if (own && own->owner != ProcessId::current()) own.reset();
    return own ? result<void>{} : register_sender();
  }
  result<void> register_sender();
  std::uint64_t reclaim_position() const;
  // A log whose memory comes and goes with the messages in it: unbounded
  // mailboxes', and any log too large to hold in memory whole (a bounded
  // mailbox of large messages: (count + 1) records of the largest size).
  bool sparse_log() const noexcept { return kind == CapacityKind::unbounded || log_capacity > kWholeLogLimit; }
  result<void> grow_log(std::uint64_t until);
  void shrink_log(std::uint64_t reclaim);
};

// ------------------------------------------------------------- queue lock

// A spin lock, not a sleeping mutex: it is held for a few hundred
// nanoseconds, and taking and giving back a robust pthread mutex cost more
// than the receive it protects. A holder's death is noticed by its waiters.
result<void> MailboxShared::lock_queue(std::optional<deadline> until) {
  auto locked = queue->lock.lock_until(until.value_or(deadline::max()));
  if (locked) return {};
  if (locked.error().code() != errc::owner_died) return locked.error();
  repair_queue();  // held now
  return {};
}

// The messages of `slot` indexed so far (and their bytes): what the record at
// `scanned` says came before it, or all that was published.
std::uint64_t MailboxShared::indexed_messages(std::uint32_t slot, std::uint64_t* bytes) const {
  const auto& log = logs[slot];
  const SlotProgress& p = progress[slot];
  if (!log) {
    *bytes = 0;
    return 0;
  }
  const std::uint64_t mask = log_capacity - 1;
  const std::uint64_t scanned = p.scanned.load(std::memory_order_relaxed);
  const std::uint64_t published = log->header->published.load(std::memory_order_acquire);
  if (scanned != published) {
    const std::byte* record = log->records + (scanned & mask);
    std::uint64_t commit = 0, sequence = 0, packed = 0;
    std::memcpy(&commit, record, 8);
    std::memcpy(&sequence, record + 8, 8);
    std::memcpy(&packed, record + 16, 8);
    if ((static_cast<std::uint32_t>(commit >> 32) & ~kLogWrapBit) == log_record_tag(scanned) &&
        !(static_cast<std::uint32_t>(commit >> 32) & kLogWrapBit) && sequence > 0) {
      *bytes = packed & ((std::uint64_t{1} << 48) - 1);
      return sequence - 1;
    }
  }
  *bytes = log->header->bytes.load(std::memory_order_acquire);
  return log->header->messages.load(std::memory_order_acquire);
}

// After a receiver died holding the queue lock: the lists and counters may be
// half-updated. Rebuild them from the descriptors' states and the logs.
void MailboxShared::repair_queue() {
  replay_step();
  // Descriptors of records at or past `scanned` were being indexed: drop them.
  for (std::uint32_t i = 0; i < pool_size(); ++i) {
    Descriptor& d = descriptors[i];
    if (d.state == DescriptorState::free) continue;
    if (d.slot >= max_senders || d.position >= progress[d.slot].scanned.load(std::memory_order_relaxed)) {
      d.state = DescriptorState::free;
    }
  }
  std::vector<std::uint32_t> live;
  queue->free_first = kNoDescriptor;
  for (std::uint32_t i = pool_size(); i-- > 0;) {
    if (descriptors[i].state == DescriptorState::free) {
      descriptors[i].next = queue->free_first;
      queue->free_first = i;
    } else {
      live.push_back(i);
    }
  }
  for (auto& level : queue->levels) level = {kNoDescriptor, kNoDescriptor};
  queue->nonempty_levels = 0;
  for (auto& depth : queue->depth) depth.store(0, std::memory_order_relaxed);
  std::sort(live.begin(), live.end(), [&](std::uint32_t a, std::uint32_t b) {
    return descriptors[a].order < descriptors[b].order;
  });
  std::uint64_t queued = 0, leased = 0;
  for (std::uint32_t i : live) {
    if (descriptors[i].state == DescriptorState::queued) {
      if (descriptors[i].level >= kLevels) descriptors[i].level = 0;
      push_level(i, false);
      ++queued;
    } else if (descriptors[i].state == DescriptorState::leased) {
      ++leased;
    }
  }
  queue->queued.store(queued, std::memory_order_relaxed);
  queue->leased.store(leased, std::memory_order_relaxed);
  // Each sender's records, oldest first; the finished counts follow.
  std::sort(live.begin(), live.end(), [&](std::uint32_t a, std::uint32_t b) {
    return descriptors[a].position < descriptors[b].position;
  });
  for (std::uint32_t slot = 0; slot < max_senders; ++slot) {
    SlotProgress& p = progress[slot];
    p.log_first = p.log_last = kNoDescriptor;
    std::uint64_t outstanding = 0, outstanding_bytes = 0;
    for (std::uint32_t i : live) {
      if (descriptors[i].slot != slot) continue;
      descriptors[i].log_next = kNoDescriptor;
      if (p.log_last == kNoDescriptor) p.log_first = i;
      else descriptors[p.log_last].log_next = i;
      p.log_last = i;
      if (descriptors[i].state != DescriptorState::done) {
        ++outstanding;
        outstanding_bytes += descriptors[i].length;
      }
    }
    if (p.log_id != 0 && logs[slot]) {
      std::uint64_t bytes = 0;
      const std::uint64_t indexed = indexed_messages(slot, &bytes);
      p.finished.store(indexed - outstanding, std::memory_order_relaxed);
      p.finished_bytes.store(bytes - outstanding_bytes, std::memory_order_relaxed);
    }
    update_reclaim(slot);
  }
}

void MailboxShared::begin_step(QueueStep step, std::uint32_t index) noexcept {
  QueueJournal& journal = queue->journal;
  const Descriptor& d = descriptors[index];
  journal.index = index;
  journal.deliveries = d.deliveries;
  journal.taken = d.slot < max_senders ? progress[d.slot].taken.load(std::memory_order_relaxed) : 0;
  journal.received = queue->received.load(std::memory_order_relaxed);
  journal.redelivered = queue->redelivered.load(std::memory_order_relaxed);
  journal.flushed = queue->flushed.load(std::memory_order_relaxed);
  // Store order is what a repair after a kill sees: the journal whole before
  // its mark, the mark before the step's writes.
  std::atomic_thread_fence(std::memory_order_release);
  journal.step = step;
  std::atomic_thread_fence(std::memory_order_release);
}

void MailboxShared::end_step() noexcept {
  std::atomic_thread_fence(std::memory_order_release);
  queue->journal.step = QueueStep::none;
}

// The counters as the interrupted step left them or would have: the
// descriptor's state says whether it got that far.
void MailboxShared::replay_step() {
  const QueueJournal& journal = queue->journal;
  if (journal.step == QueueStep::none) return;
  if (journal.index < descriptor_count) {
    const Descriptor& d = descriptors[journal.index];
    const bool finished = d.state == DescriptorState::done || d.state == DescriptorState::free;
    std::uint64_t received = journal.received, redelivered = journal.redelivered, flushed = journal.flushed;
    switch (journal.step) {
      case QueueStep::deliver:
        if (d.slot < max_senders) {
          const bool first = journal.deliveries == 0 && d.deliveries > 0;
          progress[d.slot].taken.store(journal.taken + (first ? 1 : 0), std::memory_order_relaxed);
        }
        if (finished) ++received;
        break;
      case QueueStep::redeliver:
        if (d.state == DescriptorState::queued) ++redelivered;
        break;
      case QueueStep::flush:
        if (finished) ++flushed;
        break;
      case QueueStep::none: break;
    }
    queue->received.store(received, std::memory_order_relaxed);
    queue->redelivered.store(redelivered, std::memory_order_relaxed);
    queue->flushed.store(flushed, std::memory_order_relaxed);
  }
  end_step();
}

// --------------------------------------------------------------- lists

// A free descriptor (kNoDescriptor if none): recycled ones first, then the
// pool's untouched rest, so an unbounded mailbox touches only what it used.
std::uint32_t MailboxShared::allocate_descriptor() {
  const std::uint32_t recycled = queue->free_first;
  if (recycled != kNoDescriptor && recycled < descriptor_count) {
    queue->free_first = descriptors[recycled].next;
    return recycled;
  }
  const std::uint32_t fresh = queue->pool_used;
  if (fresh >= descriptor_count) return kNoDescriptor;
  if (kind == CapacityKind::unbounded) {
    // The pool is sparse: make sure this descriptor's memory exists (a full
    // system then leaves messages waiting in their logs, never a SIGBUS).
    constexpr std::size_t kPage = 4096;
    const std::size_t offset = queue_descriptors_offset(max_senders) + sizeof(Descriptor) * fresh;
    const std::size_t page = offset / kPage * kPage;
    if ((fresh == 0 || offset - page < sizeof(Descriptor)) &&
        !queue_segment->reserve(page, std::min(kPage, queue_segment->size() - page))) {
      return kNoDescriptor;
    }
  }
  queue->pool_used = fresh + 1;
  return fresh;
}

void MailboxShared::push_level(std::uint32_t index, bool front) {
  Descriptor& d = descriptors[index];
  LevelList& list = queue->levels[d.level];
  d.order = front ? queue->order_front-- : queue->order_back++;
  if (front) {
    d.next = list.first;
    list.first = index;
    if (list.last == kNoDescriptor) list.last = index;
  } else {
    d.next = kNoDescriptor;
    if (list.last == kNoDescriptor) list.first = index;
    else descriptors[list.last].next = index;
    list.last = index;
  }
  queue->nonempty_levels |= std::uint64_t{1} << d.level;
  add(queue->depth[d.level], 1);
}

// The first message of the highest non-empty level (from `sender` only, if
// given), unlinked from its list (still marked queued).
std::optional<std::uint32_t> MailboxShared::take_head(std::optional<pid_t> sender) {
  std::uint64_t candidates = queue->nonempty_levels & ((std::uint64_t{1} << kLevels) - 1);
  while (candidates != 0) {
    const unsigned level = 63 - static_cast<unsigned>(std::countl_zero(candidates));
    const std::uint64_t bit = std::uint64_t{1} << level;
    candidates &= ~bit;
    LevelList& list = queue->levels[level];
    if (list.first == kNoDescriptor) {
      queue->nonempty_levels &= ~bit;
      continue;
    }
    std::uint32_t previous = kNoDescriptor;
    // Bounded by the pool: a scribbled cycle cannot make it loop forever.
    std::uint32_t index = list.first;
    for (std::uint32_t steps = 0; index != kNoDescriptor && steps < descriptor_count; ++steps) {
      if (index >= descriptor_count) return std::nullopt;  // scribbled: a crash repair rebuilds
      const Descriptor& d = descriptors[index];
      if (!sender || (d.slot < max_senders && progress[d.slot].pid == *sender)) break;
      previous = index;
      index = d.next;
    }
    if (index == kNoDescriptor || index >= descriptor_count) continue;
    const std::uint32_t next = descriptors[index].next;
    if (previous == kNoDescriptor) list.first = next;
    else descriptors[previous].next = next;
    if (list.last == index) list.last = previous;
    if (list.first == kNoDescriptor) queue->nonempty_levels &= ~bit;
    subtract(queue->depth[level], 1);
    subtract(queue->queued, 1);
    return index;
  }
  return std::nullopt;
}

void MailboxShared::requeue_front(std::uint32_t index) {
  begin_step(QueueStep::redeliver, index);
  descriptors[index].state = DescriptorState::queued;
  descriptors[index].lessee = 0;
  push_level(index, true);
  add(queue->queued, 1);
  subtract(queue->leased, 1);
  add(queue->redelivered, 1);
  end_step();
}

// The sender may reuse its log below the oldest record not yet freed.
void MailboxShared::update_reclaim(std::uint32_t slot) {
  SlotProgress& p = progress[slot];
  while (p.log_first != kNoDescriptor && p.log_first < descriptor_count &&
         descriptors[p.log_first].state == DescriptorState::done) {
    const std::uint32_t index = p.log_first;
    p.log_first = descriptors[index].log_next;
    if (p.log_first == kNoDescriptor) p.log_last = kNoDescriptor;
    descriptors[index].state = DescriptorState::free;
    descriptors[index].next = queue->free_first;
    queue->free_first = index;
  }
  const std::uint64_t oldest = p.log_first == kNoDescriptor || p.log_first >= descriptor_count
                                   ? p.scanned.load(std::memory_order_relaxed)
                                   : descriptors[p.log_first].position;
  p.reclaim.store(oldest, std::memory_order_relaxed);
}

// A message leaves the mailbox (acked, received, flushed).
void MailboxShared::finish(std::uint32_t index) {
  Descriptor& d = descriptors[index];
  d.state = DescriptorState::done;
  d.lessee = 0;
  SlotProgress& p = progress[d.slot];
  add(p.finished_bytes, d.length);
  add(p.finished, 1);
  update_reclaim(d.slot);
}

// Ends a lease this process holds.
result<void> MailboxShared::settle(std::uint32_t index, std::uint64_t lease, Settle how) {
  if (auto locked = lock_queue(std::nullopt); !locked) return locked.error();
  Descriptor* d = index < descriptor_count ? &descriptors[index] : nullptr;
  if (d == nullptr || d->state != DescriptorState::leased || d->lease != lease ||
      d->lessee != ProcessId::current().packed()) {
    unlock_queue();
    return error(errc::busy, description, "the lease was taken back (its message went to another receiver)");
  }
  if (how == Settle::nack) {
    requeue_front(index);  // counts it out of the leased ones
  } else {
    begin_step(QueueStep::deliver, index);
    subtract(queue->leased, 1);
    finish(index);
    add(queue->received, 1);
    end_step();
  }
  unlock_queue();
  if (how == Settle::nack) {
    notify_receivers();
  } else {
    notify_senders();
  }
  return {};
}

// The payload a loaned message of `slot` names, and the reader that mapped
// it. A lease keeps the reader it read with, and with it the mapping; a
// reader a lease holds maps no new generation of a slab it mapped (that
// would unmap what the lease reads): a new reader does.
result<std::span<const std::byte>> MailboxShared::resolve_chunk(std::uint32_t slot, const ChunkRef& ref,
                                                                std::shared_ptr<ChunkReader>* reader) {
  MappedLog& log = *logs[slot];
  const std::uint32_t generation =
      ref.slab < kMaxSlabs ? SlabShape::decode(log.header->slabs[ref.slab].load(std::memory_order_acquire)).generation : 0;
  const bool remapped = ref.slab < kMaxSlabs && log.chunk_generations[ref.slab] != 0 &&
                        log.chunk_generations[ref.slab] != generation;
  if (!log.chunks || (remapped && log.chunks.use_count() > 1)) {
    log.chunks = std::make_shared<ChunkReader>(chunk_home(log.log_id), log.header->slabs);
    log.chunk_generations.fill(0);
  }
  auto payload = log.chunks->resolve(ref);
  if (payload) log.chunk_generations[ref.slab] = generation;
  *reader = log.chunks;
  return payload;
}

// --------------------------------------------------------- senders' logs

// Maps the log of every sender slot that names a new one (and retires logs
// whose sender is gone and whose records are all finished).
result<void> MailboxShared::bind_senders(bool sweep) {
  const std::uint64_t changed = control->senders_changed.load(std::memory_order_seq_cst);
  const bool rescan = changed != senders_seen;
  senders_seen = changed;
  // Whether senders died (they cannot say so): asked now and then, not on
  // every receive (even the clock is read only every 64th time).
  bool look_for_dead = rescan || sweep;
  if (!look_for_dead && (++binds & 63) == 0) {
    const auto now = steady_clock::now();
    look_for_dead = now >= next_retire_check;
    if (look_for_dead) next_retire_check = now + kLeaseCheckInterval;
  }
  // Nothing announced, nobody to retire, and every bound log mapped here:
  // leave the slots' lines alone (their senders write them on every send).
  if (!look_for_dead && mapped_all_bound) return {};
  mapped_all_bound = true;
  for (std::uint32_t slot = 0; slot < max_senders; ++slot) {
    SlotProgress& p = progress[slot];
    const std::uint64_t announced = control->slots[slot].log_id.load(std::memory_order_acquire);
    auto& log = logs[slot];
    if (p.log_id != 0 && (!log || log->log_id != p.log_id)) {
      // Bound by another receiver (or before this process looked): map it.
      if (!rescan && log) {
        mapped_all_bound = false;  // a stale mapping: look again next time
        continue;
      }
    } else if (p.log_id == 0 && announced == 0) {
      // A sender killed between claiming the slot and announcing its log.
      const std::uint64_t owner = control->slots[slot].owner.load(std::memory_order_acquire);
      if (look_for_dead && owner > kLeftSlot && !ProcessId::from_packed(owner).alive()) {
        std::uint64_t expected = owner;
        control->slots[slot].owner.compare_exchange_strong(expected, 0, std::memory_order_seq_cst);
      }
      continue;
    } else if (p.log_id == 0 && !rescan) {
      continue;
    } else if (p.log_id != 0 && log && log->log_id == p.log_id) {
      if (look_for_dead) retire_if_finished(slot);
      continue;
    }
    const std::uint64_t log_id = p.log_id != 0 ? p.log_id : announced;
    const std::string path = log_path(dir, log_id);
    auto segment = Segment::open(path, {.kind = SegmentKind::file,
                                        .access = Access::read_only,
                                        .allow_foreign_owner = true,
                                        .object_type = ObjectType::mailbox_sender});
    if (!segment) {
      if (segment.error().code() == errc::not_found) {
        const std::uint64_t owner = control->slots[slot].owner.load(std::memory_order_acquire);
        if (owner <= kLeftSlot || !ProcessId::from_packed(owner).alive()) {
          free_slot(slot);  // a retirement cut short: its log was drained and unlinked
          continue;
        }
        if (p.log_id == 0) continue;  // announced, not linked yet
      }
      mapped_all_bound = false;
      return error(segment.error().code(), description,
                   "cannot read the log of sender slot " + std::to_string(slot) + ": " + segment.error().message());
    }
    const auto data = segment->data();
    if (data.size() != kSenderLogRecords + log_capacity) return corrupt("a sender log of the wrong size");
    const auto* header = reinterpret_cast<const SenderLogHeader*>(data.data());
    if (header->magic != kSenderLogMagic || header->layout_version != kMailboxLayoutVersion ||
        header->capacity != log_capacity || header->slot != slot || header->log_id != log_id) {
      return corrupt("sender log " + path + " fails its header checks");
    }
    struct stat facts{};
    if (::fstat(segment->fd().get(), &facts) != 0) return error::from_errno(errno, *description, "fstat");
    MappedLog mapped{log_id, std::move(*segment), header, data.data() + kSenderLogRecords,
                     static_cast<std::uint64_t>(facts.st_dev), static_cast<std::uint64_t>(facts.st_ino)};
    if (p.log_id == 0) {
      // First sight: bind the slot and record who the kernel says wrote it.
      pid_t pid = lock_holder(mapped.segment.fd().get());
      // F_GETLK does not report this process's own locks: a log of one of
      // its own senders (any Mailbox object of this process) is known here.
      if (pid == 0) {
        auto& own_logs = OwnLogs::instance();
        std::lock_guard guard(own_logs.mutex);
        if (own_logs.parked.contains({mapped.dev, mapped.ino})) pid = ::getpid();
      }
      p.uid = facts.st_uid;
      p.gid = pid != 0 ? effective_gid_of(pid, facts.st_gid) : facts.st_gid;
      // A sender already gone: the pid it wrote, marked as not attested.
      p.pid_attested = pid != 0;
      p.pid = pid != 0 ? pid : header->pid;
      p.log_dev = mapped.dev;
      p.log_ino = mapped.ino;
      p.log_first = p.log_last = kNoDescriptor;
      p.scanned.store(0, std::memory_order_relaxed);
      p.reclaim.store(0, std::memory_order_relaxed);
      p.finished.store(0, std::memory_order_relaxed);
      p.finished_bytes.store(0, std::memory_order_relaxed);
      p.taken.store(0, std::memory_order_relaxed);
      p.log_id = log_id;
    } else if (p.log_dev != mapped.dev || p.log_ino != mapped.ino) {
      return corrupt("sender slot " + std::to_string(slot) + " names a different log file than it was bound to");
    }
    log.emplace(std::move(mapped));
    mapped_limit = std::max(mapped_limit, slot + 1);
    // Mapped only now, perhaps by a receiver that lives a moment: a dead
    // sender's finished log is retired in the same look, or slots pile up.
    if (look_for_dead) retire_if_finished(slot);
  }
  return {};
}

// Retires a bound, mapped slot whose sender is gone and whose records are all finished.
void MailboxShared::retire_if_finished(std::uint32_t slot) {
  const SlotProgress& p = progress[slot];
  const auto& log = logs[slot];
  const std::uint64_t owner = control->slots[slot].owner.load(std::memory_order_acquire);
  const bool gone = owner <= kLeftSlot || !ProcessId::from_packed(owner).alive();
  if (gone && p.log_first == kNoDescriptor &&
      p.scanned.load(std::memory_order_relaxed) == log->header->published.load(std::memory_order_acquire)) {
    retire_slot(slot);
  }
}

// The slot's sender is gone and everything it sent is finished: free it.
void MailboxShared::retire_slot(std::uint32_t slot) {
  // Its slabs first, while the log names it: with them go the chunks it had
  // loaned and not sent (nobody takes a dead sender's log over).
  detail::destroy_slabs(chunk_home(progress[slot].log_id));
  // Unlinking the log next: a retirement cut short by a SIGKILL is then recognised
  // (the bound log is gone, its sender too) and finished by the next receiver.
  (void)::unlink(log_path(dir, progress[slot].log_id).c_str());  // only its owner or the mailbox's may (sticky)
  free_slot(slot);
}

// Forgets a slot's log and gives the slot back to senders. Its share of the
// capacity (admitted minus finished, per log) goes with it.
void MailboxShared::free_slot(std::uint32_t slot) {
  SlotProgress& p = progress[slot];
  p.log_id = 0;
  p.finished.store(0, std::memory_order_relaxed);
  p.finished_bytes.store(0, std::memory_order_relaxed);
  logs[slot].reset();
  control->slots[slot].admitted.store(0, std::memory_order_relaxed);
  control->slots[slot].admitted_bytes.store(0, std::memory_order_relaxed);
  control->slots[slot].log_id.store(0, std::memory_order_release);
  control->slots[slot].owner.store(0, std::memory_order_release);
  control->senders_changed.fetch_add(1, std::memory_order_seq_cst);
}

// Turns the records published since the last look into queued descriptors,
// oldest first per sender. Every header is read once and checked.
result<void> MailboxShared::index_new_records() {
  const std::uint64_t mask = log_capacity - 1;
  for (std::uint32_t slot = 0; slot < mapped_limit; ++slot) {
    SlotProgress& p = progress[slot];
    const auto& log = logs[slot];
    if (p.log_id == 0 || !log || log->log_id != p.log_id) continue;
    const std::uint64_t published = log->header->published.load(std::memory_order_seq_cst);
    std::uint64_t scanned = p.scanned.load(std::memory_order_relaxed);
    if (published - scanned > log_capacity) return corrupt("sender slot " + std::to_string(slot) + ": published is out of bounds");
    while (scanned != published) {
      const std::uint64_t offset = scanned & mask;
      const std::byte* record = log->records + offset;
      const std::uint64_t commit = std::atomic_ref<const std::uint64_t>(*reinterpret_cast<const std::uint64_t*>(record))
                                       .load(std::memory_order_acquire);
      const auto tag = static_cast<std::uint32_t>(commit >> 32);
      const auto length = static_cast<std::uint32_t>(commit);
      if ((tag & ~kLogWrapBit) != log_record_tag(scanned)) {
        return corrupt("sender slot " + std::to_string(slot) + ": no record where its log says one is");
      }
      if (tag & kLogWrapBit) {
        if (length != log_capacity - offset - kLogRecordHeader) return corrupt("a bad wrap record");
        scanned += log_capacity - offset;
        p.scanned.store(scanned, std::memory_order_relaxed);
        continue;
      }
      const bool loaned = (length & kLogChunkBit) != 0;
      const std::uint64_t record_bytes = loaned ? sizeof(ChunkRef) : length;
      if ((loaned ? length != (sizeof(ChunkRef) | kLogChunkBit) : length > max_message) ||
          offset + log_record_size(record_bytes) > log_capacity) {
        return corrupt("sender slot " + std::to_string(slot) + ": a record of " + std::to_string(length) +
                       " bytes at offset " + std::to_string(offset));
      }
      // A loaned message counts its payload; the reference itself is checked when it is received.
      std::uint64_t size = length;
      if (loaned) {
        std::memcpy(&size, record + kLogRecordHeader + offsetof(ChunkRef, size), 8);
        if (size > loan_limit) {
          return corrupt("sender slot " + std::to_string(slot) + ": a loaned message of " + std::to_string(size) +
                         " bytes, beyond the loan limit");
        }
      }
      std::uint64_t sequence = 0, packed = 0;
      std::memcpy(&sequence, record + 8, 8);
      std::memcpy(&packed, record + 16, 8);
      const auto level = static_cast<std::uint8_t>(packed >> 48);
      const auto flags = static_cast<std::uint8_t>(packed >> 56);
      const std::uint32_t index = allocate_descriptor();
      if (index == kNoDescriptor) return {};  // all in use: the rest waits in the log
      Descriptor& d = descriptors[index];
      d.slot = slot;
      d.position = scanned;
      d.sequence = sequence;
      d.length = static_cast<std::uint32_t>(size);
      d.flags = loaned ? kDescriptorChunk : 0;
      d.priority = static_cast<std::uint8_t>(std::min<unsigned>(level, kPriorityLevels - 1));
      d.level = (flags & kRecordUrgent) ? static_cast<std::uint8_t>(kUrgentLevel) : d.priority;
      d.deliveries = 0;
      d.lessee = 0;
      d.lease = 0;
      d.log_next = kNoDescriptor;
      d.state = DescriptorState::queued;
      push_level(index, false);
      if (p.log_last == kNoDescriptor || p.log_last >= descriptor_count) p.log_first = index;
      else descriptors[p.log_last].log_next = index;
      p.log_last = index;
      add(queue->queued, 1);
      scanned += log_record_size(record_bytes);
      p.scanned.store(scanned, std::memory_order_relaxed);
    }
  }
  return {};
}

// Names this receiver in the queue (for stats), once: a free entry or a dead
// receiver's. With every entry taken by a live receiver it stays unnamed.
void MailboxShared::attach_receiver() {
  const ProcessId me = ProcessId::current();
  if (receiver_entry < kReceiverEntries &&
      queue->receivers[receiver_entry].load(std::memory_order_relaxed) == me.packed()) {
    return;
  }
  receiver_entry = kReceiverEntries;
  for (std::uint32_t i = 0; i < kReceiverEntries; ++i) {
    const std::uint64_t holder = queue->receivers[i].load(std::memory_order_relaxed);
    if (holder == 0 || !ProcessId::from_packed(holder).alive()) {
      queue->receiver_uids[i].store(::geteuid(), std::memory_order_relaxed);
      queue->receivers[i].store(me.packed(), std::memory_order_release);
      receiver_entry = i;
      return;
    }
  }
}

// Leases of dead receivers go back to the front of their level.
void MailboxShared::check_leases(bool force) {
  if (queue->leased.load(std::memory_order_relaxed) == 0) return;
  const auto now = steady_clock::now();
  if (!force && now < next_lease_check) return;
  next_lease_check = now + kLeaseCheckInterval;
  std::map<std::uint64_t, bool> alive;
  for (std::uint32_t i = 0; i < pool_size(); ++i) {
    Descriptor& d = descriptors[i];
    if (d.state != DescriptorState::leased) continue;
    auto [seen, inserted] = alive.try_emplace(d.lessee, false);
    if (inserted) seen->second = d.lessee > kLeftSlot && ProcessId::from_packed(d.lessee).alive();
    if (!seen->second) requeue_front(i);
  }
}

// Whether a receiver has something to do: read without the lock, for waiting.
bool MailboxShared::has_work() const {
  if (queue->queued.load(std::memory_order_seq_cst) > 0) return true;
  if (control->senders_changed.load(std::memory_order_seq_cst) != senders_seen) return true;
  for (std::uint32_t slot = 0; slot < mapped_limit; ++slot) {
    const auto& log = logs[slot];
    if (!log) continue;
    const std::uint64_t scanned = progress[slot].scanned.load(std::memory_order_relaxed);
    // The next record's lines, fetched while polling: when `published` moves
    // they are on their way already instead of queueing behind its miss.
    const std::byte* record = log->records + (scanned & (log_capacity - 1));
    __builtin_prefetch(record);
    __builtin_prefetch(record + 64);
    if (log->header->published.load(std::memory_order_seq_cst) != scanned) return true;
  }
  return false;
}

// ------------------------------------------------------------ sending side

result<void> MailboxShared::register_sender() {
  if (!may_send) return error(errc::permission_denied, description, "its mode does not let this user send");
  const ProcessId me = ProcessId::current();
  const auto claim_slot = [&] {
    for (std::uint32_t i = 0; i < max_senders; ++i) {
      std::uint64_t expected = 0;
      if (control->slots[i].owner.compare_exchange_strong(expected, me.packed(), std::memory_order_seq_cst)) return i;
    }
    return max_senders;
  };
  std::uint32_t slot = claim_slot();
  if (slot == max_senders && may_receive) {
    // Perhaps taken by dead senders whose messages are all received and no
    // receiver has looked since: look now, as a receiver would.
    if (lock_queue(std::nullopt)) {
      (void)bind_senders(/*sweep=*/true);
      unlock_queue();
      slot = claim_slot();
    }
  }
  if (slot < max_senders) {
    std::uint32_t limit = control->slot_limit.load(std::memory_order_relaxed);
    while (limit < slot + 1 && !control->slot_limit.compare_exchange_weak(limit, slot + 1)) {
    }
  }
  if (slot == max_senders) {
    return error(errc::limit_reached, description,
                 "all " + std::to_string(max_senders) + " sender slots are taken (senders whose messages are still queued keep theirs)");
  }
  std::random_device random;
  const std::uint64_t log_id = (std::uint64_t{random()} << 32 | random()) | 1;
  const std::string path = log_path(dir, log_id);
  SegmentOptions options{.kind = SegmentKind::file,
                         .size = kSenderLogRecords + log_capacity,
                         .persistence = Persistence::filesystem,
                         .mode = log_mode(mode),
                         .object_type = ObjectType::mailbox_sender};
  if (sparse_log()) options.sparse_after = kSenderLogRecords;  // grow_log does the rest
  options.initialize = [&](std::span<std::byte> data) {
    auto* header = new (data.data()) SenderLogHeader{};
    header->magic = kSenderLogMagic;
    header->layout_version = kMailboxLayoutVersion;
    header->slot = slot;
    header->log_id = log_id;
    header->capacity = log_capacity;
    header->pid = ::getpid();
  };
  auto segment = Segment::create(path, options);
  if (!segment) {
    control->slots[slot].owner.store(0, std::memory_order_seq_cst);
    return error(segment.error().code(), description, "cannot create this sender's log: " + segment.error().message());
  }
  // The record lock is the kernel's word for which process writes this log.
  struct flock lock{};
  lock.l_type = F_WRLCK;
  lock.l_whence = SEEK_SET;
  lock.l_start = 0;
  lock.l_len = 1;
  if (::fcntl(segment->fd().get(), F_SETLK, &lock) != 0) {
    const int saved = errno;
    (void)::unlink(path.c_str());
    control->slots[slot].owner.store(0, std::memory_order_seq_cst);
    return error(errc::system, description, "cannot lock this sender's log", saved);
  }
  struct stat facts{};
  (void)::fstat(segment->fd().get(), &facts);
  const auto data = segment->data();
  own.emplace(OwnLog{.slot = slot,
                     .log_id = log_id,
                     .segment = std::move(*segment),
                     .header = reinterpret_cast<SenderLogHeader*>(data.data()),
                     .records = data.data() + kSenderLogRecords,
                     .dev = static_cast<std::uint64_t>(facts.st_dev),
                     .ino = static_cast<std::uint64_t>(facts.st_ino),
                     .owner = me});
  own->chunks = std::make_shared<ChunkPool>(chunk_home(log_id), own->header->slabs, loan_limit);
  {
    auto& own_logs = OwnLogs::instance();
    std::lock_guard guard(own_logs.mutex);
    own_logs.parked[{own->dev, own->ino}];  // marks it as this process's own
  }
  control->slots[slot].admitted.store(0, std::memory_order_relaxed);
  control->slots[slot].admitted_bytes.store(0, std::memory_order_relaxed);
  control->slots[slot].log_id.store(log_id, std::memory_order_seq_cst);
  control->senders_changed.fetch_add(1, std::memory_order_seq_cst);
  control->data_ready.notify_all();
  return {};
}

// Where this sender may write up to (exclusive: position + capacity).
std::uint64_t MailboxShared::reclaim_position() const {
  const SlotProgress& p = progress[own->slot];
  if (p.log_id != own->log_id) return 0;  // not bound yet: nothing was finished
  return p.reclaim.load(std::memory_order_seq_cst);
}

namespace {

// Sparse logs grow and shrink in chunks of this many bytes.
constexpr std::uint64_t kLogChunk = std::uint64_t{1} << 20;

}  // namespace

// Calls `apply(offset, length)` for the log bytes of absolute positions
// [from, to), split where the ring wraps.
template <class Apply>
auto for_log_range(std::uint64_t from, std::uint64_t to, std::uint64_t capacity, Apply&& apply) {
  const std::uint64_t offset = from & (capacity - 1);
  const std::uint64_t length = to - from;
  const std::uint64_t first = std::min(length, capacity - offset);
  auto done = apply(kSenderLogRecords + offset, first);
  if (!done || first == length) return done;
  return apply(kSenderLogRecords, length - first);
}

// Makes sure the log's memory exists up to position `until` (whole chunks).
result<void> MailboxShared::grow_log(std::uint64_t until) {
  if (!sparse_log() || until <= own->reserved_until) return {};
  const std::uint64_t chunk = std::min(kLogChunk, log_capacity);
  const std::uint64_t target = (until + chunk - 1) / chunk * chunk;
  auto reserved = for_log_range(own->reserved_until, target, log_capacity, [&](std::uint64_t offset, std::uint64_t length) {
    return own->segment.reserve(offset, length);
  });
  if (!reserved) {
    return error(errc::no_space, description, "the system has no memory left for this message: " + reserved.error().message());
  }
  own->reserved_until = target;
  return {};
}

// Gives back the memory of whole chunks the receivers are done with.
void MailboxShared::shrink_log(std::uint64_t reclaim) {
  if (!sparse_log()) return;
  const std::uint64_t chunk = std::min(kLogChunk, log_capacity);
  const std::uint64_t target = reclaim / chunk * chunk;
  if (target <= own->released_until) return;
  (void)for_log_range(own->released_until, target, log_capacity, [&](std::uint64_t offset, std::uint64_t length) {
    return own->segment.release(offset, length);
  });
  own->released_until = target;
}

MailboxShared::~MailboxShared() {
  notify.stop();
  if (receiver_entry < kReceiverEntries) {
    std::uint64_t me = ProcessId::current().packed();
    queue->receivers[receiver_entry].compare_exchange_strong(me, 0, std::memory_order_relaxed);
  }
  for (auto& log : logs) {
    if (!log) continue;
    // Never close a descriptor of this process's own live log (see OwnLogs).
    auto& own_logs = OwnLogs::instance();
    std::lock_guard guard(own_logs.mutex);
    auto found = own_logs.parked.find({log->dev, log->ino});
    if (found != own_logs.parked.end()) found->second.push_back(std::move(log->segment));
  }
  logs.clear();
  if (own) {
    const std::uint32_t slot = own->slot;
    {
      auto& own_logs = OwnLogs::instance();
      std::lock_guard guard(own_logs.mutex);
      own_logs.parked.erase({own->dev, own->ino});
    }
    std::uint64_t me = own->owner.packed();
    control->slots[slot].owner.compare_exchange_strong(me, kLeftSlot, std::memory_order_seq_cst);
    control->senders_changed.fetch_add(1, std::memory_order_seq_cst);
    control->data_ready.notify_all();
    own.reset();
  }
  if (process_persistent) {
    (void)control_segment->detach();
    // The last participant took the control file with it: remove the rest.
    if (::access((dir + "/control").c_str(), F_OK) != 0 && errno == ENOENT) (void)Mailbox::destroy(name);
  }
}

}  // namespace detail
}  // namespace ferry

namespace ferry {

using detail::Descriptor;
using detail::DescriptorState;
using detail::MailboxControl;
using detail::MailboxQueue;
using detail::MailboxShared;
using detail::SlotProgress;

namespace {

using detail::kLevels;
using detail::kNoDescriptor;

result<std::shared_ptr<MailboxShared>> adopt(std::string name, std::string dir, Segment control_segment,
                                             bool process_persistent) {
  auto shared = std::make_shared<MailboxShared>();
  shared->name = std::move(name);
  shared->dir = std::move(dir);
  shared->description = std::make_shared<const std::string>("mailbox '" + shared->name + "'");
  const auto data = control_segment.data();
  auto* control = reinterpret_cast<MailboxControl*>(data.data());
  if (data.size() < offsetof(MailboxControl, slots)) return shared->corrupt("too small for a mailbox header");
  if (control->magic != detail::kMailboxMagic) return shared->corrupt("not a mailbox (bad magic)");
  if (control->layout_version != detail::kMailboxLayoutVersion) {
    return error(errc::version_mismatch, shared->description,
                 "mailbox layout version " + std::to_string(control->layout_version) + ", this ferry reads " +
                     std::to_string(detail::kMailboxLayoutVersion));
  }
  shared->kind = control->capacity_kind;
  shared->count = control->capacity_count;
  shared->memory_limit = control->memory_limit;
  shared->max_message = control->max_message;
  shared->max_senders = control->max_senders;
  shared->descriptor_count = control->descriptors;
  shared->log_capacity = control->log_capacity;
  shared->loan_threshold = control->loan_threshold;  // any value means something
  shared->loan_limit = control->loan_limit;
  shared->mode = control->mode & 0777;
  if (shared->kind < detail::CapacityKind::rendezvous || shared->kind > detail::CapacityKind::unbounded ||
      shared->max_senders == 0 || shared->max_senders > detail::kMaxMailboxSenders ||
      data.size() < detail::control_size(shared->max_senders) || shared->descriptor_count == 0 ||
      !std::has_single_bit(shared->log_capacity) || shared->log_capacity > (std::uint64_t{1} << 34) ||
      detail::log_record_size(shared->max_message) * 2 > shared->log_capacity) {
    return shared->corrupt("geometry out of bounds");
  }
  if (shared->loan_limit < (std::uint64_t{1} << detail::kMinChunkShift) ||
      shared->loan_limit > detail::kMaxMailboxLoanLimit) {
    return shared->corrupt("loan limit out of bounds");
  }
  shared->control = control;
  shared->control_segment.emplace(std::move(control_segment));
  shared->process_persistent = process_persistent;
  shared->may_send = ::faccessat(AT_FDCWD, shared->dir.c_str(), W_OK | X_OK, AT_EACCESS) == 0;
  const std::string queue_path = shared->dir + "/queue";
  shared->may_receive = ::faccessat(AT_FDCWD, queue_path.c_str(), W_OK, AT_EACCESS) == 0;
  auto queue = Segment::open(queue_path, {.kind = SegmentKind::file,
                                          .access = shared->may_receive ? Access::read_write : Access::read_only,
                                          .allow_foreign_owner = true,
                                          .object_type = ObjectType::mailbox_queue});
  if (!queue) return error(queue.error().code(), shared->description, "its queue: " + queue.error().message());
  const auto queue_data = queue->data();
  if (queue_data.size() != detail::queue_size(shared->max_senders, shared->descriptor_count)) {
    return shared->corrupt("the queue has the wrong size");
  }
  shared->queue = reinterpret_cast<MailboxQueue*>(queue_data.data());
  if (shared->queue->magic != detail::kQueueMagic || shared->queue->descriptors != shared->descriptor_count ||
      shared->queue->max_senders != shared->max_senders) {
    return shared->corrupt("the queue fails its header checks");
  }
  shared->progress = reinterpret_cast<SlotProgress*>(queue_data.data() + detail::queue_slots_offset());
  shared->descriptors =
      reinterpret_cast<Descriptor*>(queue_data.data() + detail::queue_descriptors_offset(shared->max_senders));
  shared->queue_segment.emplace(std::move(*queue));
  shared->logs.resize(shared->max_senders);
  return shared;
}

// Removes a directory's files, then the directory.
result<void> remove_directory(const std::string& dir, const std::shared_ptr<const std::string>& description) {
  DIR* listing = ::opendir(dir.c_str());
  if (listing == nullptr) {
    if (errno == ENOENT) return error(errc::not_found, description, "no such mailbox", ENOENT);
    return error::from_errno(errno, *description, "opendir " + dir);
  }
  int failure = 0;
  while (const dirent* entry = ::readdir(listing)) {
    const std::string file = entry->d_name;
    if (file == "." || file == "..") continue;
    if (::unlink((dir + "/" + file).c_str()) != 0 && errno != ENOENT) failure = errno;
  }
  ::closedir(listing);
  if (::rmdir(dir.c_str()) != 0 && errno != ENOENT) failure = errno;
  if (failure != 0) {
    return error(failure == EACCES || failure == EPERM ? errc::permission_denied : errc::system, description,
                 "cannot remove all of " + dir, failure);
  }
  return {};
}

}  // namespace

// ----------------------------------------------------------------- Mailbox

result<Mailbox> Mailbox::create(std::string_view name, const MailboxOptions& options) {
  const std::string description = "mailbox '" + std::string(name) + "'";
  if (auto valid = detail::validate_name(name, description); !valid) return valid.error();
  const Capacity& capacity = options.capacity;
  if (capacity.max_message > (std::size_t{1} << 30)) {
    return error(errc::invalid_argument, description, "max_message is beyond 1 GiB");
  }
  if (options.max_senders == 0 || options.max_senders > detail::kMaxMailboxSenders) {
    return error(errc::invalid_argument, description,
                 "max_senders must be 1.." + std::to_string(detail::kMaxMailboxSenders));
  }
  if (options.mode & ~mode_t{0777}) return error(errc::invalid_argument, description, "mode has bits outside 0777");
  if (options.loans.limit < (std::size_t{1} << detail::kMinChunkShift) ||
      options.loans.limit > detail::kMaxMailboxLoanLimit) {
    return error(errc::invalid_argument, description, "loans.limit must be 4 KiB .. 2 GiB");
  }
  const bool filesystem = name.front() == '/';
  if (filesystem != (options.persistence == Persistence::filesystem) && options.persistence != Persistence::process) {
    return error(errc::invalid_argument, description,
                 "filesystem persistence needs a path ('/...'), kernel persistence a name");
  }
  const std::uint64_t record = detail::log_record_size(capacity.max_message);
  std::uint64_t log_bytes = 0;
  std::uint64_t descriptors = 0;
  detail::CapacityKind kind{};
  switch (capacity.kind) {
    case Capacity::Kind::rendezvous:
      kind = detail::CapacityKind::rendezvous;
      log_bytes = 4 * record;
      descriptors = options.max_senders * 2;
      break;
    case Capacity::Kind::bounded:
      if (capacity.count == 0) return error(errc::invalid_argument, description, "bounded capacity of 0 messages");
      kind = detail::CapacityKind::bounded;
      log_bytes = (capacity.count + 1) * record;
      descriptors = capacity.count;
      break;
    case Capacity::Kind::unbounded:
      if (capacity.memory_limit < capacity.max_message) {
        return error(errc::invalid_argument, description, "memory_limit is smaller than max_message");
      }
      kind = detail::CapacityKind::unbounded;
      // Virtual room for the limit in 64-byte records of tiny messages; the
      // memory is allocated as messages come and given back as they go.
      log_bytes = 2 * capacity.memory_limit + 2 * record;
      descriptors = std::min<std::uint64_t>(capacity.memory_limit / 64 + 1, 1u << 22);
      break;
  }
  log_bytes = std::bit_ceil(std::max<std::uint64_t>({log_bytes, 2 * record, 4096}));
  if (log_bytes > (std::uint64_t{1} << 34) || descriptors > (1u << 24)) {
    return error(errc::invalid_argument, description, "the capacity asks for more than 16 GiB per sender");
  }

  const std::string dir = detail::directory_of(name);
  if (::mkdir(dir.c_str(), 0700) != 0) {
    if (errno == EEXIST) return error(errc::already_exists, description, "it exists already", EEXIST);
    return error::from_errno(errno, description, "mkdir " + dir);
  }
  auto shared_description = std::make_shared<const std::string>(description);
  auto undo = [&](error failure) -> error {
    (void)remove_directory(dir, shared_description);
    return failure;
  };
  if (::chmod(dir.c_str(), detail::directory_mode(options.mode)) != 0) {
    return undo(error::from_errno(errno, description, "chmod " + dir));
  }
  const auto max_senders = options.max_senders;
  const auto descriptor_count = static_cast<std::uint32_t>(descriptors);
  SegmentOptions queue_options{.kind = SegmentKind::file,
                               .size = detail::queue_size(max_senders, descriptor_count),
                               .persistence = Persistence::filesystem,
                               .mode = detail::queue_mode(options.mode),
                               .object_type = ObjectType::mailbox_queue};
  // Unbounded: descriptors are allocated as the pool is first used.
  if (kind == detail::CapacityKind::unbounded) queue_options.sparse_after = detail::queue_descriptors_offset(max_senders);
  queue_options.initialize = [&](std::span<std::byte> data) {
    auto* queue = new (data.data()) MailboxQueue{};
    queue->magic = detail::kQueueMagic;
    queue->layout_version = detail::kMailboxLayoutVersion;
    queue->descriptors = descriptor_count;
    queue->max_senders = max_senders;
    queue->order_back = std::uint64_t{1} << 62;
    queue->order_front = (std::uint64_t{1} << 62) - 1;
    new (&queue->lock) SpinLock(name);
    for (auto& level : queue->levels) level = {kNoDescriptor, kNoDescriptor};
    auto* progress = reinterpret_cast<SlotProgress*>(data.data() + detail::queue_slots_offset());
    for (std::uint32_t i = 0; i < max_senders; ++i) {
      new (&progress[i]) SlotProgress{};
      progress[i].log_first = progress[i].log_last = kNoDescriptor;
    }
    queue->free_first = kNoDescriptor;  // the pool is handed out from its start (pool_used)
  };
  if (auto queue = Segment::create(dir + "/queue", queue_options); !queue) return undo(queue.error());

  SegmentOptions control_options{.kind = SegmentKind::file,
                                 .size = detail::control_size(max_senders),
                                 .persistence = options.persistence == Persistence::process ? Persistence::process
                                                                                            : Persistence::filesystem,
                                 .mode = detail::control_mode(options.mode),
                                 .max_attachments = 1024,
                                 .object_type = ObjectType::mailbox};
  control_options.initialize = [&](std::span<std::byte> data) {
    auto* control = new (data.data()) MailboxControl{};
    control->magic = detail::kMailboxMagic;
    control->layout_version = detail::kMailboxLayoutVersion;
    control->capacity_kind = kind;
    control->capacity_count = capacity.kind == Capacity::Kind::bounded ? capacity.count : 0;
    control->memory_limit = capacity.kind == Capacity::Kind::unbounded ? capacity.memory_limit : 0;
    control->max_message = static_cast<std::uint32_t>(capacity.max_message);
    control->max_senders = max_senders;
    control->log_capacity = log_bytes;
    control->descriptors = descriptor_count;
    control->mode = options.mode;
    control->label = detail::Label(name);
    control->loan_threshold = options.loans.threshold;
    control->loan_limit = options.loans.limit;
    new (&control->admission) SpinLock(name);
    for (std::uint32_t i = 0; i < max_senders; ++i) new (&control->slots[i]) detail::SenderSlot{};
  };
  auto control = Segment::create(dir + "/control", control_options);
  if (!control) return undo(control.error());
  auto shared = adopt(std::string(name), dir, std::move(*control), options.persistence == Persistence::process);
  if (!shared) return undo(shared.error());
  return Mailbox(std::move(*shared));
}

result<Mailbox> Mailbox::open(std::string_view name, const MailboxOpenOptions& options) {
  const std::string description = "mailbox '" + std::string(name) + "'";
  if (auto valid = detail::validate_name(name, description); !valid) return valid.error();
  const std::string dir = detail::directory_of(name);
  struct stat facts{};
  if (::stat(dir.c_str(), &facts) != 0) {
    if (errno == ENOENT) return error(errc::not_found, description, "no such mailbox", ENOENT);
    return error::from_errno(errno, description, "stat " + dir);
  }
  if (!S_ISDIR(facts.st_mode)) return error(errc::invalid_argument, description, dir + " is not a mailbox directory");
  if (facts.st_uid != ::geteuid() && !options.allow_foreign_owner) {
    return error(errc::permission_denied, description,
                 "owned by uid " + std::to_string(facts.st_uid) + ", not by uid " + std::to_string(::geteuid()) +
                     " (allow_foreign_owner opens it anyway)");
  }
  auto control = Segment::open(dir + "/control", {.kind = SegmentKind::file,
                                                  .allow_foreign_owner = true,
                                                  .object_type = ObjectType::mailbox});
  if (!control) return error(control.error().code(), description, control.error().message());
  const bool process_persistent = control->info().persistence == Persistence::process;
  auto shared = adopt(std::string(name), dir, std::move(*control), process_persistent);
  if (!shared) return std::move(shared).error();
  return Mailbox(std::move(*shared));
}

result<Mailbox> Mailbox::open_or_create(std::string_view name, const MailboxOptions& options) {
  // create() makes the directory first and links the control file last:
  // until then open() says not_found while create() finds the name taken.
  // Both are tried again then, create first: the mailbox may also have been
  // removed meanwhile (its last process left).
  const deadline give_up = deadline_after(kCreationWait);
  for (auto pause = std::chrono::microseconds(20);; pause = std::min(2 * pause, std::chrono::microseconds(5000))) {
    auto created = create(name, options);
    if (created || created.error().code() != errc::already_exists) return created;
    auto opened = open(name);
    if (opened || opened.error().code() != errc::not_found) return opened;
    if (steady_clock::now() >= give_up) {
      return error(errc::timed_out, "mailbox '" + std::string(name) + "'",
                   "it exists, but its creation did not complete within " + std::to_string(kCreationWait.count()) +
                       " s (a creator that died midway leaves it so: remove it with ferry rm)");
    }
    std::this_thread::sleep_for(pause);
  }
}

result<void> Mailbox::destroy(std::string_view name) {
  const std::string description = "mailbox '" + std::string(name) + "'";
  if (auto valid = detail::validate_name(name, description); !valid) return valid.error();
  return remove_directory(detail::directory_of(name), std::make_shared<const std::string>(description));
}

Mailbox::Mailbox(Mailbox&&) noexcept = default;
Mailbox& Mailbox::operator=(Mailbox&&) noexcept = default;
Mailbox::~Mailbox() = default;

const std::string& Mailbox::name() const noexcept { return shared_->name; }
std::size_t Mailbox::max_message() const noexcept { return shared_->max_message; }

result<void> Mailbox::sync() {
  MailboxShared& s = *shared_;
  if (auto synced = s.control_segment->sync(); !synced) return synced;
  if (s.queue_segment && s.may_receive) {
    if (auto synced = s.queue_segment->sync(); !synced) return synced;
  }
  if (s.own) return s.own->segment.sync();
  return {};
}

// ---------------------------------------------------------------- sending

namespace {

// Messages (and bytes) in the mailbox: per slot, admitted minus finished.
// With `fresh` false, this sender's own share uses what it saw last (see OwnLog).
std::pair<std::uint64_t, std::uint64_t> outstanding(MailboxShared& s, bool fresh = true) {
  std::uint64_t messages = 0, bytes = 0;
  const std::uint32_t limit = s.claimed_slots();
  for (std::uint32_t i = 0; i < limit; ++i) {
    const auto& slot = s.control->slots[i];
    const std::uint64_t admitted = slot.admitted.load(std::memory_order_seq_cst);
    if (admitted == 0) continue;
    const std::uint64_t admitted_bytes = slot.admitted_bytes.load(std::memory_order_seq_cst);
    const SlotProgress& p = s.progress[i];
    std::uint64_t finished = 0, finished_bytes = 0;
    detail::OwnLog* own = s.own && s.own->slot == i ? &*s.own : nullptr;
    if (own && !fresh) {
      finished = own->finished_seen;
      finished_bytes = own->finished_bytes_seen;
    } else if (p.log_id != 0 && p.log_id == slot.log_id.load(std::memory_order_relaxed)) {
      finished = p.finished.load(std::memory_order_seq_cst);
      finished_bytes = p.finished_bytes.load(std::memory_order_seq_cst);
      if (own) {
        own->finished_seen = finished;
        own->finished_bytes_seen = finished_bytes;
      }
    }
    messages += admitted > finished ? admitted - finished : 0;
    bytes += admitted_bytes > finished_bytes ? admitted_bytes - finished_bytes : 0;
  }
  return {messages, bytes};
}

// Whether one more message of `size` bytes fits the capacity (`held`: how
// many messages the mailbox holds now).
bool capacity_allows(MailboxShared& s, std::size_t size, std::uint64_t* held = nullptr, bool fresh = true) {
  if (s.kind == detail::CapacityKind::rendezvous) return true;  // one at a time per sender: see send_impl
  const auto [messages, bytes] = outstanding(s, fresh);
  if (held) *held = messages;
  if (messages + 1 > s.descriptor_count) return false;
  if (s.kind == detail::CapacityKind::bounded) return messages < s.count;
  return bytes + size <= s.memory_limit;
}

}  // namespace

namespace {

result<void> check_priority(const MailboxShared& s, const SendOptions& options) {
  if (options.priority < Mailbox::kPriorities) return {};
  return error(errc::invalid_argument, s.description,
               "priority " + std::to_string(options.priority) + " is beyond 0.." +
                   std::to_string(Mailbox::kPriorities - 1));
}

}  // namespace

result<bool> Mailbox::send_impl(std::span<const std::byte> message, SendOptions options,
                                std::optional<deadline> until, WaitStrategy strategy, bool wait) {
  MailboxShared& s = *shared_;
  const std::size_t size = message.size();
  if (size > s.max_message && size > s.loan_limit) {
    return error(errc::invalid_argument, s.description,
                 "a message of " + std::to_string(size) + " bytes is larger than its maximum of " +
                     std::to_string(s.max_message) + " (and than its loan limit of " + std::to_string(s.loan_limit) +
                     " bytes)");
  }
  if (size <= s.max_message && (size < s.loan_threshold || size > s.loan_limit)) {
    return send_record(message, nullptr, options, until, strategy, wait);
  }
  // One copy into a chunk instead of one into the log and one out of it.
  if (auto valid = check_priority(s, options); !valid) return valid.error();
  auto loan = loan_impl(size, until, strategy, wait);
  if (!loan) return std::move(loan).error();
  if (!*loan) return false;
  if (size != 0) std::memcpy((*loan)->data().data(), message.data(), size);
  return send_record({}, &**loan, options, until, strategy, wait);
}

result<bool> Mailbox::send_record(std::span<const std::byte> message, Loan* loan, SendOptions options,
                                  std::optional<deadline> until, WaitStrategy strategy, bool wait) {
  MailboxShared& s = *shared_;
  if (auto valid = check_priority(s, options); !valid) return valid.error();
  if (auto registered = s.ensure_sender(); !registered) return registered.error();
  if (loan && (!loan->pool_ || loan->pool_ != s.own->chunks)) {
    return error(errc::invalid_argument, s.description, "a loan this sender did not make (or already sent)");
  }
  // What the capacity counts, and what the record holds (a loan: its reference).
  const std::size_t size = loan ? loan->size() : message.size();
  const std::size_t record_bytes = loan ? sizeof(detail::ChunkRef) : message.size();
  detail::OwnLog& log = *s.own;
  const std::uint64_t mask = s.log_capacity - 1;
  const std::uint64_t need = detail::log_record_size(record_bytes);
  const auto room_needed = [&] {
    const std::uint64_t to_end = s.log_capacity - (log.tail & mask);
    return need <= to_end ? need : to_end + need;
  };
  const auto log_room = [&](bool fresh) {
    if (fresh) log.reclaim_seen = s.reclaim_position();
    return s.log_capacity - (log.tail - log.reclaim_seen);
  };
  std::uint64_t queued_before = 0;  // what the last look saw
  const auto fits = [&](bool fresh) {
    return log_room(fresh) >= room_needed() && capacity_allows(s, size, &queued_before, fresh);
  };
  // What it saw last first (no line pulled from the receivers), then fresh.
  const auto can_go = [&] { return fits(false) || fits(true); };

  // A sparse log: memory for the record first (and back what receivers
  // freed), so that a full system is an error before anything is admitted.
  if (s.sparse_log() && log.tail + room_needed() > log.reserved_until) {
    log.reclaim_seen = s.reclaim_position();  // once per chunk: give back behind, then grow ahead
    s.shrink_log(log.reclaim_seen);
    if (auto grown = s.grow_log(log.tail + room_needed()); !grown) return grown.error();
  }

  // Admission, under the control spin lock so that two senders cannot both
  // take the last place. Waiting happens outside it.
  for (;;) {
    auto locked = s.control->admission.lock();
    if (!locked && locked.error().code() != errc::owner_died) return locked.error();
    // (A holder's death needs no repair: the counters are per slot.)
    if (can_go()) {
      auto& slot = s.control->slots[log.slot];
      // Only this sender writes its slot, and only under the lock that
      // every reader of it holds: plain adds.
      MailboxShared::add(slot.admitted_bytes, size);
      MailboxShared::add(slot.admitted, 1);
      if (queued_before + 1 > s.control->high_water.load(std::memory_order_relaxed)) {
        s.control->high_water.store(queued_before + 1, std::memory_order_relaxed);  // written under the lock only
      }
      (void)s.control->admission.unlock();
      break;
    }
    const bool over_limit = s.kind == detail::CapacityKind::unbounded && !capacity_allows(s, size);
    (void)s.control->admission.unlock();
    if (over_limit) {
      // Unbounded never makes a sender wait: past its limit is an error.
      const auto [messages, bytes] = outstanding(s);
      return error(errc::limit_reached, s.description,
                   "it holds " + std::to_string(messages) + " messages of " + std::to_string(bytes) +
                       " bytes; " + std::to_string(size) + " more would pass its memory limit of " +
                       std::to_string(s.memory_limit) + " bytes");
    }
    if (!wait) return false;
    // Looking costs the receivers: each look pulls the lines they write for
    // every message. A spinning sender looks once per 32 polls (and always
    // before it sleeps: WaitPoint asks again then).
    const deadline slice = until ? std::min(*until, deadline_after(detail::kWaitSlice)) : deadline_after(detail::kWaitSlice);
    std::uint32_t polls = 0;
    const auto room_soon = [&] { return (++polls & 31) == 0 && can_go(); };
    if (strategy.mode != WaitStrategy::Mode::block &&
        spin_until(room_soon,
                   strategy.mode == WaitStrategy::Mode::busy_poll ? std::chrono::nanoseconds::max() : strategy.spin,
                   slice)) {
      continue;
    }
    const auto outcome = strategy.mode == WaitStrategy::Mode::busy_poll
                             ? wait_status::timed_out
                             : s.control->space_ready.wait(can_go, WaitStrategy::block(), slice);
    if (outcome == wait_status::timed_out && until && steady_clock::now() >= *until) {
      return error(errc::timed_out, s.description, "full: no room within the timeout");
    }
  }

  // The record: payload and meta first, the commit word last.
  std::uint64_t offset = log.tail & mask;
  if (need > s.log_capacity - offset) {
    const std::uint64_t to_end = s.log_capacity - offset;
    std::atomic_ref<std::uint64_t>(*reinterpret_cast<std::uint64_t*>(log.records + offset))
        .store((std::uint64_t{detail::log_record_tag(log.tail) | detail::kLogWrapBit} << 32) |
                   (to_end - detail::kLogRecordHeader),
               std::memory_order_release);
    log.tail += to_end;
    offset = 0;
  }
  std::byte* record = log.records + offset;
  const std::uint64_t sequence = ++log.sequence;
  const std::uint64_t packed = (log.bytes & ((std::uint64_t{1} << 48) - 1)) |
                               (std::uint64_t{options.priority} << 48) |
                               (std::uint64_t{options.urgent ? detail::kRecordUrgent : std::uint8_t{0}} << 56);
  std::memcpy(record + 8, &sequence, 8);
  std::memcpy(record + 16, &packed, 8);
  std::uint32_t length = static_cast<std::uint32_t>(record_bytes);
  if (loan) {
    std::memcpy(record + detail::kLogRecordHeader, &loan->ref_, sizeof(detail::ChunkRef));
    // Marked before the record is published: the chunk is the receivers' from then on.
    log.chunks->mark_sent(loan->ref_, log.tail);
    length |= detail::kLogChunkBit;
  } else if (!message.empty()) {
    std::memcpy(record + detail::kLogRecordHeader, message.data(), message.size());
  }
  std::atomic_ref<std::uint64_t>(*reinterpret_cast<std::uint64_t*>(record))
      .store((std::uint64_t{detail::log_record_tag(log.tail)} << 32) | length, std::memory_order_release);
  log.tail += need;
  log.bytes += size;
  log.header->bytes.store(log.bytes, std::memory_order_relaxed);
  log.header->messages.store(sequence, std::memory_order_relaxed);
  log.header->published.store(log.tail, std::memory_order_release);
  // The one locked instruction of a send: it publishes all of the above to
  // a receiver that reads `sent` (as waiting receivers do) and is
  // WaitPoint's seq_cst write before the check for sleepers.
  s.control->sent.fetch_add(1, std::memory_order_seq_cst);
  s.control->data_ready.notify_all();
  if (loan) loan->pool_.reset();  // sent: the chunk is freed by the receivers' progress, not by the Loan

  if (s.kind != detail::CapacityKind::rendezvous) return true;
  // Rendezvous: back only once a receiver took it.
  const auto taken = [&] {
    const SlotProgress& p = s.progress[log.slot];
    return p.log_id == log.log_id && p.taken.load(std::memory_order_seq_cst) >= sequence;
  };
  while (!taken()) {
    const auto slice = until ? std::min(*until, deadline_after(detail::kWaitSlice)) : deadline_after(detail::kWaitSlice);
    if (s.control->space_ready.wait(taken, strategy, slice) == wait_status::ready) break;
    if (until && steady_clock::now() >= *until) {
      return error(errc::timed_out, s.description,
                   "no receiver took the message within the timeout (it stays queued)");
    }
  }
  return true;
}

result<void> Mailbox::send(std::span<const std::byte> message, SendOptions options, WaitStrategy strategy) {
  auto sent = send_impl(message, options, std::nullopt, strategy, true);
  if (!sent) return std::move(sent).error();
  return {};
}

result<bool> Mailbox::try_send(std::span<const std::byte> message, SendOptions options) {
  return send_impl(message, options, std::nullopt, {}, false);
}

result<void> Mailbox::send_until(std::span<const std::byte> message, deadline until, SendOptions options,
                                 WaitStrategy strategy) {
  auto sent = send_impl(message, options, until, strategy, true);
  if (!sent) return std::move(sent).error();
  return {};
}

// ------------------------------------------------------------------ loans

result<std::optional<Loan>> Mailbox::loan_impl(std::size_t size, std::optional<deadline> until,
                                               WaitStrategy strategy, bool wait) {
  MailboxShared& s = *shared_;
  if (auto registered = s.ensure_sender(); !registered) return registered.error();
  detail::ChunkPool& pool = *s.own->chunks;
  // The receivers' progress through this sender's log frees its chunks.
  std::uint64_t released = s.reclaim_position();
  for (;;) {
    auto taken = pool.take(size, released);
    if (!taken) return std::move(taken).error();
    if (*taken) return std::optional<Loan>(Loan(s.own->chunks, **taken));
    if (!wait) return std::optional<Loan>{};
    const std::uint64_t seen = released;
    const auto freed = [&] { return s.reclaim_position() != seen; };
    const deadline slice = until ? std::min(*until, deadline_after(detail::kWaitSlice)) : deadline_after(detail::kWaitSlice);
    if (s.control->space_ready.wait(freed, strategy, slice) == wait_status::timed_out && until &&
        steady_clock::now() >= *until) {
      return error(errc::timed_out, s.description, "no chunk was freed within the timeout");
    }
    released = s.reclaim_position();
  }
}

result<Loan> Mailbox::loan(std::size_t size, WaitStrategy strategy) {
  auto loaned = loan_impl(size, std::nullopt, strategy, true);
  if (!loaned) return std::move(loaned).error();
  return std::move(**loaned);
}

result<std::optional<Loan>> Mailbox::try_loan(std::size_t size) { return loan_impl(size, std::nullopt, {}, false); }

result<Loan> Mailbox::loan_until(std::size_t size, deadline until, WaitStrategy strategy) {
  auto loaned = loan_impl(size, until, strategy, true);
  if (!loaned) return std::move(loaned).error();
  return std::move(**loaned);
}

result<void> Mailbox::send(Loan&& loan, SendOptions options, WaitStrategy strategy) {
  auto sent = send_record({}, &loan, options, std::nullopt, strategy, true);
  if (!sent) return std::move(sent).error();
  return {};
}

result<bool> Mailbox::try_send(Loan&& loan, SendOptions options) {
  return send_record({}, &loan, options, std::nullopt, {}, false);
}

result<void> Mailbox::send_until(Loan&& loan, deadline until, SendOptions options, WaitStrategy strategy) {
  auto sent = send_record({}, &loan, options, until, strategy, true);
  if (!sent) return std::move(sent).error();
  return {};
}

result<LoanUsage> Mailbox::loan_usage() {
  MailboxShared& s = *shared_;
  // Not a sender (yet, or in this forked child): it holds no chunks.
  if (!s.own || s.own->owner != ProcessId::current()) return LoanUsage{};
  return s.own->chunks->usage(s.reclaim_position());
}

// --------------------------------------------------------------- receiving

result<std::optional<Message>> Mailbox::receive_impl(const ReceiveRequest& request, Leased* leased_out) {
  MailboxShared& s = *shared_;
  const auto& [until, strategy, wait, leased, from] = request;
  if (!s.may_receive) return error(errc::permission_denied, s.description, "its mode does not let this user receive");
  const std::uint64_t mask = s.log_capacity - 1;
  bool force_lease_check = false;
  bool cleared_notify = false;
  // A receive from one sender must not wake for others' messages queued
  // already: it waits for news (a send or a redelivery) instead.
  const auto news = [&] {
    return s.control->sent.load(std::memory_order_seq_cst) + s.queue->redelivered.load(std::memory_order_seq_cst);
  };
  for (;;) {
    // What a wait below waits past: for a receive from one sender, any news
    // since before this look; otherwise set when the look finds nothing.
    std::uint64_t news_before = from ? news() : 0;
    if (auto locked = s.lock_queue(until); !locked) {
      if (locked.error().code() == errc::timed_out) return error(errc::timed_out, s.description, "nothing within the timeout");
      return locked.error();
    }
    struct Unlock {
      MailboxShared& s;
      bool held = true;
      void now() {
        if (held) s.unlock_queue();
        held = false;
      }
      ~Unlock() { now(); }
    } unlock{s};
    s.attach_receiver();
    if (auto bound = s.bind_senders(force_lease_check); !bound) return bound.error();
    if (auto indexed = s.index_new_records(); !indexed) return indexed.error();
    s.check_leases(force_lease_check);
    force_lease_check = false;
    std::optional<std::uint32_t> head = s.take_head(from);
    if (!head && !from) {
      // Nothing: what `sent` counts now was published before it was counted,
      // so one more look covers it, and then nothing waits up to there.
      const std::uint64_t sent_seen = s.control->sent.load(std::memory_order_seq_cst);
      if (auto indexed = s.index_new_records(); !indexed) return indexed.error();
      head = s.take_head(from);
      if (!head) {
        news_before = sent_seen + s.queue->redelivered.load(std::memory_order_relaxed);
        s.queue->settled.store(news_before, std::memory_order_seq_cst);
      }
    }
    if (head) {
      Descriptor& d = s.descriptors[*head];
      const detail::MappedLog* log = d.slot < s.max_senders && s.logs[d.slot] ? &*s.logs[d.slot] : nullptr;
      const std::uint64_t offset = d.position & mask;
      const bool loaned = (d.flags & detail::kDescriptorChunk) != 0;
      const std::uint64_t record_bytes = loaned ? sizeof(detail::ChunkRef) : d.length;
      if (!log || (!loaned && d.length > s.max_message) ||
          offset + detail::log_record_size(record_bytes) > s.log_capacity) {
        return s.corrupt("a queued message points outside its sender's log");
      }
      const std::byte* record = log->records + offset;
      std::uint64_t commit = 0, sequence = 0;
      std::memcpy(&commit, record, 8);
      std::memcpy(&sequence, record + 8, 8);
      const std::uint32_t length = loaned ? sizeof(detail::ChunkRef) | detail::kLogChunkBit : d.length;
      detail::ChunkRef ref{};
      if (loaned) std::memcpy(&ref, record + detail::kLogRecordHeader, sizeof ref);  // read once
      if (commit != ((std::uint64_t{detail::log_record_tag(d.position)} << 32) | length) ||
          sequence != d.sequence || (loaned && ref.size != d.length)) {
        return s.corrupt("a queued message's record was overwritten");
      }
      Message message;
      if (!loaned) message.bytes_.assign({record + detail::kLogRecordHeader, d.length});
      s.begin_step(detail::QueueStep::deliver, *head);
      const SlotProgress& p = s.progress[d.slot];
      message.sender_ = SenderIdentity{p.uid, p.gid, p.pid, p.pid_attested != 0};
      message.priority_ = std::min<unsigned>(d.priority, kPriorities - 1);
      message.urgent_ = d.level == detail::kUrgentLevel;
      message.deliveries_ = ++d.deliveries;
      message.sequence_ = d.sequence;
      if (d.deliveries == 1) s.add(s.progress[d.slot].taken, 1);
      if (leased || loaned) {
        // A loaned message is read outside the lock: under a lease, so that
        // a receiver killed while reading leaves it to the next one.
        d.state = DescriptorState::leased;
        d.lessee = ProcessId::current().packed();
        d.lease = ++s.queue->lease_counter;
        s.add(s.queue->leased, 1);
      } else {
        s.finish(*head);
        s.add(s.queue->received, 1);
      }
      s.end_step();
      const std::uint32_t index = *head;
      const std::uint32_t slot = d.slot;
      const std::uint64_t lease = d.lease;
      unlock.now();
      s.notify_senders();  // room, or a rendezvous sender's message was taken
      if (loaned) {
        std::shared_ptr<detail::ChunkReader> reader;
        auto payload = s.resolve_chunk(slot, ref, &reader);
        if (!payload) {
          // A reference that does not hold (or a slab gone with its sender) is
          // never readable: finished, as if received. Anything else may pass: redelivered.
          const errc code = payload.error().code();
          const bool unreadable = code == errc::corrupt || code == errc::not_found;
          if (auto settled = s.settle(index, lease, unreadable ? MailboxShared::Settle::ack : MailboxShared::Settle::nack);
              !settled) {
            return settled.error();
          }
          return std::move(payload).error();
        }
        if (leased) {
          message.bytes_.borrow(*payload);
          *leased_out = {index, lease, std::move(reader), ref};
          return std::optional<Message>(std::move(message));
        }
        message.bytes_.assign(*payload);  // the one copy out of the chunk
        // Looked at after the copy: a chunk reused under it is never taken for the message.
        const bool intact = reader->still_valid(ref);
        if (auto settled = s.settle(index, lease, MailboxShared::Settle::ack); !settled) return settled.error();
        if (!intact) return s.corrupt("a loaned message's chunk was reused while it was read");
        return std::optional<Message>(std::move(message));
      }
      if (leased) *leased_out = {index, lease, nullptr, {}};
      return std::optional<Message>(std::move(message));
    }
    unlock.now();
    if (!wait) {
      if (!s.notify.running() || cleared_notify) return std::optional<Message>{};
      // Re-arm the descriptor; look once more in case a message came in between.
      s.notify.drained();
      cleared_notify = true;
      if (!s.messages_waiting()) return std::optional<Message>{};
      continue;
    }
    const deadline slice = until ? std::min(*until, deadline_after(detail::kWaitSlice)) : deadline_after(detail::kWaitSlice);
    // has_work sees a new record first (it polls the logs); `news` is what
    // the senders' seq_cst counter promises: a sleeper is woken for it.
    const auto ready = [&] { return (!request.from && s.has_work()) || news() != news_before; };
    if (s.control->data_ready.wait(ready, strategy, slice) == wait_status::timed_out) {
      if (until && steady_clock::now() >= *until) return error(errc::timed_out, s.description, "nothing within the timeout");
      force_lease_check = true;  // a lessee may have died: nobody notifies for that
    }
  }
}

namespace {

std::optional<deadline> unless_forever(deadline until) {
  return until == deadline::max() ? std::nullopt : std::optional<deadline>(until);
}

}  // namespace

result<Message> Mailbox::receive(WaitStrategy strategy) { return receive_until(deadline::max(), strategy); }

result<std::optional<Message>> Mailbox::try_receive() { return receive_impl({.wait = false}, nullptr); }

result<Message> Mailbox::receive_until(deadline until, WaitStrategy strategy) {
  auto received = receive_impl({.until = unless_forever(until), .strategy = strategy}, nullptr);
  if (!received) return std::move(received).error();
  return std::move(**received);
}

result<Message> Mailbox::receive_from(pid_t sender, WaitStrategy strategy) {
  return receive_from_until(sender, deadline::max(), strategy);
}

result<std::optional<Message>> Mailbox::try_receive_from(pid_t sender) {
  return receive_impl({.wait = false, .from = sender}, nullptr);
}

result<Message> Mailbox::receive_from_until(pid_t sender, deadline until, WaitStrategy strategy) {
  auto received = receive_impl({.until = unless_forever(until), .strategy = strategy, .from = sender}, nullptr);
  if (!received) return std::move(received).error();
  return std::move(**received);
}

result<Lease> Mailbox::receive_leased(WaitStrategy strategy) { return receive_leased_until(deadline::max(), strategy); }

Lease Mailbox::make_lease(Message message, Leased leased) {
  Lease lease(shared_, std::move(message), leased.descriptor, leased.lease);
  lease.chunk_reader_ = std::move(leased.chunk_reader);
  lease.chunk_ = leased.chunk;
  return lease;
}

result<std::optional<Lease>> Mailbox::try_receive_leased() {
  Leased leased;
  auto received = receive_impl({.wait = false, .leased = true}, &leased);
  if (!received) return std::move(received).error();
  if (!*received) return std::optional<Lease>{};
  return std::optional<Lease>(make_lease(std::move(**received), std::move(leased)));
}

result<Lease> Mailbox::receive_leased_until(deadline until, WaitStrategy strategy) {
  Leased leased;
  auto received = receive_impl({.until = unless_forever(until), .strategy = strategy, .leased = true}, &leased);
  if (!received) return std::move(received).error();
  return make_lease(std::move(**received), std::move(leased));
}

result<std::size_t> Mailbox::flush(unsigned below) {
  MailboxShared& s = *shared_;
  if (!s.may_receive) return error(errc::permission_denied, s.description, "its mode does not let this user flush it");
  if (auto locked = s.lock_queue(std::nullopt); !locked) return locked.error();
  std::size_t flushed = 0;
  auto indexed = s.bind_senders();
  if (indexed) indexed = s.index_new_records();
  if (indexed) {
    for (unsigned level = 0; level < std::min(below, kPriorities); ++level) {
      auto& list = s.queue->levels[level];
      while (list.first != kNoDescriptor && list.first < s.descriptor_count) {
        const std::uint32_t index = list.first;
        list.first = s.descriptors[index].next;
        if (list.first == kNoDescriptor) list.last = kNoDescriptor;
        s.subtract(s.queue->depth[level], 1);
        s.subtract(s.queue->queued, 1);
        s.begin_step(detail::QueueStep::flush, index);
        s.finish(index);
        s.add(s.queue->flushed, 1);
        s.end_step();
        ++flushed;
      }
    }
  }
  s.unlock_queue();
  if (!indexed) return indexed.error();
  s.notify_senders();
  return flushed;
}

MailboxStats Mailbox::stats() const {
  const MailboxShared& s = *shared_;
  MailboxStats stats;
  stats.name = s.name;
  switch (s.kind) {
    case detail::CapacityKind::rendezvous: stats.capacity = Capacity::rendezvous(s.max_message); break;
    case detail::CapacityKind::bounded: stats.capacity = Capacity::bounded(s.count, s.max_message); break;
    case detail::CapacityKind::unbounded: stats.capacity = Capacity::unbounded(s.memory_limit, s.max_message); break;
  }
  stats.mode = s.mode;
  stats.owner_uid = s.control_segment->info().creator_uid;
  stats.queued = s.queue->queued.load(std::memory_order_relaxed);
  stats.leased = s.queue->leased.load(std::memory_order_relaxed);
  stats.sent = s.control->sent.load(std::memory_order_relaxed);
  stats.received = s.queue->received.load(std::memory_order_relaxed);
  stats.flushed = s.queue->flushed.load(std::memory_order_relaxed);
  // Sent but not yet sorted by a receiver: waiting too (counted at priority
  // 0 in depth[], as their priorities are known only once sorted).
  const std::uint64_t gone = stats.received + stats.flushed + stats.leased + stats.queued;
  stats.unsorted = stats.sent > gone ? stats.sent - gone : 0;
  for (unsigned level = 0; level < kLevels; ++level) stats.depth[level] = s.queue->depth[level].load(std::memory_order_relaxed);
  stats.high_water = s.control->high_water.load(std::memory_order_relaxed);
  stats.redelivered = s.queue->redelivered.load(std::memory_order_relaxed);
  for (std::uint32_t i = 0; i < s.max_senders; ++i) {
    const std::uint64_t owner = s.control->slots[i].owner.load(std::memory_order_relaxed);
    if (owner <= detail::kLeftSlot) continue;
    const ProcessId process = ProcessId::from_packed(owner);
    stats.senders.push_back({process.pid(), s.progress[i].log_id != 0 ? s.progress[i].uid : uid_t{0}, process.alive()});
  }
  for (std::uint32_t i = 0; i < detail::kReceiverEntries; ++i) {
    const std::uint64_t holder = s.queue->receivers[i].load(std::memory_order_acquire);
    if (holder <= detail::kLeftSlot) continue;
    const ProcessId process = ProcessId::from_packed(holder);
    stats.receivers.push_back({process.pid(), s.queue->receiver_uids[i].load(std::memory_order_relaxed), process.alive()});
  }
  return stats;
}

result<int> Mailbox::notify_fd() {
  MailboxShared& s = *shared_;
  if (!s.may_receive) return error(errc::permission_denied, s.description, "its mode does not let this user receive");
  return s.notify.start(s.control->data_ready, [&s] { return s.messages_waiting(); }, *s.description);
}

detail::WaitSource detail::wait_source(Mailbox& mailbox) {
  MailboxShared* s = mailbox.shared_.get();
  return {&s->control->data_ready, [s] { return s->messages_waiting(); }};
}

// ------------------------------------------------------------------- Lease

Lease::Lease(std::shared_ptr<MailboxShared> shared, Message message, std::uint32_t descriptor, std::uint64_t lease) noexcept
    : shared_(std::move(shared)), message_(std::move(message)), descriptor_(descriptor), lease_(lease) {}

Lease::Lease(Lease&& other) noexcept
    : shared_(std::move(other.shared_)), message_(std::move(other.message_)), descriptor_(other.descriptor_),
      lease_(std::exchange(other.lease_, 0)), chunk_reader_(std::move(other.chunk_reader_)), chunk_(other.chunk_) {}

Lease& Lease::operator=(Lease&& other) noexcept {
  if (this != &other) {
    if (lease_ != 0) (void)finish(false);
    shared_ = std::move(other.shared_);
    message_ = std::move(other.message_);
    descriptor_ = other.descriptor_;
    lease_ = std::exchange(other.lease_, 0);
    chunk_reader_ = std::move(other.chunk_reader_);
    chunk_ = other.chunk_;
  }
  return *this;
}

Lease::~Lease() {
  if (lease_ != 0 && shared_) (void)finish(false);
}

result<void> Lease::ack() { return finish(true); }
result<void> Lease::nack() { return finish(false); }

result<void> Lease::finish(bool acknowledged) {
  if (lease_ == 0 || !shared_) {
    return error(errc::invalid_argument, shared_ ? shared_->description : nullptr, "this lease was already acked or nacked");
  }
  const std::uint64_t lease = std::exchange(lease_, 0);
  // Looked at after the reads: a chunk reused under them is reported, never taken for the message.
  const bool intact = !chunk_reader_ || !acknowledged || chunk_reader_->still_valid(chunk_);
  auto settled = shared_->settle(descriptor_, lease, acknowledged ? MailboxShared::Settle::ack : MailboxShared::Settle::nack);
  if (chunk_reader_) {
    message_.bytes_.borrow({});  // the chunk is not this lease's any more
    chunk_reader_.reset();
  }
  if (!settled) return settled;
  if (!intact) return shared_->corrupt("a loaned message's chunk was reused while it was leased");
  return {};
}

}  // namespace ferry
