#include "format.hpp"

#include <pwd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>

namespace ferry::cli {

std::string user_name(uid_t uid) {
  passwd entry{};
  passwd* found = nullptr;
  char buffer[1024];
  if (::getpwuid_r(uid, &entry, buffer, sizeof buffer, &found) == 0 && found) return found->pw_name;
  return std::to_string(uid);
}

std::string octal_mode(mode_t mode) {
  char text[8];
  std::snprintf(text, sizeof text, "%04o", static_cast<unsigned>(mode));
  return text;
}

std::string human_size(std::size_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes);
  int unit = 0;
  while (value >= 1024 && unit < 4) {
    value /= 1024;
    ++unit;
  }
  char text[32];
  std::snprintf(text, sizeof text, unit == 0 ? "%.0f%s" : "%.1f%s", value, units[unit]);
  return text;
}

namespace {

std::string base64(std::span<const std::byte> bytes) {
  static constexpr char kDigits[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string text;
  for (std::size_t i = 0; i < bytes.size(); i += 3) {
    const std::size_t n = std::min<std::size_t>(3, bytes.size() - i);
    std::uint32_t group = 0;
    for (std::size_t j = 0; j < 3; ++j) {
      group = group << 8 | (j < n ? std::to_integer<std::uint32_t>(bytes[i + j]) : 0u);
    }
    for (std::size_t j = 0; j < 4; ++j) text += j <= n ? kDigits[group >> (18 - 6 * j) & 63] : '=';
  }
  return text;
}

bool valid_utf8(const std::string& text) {
  try {
    (void)nlohmann::json(text).dump();
    return true;
  } catch (const nlohmann::json::type_error&) {
    return false;
  }
}

}  // namespace

nlohmann::json sender_json(const SenderIdentity& sender) {
  return {{"uid", sender.uid}, {"gid", sender.gid}, {"pid", sender.pid}, {"pid_attested", sender.pid_attested}};
}

result<void> print_message(std::span<const std::byte> data, const nlohmann::json* fields) {
  std::string line(reinterpret_cast<const char*>(data.data()), data.size());
  if (fields) {
    nlohmann::json object = *fields;
    if (!valid_utf8(line)) object["data_base64"] = base64(data);
    object["data"] = std::move(line);
    line = object.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
  line += '\n';
  if (std::fwrite(line.data(), 1, line.size(), stdout) != line.size() || std::fflush(stdout) != 0) {
    return error::from_errno(errno, "stdout", "cannot write a message");
  }
  return {};
}

int fail(const char* command, const error& failure) {
  std::fprintf(stderr, "%s: %s\n", command, failure.message().c_str());
  return 1;
}

steady_clock::duration to_duration(double seconds) {
  return std::chrono::duration_cast<steady_clock::duration>(std::chrono::duration<double>(seconds));
}

}  // namespace ferry::cli
