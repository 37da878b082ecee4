// Segment: a named region of shared memory, mapped into this process.
//
// Four kinds, one interface:
//   posix  a name in /dev/shm (what shm_open uses), e.g. "orders"
//   file   a path on any file system; survives reboot, e.g. "/var/lib/app/orders.seg"
//   memfd  anonymous; shared by handing its descriptor to another process
//   sysv   a System V key made from an existing path and a project id (ftok)
//
// Creation is exclusive (it never opens what exists), uses an explicit mode
// (default 0600, not affected by the umask) and reserves the memory up front,
// so a full tmpfs is an error at create time instead of a SIGBUS later.
// posix and file segments appear under their name only once fully
// initialized (they are built unnamed and then linked in place).
//
// Opening checks, in this order: the object exists and the mode lets us in;
// it is owned by our effective uid (unless `allow_foreign_owner`); its header
// is a ferry header of our layout version; its size is the one asked for.
//
// Persistence:
//   process     destroyed when the last attached process detaches or dies;
//               a process killed with SIGKILL is noticed by the next attach
//               (which then reports not_found) or by `ferry gc`.
//   kernel      lives until destroyed or until reboot (posix, sysv).
//   filesystem  a file that survives reboot (file); `sync()` flushes it.
//
// Example:
//   auto created = ferry::Segment::create("orders", {.size = 1 << 20});
//   if (!created) { std::cerr << created.error().message() << '\n'; return 1; }
//   std::span<std::byte> bytes = created->data();
//   ...
//   auto opened = ferry::Segment::open("orders");   // in another process
//
// Thread-safety: a Segment object is not synchronised; the memory it maps is
// shared, and what lives there brings its own synchronisation.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "ferry/os/clock.hpp"
#include "ferry/os/error.hpp"
#include "ferry/os/fd.hpp"

namespace ferry {

enum class SegmentKind : std::uint8_t { posix = 1, file = 2, memfd = 3, sysv = 4 };

/// What a segment holds, recorded in its header so `ferry ls` can tell.
/// Layers above add their objects here.
enum class ObjectType : std::uint16_t {
  segment = 0,
  mutex = 1,
  semaphore = 2,
  condvar = 3,
  spin_lock = 4,
  monitor = 5,
  channel = 6,
  mailbox = 7,
  mailbox_queue = 8,
  mailbox_sender = 9,
  topic = 10,
  chunks = 11,  // loan chunks (a slab of a Channel's zero-copy pool)
};
enum class Persistence : std::uint8_t { process = 1, kernel = 2, filesystem = 3 };
enum class Access : std::uint8_t { read_write, read_only };

std::string_view to_string(SegmentKind kind) noexcept;
std::string_view to_string(Persistence persistence) noexcept;
/// "segment", ... ("type N" for a type this build does not know).
std::string to_string(ObjectType type);

/// The persistence a kind has when none is asked for: posix and sysv kernel,
/// file filesystem, memfd process.
Persistence default_persistence(SegmentKind kind) noexcept;

struct SegmentOptions {
  SegmentKind kind = SegmentKind::posix;
  /// Bytes of user data; the header comes on top. Must be > 0.
  std::size_t size = 0;
  /// Unset: the kind's default. posix: process|kernel; file: process|filesystem;
  /// memfd: process; sysv: process|kernel.
  std::optional<Persistence> persistence;
  /// Permission bits, applied exactly (the umask does not narrow them).
  mode_t mode = 0600;
  /// How many processes may be attached at once.
  std::uint32_t max_attachments = 64;
  /// sysv only: the ftok project id combined with the path.
  int sysv_project_id = 1;
  /// For layers above: what lives inside (shown by `ferry ls`).
  ObjectType object_type = ObjectType::segment;
  /// Unset: all memory is reserved now (a full tmpfs fails create, never a
  /// write later). Set: only the first `sparse_after` data bytes are; the
  /// rest is sparse, and the owner reserves ranges with Segment::reserve()
  /// before writing them (objects that grow, such as an unbounded Mailbox).
  /// posix, file and memfd only.
  std::optional<std::size_t> sparse_after;
  /// Builds the object inside the fresh, zeroed data before any other
  /// process can open the segment.
  std::function<void(std::span<std::byte>)> initialize;
};

struct OpenOptions {
  SegmentKind kind = SegmentKind::posix;
  /// 0 accepts any size; otherwise the segment must hold exactly this many user bytes.
  std::size_t size = 0;
  /// read_only maps without write access and does not count as an attachment.
  Access access = Access::read_write;
  /// Open an object created by another user (refused by default).
  bool allow_foreign_owner = false;
  int sysv_project_id = 1;
  /// Unset accepts any; otherwise the segment must hold this type of object.
  std::optional<ObjectType> object_type;
};

/// Facts about a segment, from its header and its backing object.
struct SegmentInfo {
  SegmentKind kind;
  Persistence persistence;
  ObjectType object_type;
  std::size_t data_size;
  std::size_t total_size;
  uid_t creator_uid;
  gid_t creator_gid;
  pid_t creator_pid;
  mode_t mode;
  std::uint64_t creation_time_ns;
};

namespace detail {
struct SegmentState;
}

class Segment {
 public:
  /// Creates and maps a new segment. Errors: invalid_argument (name, size,
  /// persistence for this kind), already_exists (also when another user made
  /// it), permission_denied, no_space (tmpfs or disk full), limit_reached.
  static result<Segment> create(std::string_view name, const SegmentOptions& options);

  /// Opens and maps an existing segment. Errors: not_found (also a process-
  /// persistent segment whose processes all died), permission_denied (mode,
  /// or owned by another user), corrupt, version_mismatch, size_mismatch,
  /// full (attach table), invalid_argument (object type).
  static result<Segment> open(std::string_view name, const OpenOptions& options = {});

  /// Maps a memfd segment from a descriptor received from its creator.
  static result<Segment> attach(Fd memfd, const OpenOptions& options = {});

  /// Removes the name at once; processes that have it mapped keep their
  /// mapping. memfd segments have no name (close every descriptor instead).
  static result<void> destroy(std::string_view name, SegmentKind kind = SegmentKind::posix,
                              int sysv_project_id = 1);

  Segment(Segment&&) noexcept;
  Segment& operator=(Segment&&) noexcept;
  ~Segment();

  /// The user bytes (never the header).
  [[nodiscard]] std::span<std::byte> data() const noexcept;
  [[nodiscard]] std::size_t size() const noexcept;
  [[nodiscard]] const std::string& name() const noexcept;
  /// "posix segment 'orders'": how errors name this object.
  [[nodiscard]] const std::shared_ptr<const std::string>& description() const noexcept;
  [[nodiscard]] SegmentInfo info() const noexcept;
  [[nodiscard]] bool attached() const noexcept;

  /// The descriptor behind posix, file and memfd segments (invalid for sysv);
  /// pass it to another process (fork, exec, SCM_RIGHTS) to share a memfd.
  [[nodiscard]] const Fd& fd() const noexcept;

  /// Writes modified pages back to the backing file (msync MS_SYNC).
  result<void> sync();

  /// Faults the whole mapping in now (MADV_POPULATE_WRITE, or a read of every
  /// page where the kernel lacks it), so hot paths never take a page fault.
  result<void> prefault();

  /// Allocates the data bytes [offset, offset + length) if they are not yet
  /// (a segment made with reserve = false). Errors: no_space, unsupported (sysv).
  result<void> reserve(std::size_t offset, std::size_t length);
  /// Gives the memory of the whole pages inside data [offset, offset +
  /// length) back to the system; they read as zeros until written again.
  result<void> release(std::size_t offset, std::size_t length);
  /// Unmaps now (the destructor does it otherwise). For a process-persistent
  /// segment, the last process to detach destroys it.
  result<void> detach();

  /// Leaves the mapping (and the attachment) in place until the process
  /// exits, whatever happens to this object. For memory holding locks this
  /// process may still hold (see Mutex).
  void keep_mapped_until_exit() noexcept;

 private:
  explicit Segment(std::unique_ptr<detail::SegmentState> state) noexcept;
  std::unique_ptr<detail::SegmentState> state_;
};

}  // namespace ferry
