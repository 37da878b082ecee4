// Payloads for the loan tests (Channel, Mailbox, Topic), from 1 byte to many
// MiB, whose every byte is checked: a torn, shifted, recycled or truncated
// payload is caught.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <random>
#include <span>

namespace ferry::test {

/// Fills `bytes` with the pattern of `seed`.
inline void fill_pattern(std::span<std::byte> bytes, std::uint64_t seed) {
  for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<std::byte>((seed * 131 + i * 7 + (i >> 12)) & 0xff);
}

/// Whether `bytes` hold exactly the pattern of `seed`.
inline bool holds_pattern(std::span<const std::byte> bytes, std::uint64_t seed) {
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    if (bytes[i] != static_cast<std::byte>((seed * 131 + i * 7 + (i >> 12)) & 0xff)) return false;
  }
  return true;
}

// A payload that names itself (at least 16 bytes): [origin][sequence], then
// bytes derived from both.
inline std::byte payload_byte(std::uint64_t origin, std::uint64_t sequence, std::size_t i) {
  return static_cast<std::byte>((origin * 977 + sequence * 131 + i * 7 + (i >> 9)) & 0xff);
}

inline void write_payload(std::span<std::byte> bytes, std::uint64_t origin, std::uint64_t sequence) {
  for (std::size_t i = bytes.size() >= 16 ? 16 : 0; i < bytes.size(); ++i) bytes[i] = payload_byte(origin, sequence, i);
  if (bytes.size() < 16) return;
  std::memcpy(bytes.data(), &origin, 8);
  std::memcpy(bytes.data() + 8, &sequence, 8);
}

struct CheckedPayload {
  bool intact = false;
  std::uint64_t origin = 0;
  std::uint64_t sequence = 0;
};

inline CheckedPayload check_payload(std::span<const std::byte> bytes) {
  CheckedPayload checked;
  if (bytes.size() < 16) return checked;
  std::memcpy(&checked.origin, bytes.data(), 8);
  std::memcpy(&checked.sequence, bytes.data() + 8, 8);
  for (std::size_t i = 16; i < bytes.size(); ++i) {
    if (bytes[i] != payload_byte(checked.origin, checked.sequence, i)) return checked;
  }
  checked.intact = true;
  return checked;
}

/// 16 .. `largest` bytes.
inline std::size_t random_payload_size(std::mt19937_64& random, std::size_t largest) {
  return 16 + random() % (largest - 15);
}

}  // namespace ferry::test
