// ferry ls / rm / gc: thin presentation over ferry::list_objects and friends,
// with each mailbox shown as one object.
#include <cstdio>
#include <ctime>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "commands.hpp"
#include "ferry/messaging/channel.hpp"
#include "ferry/messaging/inspect.hpp"
#include "ferry/messaging/mailbox.hpp"
#include "ferry/os/registry.hpp"
#include "ferry/patterns/topic.hpp"
#include "ferry/sync/inspect.hpp"
#include "format.hpp"
#include "mailboxes.hpp"

namespace ferry::cli {
namespace {

// An object as ls and gc show it: what the registry found, or a mailbox.
struct Listed {
  ObjectRecord record;
  std::optional<MailboxDirectory> mailbox;
};

// The registry's records, with the first record of each mailbox's control
// segment made the mailbox's.
std::vector<Listed> with_mailboxes(std::vector<ObjectRecord> records,
                                   std::map<std::string, MailboxDirectory> mailboxes) {
  std::vector<Listed> listed;
  for (ObjectRecord& record : records) {
    auto found = mailboxes.extract(record.locator);
    if (!found) {
      listed.push_back({std::move(record), std::nullopt});
      continue;
    }
    make_mailbox_record(record, found.mapped());
    listed.push_back({std::move(record), std::move(found.mapped())});
  }
  return listed;
}

// What the object is: its header says, and a mailbox is one even when its
// control segment cannot be read.
std::optional<std::string> type_of(const Listed& listed) {
  if (listed.mailbox) return "mailbox";
  if (listed.record.info) return to_string(listed.record.info->object_type);
  return std::nullopt;
}

std::string iso_time(std::uint64_t ns) {
  const auto seconds = static_cast<time_t>(ns / 1'000'000'000u);
  tm parts{};
  ::gmtime_r(&seconds, &parts);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &parts);
  return text;
}

std::string pid_list(const std::vector<pid_t>& pids) {
  if (pids.empty()) return "-";
  std::string text;
  for (pid_t pid : pids) {
    if (!text.empty()) text += ',';
    text += std::to_string(pid);
  }
  return text;
}

nlohmann::json to_json(const Listed& listed) {
  const ObjectRecord& record = listed.record;
  nlohmann::json object{{"name", record.locator},
                        {"kind", std::string(to_string(record.kind))},
                        {"size", record.size},
                        {"owner_uid", record.owner},
                        {"owner", user_name(record.owner)},
                        {"mode", octal_mode(record.mode)},
                        {"attached", record.attached}};
  if (const auto type = type_of(listed)) object["type"] = *type;
  if (record.info) {
    object["persistence"] = std::string(to_string(record.info->persistence));
    object["data_size"] = record.info->data_size;
    object["creator_pid"] = record.info->creator_pid;
    object["created"] = iso_time(record.info->creation_time_ns);
    object["destroyed"] = record.destroyed;
  }
  if (!record.problem.empty()) object["problem"] = record.problem;
  for (const auto& [key, value] : record.details) object["details"][key] = value;
  return object;
}

void print_table(const std::vector<Listed>& listed) {
  std::printf("%-32s %-6s %9s %-10s %-5s %-11s %-9s %s\n", "NAME", "KIND", "SIZE", "OWNER", "MODE",
              "PERSISTENCE", "TYPE", "ATTACHED");
  for (const Listed& entry : listed) {
    const ObjectRecord& record = entry.record;
    const std::string persistence =
        record.info ? std::string(to_string(record.info->persistence)) : "?";
    std::string type = type_of(entry).value_or("?");
    if (record.destroyed) type += " (destroyed)";
    std::string attached = pid_list(record.attached);
    for (const auto& [key, value] : record.details) attached += "  " + key + "=" + value;
    if (!record.problem.empty()) attached += "  [" + record.problem + "]";
    std::printf("%-32s %-6s %9s %-10s %-5s %-11s %-9s %s\n", record.locator.c_str(),
                std::string(to_string(record.kind)).c_str(), human_size(record.size).c_str(),
                user_name(record.owner).c_str(), octal_mode(record.mode).c_str(), persistence.c_str(),
                type.c_str(), attached.c_str());
  }
}

}  // namespace

int list(const ListOptions& options) {
  auto mailboxes = find_mailboxes();
  std::vector<std::string> paths;
  for (const std::string& path : options.file_paths) {
    if (auto mailbox = find_mailbox(path)) {  // a file-system-persistent mailbox's directory
      mailboxes.emplace("file:" + mailbox->control_path(), std::move(*mailbox));
    } else {
      paths.push_back(path);
    }
  }
  for (const auto& [locator, mailbox] : mailboxes) paths.push_back(mailbox.control_path());
  // Each layer describes its own objects.
  auto records = list_objects(paths, [](ObjectRecord& record, std::span<const std::byte> data) {
    describe_sync_object(record, data);
    describe_messaging_object(record, data);
    describe_topic_object(record, data);
  });
  auto listed = with_mailboxes(std::move(records), std::move(mailboxes));
  for (Listed& entry : listed) {
    if (entry.mailbox) describe_mailbox(entry.record);
  }
  if (options.json) {
    nlohmann::json array = nlohmann::json::array();
    for (const auto& entry : listed) array.push_back(to_json(entry));
    std::cout << array.dump(2) << '\n';
  } else {
    print_table(listed);
  }
  return 0;
}

// A channel or a topic goes with the segments of its loan chunks (its own
// destroy() finds them); anything else as its segment.
result<void> remove_one(const std::string& locator) {
  if (const auto mailbox = find_mailbox(locator)) return Mailbox::destroy(mailbox->name);
  const auto parsed = parse_locator(locator);
  if (parsed && parsed->kind != SegmentKind::sysv) {
    const auto type = [&]() -> std::optional<ObjectType> {  // unmapped again before it is destroyed
      const auto segment = Segment::open(parsed->name, {.kind = parsed->kind, .access = Access::read_only});
      if (!segment) return std::nullopt;
      return segment->info().object_type;
    }();
    if (type == ObjectType::channel) return Channel::destroy(parsed->name, parsed->kind);
    if (type == ObjectType::topic) return Topic::destroy(parsed->name, parsed->kind);
  }
  return remove_object(locator);
}

int remove(const std::vector<std::string>& locators) {
  int status = 0;
  for (const std::string& locator : locators) {
    const auto removed = remove_one(locator);
    if (!removed) {
      std::fprintf(stderr, "ferry rm: %s\n", removed.error().message().c_str());
      status = 1;
    } else {
      std::printf("removed %s\n", locator.c_str());
    }
  }
  return status;
}

int collect_garbage(const GcOptions& options) {
  // A process-persistent mailbox goes with its control segment, which the
  // registry collects as a file segment; one whose control segment is gone
  // (its last process died while removing it) goes as it is. Decided
  // before collecting, which removes control segments.
  auto mailboxes = find_mailboxes();
  std::vector<std::string> paths = options.file_paths;
  std::vector<MailboxDirectory> orphans;
  for (const auto& [locator, mailbox] : mailboxes) {
    if (control_gone(mailbox)) {
      orphans.push_back(mailbox);
    } else {
      paths.push_back(mailbox.control_path());
    }
  }
  auto removed = with_mailboxes(ferry::collect_garbage(paths, options.dry_run), std::move(mailboxes));
  for (const MailboxDirectory& mailbox : orphans) {
    ObjectRecord record;
    record.problem = "its control segment is gone";
    make_mailbox_record(record, mailbox);
    removed.push_back({std::move(record), mailbox});
  }
  // Names registered by inboxes of processes that are gone.
  const std::vector<std::string> names = dangling_names();
  int status = 0;
  if (!options.dry_run) {
    for (const std::string& name : names) remove_name(name);
    std::erase_if(removed, [&](const Listed& listed) {
      if (!listed.mailbox) return false;
      auto destroyed = Mailbox::destroy(listed.mailbox->name);
      if (destroyed || destroyed.error().code() == errc::not_found) return false;
      std::fprintf(stderr, "ferry gc: %s\n", destroyed.error().message().c_str());
      status = 1;
      return true;
    });
  }
  if (options.json) {
    nlohmann::json array = nlohmann::json::array();
    for (const auto& listed : removed) array.push_back(to_json(listed));
    for (const std::string& name : names) {
      array.push_back({{"locator", name}, {"type", "inbox name"}, {"problem", "its inbox is gone"}});
    }
    std::cout << nlohmann::json{{"dry_run", options.dry_run}, {"removed", array}}.dump(2) << '\n';
    return status;
  }
  const char* verb = options.dry_run ? "would remove" : "removed";
  for (const Listed& listed : removed) {
    const ObjectRecord& record = listed.record;
    const std::string what = listed.mailbox ? "mailbox" : std::string(to_string(record.kind));
    const std::string why = !record.problem.empty()
                                ? record.problem
                                : "created by pid " + std::to_string(record.info ? record.info->creator_pid : 0) +
                                      ", no live process attached";
    std::printf("%s %s (%s, %s, owner %s, %s)\n", verb, record.locator.c_str(), what.c_str(),
                human_size(record.size).c_str(), user_name(record.owner).c_str(), why.c_str());
  }
  for (const std::string& name : names) std::printf("%s %s (inbox name, its inbox is gone)\n", verb, name.c_str());
  const std::size_t total = removed.size() + names.size();
  std::printf("gc: %s %zu object%s\n", verb, total, total == 1 ? "" : "s");
  return status;
}

}  // namespace ferry::cli
