// ferry ls / rm / gc: thin presentation over ferry::list_objects and friends.
#include <cstdio>
#include <ctime>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>

#include "commands.hpp"
#include "ferry/os/registry.hpp"
#include "ferry/messaging/inspect.hpp"
#include "ferry/sync/inspect.hpp"
#include "format.hpp"

namespace ferry::cli {
namespace {

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

nlohmann::json to_json(const ObjectRecord& record) {
  nlohmann::json object{{"name", record.locator},
                        {"kind", std::string(to_string(record.kind))},
                        {"size", record.size},
                        {"owner_uid", record.owner},
                        {"owner", user_name(record.owner)},
                        {"mode", octal_mode(record.mode)},
                        {"attached", record.attached}};
  if (record.info) {
    object["type"] = to_string(record.info->object_type);
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

void print_table(const std::vector<ObjectRecord>& records) {
  std::printf("%-32s %-6s %9s %-10s %-5s %-11s %-9s %s\n", "NAME", "KIND", "SIZE", "OWNER", "MODE",
              "PERSISTENCE", "TYPE", "ATTACHED");
  for (const ObjectRecord& record : records) {
    const std::string persistence =
        record.info ? std::string(to_string(record.info->persistence)) : "?";
    std::string type = record.info ? to_string(record.info->object_type) : "?";
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
  // Each layer describes its own objects.
  const auto records = list_objects(options.file_paths, [](ObjectRecord& record, std::span<const std::byte> data) {
    describe_sync_object(record, data);
    describe_messaging_object(record, data);
  });
  if (options.json) {
    nlohmann::json array = nlohmann::json::array();
    for (const auto& record : records) array.push_back(to_json(record));
    std::cout << array.dump(2) << '\n';
  } else {
    print_table(records);
  }
  return 0;
}

int remove(const std::vector<std::string>& locators) {
  int status = 0;
  for (const std::string& locator : locators) {
    if (auto removed = remove_object(locator); !removed) {
      std::fprintf(stderr, "ferry rm: %s\n", removed.error().message().c_str());
      status = 1;
    } else {
      std::printf("removed %s\n", locator.c_str());
    }
  }
  return status;
}

int collect_garbage(const GcOptions& options) {
  const auto removed = ferry::collect_garbage(options.file_paths, options.dry_run);
  if (options.json) {
    nlohmann::json array = nlohmann::json::array();
    for (const auto& record : removed) array.push_back(to_json(record));
    std::cout << nlohmann::json{{"dry_run", options.dry_run}, {"removed", array}}.dump(2) << '\n';
    return 0;
  }
  const char* verb = options.dry_run ? "would remove" : "removed";
  for (const ObjectRecord& record : removed) {
    std::printf("%s %s (%s, %s, owner %s, created by pid %d, no live process attached)\n", verb,
                record.locator.c_str(), std::string(to_string(record.kind)).c_str(),
                human_size(record.size).c_str(), user_name(record.owner).c_str(),
                record.info ? record.info->creator_pid : 0);
  }
  std::printf("gc: %s %zu object%s\n", verb, removed.size(), removed.size() == 1 ? "" : "s");
  return 0;
}

}  // namespace ferry::cli
