// A short name stored inside a shared-memory primitive, so that errors can
// say which object failed ("mutex 'orders'") in every process that uses it.
#pragma once

#include <algorithm>
#include <cstring>
#include <string>
#include <string_view>

namespace ferry::detail {

class Label {
 public:
  static constexpr std::size_t kCapacity = 32;

  constexpr Label() noexcept = default;
  explicit Label(std::string_view text) noexcept {
    const std::size_t n = std::min(text.size(), kCapacity - 1);
    if (n > 0) std::memcpy(text_, text.data(), n);  // an empty view may hold a null pointer
  }

  /// "mutex 'orders'", or "mutex" without a label. Reads at most
  /// kCapacity - 1 bytes, so a scribbled label cannot overrun.
  std::string describe(std::string_view kind) const {
    std::string text(kind);
    const std::size_t n = ::strnlen(text_, kCapacity - 1);
    if (n > 0) {
      text += " '";
      text.append(text_, n);
      text += '\'';
    }
    return text;
  }

 private:
  char text_[kCapacity] = {};
};

static_assert(sizeof(Label) == Label::kCapacity);

}  // namespace ferry::detail
