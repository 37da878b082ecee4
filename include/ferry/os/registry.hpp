// The registry: finding, describing and removing ferry objects on this machine.
//
// ferry keeps no daemon and no central list. Objects are found where the
// kernel keeps them: /dev/shm/ferry.* (posix), the System V table
// (/proc/sysvipc/shm), memfds open in any process we may inspect
// (/proc/*/fd), and file segments at the paths the caller names.
// This is what `ferry ls`, `ferry rm` and `ferry gc` are built on.
//
// Locators name an object in one string, as `ferry ls` prints them:
//   orders                 posix segment "orders"
//   file:/var/lib/x.seg    file segment (a bare absolute path works too)
//   sysv:0x0001a2b3        System V segment by key
//   memfd:frames           memfd segment (listed, never removed: it has no name)
#pragma once

#include <sys/types.h>

#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ferry/os/error.hpp"
#include "ferry/os/segment.hpp"

namespace ferry {

struct ObjectRecord {
  std::string locator;
  SegmentKind kind = SegmentKind::posix;
  uid_t owner = 0;          ///< owner of the backing object, from the kernel
  mode_t mode = 0;          ///< permission bits of the backing object
  std::size_t size = 0;     ///< bytes of the backing object (header included)
  std::optional<SegmentInfo> info;  ///< from the header; empty if unreadable
  std::string problem;      ///< why `info` is empty, or what is wrong with it
  std::vector<pid_t> attached;  ///< live attached processes (memfd: holders of a descriptor)
  bool destroyed = false;   ///< its last process decided it goes, but the name is still there
  /// What the layer that owns the object says about it ("owner_pid" -> "1234").
  std::vector<std::pair<std::string, std::string>> details;
};

/// Called for each listed object with a valid header, with its user bytes
/// mapped read-only, so the layers above can describe what lives inside.
using ObjectInspector = std::function<void(ObjectRecord&, std::span<const std::byte> data)>;

/// Every ferry object that can be found, plus the file segments at `file_paths`.
std::vector<ObjectRecord> list_objects(std::span<const std::string> file_paths = {},
                                       const ObjectInspector& inspect = {});

/// What a locator (as `list_objects` prints it) names: "file:PATH" or
/// "/PATH", "sysv:KEY", "posix:NAME" or a bare NAME.
struct Locator {
  SegmentKind kind;
  std::string name;  ///< posix name, file path, or sysv key text
};
result<Locator> parse_locator(std::string_view text);

/// Removes the object a locator names (as Segment::destroy does).
result<void> remove_object(std::string_view locator);

/// Removes process-persistent objects whose processes are all dead, and
/// returns them (with `dry_run`, only returns them).
std::vector<ObjectRecord> collect_garbage(std::span<const std::string> file_paths = {},
                                          bool dry_run = false);

}  // namespace ferry
