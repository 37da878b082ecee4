// How the ferry tool writes values for people (tables and JSON alike).
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <string>

namespace ferry::cli {

/// The user's name, or the number if it has none.
std::string user_name(uid_t uid);
/// "0640".
std::string octal_mode(mode_t mode);
/// "512B", "4.0KiB", "1.5MiB".
std::string human_size(std::size_t bytes);

}  // namespace ferry::cli
