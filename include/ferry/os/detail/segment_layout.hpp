// The bytes at the start of every segment ferry makes. Not API: layers above
// the os layer see only `Segment::data()`; the registry (ferry ls/gc) reads
// these to describe objects it did not open.
//
//  0                   1                   2                   3
//  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
// |                 magic "FERRYSEG" (written last)               |  0
// |                                                               |
// +---------------------------------------------------------------+
// |                        layout_version                         |  8
// +---------------------------------------------------------------+
// |                 data_offset (header + attach table)           | 12
// +---------------------------------------------------------------+
// |                 total_size (whole mapping, bytes)             | 16
// |                                                               |
// +---------------------------------------------------------------+
// |                 data_size (user bytes)                        | 24
// |                                                               |
// +---------------+---------------+-------------------------------+
// |     kind      |  persistence  |          object_type          | 32
// +---------------+---------------+-------------------------------+
// |                       attach_capacity                         | 36
// +---------------------------------------------------------------+
// |                 creator_uid                                   | 40
// +---------------------------------------------------------------+
// |                 creator_gid                                   | 44
// +---------------------------------------------------------------+
// |                 creator_pid                                   | 48
// +---------------------------------------------------------------+
// |                 mode                                          | 52
// +---------------------------------------------------------------+
// |                 creation_time_ns (CLOCK_REALTIME)             | 56
// |                                                               |
// +---------------------------------------------------------------+
// |                 lifecycle (atomic, see below)                 | 64
// |                                                               |
// +---------------------------------------------------------------+
// |                 reserved, zero                                | 72..127
// +---------------------------------------------------------------+
// |  attach table: attach_capacity x 64-bit packed ProcessId      | 128
// |  (0 = free slot; a dead process's slot is free to claim)      |
// +---------------------------------------------------------------+
// |  zero padding to a page boundary                              |
// +---------------------------------------------------------------+
// |  user data: data_size bytes                                   | data_offset
// +---------------------------------------------------------------+
//
// Lifecycle word: kLifecycleOpen, kLifecycleDestroyed, or the packed
// ProcessId of a process deciding right now whether the segment is unused.
// Attaching is "store my slot, then load lifecycle"; deciding is "CAS
// lifecycle to me, then load every slot". Both sides use seq_cst, so at
// least one of them sees the other: a process never attaches to a segment
// that is being destroyed, and a segment in use is never destroyed.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace ferry::detail {

inline constexpr std::uint64_t kSegmentMagic = 0x4745'5359'5252'4546ull;  // "FERRYSEG" little-endian
inline constexpr std::uint32_t kSegmentLayoutVersion = 1;
inline constexpr std::size_t kSegmentHeaderSize = 128;
inline constexpr std::size_t kSegmentDataAlignment = 4096;
inline constexpr std::uint32_t kMaxAttachCapacity = 4096;

inline constexpr std::uint64_t kLifecycleOpen = 0;
inline constexpr std::uint64_t kLifecycleDestroyed = ~std::uint64_t{0};

struct SegmentHeader {
  std::atomic<std::uint64_t> magic;
  std::uint32_t layout_version;
  std::uint32_t data_offset;
  std::uint64_t total_size;
  std::uint64_t data_size;
  std::uint8_t kind;
  std::uint8_t persistence;
  std::uint16_t object_type;
  std::uint32_t attach_capacity;
  std::uint32_t creator_uid;
  std::uint32_t creator_gid;
  std::int32_t creator_pid;
  std::uint32_t mode;
  std::uint64_t creation_time_ns;
  std::atomic<std::uint64_t> lifecycle;
  std::uint64_t reserved[7];
};

using AttachSlot = std::atomic<std::uint64_t>;

static_assert(std::atomic<std::uint64_t>::is_always_lock_free);
static_assert(sizeof(std::atomic<std::uint64_t>) == 8);
static_assert(offsetof(SegmentHeader, magic) == 0);
static_assert(offsetof(SegmentHeader, layout_version) == 8);
static_assert(offsetof(SegmentHeader, data_offset) == 12);
static_assert(offsetof(SegmentHeader, total_size) == 16);
static_assert(offsetof(SegmentHeader, data_size) == 24);
static_assert(offsetof(SegmentHeader, kind) == 32);
static_assert(offsetof(SegmentHeader, persistence) == 33);
static_assert(offsetof(SegmentHeader, object_type) == 34);
static_assert(offsetof(SegmentHeader, attach_capacity) == 36);
static_assert(offsetof(SegmentHeader, creator_uid) == 40);
static_assert(offsetof(SegmentHeader, creator_gid) == 44);
static_assert(offsetof(SegmentHeader, creator_pid) == 48);
static_assert(offsetof(SegmentHeader, mode) == 52);
static_assert(offsetof(SegmentHeader, creation_time_ns) == 56);
static_assert(offsetof(SegmentHeader, lifecycle) == 64);
static_assert(offsetof(SegmentHeader, reserved) == 72);
static_assert(sizeof(SegmentHeader) == kSegmentHeaderSize);

/// Where user data starts for a given attach capacity.
constexpr std::size_t segment_data_offset(std::uint32_t attach_capacity) noexcept {
  const std::size_t used = kSegmentHeaderSize + sizeof(AttachSlot) * attach_capacity;
  return (used + kSegmentDataAlignment - 1) / kSegmentDataAlignment * kSegmentDataAlignment;
}

inline AttachSlot* attach_table(SegmentHeader* header) noexcept {
  return reinterpret_cast<AttachSlot*>(reinterpret_cast<std::byte*>(header) + kSegmentHeaderSize);
}

}  // namespace ferry::detail
