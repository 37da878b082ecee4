#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <vector>

#include "nats_internal.hpp"

namespace ferry::nats {
namespace {

result<Address> bad_address(std::string_view text, std::string_view what) {
  return error(errc::invalid_argument, std::string("nats address '") + std::string(text) + "'", std::string(what));
}

bool name_character(char c) noexcept {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

// "%41" -> "A" in user names and passwords; false on a malformed escape.
bool percent_decode(std::string_view text, std::string& out) {
  out.clear();
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') {
      out.push_back(text[i]);
      continue;
    }
    unsigned value = 0;
    if (i + 2 >= text.size()) return false;
    const auto [end, failure] = std::from_chars(text.data() + i + 1, text.data() + i + 3, value, 16);
    if (failure != std::errc{} || end != text.data() + i + 3) return false;
    out.push_back(static_cast<char>(value));
    i += 2;
  }
  return true;
}

bool valid_server(std::string_view server) {
  std::string_view host;
  std::string_view port;
  if (server.starts_with('[')) {
    const auto close = server.find(']');
    if (close == std::string_view::npos || close + 1 >= server.size() || server[close + 1] != ':') return false;
    host = server.substr(1, close - 1);
    port = server.substr(close + 2);
  } else {
    const auto colon = server.rfind(':');
    if (colon == std::string_view::npos) return false;
    host = server.substr(0, colon);
    port = server.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) return false;
  }
  unsigned number = 0;
  const auto [end, failure] = std::from_chars(port.data(), port.data() + port.size(), number);
  return !host.empty() && failure == std::errc{} && end == port.data() + port.size() && number >= 1 &&
         number <= 65535;
}

}  // namespace

result<Address> Address::parse(std::string_view text) {
  constexpr std::string_view kScheme = "nats://";
  if (!text.starts_with(kScheme)) return bad_address(text, "it must start with nats://");
  std::string_view rest = text.substr(kScheme.size());
  Address address;

  std::string_view query;
  if (const auto mark = rest.find('?'); mark != std::string_view::npos) {
    query = rest.substr(mark + 1);
    rest = rest.substr(0, mark);
  }
  std::string_view authority = rest;
  if (const auto slash = rest.find('/'); slash != std::string_view::npos) {
    authority = rest.substr(0, slash);
    address.name = std::string(rest.substr(slash + 1));
  }
  for (const char c : address.name) {
    if (!name_character(c)) {
      return bad_address(text, "the name may hold only letters, digits, '-' and '_' (it names a JetStream stream)");
    }
  }
  if (address.name.size() > 200) return bad_address(text, "the name is longer than 200 characters");

  if (const auto at = authority.rfind('@'); at != std::string_view::npos) {
    const std::string_view userinfo = authority.substr(0, at);
    authority = authority.substr(at + 1);
    const auto colon = userinfo.find(':');
    if (!percent_decode(userinfo.substr(0, colon), address.user) ||
        (colon != std::string_view::npos && !percent_decode(userinfo.substr(colon + 1), address.password))) {
      return bad_address(text, "a malformed %-escape in the user or password");
    }
    if (address.user.empty()) return bad_address(text, "an empty user before '@'");
  }
  while (!authority.empty()) {
    const auto comma = authority.find(',');
    const std::string_view server = authority.substr(0, comma);
    if (!valid_server(server)) {
      return bad_address(text, "'" + std::string(server) + "' is not HOST:PORT (an IPv6 host in brackets)");
    }
    address.servers.emplace_back(server);
    authority = comma == std::string_view::npos ? std::string_view{} : authority.substr(comma + 1);
  }
  if (address.servers.empty()) return bad_address(text, "no server: write nats://HOST:PORT/NAME");

  std::vector<std::string_view> seen;
  while (!query.empty()) {
    const auto amp = query.find('&');
    const std::string_view option = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
    const auto equals = option.find('=');
    if (equals == std::string_view::npos || equals == 0 || equals + 1 == option.size()) {
      return bad_address(text, "option '" + std::string(option) + "' is not KEY=VALUE");
    }
    const std::string_view key = option.substr(0, equals);
    const std::string_view value = option.substr(equals + 1);
    for (const std::string_view earlier : seen) {
      if (earlier == key) return bad_address(text, "option '" + std::string(key) + "' is given twice");
    }
    seen.push_back(key);
    const auto number = [&](int low, int high) -> std::optional<int> {
      int parsed = 0;
      const auto [end, failure] = std::from_chars(value.data(), value.data() + value.size(), parsed);
      if (failure != std::errc{} || end != value.data() + value.size() || parsed < low || parsed > high) {
        return std::nullopt;
      }
      return parsed;
    };
    if (key == "creds") {
      address.credentials_file = value;
    } else if (key == "nkey") {
      address.nkey = value;
    } else if (key == "seed") {
      address.seed_file = value;
    } else if (key == "tls") {
      if (value != "1" && value != "0") return bad_address(text, "tls takes 1 or 0");
      address.tls = value == "1";
    } else if (key == "tls_ca") {
      address.tls_ca = value;
    } else if (key == "tls_cert") {
      address.tls_cert = value;
    } else if (key == "tls_key") {
      address.tls_key = value;
    } else if (key == "as") {
      address.send_as = value;
    } else if (key == "replicas") {
      const auto replicas = number(1, 5);
      if (!replicas) return bad_address(text, "replicas takes 1 to 5");
      address.replicas = *replicas;
    } else if (key == "timeout_ms") {
      const auto timeout = number(1, 3'600'000);
      if (!timeout) return bad_address(text, "timeout_ms takes 1 to 3600000");
      address.timeout = std::chrono::milliseconds(*timeout);
    } else {
      return bad_address(text, "unknown option '" + std::string(key) +
                                   "' (creds, nkey, seed, tls, tls_ca, tls_cert, tls_key, as, replicas, timeout_ms)");
    }
  }
  if (address.nkey.empty() != address.seed_file.empty()) return bad_address(text, "nkey and seed go together");
  if (!address.tls_ca.empty() || !address.tls_cert.empty() || !address.tls_key.empty()) address.tls = true;
  if (address.tls_cert.empty() != address.tls_key.empty()) return bad_address(text, "tls_cert and tls_key go together");
  for (const char c : address.identity()) {
    if (!name_character(c)) {
      return bad_address(text, "the user messages are sent as ('" + address.identity() +
                                   "') may hold only letters, digits, '-' and '_' (it is a subject token)");
    }
  }
  return address;
}

std::string Address::to_string() const {
  std::string text = "nats://";
  if (!user.empty()) text += user + (password.empty() ? "@" : ":***@");
  for (std::size_t i = 0; i < servers.size(); ++i) text += (i ? "," : "") + servers[i];
  text += "/" + name;
  return text;
}

std::string Address::identity() const {
  if (!send_as.empty()) return send_as;
  if (!user.empty()) return user;
  return "anonymous";
}

Address Address::with_name(std::string_view other) const {
  Address copy = *this;
  copy.name = other;
  return copy;
}

namespace detail {

void SubscriptionCloser::operator()(natsSubscription* subscription) const noexcept {
  // Unsubscribing also deletes a JetStream consumer the subscription made
  // (a topic's ordered consumer), which the server would otherwise drop
  // only once it has been idle for a while.
  constexpr int kFlushMs = 1000;
  if (connection != nullptr && natsConnection_Status(connection) == NATS_CONN_STATUS_CONNECTED &&
      natsSubscription_Unsubscribe(subscription) == NATS_OK) {
    (void)natsConnection_FlushTimeout(connection, kFlushMs);
  }
  natsSubscription_Destroy(subscription);
}

ConnectionState::~ConnectionState() {
  if (jetstream != nullptr) jsCtx_Destroy(jetstream);
  if (connection != nullptr) natsConnection_Destroy(connection);
}

error nats_error(natsStatus status, jsErrCode js_code, std::string_view object, std::string_view what) {
  errc code = errc::system;
  switch (js_code) {
    case JSStreamNotFoundErr:
    case JSConsumerNotFoundErr: code = errc::not_found; break;
    case JSStreamNameExistErr:
    case JSConsumerNameExistErr: code = errc::already_exists; break;
    case JSStreamStoreFailedErr: code = errc::full; break;
    case JSStreamMessageExceedsMaximumErr: code = errc::invalid_argument; break;
    case JSNotEnabledErr: code = errc::peer_gone; break;
    default:
      switch (status) {
        case NATS_CONNECTION_AUTH_FAILED:
        case NATS_NOT_PERMITTED: code = errc::permission_denied; break;
        case NATS_NO_SERVER:
        case NATS_CONNECTION_CLOSED:
        case NATS_CONNECTION_DISCONNECTED:
        case NATS_STALE_CONNECTION:
        case NATS_IO_ERROR:
        case NATS_NO_RESPONDERS: code = errc::peer_gone; break;
        case NATS_TIMEOUT: code = errc::timed_out; break;
        case NATS_NOT_FOUND: code = errc::not_found; break;
        case NATS_INVALID_ARG:
        case NATS_ADDRESS_MISSING:
        case NATS_INVALID_SUBJECT:
        case NATS_MAX_PAYLOAD:
        case NATS_SSL_ERROR:
        case NATS_SECURE_CONNECTION_WANTED:
        case NATS_SECURE_CONNECTION_REQUIRED: code = errc::invalid_argument; break;
        case NATS_NO_MEMORY: code = errc::limit_reached; break;
        default: break;
      }
  }
  std::string detail(what);
  detail += ": ";
  detail += natsStatus_GetText(status);
  if (js_code != 0) detail += " (JetStream error " + std::to_string(static_cast<int>(js_code)) + ")";
  natsStatus last_status = NATS_OK;
  const char* last = nats_GetLastError(&last_status);
  if (last != nullptr && last_status == status && *last != '\0' && std::string_view(last) != natsStatus_GetText(status)) {
    detail += ": ";
    detail += last;
  }
  return error(code, object, std::move(detail));
}

std::optional<std::string> refused_publish(natsConnection* connection, std::string_view subject) {
  const char* last = nullptr;
  if (natsConnection_GetLastError(connection, &last) == NATS_NOT_PERMITTED && last != nullptr &&
      std::string_view(last).find(subject) != std::string_view::npos) {
    return std::string(last);
  }
  return std::nullopt;
}

result<OwnedStreamInfo> read_stream(const Connection& connection, const std::string& stream, const std::string& object) {
  jsStreamInfo* raw = nullptr;
  jsErrCode js_code{};
  const natsStatus status = administer(connection, js_code, [&] {
    return js_GetStreamInfo(&raw, connection.state().jetstream, stream.c_str(), nullptr, &js_code);
  });
  OwnedStreamInfo info(raw);
  if (status == NATS_OK) return info;
  if (js_code == JSStreamNotFoundErr || status == NATS_NOT_FOUND) return error(errc::not_found, object, "no stream " + stream);
  return nats_error(status, js_code, object, "cannot read stream " + stream);
}

result<std::vector<std::string>> stream_names(const Connection& connection, std::string_view prefix,
                                              const std::string& object) {
  jsStreamNamesList* raw = nullptr;
  jsErrCode js_code{};
  const natsStatus status = administer(connection, js_code, [&] {
    return js_StreamNames(&raw, connection.state().jetstream, nullptr, &js_code);
  });
  const Owned<jsStreamNamesList, jsStreamNamesList_Destroy> names(raw);
  std::vector<std::string> found;
  if (status == NATS_NOT_FOUND) return found;  // no stream at all
  if (status != NATS_OK) return nats_error(status, js_code, object, "cannot list streams");
  for (int i = 0; i < names->Count; ++i) {
    const std::string_view stream = names->List[i];
    if (stream.starts_with(prefix)) found.emplace_back(stream.substr(prefix.size()));
  }
  std::sort(found.begin(), found.end());
  return found;
}

std::string stream_leader(const jsStreamInfo& info) {
  return info.Cluster != nullptr && info.Cluster->Leader != nullptr ? info.Cluster->Leader : "";
}

result<void> add_stream(const Connection& connection, const StreamSpec& spec, const std::string& object) {
  const char* subjects[] = {spec.subjects.c_str()};
  jsStreamConfig config;
  jsStreamConfig_Init(&config);
  config.Name = spec.name.c_str();
  config.Description = spec.description.c_str();
  config.Subjects = subjects;
  config.SubjectsLen = 1;
  config.Retention = spec.retention;
  config.MaxMsgs = spec.max_messages;
  config.Discard = spec.discard;
  config.MaxMsgSize = static_cast<std::int32_t>(spec.max_message_size);
  config.Storage = spec.memory ? js_MemoryStorage : js_FileStorage;
  config.Replicas = connection.address().replicas;
  config.Duplicates = nanoseconds(spec.duplicate_window);
  jsStreamInfo* raw = nullptr;
  jsErrCode js_code{};
  const natsStatus status = administer(connection, js_code, [&] {
    return js_AddStream(&raw, connection.state().jetstream, &config, nullptr, &js_code);
  });
  const OwnedStreamInfo info(raw);
  if (status != NATS_OK) return nats_error(status, js_code, object, "cannot make stream " + spec.name);
  return {};
}

result<void> delete_stream(const Connection& connection, const std::string& stream, const std::string& object) {
  jsErrCode js_code{};
  const natsStatus status = administer(connection, js_code, [&] {
    return js_DeleteStream(connection.state().jetstream, stream.c_str(), nullptr, &js_code);
  });
  if (status == NATS_OK) return {};
  if (js_code == JSStreamNotFoundErr || status == NATS_NOT_FOUND) return error(errc::not_found, object, "no stream " + stream);
  return nats_error(status, js_code, object, "cannot remove stream " + stream);
}

bool transient(natsStatus status, jsErrCode js_code) noexcept {
  return js_code == JSNotEnabledErr || status == NATS_NO_RESPONDERS || status == NATS_CONNECTION_DISCONNECTED ||
         status == NATS_IO_ERROR;
}

}  // namespace detail

result<Connection> Connection::connect(const Address& address) {
  const std::string object = address.to_string();
  natsOptions* raw_options = nullptr;
  if (const natsStatus status = natsOptions_Create(&raw_options); status != NATS_OK) {
    return detail::nats_error(status, object, "cannot make connection options");
  }
  const std::unique_ptr<natsOptions, void (*)(natsOptions*)> options(raw_options, natsOptions_Destroy);

  std::vector<std::string> urls;
  std::vector<const char*> url_pointers;
  for (const std::string& server : address.servers) urls.push_back("nats://" + server);
  for (const std::string& url : urls) url_pointers.push_back(url.c_str());
  const auto timeout_ms = static_cast<int64_t>(address.timeout.count());
  const std::string client_name = "ferry pid " + std::to_string(::getpid());

  // nats.c reads these files only when it connects (and again at each
  // reconnection), and then says only that something failed.
  for (const auto& [option, file] : {std::pair{"creds", &address.credentials_file}, {"seed", &address.seed_file},
                                     {"tls_ca", &address.tls_ca}, {"tls_cert", &address.tls_cert},
                                     {"tls_key", &address.tls_key}}) {
    if (!file->empty() && ::access(file->c_str(), R_OK) != 0) {
      return error(errc::invalid_argument, object,
                   std::string(option) + " file " + *file + " cannot be read: " + std::strerror(errno));
    }
  }

  // Each step names the option it sets, so a refusal says which one; an
  // option nats.c refuses (an unreadable file among them) is invalid_argument.
  const auto set = [&](natsStatus status, std::string_view what) -> result<void> {
    if (status == NATS_OK) return {};
    const error refused = detail::nats_error(status, object, what);
    return error(errc::invalid_argument, object, refused.detail());
  };
  result<void> configured =
      set(natsOptions_SetServers(options.get(), url_pointers.data(), static_cast<int>(url_pointers.size())),
          "servers");
  // The failover list is tried in the order given; reconnection goes on for
  // as long as the connection lives (each call has its own deadline).
  if (configured) configured = set(natsOptions_SetNoRandomize(options.get(), true), "server order");
  if (configured) configured = set(natsOptions_SetMaxReconnect(options.get(), -1), "reconnects");
  if (configured) configured = set(natsOptions_SetReconnectWait(options.get(), 250), "reconnect wait");
  if (configured) configured = set(natsOptions_SetTimeout(options.get(), timeout_ms), "connect timeout");
  // Without it a request waits for the flusher thread: ~1 ms instead of ~0.2 ms on loopback.
  if (configured) configured = set(natsOptions_SetSendAsap(options.get(), true), "send at once");
  if (configured) configured = set(natsOptions_SetName(options.get(), client_name.c_str()), "client name");
  if (configured && !address.user.empty()) {
    configured = set(natsOptions_SetUserInfo(options.get(), address.user.c_str(),
                                             address.password.empty() ? nullptr : address.password.c_str()),
                     "user and password");
  }
  if (configured && !address.credentials_file.empty()) {
    configured = set(natsOptions_SetUserCredentialsFromFiles(options.get(), address.credentials_file.c_str(), nullptr),
                     "credentials file " + address.credentials_file);
  }
  if (configured && !address.nkey.empty()) {
    configured = set(natsOptions_SetNKeyFromSeed(options.get(), address.nkey.c_str(), address.seed_file.c_str()),
                     "nkey seed file " + address.seed_file);
  }
  if (configured && address.tls) configured = set(natsOptions_SetSecure(options.get(), true), "tls");
  if (configured && !address.tls_ca.empty()) {
    configured = set(natsOptions_LoadCATrustedCertificates(options.get(), address.tls_ca.c_str()),
                     "tls_ca " + address.tls_ca);
  }
  if (configured && !address.tls_cert.empty()) {
    configured = set(natsOptions_LoadCertificatesChain(options.get(), address.tls_cert.c_str(), address.tls_key.c_str()),
                     "tls_cert " + address.tls_cert);
  }
  if (!configured) return std::move(configured).error();

  auto state = std::make_shared<detail::ConnectionState>();
  state->address = address;
  // nats.c (3.4.1) now and then sends its CONNECT without the signature of
  // the server's nonce when a credentials file or an NKey must sign it: the
  // server logs "Signature missing" and refuses. Seen with both CPUs busy, a
  // few connects in a hundred. Another connection gets another nonce and is
  // signed; a user the server really refuses is refused every time.
  const bool signs = !address.credentials_file.empty() || !address.nkey.empty();
  constexpr int kSignedConnectAttempts = 3;
  for (int attempt = 1;; ++attempt) {
    const natsStatus status = natsConnection_Connect(&state->connection, options.get());
    if (status == NATS_OK) break;
    state->connection = nullptr;
    if (!signs || status != NATS_CONNECTION_AUTH_FAILED || attempt == kSignedConnectAttempts) {
      return detail::nats_error(status, object, "cannot connect");
    }
  }
  jsOptions js_options;
  jsOptions_Init(&js_options);
  js_options.Wait = timeout_ms;
  if (const natsStatus status = natsConnection_JetStream(&state->jetstream, state->connection, &js_options);
      status != NATS_OK) {
    state->jetstream = nullptr;
    return detail::nats_error(status, object, "cannot use JetStream");
  }
  return Connection(std::move(state));
}

const Address& Connection::address() const noexcept { return state_->address; }

std::string Connection::connected_url() const {
  char buffer[256] = {};
  if (natsConnection_GetConnectedUrl(state_->connection, buffer, sizeof buffer) != NATS_OK) return {};
  return buffer;
}

}  // namespace ferry::nats
