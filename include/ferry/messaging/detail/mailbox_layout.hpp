// The files of a Mailbox and the bytes inside them. Not API.
//
// A mailbox is a directory (/dev/shm/ferry.<name>/, or a path for file-system
// persistence) holding three kinds of segment, each with its own writers, so
// that the kernel's file permissions enforce who may change what:
//
//   control      written by every participant (senders and receivers):
//                geometry, sender slots, admission counters and the wait
//                points. Nothing in it is trusted for identity or content.
//   queue        written by receivers only (senders map it read-only): the
//                message index, leases, and per-sender progress. A spin
//                lock that notices a dead holder serialises receivers.
//   sender.<n>   one per sender, written by that sender only and readable by
//                those allowed to receive: its messages, in a log. The
//                file's owner is the sender's uid and its POSIX record lock
//                names the sender's pid (F_GETLK): identity the kernel
//                attests, never a field a sender fills in.
//   sender.<n>.chunks-<slab>-<generation>
//                that sender's loan chunks (below): written by it only,
//                with its log's owner and mode.
//
// The directory is sticky and setgid: a participant can create its own
// files, cannot remove another's, and every file shares the mailbox's group,
// so the group bits of the mailbox mode mean the same everywhere.
//
// Sending: admit (count and bytes against the capacity, under the control
// spin lock, from counters whose truth is per slot so that a holder's death is
// repaired by summing), write the record into the own log, store its commit
// word, advance `published`, count it in `sent` (the send's one locked
// instruction), wake a sleeping receiver.
// Receiving (under the queue lock): index the records published since the
// last look into descriptors on per-priority FIFO lists, take the head of
// the highest list, copy or lease it. Finishing a message (ack, plain
// receive, flush) frees its descriptor; the oldest unfinished record of a
// sender bounds where that sender may write again (`reclaim`).
//
// Record in a sender log (64-byte aligned, never straddling the end; a wrap
// record fills the rest of the log as in a Channel):
//
//   0  commit       u64  length (u32) | lap tag (u32, high bit: wrap record)
//   8  sequence     u64  this sender's message number, from 1
//  16  bytes_before u48  payload bytes this sender published before this one
//      | priority u8 | flags u8 (urgent)
//  24  payload ...
//
// A loaned message (see loan.hpp) is a record whose length has kLogChunkBit
// set and whose payload is a ChunkRef (24 bytes) naming a chunk in one of
// this sender's slabs: files "sender.<n>.chunks-<slab>-<generation>" next to
// the log, listed in the log header's slab table. The chunk sent in the
// record at log position p is free again once the slot's `reclaim` passed p,
// i.e. once that record is finished (acked, received, flushed): the
// ChunkPool's `released` is `reclaim`. A dead sender's log is never taken
// over: the receiver that retires it removes its slabs first, and with them
// whatever the sender had loaned and not sent. bytes_before, the capacity
// counters and Descriptor::length count a loaned message's payload bytes,
// as for a message copied into the log.
//
// After a receiver dies holding the queue lock, the next one rebuilds the
// lists from the descriptors and recomputes the counters from what cannot be
// half-written: descriptor states, `scanned`, and the logs themselves (the
// record at `scanned` says how many messages and bytes came before it).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "ferry/messaging/detail/chunk_pool.hpp"
#include "ferry/sync/label.hpp"
#include "ferry/sync/spin_lock.hpp"
#include "ferry/sync/wait.hpp"

namespace ferry::detail {

inline constexpr std::uint64_t kMailboxMagic = 0x584F'424C'4941'4D46ull;  // "FMAILBOX"
inline constexpr std::uint64_t kQueueMagic = 0x4555'4555'5158'424Dull;    // "MBXQUEUE"
inline constexpr std::uint64_t kSenderLogMagic = 0x474F'4C44'4E45'534Dull;  // "MSENDLOG"
inline constexpr std::uint32_t kMailboxLayoutVersion = 4;

inline constexpr unsigned kPriorityLevels = 32;           // 0 (lowest) .. 31
inline constexpr unsigned kUrgentLevel = kPriorityLevels;  // above every priority
inline constexpr unsigned kLevels = kPriorityLevels + 1;
inline constexpr std::uint8_t kRecordUrgent = 1;

inline constexpr std::size_t kLogRecordAlignment = 64;
inline constexpr std::size_t kLogRecordHeader = 24;
inline constexpr std::uint32_t kLogWrapBit = 0x8000'0000u;   // in the tag
inline constexpr std::uint32_t kLogChunkBit = 0x8000'0000u;  // in the length: a ChunkRef record
// A loaned message's size is a Descriptor::length (32 bits): limits above
// this are refused at create.
inline constexpr std::uint64_t kMaxMailboxLoanLimit = std::uint64_t{1} << 31;
inline constexpr std::uint8_t kDescriptorChunk = 1;  // Descriptor::flags: the record holds a ChunkRef
inline constexpr std::uint32_t kMaxMailboxSenders = 1024;
inline constexpr std::uint32_t kNoDescriptor = UINT32_MAX;
inline constexpr std::uint32_t kReceiverEntries = 64;  // receivers `stats()` can name

enum class CapacityKind : std::uint32_t { rendezvous = 1, bounded = 2, unbounded = 3 };

// ---------------------------------------------------------------- control

struct SenderSlot {
  std::atomic<std::uint64_t> owner;     // packed ProcessId of the sender, 0 = free
  std::atomic<std::uint64_t> log_id;    // which sender.<n> file (n), 0 = none yet
  std::atomic<std::uint64_t> admitted;  // messages admitted into log_id (capacity truth)
  std::atomic<std::uint64_t> admitted_bytes;
  std::uint8_t reserved[32];
};
static_assert(sizeof(SenderSlot) == 64);

struct MailboxControl {
  std::uint64_t magic;
  std::uint32_t layout_version;
  CapacityKind capacity_kind;
  std::uint64_t capacity_count;   // bounded: messages; rendezvous: 0
  std::uint64_t memory_limit;     // bytes of payload queued at most (all kinds)
  std::uint32_t max_message;
  std::uint32_t max_senders;      // sender slots
  std::uint64_t log_capacity;     // bytes of each sender log (a power of two)
  std::uint32_t descriptors;      // size of the queue's descriptor pool
  std::uint32_t mode;             // the mailbox mode the files were made from
  Label label;                    // 32 bytes
  // Slots below this were ever claimed (it only grows): loops over senders
  // stop here instead of at max_senders. Readers never let it shrink.
  std::atomic<std::uint32_t> slot_limit;
  std::uint64_t loan_threshold;   // send(bytes) loans from this size (LoanOptions)
  std::uint64_t loan_limit;       // bytes of chunks per sender, and the largest message

  // Admission: senders, under `admission`. What a mailbox holds is the sum
  // over slots of admitted minus the queue's finished (both counted per
  // log, so a slot's share vanishes when it is retired): no total to repair.
  SpinLock admission;
  alignas(64) std::atomic<std::uint64_t> senders_changed;  // bumped when a slot is claimed or left
  // Written with every send: a line of its own, away from what receivers poll.
  alignas(64) std::atomic<std::uint64_t> sent;  // messages published, ever
  std::atomic<std::uint64_t> high_water;        // most messages ever queued at once

  alignas(64) WaitPoint data_ready;   // receivers sleep here
  alignas(64) WaitPoint space_ready;  // senders sleep here (capacity, log room, rendezvous)

  alignas(64) SenderSlot slots[1];    // max_senders of them
};

static_assert(offsetof(MailboxControl, label) == 56);
static_assert(offsetof(MailboxControl, slot_limit) == 88);
static_assert(offsetof(MailboxControl, loan_threshold) == 96);
static_assert(offsetof(MailboxControl, loan_limit) == 104);
static_assert(offsetof(MailboxControl, admission) == 128);
static_assert(offsetof(MailboxControl, slots) % 64 == 0);

inline std::size_t control_size(std::uint32_t max_senders) noexcept {
  return offsetof(MailboxControl, slots) + sizeof(SenderSlot) * max_senders;
}

// ------------------------------------------------------------------ queue

// A message the receivers know of: queued (on its level's list), leased, or
// done (finished, waiting to be the oldest of its sender to be freed).
enum class DescriptorState : std::uint8_t { free = 0, queued = 1, leased = 2, done = 3 };

struct Descriptor {
  DescriptorState state;      // u8
  std::uint8_t level;         // its list: the priority, or kUrgentLevel
  std::uint8_t priority;      // as sent (an urgent message keeps it)
  std::uint8_t flags;         // kDescriptorChunk
  std::uint32_t slot;
  std::uint64_t position;     // of the record in its sender's log
  std::uint64_t sequence;     // the sender's message number
  std::uint64_t order;        // place on its level's list (rebuilt from it after a crash)
  std::uint32_t length;       // payload bytes (a loaned message's too)
  std::uint32_t deliveries;   // times leased
  std::uint32_t next;         // on its level's list, or the free list
  std::uint32_t log_next;     // its sender's records, oldest first
  std::uint64_t lessee;       // packed ProcessId while leased
  std::uint64_t lease;        // lease number while leased (a stale ack is refused)
};
static_assert(sizeof(Descriptor) == 64);

// Per sender slot: what receivers know of that sender's log.
struct SlotProgress {
  // Line 0: what receivers change with every message, and its sender reads.
  std::atomic<std::uint64_t> scanned;     // log position up to which records are indexed
  std::atomic<std::uint64_t> reclaim;     // the sender may overwrite below this position
  std::atomic<std::uint64_t> finished;    // messages of this log finished
  std::atomic<std::uint64_t> finished_bytes;
  std::atomic<std::uint64_t> taken;       // messages handed to a receiver, ever (rendezvous)
  std::uint32_t log_first;                // oldest descriptor of this sender (kNoDescriptor: none)
  std::uint32_t log_last;
  std::uint8_t pad[16];
  // Line 1: set when the log is bound.
  std::uint64_t log_id;        // bound log (0: none), as in control.slots[].log_id
  std::uint64_t log_dev;       // ... and its file, as fstat saw it
  std::uint64_t log_ino;
  std::uint32_t uid;           // attested: the log file's owner
  std::uint32_t gid;           // the sender process's gid (/proc), when seen alive
  std::int32_t pid;            // attested by the log's record lock if pid_attested
  std::uint32_t pid_attested;  // 0: the sender was gone when first seen (pid is its own claim)
  std::uint8_t pad_end[24];
};
static_assert(offsetof(SlotProgress, log_id) == 64);
static_assert(kLevels <= 64, "MailboxQueue::nonempty_levels has a bit per level");
static_assert(sizeof(SlotProgress) == 128);

struct LevelList {
  std::uint32_t first;
  std::uint32_t last;
};

// The step the queue lock's holder is taking on one descriptor, with the
// counters as they were before it. The lists and per-slot counts are rebuilt
// from the descriptors after a holder's death; these counters cannot be, so
// the repair finishes or undoes the step from the descriptor's state.
enum class QueueStep : std::uint32_t {
  none = 0,
  deliver = 1,    // handed to a receiver (deliveries, taken), finished if received or acked
  redeliver = 2,  // a lease given back to the front of its level
  flush = 3,      // finished unread
};

struct QueueJournal {
  QueueStep step;
  std::uint32_t index;       // the descriptor
  std::uint32_t deliveries;  // its deliveries before the step
  std::uint32_t reserved;
  std::uint64_t taken;       // its slot's progress.taken before the step
  std::uint64_t received;    // MailboxQueue's, before the step
  std::uint64_t redelivered;
  std::uint64_t flushed;
};
static_assert(sizeof(QueueJournal) == 48);

struct MailboxQueue {
  std::uint64_t magic;
  std::uint32_t layout_version;
  std::uint32_t descriptors;
  std::uint32_t max_senders;
  std::uint32_t free_first;      // free descriptor list
  std::uint32_t pool_used;       // descriptors ever handed out: those past it are untouched (sparse)
  std::uint32_t reserved;
  std::uint64_t lease_counter;
  std::uint64_t order_back;      // next order at a list's end (grows)
  std::uint64_t order_front;     // next order at a list's front (shrinks; redeliveries)
  // Bit n: levels[n] may hold messages. Set by every push; cleared when a
  // look finds the list empty. A clear bit never hides a message, so the
  // highest message is found without looking at every level.
  std::uint64_t nonempty_levels;
  QueueJournal journal;          // written by the lock's holder only

  SpinLock lock;

  alignas(64) std::atomic<std::uint64_t> queued;       // on a level list
  std::atomic<std::uint64_t> leased;
  std::atomic<std::uint64_t> received;
  std::atomic<std::uint64_t> redelivered;
  std::atomic<std::uint64_t> flushed;
  // control.sent + redelivered when a receiver last found nothing to take:
  // messages may wait while sent + redelivered is beyond it (notify_fd).
  std::atomic<std::uint64_t> settled;
  std::atomic<std::uint64_t> depth[kLevels];
  LevelList levels[kLevels];
  // Receivers attached now (packed ProcessId, 0 = free): a receiver enters
  // at its first receive, under the lock, into a free entry or a dead
  // receiver's; it leaves when it closes the mailbox. For stats only.
  std::atomic<std::uint64_t> receivers[kReceiverEntries];
  std::atomic<std::uint32_t> receiver_uids[kReceiverEntries];  // their effective uids

  // Then: SlotProgress[max_senders], Descriptor[descriptors].
};

inline std::size_t queue_slots_offset() noexcept { return (sizeof(MailboxQueue) + 127) / 128 * 128; }
inline std::size_t queue_descriptors_offset(std::uint32_t max_senders) noexcept {
  return queue_slots_offset() + sizeof(SlotProgress) * max_senders;
}
inline std::size_t queue_size(std::uint32_t max_senders, std::uint32_t descriptors) noexcept {
  return queue_descriptors_offset(max_senders) + sizeof(Descriptor) * descriptors;
}

// ------------------------------------------------------------- sender log

struct SenderLogHeader {
  std::uint64_t magic;
  std::uint32_t layout_version;
  std::uint32_t slot;
  std::uint64_t log_id;
  std::uint64_t capacity;      // bytes of records (a power of two)
  std::int32_t pid;            // as the sender says; trusted only with the record lock
  std::uint32_t reserved;
  alignas(64) std::atomic<std::uint64_t> published;  // log position after the last published record
  std::atomic<std::uint64_t> messages;               // published, ever
  std::atomic<std::uint64_t> bytes;                  // payload bytes published, ever
  // The slab table of this sender's chunks (chunk_pool.hpp), written by it only.
  alignas(64) std::atomic<std::uint64_t> slabs[kMaxSlabs];
};
inline constexpr std::size_t kSenderLogRecords = 1024;  // records start here
static_assert(offsetof(SenderLogHeader, published) == 64);
static_assert(offsetof(SenderLogHeader, slabs) == 128);
static_assert(sizeof(SenderLogHeader) == 640);
static_assert(sizeof(SenderLogHeader) <= kSenderLogRecords && kSenderLogRecords % kLogRecordAlignment == 0);

constexpr std::uint64_t log_record_size(std::uint64_t payload) noexcept {
  return (kLogRecordHeader + payload + kLogRecordAlignment - 1) & ~std::uint64_t{kLogRecordAlignment - 1};
}

/// The tag of a record at absolute log `position`: never 0 (zeroed memory is no record).
constexpr std::uint32_t log_record_tag(std::uint64_t position) noexcept {
  return static_cast<std::uint32_t>((position / kLogRecordAlignment) % (kLogWrapBit - 1)) + 1;
}

}  // namespace ferry::detail
