// Mailboxes as ls, rm and gc see them.
#include "mailboxes.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <string_view>

#include "ferry/messaging/mailbox.hpp"
#include "format.hpp"

namespace ferry::cli {
namespace {

// Where Mailbox keeps a mailbox of kernel or process persistence
// (mailbox.hpp); the library has no call that lists them.
constexpr std::string_view kShmDirectory = "/dev/shm";
constexpr std::string_view kNamePrefix = "ferry.";

std::string directory_of(std::string_view name) {
  return std::string(kShmDirectory) + "/" + std::string(kNamePrefix) + std::string(name);
}

bool is_directory(const std::string& path) {
  struct stat facts {};
  return ::lstat(path.c_str(), &facts) == 0 && S_ISDIR(facts.st_mode);
}

// Bytes of the regular files in `path` other than its control segment.
std::size_t bytes_besides_control(const std::string& path) {
  DIR* listing = ::opendir(path.c_str());
  if (!listing) return 0;
  std::size_t bytes = 0;
  while (const dirent* entry = ::readdir(listing)) {
    struct stat facts {};
    if (entry->d_name != kControlFile &&
        ::fstatat(::dirfd(listing), entry->d_name, &facts, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(facts.st_mode)) {
      bytes += static_cast<std::size_t>(facts.st_size);
    }
  }
  ::closedir(listing);
  return bytes;
}

// The tool serves any user's mailbox, as ls lists them; the mailbox's mode
// still decides who may send and receive.
result<Mailbox> open_mailbox(const std::string& name) { return Mailbox::open(name, {.allow_foreign_owner = true}); }

std::string_view capacity_kind(Capacity::Kind kind) {
  switch (kind) {
    case Capacity::Kind::rendezvous: return "rendezvous";
    case Capacity::Kind::bounded: return "bounded";
    case Capacity::Kind::unbounded: return "unbounded";
  }
  return "?";
}

// "rendezvous", "bounded(256)" (messages), "unbounded(64.0MiB)" (payload queued at most).
std::string capacity_text(const Capacity& capacity) {
  std::string text(capacity_kind(capacity.kind));
  if (capacity.kind == Capacity::Kind::bounded) text += "(" + std::to_string(capacity.count) + ")";
  if (capacity.kind == Capacity::Kind::unbounded) text += "(" + human_size(capacity.memory_limit) + ")";
  return text;
}

// stats().queued and depth[] count messages as receivers last sorted them
// by priority; those sent since show in `sent` only. What waits is what was
// sent and neither received, flushed nor leased.
std::uint64_t queued_messages(const MailboxStats& stats) {
  const std::uint64_t taken = stats.received + stats.flushed + stats.leased;
  return std::max(stats.queued, stats.sent > taken ? stats.sent - taken : 0);
}

}  // namespace

std::map<std::string, MailboxDirectory> find_mailboxes() {
  std::map<std::string, MailboxDirectory> mailboxes;
  DIR* listing = ::opendir(std::string(kShmDirectory).c_str());
  if (!listing) return mailboxes;
  while (const dirent* entry = ::readdir(listing)) {
    const std::string_view file = entry->d_name;
    if (!file.starts_with(kNamePrefix) || file.size() == kNamePrefix.size()) continue;
    const std::string name(file.substr(kNamePrefix.size()));
    MailboxDirectory mailbox{name, directory_of(name)};
    if (is_directory(mailbox.path)) mailboxes.emplace("file:" + mailbox.control_path(), std::move(mailbox));
  }
  ::closedir(listing);
  return mailboxes;
}

std::optional<MailboxDirectory> find_mailbox(const std::string& locator) {
  if (locator.empty() || locator.find('/') != std::string::npos) return std::nullopt;
  MailboxDirectory mailbox{locator, directory_of(locator)};
  if (!is_directory(mailbox.path)) return std::nullopt;
  return mailbox;
}

bool control_gone(const MailboxDirectory& mailbox) {
  struct stat facts {};
  return ::lstat(mailbox.control_path().c_str(), &facts) != 0 && errno == ENOENT;
}

void make_mailbox_record(ObjectRecord& record, const MailboxDirectory& mailbox) {
  record.locator = mailbox.name;
  record.kind = SegmentKind::posix;  // it lives in /dev/shm under its name, as a posix segment does
  struct stat facts {};
  if (::lstat(mailbox.path.c_str(), &facts) == 0) {
    record.owner = facts.st_uid;
    record.mode = facts.st_mode & 07777;
  }
  // The control segment as the registry measured it (gc may have removed it since), and the rest.
  record.size += bytes_besides_control(mailbox.path);
  // Its control segment is a file that stays until the mailbox is destroyed.
  if (record.info && record.info->persistence == Persistence::filesystem) {
    record.info->persistence = Persistence::kernel;
  }
}

void describe_mailbox(ObjectRecord& record) {
  if (record.info && record.info->persistence == Persistence::process && record.attached.empty()) {
    record.problem = "every process using it has died (ferry gc removes it)";
    return;
  }
  auto mailbox = open_mailbox(record.locator);
  if (!mailbox) {
    record.problem = mailbox.error().message();
    return;
  }
  const MailboxStats stats = mailbox->stats();
  record.mode = stats.mode;  // the mailbox's own, rather than its directory's
  const std::pair<const char*, std::uint64_t> counters[] = {
      {"max_message", stats.capacity.max_message},
      {"queued", queued_messages(stats)},
      {"leased", stats.leased},
      {"high_water", stats.high_water},
      {"sent", stats.sent},
      {"received", stats.received},
      {"redelivered", stats.redelivered},
      {"flushed", stats.flushed},
      {"senders", stats.senders.size()}};
  record.details.emplace_back("capacity", capacity_text(stats.capacity));
  for (const auto& [key, value] : counters) record.details.emplace_back(key, std::to_string(value));
}

}  // namespace ferry::cli
