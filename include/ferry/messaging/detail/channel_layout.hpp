// The bytes of a Channel inside its segment's data. Not API.
//
//  offset  line  written by   field
//  ------  ----  -----------  ---------------------------------------------
//       0     0  creator      magic "FERRYCHN", layout_version, max_message,
//                             capacity (ring bytes, a power of two), ring_offset
//      32     0  creator      label (the channel's name, for error messages)
//      64     1  sender       tail: bytes published, ever (monotonic)
//      72     1  sender       sender: packed ProcessId, 0 = none yet, 1 = left
//      80     1  sender       messages_sent
//     128     2  receiver     head: bytes released, ever (monotonic)
//     136     2  receiver     receiver: packed ProcessId, 0 = none yet, 1 = left
//     144     2  receiver     messages_received
//     192     3  both         data_ready  (WaitPoint: the receiver sleeps here)
//     256     4  both         space_ready (WaitPoint: the sender sleeps here)
//     512        sender       ring: `capacity` bytes of records
//
// A record is an 8-byte header and its payload, padded to 8 bytes:
//
//  0                   1                   2                   3
//  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
// |                     length (payload bytes)                    |
// +---------------------------------------------------------------+
// |              kind: kRecordMessage or kRecordWrap              |
// +---------------------------------------------------------------+
// |                 payload ... (padded to 8 bytes)               |
// +---------------------------------------------------------------+
//
// A record never straddles the end of the ring: when the next one does not
// fit, the sender writes a kRecordWrap record filling the rest and starts
// again at offset 0.
//
// Publication: the sender writes whole records, then stores `tail`
// (seq_cst); the receiver reads `tail` (acquire), then the records below it.
// So a sender killed mid-write never exposes a partial message: its unpublished
// bytes are simply overwritten by the next sender. The receiver stores `head`
// after it is done with records; a receiver killed mid-read leaves `head` at
// the last message it released, where its successor resumes.
//
// Every index and length is read once from shared memory and checked against
// `capacity` and `max_message` as copied (and validated) when the channel was
// opened: a scribbled segment yields errc::corrupt, never a wild access.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "ferry/sync/label.hpp"
#include "ferry/sync/wait.hpp"

namespace ferry::detail {

inline constexpr std::uint64_t kChannelMagic = 0x4E48'4359'5252'4546ull;  // "FERRYCHN"
inline constexpr std::uint32_t kChannelLayoutVersion = 1;
inline constexpr std::size_t kChannelRingOffset = 512;
inline constexpr std::size_t kRecordHeaderSize = 8;
inline constexpr std::size_t kRecordAlignment = 8;
inline constexpr std::uint64_t kMinChannelCapacity = 256;
inline constexpr std::uint64_t kMaxChannelCapacity = std::uint64_t{1} << 40;
inline constexpr std::uint32_t kRecordMessage = 0x2147534D;  // "MSG!"
inline constexpr std::uint32_t kRecordWrap = 0x50415257;     // "WRAP"
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
  std::atomic<std::uint64_t> sender;
  std::atomic<std::uint64_t> messages_sent;

  alignas(64) std::atomic<std::uint64_t> head;
  std::atomic<std::uint64_t> receiver;
  std::atomic<std::uint64_t> messages_received;

  alignas(64) WaitPoint data_ready;
  alignas(64) WaitPoint space_ready;
};

struct RecordHeader {
  std::uint32_t length;
  std::uint32_t kind;
};

static_assert(offsetof(ChannelControl, magic) == 0);
static_assert(offsetof(ChannelControl, layout_version) == 8);
static_assert(offsetof(ChannelControl, max_message) == 12);
static_assert(offsetof(ChannelControl, capacity) == 16);
static_assert(offsetof(ChannelControl, ring_offset) == 24);
static_assert(offsetof(ChannelControl, label) == 32);
static_assert(offsetof(ChannelControl, tail) == 64);
static_assert(offsetof(ChannelControl, sender) == 72);
static_assert(offsetof(ChannelControl, messages_sent) == 80);
static_assert(offsetof(ChannelControl, head) == 128);
static_assert(offsetof(ChannelControl, receiver) == 136);
static_assert(offsetof(ChannelControl, messages_received) == 144);
static_assert(offsetof(ChannelControl, data_ready) == 192);
static_assert(offsetof(ChannelControl, space_ready) == 256);
static_assert(sizeof(ChannelControl) <= kChannelRingOffset);
static_assert(sizeof(RecordHeader) == kRecordHeaderSize);
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);

constexpr std::uint64_t record_size(std::uint64_t payload) noexcept {
  return (kRecordHeaderSize + payload + kRecordAlignment - 1) & ~std::uint64_t{kRecordAlignment - 1};
}

}  // namespace ferry::detail
