// The rpc wire format (drawn in ferry/patterns/rpc.hpp): encoding, and
// decoding that trusts nothing it reads. Not API.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "ferry/os/clock.hpp"
#include "ferry/os/error.hpp"
#include "ferry/patterns/rpc.hpp"

namespace ferry::rpc::wire {

inline constexpr std::uint8_t kMagic = 0xC7;
inline constexpr std::uint8_t kVersion = 1;
inline constexpr std::size_t kHeaderSize = 40;
inline constexpr std::size_t kMaxReplyTo = 255;
/// What a message adds to its payload at most.
inline constexpr std::size_t kMaxOverhead = kHeaderSize + kMaxMethodName + kMaxReplyTo;

// lane: a caller offers a server its own pair of Channels (shm; reply-to
// names them); no method, no payload.
enum class Kind : std::uint8_t { request = 1, cancel = 2, reply = 3, lane = 4 };

inline constexpr std::uint8_t kIdempotent = 0x01;
inline constexpr std::uint8_t kRelativeDeadline = 0x02;
inline constexpr std::uint8_t kKnownFlags = kIdempotent | kRelativeDeadline;

/// A decoded message; the views point into the bytes it was decoded from.
struct Message {
  Kind kind = Kind::request;
  std::uint8_t flags = 0;
  std::uint8_t status = 0;  // replies: 0 success, else an errc
  std::uint64_t call_id = 0;
  std::uint64_t deadline_ns = 0;  // 0: none
  std::uint64_t client_key = 0;
  std::string_view method;
  std::string_view reply_to;
  std::span<const std::byte> payload;

  [[nodiscard]] bool idempotent() const noexcept { return (flags & kIdempotent) != 0; }
};

/// The bytes of `message` (its views are copied).
Bytes encode(const Message& message);
/// The same, written into `out` of encoded_size(message) bytes (a Channel's reserved room).
std::size_t encoded_size(const Message& message) noexcept;
void encode_into(const Message& message, std::span<std::byte> out) noexcept;
/// The message in `bytes`; corrupt naming what is wrong.
result<Message> decode(std::span<const std::byte> bytes);
/// The same, decoded into `out` (left unspecified on an error): for the
/// lanes' loops, where copying a Message out of a result just after it was
/// written stalls (wide loads of narrow stores, ~10 ns a call).
result<void> decode_into(std::span<const std::byte> bytes, Message& out);

/// The reply to `request`: success with the handler's bytes, or the error
/// (its message is kept in `text`, which the reply's payload views).
Message reply_to(const Message& request, const result<std::span<const std::byte>>& outcome, std::string& text);
Bytes encode_reply(const Message& request, const result<Bytes>& outcome);

/// The deadline field for `until` (none: 0): absolute monotonic, or the time left (relative).
std::uint64_t deadline_field(const std::optional<deadline>& until, bool relative) noexcept;
/// The deadline a received request carries, on this machine's clock (a
/// relative one counts from now: call it as the request is read).
std::optional<deadline> deadline_of(const Message& request) noexcept;

/// The error a reply carries, marked remote: "remote rpc method 'm' at ENDPOINT: <code>: <message>".
error remote_error(const Message& reply, std::string_view method, std::string_view endpoint);

}  // namespace ferry::rpc::wire
