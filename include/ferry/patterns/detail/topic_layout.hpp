// The bytes of a Topic inside its segment's data. Not API.
//
//  offset  line   written by    field
//  ------  -----  ------------  -------------------------------------------
//       0      0  creator       magic "FERRYTOP", layout_version, policy,
//                               capacity (slots), max_message, history,
//                               slot_size, slots_offset, table sizes
//      64      1  creator       label (the topic's name, for error messages)
//     128      2  publishers    written: messages published, ever (the write cursor)
//     136      2  subscribe()   subscribers_changed: bumped when one subscribes
//     192      3  both          data_ready  (WaitPoint: subscribers sleep here)
//     200      3  both          batch_ready (WaitPoint: coalescing subscribers sleep here)
//     208      3  publishers    room_wanted: bumped when a publisher finds no room
//     256      4  both          space_ready (WaitPoint: blocked publishers sleep here)
//     320   5..6  publishers    publish_lock: robust Mutex serialising publishers
//                               (and subscribe(), which reads `written`)
//     448  7..22  publishers    publishers[64]: {owner, published}, 16 bytes each
//    1472 23..86  subscribers   subscribers[64]: one line each (TopicSubscriberEntry)
//    5568     87  creator       loan_limit, loan_threshold (loans.hpp)
//    5632 88..95  publishers    slabs[64]: the chunk pool's slab table (chunk_pool.hpp)
//    6144         publishers    slots: `capacity` slots of `slot_size` bytes
//
// Message `s` (0, 1, 2, ...) lives in slot s % capacity. A slot:
//
//  0                   1                   2                   3
//  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
// |                      stamp (64 bits)                          |
// +                                                               +
// |     0: never written; 2s+1: s being written; 2s+2: s whole    |
// +---------------------------------------------------------------+
// |                     length (payload bytes)                    |
// +---------------------------------------------------------------+
// |        form: 0 = the payload is inline, 1 = a chunk            |
// +---------------------------------------------------------------+
// |           payload ... (max_message bytes, padded to 64)       |
// +---------------------------------------------------------------+
//
// A slot of form 1 holds a ChunkRef (24 bytes; a slot's payload has room
// for at least 48) naming a loaned chunk: the message is the chunk's bytes.
// A reader refuses a form it does not know (errc::corrupt).
//
// Chunks: one pool for the topic, written by whoever holds publish_lock.
// Message s sent in a chunk is marked sent at position 64 * s. Its chunk is
// free once every live subscriber's cursor passed s and s left the history
// (written - history > s). When the pool has no room within its limit:
//   block        history gives up its oldest chunks (a late subscriber then
//                counts those messages lost), then the publisher waits for
//                subscribers as for ring room;
//   drop_oldest  the chunk of the oldest sent message is taken; a subscriber
//                that had not read it finds its generation changed and counts
//                the message lost. A subscriber reading a chunk in place
//                (peek) checks the generation again at release().
// A chunk loaned and never sent is tagged with its publisher's entry: the
// entry's next owner, or a publisher short of chunks that finds the owner
// dead, frees it.
//
// Publishing (under publish_lock): stamp := 2s+1, release fence, length,
// form, payload, stamp := 2s+2 (release), written := s+1 (seq_cst,
// WaitPoint's contract), then wake sleeping subscribers; at the last
// message of every half ring (coalesced_batch) also the coalescing ones
// (batch_ready), and whenever a publisher finds no room (ring or chunks):
// room_wanted += 1 (seq_cst), then notify. A coalescing subscriber sleeps
// until half a ring waits for it, room_wanted moves, a notify comes, or its
// own interval passes (futex timeout): a dead publisher's missing notify
// delays it, never strands it. (batch_ready and room_wanted were zero
// padding before, and zero is their starting value, so the layout version
// did not change.) A publisher killed
// anywhere in that leaves `written` at s: the message never appears, and the
// next locker (told owner_died by the robust mutex) simply writes s again.
//
// Reading message s (seqlock): s < written; stamp == 2s+2 (acquire); length,
// form, payload; acquire fence; stamp still 2s+2. A stamp beyond 2s+2 means
// the slot was overwritten (lapped, drop_oldest only): the copy is thrown
// away, never returned. Under drop_oldest the payload is copied with relaxed
// atomic words on both sides, so the race with an overwrite is defined
// behaviour (and ThreadSanitizer-clean); under block a publisher never
// writes a slot a live subscriber has not read, and plain memcpy is used.
//
// Subscriber entry: owner (packed ProcessId, 0 = free) claimed under
// publish_lock after its cursor is set; cursor = the next message it reads,
// stored (seq_cst) after each copy: under block, publishers wait while
// written - min(cursor of live entries) == capacity. The entry's other words
// are its own counters, for stats. A dead subscriber's entry is freed by a
// publisher it holds back, or reused by the next subscribe().
//
// Every field is read once and checked: geometry on open against what it
// must be for the stored capacity and max_message; `written` against the
// reader's cursor and the slot stamps; cursors against `written` and the
// capacity; lengths against max_message. A scribbled segment yields
// errc::corrupt, never a wild access or an endless wait.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "ferry/messaging/detail/chunk_pool.hpp"
#include "ferry/sync/label.hpp"
#include "ferry/sync/mutex.hpp"
#include "ferry/sync/wait.hpp"

namespace ferry::detail {

inline constexpr std::uint64_t kTopicMagic = 0x504F'5459'5252'4546ull;  // "FERRYTOP"
inline constexpr std::uint32_t kTopicLayoutVersion = 2;
inline constexpr std::uint32_t kTopicSubscribers = 64;
inline constexpr std::uint32_t kTopicPublishers = 64;
inline constexpr std::size_t kTopicSlotHeader = 16;
inline constexpr std::size_t kTopicSlotAlignment = 64;
inline constexpr std::uint64_t kMaxTopicCapacity = std::uint64_t{1} << 24;  // slots
inline constexpr std::uint64_t kMaxTopicMessage = std::uint64_t{1} << 30;   // bytes
inline constexpr std::uint64_t kMaxTopicBytes = std::uint64_t{1} << 40;     // all slots
inline constexpr std::uint32_t kSlotInline = 0;                              // `form`
inline constexpr std::uint32_t kSlotChunk = 1;
inline constexpr std::uint64_t kTopicChunkStep = 64;  // message s: pool position s * 64

enum class TopicPolicy : std::uint32_t { block = 0, drop_oldest = 1 };

struct TopicPublisherEntry {
  std::atomic<std::uint64_t> owner;      // packed ProcessId, 0 = free
  std::atomic<std::uint64_t> published;  // messages this publisher published
};
static_assert(sizeof(TopicPublisherEntry) == 16);

struct alignas(64) TopicSubscriberEntry {
  std::atomic<std::uint64_t> owner;     // packed ProcessId, 0 = free
  std::atomic<std::uint64_t> cursor;    // next message to read
  std::atomic<std::uint64_t> lost;      // messages overwritten before it read them, total
  std::atomic<std::uint64_t> received;  // messages it read
};
static_assert(sizeof(TopicSubscriberEntry) == 64);

struct TopicControl {
  std::uint64_t magic;
  std::uint32_t layout_version;
  TopicPolicy policy;
  std::uint64_t capacity;
  std::uint32_t max_message;
  std::uint32_t history;
  std::uint64_t slot_size;
  std::uint64_t slots_offset;
  std::uint32_t subscriber_entries;
  std::uint32_t publisher_entries;
  std::uint64_t reserved;
  alignas(64) Label label;

  alignas(64) std::atomic<std::uint64_t> written;
  std::atomic<std::uint64_t> subscribers_changed;

  alignas(64) WaitPoint data_ready;
  WaitPoint batch_ready;
  std::atomic<std::uint64_t> room_wanted;
  alignas(64) WaitPoint space_ready;

  alignas(64) Mutex publish_lock;
  TopicPublisherEntry publishers[kTopicPublishers];
  TopicSubscriberEntry subscribers[kTopicSubscribers];

  alignas(64) std::uint64_t loan_limit;
  std::uint64_t loan_threshold;
  alignas(64) std::atomic<std::uint64_t> slabs[kMaxSlabs];
};

inline constexpr std::size_t kTopicSlotsOffset = sizeof(TopicControl);

static_assert(offsetof(TopicControl, magic) == 0);
static_assert(offsetof(TopicControl, layout_version) == 8);
static_assert(offsetof(TopicControl, policy) == 12);
static_assert(offsetof(TopicControl, capacity) == 16);
static_assert(offsetof(TopicControl, max_message) == 24);
static_assert(offsetof(TopicControl, history) == 28);
static_assert(offsetof(TopicControl, slot_size) == 32);
static_assert(offsetof(TopicControl, slots_offset) == 40);
static_assert(offsetof(TopicControl, subscriber_entries) == 48);
static_assert(offsetof(TopicControl, publisher_entries) == 52);
static_assert(offsetof(TopicControl, label) == 64);
static_assert(offsetof(TopicControl, written) == 128);
static_assert(offsetof(TopicControl, subscribers_changed) == 136);
static_assert(offsetof(TopicControl, data_ready) == 192);
static_assert(offsetof(TopicControl, batch_ready) == 200);
static_assert(offsetof(TopicControl, room_wanted) == 208);
static_assert(offsetof(TopicControl, space_ready) == 256);
static_assert(offsetof(TopicControl, publish_lock) == 320);
static_assert(offsetof(TopicControl, publishers) == 448);
static_assert(offsetof(TopicControl, subscribers) == 1472);
static_assert(offsetof(TopicControl, loan_limit) == 5568);
static_assert(offsetof(TopicControl, slabs) == 5632);
static_assert(kTopicSlotsOffset == 6144);
static_assert(sizeof(ChunkRef) <= kTopicSlotAlignment - kTopicSlotHeader, "a chunk reference fits the smallest slot");
static_assert(kTopicSlotsOffset % kTopicSlotAlignment == 0);
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);
static_assert(std::atomic_ref<std::uint64_t>::required_alignment == 8);

constexpr std::uint64_t topic_slot_size(std::uint64_t max_message) noexcept {
  return (kTopicSlotHeader + max_message + kTopicSlotAlignment - 1) & ~std::uint64_t{kTopicSlotAlignment - 1};
}

/// How many messages a coalescing subscriber lets wait before it is woken:
/// half the ring, so that it catches up before a publisher has to wait.
constexpr std::uint64_t coalesced_batch(std::uint64_t capacity) noexcept { return capacity > 1 ? capacity / 2 : 1; }

/// The stamp of a slot while message `sequence` is being written into it.
constexpr std::uint64_t stamp_writing(std::uint64_t sequence) noexcept { return 2 * sequence + 1; }
/// The stamp of a slot holding message `sequence` whole.
constexpr std::uint64_t stamp_written(std::uint64_t sequence) noexcept { return 2 * sequence + 2; }

}  // namespace ferry::detail
