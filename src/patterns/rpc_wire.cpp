#include "rpc_wire.hpp"

#include <bit>
#include <cstring>
#include <limits>

namespace ferry::rpc {

namespace {
constexpr std::string_view kRemotePrefix = "remote ";
}  // namespace

bool is_remote(const error& e) noexcept { return e.object().starts_with(kRemotePrefix); }

namespace detail {
error size_error(std::string_view method, std::string_view what, std::size_t size, std::size_t expected) {
  return error(errc::invalid_argument, "rpc method '" + std::string(method) + "'",
               std::string(what) + " of " + std::to_string(size) + " bytes, the method's type has " +
                   std::to_string(expected));
}
error reply_too_large(std::string_view method, std::size_t size, std::size_t max_payload) {
  return error(errc::limit_reached, "rpc method '" + std::string(method) + "'",
               "replied " + std::to_string(size) + " bytes, more than max_payload " + std::to_string(max_payload));
}
error cancelled_error(std::string_view method) {
  return error(errc::cancelled, "rpc call of '" + std::string(method) + "'", "cancelled by the caller");
}
}  // namespace detail

namespace wire {
namespace {

// Little-endian on the wire: on a little-endian host, the value's first bytes.
void put(std::span<std::byte> out, std::size_t at, std::uint64_t value, std::size_t width) {
  if constexpr (std::endian::native == std::endian::little) {
    std::memcpy(out.data() + at, &value, width);
  } else {
    for (std::size_t i = 0; i < width; ++i) out[at + i] = static_cast<std::byte>(value >> (8 * i));
  }
}

std::uint64_t get(std::span<const std::byte> in, std::size_t at, std::size_t width) {
  std::uint64_t value = 0;
  if constexpr (std::endian::native == std::endian::little) {
    std::memcpy(&value, in.data() + at, width);
  } else {
    for (std::size_t i = 0; i < width; ++i) value |= std::uint64_t{std::to_integer<std::uint8_t>(in[at + i])} << (8 * i);
  }
  return value;
}

std::span<const std::byte> bytes_of(std::string_view text) { return std::as_bytes(std::span(text)); }

error corrupt(std::string detail) { return error(errc::corrupt, "rpc message", std::move(detail)); }

// Offsets in the header (see the drawing in rpc.hpp).
constexpr std::size_t kMagicAt = 0, kVersionAt = 1, kKindAt = 2, kFlagsAt = 3, kMethodLengthAt = 4, kStatusAt = 6,
                      kZeroAt = 7, kCallIdAt = 8, kDeadlineAt = 16, kClientKeyAt = 24, kReplyToLengthAt = 32,
                      kZero2At = 34, kPayloadLengthAt = 36;

}  // namespace

std::size_t encoded_size(const Message& message) noexcept {
  return kHeaderSize + message.method.size() + message.reply_to.size() + message.payload.size();
}

void encode_into(const Message& message, std::span<std::byte> out) noexcept {
  // The caller's bytes first: reading them may wait for the stores before it
  // to leave the store buffer (a buffer written just now, by narrower
  // stores), and into a Channel's ring none of ours should be among them yet.
  std::byte* at = out.data() + kHeaderSize;
  for (const auto part : {bytes_of(message.method), bytes_of(message.reply_to), message.payload}) {
    if (!part.empty()) std::memcpy(at, part.data(), part.size());
    at += part.size();
  }
  std::memset(out.data(), 0, kHeaderSize);
  put(out, kMagicAt, kMagic, 1);
  put(out, kVersionAt, kVersion, 1);
  put(out, kKindAt, static_cast<std::uint8_t>(message.kind), 1);
  put(out, kFlagsAt, message.flags, 1);
  put(out, kMethodLengthAt, message.method.size(), 2);
  put(out, kStatusAt, message.status, 1);
  put(out, kCallIdAt, message.call_id, 8);
  put(out, kDeadlineAt, message.deadline_ns, 8);
  put(out, kClientKeyAt, message.client_key, 8);
  put(out, kReplyToLengthAt, message.reply_to.size(), 2);
  put(out, kPayloadLengthAt, message.payload.size(), 4);
}

Bytes encode(const Message& message) {
  Bytes out(encoded_size(message));
  encode_into(message, out);
  return out;
}

result<Message> decode(std::span<const std::byte> bytes) {
  Message message;
  if (auto decoded = decode_into(bytes, message); !decoded) return std::move(decoded).error();
  return message;
}

result<void> decode_into(std::span<const std::byte> bytes, Message& message) {
  if (bytes.size() < kHeaderSize) {
    return corrupt(std::to_string(bytes.size()) + " bytes, shorter than the " + std::to_string(kHeaderSize) +
                   "-byte header");
  }
  if (get(bytes, kMagicAt, 1) != kMagic) return corrupt("bad magic");
  if (get(bytes, kVersionAt, 1) != kVersion) {
    return corrupt("wire version " + std::to_string(get(bytes, kVersionAt, 1)) + ", this ferry speaks 1");
  }
  const auto kind = get(bytes, kKindAt, 1);
  if (kind < 1 || kind > 4) return corrupt("unknown kind " + std::to_string(kind));
  message.kind = static_cast<Kind>(kind);
  message.flags = static_cast<std::uint8_t>(get(bytes, kFlagsAt, 1));
  if ((message.flags & ~kKnownFlags) != 0) return corrupt("unknown flags");
  message.status = static_cast<std::uint8_t>(get(bytes, kStatusAt, 1));
  if (message.status > static_cast<std::uint8_t>(errc::system) ||
      (message.kind != Kind::reply && message.status != 0)) {
    return corrupt("bad status " + std::to_string(message.status));
  }
  if (get(bytes, kZeroAt, 1) != 0 || get(bytes, kZero2At, 2) != 0) return corrupt("reserved bytes are not zero");
  message.call_id = get(bytes, kCallIdAt, 8);
  message.deadline_ns = get(bytes, kDeadlineAt, 8);
  message.client_key = get(bytes, kClientKeyAt, 8);
  const std::size_t method_length = get(bytes, kMethodLengthAt, 2);
  const std::size_t reply_to_length = get(bytes, kReplyToLengthAt, 2);
  const std::size_t payload_length = get(bytes, kPayloadLengthAt, 4);
  if (method_length > kMaxMethodName || reply_to_length > kMaxReplyTo) return corrupt("method or reply-to too long");
  const bool methodless = message.kind == Kind::reply || message.kind == Kind::lane;
  if (methodless != (method_length == 0)) return corrupt("a reply or lane offer has no method, a request one");
  // Each length is at most 2^32, so the sum cannot overflow.
  if (kHeaderSize + method_length + reply_to_length + payload_length != bytes.size()) {
    return corrupt("lengths add up to " + std::to_string(kHeaderSize + method_length + reply_to_length + payload_length) +
                   " bytes, the message has " + std::to_string(bytes.size()));
  }
  const auto text = [&](std::size_t at, std::size_t length) {
    return std::string_view(reinterpret_cast<const char*>(bytes.data()) + at, length);
  };
  message.method = text(kHeaderSize, method_length);
  message.reply_to = text(kHeaderSize + method_length, reply_to_length);
  message.payload = bytes.subspan(kHeaderSize + method_length + reply_to_length, payload_length);
  return {};
}

Message reply_to(const Message& request, const result<std::span<const std::byte>>& outcome, std::string& text) {
  Message reply;
  reply.kind = Kind::reply;
  reply.call_id = request.call_id;
  reply.client_key = request.client_key;
  if (outcome) {
    reply.payload = *outcome;
  } else {
    // The message names the object and the reason as the server saw them.
    text = outcome.error().message();
    reply.status = static_cast<std::uint8_t>(outcome.error().code());
    reply.payload = bytes_of(text);
  }
  return reply;
}

Bytes encode_reply(const Message& request, const result<Bytes>& outcome) {
  std::string text;
  const auto view = outcome ? result<std::span<const std::byte>>(std::span<const std::byte>(*outcome))
                            : result<std::span<const std::byte>>(outcome.error());
  return encode(reply_to(request, view, text));
}

std::uint64_t deadline_field(const std::optional<deadline>& until, bool relative) noexcept {
  if (!until || *until == deadline::max()) return 0;
  const auto ns = [](steady_clock::duration d) {
    return static_cast<std::uint64_t>(std::max<std::int64_t>(
        1, std::chrono::duration_cast<std::chrono::nanoseconds>(d).count()));  // 0 would mean "none"
  };
  return relative ? ns(*until - steady_clock::now()) : ns(until->time_since_epoch());
}

std::optional<deadline> deadline_of(const Message& request) noexcept {
  if (request.deadline_ns == 0) return std::nullopt;
  constexpr auto kLongest = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max() / 2);
  const auto ns = std::chrono::nanoseconds(static_cast<std::int64_t>(std::min(request.deadline_ns, kLongest)));
  if ((request.flags & kRelativeDeadline) != 0) {
    const deadline read_at = steady_clock::now();
    return read_at.time_since_epoch() > deadline::max().time_since_epoch() - ns ? deadline::max() : read_at + ns;
  }
  return deadline(std::chrono::duration_cast<steady_clock::duration>(ns));
}

error remote_error(const Message& reply, std::string_view method, std::string_view endpoint) {
  return error(static_cast<errc>(reply.status),
               std::string(kRemotePrefix) + "rpc method '" + std::string(method) + "' at " + std::string(endpoint),
               std::string(reinterpret_cast<const char*>(reply.payload.data()), reply.payload.size()));
}

}  // namespace wire
}  // namespace ferry::rpc
