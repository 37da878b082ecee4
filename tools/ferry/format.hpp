// How the ferry tool writes values for people (tables and JSON alike).
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <span>
#include <string>

#include <nlohmann/json.hpp>

#include "ferry/os/clock.hpp"
#include "ferry/os/error.hpp"
#include "ferry/os/process.hpp"

namespace ferry::cli {

/// The user's name, or the number if it has none.
std::string user_name(uid_t uid);
/// "0640".
std::string octal_mode(mode_t mode);
/// "512B", "4.0KiB", "1.5MiB".
std::string human_size(std::size_t bytes);
/// {"uid", "gid", "pid", "pid_attested"} of a message's sender.
nlohmann::json sender_json(const SenderIdentity& sender);
/// Writes a received message and a newline, and flushes (a reader at the
/// other end of a pipe gets each message when it arrives): its bytes as they
/// are, or, given `fields`, one JSON line of them with "data" added (bytes
/// that are not UTF-8 show as U+FFFD there, and "data_base64" holds them exactly).
/// Errors: those of writing to stdout.
result<void> print_message(std::span<const std::byte> data, const nlohmann::json* fields);

/// Prints "command: <the error's message>" on stderr; returns exit status 1.
int fail(const char* command, const error& failure);
/// A --timeout in seconds as a duration.
steady_clock::duration to_duration(double seconds);

}  // namespace ferry::cli
