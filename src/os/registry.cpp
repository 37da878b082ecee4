#include "ferry/os/registry.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>

#include "segment_internal.hpp"

namespace ferry {
namespace {

using detail::SegmentHeader;

// A read-only or read-write view of a whole object, unmapped on destruction.
class View {
 public:
  View() = default;
  View(std::byte* base, std::size_t size, bool sysv) : base_(base), size_(size), sysv_(sysv) {}
  View(View&& other) noexcept
      : base_(std::exchange(other.base_, nullptr)), size_(other.size_), sysv_(other.sysv_) {}
  View& operator=(View&& other) noexcept {
    std::swap(base_, other.base_);
    std::swap(size_, other.size_);
    std::swap(sysv_, other.sysv_);
    return *this;
  }
  ~View() {
    if (!base_) return;
    if (sysv_) {
      ::shmdt(base_);
    } else {
      ::munmap(base_, size_);
    }
  }
  SegmentHeader* header() const { return reinterpret_cast<SegmentHeader*>(base_); }
  std::size_t size() const { return size_; }
  explicit operator bool() const { return base_ != nullptr; }

 private:
  std::byte* base_ = nullptr;
  std::size_t size_ = 0;
  bool sysv_ = false;
};

View map_view(int fd, std::size_t size, bool writable) {
  if (size == 0) return {};
  void* base = ::mmap(nullptr, size, writable ? PROT_READ | PROT_WRITE : PROT_READ, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED) return {};
  return View(static_cast<std::byte*>(base), size, false);
}

View attach_view(int id, std::size_t size, bool writable) {
  void* base = ::shmat(id, nullptr, writable ? 0 : SHM_RDONLY);
  if (base == reinterpret_cast<void*>(-1)) return {};
  return View(static_cast<std::byte*>(base), size, true);
}

// Fills info/attached/problem (and, through `inspect`, details) from a mapped header.
void describe_from(ObjectRecord& record, const View& view, const std::string& description,
                   const ObjectInspector& inspect = {}) {
  if (!view) {
    record.problem = "cannot map";
    return;
  }
  auto snapshot = detail::read_header(view.header(), view.size(), record.kind, description);
  if (!snapshot) {
    record.problem = std::string(to_string(snapshot.error().code())) + ": " + snapshot.error().detail();
    return;
  }
  record.info = snapshot->info;
  record.destroyed =
      view.header()->lifecycle.load(std::memory_order_seq_cst) == detail::kLifecycleDestroyed;
  if (record.kind != SegmentKind::memfd) {
    for (const ProcessId& who : detail::live_attachments(view.header(), snapshot->attach_capacity)) {
      record.attached.push_back(who.pid());
    }
  }
  if (inspect) {
    const auto* base = reinterpret_cast<const std::byte*>(view.header());
    inspect(record, std::span<const std::byte>(base + snapshot->data_offset, snapshot->info.data_size));
  }
}

// A posix or file segment at `path`; `writable` maps it for gc.
struct FileObject {
  ObjectRecord record;
  Fd fd;
  View view;
  detail::Unlinker unlinker;
};

std::optional<FileObject> inspect_file(SegmentKind kind, const std::string& path,
                                       const std::string& locator, bool writable,
                                       const ObjectInspector& inspect = {}) {
  FileObject object;
  object.record.locator = locator;
  object.record.kind = kind;
  struct stat facts {};
  if (::lstat(path.c_str(), &facts) != 0) return std::nullopt;
  if (!S_ISREG(facts.st_mode)) return std::nullopt;
  object.record.owner = facts.st_uid;
  object.record.mode = facts.st_mode & 07777;
  object.record.size = static_cast<std::size_t>(facts.st_size);
  object.unlinker = detail::Unlinker{kind, path, facts.st_dev, facts.st_ino, -1};
  const int fd = ::open(path.c_str(), (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    object.record.problem = std::strerror(errno);
    return object;
  }
  object.fd.reset(fd);
  object.view = map_view(fd, object.record.size, writable);
  describe_from(object.record, object.view, detail::describe(kind, path), inspect);
  return object;
}

std::vector<std::string> posix_names() {
  std::vector<std::string> names;
  DIR* directory = ::opendir(std::string(detail::kPosixDirectory).c_str());
  if (!directory) return names;
  while (const dirent* entry = ::readdir(directory)) {
    const std::string_view file = entry->d_name;
    if (file.starts_with(detail::kNamePrefix) && file.size() > detail::kNamePrefix.size()) {
      names.emplace_back(file.substr(detail::kNamePrefix.size()));
    }
  }
  ::closedir(directory);
  std::sort(names.begin(), names.end());
  return names;
}

struct SysvRow {
  key_t key;
  int id;
  mode_t mode;
  std::size_t size;
  uid_t owner;
};

std::vector<SysvRow> sysv_rows() {
  std::vector<SysvRow> rows;
  std::ifstream table("/proc/sysvipc/shm");
  std::string line;
  std::getline(table, line);  // column names
  while (std::getline(table, line)) {
    std::istringstream fields(line);
    long long key = 0;
    int id = 0;
    unsigned mode = 0;
    unsigned long long size = 0;
    long cpid = 0, lpid = 0, nattch = 0;
    unsigned uid = 0;
    if (fields >> key >> id >> std::oct >> mode >> std::dec >> size >> cpid >> lpid >> nattch >> uid) {
      rows.push_back({static_cast<key_t>(key), id, static_cast<mode_t>(mode & 07777),
                      static_cast<std::size_t>(size), static_cast<uid_t>(uid)});
    }
  }
  return rows;
}

std::string sysv_locator(key_t key) {
  char text[32];
  std::snprintf(text, sizeof text, "sysv:0x%08x", static_cast<unsigned>(key));
  return text;
}

// Returns the record if the System V segment is a ferry segment.
std::optional<ObjectRecord> inspect_sysv(const SysvRow& row, bool writable, View* keep,
                                         const ObjectInspector& inspect = {}) {
  if (row.size < detail::kSegmentHeaderSize) return std::nullopt;
  View view = attach_view(row.id, row.size, writable);
  if (!view || view.header()->magic.load(std::memory_order_acquire) != detail::kSegmentMagic) {
    return std::nullopt;
  }
  ObjectRecord record;
  record.locator = sysv_locator(row.key);
  record.kind = SegmentKind::sysv;
  record.owner = row.owner;
  record.mode = row.mode;
  record.size = row.size;
  describe_from(record, view, record.locator, inspect);
  if (keep) *keep = std::move(view);
  return record;
}

std::vector<ObjectRecord> memfd_records(const ObjectInspector& inspect) {
  struct Found {
    ObjectRecord record;
    std::vector<pid_t> holders;
  };
  std::map<std::pair<dev_t, ino_t>, Found> found;
  DIR* proc = ::opendir("/proc");
  if (!proc) return {};
  const std::string marker = "/memfd:" + std::string(detail::kNamePrefix);
  while (const dirent* process = ::readdir(proc)) {
    char* end = nullptr;
    const long pid = std::strtol(process->d_name, &end, 10);
    if (pid <= 0 || *end != '\0') continue;
    const std::string fd_directory = std::string("/proc/") + process->d_name + "/fd";
    DIR* fds = ::opendir(fd_directory.c_str());
    if (!fds) continue;
    while (const dirent* fd_entry = ::readdir(fds)) {
      if (fd_entry->d_name[0] == '.') continue;
      const std::string link = fd_directory + "/" + fd_entry->d_name;
      char target[512];
      const ssize_t length = ::readlink(link.c_str(), target, sizeof target - 1);
      if (length <= 0) continue;
      target[length] = '\0';
      std::string_view text(target, static_cast<std::size_t>(length));
      if (!text.starts_with(marker)) continue;
      struct stat facts {};
      if (::stat(link.c_str(), &facts) != 0) continue;
      auto& entry = found[{facts.st_dev, facts.st_ino}];
      entry.holders.push_back(static_cast<pid_t>(pid));
      if (!entry.record.locator.empty()) continue;
      std::string label(text.substr(marker.size()));
      if (const auto suffix = label.rfind(" (deleted)"); suffix != std::string::npos) label.resize(suffix);
      entry.record.locator = "memfd:" + label;
      entry.record.kind = SegmentKind::memfd;
      entry.record.owner = facts.st_uid;
      entry.record.mode = facts.st_mode & 07777;
      entry.record.size = static_cast<std::size_t>(facts.st_size);
      const int fd = ::open(link.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) {
        entry.record.problem = std::strerror(errno);
        continue;
      }
      Fd owned(fd);
      describe_from(entry.record, map_view(fd, entry.record.size, false), entry.record.locator,
                    inspect);
    }
    ::closedir(fds);
  }
  ::closedir(proc);
  std::vector<ObjectRecord> records;
  for (auto& [identity, entry] : found) {
    std::sort(entry.holders.begin(), entry.holders.end());
    entry.holders.erase(std::unique(entry.holders.begin(), entry.holders.end()), entry.holders.end());
    entry.record.attached = std::move(entry.holders);
    records.push_back(std::move(entry.record));
  }
  return records;
}

result<key_t> parse_key(const std::string& text, std::string_view locator) {
  char* end = nullptr;
  errno = 0;
  const unsigned long long value = std::strtoull(text.c_str(), &end, 0);
  if (text.empty() || *end != '\0' || errno != 0 || value > 0xffffffffull) {
    return error(errc::invalid_argument, locator, "a System V key is a number such as 0x0001a2b3");
  }
  return static_cast<key_t>(static_cast<std::uint32_t>(value));
}

std::vector<ObjectRecord> collect(std::span<const std::string> file_paths, bool remove) {
  std::vector<ObjectRecord> chosen;
  auto consider = [&](ObjectRecord& record, SegmentHeader* header, std::uint32_t capacity,
                      const detail::Unlinker& unlinker) {
    if (!record.info || record.info->persistence != Persistence::process) return;
    if (record.kind == SegmentKind::memfd) return;
    if (!record.destroyed && !record.attached.empty()) return;
    if (remove) {
      // Re-decide under the lifecycle protocol: someone may have attached since we looked.
      auto destroyed = detail::destroy_if_unused(header, capacity, unlinker, record.locator);
      if (!destroyed || !*destroyed) return;
      if (record.destroyed) unlinker();
    }
    chosen.push_back(record);
  };
  auto consider_file = [&](SegmentKind kind, const std::string& path, const std::string& locator) {
    auto object = inspect_file(kind, path, locator, true);
    if (!object || !object->record.info) return;
    const std::uint32_t capacity = object->view.header()->attach_capacity;
    if (capacity == 0 || capacity > detail::kMaxAttachCapacity) return;
    consider(object->record, object->view.header(), capacity, object->unlinker);
  };
  for (const std::string& name : posix_names()) {
    consider_file(SegmentKind::posix, detail::backing_path(SegmentKind::posix, name), name);
  }
  for (const std::string& path : file_paths) consider_file(SegmentKind::file, path, "file:" + path);
  for (const SysvRow& row : sysv_rows()) {
    View view;
    auto record = inspect_sysv(row, true, &view);
    if (!record || !record->info) continue;
    detail::Unlinker unlinker{SegmentKind::sysv, {}, 0, 0, row.id};
    consider(*record, view.header(), view.header()->attach_capacity, unlinker);
  }
  return chosen;
}

}  // namespace

std::vector<ObjectRecord> list_objects(std::span<const std::string> file_paths,
                                       const ObjectInspector& inspect) {
  std::vector<ObjectRecord> records;
  for (const std::string& name : posix_names()) {
    if (auto object = inspect_file(SegmentKind::posix, detail::backing_path(SegmentKind::posix, name),
                                   name, false, inspect)) {
      records.push_back(std::move(object->record));
    }
  }
  for (const std::string& path : file_paths) {
    if (auto object = inspect_file(SegmentKind::file, path, "file:" + path, false, inspect)) {
      records.push_back(std::move(object->record));
    } else {
      ObjectRecord missing;
      missing.locator = "file:" + path;
      missing.kind = SegmentKind::file;
      missing.problem = "not found";
      records.push_back(std::move(missing));
    }
  }
  for (const SysvRow& row : sysv_rows()) {
    if (auto record = inspect_sysv(row, false, nullptr, inspect)) records.push_back(std::move(*record));
  }
  for (ObjectRecord& record : memfd_records(inspect)) records.push_back(std::move(record));
  return records;
}

result<Locator> parse_locator(std::string_view text) {
  if (text.starts_with("file:")) return Locator{SegmentKind::file, std::string(text.substr(5))};
  if (text.starts_with("/")) return Locator{SegmentKind::file, std::string(text)};
  if (text.starts_with("sysv:")) return Locator{SegmentKind::sysv, std::string(text.substr(5))};
  if (text.starts_with("posix:")) return Locator{SegmentKind::posix, std::string(text.substr(6))};
  if (text.starts_with("memfd:")) {
    return error(errc::invalid_argument, text,
                 "a memfd segment has no name to remove: it goes with its last descriptor");
  }
  if (text.empty()) return error(errc::invalid_argument, "locator", "empty");
  return Locator{SegmentKind::posix, std::string(text)};
}

result<void> remove_object(std::string_view locator) {
  auto parsed = parse_locator(locator);
  if (!parsed) return parsed.error();
  if (parsed->kind != SegmentKind::sysv) return Segment::destroy(parsed->name, parsed->kind);
  auto key = parse_key(parsed->name, locator);
  if (!key) return key.error();
  const int id = ::shmget(*key, 0, 0);
  if (id < 0) return error::from_errno(errno, locator, "shmget");
  shmid_ds facts{};
  if (::shmctl(id, IPC_STAT, &facts) != 0) return error::from_errno(errno, locator, "IPC_STAT");
  const SysvRow row{*key, id, static_cast<mode_t>(facts.shm_perm.mode & 07777),
                    static_cast<std::size_t>(facts.shm_segsz), facts.shm_perm.uid};
  if (!inspect_sysv(row, false, nullptr)) {
    return error(errc::invalid_argument, locator, "not a ferry segment; refusing to remove it");
  }
  if (::shmctl(id, IPC_RMID, nullptr) != 0) return error::from_errno(errno, locator, "IPC_RMID");
  return {};
}

std::vector<ObjectRecord> collect_garbage(std::span<const std::string> file_paths, bool dry_run) {
  return collect(file_paths, !dry_run);
}

}  // namespace ferry
