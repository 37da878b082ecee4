#include "nats_keys.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <iterator>
#include <random>
#include <span>
#include <string_view>

#include <gtest/gtest.h>

namespace ferry::test {

namespace {

/// CRC-16/XMODEM (polynomial 0x1021, initial 0): the checksum NKeys carry.
std::uint16_t crc16(std::span<const std::uint8_t> data) {
  std::uint16_t crc = 0;
  for (const std::uint8_t byte : data) {
    crc = static_cast<std::uint16_t>(crc ^ (byte << 8));
    for (int bit = 0; bit < 8; ++bit) {
      crc = static_cast<std::uint16_t>((crc & 0x8000) ? (crc << 1) ^ 0x1021 : crc << 1);
    }
  }
  return crc;
}

/// `data` as a string of `bits`-bit digits of `alphabet`, most significant
/// first, the last digit padded with zero bits: RFC 4648 base32 (5 bits) and
/// base64url (6 bits) without padding characters.
std::string encode_bits(std::span<const std::uint8_t> data, int bits, std::string_view alphabet) {
  const unsigned mask = (1u << bits) - 1;
  std::string out;
  unsigned buffer = 0;
  int held = 0;
  for (const std::uint8_t byte : data) {
    buffer = (buffer << 8) | byte;
    held += 8;
    while (held >= bits) {
      out += alphabet[(buffer >> (held - bits)) & mask];
      held -= bits;
    }
  }
  if (held > 0) out += alphabet[(buffer << (bits - held)) & mask];
  return out;
}

std::string base32(std::span<const std::uint8_t> data) {
  return encode_bits(data, 5, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567");
}

std::string base64url(std::string_view data) {
  return encode_bits({reinterpret_cast<const std::uint8_t*>(data.data()), data.size()}, 6,
                     "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_");
}

/// `prefix` + `key` + CRC-16 (little-endian), in base32.
std::string encode_key(std::vector<std::uint8_t> prefix, std::span<const std::uint8_t> key) {
  prefix.insert(prefix.end(), key.begin(), key.end());
  const std::uint16_t crc = crc16(prefix);
  prefix.push_back(static_cast<std::uint8_t>(crc & 0xff));
  prefix.push_back(static_cast<std::uint8_t>(crc >> 8));
  return base32(prefix);
}

/// The prefix byte of a key type: its letter's base32 value, shifted into the
/// top five bits of the first byte.
std::uint8_t prefix_byte(char type) {
  return static_cast<std::uint8_t>((type - 'A') << 3);
}

std::string read_whole(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

/// The last 32 bytes of a DER file: the raw key of an Ed25519 PKCS#8 private
/// key (the seed) or of a SubjectPublicKeyInfo.
std::vector<std::uint8_t> raw_ed25519_key(const std::string& der_file) {
  const std::string der = read_whole(der_file);
  if (der.size() < 32) return {};
  return {der.end() - 32, der.end()};
}

/// Writes `text` to `path` with mode 0600; false (and a gtest failure) if it cannot.
bool write_secret(const std::string& path, const std::string& text) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  const bool written = fd >= 0 && ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  if (!written) ADD_FAILURE() << "cannot write " << path << ": " << std::strerror(errno);
  if (fd >= 0) ::close(fd);
  return written;
}

/// A JSON string literal (the names and subjects here need no more than this).
std::string json_string(std::string_view text) {
  std::string out = "\"";
  for (const char c : text) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

std::string json_list(const std::vector<std::string>& items) {
  std::string out = "[";
  for (std::size_t i = 0; i < items.size(); ++i) out += (i ? "," : "") + json_string(items[i]);
  return out + "]";
}

/// A JWT ID: unique per token (the server does not check how it was made).
std::string unique_id() {
  static std::mt19937_64 generator{std::random_device{}()};
  std::vector<std::uint8_t> bytes(32);
  for (auto& byte : bytes) byte = static_cast<std::uint8_t>(generator());
  return base32(bytes);
}

/// A NATS JWT (v2) with `claims` ("nats" and name) for `subject`, issued and
/// signed by `issuer`: "" after a gtest failure.
std::string sign_jwt(const NatsKeyPair& issuer, const std::string& subject, const std::string& name,
                     const std::string& nats_claims, const std::string& scratch) {
  const std::string claims = "{\"jti\":" + json_string(unique_id()) + ",\"iat\":" + std::to_string(std::time(nullptr)) +
                             ",\"iss\":" + json_string(issuer.public_key) + ",\"name\":" + json_string(name) +
                             ",\"sub\":" + json_string(subject) + ",\"nats\":" + nats_claims + "}";
  const std::string signed_part =
      base64url(R"({"typ":"JWT","alg":"ed25519-nkey"})") + "." + base64url(claims);
  const std::string data_file = scratch + ".data";
  const std::string signature_file = scratch + ".sig";
  std::ofstream(data_file, std::ios::binary | std::ios::trunc) << signed_part;
  const std::string command = "openssl pkeyutl -sign -rawin -keyform DER -inkey " + issuer.private_der + " -in " +
                              data_file + " -out " + signature_file;
  const int status = std::system(command.c_str());
  const std::string signature = read_whole(signature_file);
  std::remove(data_file.c_str());
  std::remove(signature_file.c_str());
  if (status != 0 || signature.size() != 64) {
    ADD_FAILURE() << "openssl could not sign a JWT: " << command;
    return {};
  }
  return signed_part + "." + base64url(signature);
}

}  // namespace

NatsKeyPair make_nkey(char type, const std::string& private_der) {
  const std::string public_der = private_der + ".pub";
  const std::string make = "openssl genpkey -algorithm ed25519 -outform DER -out " + private_der +
                           " && openssl pkey -inform DER -in " + private_der + " -pubout -outform DER -out " +
                           public_der;
  const int status = std::system(make.c_str());
  const std::vector<std::uint8_t> seed = raw_ed25519_key(private_der);
  const std::vector<std::uint8_t> public_key = raw_ed25519_key(public_der);
  std::remove(public_der.c_str());
  if (status != 0 || seed.size() != 32 || public_key.size() != 32) {
    ADD_FAILURE() << "openssl (Debian: openssl) could not make an Ed25519 key: " << make;
    return {};
  }
  // A seed's first two bytes carry 'S' and then the key's type letter.
  const std::uint8_t seed_prefix = prefix_byte('S');
  const std::uint8_t key_prefix = prefix_byte(type);
  return {.public_key = encode_key({key_prefix}, public_key),
          .seed = encode_key({static_cast<std::uint8_t>(seed_prefix | (key_prefix >> 5)),
                              static_cast<std::uint8_t>((key_prefix & 31) << 3)},
                             seed),
          .private_der = private_der};
}

NatsNkey make_user_nkey(const std::string& seed_file) {
  NatsKeyPair key = make_nkey('U', seed_file + ".der");
  std::remove((seed_file + ".der").c_str());
  if (key.public_key.empty() || !write_secret(seed_file, key.seed + "\n")) return {};
  return {.public_key = key.public_key, .seed_file = seed_file};
}

std::unique_ptr<NatsOperator> NatsOperator::make(const TempDir& directory) {
  std::unique_ptr<NatsOperator> made(new NatsOperator(directory));
  made->operator_ = make_nkey('O', directory.file("operator.der"));
  made->account_ = make_nkey('A', directory.file("account.der"));
  made->system_ = make_nkey('A', directory.file("system.der"));
  if (made->operator_.public_key.empty() || made->account_.public_key.empty() || made->system_.public_key.empty()) {
    return nullptr;
  }
  const std::string scratch = directory.file("jwt");
  made->operator_jwt_ = sign_jwt(made->operator_, made->operator_.public_key, "ferry-test",
                                 R"({"type":"operator","version":2})", scratch);
  // JetStream is on for an account whose storage limits are not zero.
  made->account_jwt_ = sign_jwt(
      made->operator_, made->account_.public_key, "ferry",
      R"({"limits":{"subs":-1,"data":-1,"payload":-1,"imports":-1,"exports":-1,"wildcards":true,"conn":-1,)"
      R"("leaf":-1,"mem_storage":-1,"disk_storage":-1,"streams":-1,"consumer":-1},"type":"account","version":2})",
      scratch);
  // JetStream needs the server's system account (its internal subscriptions).
  made->system_jwt_ = sign_jwt(made->operator_, made->system_.public_key, "SYS",
                               R"({"limits":{"subs":-1,"data":-1,"payload":-1,"imports":-1,"exports":-1,)"
                               R"("wildcards":true,"conn":-1,"leaf":-1},"type":"account","version":2})",
                               scratch);
  if (made->operator_jwt_.empty() || made->account_jwt_.empty() || made->system_jwt_.empty()) return nullptr;
  return made;
}

std::string NatsOperator::server_config() const {
  return "operator: " + json_string(operator_jwt_) + "\nsystem_account: " + system_.public_key +
         "\nresolver: MEMORY\nresolver_preload: {\n  " + account_.public_key + ": " + json_string(account_jwt_) +
         "\n  " + system_.public_key + ": " + json_string(system_jwt_) + "\n}\n";
}

std::string NatsOperator::user_credentials(const std::string& name, const std::vector<std::string>& publish,
                                           const std::vector<std::string>& subscribe) {
  const std::string base = directory_.file("user-" + std::to_string(++files_));
  const NatsKeyPair user = make_nkey('U', base + ".der");
  std::remove((base + ".der").c_str());
  if (user.public_key.empty()) return {};
  const auto permission = [](const std::vector<std::string>& subjects) {
    return subjects.empty() ? std::string("{}") : "{\"allow\":" + json_list(subjects) + "}";
  };
  const std::string jwt = sign_jwt(account_, user.public_key, name,
                                   "{\"pub\":" + permission(publish) + ",\"sub\":" + permission(subscribe) +
                                       R"(,"subs":-1,"data":-1,"payload":-1,"type":"user","version":2})",
                                   base);
  if (jwt.empty()) return {};
  // The layout `nsc generate creds` writes; nats.c reads the two blocks.
  const std::string creds = "-----BEGIN NATS USER JWT-----\n" + jwt +
                            "\n------END NATS USER JWT------\n\n"
                            "-----BEGIN USER NKEY SEED-----\n" +
                            user.seed + "\n------END USER NKEY SEED------\n";
  const std::string path = base + ".creds";
  if (!write_secret(path, creds)) return {};
  return path;
}

}  // namespace ferry::test
