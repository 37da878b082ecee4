// The bytes of a Channel inside its segment's data. Not API.
//
//  offset  line  written by   field
//  ------  ----  -----------  ---------------------------------------------
//       0     0  creator      magic "FERRYCHN", layout_version, max_message,
//                             capacity (ring bytes, a power of two), ring_offset
//      32     0  creator      label (the channel's name, for error messages)
//      64     1  sender       tail: bytes published, ever (monotonic)
//      72     1  sender       messages_sent
//      80     1  sender       writing: where a large record being written ends (a hint)
//     128     2  receiver     head: bytes released, ever (monotonic)
//     136     2  receiver     messages_received
//     144     2  receiver     reading: where a large record being read ends (a hint)
//     192     3  both         data_ready  (WaitPoint: the receiver sleeps here)
//     256     4  both         space_ready (WaitPoint: the sender sleeps here)
//     320     5  claimant     sender:   packed ProcessId, 0 = none yet, 1 = left
//     328     5  claimant     receiver: packed ProcessId, 0 = none yet, 1 = left
//     384     6  creator      loan_threshold, loan_limit (LoanOptions)
//     448  7-14  sender       slab table: 64 words (detail/chunk_pool.hpp)
//    1024        sender       ring: `capacity` bytes of records
//
// Each line has one writer on the data path, so no line bounces between the
// two processes except the records themselves: the role words, which each
// side reads every time it waits, change only when a role is claimed or left.
//
// A record is an 8-byte header and its payload. A record sent on its own
// (published at once) ends at a cache-line boundary (64 bytes): the receiver
// polling the next header does not pull away the line the sender is still
// writing, and a payload of up to 56 bytes travels in the same line as its
// header. The records of a batch (Publish::later) are packed instead: each
// ends at the next 8-byte boundary and the next starts there, so a stream of
// 64-byte messages moves 72 bytes a message, not two lines. P in the header
// says which: set, the next record starts right after this one. The header
// is the record's commit word: one 64-bit store, written after the payload,
// makes the record visible.
//
// A payload of kAlignedPayload (8 KiB) or more starts at the line after its
// header's, not right behind the header: a copy into a payload that starts
// on a line runs ~30% faster (x86's rep movsb, which memcpy uses for such
// sizes, slows down when its destination is 8 bytes past a line: 36 against
// 46 GB/s at 64 KiB on the benchmark machine). Below 8 KiB the line the
// receiver then reads apart from the header's costs more than the copy
// gains. The length alone says where the payload is (payload_start); the
// bytes between are padding.
//
//  0                   1                   2                   3
//  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
// |C|P|            length (payload bytes)                         |
// +-+-+-----------------------------------------------------------+
// |W|          tag: which lap of the ring this record is          |
// +-+-------------------------------------------------------------+
// (C marks a chunk record: its payload is a ChunkRef naming a loaned chunk,
// whose bytes are the message)
// |                 payload ... (padded to 8 bytes)               |
// +---------------------------------------------------------------+
//
// The tag is derived from the record's absolute position (record_tag), so
// a header left from an earlier lap never matches: the receiver polls the
// header where the next record must start, and the message is there when the
// tag is the one expected. W marks a wrap record: when the next record does
// not fit before the end of the ring, the sender fills the rest with one and
// starts again at offset 0 (a record never straddles the end).
//
// Publication: the sender writes the payload, then the header (release; the
// last one of a publish with seq_cst, WaitPoint's contract), then `tail`.
// Batches hold back the header of their first record, so one store publishes
// them all. A sender killed mid-write leaves no header: nothing partial is
// ever visible, and its successor, which resumes at `tail` after skipping the
// records whose headers are already written, overwrites the rest. The
// receiver stores `head` as it releases records; a receiver killed mid-read
// leaves `head` at the last message it released, where its successor resumes.
//
// `writing` and `reading` are stored only for records of kLargeRecord bytes
// or more, whose copy may outlast an adaptive wait's spin: the other side,
// about to sleep, spins on through the copy instead of paying a wake-up for
// a message that is seconds' thousandths away. Stale values are harmless
// (they lie behind the positions and are ignored).
//
// The receiver never reads `tail` on its fast path (the sender's line stays
// with the sender); the sender reads `head` only when it runs short of room.
// Every header is read once and checked against `capacity` and
// `max_message` as copied (and validated) when the channel was opened: a
// scribbled segment yields errc::corrupt, never a wild access.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "ferry/messaging/detail/chunk_pool.hpp"
#include "ferry/sync/label.hpp"
#include "ferry/sync/wait.hpp"

namespace ferry::detail {

inline constexpr std::uint64_t kChannelMagic = 0x4E48'4359'5252'4546ull;  // "FERRYCHN"
inline constexpr std::uint32_t kChannelLayoutVersion = 6;
inline constexpr std::size_t kChannelRingOffset = 1024;
inline constexpr std::size_t kRecordHeaderSize = 8;
inline constexpr std::size_t kRecordGranule = 8;  // a packed record ends at a multiple of this
inline constexpr std::size_t kLineSize = 64;       // a record sent on its own ends at a multiple of this
inline constexpr std::uint64_t kLargeRecord = 64 * 1024;  // see `writing` / `reading`
inline constexpr std::uint64_t kAlignedPayload = 8192;     // from here on a payload starts on a line
inline constexpr std::uint64_t kMinChannelCapacity = 256;
// Tags repeat every (2^31 - 1) * 8 bytes (~16 GiB): the ring must be smaller.
inline constexpr std::uint64_t kMaxChannelCapacity = std::uint64_t{1} << 33;
inline constexpr std::uint32_t kWrapBit = 0x8000'0000u;
inline constexpr std::uint32_t kChunkBit = 0x8000'0000u;   // in the length word: C
inline constexpr std::uint32_t kPackedBit = 0x4000'0000u;  // in the length word: P
inline constexpr std::uint32_t kLengthMask = kPackedBit - 1;
inline constexpr std::uint32_t kMaxInlineMessage = kPackedBit - 64;
inline constexpr std::uint64_t kRoleNone = 0;
inline constexpr std::uint64_t kRoleLeft = 1;

struct ChannelControl {
  std::uint64_t magic;
  std::uint32_t layout_version;
  std::uint32_t max_message;
  std::uint64_t capacity;
  std::uint64_t ring_offset;
  Label label;

  alignas(64) std::atomic<std::uint64_t> tail;
  std::atomic<std::uint64_t> messages_sent;
  std::atomic<std::uint64_t> writing;

  alignas(64) std::atomic<std::uint64_t> head;
  std::atomic<std::uint64_t> messages_received;
  std::atomic<std::uint64_t> reading;

  alignas(64) WaitPoint data_ready;
  alignas(64) WaitPoint space_ready;

  alignas(64) std::atomic<std::uint64_t> sender;
  std::atomic<std::uint64_t> receiver;

  alignas(64) std::uint64_t loan_threshold;
  std::uint64_t loan_limit;

  alignas(64) std::atomic<std::uint64_t> slabs[kMaxSlabs];
};


static_assert(offsetof(ChannelControl, magic) == 0);
static_assert(offsetof(ChannelControl, layout_version) == 8);
static_assert(offsetof(ChannelControl, max_message) == 12);
static_assert(offsetof(ChannelControl, capacity) == 16);
static_assert(offsetof(ChannelControl, ring_offset) == 24);
static_assert(offsetof(ChannelControl, label) == 32);
static_assert(offsetof(ChannelControl, tail) == 64);
static_assert(offsetof(ChannelControl, messages_sent) == 72);
static_assert(offsetof(ChannelControl, writing) == 80);
static_assert(offsetof(ChannelControl, head) == 128);
static_assert(offsetof(ChannelControl, messages_received) == 136);
static_assert(offsetof(ChannelControl, reading) == 144);
static_assert(offsetof(ChannelControl, data_ready) == 192);
static_assert(offsetof(ChannelControl, space_ready) == 256);
static_assert(offsetof(ChannelControl, sender) == 320);
static_assert(offsetof(ChannelControl, receiver) == 328);
static_assert(offsetof(ChannelControl, loan_threshold) == 384);
static_assert(offsetof(ChannelControl, loan_limit) == 392);
static_assert(offsetof(ChannelControl, slabs) == 448);
static_assert(sizeof(ChannelControl) <= kChannelRingOffset);
static_assert(std::atomic_ref<std::uint64_t>::required_alignment == 8);
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);

/// Where the payload of a record of `payload` bytes at absolute `position`
/// starts: right behind the header, or from kAlignedPayload bytes on at the next line.
constexpr std::uint64_t payload_start(std::uint64_t position, std::uint64_t payload) noexcept {
  const std::uint64_t behind_header = position + kRecordHeaderSize;
  return payload >= kAlignedPayload ? (behind_header + kLineSize - 1) & ~(kLineSize - 1) : behind_header;
}

/// Where the next record starts after one of `payload` bytes at absolute
/// `position`: the next 8-byte boundary if the record is packed, else the next line.
constexpr std::uint64_t record_end(std::uint64_t position, std::uint64_t payload, bool packed) noexcept {
  const std::uint64_t align = packed ? kRecordGranule : kLineSize;
  return (payload_start(position, payload) + payload + align - 1) & ~(align - 1);
}

/// The bytes a record of `payload` bytes takes at most (sent on its own, at a line).
constexpr std::uint64_t record_size(std::uint64_t payload) noexcept { return record_end(0, payload, false); }

/// The tag of a record at absolute `position`: never 0 (zeroed memory is no record).
constexpr std::uint32_t record_tag(std::uint64_t position) noexcept {
  return static_cast<std::uint32_t>((position / kRecordGranule) % (kWrapBit - 1)) + 1;
}

static_assert(record_size(56) == 64 && record_size(64) == 128, "a lone record fills its lines");
static_assert(record_end(8, 64, true) == 80 && record_end(8, 64, false) == 128, "a packed one ends at 8 bytes");
static_assert(payload_start(8, kAlignedPayload) == 64 && payload_start(0, kAlignedPayload - 1) == 8 &&
                  record_size(kAlignedPayload) == 64 + kAlignedPayload,
              "a large payload starts on a line");
static_assert(sizeof(ChunkRef) < kAlignedPayload, "a chunk record's payload is right behind its header");
static_assert(kMaxChannelCapacity < (kWrapBit - 1) * kRecordGranule, "a tag never repeats within a ring");
static_assert(kMaxInlineMessage <= kLengthMask, "a length never reaches into P or C");

constexpr std::uint64_t record_header(std::uint32_t length, std::uint32_t tag) noexcept {
  return (std::uint64_t{tag} << 32) | length;
}

/// Whether `header` is that of a record (or wrap record) at absolute `position`.
constexpr bool record_at(std::uint64_t header, std::uint64_t position) noexcept {
  return (static_cast<std::uint32_t>(header >> 32) & ~kWrapBit) == record_tag(position);
}

/// The header word at `offset` of the ring (8-aligned), as an atomic.
inline std::atomic_ref<std::uint64_t> header_at(std::byte* ring, std::uint64_t offset) noexcept {
  return std::atomic_ref<std::uint64_t>(*reinterpret_cast<std::uint64_t*>(ring + offset));
}

}  // namespace ferry::detail
