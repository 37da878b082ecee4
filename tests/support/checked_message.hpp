// Messages that carry their own check, for volume and torture tests:
// [origin][sequence][words...], every word derived from the first two, so a
// torn, shifted, truncated or invented byte is caught.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

namespace ferry::test {

/// Words (8 bytes each) of message `sequence`: 2 .. max_words, varying.
inline std::size_t checked_words(std::uint64_t sequence, std::size_t max_words) {
  return 2 + (sequence * 2654435761u >> 7) % (max_words - 2);
}

inline std::uint64_t checked_word(std::uint64_t origin, std::uint64_t sequence, std::size_t index) {
  return (origin * 0x9E3779B97F4A7C15ull) ^ (sequence * 0xBF58476D1CE4E5B9ull) ^ (index * 0x94D049BB133111EBull);
}

/// Writes the message into `out` (max_words words); returns its bytes.
inline std::size_t encode_checked(std::uint64_t origin, std::uint64_t sequence, std::size_t max_words,
                                  std::uint64_t* out) {
  const std::size_t words = checked_words(sequence, max_words);
  out[0] = origin;
  out[1] = sequence;
  for (std::size_t i = 2; i < words; ++i) out[i] = checked_word(origin, sequence, i);
  return words * 8;
}

struct Checked {
  std::uint64_t origin = 0;
  std::uint64_t sequence = 0;
  bool intact = false;
};

inline Checked decode_checked(std::span<const std::byte> message, std::size_t max_words) {
  constexpr std::size_t kLargest = 64;
  std::uint64_t words[kLargest] = {};
  if (message.size() < 16 || message.size() % 8 != 0 || message.size() > max_words * 8 || max_words > kLargest) {
    return {};
  }
  std::memcpy(words, message.data(), message.size());
  const Checked header{words[0], words[1], false};
  if (message.size() != checked_words(words[1], max_words) * 8) return header;
  for (std::size_t i = 2; i < message.size() / 8; ++i) {
    if (words[i] != checked_word(words[0], words[1], i)) return header;
  }
  return {words[0], words[1], true};
}

}  // namespace ferry::test
