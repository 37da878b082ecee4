#include "ferry/os/segment.hpp"

#include <fcntl.h>
#include <sched.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <thread>

#include "segment_internal.hpp"

namespace ferry {

std::string_view to_string(SegmentKind kind) noexcept {
  switch (kind) {
    case SegmentKind::posix: return "posix";
    case SegmentKind::file: return "file";
    case SegmentKind::memfd: return "memfd";
    case SegmentKind::sysv: return "sysv";
  }
  return "unknown";
}

std::string_view to_string(Persistence persistence) noexcept {
  switch (persistence) {
    case Persistence::process: return "process";
    case Persistence::kernel: return "kernel";
    case Persistence::filesystem: return "filesystem";
  }
  return "unknown";
}

std::string to_string(ObjectType type) {
  switch (type) {
    case ObjectType::segment: return "segment";
    case ObjectType::mutex: return "mutex";
    case ObjectType::semaphore: return "semaphore";
    case ObjectType::condvar: return "condvar";
    case ObjectType::spin_lock: return "spin_lock";
    case ObjectType::monitor: return "monitor";
    case ObjectType::channel: return "channel";
    case ObjectType::mailbox: return "mailbox";
    case ObjectType::mailbox_queue: return "mailbox queue";
    case ObjectType::mailbox_sender: return "mailbox sender log";
    case ObjectType::topic: return "topic";
    case ObjectType::chunks: return "loan chunks";
  }
  return "type " + std::to_string(static_cast<unsigned>(type));
}

Persistence default_persistence(SegmentKind kind) noexcept {
  switch (kind) {
    case SegmentKind::file: return Persistence::filesystem;
    case SegmentKind::memfd: return Persistence::process;
    case SegmentKind::posix:
    case SegmentKind::sysv: break;
  }
  return Persistence::kernel;
}

namespace detail {
namespace {

bool persistence_allowed(SegmentKind kind, Persistence persistence) noexcept {
  switch (kind) {
    case SegmentKind::posix:
    case SegmentKind::sysv: return persistence != Persistence::filesystem;
    case SegmentKind::file: return persistence != Persistence::kernel;
    case SegmentKind::memfd: return persistence == Persistence::process;
  }
  return false;
}

bool valid_kind(std::uint8_t kind) noexcept { return kind >= 1 && kind <= 4; }

// How long an opener waits for another process's lifecycle decision or for a
// System V creator to finish its header; both take microseconds normally.
constexpr auto kSettleTimeout = std::chrono::seconds(2);

void pause_briefly(int round) noexcept {
  if (round < 64) {
    sched_yield();
  } else {
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
}

}  // namespace

std::string backing_path(SegmentKind kind, std::string_view name) {
  if (kind == SegmentKind::posix) {
    std::string path(kPosixDirectory);
    path += '/';
    path += kNamePrefix;
    path += name;
    return path;
  }
  return std::string(name);
}

std::string describe(SegmentKind kind, std::string_view name) {
  std::string text(to_string(kind));
  text += " segment '";
  text += name;
  text += '\'';
  return text;
}

result<HeaderSnapshot> read_header(const SegmentHeader* header, std::size_t mapped_size,
                                   SegmentKind kind, std::string_view description) {
  if (mapped_size < kSegmentHeaderSize) {
    return error(errc::corrupt, description,
                 "only " + std::to_string(mapped_size) + " bytes, smaller than a ferry header");
  }
  if (header->magic.load(std::memory_order_acquire) != kSegmentMagic) {
    return error(errc::corrupt, description, "not a ferry segment (bad magic)");
  }
  // Every field is read exactly once; only the copies are checked and used.
  const std::uint32_t version = header->layout_version;
  const std::uint32_t data_offset = header->data_offset;
  const std::uint64_t total_size = header->total_size;
  const std::uint64_t data_size = header->data_size;
  const std::uint8_t stored_kind = header->kind;
  const std::uint8_t stored_persistence = header->persistence;
  const std::uint32_t capacity = header->attach_capacity;

  if (version != kSegmentLayoutVersion) {
    return error(errc::version_mismatch, description,
                 "layout version " + std::to_string(version) + ", this ferry reads version " +
                     std::to_string(kSegmentLayoutVersion));
  }
  if (capacity == 0 || capacity > kMaxAttachCapacity ||
      data_offset != segment_data_offset(capacity)) {
    return error(errc::corrupt, description, "attach table out of bounds");
  }
  if (total_size != mapped_size || data_offset > total_size ||
      data_size != total_size - data_offset) {
    return error(errc::corrupt, description,
                 "header says " + std::to_string(total_size) + " bytes, the object has " +
                     std::to_string(mapped_size));
  }
  if (!valid_kind(stored_kind) || static_cast<SegmentKind>(stored_kind) != kind) {
    return error(errc::corrupt, description, "header names another segment kind");
  }
  const auto persistence = static_cast<Persistence>(stored_persistence);
  if (stored_persistence < 1 || stored_persistence > 3 || !persistence_allowed(kind, persistence)) {
    return error(errc::corrupt, description, "invalid persistence in header");
  }
  HeaderSnapshot snapshot{};
  snapshot.info = SegmentInfo{kind,
                              persistence,
                              static_cast<ObjectType>(header->object_type),
                              static_cast<std::size_t>(data_size),
                              static_cast<std::size_t>(total_size),
                              header->creator_uid,
                              header->creator_gid,
                              header->creator_pid,
                              header->mode,
                              header->creation_time_ns};
  snapshot.data_offset = data_offset;
  snapshot.attach_capacity = capacity;
  return snapshot;
}

std::vector<ProcessId> live_attachments(const SegmentHeader* header, std::uint32_t capacity) {
  std::vector<ProcessId> live;
  const AttachSlot* slots = attach_table(const_cast<SegmentHeader*>(header));
  for (std::uint32_t i = 0; i < capacity; ++i) {
    const auto who = ProcessId::from_packed(slots[i].load(std::memory_order_seq_cst));
    if (!who.empty() && who.alive()) live.push_back(who);
  }
  return live;
}

void Unlinker::operator()() const noexcept {
  switch (kind) {
    case SegmentKind::posix:
    case SegmentKind::file: {
      // Remove the name only while it still names our object: a new segment
      // may have been created under the same name in the meantime.
      struct stat now {};
      if (::lstat(path.c_str(), &now) == 0 && now.st_dev == dev && now.st_ino == ino) {
        ::unlink(path.c_str());
      }
      break;
    }
    case SegmentKind::sysv:
      if (sysv_id >= 0) ::shmctl(sysv_id, IPC_RMID, nullptr);
      break;
    case SegmentKind::memfd: break;  // no name: gone with the last descriptor
  }
}

result<bool> destroy_if_unused(SegmentHeader* header, std::uint32_t capacity,
                               const Unlinker& unlink, std::string_view description) {
  const std::uint64_t me = ProcessId::current().packed();
  const deadline give_up = deadline_after(kSettleTimeout);
  for (int round = 0;; ++round) {
    std::uint64_t seen = header->lifecycle.load(std::memory_order_seq_cst);
    if (seen == kLifecycleDestroyed) return true;
    if (seen != kLifecycleOpen) {
      // Another process is deciding. If it died doing so, take its place.
      if (!ProcessId::from_packed(seen).alive()) {
        header->lifecycle.compare_exchange_strong(seen, kLifecycleOpen, std::memory_order_seq_cst);
        continue;
      }
      if (steady_clock::now() > give_up) {
        return error(errc::busy, description,
                     "process " + std::to_string(ProcessId::from_packed(seen).pid()) +
                         " has been deciding its lifecycle for too long");
      }
      pause_briefly(round);
      continue;
    }
    if (!header->lifecycle.compare_exchange_strong(seen, me, std::memory_order_seq_cst)) continue;
    if (!live_attachments(header, capacity).empty()) {
      header->lifecycle.store(kLifecycleOpen, std::memory_order_seq_cst);
      return false;
    }
    header->lifecycle.store(kLifecycleDestroyed, std::memory_order_seq_cst);
    unlink();
    return true;
  }
}

// Allocates bytes [offset, offset + length) of a file now.
result<void> reserve_range(int fd, std::size_t offset, std::size_t length, const std::string& description) {
  const int rc = ::posix_fallocate(fd, static_cast<off_t>(offset), static_cast<off_t>(length));
  if (rc == 0) return {};
  if (rc == ENOSPC) {
    return error(errc::no_space, description, "cannot reserve " + std::to_string(length) + " bytes", rc);
  }
  if (rc == EFBIG) {
    return error(errc::limit_reached, description,
                 std::to_string(offset + length) + " bytes exceeds the file size limit", rc);
  }
  return error::from_errno(rc, description, "reserving memory");
}

/// Everything a Segment owns.
struct SegmentState {
  std::string name;
  std::shared_ptr<const std::string> description;
  Access access = Access::read_write;
  Fd fd;
  std::byte* base = nullptr;
  std::size_t mapped_size = 0;
  HeaderSnapshot snapshot{};
  Unlinker unlinker{};
  int slot = -1;            // our entry in the attach table, -1 if not attached
  pid_t attached_by = 0;    // the process that claimed it (a forked child must not release it)
  std::uint64_t attached_as = 0;

  SegmentHeader* header() const noexcept { return reinterpret_cast<SegmentHeader*>(base); }
  SegmentKind kind() const noexcept { return unlinker.kind; }

  // Leaves the attach table (only the process that joined it may).
  void release_slot() noexcept {
    if (slot < 0) return;
    if (::getpid() == attached_by) {
      std::uint64_t expected = attached_as;
      attach_table(header())[slot].compare_exchange_strong(expected, 0, std::memory_order_seq_cst);
    }
    slot = -1;
  }

  result<void> unmap() noexcept {
    if (!base) return {};
    int rc = 0;
    if (kind() == SegmentKind::sysv) {
      rc = ::shmdt(base);
    } else {
      rc = ::munmap(base, mapped_size);
    }
    base = nullptr;
    mapped_size = 0;
    if (rc != 0) return error::from_errno(errno, *description, "unmap");
    return {};
  }

  ~SegmentState() { (void)unmap(); }
};

namespace {

result<void> validate_name(SegmentKind kind, std::string_view name, const std::string& description) {
  if (name.empty()) return error(errc::invalid_argument, description, "empty name");
  switch (kind) {
    case SegmentKind::posix:
    case SegmentKind::memfd: {
      if (name.size() > 200) {
        return error(errc::invalid_argument, description, "name longer than 200 characters");
      }
      const bool allowed = std::all_of(name.begin(), name.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == '.' || c == '_' || c == '-';
      });
      if (!allowed || name.front() == '.') {
        return error(errc::invalid_argument, description,
                     "names use letters, digits, '.', '_' and '-' and do not start with '.'");
      }
      return {};
    }
    case SegmentKind::file:
    case SegmentKind::sysv:
      if (name.size() >= PATH_MAX) return error(errc::invalid_argument, description, "path too long");
      if (name.find('\0') != std::string_view::npos) {
        return error(errc::invalid_argument, description, "path contains a NUL byte");
      }
      if (name.back() == '/') return error(errc::invalid_argument, description, "path names a directory");
      return {};
  }
  return error(errc::invalid_argument, description, "unknown segment kind");
}

result<key_t> sysv_key(std::string_view path, int project_id, const std::string& description) {
  if (project_id < 1 || project_id > 255) {
    return error(errc::invalid_argument, description, "sysv project id must be 1..255");
  }
  const key_t key = ::ftok(std::string(path).c_str(), project_id);
  if (key == -1) {
    return error::from_errno(errno, description, "making the System V key from the path");
  }
  return key;
}

std::string owner_detail(uid_t owner) {
  return "owned by uid " + std::to_string(owner) + ", not by uid " + std::to_string(::geteuid());
}

result<std::byte*> map_fd(int fd, std::size_t size, Access access, const std::string& description) {
  const int protection = access == Access::read_only ? PROT_READ : PROT_READ | PROT_WRITE;
  void* address = ::mmap(nullptr, size, protection, MAP_SHARED, fd, 0);
  if (address == MAP_FAILED) return error::from_errno(errno, description, "mmap");
  return static_cast<std::byte*>(address);
}

result<std::byte*> map_sysv(int id, Access access, const std::string& description) {
  void* address = ::shmat(id, nullptr, access == Access::read_only ? SHM_RDONLY : 0);
  if (address == reinterpret_cast<void*>(-1)) return error::from_errno(errno, description, "shmat");
  return static_cast<std::byte*>(address);
}

// Claims a free (or dead) slot in the attach table.
result<void> claim_slot(SegmentState& state) {
  const std::uint64_t me = ProcessId::current().packed();
  AttachSlot* slots = attach_table(state.header());
  for (std::uint32_t i = 0; i < state.snapshot.attach_capacity; ++i) {
    std::uint64_t seen = slots[i].load(std::memory_order_seq_cst);
    if (seen != 0 && ProcessId::from_packed(seen).alive()) continue;
    if (slots[i].compare_exchange_strong(seen, me, std::memory_order_seq_cst)) {
      state.slot = static_cast<int>(i);
      state.attached_by = ::getpid();
      state.attached_as = me;
      return {};
    }
  }
  return error(errc::full, *state.description,
               "all " + std::to_string(state.snapshot.attach_capacity) +
                   " attach slots are taken by live processes");
}

// Joins the attach table of a validated segment, honouring the lifecycle protocol.
result<void> join(SegmentState& state) {
  SegmentHeader* header = state.header();
  const std::uint32_t capacity = state.snapshot.attach_capacity;
  if (state.snapshot.info.persistence == Persistence::process) {
    // A process-persistent segment whose processes all died is gone: finish its removal.
    auto destroyed = destroy_if_unused(header, capacity, state.unlinker, *state.description);
    if (!destroyed) return destroyed.error();
    if (*destroyed) {
      return error(errc::not_found, *state.description,
                   "its last process is gone, so it was destroyed");
    }
  }
  if (auto claimed = claim_slot(state); !claimed) return claimed;
  const deadline give_up = deadline_after(kSettleTimeout);
  for (int round = 0;; ++round) {
    std::uint64_t seen = header->lifecycle.load(std::memory_order_seq_cst);
    if (seen == kLifecycleOpen) return {};
    if (seen == kLifecycleDestroyed) {
      state.release_slot();
      state.unlinker();  // in case its destroyer died before removing the name
      return error(errc::not_found, *state.description, "destroyed while we attached");
    }
    if (!ProcessId::from_packed(seen).alive()) {
      header->lifecycle.compare_exchange_strong(seen, kLifecycleOpen, std::memory_order_seq_cst);
    } else if (steady_clock::now() > give_up) {
      state.release_slot();
      return error(errc::busy, *state.description, "another process keeps deciding its lifecycle");
    } else {
      pause_briefly(round);
    }
  }
}

// Writes the header of a fresh, zeroed mapping; the creator takes slot 0.
// The magic is stored last, with release ordering: whoever sees it sees the rest.
void initialise(SegmentState& state, const SegmentOptions& options, Persistence persistence,
                std::size_t total_size) {
  SegmentHeader* header = state.header();
  const std::uint32_t offset = static_cast<std::uint32_t>(segment_data_offset(options.max_attachments));
  header->layout_version = kSegmentLayoutVersion;
  header->data_offset = offset;
  header->total_size = total_size;
  header->data_size = options.size;
  header->kind = static_cast<std::uint8_t>(options.kind);
  header->persistence = static_cast<std::uint8_t>(persistence);
  header->object_type = static_cast<std::uint16_t>(options.object_type);
  header->attach_capacity = options.max_attachments;
  header->creator_uid = ::geteuid();
  header->creator_gid = ::getegid();
  header->creator_pid = ::getpid();
  header->mode = options.mode;
  header->creation_time_ns = wall_clock_ns();
  header->lifecycle.store(kLifecycleOpen, std::memory_order_relaxed);

  state.snapshot.info = SegmentInfo{options.kind,     persistence,     options.object_type,
                                    options.size,     total_size,      header->creator_uid,
                                    header->creator_gid, header->creator_pid, options.mode,
                                    header->creation_time_ns};
  state.snapshot.data_offset = offset;
  state.snapshot.attach_capacity = options.max_attachments;

  const std::uint64_t me = ProcessId::current().packed();
  attach_table(header)[0].store(me, std::memory_order_relaxed);
  state.slot = 0;
  state.attached_by = ::getpid();
  state.attached_as = me;
  if (options.initialize) {
    options.initialize(std::span<std::byte>(state.base + offset, options.size));
  }
  header->magic.store(kSegmentMagic, std::memory_order_release);
}

result<void> reserve_space(int fd, std::size_t total_size, const std::string& description) {
  return reserve_range(fd, 0, total_size, description);
}

// An unnamed file in `directory`, to be linked under its name once initialised.
// O_TMPFILE where the file system has it; a hidden, uniquely named file otherwise.
struct UnnamedFile {
  Fd fd;
  std::string temporary_path;  // empty with O_TMPFILE
};

result<UnnamedFile> make_unnamed_file(const std::string& path, mode_t mode,
                                      const std::string& description) {
  const auto slash = path.rfind('/');
  const std::string directory = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  int fd = ::open(directory.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, mode);
  if (fd >= 0) return UnnamedFile{Fd(fd), {}};
  if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL) {
    return error::from_errno(errno, description, "creating in " + directory);
  }
  static std::atomic<unsigned> counter{0};
  std::string temporary = directory + "/.ferry-tmp." + std::to_string(::getpid()) + "." +
                          std::to_string(counter.fetch_add(1));
  fd = ::open(temporary.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC | O_NOFOLLOW, mode);
  if (fd < 0) return error::from_errno(errno, description, "creating in " + directory);
  return UnnamedFile{Fd(fd), std::move(temporary)};
}

result<void> publish(UnnamedFile& file, const std::string& path, const std::string& description) {
  int rc = 0;
  if (file.temporary_path.empty()) {
    const std::string self = "/proc/self/fd/" + std::to_string(file.fd.get());
    rc = ::linkat(AT_FDCWD, self.c_str(), AT_FDCWD, path.c_str(), AT_SYMLINK_FOLLOW);
  } else {
    rc = ::link(file.temporary_path.c_str(), path.c_str());
  }
  const int saved = errno;
  if (!file.temporary_path.empty()) ::unlink(file.temporary_path.c_str());
  if (rc == 0) return {};
  if (saved == EEXIST) {
    struct stat existing {};
    std::string detail;
    if (::lstat(path.c_str(), &existing) == 0 && existing.st_uid != ::geteuid()) {
      detail = owner_detail(existing.st_uid);
    }
    return error(errc::already_exists, description, detail, saved);
  }
  return error::from_errno(saved, description, "linking it under its name");
}

result<std::unique_ptr<SegmentState>> create_once(std::string_view name, const SegmentOptions& options,
                                                  Persistence persistence,
                                                  const std::shared_ptr<const std::string>& description) {
  auto state = std::make_unique<SegmentState>();
  state->name = std::string(name);
  state->description = description;
  state->unlinker.kind = options.kind;
  const std::size_t total_size = segment_data_offset(options.max_attachments) + options.size;

  if (options.kind == SegmentKind::sysv) {
    auto key = sysv_key(name, options.sysv_project_id, *description);
    if (!key) return key.error();
    const int id = ::shmget(*key, total_size, IPC_CREAT | IPC_EXCL | static_cast<int>(options.mode));
    if (id < 0) {
      const int saved = errno;
      if (saved == EINVAL) {
        return error(errc::limit_reached, *description,
                     std::to_string(total_size) + " bytes is outside kernel.shmmax/shmmin", saved);
      }
      if (saved == ENOSPC) {
        return error(errc::limit_reached, *description, "kernel.shmmni or shmall exhausted", saved);
      }
      if (saved == EEXIST) {
        shmid_ds existing{};
        const int existing_id = ::shmget(*key, 0, 0);
        std::string detail;
        if (existing_id >= 0 && ::shmctl(existing_id, IPC_STAT, &existing) == 0 &&
            existing.shm_perm.uid != ::geteuid()) {
          detail = owner_detail(existing.shm_perm.uid);
        }
        return error(errc::already_exists, *description, detail, saved);
      }
      return error::from_errno(saved, *description, "shmget");
    }
    state->unlinker.sysv_id = id;
    auto mapped = map_sysv(id, Access::read_write, *description);
    if (!mapped) {
      state->unlinker();
      return mapped.error();
    }
    state->base = *mapped;
    state->mapped_size = total_size;
    initialise(*state, options, persistence, total_size);
    return state;
  }

  UnnamedFile file;
  if (options.kind == SegmentKind::memfd) {
    const std::string label = std::string(kNamePrefix) + std::string(name);
    const int fd = ::memfd_create(label.c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0) return error::from_errno(errno, *description, "memfd_create");
    file.fd.reset(fd);
  } else {
    state->unlinker.path = backing_path(options.kind, name);
    auto made = make_unnamed_file(state->unlinker.path, options.mode, *description);
    if (!made) return made.error();
    file = std::move(*made);
  }
  auto discard = [&] {
    if (!file.temporary_path.empty()) ::unlink(file.temporary_path.c_str());
  };
  if (::fchmod(file.fd.get(), options.mode) != 0) {
    discard();
    return error::from_errno(errno, *description, "fchmod");
  }
  // Sparse: a size, and only the header and the first data bytes allocated.
  const std::size_t reserved_size =
      options.sparse_after
          ? segment_data_offset(options.max_attachments) + std::min(*options.sparse_after, options.size)
          : total_size;
  if (options.sparse_after && ::ftruncate(file.fd.get(), static_cast<off_t>(total_size)) != 0) {
    discard();
    return error::from_errno(errno, *description, "ftruncate");
  }
  if (auto reserved = reserve_space(file.fd.get(), reserved_size, *description); !reserved) {
    discard();
    return reserved.error();
  }
  auto mapped = map_fd(file.fd.get(), total_size, Access::read_write, *description);
  if (!mapped) {
    discard();
    return mapped.error();
  }
  state->base = *mapped;
  state->mapped_size = total_size;
  initialise(*state, options, persistence, total_size);

  if (options.kind != SegmentKind::memfd) {
    if (auto published = publish(file, state->unlinker.path, *description); !published) {
      return published.error();
    }
    struct stat own {};
    ::fstat(file.fd.get(), &own);
    state->unlinker.dev = own.st_dev;
    state->unlinker.ino = own.st_ino;
  }
  state->fd = std::move(file.fd);
  return state;
}

// Maps and validates an object whose descriptor (or System V id) is open.
result<std::unique_ptr<SegmentState>> open_mapped(std::unique_ptr<SegmentState> state,
                                                  const OpenOptions& options) {
  const std::string& description = *state->description;
  uid_t owner = 0;
  std::size_t object_size = 0;
  if (state->kind() == SegmentKind::sysv) {
    shmid_ds facts{};
    if (::shmctl(state->unlinker.sysv_id, IPC_STAT, &facts) != 0) {
      return error::from_errno(errno, description, "shmctl(IPC_STAT)");
    }
    owner = facts.shm_perm.uid;
    object_size = facts.shm_segsz;
  } else {
    struct stat facts {};
    if (::fstat(state->fd.get(), &facts) != 0) return error::from_errno(errno, description, "fstat");
    if (!S_ISREG(facts.st_mode)) return error(errc::invalid_argument, description, "not a regular file");
    owner = facts.st_uid;
    object_size = static_cast<std::size_t>(facts.st_size);
    state->unlinker.dev = facts.st_dev;
    state->unlinker.ino = facts.st_ino;
  }
  if (owner != ::geteuid() && !options.allow_foreign_owner) {
    return error(errc::permission_denied, description,
                 owner_detail(owner) + "; set allow_foreign_owner to open it anyway");
  }
  if (object_size < kSegmentHeaderSize) {
    return error(errc::corrupt, description,
                 std::to_string(object_size) + " bytes, smaller than a ferry header");
  }

  auto mapped = state->kind() == SegmentKind::sysv
                    ? map_sysv(state->unlinker.sysv_id, options.access, description)
                    : map_fd(state->fd.get(), object_size, options.access, description);
  if (!mapped) return mapped.error();
  state->base = *mapped;
  state->mapped_size = object_size;
  state->access = options.access;

  // posix and file segments are named only once initialised; a System V
  // segment exists (zeroed) as soon as shmget returns, so give its creator a moment.
  const deadline give_up = deadline_after(kSettleTimeout);
  for (int round = 0; state->kind() == SegmentKind::sysv &&
                      state->header()->magic.load(std::memory_order_acquire) == 0 &&
                      steady_clock::now() < give_up;
       ++round) {
    pause_briefly(round);
  }
  auto snapshot = read_header(state->header(), object_size, state->kind(), description);
  if (!snapshot) return snapshot.error();
  state->snapshot = *snapshot;

  const SegmentInfo& info = snapshot->info;
  if (options.size != 0 && options.size != info.data_size) {
    return error(errc::size_mismatch, description,
                 "holds " + std::to_string(info.data_size) + " bytes, " +
                     std::to_string(options.size) + " were asked for");
  }
  if (options.object_type && *options.object_type != info.object_type) {
    return error(errc::invalid_argument, description,
                 "holds a " + to_string(info.object_type) + ", not a " +
                     to_string(*options.object_type));
  }
  if (state->header()->lifecycle.load(std::memory_order_seq_cst) == kLifecycleDestroyed) {
    state->unlinker();
    return error(errc::not_found, description, "it was destroyed");
  }
  if (options.access == Access::read_write) {
    if (auto joined = join(*state); !joined) return joined.error();
  }
  return state;
}

}  // namespace
}  // namespace detail

using detail::SegmentState;

Segment::Segment(std::unique_ptr<SegmentState> state) noexcept : state_(std::move(state)) {}
Segment::Segment(Segment&&) noexcept = default;
Segment& Segment::operator=(Segment&& other) noexcept {
  if (this != &other) {
    (void)detach();
    state_ = std::move(other.state_);
  }
  return *this;
}
Segment::~Segment() { (void)detach(); }

result<Segment> Segment::create(std::string_view name, const SegmentOptions& options) {
  auto description = std::make_shared<const std::string>(detail::describe(options.kind, name));
  if (auto valid = detail::validate_name(options.kind, name, *description); !valid) return valid.error();
  if (options.size == 0) return error(errc::invalid_argument, description, "size 0");
  if (options.size > (std::size_t{1} << 46)) {
    return error(errc::invalid_argument, description,
                 "size " + std::to_string(options.size) + " is beyond 64 TiB");
  }
  if (options.max_attachments == 0 || options.max_attachments > detail::kMaxAttachCapacity) {
    return error(errc::invalid_argument, description,
                 "max_attachments must be 1.." + std::to_string(detail::kMaxAttachCapacity));
  }
  if ((options.mode & ~mode_t{0777}) != 0) {
    return error(errc::invalid_argument, description, "mode has bits outside 0777");
  }
  const Persistence persistence = options.persistence.value_or(default_persistence(options.kind));
  if (!detail::persistence_allowed(options.kind, persistence)) {
    return error(errc::invalid_argument, description,
                 std::string(to_string(options.kind)) + " segments cannot have " +
                     std::string(to_string(persistence)) + " persistence");
  }

  for (int attempt = 0;; ++attempt) {
    auto made = detail::create_once(name, options, persistence, description);
    if (made) return Segment(std::move(*made));
    if (made.error().code() != errc::already_exists || attempt == 1) return made.error();
    // The name is taken. If it is a process-persistent segment of ours whose
    // processes all died, opening it completes its removal; then try again.
    OpenOptions probe{.kind = options.kind, .sysv_project_id = options.sysv_project_id};
    auto existing = Segment::open(name, probe);
    if (existing || existing.error().code() != errc::not_found) return made.error();
  }
}

result<Segment> Segment::open(std::string_view name, const OpenOptions& options) {
  auto description = std::make_shared<const std::string>(detail::describe(options.kind, name));
  if (options.kind == SegmentKind::memfd) {
    return error(errc::invalid_argument, description,
                 "memfd segments have no name to open; use Segment::attach with its descriptor");
  }
  if (auto valid = detail::validate_name(options.kind, name, *description); !valid) return valid.error();

  auto state = std::make_unique<SegmentState>();
  state->name = std::string(name);
  state->description = description;
  state->unlinker.kind = options.kind;
  if (options.kind == SegmentKind::sysv) {
    auto key = detail::sysv_key(name, options.sysv_project_id, *description);
    if (!key) return key.error();
    const int id = ::shmget(*key, 0, 0);
    if (id < 0) return error::from_errno(errno, *description, "shmget");
    state->unlinker.sysv_id = id;
  } else {
    state->unlinker.path = detail::backing_path(options.kind, name);
    const int flags = (options.access == Access::read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_NOFOLLOW;
    const int fd = ::open(state->unlinker.path.c_str(), flags);
    if (fd < 0) {
      if (errno == ELOOP) return error(errc::invalid_argument, description, "is a symbolic link", ELOOP);
      return error::from_errno(errno, *description, "open");
    }
    state->fd.reset(fd);
  }
  auto opened = detail::open_mapped(std::move(state), options);
  if (!opened) return opened.error();
  return Segment(std::move(*opened));
}

result<Segment> Segment::attach(Fd memfd, const OpenOptions& options) {
  auto description = std::make_shared<const std::string>(
      detail::describe(SegmentKind::memfd, "fd " + std::to_string(memfd.get())));
  if (!memfd) return error(errc::invalid_argument, description, "invalid descriptor");
  auto state = std::make_unique<SegmentState>();
  state->name = "fd " + std::to_string(memfd.get());
  state->description = description;
  state->unlinker.kind = SegmentKind::memfd;
  state->fd = std::move(memfd);
  auto opened = detail::open_mapped(std::move(state), options);
  if (!opened) return opened.error();
  return Segment(std::move(*opened));
}

result<void> Segment::destroy(std::string_view name, SegmentKind kind, int sysv_project_id) {
  const std::string description = detail::describe(kind, name);
  if (kind == SegmentKind::memfd) {
    return error(errc::invalid_argument, description, "memfd segments have no name to remove");
  }
  if (auto valid = detail::validate_name(kind, name, description); !valid) return valid.error();
  if (kind == SegmentKind::sysv) {
    auto key = detail::sysv_key(name, sysv_project_id, description);
    if (!key) return key.error();
    const int id = ::shmget(*key, 0, 0);
    if (id < 0) return error::from_errno(errno, description, "shmget");
    if (::shmctl(id, IPC_RMID, nullptr) != 0) return error::from_errno(errno, description, "IPC_RMID");
    return {};
  }
  if (::unlink(detail::backing_path(kind, name).c_str()) != 0) {
    return error::from_errno(errno, description, "unlink");
  }
  return {};
}

std::span<std::byte> Segment::data() const noexcept {
  if (!attached()) return {};
  return {state_->base + state_->snapshot.data_offset, state_->snapshot.info.data_size};
}

// A moved-from Segment (or one kept mapped until exit) answers like an empty one.
namespace {
const detail::SegmentState& empty_state() {
  static const detail::SegmentState empty{};
  return empty;
}
}  // namespace

std::size_t Segment::size() const noexcept { return attached() ? state_->snapshot.info.data_size : 0; }
const std::string& Segment::name() const noexcept { return (state_ ? *state_ : empty_state()).name; }
const std::shared_ptr<const std::string>& Segment::description() const noexcept {
  return (state_ ? *state_ : empty_state()).description;
}
SegmentInfo Segment::info() const noexcept { return (state_ ? *state_ : empty_state()).snapshot.info; }
bool Segment::attached() const noexcept { return state_ && state_->base != nullptr; }
const Fd& Segment::fd() const noexcept { return (state_ ? *state_ : empty_state()).fd; }

result<void> Segment::sync() {
  if (!attached()) return error(errc::invalid_argument, "segment", "not attached");
  if (::msync(state_->base, state_->mapped_size, MS_SYNC) != 0) {
    return error::from_errno(errno, *state_->description, "msync");
  }
  return {};
}

void Segment::keep_mapped_until_exit() noexcept {
  // Deliberately never freed: the mapping must outlive this object.
  (void)state_.release();
}

result<void> Segment::prefault() {
  if (!attached()) return error(errc::invalid_argument, "segment", "not attached");
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_READ 22
#define MADV_POPULATE_WRITE 23
#endif
  const int advice = state_->access == Access::read_only ? MADV_POPULATE_READ : MADV_POPULATE_WRITE;
  if (::madvise(state_->base, state_->mapped_size, advice) == 0) return {};
  if (errno != EINVAL) return error::from_errno(errno, *state_->description, "madvise(MADV_POPULATE)");
  // Before Linux 5.14: touch every page.
  const long page = ::sysconf(_SC_PAGESIZE);
  for (std::size_t offset = 0; offset < state_->mapped_size; offset += static_cast<std::size_t>(page)) {
    (void)*static_cast<volatile const std::byte*>(state_->base + offset);
  }
  return {};
}

result<void> Segment::reserve(std::size_t offset, std::size_t length) {
  if (!attached()) return error(errc::invalid_argument, "segment", "not attached");
  const SegmentState& state = *state_;
  if (!state.fd) return error(errc::unsupported, *state.description, "a System V segment is always reserved");
  if (offset > size() || length > size() - offset) {
    return error(errc::invalid_argument, *state.description, "reserve beyond the data");
  }
  return detail::reserve_range(state.fd.get(), state.snapshot.data_offset + offset, length, *state.description);
}

result<void> Segment::release(std::size_t offset, std::size_t length) {
  if (!attached()) return error(errc::invalid_argument, "segment", "not attached");
  const SegmentState& state = *state_;
  if (!state.fd) return error(errc::unsupported, *state.description, "a System V segment cannot release pages");
  if (offset > size() || length > size() - offset) {
    return error(errc::invalid_argument, *state.description, "release beyond the data");
  }
  const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  const std::size_t begin = (state.snapshot.data_offset + offset + page - 1) / page * page;
  const std::size_t end = (state.snapshot.data_offset + offset + length) / page * page;
  if (end <= begin) return {};
  if (::fallocate(state.fd.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(begin),
                  static_cast<off_t>(end - begin)) != 0) {
    return error::from_errno(errno, *state.description, "fallocate(PUNCH_HOLE)");
  }
  return {};
}

result<void> Segment::detach() {
  if (!attached()) return {};
  SegmentState& state = *state_;
  const bool was_attached = state.slot >= 0 && ::getpid() == state.attached_by;
  state.release_slot();
  result<void> outcome;
  if (was_attached && state.snapshot.info.persistence == Persistence::process) {
    auto destroyed = detail::destroy_if_unused(state.header(), state.snapshot.attach_capacity,
                                               state.unlinker, *state.description);
    if (!destroyed) outcome = destroyed.error();
  }
  if (auto unmapped = state.unmap(); !unmapped && outcome) outcome = unmapped;
  state.fd.reset();
  return outcome;
}

}  // namespace ferry
