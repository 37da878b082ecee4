// ferry stat / send / recv, and mailboxes as ls, rm and gc see them.
#include "mailboxes.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <nlohmann/json.hpp>
#include <span>
#include <string_view>

#include "commands.hpp"
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

// A priority level as stats() counts them: 0..31, then urgent.
std::string level_name(unsigned level) {
  return level == Mailbox::kPriorities ? "urgent" : std::to_string(level);
}

// What waits: sorted by priority (depth[]) or sent since a receiver looked.
std::uint64_t queued_messages(const MailboxStats& stats) { return stats.queued + stats.unsorted; }

nlohmann::json stats_json(const MailboxStats& stats) {
  nlohmann::json queued_by_priority = nlohmann::json::object();
  for (unsigned level = 0; level <= Mailbox::kPriorities; ++level) {
    if (stats.depth[level] != 0) queued_by_priority[level_name(level)] = stats.depth[level];
  }
  const auto peers = [](const std::vector<MailboxStats::Peer>& list) {
    nlohmann::json array = nlohmann::json::array();
    for (const MailboxStats::Peer& peer : list) array.push_back({{"pid", peer.pid}, {"uid", peer.uid}, {"alive", peer.alive}});
    return array;
  };
  return {{"name", stats.name},
          {"capacity",
           {{"kind", capacity_kind(stats.capacity.kind)},
            {"count", stats.capacity.count},
            {"max_message", stats.capacity.max_message},
            {"memory_limit", stats.capacity.memory_limit}}},
          {"mode", octal_mode(stats.mode)},
          {"owner_uid", stats.owner_uid},
          {"owner", user_name(stats.owner_uid)},
          {"queued", queued_messages(stats)},
          {"queued_by_priority", queued_by_priority},
          {"queued_unsorted", stats.unsorted},
          {"leased", stats.leased},
          {"high_water", stats.high_water},
          {"sent", stats.sent},
          {"received", stats.received},
          {"redelivered", stats.redelivered},
          {"flushed", stats.flushed},
          {"senders", peers(stats.senders)},
          {"receivers", peers(stats.receivers)}};
}

void print_stats(const MailboxStats& stats) {
  // Queued per level in the order receivers get them: urgent first.
  std::string levels;
  for (unsigned level = Mailbox::kPriorities + 1; level-- > 0;) {
    if (stats.depth[level] == 0) continue;
    levels += levels.empty() ? " (" : ", ";
    levels += (level == Mailbox::kPriorities ? "" : "priority ") + level_name(level) + ": " +
              std::to_string(stats.depth[level]);
  }
  if (const std::uint64_t unsorted = stats.unsorted; unsorted != 0) {
    levels += (levels.empty() ? " (" : ", ") + std::string("not yet sorted: ") + std::to_string(unsorted);
  }
  if (!levels.empty()) levels += ")";
  std::printf("mailbox      %s\n", stats.name.c_str());
  std::printf("capacity     %s, messages of at most %zu bytes\n", capacity_text(stats.capacity).c_str(),
              stats.capacity.max_message);
  std::printf("mode         %s\n", octal_mode(stats.mode).c_str());
  std::printf("owner        %s (uid %u)\n", user_name(stats.owner_uid).c_str(), static_cast<unsigned>(stats.owner_uid));
  std::printf("queued       %llu%s\n", static_cast<unsigned long long>(queued_messages(stats)), levels.c_str());
  const std::pair<const char*, std::uint64_t> counters[] = {
      {"leased", stats.leased}, {"high water", stats.high_water}, {"sent", stats.sent},
      {"received", stats.received}, {"redelivered", stats.redelivered}, {"flushed", stats.flushed}};
  for (const auto& [label, value] : counters) {
    std::printf("%-12s %llu\n", label, static_cast<unsigned long long>(value));
  }
  for (const auto& [label, list] : {std::pair{"senders", &stats.senders}, std::pair{"receivers", &stats.receivers}}) {
    std::size_t alive = 0;
    for (const MailboxStats::Peer& peer : *list) alive += peer.alive ? 1 : 0;
    std::printf("%-12s %zu (%zu alive)\n", label, list->size(), alive);
    for (const MailboxStats::Peer& peer : *list) {
      std::printf("  pid %-8d uid %u (%s)  %s\n", static_cast<int>(peer.pid), static_cast<unsigned>(peer.uid),
                  user_name(peer.uid).c_str(), peer.alive ? "alive" : "dead");
    }
  }
}

result<void> write_message(const Message& message, bool json) {
  if (!json) return print_message(message.data(), nullptr);
  const nlohmann::json fields{{"priority", message.priority()},
                              {"urgent", message.urgent()},
                              {"sender", sender_json(message.sender())},
                              {"delivery_count", message.delivery_count()},
                              {"sequence", message.sequence()}};
  return print_message(message.data(), &fields);
}

result<std::optional<Lease>> as_optional(result<Lease> lease) {
  if (!lease) return std::move(lease).error();
  return std::optional<Lease>(std::move(*lease));
}

// The next message, leased; none when a --count 0 receive without a timeout
// finds the mailbox empty.
result<std::optional<Lease>> next_lease(Mailbox& mailbox, const ReceiveMessagesOptions& options) {
  if (options.timeout_seconds) return as_optional(mailbox.receive_leased_for(to_duration(*options.timeout_seconds)));
  if (options.count == 0) return mailbox.try_receive_leased();
  return as_optional(mailbox.receive_leased());
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

std::vector<std::string> dangling_names() {
  std::vector<std::string> names;
  DIR* listing = ::opendir(std::string(kShmDirectory).c_str());
  if (!listing) return names;
  while (const dirent* entry = ::readdir(listing)) {
    const std::string_view file = entry->d_name;
    if (!file.starts_with(kNamePrefix) || file.size() == kNamePrefix.size()) continue;
    const std::string path = std::string(kShmDirectory) + "/" + std::string(file);
    struct stat facts {};
    if (::lstat(path.c_str(), &facts) == 0 && S_ISLNK(facts.st_mode) && ::stat(path.c_str(), &facts) != 0) {
      names.emplace_back(file.substr(kNamePrefix.size()));
    }
  }
  ::closedir(listing);
  return names;
}

void remove_name(const std::string& name) { (void)::unlink(directory_of(name).c_str()); }

std::optional<MailboxDirectory> find_mailbox(const std::string& locator) {
  if (locator.empty()) return std::nullopt;
  if (locator.front() == '/') {
    // A file-system-persistent mailbox is named by its directory's path.
    MailboxDirectory mailbox{locator, locator};
    struct stat facts {};
    if (!is_directory(mailbox.path) || ::lstat(mailbox.control_path().c_str(), &facts) != 0) return std::nullopt;
    return mailbox;
  }
  if (locator.find('/') != std::string::npos) return std::nullopt;
  MailboxDirectory mailbox{locator, directory_of(locator)};
  if (!is_directory(mailbox.path)) return std::nullopt;
  return mailbox;
}

// No control file, and not a Mailbox::create in progress (it links the
// control file within microseconds of making the directory): garbage.
bool control_gone(const MailboxDirectory& mailbox) {
  struct stat facts {};
  if (::lstat(mailbox.control_path().c_str(), &facts) == 0 || errno != ENOENT) return false;
  constexpr time_t kCreateGrace = 10;  // seconds
  return ::lstat(mailbox.path.c_str(), &facts) == 0 && ::time(nullptr) - facts.st_mtime >= kCreateGrace;
}

void make_mailbox_record(ObjectRecord& record, const MailboxDirectory& mailbox) {
  record.locator = mailbox.name;
  // In /dev/shm under its name, as a posix segment; elsewhere, files.
  record.kind = mailbox.path.starts_with(kShmDirectory) ? SegmentKind::posix : SegmentKind::file;
  struct stat facts {};
  if (::lstat(mailbox.path.c_str(), &facts) == 0) {
    record.owner = facts.st_uid;
    record.mode = facts.st_mode & 07777;
  }
  // The control segment as the registry measured it (gc may have removed it since), and the rest.
  record.size += bytes_besides_control(mailbox.path);
  // In /dev/shm, its control segment is a file that stays until the mailbox
  // is destroyed or the machine stops; elsewhere, it survives a reboot.
  if (record.info && record.info->persistence == Persistence::filesystem && mailbox.path.starts_with(kShmDirectory)) {
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
      {"senders", stats.senders.size()},
      {"receivers", stats.receivers.size()}};
  record.details.emplace_back("capacity", capacity_text(stats.capacity));
  for (const auto& [key, value] : counters) record.details.emplace_back(key, std::to_string(value));
}

int stat_mailbox(const StatOptions& options) {
  auto mailbox = open_mailbox(options.name);
  if (!mailbox) return fail("ferry stat", mailbox.error());
  const MailboxStats stats = mailbox->stats();
  if (options.json) {
    std::cout << stats_json(stats).dump(2) << '\n';
  } else {
    print_stats(stats);
  }
  return 0;
}

int send_messages(const SendMessagesOptions& options) {
  auto mailbox = open_mailbox(options.name);
  if (!mailbox) return fail("ferry send", mailbox.error());
  const SendOptions how{.priority = options.priority, .urgent = options.urgent};
  return send_each(options, [&](std::span<const std::byte> bytes) {
    return options.timeout_seconds ? mailbox->send_for(bytes, to_duration(*options.timeout_seconds), how)
                                   : mailbox->send(bytes, how);
  });
}

int send_each(const SendMessagesOptions& options,
              const std::function<result<void>(std::span<const std::byte>)>& send_one) {
  // The arguments, or else each line of stdin, sent as soon as it is read:
  // a pipe may feed the target for a long time.
  std::size_t next_argument = 0;
  const auto next = [&](std::string& message) -> bool {
    if (options.messages.empty()) return static_cast<bool>(std::getline(std::cin, message));
    if (next_argument == options.messages.size()) return false;
    message = options.messages[next_argument++];
    return true;
  };
  std::size_t sent = 0;
  result<void> outcome;
  std::string message;
  while (outcome && next(message)) {
    outcome = send_one(std::as_bytes(std::span(message)));
    if (outcome) ++sent;
  }
  if (options.json) {
    std::cout << nlohmann::json{{"sent", sent}}.dump() << '\n';
  } else if (outcome) {
    std::printf("sent %zu message%s to %s\n", sent, sent == 1 ? "" : "s", options.name.c_str());
  }
  if (!outcome) {
    std::fprintf(stderr, "ferry send: %s (%zu sent before it)\n", outcome.error().message().c_str(), sent);
    return 1;
  }
  return 0;
}

int receive_messages(const ReceiveMessagesOptions& options) {
  auto mailbox = open_mailbox(options.name);
  if (!mailbox) return fail("ferry recv", mailbox.error());
  return receive_each(options, [&]() -> result<bool> {
    auto next = next_lease(*mailbox, options);
    if (!next) return std::move(next).error();
    if (!*next) return false;
    // Acknowledged once written out: a failed write, or a killed ferry, gives the message back.
    if (auto written = write_message((*next)->message(), options.json); !written) return std::move(written).error();
    if (auto acked = (*next)->ack(); !acked) return std::move(acked).error();
    return true;
  });
}

int receive_each(const ReceiveMessagesOptions& options, const std::function<result<bool>()>& receive_one) {
  for (std::size_t received = 0; options.count == 0 || received < options.count; ++received) {
    auto next = receive_one();
    if (!next && next.error().code() == errc::timed_out) {
      // Nothing more within the timeout ends a --count 0 receive; otherwise fewer came than asked for.
      if (options.count == 0) return 0;
      std::fprintf(stderr, "ferry recv: %s (%zu of %zu received)\n", next.error().message().c_str(), received,
                   options.count);
      return 1;
    }
    if (!next) return fail("ferry recv", next.error());
    if (!*next) return 0;
  }
  return 0;
}

}  // namespace ferry::cli
