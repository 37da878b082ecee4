// Segment internals shared by segment.cpp and registry.cpp (ferry ls / gc).
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>
#include <vector>

#include "ferry/os/detail/segment_layout.hpp"
#include "ferry/os/error.hpp"
#include "ferry/os/process.hpp"
#include "ferry/os/segment.hpp"

namespace ferry::detail {

inline constexpr std::string_view kPosixDirectory = "/dev/shm";
inline constexpr std::string_view kNamePrefix = "ferry.";  // in /dev/shm and memfd names

/// Where a posix or file segment lives: "/dev/shm/ferry.<name>" or the path itself.
std::string backing_path(SegmentKind kind, std::string_view name);

/// "posix segment 'orders'".
std::string describe(SegmentKind kind, std::string_view name);

/// The header fields, copied once out of shared memory and checked.
struct HeaderSnapshot {
  SegmentInfo info;
  std::uint32_t data_offset;
  std::uint32_t attach_capacity;
};

/// Reads and checks a header that `mapped_size` bytes are mapped behind.
/// `kind` is what the caller expects (checked against the header).
result<HeaderSnapshot> read_header(const SegmentHeader* header, std::size_t mapped_size,
                                   SegmentKind kind, std::string_view description);

/// Live processes in the attach table.
std::vector<ProcessId> live_attachments(const SegmentHeader* header, std::uint32_t capacity);

/// How to remove a segment's name once it is decided that it goes.
struct Unlinker {
  SegmentKind kind;
  std::string path;  // posix/file: removed only while it still names (dev, ino)
  dev_t dev = 0;
  ino_t ino = 0;
  int sysv_id = -1;

  void operator()() const noexcept;
};

/// The lifecycle protocol (see segment_layout.hpp): destroys the segment if
/// no live process is attached. Returns true if it is destroyed (by this call
/// or earlier), false if it is in use. The caller must not be attached itself.
result<bool> destroy_if_unused(SegmentHeader* header, std::uint32_t capacity,
                               const Unlinker& unlink, std::string_view description);

}  // namespace ferry::detail
