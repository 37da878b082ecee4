// Shared by the endpoint sources: the envelope every ferry endpoint message
// carries (see the wire format in ferry/transport/endpoint.hpp), and the
// factories of each transport family.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ferry/transport/endpoint.hpp"

namespace ferry::detail {

inline constexpr std::size_t kEnvelopeSize = 4;
inline constexpr std::size_t kHelloSize = kEnvelopeSize + 8;
inline constexpr std::byte kHelloKind{'H'};
inline constexpr std::byte kMessageKind{'M'};
inline constexpr std::byte kHelloVersion{1};

enum class Lane : std::uint8_t { normal = 0, urgent = 1 };

/// Joins pieces into one string (no operator+ chains: GCC 12 warns falsely about them at -O3).
std::string concat(std::initializer_list<std::string_view> pieces);

/// The envelope that goes before a message of `priority` (sent with it in one gathered write).
std::array<std::byte, kEnvelopeSize> encode_envelope(unsigned priority) noexcept;
/// The priority of a well-formed message envelope at the start of `frame`, or nothing.
std::optional<unsigned> decode_message(std::span<const std::byte> frame) noexcept;

std::array<std::byte, kHelloSize> encode_hello(Lane lane, std::uint64_t token) noexcept;
struct Hello {
  Lane lane;
  std::uint64_t token;
};
std::optional<Hello> decode_hello(std::span<const std::byte> frame) noexcept;

/// "receiver at tcp://127.0.0.1:7000" and the like, for errors.
std::string endpoint_object(std::string_view role, const Endpoint& endpoint);

result<std::unique_ptr<Sender>> open_stream_sender(const Endpoint& endpoint, const EndpointOptions& options);
result<std::unique_ptr<Receiver>> open_stream_receiver(const Endpoint& endpoint, const EndpointOptions& options);
result<std::unique_ptr<Sender>> open_datagram_sender(const Endpoint& endpoint, const EndpointOptions& options);
result<std::unique_ptr<Receiver>> open_datagram_receiver(const Endpoint& endpoint, const EndpointOptions& options);

}  // namespace ferry::detail
