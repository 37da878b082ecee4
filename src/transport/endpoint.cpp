#include "ferry/transport/endpoint.hpp"

#include <sys/un.h>

#include <charconv>
#include <limits>

#include "endpoint_internal.hpp"

namespace ferry {

namespace detail {

std::string concat(std::initializer_list<std::string_view> pieces) {
  std::size_t size = 0;
  for (const std::string_view piece : pieces) size += piece.size();
  std::string joined;
  joined.reserve(size);
  for (const std::string_view piece : pieces) joined.append(piece);
  return joined;
}

std::array<std::byte, kEnvelopeSize> encode_envelope(unsigned priority) noexcept {
  return {kMessageKind, static_cast<std::byte>(priority), std::byte{0}, std::byte{0}};
}

std::optional<unsigned> decode_message(std::span<const std::byte> frame) noexcept {
  if (frame.size() < kEnvelopeSize || frame[0] != kMessageKind || frame[2] != std::byte{0} ||
      frame[3] != std::byte{0}) {
    return std::nullopt;
  }
  const auto priority = std::to_integer<unsigned>(frame[1]);
  if (priority >= kEndpointPriorities) return std::nullopt;
  return priority;
}

std::array<std::byte, kHelloSize> encode_hello(Lane lane, std::uint64_t token) noexcept {
  std::array<std::byte, kHelloSize> hello{kHelloKind, kHelloVersion, static_cast<std::byte>(lane), std::byte{0}};
  for (std::size_t i = 0; i < 8; ++i) hello[kEnvelopeSize + i] = static_cast<std::byte>(token >> (8 * i));
  return hello;
}

std::optional<Hello> decode_hello(std::span<const std::byte> frame) noexcept {
  if (frame.size() != kHelloSize || frame[0] != kHelloKind || frame[1] != kHelloVersion ||
      std::to_integer<unsigned>(frame[2]) > 1 || frame[3] != std::byte{0}) {
    return std::nullopt;
  }
  std::uint64_t token = 0;
  for (std::size_t i = 0; i < 8; ++i) token |= std::to_integer<std::uint64_t>(frame[kEnvelopeSize + i]) << (8 * i);
  return Hello{static_cast<Lane>(frame[2]), token};
}

std::string endpoint_object(std::string_view role, const Endpoint& endpoint) {
  return concat({role, " ", endpoint.to_string()});
}

}  // namespace detail

namespace {

using detail::concat;

constexpr std::string_view kAccepted =
    "write shm://NAME, unix:///path, unixgram:///path, tcp://host:port, udp://host:port, pipe:fd=N or "
    "nats://host:port/NAME";

std::optional<std::uint64_t> parse_number(std::string_view text, std::uint64_t max) {
  std::uint64_t value = 0;
  const auto [end, failure] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || failure != std::errc() || end != text.data() + text.size() || value > max) return std::nullopt;
  return value;
}

class Parser {
 public:
  explicit Parser(std::string_view text) : text_(text) {}

  result<Endpoint> parse() {
    if (text_.find('\0') != std::string_view::npos) return bad("it contains a NUL byte");
    if (text_.starts_with("pipe:")) return parse_pipe(text_.substr(5));
    const std::size_t separator = text_.find("://");
    if (separator == std::string_view::npos) return bad(concat({"no scheme: ", kAccepted}));
    const std::string_view scheme = text_.substr(0, separator);
    const std::string_view rest = text_.substr(separator + 3);
    Endpoint endpoint;
    if (scheme == "shm") {
      endpoint.scheme = Endpoint::Scheme::shm;
      if (rest.empty()) return bad("missing mailbox name: write shm://NAME");
      if (rest.front() != '/' && rest.find('/') != std::string_view::npos) {
        return bad("a mailbox name has no '/' (a directory path starts with one: shm:///abs/dir)");
      }
      endpoint.name = rest;
      return endpoint;
    }
    if (scheme == "nats") {  // the nats backend parses the rest (ferry::nats::Address)
      endpoint.scheme = Endpoint::Scheme::nats;
      if (rest.empty()) return bad("missing server and name: write nats://host:port/NAME");
      endpoint.name = rest;
      return endpoint;
    }
    if (scheme == "unix" || scheme == "unixgram") {
      endpoint.scheme = scheme == "unix" ? Endpoint::Scheme::unix_stream : Endpoint::Scheme::unix_datagram;
      return parse_unix(std::move(endpoint), scheme, rest);
    }
    if (scheme == "tcp" || scheme == "udp") {
      endpoint.scheme = scheme == "tcp" ? Endpoint::Scheme::tcp : Endpoint::Scheme::udp;
      return parse_host_port(std::move(endpoint), scheme, rest);
    }
    return bad(concat({"unknown scheme '", scheme, "': ", kAccepted}));
  }

 private:
  error bad(std::string_view what) const {
    return error(errc::invalid_argument, concat({"endpoint '", text_, "'"}), std::string(what));
  }

  result<Endpoint> parse_unix(Endpoint endpoint, std::string_view scheme, std::string_view path) {
    if (path.empty()) return bad(concat({"missing path: write ", scheme, ":///absolute/path"}));
    if (path.front() != '/' && path.front() != '@') {
      return bad(concat({"relative unix path '", path, "': write ", scheme, ":///absolute/path"}));
    }
    if (path == "@") return bad("missing abstract name after '@'");
    constexpr std::size_t kMaxPath = sizeof(sockaddr_un::sun_path) - 1;
    if (path.size() > kMaxPath) {
      return bad(concat({"the path is longer than ", std::to_string(kMaxPath), " bytes"}));
    }
    endpoint.name = path;
    return endpoint;
  }

  result<Endpoint> parse_host_port(Endpoint endpoint, std::string_view scheme, std::string_view rest) {
    std::string_view host;
    std::string_view after;
    if (rest.starts_with('[')) {
      const std::size_t close = rest.find(']');
      if (close == std::string_view::npos) return bad("an IPv6 host misses its ']'");
      host = rest.substr(1, close - 1);
      after = rest.substr(close + 1);
    } else {
      const std::size_t colon = rest.find(':');
      host = rest.substr(0, colon);
      after = colon == std::string_view::npos ? std::string_view() : rest.substr(colon);
      if (after.find(':', 1) != std::string_view::npos) {
        return bad(concat({"an IPv6 host needs brackets: ", scheme, "://[::1]:7000"}));
      }
    }
    if (host.empty()) return bad(concat({"missing host: write ", scheme, "://host:port"}));
    if (!after.starts_with(':') || after.size() == 1) return bad(concat({"missing port: write ", scheme, "://host:port"}));
    const std::string_view port_text = after.substr(1);
    if (port_text.find_first_not_of("0123456789") != std::string_view::npos) {
      return bad(concat({"port '", port_text, "' is not a number"}));
    }
    const auto port = parse_number(port_text, std::numeric_limits<std::uint16_t>::max());
    if (!port) return bad(concat({"port ", port_text, " is out of range 0..65535"}));
    endpoint.name = host;
    endpoint.port = static_cast<std::uint16_t>(*port);
    return endpoint;
  }

  result<Endpoint> parse_pipe(std::string_view rest) {
    Endpoint endpoint;
    endpoint.scheme = Endpoint::Scheme::pipe;
    if (rest == "stdin" || rest == "stdout") {
      endpoint.fd = rest == "stdin" ? 0 : 1;
      return endpoint;
    }
    if (!rest.starts_with("fd=")) return bad("write pipe:fd=N, pipe:fd=N,M (M: the urgent lane), pipe:stdin or pipe:stdout");
    const std::string_view numbers = rest.substr(3);
    const std::size_t comma = numbers.find(',');
    constexpr auto kMaxFd = static_cast<std::uint64_t>(std::numeric_limits<int>::max());
    const auto fd = parse_number(numbers.substr(0, comma), kMaxFd);
    if (!fd) return bad(concat({"bad fd '", numbers.substr(0, comma), "': a descriptor number is needed"}));
    endpoint.fd = static_cast<int>(*fd);
    if (comma != std::string_view::npos) {
      const auto urgent = parse_number(numbers.substr(comma + 1), kMaxFd);
      if (!urgent) return bad(concat({"bad fd '", numbers.substr(comma + 1), "' for the urgent lane"}));
      if (*urgent == *fd) return bad("the urgent lane needs a descriptor of its own");
      endpoint.urgent_fd = static_cast<int>(*urgent);
    }
    return endpoint;
  }

  std::string_view text_;
};

}  // namespace

std::string_view to_string(Endpoint::Scheme scheme) noexcept {
  switch (scheme) {
    case Endpoint::Scheme::shm: return "shm";
    case Endpoint::Scheme::unix_stream: return "unix";
    case Endpoint::Scheme::unix_datagram: return "unixgram";
    case Endpoint::Scheme::tcp: return "tcp";
    case Endpoint::Scheme::udp: return "udp";
    case Endpoint::Scheme::pipe: return "pipe";
    case Endpoint::Scheme::nats: return "nats";
  }
  return "?";
}

result<Endpoint> Endpoint::parse(std::string_view text) { return Parser(text).parse(); }

std::string Endpoint::to_string() const {
  const std::string_view scheme_text = ferry::to_string(scheme);
  switch (scheme) {
    case Scheme::shm:
    case Scheme::unix_stream:
    case Scheme::unix_datagram:
    case Scheme::nats: return concat({scheme_text, "://", name});
    case Scheme::tcp:
    case Scheme::udp: {
      const bool v6 = name.find(':') != std::string::npos;
      return concat({scheme_text, "://", v6 ? "[" : "", name, v6 ? "]" : "", ":", std::to_string(port)});
    }
    case Scheme::pipe:
      if (urgent_fd < 0 && (fd == 0 || fd == 1)) return fd == 0 ? "pipe:stdin" : "pipe:stdout";
      return urgent_fd < 0 ? concat({"pipe:fd=", std::to_string(fd)})
                           : concat({"pipe:fd=", std::to_string(fd), ",", std::to_string(urgent_fd)});
  }
  return {};
}

std::string Sender::description() const { return detail::endpoint_object("sender to", endpoint()); }

result<void> Sender::named(result<void> attempt) const {
  if (attempt) return attempt;
  error failure = std::move(attempt).error();
  const std::string object = description();
  if (failure.object().find(object) == std::string::npos && failure.detail().find(object) == std::string::npos) {
    failure.add_context(object);
  }
  return failure;
}

result<void> Sender::send(std::span<const std::byte> message, EndpointSendOptions options, detail::WaitLimit limit) {
  if (options.priority >= kEndpointPriorities) {
    return error(errc::invalid_argument, description(),
                 concat({"priority ", std::to_string(options.priority), " is above 31"}));
  }
  if (message.size() > max_message()) {
    return error(errc::invalid_argument, description(),
                 concat({"a message of ", std::to_string(message.size()), " bytes exceeds the maximum of ",
                         std::to_string(max_message()), " bytes"}));
  }
  return send_checked(message, options, limit);
}

result<bool> Sender::try_send(std::span<const std::byte> message, EndpointSendOptions options) {
  auto sent = send(message, options, detail::WaitLimit::none());
  if (sent) return true;
  if (sent.error().code() == errc::would_block) return false;
  return std::move(sent).error();
}

result<std::optional<EndpointMessage>> Receiver::try_receive() {
  auto received = receive_next(detail::WaitLimit::none());
  if (received) return std::optional<EndpointMessage>(std::move(*received));
  if (received.error().code() == errc::would_block) return std::optional<EndpointMessage>();
  return std::move(received).error();
}

namespace {
error opened_elsewhere(std::string_view role, const Endpoint& endpoint) {
  return error(errc::unsupported, detail::endpoint_object(role, endpoint),
               "shm:// and nats:// endpoints are Mailboxes: open them with ferry::open_sender/open_receiver "
               "(ferry/messaging/endpoints.hpp)");
}
bool mailbox_scheme(const Endpoint& endpoint) {
  return endpoint.scheme == Endpoint::Scheme::shm || endpoint.scheme == Endpoint::Scheme::nats;
}
}  // namespace

result<std::unique_ptr<Sender>> open_transport_sender(const Endpoint& endpoint, const EndpointOptions& options) {
  if (mailbox_scheme(endpoint)) return opened_elsewhere("sender to", endpoint);
  if (endpoint.streamed()) return detail::open_stream_sender(endpoint, options);
  return detail::open_datagram_sender(endpoint, options);
}

result<std::unique_ptr<Receiver>> open_transport_receiver(const Endpoint& endpoint, const EndpointOptions& options) {
  if (mailbox_scheme(endpoint)) return opened_elsewhere("receiver at", endpoint);
  if (endpoint.streamed()) return detail::open_stream_receiver(endpoint, options);
  return detail::open_datagram_receiver(endpoint, options);
}

}  // namespace ferry
